//! Local delivery methods end to end, as root: the file written as the
//! recipient user, with the method's format.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use rsmtpd_test_support::daemon::{Client, Daemon, Setup};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

fn root() -> bool {
    if nix::unistd::getuid().is_root() {
        return true;
    }
    eprintln!("skipped (needs root; CI runs as root)");
    false
}

fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

fn send(d: &Daemon, to: &str, body: &str) {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("{body}\r\n."));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");
}

#[test]
fn mbox_is_written_as_the_user_with_from_lines_and_quoting() {
    if !root() {
        return;
    }
    let spool = rsmtpd_test_support::temp_dir("mbox-spool");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool_s = spool.display().to_string();
    let body = "queue path \"{spool}\"\nlisten on 127.0.0.1 port {port}\n\
                action \"mbox\" mbox\nmatch from any for domain \"example.org\" action \"mbox\"\n";
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "mbox",
            body,
            args: &[],
            env: &[("RSMTPD_MAIL_SPOOL", &spool_s)],
        },
    );
    send(
        &d,
        "rsmtpdtest1@example.org",
        "Subject: one\r\n\r\nFrom here on\r\n>From there",
    );
    send(&d, "rsmtpdtest1@example.org", "Subject: two\r\n\r\nsecond");
    d.wait_for_log("method=mbox", Duration::from_secs(10));
    let mbox = spool.join("rsmtpdtest1");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = std::fs::read_to_string(&mbox).unwrap_or_default();
        if text.matches("\nFrom alice@example.org ").count()
            + usize::from(text.starts_with("From "))
            >= 2
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        text.starts_with("From alice@example.org "),
        "{text}\nlog:\n{}",
        d.log()
    );
    assert!(
        text.contains("Subject: one\n\n>From here on\n>>From there\n\n"),
        "{text}"
    );
    assert!(text.contains("Subject: two\n\nsecond\n\n"), "{text}");
    assert!(
        text.contains("Delivered-To: rsmtpdtest1@example.org\n"),
        "{text}"
    );
    let meta = std::fs::metadata(&mbox).unwrap();
    assert_eq!(meta.uid(), uid_of("rsmtpdtest1"));
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn a_symlinked_mailbox_is_refused_and_its_target_untouched() {
    if !root() {
        return;
    }
    let spool = rsmtpd_test_support::temp_dir("mbox-symlink");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = spool.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, spool.join("rsmtpdtest2")).unwrap();
    let spool_s = spool.display().to_string();
    let body = "queue path \"{spool}\"\nlisten on 127.0.0.1 port {port}\n\
                action \"mbox\" mbox\nmatch from any for domain \"example.org\" action \"mbox\"\n";
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "mbox-symlink",
            body,
            args: &[],
            env: &[("RSMTPD_MAIL_SPOOL", &spool_s)],
        },
    );
    send(&d, "rsmtpdtest2@example.org", "Subject: x\r\n\r\nx");
    d.wait_for_log("delivery: TempFail", Duration::from_secs(10));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn mda_runs_as_the_user_with_the_message_on_stdin() {
    if !root() {
        return;
    }
    let out = rsmtpd_test_support::temp_dir("mda-out");
    nix::unistd::chown(
        &out,
        Some(nix::unistd::Uid::from_raw(uid_of("rsmtpdtest1"))),
        None,
    )
    .unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = out.display().to_string();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"mda\" mda \"cat > {o}/%{{user.username}}.msg; id -u > {o}/%{{user.username}}.uid; printf '%s' \\\"$RECIPIENT\\\" > {o}/rcpt\"\n\
         match from any for domain \"example.org\" action \"mda\"\n"
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "mda",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    send(
        &d,
        "rsmtpdtest1@example.org",
        "Subject: piped\r\n\r\nthrough a pipe",
    );
    d.wait_for_log("method=mda", Duration::from_secs(10));
    d.wait_for_log("stat=Delivered", Duration::from_secs(10));
    let msg = std::fs::read_to_string(out.join("rsmtpdtest1.msg")).unwrap();
    assert!(
        msg.starts_with(
            "Return-Path: <alice@example.org>\nDelivered-To: rsmtpdtest1@example.org\n"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("Subject: piped\n\nthrough a pipe\n"), "{msg}");
    let uid = std::fs::read_to_string(out.join("rsmtpdtest1.uid")).unwrap();
    assert_eq!(uid.trim(), uid_of("rsmtpdtest1").to_string());
    assert_eq!(
        std::fs::read_to_string(out.join("rcpt")).unwrap(),
        "rsmtpdtest1@example.org"
    );
}

/// Deliveries to one account, one after the other, are made by one
/// delivery child that waits between them; another account gets its own;
/// an idle child goes once its keepalive is over.
#[test]
fn one_delivery_child_serves_an_account_and_goes_when_idle() {
    if !root() {
        return;
    }
    let out = rsmtpd_test_support::temp_dir("mda-children");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = out.display().to_string();
    // The shell's parent is the delivery child.
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"mda\" mda \"echo $PPID >> {o}/%{{user.username}}.pids\"\n\
         match from any for domain \"example.org\" action \"mda\"\n"
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "mda-children",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    let delivered = || d.log().matches("stat=Delivered").count();
    for (n, to) in [
        "rsmtpdtest1@example.org",
        "rsmtpdtest1@example.org",
        "rsmtpdtest2@example.org",
        "rsmtpdtest1@example.org",
    ]
    .into_iter()
    .enumerate()
    {
        send(&d, to, "Subject: again\r\n\r\nand again");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while delivered() <= n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(delivered(), n + 1, "log:\n{}", d.log());
    }
    let pids = |user: &str| -> Vec<u32> {
        std::fs::read_to_string(out.join(format!("{user}.pids")))
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let one = pids("rsmtpdtest1");
    let two = pids("rsmtpdtest2");
    assert_eq!(one.len(), 3);
    assert!(one.iter().all(|p| *p == one[0]), "{one:?}");
    assert_eq!(two.len(), 1);
    assert_ne!(one[0], two[0]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", one[0])).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1).unwrap(),
        uid_of("rsmtpdtest1").to_string()
    );
    // Idle for the keepalive (5 s), then closed and reaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while (Path::new(&format!("/proc/{}", one[0])).exists()
        || Path::new(&format!("/proc/{}", two[0])).exists())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!Path::new(&format!("/proc/{}", one[0])).exists());
    assert!(!Path::new(&format!("/proc/{}", two[0])).exists());
}

