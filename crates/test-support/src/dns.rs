//! A tiny authoritative DNS server for tests: UDP and TCP on a loopback
//! address with an ephemeral port, answering from an in-memory [`Zone`].
//!
//! What it does (RFC 1035 wire format, written here, std only):
//! - A, AAAA, MX (including the RFC 7505 "Null MX": preference 0, exchange
//!   "."), CNAME (chased inside the zone, at most 8 links) and TXT records;
//! - NXDOMAIN for names not in the zone (a name is in the zone when it owns
//!   a record, was declared with [`Zone::empty`], or is an ancestor of such
//!   a name: an empty non-terminal), NODATA (NOERROR, no answer) when the
//!   name exists without a record of the asked type;
//! - failures on demand per name (optionally per type): SERVFAIL, REFUSED,
//!   or no answer at all (the client's timeout case);
//! - names compared case-insensitively; the question is echoed exactly as
//!   received (0x20 randomisation survives) and answers owned by the query
//!   name point at it (compression pointer 0xC00C);
//! - UDP answers larger than 512 bytes are truncated (TC set, no records) so
//!   the client retries over TCP, which answers in full;
//! - every query is counted per (name, type): [`DnsServer::query_count`].
//!
//! Garbage is never answered with a panic: a message shorter than a header
//! or with QR set is ignored, other malformed queries get FORMERR, opcodes
//! other than QUERY get NOTIMP, classes other than IN get REFUSED.
//!
//! Not supported: EDNS (an OPT record in the query is ignored and the answer
//! carries none), DNSSEC, SOA records in negative answers, wildcards.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Record types (RFC 1035 3.2.2, RFC 3596).
pub const A: u16 = 1;
pub const NS: u16 = 2;
pub const CNAME: u16 = 5;
pub const SOA: u16 = 6;
pub const PTR: u16 = 12;
pub const MX: u16 = 15;
pub const TXT: u16 = 16;
pub const AAAA: u16 = 28;
pub const OPT: u16 = 41;
pub const ANY: u16 = 255;

/// Class IN.
pub const IN: u16 = 1;

/// Response codes (RFC 1035 4.1.1).
pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;

/// The largest DNS message over UDP without EDNS.
pub const UDP_LIMIT: usize = 512;

/// How many CNAME links are followed inside the zone.
const MAX_CHAIN: usize = 8;
/// How many queries one TCP connection may send.
const MAX_TCP_QUERIES: usize = 64;
/// How long a TCP connection may stay idle.
const TCP_IDLE: Duration = Duration::from_secs(2);
/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// One resource record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx { preference: u16, exchange: String },
    Cname(String),
    Txt(String),
}

impl Record {
    pub fn rtype(&self) -> u16 {
        match self {
            Record::A(_) => A,
            Record::Aaaa(_) => AAAA,
            Record::Mx { .. } => MX,
            Record::Cname(_) => CNAME,
            Record::Txt(_) => TXT,
        }
    }
}

/// What to do instead of answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// RCODE 2.
    ServFail,
    /// RCODE 5.
    Refused,
    /// No answer at all: the client times out.
    Timeout,
}

/// The in-memory zone. Names are case-insensitive; a trailing dot is
/// optional ("." and "" are the root). Builder methods panic on names that
/// cannot be encoded (a label longer than 63 bytes, an empty label, a name
/// longer than 255 bytes): that is a bug in the test, not input.
#[derive(Clone, Debug)]
pub struct Zone {
    records: Vec<(String, Record)>,
    empty: Vec<String>,
    failures: Vec<(String, Option<u16>, Failure)>,
    ttl: u32,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::new()
    }
}

impl Zone {
    pub fn new() -> Zone {
        Zone {
            records: Vec::new(),
            empty: Vec::new(),
            failures: Vec::new(),
            ttl: 300,
        }
    }

    /// The TTL of every answer (default 300).
    pub fn ttl(mut self, ttl: u32) -> Zone {
        self.ttl = ttl;
        self
    }

    /// Any record.
    pub fn record(mut self, name: &str, record: Record) -> Zone {
        let name = checked(name);
        match &record {
            Record::Mx { exchange: n, .. } | Record::Cname(n) => {
                checked(n);
            }
            _ => {}
        }
        self.records.push((name, record));
        self
    }

    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Zone {
        self.record(
            name,
            Record::Mx {
                preference,
                exchange: exchange.to_string(),
            },
        )
    }

    /// RFC 7505: `name MX 0 .`
    pub fn null_mx(self, name: &str) -> Zone {
        self.mx(name, 0, ".")
    }

