//! The mda method against real commands run by /bin/sh.
//!
//! Run as root (CI), every command runs as `rsmtpdtest1`, since the method
//! refuses root; run as anyone else, it runs as the current user.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid};
use rsmtpd_delivery::Class;
use rsmtpd_delivery::format::{self, Address, User, Vars};
use rsmtpd_delivery::mda::{self, Account, Mda, MdaError};
use rsmtpd_test_support::temp_dir;

const MESSAGE: &[u8] =
    b"Subject: hello\r\nX-Folded: a\r\n b\r\n\r\nbody line\r\nbare\rcr\r\n.\r\nlast\r\n";

/// A home directory the command's user can write in, and that user.
struct Home {
    dir: PathBuf,
    username: String,
    uid: Uid,
    gid: Gid,
}

impl Home {
    fn new(name: &str) -> Home {
        let dir = temp_dir(&format!("mda-{name}"));
        if Uid::current().is_root() {
            let user = nix::unistd::User::from_name("rsmtpdtest1")
                .unwrap()
                .expect("user rsmtpdtest1 (scripts/setup.sh creates it)");
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
            Home {
                dir,
                username: user.name,
                uid: user.uid,
                gid: user.gid,
            }
        } else {
            let user = nix::unistd::User::from_uid(Uid::current())
                .unwrap()
                .unwrap();
            Home {
                dir,
                username: user.name,
                uid: user.uid,
                gid: user.gid,
            }
        }
    }

    fn mda<'a>(&'a self, command: &'a str, timeout: Duration) -> Mda<'a> {
        Mda {
            command,
            user: Account {
                username: &self.username,
                directory: &self.dir,
                uid: self.uid,
                gid: self.gid,
            },
            sender: Address::parse("alice@sender.example"),
            rcpt: Address::parse("Bob+Lists@Example.org"),
            dest: Address::parse("bob@example.org"),
            extension: Some("Lists"),
            timeout,
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }
}

fn run(mda: &Mda<'_>) -> Result<(), MdaError> {
    mda::deliver(mda, &mut Cursor::new(MESSAGE.to_vec()))
}

const LONG: Duration = Duration::from_secs(20);

#[test]
fn delivers_stdin_environment_and_nothing_else() {
    let home = Home::new("stdin");
    let command = "cat > stdin; id -u > uid; tr '\\0' '\\n' < /proc/$$/environ > env; \
                   ls /proc/self/fd > fds";
    let inheritable = inheritable_fds();
    run(&home.mda(command, LONG)).unwrap();

    assert_eq!(
        home.read("stdin"),
        "Return-Path: <alice@sender.example>\nDelivered-To: bob@example.org\n\
         Subject: hello\nX-Folded: a\n b\n\nbody line\nbare\rcr\n.\nlast\n"
    );
    assert_eq!(home.read("uid"), format!("{}\n", home.uid));
    let mut env: Vec<String> = home.read("env").lines().map(str::to_owned).collect();
    env.sort();
    let mut want = vec![
        "DOMAIN=Example.org".to_owned(),
        "EXTENSION=Lists".to_owned(),
        format!("HOME={}", home.dir.display()),
        "LOCAL=Bob+Lists".to_owned(),
        format!("LOGNAME={}", home.username),
        "ORIGINAL_RECIPIENT=Bob+Lists@Example.org".to_owned(),
        "PATH=/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin".to_owned(),
        "RECIPIENT=bob@example.org".to_owned(),
        "SENDER=alice@sender.example".to_owned(),
        "SHELL=/bin/sh".to_owned(),
        format!("USER={}", home.username),
    ];
    want.sort();
    assert_eq!(env, want);
    // ls lists its own descriptors: 0, 1, 2, the directory it is reading
    // (the lowest free number), and whatever this test process itself
    // inherited without close-on-exec from the program that started it
    // (nothing under the daemon, which starts its children with 0, 1 and 2
    // only). A pipe or file that the mda code opened and leaked would be
    // an extra entry.
    let mut want: Vec<u32> = vec![0, 1, 2];
    want.extend(inheritable.iter().filter(|fd| **fd > 2));
    let free = (0..).find(|fd| !want.contains(fd)).unwrap();
    want.push(free);
    want.sort();
    let mut seen: Vec<u32> = home
        .read("fds")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, want);
}

/// This process's descriptors that an exec would pass on (no FD_CLOEXEC).
fn inheritable_fds() -> Vec<u32> {
    const O_CLOEXEC: u32 = 0o2000000;
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let name = entry.unwrap().file_name();
        let Some(fd) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // The directory handle itself is gone by now.
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap();
        if flags & O_CLOEXEC == 0 {
            fds.push(fd);
        }
    }
    fds
}

