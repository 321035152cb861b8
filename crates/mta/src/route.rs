//! Where a relayed message goes: from the action's dispatcher and the
//! recipient domain to the ordered list of hosts to try. Pure: no DNS, no
//! sockets; the answers of the resolver ([`crate::resolve`]) come in as
//! values, and so does the randomness used to shuffle equal MX preferences.
//!
//! The steps, in the order the mta runs them:
//! 1. [`plan`]: a `host URL`, a `domain <table>` entry or a domain literal
//!    (`user@[192.0.2.1]`) gives one [`Target`] directly; otherwise the
//!    recipient domain needs an MX lookup ([`Plan::Mx`]).
//! 2. [`select_mx`]: the MX records (or their absence) become the ordered
//!    targets: sorted by preference, equal preferences shuffled, everything
//!    at or above our own preference dropped (RFC 5321 5.1), Null MX
//!    (RFC 7505) and MX to `localhost` refused, no MX at all giving the
//!    implicit MX (the domain itself).
//! 3. [`order_addresses`]: each target's A and AAAA addresses, bounded and
//!    interleaved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rsmtpd_config::check::parse_relay_url;
use rsmtpd_config::model::{RelayDispatcher, RelayProto, RelayTls, RelayUrl, Route, TableId};
use rsmtpd_table::{Service, Table, Value};

/// How many MX hosts are tried for one domain, best first. A domain with
/// hundreds of MX records must not make one delivery attempt last hours.
pub const MAX_MX_HOSTS: usize = 16;
/// How many addresses of one host are tried.
pub const MAX_ADDRS_PER_HOST: usize = 8;
/// The SMTP port (RFC 5321 4.5.4.2).
pub const SMTP_PORT: u16 = 25;
/// The submissions port, TLS from the first byte (RFC 8314 7.3).
pub const SMTPS_PORT: u16 = 465;

/// The protocol spoken to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    /// RFC 2033; only through a `lmtp://` relay URL.
    Lmtp,
}

/// How TLS is used on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered, plain text otherwise (`smtp://`, MX default).
    Opportunistic,
    /// STARTTLS or fail (`smtp+tls://`, or the action's `tls` option).
    Starttls,
    /// Never TLS (`smtp+notls://`, `lmtp://`).
    Plain,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// One host to try, before its addresses are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name (lower case, no trailing dot) or an IP literal.
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    pub tls: TlsMode,
    /// Whether the server certificate must verify (the action's
    /// `tls` without `no-verify`). Opportunistic TLS never verifies.
    pub verify: bool,
    /// The relay URL's `label@`: the key of the credentials in the
    /// action's `auth` table.
    pub label: Option<String>,
    /// The MX preference, `None` for a smarthost, a domain literal or the
    /// implicit MX.
    pub preference: Option<u16>,
}

/// What routing needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The next hop is known: no MX lookup.
    Direct(Target),
    /// Look up the MX records of `domain`, then call [`select_mx`].
    Mx(MxQuery),
}

/// An MX lookup to make, with what [`select_mx`] needs afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxQuery {
    /// The recipient domain: lower case, no trailing dot.
    pub domain: String,
    /// The port of MX deliveries (25, or the `RSMTPD_MX_PORT` test knob).
    pub port: u16,
    pub tls: TlsMode,
    pub verify: bool,
    /// `backup mx NAME`: NAME's preference is the cut-off. Plain `backup`
    /// uses our own names, which is what the cut-off uses anyway.
    pub backup_name: Option<String>,
}

/// One MX record as DNS gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    /// As in the answer; a trailing dot is allowed, "." or "" is the root.
    pub exchange: String,
}

