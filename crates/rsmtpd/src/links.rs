//! The messages of every link between the daemon's processes, one enum per
//! direction. A frame carries one of these (serde + postcard, see
//! rsmtpd-ipc) and, where a variant says so, file descriptors.
//!
//! The links:
//!
//! ```text
//!            parent
//!   (Start, Shutdown; local deliveries with queue)
//!   /     |       |          |          \
//! smtp  queue  scheduler   lookup    control
//!   \____/ \______/ \________/
//!   smtp<->queue  queue<->scheduler  smtp,queue<->lookup
//! ```

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use rsmtpd_config::Config;

use crate::privsep::Mode;
use crate::smtpd::Subsystem;

/// The processes of the daemon: the parent, and the child roles it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Parent,
    Smtp,
    Queue,
    Scheduler,
    Lookup,
    Mta,
    Control,
    Crypto,
}

impl Role {
    /// The roles the parent starts, each as its own process. crypto comes
    /// first: smtp and mta ask it for the certificates as they start.
    pub const CHILDREN: [Role; 7] = [
        Role::Crypto,
        Role::Smtp,
        Role::Queue,
        Role::Scheduler,
        Role::Lookup,
        Role::Mta,
        Role::Control,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Parent => "parent",
            Role::Smtp => "smtp",
            Role::Queue => "queue",
            Role::Scheduler => "scheduler",
            Role::Lookup => "lookup",
            Role::Mta => "mta",
            Role::Control => "control",
            Role::Crypto => "crypto",
        }
    }

    /// A child role by its name (`--role NAME`).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::CHILDREN.into_iter().find(|r| r.name() == name)
    }
}

/// What each fd passed with [`ParentToChild::Start`] is, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// A socket to another role.
    Link(Role),
    /// A bound TCP listener: index into `Config::listeners`, the address
    /// it is bound to, and the server name it presents (`hostname`, or the
    /// `hostnames` table's entry for the address, or the server name).
    Listener {
        index: usize,
        addr: SocketAddr,
        hostname: String,
    },
    /// The bound control socket (to the control role).
    ControlSocket,
}

/// Everything a child needs, sent once, first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub config: Config,
    pub mode: Mode,
    pub verbose: u8,
    /// Log to stderr (`-d`) rather than syslog.
    pub foreground_log: bool,
    pub paused: Vec<Subsystem>,
    pub tuning: crate::tuning::Tuning,
    pub fds: Vec<FdKind>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ParentToChild {
    /// First frame; its fds are described by `Start::fds`.
    Start(Box<Start>),
    /// Stop cleanly: sessions get 421, the queue is left consistent.
    Shutdown,
    /// To the queue: the outcomes of a local delivery it asked for, one
    /// per envelope (several for an LMTP transaction).
    Delivered { outcomes: Vec<(u64, Outcome)> },
    /// To lookup: a user's .forward, read as that user.
    Forward { id: u64, result: ForwardResult },
    /// To lookup: the verdict on a system account's password.
    Password { id: u64, verdict: AuthVerdict },
    /// A new configuration (SIGHUP, `smtpctl reload`): new sessions,
    /// lookups and deliveries use it; work under way finishes on the old.
    Reload(Box<Config>),
    /// To control: how `smtpctl reload` went.
    Reloaded(Result<(), String>),
    /// `smtpctl log` and `trace`: what to log from now on.
    Logging(crate::logging::Settings),
}

/// A `.forward` as the parent read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardResult {
    Found(String),
    None,
    /// Refused (unsafe owner, mode or type) or unreadable: a temporary
    /// failure, with the reason.
    Refused(String),
}

/// The account a .forward belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardOwner {
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChildToParent {
    /// Start-up is done (privileges dropped, links up).
    Ready,
    /// From the queue: deliver these envelopes (one message) locally.
    /// Carries one fd: the message, opened read-only.
    Deliver(Box<LocalDelivery>),
    /// From lookup: read this user's .forward.
    ReadForward { id: u64, owner: ForwardOwner },
    /// From control: `smtpctl reload`.
    Reload,
    /// From control: `smtpctl log verbose|brief`, `trace`, `untrace`.
    Logging(LogChange),
    /// From lookup: check a system account's password (shadow file).
    CheckPassword {
        id: u64,
        user: String,
        password: Secret,
    },
}

/// A change of what is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogChange {
    Verbose(bool),
    /// A subsystem's bit (see [`crate::logging::trace_bit`]), on or off.
    Trace {
        bit: u32,
        on: bool,
    },
}

/// A password in transit. Its `Debug` never shows it, so no log line can.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The answer to an AUTH attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthVerdict {
    Accepted,
    /// Unknown user or wrong password: the client cannot tell which.
    Rejected,
    /// The credentials could not be checked (a table failed, an
    /// unsupported hash); the reason is for the log, not the client.
    Unavailable(String),
}