#[test]
fn null_sender_and_no_extension() {
    let home = Home::new("null");
    let mut mda = home.mda(
        "head -n 2 > head; printf '[%s][%s]' \"$SENDER\" \"${EXTENSION-unset}\" > env",
        LONG,
    );
    mda.sender = Address::default();
    mda.extension = None;
    run(&mda).unwrap();
    assert_eq!(
        home.read("head"),
        "Return-Path: <>\nDelivered-To: bob@example.org\n"
    );
    assert_eq!(home.read("env"), "[][unset]");
}

#[test]
fn exit_75_and_71_are_temporary() {
    let home = Home::new("tempfail");
    for code in [75, 71] {
        let command = format!("cat > /dev/null; echo 'mailbox locked'; exit {code}");
        let err = run(&home.mda(&command, LONG)).unwrap_err();
        assert!(
            matches!(err, MdaError::TempFail { code: c, .. } if c == code),
            "{err:?}"
        );
        assert_eq!(err.class(), Class::Temporary);
        assert_eq!(err.to_string(), "mailbox locked");
    }
}

#[test]
fn exit_1_is_permanent_with_the_last_line() {
    let home = Home::new("permfail");
    let command = "cat > /dev/null; echo 'checking'; echo 'no such mailbox' >&2; echo; exit 1";
    let err = run(&home.mda(command, LONG)).unwrap_err();
    assert!(matches!(err, MdaError::PermFail { code: 1, .. }), "{err:?}");
    assert_eq!(err.class(), Class::Permanent);
    assert_eq!(err.status(), "5.2.0");
    assert_eq!(err.to_string(), "no such mailbox");

    let err = run(&home.mda("exit 3", LONG)).unwrap_err();
    assert_eq!(err.to_string(), "mda exited with status 3");
    assert_eq!(err.class(), Class::Permanent);
}

#[test]
fn death_by_signal_is_permanent() {
    let home = Home::new("signal");
    let err = run(&home.mda("echo dying; kill -9 $$", LONG)).unwrap_err();
    assert!(
        matches!(&err, MdaError::Signal { signal: 9, text } if text == "dying"),
        "{err:?}"
    );
    assert_eq!(err.class(), Class::Permanent);
}

#[test]
fn timeout_kills_the_command_and_its_children() {
    let home = Home::new("timeout");
    let command = "echo $$ > pid; sleep 30 & echo $! > grandchild; sleep 30";
    let started = Instant::now();
    let err = run(&home.mda(command, Duration::from_millis(1500))).unwrap_err();
    assert!(matches!(err, MdaError::Timeout(_)), "{err:?}");
    assert_eq!(err.class(), Class::Temporary);
    assert!(started.elapsed() < Duration::from_secs(10));
    for name in ["pid", "grandchild"] {
        let pid = home.read(name).trim().to_owned();
        assert!(gone(&pid), "{name} {pid} still runs");
    }
}

