//! A parent hands a socket to a re-executed child, as the daemon does.
//!
//! The child is this test binary run again with a filter that selects
//! `child_role` and an environment variable that tells it to act.

// Test helpers outside #[test] fns panic on purpose, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::Write;
use std::process::{Command, Stdio};

use nix::sys::socket::{getsockopt, sockopt};
use rsmtpd_ipc::{BlockingChannel, Channel, pair, spawn_with_socket, take_from_parent};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "RSMTPD_IPC_TEST_CHILD";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ToChild {
    /// Write this text into the fd that comes with the message.
    WriteInto(String),
    /// Here is a second link; say hello on it.
    NewLink,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum FromChild {
    Written { pid: u32, stdin_is_socket: bool },
    Hello,
}

/// The child's side. A no-op unless started by the parent test below.
#[test]
fn child_role() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let sock = take_from_parent().unwrap();
    let stdin_is_socket = getsockopt(&std::io::stdin(), sockopt::SockType).is_ok();
    let mut ch = BlockingChannel::<FromChild, ToChild>::from_fd(sock).unwrap();
    let (msg, mut fds) = ch.recv().unwrap().unwrap();
    let ToChild::WriteInto(text) = msg else {
        panic!("unexpected {msg:?}")
    };
    let mut f = File::from(fds.pop().unwrap());
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    ch.send(
        &FromChild::Written {
            pid: std::process::id(),
            stdin_is_socket,
        },
        vec![],
    )
    .unwrap();
    // The second link arrives as an fd and runs async.
    let (msg, mut fds) = ch.recv().unwrap().unwrap();
    assert_eq!(msg, ToChild::NewLink);
    let link = fds.pop().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut second = Channel::<FromChild, ToChild>::from_fd(link).unwrap();
        second.send(&FromChild::Hello, vec![]).await.unwrap();
        drop(second);
        let mut first = ch.into_async().unwrap();
        assert!(first.recv().await.unwrap().is_none());
    });
}

#[test]
fn parent_hands_socket_to_child() {
    let path = std::env::temp_dir().join(format!("rsmtpd-ipc-{}-child", std::process::id()));
    let file = File::create(&path).unwrap();

    let (ours, theirs) = pair().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_role", "--exact", "--test-threads=1", "--quiet"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::null());
    let mut child = spawn_with_socket(cmd, theirs).unwrap();

    let mut ch = BlockingChannel::<ToChild, FromChild>::from_fd(ours).unwrap();
    // A broken child fails the test instead of hanging it.
    let limit = Some(std::time::Duration::from_secs(20));
    ch.get_ref().set_read_timeout(limit).unwrap();
    // SO_PEERCRED of a socketpair names the process that created the
    // pair, not the one holding the other end now: it is for sockets made
    // by connect/accept (the control socket), not for the links.
    assert_eq!(
        ch.peer_cred().unwrap().pid.as_raw(),
        std::process::id() as i32
    );
    ch.send(
        &ToChild::WriteInto("hello from the queue\n".into()),
        vec![file.into()],
    )
    .unwrap();
    let (reply, fds) = ch.recv().unwrap().unwrap();
    assert!(fds.is_empty());
    assert_eq!(
        reply,
        FromChild::Written {
            pid: child.id(),
            stdin_is_socket: false
        }
    );
    assert_eq!(fs::read(&path).unwrap(), b"hello from the queue\n");

    let (second_ours, second_theirs) = pair().unwrap();
    ch.send(&ToChild::NewLink, vec![second_theirs]).unwrap();
    let mut second = BlockingChannel::<ToChild, FromChild>::from_fd(second_ours).unwrap();
    second.get_ref().set_read_timeout(limit).unwrap();
    assert_eq!(second.recv().unwrap().unwrap().0, FromChild::Hello);
    assert!(second.recv().unwrap().is_none());

    // Closing our end is the child's cue to exit; had the parent kept a
    // copy of the child's end, the child would wait forever.
    drop(ch);
    assert!(child.wait().unwrap().success());
    fs::remove_file(&path).unwrap();
}
