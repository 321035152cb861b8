//! `listen on` as the daemon applies it: interfaces, families, names,
//! tags, and `-P smtp`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use rsmtpd_test_support::daemon::{Client, Daemon, Setup, current_user};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

fn start(name: &str, listen: &str, rules: &str, args: &[&str]) -> Daemon {
    let body = format!(
        "queue path \"{{spool}}\"\n{listen}\naction \"local\" maildir \"{{maildir}}\" user \"{}\"\n{rules}\n",
        current_user()
    );
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body: &body,
            args,
            env: &[],
        },
    )
}

fn greeting(addr: SocketAddr) -> String {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

const ANY: &str = "match from any for any action \"local\"";

#[test]
fn localhost_listens_on_both_loopback_addresses() {
    let d = start(
        "listen-localhost",
        "listen on localhost port {port}",
        ANY,
        &[],
    );
    let v4: SocketAddr = format!("127.0.0.1:{}", d.port).parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{}", d.port).parse().unwrap();
    assert!(greeting(v4).starts_with("220 "));
    assert!(greeting(v6).starts_with("220 "));
}

#[test]
fn family_restricts_an_interface() {
    let d = start(
        "listen-lo-inet6",
        "listen on lo inet6 port {port}",
        ANY,
        &[],
    );
    let v6: SocketAddr = format!("[::1]:{}", d.port).parse().unwrap();
    assert!(greeting(v6).starts_with("220 "));
    let v4: SocketAddr = format!("127.0.0.1:{}", d.port).parse().unwrap();
    assert!(TcpStream::connect_timeout(&v4, Duration::from_secs(2)).is_err());
}

#[test]
fn hostname_and_hostnames_name_the_server() {
    let d = start(
        "listen-hostname",
        "listen on ::1 port {port} hostname mx.example.test",
        ANY,
        &[],
    );
    let v6: SocketAddr = format!("[::1]:{}", d.port).parse().unwrap();
    assert_eq!(greeting(v6), "220 mx.example.test ESMTP rsmtpd\r\n");
    drop(d);

    let d = start(
        "listen-hostnames",
        "table names { 127.0.0.1 = \"mx.by-address.test\" }\nlisten on 127.0.0.1 port {port} hostnames <names>",
        ANY,
        &[],
    );
    assert_eq!(
        greeting(d.addr()),
        "220 mx.by-address.test ESMTP rsmtpd\r\n"
    );
}

#[test]
fn tags_select_rules() {
    let d = start(
        "listen-tag",
        "listen on 127.0.0.1 port {port} tag INBOUND",
        "match tag INBOUND from any for domain \"example.org\" action \"local\"\nmatch from any for any reject",
        &[],
    );
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO c");
    c.cmd("MAIL FROM:<a@example.net>");
    assert!(c.cmd("RCPT TO:<b@example.org>").starts_with("250 2.1.5"));
    let refused = c.cmd("RCPT TO:<b@example.com>");
    assert!(refused.starts_with("550 5.7.1"), "{refused}");
}

#[test]
fn paused_smtp_accepts_no_session() {
    let d = start(
        "listen-paused",
        "listen on 127.0.0.1 port {port}",
        ANY,
        &["-P", "smtp"],
    );
    d.wait_for_log("smtp-in: paused", Duration::from_secs(5));
    // The socket is bound, so the kernel completes the handshake, but no
    // session starts: no greeting comes.
    let mut c = TcpStream::connect_timeout(&d.addr(), Duration::from_secs(2)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    let got = c.read(&mut buf);
    assert!(got.is_err(), "unexpected greeting: {got:?}");
}
