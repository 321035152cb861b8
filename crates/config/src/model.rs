//! The typed configuration: what `smtpd.conf` means once parsed and checked.
//!
//! Every role of the daemon consumes these types; none of them sees text.
//! Names declared in the file (tables, actions, pki, ca, filters, procs) are
//! resolved to indices by the parser, so a dangling reference cannot exist
//! in a `Config` that passed the checks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use rsmtpd_table::TableDecl;

/// Where a directive came from, for diagnostics and logs.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Span {
    /// Index into [`Config::files`].
    pub file: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
}

/// Index of a table in [`Config::tables`].
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct TableId(pub usize);
/// Index of an action in [`Config::actions`].
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct ActionId(pub usize);
/// Index of a pki in [`Config::pkis`].
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct PkiId(pub usize);
/// Index of a ca in [`Config::cas`].
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct CaId(pub usize);
/// Index of a filter (or filter chain) in [`Config::filters`].
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct FilterId(pub usize);
/// Index of a proc in [`Config::procs`].
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct ProcId(pub usize);

/// A whole, checked configuration.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Config {
    /// Every file read, the main one first, then includes in order.
    pub files: Vec<PathBuf>,
    /// Declared tables first, then the built-in ones (`<localhost>`,
    /// `<anyhost>`, `<localnames>`, `<anydestination>`, `<getpwnam>`) and
    /// the anonymous tables made for literal values in rules and options.
    pub tables: Vec<NamedTable>,
    pub listeners: Vec<Listener>,
    /// `listen on socket`: the local enqueue path always exists; this holds
    /// its options (defaults when the directive is absent).
    pub socket: SocketListener,
    pub actions: Vec<Action>,
    /// In file order; the first matching rule wins.
    pub rules: Vec<Rule>,
    pub pkis: Vec<Pki>,
    pub cas: Vec<Ca>,
    pub procs: Vec<Proc>,
    pub filters: Vec<Filter>,
    pub smtp: SmtpOptions,
    pub queue: QueueOptions,
    /// `bounce warn-interval`: at most four delays, ascending as given.
    pub bounce_warn_interval: Vec<Duration>,
    pub mda: MdaOptions,
    pub mta: MtaOptions,
    pub scheduler: SchedulerLimits,
    pub srs: SrsOptions,
    /// `admd`: defaults to the server name when absent.
    pub admd: Option<String>,
    /// The server name (from /etc/mail/mailname or the host name).
    pub hostname: String,
}

/// A table with the name it is referred to by (`<name>` in the file).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct NamedTable {
    pub name: String,
    pub decl: TableDecl,
    /// `None` for built-in and anonymous tables.
    pub span: Option<Span>,
}

// ---------------------------------------------------------------- listeners

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet4,
    Inet6,
}

/// What `listen on` named, before resolution.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ListenOn {
    /// An IP address literal.
    Address(IpAddr),
    /// An interface or interface group (`lo`, `localhost`'s group, `egress`).
    Interface(String),
    /// A host name resolved at configuration time.
    Hostname(String),
}

/// How a listener speaks TLS.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerTls {
    #[default]
    None,
    /// STARTTLS offered (`tls`) or required before MAIL (`tls-require`).
    StartTls { required: bool, verify_client: bool },
    /// Implicit TLS (`smtps`).
    Smtps { verify_client: bool },
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListenerAuth {
    /// `auth` (true) or `auth-optional` (false).
    pub required: bool,
    /// Credentials table; `None` means the system accounts.
    pub table: Option<TableId>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Senders {
    pub table: TableId,
    pub masquerade: bool,
}

/// One `listen on` directive for an interface or address.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Listener {
    pub on: ListenOn,
    /// The addresses it resolved to at configuration time, already
    /// restricted to `family` when one was given.
    pub addresses: Vec<IpAddr>,
    pub family: Option<Family>,
    /// Explicit port; otherwise 25, or 465 for smtps.
    pub port: u16,
    pub tls: ListenerTls,
    pub pkis: Vec<PkiId>,
    pub ca: Option<CaId>,
    pub ciphers: Option<String>,
    pub protocols: Option<String>,
    pub auth: Option<ListenerAuth>,
    pub senders: Option<Senders>,
    pub tag: Option<String>,
    pub hostname: Option<String>,
    pub hostnames: Option<TableId>,
    pub mask_src: bool,
    pub received_auth: bool,
    pub no_dsn: bool,
    pub proxy_v2: bool,
    pub filter: Option<FilterId>,
    pub span: Span,
}

