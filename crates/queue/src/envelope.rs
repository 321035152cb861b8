//! The envelope: the queue's record of ONE recipient of one message.
//!
//! Every fact a delivery, a retry, a bounce or a DSN needs later is here, so
//! that the message file is only ever read to be sent. The delivery method
//! itself is not: only the name of the action that matched, resolved against
//! the config current at delivery time.

use std::fmt;
use std::net::IpAddr;

use crate::id::{EnvelopeId, MsgId};

/// How the envelope is delivered: by the parent forking a local delivery, or
/// by the mta process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dispatcher {
    Local,
    Relay,
}

/// The reverse path (MAIL FROM). The null sender `<>` is its own variant, so
/// there is no "empty address" to confuse with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    Null,
    Address(String),
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Null => f.write_str("<>"),
            Sender::Address(a) => f.write_str(a),
        }
    }
}

/// DSN NOTIFY (RFC 3461): NEVER, or a non-empty subset of the three events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnNotify {
    Never,
    /// At least one is true; the encoder refuses all three false.
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// DSN RET (RFC 3461): what a bounce carries of the original message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnRet {
    Full,
    Headers,
}

/// MAIL BODY= (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// Where the message came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The local socket (`sendmail`, `smtpctl`); no address.
    LocalSocket,
    /// A network client, with its reverse DNS name when it had one.
    Inet { addr: IpAddr, rdns: Option<String> },
}

/// What a local delivery writes to instead of the action's mailbox, when
/// an alias or a .forward entry said so. (serde: it travels to the parent
/// with a delivery request.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LocalTarget {
    /// `/path`: append to this file (mbox format) as the user.
    File(String),
    /// `|command`: pipe the message to this command as the user.
    Command(String),
}

/// Class of a delivery failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Temporary,
    Permanent,
}

/// The outcome of the last failed attempt: class and text travel together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LastError {
    pub class: ErrorClass,
    pub text: String,
}

/// Where this recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RcptState {
    #[default]
    Pending,
    /// Delivered; kept only until a success DSN is queued.
    Delivered,
    /// Failed for good; kept only until its bounce is queued.
    Bounced,
}

/// One recipient of one message. `id.msgid()` is the message; there is no
/// second copy of the message id that could disagree with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Envelope {
    pub id: EnvelopeId,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Time to live in seconds from `created`; expiry = created + ttl.
    pub ttl: u64,
    /// Name of the `action` that matched (non-empty).
    pub action: String,
    pub dispatcher: Dispatcher,
    pub sender: Sender,
    /// The recipient as given in RCPT TO (non-empty).
    pub rcpt: String,
    /// The destination after alias/virtual/forward expansion (non-empty).
    pub dest: String,
    /// The local account the delivery runs as, when expansion chose it
    /// (a virtual user, the owner of a .forward); otherwise the parent
    /// resolves the destination's user part.
    pub user: Option<String>,
    /// A file or command from an alias or .forward entry.
    pub target: Option<LocalTarget>,

    pub dsn_notify: Option<DsnNotify>,
    pub dsn_orcpt: Option<String>,
    pub dsn_ret: Option<DsnRet>,
    pub dsn_envid: Option<String>,
    pub body: BodyType,
    pub smtputf8: bool,

    /// HELO/EHLO argument; empty for local submissions that gave none.
    pub helo: String,
    pub origin: Origin,
    /// Hostname of the listener that received the message.
    pub hostname: String,
    pub tag: Option<String>,
    pub auth_user: Option<String>,

    pub retry: u32,
    /// Unix seconds of the last attempt; `None` before the first.
    pub last_try: Option<u64>,
    /// Unix seconds when the next attempt is due.
    pub next_try: u64,
    pub last_error: Option<LastError>,
    pub hold: bool,
    pub state: RcptState,
}

impl Envelope {
    pub fn msgid(&self) -> MsgId {
        self.id.msgid()
    }

    /// Unix second after which the envelope expires (bounces).
    pub fn expires_at(&self) -> u64 {
        self.created.saturating_add(self.ttl)
    }
}
