//! `smtpctl` as an admin runs it (a link named smtpctl to the binary):
//! `encrypt`, whose hashes glibc's crypt(3) (through Python) must accept,
//! and the commands that act on a running daemon's queue, checked by what
//! the queue shows, what gets delivered, and who may ask.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use rsmtpd_test_support::daemon::{Daemon, Setup, default_body};
use rsmtpd_test_support::temp_dir;

fn smtpctl(dir: &Path) -> PathBuf {
    let link = dir.join("smtpctl");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smtpd"), &link).unwrap();
    }
    link
}

/// glibc's crypt(3) verdict, through Python's crypt module.
fn libc_accepts(password: &str, hash: &str) -> bool {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])",
            password,
            hash,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

#[test]
fn encrypt_argument_is_a_sha512_crypt_hash_libc_accepts() {
    let dir = temp_dir("smtpctl-encrypt");
    let out = Command::new(smtpctl(&dir))
        .args(["encrypt", "correct horse"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim_end_matches('\n');
    assert!(hash.starts_with("$6$"), "{hash}");
    assert_eq!(hash.lines().count(), 1);
    assert!(libc_accepts("correct horse", hash));
    assert!(!libc_accepts("correct horsE", hash));
    // A prefix works as the command name, as smtpctl allows.
    let out = Command::new(smtpctl(&dir))
        .args(["enc", "x"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn encrypt_reads_one_password_per_line_from_stdin() {
    let dir = temp_dir("smtpctl-stdin");
    let mut child = Command::new(smtpctl(&dir))
        .arg("encrypt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first\nsecond\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hashes: Vec<&str> = text.lines().collect();
    assert_eq!(hashes.len(), 2, "{text}");
    assert!(libc_accepts("first", hashes[0]));
    assert!(libc_accepts("second", hashes[1]));
    // A fresh salt each time.
    assert_ne!(hashes[0].get(..19), hashes[1].get(..19));
}

#[test]
fn unknown_ambiguous_and_unimplemented_commands_say_so() {
    let dir = temp_dir("smtpctl-other");
    for (args, want) in [
        (&["frobnicate"][..], "unknown command: frobnicate"),
        (
            &["sh", "stat"],
            "ambiguous command, could be: show stats, show status",
        ),
        (&["show", "envelope", "xyz"], "invalid envelope id: xyz"),
    ] {
        let out = Command::new(smtpctl(&dir)).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn daemon(name: &str, args: &[&str]) -> Daemon {
    Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_smtpd")),
        &Setup {
            name,
            body: &default_body(),
            args,
            env: &[],
        },
    )
}

fn submit(d: &Daemon, rcpts: &[&str], body: &str) {
    let link = d.dir.join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smtpd"), &link).unwrap();
    }
    let mut child = Command::new(&link)
        .args(rcpts)
        .env("RSMTPD_CONFIG", &d.config)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Waits until `show queue` has `n` lines; returns them.
fn queue_lines(d: &Daemon, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out, err) = d.smtpctl(&["show", "queue"], None);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        if lines.len() == n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "{out}\n{}", d.log());
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn queue_commands_on_a_running_daemon() {
    // Local deliveries paused from the start: mail waits in the queue.
    let mut d = daemon("smtpctl-queue", &["-P", "mda"]);
    let (_, status, _) = d.smtpctl(&["show", "status"], None);
    assert_eq!(status, "MDA paused\nMTA running\nSMTP running\n");
    let (_, json, _) = d.smtpctl(&["--json", "show", "status"], None);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["mda"], "paused");
    assert_eq!(json["smtp"], "running");
    submit(
        &d,
        &["a@example.org", "b@example.org"],
        "Subject: one\n\nfirst\n",
    );
    let lines = queue_lines(&d, 2);
    // Envelope ids are random: find each recipient's line.
    let line_of = |rcpt: &str| {
        lines
            .iter()
            .find(|l| l.split('|').nth(5) == Some(rcpt))
            .unwrap_or_else(|| panic!("no line for {rcpt}: {lines:?}"))
            .clone()
    };
    let (line_a, line_b) = (line_of("a@example.org"), line_of("b@example.org"));
    let fields: Vec<&str> = line_a.split('|').collect();
    assert_eq!(fields.len(), 14, "{line_a}");
    assert_eq!(&fields[1..4], ["local", "mda", ""], "{line_a}");
    assert_eq!(fields[11], "pending");
    let (a, b) = (
        fields[0].to_owned(),
        line_b.split('|').next().unwrap().to_owned(),
    );
    // The same in JSON.
    let (_, json, _) = d.smtpctl(&["--json", "show", "queue"], None);
    assert!(json.contains(&format!("\"evpid\": \"{a}\"")), "{json}");
    // show envelope / show message.
    let (code, env, _) = d.smtpctl(&["show", "envelope", &a], None);
    assert_eq!(code, 0);
    assert!(env.contains(&format!("id: {a}")), "{env}");
    let (_, json, _) = d.smtpctl(&["--json", "show", "envelope", &a], None);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["id"], a.as_str());
    assert_eq!(json["rcpt"], "a@example.org");
    let (_, json, _) = d.smtpctl(&["--json", "show", "stats"], None);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["queue.envelope"], 2, "{json}");
    let (_, msg, _) = d.smtpctl(&["sh", "mess", &a], None);
    assert!(
        msg.contains("Subject: one") && msg.contains("first"),
        "{msg}"
    );
    // Hold a, let the rest go: only b is delivered.
    let (code, out, _) = d.smtpctl(&["pause", "envelope", &a], None);
    assert_eq!((code, out.as_str()), (0, "1 envelope(s) paused\n"));
    assert!(d.smtpctl(&["show", "queue"], None).1.contains("|hold|"));
    assert_eq!(d.smtpctl(&["resume", "mda"], None).1, "resumed\n");
    let got = d.wait_for_delivered(1, WAIT);
    assert_eq!(got.len(), 1);
    let lines = queue_lines(&d, 1);
    assert!(lines[0].starts_with(&a), "{lines:?} (b = {b})");
    // Held through a restart too; resume envelope and schedule deliver it.
    d.stop();
    // The daemon is down: show queue reads the spool.
    let (code, out, err) = d.smtpctl(&["show", "queue"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("|hold|") && out.contains("|offline|"), "{out}");
    d.spawn(&[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.delivered().len(), 1, "a held envelope was delivered");
    // Released, it is due at once.
    d.smtpctl(&["resume", "envelope", &a], None);
    assert_eq!(d.wait_for_delivered(2, WAIT).len(), 2);
    queue_lines(&d, 0);
    // remove: by message id, while deliveries are paused.
    d.smtpctl(&["pause", "mda"], None);
    submit(
        &d,
        &["c@example.org", "d@example.org"],
        "Subject: two\n\nsecond\n",
    );
    let lines = queue_lines(&d, 2);
    let msgid = &lines[0][..8];
    let (code, out, _) = d.smtpctl(&["remove", msgid], None);
    assert_eq!((code, out.as_str()), (0, "2 envelope(s) removed\n"));
    queue_lines(&d, 0);
    d.smtpctl(&["resume", "mda"], None);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.delivered().len(), 2);
    d.wait_for_log("removed by the administrator", WAIT);
}

#[test]
fn pause_smtp_stops_accepting_until_resumed() {
    let d = daemon("smtpctl-smtp", &[]);
    assert_eq!(d.smtpctl(&["pause", "smtp"], None).1, "paused\n");
    assert!(
        d.smtpctl(&["show", "status"], None)
            .1
            .contains("SMTP paused")
    );
    // The connection waits in the backlog: no greeting while paused.
    let mut s = std::net::TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        std::io::Read::read(&mut s, &mut buf).is_err(),
        "greeted while paused"
    );
    assert_eq!(d.smtpctl(&["resume", "smtp"], None).1, "resumed\n");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert!(buf[..n].starts_with(b"220 "), "{:?}", &buf[..n]);
}

/// The control socket is open to every local user: stats and status are
/// theirs to read; the queue and every change are not.
#[test]
fn only_the_admin_changes_things() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped (needs root; CI runs as root)");
        return;
    }
    let d = daemon("smtpctl-perm", &["-P", "mda"]);
    submit(&d, &["a@example.org"], "Subject: x\n\nx\n");
    queue_lines(&d, 1);
    let user = Some("rsmtpdtest1");
    let (code, out, _) = d.smtpctl(&["show", "stats"], user);
    assert_eq!(code, 0);
    assert!(out.contains("queue.envelope=1"), "{out}");
    assert_eq!(d.smtpctl(&["show", "status"], user).0, 0);
    for args in [
        &["show", "queue"][..],
        &["remove", "all"],
        &["schedule", "all"],
        &["pause", "smtp"],
        &["resume", "mda"],
        &["show", "message", "0000000000000001"],
    ] {
        let (code, _, err) = d.smtpctl(args, user);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    queue_lines(&d, 1);
    assert!(
        d.smtpctl(&["show", "status"], None)
            .1
            .contains("MDA paused")
    );
}

/// Garbage on the control socket (any local user can send it) never
/// stops the daemon or another user's command.
#[test]
fn control_socket_abuse() {
    use std::os::unix::net::UnixStream;
    let d = daemon("smtpctl-abuse", &[]);
    let socket = d.spool().join("smtpd.sock");
    let send = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&socket).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    };
    // Garbage, a bad magic, a huge declared length, descriptors declared,
    // a truncated frame, a valid header with a payload that is no request.
    send(b"GET / HTTP/1.0\r\n\r\n");
    send(&[0u8; 8]);
    let mut huge = rsmtpd_ipc::encode_message(&0u8, 0).unwrap();
    huge[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
    send(&huge);
    let mut fds = rsmtpd_ipc::encode_message(&0u8, 0).unwrap();
    fds[6] = 3;
    send(&fds);
    send(&rsmtpd_ipc::encode_message(&0u8, 0).unwrap()[..5]);
    send(&rsmtpd_ipc::encode_message(&[7u8, 7, 7, 7], 0).unwrap());
    // A flood of connections that say nothing, held open meanwhile.
    let idle: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    // Another user's command still works (it may wait for a slot: idle
    // connections are dropped after the first-frame timeout).
    drop(idle);
    let (code, out, err) = d.smtpctl(&["show", "status"], None);
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert!(out.contains("SMTP running"));
    let log = d.log();
    assert!(log.contains("control: uid"), "{log}");
    assert!(!log.contains("fatal"), "{log}");
}

/// RCPT's reply code for `rcpt` (from a fresh session).
fn rcpt_code(d: &Daemon, rcpt: &str) -> String {
    let mut c = rsmtpd_test_support::daemon::Client::connect(d.addr());
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org>");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    c.cmd("QUIT");
    r.get(..3).unwrap_or_default().to_owned()
}

/// `update table` reads a file table again; `newaliases` rebuilds a db
/// table with makemap and has the daemon read it again.
#[test]
fn update_table_and_newaliases() {
    let user = rsmtpd_test_support::daemon::current_user();
    let dir = temp_dir("smtpctl-tables");
    let files = dir.join("tables");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("aliases"), format!("info: {user}\n")).unwrap();
    std::fs::write(files.join("virtual"), format!("old@virt.example {user}\n")).unwrap();
    // The db form of the aliases, built once by makemap.
    let makemap = files.join("makemap");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smtpd"), &makemap).unwrap();
    let built = Command::new(&makemap)
        .args(["-t", "aliases"])
        .arg(files.join("aliases"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    for f in ["aliases", "aliases.db", "virtual"] {
        let p = files.join(f);
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
        std::fs::set_permissions(&p, perm).unwrap();
    }
    let mut perm = std::fs::metadata(&files).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&files, perm).unwrap();
    let f = files.display();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         table aliases db:{f}/aliases.db\ntable virt file:{f}/virtual\n\
         action \"local\" maildir \"{{maildir}}\" alias <aliases>\n\
         action \"virtual\" maildir \"{{maildir}}\" virtual <virt>\n\
         match from any for domain \"virt.example\" action \"virtual\"\n\
         match from any for domain \"example.org\" action \"local\"\n"
    );
    let d = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_smtpd")),
        &Setup {
            name: "smtpctl-tables",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    assert_eq!(rcpt_code(&d, "info@example.org"), "250");
    assert_eq!(rcpt_code(&d, "new@virt.example"), "550");
    // A file table: edited, then update table.
    std::fs::write(files.join("virtual"), format!("new@virt.example {user}\n")).unwrap();
    assert_eq!(
        rcpt_code(&d, "new@virt.example"),
        "550",
        "read again too early"
    );
    let (code, out, err) = d.smtpctl(&["update", "table", "virt"], None);
    assert_eq!((code, out.as_str()), (0, "table updated\n"), "{err}");
    assert_eq!(rcpt_code(&d, "new@virt.example"), "250");
    assert_eq!(rcpt_code(&d, "old@virt.example"), "550");
    let (code, _, err) = d.smtpctl(&["update", "table", "nosuch"], None);
    assert_eq!(code, 1);
    assert!(err.contains("no table named nosuch"), "{err}");
    // The db table: the text edited, then newaliases.
    std::fs::write(files.join("aliases"), format!("sales: {user}\n")).unwrap();
    assert_eq!(rcpt_code(&d, "sales@example.org"), "550");
    let link = d.dir.join("newaliases");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smtpd"), &link).unwrap();
    let out = Command::new(&link)
        .env("RSMTPD_CONFIG", &d.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("aliases.db: 1 entries"), "{said}");
    assert!(
        said.contains("aliases: updated in the running smtpd"),
        "{said}"
    );
    assert_eq!(rcpt_code(&d, "sales@example.org"), "250");
    assert_eq!(rcpt_code(&d, "info@example.org"), "550");
}

/// `schedule` tries a waiting envelope now instead of at its next retry.
#[test]
fn schedule_tries_now() {
    let user = rsmtpd_test_support::daemon::current_user();
    let body = default_body();
    let d = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_smtpd")),
        &Setup {
            name: "smtpctl-schedule",
            body: &body,
            args: &[],
            // The first retry would be an hour away.
            env: &[("RSMTPD_RETRY_BASE_LOCAL", "3600")],
        },
    );
    // The Maildir cannot be made: a file is in its place.
    std::fs::write(d.maildir(), b"in the way").unwrap();
    submit(
        &d,
        &[&format!("{user}@example.org")],
        "Subject: s\n\nlater\n",
    );
    d.wait_for_log("delivery: TempFail", WAIT);
    let lines = queue_lines(&d, 1);
    let fields: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(fields[10], "1", "{}", lines[0]);
    assert!(fields[12].parse::<u64>().unwrap() > 3000, "{}", lines[0]);
    assert!(!fields[13].is_empty(), "{}", lines[0]);
    std::fs::remove_file(d.maildir()).unwrap();
    let (code, out, _) = d.smtpctl(&["schedule", &fields[0][..8]], None);
    assert_eq!((code, out.as_str()), (0, "1 envelope(s) scheduled\n"));
    assert_eq!(d.wait_for_delivered(1, WAIT).len(), 1, "{}", d.log());
    queue_lines(&d, 0);
}