#[test]
fn root_is_never_delivered_to_through_an_mda() {
    if !root() {
        return;
    }
    let out = rsmtpd_test_support::temp_dir("mda-root");
    let o = out.display().to_string();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"mda\" mda \"touch {o}/ran\"\n\
         match from any for domain \"example.org\" action \"mda\"\n"
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "mda-root",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    send(&d, "root@example.org", "Subject: x\r\n\r\nx");
    d.wait_for_log("delivery: PermFail", Duration::from_secs(10));
    assert!(!out.join("ran").exists());
}

/// A one-connection LMTP server on loopback: returns the port and a handle
/// giving every line it received. Every recipient is delivered.
fn lmtp_server() -> (u16, std::thread::JoinHandle<Vec<String>>) {
    lmtp_server_answering(&[])
}

/// As [`lmtp_server`], answering after the final dot, for each recipient
/// in RCPT order, the reply `answers` gives for its address (`250` for
/// those it does not name), as LMTP does (RFC 2033 4.2).
fn lmtp_server_answering(answers: &[(&str, &str)]) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let answers: Vec<(String, String)> = answers
        .iter()
        .map(|(a, r)| ((*a).to_string(), (*r).to_string()))
        .collect();
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stream);
        out.write_all(b"220 lmtp.test LMTP\r\n").unwrap();
        let mut in_data = false;
        let mut rcpts: Vec<String> = Vec::new();
        for _ in 0..1000 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            lines.push(line.clone());
            let reply: String = if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    rcpts
                        .drain(..)
                        .map(|rcpt| {
                            let answer = answers.iter().find(|(a, _)| *a == rcpt);
                            let answer = answer.map_or("250 2.0.0 delivered", |(_, r)| r);
                            format!("{answer}\r\n")
                        })
                        .collect()
                } else {
                    continue;
                }
            } else if line.starts_with("LHLO") {
                "250-lmtp.test\r\n250 PIPELINING\r\n".into()
            } else if line.starts_with("DATA") {
                in_data = true;
                "354 go\r\n".into()
            } else if line.starts_with("QUIT") {
                out.write_all(b"221 bye\r\n").unwrap();
                break;
            } else {
                if let Some(rest) = line.strip_prefix("RCPT TO:<") {
                    rcpts.push(rest.split('>').next().unwrap_or_default().to_string());
                }
                "250 2.1.0 ok\r\n".into()
            };
            out.write_all(reply.as_bytes()).unwrap();
        }
        lines
    });
    (port, handle)
}

