//! Rule evaluation: which action a recipient gets, or whether it is
//! refused. A pure function of the configuration, its opened tables and the
//! facts of the session, so the smtp and lookup roles share one definition
//! and tests need no daemon.
//!
//! Order and meaning follow smtpd.conf(5) and OpenSMTPD's ruleset.c: rules
//! are tried in file order and the first whose every part matches wins; no
//! match means reject. Within a rule the parts are checked in OpenSMTPD's
//! order (tag, origin, destination, helo, auth, tls, mail-from, rcpt-to)
//! and the first part that does not match ends the rule, so which error
//! surfaces is the same too. A table that cannot answer makes the whole
//! evaluation a temporary failure rather than a guess.
//!
//! `from auth`, `from mail-from` and `for rcpt-to` are, as in OpenSMTPD,
//! the transaction conditions `auth`, `mail-from` and `rcpt-to` with any
//! origin (destination): `!from auth` means "any source, not
//! authenticated".
//!
//! Deliberate differences from OpenSMTPD (7.x):
//! - `tls` tests [`MatchContext::tls`]; OpenSMTPD has no TLS flag on the
//!   envelope and fails every rule using `tls` temporarily.
//! - `!from rdns <names>` matches a client without reverse DNS (it does not
//!   resolve to one of the names); OpenSMTPD never matches it.
//! - An IPv4-mapped IPv6 client address is compared as IPv4 everywhere,
//!   `src regex` included.

use std::net::IpAddr;

use rsmtpd_table::{Service, Table, TableError};

use crate::model::{
    Condition, Config, Decision, Destination, Matcher, Negatable, Origin, Rule, TableId,
};

/// Where the session came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// The local enqueuer (sendmail, the `listen on socket` path). Its
    /// address is `local` in netaddr tables (so `from src <t>` can list
    /// it) and, as in OpenSMTPD, its reverse DNS name is the server name.
    /// OpenSMTPD also counts its sessions as authenticated with an empty
    /// user name: the caller expresses that with `auth_user: Some("")`.
    Local,
    /// A network client, with its reverse DNS name when it has one.
    Network { addr: IpAddr, rdns: Option<&'a str> },
    /// An address produced by expanding an alias, a virtual table or a
    /// `.forward` file, matched again (OpenSMTPD's `EF_INTERNAL`): the
    /// origin is `local` for `from local`, `from any` and `from src`, while
    /// `from socket` and `from rdns` without a table never match it,
    /// negated or not.
    Internal,
}

/// The facts a rule can test, for one recipient of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchContext<'a> {
    pub source: Source<'a>,
    /// The listener's `tag`, if any.
    pub tag: Option<&'a str>,
    /// The HELO/EHLO name.
    pub helo: Option<&'a str>,
    /// The authenticated user name; `None` when not authenticated.
    pub auth_user: Option<&'a str>,
    /// Whether the session is inside TLS.
    pub tls: bool,
    /// MAIL FROM as `user@domain`, empty for the null sender.
    pub sender: &'a str,
    /// RCPT TO as `user@domain`.
    pub rcpt: &'a str,
    /// The recipient's domain (the server name for a domain-less recipient).
    pub rcpt_domain: &'a str,
}

/// The result of a match: the rule's index and what it decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rule `rule` (index in [`Config::rules`]) matched.
    Matched { rule: usize, decision: Decision },
    /// No rule matched: the recipient is refused.
    NoMatch,
}

/// Why the rules could not be evaluated: always a temporary failure (4xx),
/// never a reason to accept or refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("table {name} is not open")]
    MissingTable { name: String },
    #[error("lookup in table {name} failed: {source}")]
    Table {
        name: String,
        #[source]
        source: TableError,
    },
}

/// The opened tables of a configuration, indexed like [`Config::tables`].
pub trait Tables {
    fn get(&self, id: TableId) -> Option<&Table>;
}

impl Tables for [Table] {
    fn get(&self, id: TableId) -> Option<&Table> {
        <[Table]>::get(self, id.0)
    }
}

impl Tables for Vec<Table> {
    fn get(&self, id: TableId) -> Option<&Table> {
        self.as_slice().get(id.0)
    }
}