/// Why no route was found. Each error knows whether it is permanent (bounce)
/// or temporary (retry) and its RFC 3463 status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// RFC 7505: the domain says it accepts no mail.
    #[error("domain {domain} does not accept mail (null MX)")]
    NullMx { domain: String },
    /// NXDOMAIN for the recipient domain.
    #[error("domain {domain} does not exist")]
    NoSuchDomain { domain: String },
    /// We are the best MX left (or the domain's only host is us).
    #[error("mail for {domain} loops back to myself")]
    LoopsToMyself { domain: String },
    /// An MX, at least as preferred as any usable one, is `localhost`.
    #[error("MX for {domain} points to localhost")]
    MxIsLocalhost { domain: String },
    /// No host of the route has an address (all NXDOMAIN or NODATA).
    #[error("no address for {host}")]
    NoAddress { host: String },
    /// A smarthost (`host` or `domain <table>`) name has no address. Unlike
    /// an MX host this is our configuration's mistake, so the mail waits
    /// for it to be fixed instead of bouncing (Postfix does the same).
    #[error("no address for relay host {host}")]
    RelayHostUnknown { host: String },
    /// The recipient domain cannot be a DNS name.
    #[error("invalid domain {domain:?}")]
    InvalidDomain { domain: String },
    /// `domain <table>` has no entry for the recipient domain (OpenSMTPD
    /// defers too: the table may be fixed).
    #[error("cannot retrieve smarthost for {domain}")]
    NoSmarthost { domain: String },
    /// `domain <table>` gave a value that is not a relay URL.
    #[error("bad relay URL {url:?} for {domain}: {reason}")]
    BadRelayUrl {
        domain: String,
        url: String,
        reason: String,
    },
    /// The table could not be read or is not the table the config named.
    #[error("table lookup for {domain}: {reason}")]
    Table { domain: String, reason: String },
    /// An `lmtp://` URL without a port (the config parser refuses them; this
    /// guards values made elsewhere).
    #[error("lmtp relay {host} has no port")]
    LmtpWithoutPort { host: String },
    /// SERVFAIL, REFUSED, a timeout, a network error.
    #[error("DNS lookup of {name} failed temporarily: {reason}")]
    DnsTemporary { name: String, reason: String },
}

impl RouteError {
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RouteError::NullMx { .. }
                | RouteError::NoSuchDomain { .. }
                | RouteError::LoopsToMyself { .. }
                | RouteError::MxIsLocalhost { .. }
                | RouteError::NoAddress { .. }
                | RouteError::InvalidDomain { .. }
        )
    }

    /// The enhanced status code (RFC 3463) for the DSN and the log.
    pub fn status(&self) -> &'static str {
        match self {
            // RFC 7505 3: "5.1.10 Recipient address has null MX".
            RouteError::NullMx { .. } => "5.1.10",
            RouteError::NoSuchDomain { .. } => "5.1.2",
            RouteError::InvalidDomain { .. } => "5.1.2",
            // RFC 3463 3.5: "Routing loop detected".
            RouteError::LoopsToMyself { .. } => "5.4.6",
            RouteError::MxIsLocalhost { .. } => "5.4.4",
            RouteError::NoAddress { .. } => "5.4.4",
            RouteError::NoSmarthost { .. }
            | RouteError::BadRelayUrl { .. }
            | RouteError::Table { .. }
            | RouteError::LmtpWithoutPort { .. } => "4.3.5",
            RouteError::RelayHostUnknown { .. } => "4.4.4",
            RouteError::DnsTemporary { .. } => "4.4.3",
        }
    }
}

/// Randomness for shuffling equal MX preferences, injected so that tests
/// are deterministic.
pub trait Random {
    fn next_u64(&mut self) -> u64;

