//! Recipient expansion: what one accepted recipient becomes once alias and
//! virtual tables and `~/.forward` files have been applied, as a list of
//! final deliveries or one reason to refuse the whole recipient.
//!
//! Pure logic over the configuration, its opened tables and the rules: no
//! files, processes or network. The two things that need the filesystem
//! (a user's `.forward`, an alias `:include:` file) are asked of the
//! caller, either through [`ForwardReader`] ([`expand`]) or, for async
//! callers, by driving an [`Expander`] step by step.
//!
//! The model follows OpenSMTPD's lka_expand: a tree of nodes (address,
//! user name, file, command, error), expanded breadth first, each node
//! under the action (rule) in effect where it was produced.
//! - The recipient itself is under the rule it already matched. Every
//!   address produced by an expansion is matched again against the rules as
//!   [`Source::Internal`]: a relay action makes it a [`Delivery::Relay`], a
//!   local action expands it again, `reject` or no rule refuses the
//!   recipient.
//! - Under a local action with `virtual <t>`, an address is looked up with
//!   the table crate's `lookup_virtual` (`user+tag@domain`, `user@domain`,
//!   `user+tag`, `user`, `@domain`, `@`); no match is an unknown recipient.
//!   Otherwise its local part, lower-cased, becomes a user name.
//! - A user name is first looked up in the action's alias (or virtual,
//!   without domain) table, `user+tag` then `user`. With no entry, the
//!   sub-address is stripped and the name resolved through the userbase
//!   (`<getpwnam>` by default); then the user's `.forward` is read. No or
//!   empty `.forward`: a mailbox delivery with the action's method.
//! - A user name that repeats an ancestor (`bob: bob, x`, `\bob` in bob's
//!   `.forward`, `a: b` + `b: a`) means that user's own mailbox: aliases are
//!   not applied to it again, and its `.forward` is read at most once.
//! - An address that repeats an ancestor is a loop: it is cut
//!   ([`Note::LoopBroken`]). If nothing is left, the recipient is refused.
//! - Depth is limited to [`MAX_DEPTH`] (the recipient is depth 0), the tree
//!   to [`MAX_NODES`], the result to [`MAX_DELIVERIES`]; each destination
//!   is delivered once.
//!
//! `expand-only` and `forward-only` (OpenSMTPD's code, which is stricter
//! than its manual's one-liners):
//! - `expand-only`: a user under this action must be expanded by an alias
//!   entry or a non-empty `.forward`; reaching a mailbox delivery refuses
//!   the recipient permanently. Files, commands and addresses are fine.
//! - `forward-only`: under this action only addresses may come out of
//!   aliases and `.forward` files; a user without a non-empty `.forward`, a
//!   file, a command or an `error:` entry is a *temporary* failure (the user
//!   may be about to fix the file). The addresses are matched again, so one
//!   that lands on another local action is delivered by that action.
//!
//! Deliberate differences from OpenSMTPD 7.x:
//! - With `user NAME`, any local part resolves to NAME without a userbase
//!   lookup (what this daemon's RCPT check already does); NAME's
//!   `.forward` is read only for recipients whose user name is NAME (as
//!   OpenSMTPD). Files and commands of that action run as NAME.
//! - A user repeating an ancestor gets its mailbox (OpenSMTPD only does
//!   that for a direct parent, and refuses `a: b` + `b: a` as an empty
//!   expansion). If it is not a user, that branch is cut as a loop.
//! - A `:include:` file that cannot be read is a temporary failure
//!   (OpenSMTPD logs it and goes on without its entries, losing mail).
//! - `:include:` in a `.forward` or in an included file is ignored and
//!   reported; OpenSMTPD ignores it silently.
//! - Root's `.forward` may not name files or commands: those entries are
//!   dropped and reported ([`Note::RootForward`]).
//! - Refusals use RFC 5321 reply codes: 550 5.2.4 where OpenSMTPD sends
//!   524 5.2.4, 451 4.2.4 where it sends 424 4.2.4.
//! - SRS decoding of expanded addresses is not done here.
//!
//! Safety: the recipient is only ever a lookup key or a user name to
//! resolve; a file, a command, or another user can come only from an
//! entry in a table (the admin) or a `.forward` (its user). A recipient
//! with control characters is refused before any lookup. The `dest` of a
//! [`Delivery::Local`] is still attacker-chosen text: whoever formats a
//! path with it must sanitise it.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use rsmtpd_table::{
    AliasMatch, AliasTarget, MAX_KEY_LEN, MailAddr, Service, Table, TableError, Userinfo, Value,
    ValueError, parse_alias_list,
};

use crate::model::{
    ActionId, Config, Decision, Dispatcher, Expansion as TableExpansion, LocalDispatcher,
    LocalMethod, TableId,
};
use crate::ruleset::{self, EvalError, MatchContext, Source, Tables, Verdict};

/// Deepest node: the recipient is depth 0, its user name 1, and so on
/// (OpenSMTPD's EXPAND_DEPTH).
pub const MAX_DEPTH: usize = 10;
/// Most deliveries one recipient may expand to.
pub const MAX_DELIVERIES: usize = 1000;
/// Most nodes one expansion may create: bounds lookups and memory even when
/// most nodes are duplicates or intermediate names.
pub const MAX_NODES: usize = 4 * MAX_DELIVERIES;
/// Largest `.forward` accepted, in bytes (OpenSMTPD's limit).
pub const MAX_FORWARD_BYTES: usize = 4096;
/// Most entries one `.forward` may hold (OpenSMTPD's limit).
pub const MAX_FORWARD_ENTRIES: usize = 100;
/// Largest `:include:` file accepted, in bytes.
pub const MAX_INCLUDE_BYTES: usize = 1024 * 1024;

