//! mbox delivery: exact bytes written, appending, undo on failure, locking
//! against other writers, refusal of unsafe files, and the root parent's
//! preparation of the spool file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Cursor, Read};
use std::num::NonZeroU32;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use nix::unistd::{Gid, Group, Uid, User};
use rsmtpd_delivery::mbox::{
    Facts, LockKind, LockPolicy, MboxError, Unsafe, UserIds, deliver, deliver_with, prepare_mailbox,
};
use rsmtpd_delivery::{Class, DeliveryError};
use rsmtpd_test_support::temp_dir;

const FACTS: Facts<'static> = Facts {
    sender: "alice@example.net",
    recipient: "bob@example.org",
    created: 1_700_000_000,
};

/// Short waits, so the tests that wait for a lock stay quick.
fn quick(attempts: u32) -> LockPolicy {
    LockPolicy {
        attempts: NonZeroU32::new(attempts).unwrap(),
        interval: Duration::from_millis(100),
        ..LockPolicy::default()
    }
}

/// An empty mailbox of the current user, mode 0600.
fn mailbox(dir: &Path) -> PathBuf {
    let path = dir.join("bob");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn run(path: &Path, message: &[u8]) -> Result<(), MboxError> {
    deliver(path, &FACTS, &mut Cursor::new(message.to_vec()))
}

fn lock_file(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", path.display()))
}

#[test]
fn one_entry_exact_bytes() {
    let dir = temp_dir("mbox-exact");
    let path = mailbox(&dir);
    run(
        &path,
        b"Subject: hi\r\nFrom: Alice <alice@example.net>\r\n\r\nFrom the start\r\n>From once\r\n>>From twice\r\nnot From here\r\nbare\rcr\r\n",
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"From alice@example.net Tue Nov 14 22:13:20 2023\n\
Return-Path: <alice@example.net>\n\
Delivered-To: bob@example.org\n\
Subject: hi\n\
From: Alice <alice@example.net>\n\
\n\
>From the start\n\
>>From once\n\
>>>From twice\n\
not From here\n\
bare\rcr\n\
\n"
    );
    assert!(!lock_file(&path).exists());
}

#[test]
fn two_deliveries_append_in_order() {
    let dir = temp_dir("mbox-append");
    let path = mailbox(&dir);
    run(&path, b"Subject: one\r\n\r\nfirst\r\n").unwrap();
    let bounce = Facts {
        sender: "",
        created: 1_699_000_000,
        ..FACTS
    };
    // No line end at the very end: one is added before the blank line.
    deliver(
        &path,
        &bounce,
        &mut Cursor::new(b"Subject: two\r\n\r\nsecond".to_vec()),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"From alice@example.net Tue Nov 14 22:13:20 2023\n\
Return-Path: <alice@example.net>\n\
Delivered-To: bob@example.org\n\
Subject: one\n\
\n\
first\n\
\n\
From MAILER-DAEMON Fri Nov  3 08:26:40 2023\n\
Return-Path: <>\n\
Delivered-To: bob@example.org\n\
Subject: two\n\
\n\
second\n\
\n"
    );
}

/// Gives the header block and `body_bytes` of body, then fails, noting
/// how large the mailbox was at that moment.
struct FailingReader {
    data: Cursor<Vec<u8>>,
    mailbox: PathBuf,
    size_at_failure: Option<u64>,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for FailingReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.data.position() == self.data.get_ref().len() as u64 {
            self.size_at_failure = Some(std::fs::metadata(&self.mailbox).unwrap().len());
            return Err(std::io::Error::other("the queue's disk went away"));
        }
        // Small pieces, so the writer's buffer is flushed several times
        // before the failure.
        let rest = self.data.fill_buf()?;
        let n = rest.len().min(4096);
        Ok(&rest[..n])
    }

    fn consume(&mut self, n: usize) {
        self.data.consume(n);
    }
}

