//! Privilege separation and the queue's lifecycle, end to end: who each
//! process runs as and where it is confined (read from /proc), who owns the
//! spool and the delivered files, the non-root mode, paused deliveries,
//! start-up recovery, bounces and retries.
//!
//! Almost everything here needs root (recipients are other users, spool
//! files belong to `_smtpq`); as another user each test says it was
//! skipped and returns. CI runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsmtpd_test_support::daemon::{Client, Daemon, Setup, descendants, free_port};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

/// Recipients of domain example.org are local users; each gets a Maildir
/// under {dir}/mail named after the account.
const BODY: &str = "queue path \"{spool}\"\n\
listen on 127.0.0.1 port {port}\n\
action \"local\" maildir \"{dir}/mail/%{user.username}\"\n\
match from any for domain \"example.org\" action \"local\"\n";

const USER1: &str = "rsmtpdtest1";
const USER2: &str = "rsmtpdtest2";

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::getuid().is_root() {
        true
    } else {
        println!("{test}: skipped (needs root; CI runs as root)");
        false
    }
}

fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body: BODY,
            args,
            env,
        },
    )
}

#[derive(Debug, Clone)]
struct Account {
    uid: u32,
    gid: u32,
}

fn account(name: &str) -> Account {
    let u = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("user {name} is missing: run scripts/setup.sh as root"));
    Account {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }
}

/// {dir}/mail (root 0755) and {dir}/mail/USER (USER 0700) for each user.
fn make_mailboxes(d: &Daemon, users: &[&str]) {
    let mail = d.dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o755)).unwrap();
    for user in users {
        let a = account(user);
        let dir = mail.join(user);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(a.uid), Some(a.gid)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

fn mailbox(d: &Daemon, user: &str) -> PathBuf {
    d.dir.join("mail").join(user)
}

/// Files in a Maildir's new/, sorted.
fn new_files(maildir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_for_files(maildir: &Path, n: usize, timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let files = new_files(maildir);
        if files.len() >= n || Instant::now() >= deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One whole transaction; returns the reply to the final dot.
fn send(d: &Daemon, from: &str, to: &str, data: &str) -> String {
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250 "), "MAIL: {r}");
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    assert!(r.starts_with("250 "), "RCPT {to}: {r}\nlog:\n{}", d.log());
    let r = c.cmd("DATA");
    assert!(r.starts_with("354 "), "DATA: {r}");
    let reply = c.cmd(&format!("{data}\r\n."));
    let _ = c.cmd("QUIT");
    reply
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Real, effective, saved and filesystem ids from /proc/PID/status.
fn proc_ids(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"))
}

fn proc_root(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/root"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/root: {e}"))
}

/// The NAME of `--role NAME` in the process's command line.
fn role_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--role")?;
    args.get(i + 1).cloned()
}

fn assert_ids(what: &str, pid: u32, uid: u32, gid: u32) {
    let (uids, gids) = proc_ids(pid);
    assert!(
        uids.len() >= 3 && uids.iter().all(|u| *u == uid),
        "{what} (pid {pid}): uids {uids:?}, expected all {uid}"
    );
    assert!(
        gids.len() >= 3 && gids.iter().all(|g| *g == gid),
        "{what} (pid {pid}): gids {gids:?}, expected all {gid}"
    );
}

/// Every file and directory below `dir` (not `dir` itself).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn each_process_runs_as_its_user_in_its_chroot() {
    if !root_or_skip("each_process_runs_as_its_user_in_its_chroot") {
        return;
    }
    let d = start("privsep-procs", &[], &[]);
    let smtpd_user = account("_smtpd");
    let queue_user = account("_smtpq");
    let spool = d.spool().canonicalize().unwrap();

    let parent = d.pid().unwrap();
    assert_ids("parent", parent, 0, 0);
    assert_eq!(proc_root(parent), PathBuf::from("/"));

    let mut roles: BTreeMap<String, u32> = BTreeMap::new();
    for pid in d.children() {
        if let Some(role) = role_of(pid) {
            assert!(
                roles.insert(role.clone(), pid).is_none(),
                "two processes of role {role}"
            );
        }
    }
    let names: Vec<&str> = roles.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "control",
            "crypto",
            "lookup",
            "mta",
            "queue",
            "scheduler",
            "smtp"
        ],
        "child roles"
    );
    let expect: [(&str, &Account, PathBuf); 7] = [
        ("smtp", &smtpd_user, PathBuf::from("/var/empty")),
        ("crypto", &smtpd_user, PathBuf::from("/var/empty")),
        ("scheduler", &smtpd_user, PathBuf::from("/var/empty")),
        ("mta", &smtpd_user, PathBuf::from("/var/empty")),
        ("queue", &queue_user, spool),
        ("lookup", &smtpd_user, PathBuf::from("/")),
        ("control", &smtpd_user, PathBuf::from("/")),
    ];
    for (role, who, root) in expect {
        let pid = roles[role];
        assert_ids(role, pid, who.uid, who.gid);
        assert_eq!(proc_root(pid), root, "root of the {role} process");
        // setgroups to the one primary group: no supplementary root group.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let groups: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap_or("")
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        assert!(
            groups.iter().all(|g| *g == who.gid),
            "{role}: supplementary groups {groups:?}"
        );
    }
}

