//! Byte scripts for the client session: what a scripted server says, and
//! the exact bytes and events the client answers with.
// Helpers outside #[test] functions panic on purpose: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use rsmtpd_smtp_proto::address::{Charset, Domain, ForwardPath, ReversePath, XText};
use rsmtpd_smtp_proto::client::{
    Awaiting, Capabilities, ClientConfig, ClientSession, Envelope, EnvelopeError, Event, Mode,
    RecipientOutcome, SendError, SessionError, SizeLimit, TransactionOutcome,
};
use rsmtpd_smtp_proto::command::{Body, Command, MailParams, RcptParams, Ret};
use rsmtpd_smtp_proto::reply::{ReplyError, ReplyParser};
use rsmtpd_smtp_proto::server::Recipient;

const GREETING: &[u8] = b"220 mx.example ESMTP\r\n";
const EHLO_PLAIN: &[u8] = b"250-mx.example Hello\r\n250 8BITMIME\r\n";
const EHLO_PIPE: &[u8] = b"250-mx.example Hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
const EHLO_ALL: &[u8] = b"250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n";

fn config(mode: Mode) -> ClientConfig {
    ClientConfig {
        mode,
        helo: Domain::parse_helo("client.example").unwrap(),
    }
}

fn rcpt(addr: &str) -> Recipient {
    Recipient {
        path: ForwardPath::parse(format!("<{addr}>").as_bytes(), Charset::Utf8).unwrap(),
        params: RcptParams::default(),
    }
}

fn envelope(from: &str, to: &[&str]) -> Envelope {
    Envelope::new(
        ReversePath::parse(format!("<{from}>").as_bytes(), Charset::Utf8).unwrap(),
        MailParams::default(),
        to.iter().map(|a| rcpt(a)).collect(),
    )
    .unwrap()
}

/// Feeds the server's bytes; returns what the client wrote and the events.
fn step(s: &mut ClientSession, server: &[u8]) -> (Vec<u8>, Vec<Event>) {
    assert_eq!(s.feed(server), server.len());
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match s.poll() {
            Some(e) => events.push(e),
            None => break,
        }
    }
    (s.take_output(), events)
}

fn drain(s: &mut ClientSession) -> (Vec<u8>, Vec<Event>) {
    step(s, b"")
}

/// Greeting and EHLO/LHLO done with the given reply.
fn ready(mode: Mode, ehlo_reply: &[u8]) -> ClientSession {
    let mut s = ClientSession::new(config(mode));
    let (out, ev) = step(&mut s, GREETING);
    let verb = if mode == Mode::Lmtp { "LHLO" } else { "EHLO" };
    assert_eq!(out, format!("{verb} client.example\r\n").as_bytes());
    assert!(ev.is_empty());
    let (out, ev) = step(&mut s, ehlo_reply);
    assert_eq!(out, b"");
    assert_eq!(ev, [Event::Ready]);
    s
}

fn parse_reply(wire: &[u8]) -> rsmtpd_smtp_proto::reply::Reply {
    let parsed = ReplyParser::new().parse(wire).unwrap();
    assert_eq!(parsed.consumed, wire.len());
    parsed.reply.unwrap()
}

fn outcome_codes(events: &[Event]) -> Vec<(usize, &'static str, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Recipient { index, outcome } => Some((
                *index,
                match outcome {
                    RecipientOutcome::Accepted(_) => "ok",
                    RecipientOutcome::Temporary(_) => "temp",
                    RecipientOutcome::Permanent(_) => "perm",
                },
                outcome.reply().code(),
            )),
            _ => None,
        })
        .collect()
}

fn send_body(s: &mut ClientSession, body: &[u8]) -> Vec<u8> {
    let mut rest = body;
    let mut out = Vec::new();
    for _ in 0..100_000 {
        if rest.is_empty() {
            break;
        }
        let n = s.write_body(rest).unwrap();
        rest = &rest[n..];
        out.extend(s.take_output());
    }
    assert!(rest.is_empty());
    s.end_body().unwrap();
    out.extend(s.take_output());
    out
}

