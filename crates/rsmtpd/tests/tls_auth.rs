//! TLS and AUTH end to end: the real daemon on loopback with certificates
//! from a test CA, real clients (the harness's byte-exact client, swaks,
//! Python's smtplib, `openssl s_client`), mail in the Maildir, the log.
//!
//! Covered: STARTTLS and what EHLO offers before and after it, the
//! STARTTLS command injection of CVE-2011-0411, `tls-require`, `smtps`,
//! AUTH PLAIN/LOGIN against a credentials table and every refusal of
//! RFC 4954, the per-address AUTH failure limit, SNI with two pkis, client
//! certificates (`verify` + `ca`), `match auth` / `match tls` / `senders`,
//! that no process but crypto holds a private key (open files and memory,
//! read through /proc), and OpenSMTPD's example configs 12 (TLS, smtps and
//! submission with a credentials table) and 03 (system accounts; root only).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsmtpd_test_support::certs::{Issued, KeyType, TestCa};
use rsmtpd_test_support::daemon::{
    Client, Daemon, Setup, TlsStream, current_user, free_port, tls_stream,
};
use rsmtpd_test_support::examples::{example, rewrite, sha512_crypt};
use rsmtpd_test_support::temp_dir;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

const WAIT: Duration = Duration::from_secs(10);
/// Sessions idle this long get 421: a test that hangs fails soon.
const ENV: &[(&str, &str)] = &[("RSMTPD_SMTP_TIMEOUT", "20")];

/// The credentials of the tests' table. The password is distinctive so
/// that the log can be searched for it.
const USER: &str = "joe";
const PASSWORD: &str = "Kx7-velvet-Harbour-93";
/// A second user of the table (for `senders`).
const USER2: &str = "ann";
const PASSWORD2: &str = "ann-Quartz-Lantern-17";

const ANY: &str = "match from any for any action \"local\"";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

// ------------------------------------------------------------ set-up

/// A test CA and a certificate for mx.test, in a directory of their own.
struct Certs {
    dir: PathBuf,
    ca: TestCa,
    mx: Issued,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = temp_dir(&format!("certs-{name}"));
        chmod(&dir, 0o755);
        let ca = TestCa::new(&dir, "ca");
        let mx = ca.issue(&["mx.test"], KeyType::EcdsaP256);
        Certs { dir, ca, mx }
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config()
    }
}

/// `pki NAME cert ...` and `pki NAME key ...`.
fn pki(name: &str, issued: &Issued) -> String {
    format!(
        "pki {name} cert \"{}\"\npki {name} key \"{}\"\n",
        issued.cert.display(),
        issued.key.display()
    )
}

/// `table creds { joe = hash, ann = hash }`.
fn creds_table() -> String {
    format!(
        "table creds {{ \"{USER}\" = \"{}\", \"{USER2}\" = \"{}\" }}\n",
        sha512_crypt(PASSWORD),
        sha512_crypt(PASSWORD2)
    )
}

/// A daemon with `head` (pkis, tables, listeners) and `rules`; the action
/// "local" delivers to {maildir} as the user running the tests.
fn start(name: &str, head: &str, rules: &str) -> Daemon {
    let body = format!(
        "queue path \"{{spool}}\"\n{head}\naction \"local\" maildir \"{{maildir}}\" user \"{}\"\n{rules}\n",
        current_user()
    );
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body: &body,
            args: &[],
            env: ENV,
        },
    )
}

// ------------------------------------------------------------ helpers

