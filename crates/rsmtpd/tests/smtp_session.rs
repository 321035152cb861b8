//! SMTP sessions byte by byte against the real daemon: every reply code,
//! enhanced code and text the client sees, what lands in the Maildir (and
//! what must not), and the log lines an operator reads.
//!
//! A refused message is proven absent with a "canary": after the refusal
//! the same session sends a good message, waits until it is delivered and
//! then counts the files. A refused message committed by mistake would have
//! been queued first and so delivered by then.

// Helpers outside #[test] functions panic on purpose, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsmtpd_test_support::daemon::{Client, Daemon, Setup, current_user};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

const WAIT: Duration = Duration::from_secs(10);

/// The usual config with `globals` before the listener and `listen_opts`
/// after `listen on 127.0.0.1 port {port}`.
fn config(globals: &str, listen_opts: &str) -> String {
    let user = current_user();
    format!(
        "queue path \"{{spool}}\"\n{globals}listen on 127.0.0.1 port {{port}}{listen_opts}\n\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n\
         match from any for any action \"local\"\n"
    )
}

fn start(name: &str, body: &str, env: &[(&str, &str)]) -> Daemon {
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body,
            args: &[],
            env,
        },
    )
}

/// EHLO; returns the server's hostname (from the first EHLO line).
fn ehlo(c: &mut Client) -> String {
    let r = c.cmd("EHLO client.example");
    assert!(r.starts_with("250-"), "{r}");
    r.trim_start_matches("250-")
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

/// MAIL, one RCPT and DATA, each accepted.
fn begin(c: &mut Client, from: &str, to: &str) {
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{to}>")),
        "250 2.1.5 Destination address valid: Recipient ok\r\n"
    );
    assert_eq!(
        c.cmd("DATA"),
        "354 Enter mail, end with \".\" on a line by itself\r\n"
    );
}

fn assert_accepted(reply: &str) {
    assert!(
        reply.starts_with("250 2.0.0 ") && reply.ends_with(" Message accepted for delivery\r\n"),
        "{reply}"
    );
}

/// Send a good message in the session and wait until the Maildir holds
/// `total` files; then assert it holds exactly that many.
fn canary(d: &Daemon, c: &mut Client, total: usize) -> Vec<PathBuf> {
    begin(c, "canary@example.org", "canary@example.net");
    assert_accepted(&c.cmd("Subject: canary\r\n\r\nstill alive\r\n."));
    let files = d.wait_for_delivered(total, WAIT);
    // Give a wrongly committed message a moment more to show up.
    std::thread::sleep(Duration::from_millis(300));
    let files_now = d.delivered();
    assert_eq!(
        files_now.len(),
        total,
        "files: {files_now:?}\nlog:\n{}",
        d.log()
    );
    assert_eq!(files, files_now);
    files
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

fn delivered_texts(d: &Daemon) -> Vec<String> {
    d.delivered().iter().map(|p| read(p)).collect()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

// ---------------------------------------------------------------------
// Commands and their replies
// ---------------------------------------------------------------------

#[test]
fn ehlo_keywords_and_simple_commands() {
    let d = Daemon::start_default(smtpd(), "sess-cmds");
    let mut c = Client::connect(d.addr());

    // Sequence errors before any HELO.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n"
    );
    assert_eq!(
        c.cmd("DATA"),
        "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n"
    );

    let reply = c.cmd("EHLO client.example");
    let host = reply
        .trim_start_matches("250-")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        reply,
        format!(
            "250-{host} Hello client.example, pleased to meet you\r\n\
             250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 36700160\r\n\
             250-DSN\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        )
    );
    assert_eq!(
        c.cmd("HELO other.example"),
        format!("250 {host} Hello other.example, pleased to meet you\r\n")
    );
    assert_eq!(
        c.cmd("HELP"),
        "214-2.0.0 This is rsmtpd\r\n\
         214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY\r\n\
         214 2.0.0 End of HELP info\r\n"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.cmd("noop"), "250 2.0.0 Ok\r\n");
    assert_eq!(
        c.cmd("VRFY root"),
        "252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    );
    assert_eq!(c.cmd("EXPN staff"), "502 5.5.1 EXPN not supported\r\n");
    assert_eq!(
        c.cmd("FROBNICATE now"),
        "500 5.5.1 Invalid command: Command unrecognized\r\n"
    );
    assert_eq!(c.cmd(""), "500 5.5.2 Syntax error: empty command\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net>"),
        "503 5.5.1 Invalid command: Need MAIL first\r\n"
    );
    assert_eq!(
        c.cmd("DATA"),
        "503 5.5.1 Invalid command: Need MAIL first\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "503 5.5.1 Invalid command: Nested MAIL command\r\n"
    );
    assert_eq!(c.cmd("DATA"), "554 5.5.1 No valid recipients\r\n");
    // RSET ends the transaction: MAIL is not nested any more.
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
    // 9 refusals so far: under the limit of 10, the session goes on.
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
    // A new session: RSET really ended the transaction.
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net>"),
        "503 5.5.1 Invalid command: Need MAIL first\r\n"
    );
    assert_eq!(
        c.cmd("QUIT now"),
        "501 5.5.4 Invalid command arguments: No parameters allowed\r\n"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
    d.wait_for_log("closed reason=quit", WAIT);
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("smtp-in: session ")
                && l.contains(": connected address=127.0.0.1")),
        "{log}"
    );
    // Nothing was sent: nothing delivered.
    assert!(d.delivered().is_empty());
}