/// Whether the process is dead: no longer in /proc, or a zombie waiting
/// for a reaper that may never come (PID 1 of a container).
fn gone(pid: &str) -> bool {
    let stat = Path::new("/proc").join(pid).join("stat");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        match std::fs::read_to_string(&stat) {
            Err(_) => return true,
            Ok(text) => {
                let state = text.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                if state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_command_that_never_reads_stdin_cannot_hang_it() {
    let home = Home::new("noread");
    let big: Vec<u8> = b"Subject: big\r\n\r\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b"0123456789abcdef\r\n".iter().copied(), 200_000).flatten())
        .collect();
    // Exits at once: the rest of the message meets a closed pipe.
    let mda = home.mda("exit 0", LONG);
    mda::deliver(&mda, &mut Cursor::new(big.clone())).unwrap();
    // Never reads and never exits: the timeout ends it.
    let mda = home.mda("sleep 30", Duration::from_millis(300));
    let err = mda::deliver(&mda, &mut Cursor::new(big.clone())).unwrap_err();
    assert!(matches!(err, MdaError::Timeout(_)), "{err:?}");
    // Reads it all: every byte arrives, CRLF turned into LF.
    let mda = home.mda("wc -c > size", LONG);
    mda::deliver(&mda, &mut Cursor::new(big)).unwrap();
    let prologue = "Return-Path: <alice@sender.example>\nDelivered-To: bob@example.org\n".len();
    let body = "Subject: big\n\n".len() + 17 * 200_000;
    assert_eq!(home.read("size"), format!("{}\n", prologue + body));
}

#[test]
fn a_background_child_holding_the_pipes_does_not_hold_the_delivery() {
    let home = Home::new("background");
    let started = Instant::now();
    // The grandchild keeps stdout open long after the command exited 0.
    run(&home.mda("cat > /dev/null; sleep 5 & exit 0", LONG)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn output_is_bounded() {
    let home = Home::new("flood");
    let command = "cat > /dev/null; yes flood | head -c 5000000; echo; echo 'the end'; exit 2";
    let err = run(&home.mda(command, LONG)).unwrap_err();
    assert_eq!(err.to_string(), "the end");
}

#[test]
fn root_is_refused() {
    let home = Home::new("root");
    let marker = home.dir.join("ran");
    let command = format!("touch {}", marker.display());
    let mut mda = home.mda(&command, LONG);
    mda.user.uid = Uid::from_raw(0);
    let err = run(&mda).unwrap_err();
    assert!(matches!(err, MdaError::Root), "{err:?}");
    assert_eq!(err.class(), Class::Permanent);
    assert!(!marker.exists());
}

#[test]
fn another_user_is_refused_without_root() {
    if Uid::current().is_root() {
        println!("skipped: needs to run as a user other than root");
        return;
    }
    let home = Home::new("other");
    let mut mda = home.mda("exit 0", LONG);
    mda.user.uid = Uid::from_raw(home.uid.as_raw() + 1);
    let err = run(&mda).unwrap_err();
    assert!(matches!(err, MdaError::WrongUser { .. }), "{err:?}");
    assert_eq!(err.class(), Class::Temporary);
}

#[test]
fn as_root_runs_as_the_user() {
    if !Uid::current().is_root() {
        println!("skipped: needs root");
        return;
    }
    let home = Home::new("asuser");
    run(&home.mda("id -u > uid; id -g > gid; id -G > groups", LONG)).unwrap();
    let user = nix::unistd::User::from_name("rsmtpdtest1")
        .unwrap()
        .unwrap();
    assert_eq!(home.read("uid"), format!("{}\n", user.uid));
    assert_eq!(home.read("gid"), format!("{}\n", user.gid));
    // No supplementary group of root's survives.
    assert_eq!(home.read("groups"), format!("{}\n", user.gid));
}

#[test]
fn hostile_recipient_in_the_environment_runs_nothing() {
    let home = Home::new("hostile");
    let hostile = "x$(touch m1)`touch m2`;touch m3|touch m4&&touch m5>m6 'q'\"q\"\\@example.org";
    let mut mda = home.mda("printf '%s\\n' \"$RECIPIENT\" \"$LOCAL\" > seen", LONG);
    mda.rcpt = Address::parse(hostile);
    mda.dest = Address::parse(hostile);
    run(&mda).unwrap();
    let local = hostile.trim_end_matches("@example.org");
    assert_eq!(home.read("seen"), format!("{hostile}\n{local}\n"));
    for marker in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        assert!(!home.dir.join(marker).exists(), "{marker} was created");
    }
}

#[test]
fn hostile_recipient_in_an_expanded_command_runs_nothing() {
    let home = Home::new("hostile-format");
    let hostile = "x$(touch m1)`touch m2`;touch m3|touch m4&&touch m5>m6@example.org";
    let vars = Vars {
        sender: Address::default(),
        rcpt: Address::parse(hostile),
        dest: Address::parse(hostile),
        user: User {
            username: &home.username,
            directory: home.dir.to_str().unwrap(),
        },
        mda: None,
        delimiter: '+',
    };
    let command = format::expand("echo %{rcpt} > seen", &vars).unwrap();
    let mut mda = home.mda(&command, LONG);
    mda.rcpt = vars.rcpt;
    mda.dest = vars.dest;
    run(&mda).unwrap();
    assert_eq!(
        home.read("seen"),
        "x::touch:m1::touch:m2::touch:m3:touch:m4::touch:m5:m6@example.org\n"
    );
    for marker in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        assert!(!home.dir.join(marker).exists(), "{marker} was created");
    }
}

#[test]
fn a_loop_is_refused_before_anything_runs() {
    let home = Home::new("loop");
    let marker = home.dir.join("ran");
    let command = format!("touch {}", marker.display());
    let mda = home.mda(&command, LONG);
    let message = b"Delivered-To: Bob@Example.org\r\nSubject: x\r\n\r\nbody\r\n".to_vec();
    let err = mda::deliver(&mda, &mut Cursor::new(message)).unwrap_err();
    assert_eq!(err.class(), Class::Permanent);
    assert_eq!(err.status(), "5.4.6");
    assert!(!marker.exists());
}

#[test]
fn empty_command_is_refused() {
    let home = Home::new("empty");
    for command in ["", "  \t ", "echo a\0b"] {
        let err = run(&home.mda(command, LONG)).unwrap_err();
        assert!(matches!(err, MdaError::BadCommand), "{command:?}: {err:?}");
        assert_eq!(err.class(), Class::Permanent);
    }
}

#[test]
fn missing_home_runs_in_the_root_directory() {
    let home = Home::new("nohome");
    let out = home.dir.join("cwd");
    // Let the command's user write the result whichever user that is.
    std::fs::set_permissions(&home.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let command = format!("pwd > {}", out.display());
    let mut mda = home.mda(&command, LONG);
    let missing = home.dir.join("does-not-exist");
    mda.user.directory = &missing;
    run(&mda).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "/\n");
}