/// Standard base64, written here so that the tests do not rely on the
/// daemon's own encoder.
fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict base64 decoding of a PEM body.
fn unb64(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => panic!("not base64: {c}"),
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// The AUTH PLAIN response for `user` and `password`.
fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// One whole transaction on an open session; asserts every reply.
fn send_mail<S: Read + Write>(c: &mut Client<S>, d: &Daemon, from: &str, to: &str, subject: &str) {
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert_eq!(r, "250 2.1.0 Ok\r\n", "MAIL\nlog:\n{}", d.log());
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    assert!(
        r.starts_with("250 2.1.5 "),
        "RCPT {to}: {r}\nlog:\n{}",
        d.log()
    );
    let r = c.cmd("DATA");
    assert!(r.starts_with("354 "), "DATA: {r}");
    let r = c.cmd(&format!(
        "Subject: {subject}\r\n\r\nThe body of {subject}.\r\n."
    ));
    assert!(
        r.starts_with("250 2.0.0 ") && r.ends_with(" Message accepted for delivery\r\n"),
        "{r}\nlog:\n{}",
        d.log()
    );
}

/// The delivered message whose Subject is `subject` (waits for it).
fn delivered_with(d: &Daemon, subject: &str) -> String {
    let needle = format!("\nSubject: {subject}\n");
    let deadline = Instant::now() + WAIT;
    loop {
        for f in d.delivered() {
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
            if text.contains(&needle) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no message with Subject {subject:?} in {}\nlog:\n{}",
            d.maildir().display(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first Received header of a message, unfolded, without its name.
fn received(msg: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in msg.lines() {
        if inside {
            if line.starts_with([' ', '\t']) {
                out.push(' ');
                out.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some(rest) = line.strip_prefix("Received: ") {
            out.push_str(rest);
            inside = true;
        }
    }
    assert!(!out.is_empty(), "no Received header in:\n{msg}");
    out
}

/// The log never shows a password, nor the base64 a client sent it in.
fn assert_no_password_in_log(d: &Daemon, user: &str, password: &str) {
    let log = d.log();
    for secret in [
        password.to_owned(),
        b64(password.as_bytes()),
        plain(user, password),
    ] {
        assert!(!log.contains(&secret), "the log shows {secret:?}:\n{log}");
    }
}

/// Run a program with a time limit; its output.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/setup.sh installs it)"));
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
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

/// A TCP connection to `to` from the loopback address `source`.
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let [a, b, c, e] = source;
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, e, 0)).unwrap();
    let SocketAddr::V4(v4) = to else {
        panic!("IPv4 only")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
    let stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// A raw SMTP client that reads one byte at a time, so it never reads past
/// a reply: what follows stays in the socket (for the STARTTLS injection
/// test), and errors (a refused handshake) are returned, not panicked on.
struct Wire<S: Read + Write> {
    s: S,
}

impl<S: Read + Write> Wire<S> {
    fn line(&mut self) -> std::io::Result<String> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(b"\r\n") {
            match self.s.read(&mut b) {
                Ok(0) => break,
                Ok(_) => out.push(b[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// One whole reply; "" at EOF.
    fn reply(&mut self) -> std::io::Result<String> {
        let mut out = String::new();
        loop {
            let line = self.line()?;
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(out);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
        self.s.flush().unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply().unwrap()
    }
}

/// Whether the peer closed (EOF, reset or a TLS alert) within a few seconds.
fn closes<S: Read>(s: &mut S) -> bool {
    let mut b = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

/// The DER of the first certificate of a PEM file's text.
fn cert_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The leaf certificate the server presented.
fn peer_leaf(c: &Client<TlsStream>) -> Vec<u8> {
    c.stream()
        .conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.as_ref().to_vec())
        .expect("a server certificate")
}

// ---------------------------------------------------- 1. STARTTLS

/// Before STARTTLS, EHLO offers STARTTLS and no AUTH; after it, AUTH and
/// no STARTTLS; the session starts over (no MAIL before a new EHLO); a
/// message sent over TLS says ESMTPS and the TLS clause in its Received
/// header, and the log has the STARTTLS line.
#[test]
fn starttls_changes_the_offer_and_marks_the_message() {
    let certs = Certs::new("starttls");
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth-optional <creds>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("tls-starttls", &head, ANY);
    let mut c = Client::connect(d.addr());
    let ehlo = c.cmd("EHLO client.example");
    assert!(
        ehlo.starts_with("250-mx.test Hello client.example, pleased to meet you\r\n"),
        "{ehlo}"
    );
    assert!(ehlo.contains("\r\n250-STARTTLS\r\n"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH offered in plaintext: {ehlo}");

    let mut c = c.starttls(certs.config(), "mx.test");
    assert_eq!(peer_leaf(&c), cert_der(&certs.mx.cert_pem));
    // RFC 3207 4.2: nothing from before the handshake counts.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n"
    );
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.contains("\r\n250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS"), "503 5.5.1 TLS already active\r\n");
    send_mail(
        &mut c,
        &d,
        "alice@example.org",
        "bob@example.net",
        "over starttls",
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    let msg = delivered_with(&d, "over starttls");
    let r = received(&msg);
    assert!(
        r.starts_with("from client.example ([127.0.0.1]) by mx.test (rsmtpd) with ESMTPS id "),
        "{r}"
    );
    assert!(
        r.contains(" (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO) "),
        "{r}"
    );
    assert!(!r.contains("auth="), "{r}");
    d.wait_for_log("STARTTLS version=TLSv1.3", WAIT);
}

// ------------------------------------- 2. STARTTLS injection (CVE-2011-0411)

/// Sends `STARTTLS\r\n` and `injected` in one write, in plaintext. The 220
/// must be the only plaintext reply; then either the handshake fails (and
/// the connection closes) or, over TLS, the first reply after a new EHLO
/// is the EHLO reply, and `after_tls` holds: the injected command was
/// never run.
fn starttls_injection(name: &str, injected: &str, after_tls: impl Fn(&mut Wire<TlsStream>)) {
    let certs = Certs::new(name);
    let head = format!(
        "{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test",
        pki("mx.test", &certs.mx)
    );
    let d = start(name, &head, ANY);
    let tcp = TcpStream::connect(d.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = Wire { s: tcp };
    assert!(w.reply().unwrap().starts_with("220 "));
    assert!(w.cmd("EHLO client.example").contains("250-STARTTLS\r\n"));
    w.send(format!("STARTTLS\r\n{injected}").as_bytes());
    assert_eq!(w.reply().unwrap(), "220 2.0.0 Ready to start TLS\r\n");
    // Nothing more in plaintext: the injected command got no reply.
    let tcp = w.s;
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut peek = [0u8; 256];
    match tcp.peek(&mut peek) {
        Ok(n) if n > 0 => panic!(
            "plaintext after the 220: {:?}",
            String::from_utf8_lossy(&peek[..n])
        ),
        _ => {}
    }
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = tls_stream(tcp, certs.config(), "mx.test");
    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
        // Failing the handshake is a correct answer too; the server
        // must then be gone.
        println!("{name}: handshake failed ({e}), as allowed");
        assert!(closes(&mut tls.sock), "handshake failed, connection open");
        d.wait_for_log("TLS handshake failed", WAIT);
        return;
    }
    let mut w = Wire { s: tls };
    let ehlo = w.cmd("EHLO again.example");
    assert!(
        ehlo.starts_with("250-mx.test Hello again.example, pleased to meet you\r\n"),
        "first reply over TLS: {ehlo:?}"
    );
    assert!(
        !ehlo.contains("Reset state") && !ehlo.contains("2.1.0"),
        "{ehlo}"
    );
    after_tls(&mut w);
    // No reply of the injected command is waiting either.
    assert_eq!(w.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    assert_eq!(w.cmd("QUIT"), "221 2.0.0 Bye\r\n");
}

#[test]
fn starttls_with_pipelined_rset_runs_no_plaintext_command() {
    starttls_injection("tls-inject-rset", "RSET\r\n", |_| {});
}

#[test]
fn starttls_with_pipelined_mail_runs_no_plaintext_command() {
    starttls_injection("tls-inject-mail", "MAIL FROM:<evil@x>\r\n", |w| {
        // Had MAIL FROM:<evil@x> been kept, RCPT would be accepted.
        assert_eq!(
            w.cmd("RCPT TO:<victim@example.net>"),
            "503 5.5.1 Invalid command: Need MAIL first\r\n"
        );
    });
}

// ---------------------------------------------------- 3. tls-require

#[test]
fn tls_require_refuses_mail_before_starttls() {
    let certs = Certs::new("tls-require");
    let head = format!(
        "{}listen on 127.0.0.1 port {{port}} tls-require pki mx.test hostname mx.test",
        pki("mx.test", &certs.mx)
    );
    let d = start("tls-require", &head, ANY);
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").contains("250-STARTTLS\r\n"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net>"),
        "503 5.5.1 Invalid command: Need MAIL first\r\n"
    );
    let mut c = c.starttls(certs.config(), "mx.test");
    assert!(c.cmd("EHLO client.example").starts_with("250-mx.test"));
    send_mail(&mut c, &d, "a@example.org", "b@example.net", "required tls");
    c.cmd("QUIT");
    let r = received(&delivered_with(&d, "required tls"));
    assert!(r.contains(" with ESMTPS id "), "{r}");
    assert_eq!(d.delivered().len(), 1);
}

// ---------------------------------------------------- 4. smtps

/// Implicit TLS: the handshake comes first, EHLO offers no STARTTLS (and
/// AUTH right away), mail is delivered; a plaintext client gets nothing.
#[test]
fn smtps_is_tls_from_the_first_byte() {
    let certs = Certs::new("smtps");
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} smtps pki mx.test hostname mx.test auth-optional <creds>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("tls-smtps", &head, ANY);
    let mut c = Client::connect_tls(d.addr(), certs.config(), "mx.test");
    assert_eq!(peer_leaf(&c), cert_der(&certs.mx.cert_pem));
    let ehlo = c.cmd("EHLO client.example");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("\r\n250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS"), "503 5.5.1 TLS already active\r\n");
    send_mail(&mut c, &d, "a@example.org", "b@example.net", "over smtps");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let r = received(&delivered_with(&d, "over smtps"));
    assert!(r.contains(" with ESMTPS id "), "{r}");
    assert!(
        r.contains(" (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO) "),
        "{r}"
    );
    d.wait_for_log("TLS version=TLSv1.3", WAIT);

    // A plaintext client: no greeting, the bad handshake ends the session.
    let mut tcp = TcpStream::connect(d.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"EHLO plain.example\r\n").unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"220"),
        "a plaintext client got {:?}",
        String::from_utf8_lossy(&got)
    );
    d.wait_for_log("TLS handshake failed", WAIT);
}

// ---------------------------------------------------- 5. AUTH

fn swaks(d: &Daemon, certs: &Certs, extra: &[&str], subject: &str) -> String {
    let port = d.port.to_string();
    let ca = certs.ca.cert_path().display().to_string();
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--ehlo",
        "swaks.example",
        "--from",
        "joe@example.org",
        "--to",
        "rcpt@example.net",
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        "Hello from swaks.",
        "--timeout",
        "10",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        &ca,
        "--tls-sni",
        "mx.test",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
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

/// Python's smtplib: STARTTLS verifying the certificate against the test
/// CA (smtplib checks the name it connected to, so it is told mx.test),
/// login, sendmail.
const PYTHON_CLIENT: &str = r#"
import smtplib, ssl, sys
ca, port, user, password, subject = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP("127.0.0.1", int(port), local_hostname="python.example", timeout=10)
s._host = "mx.test"
s.starttls(context=ctx)
s.login(user, password)
s.sendmail("joe@example.org", ["rcpt@example.net"],
           "Subject: %s\r\n\r\nHello from smtplib.\r\n" % subject)
s.quit()
print("sent")
"#;

/// swaks (PLAIN and LOGIN, over STARTTLS with the certificate verified)
/// and Python's smtplib authenticate against a credentials table made
/// with `openssl passwd -6`, and their mail says ESMTPSA and
/// `auth=pass user=joe` (received-auth); a wrong password gets 535 after
/// the failure pause; the log never shows the password.
#[test]
fn real_clients_authenticate_against_a_credentials_table() {
    let certs = Certs::new("auth-clients");
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth <creds> received-auth",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("auth-clients", &head, ANY);

    let t = swaks(&d, &certs, &["--auth", "PLAIN"], "swaks plain");
    assert!(t.contains("235 2.0.0 Authentication succeeded"), "{t}");
    assert!(t.contains(" Message accepted for delivery"), "{t}");
    let t = swaks(&d, &certs, &["--auth", "LOGIN"], "swaks login");
    assert!(t.contains("334 VXNlcm5hbWU6"), "{t}");
    assert!(t.contains("334 UGFzc3dvcmQ6"), "{t}");
    assert!(t.contains("235 2.0.0 Authentication succeeded"), "{t}");

    let port = d.port.to_string();
    let ca = certs.ca.cert_path().display().to_string();
    let out = run(
        Command::new("python3").args([
            "-c",
            PYTHON_CLIENT,
            &ca,
            &port,
            USER,
            PASSWORD,
            "python smtplib",
        ]),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success() && out.stdout == b"sent\n",
        "python: {}\n{}\n{}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );

    for subject in ["swaks plain", "swaks login", "python smtplib"] {
        let msg = delivered_with(&d, subject);
        let r = received(&msg);
        assert!(r.contains(" with ESMTPSA id "), "{subject}: {r}");
        assert!(r.contains(" (TLSv1.3:"), "{subject}: {r}");
        assert!(r.contains(" auth=pass user=joe "), "{subject}: {r}");
    }
    d.wait_for_log("user=joe mechanism=PLAIN result=ok", WAIT);
    d.wait_for_log("user=joe mechanism=LOGIN result=ok", WAIT);

    // A wrong password: 535, after the pause.
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    let began = Instant::now();
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(USER, "not-the-password"))),
        "535 5.7.8 Authentication failed\r\n"
    );
    assert!(began.elapsed() >= Duration::from_millis(900), "no pause");
    d.wait_for_log("user=joe mechanism=PLAIN result=permfail", WAIT);
    assert_eq!(d.delivered().len(), 3);
    assert_no_password_in_log(&d, USER, PASSWORD);
}

/// Every AUTH refusal of RFC 4954 over the real daemon: 538 before TLS,
/// 530 for MAIL before AUTH, 504, 501 for `*`, bad base64 and CR/LF/NUL
/// in a name or password, 503 when already authenticated or inside a
/// transaction. None of these reaches the password check.
#[test]
fn auth_refusals_of_rfc_4954() {
    let certs = Certs::new("auth-refusals");
    let optional = free_port();
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth <creds>\n\
         listen on 127.0.0.1 port {optional} tls pki mx.test hostname mx.test auth-optional <creds>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("auth-refusals", &head, ANY);
    let good = plain(USER, PASSWORD);

    // The `auth` listener: states and mechanisms.
    let mut c = Client::connect(d.addr());
    let ehlo = c.cmd("EHLO client.example");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {good}")),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.org>"),
        "530 5.7.0 Must issue an AUTH command first\r\n"
    );
    assert_eq!(
        c.cmd("AUTH CRAM-MD5"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    assert_eq!(c.cmd("AUTH PLAIN"), "334 \r\n");
    assert_eq!(c.cmd("*"), "501 5.0.0 Authentication cancelled\r\n");
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(USER.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(c.cmd("*"), "501 5.0.0 Authentication cancelled\r\n");
    // Base64 letters that do not decode (a length that is no multiple of 4).
    assert_eq!(
        c.cmd("AUTH PLAIN am9lAGpvZQBwY"),
        "501 5.5.2 Syntax error in authentication data\r\n"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN YWJj="),
        "501 5.5.2 Syntax error in authentication data\r\n"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {good}")),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {good}")),
        "503 5.5.1 Already authenticated\r\n"
    );
    assert!(!c.cmd("EHLO client.example").contains("AUTH"));
    assert_eq!(c.cmd("MAIL FROM:<joe@example.org>"), "250 2.1.0 Ok\r\n");
    c.cmd("QUIT");

    // CR, LF and NUL in a name or a password; bad base64 in LOGIN.
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    let data_error = "501 5.5.2 Syntax error in authentication data\r\n";
    for bad in [
        b64(format!("\0jo\re\0{PASSWORD}").as_bytes()),
        b64(format!("\0jo\ne\0{PASSWORD}").as_bytes()),
        b64(b"\0joe\0pass\rword"),
        b64(b"\0joe\0pass\nword"),
        // A NUL in the password makes a fourth PLAIN field.
        b64(b"\0joe\0pass\0word"),
    ] {
        assert_eq!(c.cmd(&format!("AUTH PLAIN {bad}")), data_error, "{bad}");
    }
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(b"jo\0e")), data_error);
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd("!!!!"), data_error);
    assert_eq!(
        c.cmd(&format!("AUTH LOGIN {}", b64(USER.as_bytes()))),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(c.cmd(&b64(b"pass\rword")), data_error);
    // The session is still usable, and LOGIN (lower case) works.
    assert_eq!(c.cmd("auth login"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(USER.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.cmd(&b64(PASSWORD.as_bytes())),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    c.cmd("QUIT");
    d.wait_for_log("user=joe mechanism=LOGIN result=ok", WAIT);
    // Malformed responses never reached the password check.
    assert!(!d.log().contains("result=permfail"), "{}", d.log());

    // The `auth-optional` listener: AUTH inside a transaction.
    let addr = SocketAddr::from(([127, 0, 0, 1], optional));
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<joe@example.org>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {good}")),
        "503 5.5.1 AUTH not allowed in a mail transaction\r\n"
    );
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Reset state\r\n");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {good}")),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    c.cmd("QUIT");
    assert_no_password_in_log(&d, USER, PASSWORD);
}

/// RFC 4954 4: "If the server cannot BASE64 decode any client response,
/// it MUST reject the AUTH command with a 501 reply (and an enhanced
/// status code of 5.5.2)". An initial response is a client response, also
/// when its characters are outside the base64 alphabet (OpenSMTPD answers
/// 501 5.5.2 there too); the session must go on.
#[test]
fn undecodable_initial_response_gets_501_5_5_2() {
    let certs = Certs::new("auth-not-base64");
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth <creds>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("auth-not-base64", &head, ANY);
    let mut c = tls_session(&d, &certs, None);
    for bad in ["%%%not-base64%%%", "am9l*AGpvZQ==", "am9lAGpv\u{e9}ZQ=="] {
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {bad}")),
            "501 5.5.2 Syntax error in authentication data\r\n",
            "AUTH PLAIN {bad}"
        );
    }
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD))),
        "235 2.0.0 Authentication succeeded\r\n"
    );
}

