//! Byte scripts for the server session: client bytes in, exact server bytes out.
// Helpers outside #[test] functions panic on purpose: a failed answer is a failed test.
#![allow(clippy::unwrap_used)]

use rsmtpd_smtp_proto::data::DataError;
use rsmtpd_smtp_proto::reply::{EnhancedCode, Reply};
use rsmtpd_smtp_proto::server::{
    AnswerError, Event, INPUT_CAPACITY, OUTPUT_HIGH_WATER, ServerConfig, ServerSession, Transaction,
};

const GREETING: &str = "220 mx.example ESMTP rsmtpd\r\n";
const EHLO_REPLY: &str = "250-mx.example Hello c, pleased to meet you\r\n\
250-8BITMIME\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250-SIZE 1000000\r\n\
250-DSN\r\n\
250-PIPELINING\r\n\
250-SMTPUTF8\r\n\
250 HELP\r\n";
const MAIL_OK: &str = "250 2.1.0 Ok\r\n";
const RCPT_OK: &str = "250 2.1.5 Destination address valid: Recipient ok\r\n";
const GO_AHEAD: &str = "354 Enter mail, end with \".\" on a line by itself\r\n";
const ACCEPTED: &str = "250 2.0.0 0123abcd Message accepted for delivery\r\n";

fn config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.example".into(),
        max_message_size: 1_000_000,
        ..ServerConfig::default()
    }
}

/// What the fake daemon saw.
#[derive(Debug, Default)]
struct Log {
    out: Vec<u8>,
    mails: Vec<String>,
    rcpts: Vec<String>,
    /// Committed messages: (transaction, content).
    committed: Vec<(Transaction, Vec<u8>)>,
    refused: Vec<DataError>,
    data: Vec<u8>,
    closed: bool,
}

impl Log {
    fn out(&self) -> &str {
        std::str::from_utf8(&self.out).unwrap()
    }
}

enum Answer {
    AcceptMail,
    AcceptRcpt,
    RejectRcpt,
    DataReady,
    Commit(Transaction),
    Nothing,
}

/// Answers every event like a permissive daemon, except that recipients
/// whose local part starts with `nosuch` are refused.
fn pump(s: &mut ServerSession, log: &mut Log) {
    loop {
        let answer = match s.poll() {
            None => break,
            Some(Event::MailFrom { from, .. }) => {
                log.mails.push(from.to_string());
                Answer::AcceptMail
            }
            Some(Event::Recipient { to, .. }) => {
                log.rcpts.push(to.to_string());
                if to.mailbox().local_part().starts_with("nosuch") {
                    Answer::RejectRcpt
                } else {
                    Answer::AcceptRcpt
                }
            }
            Some(Event::DataStart { .. }) => {
                log.data.clear();
                Answer::DataReady
            }
            Some(Event::DataChunk(c)) => {
                log.data.extend_from_slice(c);
                Answer::Nothing
            }
            Some(Event::DataEnd {
                transaction,
                verdict: Ok(()),
            }) => Answer::Commit(transaction.clone()),
            Some(Event::DataEnd {
                verdict: Err(e), ..
            }) => {
                log.refused.push(e);
                Answer::Nothing
            }
            Some(Event::Close) => {
                log.closed = true;
                Answer::Nothing
            }
            Some(e @ (Event::StartTls | Event::Auth { .. })) => {
                panic!("not offered by this config: {e:?}")
            }
        };
        match answer {
            Answer::AcceptMail => s.accept_mail().unwrap(),
            Answer::AcceptRcpt => s.accept_rcpt().unwrap(),
            Answer::RejectRcpt => s
                .reject_rcpt(
                    Reply::new(
                        550,
                        Some(EnhancedCode::new(5, 1, 1)),
                        vec!["Invalid recipient".into()],
                    )
                    .unwrap(),
                )
                .unwrap(),
            Answer::DataReady => s.data_ready().unwrap(),
            Answer::Commit(tx) => {
                log.committed.push((tx, std::mem::take(&mut log.data)));
                s.message_accepted("0123abcd").unwrap();
            }
            Answer::Nothing => {}
        }
        log.out.extend(s.take_output());
    }
    log.out.extend(s.take_output());
}