    /// A number in `0..n` (`n` > 0). The modulo bias is irrelevant for
    /// shuffling a handful of hosts.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// xorshift64*: small, good enough to spread load over equal MXes, not for
/// anything secret.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A fixed seed (tests); 0 is replaced, xorshift would stay at 0.
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seeded from /dev/urandom, or when that cannot be read (the mta runs
    /// chrooted in an empty directory) from std's per-process random hash
    /// keys, which come from the getrandom(2) system call.
    pub fn from_entropy() -> XorShift {
        use std::hash::{BuildHasher, Hasher};
        use std::io::Read;
        let mut buf = [0u8; 8];
        let from_file = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .is_ok();
        let seed = if from_file {
            u64::from_ne_bytes(buf)
        } else {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        XorShift::new(seed)
    }
}

impl Random for XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Lower case, without the trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn is_localhost(name: &str) -> bool {
    // RFC 6761 6.3: every name under .localhost is the loopback.
    name == "localhost" || name.ends_with(".localhost")
}

/// The target of a relay URL (`host` and `domain <table>` routes).
pub fn target_from_url(url: &RelayUrl, tls: RelayTls) -> Result<Target, RouteError> {
    let (protocol, mode, default_port) = match url.proto {
        RelayProto::Smtp => (Protocol::Smtp, TlsMode::Opportunistic, Some(SMTP_PORT)),
        RelayProto::SmtpTls => (Protocol::Smtp, TlsMode::Starttls, Some(SMTP_PORT)),
        RelayProto::SmtpNoTls => (Protocol::Smtp, TlsMode::Plain, Some(SMTP_PORT)),
        RelayProto::Smtps => (Protocol::Smtp, TlsMode::Implicit, Some(SMTPS_PORT)),
        // LMTP has no standard port (RFC 2033 5 forbids 25).
        RelayProto::Lmtp => (Protocol::Lmtp, TlsMode::Plain, None),
    };
    let host = normalize_name(&url.host);
    let port = url
        .port
        .or(default_port)
        .ok_or_else(|| RouteError::LmtpWithoutPort { host: host.clone() })?;
    let (tls, verify) = apply_tls_option(mode, tls);
    Ok(Target {
        host,
        port,
        protocol,
        tls,
        verify,
        label: url.label.clone(),
        preference: None,
    })
}

/// The action's `tls [no-verify]` makes opportunistic TLS mandatory and
/// asks for verification; it does not turn on TLS where the URL said
/// `smtp+notls://` or `lmtp://` (the config checker refuses that pairing).
/// A URL that makes TLS mandatory (`smtp+tls://`, `smtps://`) verifies
/// the certificate unless the action says `tls no-verify`: TLS that any
/// man in the middle can answer protects nothing worth insisting on.
fn apply_tls_option(mode: TlsMode, tls: RelayTls) -> (TlsMode, bool) {
    match (mode, tls) {
        (TlsMode::Starttls | TlsMode::Implicit, RelayTls::Opportunistic) => (mode, true),
        (_, RelayTls::Opportunistic) => (mode, false),
        (TlsMode::Opportunistic, RelayTls::Required { verify }) => (TlsMode::Starttls, verify),
        (TlsMode::Plain, RelayTls::Required { .. }) => (TlsMode::Plain, false),
        (TlsMode::Starttls | TlsMode::Implicit, RelayTls::Required { verify }) => (mode, verify),
    }
}

/// An address literal as the domain of a recipient (RFC 5321 4.1.3):
/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn domain_literal(domain: &str) -> Option<Option<IpAddr>> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let ip = match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    };
    Some(ip)
}