/// Three failed AUTHs end a session (535, then 421); ten from one address
/// (across sessions) make even the right password get 454 from that
/// address, while another address still authenticates.
#[test]
fn auth_failures_close_the_session_and_block_the_address() {
    let certs = Certs::new("auth-limits");
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth <creds>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("auth-limits", &head, ANY);
    let addr = d.addr();
    let bad = plain(USER, "wrong-guess");

    // Three sessions at once, three failures each (each answered after
    // the pause, so in parallel to save time).
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let config = certs.config();
            let bad = bad.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.cmd("EHLO client.example");
                let mut c = c.starttls(config, "mx.test");
                c.cmd("EHLO client.example");
                let failed = "535 5.7.8 Authentication failed\r\n";
                assert_eq!(c.cmd(&format!("AUTH PLAIN {bad}")), failed);
                assert_eq!(c.cmd(&format!("AUTH PLAIN {bad}")), failed);
                assert_eq!(c.cmd(&format!("AUTH PLAIN {bad}")), failed);
                assert_eq!(
                    c.reply(),
                    "421 4.7.0 mx.test Too many authentication failures, closing connection\r\n"
                );
                assert!(c.closed(), "session open after 421");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    d.wait_for_log("closed reason=quit", WAIT);

    // The tenth failure, then the right password: refused unchecked.
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {bad}")),
        "535 5.7.8 Authentication failed\r\n"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD))),
        "454 4.7.0 Temporary authentication failure\r\n",
        "log:\n{}",
        d.log()
    );
    d.wait_for_log("too many failures from this address", WAIT);
    // Still refused in a new session from the same address.
    drop(c);
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD))),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.org>"),
        "530 5.7.0 Must issue an AUTH command first\r\n"
    );

    // Another address is not blocked.
    let mut w = Wire {
        s: connect_from([127, 0, 0, 2], addr),
    };
    assert!(w.reply().unwrap().starts_with("220 "));
    w.cmd("EHLO other.example");
    assert_eq!(w.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS\r\n");
    let mut w = Wire {
        s: tls_stream(w.s, certs.config(), "mx.test"),
    };
    w.cmd("EHLO other.example");
    assert_eq!(
        w.cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD))),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    assert_no_password_in_log(&d, USER, PASSWORD);
}

