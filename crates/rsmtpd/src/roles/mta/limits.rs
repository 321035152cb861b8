//! How many connections the mta opens at once, so that a queue of
//! thousands of messages for one domain does not hit its servers with
//! thousands of connections (OpenSMTPD's `mta limit` keys):
//!
//! - per host address: `max-conn-per-host` and `max-conn-per-route`; the
//!   mta connects from one source, so a route is a host and the smaller
//!   of the two applies (default 5);
//! - per recipient domain: `max-conn-per-domain` (default 100).
//!
//! `mta limit for domain D` overrides both for D. A transaction waits for
//! its permits; the role's overall limit bounds how many wait.
//!
//! An address that could not be connected to is skipped by every
//! transaction for [`PENALTY`], so that a dead host (which costs a connect
//! timeout each time) does not hold connections and slots for everyone.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsmtpd_config::model::{MtaLimits, MtaOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle entries are dropped once a map holds more than this many keys.
const PRUNE_ABOVE: usize = 1024;

/// How long an address that refused or ignored a connection is skipped.
pub const PENALTY: Duration = Duration::from_secs(60);

pub struct Limits {
    options: MtaOptions,
    hosts: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Addresses that could not be reached: until when, and why.
    penalties: Mutex<HashMap<SocketAddr, (Instant, String)>>,
}

/// Held while a connection is open or a transaction under way.
pub type Permit = OwnedSemaphorePermit;

impl Limits {
    pub fn new(options: MtaOptions) -> Limits {
        Limits {
            options,
            hosts: Mutex::new(HashMap::new()),
            domains: Mutex::new(HashMap::new()),
            penalties: Mutex::new(HashMap::new()),
        }
    }

    /// `at` could not be reached: skip it for [`PENALTY`].
    pub fn penalise(&self, at: SocketAddr, why: &str) {
        let mut map = self.penalties.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, (until, _)| *until > now);
        }
        map.insert(at, (now + PENALTY, why.to_owned()));
    }

    /// Why `at` is skipped now, if it is.
    pub fn penalty(&self, at: SocketAddr) -> Option<String> {
        let mut map = self.penalties.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&at) {
            Some((until, why)) if *until > Instant::now() => Some(format!(
                "not tried: unreachable less than {} s ago ({why})",
                PENALTY.as_secs()
            )),
            Some(_) => {
                map.remove(&at);
                None
            }
            None => None,
        }
    }

    fn of(&self, domain: &str) -> &MtaLimits {
        self.options
            .domain_limits
            .get(&domain.to_ascii_lowercase())
            .unwrap_or(&self.options.limits)
    }

    /// Addresses with connections open or waiting for a permit, and how
    /// many (`smtpctl show hosts`).
    pub fn hosts(&self) -> Vec<(IpAddr, usize)> {
        users(&self.hosts)
    }

    /// Domains with transactions under way or waiting (`show relays`).
    pub fn relays(&self) -> Vec<(String, usize)> {
        users(&self.domains)
    }

    /// Addresses skipped now, with the seconds left and why (`show routes`).
    pub fn penalties(&self) -> Vec<(SocketAddr, u64, String)> {
        let map = self.penalties.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut out: Vec<_> = map
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(at, (until, why))| (*at, (*until - now).as_secs(), why.clone()))
            .collect();
        out.sort();
        out
    }

    /// `smtpctl resume route`: try `at` again at once. False if it was
    /// not penalised.
    pub fn forgive(&self, at: SocketAddr) -> bool {
        self.penalties
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&at)
            .is_some()
    }

    /// A transaction for `domain` may start. `None` only when closing.
    pub async fn domain(&self, domain: &str) -> Option<Permit> {
        let size = self.of(domain).max_conn_per_domain;
        slot(&self.domains, domain.to_ascii_lowercase(), size)
            .acquire_owned()
            .await
            .ok()
    }

    /// A connection to `ip` (for a recipient of `domain`) may open.
    pub async fn host(&self, domain: &str, ip: IpAddr) -> Option<Permit> {
        let l = self.of(domain);
        let size = l.max_conn_per_host.min(l.max_conn_per_route);
        slot(&self.hosts, ip, size).acquire_owned().await.ok()
    }
}