#[test]
fn a_failure_mid_message_leaves_the_mailbox_as_it_was() {
    let dir = temp_dir("mbox-truncate");
    let path = mailbox(&dir);
    run(&path, b"Subject: kept\r\n\r\nkept\r\n").unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut message = b"Subject: lost\r\n\r\n".to_vec();
    for i in 0..5000 {
        message.extend_from_slice(format!("line {i} of a long body that fails\r\n").as_bytes());
    }
    let mut reader = FailingReader {
        data: Cursor::new(message),
        mailbox: path.clone(),
        size_at_failure: None,
    };
    let err = deliver(&path, &FACTS, &mut reader).unwrap_err();
    assert!(
        matches!(err, MboxError::Message(DeliveryError::Read(_))),
        "{err:?}"
    );
    assert_eq!(err.class(), Class::Temporary);
    // Part of the message had reached the file when the read failed...
    let size_at_failure = reader.size_at_failure.unwrap();
    assert!(
        size_at_failure > before.len() as u64 + 64 * 1024,
        "only {size_at_failure} bytes"
    );
    // ...and none of it is left.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!lock_file(&path).exists());
    // The mailbox still takes mail.
    run(&path, b"Subject: next\r\n\r\nnext\r\n").unwrap();
    assert!(std::fs::read(&path).unwrap().starts_with(&before));
}

/// An open-file-description lock: unlike a classic fcntl lock it conflicts
/// with the classic lock the delivery takes even within this one process,
/// so a thread can play another program holding the mailbox.
fn ofd_lock(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)).unwrap();
    file
}

/// Runs `hold` on a thread and waits until it says it holds its lock.
fn holder(hold: impl FnOnce(mpsc::Sender<()>) + Send + 'static) -> std::thread::JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || hold(tx));
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle
}

#[test]
fn waits_for_an_fcntl_lock_then_delivers() {
    let dir = temp_dir("mbox-fcntl-wait");
    let path = mailbox(&dir);
    let p = path.clone();
    let handle = holder(move |held| {
        let file = ofd_lock(&p);
        held.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        drop(file);
    });
    let start = Instant::now();
    deliver_with(
        &path,
        &FACTS,
        &mut Cursor::new(b"A: b\r\n\r\nc\r\n".to_vec()),
        &quick(50),
    )
    .unwrap();
    let waited = start.elapsed();
    handle.join().unwrap();
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(std::fs::read(&path).unwrap().ends_with(b"A: b\n\nc\n\n"));
}

#[test]
fn waits_for_a_dotlock_then_delivers() {
    let dir = temp_dir("mbox-dotlock-wait");
    let path = mailbox(&dir);
    let lock = lock_file(&path);
    let l = lock.clone();
    let handle = holder(move |held| {
        std::fs::write(&l, b"").unwrap();
        held.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        std::fs::remove_file(&l).unwrap();
    });
    let start = Instant::now();
    deliver_with(
        &path,
        &FACTS,
        &mut Cursor::new(b"A: b\r\n\r\nc\r\n".to_vec()),
        &quick(50),
    )
    .unwrap();
    let waited = start.elapsed();
    handle.join().unwrap();
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(std::fs::read(&path).unwrap().ends_with(b"A: b\n\nc\n\n"));
    assert!(!lock.exists());
}

