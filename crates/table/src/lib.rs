//! Tables: the lists and mappings of table(5), their backends and the
//! lookups each service makes in them.
//!
//! The API the config crate and the rule evaluator rely on:
//! - [`TableDecl`]: what the config declared (the config crate builds it).
//! - [`Table::open`]: load/open a declared table; every failure is a
//!   [`TableError`] with a message fit for a diagnostic.
//! - [`Table::shape`]: list or mapping, for the config's use checks.
//! - [`Table::matches`]: does `key` match an entry, with the comparison the
//!   [`Service`] defines (domain wildcards, CIDR, mail address forms,
//!   regex).
//! - [`Table::lookup`]: the value for `key` in a mapping, parsed as the
//!   service defines.
//!
//! Also: [`Table::from_text`], [`Table::from_db_bytes`] (parse from
//! bytes, for fuzzing and tests), [`Table::matches_mailaddr`] (explicit
//! sub-address delimiter), [`Table::lookup_alias`],
//! [`Table::lookup_virtual`], [`Table::sources`], [`Table::check_regex`],
//! [`Value`] and the types it carries, and the [`makemap`] module.
//! See docs/tables.md for the formats and matching rules.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

mod cdb;
pub mod makemap;
mod matching;
mod text;
mod value;

pub use matching::{
    NetAddr, domain_match, mailaddr_match, netaddr_match, parse_ip, parse_netaddr, source_match,
};
pub use text::{MAX_FILE, MAX_LINE};
pub use value::{
    AliasTarget, Credentials, MAX_VALUE_LEN, MailAddr, Userinfo, Value, ValueError,
    parse_alias_list, parse_alias_list_strict, parse_alias_target, parse_credentials,
    parse_mailaddr_list, parse_userinfo,
};

use makemap::MapType;

/// Longest lookup key; OpenSMTPD copies keys into a 1024-byte buffer.
pub const MAX_KEY_LEN: usize = 1023;
/// Largest db file accepted (it is loaded into memory).
pub const MAX_DB_FILE: u64 = cdb::MAX_DB;
/// The sub-address delimiter smtpd uses unless configured otherwise.
pub const DEFAULT_SUBADDRESS_DELIMITER: char = '+';
/// Bound on the compiled size of each regex entry.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Key of the cdb record in which our makemap stores the map type. Text
/// input cannot contain NUL, so no real key can collide with it.
pub(crate) const META_TYPE_KEY: &str = "\0rsmtpd-type";

/// A table as declared in smtpd.conf.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TableDecl {
    /// `{ v1, v2 }` or a literal value in a rule (one element).
    StaticList(Vec<String>),
    /// `{ k1 = v1, k2 = v2 }`, in file order.
    StaticMap(Vec<(String, String)>),
    /// `file:/path` or a bare absolute path: table(5) text format.
    File(PathBuf),
    /// `db:/path`: a database built by our makemap.
    Db(PathBuf),
    /// `<getpwnam>`: the system user database.
    Getpwnam,
}

/// Whether a table holds values only or key/value pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    List,
    Map,
    /// Backends that answer any service (getpwnam answers userinfo only).
    Dynamic,
}

/// The kinds of lookup OpenSMTPD makes (its K_* services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Alias,
    Domain,
    Credentials,
    Netaddr,
    Userinfo,
    Source,
    Mailaddr,
    Addrname,
    Mailaddrmap,
    Relayhost,
    /// Plain string equality (tags, helo names given as strings).
    String,
    /// Each entry is a regular expression (`regex` keyword).
    Regex,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Alias => "alias",
            Service::Domain => "domain",
            Service::Credentials => "credentials",
            Service::Netaddr => "netaddr",
            Service::Userinfo => "userinfo",
            Service::Source => "source",
            Service::Mailaddr => "mailaddr",
            Service::Addrname => "addrname",
            Service::Mailaddrmap => "mailaddrmap",
            Service::Relayhost => "relayhost",
            Service::String => "string",
            Service::Regex => "regex",
        })
    }
}