/// Keys in use: permits and waiters hold clones of the semaphore.
fn users<K: Clone + Ord>(map: &Mutex<HashMap<K, Arc<Semaphore>>>) -> Vec<(K, usize)> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<(K, usize)> = map
        .iter()
        .map(|(k, s)| (k.clone(), Arc::strong_count(s) - 1))
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort();
    out
}

/// The semaphore for `key`, made with `size` permits (at least one) the
/// first time. Entries nobody holds or waits for are forgotten when the
/// map grows large.
fn slot<K: Eq + Hash>(
    map: &Mutex<HashMap<K, Arc<Semaphore>>>,
    key: K,
    size: u64,
) -> Arc<Semaphore> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > PRUNE_ABOVE {
        // Permits and waiters hold clones: a count of one means idle.
        map.retain(|_, s| Arc::strong_count(s) > 1);
    }
    let permits = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS);
    map.entry(key)
        .or_insert_with(|| Arc::new(Semaphore::new(permits)))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_host: u64, per_route: u64, per_domain: u64) -> Limits {
        let mut options = MtaOptions::default();
        options.limits.max_conn_per_host = per_host;
        options.limits.max_conn_per_route = per_route;
        options.limits.max_conn_per_domain = per_domain;
        Limits::new(options)
    }

    #[tokio::test]
    async fn the_smaller_of_host_and_route_applies_per_address() {
        let l = limits(3, 2, 100);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let a = l.host("example.org", ip).await;
        let b = l.host("example.org", ip).await;
        assert!(a.is_some() && b.is_some());
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            l.host("example.org", ip),
        )
        .await;
        assert!(third.is_err(), "a third connection to one host waits");
        // Another host is not affected.
        assert!(l.host("example.org", [192, 0, 2, 2].into()).await.is_some());
        drop(a);
        assert!(l.host("example.org", ip).await.is_some());
    }

    #[tokio::test]
    async fn a_domain_override_applies_to_its_domain_only() {
        let mut options = MtaOptions::default();
        let one = MtaLimits {
            max_conn_per_domain: 1,
            ..MtaLimits::default()
        };
        options.domain_limits.insert("slow.example".into(), one);
        let l = Limits::new(options);
        let _held = l.domain("SLOW.example").await;
        let second = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            l.domain("slow.example"),
        )
        .await;
        assert!(second.is_err());
        assert!(l.domain("fast.example").await.is_some());
    }

    #[test]
    fn an_unreachable_address_is_skipped_for_a_while() {
        let l = limits(5, 5, 100);
        let at: SocketAddr = "192.0.2.1:25".parse().unwrap();
        assert_eq!(l.penalty(at), None);
        l.penalise(at, "connect: Connection refused");
        let why = l.penalty(at).unwrap();
        assert!(why.contains("Connection refused"), "{why}");
        assert_eq!(l.penalty("192.0.2.1:26".parse().unwrap()), None);
        // Expired penalties are forgotten.
        l.penalties.lock().unwrap().get_mut(&at).unwrap().0 = Instant::now();
        assert_eq!(l.penalty(at), None);
        assert!(l.penalties.lock().unwrap().is_empty());
    }

    #[test]
    fn idle_entries_are_forgotten_when_the_map_is_large() {
        let map = Mutex::new(HashMap::new());
        for i in 0..=PRUNE_ABOVE as u32 {
            slot(&map, i, 1);
        }
        let held = slot(&map, u32::MAX, 1);
        let len = map.lock().unwrap().len();
        assert!(len <= 2, "{len}");
        drop(held);
    }
}