#[test]
fn spool_belongs_to_the_queue_user() {
    if !root_or_skip("spool_belongs_to_the_queue_user") {
        return;
    }
    // Paused, so the message stays in the queue to be looked at.
    let d = start("privsep-spool", &["-P", "mda"], &[]);
    make_mailboxes(&d, &[USER1]);
    let reply = send(
        &d,
        "alice@example.net",
        "rsmtpdtest1@example.org",
        "Subject: spool\r\n\r\nbody",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let q = account("_smtpq");
    let spool = d.spool();
    assert_eq!(owner_mode(&spool), (0, 0, 0o711), "spool top");
    for sub in ["incoming", "queue", "purge", "corrupt"] {
        assert_eq!(
            owner_mode(&spool.join(sub)),
            (q.uid, q.gid, 0o700),
            "spool/{sub}"
        );
    }
    // Not the queue's: sendmail's offline folder (everyone may add files,
    // like /tmp) and the control socket, both the parent's.
    assert_eq!(
        owner_mode(&spool.join("offline")),
        (0, 0, 0o1777),
        "offline"
    );
    assert_eq!(
        owner_mode(&spool.join("smtpd.sock")),
        (0, 0, 0o666),
        "socket"
    );
    let mut messages = 0;
    let mut envelopes = 0;
    let theirs = [spool.join("offline"), spool.join("smtpd.sock")];
    for path in walk(&spool) {
        if theirs.iter().any(|t| path.starts_with(t)) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let (uid, _, mode) = owner_mode(&path);
        assert_eq!(uid, q.uid, "{} owned by uid {uid}", path.display());
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            if path.file_name().is_some_and(|n| n == "message") {
                messages += 1;
            } else {
                envelopes += 1;
            }
        }
    }
    assert_eq!((messages, envelopes), (1, 1), "files in the spool");
    assert!(new_files(&mailbox(&d, USER1)).is_empty());
}

#[test]
fn delivered_files_belong_to_their_recipients() {
    if !root_or_skip("delivered_files_belong_to_their_recipients") {
        return;
    }
    let d = start("privsep-owner", &[], &[]);
    make_mailboxes(&d, &[USER1, USER2]);
    for user in [USER1, USER2] {
        let reply = send(
            &d,
            "alice@example.net",
            &format!("{user}@example.org"),
            &format!("Subject: for {user}\r\n\r\nhello"),
        );
        assert!(reply.starts_with("250 "), "{reply}");
    }
    for user in [USER1, USER2] {
        let a = account(user);
        let files = wait_for_files(&mailbox(&d, user), 1, Duration::from_secs(10));
        assert_eq!(files.len(), 1, "{user}: {files:?}; log:\n{}", d.log());
        let (uid, gid, mode) = owner_mode(&files[0]);
        assert_eq!((uid, gid, mode), (a.uid, a.gid, 0o600), "{user}'s file");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            text.contains(&format!("Delivered-To: {user}@example.org\n"))
                && text.contains(&format!("Subject: for {user}\n")),
            "{text}"
        );
    }
}