/// `log brief` silences the debug lines of every process, `log verbose`
/// brings them back (the harness starts the daemon with -v).
#[test]
fn log_brief_and_verbose() {
    let d = daemon("smtpctl-log", &[]);
    let user = rsmtpd_test_support::daemon::current_user();
    assert_eq!(rcpt_code(&d, &format!("{user}+one@example.org")), "250");
    d.wait_for_log(&format!("route rcpt={user}+one@example.org"), WAIT);
    assert_eq!(d.smtpctl(&["log", "brief"], None).1, "logging brief\n");
    d.wait_for_log("smtpd: logging brief", WAIT);
    // The lookup process got it too (through the parent, shortly after
    // the answer): its debug line is gone.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rcpt_code(&d, &format!("{user}+two@example.org")), "250");
    assert_eq!(d.smtpctl(&["log", "verbose"], None).1, "logging verbose\n");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rcpt_code(&d, &format!("{user}+three@example.org")), "250");
    d.wait_for_log(&format!("route rcpt={user}+three@example.org"), WAIT);
    assert!(
        !d.log().contains(&format!("route rcpt={user}+two@")),
        "{}",
        d.log()
    );
}

/// `monitor`: a line a second; what happened in between shows up in the
/// increments (bounded: killed after a few lines).
#[test]
fn monitor_counts_what_happens() {
    let d = daemon("smtpctl-monitor", &[]);
    let user = rsmtpd_test_support::daemon::current_user();
    let mut child = Command::new(d.smtpctl_path())
        .arg("monitor")
        .env("RSMTPD_CONFIG", &d.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    submit(
        &d,
        &[
            &format!("{user}@example.org"),
            &format!("{user}+x@example.org"),
        ],
        "Subject: m\n\nmonitored\n",
    );
    d.wait_for_delivered(2, WAIT);
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("--- client ---"),
        "{text}"
    );
    assert!(
        lines.next().unwrap().starts_with("curr conn disc"),
        "{text}"
    );
    let rows: Vec<Vec<u64>> = lines
        .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() >= 3, "{text}");
    assert!(rows.iter().all(|r| r.len() == 13), "{text}");
    // Enqueued and delivered: 2 envelopes, counted once each, after the
    // first line.
    let sum = |col: usize| rows.iter().skip(1).map(|r| r[col]).sum::<u64>();
    assert_eq!(sum(4), 2, "{text}");
    assert_eq!(sum(6), 2, "{text}");
}