#[test]
fn no_dsn_and_mask_src_listener() {
    let d = start("sess-nodsn", &config("", " no-dsn mask-src"), &[]);
    let mut c = Client::connect(d.addr());
    let host = ehlo(&mut c);
    let e = c.cmd("EHLO client.example");
    assert_eq!(
        e,
        format!(
            "250-{host} Hello client.example, pleased to meet you\r\n\
             250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 36700160\r\n\
             250-PIPELINING\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        )
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> RET=HDRS"),
        "555 5.5.4 DSN parameters not supported\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net> NOTIFY=SUCCESS"),
        "555 5.5.4 DSN parameters not supported\r\n"
    );
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250 2.1.5 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_accepted(&c.cmd("Subject: masked\r\n\r\nbody\r\n."));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(1, WAIT);
    assert_eq!(files.len(), 1, "{}", d.log());
    let text = read(&files[0]);
    let received = text
        .lines()
        .skip_while(|l| !l.starts_with("Received:"))
        .take_while(|l| l.starts_with("Received:") || l.starts_with([' ', '\t']))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(received.starts_with("Received: by "), "{text}");
    assert!(!received.contains("127.0.0.1"), "{received}");
    assert!(!received.contains("client.example"), "{received}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}

#[test]
fn delivered_file_has_return_path_delivered_to_and_received() {
    let d = Daemon::start_default(smtpd(), "sess-headers");
    let mut c = Client::connect(d.addr());
    let host = ehlo(&mut c);
    begin(&mut c, "alice@example.org", "bob@example.net");
    let r = c.cmd("Subject: headers\r\n\r\nhello\r\n.");
    assert_accepted(&r);
    let msgid = r.split(' ').nth(2).unwrap().to_owned();
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(1, WAIT);
    assert_eq!(files.len(), 1, "{}", d.log());
    let text = read(&files[0]);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Return-Path: <alice@example.org>"));
    assert_eq!(lines.next(), Some("Delivered-To: bob@example.net"));
    let received: String = text
        .split("\nSubject: headers")
        .next()
        .unwrap()
        .lines()
        .skip(2)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        received.starts_with("Received: from client.example ("),
        "{received}"
    );
    assert!(received.contains("[127.0.0.1])"), "{received}");
    assert!(
        received.contains(&format!("by {host} (rsmtpd)")),
        "{received}"
    );
    assert!(received.contains(&format!(" id {msgid} ")), "{received}");
    assert!(received.contains(" for bob@example.net; "), "{received}");
    assert!(received.contains("with ESMTP"), "{received}");
    assert!(text.ends_with("Subject: headers\n\nhello\n"), "{text}");

    // The log: connection, message, close, delivery.
    d.wait_for_log("delivery: Ok for ", WAIT);
    let log = d.log();
    let session = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("smtp-in: session ")?
                .strip_suffix(": connected address=127.0.0.1 host=<unknown>")
        })
        .unwrap_or_else(|| panic!("no connected line:\n{log}"))
        .to_owned();
    assert_eq!(session.len(), 16, "{session}");
    assert!(
        log.contains(&format!(
            "smtp-in: session {session}: message msgid={msgid} size="
        )),
        "{log}"
    );
    assert!(log.contains(" nrcpt=1 proto=ESMTP"), "{log}");
    assert!(
        log.contains(&format!("smtp-in: session {session}: closed reason=quit")),
        "{log}"
    );
    let delivery = log
        .lines()
        .find(|l| l.starts_with("delivery: Ok for "))
        .unwrap();
    let evpid = delivery
        .trim_start_matches("delivery: Ok for ")
        .split(':')
        .next()
        .unwrap();
    assert_eq!(evpid.len(), 16, "{delivery}");
    assert!(
        evpid.starts_with(&msgid),
        "envelope {evpid} of message {msgid}"
    );
    assert!(
        delivery.contains(": from=<alice@example.org>, to=<bob@example.net>, "),
        "{delivery}"
    );
    assert!(delivery.contains("method=maildir"), "{delivery}");
    assert!(delivery.ends_with(", stat=Delivered"), "{delivery}");
}

// ---------------------------------------------------------------------
// DATA framing: SMTP smuggling and bad bytes
// ---------------------------------------------------------------------

const BARE_LF: &str = "550 5.6.0 Message refused: bare LF in data, lines must end with CRLF\r\n";
const BARE_CR: &str = "550 5.6.0 Message refused: bare CR in data, lines must end with CRLF\r\n";
const NUL: &str = "550 5.6.0 Message refused: NUL byte in data\r\n";