#[test]
fn smtp_without_pipelining_waits_for_each_reply() {
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    assert!(!s.capabilities().pipelining);
    s.send_mail(&envelope("a@x.example", &["b@y.example", "c@y.example"]))
        .unwrap();
    let (out, _) = drain(&mut s);
    assert_eq!(out, b"MAIL FROM:<a@x.example>\r\n");
    let (out, ev) = step(&mut s, b"250 2.1.0 Ok\r\n");
    assert_eq!(out, b"RCPT TO:<b@y.example>\r\n");
    assert!(ev.is_empty());
    let (out, _) = step(&mut s, b"250 2.1.5 Ok\r\n");
    assert_eq!(out, b"RCPT TO:<c@y.example>\r\n");
    let (out, ev) = step(&mut s, b"550 5.1.1 No such user\r\n");
    assert_eq!(out, b"DATA\r\n");
    assert_eq!(outcome_codes(&ev), [(1, "perm", 550)]);
    let (out, ev) = step(&mut s, b"354 go ahead\r\n");
    assert_eq!(out, b"");
    assert_eq!(ev, [Event::SendBody]);
    let out = send_body(&mut s, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(out, b"Subject: hi\r\n\r\nbody\r\n.\r\n");
    let (out, ev) = step(&mut s, b"250 2.0.0 queued as X\r\n");
    assert_eq!(out, b"");
    assert_eq!(outcome_codes(&ev), [(0, "ok", 250)]);
    assert_eq!(
        ev.last(),
        Some(&Event::TransactionDone(TransactionOutcome::Sent {
            accepted: 1,
            refused: 1
        }))
    );
    s.quit().unwrap();
    assert_eq!(drain(&mut s).0, b"QUIT\r\n");
    let (_, ev) = step(&mut s, b"221 2.0.0 Bye\r\n");
    assert_eq!(ev, [Event::Closed]);
    assert!(s.is_done());
}

#[test]
fn smtp_pipelined_mail_and_rcpts_then_data_after_replies() {
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope(
        "a@x.example",
        &["b@y.example", "c@y.example", "d@y.example"],
    ))
    .unwrap();
    let (out, _) = drain(&mut s);
    assert_eq!(
        out,
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n\
RCPT TO:<c@y.example>\r\nRCPT TO:<d@y.example>\r\n"
    );
    // DATA only once all four replies are in.
    let (out, ev) = step(&mut s, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n");
    assert_eq!(out, b"");
    assert_eq!(outcome_codes(&ev), [(1, "perm", 550)]);
    let (out, ev) = step(&mut s, b"451 4.3.0 later\r\n");
    assert_eq!(out, b"DATA\r\n");
    assert_eq!(outcome_codes(&ev), [(2, "temp", 451)]);
    let (_, ev) = step(&mut s, b"354 go\r\n");
    assert_eq!(ev, [Event::SendBody]);
    assert_eq!(send_body(&mut s, b"x\r\n"), b"x\r\n.\r\n");
    let (_, ev) = step(&mut s, b"554 5.7.1 spam\r\n");
    assert_eq!(outcome_codes(&ev), [(0, "perm", 554)]);
    assert_eq!(
        ev.last(),
        Some(&Event::TransactionDone(TransactionOutcome::Sent {
            accepted: 0,
            refused: 3
        }))
    );
}

#[test]
fn no_data_when_every_rcpt_fails_and_rset_before_the_next_mail() {
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope("a@x.example", &["b@y.example", "c@y.example"]))
        .unwrap();
    drain(&mut s);
    let (out, ev) = step(&mut s, b"250 ok\r\n550 5.1.1 no\r\n450 4.2.0 busy\r\n");
    assert_eq!(out, b"", "DATA must not be sent");
    assert_eq!(outcome_codes(&ev), [(0, "perm", 550), (1, "temp", 450)]);
    assert_eq!(
        ev.last(),
        Some(&Event::TransactionDone(
            TransactionOutcome::NoRecipientAccepted
        ))
    );
    s.send_mail(&envelope("a@x.example", &["e@y.example"]))
        .unwrap();
    assert_eq!(
        drain(&mut s).0,
        b"RSET\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<e@y.example>\r\n"
    );
    let (out, _) = step(&mut s, b"250 reset\r\n250 ok\r\n250 ok\r\n");
    assert_eq!(out, b"DATA\r\n");
}

#[test]
fn no_rset_when_not_pipelining_waits_for_it() {
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    step(&mut s, b"250 ok\r\n");
    let (_, ev) = step(&mut s, b"550 no\r\n");
    assert!(matches!(
        ev.last(),
        Some(Event::TransactionDone(
            TransactionOutcome::NoRecipientAccepted
        ))
    ));
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    assert_eq!(drain(&mut s).0, b"RSET\r\n");
    assert_eq!(
        step(&mut s, b"250 ok\r\n").0,
        b"MAIL FROM:<a@x.example>\r\n"
    );
}

