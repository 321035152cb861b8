//! The control socket: where it is, and what goes over it. Every local user
//! can connect (smtpctl, sendmail), so the daemon treats what arrives as
//! untrusted: one bounded frame first, checked, with the peer's credentials
//! taken from the kernel (SO_PEERCRED), never from the frame.
//!
//! A connection starts with one [`Request`] frame. `Enqueue` turns the rest
//! of the connection into an SMTP session with the daemon (the local
//! enqueue path, `listen on socket`); every other request gets one
//! [`Reply`] frame and the connection ends.

use std::path::{Path, PathBuf};

use rsmtpd_config::model::Config;
use serde::{Deserialize, Serialize};

/// OpenSMTPD's socket, for the default spool.
pub const DEFAULT_SOCKET: &str = "/var/run/smtpd.sock";
/// The spool whose daemon uses [`DEFAULT_SOCKET`].
pub const DEFAULT_SPOOL: &str = "/var/spool/smtpd";
/// The socket's name inside any other spool.
pub const SOCKET_NAME: &str = "smtpd.sock";

/// Where the daemon of `config` listens for smtpctl and sendmail: OpenSMTPD's
/// path for the default spool, else inside the spool (`queue path`), so
/// several instances on one machine each have their own.
pub fn socket_path(config: &Config) -> PathBuf {
    if config.queue.path == Path::new(DEFAULT_SPOOL) {
        PathBuf::from(DEFAULT_SOCKET)
    } else {
        config.queue.path.join(SOCKET_NAME)
    }
}

/// The first (and, but for `Enqueue`, only) frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Submit mail: the connection becomes an SMTP session.
    Enqueue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The request was refused; the reason is for the user.
    Refused(String),
}