#[test]
fn smuggling_variants_are_refused_after_the_real_end() {
    let d = Daemon::start_default(smtpd(), "sess-smuggle");
    let cases: &[(&[u8], &str)] = &[
        (
            b"Subject: s1\r\n\r\nbody\n.\nMAIL FROM:<x@example.org>\r\n",
            BARE_LF,
        ),
        (
            b"Subject: s2\r\n\r\nbody\r\n.\nMAIL FROM:<x@example.org>\r\n",
            BARE_LF,
        ),
        (
            b"Subject: s3\r\n\r\nbody\n.\r\nMAIL FROM:<x@example.org>\r\n",
            BARE_LF,
        ),
        (
            b"Subject: s4\r\n\r\nbody\r.\rMAIL FROM:<x@example.org>\r\n",
            BARE_CR,
        ),
        (b"Subject: s5\r\n\r\nbare\nlf\r\n", BARE_LF),
        (b"Subject: s6\r\n\r\nbare\rcr\r\n", BARE_CR),
        (b"Subject: s7\r\n\r\nnul\0byte\r\n", NUL),
        (
            b" Subject: s8\r\n\r\nbody\r\n",
            "550 5.7.1 Delivery not authorized, message refused: \
             Message is not RFC 5322 compliant\r\n",
        ),
        // The transcript's payload (reference/opensmtpd/smtp-transcripts.txt,
        // "smuggling: fake EOM + commands in same buffer").
        (
            b"Subject: smug\r\n\r\nbody\n.\r\nMAIL FROM:<admin@example.org>\r\n\
              RCPT TO:<b@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n",
            BARE_LF,
        ),
    ];
    for (payload, expected) in cases {
        // One session each: two refusals per case, max_errors is 10.
        let mut c = Client::connect(d.addr());
        ehlo(&mut c);
        begin(&mut c, "a@example.org", "b@example.net");
        c.send(payload);
        // Nothing before the real end of data.
        c.send(b".\r\n");
        assert_eq!(
            c.reply(),
            *expected,
            "payload {:?}",
            String::from_utf8_lossy(payload)
        );
        // The transaction is over, the session goes on.
        assert_eq!(
            c.cmd("RCPT TO:<b@example.net>"),
            "503 5.5.1 Invalid command: Need MAIL first\r\n"
        );
        assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    let files = canary(&d, &mut c, 1);
    let text = read(&files[0]);
    assert!(text.contains("Subject: canary"), "{text}");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let log = d.log();
    assert_eq!(count(&log, "delivery: Ok for "), 1, "{log}");
    assert_eq!(count(&log, ": message refused: "), cases.len(), "{log}");
    assert!(!log.contains("admin@example.org"), "{log}");
}

#[test]
fn transcript_smuggling_payload_in_one_write_stores_nothing() {
    // Exactly the transcript's client bytes, each step in one write, then
    // QUIT: one refusal, no second message, no stored file.
    let d = Daemon::start_default(smtpd(), "sess-smuggle-one");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    begin(&mut c, "a@example.org", "b@example.net");
    c.send(
        b"Subject: smug\r\n\r\nbody\n.\r\nMAIL FROM:<admin@example.org>\r\n\
          RCPT TO:<b@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n",
    );
    assert_eq!(c.reply(), BARE_LF);
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
    d.wait_for_log("closed reason=quit", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.delivered().is_empty(), "{:?}", d.delivered());
    assert!(!d.log().contains("delivery: "), "{}", d.log());
    assert!(!d.log().contains("message msgid="), "{}", d.log());
}

#[test]
fn line_and_address_length_limits() {
    let d = Daemon::start_default(smtpd(), "sess-lengths");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);

    // Command line over 512 octets: refused, the rest dropped, session goes on.
    let long = format!("MAIL FROM:<{}@example.org>", "a".repeat(600));
    c.send(format!("{long}\r\nNOOP\r\n").as_bytes());
    assert_eq!(c.reply(), "500 5.5.2 Line too long\r\n");
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    // 512 octets with the CRLF is the most allowed.
    let vrfy = |n: usize| format!("VRFY {}", "v".repeat(n - 7));
    assert_eq!(vrfy(512).len() + 2, 512);
    assert!(c.cmd(&vrfy(512)).starts_with("252 2.1.5 "));
    assert_eq!(c.cmd(&vrfy(513)), "500 5.5.2 Line too long\r\n");

    // Local part: 64 accepted, 65 refused.
    let l64 = "l".repeat(64);
    let l65 = "l".repeat(65);
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{l65}@example.org>")),
        "553 5.1.0 Sender address syntax error\r\n"
    );
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{l64}@example.org>")),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{l65}@example.net>")),
        "501 5.1.3 Recipient address syntax error\r\n"
    );
    // Domain over 255 octets (five labels of 63): refused.
    let label = "d".repeat(63);
    let d256 = format!("{label}.{label}.{label}.{label}.{label}");
    assert!(d256.len() > 255);
    assert_eq!(
        c.cmd(&format!("RCPT TO:<x@{d256}>")),
        "501 5.1.3 Recipient address syntax error\r\n"
    );
    // Path over 256 octets, with legal local part and domain.
    let dom200 = format!("{label}.{label}.{label}.{}.net", "e".repeat(6));
    assert!(dom200.len() <= 255);
    assert!(l64.len() + 1 + dom200.len() > 256);
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{l64}@{dom200}>")),
        "501 5.1.3 Recipient address syntax error\r\n"
    );
    // Within every limit: accepted.
    let dom150 = format!("{label}.{label}.{}.net", "f".repeat(18));
    assert!(l64.len() + 1 + dom150.len() + 2 <= 256);
    let long_rcpt = format!("{l64}@{dom150}");
    assert!(
        c.cmd(&format!("RCPT TO:<{long_rcpt}>"))
            .starts_with("250 2.1.5 ")
    );
    assert!(c.cmd("DATA").starts_with("354 "));
    // Text line of 999 octets + CRLF: refused after the real end.
    c.send(format!("Subject: long\r\n\r\n{}\r\nafter\r\n.\r\n", "x".repeat(999)).as_bytes());
    assert_eq!(
        c.reply(),
        "550 5.6.0 Message refused: line longer than 1000 octets\r\n"
    );
    // 998 + CRLF is the most allowed: accepted.
    begin(&mut c, "a@example.org", "b@example.net");
    c.send(format!("Subject: edge\r\n\r\n{}\r\n.\r\n", "y".repeat(998)).as_bytes());
    assert_accepted(&c.reply());
    canary(&d, &mut c, 2);
    let all = delivered_texts(&d).concat();
    assert_eq!(count(&all, &"y".repeat(998)), 1);
    assert!(!all.contains(&"x".repeat(999)));
    assert!(!all.contains(&long_rcpt));
}

