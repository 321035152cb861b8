//! The two system calls under every channel: one `sendmsg` or `recvmsg`
//! step, with file descriptors as SCM_RIGHTS ancillary data.
//!
//! Both are plain blocking-or-not calls; the async and blocking channels
//! drive them. Received fds become [`OwnedFd`]s before anything else can
//! fail, so every error path closes them.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::IpcError;

/// Most fds Linux passes in one message (`SCM_MAX_FD`). The receive
/// control buffer has room for that many, so the kernel never truncates
/// it: on truncation some fds would already be installed in our table,
/// and nix gives no way to reach them, so they would leak.
const KERNEL_MAX_FDS: usize = 253;

/// A control-message buffer big enough for anything a peer can send.
pub(crate) fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!([RawFd; KERNEL_MAX_FDS])
}

/// One `sendmsg`: as many of `bytes` as the socket takes, with `fds`
/// attached (the kernel ties them to the first byte sent). Returns the
/// count of bytes sent; `WouldBlock` passes through for the async driver.
pub(crate) fn send_step(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        // MSG_NOSIGNAL: a dead peer is an EPIPE error, not a SIGPIPE.
        match sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one `recvmsg` brought: a byte count (0 at end of stream) and the
/// fds that came with those bytes.
#[derive(Debug)]
pub(crate) struct Received {
    pub bytes: usize,
    pub fds: Vec<OwnedFd>,
}

/// One `recvmsg` into `buf`. The outer `io::Result` is the system call
/// (`WouldBlock` passes through); the inner one is a peer that sent
/// ancillary data we do not accept. In that case the fds that came are
/// already closed.
pub(crate) fn recv_step(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<Result<Received, IpcError>> {
    let mut iov = [IoSliceMut::new(buf)];
    loop {
        // MSG_CMSG_CLOEXEC: received fds must not leak into anything we exec.
        let msg = match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut *cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let bytes = msg.bytes;
        // Err only if the kernel truncated the control data, which our
        // buffer size rules out for SCM_RIGHTS (see KERNEL_MAX_FDS).
        let Ok(cmsgs) = msg.cmsgs() else {
            return Ok(Err(IpcError::ControlTruncated));
        };
        let mut fds = Vec::new();
        let mut unexpected = false;
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmRights(raw) => fds.extend(adopt_received_fds(raw)),
                // We never enable SO_PASSCRED and the like, so anything
                // else is a peer or kernel surprise; keep adopting the fds
                // of later messages so they are closed too.
                _ => unexpected = true,
            }
        }
        if unexpected {
            drop(fds);
            return Ok(Err(IpcError::UnexpectedControlMessage));
        }
        return Ok(Ok(Received { bytes, fds }));
    }
}

/// Takes ownership of fds the kernel just installed for us.
#[allow(unsafe_code)]
fn adopt_received_fds(raw: Vec<RawFd>) -> impl Iterator<Item = OwnedFd> {
    // The kernel never hands out negative numbers; filtering keeps the
    // OwnedFd invariant (never -1) even if that changed.
    raw.into_iter().filter(|&fd| fd >= 0).map(|fd| {
        // SAFETY: `fd` comes from an SCM_RIGHTS control message that
        // recvmsg(2) just returned: the kernel installed it in our fd table
        // for this call alone, and no other code in the process has seen the
        // number. So it is open, and this OwnedFd is its only owner, which
        // closes it exactly once.
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
}