#[test]
fn mail_refused_gives_every_recipient_its_reply() {
    // Pipelined: the RCPT replies still come and are read, not misapplied.
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope("a@x.example", &["b@y.example", "c@y.example"]))
        .unwrap();
    drain(&mut s);
    let (out, ev) = step(&mut s, b"553 5.1.8 bad sender\r\n");
    assert_eq!(out, b"");
    assert_eq!(outcome_codes(&ev), [(0, "perm", 553), (1, "perm", 553)]);
    assert!(!ev.iter().any(|e| matches!(e, Event::TransactionDone(_))));
    assert_eq!(
        s.send_mail(&envelope("a@x.example", &["b@y.example"])),
        Err(SendError::NotReady)
    );
    let (out, ev) = step(&mut s, b"503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
    assert_eq!(out, b"");
    assert_eq!(
        ev,
        [Event::TransactionDone(TransactionOutcome::MailRefused(
            parse_reply(b"553 5.1.8 bad sender\r\n")
        ))]
    );

    // Not pipelined: the RCPTs are never written.
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    s.send_mail(&envelope("a@x.example", &["b@y.example", "c@y.example"]))
        .unwrap();
    drain(&mut s);
    let (out, ev) = step(&mut s, b"451 4.3.0 try later\r\n");
    assert_eq!(out, b"");
    assert_eq!(outcome_codes(&ev), [(0, "temp", 451), (1, "temp", 451)]);
    assert!(matches!(
        ev.last(),
        Some(Event::TransactionDone(TransactionOutcome::MailRefused(_)))
    ));
}

#[test]
fn data_refused() {
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    step(&mut s, b"250 ok\r\n");
    assert_eq!(step(&mut s, b"250 ok\r\n").0, b"DATA\r\n");
    let (_, ev) = step(&mut s, b"451 4.3.0 no queue\r\n");
    assert_eq!(outcome_codes(&ev), [(0, "temp", 451)]);
    assert!(matches!(
        ev.last(),
        Some(Event::TransactionDone(TransactionOutcome::DataRefused(_)))
    ));
    s.quit().unwrap();
    assert_eq!(drain(&mut s).0, b"QUIT\r\n");
}

#[test]
fn lmtp_one_reply_per_accepted_recipient() {
    let lhlo = b"250-lmtp.example\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n";
    let mut s = ready(Mode::Lmtp, lhlo);
    s.send_mail(&envelope("a@x.example", &["alice", "bob", "carol", "dave"]))
        .unwrap();
    assert_eq!(
        drain(&mut s).0,
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\n\
RCPT TO:<carol>\r\nRCPT TO:<dave>\r\n"
    );
    let (out, ev) = step(
        &mut s,
        b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 unknown\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n",
    );
    assert_eq!(out, b"DATA\r\n");
    assert_eq!(outcome_codes(&ev), [(1, "perm", 550)]);
    step(&mut s, b"354 OK\r\n");
    assert_eq!(send_body(&mut s, b"hello\r\n"), b"hello\r\n.\r\n");
    // Replies for alice, carol, dave in RCPT order.
    let (_, ev) = step(&mut s, b"250 2.0.0 <alice> saved\r\n");
    assert_eq!(outcome_codes(&ev), [(0, "ok", 250)]);
    assert_eq!(ev.len(), 1);
    let (_, ev) = step(
        &mut s,
        b"452 4.2.2 <carol> quota\r\n552 5.2.2 <dave> over\r\n",
    );
    assert_eq!(outcome_codes(&ev), [(2, "temp", 452), (3, "perm", 552)]);
    assert_eq!(
        ev.last(),
        Some(&Event::TransactionDone(TransactionOutcome::Sent {
            accepted: 1,
            refused: 3
        }))
    );
    if let Some(Event::Recipient { outcome, .. }) = ev.first() {
        assert_eq!(outcome.reply().to_string(), "452 4.2.2 <carol> quota");
    }
    s.quit().unwrap();
    assert_eq!(drain(&mut s).0, b"QUIT\r\n");
    // The server may close without answering QUIT.
    s.closed();
    assert_eq!(drain(&mut s).1, [Event::Closed]);
}