/// `listen on socket`: the local enqueue path.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct SocketListener {
    pub tag: Option<String>,
    pub mask_src: bool,
    pub no_dsn: bool,
    pub filter: Option<FilterId>,
    /// Where the directive was, if it was given.
    pub span: Option<Span>,
}

// ------------------------------------------------------------------ actions

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Action {
    pub name: String,
    pub dispatcher: Dispatcher,
    /// `ttl`: overrides `queue ttl` for envelopes of this action.
    pub ttl: Option<Duration>,
    pub span: Span,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub enum Dispatcher {
    Local(LocalDispatcher),
    Relay(RelayDispatcher),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LocalMethod {
    Mbox,
    /// `maildir [path] [junk]`; the path may hold format specifiers and a
    /// leading `~/` (the user's home).
    Maildir {
        path: Option<String>,
        junk: bool,
    },
    /// `lmtp destination [rcpt-to]`: host:port or a unix socket path.
    Lmtp {
        destination: String,
        rcpt_to: bool,
    },
    /// `mda command`, run through `/bin/sh -c` after expansion.
    Mda {
        command: String,
    },
    ForwardOnly,
    ExpandOnly,
}

/// How local recipients are expanded before delivery.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expansion {
    Alias(TableId),
    Virtual(TableId),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct LocalDispatcher {
    pub method: LocalMethod,
    pub expansion: Option<Expansion>,
    pub userbase: Option<TableId>,
    /// `user`: deliver as this system user.
    pub user: Option<String>,
    /// `wrapper`: a name declared by `mda wrapper`.
    pub wrapper: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProto {
    /// `smtp://`: opportunistic STARTTLS (the default).
    Smtp,
    /// `smtp+tls://`: mandatory STARTTLS.
    SmtpTls,
    /// `smtp+notls://`: plain text.
    SmtpNoTls,
    /// `lmtp://`: port required.
    Lmtp,
    /// `smtps://`: TLS on connect, port 465 by default.
    Smtps,
}

/// `[proto://[label@]]host[:port]`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub proto: RelayProto,
    pub label: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Where relayed mail goes.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub enum Route {
    /// MX lookup of the recipient domain.
    #[default]
    Mx,
    /// `host relay-url`: a smarthost.
    Host(RelayUrl),
    /// `domain <table>`: the relay url looked up by recipient domain.
    Domain(TableId),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayTls {
    /// STARTTLS when offered, unverified, plaintext fallback.
    #[default]
    Opportunistic,
    /// `tls [no-verify]`: mandatory.
    Required { verify: bool },
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SourceAddrs {
    Literal(IpAddr),
    Table(TableId),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct RelayDispatcher {
    pub route: Route,
    /// `backup [mx NAME]`: `Some(None)` is plain `backup`.
    pub backup: Option<Option<String>>,
    pub tls: RelayTls,
    pub auth: Option<TableId>,
    pub helo: Option<String>,
    pub helo_src: Option<TableId>,
    pub src: Option<SourceAddrs>,
    pub mail_from: Option<String>,
    pub pki: Option<PkiId>,
    pub ca: Option<CaId>,
    pub ciphers: Option<String>,
    pub protocols: Option<String>,
    pub srs: bool,
    pub filter: Option<FilterId>,
}

// -------------------------------------------------------------------- rules

/// A value a condition compares against: a literal turned into an
/// anonymous table, or a declared table.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matcher {
    pub table: TableId,
    /// `regex`: the table holds regular expressions.
    pub regex: bool,
}

/// Where the session comes from (`from ...`). One per rule.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Any,
    /// The default: a local address or the local enqueuer.
    Local,
    Socket,
    /// `from auth [user | <users>]`.
    Auth(Option<Matcher>),
    MailFrom(Matcher),
    /// `from rdns [name | <names>]`.
    Rdns(Option<Matcher>),
    Src(Matcher),
}

/// Where the recipient goes (`for ...`). One per rule.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Any,
    /// The default: a local domain (`<localnames>`).
    Local,
    Domain(Matcher),
    RcptTo(Matcher),
}

/// A transaction condition; each kind at most once per rule.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Auth(Option<Matcher>),
    Helo(Matcher),
    MailFrom(Matcher),
    RcptTo(Matcher),
    Tag(Matcher),
    Tls,
}

/// A part of a rule, possibly negated with `!`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negatable<T> {
    pub negated: bool,
    pub value: T,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Action(ActionId),
    Reject,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Rule {
    pub from: Negatable<Origin>,
    pub to: Negatable<Destination>,
    pub conditions: Vec<Negatable<Condition>>,
    pub decision: Decision,
    pub span: Span,
}

// ---------------------------------------------------------- pki, ca, filters

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dhe {
    #[default]
    None,
    Auto,
    Legacy,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Pki {
    /// Lower-cased name (a host name or `*`).
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub dhe: Dhe,
    pub span: Span,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Ca {
    pub name: String,
    pub cert: PathBuf,
    pub span: Span,
}

/// `proc NAME COMMAND [user U] [group G] [chroot DIR]`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Proc {
    pub name: String,
    pub command: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub chroot: Option<String>,
    pub span: Span,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPhase {
    Connect,
    Helo,
    Ehlo,
    MailFrom,
    RcptTo,
    Data,
    Commit,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterCondition {
    Fcrdns,
    Rdns(Option<Matcher>),
    Src(Matcher),
    Helo(Matcher),
    Auth(Option<Matcher>),
    MailFrom(Matcher),
    RcptTo(Matcher),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    Bypass,
    /// Message starts with a 4xx or 5xx code.
    Disconnect(String),
    Junk,
    Reject(String),
    Rewrite(String),
    /// `report`: OpenSMTPD accepts it; kept for completeness.
    Report(String),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub enum FilterKind {
    /// `filter NAME phase P match CONDITIONS DECISION`.
    Builtin {
        phase: FilterPhase,
        conditions: Vec<Negatable<FilterCondition>>,
        decision: FilterDecision,
    },
    /// `filter NAME proc PROC`.
    Proc(ProcId),
    /// `filter NAME proc-exec COMMAND [user U] [group G] [chroot DIR]`:
    /// the parser also registers an implicit proc for it.
    ProcExec(ProcId),
    /// `filter NAME chain { A, B }`.
    Chain(Vec<FilterId>),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Filter {
    pub name: String,
    pub kind: FilterKind,
    pub span: Span,
}

// ------------------------------------------------------------- global knobs

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SmtpOptions {
    /// `smtp max-message-size`, bytes; default 35M.
    pub max_message_size: u64,
    /// `smtp limit max-mails`; default 100.
    pub max_mails: u64,
    /// `smtp limit max-rcpt`; default 1000.
    pub max_rcpt: u64,
    /// Extension `smtp limit max-sessions`: sessions at once; default 1000.
    pub max_sessions: u64,
    /// Extension `smtp limit max-sessions-per-address`: sessions at once
    /// from one client address; default 50.
    pub max_sessions_per_address: u64,
    /// Extension `smtp limit max-errors`: refused commands before a session
    /// is closed with 421; default 10.
    pub max_errors: u64,
    /// `smtp sub-addr-delim`; default `+`.
    pub sub_addr_delim: char,
    /// `smtp ciphers`.
    pub ciphers: Option<String>,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        SmtpOptions {
            max_message_size: 35 * 1024 * 1024,
            max_mails: 100,
            max_rcpt: 1000,
            max_sessions: 1000,
            max_sessions_per_address: 50,
            max_errors: 10,
            sub_addr_delim: '+',
            ciphers: None,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum QueueEncryption {
    /// Key read from the terminal at start-up.
    Prompt,
    /// Key read from standard input (`stdin` or `-`).
    Stdin,
    Key(String),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Extension: `queue path "DIR"`; default /var/spool/smtpd.
    pub path: PathBuf,
    /// `queue ttl`; default 4 days.
    pub ttl: Duration,
    pub compression: bool,
    pub encryption: Option<QueueEncryption>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            path: PathBuf::from("/var/spool/smtpd"),
            ttl: Duration::from_secs(4 * 24 * 3600),
            compression: false,
            encryption: None,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MdaLimits {
    pub max_session: u64,
    pub max_session_per_user: u64,
    pub task_hiwat: u64,
    pub task_lowat: u64,
    pub task_release: u64,
}

impl Default for MdaLimits {
    fn default() -> Self {
        MdaLimits {
            max_session: 50,
            max_session_per_user: 7,
            task_hiwat: 50,
            task_lowat: 30,
            task_release: 10,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MdaOptions {
    /// `mda wrapper NAME COMMAND`.
    pub wrappers: BTreeMap<String, String>,
    pub limits: MdaLimits,
}

/// `mta limit` keys, with OpenSMTPD's defaults. Delays are in seconds.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MtaLimits {
    pub family: Option<Family>,
    pub max_conn_per_host: u64,
    pub max_conn_per_route: u64,
    pub max_conn_per_source: u64,
    pub max_conn_per_connector: u64,
    pub max_conn_per_relay: u64,
    pub max_conn_per_domain: u64,
    pub conn_delay_host: u64,
    pub conn_delay_route: u64,
    pub conn_delay_source: u64,
    pub conn_delay_connector: u64,
    pub conn_delay_relay: u64,
    pub conn_delay_domain: u64,
    pub discdelay_route: u64,
    pub session_mail_max: u64,
    pub session_delay_transaction: u64,
    pub session_keepalive: u64,
    pub max_failures_per_session: u64,
    pub task_hiwat: u64,
    pub task_lowat: u64,
    pub task_release: u64,
}

impl Default for MtaLimits {
    fn default() -> Self {
        MtaLimits {
            family: None,
            max_conn_per_host: 10,
            max_conn_per_route: 5,
            max_conn_per_source: 100,
            max_conn_per_connector: 20,
            max_conn_per_relay: 100,
            max_conn_per_domain: 100,
            conn_delay_host: 0,
            conn_delay_route: 5,
            conn_delay_source: 0,
            conn_delay_connector: 0,
            conn_delay_relay: 2,
            conn_delay_domain: 0,
            discdelay_route: 3,
            session_mail_max: 100,
            session_delay_transaction: 0,
            session_keepalive: 10,
            max_failures_per_session: 25,
            task_hiwat: 50,
            task_lowat: 30,
            task_release: 10,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MtaOptions {
    /// `mta max-deferred`; default 100.
    pub max_deferred: u64,
    /// `mta limit ...` without a domain.
    pub limits: MtaLimits,
    /// `mta limit for domain D ...`: starts from the defaults above.
    pub domain_limits: BTreeMap<String, MtaLimits>,
}

impl Default for MtaOptions {
    fn default() -> Self {
        MtaOptions {
            max_deferred: 100,
            limits: MtaLimits::default(),
            domain_limits: BTreeMap::new(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SchedulerLimits {
    pub max_inflight: u64,
    pub max_evp_batch_size: u64,
    pub max_msg_batch_size: u64,
    pub max_schedule: u64,
}

impl Default for SchedulerLimits {
    fn default() -> Self {
        SchedulerLimits {
            max_inflight: 5000,
            max_evp_batch_size: 256,
            max_msg_batch_size: 1024,
            max_schedule: 10,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SrsOptions {
    pub key: Option<String>,
    pub backup_key: Option<String>,
    /// `srs ttl`; default 4 days, whole days only.
    pub ttl: Duration,
}

impl Default for SrsOptions {
    fn default() -> Self {
        SrsOptions {
            key: None,
            backup_key: None,
            ttl: Duration::from_secs(4 * 24 * 3600),
        }
    }
}
