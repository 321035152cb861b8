//! IPC between rsmtpd's processes.
//!
//! Each pair of roles that talk shares one Unix stream socketpair. Every
//! frame on it carries one typed message (serde + postcard) and up to
//! [`MAX_FDS`] file descriptors (SCM_RIGHTS). A peer that sends anything
//! unexpected gets a typed [`IpcError`], never a panic, and the link is
//! considered broken from then on. The wire format and the rules are in
//! `docs/ipc.md`.
//!
//! - [`frame`]: the wire format and a sans-IO decoder (what the fuzzer hits).
//! - [`Channel`] (async, tokio) and [`BlockingChannel`]: typed send/recv with fds.
//! - [`pair`], [`spawn_with_socket`], [`take_from_parent`]: sockets for children.
//! - [`peer_cred`]: who is at the other end (for the control socket).

use thiserror::Error;

mod channel;
mod codec;
mod fdpass;
pub mod frame;
mod process;

pub use channel::{BlockingChannel, Channel, Incoming, Receiver, Sender};
pub use codec::{decode_message, encode_message};
pub use frame::{FrameError, MAX_FDS, MAX_PAYLOAD_LEN};
pub use process::{PeerCred, pair, peer_cred, spawn_with_socket, take_from_parent};

/// Everything that can go wrong on a link.
///
/// Apart from `Io`, `Encode`, `NoRuntime` and `NotAUnixStream` (our side),
/// each variant means the peer is buggy or hostile.
#[derive(Debug, Error)]
pub enum IpcError {
    #[error("ipc socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ipc framing: {0}")]
    Frame(#[from] FrameError),
    #[error("cannot encode ipc message: {0}")]
    Encode(postcard::Error),
    #[error("malformed ipc message: {0}")]
    Decode(postcard::Error),
    #[error("ipc message followed by {extra} unexpected bytes in its frame")]
    TrailingBytes { extra: usize },
    #[error("frame declares {declared} file descriptors but {received} arrived with it")]
    FdCountMismatch { declared: usize, received: usize },
    #[error("{count} file descriptors arrived that no frame claims")]
    UnexpectedFds { count: usize },
    #[error("file descriptors arrived with bytes that do not start a frame")]
    MisplacedFds,
    #[error("ancillary data was truncated")]
    ControlTruncated,
    #[error("unexpected kind of ancillary data")]
    UnexpectedControlMessage,
    #[error("ipc link is broken by an earlier error")]
    Broken,
    #[error("not a unix stream socket")]
    NotAUnixStream,
    #[error("async ipc channel created outside a tokio runtime")]
    NoRuntime,
}