/// Errors of opening or querying a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("table file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("invalid regular expression {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("database {path}: {reason}")]
    Db { path: PathBuf, reason: String },
    /// The backend or the table's shape cannot answer this service.
    #[error("{backend} table cannot answer {service} lookups")]
    Unsupported {
        backend: &'static str,
        service: Service,
    },
    #[error("lookup key is {len} bytes, at most {max} allowed")]
    KeyTooLong { len: usize, max: usize },
    /// The stored value is not valid for the service.
    #[error("invalid {service} value for {key:?}: {reason}")]
    Value {
        service: Service,
        key: String,
        reason: ValueError,
    },
    #[error("user database: {reason}")]
    Getpwnam { reason: String },
}

/// The answer of an aliases or virtual lookup: which key matched and what
/// it expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasMatch {
    pub key: String,
    pub targets: Vec<AliasTarget>,
}

#[derive(Debug)]
struct Entry {
    /// As written (trimmed): regexes are compiled from this.
    key: String,
    value: Option<String>,
}

/// Entries of a static or file table. Keys are unique after folding to
/// lower case; a later duplicate replaces the earlier value in place (as
/// OpenSMTPD's dict_set does).
#[derive(Debug)]
struct Entries {
    shape: Shape,
    list: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Entries {
    fn new<I: IntoIterator<Item = (String, Option<String>)>>(shape: Shape, items: I) -> Entries {
        let mut e = Entries {
            shape,
            list: Vec::new(),
            index: HashMap::new(),
        };
        for (key, value) in items {
            let folded = key.to_ascii_lowercase();
            match e.index.get(&folded).and_then(|&i| e.list.get_mut(i)) {
                Some(old) => old.value = value,
                None => {
                    e.index.insert(folded, e.list.len());
                    e.list.push(Entry { key, value });
                }
            }
        }
        e
    }
}

#[derive(Debug)]
enum Backend {
    Static(Entries),
    Db {
        path: PathBuf,
        kind: MapType,
        cdb: cdb::Cdb,
    },
    Getpwnam,
}

/// An opened table.
#[derive(Debug)]
pub struct Table {
    backend: Backend,
    /// Compiled once, at the first regex use (or [`Table::check_regex`]).
    regexes: OnceLock<Result<Vec<Regex>, TableError>>,
}

fn io_err(path: &Path, reason: impl fmt::Display) -> TableError {
    TableError::Io {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Read a regular file of at most `max` bytes. Opened non-blocking so a
/// FIFO cannot hang us before the file type check rejects it.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, TableError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| io_err(path, e))?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        return Err(io_err(path, "not a regular file"));
    }
    if meta.len() > max {
        return Err(io_err(path, format!("file larger than {max} bytes")));
    }
    let mut data = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| io_err(path, e))?;
    if data.len() as u64 > max {
        return Err(io_err(path, format!("file larger than {max} bytes")));
    }
    Ok(data)
}

/// Berkeley DB hash and btree magic numbers at offset 12, either byte order.
fn looks_like_berkeley_db(data: &[u8]) -> bool {
    let Some(b) = data.get(12..16).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return false;
    };
    [u32::from_le_bytes(b), u32::from_be_bytes(b)]
        .iter()
        .any(|m| *m == 0x0006_1561 || *m == 0x0005_3162)
}

impl Table {
    /// Open or load a declared table.
    pub fn open(decl: &TableDecl) -> Result<Table, TableError> {
        match decl {
            TableDecl::StaticList(items) => Ok(Table::with(Backend::Static(Entries::new(
                Shape::List,
                items.iter().map(|v| (v.clone(), None)),
            )))),
            TableDecl::StaticMap(items) => Ok(Table::with(Backend::Static(Entries::new(
                Shape::Map,
                items.iter().map(|(k, v)| (k.clone(), Some(v.clone()))),
            )))),
            TableDecl::File(path) => {
                let data = read_bounded(path, text::MAX_FILE)?;
                Table::from_text(path, &data)
            }
            TableDecl::Db(path) => {
                let data = read_bounded(path, cdb::MAX_DB)?;
                Table::from_db_bytes(path, data)
            }
            TableDecl::Getpwnam => Ok(Table::with(Backend::Getpwnam)),
        }
    }

    fn with(backend: Backend) -> Table {
        Table {
            backend,
            regexes: OnceLock::new(),
        }
    }