#[test]
fn unknown_user_is_refused_at_rcpt_and_nothing_is_stored() {
    if !root_or_skip("unknown_user_is_refused_at_rcpt_and_nothing_is_stored") {
        return;
    }
    let d = start("privsep-unknown", &[], &[]);
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<alice@example.net>").starts_with("250 "));
    let r = c.cmd("RCPT TO:<rsmtpd-no-such-user@example.org>");
    assert!(r.starts_with("550 5.1.1 "), "{r}");
    let r = c.cmd("DATA");
    assert!(r.starts_with('5'), "DATA without a recipient: {r}");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let stored: Vec<PathBuf> = walk(&d.spool())
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(stored.is_empty(), "stored: {stored:?}");
    assert!(!d.log().contains("delivery: "), "log:\n{}", d.log());
}

/// A daemon started by hand, as another user, through setpriv.
struct UserDaemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl UserDaemon {
    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for UserDaemon {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut pids = descendants(pid);
        pids.push(pid);
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

#[test]
fn started_by_a_user_everything_runs_as_that_user() {
    if !root_or_skip("started_by_a_user_everything_runs_as_that_user") {
        return;
    }
    let u1 = account(USER1);
    let u2 = account(USER2);
    let dir = rsmtpd_test_support::temp_dir("privsep-nonroot");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The user creates its spool itself, below a directory it owns.
    std::os::unix::fs::chown(&dir, Some(u1.uid), Some(u1.gid)).unwrap();
    let mail = dir.join("mail");
    for (user, a) in [(USER1, &u1), (USER2, &u2)] {
        let m = mail.join(user);
        std::fs::create_dir_all(&m).unwrap();
        std::os::unix::fs::chown(&m, Some(a.uid), Some(a.gid)).unwrap();
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let config = dir.join("smtpd.conf");
    let text = BODY
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.display().to_string())
        .replace("{spool}", &dir.join("spool").display().to_string());
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={USER1}"),
            &format!("--regid={USER1}"),
            "--clear-groups",
            "--",
        ])
        .arg(smtpd())
        .args(["-d", "-v", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
            l.push_str(&line);
            l.push('\n');
        }
    });
    let d = UserDaemon { child, log };
    d.wait_for_log("smtpd: ready", Duration::from_secs(20));

    let log = d.log();
    assert_eq!(
        count(&log, "not root"),
        1,
        "the warning, exactly once; log:\n{log}"
    );
    assert!(
        log.contains(&format!("running as {USER1}, not root")),
        "{log}"
    );

    // setpriv execs smtpd: the pid is the daemon's parent.
    let parent = d.child.id();
    let mut pids = descendants(parent);
    assert_eq!(
        pids.iter().filter(|p| role_of(**p).is_some()).count(),
        7,
        "seven child roles"
    );
    pids.push(parent);
    for pid in pids {
        assert_ids("process", pid, u1.uid, u1.gid);
        assert_eq!(proc_root(pid), PathBuf::from("/"), "no chroot (pid {pid})");
    }

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for (to, subject) in [
        ("rsmtpdtest1@example.org", "to self"),
        ("rsmtpdtest2@example.org", "to other"),
    ] {
        let mut c = Client::connect(addr);
        assert!(c.cmd("EHLO client.example").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<alice@example.net>").starts_with("250 "));
        let r = c.cmd(&format!("RCPT TO:<{to}>"));
        assert!(r.starts_with("250 "), "{to}: {r}");
        assert!(c.cmd("DATA").starts_with("354 "));
        let r = c.cmd(&format!("Subject: {subject}\r\n\r\nbody\r\n."));
        assert!(r.starts_with("250 "), "{r}");
        let _ = c.cmd("QUIT");
    }
    let files = wait_for_files(&mail.join(USER1), 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "log:\n{}", d.log());
    assert_eq!(owner_mode(&files[0]), (u1.uid, u1.gid, 0o600));
    d.wait_for_log("delivery: PermFail", Duration::from_secs(10));
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("delivery: PermFail"))
        .unwrap_or_default();
    assert!(line.contains("to=<rsmtpdtest2@example.org>"), "{line}");
    assert!(new_files(&mail.join(USER2)).is_empty());
    assert_eq!(count(&log, "delivery: Ok for"), 1, "{log}");
}