// ---------------------------------------------------------------- results

/// Who a file or command delivery runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The owner of the `.forward` that named it, or the action's `user`.
    User(Userinfo),
    /// An alias or virtual table entry (or a file it includes): the
    /// daemon's unprivileged account, as aliases(5) says (`_smtpd` when
    /// started as root, the running user otherwise).
    Unprivileged,
}

/// One final delivery of an expanded recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Into `user`'s mailbox with the (local, mailbox) method of `action`.
    /// `dest` is the address this came from (the nearest address in the
    /// expansion): attacker-chosen text.
    Local {
        action: ActionId,
        dest: String,
        user: Userinfo,
    },
    /// Append to `path` (an absolute path written by the admin or the user).
    File {
        action: ActionId,
        path: PathBuf,
        run_as: RunAs,
    },
    /// Pipe to `command` through the shell.
    Command {
        action: ActionId,
        command: String,
        run_as: RunAs,
    },
    /// Relay to `dest` with the relay action `action`.
    Relay { action: ActionId, dest: String },
}

/// Something the expansion skipped on purpose, worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A `|command` or `/file` entry of root's `.forward`, not used.
    RootForward { entry: String },
    /// `:include:` in a `.forward` or in an included file, not followed.
    NestedInclude { path: PathBuf },
    /// A destination that led back to one of its ancestors, cut.
    LoopBroken { at: String },
}

/// What a recipient expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// In the order found; never empty. Each destination once: a mailbox
    /// per (action, user, dest), since a maildir path may depend on dest;
    /// a file or command per (action, text, run-as user); a relay per
    /// (action, address) ignoring case.
    pub deliveries: Vec<Delivery>,
    pub notes: Vec<Note>,
}

// ----------------------------------------------------------------- errors

/// Why a `.forward` or an `:include:` file could not be read. The parent
/// refuses a file (or home) that is group or world writable, not owned by
/// the user, or not a regular file. Always a temporary failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ForwardError {
    #[error("{path} is group or world writable")]
    Writable { path: PathBuf },
    #[error("{path} is not owned by {user}")]
    WrongOwner { path: PathBuf, user: String },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: usize },
    #[error("{path} is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// What a `forward-only` action met that is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardOnlyViolation {
    #[error("user {0} has no usable .forward")]
    NoForward(String),
    #[error("a file delivery")]
    File,
    #[error("a command delivery")]
    Command,
    #[error("an error entry")]
    ErrorEntry,
}

/// A failure that says nothing about the recipient: try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TempError {
    #[error("rule evaluation failed: {0}")]
    Rules(#[from] EvalError),
    #[error("table {name} is not open")]
    MissingTable { name: String },
    #[error("lookup in table {name} failed: {source}")]
    Table {
        name: String,
        #[source]
        source: TableError,
    },
    #[error("action #{0} does not exist")]
    UnknownAction(usize),
    #[error("action {0} is not a local action")]
    NotLocal(String),
    #[error("delivery user {0:?} does not exist")]
    NoDeliveryUser(String),
    #[error(".forward of {user}: {source}")]
    Forward {
        user: String,
        #[source]
        source: ForwardError,
    },
    #[error(".forward of {user}, line {line}: {reason}")]
    ForwardSyntax {
        user: String,
        line: usize,
        reason: ValueError,
    },
    #[error(
        ".forward of {user} is over {MAX_FORWARD_BYTES} bytes or {MAX_FORWARD_ENTRIES} entries"
    )]
    ForwardTooLarge { user: String },
    #[error("include file {path}: {source}")]
    Include {
        path: PathBuf,
        #[source]
        source: ForwardError,
    },
    #[error("include file {path}, line {line}: {reason}")]
    IncludeSyntax {
        path: PathBuf,
        line: usize,
        reason: ValueError,
    },
    #[error("include file {path} is over {MAX_INCLUDE_BYTES} bytes")]
    IncludeTooLarge { path: PathBuf },
}

/// Why a recipient is not accepted. Every variant refuses the whole
/// recipient; [`ExpandError::reply`] gives the SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("malformed recipient {address:?}")]
    BadAddress { address: String },
    #[error("unknown recipient {address}")]
    UnknownRecipient { address: String },
    #[error("no rule matches the expanded address {address}")]
    NoRule { address: String },
    #[error("the rules reject the expanded address {address}")]
    Rejected { address: String },
    /// An `error:CODE text` entry.
    #[error("error entry: {code} {text}")]
    ErrorEntry {
        code: u16,
        status: String,
        text: String,
    },
    #[error("expansion deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("expansion over {MAX_DELIVERIES} deliveries or {MAX_NODES} nodes")]
    TooMany,
    #[error("expansion of {address} loops back on itself")]
    Loop { address: String },
    #[error("expansion of {address} is empty")]
    Empty { address: String },
    #[error("expand-only: user {user} has neither alias nor .forward")]
    ExpandOnly { user: String },
    #[error("forward-only: {0}")]
    ForwardOnly(ForwardOnlyViolation),
    #[error(transparent)]
    Temporary(#[from] TempError),
}