/// A local delivery request: what the parent needs to pick the users and
/// the method from the *current* configuration. Several recipients only
/// for an `lmtp` action (one LMTP transaction for all, RFC 2033); every
/// other method gets one recipient per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalDelivery {
    /// The action the recipients matched when received.
    pub action: String,
    /// MAIL FROM (empty for the null sender).
    pub sender: String,
    /// Never empty; the parent answers one `Delivered` per recipient.
    pub recipients: Vec<LocalRecipient>,
}

/// One envelope of a [`LocalDelivery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecipient {
    pub evpid: u64,
    /// The recipient as received.
    pub rcpt: String,
    /// The recipient after expansion.
    pub dest: String,
    /// The account to deliver as, when expansion chose it.
    pub user: Option<String>,
    /// A file or command from an alias or .forward entry.
    pub target: Option<rsmtpd_queue::LocalTarget>,
    pub created: u64,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Delivered: into a mailbox, a program, or over LMTP.
    Ok,
    /// Accepted by a next hop that does not offer DSN: a success report
    /// the sender asked for is ours to send, as "relayed".
    Relayed,
    /// Accepted by a next hop that offers DSN: the NOTIFY went with the
    /// message, reports are that server's job now.
    PassedOn,
    /// Retry later. Text for the log and a later bounce.
    Temporary { status: String, text: String },
    /// Bounce now.
    Permanent { status: String, text: String },
}

// ------------------------------------------------------- lookup (rules)

/// The facts of a session that rules can test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFacts {
    /// `None` for the local enqueuer.
    pub peer: Option<IpAddr>,
    pub rdns: Option<String>,
    pub helo: Option<String>,
    pub tag: Option<String>,
    pub auth_user: Option<String>,
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuery {
    pub facts: SessionFacts,
    /// MAIL FROM as `user@domain`, empty for `<>`.
    pub sender: String,
    /// RCPT TO as `user@domain` or `user`.
    pub rcpt: String,
}

