//! Recursive-descent parser for smtpd.conf, one pass, as OpenSMTPD's
//! parse.y reads it: every name must be declared before it is used, each
//! directive ends at the end of its line, and an error skips the rest of the
//! line so that one run reports every error it can find.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsmtpd_table::{Shape, Table, TableDecl};

use crate::check;
use crate::diag::{Diagnostic, Diagnostics, suggest};
use crate::lexer::{Keyword, Lexer, Pos, Token, TokenKind};
use crate::model::*;
use crate::{HostResolver, Includes, InterfaceAddr, Outcome, ParseOptions, TableFiles};

/// Largest configuration file read, included files too.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;
/// Deepest nesting of `include`.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files one configuration may read.
pub const MAX_FILES: usize = 256;
/// After this many errors the parser stops.
pub const MAX_ERRORS: usize = 100;
/// `listen on ... pki` may be given at most this many times.
pub const MAX_PKI_PER_LISTENER: usize = 32;
/// Most values one inline `{ }` table may hold.
pub const MAX_INLINE_VALUES: usize = 65_536;
/// `bounce warn-interval` takes at most this many delays.
pub const MAX_BOUNCE_WARN: usize = 4;

/// A syntax or semantic error was reported; the caller skips the line.
#[derive(Debug, Clone, Copy)]
pub struct Fail;
type PResult<T> = Result<T, Fail>;

/// Kinds of declared names, for "used before declared" hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RefKind {
    Table,
    Action,
    Pki,
    Ca,
    Filter,
    Proc,
    Wrapper,
}

impl RefKind {
    fn noun(self) -> &'static str {
        match self {
            RefKind::Table => "table",
            RefKind::Action => "action",
            RefKind::Pki => "pki",
            RefKind::Ca => "ca",
            RefKind::Filter => "filter",
            RefKind::Proc => "proc",
            RefKind::Wrapper => "mda wrapper",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableOrigin {
    Declared,
    Builtin,
    Anonymous,
}

#[derive(Debug)]
struct TableEntry {
    named: NamedTable,
    origin: TableOrigin,
    shape: Shape,
}

/// What a use of a table needs it to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    List,
    Map,
}

#[derive(Debug)]
struct PkiDraft {
    name: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    dhe: Dhe,
    span: Span,
}

#[derive(Debug)]
struct CaDraft {
    name: String,
    cert: Option<PathBuf>,
    span: Span,
}

#[derive(Debug)]
struct PendingRef {
    diag: usize,
    kind: RefKind,
    name: String,
    pos: Pos,
}

/// Directive keywords: recovery inside `{ }` stops at a line starting with
/// one of these, and unknown directives are compared with them.
const DIRECTIVES: &[Keyword] = &[
    Keyword::Action,
    Keyword::Admd,
    Keyword::Bounce,
    Keyword::Ca,
    Keyword::Filter,
    Keyword::Include,
    Keyword::Listen,
    Keyword::Match,
    Keyword::Mda,
    Keyword::Mta,
    Keyword::Pki,
    Keyword::Proc,
    Keyword::Queue,
    Keyword::Scheduler,
    Keyword::Smtp,
    Keyword::Srs,
    Keyword::Table,
];

const LISTEN_OPTIONS: &[&str] = &[
    "inet4",
    "inet6",
    "port",
    "filter",
    "smtps",
    "tls",
    "tls-require",
    "ciphers",
    "protocols",
    "pki",
    "ca",
    "auth",
    "auth-optional",
    "tag",
    "hostname",
    "hostnames",
    "mask-src",
    "received-auth",
    "no-dsn",
    "proxy-v2",
    "senders",
];

const LOCAL_OPTIONS: &[&str] = &["user", "alias", "virtual", "userbase", "wrapper", "ttl"];

const RELAY_OPTIONS: &[&str] = &[
    "helo",
    "helo-src",
    "pki",
    "ca",
    "ciphers",
    "protocols",
    "src",
    "mail-from",
    "backup",
    "host",
    "domain",
    "tls",
    "auth",
    "filter",
    "srs",
    "ttl",
];

const METHODS: &[&str] = &[
    "mbox",
    "maildir",
    "lmtp",
    "mda",
    "forward-only",
    "expand-only",
    "relay",
];

const MATCH_OPTIONS: &[&str] = &[
    "from",
    "for",
    "tag",
    "helo",
    "tls",
    "auth",
    "mail-from",
    "rcpt-to",
    "action",
    "reject",
];

/// Parse the file at `path`.
pub(crate) fn parse_path(path: &Path, opts: &ParseOptions) -> Outcome {
    match read_config_file(path) {
        Ok(data) => parse_data(path, data, opts),
        Err(reason) => {
            let mut diagnostics = Diagnostics::new();
            diagnostics.push(Diagnostic::error(
                path.to_path_buf(),
                1,
                1,
                format!("cannot read {}: {reason}", path.display()),
            ));
            Outcome {
                config: None,
                diagnostics,
            }
        }
    }
}

/// Parse `data` as the file `path`.
pub(crate) fn parse_data(path: &Path, data: Vec<u8>, opts: &ParseOptions) -> Outcome {
    let mut p = Parser::new(path, data, opts);
    p.run();
    p.finish()
}

fn read_config_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        // Directories, FIFOs and devices: nothing to read, or reads that
        // never end.
        return Err("not a regular file".to_string());
    }
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(format!("file larger than {MAX_FILE_SIZE} bytes"));
    }
    Ok(data)
}

/// The machine's interface addresses, from getifaddrs.
fn system_interfaces() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifa in addrs {
        let Some(storage) = ifa.address else {
            continue;
        };
        let addr = if let Some(sin) = storage.as_sockaddr_in() {
            IpAddr::V4(sin.ip())
        } else if let Some(sin6) = storage.as_sockaddr_in6() {
            IpAddr::V6(sin6.ip())
        } else {
            continue;
        };
        out.push(InterfaceAddr {
            name: ifa.interface_name,
            addr,
        });
    }
    out
}

fn is_link_local_v6(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The server name: /etc/mail/mailname's first line, else the host name,
/// made canonical through /etc/hosts when it has no dot.
fn system_server_name(resolver: &HostResolver) -> String {
    if let Ok(text) = std::fs::read_to_string("/etc/mail/mailname")
        && let Some(first) = text.lines().next()
    {
        let first = first.trim();
        if !first.is_empty() && first.len() <= 255 {
            return first.to_string();
        }
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    if host.contains('.') || *resolver == HostResolver::Disabled {
        return host;
    }
    canonical_from_hosts(&host).unwrap_or(host)
}

fn canonical_from_hosts(short: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/hosts").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let _addr = fields.next()?;
        let names: Vec<&str> = fields.collect();
        if names.iter().any(|n| n.eq_ignore_ascii_case(short))
            && let Some(first) = names.first()
            && first.contains('.')
        {
            return Some((*first).to_string());
        }
    }
    None
}

fn span_of(pos: Pos) -> Span {
    Span {
        file: pos.file,
        line: pos.line,
        col: pos.col,
    }
}

/// Render a token as the word it was in the file, for hints.
fn token_word(kind: &TokenKind) -> Option<String> {
    Some(match kind {
        TokenKind::Keyword(k) => k.as_str().to_string(),
        TokenKind::Str { value, quoted } => {
            if *quoted {
                format!("\"{value}\"")
            } else {
                value.clone()
            }
        }
        TokenKind::Number(n) => n.to_string(),
        TokenKind::LBrace => "{".into(),
        TokenKind::RBrace => "}".into(),
        TokenKind::Lt => "<".into(),
        TokenKind::Gt => ">".into(),
        TokenKind::Bang => "!".into(),
        TokenKind::Eq => "=".into(),
        TokenKind::Arrow => "=>".into(),
        TokenKind::Comma => ",".into(),
        TokenKind::Newline | TokenKind::Eof => return None,
    })
}

/// Options of one `listen on` line, with where each was given.
#[derive(Debug, Default)]
struct ListenOpts {
    family: Option<(Family, Pos)>,
    port: Option<(u16, Pos)>,
    filter: Option<(FilterId, Pos)>,
    tls: Option<(ListenerTls, Pos)>,
    ciphers: Option<String>,
    protocols: Option<String>,
    pkis: Vec<(PkiId, Pos)>,
    pki_count: usize,
    first_pki: Option<Pos>,
    ca: Option<(CaId, Pos)>,
    auth: Option<(ListenerAuth, Pos)>,
    tag: Option<String>,
    hostname: Option<String>,
    hostnames: Option<TableId>,
    mask_src: Option<Pos>,
    received_auth: Option<Pos>,
    no_dsn: Option<Pos>,
    proxy_v2: Option<Pos>,
    senders: Option<Senders>,
}

/// Flags of one `match` rule, to refuse a second use of each part.
#[derive(Debug, Default)]
struct RuleFlags {
    from: bool,
    to: bool,
    tag: bool,
    helo: bool,
    tls: bool,
    auth: bool,
    mail_from: bool,
    rcpt_to: bool,
}

pub(crate) struct Parser<'o> {
    opts: &'o ParseOptions,
    lexer: Lexer,
    peeked: Option<Token>,
    eof: Token,
    files: Vec<PathBuf>,
    canonical: Vec<Option<PathBuf>>,
    diags: Diagnostics,
    errors: usize,
    gave_up: bool,
    /// A syntax or lexing error was reported for the current directive.
    line_failed: bool,
    /// The last token taken was a newline: the failed line is already over.
    after_newline: bool,
    /// Tokens taken so far, to make sure every directive makes progress.
    taken: u64,
    /// Bytes of configuration read so far, includes too.
    total_bytes: u64,
    /// Skipping the rest of a line: lexing errors are not reported.
    recovering: bool,
    brace_depth: usize,
    pending: Vec<PendingRef>,
    declared: HashMap<(RefKind, String), Span>,

    interfaces: Vec<InterfaceAddr>,
    hostname: String,

    tables: Vec<TableEntry>,
    table_names: HashMap<String, TableId>,
    anon_counter: usize,
    dynchain_counter: u32,
    actions: Vec<Action>,
    action_names: HashMap<String, ActionId>,
    pkis: Vec<PkiDraft>,
    pki_names: HashMap<String, PkiId>,
    cas: Vec<CaDraft>,
    ca_names: HashMap<String, CaId>,
    procs: Vec<Proc>,
    proc_names: HashMap<String, ProcId>,
    filters: Vec<Filter>,
    filter_names: HashMap<String, FilterId>,
    listeners: Vec<Listener>,
    socket: SocketListener,
    rules: Vec<Rule>,
    smtp: SmtpOptions,
    queue: QueueOptions,
    bounce_warn_interval: Vec<Duration>,
    mda: MdaOptions,
    mta: MtaOptions,
    scheduler: SchedulerLimits,
    srs: SrsOptions,
    admd: Option<String>,
}

