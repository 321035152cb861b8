//! LMTP delivery against a small scripted LMTP server (TCP and unix socket
//! on loopback), and against Dovecot's LMTP server when it is installed.
// Helpers outside #[test] functions panic on purpose: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rsmtpd_delivery::Class;
use rsmtpd_delivery::lmtp::{Destination, Lmtp, LmtpError, LmtpRecipient, Outcome, deliver};
use rsmtpd_test_support::temp_dir;

/// How the scripted server behaves.
#[derive(Clone)]
struct Script {
    greeting: &'static [u8],
    lhlo: &'static [u8],
    /// Refused at RCPT with 550.
    unknown: &'static [&'static str],
    /// Refused after DATA with 452.
    full: &'static [&'static str],
    /// Stop answering after the greeting.
    mute: bool,
}

const LHLO_PIPE: &[u8] =
    b"250-lmtp.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 100000\r\n250 PIPELINING\r\n";

impl Default for Script {
    fn default() -> Self {
        Self {
            greeting: b"220 lmtp.test LMTP ready\r\n",
            lhlo: LHLO_PIPE,
            unknown: &[],
            full: &[],
            mute: false,
        }
    }
}

/// Serves one session; returns every byte the client sent. Bounded: reads
/// time out after 5 s and at most 10 000 lines are read.
fn serve(mut reader: impl Read, mut writer: impl Write, script: &Script) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = writer.write_all(script.greeting);
    let mut reader = BufReader::new(&mut reader);
    let mut accepted: Vec<String> = Vec::new();
    let mut in_data = false;
    for _ in 0..10_000 {
        let mut line = Vec::new();
        match (&mut reader).take(4096).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        received.extend_from_slice(&line);
        if script.mute {
            continue;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let reply: Vec<u8> = if in_data {
            if text != "." {
                continue;
            }
            in_data = false;
            let mut r = Vec::new();
            for who in accepted.drain(..) {
                if script.full.contains(&who.as_str()) {
                    r.extend(format!("452 4.2.2 <{who}> Mailbox full\r\n").bytes());
                } else {
                    r.extend(format!("250 2.0.0 <{who}> Saved\r\n").bytes());
                }
            }
            r
        } else if text.starts_with("LHLO ") {
            script.lhlo.to_vec()
        } else if text.starts_with("MAIL FROM:") {
            b"250 2.1.0 OK\r\n".to_vec()
        } else if let Some(rest) = text.strip_prefix("RCPT TO:<") {
            let who = rest.split('>').next().unwrap_or_default().to_owned();
            if script.unknown.contains(&who.as_str()) {
                format!("550 5.1.1 <{who}> User doesn't exist\r\n").into_bytes()
            } else {
                accepted.push(who);
                b"250 2.1.5 OK\r\n".to_vec()
            }
        } else if text == "DATA" {
            if accepted.is_empty() {
                b"503 5.5.1 No valid recipients\r\n".to_vec()
            } else {
                in_data = true;
                b"354 OK\r\n".to_vec()
            }
        } else if text == "QUIT" {
            let _ = writer.write_all(b"221 2.0.0 Bye\r\n");
            break;
        } else {
            b"500 5.5.1 Unknown command\r\n".to_vec()
        };
        if writer.write_all(&reply).is_err() {
            break;
        }
    }
    received
}

/// A scripted server on 127.0.0.1; the thread ends with the session.
fn tcp_server(script: Script) -> (Destination, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let Some(stream) = accept_bounded(
            || listener.accept().map(|(s, _)| s),
            || listener.set_nonblocking(true),
        ) else {
            return Vec::new();
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        serve(&stream, &stream, &script)
    });
    let destination = Destination::parse(&format!("127.0.0.1:{port}")).unwrap();
    (destination, handle)
}