#[test]
fn message_size_limit_at_mail_and_during_data() {
    let d = start(
        "sess-size",
        &config("smtp max-message-size 10000\n", ""),
        &[],
    );
    let mut c = Client::connect(d.addr());
    let e = c.cmd("EHLO client.example");
    assert!(e.contains("\r\n250-SIZE 10000\r\n"), "{e}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=10001"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=10000"),
        "250 2.1.0 Ok\r\n"
    );
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250 2.1.5 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    // The client lied about SIZE: 2000 lines of 100 octets.
    let mut body = String::from("Subject: big\r\n\r\n");
    for _ in 0..2000 {
        body.push_str(&"z".repeat(98));
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    c.send(body.as_bytes());
    assert_eq!(c.reply(), "552 5.3.4 Message too big for system\r\n");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    // Without SIZE=, cut off during DATA all the same.
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250 2.1.5 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    c.send(body.as_bytes());
    assert_eq!(c.reply(), "552 5.3.4 Message too big for system\r\n");
    let files = canary(&d, &mut c, 1);
    assert!(read(&files[0]).contains("Subject: canary"));
}

#[test]
fn shell_metacharacters_are_syntax_errors_and_nothing_runs() {
    let d = Daemon::start_default(smtpd(), "sess-shell");
    let marker = d.dir.join("pwned");
    let m = marker.display().to_string();
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    let started = Instant::now();
    for sender in [
        ";sleep 66;".to_owned(),
        format!(";touch {m};"),
        format!("`touch {m}`@example.org"),
        format!("$(touch {m})@example.org"),
        format!("a@example.org;touch {m}"),
        format!("a@example.org&&touch{m}"),
    ] {
        assert_eq!(
            c.cmd(&format!("MAIL FROM:<{sender}>")),
            "553 5.1.0 Sender address syntax error\r\n",
            "{sender}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
    // 6 refusals: a new session for the rest.
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    for rcpt in [format!(";touch {m};"), format!("$(touch {m})@example.net")] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{rcpt}>")),
            "501 5.1.3 Recipient address syntax error\r\n"
        );
    }
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
    canary(&d, &mut c, 1);
    assert!(!marker.exists(), "a client-supplied command ran");
}

#[test]
fn non_ascii_addresses_need_smtputf8() {
    let d = Daemon::start_default(smtpd(), "sess-utf8");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(
        c.cmd("MAIL FROM:<jösé@example.org>"),
        "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<bjørn@example.net>"),
        "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
    assert_eq!(
        c.cmd("MAIL FROM:<jösé@example.org> SMTPUTF8"),
        "250 2.1.0 Ok\r\n"
    );
    assert!(
        c.cmd("RCPT TO:<bjørn@exämple.net>")
            .starts_with("250 2.1.5 ")
    );
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_accepted(&c.cmd("Subject: utf8\r\n\r\nhej\r\n."));
    let files = d.wait_for_delivered(1, WAIT);
    assert_eq!(files.len(), 1, "{}", d.log());
    let text = read(&files[0]);
    assert!(
        text.starts_with("Return-Path: <jösé@example.org>\nDelivered-To: bjørn@exämple.net\n"),
        "{text}"
    );
    assert!(text.contains("UTF8SMTP"), "{text}");
}

// ---------------------------------------------------------------------
// Session limits and timeouts
// ---------------------------------------------------------------------

#[test]
fn recipient_and_message_limits() {
    let d = start(
        "sess-limits",
        &config("smtp limit max-rcpt 3 max-mails 2\n", ""),
        &[],
    );
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    for r in ["r1", "r2", "r3"] {
        assert!(
            c.cmd(&format!("RCPT TO:<{r}@example.net>"))
                .starts_with("250 2.1.5 ")
        );
    }
    assert_eq!(
        c.cmd("RCPT TO:<r4@example.net>"),
        "452 4.5.3 Too many recipients\r\n"
    );
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_accepted(&c.cmd("Subject: three\r\n\r\nx\r\n."));
    begin(&mut c, "a@example.org", "r5@example.net");
    assert_accepted(&c.cmd("Subject: second\r\n\r\nx\r\n."));
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "452 4.5.3 Too many messages for this session\r\n"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(4, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.delivered().len(), 4, "{files:?}\n{}", d.log());
    let all = delivered_texts(&d).concat();
    assert!(!all.contains("r4@example.net"), "{all}");
    assert!(d.log().contains(" nrcpt=3 proto=ESMTP"), "{}", d.log());
    // A new session may send again.
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    canary(&d, &mut c, 5);
}

#[test]
fn too_many_errors_close_the_session() {
    let d = Daemon::start_default(smtpd(), "sess-errors");
    let mut c = Client::connect(d.addr());
    let host = ehlo(&mut c);
    c.send(b"BOGUS\r\n".repeat(12).as_slice());
    for i in 0..10 {
        assert_eq!(
            c.reply(),
            "500 5.5.1 Invalid command: Command unrecognized\r\n",
            "reply {i}"
        );
    }
    assert_eq!(
        c.reply(),
        format!("421 4.7.0 {host} Too many errors, closing connection\r\n")
    );
    assert!(c.closed());
    d.wait_for_log("closed reason=", WAIT);
}

#[test]
fn command_timeout_closes_with_421() {
    let d = start(
        "sess-timeout",
        &default_body(),
        &[("RSMTPD_SMTP_TIMEOUT", "2")],
    );
    let mut c = Client::connect(d.addr());
    let host = ehlo(&mut c);
    let started = Instant::now();
    assert_eq!(
        c.reply(),
        format!("421 4.4.2 {host} Timeout, closing connection\r\n")
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert!(c.closed());
    d.wait_for_log("closed reason=timeout", WAIT);
}

fn default_body() -> String {
    rsmtpd_test_support::daemon::default_body()
}

#[test]
fn slow_data_client_is_dropped() {
    let d = start(
        "sess-slow",
        &default_body(),
        &[("RSMTPD_SMTP_DATA_WINDOW", "2")],
    );
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        .unwrap();
    let mut got = Vec::new();
    let started = Instant::now();
    let mut closed = false;
    // One byte every 300 ms: far under 1024 bytes per 2 s window.
    for i in 0..60 {
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains("354 ") && !closed {
            let _ = s.write_all(&[b'a' + (i % 26) as u8]);
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(closed, "not dropped after {waited:?}: {text}");
    assert!(text.contains("\r\n354 "), "{text}");
    assert!(
        text.ends_with(" Timeout, closing connection\r\n") && text.contains("\r\n421 4.4.2 "),
        "{text}"
    );
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    d.wait_for_log("closed reason=too slow", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.delivered().is_empty());
}

#[test]
fn too_many_received_headers_is_a_loop() {
    let d = Daemon::start_default(smtpd(), "sess-loop");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    let hops = |n: usize| {
        let mut m = String::new();
        for i in 0..n {
            m.push_str(&format!(
                "Received: from h{i}.example by h{}.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n",
                i + 1
            ));
        }
        m.push_str("Subject: loop\r\n\r\nbody\r\n.\r\n");
        m
    };
    begin(&mut c, "a@example.org", "b@example.net");
    c.send(hops(101).as_bytes());
    assert_eq!(
        c.reply(),
        "554 5.4.6 Routing loop detected: too many Received headers\r\n"
    );
    // Header names are case-insensitive.
    begin(&mut c, "a@example.org", "b@example.net");
    c.send(
        hops(101)
            .replace("Received: from h5.", "RECEIVED: from h5.")
            .as_bytes(),
    );
    assert_eq!(
        c.reply(),
        "554 5.4.6 Routing loop detected: too many Received headers\r\n"
    );
    // 100 is still fine.
    begin(&mut c, "a@example.org", "b@example.net");
    c.send(hops(100).as_bytes());
    assert_accepted(&c.reply());
    // Received lines in the body are not headers.
    begin(&mut c, "a@example.org", "b@example.net");
    let in_body = hops(150).replace(
        "Received: from h0.",
        "Subject: quoted\r\n\r\nReceived: from h0.",
    );
    c.send(in_body.as_bytes());
    assert_accepted(&c.reply());
    let files = canary(&d, &mut c, 3);
    let texts: Vec<String> = files.iter().map(|p| read(p)).collect();
    let looped: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("Subject: loop") && !t.contains("Subject: quoted"))
        .collect();
    assert_eq!(looped.len(), 1);
    let quoted = texts.iter().filter(|t| t.contains("Subject: quoted"));
    assert_eq!(quoted.count(), 1);
    // Ours plus the client's 100.
    assert_eq!(count(looped[0], "\nReceived: "), 101, "{}", looped[0]);
}

// ---------------------------------------------------------------------
// Recipients: rules and users
// ---------------------------------------------------------------------

#[test]
fn recipients_without_rule_or_user_get_550() {
    let user = current_user();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"byuser\" maildir \"{{maildir}}\" user \"{user}\"\n\
         action \"local\" maildir \"{{maildir}}\"\n\
         match from any for domain \"blocked.example\" reject\n\
         match from any for domain \"example.org\" action \"byuser\"\n\
         match from any for local action \"local\"\n"
    );
    let d = start("sess-rcpt", &body, &[]);
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.net> SMTPUTF8"),
        "250 2.1.0 Ok\r\n"
    );
    // With `user`, any local part of the domain is that user.
    for ok in [
        "nosuchuser@example.org",
        "anything.at.all@example.org",
        "root@localhost",
    ] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{ok}>")),
            "250 2.1.5 Destination address valid: Recipient ok\r\n",
            "{ok}"
        );
    }
    // Without it, the user must exist.
    assert_eq!(
        c.cmd("RCPT TO:<nosuchuser@localhost>"),
        "550 5.1.1 Invalid recipient: <nosuchuser@localhost>\r\n"
    );
    // No rule matches.
    assert_eq!(
        c.cmd("RCPT TO:<someone@example.net>"),
        "550 5.1.1 Invalid recipient: <someone@example.net>\r\n"
    );
    // A reject rule.
    assert_eq!(
        c.cmd("RCPT TO:<x@blocked.example>"),
        "550 5.7.1 Delivery not authorized\r\n"
    );
    // A would-be log line forger: the reply and the log line show it escaped.
    let r = c.cmd("RCPT TO:<\"x\\\"y\"@example.net>");
    assert!(r.starts_with("550 5.1.1 Invalid recipient: <"), "{r}");
    let r = c.cmd("RCPT TO:<bjørn@example.net>");
    assert!(r.starts_with("550 5.1.1 Invalid recipient: <"), "{r}");
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_accepted(&c.cmd("Subject: rules\r\n\r\nx\r\n."));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(3, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.delivered().len(), 3, "{files:?}\n{}", d.log());
    let all = delivered_texts(&d).concat();
    for ok in [
        "nosuchuser@example.org",
        "anything.at.all@example.org",
        "root@localhost",
    ] {
        assert!(all.contains(&format!("Delivered-To: {ok}\n")), "{all}");
    }
    // The smtp-in lines (the -v debug lines of lookup use Rust's escaping).
    let log: String = d
        .log()
        .lines()
        .filter(|l| l.starts_with("smtp-in: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        log.contains(
            ": failed-command command=\"RCPT TO:<nosuchuser@localhost>\" \
             result=\"550 5.1.1 Invalid recipient: <nosuchuser@localhost>\""
        ),
        "{log}"
    );
    assert!(
        log.contains("RCPT TO:<bj\\xc3\\xb8rn@example.net>"),
        "{log}"
    );
    assert!(!log.contains("bjørn"), "{log}");
    assert!(
        log.contains("RCPT TO:<\\x22x\\x5c\\x22y\\x22@example.net>"),
        "{log}"
    );
    assert!(!log.contains("\"x\\\"y\""), "{log}");
}