// --------------------------------------------- 6. certificates and SNI

/// `openssl s_client -starttls smtp`; returns its stdout (stdin is empty,
/// so it quits after the handshake).
fn s_client(d: &Daemon, certs: &Certs, servername: Option<&str>) -> String {
    let connect = format!("127.0.0.1:{}", d.port);
    let ca = certs.ca.cert_path().display().to_string();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        &connect,
        "-CAfile",
        &ca,
    ]);
    match servername {
        Some(name) => cmd.args(["-servername", name, "-verify_hostname", name]),
        None => cmd.arg("-noservername"),
    };
    let out = run(&mut cmd, Duration::from_secs(20));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subject line of s_client's output, spaces removed.
fn subject(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in:\n{out}"))
        .replace(' ', "")
}

/// openssl verifies the chain and the name (return code 0); with two pkis
/// on a listener, SNI picks the certificate, and without SNI the first
/// pki's is sent. The Rust client sees the very DER that was issued.
#[test]
fn sni_picks_the_pki_and_openssl_verifies_it() {
    let certs = Certs::new("sni");
    let a = certs.ca.issue(&["a.test"], KeyType::EcdsaP256);
    let b = certs.ca.issue(&["b.test"], KeyType::Rsa2048);
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki a.test pki b.test hostname a.test",
        pki("a.test", &a),
        pki("b.test", &b)
    );
    let d = start("tls-sni", &head, ANY);

    for (name, cn) in [
        (Some("a.test"), "a.test"),
        (Some("b.test"), "b.test"),
        (None, "a.test"),
    ] {
        let out = s_client(&d, &certs, name);
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{name:?}:\n{out}\nlog:\n{}",
            d.log()
        );
        assert_eq!(
            subject(&out),
            format!("subject=CN={cn}"),
            "{name:?}:\n{out}"
        );
    }

    for (name, issued) in [("a.test", &a), ("b.test", &b)] {
        let mut c = Client::connect(d.addr());
        c.cmd("EHLO client.example");
        let mut c = c.starttls(certs.config(), name);
        assert_eq!(peer_leaf(&c), cert_der(&issued.cert_pem), "SNI {name}");
        assert!(c.cmd("EHLO client.example").starts_with("250-a.test"));
        c.cmd("QUIT");
    }
}

// --------------------------------------------- 7. client certificates