    /// A `file:` table from its content; `path` is only used in errors.
    pub fn from_text(path: &Path, data: &[u8]) -> Result<Table, TableError> {
        let parsed = text::parse_table_text(path, data)?;
        Ok(Table::with(Backend::Static(Entries::new(
            parsed.shape,
            parsed.entries,
        ))))
    }

    /// A `db:` table from the bytes of its file; `path` is only used in
    /// errors. The bytes are fully validated here.
    pub fn from_db_bytes(path: &Path, data: Vec<u8>) -> Result<Table, TableError> {
        let db_err = |reason: String| TableError::Db {
            path: path.to_path_buf(),
            reason,
        };
        let berkeley = looks_like_berkeley_db(&data);
        let cdb = match cdb::Cdb::parse(data) {
            Ok(c) => c,
            Err(_) if berkeley => {
                return Err(db_err(
                    "this is a Berkeley DB file (OpenSMTPD's makemap); rebuild it with rsmtpd's makemap"
                        .into(),
                ));
            }
            Err(e) => return Err(db_err(e.to_string())),
        };
        let kind = match cdb
            .get(META_TYPE_KEY.as_bytes())
            .map_err(|e| db_err(e.to_string()))?
        {
            None => MapType::Plain,
            Some(t) => {
                MapType::from_meta(t).ok_or_else(|| db_err(format!("unknown map type {t:?}")))?
            }
        };
        Ok(Table::with(Backend::Db {
            path: path.to_path_buf(),
            kind,
            cdb,
        }))
    }

    pub fn shape(&self) -> Shape {
        match &self.backend {
            Backend::Static(e) => e.shape,
            Backend::Db {
                kind: MapType::Set, ..
            } => Shape::List,
            Backend::Db { .. } => Shape::Map,
            Backend::Getpwnam => Shape::Dynamic,
        }
    }

    fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Static(e) if e.shape == Shape::List => "list",
            Backend::Static(_) => "mapping",
            Backend::Db {
                kind: MapType::Set, ..
            } => "set db",
            Backend::Db { .. } => "db",
            Backend::Getpwnam => "getpwnam",
        }
    }

    fn unsupported(&self, service: Service) -> TableError {
        TableError::Unsupported {
            backend: self.backend_name(),
            service,
        }
    }

    /// Exact lookup of a folded key: `Some(None)` is a list entry.
    fn get(&self, folded: &str) -> Result<Option<Option<&str>>, TableError> {
        match &self.backend {
            Backend::Static(e) => Ok(e
                .index
                .get(folded)
                .and_then(|&i| e.list.get(i))
                .map(|en| en.value.as_deref())),
            Backend::Db { path, kind, cdb } => {
                if folded.starts_with('\0') {
                    return Ok(None);
                }
                let v = cdb.get(folded.as_bytes()).map_err(|e| TableError::Db {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Ok(v.map(|v| if *kind == MapType::Set { None } else { Some(v) }))
            }
            Backend::Getpwnam => Ok(None),
        }
    }

    /// Every key, as stored, in table order.
    fn keys(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.backend {
            Backend::Static(e) => Box::new(e.list.iter().map(|en| en.key.as_str())),
            Backend::Db { cdb, .. } => {
                Box::new(cdb.iter().map(|(k, _)| k).filter(|k| !k.starts_with('\0')))
            }
            Backend::Getpwnam => Box::new(std::iter::empty()),
        }
    }

    fn check_key(key: &str) -> Result<(), TableError> {
        if key.len() > MAX_KEY_LEN {
            return Err(TableError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(())
    }

    /// Compile every entry as a regex (once; the result, good or bad, is
    /// cached). The config crate calls this when it sees a table used with
    /// `regex`, so a bad pattern is a load-time error; otherwise it
    /// surfaces at the first regex match.
    pub fn check_regex(&self) -> Result<(), TableError> {
        self.regexes().map(|_| ())
    }

    fn regexes(&self) -> Result<&[Regex], TableError> {
        let r = self.regexes.get_or_init(|| {
            self.keys()
                .map(|p| {
                    // Case-insensitive always: OpenSMTPD lowercases both
                    // the key and the patterns, so its regex matching is
                    // effectively case-blind; we keep the pattern intact
                    // (so `\D` stays `\D`) and ask the engine instead.
                    RegexBuilder::new(p)
                        .case_insensitive(true)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .dfa_size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| TableError::Regex {
                            pattern: p.to_string(),
                            reason: e.to_string(),
                        })
                })
                .collect()
        });
        match r {
            Ok(v) => Ok(v.as_slice()),
            Err(e) => Err(e.clone()),
        }
    }

    /// Whether `key` matches an entry under `service`'s comparison rules.
    pub fn matches(&self, service: Service, key: &str) -> Result<bool, TableError> {
        self.matches_inner(service, key, DEFAULT_SUBADDRESS_DELIMITER)
    }

    /// [`Table::matches`] for [`Service::Mailaddr`] with the configured
    /// sub-address delimiter.
    pub fn matches_mailaddr(&self, key: &str, delim: char) -> Result<bool, TableError> {
        self.matches_inner(Service::Mailaddr, key, delim)
    }

    fn matches_inner(&self, service: Service, key: &str, delim: char) -> Result<bool, TableError> {
        Self::check_key(key)?;
        if let Backend::Getpwnam = self.backend {
            return match service {
                Service::Userinfo => Ok(getpwnam(&key.to_ascii_lowercase())?.is_some()),
                _ => Err(self.unsupported(service)),
            };
        }
        if service == Service::Regex {
            return Ok(self.regexes()?.iter().any(|r| r.is_match(key)));
        }
        let folded = key.to_ascii_lowercase();
        if self.get(&folded)?.is_some() {
            return Ok(true);
        }
        let found = match service {
            Service::Domain => self.keys().any(|e| domain_match(key, e)),
            Service::Netaddr => self.keys().any(|e| netaddr_match(key, e)),
            Service::Mailaddr => self.keys().any(|e| mailaddr_match(key, e, delim)),
            Service::Source => self.keys().any(|e| source_match(key, e)),
            _ => false,
        };
        Ok(found)
    }

    /// The value for `key` in a mapping, parsed as `service` defines.
    /// `Ok(None)`: no such key.
    pub fn lookup(&self, service: Service, key: &str) -> Result<Option<Value>, TableError> {
        Self::check_key(key)?;
        let folded = key.to_ascii_lowercase();
        if let Backend::Getpwnam = self.backend {
            return match service {
                Service::Userinfo => Ok(getpwnam(&folded)?.map(Value::Userinfo)),
                _ => Err(self.unsupported(service)),
            };
        }
        if !matches!(
            service,
            Service::Alias
                | Service::Credentials
                | Service::Userinfo
                | Service::Addrname
                | Service::Mailaddrmap
                | Service::Relayhost
                | Service::String
        ) || self.shape() != Shape::Map
        {
            return Err(self.unsupported(service));
        }
        let (found_key, text) = match service {
            Service::Addrname => match self.addrname_get(&folded)? {
                Some(kv) => kv,
                None => return Ok(None),
            },
            _ => match self.get(&folded)? {
                Some(v) => (folded.clone(), v.unwrap_or_default()),
                None => return Ok(None),
            },
        };
        let bad = |reason| TableError::Value {
            service,
            key: found_key.clone(),
            reason,
        };
        let value = match service {
            Service::Alias => Value::Alias(parse_alias_list(text).map_err(bad)?),
            Service::Credentials => {
                Value::Credentials(parse_credentials(&found_key, text).map_err(bad)?)
            }
            Service::Userinfo => Value::Userinfo(parse_userinfo(&found_key, text).map_err(bad)?),
            Service::Addrname => {
                if text.is_empty() {
                    return Err(bad(ValueError::Empty));
                }
                Value::Addrname(text.to_string())
            }
            Service::Mailaddrmap => Value::Mailaddrmap(parse_mailaddr_list(text).map_err(bad)?),
            Service::Relayhost => {
                if text.is_empty() {
                    return Err(bad(ValueError::Empty));
                }
                Value::Relayhost(text.to_string())
            }
            _ => Value::Raw(text.to_string()),
        };
        Ok(Some(value))
    }

    /// Addrname keys are addresses; try the key as given, then the usual
    /// spellings of the same address (`1.2.3.4`, `[::1]`, `::1`).
    fn addrname_get(&self, folded: &str) -> Result<Option<(String, &str)>, TableError> {
        let ip = value::parse_addrname_key(folded).map_err(|reason| TableError::Value {
            service: Service::Addrname,
            key: folded.to_string(),
            reason,
        })?;
        let mut candidates = vec![folded.to_string()];
        match ip {
            IpAddr::V4(v4) => candidates.push(v4.to_string()),
            IpAddr::V6(v6) => {
                candidates.push(format!("[{v6}]"));
                candidates.push(v6.to_string());
                candidates.push(format!("[ipv6:{v6}]"));
            }
        }
        for c in candidates {
            if let Some(v) = self.get(&c)? {
                return Ok(Some((c, v.unwrap_or_default())));
            }
        }
        Ok(None)
    }

    fn alias_at(&self, key: &str) -> Result<Option<AliasMatch>, TableError> {
        Ok(match self.lookup(Service::Alias, key)? {
            Some(Value::Alias(targets)) => Some(AliasMatch {
                key: key.to_string(),
                targets,
            }),
            _ => None,
        })
    }

    /// Primary-domain aliases (aliases_get): `user+tag`, then `user`.
    /// The lookup is case-insensitive.
    pub fn lookup_alias(&self, user: &str, delim: char) -> Result<Option<AliasMatch>, TableError> {
        let user = user.to_ascii_lowercase();
        if let Some((base, _tag)) = user.split_once(delim) {
            if let Some(m) = self.alias_at(&user)? {
                return Ok(Some(m));
            }
            return self.alias_at(base);
        }
        self.alias_at(&user)
    }

    /// Virtual-domain lookup in OpenSMTPD's order (aliases_virtual_get):
    /// `user+tag@domain`, `user@domain`, `user+tag`, `user`, `@domain`,
    /// `@`; the two catch-alls only when `domain` is not empty. The tag is
    /// what follows the first `delim` in `user`.
    pub fn lookup_virtual(
        &self,
        user: &str,
        domain: &str,
        delim: char,
    ) -> Result<Option<AliasMatch>, TableError> {
        let user = user.to_ascii_lowercase();
        let domain = domain.to_ascii_lowercase();
        let (base, tag) = match user.split_once(delim) {
            Some((b, t)) => (b.to_string(), Some(t.to_string())),
            None => (user.clone(), None),
        };
        let mut keys = Vec::with_capacity(6);
        if let Some(t) = &tag {
            keys.push(format!("{base}{delim}{t}@{domain}"));
        }
        keys.push(format!("{base}@{domain}"));
        if let Some(t) = &tag {
            keys.push(format!("{base}{delim}{t}"));
        }
        keys.push(base.clone());
        if !domain.is_empty() {
            keys.push(format!("@{domain}"));
            keys.push("@".to_string());
        }
        for k in keys {
            if let Some(m) = self.alias_at(&k)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Every entry of a source table as an address (`relay src <table>`
    /// cycles through them).
    pub fn sources(&self) -> Result<Vec<IpAddr>, TableError> {
        if let Backend::Getpwnam = self.backend {
            return Err(self.unsupported(Service::Source));
        }
        self.keys()
            .map(|k| {
                parse_ip(k).ok_or_else(|| TableError::Value {
                    service: Service::Source,
                    key: k.to_string(),
                    reason: ValueError::NotAnAddress(k.to_string()),
                })
            })
            .collect()
    }

    /// Number of entries (`None` for getpwnam).
    pub fn len(&self) -> Option<usize> {
        match &self.backend {
            Backend::Static(e) => Some(e.list.len()),
            Backend::Db { .. } => Some(self.keys().count()),
            Backend::Getpwnam => None,
        }
    }

    /// Whether the table has no entries (getpwnam never is).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// The system user database as a userinfo source.
fn getpwnam(name: &str) -> Result<Option<Userinfo>, TableError> {
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(Some(Userinfo {
            username: name.to_string(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            directory: u.dir,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(TableError::Getpwnam {
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