#[test]
fn paused_local_delivery_resumes_after_a_restart() {
    if !root_or_skip("paused_local_delivery_resumes_after_a_restart") {
        return;
    }
    let mut d = start("privsep-paused", &["-P", "mda"], &[]);
    make_mailboxes(&d, &[USER1]);
    let reply = send(
        &d,
        "alice@example.net",
        "rsmtpdtest1@example.org",
        "Subject: paused\r\n\r\nbody",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        new_files(&mailbox(&d, USER1)).is_empty(),
        "delivered while paused"
    );
    assert!(!d.log().contains("delivery: "), "log:\n{}", d.log());
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log());
    d.spawn(&[]);
    let files = wait_for_files(&mailbox(&d, USER1), 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "log:\n{}", d.log());
    assert!(
        std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("Subject: paused\n")
    );
    assert!(d.log().contains("resuming 1 envelope"), "log:\n{}", d.log());
}

#[test]
fn start_up_moves_damaged_files_aside_and_empties_incoming() {
    if !root_or_skip("start_up_moves_damaged_files_aside_and_empties_incoming") {
        return;
    }
    let q = account("_smtpq");
    let mut d = start("privsep-recovery", &["-P", "mda"], &[]);
    make_mailboxes(&d, &[USER1]);
    let reply = send(
        &d,
        "alice@example.net",
        "rsmtpdtest1@example.org",
        "Subject: survivor\r\n\r\nbody",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(d.stop(), Some(0));

    // The committed message: queue/<bucket>/<msgid>/{message,<evpid>}.
    let spool = d.spool();
    let msgdirs: Vec<PathBuf> = walk(&spool.join("queue"))
        .into_iter()
        .filter(|p| p.join("message").is_file())
        .collect();
    assert_eq!(msgdirs.len(), 1, "{msgdirs:?}");
    let msgdir = &msgdirs[0];
    let msgid = msgdir.file_name().unwrap().to_string_lossy().into_owned();
    let garbage_name = format!("{msgid}deadbeef");
    let garbage = msgdir.join(&garbage_name);
    let garbage_bytes = b"this is not an envelope\n\0\xff\n";
    std::fs::write(&garbage, garbage_bytes).unwrap();
    // A half-received message, as a crash during DATA leaves it.
    let half = spool.join("incoming").join("0badc0de");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join("message"), b"Subject: half\r\n\r\nunfini").unwrap();
    for p in [&garbage, &half, &half.join("message")] {
        std::os::unix::fs::chown(p, Some(q.uid), Some(q.gid)).unwrap();
    }

    d.spawn(&[]);
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("moved aside") && l.contains(&garbage_name)),
        "log:\n{log}"
    );
    assert!(log.contains("removed uncommitted message"), "log:\n{log}");
    let incoming: Vec<PathBuf> = walk(&spool.join("incoming"));
    assert!(incoming.is_empty(), "incoming: {incoming:?}");
    assert!(!garbage.exists());
    let corrupt: Vec<PathBuf> = walk(&spool.join("corrupt"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&garbage_name))
        })
        .collect();
    assert!(
        corrupt
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b == garbage_bytes)),
        "garbage not kept in corrupt/: {corrupt:?}"
    );
    let files = wait_for_files(&mailbox(&d, USER1), 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "log:\n{}", d.log());
    assert!(
        std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("Subject: survivor\n")
    );
}