/// The first step of routing. `table` gives the table a `domain <table>`
/// route names (the caller owns the opened tables); `mx_port` is the port
/// of MX deliveries.
pub fn plan<'t>(
    dispatcher: &RelayDispatcher,
    domain: &str,
    mx_port: u16,
    table: impl FnOnce(TableId) -> Option<&'t Table>,
) -> Result<Plan, RouteError> {
    let domain_norm = normalize_name(domain);
    match &dispatcher.route {
        Route::Host(url) => Ok(Plan::Direct(target_from_url(url, dispatcher.tls)?)),
        Route::Domain(id) => {
            let Some(table) = table(*id) else {
                return Err(RouteError::Table {
                    domain: domain_norm,
                    reason: format!("table #{} is not open", id.0),
                });
            };
            let url = smarthost_for(table, &domain_norm)?;
            Ok(Plan::Direct(target_from_url(&url, dispatcher.tls)?))
        }
        Route::Mx => {
            let (tls, verify) = apply_tls_option(TlsMode::Opportunistic, dispatcher.tls);
            if let Some(literal) = domain_literal(&domain_norm) {
                let Some(ip) = literal else {
                    return Err(RouteError::InvalidDomain {
                        domain: domain_norm,
                    });
                };
                return Ok(Plan::Direct(Target {
                    host: ip.to_string(),
                    port: mx_port,
                    protocol: Protocol::Smtp,
                    tls,
                    verify,
                    label: None,
                    preference: None,
                }));
            }
            if !valid_domain(&domain_norm) {
                return Err(RouteError::InvalidDomain {
                    domain: domain_norm,
                });
            }
            Ok(Plan::Mx(MxQuery {
                domain: domain_norm,
                port: mx_port,
                tls,
                verify,
                backup_name: dispatcher
                    .backup
                    .clone()
                    .flatten()
                    .map(|n| normalize_name(&n)),
            }))
        }
    }
}

/// Whether `name` can be asked of the DNS: non-empty labels of at most 63
/// bytes, at most 253 bytes, no spaces or controls. UTF-8 is let through
/// (the resolver turns it into an A-label).
fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '[' | ']'))
}

/// `domain <table>`: the relay URL for `domain`, parsed with the config's
/// own parser so the syntax is the same as `host URL`.
pub fn smarthost_for(table: &Table, domain: &str) -> Result<RelayUrl, RouteError> {
    let value = table
        .lookup(Service::Relayhost, domain)
        .map_err(|e| RouteError::Table {
            domain: domain.to_string(),
            reason: e.to_string(),
        })?;
    let text = match value {
        Some(Value::Relayhost(text)) => text,
        Some(_) => {
            return Err(RouteError::Table {
                domain: domain.to_string(),
                reason: "not a relayhost value".to_string(),
            });
        }
        None => {
            return Err(RouteError::NoSmarthost {
                domain: domain.to_string(),
            });
        }
    };
    parse_relay_url(text.trim()).map_err(|e| RouteError::BadRelayUrl {
        domain: domain.to_string(),
        url: text.clone(),
        reason: e.to_string(),
    })
}

