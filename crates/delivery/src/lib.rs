//! Local delivery methods. Each runs in a child process that already is the
//! recipient user (the parent set uid, gids and a clean environment), reads
//! the message from a file descriptor the queue opened, and reports one
//! [`Outcome`]. Nothing here runs as root and nothing here is given a path
//! that came from the network without the caller having checked it.

pub mod date;
pub mod format;
pub mod headers;
pub mod lmtp;
pub mod maildir;
pub mod mbox;
pub mod mda;

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry later (disk full, a lock, a missing directory we could not make).
    Temporary,
    /// Bounce now (a mail loop, a refused mailbox).
    Permanent,
}

/// Why a delivery failed, with its class and an enhanced status code for
/// the bounce.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("mail loop: the message already has Delivered-To: {0}")]
    Loop(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the message: {0}")]
    Read(#[source] std::io::Error),
    #[error("the message's header block is larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("{0} is not a directory")]
    NotADirectory(std::path::PathBuf),
}

impl DeliveryError {
    pub fn class(&self) -> Class {
        match self {
            DeliveryError::Loop(_) | DeliveryError::HeadersTooLarge(_) => Class::Permanent,
            DeliveryError::Io { .. } | DeliveryError::Read(_) | DeliveryError::NotADirectory(_) => {
                Class::Temporary
            }
        }
    }

    /// RFC 3463 status for the bounce or the log.
    pub fn status(&self) -> &'static str {
        match self {
            DeliveryError::Loop(_) => "5.4.6",
            DeliveryError::HeadersTooLarge(_) => "5.3.4",
            DeliveryError::Io { .. } | DeliveryError::Read(_) => "4.2.0",
            DeliveryError::NotADirectory(_) => "4.2.1",
        }
    }
}
