//! The durable on-disk queue of rsmtpd: ids, the envelope record and its
//! self-checking file format, the spool layout, the commit protocol (with
//! group commit) and start-up recovery.
//!
//! Plain synchronous std code: the queue process calls it, nothing else
//! touches the spool. See docs/queue.md for the layout, the format and the
//! argument why a committed message survives a crash or a power loss.

mod codec;
mod commit;
mod crc32;
mod envelope;
mod id;
mod random;
mod spool;

pub use codec::{
    DecodeError, EncodeError, FORMAT_VERSION, Field, MAX_ENVELOPE_SIZE, decode, encode,
};
pub use commit::Committer;
pub use crc32::crc32;
pub use envelope::{
    BodyType, Dispatcher, DsnNotify, DsnRet, Envelope, ErrorClass, LastError, LocalTarget, Origin,
    RcptState, Sender,
};
pub use id::{EnvelopeId, IdError, MsgId};
pub use random::Urandom;
pub use spool::{
    CorruptReason, LoadReport, MovedAside, SPOOL_DIRS, Spool, SpoolError, end_message,
    scan_read_only,
};