#[test]
fn lmtp_hands_the_message_to_the_server_with_the_user_as_recipient() {
    if !root() {
        return;
    }
    let (lmtp_port, server) = lmtp_server();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"lmtp\" lmtp \"127.0.0.1:{lmtp_port}\"\n\
         match from any for domain \"example.org\" action \"lmtp\"\n"
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "lmtp",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    // The raw client does not dot-stuff: "..x" on the wire is ".x" stored.
    send(
        &d,
        "rsmtpdtest1@example.org",
        "Subject: over lmtp\r\n\r\n..leading dot",
    );
    let lines = server.join().unwrap();
    d.wait_for_log("method=lmtp", Duration::from_secs(10));
    d.wait_for_log("stat=Delivered", Duration::from_secs(10));
    assert!(
        lines
            .iter()
            .any(|l| l == "MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"
                || l == "MAIL FROM:<alice@example.org>\r\n"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"RCPT TO:<rsmtpdtest1>\r\n".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"Subject: over lmtp\r\n".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"..leading dot\r\n".to_string()),
        "{lines:?}"
    );
}

#[test]
fn lmtp_delivers_several_recipients_in_one_transaction_with_replies_each() {
    if !root() {
        return;
    }
    let one = "rsmtpdtest1@example.org";
    let two = "rsmtpdtest2@example.org";
    let three = "rsmtpdtest1+three@example.org";
    let (lmtp_port, server) = lmtp_server_answering(&[
        (one, "250 2.1.5 ok"),
        (two, "452 4.2.2 mailbox full"),
        (three, "550 5.1.1 no such mailbox"),
    ]);
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"lmtp\" lmtp \"127.0.0.1:{lmtp_port}\" rcpt-to\n\
         match from any for domain \"example.org\" action \"lmtp\"\n"
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "lmtp-group",
            body: &body,
            args: &[],
            // A quick retry, to see the temporary failure tried again.
            env: &[("RSMTPD_RETRY_BASE_LOCAL", "1")],
        },
    );
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    for to in [one, two, three] {
        let r = c.cmd(&format!("RCPT TO:<{to}>"));
        assert!(r.starts_with("250"), "{r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd("Subject: three at once\r\n\r\nhello\r\n.");
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");

    // The server takes one connection: one transaction had to carry all.
    let lines = server.join().unwrap();
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("MAIL FROM:"), 1, "{lines:?}");
    assert_eq!(count("RCPT TO:"), 3, "{lines:?}");
    assert_eq!(count("DATA"), 1, "{lines:?}");
    for to in [one, two, three] {
        assert!(lines.contains(&format!("RCPT TO:<{to}>\r\n")), "{lines:?}");
    }

    let timeout = Duration::from_secs(15);
    d.wait_for_log(&format!("to=<{three}>"), timeout);
    let line_for = |to: &str| {
        d.log()
            .lines()
            .find(|l| l.contains("delivery: ") && l.contains(&format!("to=<{to}>")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let first = line_for(one);
    assert!(first.contains("delivery: Ok"), "{first}");
    assert!(first.contains("method=lmtp"), "{first}");
    let second = line_for(two);
    assert!(second.contains("delivery: TempFail"), "{second}");
    assert!(second.contains("452 4.2.2 mailbox full"), "{second}");
    let third = line_for(three);
    assert!(third.contains("delivery: PermFail"), "{third}");
    assert!(third.contains("550 5.1.1 no such mailbox"), "{third}");
    // The permanent failure is bounced to the sender (who has no mailbox
    // here, so the bounce itself cannot be routed: either way it is tried).
    d.wait_for_log("bounce: ", timeout);
    // The temporary failure is tried again (the server is gone by then);
    // the delivered recipient is not.
    let deadline = std::time::Instant::now() + timeout;
    let attempts = |to: &str, result: &str| {
        d.log()
            .lines()
            .filter(|l| {
                l.contains(&format!("delivery: {result}")) && l.contains(&format!("to=<{to}>"))
            })
            .count()
    };
    while attempts(two, "TempFail") < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(attempts(two, "TempFail") >= 2, "log:\n{}", d.log());
    assert_eq!(attempts(one, "Ok"), 1, "log:\n{}", d.log());
    assert_eq!(attempts(three, "PermFail"), 1, "log:\n{}", d.log());
}

/// The pid of a running `smtpd --deliver` child of the daemon `parent`
/// (other tests' daemons have theirs), if any.
fn delivery_child(parent: u32) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.split(|b| *b == 0).any(|a| a == b"--deliver") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_delivery_killed_while_writing_an_mbox_leaves_no_partial_entry() {
    if !root() {
        return;
    }
    let spool = rsmtpd_test_support::temp_dir("mbox-kill");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool_s = spool.display().to_string();
    let body = "queue path \"{spool}\"\nlisten on 127.0.0.1 port {port}\n\
                smtp max-message-size 64M\n\
                action \"mbox\" mbox\nmatch from any for domain \"example.org\" action \"mbox\"\n";
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "mbox-kill",
            body,
            args: &[],
            env: &[
                ("RSMTPD_MAIL_SPOOL", &spool_s),
                ("RSMTPD_RETRY_BASE_LOCAL", "1"),
            ],
        },
    );
    let mbox = spool.join("rsmtpdtest1");
    // Kill the delivery child once it has started writing.
    let parent = d.pid().unwrap();
    let watcher = {
        let mbox = mbox.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                let size = std::fs::metadata(&mbox).map(|m| m.len()).unwrap_or(0);
                if size > 0
                    && let Some(pid) = delivery_child(parent)
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return true;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            false
        })
    };
    let line = "x".repeat(98);
    let mut text = String::from("Subject: big\r\n\r\n");
    for _ in 0..300_000 {
        text.push_str(&line);
        text.push_str("\r\n");
    }
    text.push_str("THE END");
    send(&d, "rsmtpdtest1@example.org", &text);
    let killed = watcher.join().unwrap();
    d.wait_for_log("stat=Delivered", Duration::from_secs(60));
    let content = std::fs::read(&mbox).unwrap();
    let entries = content
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"From alice@example.org "))
        .count();
    assert_eq!(entries, 1, "killed={killed}");
    assert!(content.ends_with(b"THE END\n\n"), "killed={killed}");
    if killed && d.log().contains("cut back to") {
        eprintln!("the kill landed mid-write and the partial entry was cut");
    } else {
        eprintln!("the kill landed outside the write (killed={killed})");
    }
}