/// Shared tables, so that one can be replaced (`smtpctl update table`)
/// while requests still use the set they started with.
impl Tables for [std::sync::Arc<Table>] {
    fn get(&self, id: TableId) -> Option<&Table> {
        <[std::sync::Arc<Table>]>::get(self, id.0).map(|t| t.as_ref())
    }
}

/// Open every table a configuration declares, in order.
pub fn open_tables(config: &Config) -> Result<Vec<Table>, EvalError> {
    config
        .tables
        .iter()
        .map(|t| {
            Table::open(&t.decl).map_err(|source| EvalError::Table {
                name: t.name.clone(),
                source,
            })
        })
        .collect()
}

/// Evaluate the rules for one recipient.
pub fn evaluate<T: Tables + ?Sized>(
    config: &Config,
    tables: &T,
    ctx: &MatchContext<'_>,
) -> Result<Verdict, EvalError> {
    let eval = Evaluator {
        config,
        tables,
        ctx,
    };
    for (index, rule) in config.rules.iter().enumerate() {
        if eval.rule_matches(rule)? {
            return Ok(Verdict::Matched {
                rule: index,
                decision: rule.decision,
            });
        }
    }
    Ok(Verdict::NoMatch)
}

/// The session address as OpenSMTPD writes it for table lookups: `local`
/// for the local enqueuer and internal envelopes, dotted quad for IPv4,
/// `[addr]` for IPv6 (what `src regex` patterns see).
fn source_key(source: Source<'_>) -> String {
    match source {
        Source::Local | Source::Internal => "local".to_owned(),
        Source::Network { addr, .. } => match addr.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        },
    }
}

/// The transaction conditions in the order OpenSMTPD checks them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Tag,
    Helo,
    Auth,
    Tls,
    MailFrom,
    RcptTo,
}

fn slot(c: &Condition) -> Slot {
    match c {
        Condition::Tag(_) => Slot::Tag,
        Condition::Helo(_) => Slot::Helo,
        Condition::Auth(_) => Slot::Auth,
        Condition::Tls => Slot::Tls,
        Condition::MailFrom(_) => Slot::MailFrom,
        Condition::RcptTo(_) => Slot::RcptTo,
    }
}

struct Evaluator<'c, T: ?Sized> {
    config: &'c Config,
    tables: &'c T,
    ctx: &'c MatchContext<'c>,
}