fn unix_server(path: &Path, script: Script) -> (Destination, JoinHandle<Vec<u8>>) {
    let listener = UnixListener::bind(path).unwrap();
    let handle = std::thread::spawn(move || {
        let Some(stream) = accept_bounded(
            || listener.accept().map(|(s, _)| s),
            || listener.set_nonblocking(true),
        ) else {
            return Vec::new();
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        serve(&stream, &stream, &script)
    });
    let destination = Destination::parse(path.to_str().unwrap()).unwrap();
    (destination, handle)
}

/// Accepts one connection within 10 s.
fn accept_bounded<S>(
    mut accept: impl FnMut() -> std::io::Result<S>,
    nonblocking: impl FnOnce() -> std::io::Result<()>,
) -> Option<S> {
    nonblocking().ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match accept() {
            Ok(s) => return Some(s),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    None
}

fn lmtp(destination: &Destination, rcpt_to_address: bool) -> Lmtp<'_> {
    Lmtp {
        destination,
        rcpt_to_address,
        lhlo: "mx.test",
        io_timeout: Duration::from_secs(5),
        session_timeout: Duration::from_secs(20),
    }
}

fn recipients<'a>(users: &[&'a str], addresses: &[&'a str]) -> Vec<LmtpRecipient<'a>> {
    users
        .iter()
        .zip(addresses)
        .map(|(user, address)| LmtpRecipient { user, address })
        .collect()
}

const MESSAGE: &[u8] = b"Subject: test\r\nFrom: s@example.org\r\n\r\n.hidden line\r\nbody\r\n";

#[test]
fn tcp_pipelined_delivery_with_per_recipient_outcomes() {
    let (dest, server) = tcp_server(Script {
        unknown: &["bob"],
        full: &["carol"],
        ..Script::default()
    });
    let rcpts = recipients(
        &["alice", "bob", "carol", "dave"],
        &["alice@x.test", "bob@x.test", "carol@x.test", "dave@x.test"],
    );
    let outcomes = deliver(
        &lmtp(&dest, false),
        "sender@example.org",
        &rcpts,
        Some(MESSAGE.len() as u64),
        &mut &MESSAGE[..],
    )
    .unwrap();
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered,
            Outcome::Permanent("550 5.1.1 <bob> User doesn't exist".into()),
            Outcome::Temporary("452 4.2.2 <carol> Mailbox full".into()),
            Outcome::Delivered,
        ]
    );
    let received = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received),
        format!(
            "LHLO mx.test\r\n\
MAIL FROM:<sender@example.org> SIZE={} BODY=8BITMIME\r\n\
RCPT TO:<alice>\r\nRCPT TO:<bob>\r\nRCPT TO:<carol>\r\nRCPT TO:<dave>\r\n\
DATA\r\n\
Subject: test\r\nFrom: s@example.org\r\n\r\n..hidden line\r\nbody\r\n.\r\n\
QUIT\r\n",
            MESSAGE.len()
        )
    );
}

#[test]
fn unix_socket_rcpt_to_address_without_pipelining() {
    let dir = temp_dir("lmtp-unix");
    let (dest, server) = unix_server(
        &dir.join("lmtp.sock"),
        Script {
            lhlo: b"250 lmtp.test\r\n",
            ..Script::default()
        },
    );
    let rcpts = recipients(&["alice", "bob"], &["alice@x.test", "bob@y.test"]);
    // A message whose last line has no line end, and LF-only lines.
    let message: &[u8] = b"Subject: x\n\nline\n.\nlast";
    let outcomes = deliver(&lmtp(&dest, true), "", &rcpts, None, &mut &message[..]).unwrap();
    assert_eq!(outcomes, [Outcome::Delivered, Outcome::Delivered]);
    let received = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received),
        "LHLO mx.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@x.test>\r\nRCPT TO:<bob@y.test>\r\n\
DATA\r\nSubject: x\r\n\r\nline\r\n..\r\nlast\r\n.\r\nQUIT\r\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_data_when_every_recipient_is_refused() {
    let (dest, server) = tcp_server(Script {
        unknown: &["bob", "carol"],
        ..Script::default()
    });
    let rcpts = recipients(&["bob", "carol"], &["", ""]);
    let outcomes = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &rcpts,
        None,
        &mut &MESSAGE[..],
    )
    .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Permanent(t) if t.starts_with("550 5.1.1")))
    );
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "LHLO mx.test\r\nMAIL FROM:<s@example.org> BODY=8BITMIME\r\n\
RCPT TO:<bob>\r\nRCPT TO:<carol>\r\nQUIT\r\n"
    );
}

#[test]
fn invalid_recipient_fails_alone() {
    let (dest, server) = tcp_server(Script::default());
    let rcpts = recipients(&["bad user", "alice"], &["", ""]);
    let outcomes = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &rcpts,
        None,
        &mut &MESSAGE[..],
    )
    .unwrap();
    assert!(matches!(&outcomes[0], Outcome::Permanent(t) if t.starts_with("5.1.3")));
    assert_eq!(outcomes[1], Outcome::Delivered);
    let received = String::from_utf8_lossy(&server.join().unwrap()).into_owned();
    assert!(
        received.contains("RCPT TO:<alice>\r\nDATA\r\n"),
        "{received}"
    );
    assert!(!received.contains("bad"));
}