/// An SMTP reply for a refused recipient. The text may hold admin- or
/// user-written words (`error:` entries); the reply writer escapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandReply {
    pub code: u16,
    /// Enhanced status code, `class.subject.detail`.
    pub status: String,
    pub text: String,
}

impl ExpandError {
    /// Whether the sender should try again later (4xx).
    pub fn is_temporary(&self) -> bool {
        match self {
            ExpandError::ErrorEntry { code, .. } => (400..500).contains(code),
            ExpandError::ForwardOnly(_) | ExpandError::Temporary(_) => true,
            _ => false,
        }
    }

    /// The reply to send. Texts never name expanded (internal) addresses.
    pub fn reply(&self) -> ExpandReply {
        let r = |code: u16, status: &str, text: &str| ExpandReply {
            code,
            status: status.to_owned(),
            text: text.to_owned(),
        };
        match self {
            ExpandError::BadAddress { .. } => r(550, "5.1.3", "Invalid recipient address syntax"),
            ExpandError::UnknownRecipient { .. } | ExpandError::NoRule { .. } => {
                r(550, "5.1.1", "Invalid recipient")
            }
            ExpandError::Rejected { .. } => r(550, "5.7.1", "Delivery not authorized"),
            ExpandError::ErrorEntry { code, status, text } => ExpandReply {
                code: *code,
                status: status.clone(),
                text: text.clone(),
            },
            // 524, as OpenSMTPD answers (and the issue asks): a 5yz code
            // clients treat as permanent, with the RFC 3463 status.
            ExpandError::TooDeep => r(524, "5.2.4", "Mailing list expansion problem"),
            ExpandError::TooMany | ExpandError::Empty { .. } | ExpandError::ExpandOnly { .. } => {
                r(550, "5.2.4", "Mailing list expansion problem")
            }
            ExpandError::Loop { .. } => r(550, "5.4.6", "Alias or forwarding loop"),
            ExpandError::ForwardOnly(_) => r(451, "4.2.4", "Mailing list expansion problem"),
            ExpandError::Temporary(_) => {
                r(451, "4.3.0", "Temporary failure in recipient expansion")
            }
        }
    }
}

/// `error:` entry text: a leading enhanced status of the same class is
/// split off and used; otherwise `C.0.0`.
fn error_entry(code: u16, message: &str) -> ExpandError {
    // The table crate only accepts 4xx and 5xx; anything else is treated
    // as permanent rather than trusted.
    let code = if (400..600).contains(&code) {
        code
    } else {
        550
    };
    let class = code / 100;
    let (status, text) = match message.split_once(' ') {
        Some((head, rest)) if is_enhanced(head, class) && !rest.is_empty() => {
            (head.to_owned(), rest.to_owned())
        }
        _ => (format!("{class}.0.0"), message.to_owned()),
    };
    ExpandError::ErrorEntry { code, status, text }
}

fn is_enhanced(s: &str, class: u16) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    parts.next() == Some(&class.to_string())
        && ok(parts.next())
        && ok(parts.next())
        && parts.next().is_none()
}

// ------------------------------------------------------------ file access

/// Reads what the engine may not read itself. The parent implements it.
pub trait ForwardReader {
    /// The lines of `user`'s `~/.forward`, read as that user; `Ok(None)`
    /// when there is none. Lines may still hold `#` comments.
    fn forward(&self, user: &Userinfo) -> Result<Option<Vec<String>>, ForwardError>;
    /// The lines of an alias table's `:include:` file.
    fn include(&self, path: &Path) -> Result<Vec<String>, ForwardError>;
}

// ------------------------------------------------------------------ nodes

/// Where a file or command entry was written.
#[derive(Debug, Clone)]
enum Origin {
    /// An alias or virtual table, or a file it includes: the admin.
    Table,
    /// A `.forward`: its owner.
    Forward(Userinfo),
}

#[derive(Debug, Clone)]
struct Addr {
    /// As written (`user@domain`).
    text: String,
    user: String,
    domain: String,
}

impl Addr {
    fn key(&self) -> String {
        self.text.to_ascii_lowercase()
    }
}

#[derive(Debug, Clone)]
struct UserNode {
    /// Lower-cased; the sub-address is kept (alias keys may name it).
    name: String,
    /// The nearest ancestor with the same name and action: this node is
    /// that user's own mailbox, aliases are not applied again.
    same_as: Option<usize>,
    /// Its `.forward` was asked for.
    forwarded: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Address(Addr),
    User(UserNode),
    Include(PathBuf),
    File { path: PathBuf, origin: Origin },
    Command { command: String, origin: Origin },
    Error { code: u16, message: String },
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    parent: Option<usize>,
    depth: usize,
    /// The action in effect: for the recipient, the rule it matched; for
    /// an expanded address, filled in once it is matched again.
    action: ActionId,
}

/// What inserting a node did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserted {
    New,
    Duplicate,
    Loop,
}

/// The identity of a delivery, for "each destination once".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DeliveryKey {
    Local(ActionId, u32, String, String),
    File(ActionId, PathBuf, Option<u32>),
    Command(ActionId, String, Option<u32>),
    Relay(ActionId, String),
}