#[test]
fn a_mail_loop_bounces_to_the_local_sender() {
    if !root_or_skip("a_mail_loop_bounces_to_the_local_sender") {
        return;
    }
    let d = start("privsep-bounce", &[], &[]);
    make_mailboxes(&d, &[USER1, USER2]);
    let reply = send(
        &d,
        "rsmtpdtest2@example.org",
        "rsmtpdtest1@example.org",
        "Delivered-To: rsmtpdtest1@example.org\r\nSubject: loop-token-4711\r\n\r\nlooping",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let files = wait_for_files(&mailbox(&d, USER2), 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "no bounce; log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("delivery: PermFail"), "{log}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("Return-Path: <>\n"), "{text}");
    assert!(
        text.contains("Delivered-To: rsmtpdtest2@example.org\n"),
        "{text}"
    );
    assert!(text.contains("Content-Type: multipart/report"), "{text}");
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains("Content-Type: message/delivery-status"),
        "{text}"
    );
    assert!(text.contains("Reporting-MTA: dns; "), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; rsmtpdtest1@example.org\n"),
        "{text}"
    );
    assert!(text.contains("Action: failed\n"), "{text}");
    assert!(text.contains("Status: 5.4.6\n"), "{text}");
    // The original message's headers come back.
    assert!(text.contains("Subject: loop-token-4711\n"), "{text}");
    assert!(text.contains("Received: from client.example"), "{text}");
    assert!(new_files(&mailbox(&d, USER1)).is_empty());
    assert_eq!(owner_mode(&files[0]).0, account(USER2).uid);
}

#[test]
fn a_failure_of_a_null_sender_message_is_not_bounced() {
    if !root_or_skip("a_failure_of_a_null_sender_message_is_not_bounced") {
        return;
    }
    let d = start("privsep-nullsender", &[], &[]);
    make_mailboxes(&d, &[USER1, USER2]);
    let reply = send(
        &d,
        "",
        "rsmtpdtest1@example.org",
        "Delivered-To: rsmtpdtest1@example.org\r\nSubject: null loop\r\n\r\nlooping",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    d.wait_for_log("null sender", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(new_files(&mailbox(&d, USER1)).is_empty());
    assert!(new_files(&mailbox(&d, USER2)).is_empty());
    let log = d.log();
    assert_eq!(
        count(&log, "delivery: "),
        1,
        "one attempt only; log:\n{log}"
    );
    assert!(!log.contains(" sent to "), "a bounce was sent; log:\n{log}");
}

#[test]
fn a_temporary_failure_is_retried() {
    if !root_or_skip("a_temporary_failure_is_retried") {
        return;
    }
    let d = start("privsep-retry", &[], &[("RSMTPD_RETRY_BASE_LOCAL", "1")]);
    make_mailboxes(&d, &[USER1]);
    let a = account(USER1);
    let mbox = mailbox(&d, USER1);
    // A regular file where the Maildir's new/ must be.
    for sub in ["tmp", "cur"] {
        std::fs::create_dir(mbox.join(sub)).unwrap();
        std::os::unix::fs::chown(mbox.join(sub), Some(a.uid), Some(a.gid)).unwrap();
    }
    std::fs::write(mbox.join("new"), b"in the way").unwrap();
    std::os::unix::fs::chown(mbox.join("new"), Some(a.uid), Some(a.gid)).unwrap();

    let reply = send(
        &d,
        "alice@example.net",
        "rsmtpdtest1@example.org",
        "Subject: retried\r\n\r\nbody",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    d.wait_for_log("delivery: TempFail", Duration::from_secs(10));
    let fixed_at = Instant::now();
    std::fs::remove_file(mbox.join("new")).unwrap();
    let files = wait_for_files(&mbox, 1, Duration::from_secs(15));
    assert_eq!(files.len(), 1, "not delivered on retry; log:\n{}", d.log());
    eprintln!("delivered {:?} after the fix", fixed_at.elapsed());
    d.wait_for_log("delivery: Ok for", Duration::from_secs(5));
    assert!(
        std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("Subject: retried\n")
    );
}
