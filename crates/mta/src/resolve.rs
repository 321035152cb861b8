//! DNS for relaying: MX, A and AAAA lookups with hickory-resolver, each
//! bounded in time, their failures sorted into permanent and temporary
//! ones, and the whole route ([`Resolver::route`]) from a [`Plan`] to hosts
//! with addresses.
//!
//! | answer | meaning |
//! |---|---|
//! | NXDOMAIN for the recipient domain | permanent, 5.1.2 |
//! | NODATA for MX | the implicit MX: the domain itself |
//! | SERVFAIL, REFUSED, timeout, network error | temporary, 4.4.3 |
//! | no address for any MX host (NXDOMAIN/NODATA for A and AAAA) | permanent, 5.4.4 |
//! | no address for a smarthost | temporary, 4.4.4 (a configuration mistake) |
//!
//! Names are always asked as fully qualified (a trailing dot is added), so
//! the `search` and `domain` lines of resolv.conf never turn
//! `example.com` into `example.com.corp.internal`; names in answers lose
//! their trailing dot.
//!
//! # Test knobs
//!
//! Read by [`Knobs::from_env`]; meant for tests, so that outbound delivery
//! runs on loopback without the internet:
//!
//! - `RSMTPD_RESOLVER=IP:PORT`: the one nameserver to ask (UDP, then TCP
//!   for truncated answers), instead of those of `/etc/resolv.conf`.
//!   An IPv6 address is written `[::1]:5353`.
//! - `RSMTPD_MX_PORT=PORT`: the port of MX deliveries (and of domain
//!   literals) instead of 25. Smarthost URLs keep their own port.
//!
//! An unset or empty variable means the default; a malformed one is an
//! error (a test that meant to redirect DNS must not silently use the real
//! one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::route::{
    MAX_MX_HOSTS, MxQuery, MxRecord, Plan, Random, RouteError, Target, order_addresses, select_mx,
};

/// The variable naming the test nameserver.
pub const ENV_RESOLVER: &str = "RSMTPD_RESOLVER";
/// The variable naming the port of MX deliveries.
pub const ENV_MX_PORT: &str = "RSMTPD_MX_PORT";

/// Default bound on one lookup (one name, one type), retries included.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many MX records of one answer are read; a larger answer is cut
/// (after which [`select_mx`] keeps at most [`MAX_MX_HOSTS`]).
pub const MAX_MX_RECORDS: usize = 64;
/// How many address records of one answer are read.
const MAX_ADDR_RECORDS: usize = 32;

/// The test knobs (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Knobs {
    /// `RSMTPD_RESOLVER`.
    pub resolver: Option<SocketAddr>,
    /// `RSMTPD_MX_PORT`.
    pub mx_port: Option<u16>,
}

/// A knob that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    #[error("{ENV_RESOLVER}={0:?}: expected IP:PORT (e.g. 127.0.0.1:5353 or [::1]:5353)")]
    Resolver(String),
    #[error("{ENV_MX_PORT}={0:?}: expected a port number from 1 to 65535")]
    MxPort(String),
}

impl Knobs {
    /// From the process environment.
    pub fn from_env() -> Result<Knobs, KnobError> {
        Knobs::from_vars(|name| std::env::var(name).ok())
    }

    /// From any source of variables (tests do not have to change the
    /// process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Knobs, KnobError> {
        let resolver = match var(ENV_RESOLVER).filter(|v| !v.is_empty()) {
            Some(v) => Some(
                v.parse::<SocketAddr>()
                    .map_err(|_| KnobError::Resolver(v.clone()))?,
            ),
            None => None,
        };
        let mx_port = match var(ENV_MX_PORT).filter(|v| !v.is_empty()) {
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return Err(KnobError::MxPort(v)),
            },
            None => None,
        };
        Ok(Knobs { resolver, mx_port })
    }

    /// The port of MX deliveries.
    pub fn mx_port(&self) -> u16 {
        self.mx_port.unwrap_or(crate::route::SMTP_PORT)
    }
}

/// Why a resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("reading the system resolver configuration: {0}")]
    SystemConfig(String),
    #[error("building the resolver: {0}")]
    Build(String),
}

/// The result of an MX lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// At most [`MAX_MX_RECORDS`] records, names without trailing dot.
    Records(Vec<MxRecord>),
    /// The domain exists without MX records: the implicit MX applies.
    NoData,
}

/// One host of the route with its addresses, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub target: Target,
    /// Never empty.
    pub addrs: Vec<IpAddr>,
}