fn delivery_key(d: &Delivery) -> DeliveryKey {
    let uid = |r: &RunAs| match r {
        RunAs::User(u) => Some(u.uid),
        RunAs::Unprivileged => None,
    };
    match d {
        Delivery::Local { action, dest, user } => DeliveryKey::Local(
            *action,
            user.uid,
            user.username.clone(),
            dest.to_ascii_lowercase(),
        ),
        Delivery::File {
            action,
            path,
            run_as,
        } => DeliveryKey::File(*action, path.clone(), uid(run_as)),
        Delivery::Command {
            action,
            command,
            run_as,
        } => DeliveryKey::Command(*action, command.clone(), uid(run_as)),
        Delivery::Relay { action, dest } => DeliveryKey::Relay(*action, dest.to_ascii_lowercase()),
    }
}

/// What the engine waits for.
#[derive(Debug, Clone)]
enum Pending {
    /// Node and the user it resolved to.
    Forward(usize, Userinfo),
    Include(usize),
}

// --------------------------------------------------------------- expander

/// The expansion of one recipient as a state machine, for callers that
/// must fetch `.forward` and include files asynchronously:
///
/// ```ignore
/// let mut ex = Expander::new(config, tables, action, rcpt, &facts);
/// let result = loop {
///     match ex.run() {
///         Step::Done(r) => break r,
///         Step::Forward(req) => { let r = ask_parent(req.user()).await; ex = req.answer(r) }
///         Step::Include(req) => { let r = read(req.path()).await; ex = req.answer(r) }
///     }
/// };
/// ```
pub struct Expander<'a, T: Tables + ?Sized> {
    config: &'a Config,
    tables: &'a T,
    facts: MatchContext<'a>,
    nodes: Vec<Node>,
    queue: VecDeque<usize>,
    seen_addresses: HashSet<String>,
    seen_users: HashSet<(String, ActionId, Option<usize>, bool)>,
    seen_deliveries: HashSet<DeliveryKey>,
    deliveries: Vec<Delivery>,
    notes: Vec<Note>,
    loop_broken: bool,
    failed: Option<ExpandError>,
}

/// What the expander needs next, or its result.
pub enum Step<'a, T: Tables + ?Sized> {
    Forward(ForwardRequest<'a, T>),
    Include(IncludeRequest<'a, T>),
    Done(Result<Expansion, ExpandError>),
}

/// The expander waits for a user's `.forward`.
pub struct ForwardRequest<'a, T: Tables + ?Sized> {
    expander: Box<Expander<'a, T>>,
    node: usize,
    user: Userinfo,
}

impl<'a, T: Tables + ?Sized> ForwardRequest<'a, T> {
    /// Whose `.forward` to read.
    pub fn user(&self) -> &Userinfo {
        &self.user
    }

    /// Give the answer of [`ForwardReader::forward`] and get the expander
    /// back.
    pub fn answer(self, r: Result<Option<Vec<String>>, ForwardError>) -> Expander<'a, T> {
        let mut ex = *self.expander;
        if let Err(e) = ex.forward_answer(self.node, self.user, r) {
            ex.failed = Some(e);
        }
        ex
    }
}

/// The expander waits for an `:include:` file.
pub struct IncludeRequest<'a, T: Tables + ?Sized> {
    expander: Box<Expander<'a, T>>,
    node: usize,
    path: PathBuf,
}

impl<'a, T: Tables + ?Sized> IncludeRequest<'a, T> {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Give the answer of [`ForwardReader::include`] and get the expander
    /// back.
    pub fn answer(self, r: Result<Vec<String>, ForwardError>) -> Expander<'a, T> {
        let mut ex = *self.expander;
        if let Err(e) = ex.include_answer(self.node, &self.path, r) {
            ex.failed = Some(e);
        }
        ex
    }
}

/// Expand `rcpt`, which matched a rule with `action`, reading `.forward`
/// and include files through `forwards`. `facts` are the session's facts
/// as given to [`ruleset::evaluate`]; for matching expanded addresses again
/// its source, rcpt and rcpt_domain are replaced.
pub fn expand<T: Tables + ?Sized>(
    config: &Config,
    tables: &T,
    forwards: &dyn ForwardReader,
    action: ActionId,
    rcpt: &str,
    facts: &MatchContext<'_>,
) -> Result<Expansion, ExpandError> {
    let mut ex = Expander::new(config, tables, action, rcpt, facts);
    loop {
        ex = match ex.run() {
            Step::Done(r) => return r,
            Step::Forward(req) => {
                let r = forwards.forward(req.user());
                req.answer(r)
            }
            Step::Include(req) => {
                let r = forwards.include(req.path());
                req.answer(r)
            }
        };
    }
}

/// No byte a mail address has any business holding.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `user@domain` split at the last `@`; without one, the server name.
fn split_rcpt(rcpt: &str, hostname: &str) -> Option<Addr> {
    if rcpt.len() > MAX_KEY_LEN || has_control(rcpt) {
        return None;
    }
    let (user, domain) = match rcpt.rsplit_once('@') {
        Some((u, d)) => (u, d),
        None => (rcpt, hostname),
    };
    if domain.is_empty() {
        return None;
    }
    Some(Addr {
        text: format!("{user}@{domain}"),
        user: user.to_owned(),
        domain: domain.to_owned(),
    })
}

/// Cut a `.forward` or include line at its first unescaped `#`
/// (`\#` is a literal `#`; the list splitter drops the backslash).
fn strip_comment(line: &str) -> &str {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '#' {
            return line.get(..i).unwrap_or(line);
        }
    }
    line
}