/// The second step: the MX answer (`records` empty means the domain exists
/// but has no MX: NODATA) to the ordered targets. `own_names` are the names
/// this server answers to (its hostname, the `listen on ... hostname`s);
/// compared case-insensitively, trailing dots ignored.
pub fn select_mx(
    query: &MxQuery,
    records: &[MxRecord],
    own_names: &[String],
    rng: &mut dyn Random,
) -> Result<Vec<Target>, RouteError> {
    let domain = &query.domain;
    let own: Vec<String> = own_names.iter().map(|n| normalize_name(n)).collect();
    let target = |host: String, preference: Option<u16>| Target {
        host,
        port: query.port,
        protocol: Protocol::Smtp,
        tls: query.tls,
        verify: query.verify,
        label: None,
        preference,
    };

    if records.is_empty() {
        // RFC 5321 5.1: no MX, the domain is its own (implicit) MX, with
        // the same loop rules as an explicit one.
        if is_localhost(domain) {
            return Err(RouteError::MxIsLocalhost {
                domain: domain.clone(),
            });
        }
        if own.contains(domain) {
            return Err(RouteError::LoopsToMyself {
                domain: domain.clone(),
            });
        }
        return Ok(vec![target(domain.clone(), None)]);
    }

    let mut mxes: Vec<(u16, String)> = records
        .iter()
        .map(|r| (r.preference, normalize_name(&r.exchange)))
        .collect();

    // RFC 7505 3: a Null MX is the only MX record; with others around it
    // is a mistake and the root is just not a host to try.
    if let [(_, exchange)] = mxes.as_slice()
        && exchange.is_empty()
    {
        return Err(RouteError::NullMx {
            domain: domain.clone(),
        });
    }
    mxes.retain(|(_, exchange)| !exchange.is_empty());

    // The cut-off (RFC 5321 5.1: "the SMTP client MUST discard all MX
    // records with preference equal to or larger than its own"): our own
    // best preference, the `backup mx NAME`'s, or localhost's (which is us
    // too). Applied whether or not the action says `backup`, as a relay
    // that is an MX of the domain loops otherwise.
    let pref_of =
        |pred: &dyn Fn(&str) -> bool| mxes.iter().filter(|(_, e)| pred(e)).map(|(p, _)| *p).min();
    let own_pref = pref_of(&|e| own.iter().any(|o| o == e));
    let backup_pref = query
        .backup_name
        .as_deref()
        .and_then(|name| pref_of(&|e| e == name));
    let local_pref = pref_of(&|e| is_localhost(e));
    let self_pref = match (own_pref, backup_pref) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let cutoff = match (self_pref, local_pref) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(cutoff) = cutoff {
        mxes.retain(|(p, _)| *p < cutoff);
    }
    if mxes.is_empty() {
        let localhost_first = match (local_pref, self_pref) {
            (Some(l), Some(s)) => l <= s,
            (Some(_), None) => true,
            _ => false,
        };
        return Err(if localhost_first {
            RouteError::MxIsLocalhost {
                domain: domain.clone(),
            }
        } else {
            RouteError::LoopsToMyself {
                domain: domain.clone(),
            }
        });
    }

    // The same host listed twice (at two preferences) is tried once, at
    // its best.
    mxes.sort();
    let mut seen: Vec<&str> = Vec::new();
    let mut unique: Vec<(u16, String)> = Vec::with_capacity(mxes.len());
    for (p, e) in &mxes {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
            unique.push((*p, e.clone()));
        }
    }

    // RFC 5321 5.1: equal preferences in random order, to spread the load.
    let mut start = 0;
    while start < unique.len() {
        let pref = unique[start].0;
        let end = unique[start..]
            .iter()
            .position(|(p, _)| *p != pref)
            .map_or(unique.len(), |n| start + n);
        shuffle(&mut unique[start..end], rng);
        start = end;
    }
    unique.truncate(MAX_MX_HOSTS);
    Ok(unique
        .into_iter()
        .map(|(p, e)| target(e, Some(p)))
        .collect())
}

/// Fisher-Yates.
fn shuffle<T>(items: &mut [T], rng: &mut dyn Random) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

/// The third step: a host's addresses in the order to try them, at most
/// [`MAX_ADDRS_PER_HOST`], duplicates removed.
///
/// The families are interleaved, IPv6 first (v6, v4, v6, v4...), as RFC
/// 8305 4 suggests: IPv6 is preferred, but a host whose IPv6 path is
/// broken costs one failed connection before an IPv4 one is tried, not
/// all of its IPv6 addresses. Within a family the DNS order is kept.
pub fn order_addresses(v6: &[Ipv6Addr], v4: &[Ipv4Addr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(MAX_ADDRS_PER_HOST);
    let mut v6 = v6.iter();
    let mut v4 = v4.iter();
    loop {
        let a = v6.next().map(|a| IpAddr::V6(*a));
        let b = v4.next().map(|a| IpAddr::V4(*a));
        if a.is_none() && b.is_none() {
            break;
        }
        for ip in [a, b].into_iter().flatten() {
            if out.len() < MAX_ADDRS_PER_HOST && !out.contains(&ip) {
                out.push(ip);
            }
        }
        if out.len() >= MAX_ADDRS_PER_HOST {
            break;
        }
    }
    out
}
