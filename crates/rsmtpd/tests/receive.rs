//! Receiving mail end to end: the real daemon on loopback, a client, the
//! file in the Maildir.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use std::time::Duration;

use rsmtpd_test_support::daemon::{Client, Daemon};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

#[test]
fn a_message_lands_in_the_maildir_after_its_250() {
    let d = Daemon::start_default(smtpd(), "receive-basic");
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").starts_with("250-"));
    assert_eq!(c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0 Ok\r\n");
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354 "));
    let reply = c.cmd("Subject: hi\r\n\r\nhello\r\n..dot\r\n.");
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    assert!(
        reply.ends_with(" Message accepted for delivery\r\n"),
        "{reply}"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let files = d.wait_for_delivered(1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "log:\n{}", d.log());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\nReceived: from client.example"), "{text}");
    assert!(text.ends_with("Subject: hi\n\nhello\n.dot\n"), "{text}");
    d.wait_for_log("delivery: Ok for ", Duration::from_secs(5));
}

#[test]
fn pipelined_transaction_gets_its_replies_in_order() {
    let d = Daemon::start_default(smtpd(), "receive-pipelining");
    let mut c = Client::connect(d.addr());
    let ehlo = c.cmd("EHLO c");
    assert!(ehlo.contains("250-PIPELINING\r\n"), "{ehlo}");
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n");
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("354 "));
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 2.0.0 "));
    assert_eq!(c.reply(), "221 2.0.0 Bye\r\n");
    assert_eq!(d.wait_for_delivered(2, Duration::from_secs(10)).len(), 2);
}