/// The entries of a `.forward` or include file, in order. `Err` carries
/// the 1-based line and the reason.
fn parse_lines(lines: &[String]) -> Result<Vec<AliasTarget>, (usize, ValueError)> {
    let mut out = Vec::new();
    let mut n = 0;
    // A reader might hand over text with line breaks inside: those are
    // lines too, never part of an entry.
    for line in lines.iter().flat_map(|l| l.split('\n')) {
        n += 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\0') {
            return Err((n, ValueError::InvalidAliasTarget(line.to_owned())));
        }
        let targets = parse_alias_list(strip_comment(line)).map_err(|e| (n, e))?;
        out.extend(targets);
    }
    Ok(out)
}

impl<'a, T: Tables + ?Sized> Expander<'a, T> {
    /// Start expanding `rcpt`, which matched a rule with `action`.
    pub fn new(
        config: &'a Config,
        tables: &'a T,
        action: ActionId,
        rcpt: &str,
        facts: &MatchContext<'a>,
    ) -> Self {
        let mut ex = Expander {
            config,
            tables,
            facts: *facts,
            nodes: Vec::new(),
            queue: VecDeque::new(),
            seen_addresses: HashSet::new(),
            seen_users: HashSet::new(),
            seen_deliveries: HashSet::new(),
            deliveries: Vec::new(),
            notes: Vec::new(),
            loop_broken: false,
            failed: None,
        };
        match split_rcpt(rcpt, &config.hostname) {
            Some(addr) => {
                ex.seen_addresses.insert(addr.key());
                ex.nodes.push(Node {
                    kind: Kind::Address(addr),
                    parent: None,
                    depth: 0,
                    action,
                });
                ex.queue.push_back(0);
            }
            None => {
                ex.failed = Some(ExpandError::BadAddress {
                    address: rcpt.to_owned(),
                })
            }
        }
        ex
    }

