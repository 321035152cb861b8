//! The control socket's protocol: where the socket is, and what goes over
//! it. Every local user
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
use rsmtpd_ipc::frame::{FrameHeader, HEADER_LEN};
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
    /// An smtpctl command.
    Command(Command),
}

/// smtpctl's commands that need the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    ShowQueue,
    ShowEnvelope(u64),
    /// Answered with the message file's descriptor.
    ShowMessage(u64),
    ShowStats,
    ShowStatus,
    Schedule(Selector),
    Remove(Selector),
    Pause(Target),
    Resume(Target),
    /// Read a file or db table again (lookup's copy: rules, aliases,
    /// virtual, credentials).
    UpdateTable(String),
    /// Read the configuration again, as SIGHUP does (an extension).
    Reload,
    /// `log verbose` (true) or `log brief`, in every process.
    LogVerbose(bool),
    /// `trace` (true) or `untrace` a subsystem's debug lines.
    Trace {
        subsystem: String,
        on: bool,
    },
    /// Take in envelopes put into the spool by hand.
    Discover(Selector),
    /// The mta's state: hosts connected to, last results by domain,
    /// transactions by domain, routes (addresses) and their penalties.
    ShowHosts,
    ShowHoststats,
    ShowRelays,
    ShowRoutes,
    /// Lift a route's penalty (the route is `address:port`).
    ResumeRoute(String),
}

impl Command {
    /// What any local user may ask; everything else needs the daemon's
    /// user (root, or whoever started a non-root daemon).
    pub fn is_open_to_all(&self) -> bool {
        matches!(self, Command::ShowStats | Command::ShowStatus)
    }
}

/// Which envelopes: one, a message's, or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    Envelope(u64),
    Message(u32),
    All,
}

impl Selector {
    /// 16 hex digits (an envelope id), 8 (a message id), or `all`.
    pub fn parse(s: &str) -> Option<Selector> {
        if s == "all" {
            return Some(Selector::All);
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match s.len() {
            16 => u64::from_str_radix(s, 16).ok().map(Selector::Envelope),
            1..=8 => u32::from_str_radix(s, 16).ok().map(Selector::Message),
            _ => None,
        }
    }

    pub fn matches(self, evpid: u64) -> bool {
        match self {
            Selector::Envelope(e) => e == evpid,
            Selector::Message(m) => (evpid >> 32) as u32 == m,
            Selector::All => true,
        }
    }
}

/// What `pause` and `resume` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Mda,
    Mta,
    Smtp,
    Envelope(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The request was refused; the reason is for the user.
    Refused(String),
    Queue(Vec<QueueLine>),
    /// Text to print as it is (show envelope, show stats, show status).
    Text(String),
    /// A command that changes state worked.
    Done(String),
    /// `show message`: the message file comes with this frame.
    Message,
}

/// One envelope as `show queue` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLine {
    pub evpid: u64,
    /// `inet4`, `inet6` or `local`.
    pub family: String,
    /// `mta`, `mda` or `bounce`.
    pub kind: String,
    pub flags: Vec<String>,
    pub sender: String,
    pub rcpt: String,
    pub dest: String,
    pub created: u64,
    pub expires: u64,
    pub last_try: u64,
    pub retries: u32,
    /// `pending`, `inflight` or `offline`.
    pub runstate: String,
    /// Seconds until the next try (pending), since the try began
    /// (inflight); `None` offline.
    pub delay: Option<u64>,
    pub error: String,
}

impl QueueLine {
    /// The line for envelope `e`; `now` is `None` when the daemon is down
    /// (no delay to show).
    pub fn new(e: &rsmtpd_queue::Envelope, runstate: &str, now: Option<u64>) -> QueueLine {
        use rsmtpd_queue::{Dispatcher, Origin, Sender};
        let family = match &e.origin {
            Origin::LocalSocket => "local",
            Origin::Inet { addr, .. } if addr.is_ipv4() => "inet4",
            Origin::Inet { .. } => "inet6",
        };
        let bounce = e.sender == Sender::Null && e.helo.is_empty();
        let kind = match (bounce, e.dispatcher) {
            (true, _) => "bounce",
            (false, Dispatcher::Relay) => "mta",
            (false, Dispatcher::Local) => "mda",
        };
        let mut flags = Vec::new();
        if e.auth_user.is_some() {
            flags.push("authenticated".to_owned());
        }
        if e.hold {
            flags.push("hold".to_owned());
        }
        let delay = now.map(|now| match runstate {
            "inflight" => now.saturating_sub(e.last_try.unwrap_or(now)),
            _ => e.next_try.saturating_sub(now),
        });
        QueueLine {
            evpid: e.id.get(),
            family: family.into(),
            kind: kind.into(),
            flags,
            sender: e.sender.to_string(),
            rcpt: e.rcpt.clone(),
            dest: e.dest.clone(),
            created: e.created,
            expires: e.expires_at(),
            last_try: e.last_try.unwrap_or(0),
            retries: e.retry,
            runstate: runstate.into(),
            delay,
            error: e
                .last_error
                .as_ref()
                .map(|l| l.text.clone())
                .unwrap_or_default(),
        }
    }
}

/// A request frame the daemon refuses to read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("bad frame: {0}")]
    Frame(#[from] rsmtpd_ipc::FrameError),
    #[error("descriptors are not accepted")]
    Descriptors,
    #[error("{0} bytes, at most {MAX_REQUEST}")]
    TooBig(usize),
    #[error("not a request: {0}")]
    Decode(#[from] rsmtpd_ipc::IpcError),
}

/// A request is a few words; anything bigger is refused unread.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Checks a request frame's header: how many payload bytes to read next.
/// The daemon reads exactly that much and no more: after `Enqueue` the
/// connection carries SMTP.
pub fn request_length(header: [u8; HEADER_LEN]) -> Result<usize, RequestError> {
    let header = FrameHeader::decode(header)?;
    if header.fd_count() != 0 {
        return Err(RequestError::Descriptors);
    }
    if header.payload_len() > MAX_REQUEST {
        return Err(RequestError::TooBig(header.payload_len()));
    }
    Ok(header.payload_len())
}

/// The request in a frame's payload.
pub fn decode_request(payload: &[u8]) -> Result<Request, RequestError> {
    Ok(rsmtpd_ipc::decode_message::<Request>(payload)?)
}