impl<'o> Parser<'o> {
    fn new(path: &Path, data: Vec<u8>, opts: &'o ParseOptions) -> Self {
        let total_bytes = data.len() as u64;
        let mut lexer = Lexer::new(0, data);
        for (name, value) in &opts.macros {
            lexer.define_macro(name, value, true);
        }
        let interfaces = opts.interfaces.clone().unwrap_or_else(system_interfaces);
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| system_server_name(&opts.resolver));
        let mut p = Parser {
            opts,
            lexer,
            peeked: None,
            eof: Token {
                kind: TokenKind::Eof,
                pos: Pos {
                    file: 0,
                    line: 1,
                    col: 1,
                },
            },
            files: vec![path.to_path_buf()],
            canonical: vec![std::fs::canonicalize(path).ok()],
            diags: Diagnostics::new(),
            errors: 0,
            gave_up: false,
            line_failed: false,
            after_newline: true,
            taken: 0,
            total_bytes,
            recovering: false,
            brace_depth: 0,
            pending: Vec::new(),
            declared: HashMap::new(),
            interfaces,
            hostname,
            tables: Vec::new(),
            table_names: HashMap::new(),
            anon_counter: 0,
            dynchain_counter: 1,
            actions: Vec::new(),
            action_names: HashMap::new(),
            pkis: Vec::new(),
            pki_names: HashMap::new(),
            cas: Vec::new(),
            ca_names: HashMap::new(),
            procs: Vec::new(),
            proc_names: HashMap::new(),
            filters: Vec::new(),
            filter_names: HashMap::new(),
            listeners: Vec::new(),
            socket: SocketListener::default(),
            rules: Vec::new(),
            smtp: SmtpOptions::default(),
            queue: QueueOptions::default(),
            bounce_warn_interval: vec![Duration::from_secs(4 * 3600)],
            mda: MdaOptions::default(),
            mta: MtaOptions::default(),
            scheduler: SchedulerLimits::default(),
            srs: SrsOptions::default(),
            admd: None,
        };
        p.builtin_tables();
        p
    }

    // ------------------------------------------------------------- tokens

    fn lex(&mut self) -> Token {
        match self.lexer.next_token() {
            Ok(t) => t,
            Err(e) => {
                if !self.recovering && !self.line_failed {
                    let mut d = self.diag_at(e.pos, e.kind.to_string());
                    d.hint = e.hint;
                    self.push(d);
                }
                self.line_failed = true;
                // The lexer skipped the rest of the line: say so.
                Token {
                    kind: TokenKind::Newline,
                    pos: e.pos,
                }
            }
        }
    }

    fn peek(&mut self) -> &Token {
        if self.peeked.is_none() {
            let t = self.lex();
            self.peeked = Some(t);
        }
        self.peeked.as_ref().unwrap_or(&self.eof)
    }

    fn peek_kind(&mut self) -> TokenKind {
        self.peek().kind.clone()
    }

    fn peek_pos(&mut self) -> Pos {
        self.peek().pos
    }

    fn next(&mut self) -> Token {
        self.peek();
        let t = self.peeked.take().unwrap_or_else(|| self.eof.clone());
        self.after_newline = t.kind == TokenKind::Newline;
        self.taken = self.taken.wrapping_add(1);
        t
    }

    fn peek_is_kw(&mut self, k: Keyword) -> bool {
        self.peek().kind == TokenKind::Keyword(k)
    }

    fn eat_kw(&mut self, k: Keyword) -> bool {
        if self.peek_is_kw(k) {
            self.next();
            true
        } else {
            false
        }
    }

    fn at_eol(&mut self) -> bool {
        matches!(self.peek().kind, TokenKind::Newline | TokenKind::Eof)
    }

    fn skip_newlines(&mut self) {
        while self.peek().kind == TokenKind::Newline {
            self.next();
        }
    }

    // -------------------------------------------------------- diagnostics

    fn file_path(&self, file: usize) -> PathBuf {
        self.files.get(file).cloned().unwrap_or_default()
    }

    fn diag_at(&self, pos: Pos, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file_path(pos.file), pos.line, pos.col, msg)
    }

    fn push(&mut self, d: Diagnostic) -> usize {
        if d.is_error() {
            self.errors += 1;
        }
        self.diags.push(d);
        self.diags.len() - 1
    }

    /// A syntax error: reported once per line; the caller recovers.
    fn syntax(&mut self, pos: Pos, msg: impl Into<String>, hint: Option<String>) -> Fail {
        if !self.line_failed {
            let mut d = self.diag_at(pos, msg);
            d.hint = hint;
            self.push(d);
        }
        self.line_failed = true;
        Fail
    }

    /// A semantic error: always reported; parsing of the line may go on.
    fn semantic(&mut self, pos: Pos, msg: impl Into<String>, hint: Option<String>) -> usize {
        let mut d = self.diag_at(pos, msg);
        d.hint = hint;
        self.push(d)
    }

    fn warn(&mut self, pos: Pos, msg: impl Into<String>) {
        let d = Diagnostic::warning(self.file_path(pos.file), pos.line, pos.col, msg);
        self.push(d);
    }

    /// An unknown name: reported now, with a hint added at the end if it is
    /// declared further down.
    fn unknown_ref(&mut self, pos: Pos, kind: RefKind, name: &str, msg: String) -> Fail {
        let diag = self.semantic(pos, msg, None);
        self.pending.push(PendingRef {
            diag,
            kind,
            name: name.to_string(),
            pos,
        });
        self.line_failed = true;
        Fail
    }

    fn declare(&mut self, kind: RefKind, name: &str, pos: Pos) {
        self.declared
            .entry((kind, name.to_string()))
            .or_insert_with(|| span_of(pos));
    }

    fn unexpected(&mut self, tok: &Token, expected: &str) -> Fail {
        let hint = match &tok.kind {
            TokenKind::Keyword(k) => Some(format!(
                "'{k}' is a reserved word; quote it (\"{k}\") to use it as a value"
            )),
            _ => None,
        };
        self.syntax(
            tok.pos,
            format!("syntax error: expected {expected}, found {}", tok.kind),
            hint,
        )
    }

    fn expect_eol(&mut self) -> PResult<()> {
        let t = self.peek().clone();
        match t.kind {
            TokenKind::Newline => {
                self.next();
                Ok(())
            }
            TokenKind::Eof => Ok(()),
            _ => Err(self.unexpected(&t, "end of line")),
        }
    }

    fn expect_kw(&mut self, k: Keyword, expected: &str) -> PResult<Pos> {
        let t = self.next();
        if t.kind == TokenKind::Keyword(k) {
            Ok(t.pos)
        } else {
            Err(self.unexpected(&t, expected))
        }
    }

    /// A string value; a keyword or a number in its place is an error with a
    /// hint to quote it.
    fn expect_string(&mut self, what: &str) -> PResult<(String, Pos)> {
        let t = self.next();
        match t.kind {
            TokenKind::Str { value, .. } => Ok((value, t.pos)),
            TokenKind::Keyword(k) => Err(self.syntax(
                t.pos,
                format!("syntax error: expected {what}, found keyword '{k}'"),
                Some(format!(
                    "'{k}' is a reserved word; write \"{k}\" to use it as {what}"
                )),
            )),
            TokenKind::Number(n) => Err(self.syntax(
                t.pos,
                format!("syntax error: expected {what}, found number {n}"),
                Some(format!("write \"{n}\" to use it as {what}")),
            )),
            _ => Err(self.unexpected(&t, what)),
        }
    }

    /// A `ciphers` value, checked against what rustls can do: a list it
    /// cannot honour is an error here, not a surprise at the first
    /// handshake.
    fn cipher_list(&mut self) -> PResult<String> {
        let (value, pos) = self.expect_string("a cipher list")?;
        match rsmtpd_tls::cipher_suites(Some(&value)) {
            Ok(_) => Ok(value),
            Err(e) => Err(self.syntax(pos, format!("ciphers: {e}"), None)),
        }
    }

    /// A `protocols` value, checked the same way.
    fn protocol_list(&mut self) -> PResult<String> {
        let (value, pos) = self.expect_string("a protocol list")?;
        match rsmtpd_tls::protocol_versions(Some(&value)) {
            Ok(_) => Ok(value),
            Err(e) => Err(self.syntax(pos, format!("protocols: {e}"), None)),
        }
    }

    /// A declared name. A reserved word there is reported, then used as
    /// the name anyway so that later references to it do not cascade.
    fn expect_name(&mut self, what: &str) -> PResult<(String, Pos)> {
        if let TokenKind::Keyword(k) = self.peek_kind() {
            let t = self.next();
            self.semantic(
                t.pos,
                format!("syntax error: expected {what}, found keyword '{k}'"),
                Some(format!(
                    "'{k}' is a reserved word; write \"{k}\" to use it as {what}"
                )),
            );
            return Ok((k.as_str().to_string(), t.pos));
        }
        self.expect_string(what)
    }

    fn expect_number(&mut self, what: &str) -> PResult<(i64, Pos)> {
        let t = self.next();
        match t.kind {
            TokenKind::Number(n) => Ok((n, t.pos)),
            _ => Err(self.unexpected(&t, what)),
        }
    }

    fn expect_unsigned(&mut self, what: &str) -> PResult<(u64, Pos)> {
        let (n, pos) = self.expect_number(what)?;
        match u64::try_from(n) {
            Ok(v) => Ok((v, pos)),
            Err(_) => Err(self.syntax(pos, format!("invalid {what}: {n}"), None)),
        }
    }

    // --------------------------------------------------------------- run

    fn run(&mut self) {
        loop {
            if self.errors >= MAX_ERRORS {
                let pos = self.peek_pos();
                self.gave_up = true;
                self.semantic(pos, "too many errors, giving up", None);
                return;
            }
            self.line_failed = false;
            self.brace_depth = 0;
            match self.peek().kind {
                TokenKind::Eof => return,
                TokenKind::Newline => {
                    self.next();
                    continue;
                }
                _ => {}
            }
            let before = self.taken;
            if self.directive().is_err() {
                self.recover();
            }
            if self.taken == before {
                // Never loop on a token nothing would take.
                self.next();
            }
        }
    }

    /// Skip to the end of the failed directive: the end of its line, or of
    /// its `{ }` block when the error was inside one. A line that starts a
    /// new directive ends an unclosed block.
    fn recover(&mut self) {
        let mut depth = self.brace_depth;
        if depth == 0 && self.after_newline {
            return;
        }
        self.recovering = true;
        loop {
            let t = self.next();
            match t.kind {
                TokenKind::Eof => break,
                TokenKind::Newline => {
                    if depth == 0 {
                        break;
                    }
                    match self.peek().kind {
                        TokenKind::Eof => break,
                        TokenKind::Keyword(k) if DIRECTIVES.contains(&k) => break,
                        _ => {}
                    }
                }
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        self.recovering = false;
        self.brace_depth = 0;
    }

    fn directive(&mut self) -> PResult<()> {
        let t = self.peek().clone();
        if let TokenKind::Keyword(k) = t.kind
            && !matches!(k, Keyword::Reject)
            && !DIRECTIVES.contains(&k)
        {
            self.next();
        }
        match &t.kind {
            TokenKind::Keyword(k) => match k {
                Keyword::Include => self.p_include(),
                Keyword::Bounce => self.p_bounce(),
                Keyword::Admd => self.p_admd(),
                Keyword::Ca => self.p_ca(),
                Keyword::Mda => self.p_mda(),
                Keyword::Mta => self.p_mta(),
                Keyword::Pki => self.p_pki(),
                Keyword::Proc => self.p_proc(),
                Keyword::Queue => self.p_queue(),
                Keyword::Scheduler => self.p_scheduler(),
                Keyword::Smtp => self.p_smtp(),
                Keyword::Srs => self.p_srs(),
                Keyword::Listen => self.p_listen(),
                Keyword::Table => self.p_table(),
                Keyword::Action => self.p_action(),
                Keyword::Match => self.p_match(),
                Keyword::Filter => self.p_filter(),
                Keyword::Reject => Err(self.old_rule(&t, "reject")),
                Keyword::Limit => Err(self.syntax(
                    t.pos,
                    "unknown directive 'limit'",
                    Some(
                        "the grammar changed in OpenSMTPD 6.4: write `mta limit ...`, \
                         `mda limit ...`, `smtp limit ...` or `scheduler limit ...`"
                            .into(),
                    ),
                )),
                Keyword::MaxMessageSize => Err(self.syntax(
                    t.pos,
                    "unknown directive 'max-message-size'",
                    Some(
                        "the grammar changed in OpenSMTPD 6.4: write `smtp max-message-size SIZE`"
                            .into(),
                    ),
                )),
                Keyword::SubAddrDelim => Err(self.syntax(
                    t.pos,
                    "unknown directive 'sub-addr-delim'",
                    Some("write `smtp sub-addr-delim CHAR`".into()),
                )),
                other => {
                    let other = *other;
                    Err(self.syntax(
                        t.pos,
                        format!("syntax error: '{other}' cannot start a directive"),
                        None,
                    ))
                }
            },
            TokenKind::Str { value, .. } => {
                let value = value.clone();
                self.next();
                if matches!(self.peek().kind, TokenKind::Eq) {
                    return self.p_varset(value, t.pos);
                }
                self.peeked_back_unknown(&value, &t)
            }
            _ => {
                self.next();
                Err(self.unexpected(&t, "a directive"))
            }
        }
    }

    /// An unknown first word: old-grammar hints, else a spelling hint.
    fn peeked_back_unknown(&mut self, word: &str, t: &Token) -> PResult<()> {
        match word {
            "accept" => return Err(self.old_rule(t, "accept")),
            "expire" => {
                return Err(self.syntax(
                    t.pos,
                    "unknown directive 'expire'",
                    Some(
                        "the grammar changed in OpenSMTPD 6.4: use `queue ttl DELAY`, or the \
                         `ttl DELAY` option at the end of an `action` line"
                            .into(),
                    ),
                ));
            }
            "bounce-warn" => {
                return Err(self.syntax(
                    t.pos,
                    "unknown directive 'bounce-warn'",
                    Some("write `bounce warn-interval DELAY[, DELAY...]`".into()),
                ));
            }
            _ => {}
        }
        let names: Vec<&str> = DIRECTIVES.iter().map(|k| k.as_str()).collect();
        let hint = suggest(word, &names).map(|s| format!("did you mean '{s}'?"));
        Err(self.syntax(t.pos, format!("unknown directive '{word}'"), hint))
    }

    /// A pre-6.4 `accept ...` / `reject ...` rule: read the rest of the line
    /// and show its translation into `action` + `match`.
    fn old_rule(&mut self, t: &Token, verb: &str) -> Fail {
        if verb == "reject" {
            self.next();
        }
        let mut words: Vec<String> = Vec::new();
        self.recovering = true;
        loop {
            let tok = self.next();
            match tok.kind {
                TokenKind::Newline | TokenKind::Eof => break,
                TokenKind::Gt => {
                    if let Some(last) = words.last_mut() {
                        last.push('>');
                    }
                }
                ref k => {
                    if let Some(w) = token_word(k) {
                        match words.last_mut() {
                            Some(last) if last == "<" => last.push_str(&w),
                            _ => words.push(w),
                        }
                    }
                    if words.len() > 64 {
                        break;
                    }
                }
            }
        }
        self.recovering = false;
        let hint = old_rule_translation(verb, &words);
        let f = self.syntax(
            t.pos,
            format!("unknown directive '{verb}'"),
            Some(format!(
                "the grammar changed in OpenSMTPD 6.4; write it as:\n{hint}"
            )),
        );
        // The line was consumed while reading it for the hint.
        self.peeked = Some(Token {
            kind: TokenKind::Newline,
            pos: t.pos,
        });
        f
    }

    // ---------------------------------------------------------- directives

    fn p_varset(&mut self, name: String, pos: Pos) -> PResult<()> {
        self.next(); // '='
        let t = self.next();
        let value = match t.kind {
            TokenKind::Str { value, .. } => value,
            TokenKind::Number(n) => n.to_string(),
            _ => return Err(self.unexpected(&t, "a macro value")),
        };
        if name.chars().any(char::is_whitespace) {
            return Err(self.syntax(pos, "macro name cannot contain whitespace", None));
        }
        if !check::valid_macro_name(&name) {
            return Err(self.syntax(
                pos,
                format!("invalid macro name '{name}': use letters, digits and underscores"),
                None,
            ));
        }
        self.expect_eol()?;
        self.lexer.define_macro(&name, &value, false);
        Ok(())
    }

    fn p_include(&mut self) -> PResult<()> {
        let kw = self.next();
        let (path, pos) = self.expect_string("a file name")?;
        self.expect_eol()?;
        if self.opts.includes == Includes::Disabled {
            return Err(self.syntax(
                pos,
                format!("failed to include file {path}: includes are disabled"),
                None,
            ));
        }
        let path_buf = PathBuf::from(&path);
        if !path_buf.is_absolute() {
            return Err(self.syntax(
                pos,
                format!("failed to include file {path}: the path must be absolute"),
                None,
            ));
        }
        let stack = self.lexer.file_stack();
        if stack.len() > MAX_INCLUDE_DEPTH {
            return Err(self.syntax(
                kw.pos,
                format!("failed to include file {path}: includes nested more than {MAX_INCLUDE_DEPTH} deep"),
                None,
            ));
        }
        if self.files.len() >= MAX_FILES {
            return Err(self.syntax(
                kw.pos,
                format!("failed to include file {path}: more than {MAX_FILES} files read"),
                None,
            ));
        }
        let canonical = std::fs::canonicalize(&path_buf).ok();
        if let Some(c) = &canonical {
            let looping: Vec<String> = stack
                .iter()
                .filter_map(|&i| self.canonical.get(i).cloned().flatten().map(|p| (i, p)))
                .skip_while(|(_, p)| p != c)
                .map(|(i, _)| self.file_path(i).display().to_string())
                .collect();
            if !looping.is_empty() {
                let chain = looping.join(" -> ");
                return Err(self.syntax(
                    pos,
                    format!("failed to include file {path}: include loop ({chain} -> {path})"),
                    None,
                ));
            }
        }
        match read_config_file(&path_buf) {
            Ok(data) if self.total_bytes + data.len() as u64 > MAX_FILE_SIZE => Err(self.syntax(
                pos,
                format!("failed to include file {path}: the configuration is larger than {MAX_FILE_SIZE} bytes"),
                None,
            )),
            Ok(data) => {
                self.total_bytes += data.len() as u64;
                let index = self.files.len();
                self.files.push(path_buf);
                self.canonical.push(canonical);
                self.lexer.push_file(index, data);
                Ok(())
            }
            Err(reason) => Err(self.syntax(
                pos,
                format!("failed to include file {path}: {reason}"),
                None,
            )),
        }
    }

    fn p_bounce(&mut self) -> PResult<()> {
        self.next();
        self.expect_kw(Keyword::WarnInterval, "'warn-interval' after 'bounce'")?;
        let mut delays = Vec::new();
        loop {
            let (s, pos) = self.expect_delay_string("a delay")?;
            let d = match check::parse_delay(&s) {
                Ok(d) => d,
                Err(_) => {
                    return Err(self.syntax(pos, format!("invalid bounce delay: {s}"), None));
                }
            };
            if delays.len() == MAX_BOUNCE_WARN {
                return Err(self.syntax(
                    pos,
                    format!("too many bounce delays (at most {MAX_BOUNCE_WARN})"),
                    None,
                ));
            }
            delays.push(d);
            if matches!(self.peek().kind, TokenKind::Comma) {
                self.next();
            } else {
                break;
            }
        }
        self.expect_eol()?;
        self.bounce_warn_interval = delays;
        Ok(())
    }

    /// A delay is a string such as `4d`; a bare number gets a hint.
    fn expect_delay_string(&mut self, what: &str) -> PResult<(String, Pos)> {
        if let TokenKind::Number(n) = self.peek_kind() {
            let pos = self.peek_pos();
            self.next();
            return Err(self.syntax(
                pos,
                format!("invalid delay: {n}"),
                Some(format!("add a unit: {n}s, {n}m, {n}h or {n}d")),
            ));
        }
        self.expect_string(what)
    }

    fn p_admd(&mut self) -> PResult<()> {
        self.next();
        let (s, pos) = self.expect_string("an authserv-id")?;
        self.expect_eol()?;
        if !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(self.syntax(pos, "not a valid admd", None));
        }
        self.admd = Some(s);
        Ok(())
    }

    fn cert_name(&mut self, what: &str) -> PResult<(String, Pos)> {
        let (name, pos) = self.expect_string(what)?;
        if name != "*" && !check::valid_hostname(&name) {
            return Err(self.syntax(pos, format!("not a valid domain name: {name}"), None));
        }
        Ok((name.to_ascii_lowercase(), pos))
    }

    fn p_ca(&mut self) -> PResult<()> {
        let kw = self.next();
        let (name, pos) = self.cert_name("a ca name")?;
        self.expect_kw(Keyword::Cert, "'cert' after the ca name")?;
        let (file, _) = self.expect_string("a certificate file")?;
        self.expect_eol()?;
        let id = match self.ca_names.get(&name) {
            Some(&id) => id,
            None => {
                let id = CaId(self.cas.len());
                self.cas.push(CaDraft {
                    name: name.clone(),
                    cert: None,
                    span: span_of(kw.pos),
                });
                self.ca_names.insert(name.clone(), id);
                self.declare(RefKind::Ca, &name, pos);
                id
            }
        };
        if let Some(ca) = self.cas.get_mut(id.0) {
            ca.cert = Some(PathBuf::from(file));
        }
        Ok(())
    }

    fn p_pki(&mut self) -> PResult<()> {
        let kw = self.next();
        let (name, pos) = self.cert_name("a pki name")?;
        let mut cert = None;
        let mut key = None;
        let mut dhe = None;
        while !self.at_eol() {
            let t = self.next();
            match t.kind {
                TokenKind::Keyword(Keyword::Cert) => {
                    cert = Some(self.expect_string("a certificate file")?);
                }
                TokenKind::Keyword(Keyword::Key) => {
                    key = Some(self.expect_string("a key file")?);
                }
                TokenKind::Keyword(Keyword::Dhe) => {
                    let (v, vpos) = self.expect_string("none, auto or legacy")?;
                    let d = match v.to_ascii_lowercase().as_str() {
                        "none" => Dhe::None,
                        "auto" => Dhe::Auto,
                        "legacy" => Dhe::Legacy,
                        _ => {
                            return Err(self.syntax(
                                vpos,
                                format!("invalid DHE keyword: {v}"),
                                None,
                            ));
                        }
                    };
                    dhe = Some(d);
                }
                TokenKind::Str { ref value, .. } if value == "certificate" => {
                    return Err(self.syntax(
                        t.pos,
                        "syntax error: unknown pki parameter 'certificate'",
                        Some(
                            "the grammar changed in OpenSMTPD 6.4: write `pki NAME cert FILE`"
                                .into(),
                        ),
                    ));
                }
                _ => return Err(self.unexpected(&t, "cert, key or dhe")),
            }
        }
        self.expect_eol()?;
        let id = match self.pki_names.get(&name) {
            Some(&id) => id,
            None => {
                let id = PkiId(self.pkis.len());
                self.pkis.push(PkiDraft {
                    name: name.clone(),
                    cert: None,
                    key: None,
                    dhe: Dhe::None,
                    span: span_of(kw.pos),
                });
                self.pki_names.insert(name.clone(), id);
                self.declare(RefKind::Pki, &name, pos);
                id
            }
        };
        let mut warnings = Vec::new();
        if let Some(p) = self.pkis.get_mut(id.0) {
            if let Some((c, cpos)) = cert {
                if p.cert.is_some() {
                    warnings.push((
                        cpos,
                        format!("pki {name}: cert given again, this one is used"),
                    ));
                }
                p.cert = Some(PathBuf::from(c));
            }
            if let Some((k, kpos)) = key {
                if p.key.is_some() {
                    warnings.push((
                        kpos,
                        format!("pki {name}: key given again, this one is used"),
                    ));
                }
                p.key = Some(PathBuf::from(k));
            }
            if let Some(d) = dhe {
                p.dhe = d;
            }
        }
        for (pos, msg) in warnings {
            self.warn(pos, msg);
        }
        Ok(())
    }

    /// `user U`, `group G`, `chroot D` after a proc or proc-exec command.
    fn proc_params(&mut self, proc: &mut Proc) -> PResult<()> {
        while !self.at_eol() {
            let t = self.next();
            let (slot, what) = match t.kind {
                TokenKind::Keyword(Keyword::User) => (&mut proc.user, "user"),
                TokenKind::Keyword(Keyword::Group) => (&mut proc.group, "group"),
                TokenKind::Keyword(Keyword::Chroot) => (&mut proc.chroot, "chroot"),
                _ => return Err(self.unexpected(&t, "user, group, chroot or end of line")),
            };
            if slot.is_some() {
                return Err(self.syntax(
                    t.pos,
                    format!("{what} already specified for this processor"),
                    None,
                ));
            }
            let (v, _) = self.expect_string(what)?;
            match t.kind {
                TokenKind::Keyword(Keyword::User) => proc.user = Some(v),
                TokenKind::Keyword(Keyword::Group) => proc.group = Some(v),
                _ => proc.chroot = Some(v),
            }
        }
        Ok(())
    }

    fn p_proc(&mut self) -> PResult<()> {
        let kw = self.next();
        let (name, pos) = self.expect_string("a proc name")?;
        let (command, _) = self.expect_string("a command")?;
        if self.proc_names.contains_key(&name) {
            return Err(self.syntax(
                pos,
                format!("processor already exists with that name: {name}"),
                None,
            ));
        }
        let mut proc = Proc {
            name: name.clone(),
            command,
            user: None,
            group: None,
            chroot: None,
            span: span_of(kw.pos),
        };
        self.proc_params(&mut proc)?;
        self.expect_eol()?;
        self.proc_names
            .insert(name.clone(), ProcId(self.procs.len()));
        self.procs.push(proc);
        self.declare(RefKind::Proc, &name, pos);
        Ok(())
    }

    fn p_queue(&mut self) -> PResult<()> {
        self.next();
        let t = self.next();
        match &t.kind {
            TokenKind::Keyword(Keyword::Compression) => {
                self.expect_eol()?;
                self.queue.compression = true;
            }
            TokenKind::Keyword(Keyword::Encryption) => {
                let enc = if self.at_eol() {
                    QueueEncryption::Prompt
                } else {
                    let (k, _) = self.expect_string("a key, stdin or \"-\"")?;
                    if k.eq_ignore_ascii_case("stdin") || k == "-" {
                        QueueEncryption::Stdin
                    } else {
                        QueueEncryption::Key(k)
                    }
                };
                self.expect_eol()?;
                self.queue.encryption = Some(enc);
            }
            TokenKind::Keyword(Keyword::Ttl) => {
                let (s, pos) = self.expect_delay_string("a delay")?;
                self.expect_eol()?;
                match check::parse_delay(&s) {
                    Ok(d) => self.queue.ttl = d,
                    Err(_) => {
                        return Err(self.syntax(pos, format!("invalid ttl delay: {s}"), None));
                    }
                }
            }
            TokenKind::Str { value, .. } if value == "path" => {
                // Extension: the spool directory.
                let (dir, pos) = self.expect_string("a directory")?;
                self.expect_eol()?;
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    return Err(self.syntax(pos, "queue path must be absolute", None));
                }
                self.queue.path = dir;
            }
            _ => return Err(self.unexpected(&t, "compression, encryption, ttl or path")),
        }
        Ok(())
    }

    /// `KEY NUMBER` pairs of a limit directive.
    fn limit_pairs(&mut self) -> PResult<Vec<(String, u64, Pos)>> {
        let mut out = Vec::new();
        while !self.at_eol() {
            let (k, pos) = self.expect_string("a limit name")?;
            let (v, _) = self.expect_unsigned("limit value")?;
            out.push((k, v, pos));
        }
        Ok(out)
    }

    fn p_scheduler(&mut self) -> PResult<()> {
        self.next();
        self.expect_kw(Keyword::Limit, "'limit' after 'scheduler'")?;
        let pairs = self.limit_pairs()?;
        self.expect_eol()?;
        for (k, v, pos) in pairs {
            let s = &mut self.scheduler;
            match k.as_str() {
                "max-inflight" => s.max_inflight = v,
                "max-evp-batch-size" => s.max_evp_batch_size = v,
                "max-msg-batch-size" => s.max_msg_batch_size = v,
                "max-schedule" => s.max_schedule = v,
                _ => {
                    let hint = suggest(
                        &k,
                        &[
                            "max-inflight",
                            "max-evp-batch-size",
                            "max-msg-batch-size",
                            "max-schedule",
                        ],
                    )
                    .map(|s| format!("did you mean '{s}'?"));
                    return Err(self.syntax(
                        pos,
                        format!("invalid scheduler limit keyword: {k}"),
                        hint,
                    ));
                }
            }
        }
        Ok(())
    }

    fn p_mda(&mut self) -> PResult<()> {
        self.next();
        let t = self.next();
        match t.kind {
            TokenKind::Keyword(Keyword::Limit) => {
                let pairs = self.limit_pairs()?;
                self.expect_eol()?;
                for (k, v, pos) in pairs {
                    let l = &mut self.mda.limits;
                    match k.as_str() {
                        "max-session" => l.max_session = v,
                        "max-session-per-user" => l.max_session_per_user = v,
                        "task-lowat" => l.task_lowat = v,
                        "task-hiwat" => l.task_hiwat = v,
                        "task-release" => l.task_release = v,
                        _ => {
                            let hint = suggest(
                                &k,
                                &[
                                    "max-session",
                                    "max-session-per-user",
                                    "task-lowat",
                                    "task-hiwat",
                                    "task-release",
                                ],
                            )
                            .map(|s| format!("did you mean '{s}'?"));
                            return Err(self.syntax(
                                pos,
                                format!("invalid mda limit keyword: {k}"),
                                hint,
                            ));
                        }
                    }
                }
            }
            TokenKind::Keyword(Keyword::Wrapper) => {
                let (name, pos) = self.expect_string("a wrapper name")?;
                let (command, _) = self.expect_string("a command")?;
                self.expect_eol()?;
                if self.mda.wrappers.contains_key(&name) {
                    return Err(self.syntax(
                        pos,
                        format!("mda wrapper already declared with that name: {name}"),
                        None,
                    ));
                }
                self.declare(RefKind::Wrapper, &name, pos);
                self.mda.wrappers.insert(name, command);
            }
            _ => return Err(self.unexpected(&t, "'limit' or 'wrapper' after 'mda'")),
        }
        Ok(())
    }

    fn p_mta(&mut self) -> PResult<()> {
        self.next();
        let t = self.next();
        match t.kind {
            TokenKind::Keyword(Keyword::MaxDeferred) => {
                let (n, _) = self.expect_unsigned("a number")?;
                self.expect_eol()?;
                self.mta.max_deferred = n;
            }
            TokenKind::Keyword(Keyword::Limit) => {
                let domain = if self.eat_kw(Keyword::For) {
                    self.expect_kw(Keyword::Domain, "'domain' after 'for'")?;
                    Some(self.expect_string("a domain")?.0)
                } else {
                    None
                };
                let mut limits = match &domain {
                    Some(d) => self
                        .mta
                        .domain_limits
                        .get(d)
                        .cloned()
                        .unwrap_or_else(|| self.mta.limits.clone()),
                    None => self.mta.limits.clone(),
                };
                while !self.at_eol() {
                    if self.eat_kw(Keyword::Inet4) {
                        limits.family = Some(Family::Inet4);
                        continue;
                    }
                    if self.eat_kw(Keyword::Inet6) {
                        limits.family = Some(Family::Inet6);
                        continue;
                    }
                    let (k, pos) = self.expect_string("an mta limit name")?;
                    let (v, _) = self.expect_unsigned("limit value")?;
                    if !set_mta_limit(&mut limits, &k, v) {
                        let hint =
                            suggest(&k, MTA_LIMIT_KEYS).map(|s| format!("did you mean '{s}'?"));
                        return Err(self.syntax(
                            pos,
                            format!("invalid mta limit keyword: {k}"),
                            hint,
                        ));
                    }
                }
                self.expect_eol()?;
                match domain {
                    Some(d) => {
                        self.mta.domain_limits.insert(d, limits);
                    }
                    None => self.mta.limits = limits,
                }
            }
            _ => return Err(self.unexpected(&t, "'max-deferred' or 'limit' after 'mta'")),
        }
        Ok(())
    }

    fn p_smtp(&mut self) -> PResult<()> {
        self.next();
        let t = self.next();
        match t.kind {
            TokenKind::Keyword(Keyword::Limit) => {
                let pairs = self.limit_pairs()?;
                self.expect_eol()?;
                for (k, v, pos) in pairs {
                    match k.as_str() {
                        "max-rcpt" => self.smtp.max_rcpt = v,
                        "max-mails" => self.smtp.max_mails = v,
                        // Extensions: OpenSMTPD has no knob for these.
                        "max-sessions" => self.smtp.max_sessions = v,
                        "max-sessions-per-address" => self.smtp.max_sessions_per_address = v,
                        "max-errors" => self.smtp.max_errors = v,
                        _ => {
                            let hint = suggest(
                                &k,
                                &[
                                    "max-rcpt",
                                    "max-mails",
                                    "max-sessions",
                                    "max-sessions-per-address",
                                    "max-errors",
                                ],
                            )
                            .map(|s| format!("did you mean '{s}'?"));
                            return Err(self.syntax(
                                pos,
                                format!("invalid session limit keyword: {k}"),
                                hint,
                            ));
                        }
                    }
                }
            }
            TokenKind::Keyword(Keyword::Ciphers) => {
                let c = self.cipher_list()?;
                self.expect_eol()?;
                self.smtp.ciphers = Some(c);
            }
            TokenKind::Keyword(Keyword::MaxMessageSize) => {
                let t = self.next();
                let size = match t.kind {
                    TokenKind::Number(n) => match u64::try_from(n) {
                        Ok(v) => v,
                        Err(_) => {
                            return Err(self.syntax(t.pos, format!("invalid size: {n}"), None));
                        }
                    },
                    TokenKind::Str { ref value, .. } => match check::parse_size(value) {
                        Ok(v) => v,
                        Err(e) => {
                            return Err(self.syntax(
                                t.pos,
                                format!("invalid size: {value}"),
                                Some(e.to_string()),
                            ));
                        }
                    },
                    _ => return Err(self.unexpected(&t, "a size")),
                };
                self.expect_eol()?;
                self.smtp.max_message_size = size;
            }
            TokenKind::Keyword(Keyword::SubAddrDelim) => {
                let t = self.next();
                let s = match t.kind {
                    TokenKind::Str { value, .. } => value,
                    TokenKind::Number(n) => n.to_string(),
                    _ => return Err(self.unexpected(&t, "a character")),
                };
                self.expect_eol()?;
                let mut chars = s.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else {
                    return Err(self.syntax(
                        t.pos,
                        "subaddressing-delimiter must be one character",
                        None,
                    ));
                };
                if !check::valid_sub_addr_delim(c) {
                    return Err(self.syntax(t.pos, "sub-addr-delim uses invalid character", None));
                }
                self.smtp.sub_addr_delim = c;
            }
            _ => {
                return Err(self.unexpected(
                    &t,
                    "'limit', 'ciphers', 'max-message-size' or 'sub-addr-delim' after 'smtp'",
                ));
            }
        }
        Ok(())
    }

    fn p_srs(&mut self) -> PResult<()> {
        self.next();
        let t = self.next();
        match t.kind {
            TokenKind::Keyword(Keyword::Key) => {
                let backup = self.eat_kw(Keyword::Backup);
                let (k, _) = self.expect_string("a secret")?;
                self.expect_eol()?;
                if backup {
                    self.srs.backup_key = Some(k);
                } else {
                    self.srs.key = Some(k);
                }
            }
            TokenKind::Keyword(Keyword::Ttl) => {
                let (s, pos) = self.expect_delay_string("a delay")?;
                self.expect_eol()?;
                let d = match check::parse_delay(&s) {
                    Ok(d) => d,
                    Err(_) => {
                        return Err(self.syntax(
                            pos,
                            format!("ttl delay \"{s}\" is invalid"),
                            None,
                        ));
                    }
                };
                let days = d.as_secs() / 86400;
                if days == 0 {
                    return Err(self.syntax(pos, format!("ttl delay \"{s}\" is too short"), None));
                }
                self.srs.ttl = Duration::from_secs(days * 86400);
            }
            _ => return Err(self.unexpected(&t, "'key' or 'ttl' after 'srs'")),
        }
        Ok(())
    }

    // -------------------------------------------------------------- tables

    fn builtin_tables(&mut self) {
        let addrs: Vec<IpAddr> = self.interfaces.iter().map(|i| i.addr).collect();
        // As OpenSMTPD: the local enqueuer, the loopback addresses and the
        // machine's interface addresses. Not all of 127.0.0.0/8: a client
        // on 127.0.0.2 is foreign (tests rely on that to look remote).
        let mut localhost = vec![
            "local".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut localnames = vec!["localhost".to_string(), self.hostname.clone()];
        for a in &addrs {
            let text = a.to_string();
            if !localhost.contains(&text) {
                localhost.push(text.clone());
            }
            for v in [text.clone(), format!("[{text}]")] {
                if !localnames.contains(&v) {
                    localnames.push(v);
                }
            }
            if a.is_ipv6() {
                let v = format!("[ipv6:{text}]");
                if !localnames.contains(&v) {
                    localnames.push(v);
                }
            }
        }
        let builtins = [
            ("<localhost>", TableDecl::StaticList(localhost)),
            (
                "<anyhost>",
                TableDecl::StaticList(vec!["local".into(), "0.0.0.0/0".into(), "::/0".into()]),
            ),
            ("<localnames>", TableDecl::StaticList(localnames)),
            ("<anydestination>", TableDecl::StaticList(vec!["*".into()])),
            ("<getpwnam>", TableDecl::Getpwnam),
        ];
        for (name, decl) in builtins {
            let shape = shape_of_decl(&decl);
            self.tables.push(TableEntry {
                named: NamedTable {
                    name: name.to_string(),
                    decl,
                    span: None,
                },
                origin: TableOrigin::Builtin,
                shape,
            });
        }
    }

    fn anonymous_table(&mut self, decl: TableDecl) -> TableId {
        let id = TableId(self.tables.len());
        let shape = shape_of_decl(&decl);
        self.tables.push(TableEntry {
            named: NamedTable {
                name: format!("<dynamic:{}>", self.anon_counter),
                decl,
                span: None,
            },
            origin: TableOrigin::Anonymous,
            shape,
        });
        self.anon_counter += 1;
        id
    }

    /// Inside `{ }`: the end of the file, or a new line that starts with a
    /// directive, means the block was never closed. Reported at the `{`;
    /// the directive's line is left to be parsed.
    fn check_unclosed(&mut self, open: Pos) -> PResult<()> {
        let t = self.peek().clone();
        let directive = matches!(t.kind, TokenKind::Keyword(k) if DIRECTIVES.contains(&k));
        if t.kind == TokenKind::Eof || (directive && self.after_newline) {
            self.brace_depth = 0;
            self.after_newline = true;
            return Err(self.syntax(
                open,
                "unclosed '{'",
                Some(format!("the list is still open at line {}", t.pos.line)),
            ));
        }
        Ok(())
    }

    /// `{ v, ... }` or `{ k = v, ... }` (the `{` already read). Newlines
    /// and commas separate values.
    fn table_values(&mut self, open: Pos) -> PResult<TableDecl> {
        self.brace_depth += 1;
        let mut list: Vec<String> = Vec::new();
        let mut map: Vec<(String, String)> = Vec::new();
        self.skip_newlines();
        loop {
            self.check_unclosed(open)?;
            let t = self.next();
            let key = match t.kind {
                TokenKind::RBrace if list.is_empty() && map.is_empty() => {
                    return Err(self.syntax(t.pos, "a table needs at least one value", None));
                }
                TokenKind::Str { value, .. } => value,
                TokenKind::Eof => {
                    return Err(self.syntax(open, "unclosed '{'", None));
                }
                _ => return Err(self.unexpected(&t, "a table value")),
            };
            if list.len() + map.len() >= MAX_INLINE_VALUES {
                return Err(self.syntax(
                    t.pos,
                    format!("too many values in one table (at most {MAX_INLINE_VALUES})"),
                    Some("put them in a file table: table NAME file:/path".into()),
                ));
            }
            if matches!(self.peek().kind, TokenKind::Eq | TokenKind::Arrow) {
                self.next();
                if !list.is_empty() {
                    return Err(self.syntax(
                        t.pos,
                        "a table is either a list of values or a list of key = value pairs",
                        None,
                    ));
                }
                let (v, _) = self.expect_string("a table value")?;
                map.push((key, v));
            } else {
                if !map.is_empty() {
                    return Err(self.syntax(
                        t.pos,
                        "a table is either a list of values or a list of key = value pairs",
                        None,
                    ));
                }
                list.push(key);
            }
            // Separator: a comma, newlines, or nothing.
            if matches!(self.peek().kind, TokenKind::Comma) {
                self.next();
                self.skip_newlines();
                if matches!(self.peek().kind, TokenKind::RBrace) {
                    let pos = self.peek_pos();
                    return Err(self.syntax(
                        pos,
                        "syntax error: expected a table value after ','",
                        None,
                    ));
                }
                continue;
            }
            self.skip_newlines();
            if matches!(self.peek().kind, TokenKind::RBrace) {
                self.next();
                break;
            }
        }
        self.brace_depth = self.brace_depth.saturating_sub(1);
        Ok(if map.is_empty() {
            TableDecl::StaticList(list)
        } else {
            TableDecl::StaticMap(map)
        })
    }

    fn p_table(&mut self) -> PResult<()> {
        let kw = self.next();
        let (name, pos) = self.expect_name("a table name")?;
        let t = self.next();
        let (decl, shape) = match t.kind {
            TokenKind::LBrace => {
                let decl = self.table_values(t.pos)?;
                let shape = shape_of_decl(&decl);
                (decl, shape)
            }
            TokenKind::Str { ref value, .. } => {
                let decl = match value.strip_prefix('/') {
                    Some(_) => TableDecl::File(PathBuf::from(value)),
                    None => {
                        match value.split_once(':') {
                            Some((backend, config)) => {
                                if !config.starts_with('/') {
                                    return Err(self.syntax(
                                        t.pos,
                                        format!("invalid backend parameter for table: {name}"),
                                        Some("the path of a table must be absolute".into()),
                                    ));
                                }
                                match backend {
                                    "file" => TableDecl::File(PathBuf::from(config)),
                                    "db" => TableDecl::Db(PathBuf::from(config)),
                                    _ => {
                                        return Err(self.syntax(
                                        t.pos,
                                        format!("table backend \"{backend}\" does not exist"),
                                        Some("the backends are file: and db: (table procs are not supported)".into()),
                                    ));
                                    }
                                }
                            }
                            None => {
                                return Err(self.syntax(
                                t.pos,
                                format!("table backend \"{value}\" does not exist"),
                                Some("write file:/path, db:/path, an absolute path or { values }".into()),
                            ));
                            }
                        }
                    }
                };
                (decl, Shape::Dynamic)
            }
            _ => return Err(self.unexpected(&t, "a table path or '{'")),
        };
        self.expect_eol()?;
        if self.table_names.contains_key(&name) {
            return Err(self.syntax(pos, format!("table \"{name}\" already defined"), None));
        }
        let shape = match &decl {
            TableDecl::File(_) | TableDecl::Db(_) if self.opts.table_files == TableFiles::Skip => {
                Shape::Dynamic
            }
            TableDecl::File(p) | TableDecl::Db(p) => match Table::open(&decl) {
                Ok(table) => table.shape(),
                Err(e) => {
                    self.semantic(
                        t.pos,
                        format!(
                            "invalid configuration file {} for table {name}: {e}",
                            p.display()
                        ),
                        None,
                    );
                    Shape::Dynamic
                }
            },
            _ => shape,
        };
        let id = TableId(self.tables.len());
        self.tables.push(TableEntry {
            named: NamedTable {
                name: name.clone(),
                decl,
                span: Some(span_of(kw.pos)),
            },
            origin: TableOrigin::Declared,
            shape,
        });
        self.table_names.insert(name.clone(), id);
        self.declare(RefKind::Table, &name, pos);
        Ok(())
    }

    /// OpenSMTPD's `tables`: a literal (one-value list), `{ ... }` or
    /// `<name>`. Returns the table and where it was written.
    fn tables(&mut self, what: &str) -> PResult<(TableId, Pos)> {
        let t = self.next();
        match t.kind {
            TokenKind::Str { value, .. } => Ok((
                self.anonymous_table(TableDecl::StaticList(vec![value])),
                t.pos,
            )),
            TokenKind::LBrace => {
                let decl = self.table_values(t.pos)?;
                Ok((self.anonymous_table(decl), t.pos))
            }
            TokenKind::Lt => {
                let (name, npos) = self.expect_string("a table name")?;
                let close = self.next();
                if close.kind != TokenKind::Gt {
                    return Err(self.unexpected(&close, "'>'"));
                }
                match self.table_names.get(&name) {
                    Some(&id) => Ok((id, t.pos)),
                    None => Err(self.unknown_ref(
                        npos,
                        RefKind::Table,
                        &name,
                        format!("no such table: {name}"),
                    )),
                }
            }
            _ => Err(self.unexpected(&t, what)),
        }
    }

    fn peek_starts_table(&mut self) -> bool {
        matches!(
            self.peek().kind,
            TokenKind::Str { .. } | TokenKind::LBrace | TokenKind::Lt
        )
    }

    fn table_label(&self, id: TableId) -> String {
        self.tables
            .get(id.0)
            .map(|t| t.named.name.clone())
            .unwrap_or_default()
    }

    /// OpenSMTPD's `table_check_use` for the shape; refuses with its message.
    fn check_use(&mut self, id: TableId, pos: Pos, need: Need, lookup: &str) -> PResult<()> {
        let Some(entry) = self.tables.get(id.0) else {
            return Ok(());
        };
        let ok = match (entry.shape, need) {
            (Shape::Dynamic, _) => {
                !matches!(entry.named.decl, TableDecl::Getpwnam) || lookup == "userbase"
            }
            (Shape::List, Need::List) | (Shape::Map, Need::Map) => true,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let name = match entry.origin {
            TableOrigin::Anonymous => "<inline>".to_string(),
            _ => self.table_label(id),
        };
        let hint = match need {
            Need::List => "a list is needed here: { a, b } or a file of single values",
            Need::Map => "a mapping is needed here: { key = value } or a file of `key value` lines",
        };
        Err(self.syntax(
            pos,
            format!("table \"{name}\" may not be used for {lookup} lookups"),
            Some(hint.to_string()),
        ))
    }

    /// `[regex] tables`, checked for a list use.
    fn matcher(&mut self, lookup: &str) -> PResult<Matcher> {
        let regex = self.eat_kw(Keyword::Regex);
        let (table, pos) = self.tables("a value or <table>")?;
        self.check_use(table, pos, Need::List, lookup)?;
        Ok(Matcher { table, regex })
    }

    /// An optional matcher (after `auth`, `rdns`).
    fn opt_matcher(&mut self, lookup: &str) -> PResult<Option<Matcher>> {
        if self.peek_is_kw(Keyword::Regex) || self.peek_starts_table() {
            Ok(Some(self.matcher(lookup)?))
        } else {
            Ok(None)
        }
    }

    // -------------------------------------------------------------- names

    fn lookup_pki(&mut self, name: &str, pos: Pos) -> PResult<PkiId> {
        let lower = name.to_ascii_lowercase();
        match self.pki_names.get(&lower) {
            Some(&id) => Ok(id),
            None => Err(self.unknown_ref(
                pos,
                RefKind::Pki,
                &lower,
                format!("pki name not found: {name}"),
            )),
        }
    }

    fn lookup_ca(&mut self, name: &str, pos: Pos) -> PResult<CaId> {
        let lower = name.to_ascii_lowercase();
        match self.ca_names.get(&lower) {
            Some(&id) => Ok(id),
            None => Err(self.unknown_ref(
                pos,
                RefKind::Ca,
                &lower,
                format!("ca name not found: {name}"),
            )),
        }
    }

    fn lookup_filter(&mut self, name: &str, pos: Pos) -> PResult<FilterId> {
        match self.filter_names.get(name) {
            Some(&id) => Ok(id),
            None => Err(self.unknown_ref(
                pos,
                RefKind::Filter,
                name,
                format!("no filter exist with that name: {name}"),
            )),
        }
    }

    /// The proc a filter runs, for the "no proc twice in a chain" check.
    fn filter_proc(&self, id: FilterId) -> Option<ProcId> {
        match self.filters.get(id.0).map(|f| &f.kind) {
            Some(FilterKind::Proc(p) | FilterKind::ProcExec(p)) => Some(*p),
            _ => None,
        }
    }

    /// `{ a, b, ... }` of filter names (the `{` already read).
    fn filter_list(&mut self, open: Pos) -> PResult<Vec<FilterId>> {
        self.brace_depth += 1;
        let mut chain: Vec<FilterId> = Vec::new();
        let mut procs: Vec<ProcId> = Vec::new();
        self.skip_newlines();
        loop {
            self.check_unclosed(open)?;
            let (name, pos) = self.expect_string("a filter name")?;
            let id = self.lookup_filter(&name, pos)?;
            if matches!(
                self.filters.get(id.0).map(|f| &f.kind),
                Some(FilterKind::Chain(_))
            ) {
                return Err(self.syntax(
                    pos,
                    format!("no filter chain allowed within a filter chain: {name}"),
                    None,
                ));
            }
            if chain.contains(&id) {
                return Err(self.syntax(
                    pos,
                    format!("no filter allowed twice within a filter chain: {name}"),
                    None,
                ));
            }
            if let Some(p) = self.filter_proc(id) {
                if procs.contains(&p) {
                    let pname = self
                        .procs
                        .get(p.0)
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    return Err(self.syntax(
                        pos,
                        format!("no proc allowed twice within a filter chain: {pname}"),
                        None,
                    ));
                }
                procs.push(p);
            }
            chain.push(id);
            if matches!(self.peek().kind, TokenKind::Comma) {
                self.next();
            }
            self.skip_newlines();
            if matches!(self.peek().kind, TokenKind::RBrace) {
                self.next();
                break;
            }
        }
        self.brace_depth = self.brace_depth.saturating_sub(1);
        Ok(chain)
    }

    /// `filter NAME` or `filter { ... }` on a listener or a relay action.
    fn filter_ref(&mut self) -> PResult<FilterId> {
        let t = self.next();
        match t.kind {
            TokenKind::Str { value, .. } => self.lookup_filter(&value, t.pos),
            TokenKind::LBrace => {
                let chain = self.filter_list(t.pos)?;
                let name = loop {
                    let n = format!("<dynchain:{:08x}>", self.dynchain_counter);
                    self.dynchain_counter = self.dynchain_counter.wrapping_add(1);
                    if !self.filter_names.contains_key(&n) {
                        break n;
                    }
                };
                let id = FilterId(self.filters.len());
                self.filters.push(Filter {
                    name: name.clone(),
                    kind: FilterKind::Chain(chain),
                    span: span_of(t.pos),
                });
                self.filter_names.insert(name, id);
                Ok(id)
            }
            TokenKind::Keyword(k) => Err(self.syntax(
                t.pos,
                format!("syntax error: expected a filter name, found keyword '{k}'"),
                Some(format!("write \"{k}\" to use it as a name")),
            )),
            _ => Err(self.unexpected(&t, "a filter name or '{'")),
        }
    }

    // -------------------------------------------------------------- filter

    fn p_filter(&mut self) -> PResult<()> {
        let kw = self.next();
        let (name, npos) = self.expect_string("a filter name")?;
        if self.filter_names.contains_key(&name) {
            return Err(self.syntax(
                npos,
                format!("filter already exists with that name: {name}"),
                None,
            ));
        }
        let t = self.next();
        let kind = match t.kind {
            TokenKind::Keyword(Keyword::Proc) => {
                let (pname, ppos) = self.expect_string("a proc name")?;
                self.expect_eol()?;
                match self.proc_names.get(&pname) {
                    Some(&p) => FilterKind::Proc(p),
                    None => {
                        return Err(self.unknown_ref(
                            ppos,
                            RefKind::Proc,
                            &pname,
                            format!("no processor exist with that name: {pname}"),
                        ));
                    }
                }
            }
            TokenKind::Keyword(Keyword::ProcExec) => {
                let (command, _) = self.expect_string("a command")?;
                let mut proc = Proc {
                    name: name.clone(),
                    command,
                    user: None,
                    group: None,
                    chroot: None,
                    span: span_of(kw.pos),
                };
                self.proc_params(&mut proc)?;
                self.expect_eol()?;
                if self.proc_names.contains_key(&name) {
                    return Err(self.syntax(
                        npos,
                        format!("processor already exists with that name: {name}"),
                        Some("proc-exec registers a proc named after the filter".into()),
                    ));
                }
                let pid = ProcId(self.procs.len());
                self.procs.push(proc);
                self.proc_names.insert(name.clone(), pid);
                FilterKind::ProcExec(pid)
            }
            TokenKind::Keyword(Keyword::Phase) => self.filter_phase()?,
            TokenKind::Keyword(Keyword::Chain) => {
                let open = self.next();
                if open.kind != TokenKind::LBrace {
                    return Err(self.unexpected(&open, "'{' after 'chain'"));
                }
                let chain = self.filter_list(open.pos)?;
                self.expect_eol()?;
                FilterKind::Chain(chain)
            }
            _ => return Err(self.unexpected(&t, "phase, proc, proc-exec or chain")),
        };
        let id = FilterId(self.filters.len());
        self.filters.push(Filter {
            name: name.clone(),
            kind,
            span: span_of(kw.pos),
        });
        self.filter_names.insert(name.clone(), id);
        self.declare(RefKind::Filter, &name, npos);
        Ok(())
    }

    fn filter_phase(&mut self) -> PResult<FilterKind> {
        let t = self.next();
        let phase = match t.kind {
            TokenKind::Keyword(Keyword::Connect) => FilterPhase::Connect,
            TokenKind::Keyword(Keyword::Helo) => FilterPhase::Helo,
            TokenKind::Keyword(Keyword::Ehlo) => FilterPhase::Ehlo,
            TokenKind::Keyword(Keyword::MailFrom) => FilterPhase::MailFrom,
            TokenKind::Keyword(Keyword::RcptTo) => FilterPhase::RcptTo,
            TokenKind::Keyword(Keyword::Data) => FilterPhase::Data,
            TokenKind::Keyword(Keyword::Commit) => FilterPhase::Commit,
            TokenKind::Keyword(
                k @ (Keyword::Auth
                | Keyword::DataLine
                | Keyword::Quit
                | Keyword::Rset
                | Keyword::Noop),
            ) => {
                return Err(self.syntax(
                    t.pos,
                    format!("filter phase '{k}' is not supported"),
                    None,
                ));
            }
            _ => {
                return Err(self.unexpected(
                    &t,
                    "a phase (connect, helo, ehlo, mail-from, rcpt-to, data or commit)",
                ));
            }
        };
        self.expect_kw(Keyword::Match, "'match' after the phase")?;
        let negated = matches!(self.peek().kind, TokenKind::Bang);
        if negated {
            self.next();
        }
        let ct = self.next();
        let (cond, cname) = match ct.kind {
            TokenKind::Keyword(Keyword::Fcrdns) => (FilterCondition::Fcrdns, "fcrdns"),
            TokenKind::Keyword(Keyword::Rdns) => {
                (FilterCondition::Rdns(self.filter_opt_matcher()?), "rdns")
            }
            TokenKind::Keyword(Keyword::Src) => {
                (FilterCondition::Src(self.filter_matcher()?), "src")
            }
            TokenKind::Keyword(Keyword::Helo) => {
                (FilterCondition::Helo(self.filter_matcher()?), "helo")
            }
            TokenKind::Keyword(Keyword::Auth) => {
                (FilterCondition::Auth(self.filter_opt_matcher()?), "auth")
            }
            TokenKind::Keyword(Keyword::MailFrom) => (
                FilterCondition::MailFrom(self.filter_matcher()?),
                "mail-from",
            ),
            TokenKind::Keyword(Keyword::RcptTo) => {
                (FilterCondition::RcptTo(self.filter_matcher()?), "rcpt-to")
            }
            _ => {
                return Err(self.unexpected(
                    &ct,
                    "a condition (fcrdns, rdns, src, helo, auth, mail-from or rcpt-to)",
                ));
            }
        };
        if !condition_in_phase(&cond, phase) {
            return Err(self.syntax(
                ct.pos,
                format!(
                    "condition {cname} is not available in the {} phase",
                    phase_name(phase)
                ),
                None,
            ));
        }
        let dt = self.next();
        let decision = match dt.kind {
            TokenKind::Keyword(Keyword::Junk) => FilterDecision::Junk,
            TokenKind::Keyword(Keyword::Bypass) => FilterDecision::Bypass,
            TokenKind::Keyword(k @ (Keyword::Reject | Keyword::Disconnect)) => {
                let (msg, mpos) = self.expect_string("a message (e.g. \"550 no\")")?;
                if !check::valid_filter_message(&msg) {
                    return Err(self.syntax(
                        mpos,
                        format!("{k} message must start with a 4xx or 5xx status code"),
                        Some(format!("e.g. {k} \"550 message refused\"")),
                    ));
                }
                if k == Keyword::Reject {
                    FilterDecision::Reject(msg)
                } else {
                    FilterDecision::Disconnect(msg)
                }
            }
            TokenKind::Keyword(Keyword::Rewrite) => {
                FilterDecision::Rewrite(self.expect_string("a value")?.0)
            }
            TokenKind::Keyword(Keyword::Report) => {
                FilterDecision::Report(self.expect_string("a value")?.0)
            }
            TokenKind::Keyword(
                Keyword::Regex
                | Keyword::Fcrdns
                | Keyword::Rdns
                | Keyword::Src
                | Keyword::Helo
                | Keyword::Auth
                | Keyword::MailFrom
                | Keyword::RcptTo,
            )
            | TokenKind::Bang => {
                return Err(self.syntax(
                    dt.pos,
                    "syntax error: a builtin filter takes one condition, then a decision",
                    Some("chain several filters to test several conditions".into()),
                ));
            }
            _ => {
                return Err(self.unexpected(
                    &dt,
                    "a decision (bypass, disconnect, junk, reject, rewrite or report)",
                ));
            }
        };
        if phase == FilterPhase::Commit
            && matches!(decision, FilterDecision::Junk | FilterDecision::Bypass)
        {
            let what = if decision == FilterDecision::Junk {
                "junk"
            } else {
                "bypass"
            };
            return Err(self.syntax(
                dt.pos,
                format!("{what} is not allowed in the commit phase"),
                Some("junking can only happen before a message is committed".into()),
            ));
        }
        self.expect_eol()?;
        Ok(FilterKind::Builtin {
            phase,
            conditions: vec![Negatable {
                negated,
                value: cond,
            }],
            decision,
        })
    }

    /// Filter conditions take any table (OpenSMTPD checks none).
    fn filter_matcher(&mut self) -> PResult<Matcher> {
        let regex = self.eat_kw(Keyword::Regex);
        let (table, _) = self.tables("a value or <table>")?;
        Ok(Matcher { table, regex })
    }

    fn filter_opt_matcher(&mut self) -> PResult<Option<Matcher>> {
        if self.peek_is_kw(Keyword::Regex) || self.peek_starts_table() {
            Ok(Some(self.filter_matcher()?))
        } else {
            Ok(None)
        }
    }

    // -------------------------------------------------------------- listen

    fn p_listen(&mut self) -> PResult<()> {
        let kw = self.next();
        self.expect_kw(Keyword::On, "'on' after 'listen'")?;
        if self.eat_kw(Keyword::Socket) {
            return self.socket_listener(kw.pos);
        }
        let (target, tpos) = self.expect_string("an interface, address or host name")?;
        let mut lo = ListenOpts::default();
        while !self.at_eol() {
            self.listen_option(&mut lo)?;
        }
        self.expect_eol()?;

        let mut failed = false;
        let ssl = lo.tls.map(|(t, _)| t);
        if let (Some((_, apos)), None) = (&lo.auth, ssl) {
            self.semantic(
                *apos,
                "invalid listen option: auth requires tls/smtps",
                None,
            );
            failed = true;
        }
        if let (Some(ppos), None) = (lo.first_pki, ssl) {
            self.semantic(ppos, "invalid listen option: pki requires tls/smtps", None);
            failed = true;
        }
        if let (Some((_, tlspos)), None) = (lo.tls, lo.first_pki) {
            self.semantic(
                tlspos,
                "invalid listen option: pki required for tls/smtps",
                Some("declare `pki NAME cert FILE` and `pki NAME key FILE`, then add `pki NAME` to this line".into()),
            );
            failed = true;
        }
        let family = lo.family.map(|(f, _)| f);
        let resolved = self.resolve_listen(&target, family);
        let Some((on, addresses)) = resolved else {
            let hint = match target.as_str() {
                "egress" => Some("egress is an OpenBSD interface group; name a Linux interface (e.g. eth0) or an address".to_string()),
                "lo0" => Some("lo0 is OpenBSD's loopback; on Linux it is lo".to_string()),
                _ => None,
            };
            self.semantic(
                tpos,
                format!("invalid virtual ip or interface: {target}"),
                hint,
            );
            return Ok(());
        };
        if failed {
            return Ok(());
        }
        let tls = lo.tls.map(|(t, _)| t).unwrap_or_default();
        let port = match lo.port {
            Some((p, _)) => p,
            None if matches!(tls, ListenerTls::Smtps { .. }) => 465,
            None => 25,
        };
        self.listeners.push(Listener {
            on,
            addresses,
            family,
            port,
            tls,
            pkis: lo.pkis.iter().map(|(id, _)| *id).collect(),
            ca: lo.ca.map(|(c, _)| c),
            ciphers: lo.ciphers,
            protocols: lo.protocols,
            auth: lo.auth.map(|(a, _)| a),
            senders: lo.senders,
            tag: lo.tag,
            hostname: lo.hostname,
            hostnames: lo.hostnames,
            mask_src: lo.mask_src.is_some(),
            received_auth: lo.received_auth.is_some(),
            no_dsn: lo.no_dsn.is_some(),
            proxy_v2: lo.proxy_v2.is_some(),
            filter: lo.filter.map(|(f, _)| f),
            span: span_of(kw.pos),
        });
        Ok(())
    }

    fn already(&mut self, pos: Pos, what: &str) -> Fail {
        self.syntax(pos, format!("{what} already specified"), None)
    }

    fn listen_option(&mut self, lo: &mut ListenOpts) -> PResult<()> {
        let t = self.next();
        let pos = t.pos;
        let k = match t.kind {
            TokenKind::Keyword(k) => k,
            TokenKind::Str { ref value, .. } => {
                let hint = match value.as_str() {
                    "certificate" => Some("the grammar changed in OpenSMTPD 6.4: declare `pki NAME cert FILE` and `pki NAME key FILE`, then write `listen on ... tls pki NAME`".to_string()),
                    "secure" => Some("the grammar changed in OpenSMTPD 6.4: write `tls` (STARTTLS) or `smtps`".to_string()),
                    "mask-source" => Some("did you mean 'mask-src'?".to_string()),
                    "enable" => Some("the grammar changed in OpenSMTPD 6.4: write `auth` or `auth-optional`".to_string()),
                    _ => suggest(value, LISTEN_OPTIONS).map(|s| format!("did you mean '{s}'?")),
                };
                return Err(self.syntax(pos, format!("invalid listen option: {value}"), hint));
            }
            _ => return Err(self.unexpected(&t, "a listen option")),
        };
        match k {
            Keyword::Inet4 | Keyword::Inet6 => {
                if lo.family.is_some() {
                    return Err(self.already(pos, "address family"));
                }
                let f = if k == Keyword::Inet4 {
                    Family::Inet4
                } else {
                    Family::Inet6
                };
                lo.family = Some((f, pos));
            }
            Keyword::Port => {
                if lo.port.is_some() {
                    return Err(self.already(pos, "port"));
                }
                let pt = self.next();
                let port = match pt.kind {
                    TokenKind::Number(n) => match u16::try_from(n) {
                        Ok(p) if p > 0 => p,
                        _ => return Err(self.syntax(pt.pos, format!("invalid port: {n}"), None)),
                    },
                    TokenKind::Keyword(Keyword::Smtp) => 25,
                    TokenKind::Keyword(Keyword::Smtps) => 465,
                    TokenKind::Str { ref value, .. } => match check::port_by_name(value) {
                        Some(p) => p,
                        None => {
                            return Err(self.syntax(
                                pt.pos,
                                format!("invalid port: {value}"),
                                None,
                            ));
                        }
                    },
                    _ => return Err(self.unexpected(&pt, "a port")),
                };
                lo.port = Some((port, pos));
            }
            Keyword::Filter => {
                if lo.filter.is_some() {
                    return Err(self.already(pos, "filter"));
                }
                let f = self.filter_ref()?;
                lo.filter = Some((f, pos));
            }
            Keyword::Smtps | Keyword::Tls | Keyword::TlsRequire => {
                if lo.tls.is_some() {
                    return Err(self.syntax(
                        pos,
                        "TLS mode already specified",
                        Some("tls, tls-require and smtps are mutually exclusive".into()),
                    ));
                }
                let verify = k != Keyword::Tls && self.eat_kw(Keyword::Verify);
                let mode = match k {
                    Keyword::Smtps => ListenerTls::Smtps {
                        verify_client: verify,
                    },
                    Keyword::Tls => ListenerTls::StartTls {
                        required: false,
                        verify_client: false,
                    },
                    _ => ListenerTls::StartTls {
                        required: true,
                        verify_client: verify,
                    },
                };
                lo.tls = Some((mode, pos));
            }
            Keyword::Ciphers => {
                if lo.ciphers.is_some() {
                    return Err(self.already(pos, "ciphers"));
                }
                lo.ciphers = Some(self.cipher_list()?);
            }
            Keyword::Protocols => {
                if lo.protocols.is_some() {
                    return Err(self.already(pos, "protocols"));
                }
                lo.protocols = Some(self.protocol_list()?);
            }
            Keyword::Pki => {
                if lo.pki_count == MAX_PKI_PER_LISTENER {
                    return Err(self.syntax(pos, "too many pki specified", None));
                }
                let (name, npos) = self.expect_string("a pki name")?;
                lo.pki_count += 1;
                lo.first_pki.get_or_insert(pos);
                let id = self.lookup_pki(&name, npos)?;
                lo.pkis.push((id, npos));
            }
            Keyword::Ca => {
                if lo.ca.is_some() {
                    return Err(self.already(pos, "ca"));
                }
                let (name, npos) = self.expect_string("a ca name")?;
                let id = self.lookup_ca(&name, npos)?;
                lo.ca = Some((id, pos));
            }
            Keyword::Auth | Keyword::AuthOptional => {
                if lo.auth.is_some() {
                    return Err(self.already(pos, "auth"));
                }
                let table = if self.peek_starts_table() {
                    let (id, tpos) = self.tables("a credentials table")?;
                    self.check_use(id, tpos, Need::Map, "auth")?;
                    Some(id)
                } else {
                    None
                };
                lo.auth = Some((
                    ListenerAuth {
                        required: k == Keyword::Auth,
                        table,
                    },
                    pos,
                ));
            }
            Keyword::Tag => {
                if lo.tag.is_some() {
                    return Err(self.already(pos, "tag"));
                }
                lo.tag = Some(self.tag_value()?);
            }
            Keyword::Hostname => {
                if lo.hostname.is_some() {
                    return Err(self.already(pos, "hostname"));
                }
                lo.hostname = Some(self.expect_string("a host name")?.0);
            }
            Keyword::Hostnames => {
                if lo.hostnames.is_some() {
                    return Err(self.already(pos, "hostnames"));
                }
                let (id, tpos) = self.tables("a table of names")?;
                if self.check_use(id, tpos, Need::Map, "hostnames").is_err() {
                    let name = self.table_label(id);
                    if let Some(last) = self.diags.get_mut(self.diags.len().saturating_sub(1)) {
                        last.message =
                            format!("invalid use of table \"{name}\" as HOSTNAMES parameter");
                    }
                    return Err(Fail);
                }
                lo.hostnames = Some(id);
            }
            Keyword::MaskSrc => {
                if lo.mask_src.is_some() {
                    return Err(self.already(pos, "mask-source"));
                }
                lo.mask_src = Some(pos);
            }
            Keyword::ReceivedAuth => {
                if lo.received_auth.is_some() {
                    return Err(self.already(pos, "received-auth"));
                }
                lo.received_auth = Some(pos);
            }
            Keyword::NoDsn => {
                if lo.no_dsn.is_some() {
                    return Err(self.already(pos, "no-dsn"));
                }
                lo.no_dsn = Some(pos);
            }
            Keyword::ProxyV2 => {
                if lo.proxy_v2.is_some() {
                    return Err(self.already(pos, "proxy-v2"));
                }
                lo.proxy_v2 = Some(pos);
            }
            Keyword::Senders => {
                if lo.senders.is_some() {
                    return Err(self.already(pos, "senders"));
                }
                let (id, tpos) = self.tables("a senders table")?;
                if self.check_use(id, tpos, Need::Map, "senders").is_err() {
                    let name = self.table_label(id);
                    if let Some(last) = self.diags.get_mut(self.diags.len().saturating_sub(1)) {
                        last.message =
                            format!("invalid use of table \"{name}\" as SENDERS parameter");
                    }
                    return Err(Fail);
                }
                let masquerade = self.eat_kw(Keyword::Masquerade);
                lo.senders = Some(Senders {
                    table: id,
                    masquerade,
                });
            }
            other => {
                return Err(self.syntax(pos, format!("invalid listen option: {other}"), None));
            }
        }
        Ok(())
    }

    fn tag_value(&mut self) -> PResult<String> {
        let (tag, pos) = self.expect_string("a tag")?;
        if tag.len() > check::MAX_TAG_LEN {
            return Err(self.syntax(pos, "tag name too long", None));
        }
        Ok(tag)
    }

    fn socket_listener(&mut self, pos: Pos) -> PResult<()> {
        let mut sock = SocketListener {
            span: Some(span_of(pos)),
            ..SocketListener::default()
        };
        let mut seen_filter = false;
        let mut seen_tag = false;
        while !self.at_eol() {
            let t = self.next();
            match t.kind {
                TokenKind::Keyword(Keyword::Filter) => {
                    if seen_filter {
                        return Err(self.already(t.pos, "filter"));
                    }
                    seen_filter = true;
                    sock.filter = Some(self.filter_ref()?);
                }
                TokenKind::Keyword(Keyword::MaskSrc) => {
                    if sock.mask_src {
                        return Err(self.already(t.pos, "mask-source"));
                    }
                    sock.mask_src = true;
                }
                TokenKind::Keyword(Keyword::NoDsn) => {
                    if sock.no_dsn {
                        return Err(self.already(t.pos, "no-dsn"));
                    }
                    sock.no_dsn = true;
                }
                TokenKind::Keyword(Keyword::Tag) => {
                    if seen_tag {
                        return Err(self.already(t.pos, "tag"));
                    }
                    seen_tag = true;
                    sock.tag = Some(self.tag_value()?);
                }
                TokenKind::Keyword(k) => {
                    return Err(self.syntax(
                        t.pos,
                        format!("invalid listen option: {k} is not allowed on the socket"),
                        Some("listen on socket takes only filter, mask-src, no-dsn and tag".into()),
                    ));
                }
                _ => return Err(self.unexpected(&t, "filter, mask-src, no-dsn or tag")),
            }
        }
        self.expect_eol()?;
        if self.socket.span.is_some() {
            return Err(self.syntax(pos, "socket listener already configured", None));
        }
        self.socket = sock;
        Ok(())
    }

    /// OpenSMTPD's order: an interface, an IPv4 literal, an IPv6 literal,
    /// then a host name. `family` restricts the addresses.
    fn resolve_listen(
        &self,
        target: &str,
        family: Option<Family>,
    ) -> Option<(ListenOn, Vec<IpAddr>)> {
        let keep = |a: &IpAddr| match family {
            Some(Family::Inet4) => a.is_ipv4(),
            Some(Family::Inet6) => a.is_ipv6(),
            None => true,
        };
        let mut if_addrs: Vec<IpAddr> = Vec::new();
        for i in &self.interfaces {
            if i.name == target
                && keep(&i.addr)
                && !is_link_local_v6(&i.addr)
                && !if_addrs.contains(&i.addr)
            {
                if_addrs.push(i.addr);
            }
        }
        if !if_addrs.is_empty() {
            return Some((ListenOn::Interface(target.to_string()), if_addrs));
        }
        if let Ok(v4) = target.parse::<Ipv4Addr>() {
            let a = IpAddr::V4(v4);
            return keep(&a).then(|| (ListenOn::Address(a), vec![a]));
        }
        if let Ok(v6) = target.parse::<Ipv6Addr>() {
            let a = IpAddr::V6(v6);
            return keep(&a).then(|| (ListenOn::Address(a), vec![a]));
        }
        let addrs: Vec<IpAddr> = if target.eq_ignore_ascii_case("localhost") {
            let have = |a: IpAddr| self.interfaces.iter().any(|i| i.addr == a);
            [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
            .into_iter()
            .filter(|a| have(*a))
            .collect()
        } else {
            self.resolve_host(target)
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for a in addrs {
            if keep(&a) && !out.contains(&a) {
                out.push(a);
            }
        }
        (!out.is_empty()).then(|| (ListenOn::Hostname(target.to_string()), out))
    }

    fn resolve_host(&self, name: &str) -> Vec<IpAddr> {
        match &self.opts.resolver {
            HostResolver::Disabled => Vec::new(),
            HostResolver::Static(entries) => entries
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .flat_map(|(_, a)| a.iter().copied())
                .collect(),
            HostResolver::System => {
                // Only plausible host names go to the resolver.
                if !check::valid_hostname(name) {
                    return Vec::new();
                }
                match (name, 0u16).to_socket_addrs() {
                    Ok(it) => it.map(|sa| sa.ip()).take(64).collect(),
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    // -------------------------------------------------------------- action

    fn p_action(&mut self) -> PResult<()> {
        let kw = self.next();
        let (name, npos) = self.expect_name("an action name")?;
        if self.action_names.contains_key(&name) {
            return Err(self.syntax(
                npos,
                format!("dispatcher already declared with that name: {name}"),
                None,
            ));
        }
        let mt = self.next();
        let dispatcher = match mt.kind {
            TokenKind::Keyword(Keyword::Relay) => Dispatcher::Relay(self.relay_options()?),
            TokenKind::Keyword(
                k @ (Keyword::Mbox
                | Keyword::Maildir
                | Keyword::Lmtp
                | Keyword::Mda
                | Keyword::ForwardOnly
                | Keyword::ExpandOnly),
            ) => Dispatcher::Local(self.local_method(k)?),
            TokenKind::Str { ref value, .. } => {
                let hint = suggest(value, METHODS).map(|s| format!("did you mean '{s}'?"));
                return Err(self.syntax(
                    mt.pos,
                    format!("syntax error: unknown delivery method '{value}'"),
                    hint.or_else(|| Some(format!("the methods are {}", METHODS.join(", ")))),
                ));
            }
            _ => {
                return Err(self.unexpected(
                    &mt,
                    "a delivery method (mbox, maildir, lmtp, mda, forward-only, expand-only or relay)",
                ));
            }
        };
        // `ttl` ends the action.
        let mut ttl: Option<Duration> = None;
        while self.peek_is_kw(Keyword::Ttl) {
            let tpos = self.next().pos;
            if ttl.is_some() {
                return Err(self.syntax(tpos, "ttl already specified for this dispatcher", None));
            }
            let (s, spos) = self.expect_delay_string("a delay")?;
            match check::parse_delay(&s) {
                Ok(d) => ttl = Some(d),
                Err(_) => {
                    return Err(self.syntax(spos, format!("ttl delay \"{s}\" is invalid"), None));
                }
            }
        }
        if ttl.is_some() && !self.at_eol() {
            let t = self.peek().clone();
            return Err(self.syntax(
                t.pos,
                format!("syntax error: {} after ttl", t.kind),
                Some("ttl must be the last option of an action".into()),
            ));
        }
        self.expect_eol()?;
        let id = ActionId(self.actions.len());
        self.actions.push(Action {
            name: name.clone(),
            dispatcher,
            ttl,
            span: span_of(kw.pos),
        });
        self.action_names.insert(name.clone(), id);
        self.declare(RefKind::Action, &name, npos);
        Ok(())
    }

    fn local_method(&mut self, k: Keyword) -> PResult<LocalDispatcher> {
        let method = match k {
            Keyword::Mbox => LocalMethod::Mbox,
            Keyword::Maildir => {
                if self.eat_kw(Keyword::Junk) {
                    LocalMethod::Maildir {
                        path: None,
                        junk: true,
                    }
                } else if let TokenKind::Str { value, .. } = self.peek_kind() {
                    self.next();
                    let junk = self.eat_kw(Keyword::Junk);
                    LocalMethod::Maildir {
                        path: Some(value),
                        junk,
                    }
                } else {
                    LocalMethod::Maildir {
                        path: None,
                        junk: false,
                    }
                }
            }
            Keyword::Lmtp => {
                let (destination, _) =
                    self.expect_string("an LMTP destination (host:port or socket)")?;
                let rcpt_to = self.eat_kw(Keyword::RcptTo);
                LocalMethod::Lmtp {
                    destination,
                    rcpt_to,
                }
            }
            Keyword::Mda => LocalMethod::Mda {
                command: self.expect_string("a command")?.0,
            },
            Keyword::ForwardOnly => LocalMethod::ForwardOnly,
            _ => LocalMethod::ExpandOnly,
        };
        let mut d = LocalDispatcher {
            method,
            expansion: None,
            userbase: None,
            user: None,
            wrapper: None,
        };
        loop {
            let t = self.peek().clone();
            let k = match t.kind {
                TokenKind::Newline | TokenKind::Eof | TokenKind::Keyword(Keyword::Ttl) => break,
                TokenKind::Keyword(k) => k,
                TokenKind::Str { ref value, .. } => {
                    let hint =
                        suggest(value, LOCAL_OPTIONS).map(|s| format!("did you mean '{s}'?"));
                    return Err(self.syntax(
                        t.pos,
                        format!("syntax error: unknown action option '{value}'"),
                        hint,
                    ));
                }
                _ => return Err(self.unexpected(&t, "an action option")),
            };
            self.next();
            match k {
                Keyword::User => {
                    let msg = match d.method {
                        LocalMethod::Mbox => Some("user may not be specified for this dispatcher"),
                        LocalMethod::ForwardOnly => {
                            Some("user may not be specified for forward-only")
                        }
                        LocalMethod::ExpandOnly => {
                            Some("user may not be specified for expand-only")
                        }
                        LocalMethod::Lmtp { .. } => Some(
                            "user may not be specified for lmtp (it runs as the daemon's user)",
                        ),
                        _ => None,
                    };
                    if let Some(msg) = msg {
                        return Err(self.syntax(t.pos, msg, None));
                    }
                    if d.user.is_some() {
                        return Err(self.syntax(
                            t.pos,
                            "user already specified for this dispatcher",
                            None,
                        ));
                    }
                    d.user = Some(self.expect_string("a user name")?.0);
                }
                Keyword::Alias | Keyword::Virtual => {
                    let what = if k == Keyword::Alias {
                        "alias"
                    } else {
                        "virtual"
                    };
                    match d.expansion {
                        Some(Expansion::Alias(_)) => {
                            return Err(self.syntax(
                                t.pos,
                                "alias mapping already specified for this dispatcher",
                                Some("alias and virtual are mutually exclusive".into()),
                            ));
                        }
                        Some(Expansion::Virtual(_)) => {
                            return Err(self.syntax(
                                t.pos,
                                "virtual mapping already specified for this dispatcher",
                                Some("alias and virtual are mutually exclusive".into()),
                            ));
                        }
                        None => {}
                    }
                    let (id, tpos) = self.tables("a table")?;
                    self.check_use(id, tpos, Need::Map, what)?;
                    d.expansion = Some(if k == Keyword::Alias {
                        Expansion::Alias(id)
                    } else {
                        Expansion::Virtual(id)
                    });
                }
                Keyword::Userbase => {
                    if d.userbase.is_some() {
                        return Err(self.syntax(
                            t.pos,
                            "userbase mapping already specified for this dispatcher",
                            None,
                        ));
                    }
                    let (id, tpos) = self.tables("a table")?;
                    self.check_use(id, tpos, Need::Map, "userbase")?;
                    d.userbase = Some(id);
                }
                Keyword::Wrapper => {
                    let (name, npos) = self.expect_string("a wrapper name")?;
                    if !self.mda.wrappers.contains_key(&name) {
                        return Err(self.unknown_ref(
                            npos,
                            RefKind::Wrapper,
                            &name,
                            format!("no mda wrapper with that name: {name}"),
                        ));
                    }
                    d.wrapper = Some(name);
                }
                _ if RELAY_OPTIONS.contains(&k.as_str()) => {
                    return Err(self.syntax(
                        t.pos,
                        format!("syntax error: '{k}' is an option of relay actions"),
                        Some("local delivery methods take alias, virtual, userbase, user, wrapper and ttl".into()),
                    ));
                }
                _ => return Err(self.unexpected(&t, "an action option")),
            }
        }
        Ok(d)
    }

    fn relay_options(&mut self) -> PResult<RelayDispatcher> {
        let mut d = RelayDispatcher::default();
        let mut host_set = false;
        let mut tls_pos: Option<Pos> = None;
        let mut seen: Vec<Keyword> = Vec::new();
        loop {
            let t = self.peek().clone();
            let k = match t.kind {
                TokenKind::Newline | TokenKind::Eof | TokenKind::Keyword(Keyword::Ttl) => break,
                TokenKind::Keyword(k) => k,
                TokenKind::Str { ref value, .. } => {
                    let hint = match value.as_str() {
                        "via" => Some(
                            "the grammar changed in OpenSMTPD 6.4: write `relay host URL`"
                                .to_string(),
                        ),
                        "as" => Some(
                            "the grammar changed in OpenSMTPD 6.4: write `relay mail-from ADDRESS`"
                                .to_string(),
                        ),
                        _ => suggest(value, RELAY_OPTIONS).map(|s| format!("did you mean '{s}'?")),
                    };
                    return Err(self.syntax(
                        t.pos,
                        format!("syntax error: unknown relay option '{value}'"),
                        hint,
                    ));
                }
                _ => return Err(self.unexpected(&t, "a relay option")),
            };
            self.next();
            let pos = t.pos;
            let once = |p: &mut Self, what: &str| -> PResult<()> {
                if seen.contains(&k) {
                    return Err(p.syntax(
                        pos,
                        format!("{what} already specified for this dispatcher"),
                        None,
                    ));
                }
                Ok(())
            };
            match k {
                Keyword::Helo => {
                    once(self, "helo")?;
                    d.helo = Some(self.expect_string("a host name")?.0);
                }
                Keyword::HeloSrc => {
                    once(self, "helo-source mapping")?;
                    let (id, tpos) = self.tables("a table")?;
                    self.check_use(id, tpos, Need::Map, "helo-source")?;
                    d.helo_src = Some(id);
                }
                Keyword::Pki => {
                    once(self, "pki")?;
                    let (name, npos) = self.expect_string("a pki name")?;
                    d.pki = Some(self.lookup_pki(&name, npos)?);
                }
                Keyword::Ca => {
                    once(self, "ca")?;
                    let (name, npos) = self.expect_string("a ca name")?;
                    d.ca = Some(self.lookup_ca(&name, npos)?);
                }
                Keyword::Ciphers => {
                    once(self, "ciphers")?;
                    d.ciphers = Some(self.cipher_list()?);
                }
                Keyword::Protocols => {
                    once(self, "protocols")?;
                    d.protocols = Some(self.protocol_list()?);
                }
                Keyword::Src => {
                    once(self, "source mapping")?;
                    let tt = self.peek().clone();
                    if let TokenKind::Str { value, .. } = &tt.kind {
                        self.next();
                        match value.parse::<IpAddr>() {
                            Ok(a) => d.src = Some(SourceAddrs::Literal(a)),
                            Err(_) => {
                                return Err(self.syntax(
                                    tt.pos,
                                    format!("invalid source address: {value}"),
                                    None,
                                ));
                            }
                        }
                    } else {
                        let (id, tpos) = self.tables("an address or <table>")?;
                        self.check_use(id, tpos, Need::List, "source")?;
                        d.src = Some(SourceAddrs::Table(id));
                    }
                }
                Keyword::MailFrom => {
                    once(self, "mail-from")?;
                    d.mail_from = Some(self.expect_string("an address")?.0);
                }
                Keyword::Backup => {
                    once(self, "backup")?;
                    if host_set {
                        return Err(self.syntax(
                            pos,
                            "backup and host are mutually exclusive",
                            None,
                        ));
                    }
                    let mx = if self.eat_kw(Keyword::Mx) {
                        Some(self.expect_string("an MX name")?.0)
                    } else {
                        None
                    };
                    d.backup = Some(mx);
                }
                Keyword::Host | Keyword::Domain => {
                    if host_set {
                        return Err(self.syntax(
                            pos,
                            "host mapping already specified for this dispatcher",
                            None,
                        ));
                    }
                    if d.backup.is_some() {
                        let what = if k == Keyword::Host { "host" } else { "domain" };
                        return Err(self.syntax(
                            pos,
                            format!("backup and {what} are mutually exclusive"),
                            None,
                        ));
                    }
                    if k == Keyword::Host {
                        let ht = self.next();
                        match ht.kind {
                            TokenKind::Str { ref value, .. } => match check::parse_relay_url(value)
                            {
                                Ok(url) => d.route = Route::Host(url),
                                Err(e) => {
                                    return Err(self.syntax(
                                        ht.pos,
                                        format!("invalid relay url {value}: {e}"),
                                        None,
                                    ));
                                }
                            },
                            TokenKind::Lt | TokenKind::LBrace => {
                                return Err(self.syntax(
                                    ht.pos,
                                    "relay host tables are not supported; give one relay URL",
                                    Some("to pick the relay by recipient domain, use `domain <table>`".into()),
                                ));
                            }
                            _ => return Err(self.unexpected(&ht, "a relay URL")),
                        }
                    } else {
                        let (id, tpos) = self.tables("a table")?;
                        self.check_use(id, tpos, Need::Map, "host")?;
                        d.route = Route::Domain(id);
                    }
                    host_set = true;
                }
                Keyword::Tls => {
                    if tls_pos.is_some() {
                        return Err(self.syntax(
                            pos,
                            "tls already specified for this dispatcher",
                            None,
                        ));
                    }
                    let verify = !self.eat_kw(Keyword::NoVerify);
                    d.tls = RelayTls::Required { verify };
                    tls_pos = Some(pos);
                }
                Keyword::Auth => {
                    if !host_set {
                        return Err(self.syntax(
                            pos,
                            "auth may not be specified without host on a dispatcher",
                            Some("put `host URL` before `auth <table>`".into()),
                        ));
                    }
                    once(self, "auth mapping")?;
                    let (id, tpos) = self.tables("a credentials table")?;
                    self.check_use(id, tpos, Need::Map, "auth")?;
                    d.auth = Some(id);
                }
                Keyword::Filter => {
                    once(self, "filter")?;
                    d.filter = Some(self.filter_ref()?);
                }
                Keyword::Srs => {
                    if self.srs.key.is_none() {
                        return Err(self.syntax(
                            pos,
                            "an srs key is required for srs to be specified in an action",
                            Some("add `srs key SECRET` above this line".into()),
                        ));
                    }
                    once(self, "srs")?;
                    d.srs = true;
                }
                _ if LOCAL_OPTIONS.contains(&k.as_str()) => {
                    return Err(self.syntax(
                        pos,
                        format!("syntax error: '{k}' is an option of local delivery methods"),
                        None,
                    ));
                }
                _ => return Err(self.unexpected(&t, "a relay option")),
            }
            seen.push(k);
        }
        if let (Some(pos), Route::Host(url)) = (tls_pos, &d.route)
            && url.proto == RelayProto::SmtpNoTls
        {
            return Err(self.syntax(
                pos,
                "tls may not be used with a smtp+notls:// relay host",
                Some("drop `tls`, or use smtp+tls:// or smtps://".into()),
            ));
        }
        Ok(d)
    }

    // --------------------------------------------------------------- match

    fn p_match(&mut self) -> PResult<()> {
        let kw = self.next();
        let mut flags = RuleFlags::default();
        let mut from = Negatable {
            negated: false,
            value: Origin::Local,
        };
        let mut to = Negatable {
            negated: false,
            value: Destination::Local,
        };
        let mut conditions: Vec<Negatable<Condition>> = Vec::new();
        let decision = loop {
            let mut t = self.next();
            let negated = t.kind == TokenKind::Bang;
            if negated {
                t = self.next();
            }
            let k = match t.kind {
                TokenKind::Keyword(k) => k,
                TokenKind::Newline | TokenKind::Eof => {
                    return Err(self.syntax(
                        t.pos,
                        "syntax error: match needs `action NAME` or `reject` at the end",
                        None,
                    ));
                }
                TokenKind::Str { ref value, .. } => {
                    let hint =
                        suggest(value, MATCH_OPTIONS).map(|s| format!("did you mean '{s}'?"));
                    return Err(self.syntax(
                        t.pos,
                        format!("syntax error: unknown match option '{value}'"),
                        hint,
                    ));
                }
                _ => return Err(self.unexpected(&t, "a match option")),
            };
            let pos = t.pos;
            match k {
                Keyword::Action | Keyword::Reject if negated => {
                    return Err(self.syntax(pos, format!("syntax error: '!' before '{k}'"), None));
                }
                Keyword::Action => {
                    let (name, npos) = self.expect_string("an action name")?;
                    match self.action_names.get(&name) {
                        Some(&id) => break Decision::Action(id),
                        None => {
                            return Err(self.unknown_ref(
                                npos,
                                RefKind::Action,
                                &name,
                                format!("no such dispatcher: {name}"),
                            ));
                        }
                    }
                }
                Keyword::Reject => break Decision::Reject,
                Keyword::From => {
                    if flags.from {
                        return Err(self.syntax(pos, "from already specified for this rule", None));
                    }
                    flags.from = true;
                    let ft = self.next();
                    let origin = match ft.kind {
                        TokenKind::Keyword(Keyword::Any) => Origin::Any,
                        TokenKind::Keyword(Keyword::Local) => Origin::Local,
                        TokenKind::Keyword(Keyword::Socket) => Origin::Socket,
                        TokenKind::Keyword(Keyword::Src) => Origin::Src(self.matcher("from")?),
                        TokenKind::Keyword(Keyword::Rdns) => {
                            Origin::Rdns(self.opt_matcher("rdns")?)
                        }
                        TokenKind::Keyword(Keyword::Auth) => {
                            if flags.auth {
                                return Err(self.syntax(
                                    ft.pos,
                                    "auth already specified for this rule",
                                    None,
                                ));
                            }
                            flags.auth = true;
                            Origin::Auth(self.opt_matcher("from")?)
                        }
                        TokenKind::Keyword(Keyword::MailFrom) => {
                            if flags.mail_from {
                                return Err(self.syntax(
                                    ft.pos,
                                    "mail-from already specified for this rule",
                                    None,
                                ));
                            }
                            flags.mail_from = true;
                            Origin::MailFrom(self.matcher("from")?)
                        }
                        TokenKind::Str { ref value, .. } if value == "source" => {
                            return Err(self.syntax(ft.pos, "syntax error: unknown origin 'source'", Some("the grammar changed in OpenSMTPD 6.4: write `from src ADDRESS`".into())));
                        }
                        _ => {
                            return Err(self.unexpected(
                                &ft,
                                "any, local, socket, src, rdns, auth or mail-from after 'from'",
                            ));
                        }
                    };
                    from = Negatable {
                        negated,
                        value: origin,
                    };
                }
                Keyword::For => {
                    if flags.to {
                        return Err(self.syntax(pos, "for already specified for this rule", None));
                    }
                    flags.to = true;
                    let ft = self.next();
                    let dest = match ft.kind {
                        TokenKind::Keyword(Keyword::Any) => Destination::Any,
                        TokenKind::Keyword(Keyword::Local) => Destination::Local,
                        TokenKind::Keyword(Keyword::Domain) => {
                            Destination::Domain(self.matcher("'for'")?)
                        }
                        TokenKind::Keyword(Keyword::RcptTo) => {
                            if flags.rcpt_to {
                                return Err(self.syntax(
                                    ft.pos,
                                    "rcpt-to already specified for this rule",
                                    None,
                                ));
                            }
                            flags.rcpt_to = true;
                            Destination::RcptTo(self.matcher("for")?)
                        }
                        _ => {
                            return Err(
                                self.unexpected(&ft, "any, local, domain or rcpt-to after 'for'")
                            );
                        }
                    };
                    to = Negatable {
                        negated,
                        value: dest,
                    };
                }
                Keyword::Tag | Keyword::Helo | Keyword::MailFrom | Keyword::RcptTo => {
                    let (flag, what) = match k {
                        Keyword::Tag => (&mut flags.tag, "tag"),
                        Keyword::Helo => (&mut flags.helo, "helo"),
                        Keyword::MailFrom => (&mut flags.mail_from, "mail-from"),
                        _ => (&mut flags.rcpt_to, "rcpt-to"),
                    };
                    if *flag {
                        return Err(self.syntax(
                            pos,
                            format!("{what} already specified for this rule"),
                            None,
                        ));
                    }
                    *flag = true;
                    let m = self.matcher(what)?;
                    let value = match k {
                        Keyword::Tag => Condition::Tag(m),
                        Keyword::Helo => Condition::Helo(m),
                        Keyword::MailFrom => Condition::MailFrom(m),
                        _ => Condition::RcptTo(m),
                    };
                    conditions.push(Negatable { negated, value });
                }
                Keyword::Tls => {
                    if flags.tls {
                        return Err(self.syntax(pos, "tls already specified for this rule", None));
                    }
                    flags.tls = true;
                    conditions.push(Negatable {
                        negated,
                        value: Condition::Tls,
                    });
                }
                Keyword::Auth => {
                    if flags.auth {
                        return Err(self.syntax(pos, "auth already specified for this rule", None));
                    }
                    flags.auth = true;
                    let m = self.opt_matcher("auth")?;
                    conditions.push(Negatable {
                        negated,
                        value: Condition::Auth(m),
                    });
                }
                _ => return Err(self.unexpected(&t, "a match option")),
            }
        };
        self.expect_eol()?;
        self.rules.push(Rule {
            from,
            to,
            conditions,
            decision,
            span: span_of(kw.pos),
        });
        Ok(())
    }

    // -------------------------------------------------------------- finish

    fn finish(mut self) -> Outcome {
        // Hints for names used before (or without) their declaration.
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let hint = match self.declared.get(&(p.kind, p.name.clone())) {
                Some(decl) => Some(format!(
                    "{} \"{}\" is declared at {}:{}; declarations must come before their use: move it above line {}",
                    p.kind.noun(),
                    p.name,
                    self.file_path(decl.file).display(),
                    decl.line,
                    p.pos.line
                )),
                None => {
                    let names: Vec<&str> = self
                        .declared
                        .keys()
                        .filter(|(k, _)| *k == p.kind)
                        .map(|(_, n)| n.as_str())
                        .collect();
                    suggest(&p.name, &names).map(|s| format!("did you mean \"{s}\"?"))
                }
            };
            if let (Some(h), Some(d)) = (hint, self.diags.get_mut(p.diag)) {
                d.hint = Some(h);
            }
        }

        let mut pkis = Vec::new();
        let drafts = std::mem::take(&mut self.pkis);
        for p in drafts {
            let pos = Pos {
                file: p.span.file,
                line: p.span.line,
                col: p.span.col,
            };
            match (p.cert, p.key) {
                (Some(cert), Some(key)) => pkis.push(Pki {
                    name: p.name,
                    cert,
                    key,
                    dhe: p.dhe,
                    span: p.span,
                }),
                (cert, key) => {
                    let missing = if cert.is_none() { "cert" } else { "key" };
                    let _ = key;
                    self.semantic(
                        pos,
                        format!("pki {} has no {missing}", p.name),
                        Some(format!("add `pki {} {missing} FILE`", p.name)),
                    );
                    pkis.push(Pki {
                        name: p.name,
                        cert: PathBuf::new(),
                        key: PathBuf::new(),
                        dhe: p.dhe,
                        span: p.span,
                    });
                }
            }
        }
        let cas: Vec<Ca> = std::mem::take(&mut self.cas)
            .into_iter()
            .map(|c| Ca {
                name: c.name,
                cert: c.cert.unwrap_or_default(),
                span: c.span,
            })
            .collect();

        if self.rules.is_empty() && !self.gave_up {
            let d = Diagnostic::warning(self.file_path(0), 1, 1, "no rules, nothing to do")
                .with_hint(
                    "add `action` and `match` lines; a configuration without rules accepts no mail",
                );
            self.diags.push(d);
        }

        let failed = self.errors > 0 || self.rules.is_empty();
        if failed {
            return Outcome {
                config: None,
                diagnostics: self.diags,
            };
        }

        // Final table order: declared, built-in, anonymous.
        let mut order: Vec<usize> = Vec::with_capacity(self.tables.len());
        for origin in [
            TableOrigin::Declared,
            TableOrigin::Builtin,
            TableOrigin::Anonymous,
        ] {
            order.extend(
                self.tables
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.origin == origin)
                    .map(|(i, _)| i),
            );
        }
        let mut map = vec![0usize; self.tables.len()];
        for (new, &old) in order.iter().enumerate() {
            if let Some(slot) = map.get_mut(old) {
                *slot = new;
            }
        }
        let mut entries: Vec<Option<TableEntry>> = std::mem::take(&mut self.tables)
            .into_iter()
            .map(Some)
            .collect();
        let tables: Vec<NamedTable> = order
            .iter()
            .filter_map(|&i| entries.get_mut(i).and_then(Option::take).map(|e| e.named))
            .collect();

        let mut config = Config {
            files: self.files,
            tables,
            listeners: self.listeners,
            socket: self.socket,
            actions: self.actions,
            rules: self.rules,
            pkis,
            cas,
            procs: self.procs,
            filters: self.filters,
            smtp: self.smtp,
            queue: self.queue,
            bounce_warn_interval: self.bounce_warn_interval,
            mda: self.mda,
            mta: self.mta,
            scheduler: self.scheduler,
            srs: self.srs,
            admd: self.admd,
            hostname: self.hostname,
        };
        remap_tables(&mut config, &map);
        Outcome {
            config: Some(config),
            diagnostics: self.diags,
        }
    }
}

fn shape_of_decl(decl: &TableDecl) -> Shape {
    match decl {
        TableDecl::StaticList(_) => Shape::List,
        TableDecl::StaticMap(_) => Shape::Map,
        _ => Shape::Dynamic,
    }
}

const MTA_LIMIT_KEYS: &[&str] = &[
    "max-conn-per-host",
    "max-conn-per-route",
    "max-conn-per-source",
    "max-conn-per-connector",
    "max-conn-per-relay",
    "max-conn-per-domain",
    "conn-delay-host",
    "conn-delay-route",
    "conn-delay-source",
    "conn-delay-connector",
    "conn-delay-relay",
    "conn-delay-domain",
    "reconn-delay-route",
    "session-mail-max",
    "session-transaction-delay",
    "session-keepalive",
    "max-failures-per-session",
    "task-hiwat",
    "task-lowat",
    "task-release",
];

/// OpenSMTPD's `limit_mta_set`.
fn set_mta_limit(l: &mut MtaLimits, key: &str, v: u64) -> bool {
    let slot = match key {
        "max-conn-per-host" => &mut l.max_conn_per_host,
        "max-conn-per-route" => &mut l.max_conn_per_route,
        "max-conn-per-source" => &mut l.max_conn_per_source,
        "max-conn-per-connector" => &mut l.max_conn_per_connector,
        "max-conn-per-relay" => &mut l.max_conn_per_relay,
        "max-conn-per-domain" => &mut l.max_conn_per_domain,
        "conn-delay-host" => &mut l.conn_delay_host,
        "conn-delay-route" => &mut l.conn_delay_route,
        "conn-delay-source" => &mut l.conn_delay_source,
        "conn-delay-connector" => &mut l.conn_delay_connector,
        "conn-delay-relay" => &mut l.conn_delay_relay,
        "conn-delay-domain" => &mut l.conn_delay_domain,
        "reconn-delay-route" => &mut l.discdelay_route,
        "session-mail-max" => &mut l.session_mail_max,
        "session-transaction-delay" => &mut l.session_delay_transaction,
        "session-keepalive" => &mut l.session_keepalive,
        "max-failures-per-session" => &mut l.max_failures_per_session,
        "task-hiwat" => &mut l.task_hiwat,
        "task-lowat" => &mut l.task_lowat,
        "task-release" => &mut l.task_release,
        _ => return false,
    };
    *slot = v;
    true
}

fn phase_name(p: FilterPhase) -> &'static str {
    match p {
        FilterPhase::Connect => "connect",
        FilterPhase::Helo => "helo",
        FilterPhase::Ehlo => "ehlo",
        FilterPhase::MailFrom => "mail-from",
        FilterPhase::RcptTo => "rcpt-to",
        FilterPhase::Data => "data",
        FilterPhase::Commit => "commit",
    }
}

/// Which conditions each phase may test (the data must exist by then).
fn condition_in_phase(c: &FilterCondition, p: FilterPhase) -> bool {
    let level = match c {
        FilterCondition::Fcrdns | FilterCondition::Rdns(_) | FilterCondition::Src(_) => 0,
        FilterCondition::Helo(_) => 1,
        FilterCondition::Auth(_) | FilterCondition::MailFrom(_) => 2,
        FilterCondition::RcptTo(_) => 3,
    };
    let max = match p {
        FilterPhase::Connect => 0,
        FilterPhase::Helo | FilterPhase::Ehlo => 1,
        FilterPhase::MailFrom | FilterPhase::Data | FilterPhase::Commit => 2,
        FilterPhase::RcptTo => 3,
    };
    level <= max
}

/// Renumber every table reference after the tables were reordered.
fn remap_tables(cfg: &mut Config, map: &[usize]) {
    let m = |id: &mut TableId| {
        if let Some(&n) = map.get(id.0) {
            id.0 = n;
        }
    };
    let mm = |x: &mut Matcher| {
        if let Some(&n) = map.get(x.table.0) {
            x.table.0 = n;
        }
    };
    for l in &mut cfg.listeners {
        if let Some(a) = &mut l.auth
            && let Some(t) = &mut a.table
        {
            m(t);
        }
        if let Some(s) = &mut l.senders {
            m(&mut s.table);
        }
        if let Some(t) = &mut l.hostnames {
            m(t);
        }
    }
    for a in &mut cfg.actions {
        match &mut a.dispatcher {
            Dispatcher::Local(d) => {
                match &mut d.expansion {
                    Some(Expansion::Alias(t) | Expansion::Virtual(t)) => m(t),
                    None => {}
                }
                if let Some(t) = &mut d.userbase {
                    m(t);
                }
            }
            Dispatcher::Relay(r) => {
                if let Route::Domain(t) = &mut r.route {
                    m(t);
                }
                if let Some(t) = &mut r.auth {
                    m(t);
                }
                if let Some(t) = &mut r.helo_src {
                    m(t);
                }
                if let Some(SourceAddrs::Table(t)) = &mut r.src {
                    m(t);
                }
            }
        }
    }
    for r in &mut cfg.rules {
        match &mut r.from.value {
            Origin::Auth(Some(x))
            | Origin::Rdns(Some(x))
            | Origin::MailFrom(x)
            | Origin::Src(x) => mm(x),
            _ => {}
        }
        match &mut r.to.value {
            Destination::Domain(x) | Destination::RcptTo(x) => mm(x),
            _ => {}
        }
        for c in &mut r.conditions {
            match &mut c.value {
                Condition::Auth(Some(x))
                | Condition::Helo(x)
                | Condition::MailFrom(x)
                | Condition::RcptTo(x)
                | Condition::Tag(x) => mm(x),
                _ => {}
            }
        }
    }
    for f in &mut cfg.filters {
        if let FilterKind::Builtin { conditions, .. } = &mut f.kind {
            for c in conditions {
                match &mut c.value {
                    FilterCondition::Rdns(Some(x))
                    | FilterCondition::Auth(Some(x))
                    | FilterCondition::Src(x)
                    | FilterCondition::Helo(x)
                    | FilterCondition::MailFrom(x)
                    | FilterCondition::RcptTo(x) => mm(x),
                    _ => {}
                }
            }
        }
    }
}

/// Translate a pre-6.4 `accept`/`reject` rule (its words after the verb)
/// into the `action` + `match` lines of the current grammar.
fn old_rule_translation(verb: &str, words: &[String]) -> String {
    let mut from = String::new();
    let mut to = String::new();
    let mut conds: Vec<String> = Vec::new();
    let mut method = String::new();
    let mut opts: Vec<String> = Vec::new();
    let mut i = 0;
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    while i < words.len() {
        match w(i) {
            "from" => {
                match w(i + 1) {
                    "any" => from = " from any".into(),
                    "local" => from = " from local".into(),
                    "source" | "src" => {
                        from = format!(" from src {}", w(i + 2));
                        i += 1;
                    }
                    other => from = format!(" from src {other}"),
                }
                i += 2;
            }
            "for" => {
                match w(i + 1) {
                    "any" => to = " for any".into(),
                    "local" => to = " for local".into(),
                    "domain" => {
                        to = format!(" for domain {}", w(i + 2));
                        i += 1;
                    }
                    other => to = format!(" for domain {other}"),
                }
                i += 2;
            }
            "sender" => {
                conds.push(format!(" mail-from {}", w(i + 1)));
                i += 2;
            }
            "recipient" => {
                conds.push(format!(" rcpt-to {}", w(i + 1)));
                i += 2;
            }
            "tagged" => {
                if w(i + 1) == "!" {
                    conds.push(format!(" !tag {}", w(i + 2)));
                    i += 1;
                } else {
                    conds.push(format!(" tag {}", w(i + 1)));
                }
                i += 2;
            }
            "alias" | "virtual" | "userbase" => {
                opts.push(format!(" {} {}", w(i), w(i + 1)));
                i += 2;
            }
            "deliver" => {
                let mut j = i + 1;
                if w(j) == "to" {
                    j += 1;
                }
                match w(j) {
                    "mbox" => {
                        method = "mbox".into();
                        j += 1;
                    }
                    "maildir" => {
                        method = "maildir".into();
                        j += 1;
                        let next = w(j);
                        if next.starts_with('"') || next.starts_with('~') || next.starts_with('/') {
                            method = format!("maildir {next}");
                            j += 1;
                        }
                    }
                    "mda" | "lmtp" => {
                        method = format!("{} {}", w(j), w(j + 1));
                        j += 2;
                    }
                    other => {
                        method = other.to_string();
                        j += 1;
                    }
                }
                i = j;
            }
            "relay" => {
                method = "relay".into();
                i += 1;
            }
            "via" => {
                opts.push(format!(" host {}", w(i + 1)));
                i += 2;
            }
            "auth" => {
                opts.push(format!(" auth {}", w(i + 1)));
                i += 2;
            }
            "as" => {
                opts.push(format!(" mail-from {}", w(i + 1)));
                i += 2;
            }
            "expire" => {
                opts.push(format!(" ttl {}", w(i + 1)));
                i += 2;
            }
            _ => i += 1,
        }
    }
    let conds: String = conds.concat();
    if verb == "reject" {
        return format!("    match{from}{to}{conds} reject");
    }
    if method.is_empty() {
        method = "mbox".into();
    }
    let name = if method == "relay" { "relay" } else { "local" };
    // `ttl` must come last.
    opts.sort_by_key(|o| o.starts_with(" ttl"));
    let opts: String = opts.concat();
    format!("    action \"{name}\" {method}{opts}\n    match{from}{to}{conds} action \"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_rule_translations() {
        let words: Vec<String> = "from any for domain example.org alias <aliases> deliver to mbox"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(
            old_rule_translation("accept", &words),
            "    action \"local\" mbox alias <aliases>\n    match from any for domain example.org action \"local\""
        );
        let words: Vec<String> =
            "for any relay via smtp+tls://x@mx.example.com auth <secrets> expire 2d"
                .split(' ')
                .map(String::from)
                .collect();
        assert_eq!(
            old_rule_translation("accept", &words),
            "    action \"relay\" relay host smtp+tls://x@mx.example.com auth <secrets> ttl 2d\n    match for any action \"relay\""
        );
        let words: Vec<String> = "from any for any".split(' ').map(String::from).collect();
        assert_eq!(
            old_rule_translation("reject", &words),
            "    match from any for any reject"
        );
    }

    #[test]
    fn phases_allow_conditions() {
        let m = Matcher {
            table: TableId(0),
            regex: false,
        };
        assert!(condition_in_phase(
            &FilterCondition::Fcrdns,
            FilterPhase::Connect
        ));
        assert!(!condition_in_phase(
            &FilterCondition::Helo(m),
            FilterPhase::Connect
        ));
        assert!(condition_in_phase(
            &FilterCondition::Helo(m),
            FilterPhase::Ehlo
        ));
        assert!(!condition_in_phase(
            &FilterCondition::MailFrom(m),
            FilterPhase::Helo
        ));
        assert!(condition_in_phase(
            &FilterCondition::RcptTo(m),
            FilterPhase::RcptTo
        ));
        assert!(!condition_in_phase(
            &FilterCondition::RcptTo(m),
            FilterPhase::Data
        ));
        assert!(condition_in_phase(
            &FilterCondition::Auth(None),
            FilterPhase::Commit
        ));
    }

    #[test]
    fn mta_limit_keys_all_set() {
        for k in MTA_LIMIT_KEYS {
            let mut l = MtaLimits::default();
            assert!(set_mta_limit(&mut l, k, 777), "{k}");
            assert_ne!(l, MtaLimits::default(), "{k}");
        }
        assert!(!set_mta_limit(&mut MtaLimits::default(), "nope", 1));
    }
}
