//! Connections kept open between transactions (OpenSMTPD's
//! `session-mail-max` and `session-keepalive`): after a transaction, an
//! idle session waits here for the next message to the same address, from
//! the same source, with the same greeting, for up to the keepalive. It
//! saves the connection, greeting and EHLO of every message after the
//! first.
//!
//! Idle connections hold no connection permit (see `limits`); at most
//! `max_idle` wait per address, and a reaper closes those past the
//! keepalive.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rsmtpd_smtp_proto::client::ClientSession;

use crate::conn::Conn;

/// What must match for a connection to be reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub at: SocketAddr,
    pub source: Option<IpAddr>,
    pub helo: String,
    pub lmtp: bool,
    /// A connection kept from a plaintext fallback never serves a route
    /// that wants TLS, and the other way round.
    pub tls: super::TlsPlan,
}

/// A session between transactions.
pub struct Idle {
    pub session: ClientSession,
    pub stream: Conn,
    /// Transactions done on it so far.
    pub mails: u64,
    since: Instant,
}

impl Idle {
    pub fn new(session: ClientSession, stream: Conn, mails: u64) -> Idle {
        Idle {
            session,
            stream,
            mails,
            since: Instant::now(),
        }
    }
}

pub struct Pool {
    keepalive: Duration,
    max_idle: usize,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl Pool {
    pub fn new(keepalive: Duration, max_idle: usize) -> Pool {
        Pool {
            keepalive,
            max_idle,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently parked live connection for `key`.
    pub fn take(&self, key: &Key) -> Option<Idle> {
        let mut map = self.lock();
        let list = map.get_mut(key)?;
        let idle = list.pop();
        if list.is_empty() {
            map.remove(key);
        }
        idle.filter(|i| i.since.elapsed() < self.keepalive)
    }

    /// Keep `idle` for the next transaction to `key`; hands it back when
    /// there is no room (the caller ends it).
    pub fn park(&self, key: Key, idle: Idle) -> Option<Idle> {
        if self.keepalive.is_zero() {
            return Some(idle);
        }
        let mut map = self.lock();
        let list = map.entry(key).or_default();
        if list.len() >= self.max_idle {
            return Some(idle);
        }
        list.push(idle);
        None
    }

    /// Remove and return every connection idle for longer than the
    /// keepalive.
    pub fn expired(&self) -> Vec<Idle> {
        let mut map = self.lock();
        let mut out = Vec::new();
        for list in map.values_mut() {
            let (old, live): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                .into_iter()
                .partition(|i| i.since.elapsed() >= self.keepalive);
            *list = live;
            out.extend(old);
        }
        map.retain(|_, list| !list.is_empty());
        out
    }
}