#[test]
fn an_fcntl_lock_never_released_is_a_temporary_failure_in_time() {
    let dir = temp_dir("mbox-fcntl-busy");
    let path = mailbox(&dir);
    let _held = ofd_lock(&path);
    let start = Instant::now();
    let err = deliver_with(
        &path,
        &FACTS,
        &mut Cursor::new(b"A: b\r\n\r\nc\r\n".to_vec()),
        &quick(5),
    )
    .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(
            err,
            MboxError::Locked {
                lock: LockKind::Fcntl,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!((err.class(), err.status()), (Class::Temporary, "4.2.0"));
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    assert!(!lock_file(&path).exists());
}

#[test]
fn a_fresh_dotlock_never_released_is_a_temporary_failure_and_is_left_alone() {
    let dir = temp_dir("mbox-dotlock-busy");
    let path = mailbox(&dir);
    let lock = lock_file(&path);
    std::fs::write(&lock, b"12345\n").unwrap();
    let start = Instant::now();
    let err = deliver_with(
        &path,
        &FACTS,
        &mut Cursor::new(b"A: b\r\n\r\nc\r\n".to_vec()),
        &quick(5),
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(
            err,
            MboxError::Locked {
                lock: LockKind::Dotlock,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), Class::Temporary);
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    // Someone else's lock: not ours to remove.
    assert_eq!(std::fs::read(&lock).unwrap(), b"12345\n");
}

#[test]
fn a_stale_dotlock_is_removed() {
    let dir = temp_dir("mbox-dotlock-stale");
    let path = mailbox(&dir);
    let lock = lock_file(&path);
    std::fs::write(&lock, b"").unwrap();
    let policy = LockPolicy {
        stale_after: Duration::from_millis(300),
        ..quick(30)
    };
    deliver_with(
        &path,
        &FACTS,
        &mut Cursor::new(b"A: b\r\n\r\nc\r\n".to_vec()),
        &policy,
    )
    .unwrap();
    assert!(std::fs::read(&path).unwrap().ends_with(b"A: b\n\nc\n\n"));
    assert!(!lock.exists());
}

fn assert_refused(err: &MboxError, want: Unsafe) {
    match err {
        MboxError::Unsafe { reason, .. } => assert_eq!(*reason, want),
        other => panic!("expected {want:?}, got {other:?}"),
    }
    assert_eq!((err.class(), err.status()), (Class::Temporary, "4.2.1"));
}

#[test]
fn a_symlink_at_the_mailbox_path_is_refused() {
    let dir = temp_dir("mbox-symlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let path = dir.join("bob");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let err = run(&path, b"A: b\r\n\r\nc\r\n").unwrap_err();
    assert_refused(&err, Unsafe::Symlink);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_hard_linked_mailbox_is_refused() {
    let dir = temp_dir("mbox-hardlink");
    let path = mailbox(&dir);
    std::fs::write(&path, b"old\n").unwrap();
    std::fs::hard_link(&path, dir.join("other")).unwrap();
    let err = run(&path, b"A: b\r\n\r\nc\r\n").unwrap_err();
    assert_refused(&err, Unsafe::HardLink(2));
    assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
}

/// Runs `f` on a thread and fails the test if it takes more than 10 s: a
/// FIFO must be refused, not waited on.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("hung on the FIFO")
}

#[test]
fn a_fifo_at_the_mailbox_path_is_refused_without_hanging() {
    let dir = temp_dir("mbox-fifo");
    let path = dir.join("bob");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let p = path.clone();
    let err = within_10s(move || run(&p, b"A: b\r\n\r\nc\r\n")).unwrap_err();
    assert_refused(&err, Unsafe::NotRegular);
    // With a reader on it, the open succeeds; fstat refuses it.
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let p = path.clone();
    let err = within_10s(move || run(&p, b"A: b\r\n\r\nc\r\n")).unwrap_err();
    assert_refused(&err, Unsafe::NotRegular);
    drop(reader);
}

#[test]
fn a_directory_at_the_mailbox_path_is_refused() {
    let dir = temp_dir("mbox-dir");
    let path = dir.join("bob");
    std::fs::create_dir(&path).unwrap();
    assert!(run(&path, b"A: b\r\n\r\nc\r\n").is_err());
}

#[test]
fn delivered_to_loop_is_a_permanent_failure() {
    let dir = temp_dir("mbox-loop");
    let path = mailbox(&dir);
    let err = run(&path, b"Delivered-To: <BOB@example.org>\r\n\r\nc\r\n").unwrap_err();
    assert!(matches!(err, MboxError::Message(DeliveryError::Loop(_))));
    assert_eq!((err.class(), err.status()), (Class::Permanent, "5.4.6"));
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn a_missing_mailbox_is_not_created_by_the_child() {
    let dir = temp_dir("mbox-missing");
    let path = dir.join("bob");
    let err = run(&path, b"A: b\r\n\r\nc\r\n").unwrap_err();
    assert!(matches!(err, MboxError::Io { .. }), "{err:?}");
    assert_eq!(err.class(), Class::Temporary);
    assert!(!path.exists());
}

fn me() -> UserIds {
    UserIds {
        uid: Uid::current(),
        gid: Gid::current(),
    }
}

#[test]
fn prepare_creates_an_empty_private_file_and_keeps_an_existing_one() {
    let dir = temp_dir("mbox-prepare-self");
    let path = prepare_mailbox(&dir, "bob", me(), None).unwrap();
    assert_eq!(path, dir.join("bob"));
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), Uid::current().as_raw());
    assert_eq!(meta.len(), 0);
    run(&path, b"A: b\r\n\r\nc\r\n").unwrap();
    let delivered = std::fs::read(&path).unwrap();
    assert_eq!(prepare_mailbox(&dir, "bob", me(), None).unwrap(), path);
    assert_eq!(std::fs::read(&path).unwrap(), delivered);
}

#[test]
fn prepare_refuses_bad_names_and_unsafe_files() {
    let dir = temp_dir("mbox-prepare-refuse");
    for bad in ["", ".bob", "../bob", "a/b", "bob\n", "bob.lock"] {
        let err = prepare_mailbox(&dir, bad, me(), None).unwrap_err();
        assert!(matches!(err, MboxError::BadName(_)), "{bad:?}");
        assert_eq!(err.class(), Class::Permanent);
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    std::fs::write(dir.join("victim"), b"x").unwrap();
    std::os::unix::fs::symlink(dir.join("victim"), dir.join("sym")).unwrap();
    let err = prepare_mailbox(&dir, "sym", me(), None).unwrap_err();
    assert_refused(&err, Unsafe::Symlink);

    std::fs::hard_link(dir.join("victim"), dir.join("hard")).unwrap();
    let err = prepare_mailbox(&dir, "hard", me(), None).unwrap_err();
    assert_refused(&err, Unsafe::HardLink(2));

    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let d = dir.clone();
    let err = within_10s(move || prepare_mailbox(&d, "fifo", me(), None)).unwrap_err();
    assert_refused(&err, Unsafe::NotRegular);

    std::fs::create_dir(dir.join("adir")).unwrap();
    let err = prepare_mailbox(&dir, "adir", me(), None).unwrap_err();
    assert_refused(&err, Unsafe::NotRegular);
    assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"x");
}

fn test_user(name: &str) -> UserIds {
    let user = User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("test user {name} missing (scripts/setup.sh)"));
    UserIds {
        uid: user.uid,
        gid: user.gid,
    }
}

fn is_root() -> bool {
    if nix::unistd::getuid().is_root() {
        true
    } else {
        println!("skipped: needs root");
        false
    }
}

#[test]
fn prepare_as_root_gives_the_file_to_the_user() {
    if !is_root() {
        return;
    }
    let dir = temp_dir("mbox-prepare-root");
    let ids = test_user("rsmtpdtest1");
    let mail = Group::from_name("mail").unwrap().map(|g| g.gid);

    let path = prepare_mailbox(&dir, "rsmtpdtest1", ids, mail).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), ids.uid.as_raw());
    assert_eq!(meta.gid(), mail.unwrap_or(ids.gid).as_raw());
    assert_eq!(meta.len(), 0);

    // Without a mail group: the user's own group.
    let other = temp_dir("mbox-prepare-root-nogroup");
    let path = prepare_mailbox(&other, "rsmtpdtest1", ids, None).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (ids.uid.as_raw(), ids.gid.as_raw())
    );
}