impl<T: Tables + ?Sized> Evaluator<'_, T> {
    fn rule_matches(&self, rule: &Rule) -> Result<bool, EvalError> {
        // `from auth`, `from mail-from` and `for rcpt-to` are conditions in
        // disguise: they take the place of the condition of the same kind
        // (the parser refuses a rule that has both).
        let from_cond = match rule.from.value {
            Origin::Auth(m) => Some(Condition::Auth(m)),
            Origin::MailFrom(m) => Some(Condition::MailFrom(m)),
            _ => None,
        };
        let to_cond = match rule.to.value {
            Destination::RcptTo(m) => Some(Condition::RcptTo(m)),
            _ => None,
        };
        let mut conds: Vec<Negatable<Condition>> = rule.conditions.clone();
        if let Some(value) = from_cond {
            conds.push(Negatable {
                negated: rule.from.negated,
                value,
            });
        }
        if let Some(value) = to_cond {
            conds.push(Negatable {
                negated: rule.to.negated,
                value,
            });
        }
        conds.sort_by_key(|c| slot(&c.value));

        let (tags, rest) = conds.split_at(conds.partition_point(|c| slot(&c.value) == Slot::Tag));
        for cond in tags {
            if !self.condition(cond)? {
                return Ok(false);
            }
        }
        if from_cond.is_none() && !self.origin(rule.from)? {
            return Ok(false);
        }
        if to_cond.is_none() && !self.destination(rule.to)? {
            return Ok(false);
        }
        for cond in rest {
            if !self.condition(cond)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The `from` part (not auth / mail-from), negation applied.
    fn origin(&self, from: Negatable<Origin>) -> Result<bool, EvalError> {
        let ctx = self.ctx;
        let internal = ctx.source == Source::Internal;
        let hit = match from.value {
            Origin::Any => true,
            Origin::Local => self.lookup(
                self.builtin("<localhost>")?,
                Service::Netaddr,
                &source_key(ctx.source),
            )?,
            // OpenSMTPD: an internal envelope never matches a rule whose
            // origin has no table, whatever the negation.
            Origin::Socket | Origin::Rdns(None) if internal => return Ok(false),
            Origin::Socket => ctx.source == Source::Local,
            Origin::Src(m) => self.matcher(m, Service::Netaddr, &source_key(ctx.source))?,
            Origin::Rdns(m) => {
                let rdns = match ctx.source {
                    Source::Network { rdns, .. } => rdns,
                    Source::Local => Some(self.config.hostname.as_str()),
                    Source::Internal => Some("local"),
                };
                match (rdns, m) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(name), Some(m)) => self.matcher(m, Service::Domain, name)?,
                }
            }
            // Handled as conditions by rule_matches.
            Origin::Auth(_) | Origin::MailFrom(_) => true,
        };
        Ok(hit != from.negated)
    }

    /// The `for` part (not rcpt-to), negation applied.
    fn destination(&self, to: Negatable<Destination>) -> Result<bool, EvalError> {
        let domain = self.ctx.rcpt_domain;
        let hit = match to.value {
            Destination::Any => true,
            Destination::Local => {
                self.lookup(self.builtin("<localnames>")?, Service::Domain, domain)?
            }
            Destination::Domain(m) => self.matcher(m, Service::Domain, domain)?,
            Destination::RcptTo(_) => true,
        };
        Ok(hit != to.negated)
    }

    fn condition(&self, cond: &Negatable<Condition>) -> Result<bool, EvalError> {
        let ctx = self.ctx;
        let hit = match cond.value {
            Condition::Auth(m) => self.auth(m)?,
            // A missing HELO or tag is the empty string, as in OpenSMTPD's
            // envelope: it matches no name, but a regex may match it.
            Condition::Helo(m) => self.matcher(m, Service::Domain, ctx.helo.unwrap_or(""))?,
            Condition::MailFrom(m) => self.matcher(m, Service::Mailaddr, &self.sender_key())?,
            Condition::RcptTo(m) => self.matcher(m, Service::Mailaddr, ctx.rcpt)?,
            Condition::Tag(m) => self.matcher(m, Service::String, ctx.tag.unwrap_or(""))?,
            Condition::Tls => ctx.tls,
        };
        Ok(hit != cond.negated)
    }

    /// The sender as OpenSMTPD writes it for lookups: the null sender is
    /// `@` (what `mail-from regex` patterns see; only the `@` entry matches
    /// it in a mailaddr table).
    fn sender_key(&self) -> String {
        if self.ctx.sender.is_empty() {
            "@".to_owned()
        } else {
            self.ctx.sender.to_owned()
        }
    }

    fn auth(&self, m: Option<Matcher>) -> Result<bool, EvalError> {
        match (self.ctx.auth_user, m) {
            (None, _) => Ok(false),
            (Some(_), None) => Ok(true),
            (Some(user), Some(m)) => {
                // A user name that looks like an address is compared as one.
                let service = if user.contains('@') {
                    Service::Mailaddr
                } else {
                    Service::String
                };
                self.matcher(m, service, user)
            }
        }
    }

    fn matcher(&self, m: Matcher, service: Service, key: &str) -> Result<bool, EvalError> {
        let service = if m.regex { Service::Regex } else { service };
        self.lookup(m.table, service, key)
    }

    fn builtin(&self, name: &str) -> Result<TableId, EvalError> {
        self.config
            .tables
            .iter()
            .position(|t| t.name == name)
            .map(TableId)
            .ok_or_else(|| EvalError::MissingTable {
                name: name.to_owned(),
            })
    }

    fn lookup(&self, id: TableId, service: Service, key: &str) -> Result<bool, EvalError> {
        let name = || {
            self.config
                .tables
                .get(id.0)
                .map_or_else(|| format!("#{}", id.0), |t| t.name.clone())
        };
        let table = self
            .tables
            .get(id)
            .ok_or_else(|| EvalError::MissingTable { name: name() })?;
        let found = if service == Service::Mailaddr {
            // `smtp sub-addr-delim` decides what `user+tag` strips.
            table.matches_mailaddr(key, self.config.smtp.sub_addr_delim)
        } else {
            table.matches(service, key)
        };
        found.map_err(|source| EvalError::Table {
            name: name(),
            source,
        })
    }
}