#[test]
fn cr_lf_in_client_values_cannot_forge_log_lines() {
    let d = Daemon::start_default(smtpd(), "sess-forge");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    // A CR inside the command line is not a line end.
    assert_eq!(
        c.cmd("RCPT TO:<x\rsmtp-in: session 0000000000000000: forged@example.net>"),
        "500 5.5.2 Syntax error: invalid character in command\r\n"
    );
    // A CRLF ends the command: the "rest" is a command of its own.
    c.send(b"RCPT TO:<x\r\nsmtp-in: session 0000000000000000: forged@example.net>\r\n");
    assert_eq!(c.reply(), "501 5.1.3 Recipient address syntax error\r\n");
    assert_eq!(
        c.reply(),
        "500 5.5.1 Invalid command: Command unrecognized\r\n"
    );
    // A line ending in a bare LF is refused; what follows is a line of its
    // own (and refused too), never glued onto the first.
    c.send(b"HELO x\nsmtp-in: session 0000000000000000: forged\r\n");
    assert_eq!(
        c.reply(),
        "500 5.5.2 Syntax error: lines must end with CRLF\r\n"
    );
    assert_eq!(
        c.reply(),
        "500 5.5.1 Invalid command: Command unrecognized\r\n"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    d.wait_for_log("closed reason=quit", WAIT);
    let log = d.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("session 0000000000000000") && !l.contains("\\x")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("smtp-in: session 0000000000000000"))
    );
}