/// One delivery a recipient expanded to: one envelope each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// The action that delivers it.
    pub action: String,
    pub relay: bool,
    /// The destination address after expansion.
    pub dest: String,
    /// The account a local delivery runs as; `None` with a target means
    /// the daemon's unprivileged account (alias table entries).
    pub user: Option<String>,
    /// A file or command from an alias or .forward entry.
    pub target: Option<rsmtpd_queue::LocalTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAnswer {
    /// Accepted; never empty.
    Accept { deliveries: Vec<Planned> },
    /// Refuse with this reply (code, enhanced status, text).
    Reject {
        code: u16,
        status: String,
        text: String,
    },
    /// A table could not answer: 451.
    TempFail { text: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToLookup {
    Route {
        id: u64,
        query: RouteQuery,
    },
    /// AUTH: check `user`'s password in the listener's credentials table,
    /// or the system accounts when there is none.
    Authenticate {
        id: u64,
        table: Option<rsmtpd_config::model::TableId>,
        user: String,
        password: Secret,
    },
    /// `smtpctl update table NAME`: read the table's file again.
    UpdateTable {
        id: u64,
        name: String,
    },
    /// `senders <table>`: may this authenticated user send as `sender`?
    Sender {
        id: u64,
        table: rsmtpd_config::model::TableId,
        user: String,
        sender: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromLookup {
    Route {
        id: u64,
        answer: RouteAnswer,
    },
    Authenticated {
        id: u64,
        verdict: AuthVerdict,
    },
    /// `None`: the table could not answer.
    Sender {
        id: u64,
        allowed: Option<bool>,
    },
    TableUpdated {
        id: u64,
        result: Result<(), String>,
    },
}

// ------------------------------------------------------------ smtp <-> queue

/// One accepted recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedRcpt {
    pub rcpt: String,
    pub delivery: Planned,
    /// NOTIFY as given (`SUCCESS,FAILURE`), empty when absent.
    pub notify: String,
    pub orcpt: Option<String>,
}

/// What the queue needs to make the envelopes of a received message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub sender: String,
    pub recipients: Vec<SubmittedRcpt>,
    pub facts: SessionFacts,
    /// The listener's server name.
    pub hostname: String,
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub body_8bit: bool,
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmtpToQueue {
    /// Make an incoming message; answered by `Created` with its fd.
    Create { id: u64 },
    /// The message is complete: make it durable, then answer.
    Commit {
        id: u64,
        msgid: u32,
        submission: Box<Submission>,
    },
    /// The client went away or the message was refused.
    Abort { msgid: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueToSmtp {
    /// Carries one fd: the message file, open for writing.
    Created {
        id: u64,
        msgid: u32,
    },
    CreateFailed {
        id: u64,
        reason: String,
    },
    Committed {
        id: u64,
        msgid: u32,
    },
    CommitFailed {
        id: u64,
        reason: String,
    },
}

// ------------------------------------------------------- queue <-> scheduler

/// What the scheduler keeps of an envelope: metadata only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub evpid: u64,
    pub relay: bool,
    pub created: u64,
    pub expires: u64,
    pub retries: u32,
    /// Unix time of the next attempt (0: now).
    pub next_try: u64,
    /// Held by `smtpctl pause envelope`: not tried (it still expires).
    pub hold: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueToScheduler {
    /// New or reloaded envelopes.
    Insert(Vec<Schedule>),
    /// The envelope is gone (delivered, bounced, expired).
    Remove { evpid: u64 },
    /// A temporary failure: schedule the next try.
    Retry { evpid: u64 },
    /// `smtpctl schedule`: try these now (held ones stay held).
    Now { evpids: Vec<u64> },
    /// `smtpctl pause|resume envelope`: no try while held.
    Hold { evpid: u64, hold: bool },
    /// `smtpctl pause|resume mda|mta`.
    Pause {
        local: Option<bool>,
        relay: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerToQueue {
    /// Attempt these deliveries now: everything due at once, so that the
    /// queue can group one message's recipients into one transaction.
    Deliver { evpids: Vec<u64> },
    /// The envelope outlived its ttl: bounce it.
    Expire { evpid: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::CHILDREN {
            assert_eq!(Role::from_name(role.name()), Some(role));
        }
        assert_eq!(Role::from_name("parent"), None);
    }
}

// --------------------------------------------------------------- queue <-> mta

/// One recipient of a relayed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRcpt {
    pub evpid: u64,
    /// The address to send RCPT TO for.
    pub dest: String,
    /// DSN NOTIFY as received, passed on when the next server offers DSN.
    pub notify: Option<Notify>,
    /// DSN ORCPT as received (`addr-type`, decoded address).
    pub orcpt: Option<(String, String)>,
}

/// DSN NOTIFY (RFC 3461): never, or some of success, failure, delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notify {
    Never,
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// A message to hand to another server: one transaction, recipients of one
/// domain and one action. Carries one fd: the message, read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRequest {
    pub id: u64,
    /// The relay action, looked up in the current configuration.
    pub action: String,
    /// MAIL FROM, empty for the null sender.
    pub sender: String,
    /// The recipients' domain (the route is chosen for it).
    pub domain: String,
    pub recipients: Vec<RelayRcpt>,
    pub body_8bit: bool,
    pub smtputf8: bool,
    /// The message size, for SIZE=.
    pub size: u64,
    /// DSN RET: true for FULL, false for HDRS, absent when not given.
    pub ret_full: Option<bool>,
    /// DSN ENVID as received (decoded).
    pub envid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueToMta {
    Relay(Box<RelayRequest>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MtaToQueue {
    /// One outcome per recipient of request `id`.
    Done {
        id: u64,
        outcomes: Vec<(u64, Outcome)>,
        /// The host that gave the outcomes (DSN `Remote-MTA`), when one did.
        remote_mta: Option<String>,
    },
}

// ------------------------------------------------------ smtp/mta <-> crypto

/// Requests to the crypto process, which alone holds the private keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCrypto {
    /// The certificates and key descriptions of every pki, in config order.
    Describe,
    /// Sign a handshake message with the key of pki `key`.
    Sign {
        key: usize,
        scheme: u16,
        message: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromCrypto {
    Pkis(Vec<PkiPublic>),
    Signed(Result<Vec<u8>, String>),
}

/// The public half of a pki: what smtp and mta may know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkiPublic {
    pub name: String,
    /// The certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub key: rsmtpd_tls::PublicKeyInfo,
}

// ------------------------------------------------------------ control -> smtp

/// From control to smtp: a local submission. Carries one fd: the client's
/// connection, which speaks SMTP from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlToSmtp {
    Enqueue {
        /// Who the kernel says connected, not who the client claims to be.
        uid: u32,
        user: String,
    },
    /// `pause smtp` / `resume smtp`: stop or start accepting connections.
    Accepting(bool),
    /// How many sessions are open (`show stats`).
    Stats { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmtpToControl {
    /// Sessions open now, opened and closed since the start.
    Stats {
        id: u64,
        sessions: usize,
        opened: u64,
        closed: u64,
    },
}

// ----------------------------------------------------------- control <-> queue

/// smtpctl's queue commands, and `pause`/`resume` of mda and mta (the
/// queue passes those on to the scheduler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlToQueue {
    pub id: u64,
    pub command: rsmtpd_control::Command,
}

/// smtpctl's questions about the mta's state (`show hosts`, `show
/// hoststats`, `show relays`, `show routes`, `resume route`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlToMta {
    pub id: u64,
    pub command: rsmtpd_control::Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtaToControl {
    pub id: u64,
    pub reply: rsmtpd_control::Reply,
}

/// The answer; `show message` carries the message file's descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueToControl {
    pub id: u64,
    pub reply: rsmtpd_control::Reply,
}