/// How one lookup ended, before it means anything for the route.
enum Outcome<T> {
    Found(T),
    NoSuchName,
    NoData,
    Temporary(String),
}

/// A DNS resolver for the mta.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Options common to both constructors: hickory's per-query timeout and
/// attempts; [`Resolver::with_timeout`] bounds the whole lookup.
fn options(mut opts: ResolverOpts) -> ResolverOpts {
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    // Large MX sets do not need a retry over TCP.
    opts.edns0 = true;
    opts
}

impl Resolver {
    /// The nameservers of `/etc/resolv.conf` (read now: call it before a
    /// chroot). Lookups need a tokio runtime; building does not.
    pub fn system() -> Result<Resolver, ResolverError> {
        let mut builder = TokioResolver::builder_tokio()
            .map_err(|e| ResolverError::SystemConfig(e.to_string()))?;
        let opts = options(builder.options_mut().clone());
        let inner = builder
            .with_options(opts)
            .build()
            .map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(Resolver {
            inner,
            timeout: DEFAULT_LOOKUP_TIMEOUT,
        })
    }

    /// One nameserver at `addr` (UDP and TCP), nothing else: no search
    /// list, no hosts file, and no caching (every answer expires at once), so
    /// that tests see only their own zone, and see it change.
    pub fn with_nameserver(addr: SocketAddr) -> Result<Resolver, ResolverError> {
        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
        for conn in &mut ns.connections {
            conn.port = addr.port();
        }
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
        let mut opts = options(ResolverOpts::default());
        opts.use_hosts_file = ResolveHosts::Never;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(Resolver {
            inner,
            timeout: DEFAULT_LOOKUP_TIMEOUT,
        })
    }

    /// `RSMTPD_RESOLVER`'s nameserver when set, else the system's.
    pub fn from_knobs(knobs: &Knobs) -> Result<Resolver, ResolverError> {
        match knobs.resolver {
            Some(addr) => Resolver::with_nameserver(addr),
            None => Resolver::system(),
        }
    }

    /// The bound on one lookup (one name and type, retries included); a
    /// lookup that takes longer is a temporary failure. It cuts hickory's
    /// own retries (5 s per query, 2 attempts) short when it is smaller.
    pub fn with_timeout(mut self, timeout: Duration) -> Resolver {
        self.timeout = timeout;
        self
    }