// ---------------------------------------------------------------------
// Pipelining and DSN parameters
// ---------------------------------------------------------------------

#[test]
fn two_transactions_in_one_write() {
    let d = Daemon::start_default(smtpd(), "sess-pipe");
    let mut c = Client::connect(d.addr());
    let host = ehlo(&mut c);
    c.send(
        b"MAIL FROM:<p1@example.org>\r\nRCPT TO:<q1@example.net>\r\nDATA\r\n\
          Subject: first\r\n\r\none\r\n.\r\n\
          MAIL FROM:<p2@example.org>\r\nRCPT TO:<q2@example.net>\r\nRCPT TO:<q3@example.net>\r\nDATA\r\n\
          Subject: second\r\n\r\ntwo\r\n.\r\nNOOP\r\nQUIT\r\n",
    );
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert!(c.reply().starts_with("250 2.1.5 "));
    assert!(c.reply().starts_with("354 "));
    let first = c.reply();
    assert_accepted(&first);
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert!(c.reply().starts_with("250 2.1.5 "));
    assert!(c.reply().starts_with("250 2.1.5 "));
    assert!(c.reply().starts_with("354 "));
    let second = c.reply();
    assert_accepted(&second);
    assert_ne!(first, second);
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    assert_eq!(c.reply(), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
    let _ = host;
    let files = d.wait_for_delivered(3, WAIT);
    assert_eq!(files.len(), 3, "{}", d.log());
    let texts = delivered_texts(&d);
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.ends_with("Subject: first\n\none\n"))
            .count(),
        1
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.ends_with("Subject: second\n\ntwo\n"))
            .count(),
        2
    );
}