/// `discover`: a message put back into the spool by hand is taken in.
#[test]
fn discover_takes_in_what_was_moved_in() {
    let mut d = daemon("smtpctl-discover", &["-P", "mda"]);
    submit(
        &d,
        &["a@example.org", "b@example.org"],
        "Subject: d\n\nmoved\n",
    );
    let lines = queue_lines(&d, 2);
    let msgid = lines[0][..8].to_owned();
    d.stop();
    let bucket = d.spool().join("queue").join(&msgid[..2]);
    let aside = d.dir.join("aside");
    std::fs::rename(bucket.join(&msgid), &aside).unwrap();
    d.spawn(&["-P", "mda"]);
    queue_lines(&d, 0);
    std::fs::rename(&aside, bucket.join(&msgid)).unwrap();
    queue_lines(&d, 0);
    let (code, out, err) = d.smtpctl(&["discover", &msgid], None);
    assert_eq!(
        (code, out.as_str()),
        (0, "2 envelope(s) discovered\n"),
        "{err}"
    );
    queue_lines(&d, 2);
    // Known now: a second discover finds nothing new.
    assert_eq!(
        d.smtpctl(&["discover", "all"], None).1,
        "0 envelope(s) discovered\n"
    );
    d.smtpctl(&["resume", "mda"], None);
    assert_eq!(d.wait_for_delivered(2, WAIT).len(), 2, "{}", d.log());
}