#[test]
fn prepare_as_root_refuses_a_file_owned_by_someone_else() {
    if !is_root() {
        return;
    }
    let dir = temp_dir("mbox-prepare-owner");
    let one = test_user("rsmtpdtest1");
    let two = test_user("rsmtpdtest2");
    let path = dir.join("rsmtpdtest1");
    std::fs::write(&path, b"not yours\n").unwrap();
    std::os::unix::fs::chown(&path, Some(two.uid.as_raw()), Some(two.gid.as_raw())).unwrap();
    let err = prepare_mailbox(&dir, "rsmtpdtest1", one, None).unwrap_err();
    assert_refused(
        &err,
        Unsafe::Owner {
            expected: one.uid.as_raw(),
            found: two.uid.as_raw(),
        },
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), two.uid.as_raw());
    assert_eq!(std::fs::read(&path).unwrap(), b"not yours\n");
}

#[test]
fn the_child_refuses_a_mailbox_that_is_not_its_own() {
    if !is_root() {
        return;
    }
    let dir = temp_dir("mbox-deliver-owner");
    let path = mailbox(&dir);
    let two = test_user("rsmtpdtest2");
    std::os::unix::fs::chown(&path, Some(two.uid.as_raw()), None).unwrap();
    let err = run(&path, b"A: b\r\n\r\nc\r\n").unwrap_err();
    assert_refused(
        &err,
        Unsafe::Owner {
            expected: 0,
            found: two.uid.as_raw(),
        },
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

/// Set by [`root_prepares_and_the_user_delivers`] for the copy of this
/// test binary it runs as the user.
const CHILD_ENV: &str = "RSMTPD_MBOX_TEST_CHILD";

/// Not a test of its own: the delivering half of
/// [`root_prepares_and_the_user_delivers`], run in a child process as
/// rsmtpdtest1. Does nothing when run normally.
#[test]
fn child_half_of_root_prepares_and_the_user_delivers() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let result = run(Path::new(&path), b"Subject: as the user\r\n\r\nhello\r\n");
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn root_prepares_and_the_user_delivers() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        return;
    }
    let ids = test_user("rsmtpdtest1");
    // The spool is root's, 0755: the user cannot make a dotlock there and
    // must do with the fcntl lock, as on Debian without group mail.
    let spool = temp_dir("mbox-as-user");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = prepare_mailbox(&spool, "rsmtpdtest1", ids, None).unwrap();

    let exe = std::env::current_exe().unwrap();
    let spawned = std::process::Command::new(&exe)
        .args([
            "--exact",
            "child_half_of_root_prepares_and_the_user_delivers",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .uid(ids.uid.as_raw())
        .gid(ids.gid.as_raw())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            println!("skipped: the test binary is not executable by rsmtpdtest1");
            return;
        }
        Err(e) => panic!("running {}: {e}", exe.display()),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the delivery as the user did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("1 passed"), "{out}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"From alice@example.net Tue Nov 14 22:13:20 2023\n\
Return-Path: <alice@example.net>\n\
Delivered-To: bob@example.org\n\
Subject: as the user\n\
\n\
hello\n\
\n"
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (ids.uid.as_raw(), 0o600)
    );
    assert!(!lock_file(&path).exists());
}