/// `smtps verify` and `tls-require verify` with `ca`: no certificate, or
/// one from another CA, and the handshake fails; a certificate from the
/// CA is accepted and the Received clause ends with YES.
#[test]
fn verify_requires_a_client_certificate_from_the_ca() {
    let certs = Certs::new("verify");
    let clients = TestCa::new(&certs.dir, "clients");
    let rogue = TestCa::new(&certs.dir, "rogue");
    let good = clients.issue_client("client.test");
    let bad = rogue.issue_client("client.test");
    let starttls_port = free_port();
    let head = format!(
        "{}ca clients cert \"{}\"\n\
         listen on 127.0.0.1 port {{port}} smtps verify pki mx.test ca clients hostname mx.test\n\
         listen on 127.0.0.1 port {starttls_port} tls-require verify pki mx.test ca clients hostname mx.test",
        pki("mx.test", &certs.mx),
        clients.cert_path().display()
    );
    let d = start("tls-verify", &head, ANY);

    // smtps: no certificate, a foreign one.
    for (what, config) in [
        ("no certificate", certs.config()),
        ("another CA's", certs.ca.client_config_with_cert(&bad)),
    ] {
        let tcp = TcpStream::connect(d.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = Wire {
            s: tls_stream(tcp, config, "mx.test"),
        };
        let got = w.reply();
        assert!(
            !matches!(&got, Ok(r) if r.starts_with("220")),
            "smtps, {what}: {got:?}"
        );
    }
    d.wait_for_log("TLS handshake failed", WAIT);

    let mut c = Client::connect_tls(d.addr(), certs.ca.client_config_with_cert(&good), "mx.test");
    c.cmd("EHLO client.example");
    send_mail(
        &mut c,
        &d,
        "a@example.org",
        "b@example.net",
        "smtps with a client cert",
    );
    c.cmd("QUIT");
    let r = received(&delivered_with(&d, "smtps with a client cert"));
    assert!(
        r.contains(" (TLSv1.3:TLS_AES_256_GCM_SHA384:256:YES) "),
        "{r}"
    );

    // STARTTLS with verify.
    let addr = SocketAddr::from(([127, 0, 0, 1], starttls_port));
    let mut w = Wire {
        s: TcpStream::connect(addr).unwrap(),
    };
    w.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(w.reply().unwrap().starts_with("220 "));
    w.cmd("EHLO client.example");
    assert_eq!(w.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS\r\n");
    let mut w = Wire {
        s: tls_stream(w.s, certs.config(), "mx.test"),
    };
    // The write may already meet the server's alert: only the reply counts.
    let _ = w.s.write_all(b"EHLO client.example\r\n");
    let got = w.reply();
    assert!(
        !matches!(&got, Ok(r) if r.starts_with("250")),
        "STARTTLS without a certificate: {got:?}"
    );

    let mut c = Client::connect(addr);
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.ca.client_config_with_cert(&good), "mx.test");
    c.cmd("EHLO client.example");
    send_mail(
        &mut c,
        &d,
        "a@example.org",
        "b@example.net",
        "starttls with a client cert",
    );
    c.cmd("QUIT");
    let r = received(&delivered_with(&d, "starttls with a client cert"));
    assert!(r.contains(" with ESMTPS id "), "{r}");
    assert!(
        r.contains(" (TLSv1.3:TLS_AES_256_GCM_SHA384:256:YES) "),
        "{r}"
    );
    assert_eq!(d.delivered().len(), 2);
}

// ---------------------------------------------------- 8. rules

/// STARTTLS then AUTH PLAIN on a fresh session; returns it ready for MAIL.
fn tls_session(d: &Daemon, certs: &Certs, auth: Option<(&str, &str)>) -> Client<TlsStream> {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    let mut c = c.starttls(certs.config(), "mx.test");
    c.cmd("EHLO client.example");
    if let Some((user, password)) = auth {
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {}", plain(user, password))),
            "235 2.0.0 Authentication succeeded\r\n",
            "log:\n{}",
            d.log()
        );
    }
    c
}

/// `match auth` accepts only authenticated sessions, `match tls` only TLS
/// ones; everything else matches no rule and is refused at RCPT.
#[test]
fn match_auth_and_match_tls() {
    let certs = Certs::new("rules");
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth-optional <creds>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let rules = "match auth from any for domain \"auth.test\" action \"local\"\n\
                 match tls from any for domain \"tls.test\" action \"local\"";
    let d = start("tls-rules", &head, rules);
    let refused = |r: &str| r.starts_with("550 ");

    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    let r = c.cmd("RCPT TO:<x@auth.test>");
    assert!(refused(&r), "plaintext, match auth: {r}");
    let r = c.cmd("RCPT TO:<x@tls.test>");
    assert!(refused(&r), "plaintext, match tls: {r}");
    c.cmd("QUIT");

    let mut c = tls_session(&d, &certs, None);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    let r = c.cmd("RCPT TO:<x@auth.test>");
    assert!(refused(&r), "TLS without AUTH, match auth: {r}");
    assert!(c.cmd("RCPT TO:<x@tls.test>").starts_with("250 2.1.5 "));
    c.cmd("RSET");
    send_mail(&mut c, &d, "a@example.org", "y@tls.test", "matched tls");
    c.cmd("QUIT");

    let mut c = tls_session(&d, &certs, Some((USER, PASSWORD)));
    send_mail(&mut c, &d, "joe@example.org", "x@auth.test", "matched auth");
    c.cmd("QUIT");

    assert!(received(&delivered_with(&d, "matched tls")).contains(" with ESMTPS id "));
    assert!(received(&delivered_with(&d, "matched auth")).contains(" with ESMTPSA id "));
    assert_eq!(d.delivered().len(), 2);
}

/// `senders <table>`: an authenticated user may use only the MAIL FROM
/// addresses listed for it (an address or `@domain`); a user not in the
/// table none.
#[test]
fn senders_table_limits_mail_from() {
    let certs = Certs::new("senders");
    let head = format!(
        "{}{}table sendertab {{ \"{USER}\" = \"joe@example.org, @joe.example\" }}\n\
         listen on 127.0.0.1 port {{port}} tls pki mx.test hostname mx.test auth <creds> senders <sendertab>",
        pki("mx.test", &certs.mx),
        creds_table()
    );
    let d = start("tls-senders", &head, ANY);
    let not_allowed =
        "553 5.7.1 Sender address rejected: not allowed for the authenticated user\r\n";

    let mut c = tls_session(&d, &certs, Some((USER, PASSWORD)));
    assert_eq!(c.cmd("MAIL FROM:<joe@example.org>"), "250 2.1.0 Ok\r\n");
    c.cmd("RSET");
    assert_eq!(
        c.cmd("MAIL FROM:<anything@joe.example>"),
        "250 2.1.0 Ok\r\n"
    );
    c.cmd("RSET");
    assert_eq!(c.cmd("MAIL FROM:<ann@example.org>"), not_allowed);
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>"), not_allowed);
    send_mail(
        &mut c,
        &d,
        "joe@example.org",
        "b@example.net",
        "allowed sender",
    );
    c.cmd("QUIT");

    let mut c = tls_session(&d, &certs, Some((USER2, PASSWORD2)));
    assert_eq!(c.cmd("MAIL FROM:<ann@example.org>"), not_allowed);
    assert_eq!(c.cmd("MAIL FROM:<joe@example.org>"), not_allowed);
    c.cmd("QUIT");

    delivered_with(&d, "allowed sender");
    assert_eq!(d.delivered().len(), 1);
    d.wait_for_log("553 5.7.1 not allowed for user ann", WAIT);
}