#[test]
fn lmtp_has_no_helo_fallback() {
    let mut s = ClientSession::new(config(Mode::Lmtp));
    step(&mut s, GREETING);
    let (out, ev) = step(&mut s, b"500 5.5.1 what\r\n");
    assert_eq!(out, b"");
    match &ev[..] {
        [
            Event::Failed(
                e @ SessionError::Refused {
                    to: Awaiting::Lhlo, ..
                },
            ),
        ] => {
            assert!(e.is_permanent());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ehlo_refused_falls_back_to_helo_without_extensions() {
    let mut s = ClientSession::new(config(Mode::Smtp));
    assert_eq!(step(&mut s, GREETING).0, b"EHLO client.example\r\n");
    let (out, ev) = step(&mut s, b"502 5.5.1 unknown command\r\n");
    assert_eq!(out, b"HELO client.example\r\n");
    assert!(ev.is_empty());
    let (_, ev) = step(&mut s, b"250 mx.example\r\n");
    assert_eq!(ev, [Event::Ready]);
    assert_eq!(s.capabilities(), &Capabilities::default());
    let mut params = MailParams {
        size: Some(10),
        body: Some(Body::EightBitMime),
        ret: Some(Ret::Full),
        envid: Some(XText::parse("id1").unwrap()),
        ..MailParams::default()
    };
    params.smtputf8 = false;
    let env = Envelope::new(
        ReversePath::parse(b"<a@x.example>", Charset::Ascii).unwrap(),
        params,
        vec![dsn_rcpt()],
    )
    .unwrap();
    s.send_mail(&env).unwrap();
    assert_eq!(drain(&mut s).0, b"MAIL FROM:<a@x.example>\r\n");
    assert_eq!(step(&mut s, b"250 ok\r\n").0, b"RCPT TO:<b@y.example>\r\n");
}

#[test]
fn ehlo_4xx_is_a_temporary_failure() {
    let mut s = ClientSession::new(config(Mode::Smtp));
    step(&mut s, GREETING);
    let (out, ev) = step(&mut s, b"451 busy\r\n");
    assert_eq!(out, b"");
    match &ev[..] {
        [Event::Failed(e)] => assert!(!e.is_permanent()),
        other => panic!("{other:?}"),
    }
}

fn dsn_rcpt() -> Recipient {
    match Command::parse(
        b"RCPT TO:<b@y.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40y.example",
        Charset::Ascii,
    )
    .unwrap()
    {
        Command::Rcpt { to, params } => Recipient { path: to, params },
        other => panic!("{other:?}"),
    }
}

#[test]
fn mail_parameters_follow_what_is_offered() {
    let mut s = ready(Mode::Smtp, EHLO_ALL);
    let caps = s.capabilities().clone();
    assert_eq!(caps.size, SizeLimit::Max(1000));
    assert!(caps.pipelining && caps.dsn && caps.smtputf8 && caps.eight_bit_mime);
    assert!(caps.enhanced_status_codes && !caps.starttls);
    let params = MailParams {
        size: Some(999),
        body: Some(Body::EightBitMime),
        smtputf8: true,
        ret: Some(Ret::Hdrs),
        envid: Some(XText::parse("env+2Bid").unwrap()),
        auth: None,
    };
    let env = Envelope::new(
        ReversePath::parse(b"<a@x.example>", Charset::Ascii).unwrap(),
        params.clone(),
        vec![dsn_rcpt(), rcpt("c@y.example")],
    )
    .unwrap();
    s.send_mail(&env).unwrap();
    assert_eq!(
        drain(&mut s).0,
        b"MAIL FROM:<a@x.example> SIZE=999 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=env+2Bid\r\n\
RCPT TO:<b@y.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40y.example\r\n\
RCPT TO:<c@y.example>\r\n"
    );

    // Over the advertised size: refused before anything is written.
    let mut s = ready(Mode::Smtp, EHLO_ALL);
    let big = Envelope::new(
        ReversePath::Null,
        MailParams {
            size: Some(1001),
            ..MailParams::default()
        },
        vec![rcpt("c@y.example")],
    )
    .unwrap();
    let err = s.send_mail(&big).unwrap_err();
    assert_eq!(
        err,
        SendError::TooBig {
            size: 1001,
            max: 1000
        }
    );
    assert_eq!(err.status(), Some("5.3.4"));
    assert_eq!(drain(&mut s).0, b"");

    // Nothing offered: no parameters; SMTPUTF8 needed but missing is refused.
    let mut s = ready(Mode::Smtp, b"250 mx.example\r\n");
    let plain = Envelope::new(
        ReversePath::Null,
        MailParams {
            smtputf8: false,
            ..params.clone()
        },
        vec![dsn_rcpt()],
    )
    .unwrap();
    s.send_mail(&plain).unwrap();
    assert_eq!(drain(&mut s).0, b"MAIL FROM:<>\r\n");
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    let err = s.send_mail(&env).unwrap_err();
    assert_eq!(err, SendError::Smtputf8NotOffered);
    assert_eq!(err.status(), Some("5.6.7"));
    let utf8 = envelope("a@x.example", &["jos\u{e9}@y.example"]);
    assert_eq!(s.send_mail(&utf8), Err(SendError::Smtputf8NotOffered));
    assert_eq!(drain(&mut s).0, b"");
    // The session is still usable after a refusal.
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    assert_eq!(
        drain(&mut s).0,
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n"
    );
}

#[test]
fn two_transactions_on_one_session() {
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    for round in 0..2 {
        assert!(s.is_idle(), "round {round}");
        s.send_mail(&envelope("a@x.example", &["b@y.example"]))
            .unwrap();
        assert!(!s.is_idle());
        assert_eq!(
            drain(&mut s).0,
            b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n",
            "round {round}: no RSET after a completed transaction"
        );
        assert_eq!(step(&mut s, b"250 ok\r\n250 ok\r\n").0, b"DATA\r\n");
        step(&mut s, b"354 go\r\n");
        assert_eq!(send_body(&mut s, b"m\r\n"), b"m\r\n.\r\n");
        let (_, ev) = step(&mut s, b"250 2.0.0 queued\r\n");
        assert_eq!(outcome_codes(&ev), [(0, "ok", 250)]);
        assert!(matches!(ev.last(), Some(Event::TransactionDone(_))));
        assert!(s.is_idle());
    }
    s.quit().unwrap();
    assert!(!s.is_idle());
    assert_eq!(drain(&mut s).0, b"QUIT\r\n");
}

#[test]
fn body_is_dot_stuffed_and_normalised_at_every_split() {
    let body: &[u8] = b".lead\nx\r\n.\r\n..two\rbare\r\r\na\r.b\n\nlast.";
    let expected: &[u8] =
        b"..lead\r\nx\r\n..\r\n...two\r\nbare\r\n\r\na\r\n..b\r\n\r\nlast.\r\n.\r\n";
    let body_with = |chunks: &[&[u8]]| -> Vec<u8> {
        let mut s = ready(Mode::Smtp, EHLO_PIPE);
        s.send_mail(&envelope("a@x.example", &["b@y.example"]))
            .unwrap();
        drain(&mut s);
        step(&mut s, b"250 ok\r\n250 ok\r\n");
        assert_eq!(step(&mut s, b"354 go\r\n").1, [Event::SendBody]);
        let mut out = Vec::new();
        for chunk in chunks {
            assert_eq!(s.write_body(chunk).unwrap(), chunk.len());
            out.extend(s.take_output());
        }
        s.end_body().unwrap();
        out.extend(s.take_output());
        out
    };
    for i in 0..=body.len() {
        let (a, b) = body.split_at(i);
        assert_eq!(
            body_with(&[a, b]),
            expected,
            "split at {i}: {:?}",
            String::from_utf8_lossy(&body_with(&[a, b]))
        );
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(body_with(&bytes), expected);
    // Edge cases: empty body, a body ending in CR, in CRLF.
    assert_eq!(body_with(&[]), b".\r\n");
    assert_eq!(body_with(&[b"a\r"]), b"a\r\n.\r\n");
    assert_eq!(body_with(&[b"a\r\n"]), b"a\r\n.\r\n");
    assert_eq!(body_with(&[b"."]), b"..\r\n.\r\n");
}

#[test]
fn write_body_respects_the_output_bound() {
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    step(&mut s, b"250 ok\r\n250 ok\r\n354 go\r\n");
    let big = vec![b'\n'; 1 << 20];
    let n = s.write_body(&big).unwrap();
    assert!(n > 0 && n < big.len());
    let mut zero = false;
    for _ in 0..100 {
        if s.write_body(&big).unwrap() == 0 {
            zero = true;
            break;
        }
    }
    assert!(zero, "full until drained");
    assert!(s.output().len() <= rsmtpd_smtp_proto::client::OUTPUT_HIGH_WATER);
    s.take_output();
    assert!(s.write_body(&big).unwrap() > 0);
}

fn failure(events: &[Event]) -> &SessionError {
    match events.last() {
        Some(Event::Failed(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn malformed_and_unexpected_replies_fail_the_session() {
    let cases: &[(&[u8], SessionError)] = &[
        (b"220 mx\n", SessionError::Malformed(ReplyError::BareLf)),
        (
            b"220 mx\rx\r\n",
            SessionError::Malformed(ReplyError::BareCr),
        ),
        (b"600 mx\r\n", SessionError::Malformed(ReplyError::BadCode)),
        (b"199 mx\r\n", SessionError::Malformed(ReplyError::BadCode)),
        (b"22 mx\r\n", SessionError::Malformed(ReplyError::BadCode)),
        (
            b"220-mx\r\n250 mx\r\n",
            SessionError::Malformed(ReplyError::CodeMismatch {
                first: 220,
                then: 250,
            }),
        ),
    ];
    for (input, expected) in cases {
        let mut s = ClientSession::new(config(Mode::Smtp));
        let (out, ev) = step(&mut s, input);
        assert_eq!(out, b"", "{input:?}");
        assert_eq!(failure(&ev), expected, "{input:?}");
        assert!(!failure(&ev).is_permanent());
        assert!(s.is_done());
        // Nothing more is read or written.
        let (out, ev) = step(&mut s, b"220 again\r\n");
        assert_eq!((out, ev), (Vec::new(), Vec::new()));
        assert_eq!(s.quit(), Err(SendError::NotReady));
    }

    // A greeting of the wrong kind, a 354 to MAIL, a 250 to DATA, a reply
    // nobody asked for.
    let mut s = ClientSession::new(config(Mode::Smtp));
    let ev = step(&mut s, b"250 hi\r\n").1;
    assert!(matches!(
        failure(&ev),
        SessionError::Unexpected {
            to: Awaiting::Greeting,
            ..
        }
    ));

    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    let ev = step(&mut s, b"354 go\r\n").1;
    assert!(matches!(
        failure(&ev),
        SessionError::Unexpected {
            to: Awaiting::Mail,
            ..
        }
    ));

    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    let (out, ev) = step(&mut s, b"250 ok\r\n250 ok\r\n250 ok\r\n");
    assert_eq!(out, b"DATA\r\n");
    assert!(matches!(
        failure(&ev),
        SessionError::Unexpected {
            to: Awaiting::Data,
            ..
        }
    ));

    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    let ev = step(&mut s, b"250 surprise\r\n").1;
    assert!(matches!(
        failure(&ev),
        SessionError::Unexpected {
            to: Awaiting::Nothing,
            ..
        }
    ));

    // A 5xx greeting is a permanent refusal of this server.
    let mut s = ClientSession::new(config(Mode::Smtp));
    let ev = step(&mut s, b"554 5.3.2 go away\r\n").1;
    assert!(failure(&ev).is_permanent());
}

#[test]
fn unsolicited_421_and_eof_end_the_attempt() {
    // 421 in the middle: unresolved recipients become temporary.
    let mut s = ready(Mode::Lmtp, b"250-lmtp\r\n250 PIPELINING\r\n");
    s.send_mail(&envelope("a@x.example", &["u1", "u2", "u3"]))
        .unwrap();
    drain(&mut s);
    let (_, ev) = step(&mut s, b"250 ok\r\n550 no\r\n421 4.3.2 shutting down\r\n");
    assert_eq!(
        outcome_codes(&ev),
        [(0, "perm", 550), (1, "temp", 421), (2, "temp", 421)]
    );
    assert!(matches!(failure(&ev), SessionError::Closing(r) if r.code() == 421));

    // EOF before the body's replies.
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    step(&mut s, b"250 ok\r\n250 ok\r\n354 go\r\n");
    send_body(&mut s, b"x\r\n");
    s.closed();
    let ev = drain(&mut s).1;
    assert_eq!(failure(&ev), &SessionError::ConnectionClosed(Awaiting::Dot));

    // A reply while the body is being written.
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    step(&mut s, b"250 ok\r\n250 ok\r\n354 go\r\n");
    let ev = step(&mut s, b"421 4.4.2 timeout\r\n").1;
    assert!(matches!(failure(&ev), SessionError::Closing(_)));
    assert_eq!(s.write_body(b"x"), Err(SendError::NotReady));
}

#[test]
fn calls_out_of_turn_are_refused() {
    let mut s = ClientSession::new(config(Mode::Smtp));
    let env = envelope("a@x.example", &["b@y.example"]);
    assert_eq!(s.send_mail(&env), Err(SendError::NotReady));
    assert_eq!(s.quit(), Err(SendError::NotReady));
    assert_eq!(s.write_body(b"x"), Err(SendError::NotReady));
    assert_eq!(s.end_body(), Err(SendError::NotReady));
    assert_eq!(s.tls_established(), Err(SendError::NotReady));
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    assert_eq!(s.start_tls(), Err(SendError::StartTlsNotOffered));
    s.send_mail(&env).unwrap();
    assert_eq!(s.send_mail(&env), Err(SendError::NotReady));
    assert_eq!(s.end_body(), Err(SendError::NotReady));
    assert_eq!(
        Envelope::new(ReversePath::Null, MailParams::default(), vec![]),
        Err(EnvelopeError::NoRecipients)
    );
    let many = (0..1001)
        .map(|i| rcpt(&format!("u{i}@y.example")))
        .collect();
    assert_eq!(
        Envelope::new(ReversePath::Null, MailParams::default(), many),
        Err(EnvelopeError::TooManyRecipients)
    );
}

#[test]
fn starttls_hook() {
    let mut s = ready(
        Mode::Smtp,
        b"250-mx.example\r\n250-STARTTLS\r\n250 PIPELINING\r\n",
    );
    assert!(s.capabilities().starttls);
    s.start_tls().unwrap();
    assert_eq!(drain(&mut s).0, b"STARTTLS\r\n");
    let (out, ev) = step(&mut s, b"220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(out, b"");
    assert_eq!(ev, [Event::TlsReady]);
    s.tls_established().unwrap();
    assert_eq!(drain(&mut s).0, b"EHLO client.example\r\n");
    assert_eq!(s.capabilities(), &Capabilities::default());
    let (_, ev) = step(&mut s, b"250-mx.example\r\n250 SIZE\r\n");
    assert_eq!(ev, [Event::Ready]);
    assert_eq!(s.capabilities().size, SizeLimit::Unlimited);

    // Plaintext behind the 220 is never read as if it came over TLS.
    let mut s = ready(Mode::Smtp, b"250-mx.example\r\n250 STARTTLS\r\n");
    s.start_tls().unwrap();
    drain(&mut s);
    let input = b"220 go\r\n250-injected\r\n250 AUTH PLAIN\r\n";
    assert_eq!(s.feed(input), 8);
    let mut ev = Vec::new();
    while let Some(e) = s.poll() {
        ev.push(e);
    }
    assert_eq!(ev[0], Event::TlsReady);
    assert_eq!(failure(&ev), &SessionError::DataAfterStartTls);
}

#[test]
fn capabilities_are_parsed_defensively() {
    let mut input = b"250-mx.example\r\n250-size 0\r\n250-AUTH plain LOGIN login bad/mech \
CRAM-MD5 X_Y waytoolongmechanismname12\r\n250-FUTURE EXT\r\n250-\r\n"
        .to_vec();
    let many: String = (0..40).map(|i| format!(" M{i}")).collect();
    input.extend_from_slice(format!("250-AUTH{many}\r\n250 pipelining\r\n").as_bytes());
    let s = ready(Mode::Smtp, &input);
    let caps = s.capabilities();
    assert!(caps.pipelining && caps.esmtp);
    assert_eq!(caps.size, SizeLimit::Unlimited);
    assert_eq!(caps.auth.len(), 16);
    assert_eq!(caps.auth[..4], ["PLAIN", "LOGIN", "CRAM-MD5", "X_Y"]);
    for (size, limit) in [
        ("SIZE 52428800", SizeLimit::Max(52_428_800)),
        ("SIZE", SizeLimit::Unlimited),
        ("SIZE -1", SizeLimit::Unlimited),
        ("SIZE 99999999999999999999999", SizeLimit::Unlimited),
    ] {
        let s = ready(Mode::Smtp, format!("250-mx\r\n250 {size}\r\n").as_bytes());
        assert_eq!(s.capabilities().size, limit, "{size}");
    }
}

#[test]
fn reply_text_handed_over_is_escaped() {
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    s.send_mail(&envelope("a@x.example", &["b@y.example"]))
        .unwrap();
    drain(&mut s);
    step(&mut s, b"250 ok\r\n");
    let (_, ev) = step(&mut s, b"550 5.1.1 \x1b[31mevil\xff\r\n");
    match &ev[0] {
        Event::Recipient { outcome, .. } => {
            assert_eq!(outcome.reply().safe_text(), "\\x1B[31mevil\\xEF\\xBF\\xBD");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pipelining_window_bounds_commands_in_flight() {
    let mut s = ready(Mode::Smtp, EHLO_PIPE);
    let to: Vec<String> = (0..250).map(|i| format!("u{i}@y.example")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    s.send_mail(&envelope("a@x.example", &to)).unwrap();
    let out = drain(&mut s).0;
    let lines = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(lines, rsmtpd_smtp_proto::client::PIPELINE_WINDOW);
    // Each reply frees one slot.
    let out = step(&mut s, b"250 ok\r\n").0;
    assert_eq!(out, b"RCPT TO:<u99@y.example>\r\n");
    let mut out = Vec::new();
    for _ in 0..250 {
        out.extend(step(&mut s, b"250 ok\r\n").0);
    }
    assert!(out.ends_with(b"RCPT TO:<u249@y.example>\r\nDATA\r\n"));
}

#[test]
fn the_greeting_names_the_server() {
    let mut s = ClientSession::new(config(Mode::Smtp));
    assert_eq!(s.greeted_as(), None);
    step(&mut s, b"220 MX.Example.NET ESMTP ready\r\n");
    assert_eq!(s.greeted_as(), Some("mx.example.net"));
    let mut s = ClientSession::new(config(Mode::Smtp));
    step(&mut s, b"220-first.example\r\n220 second\r\n");
    assert_eq!(s.greeted_as(), Some("first.example"));
    let mut s = ClientSession::new(config(Mode::Smtp));
    step(&mut s, b"220\r\n");
    assert_eq!(s.greeted_as(), None);
}

#[test]
fn auth_plain_then_ready_again() {
    let mut s = ready(
        Mode::Smtp,
        b"250-mx.example\r\n250-AUTH LOGIN PLAIN\r\n250 PIPELINING\r\n",
    );
    s.authenticate("joe", b"s3cret").unwrap();
    // \0joe\0s3cret
    assert_eq!(drain(&mut s).0, b"AUTH PLAIN AGpvZQBzM2NyZXQ=\r\n");
    assert_eq!(s.authenticate("joe", b"x"), Err(SendError::NotReady));
    let (out, ev) = step(&mut s, b"235 2.7.0 Authentication successful\r\n");
    assert_eq!(out, b"");
    assert_eq!(ev, [Event::Ready]);
    assert!(s.is_authenticated());
    s.send_mail(&envelope("a@x", &["b@y"])).unwrap();
    assert!(drain(&mut s).0.starts_with(b"MAIL FROM:<a@x>"));
}

#[test]
fn auth_login_answers_each_challenge() {
    let mut s = ready(Mode::Smtp, b"250-mx.example\r\n250 AUTH LOGIN\r\n");
    s.authenticate("joe", b"s3cret").unwrap();
    assert_eq!(drain(&mut s).0, b"AUTH LOGIN\r\n");
    assert_eq!(step(&mut s, b"334 VXNlcm5hbWU6\r\n").0, b"am9l\r\n");
    assert_eq!(step(&mut s, b"334 UGFzc3dvcmQ6\r\n").0, b"czNjcmV0\r\n");
    // A third challenge is more than LOGIN has: the session fails.
    let (_, ev) = step(&mut s, b"334 VXNlcm5hbWU6\r\n");
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Failed(SessionError::Unexpected {
                to: Awaiting::Auth,
                ..
            })]
        ),
        "{ev:?}"
    );
}

#[test]
fn auth_refused_or_not_offered() {
    let mut s = ready(Mode::Smtp, b"250-mx.example\r\n250 AUTH PLAIN\r\n");
    s.authenticate("joe", b"bad").unwrap();
    drain(&mut s);
    let (_, ev) = step(&mut s, b"535 5.7.8 Authentication failed\r\n");
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Failed(SessionError::Refused {
                to: Awaiting::Auth,
                ..
            })]
        ),
        "{ev:?}"
    );
    assert!(!s.is_authenticated());
    let mut s = ready(Mode::Smtp, b"250-mx.example\r\n250 AUTH CRAM-MD5\r\n");
    assert_eq!(s.authenticate("joe", b"pw"), Err(SendError::AuthNotOffered));
    let mut s = ready(Mode::Smtp, EHLO_PLAIN);
    assert_eq!(s.authenticate("joe", b"pw"), Err(SendError::AuthNotOffered));
}