    /// Expand until something must be read, or to the end.
    pub fn run(mut self) -> Step<'a, T> {
        if let Some(e) = self.failed.take() {
            return Step::Done(Err(e));
        }
        match self.work() {
            Err(e) => Step::Done(Err(e)),
            Ok(Some(Pending::Forward(node, user))) => Step::Forward(ForwardRequest {
                expander: Box::new(self),
                node,
                user,
            }),
            Ok(Some(Pending::Include(node))) => {
                let path = match self.nodes.get(node).map(|n| &n.kind) {
                    Some(Kind::Include(p)) => p.clone(),
                    _ => PathBuf::new(),
                };
                Step::Include(IncludeRequest {
                    expander: Box::new(self),
                    node,
                    path,
                })
            }
            Ok(None) => Step::Done(self.finish()),
        }
    }

    fn finish(self) -> Result<Expansion, ExpandError> {
        if self.deliveries.is_empty() {
            let address = self.root_text();
            return Err(if self.loop_broken {
                ExpandError::Loop { address }
            } else {
                ExpandError::Empty { address }
            });
        }
        Ok(Expansion {
            deliveries: self.deliveries,
            notes: self.notes,
        })
    }

    fn root_text(&self) -> String {
        match self.nodes.first().map(|n| &n.kind) {
            Some(Kind::Address(a)) => a.text.clone(),
            _ => String::new(),
        }
    }

    /// Process queued nodes until one needs a file read.
    fn work(&mut self) -> Result<Option<Pending>, ExpandError> {
        while let Some(i) = self.queue.pop_front() {
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            if node.depth >= MAX_DEPTH {
                return Err(ExpandError::TooDeep);
            }
            let action = node.action;
            match node.kind.clone() {
                Kind::Address(addr) => self.address(i, addr)?,
                Kind::User(user) => {
                    if let Some(p) = self.user(i, action, user)? {
                        return Ok(Some(p));
                    }
                }
                Kind::Include(_) => return Ok(Some(Pending::Include(i))),
                Kind::File { path, origin } => {
                    let ld = self.local(action)?;
                    if ld.method == LocalMethod::ForwardOnly {
                        return Err(ExpandError::ForwardOnly(ForwardOnlyViolation::File));
                    }
                    let run_as = self.run_as(ld, origin)?;
                    self.deliver(Delivery::File {
                        action,
                        path,
                        run_as,
                    })?;
                }
                Kind::Command { command, origin } => {
                    let ld = self.local(action)?;
                    if ld.method == LocalMethod::ForwardOnly {
                        return Err(ExpandError::ForwardOnly(ForwardOnlyViolation::Command));
                    }
                    let run_as = self.run_as(ld, origin)?;
                    self.deliver(Delivery::Command {
                        action,
                        command,
                        run_as,
                    })?;
                }
                Kind::Error { code, message } => {
                    if self.local(action)?.method == LocalMethod::ForwardOnly {
                        return Err(ExpandError::ForwardOnly(ForwardOnlyViolation::ErrorEntry));
                    }
                    return Err(error_entry(code, &message));
                }
            }
        }
        Ok(None)
    }

    // ------------------------------------------------------------ nodes

    fn address(&mut self, i: usize, addr: Addr) -> Result<(), ExpandError> {
        let action = if i == 0 {
            self.nodes
                .get(i)
                .map(|n| n.action)
                .unwrap_or(ActionId(usize::MAX))
        } else {
            self.rematch(&addr)?
        };
        if let Some(n) = self.nodes.get_mut(i) {
            n.action = action;
        }
        let a = self
            .config
            .actions
            .get(action.0)
            .ok_or(TempError::UnknownAction(action.0))?;
        match &a.dispatcher {
            Dispatcher::Relay(_) => self.deliver(Delivery::Relay {
                action,
                dest: addr.text,
            }),
            Dispatcher::Local(ld) => match ld.expansion {
                Some(TableExpansion::Virtual(t)) => {
                    let found = self.lookup_virtual(t, &addr.user, &addr.domain)?;
                    match found {
                        Some(m) if !m.targets.is_empty() => {
                            self.insert_targets(i, action, m.targets, &Origin::Table, false)?;
                            Ok(())
                        }
                        _ => Err(ExpandError::UnknownRecipient { address: addr.text }),
                    }
                }
                _ => {
                    let user = UserNode {
                        name: addr.user.to_ascii_lowercase(),
                        same_as: None,
                        forwarded: false,
                    };
                    self.insert(i, action, Kind::User(user)).map(|_| ())
                }
            },
        }
    }

    /// Match an expanded address against the rules again.
    fn rematch(&self, addr: &Addr) -> Result<ActionId, ExpandError> {
        let ctx = MatchContext {
            source: Source::Internal,
            rcpt: &addr.text,
            rcpt_domain: &addr.domain,
            ..self.facts
        };
        match ruleset::evaluate(self.config, self.tables, &ctx).map_err(TempError::from)? {
            Verdict::Matched {
                decision: Decision::Action(a),
                ..
            } => Ok(a),
            Verdict::Matched {
                decision: Decision::Reject,
                ..
            } => Err(ExpandError::Rejected {
                address: addr.text.clone(),
            }),
            Verdict::NoMatch => Err(ExpandError::NoRule {
                address: addr.text.clone(),
            }),
        }
    }

    fn user(
        &mut self,
        i: usize,
        action: ActionId,
        user: UserNode,
    ) -> Result<Option<Pending>, ExpandError> {
        let ld = self.local(action)?;
        if user.same_as.is_none() {
            let found = match ld.expansion {
                Some(TableExpansion::Alias(t)) => self.lookup_alias(t, &user.name)?,
                // A bare name in a virtual table: no domain, no catch-alls.
                Some(TableExpansion::Virtual(t)) => self.lookup_virtual(t, &user.name, "")?,
                None => None,
            };
            if let Some(m) = found
                && !m.targets.is_empty()
            {
                self.insert_targets(i, action, m.targets, &Origin::Table, false)?;
                return Ok(None);
            }
        }
        let delim = self.config.smtp.sub_addr_delim;
        let base = user
            .name
            .split(delim)
            .next()
            .unwrap_or(&user.name)
            .to_owned();
        let Some(info) = self.resolve(ld, &base)? else {
            if user.same_as.is_some() {
                self.loop_cut(user.name);
                return Ok(None);
            }
            return Err(ExpandError::UnknownRecipient {
                address: self.dest_of(i),
            });
        };
        let ancestor_forwarded = user.same_as.is_some_and(
            |a| matches!(self.nodes.get(a).map(|n| &n.kind), Some(Kind::User(u)) if u.forwarded),
        );
        // With `user`, only that account's own .forward is read.
        let other_account = ld
            .user
            .as_ref()
            .is_some_and(|u| !u.eq_ignore_ascii_case(&base));
        if ancestor_forwarded || other_account {
            return self.mailbox(i, action, ld, info).map(|()| None);
        }
        if let Some(Node {
            kind: Kind::User(u),
            ..
        }) = self.nodes.get_mut(i)
        {
            u.forwarded = true;
        }
        Ok(Some(Pending::Forward(i, info)))
    }

    fn forward_answer(
        &mut self,
        i: usize,
        info: Userinfo,
        r: Result<Option<Vec<String>>, ForwardError>,
    ) -> Result<(), ExpandError> {
        let action = self
            .nodes
            .get(i)
            .map(|n| n.action)
            .unwrap_or(ActionId(usize::MAX));
        let ld = self.local(action)?;
        let lines = match r {
            Err(source) => {
                return Err(TempError::Forward {
                    user: info.username.clone(),
                    source,
                }
                .into());
            }
            Ok(None) => return self.mailbox(i, action, ld, info),
            Ok(Some(lines)) => lines,
        };
        let too_large = || TempError::ForwardTooLarge {
            user: info.username.clone(),
        };
        let bytes: usize = lines.iter().map(|l| l.len().saturating_add(1)).sum();
        if bytes > MAX_FORWARD_BYTES {
            return Err(too_large().into());
        }
        let targets = parse_lines(&lines).map_err(|(line, reason)| TempError::ForwardSyntax {
            user: info.username.clone(),
            line,
            reason,
        })?;
        if targets.len() > MAX_FORWARD_ENTRIES {
            return Err(too_large().into());
        }
        let root = info.uid == 0;
        let mut kept = Vec::with_capacity(targets.len());
        for t in targets {
            match t {
                AliasTarget::File(p) if root => self.notes.push(Note::RootForward {
                    entry: p.display().to_string(),
                }),
                AliasTarget::Command(c) if root => {
                    self.notes.push(Note::RootForward {
                        entry: format!("|{c}"),
                    });
                }
                t => kept.push(t),
            }
        }
        let accepted =
            self.insert_targets(i, action, kept, &Origin::Forward(info.clone()), true)?;
        // Nothing usable: as if there were no .forward.
        if accepted == 0 {
            return self.mailbox(i, action, ld, info);
        }
        Ok(())
    }

    fn include_answer(
        &mut self,
        i: usize,
        path: &Path,
        r: Result<Vec<String>, ForwardError>,
    ) -> Result<(), ExpandError> {
        let lines = r.map_err(|source| TempError::Include {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes: usize = lines.iter().map(|l| l.len().saturating_add(1)).sum();
        if bytes > MAX_INCLUDE_BYTES {
            return Err(TempError::IncludeTooLarge {
                path: path.to_path_buf(),
            }
            .into());
        }
        let targets = parse_lines(&lines).map_err(|(line, reason)| TempError::IncludeSyntax {
            path: path.to_path_buf(),
            line,
            reason,
        })?;
        let action = self
            .nodes
            .get(i)
            .map(|n| n.action)
            .unwrap_or(ActionId(usize::MAX));
        self.insert_targets(i, action, targets, &Origin::Table, true)?;
        Ok(())
    }

    /// A mailbox delivery for the user of node `i`.
    fn mailbox(
        &mut self,
        i: usize,
        action: ActionId,
        ld: &LocalDispatcher,
        user: Userinfo,
    ) -> Result<(), ExpandError> {
        match ld.method {
            LocalMethod::ForwardOnly => Err(ExpandError::ForwardOnly(
                ForwardOnlyViolation::NoForward(user.username),
            )),
            LocalMethod::ExpandOnly => Err(ExpandError::ExpandOnly {
                user: user.username,
            }),
            _ => {
                let dest = self.dest_of(i);
                self.deliver(Delivery::Local { action, dest, user })
            }
        }
    }

    fn run_as(&self, ld: &LocalDispatcher, origin: Origin) -> Result<RunAs, ExpandError> {
        Ok(match origin {
            Origin::Forward(u) => RunAs::User(u),
            // With `user`, resolving any name gives that account.
            Origin::Table => match &ld.user {
                Some(name) => match resolve_user(self.config, self.tables, ld, name)? {
                    Some(u) => RunAs::User(u),
                    None => return Err(TempError::NoDeliveryUser(name.clone()).into()),
                },
                None => RunAs::Unprivileged,
            },
        })
    }

    fn deliver(&mut self, d: Delivery) -> Result<(), ExpandError> {
        if self.seen_deliveries.insert(delivery_key(&d)) {
            if self.deliveries.len() >= MAX_DELIVERIES {
                return Err(ExpandError::TooMany);
            }
            self.deliveries.push(d);
        }
        Ok(())
    }

    fn loop_cut(&mut self, at: String) {
        self.loop_broken = true;
        self.notes.push(Note::LoopBroken { at });
    }

    // ------------------------------------------------------- insertion

    /// Insert the targets of an alias, virtual, include or `.forward`
    /// entry under node `parent`; returns how many were taken (new or
    /// duplicate, not loops). `from_file`: includes are not followed.
    fn insert_targets(
        &mut self,
        parent: usize,
        action: ActionId,
        targets: Vec<AliasTarget>,
        origin: &Origin,
        from_file: bool,
    ) -> Result<usize, ExpandError> {
        let mut taken = 0;
        for t in targets {
            let kind = match t {
                AliasTarget::User(name) => Kind::User(UserNode {
                    name: name.to_ascii_lowercase(),
                    same_as: None,
                    forwarded: false,
                }),
                AliasTarget::Address(m) => Kind::Address(addr_of(m)),
                AliasTarget::File(path) => Kind::File {
                    path,
                    origin: origin.clone(),
                },
                AliasTarget::Command(command) => Kind::Command {
                    command,
                    origin: origin.clone(),
                },
                AliasTarget::Include(path) if from_file => {
                    self.notes.push(Note::NestedInclude { path });
                    continue;
                }
                AliasTarget::Include(path) => Kind::Include(path),
                AliasTarget::Error { code, message } => Kind::Error { code, message },
            };
            if self.insert(parent, action, kind)? != Inserted::Loop {
                taken += 1;
            }
        }
        Ok(taken)
    }

    fn insert(
        &mut self,
        parent: usize,
        action: ActionId,
        kind: Kind,
    ) -> Result<Inserted, ExpandError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(ExpandError::TooMany);
        }
        let depth = self
            .nodes
            .get(parent)
            .map_or(0, |n| n.depth.saturating_add(1));
        let kind = match kind {
            Kind::Address(a) => {
                let key = a.key();
                if self
                    .ancestors(parent)
                    .any(|n| matches!(&n.kind, Kind::Address(b) if b.key() == key))
                {
                    self.loop_cut(a.text);
                    return Ok(Inserted::Loop);
                }
                if !self.seen_addresses.insert(key) {
                    return Ok(Inserted::Duplicate);
                }
                Kind::Address(a)
            }
            Kind::User(mut u) => {
                u.same_as = self.ancestor_indices(parent).find(|&a| {
                    self.nodes.get(a).is_some_and(|n| {
                        n.action == action && matches!(&n.kind, Kind::User(x) if x.name == u.name)
                    })
                });
                let key = (
                    u.name.clone(),
                    action,
                    self.nearest_address(parent),
                    u.same_as.is_some(),
                );
                if !self.seen_users.insert(key) {
                    return Ok(Inserted::Duplicate);
                }
                Kind::User(u)
            }
            other => other,
        };
        let index = self.nodes.len();
        self.nodes.push(Node {
            kind,
            parent: Some(parent),
            depth,
            action,
        });
        self.queue.push_back(index);
        Ok(Inserted::New)
    }

    /// `start` and its ancestors, nearest first.
    fn ancestor_indices(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        // Parents always have smaller indices, so this ends.
        std::iter::successors(Some(start), move |&i| {
            self.nodes.get(i).and_then(|n| n.parent).filter(|&p| p < i)
        })
        .filter(move |&i| i < self.nodes.len())
    }

    fn ancestors(&self, start: usize) -> impl Iterator<Item = &Node> + '_ {
        self.ancestor_indices(start)
            .filter_map(move |i| self.nodes.get(i))
    }

    fn nearest_address(&self, start: usize) -> Option<usize> {
        self.ancestor_indices(start)
            .find(|&i| matches!(self.nodes.get(i).map(|n| &n.kind), Some(Kind::Address(_))))
    }

    /// The address a delivery of node `i` is for.
    fn dest_of(&self, i: usize) -> String {
        match self
            .nearest_address(i)
            .and_then(|a| self.nodes.get(a))
            .map(|n| &n.kind)
        {
            Some(Kind::Address(a)) => a.text.clone(),
            _ => self.root_text(),
        }
    }

    // ---------------------------------------------------------- lookups

    fn local(&self, action: ActionId) -> Result<&'a LocalDispatcher, ExpandError> {
        let a = self
            .config
            .actions
            .get(action.0)
            .ok_or(TempError::UnknownAction(action.0))?;
        match &a.dispatcher {
            Dispatcher::Local(ld) => Ok(ld),
            Dispatcher::Relay(_) => Err(TempError::NotLocal(a.name.clone()).into()),
        }
    }

    fn table_name(&self, id: TableId) -> String {
        self.config
            .tables
            .get(id.0)
            .map_or_else(|| format!("#{}", id.0), |t| t.name.clone())
    }

    fn table(&self, id: TableId) -> Result<&'a Table, ExpandError> {
        self.tables.get(id).ok_or_else(|| {
            TempError::MissingTable {
                name: self.table_name(id),
            }
            .into()
        })
    }

    fn table_error(&self, id: TableId, source: TableError) -> ExpandError {
        TempError::Table {
            name: self.table_name(id),
            source,
        }
        .into()
    }

    fn lookup_alias(&self, id: TableId, name: &str) -> Result<Option<AliasMatch>, ExpandError> {
        self.table(id)?
            .lookup_alias(name, self.config.smtp.sub_addr_delim)
            .map_err(|e| self.table_error(id, e))
    }

    fn lookup_virtual(
        &self,
        id: TableId,
        user: &str,
        domain: &str,
    ) -> Result<Option<AliasMatch>, ExpandError> {
        self.table(id)?
            .lookup_virtual(user, domain, self.config.smtp.sub_addr_delim)
            .map_err(|e| self.table_error(id, e))
    }

    /// The account a user name delivers to under `ld`; `None`: no such
    /// user.
    fn resolve(&self, ld: &LocalDispatcher, base: &str) -> Result<Option<Userinfo>, ExpandError> {
        resolve_user(self.config, self.tables, ld, base)
    }
}

