//! Real SMTP clients against the real daemon: swaks (plain and pipelined),
//! Python's smtplib and the Rust `lettre` crate. Each must get its message
//! into the Maildir, byte for byte where the client's output is known.

// Helpers outside #[test] functions panic on purpose, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rsmtpd_test_support::daemon::Daemon;

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

const WAIT: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

/// Run a client program with a time limit; its output.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/setup.sh installs it)"));
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish in {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for exactly `n` delivered files (a moment more, to catch extras).
fn delivered(d: &Daemon, n: usize) -> Vec<PathBuf> {
    d.wait_for_delivered(n, WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let files = d.delivered();
    assert_eq!(files.len(), n, "{files:?}\nlog:\n{}", d.log());
    files
}

fn swaks(d: &Daemon, extra: &[&str], subject: &str) -> String {
    let port = d.port.to_string();
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--ehlo",
        "swaks.example",
        "--from",
        "sender@example.org",
        "--to",
        "rcpt@example.net",
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        "Hello from swaks.",
        "--timeout",
        "10",
    ])
    .args(extra);
    let out = run(&mut cmd, Duration::from_secs(20));
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "swaks failed: {}\n{transcript}\n{}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    transcript
}

#[test]
fn swaks_sends_a_message() {
    let d = Daemon::start_default(smtpd(), "clients-swaks");
    let t = swaks(&d, &[], "swaks plain");
    assert!(t.contains("<-  250-PIPELINING"), "{t}");
    assert!(t.contains("<-  250 2.1.0 Ok"), "{t}");
    assert!(
        t.contains("<-  250 2.1.5 Destination address valid: Recipient ok"),
        "{t}"
    );
    assert!(t.contains(" Message accepted for delivery"), "{t}");
    assert!(t.contains("<-  221 2.0.0 Bye"), "{t}");
    let files = delivered(&d, 1);
    let text = read(&files[0]);
    assert!(
        text.starts_with(
            "Return-Path: <sender@example.org>\nDelivered-To: rcpt@example.net\n\
             Received: from swaks.example ("
        ),
        "{text}"
    );
    assert!(text.contains("\nSubject: swaks plain\n"), "{text}");
    assert!(text.contains("\n\nHello from swaks.\n"), "{text}");
    d.wait_for_log("stat=Delivered", WAIT);
}

#[test]
fn swaks_pipelines() {
    let d = Daemon::start_default(smtpd(), "clients-swaks-pipe");
    let t = swaks(
        &d,
        &["--pipeline", "--to", "rcpt@example.net,other@example.net"],
        "swaks pipelined",
    );
    // swaks sends MAIL, RCPTs and DATA in one go when PIPELINING is offered
    // and marks the pipelined commands with `->` in a single block.
    assert!(!t.contains("does not support PIPELINING"), "{t}");
    assert!(
        t.contains(
            " -> MAIL FROM:<sender@example.org>\n -> RCPT TO:<rcpt@example.net>\n\
             \x20-> RCPT TO:<other@example.net>\n -> DATA\n<-  250 2.1.0 Ok\n\
             <-  250 2.1.5 Destination address valid: Recipient ok\n\
             <-  250 2.1.5 Destination address valid: Recipient ok\n<-  354 "
        ),
        "{t}"
    );
    assert!(t.contains("<-  354 "), "{t}");
    assert!(t.contains(" Message accepted for delivery"), "{t}");
    let files = delivered(&d, 2);
    let texts: Vec<String> = files.iter().map(|p| read(p)).collect();
    for to in ["rcpt@example.net", "other@example.net"] {
        assert_eq!(
            texts
                .iter()
                .filter(|x| x.contains(&format!("\nDelivered-To: {to}\n")))
                .count(),
            1,
            "{texts:?}"
        );
    }
    assert!(
        texts
            .iter()
            .all(|x| x.contains("\nSubject: swaks pipelined\n"))
    );
    assert!(d.log().contains(" nrcpt=2 proto=ESMTP"), "{}", d.log());
}