#[test]
fn dsn_parameters_and_duplicate_recipients() {
    let d = Daemon::start_default(smtpd(), "sess-dsn");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2Bid-1 SIZE=100 BODY=8BITMIME"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.net"),
        "250 2.1.5 Destination address valid: Recipient ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<c@example.net> NOTIFY=NEVER,SUCCESS"),
        "501 5.5.4 NOTIFY=NEVER cannot be combined with other values\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<c@example.net> NOTIFY=NEVER"),
        "250 2.1.5 Destination address valid: Recipient ok\r\n"
    );
    // The same recipient again: accepted, delivered once.
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net> NOTIFY=DELAY"),
        "250 2.1.5 Destination address valid: Recipient ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<b@Example.NET>"),
        "250 2.1.5 Destination address valid: Recipient ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<d@example.net> FOO=bar"),
        "555 5.5.4 Unsupported parameter FOO\r\n"
    );
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_accepted(&c.cmd("Subject: dsn\r\n\r\nx\r\n."));
    // b, c, the canary, and the success report b's NOTIFY asked for.
    let files = canary(&d, &mut c, 4);
    let texts: Vec<String> = files.iter().map(|p| read(p)).collect();
    let to_b = texts
        .iter()
        .filter(|t| t.contains("Delivered-To: b@example.net\n"))
        .count();
    let to_c = texts
        .iter()
        .filter(|t| t.contains("Delivered-To: c@example.net\n"))
        .count();
    assert_eq!((to_b, to_c), (1, 1), "{texts:?}");
    let reports: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("Action: delivered"))
        .collect();
    assert_eq!(reports.len(), 1, "{texts:?}");
    assert!(reports[0].contains("Final-Recipient: rfc822; b@example.net"));
    // The report carries ENVID decoded from xtext.
    assert!(
        reports[0].contains("Original-Envelope-Id: QQ+id-1"),
        "{}",
        reports[0]
    );
    assert!(d.log().contains(" nrcpt=2 proto=ESMTP"), "{}", d.log());
}

// ---------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------

#[test]
fn sigterm_with_an_open_session() {
    let mut d = Daemon::start_default(smtpd(), "sess-sigterm");
    let mut c = Client::connect(d.addr());
    let host = ehlo(&mut c);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    // A second session in the middle of its data.
    let mut c2 = Client::connect(d.addr());
    ehlo(&mut c2);
    begin(&mut c2, "a@example.org", "half@example.net");
    c2.send(b"Subject: half\r\n\r\nnot finished\r\n");
    // Let the daemon read it before the signal.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let code = d.stop();
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(10));
    let bye = format!("421 4.3.0 {host} Server shutting down, closing connection\r\n");
    assert_eq!(c.reply(), bye);
    assert!(c.closed());
    assert_eq!(c2.reply(), bye);
    assert!(c2.closed());
    let log = d.log();
    assert_eq!(count(&log, "closed reason=shutdown"), 2, "{log}");
    assert!(log.lines().any(|l| l == "smtpd: exiting"), "{log}");
    assert!(!log.contains("message msgid="), "{log}");
    assert!(d.children().is_empty());
    // Started again on the same spool: the half message never shows up.
    d.spawn(&[]);
    // spawn() saw the first run's "ready": wait for the second one.
    let deadline = Instant::now() + WAIT;
    while count(&d.log(), "smtpd: ready") < 2 {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    let files = canary(&d, &mut c, 1);
    assert!(read(&files[0]).contains("Subject: canary"));
    assert!(!d.log().contains("half@example.net>, user="), "{}", d.log());
}

#[test]
fn data_split_across_many_writes() {
    // The end of data, a stuffed dot and a smuggling attempt, each cut
    // into single-byte writes: the reader must not depend on how TCP
    // slices the stream.
    let d = Daemon::start_default(smtpd(), "sess-split");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    let trickle = |c: &mut Client, bytes: &[u8]| {
        for b in bytes {
            c.send(std::slice::from_ref(b));
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    begin(&mut c, "a@example.org", "b@example.net");
    trickle(&mut c, b"Subject: split\r\n\r\n..stuffed\r\n.\r\n");
    assert_accepted(&c.reply());
    begin(&mut c, "a@example.org", "b@example.net");
    trickle(
        &mut c,
        b"Subject: split2\r\n\r\nx\n.\r\nMAIL FROM:<e@example.org>\r\n",
    );
    trickle(&mut c, b".\r\n");
    assert_eq!(c.reply(), BARE_LF);
    let files = canary(&d, &mut c, 2);
    let texts: Vec<String> = files.iter().map(|p| read(p)).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.ends_with("\nSubject: split\n\n.stuffed\n")),
        "{texts:?}"
    );
    assert!(!texts.concat().contains("split2"));
}