// ---------------------------------------------------- 9. key isolation

/// The NAME of `--role NAME` in a process's command line.
fn role_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--role")?;
    args.get(i + 1).cloned()
}

/// A DER element at `der[at..]`: (tag, content range, end).
fn der_element(der: &[u8], at: usize) -> (u8, std::ops::Range<usize>, usize) {
    let tag = der[at];
    let first = der[at + 1];
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = der[at + 2..at + 2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let start = at + head;
    (tag, start..start + len, start + len)
}

/// The secret numbers inside a PKCS#8 key, as they would sit in memory
/// big-endian: the EC private scalar, or RSA's d, p and q.
fn key_secrets(der: &[u8]) -> Vec<(String, Vec<u8>)> {
    // PrivateKeyInfo: SEQUENCE { INTEGER, AlgorithmIdentifier, OCTET STRING }
    let (_, body, _) = der_element(der, 0);
    let (_, _, next) = der_element(der, body.start); // version
    let (_, algo, next) = der_element(der, next);
    let (tag, inner, _) = der_element(der, next);
    assert_eq!(tag, 0x04, "PKCS#8 without an OCTET STRING key");
    let key = &der[inner];
    let algo = &der[algo];
    let ec = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // id-ecPublicKey
    let (_, seq, _) = der_element(key, 0);
    let (_, _, next) = der_element(key, seq.start); // version
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    if algo.windows(ec.len()).any(|w| w == ec) {
        // ECPrivateKey: SEQUENCE { INTEGER 1, OCTET STRING privateKey, ... }
        let (tag, d, _) = der_element(key, next);
        assert_eq!(tag, 0x04);
        return vec![("EC private scalar".into(), key[d].to_vec())];
    }
    // RSAPrivateKey: version, n, e, d, p, q, ...
    let mut out = Vec::new();
    let mut at = next;
    for name in ["n", "e", "d", "p", "q"] {
        let (tag, v, end) = der_element(key, at);
        assert_eq!(tag, 0x02, "RSA key field {name}");
        if matches!(name, "d" | "p" | "q") {
            out.push((format!("RSA {name}"), strip(&key[v])));
        }
        at = end;
    }
    out
}

/// What must not be in any process but crypto: the key's DER, the base64
/// lines of its PEM file, and its secret numbers.
fn key_needles(issued: &Issued, what: &str) -> Vec<(String, Vec<u8>)> {
    let der = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let der = der.secret_der().to_vec();
    let body: String = issued
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(unb64(&body), der, "the PEM body is the DER");
    let mut needles = vec![(format!("{what} key DER"), der.clone())];
    for (i, line) in issued.key_pem.lines().enumerate() {
        if !line.starts_with("-----") && line.len() >= 16 {
            needles.push((format!("{what} PEM line {i}"), line.as_bytes().to_vec()));
        }
    }
    for (name, secret) in key_secrets(&der) {
        assert!(secret.len() >= 32, "{name}");
        needles.push((format!("{what} {name}"), secret));
    }
    needles
}

/// Finds many needles (each at least 16 bytes) in a haystack: every
/// `stride`-th 8-byte window is looked up among the needles' 8-grams, so
/// an occurrence (which spans at least `stride` windows) is never missed.
struct Needles {
    pats: Vec<(String, Vec<u8>)>,
    grams: HashMap<[u8; 8], Vec<(usize, usize)>>,
    stride: usize,
}

impl Needles {
    fn new(pats: Vec<(String, Vec<u8>)>) -> Needles {
        let min = pats.iter().map(|(_, p)| p.len()).min().unwrap();
        assert!(min >= 16);
        let mut grams: HashMap<[u8; 8], Vec<(usize, usize)>> = HashMap::new();
        for (i, (_, p)) in pats.iter().enumerate() {
            for off in 0..=p.len() - 8 {
                grams
                    .entry(p[off..off + 8].try_into().unwrap())
                    .or_default()
                    .push((i, off));
            }
        }
        Needles {
            pats,
            grams,
            stride: min - 7,
        }
    }

    /// Indexes of the needles found in `hay`.
    fn find(&self, hay: &[u8], found: &mut Vec<usize>) {
        let mut i = 0;
        while i + 8 <= hay.len() {
            let gram: [u8; 8] = hay[i..i + 8].try_into().unwrap();
            if let Some(cands) = self.grams.get(&gram) {
                for &(p, off) in cands {
                    let pat = &self.pats[p].1;
                    if i >= off
                        && hay.get(i - off..i - off + pat.len()) == Some(pat.as_slice())
                        && !found.contains(&p)
                    {
                        found.push(p);
                    }
                }
            }
            i += self.stride;
        }
    }
}

/// Scans the memory of `pid` that holds its data: readable mappings that
/// are writable or anonymous (heap, stacks, anonymous mmaps). Read-only
/// file mappings are the program and libraries as on disk; a key file
/// mapped into memory would show in the maps by its path (checked apart).
/// Returns the names of the needles found, or Err when /proc/PID/mem
/// cannot be read at all.
fn scan_memory(pid: u32, needles: &Needles) -> Result<Vec<String>, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
    let mut found = Vec::new();
    let (mut read, mut failed) = (0usize, 0usize);
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        if !perms.starts_with('r')
            || matches!(path, "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
            || (!perms.contains('w') && !path.is_empty() && !path.starts_with('['))
        {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; usize::try_from(end - start).unwrap()];
        match mem.read_exact_at(&mut buf, start) {
            Ok(()) => {
                read += buf.len();
                needles.find(&buf, &mut found);
            }
            Err(_) => failed += 1,
        }
    }
    if read == 0 {
        return Err(format!(
            "/proc/{pid}/mem: no region readable ({failed} failed)"
        ));
    }
    Ok(found
        .into_iter()
        .map(|i| needles.pats[i].0.clone())
        .collect())
}