#[test]
fn python_smtplib_two_messages_on_one_connection() {
    let d = Daemon::start_default(smtpd(), "clients-python");
    let script = r#"
import smtplib, sys
from email.message import EmailMessage
port = int(sys.argv[1])
with smtplib.SMTP("127.0.0.1", port, local_hostname="py.example", timeout=10) as s:
    code, _ = s.ehlo()
    assert code == 250, code
    assert s.has_extn("pipelining") and s.has_extn("smtputf8") and s.has_extn("size")
    for i in (1, 2):
        m = EmailMessage()
        m["From"] = "py@example.org"
        m["To"] = "dest%d@example.net" % i
        m["Subject"] = "python %d" % i
        m.set_content("line one\n.leading dot\nmessage %d\n" % i)
        refused = s.send_message(m)
        assert refused == {}, refused
    # Refused recipient is reported, the connection stays usable.
    try:
        s.sendmail("py@example.org", ["bad@[not-an-address"], "Subject: x\r\n\r\nx\r\n")
        print("NO-ERROR")
    except smtplib.SMTPRecipientsRefused as e:
        print("REFUSED", e.recipients)
    code, _ = s.noop()
    assert code == 250, code
print("OK")
"#;
    let port = d.port.to_string();
    let out = run(
        Command::new("python3").args(["-c", script, &port]),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python3 failed\n{stdout}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert!(
        stdout.contains(
            "REFUSED {'bad@[not-an-address': (501, b'5.1.3 Recipient address syntax error')}"
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with("OK\n"), "{stdout}");
    let files = delivered(&d, 2);
    let texts: Vec<String> = files.iter().map(|p| read(p)).collect();
    for i in 1..=2 {
        let t = texts
            .iter()
            .find(|t| t.contains(&format!("\nSubject: python {i}\n")))
            .unwrap_or_else(|| panic!("message {i} missing: {texts:?}"));
        assert!(
            t.starts_with(&format!(
                "Return-Path: <py@example.org>\nDelivered-To: dest{i}@example.net\n\
                 Received: from py.example ("
            )),
            "{t}"
        );
        // Dot-stuffed by smtplib, unstuffed by us.
        assert!(
            t.ends_with(&format!("\nline one\n.leading dot\nmessage {i}\n")),
            "{t}"
        );
    }
    // One session, two messages.
    let log = d.log();
    assert_eq!(
        log.matches(": connected address=127.0.0.1").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches(": message msgid=").count(), 2, "{log}");
    assert_eq!(log.matches("closed reason=quit").count(), 1, "{log}");
}

#[test]
fn lettre_sends_a_message() {
    use lettre::Transport;
    use lettre::message::{Mailbox, Message};
    use lettre::transport::smtp::SmtpTransport;
    use lettre::transport::smtp::extension::ClientId;

    let d = Daemon::start_default(smtpd(), "clients-lettre");
    let from: Mailbox = "Rust Sender <rust@example.org>".parse().unwrap();
    let to: Mailbox = "Someone <someone@example.net>".parse().unwrap();
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject("lettre")
        .body(String::from("Sent by lettre.\r\n.dot line"))
        .unwrap();
    let transport = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(d.port)
        .hello_name(ClientId::Domain("lettre.example".into()))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let response = transport
        .send(&message)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(u16::from(response.code()), 250);
    let text = response.message().collect::<Vec<_>>().join(" ");
    assert!(text.ends_with(" Message accepted for delivery"), "{text}");
    assert!(text.starts_with("2.0.0 "), "{text}");
    let files = delivered(&d, 1);
    let got = read(&files[0]);
    assert!(
        got.starts_with(
            "Return-Path: <rust@example.org>\nDelivered-To: someone@example.net\n\
             Received: from lettre.example ("
        ),
        "{got}"
    );
    assert!(got.contains("\nSubject: lettre\n"), "{got}");
    assert!(got.ends_with("\nSent by lettre.\n.dot line\n"), "{got:?}");
    d.wait_for_log("stat=Delivered", WAIT);
}