/// Feeds `input` in chunks of `chunk` bytes, answering as it goes.
fn run_with(config: ServerConfig, input: &[u8], chunk: usize) -> Log {
    let mut s = ServerSession::new(config);
    let mut log = Log::default();
    log.out.extend(s.take_output());
    let mut rest = input;
    while !rest.is_empty() && !log.closed {
        let n = s.feed(&rest[..chunk.min(rest.len())]);
        rest = &rest[n..];
        pump(&mut s, &mut log);
    }
    pump(&mut s, &mut log);
    log
}

fn run(input: &[u8]) -> Log {
    run_with(config(), input, usize::MAX)
}

fn expect(input: &[u8], replies: &[&str]) -> Log {
    let log = run(input);
    let want: String = std::iter::once(GREETING)
        .chain(replies.iter().copied())
        .collect();
    assert_eq!(
        log.out(),
        want,
        "input {:?}",
        String::from_utf8_lossy(input)
    );
    log
}

#[test]
fn greeting_ehlo_and_quit() {
    let log = expect(b"EHLO c\r\nQUIT\r\n", &[EHLO_REPLY, "221 2.0.0 Bye\r\n"]);
    assert!(log.closed);
}

#[test]
fn helo_and_re_ehlo() {
    expect(
        b"HELO c\r\nEHLO c\r\nhelo [127.0.0.1]\r\n",
        &[
            "250 mx.example Hello c, pleased to meet you\r\n",
            EHLO_REPLY,
            "250 mx.example Hello [127.0.0.1], pleased to meet you\r\n",
        ],
    );
}

#[test]
fn helo_errors() {
    expect(
        b"HELO\r\nEHLO\r\nEHLO -bad_domain-\r\n",
        &[
            "501 5.5.1 Invalid command: HELO requires domain name\r\n",
            "501 5.5.1 Invalid command: EHLO requires domain name\r\n",
            "501 5.5.4 Invalid command arguments: Invalid domain name\r\n",
        ],
    );
}

#[test]
fn simple_commands() {
    expect(
        b"NOOP hello\r\nHELP\r\nVRFY root\r\nEXPN root\r\nETRN x\r\nBDAT 10 LAST\r\nWIZ\r\nRSET\r\nSTARTTLS\r\nAUTH PLAIN\r\n",
        &[
            "250 2.0.0 Ok\r\n",
            "214-2.0.0 This is rsmtpd\r\n214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY\r\n214 2.0.0 End of HELP info\r\n",
            "252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery\r\n",
            "502 5.5.1 EXPN not supported\r\n",
            "502 5.5.1 Invalid command: Command not implemented\r\n",
            "502 5.5.1 Invalid command: Command not implemented\r\n",
            "500 5.5.1 Invalid command: Command unrecognized\r\n",
            "250 2.0.0 Reset state\r\n",
            "502 5.5.1 Invalid command: Command not supported\r\n",
            "502 5.5.1 Invalid command: Command not supported\r\n",
        ],
    );
}

#[test]
fn sequence_errors() {
    expect(
        b"MAIL FROM:<a@example.org>\r\nDATA\r\nEHLO c\r\nRCPT TO:<b@example.net>\r\nDATA\r\n\
MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nDATA\r\nQUIT x\r\n",
        &[
            "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n",
            "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n",
            EHLO_REPLY,
            "503 5.5.1 Invalid command: Need MAIL first\r\n",
            "503 5.5.1 Invalid command: Need MAIL first\r\n",
            MAIL_OK,
            "503 5.5.1 Invalid command: Nested MAIL command\r\n",
            "554 5.5.1 No valid recipients\r\n",
            "501 5.5.4 Invalid command arguments: No parameters allowed\r\n",
        ],
    );
}

#[test]
fn address_syntax_replies() {
    let log = expect(
        "EHLO c\r\nMAIL FROM:<;sleep 66;>\r\nMAIL FROM:<@a>\r\nMAIL FROM:a@example.org\r\n\
MAIL FROM:<\u{e9}@example.org>\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<>\r\n\
RCPT TO:<\u{e9}@example.org>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<nosuchuser@localhost>\r\n"
            .as_bytes(),
        &[
            EHLO_REPLY,
            "553 5.1.0 Sender address syntax error\r\n",
            "553 5.1.0 Sender address syntax error\r\n",
            "553 5.1.0 Sender address syntax error\r\n",
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n",
            MAIL_OK,
            "501 5.1.3 Recipient address syntax error\r\n",
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n",
            RCPT_OK,
            "550 5.1.1 Invalid recipient\r\n",
        ],
    );
    assert_eq!(log.rcpts, ["<postmaster>", "<nosuchuser@localhost>"]);
}