#[test]
fn a_silent_server_times_out_temporarily() {
    let (dest, server) = tcp_server(Script {
        mute: true,
        ..Script::default()
    });
    let config = Lmtp {
        io_timeout: Duration::from_millis(300),
        session_timeout: Duration::from_secs(2),
        ..lmtp(&dest, false)
    };
    let start = Instant::now();
    let outcomes = deliver(
        &config,
        "s@example.org",
        &recipients(&["alice", "bob"], &["", ""]),
        None,
        &mut &MESSAGE[..],
    )
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    for o in &outcomes {
        assert_eq!(
            o,
            &Outcome::Temporary("the server did not answer in time".into())
        );
    }
    // The server saw LHLO only, then the connection closed.
    assert_eq!(server.join().unwrap(), b"LHLO mx.test\r\n");
}

#[test]
fn malformed_replies_and_refusals_of_the_session() {
    // A bare LF: temporary, nothing sent after it.
    let (dest, server) = tcp_server(Script {
        greeting: b"220 lmtp.test\n",
        ..Script::default()
    });
    let outcomes = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &recipients(&["alice"], &[""]),
        None,
        &mut &MESSAGE[..],
    )
    .unwrap();
    assert_eq!(
        outcomes,
        [Outcome::Temporary(
            "session: malformed reply: bare LF in reply".into()
        )]
    );
    assert_eq!(server.join().unwrap(), b"");

    // A 5xx greeting: permanent for every recipient.
    let (dest, server) = tcp_server(Script {
        greeting: b"554 5.3.2 not accepting mail\r\n",
        ..Script::default()
    });
    let outcomes = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &recipients(&["alice", "bob"], &["", ""]),
        None,
        &mut &MESSAGE[..],
    )
    .unwrap();
    for o in &outcomes {
        assert_eq!(
            o,
            &Outcome::Permanent("session: greeting refused: 554 5.3.2 not accepting mail".into())
        );
    }
    assert_eq!(server.join().unwrap(), b"");
}

#[test]
fn message_over_the_advertised_size_is_refused_before_mail() {
    let (dest, server) = tcp_server(Script::default());
    let outcomes = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &recipients(&["alice"], &[""]),
        Some(100_001),
        &mut &MESSAGE[..],
    )
    .unwrap();
    assert!(matches!(&outcomes[0], Outcome::Permanent(t) if t.starts_with("5.3.4 ")));
    assert_eq!(server.join().unwrap(), b"LHLO mx.test\r\nQUIT\r\n");
}

#[test]
fn errors_before_the_session() {
    // Nobody listens on a port we just had and closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = Destination::parse(&format!("127.0.0.1:{port}")).unwrap();
    let err = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &recipients(&["alice"], &[""]),
        None,
        &mut &MESSAGE[..],
    )
    .unwrap_err();
    assert!(matches!(err, LmtpError::Connect { .. }), "{err}");
    assert_eq!(err.class(), Class::Temporary);

    let dir = temp_dir("lmtp-nosock");
    let dest = Destination::Unix(dir.join("absent.sock"));
    let err = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &recipients(&["alice"], &[""]),
        None,
        &mut &MESSAGE[..],
    )
    .unwrap_err();
    assert_eq!(err.class(), Class::Temporary);
    let _ = std::fs::remove_dir_all(&dir);

    let err = deliver(
        &lmtp(&dest, false),
        "bad sender@x",
        &recipients(&["alice"], &[""]),
        None,
        &mut &MESSAGE[..],
    )
    .unwrap_err();
    assert!(matches!(err, LmtpError::BadSender(_)));
    assert_eq!((err.class(), err.status()), (Class::Permanent, "5.1.7"));
    let err = deliver(
        &lmtp(&dest, false),
        "s@x.test",
        &[],
        None,
        &mut &MESSAGE[..],
    )
    .unwrap_err();
    assert!(matches!(err, LmtpError::NoRecipients));
}