    pub fn a(self, name: &str, addr: impl Into<Ipv4Addr>) -> Zone {
        self.record(name, Record::A(addr.into()))
    }

    pub fn aaaa(self, name: &str, addr: impl Into<Ipv6Addr>) -> Zone {
        self.record(name, Record::Aaaa(addr.into()))
    }

    /// An A or AAAA record, whichever `addr` is.
    pub fn addr(self, name: &str, addr: IpAddr) -> Zone {
        match addr {
            IpAddr::V4(v4) => self.a(name, v4),
            IpAddr::V6(v6) => self.aaaa(name, v6),
        }
    }

    pub fn cname(self, name: &str, target: &str) -> Zone {
        self.record(name, Record::Cname(target.to_string()))
    }

    pub fn txt(self, name: &str, text: &str) -> Zone {
        self.record(name, Record::Txt(text.to_string()))
    }

    /// The name exists but owns no record: NODATA for every type.
    pub fn empty(mut self, name: &str) -> Zone {
        self.empty.push(checked(name));
        self
    }

    /// Every query for `name` fails this way.
    pub fn fail(mut self, name: &str, failure: Failure) -> Zone {
        self.failures.push((checked(name), None, failure));
        self
    }

    /// Queries for `name` of type `qtype` fail this way.
    pub fn fail_type(mut self, name: &str, qtype: u16, failure: Failure) -> Zone {
        self.failures.push((checked(name), Some(qtype), failure));
        self
    }

    pub fn servfail(self, name: &str) -> Zone {
        self.fail(name, Failure::ServFail)
    }

    /// No answer at all for `name` (the client's timeout case).
    pub fn timeout(self, name: &str) -> Zone {
        self.fail(name, Failure::Timeout)
    }

    /// Whether `name` is in the zone (owns something, or is an ancestor of
    /// a name that does).
    pub fn exists(&self, name: &str) -> bool {
        let name = normalize(name);
        let owners = self.records.iter().map(|(n, _)| n).chain(self.empty.iter());
        for owner in owners {
            if *owner == name || name.is_empty() || owner.ends_with(&format!(".{name}")) {
                return true;
            }
        }
        false
    }

    /// What the server answers for (name, qtype): `None` for no answer at
    /// all, else the RCODE and the answer records (owner, record).
    pub fn resolve(&self, name: &str, qtype: u16) -> Option<(u8, Vec<(String, Record)>)> {
        let name = normalize(name);
        for (n, t, failure) in &self.failures {
            if *n == name && t.is_none_or(|t| t == qtype) {
                return match failure {
                    Failure::ServFail => Some((SERVFAIL, Vec::new())),
                    Failure::Refused => Some((REFUSED, Vec::new())),
                    Failure::Timeout => None,
                };
            }
        }
        let mut answers = Vec::new();
        let mut current = name;
        for _ in 0..=MAX_CHAIN {
            let owned: Vec<&Record> = self
                .records
                .iter()
                .filter(|(n, _)| *n == current)
                .map(|(_, r)| r)
                .collect();
            let wanted: Vec<&Record> = owned
                .iter()
                .copied()
                .filter(|r| qtype == ANY || r.rtype() == qtype)
                .collect();
            if !wanted.is_empty() {
                answers.extend(wanted.into_iter().map(|r| (current.clone(), r.clone())));
                return Some((NOERROR, answers));
            }
            let Some(Record::Cname(target)) = owned.iter().find(|r| r.rtype() == CNAME) else {
                let rcode = if self.exists(&current) {
                    NOERROR
                } else {
                    NXDOMAIN
                };
                return Some((rcode, answers));
            };
            answers.push((current.clone(), Record::Cname(target.clone())));
            current = normalize(target);
        }
        // A CNAME loop or a chain too long: what BIND answers.
        Some((SERVFAIL, Vec::new()))
    }
}

/// Lower case, no trailing dot; the root is "".
pub fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

fn checked(name: &str) -> String {
    let name = normalize(name);
    assert!(
        encode_name(&name).is_some(),
        "dns test zone: {name:?} is not an encodable domain name"
    );
    name
}

/// The wire form of a (normalized) name, uncompressed; `None` when it does
/// not fit the RFC 1035 limits.
pub fn encode_name(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// A parsed question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    pub rd: bool,
    /// Lower case, no trailing dot, bytes outside [a-z0-9-_] as `\DDD`.
    pub name: String,
    /// The name exactly as it was on the wire.
    pub raw_name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
}