/// The account a (sub-address-free, lower-cased) user name delivers to
/// under a local action: the `user` option's account if it has one, else
/// the name in the action's userbase or `<getpwnam>`. `None`: no such user.
/// One rule for RCPT time (expansion) and delivery time (the parent).
pub fn resolve_user<T: Tables + ?Sized>(
    config: &Config,
    tables: &T,
    ld: &LocalDispatcher,
    name: &str,
) -> Result<Option<Userinfo>, ExpandError> {
    let getpwnam = || {
        config
            .tables
            .iter()
            .position(|t| t.name == "<getpwnam>")
            .map(TableId)
            .ok_or_else(|| -> ExpandError {
                TempError::MissingTable {
                    name: "<getpwnam>".to_owned(),
                }
                .into()
            })
    };
    let lookup = |id: TableId, key: &str| -> Result<Option<Userinfo>, ExpandError> {
        let table_name = || {
            config
                .tables
                .get(id.0)
                .map_or_else(|| format!("#{}", id.0), |t| t.name.clone())
        };
        let table = tables.get(id).ok_or_else(|| -> ExpandError {
            TempError::MissingTable { name: table_name() }.into()
        })?;
        match table.lookup(Service::Userinfo, key) {
            Ok(Some(Value::Userinfo(info))) => Ok(Some(info)),
            Ok(_) => Ok(None),
            Err(source) => Err(TempError::Table {
                name: table_name(),
                source,
            }
            .into()),
        }
    };
    if let Some(user) = &ld.user {
        // The `user` option names a system account: the userbase does not
        // apply to it.
        return lookup(getpwnam()?, user)?
            .map(Some)
            .ok_or_else(|| TempError::NoDeliveryUser(user.clone()).into());
    }
    let id = match ld.userbase {
        Some(id) => id,
        None => getpwnam()?,
    };
    lookup(id, name)
}

fn addr_of(m: MailAddr) -> Addr {
    Addr {
        text: format!("{}@{}", m.user, m.domain),
        user: m.user,
        domain: m.domain,
    }
}