#[test]
fn helo_sessions_and_odd_commands() {
    let d = Daemon::start_default(smtpd(), "sess-helo");
    let mut c = Client::connect(d.addr());
    let r = c.cmd("HELO plain.example");
    assert!(
        r.starts_with("250 ") && r.ends_with(" Hello plain.example, pleased to meet you\r\n"),
        "{r}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=10"),
        "555 5.5.4 Parameters need EHLO, not HELO\r\n"
    );
    assert_eq!(
        c.cmd("HELO"),
        "501 5.5.1 Invalid command: HELO requires domain name\r\n"
    );
    assert_eq!(
        c.cmd("NOOP\0x"),
        "500 5.5.2 Syntax error: invalid character in command\r\n"
    );
    assert_eq!(
        c.cmd("BDAT 10 LAST"),
        "502 5.5.1 Invalid command: Command not implemented\r\n"
    );
    assert_eq!(
        c.cmd("STARTTLS"),
        "502 5.5.1 Invalid command: Command not supported\r\n"
    );
    // A recipient without a domain is completed with the server's name;
    // a quoted local part is stored in its plain form.
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    assert!(c.cmd("RCPT TO:<postmaster>").starts_with("250 2.1.5 "));
    assert!(
        c.cmd("RCPT TO:<\"bob\"@example.net>")
            .starts_with("250 2.1.5 ")
    );
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_accepted(&c.cmd("Subject: helo\r\n\r\nx\r\n."));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(2, WAIT);
    assert_eq!(files.len(), 2, "{}", d.log());
    let all: String = files.iter().map(|p| read(p).replace("\n\t", " ")).collect();
    assert!(all.contains("\nDelivered-To: postmaster@"), "{all}");
    assert!(all.contains("\nDelivered-To: bob@example.net\n"), "{all}");
    assert!(all.contains(" with SMTP id "), "{all}");
    assert!(d.log().contains(" nrcpt=2 proto=SMTP"), "{}", d.log());
}

/// Read from a raw stream until `done` says so, EOF, or `limit` passes.
fn read_until(s: &mut TcpStream, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    while started.elapsed() < limit && !done(&String::from_utf8_lossy(&got)) {
        let mut buf = [0u8; 65536];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn pipelined_batch_with_more_than_8k_of_replies() {
    let d = Daemon::start_default(smtpd(), "sess-bulk-pipe");
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.write_all(b"EHLO c\r\n").unwrap();
    read_until(&mut s, WAIT, |t| t.contains("\r\n250 HELP\r\n"));
    // 200 recipients and DATA in one write (RFC 2920), ~10 KB of replies.
    let mut batch = String::from("MAIL FROM:<a@example.org>\r\n");
    for i in 0..200 {
        batch.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    batch.push_str("DATA\r\n");
    s.write_all(batch.as_bytes()).unwrap();
    let t = read_until(&mut s, Duration::from_secs(5), |t| t.contains("\r\n354 "));
    assert_eq!(count(&t, "250 2.1.5 "), 200, "{} bytes of replies", t.len());
    assert!(t.ends_with("354 Enter mail, end with \".\" on a line by itself\r\n"));
    s.write_all(b"Subject: many\r\n\r\nx\r\n").unwrap();
    s.write_all(b".\r\n").unwrap();
    let t = read_until(&mut s, Duration::from_secs(5), |t| t.contains("accepted"));
    assert!(t.contains(" Message accepted for delivery\r\n"), "{t}");
    // Many small commands alike.
    s.write_all("NOOP\r\n".repeat(1000).as_bytes()).unwrap();
    let t = read_until(&mut s, Duration::from_secs(5), |t| {
        count(t, "250 2.0.0 Ok\r\n") == 1000
    });
    assert_eq!(
        count(&t, "250 2.0.0 Ok\r\n"),
        1000,
        "{} bytes of replies",
        t.len()
    );
}

#[test]
fn a_large_message_is_stored_byte_for_byte() {
    let d = Daemon::start_default(smtpd(), "sess-large");
    let mut c = Client::connect(d.addr());
    ehlo(&mut c);
    // A ~350 KB message in one write, with stuffed dots at every 1000th
    // line: stored byte for byte (CRLF as LF).
    let mut wire = String::from("Subject: large\r\n\r\n");
    let mut stored = String::from("Subject: large\n\n");
    for i in 0..8000 {
        let line = if i % 1000 == 999 {
            format!(".line {i} {}", "k".repeat(i % 70))
        } else {
            format!("line {i} {}", "k".repeat(i % 70))
        };
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(&line);
        wire.push_str("\r\n");
        stored.push_str(&line);
        stored.push('\n');
    }
    assert!(wire.len() > 300_000);
    begin(&mut c, "a@example.org", "b@example.net");
    wire.push_str(".\r\n");
    c.send(wire.as_bytes());
    assert_accepted(&c.reply());
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(1, WAIT);
    assert_eq!(files.len(), 1, "{}", d.log());
    let text = read(&files[0]);
    assert!(text.ends_with(&stored), "stored message differs");
}

#[test]
fn trickled_command_line_times_out() {
    // RSMTPD_SMTP_TIMEOUT=2; a byte every 500 ms, never a CRLF. The
    // session must not live forever (RFC 5321 4.5.3.2: the timeout is per
    // command, not per read).
    let d = start(
        "sess-trickle",
        &default_body(),
        &[("RSMTPD_SMTP_TIMEOUT", "2")],
    );
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    for _ in 0..40 {
        if started.elapsed() > Duration::from_secs(12) {
            break;
        }
        let _ = s.write_all(b"x");
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(closed, "still open after {:?}: {text}", started.elapsed());
    assert!(text.contains("\r\n421 4.4.2 "), "{text}");
}