#[test]
fn smtputf8_transaction() {
    let log = expect(
        "EHLO c\r\nMAIL FROM:<\u{e9}@example.org> SMTPUTF8\r\nRCPT TO:<j\u{f6}rg@b\u{fc}cher.de>\r\nDATA\r\nx\r\n.\r\n"
            .as_bytes(),
        &[EHLO_REPLY, MAIL_OK, RCPT_OK, GO_AHEAD, ACCEPTED],
    );
    let (tx, _) = &log.committed[0];
    assert!(tx.params.smtputf8);
    assert_eq!(
        tx.recipients[0].path.to_string(),
        "<j\u{f6}rg@b\u{fc}cher.de>"
    );
}

#[test]
fn params_refused() {
    expect(
        b"EHLO c\r\nMAIL FROM:<a@example.org> FOO=BAR\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\n\
MAIL FROM:<a@example.org> SIZE=1000001\r\nMAIL FROM:<a@example.org> SIZE=1000000\r\n\
RCPT TO:<b@example.net> NOTIFY=NEVER,SUCCESS\r\nRCPT TO:<c@example.net> FOO=BAR\r\n",
        &[
            EHLO_REPLY,
            "555 5.5.4 Unsupported parameter FOO\r\n",
            "555 5.5.4 Unsupported BODY type\r\n",
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n",
            MAIL_OK,
            "501 5.5.4 NOTIFY=NEVER cannot be combined with other values\r\n",
            "555 5.5.4 Unsupported parameter FOO\r\n",
        ],
    );
}

#[test]
fn esmtp_params_need_ehlo() {
    expect(
        b"HELO c\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@x> NOTIFY=NEVER\r\n",
        &[
            "250 mx.example Hello c, pleased to meet you\r\n",
            "555 5.5.4 Parameters need EHLO, not HELO\r\n",
            MAIL_OK,
            "555 5.5.4 Parameters need EHLO, not HELO\r\n",
        ],
    );
}