#[test]
fn destinations() {
    assert_eq!(
        Destination::parse("localhost:24").unwrap(),
        Destination::Inet {
            host: "localhost".into(),
            port: 24
        }
    );
    assert_eq!(
        Destination::parse("[::1]:2424").unwrap(),
        Destination::Inet {
            host: "::1".into(),
            port: 2424
        }
    );
    assert_eq!(
        Destination::parse("/var/run/dovecot/lmtp").unwrap(),
        Destination::Unix(PathBuf::from("/var/run/dovecot/lmtp"))
    );
    for bad in [
        "localhost",
        "localhost:",
        ":24",
        "host:0",
        "host:99999",
        "a b:24",
        "lmtp",
    ] {
        assert!(
            matches!(Destination::parse(bad), Err(LmtpError::BadDestination(_))),
            "{bad}"
        );
    }
    assert_eq!(
        Destination::parse("[::1]:24").unwrap().to_string(),
        "[::1]:24"
    );
}

/// Dovecot in the foreground on a temporary config; stopped on drop.
struct Dovecot {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its own children; SIGKILL if it
        // does not go within 5 s.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dovecot(dir: &Path, user: &nix::unistd::User) -> Option<Dovecot> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let home = dir.join("home");
    std::fs::create_dir_all(&home).ok()?;
    std::os::unix::fs::chown(&home, Some(user.uid.as_raw()), Some(user.gid.as_raw())).ok()?;
    let d = dir.display();
    std::fs::write(
        dir.join("passwd"),
        format!(
            "tuser:{{PLAIN}}unused:{}:{}::{}::\n",
            user.uid,
            user.gid,
            home.display()
        ),
    )
    .ok()?;
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {d}/run\n\
state_dir = {d}/state\n\
log_path = {d}/dovecot.log\n\
protocols = lmtp\n\
listen = 127.0.0.1\n\
ssl = no\n\
first_valid_uid = 1\n\
first_valid_gid = 1\n\
mail_location = maildir:~/Maildir\n\
passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
userdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
service lmtp {{\n  unix_listener lmtp {{\n    mode = 0666\n  }}\n}}\n"
        ),
    )
    .ok()?;
    let child = std::process::Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).ok()?)
        .spawn()
        .ok()?;
    let mut dovecot = Dovecot {
        child,
        dir: dir.to_path_buf(),
    };
    let socket = dir.join("run/lmtp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if socket.exists() {
            return Some(dovecot);
        }
        if let Ok(Some(_)) = dovecot.child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "dovecot did not start: {}",
        std::fs::read_to_string(dovecot.dir.join("stderr")).unwrap_or_default()
    );
    None
}

#[test]
fn delivers_through_dovecot_lmtp() {
    let Ok(Some(user)) = nix::unistd::User::from_name("rsmtpdtest1") else {
        println!("skipped: no dovecot (user rsmtpdtest1 missing)");
        return;
    };
    let dir = temp_dir("lmtp-dovecot");
    // Dovecot's processes run as other users: they must reach the files.
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let Some(dovecot) = start_dovecot(&dir, &user) else {
        println!("skipped: no dovecot");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let dest = Destination::Unix(dir.join("run/lmtp"));
    let message: &[u8] =
        b"From: s@example.org\r\nTo: tuser@x.test\r\nSubject: via rsmtpd\r\n\r\n.dot line\r\nhello dovecot\r\n";
    let outcomes = deliver(
        &lmtp(&dest, false),
        "s@example.org",
        &recipients(
            &["tuser", "nosuchuser"],
            &["tuser@x.test", "nosuchuser@x.test"],
        ),
        Some(message.len() as u64),
        &mut &message[..],
    )
    .unwrap();
    let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
    assert_eq!(outcomes[0], Outcome::Delivered, "dovecot log:\n{log}");
    assert!(
        matches!(&outcomes[1], Outcome::Permanent(t) if t.starts_with("550 5.1.1 ")),
        "{outcomes:?}"
    );
    let new = dir.join("home/Maildir/new");
    let files: Vec<PathBuf> = std::fs::read_dir(&new)
        .unwrap_or_else(|e| panic!("{}: {e}\n{log}", new.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = std::fs::read_to_string(&files[0]).unwrap();
    // Dovecot adds Return-Path and Delivered-To; we added neither.
    assert!(
        stored.starts_with("Return-Path: <s@example.org>\n"),
        "{stored}"
    );
    assert_eq!(stored.matches("Delivered-To:").count(), 1, "{stored}");
    assert!(stored.contains("Delivered-To: tuser"), "{stored}");
    assert!(
        stored.ends_with("Subject: via rsmtpd\n\n.dot line\nhello dovecot\n"),
        "{stored}"
    );
    drop(dovecot);
    let _ = std::fs::remove_dir_all(&dir);
}