/// Why a message is not a query we answer: `Ignore` (too short, or a
/// response) or an RCODE to answer with (FORMERR, NOTIMP, REFUSED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Ignore,
    Rcode { id: u16, rd: bool, rcode: u8 },
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    let b = msg.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Parses a query strictly: one question, no answer or authority records,
/// no compression in the question name.
pub fn parse_query(msg: &[u8]) -> Result<Question, Refusal> {
    let (Some(id), Some(flags)) = (be16(msg, 0), be16(msg, 2)) else {
        return Err(Refusal::Ignore);
    };
    if msg.len() < 12 || flags & 0x8000 != 0 {
        return Err(Refusal::Ignore);
    }
    let rd = flags & 0x0100 != 0;
    let refuse = |rcode| Refusal::Rcode { id, rd, rcode };
    if (flags >> 11) & 0xf != 0 {
        return Err(refuse(NOTIMP));
    }
    let counts = [be16(msg, 4), be16(msg, 6), be16(msg, 8)];
    if counts != [Some(1), Some(0), Some(0)] {
        return Err(refuse(FORMERR));
    }
    let mut at = 12;
    let mut name = String::new();
    loop {
        let Some(&len) = msg.get(at) else {
            return Err(refuse(FORMERR));
        };
        at += 1;
        if len == 0 {
            break;
        }
        // 0xC0 is a pointer, 0x40 and 0x80 are reserved: none belongs in a
        // question.
        if len > 63 || at - 12 + len as usize > 254 {
            return Err(refuse(FORMERR));
        }
        let Some(label) = msg.get(at..at + len as usize) else {
            return Err(refuse(FORMERR));
        };
        at += len as usize;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            let b = b.to_ascii_lowercase();
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(b as char);
            } else {
                name.push_str(&format!("\\{b:03}"));
            }
        }
    }
    let raw_name = msg[12..at].to_vec();
    let (Some(qtype), Some(qclass)) = (be16(msg, at), be16(msg, at + 2)) else {
        return Err(refuse(FORMERR));
    };
    if qclass != IN {
        return Err(refuse(REFUSED));
    }
    Ok(Question {
        id,
        rd,
        name,
        raw_name,
        qtype,
        qclass,
    })
}