#[test]
fn dsn_params_per_recipient_and_disabled() {
    let log = expect(
        b"EHLO c\r\nMAIL FROM:<a@example.org> RET=HDRS ENVID=xyz\r\n\
RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@example.net\r\nRCPT TO:<c@example.net>\r\n\
DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
        &[EHLO_REPLY, MAIL_OK, RCPT_OK, RCPT_OK, GO_AHEAD, ACCEPTED],
    );
    let (tx, data) = &log.committed[0];
    assert_eq!(data, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(tx.params.envid.as_ref().unwrap().as_str(), "xyz");
    assert!(tx.recipients[0].params.notify.is_some());
    assert!(tx.recipients[0].params.orcpt.is_some());
    assert_eq!(tx.recipients[1].params, Default::default());

    let no_dsn = ServerConfig {
        dsn: false,
        ..config()
    };
    let log = run_with(
        no_dsn,
        b"EHLO c\r\nMAIL FROM:<a@example.org> RET=FULL\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@x> NOTIFY=NEVER\r\n",
        usize::MAX,
    );
    assert!(!log.out().contains("250-DSN"));
    assert!(log.out().ends_with(
        "555 5.5.4 DSN parameters not supported\r\n250 2.1.0 Ok\r\n555 5.5.4 DSN parameters not supported\r\n"
    ));
}

#[test]
fn whole_transaction_pipelined_in_one_feed() {
    let input = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<nosuch@example.net>\r\nDATA\r\n\
Subject: crlf\r\n\r\nbody line\r\n..dotstuffed\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n.\r\nQUIT\r\n";
    let replies = [
        EHLO_REPLY,
        MAIL_OK,
        RCPT_OK,
        "550 5.1.1 Invalid recipient\r\n",
        GO_AHEAD,
        ACCEPTED,
        MAIL_OK,
        RCPT_OK,
        GO_AHEAD,
        ACCEPTED,
        "221 2.0.0 Bye\r\n",
    ];
    let log = expect(input, &replies);
    assert_eq!(log.committed.len(), 2);
    assert_eq!(
        log.committed[0].1,
        b"Subject: crlf\r\n\r\nbody line\r\n.dotstuffed\r\n"
    );
    assert_eq!(log.committed[0].0.recipients.len(), 1);
    assert_eq!(log.committed[1].1, b"");
    assert!(log.closed);
    // Any chunking gives the same bytes and the same messages.
    for chunk in [1, 2, 3, 5, 8, 13, 64] {
        let l = run_with(config(), input, chunk);
        assert_eq!(l.out, log.out, "chunk {chunk}");
        assert_eq!(l.committed.len(), 2);
        assert_eq!(l.committed[0].1, log.committed[0].1);
    }
}

#[test]
fn duplicate_recipient_is_kept_once() {
    let log = expect(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<b@EXAMPLE.net>\r\nDATA\r\nx\r\n.\r\n",
        &[EHLO_REPLY, MAIL_OK, RCPT_OK, RCPT_OK, GO_AHEAD, ACCEPTED],
    );
    assert_eq!(log.rcpts, ["<b@example.net>"]);
    assert_eq!(log.committed[0].0.recipients.len(), 1);
}

/// The transcript's smuggling attempt: OpenSMTPD took `LF . CRLF` as the
/// end. Here it is data, the message is refused, and the "smuggled" MAIL is
/// never seen as a command.
#[test]
fn smuggling_attempt_yields_no_second_message() {
    let input = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n\
Subject: smug\r\n\r\nbody\n.\r\nMAIL FROM:<admin@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n";
    let log = expect(
        input,
        &[
            EHLO_REPLY,
            MAIL_OK,
            RCPT_OK,
            GO_AHEAD,
            "550 5.6.0 Message refused: bare LF in data, lines must end with CRLF\r\n",
            "221 2.0.0 Bye\r\n",
        ],
    );
    assert_eq!(log.mails, ["<a@example.org>"]);
    assert!(log.committed.is_empty());
    assert_eq!(log.refused, [DataError::BareLf]);
}

#[test]
fn every_fake_terminator_is_refused_in_session() {
    let fakes: &[(&[u8], &str)] = &[
        (b"\n.\n", "bare LF"),
        (b"\r\n.\n", "bare LF"),
        (b"\n.\r\n", "bare LF"),
        (b"\r.\r", "bare CR"),
        (b"\r\n.\r", "bare CR"),
        (b"\r\n.\r\r\n", "bare CR"),
        (b"\r.\r\n", "bare CR"),
    ];
    for (fake, what) in fakes {
        let mut input =
            b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nbody"
                .to_vec();
        input.extend_from_slice(fake);
        input.extend_from_slice(b"MAIL FROM:<admin@example.org>\r\n.\r\nNOOP\r\n");
        for chunk in [1, 4, usize::MAX] {
            let log = run_with(config(), &input, chunk);
            assert!(log.committed.is_empty(), "{fake:?}");
            assert_eq!(log.mails.len(), 1, "{fake:?}");
            assert!(
                log.out().ends_with(&format!(
                    "550 5.6.0 Message refused: {what} in data, lines must end with CRLF\r\n250 2.0.0 Ok\r\n"
                )),
                "{fake:?}: {}",
                log.out()
            );
        }
    }
}

#[test]
fn data_refusals_then_next_transaction_works() {
    let log = expect(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n Subject: bad\r\n\r\nbody\r\n.\r\n\
RCPT TO:<c@example.net>\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: ok\r\n\r\nbody\r\n.\r\n",
        &[
            EHLO_REPLY,
            MAIL_OK,
            RCPT_OK,
            GO_AHEAD,
            "550 5.7.1 Delivery not authorized, message refused: Message is not RFC 5322 compliant\r\n",
            "503 5.5.1 Invalid command: Need MAIL first\r\n",
            MAIL_OK,
            RCPT_OK,
            GO_AHEAD,
            ACCEPTED,
        ],
    );
    assert_eq!(log.refused, [DataError::NotRfc5322]);
    assert_eq!(log.committed.len(), 1);
}

#[test]
fn message_over_size_limit() {
    let small = ServerConfig {
        max_message_size: 10,
        ..config()
    };
    let log = run_with(
        small,
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n0123456789abcdef\r\n.\r\nNOOP\r\n",
        3,
    );
    assert!(
        log.out()
            .ends_with("552 5.3.4 Message too big for system\r\n250 2.0.0 Ok\r\n"),
        "{}",
        log.out()
    );
    assert_eq!(log.refused, [DataError::TooBig]);
}

#[test]
fn long_command_line_refused_and_session_continues() {
    let mut input = b"EHLO c\r\nMAIL FROM:<".to_vec();
    input.extend(std::iter::repeat_n(b'a', 3000));
    input.extend_from_slice(b"@example.org>\r\nNOOP\r\n");
    for chunk in [1, 100, usize::MAX] {
        let log = run_with(config(), &input, chunk);
        assert_eq!(
            log.out(),
            format!("{GREETING}{EHLO_REPLY}500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n")
        );
    }
    // 512 octets with CRLF is the longest line taken.
    let mut ok = b"NOOP ".to_vec();
    ok.extend(std::iter::repeat_n(b'x', 505));
    ok.extend_from_slice(b"\r\n");
    assert_eq!(ok.len(), 512);
    expect(&ok, &["250 2.0.0 Ok\r\n"]);
    ok.insert(5, b'x');
    expect(&ok, &["500 5.5.2 Line too long\r\n"]);
}

#[test]
fn bare_lf_command_refused() {
    expect(
        b"NOOP\nNOOP\r\n",
        &[
            "500 5.5.2 Syntax error: lines must end with CRLF\r\n",
            "250 2.0.0 Ok\r\n",
        ],
    );
    expect(
        b"NO\rOP\r\n",
        &["500 5.5.2 Syntax error: invalid character in command\r\n"],
    );
}

#[test]
fn too_many_recipients() {
    let cfg = ServerConfig {
        max_recipients: 2,
        ..config()
    };
    let log = run_with(
        cfg,
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nRCPT TO:<a@x>\r\n",
        usize::MAX,
    );
    assert!(log.out().ends_with(&format!(
        "{RCPT_OK}{RCPT_OK}452 4.5.3 Too many recipients\r\n{RCPT_OK}"
    )));
}

#[test]
fn too_many_messages() {
    let cfg = ServerConfig {
        max_messages: 1,
        ..config()
    };
    let log = run_with(
        cfg,
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<a@x>\r\nDATA\r\n.\r\nMAIL FROM:<a@x>\r\n",
        usize::MAX,
    );
    assert!(log.out().ends_with(&format!(
        "{ACCEPTED}452 4.5.3 Too many messages for this session\r\n"
    )));
}

#[test]
fn too_many_errors_closes() {
    let cfg = ServerConfig {
        max_errors: 3,
        ..config()
    };
    let log = run_with(cfg, b"WIZ\r\nNOOP\r\nWIZ\r\nWIZ\r\nNOOP\r\n", usize::MAX);
    let unrec = "500 5.5.1 Invalid command: Command unrecognized\r\n";
    assert_eq!(
        log.out(),
        format!(
            "{GREETING}{unrec}250 2.0.0 Ok\r\n{unrec}{unrec}421 4.7.0 mx.example Too many errors, closing connection\r\n"
        )
    );
    assert!(log.closed);
}

#[test]
fn timeout_and_shutdown() {
    let mut s = ServerSession::new(config());
    s.take_output();
    s.on_timeout();
    assert_eq!(
        s.take_output(),
        b"421 4.4.2 mx.example Timeout, closing connection\r\n"
    );
    assert_eq!(s.poll(), Some(Event::Close));
    assert_eq!(s.poll(), None);
    assert!(s.is_closed());
    s.shutdown();
    assert!(s.take_output().is_empty());

    let mut s = ServerSession::new(config());
    s.take_output();
    s.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n");
    assert!(matches!(s.poll(), Some(Event::MailFrom { .. })));
    s.shutdown();
    assert!(
        s.take_output()
            .ends_with(b"421 4.3.0 mx.example Server shutting down, closing connection\r\n")
    );
    assert_eq!(s.poll(), Some(Event::Close));
    assert_eq!(s.accept_mail(), Err(AnswerError::Unexpected));
}

#[test]
fn quit_ignores_what_follows() {
    let log = expect(b"QUIT\r\nNOOP\r\n", &["221 2.0.0 Bye\r\n"]);
    assert!(log.closed);
}

#[test]
fn answers_are_checked() {
    let mut s = ServerSession::new(config());
    assert_eq!(s.accept_rcpt(), Err(AnswerError::Unexpected));
    assert_eq!(s.data_ready(), Err(AnswerError::Unexpected));
    assert_eq!(s.message_accepted("x"), Err(AnswerError::Unexpected));
    s.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n");
    assert!(matches!(s.poll(), Some(Event::MailFrom { .. })));
    assert_eq!(s.accept_rcpt(), Err(AnswerError::Unexpected));
    let ok = Reply::new(250, None, vec!["fine".into()]).unwrap();
    assert_eq!(s.reject_mail(ok), Err(AnswerError::NotARefusal));
    let no = Reply::new(
        550,
        Some(EnhancedCode::new(5, 7, 1)),
        vec!["Go away".into()],
    )
    .unwrap();
    s.reject_mail(no).unwrap();
    assert!(s.take_output().ends_with(b"550 5.7.1 Go away\r\n"));
    assert!(s.transaction().is_none());
}

#[test]
fn queue_refusals() {
    let mut s = ServerSession::new(config());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n");
    assert!(matches!(s.poll(), Some(Event::MailFrom { .. })));
    s.accept_mail().unwrap();
    assert!(matches!(s.poll(), Some(Event::Recipient { .. })));
    s.accept_rcpt().unwrap();
    assert!(matches!(s.poll(), Some(Event::DataStart { .. })));
    let busy = Reply::new(
        451,
        Some(EnhancedCode::new(4, 3, 0)),
        vec!["Temporary failure".into()],
    )
    .unwrap();
    s.data_refused(busy.clone()).unwrap();
    assert!(
        s.take_output()
            .ends_with(b"451 4.3.0 Temporary failure\r\n")
    );
    assert!(s.transaction().is_some());
    s.feed(b"DATA\r\nhi\r\n.\r\n");
    assert!(matches!(s.poll(), Some(Event::DataStart { .. })));
    s.data_ready().unwrap();
    assert_eq!(s.poll(), Some(Event::DataChunk(b"hi\r\n")));
    assert!(matches!(
        s.poll(),
        Some(Event::DataEnd {
            verdict: Ok(()),
            ..
        })
    ));
    assert_eq!(s.poll(), None);
    s.message_failed(busy).unwrap();
    assert!(s.take_output().ends_with(
        b"354 Enter mail, end with \".\" on a line by itself\r\n451 4.3.0 Temporary failure\r\n"
    ));
    assert!(s.transaction().is_none());
}

#[test]
fn pipelined_replies_wait_for_answers() {
    let mut s = ServerSession::new(config());
    s.take_output();
    s.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nNOOP\r\n");
    assert!(matches!(s.poll(), Some(Event::MailFrom { .. })));
    // Stopped: the NOOP is not answered before the MAIL.
    assert_eq!(s.poll(), None);
    assert_eq!(s.take_output(), EHLO_REPLY.as_bytes());
    s.accept_mail().unwrap();
    assert_eq!(s.poll(), None);
    assert_eq!(
        s.take_output(),
        format!("{MAIL_OK}250 2.0.0 Ok\r\n").as_bytes()
    );
}

#[test]
fn buffers_stay_bounded() {
    let mut s = ServerSession::new(config());
    let noops = b"NOOP\r\n".repeat(20_000);
    let mut fed = 0;
    // Never drain the output: the session must stop by itself.
    for _ in 0..100 {
        fed += s.feed(&noops[fed..]);
        while s.poll().is_some() {}
    }
    assert!(fed < noops.len());
    assert!(s.output().len() < OUTPUT_HIGH_WATER + 1024);
    // Input stops at its capacity.
    assert_eq!(s.feed(&vec![b'x'; INPUT_CAPACITY]), 0);
    // Draining lets it go on.
    s.take_output();
    assert!(s.poll().is_none());
    assert!(!s.output().is_empty());
}