    /// The bound on one lookup.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Outcome<Vec<RData>> {
        let fqdn = match Name::from_utf8(name) {
            Ok(mut n) => {
                n.set_fqdn(true);
                n
            }
            // Not a name: nothing can exist under it.
            Err(_) => return Outcome::NoSuchName,
        };
        let result = tokio::time::timeout(self.timeout, self.inner.lookup(fqdn, rtype)).await;
        match result {
            Err(_) => Outcome::Temporary(format!("no answer within {:?}", self.timeout)),
            Ok(Ok(lookup)) => {
                // CNAMEs on the way are in the answer too: keep the type asked.
                let data: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect();
                if data.is_empty() {
                    Outcome::NoData
                } else {
                    Outcome::Found(data)
                }
            }
            Ok(Err(e)) => classify(&e),
        }
    }

    /// The MX records of `domain`.
    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, RouteError> {
        let domain = crate::route::normalize_name(domain);
        match self.lookup(&domain, RecordType::MX).await {
            Outcome::Found(data) => Ok(MxAnswer::Records(
                data.into_iter()
                    .filter_map(|d| match d {
                        RData::MX(mx) => Some(MxRecord {
                            preference: mx.preference,
                            exchange: crate::route::normalize_name(&mx.exchange.to_ascii()),
                        }),
                        _ => None,
                    })
                    .take(MAX_MX_RECORDS)
                    .collect(),
            )),
            Outcome::NoData => Ok(MxAnswer::NoData),
            Outcome::NoSuchName => Err(RouteError::NoSuchDomain { domain }),
            Outcome::Temporary(reason) => Err(RouteError::DnsTemporary {
                name: domain,
                reason,
            }),
        }
    }

    /// The addresses of `host`, ordered by [`order_addresses`]. An IP
    /// literal is its own address. A and AAAA are asked at once; one family
    /// failing temporarily is ignored when the other has addresses.
    /// The TXT records of `name`, each one string (its character-strings
    /// joined, as SPF reads them). Empty when there are none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, RouteError> {
        let name = crate::route::normalize_name(name);
        match self.lookup(&name, RecordType::TXT).await {
            Outcome::Found(data) => Ok(data
                .into_iter()
                .filter_map(|d| match d {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .take(MAX_ADDR_RECORDS)
                .collect()),
            Outcome::NoData | Outcome::NoSuchName => Ok(Vec::new()),
            Outcome::Temporary(reason) => Err(RouteError::DnsTemporary { name, reason }),
        }
    }

    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, RouteError> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let host = crate::route::normalize_name(host);
        let (v4, v6) = tokio::join!(
            self.lookup(&host, RecordType::A),
            self.lookup(&host, RecordType::AAAA)
        );
        let v4s: Vec<Ipv4Addr> = match &v4 {
            Outcome::Found(d) => d
                .iter()
                .filter_map(|d| match d {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .take(MAX_ADDR_RECORDS)
                .collect(),
            _ => Vec::new(),
        };
        let v6s: Vec<Ipv6Addr> = match &v6 {
            Outcome::Found(d) => d
                .iter()
                .filter_map(|d| match d {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
                .take(MAX_ADDR_RECORDS)
                .collect(),
            _ => Vec::new(),
        };
        let addrs = order_addresses(&v6s, &v4s);
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        for outcome in [&v4, &v6] {
            if let Outcome::Temporary(reason) = outcome {
                return Err(RouteError::DnsTemporary {
                    name: host,
                    reason: reason.clone(),
                });
            }
        }
        Err(RouteError::NoAddress { host })
    }

    /// The whole route: the plan's MX lookup if any, [`select_mx`], then
    /// every host's addresses (looked up concurrently; at most
    /// [`MAX_MX_HOSTS`] hosts). Hosts without an address are left out; when
    /// none is left, the error is temporary if any lookup was, else
    /// permanent.
    pub async fn route(
        &self,
        plan: &Plan,
        own_names: &[String],
        rng: &mut (dyn Random + Send),
    ) -> Result<Vec<Hop>, RouteError> {
        let mut targets = match plan {
            Plan::Direct(t) => vec![t.clone()],
            Plan::Mx(query) => self.mx_targets(query, own_names, rng).await?,
        };
        targets.truncate(MAX_MX_HOSTS);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let resolver = self.clone();
            let host = t.host.clone();
            tasks.spawn(async move { (i, resolver.addresses(&host).await) });
        }
        let mut results: Vec<Option<Result<Vec<IpAddr>, RouteError>>> = vec![None; targets.len()];
        // A lookup task that panicked or was cancelled leaves its slot
        // empty, which counts as a temporary failure below.
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined
                && let Some(slot) = results.get_mut(i)
            {
                *slot = Some(r);
            }
        }
        let mut hops = Vec::new();
        let mut temporary: Option<RouteError> = None;
        let mut permanent: Option<RouteError> = None;
        for (target, result) in targets.into_iter().zip(results) {
            match result {
                Some(Ok(addrs)) => hops.push(Hop { target, addrs }),
                Some(Err(e)) if e.is_permanent() => {
                    permanent.get_or_insert(e);
                }
                Some(Err(e)) => {
                    temporary.get_or_insert(e);
                }
                None => {
                    temporary.get_or_insert(RouteError::DnsTemporary {
                        name: target.host.clone(),
                        reason: "lookup task failed".to_string(),
                    });
                }
            }
        }
        if !hops.is_empty() {
            return Ok(hops);
        }
        if let (Plan::Direct(t), Some(RouteError::NoAddress { .. })) = (plan, &permanent) {
            return Err(RouteError::RelayHostUnknown {
                host: t.host.clone(),
            });
        }
        Err(temporary
            .or(permanent)
            .unwrap_or_else(|| RouteError::NoAddress {
                host: String::new(),
            }))
    }

    async fn mx_targets(
        &self,
        query: &MxQuery,
        own_names: &[String],
        rng: &mut (dyn Random + Send),
    ) -> Result<Vec<Target>, RouteError> {
        let records = match self.mx(&query.domain).await? {
            MxAnswer::Records(r) => r,
            MxAnswer::NoData => Vec::new(),
        };
        select_mx(query, &records, own_names, rng)
    }
}

/// hickory's error to what it means for delivery.
fn classify<T>(e: &NetError) -> Outcome<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Outcome::NoSuchName,
            ResponseCode::NoError => Outcome::NoData,
            code => Outcome::Temporary(format!("{code}")),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Outcome::NoSuchName,
        other => Outcome::Temporary(other.to_string()),
    }
}
