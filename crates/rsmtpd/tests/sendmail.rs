//! `sendmail` as programs run it (a link named sendmail to the binary,
//! the daemon's config named by RSMTPD_CONFIG): through the running
//! daemon's control socket, and into the offline folder while it is down.
//! Assertions are on the delivered files, the exit codes and stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use rsmtpd_test_support::daemon::{Daemon, Setup, command_as, current_user, default_body};

const WAIT: Duration = Duration::from_secs(20);

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

fn start(name: &str, body: &str) -> Daemon {
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body,
            args: &[],
            env: &[],
        },
    )
}

/// A `sendmail` link beside the daemon's files.
fn sendmail_link(d: &Daemon) -> PathBuf {
    let link = d.dir.join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(smtpd(), &link).unwrap();
    }
    link
}

/// Runs sendmail with `args`, `input` on stdin, optionally as `user` (root
/// only, through setpriv).
fn sendmail(d: &Daemon, args: &[&str], input: &[u8], user: Option<&str>) -> Output {
    let link = sendmail_link(d);
    let mut cmd = command_as(&link, user);
    let mut child = cmd
        .args(args)
        .env("RSMTPD_CONFIG", &d.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A sendmail that refuses its arguments exits without reading: the
    // pipe may close under us, and its exit code is what is checked.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn text(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

/// The header block of a delivered message.
fn headers(message: &str) -> &str {
    message.split("\n\n").next().unwrap_or("")
}

#[test]
fn a_script_with_bare_lf_and_minus_t_is_delivered_normalised() {
    let d = start("sendmail-t", &default_body());
    let input = b"To: Bob <bob@example.org>, carol@example.org\n\
Bcc: secret@example.org\n\
Subject: from cron\n\
\n\
line one\n\
.\n\
after the dot\n";
    // Without -i the lone dot ends the message, as sendmail's does.
    let out = sendmail(&d, &["-t", "-F", "Cron Daemon"], input, None);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let got = d.wait_for_delivered(3, WAIT);
    assert_eq!(got.len(), 3, "{}", d.log());
    let msg = text(&got[0]);
    let head = headers(&msg);
    // Maildir files keep the CRLF the message was stored with... or LF:
    // compare on lines either way.
    let lines: Vec<&str> = msg.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines.contains(&"line one"), "{msg}");
    assert!(!lines.contains(&"after the dot"), "{msg}");
    assert!(!msg.contains("Bcc:"), "{msg}");
    assert!(head.contains("Subject: from cron"), "{msg}");
    let user = current_user();
    assert!(
        msg.contains(&format!("From: \"Cron Daemon\" <{user}@")),
        "{msg}"
    );
    assert!(msg.contains("\nDate: "), "{msg}");
    assert!(msg.contains("\nMessage-ID: <"), "{msg}");
    // Who submitted it, as the kernel said.
    let uid = nix::unistd::getuid().as_raw();
    assert!(
        msg.replace("\r\n\t", " ")
            .replace("\n\t", " ")
            .contains(&format!("(user={user} uid={uid})")),
        "{msg}"
    );
    let rcpts: Vec<String> = got
        .iter()
        .map(|p| {
            text(p)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Delivered-To: ")
                        .map(|s| s.trim().to_owned())
                })
                .unwrap()
        })
        .collect();
    for want in ["bob@example.org", "carol@example.org", "secret@example.org"] {
        assert!(rcpts.iter().any(|r| r == want), "{rcpts:?}");
    }
    d.wait_for_log("connected address=local", WAIT);
}

#[test]
fn refusals_have_sysexits_codes() {
    let user = current_user();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n\
         match from any for domain \"example.org\" action \"local\"\n"
    );
    let d = start("sendmail-codes", &body);
    // A recipient the rules refuse: EX_NOUSER, the reason on stderr.
    let out = sendmail(&d, &["nobody@elsewhere.test"], b"Subject: x\n\nx\n", None);
    assert_eq!(out.status.code(), Some(67), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody@elsewhere.test: 550"), "{err}");
    // A NUL in the message: EX_DATAERR, nothing queued.
    let out = sendmail(&d, &["bob@example.org"], b"Subject: x\n\na\0b\n", None);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NUL"));
    // No recipient at all; an unknown option: EX_USAGE / EX_DATAERR.
    let out = sendmail(&d, &["-Z", "bob@example.org"], b"x\n", None);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = sendmail(&d, &[], b"Subject: x\n\nx\n", None);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.delivered().is_empty());
}

#[test]
fn submitted_while_down_is_delivered_at_the_next_start() {
    let mut d = start("sendmail-offline", &default_body());
    d.stop();
    let out = sendmail(
        &d,
        &["-v", "bob@example.org"],
        b"Subject: offline\n\nwritten while the daemon was down\n",
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queued for when it starts"),
        "{out:?}"
    );
    let offline = d.spool().join("offline");
    assert_eq!(std::fs::read_dir(&offline).unwrap().count(), 1);
    d.spawn(&[]);
    let got = d.wait_for_delivered(1, WAIT);
    assert_eq!(got.len(), 1, "{}", d.log());
    assert!(text(&got[0]).contains("written while the daemon was down"));
    d.wait_for_log("offline: ", WAIT);
    assert_eq!(
        std::fs::read_dir(&offline).unwrap().count(),
        0,
        "{}",
        d.log()
    );
}

/// As root: another user submits; the identity recorded is theirs, even
/// when they claim another sender with -f; offline files wait as theirs.
#[test]
fn another_user_submits_as_themselves() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped (needs root; CI runs as root)");
        return;
    }
    let mut d = start("sendmail-user", &default_body());
    let out = sendmail(
        &d,
        &["-f", "ceo@example.org", "bob@example.org"],
        b"Subject: claimed\n\nhi\n",
        Some("rsmtpdtest1"),
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let got = d.wait_for_delivered(1, WAIT);
    let msg = text(&got[0]);
    assert!(msg.starts_with("Return-Path: <ceo@example.org>"), "{msg}");
    let uid = nix::unistd::User::from_name("rsmtpdtest1")
        .unwrap()
        .unwrap()
        .uid;
    assert!(
        msg.replace("\n\t", " ")
            .contains(&format!("(user=rsmtpdtest1 uid={uid})")),
        "{msg}"
    );
    // Offline, then picked up as that user.
    d.stop();
    let out = sendmail(
        &d,
        &["bob@example.org"],
        b"Subject: later\n\nqueued offline\n",
        Some("rsmtpdtest1"),
    );
    assert!(out.status.success(), "{out:?}");
    d.spawn(&[]);
    let got = d.wait_for_delivered(2, WAIT);
    assert_eq!(got.len(), 2, "{}", d.log());
    let later = got
        .iter()
        .map(|p| text(p))
        .find(|m| m.contains("queued offline"))
        .unwrap();
    assert!(
        later
            .replace("\n\t", " ")
            .contains(&format!("(user=rsmtpdtest1 uid={uid})")),
        "{later}"
    );
}