/// `trace SUBSYSTEM` writes that subsystem's debug lines while the rest
/// stays brief; `untrace` stops it.
#[test]
fn trace_and_untrace() {
    let d = daemon("smtpctl-trace", &[]);
    let user = rsmtpd_test_support::daemon::current_user();
    d.smtpctl(&["log", "brief"], None);
    assert_eq!(d.smtpctl(&["trace", "rules"], None).1, "tracing rules\n");
    d.wait_for_log("traces 0x400", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rcpt_code(&d, &format!("{user}+t1@example.org")), "250");
    d.wait_for_log(&format!("route rcpt={user}+t1@example.org"), WAIT);
    assert_eq!(
        d.smtpctl(&["untrace", "rules"], None).1,
        "not tracing rules\n"
    );
    d.wait_for_log("traces 0x0", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rcpt_code(&d, &format!("{user}+t2@example.org")), "250");
    let (code, _, err) = d.smtpctl(&["trace", "bogus"], None);
    assert_eq!(code, 1);
    assert!(err.contains("unknown subsystem bogus"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !d.log().contains(&format!("route rcpt={user}+t2@")),
        "{}",
        d.log()
    );
}

/// `profile queue` logs how long each commit took.
#[test]
fn profile_queue_times_commits() {
    let d = daemon("smtpctl-profile", &[]);
    let user = rsmtpd_test_support::daemon::current_user();
    d.smtpctl(&["log", "brief"], None);
    assert_eq!(
        d.smtpctl(&["profile", "queue"], None).1,
        "tracing profile-queue\n"
    );
    d.wait_for_log("traces 0x2000", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    submit(
        &d,
        &[&format!("{user}@example.org")],
        "Subject: p\n\nprofiled\n",
    );
    d.wait_for_log("profile: queue commit of message", WAIT);
    let (code, _, err) = d.smtpctl(&["profile", "disk"], None);
    assert_eq!(code, 1);
    assert!(err.contains("unknown profiling subsystem disk"), "{err}");
}

/// `spf walk`: includes, redirects, a and mx followed; ip4/ip6 as written;
/// a loop and a missing record do not stop the rest.
#[test]
fn spf_walk_lists_what_a_domain_allows() {
    use rsmtpd_test_support::dns::{DnsServer, Zone};
    let dns = DnsServer::start(
        Zone::new()
            .txt(
                "example.com",
                "v=spf1 ip4:192.0.2.0/24 include:_spf.example.com mx -all",
            )
            .txt(
                "_spf.example.com",
                "v=spf1 ip6:2001:db8::/32 a:out.example.com redirect=loop.example.com",
            )
            .txt("loop.example.com", "v=spf1 include:example.com ~all")
            .a("out.example.com", [198, 51, 100, 7])
            .mx("example.com", 10, "mx.example.com")
            .a("mx.example.com", [203, 0, 113, 9])
            .txt("nospf.example", "some other text"),
    );
    let dir = temp_dir("smtpctl-spf");
    let mut child = Command::new(smtpctl(&dir))
        .args(["spf", "walk"])
        .env("RSMTPD_RESOLVER", dns.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"example.com\nnospf.example\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "192.0.2.0/24\n198.51.100.7\n2001:db8::/32\n203.0.113.9\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nospf.example: no SPF record"));
}