/// Only the crypto process may hold a private key: no other process of
/// the daemon has the key file open or mapped, and none has the key's
/// bytes (DER, PEM lines, secret numbers) in its memory, after handshakes
/// with both pkis (ECDSA and RSA). As a control, the certificates' DER is
/// found in the smtp process, which holds the chains: the scan works.
///
/// Reading another process's memory needs ptrace rights over it. As root
/// they are a given (CAP_SYS_PTRACE), so a refusal fails the test; as
/// another user the daemon's processes may not be readable (privilege
/// drops make them non-dumpable) and the memory part is then skipped
/// with a note.
#[test]
fn only_crypto_holds_the_private_keys() {
    let certs = Certs::new("keys");
    let rsa = certs.ca.issue(&["rsa.test"], KeyType::Rsa2048);
    let head = format!(
        "{}{}listen on 127.0.0.1 port {{port}} tls pki mx.test pki rsa.test hostname mx.test",
        pki("mx.test", &certs.mx),
        pki("rsa.test", &rsa)
    );
    let d = start("tls-keys", &head, ANY);
    // Handshakes signed with both keys (through crypto).
    for (name, issued) in [("mx.test", &certs.mx), ("rsa.test", &rsa)] {
        let mut c = Client::connect(d.addr());
        c.cmd("EHLO client.example");
        let mut c = c.starttls(certs.config(), name);
        assert_eq!(peer_leaf(&c), cert_der(&issued.cert_pem));
        assert!(c.cmd("EHLO client.example").starts_with("250-"));
        c.cmd("QUIT");
    }

    let mut pids = vec![d.pid().unwrap()];
    pids.extend(d.children());
    let roles: Vec<(u32, String)> = pids
        .iter()
        .map(|p| (*p, role_of(*p).unwrap_or_else(|| "parent".into())))
        .collect();
    assert!(
        roles.iter().any(|(_, r)| r == "crypto"),
        "no crypto process among {roles:?}"
    );
    let smtp = roles
        .iter()
        .find(|(_, r)| r == "smtp")
        .map(|(p, _)| *p)
        .unwrap_or_else(|| panic!("no smtp process among {roles:?}"));
    let others: Vec<&(u32, String)> = roles.iter().filter(|(_, r)| r != "crypto").collect();
    assert!(others.len() >= 4, "too few processes: {roles:?}");

    // (a) No open file or mapping of a key file.
    let keys: Vec<PathBuf> = [&certs.mx.key, &rsa.key]
        .iter()
        .map(|k| std::fs::canonicalize(k).unwrap())
        .collect();
    for (pid, role) in &others {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue; // gone (a delivery that ended)
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                assert!(
                    !keys.contains(&target),
                    "{role} (pid {pid}) has {} open",
                    target.display()
                );
            }
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        for k in &keys {
            assert!(
                !maps.contains(&k.display().to_string()),
                "{role} (pid {pid}) maps {}",
                k.display()
            );
        }
    }

    // (b) No key bytes in memory; the certificates are in smtp's.
    let mut pats = key_needles(&certs.mx, "mx.test (ECDSA)");
    pats.extend(key_needles(&rsa, "rsa.test (RSA)"));
    let certs_found = ["mx.test certificate DER", "rsa.test certificate DER"];
    pats.push((certs_found[0].into(), cert_der(&certs.mx.cert_pem)));
    pats.push((certs_found[1].into(), cert_der(&rsa.cert_pem)));
    let needles = Needles::new(pats);
    for (pid, role) in &others {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let found = match scan_memory(*pid, &needles) {
            Ok(found) => found,
            Err(e) if is_root() => panic!(
                "cannot read the memory of {role} (pid {pid}) as root: {e}; \
                 the key-isolation check needs ptrace rights (CAP_SYS_PTRACE)"
            ),
            Err(e) => {
                println!(
                    "only_crypto_holds_the_private_keys: memory scan skipped \
                     (not root, {role} pid {pid}: {e})"
                );
                return;
            }
        };
        let keys_found: Vec<&String> = found
            .iter()
            .filter(|n| !certs_found.contains(&n.as_str()))
            .collect();
        assert!(
            keys_found.is_empty(),
            "{role} (pid {pid}) has private key material in memory: {keys_found:?}"
        );
        if *pid == smtp {
            for c in certs_found {
                assert!(
                    found.iter().any(|f| f == c),
                    "control failed: {c} not found in smtp's memory (pid {pid}); found {found:?}"
                );
            }
        }
    }
}

// ------------------------------------------- 10. reference examples

/// 12 (OpenSMTPD's 2019 CI TLS test): STARTTLS with auth-optional on the
/// default port, smtps on 465 and tls-require + auth on 587, one
/// credentials table whose hash is for "password", `match auth` only.
/// Rewritten: the pki files (the chain file holds leaf + CA, like a
/// `fullchain.cer`), the three ports, the Maildir, a queue path.
#[test]
fn example_12_tls_smtps_and_submission() {
    let certs = Certs::new("ex12");
    let site = certs.ca.issue(&["localhost"], KeyType::EcdsaP256);
    let fullchain = certs.dir.join("fullchain.cer");
    std::fs::write(
        &fullchain,
        format!("{}{}", site.cert_pem, certs.ca.cert_pem()),
    )
    .unwrap();
    let (smtps, submission) = (free_port(), free_port());

    let conf = example("12-ci-tls-smtps-submission-2019.conf");
    let conf = rewrite(
        &conf,
        "\"/etc/ssl/private/sites/fullchain.cer\"",
        &format!("\"{}\"", fullchain.display()),
        1,
    );
    let conf = rewrite(
        &conf,
        "\"/etc/ssl/private/sites/site.key\"",
        &format!("\"{}\"", site.key.display()),
        1,
    );
    let conf = rewrite(
        &conf,
        "listen on localhost          tls ",
        "listen on localhost port {port} tls ",
        1,
    );
    let conf = rewrite(&conf, "port 465 ", &format!("port {smtps} "), 1);
    let conf = rewrite(&conf, "port 587 ", &format!("port {submission} "), 1);
    let conf = rewrite(&conf, "maildir \"/tmp/\"", "maildir \"{maildir}\"", 1);
    let conf = format!("queue path \"{{spool}}\"\n{conf}");
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "ex12",
            body: &conf,
            args: &[],
            env: ENV,
        },
    );
    let user = "user";
    let password = "password";
    let rcpt = format!("{}@example.org", current_user());
    let config = certs.config();

    // Port "25": STARTTLS, auth-optional; unauthenticated mail matches
    // no rule.
    let mut c = Client::connect(d.addr());
    assert!(
        c.cmd("EHLO client.example")
            .starts_with("250-localhost Hello")
    );
    c.cmd("MAIL FROM:<a@example.org>");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r.starts_with("550 "), "plaintext, no auth: {r}");
    c.cmd("RSET");
    let mut c = c.starttls(config.clone(), "localhost");
    // The server sent its chain: leaf and CA.
    assert_eq!(c.stream().conn.peer_certificates().map(<[_]>::len), Some(2));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org>");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r.starts_with("550 "), "TLS, no auth: {r}");
    c.cmd("RSET");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(user, password))),
        "235 2.0.0 Authentication succeeded\r\n",
        "log:\n{}",
        d.log()
    );
    send_mail(&mut c, &d, "user@example.org", &rcpt, "ex12 starttls");
    c.cmd("QUIT");

    // smtps: implicit TLS.
    let addr = SocketAddr::from(([127, 0, 0, 1], smtps));
    let mut c = Client::connect_tls(addr, config.clone(), "localhost");
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org>");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r.starts_with("550 "), "smtps, no auth: {r}");
    c.cmd("RSET");
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(user.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.cmd(&b64(password.as_bytes())),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    send_mail(&mut c, &d, "user@example.org", &rcpt, "ex12 smtps");
    c.cmd("QUIT");

    // Submission: TLS required, then AUTH required.
    let addr = SocketAddr::from(([127, 0, 0, 1], submission));
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let mut c = c.starttls(config, "localhost");
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue an AUTH command first\r\n"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(user, password))),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    send_mail(&mut c, &d, "user@example.org", &rcpt, "ex12 submission");
    c.cmd("QUIT");

    for subject in ["ex12 starttls", "ex12 smtps", "ex12 submission"] {
        let r = received(&delivered_with(&d, subject));
        assert!(r.contains(" by localhost (rsmtpd) with ESMTPSA id "), "{r}");
    }
    assert_eq!(d.delivered().len(), 3);
    assert_no_password_in_log(&d, user, password);
}