fn header(id: u16, rd: bool, tc: bool, rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    let mut flags: u16 = 0x8000 | 0x0400 | u16::from(rcode & 0xf);
    if rd {
        flags |= 0x0100;
    }
    if tc {
        flags |= 0x0200;
    }
    let mut out = Vec::with_capacity(512);
    for v in [id, flags, qd, an, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// The answer to a question, or `None` when the zone says not to answer.
/// Over UDP (`limit` = [`UDP_LIMIT`]) a larger answer is truncated.
pub fn answer(zone: &Zone, q: &Question, limit: usize) -> Option<Vec<u8>> {
    let (rcode, records) = zone.resolve(&q.name, q.qtype)?;
    let mut body = Vec::new();
    let mut count: u16 = 0;
    for (owner, record) in records.iter().take(usize::from(u16::MAX)) {
        let Some(rr) = encode_rr(owner, record, &q.name, zone.ttl) else {
            continue;
        };
        body.extend_from_slice(&rr);
        count += 1;
    }
    let mut out = header(q.id, q.rd, false, rcode, 1, count);
    out.extend_from_slice(&q.raw_name);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    if out.len() + body.len() > limit {
        let mut out = header(q.id, q.rd, true, rcode, 1, 0);
        out.extend_from_slice(&q.raw_name);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
        return Some(out);
    }
    out.extend_from_slice(&body);
    Some(out)
}

fn encode_rr(owner: &str, record: &Record, qname: &str, ttl: u32) -> Option<Vec<u8>> {
    let mut out = if owner == qname {
        vec![0xC0, 0x0C]
    } else {
        encode_name(owner)?
    };
    let rdata = match record {
        Record::A(a) => a.octets().to_vec(),
        Record::Aaaa(a) => a.octets().to_vec(),
        Record::Mx {
            preference,
            exchange,
        } => {
            let mut d = preference.to_be_bytes().to_vec();
            d.extend_from_slice(&encode_name(&normalize(exchange))?);
            d
        }
        Record::Cname(target) => encode_name(&normalize(target))?,
        Record::Txt(text) => {
            let mut d = Vec::new();
            for chunk in text.as_bytes().chunks(255) {
                d.push(chunk.len() as u8);
                d.extend_from_slice(chunk);
            }
            if d.is_empty() {
                d.push(0);
            }
            d
        }
    };
    let rdlen = u16::try_from(rdata.len()).ok()?;
    out.extend_from_slice(&record.rtype().to_be_bytes());
    out.extend_from_slice(&IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&rdlen.to_be_bytes());
    out.extend_from_slice(&rdata);
    Some(out)
}

/// What the server does with one message: the reply bytes, if any.
fn handle(shared: &Shared, msg: &[u8], limit: usize) -> Option<Vec<u8>> {
    match parse_query(msg) {
        Ok(q) => {
            lock(&shared.log).push((q.name.clone(), q.qtype));
            let zone = lock(&shared.zone).clone();
            answer(&zone, &q, limit)
        }
        Err(Refusal::Ignore) => None,
        Err(Refusal::Rcode { id, rd, rcode }) => {
            lock(&shared.log).push((String::from("<malformed>"), 0));
            Some(header(id, rd, false, rcode, 0, 0))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    zone: Mutex<Zone>,
    log: Mutex<Vec<(String, u16)>>,
    stop: AtomicBool,
}

/// The running server; stops (within a few tens of milliseconds) on drop.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// UDP and TCP on 127.0.0.1, same ephemeral port.
    pub fn start(zone: Zone) -> DnsServer {
        DnsServer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), zone)
    }

    /// UDP and TCP on `ip`, same ephemeral port. Panics when it cannot bind.
    pub fn start_on(ip: IpAddr, zone: Zone) -> DnsServer {
        let mut last = None;
        for _ in 0..20 {
            let udp = match UdpSocket::bind(SocketAddr::new(ip, 0)) {
                Ok(s) => s,
                Err(e) => panic!("dns test server: binding UDP on {ip}: {e}"),
            };
            let addr = match udp.local_addr() {
                Ok(a) => a,
                Err(e) => panic!("dns test server: local address: {e}"),
            };
            match TcpListener::bind(addr) {
                Ok(tcp) => return DnsServer::run(addr, udp, tcp, zone),
                Err(e) => last = Some(e),
            }
        }
        panic!("dns test server: no port free for both UDP and TCP on {ip}: {last:?}");
    }

    fn run(addr: SocketAddr, udp: UdpSocket, tcp: TcpListener, zone: Zone) -> DnsServer {
        let shared = Arc::new(Shared {
            zone: Mutex::new(zone),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let s = Arc::clone(&shared);
        threads.push(std::thread::spawn(move || serve_udp(&s, &udp)));
        let s = Arc::clone(&shared);
        threads.push(std::thread::spawn(move || serve_tcp(&s, &tcp)));
        DnsServer {
            addr,
            shared,
            threads,
        }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the zone (for example to make a failing name work).
    pub fn set_zone(&self, zone: Zone) {
        *lock(&self.shared.zone) = zone;
    }

    /// A copy of the zone being served.
    pub fn zone(&self) -> Zone {
        lock(&self.shared.zone).clone()
    }

    /// How many well-formed queries asked for (name, qtype); the name is
    /// compared case-insensitively.
    pub fn query_count(&self, name: &str, qtype: u16) -> usize {
        let name = normalize(name);
        lock(&self.shared.log)
            .iter()
            .filter(|(n, t)| *n == name && *t == qtype)
            .count()
    }

    /// Every query in arrival order: (normalized name, qtype); a malformed
    /// query that was answered with an error is logged as ("<malformed>", 0).
    pub fn queries(&self) -> Vec<(String, u16)> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the queries seen so far.
    pub fn reset_queries(&self) {
        lock(&self.shared.log).clear();
    }

    /// Stops the server threads (also done on drop).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_udp(shared: &Shared, sock: &UdpSocket) {
    if sock.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = handle(shared, &buf[..n], UDP_LIMIT) {
            let _ = sock.send_to(&reply, peer);
        }
    }
}

fn serve_tcp(shared: &Shared, listener: &TcpListener) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => tcp_connection(shared, stream),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// One TCP connection, served inline: length-prefixed queries (RFC 1035
/// 4.2.2), at most [`MAX_TCP_QUERIES`], closed after [`TCP_IDLE`].
fn tcp_connection(shared: &Shared, mut stream: TcpStream) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_write_timeout(Some(TCP_IDLE)).is_err()
    {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut served = 0;
    let mut idle_since = Instant::now();
    let mut chunk = [0u8; 4096];
    while served < MAX_TCP_QUERIES
        && !shared.stop.load(Ordering::SeqCst)
        && idle_since.elapsed() < TCP_IDLE
    {
        if let Some(len) = be16(&buf, 0).map(usize::from)
            && buf.len() >= 2 + len
        {
            let msg: Vec<u8> = buf.drain(..2 + len).skip(2).collect();
            served += 1;
            idle_since = Instant::now();
            if let Some(reply) = handle(shared, &msg, usize::from(u16::MAX)) {
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
            continue;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                idle_since = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}