#[test]
fn the_writer_reports_where_its_entry_starts_and_repair_cuts_back_to_it() {
    let dir = temp_dir("mbox-repair");
    let path = mailbox(&dir);
    run(&path, b"Subject: first\r\n\r\nkept\r\n").unwrap();
    let before = std::fs::read(&path).unwrap();
    // The second delivery reports its start offset before writing.
    let mut reported = None;
    rsmtpd_delivery::mbox::deliver_reporting(
        &path,
        &FACTS,
        &mut Cursor::new(b"Subject: second\r\n\r\nbody\r\n".to_vec()),
        &quick(3),
        &mut |offset| reported = Some(offset),
    )
    .unwrap();
    assert_eq!(reported, Some(before.len() as u64));
    // A writer killed half way leaves a partial entry after that offset.
    let mut partial = before.clone();
    partial.extend_from_slice(b"From alice@example.net Tue Nov 14 22:13:20 2023\nSubject: thi");
    std::fs::write(&path, &partial).unwrap();
    assert!(rsmtpd_delivery::mbox::repair(&path, before.len() as u64).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Nothing past the offset: nothing to cut.
    assert!(!rsmtpd_delivery::mbox::repair(&path, before.len() as u64).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn repair_refuses_a_symlink() {
    let dir = temp_dir("mbox-repair-link");
    let target = mailbox(&dir);
    std::fs::write(&target, b"precious").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(rsmtpd_delivery::mbox::repair(&link, 0).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}