/// The system account scripts/setup.sh creates for example 03's `auth`
/// (no table: system accounts), and its password. A login with a known
/// password is only made where asked for (RSMTPD_TEST_ACCOUNTS=yes, which
/// .ci/run sets), never on a machine that merely runs the tests.
const SYSTEM_USER: &str = "rsmtpdauth";
const SYSTEM_PASSWORD: &str = "rsmtpd-Auth-Test-4711";

/// 03: `listen on egress tls pki mail.example.com auth` authenticates
/// system accounts (only the root parent reads /etc/shadow). Rewritten:
/// lo0 to 127.0.0.1 and egress to 127.0.0.2 (the same free port), the pki
/// files, the aliases file, `/path/to/mda` to a script keeping its input.
/// Root only (the daemon must read /etc/shadow).
#[test]
fn example_03_auth_with_system_accounts() {
    if !is_root() {
        println!("example_03_auth_with_system_accounts: skipped (needs root; CI runs as root)");
        return;
    }
    let wanted = std::env::var("RSMTPD_TEST_ACCOUNTS").is_ok_and(|v| v == "yes");
    let exists = nix::unistd::User::from_name(SYSTEM_USER).unwrap().is_some();
    if !wanted && !exists {
        println!(
            "example_03_auth_with_system_accounts: skipped (no {SYSTEM_USER}; \
             RSMTPD_TEST_ACCOUNTS=yes scripts/setup.sh makes it)"
        );
        return;
    }
    assert!(
        exists,
        "user {SYSTEM_USER} is missing: run RSMTPD_TEST_ACCOUNTS=yes scripts/setup.sh as root"
    );
    let recipient = nix::unistd::User::from_name("rsmtpdtest2")
        .unwrap()
        .expect("user rsmtpdtest2 is missing: run scripts/setup.sh as root");
    let certs = Certs::new("ex03");
    let mail = certs.ca.issue(&["mail.example.com"], KeyType::EcdsaP256);
    let out = certs.dir.join("out");
    std::fs::create_dir(&out).unwrap();
    chmod(&out, 0o777);
    std::fs::write(certs.dir.join("aliases"), "postmaster: rsmtpdtest1\n").unwrap();
    let mda = certs.dir.join("mda.sh");
    std::fs::write(
        &mda,
        format!(
            "#!/bin/sh\n# Stands in for /path/to/mda.\ncat > {}/$(id -u).msg\n",
            out.display()
        ),
    )
    .unwrap();
    chmod(&mda, 0o755);

    let conf = example("03-submission-auth-mda.conf");
    let conf = rewrite(
        &conf,
        "\"/etc/ssl/mail.example.com.crt\"",
        &format!("\"{}\"", mail.cert.display()),
        1,
    );
    let conf = rewrite(
        &conf,
        "\"/etc/ssl/private/mail.example.com.key\"",
        &format!("\"{}\"", mail.key.display()),
        1,
    );
    let conf = rewrite(
        &conf,
        "file:/etc/mail/aliases",
        &format!("file:{}/aliases", certs.dir.display()),
        1,
    );
    let conf = rewrite(
        &conf,
        "listen on lo0\n",
        "listen on 127.0.0.1 port {port}\n",
        1,
    );
    let conf = rewrite(
        &conf,
        "listen on egress ",
        "listen on 127.0.0.2 port {port} ",
        1,
    );
    let conf = rewrite(
        &conf,
        "\"/path/to/mda -f -\"",
        &format!("\"{} -f -\"", mda.display()),
        2,
    );
    let conf = format!("queue path \"{{spool}}\"\n{conf}");
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "ex03-auth",
            body: &conf,
            args: &[],
            env: ENV,
        },
    );

    let egress = SocketAddr::from(([127, 0, 0, 2], d.port));
    let mut c = Client::connect(egress);
    let ehlo = c.cmd("EHLO client.example");
    assert!(
        ehlo.contains("250-STARTTLS\r\n") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue an AUTH command first\r\n"
    );
    let mut c = c.starttls(certs.config(), "mail.example.com");
    assert!(
        c.cmd("EHLO client.example")
            .contains("250-AUTH PLAIN LOGIN\r\n")
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain(SYSTEM_USER, "not-it"))),
        "535 5.7.8 Authentication failed\r\n"
    );
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(SYSTEM_USER.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.cmd(&b64(SYSTEM_PASSWORD.as_bytes())),
        "235 2.0.0 Authentication succeeded\r\n",
        "log:\n{}",
        d.log()
    );
    send_mail(
        &mut c,
        &d,
        "rsmtpdauth@example.com",
        "rsmtpdtest2@example.com",
        "ex03 authenticated",
    );
    c.cmd("QUIT");

    let uid = recipient.uid.as_raw();
    let msg_path = out.join(format!("{uid}.msg"));
    let deadline = Instant::now() + WAIT;
    let msg = loop {
        let text = std::fs::read_to_string(&msg_path).unwrap_or_default();
        if text.contains("The body of ex03 authenticated.") || Instant::now() >= deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        msg.contains("\nSubject: ex03 authenticated\n"),
        "{msg}\nlog:\n{}",
        d.log()
    );
    let r = received(&msg);
    assert!(r.contains(" with ESMTPSA id "), "{r}");
    assert_eq!(std::fs::metadata(&msg_path).unwrap().uid(), uid);
    d.wait_for_log("user=rsmtpdauth mechanism=LOGIN result=ok", WAIT);
    d.wait_for_log("user=rsmtpdauth mechanism=PLAIN result=permfail", WAIT);
    assert_no_password_in_log(&d, SYSTEM_USER, SYSTEM_PASSWORD);
}
