//! Sockets between processes: creating a pair, handing one end to a
//! re-executed child, and asking who is at the other end.
//!
//! A child gets exactly one socket by inheritance, as its standard input.
//! std's `Command` puts it there between fork and exec, so there is no
//! window in which another thread's fork could inherit it and no unsafe
//! `pre_exec`. Every further link (smtp <-> queue, ...) travels to the
//! child as an fd inside a frame on that first socket.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, getsockname, getsockopt, socketpair, sockopt,
};
use nix::unistd::{Gid, Pid, Uid};

use crate::IpcError;

/// A connected pair of Unix stream sockets, both close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd), IpcError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok((a, b))
}

/// Spawns `cmd` with `child_end` as the child's standard input (fd 0), the
/// child's only inherited IPC socket.
///
/// Takes the `Command` by value because it holds a copy of `child_end`
/// until dropped: a parent that kept it would never see end of stream when
/// the child dies.
pub fn spawn_with_socket(mut cmd: Command, child_end: OwnedFd) -> Result<Child, IpcError> {
    cmd.stdin(Stdio::from(child_end));
    let child = cmd.spawn()?;
    drop(cmd);
    Ok(child)
}

/// In a child started by [`spawn_with_socket`]: takes the IPC socket off
/// standard input and puts `/dev/null` there instead, so nothing else in
/// the process reads or writes the socket by way of stdin. The returned
/// fd is close-on-exec. Call once, early, before chroot (for `/dev/null`).
pub fn take_from_parent() -> Result<OwnedFd, IpcError> {
    let stdin = io::stdin();
    check_unix_stream(&stdin.as_fd())?;
    // try_clone_to_owned is F_DUPFD_CLOEXEC: the copy does not leak into
    // programs this process might exec.
    let sock = stdin.as_fd().try_clone_to_owned()?;
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null).map_err(io::Error::from)?;
    Ok(sock)
}

/// Fails with [`IpcError::NotAUnixStream`] unless `fd` is a Unix stream socket.
pub(crate) fn check_unix_stream(fd: &impl AsFd) -> Result<(), IpcError> {
    match getsockopt(fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        _ => return Err(IpcError::NotAUnixStream),
    }
    getsockname::<UnixAddr>(fd.as_fd().as_raw_fd()).map_err(|_| IpcError::NotAUnixStream)?;
    Ok(())
}

/// Who is at the other end of a Unix socket, as the kernel recorded it
/// when the socket was connected (SO_PEERCRED): not something the peer
/// can claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: Uid,
    pub gid: Gid,
    pub pid: Pid,
}

/// The credentials of the peer of a connected Unix socket.
///
/// Meant for sockets made by `connect`/`accept` (the control socket). For
/// a socketpair the kernel records the process that *created* the pair,
/// so on a parent-child link it names the parent on both ends.
pub fn peer_cred(sock: &impl AsFd) -> Result<PeerCred, IpcError> {
    let c = getsockopt(sock, sockopt::PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerCred {
        uid: Uid::from_raw(c.uid()),
        gid: Gid::from_raw(c.gid()),
        pid: Pid::from_raw(c.pid()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn pair_is_connected_and_cloexec() {
        let (a, b) = pair().unwrap();
        for fd in [&a, &b] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
            check_unix_stream(fd).unwrap();
        }
        let mut a = UnixStream::from(a);
        let mut b = UnixStream::from(b);
        a.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn peer_cred_is_us() {
        let (a, _b) = pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.uid, Uid::effective());
        assert_eq!(c.gid, Gid::effective());
        assert_eq!(c.pid, Pid::this());
    }

    #[test]
    fn files_and_datagram_sockets_are_not_links() {
        let f = File::open("/dev/null").unwrap();
        assert!(matches!(
            check_unix_stream(&f),
            Err(IpcError::NotAUnixStream)
        ));
        let (d, _) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert!(matches!(
            check_unix_stream(&d),
            Err(IpcError::NotAUnixStream)
        ));
    }
}
