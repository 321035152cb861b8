//! The comparisons of the list services: domain globs, network addresses,
//! mail address forms. In every function `key` comes from the session and
//! `entry` from the table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::value::MailAddr;

/// Case-insensitive (ASCII) glob where `*` matches any run of characters,
/// including dots: `*.example.org` matches `a.example.org` and
/// `a.b.example.org`, not `example.org`. An empty key matches only an empty
/// entry (so `*` needs a non-empty domain, as in OpenSMTPD).
pub fn domain_match(key: &str, entry: &str) -> bool {
    let (k, p) = (key.as_bytes(), entry.as_bytes());
    if k.is_empty() {
        return p.is_empty();
    }
    // Iterative wildcard matching with single backtrack point: O(len(k) *
    // len(p)) worst case, no recursion.
    let (mut ki, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ki < k.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ki));
                pi += 1;
            }
            Some(c) if k.get(ki).is_some_and(|kc| kc.eq_ignore_ascii_case(c)) => {
                pi += 1;
                ki += 1;
            }
            _ => match star {
                Some((sp, sk)) => {
                    pi = sp + 1;
                    ki = sk + 1;
                    star = Some((sp, sk + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// An address with a prefix length, as written in netaddr tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetAddr {
    pub addr: IpAddr,
    pub bits: u8,
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> &'a str {
    match s.get(..prefix.len()) {
        Some(h) if h.eq_ignore_ascii_case(prefix) => s.get(prefix.len()..).unwrap_or(s),
        _ => s,
    }
}

fn parse_bits(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|&b| b <= max)
}

fn split_bits(s: &str, max: u8) -> Option<(&str, u8)> {
    match s.split_once('/') {
        Some((a, b)) => Some((a, parse_bits(b, max)?)),
        None => Some((s, max)),
    }
}

/// Parse `1.2.3.4`, `10.0.0.0/8`, `::1`, `[::1]`, `[2001:db8::/32]`,
/// `[2001:db8::]/32`, with an optional `IPv6:` tag. A plain address has a
/// full-length prefix.
pub fn parse_netaddr(s: &str) -> Option<NetAddr> {
    let s = strip_prefix_ci(s, "IPv6:");
    if let Some((a, bits)) = split_bits(s, 32)
        && let Ok(v4) = a.parse::<Ipv4Addr>()
    {
        return Some(NetAddr {
            addr: IpAddr::V4(v4),
            bits,
        });
    }
    let inner = match s.strip_prefix('[') {
        Some(rest) => {
            let rest = strip_prefix_ci(rest, "IPv6:");
            if let Some(r) = rest.strip_suffix(']') {
                r.to_string()
            } else {
                // `[addr]/bits`
                let (addr, bits) = rest.split_once("]/")?;
                format!("{addr}/{bits}")
            }
        }
        None => s.to_string(),
    };
    let (a, bits) = split_bits(&inner, 128)?;
    let v6 = a.parse::<Ipv6Addr>().ok()?;
    Some(NetAddr {
        addr: IpAddr::V6(v6),
        bits,
    })
}

/// A single address in any of the forms [`parse_netaddr`] accepts, without
/// a prefix length.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let n = parse_netaddr(s)?;
    let full = if n.addr.is_ipv4() { 32 } else { 128 };
    if n.bits != full || s.contains('/') {
        return None;
    }
    Some(n.addr)
}

/// A session address: IPv4-mapped IPv6 addresses are compared as IPv4, so
/// a dual-stack listener still matches `127.0.0.0/8`.
fn session_addr(key: &str) -> Option<IpAddr> {
    let n = parse_netaddr(key)?;
    Some(match n.addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    })
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rem = bits % 8;
    if a.get(..full) != b.get(..full) {
        return false;
    }
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

/// Netaddr comparison: equal text (case-insensitive, how `local` matches
/// `local`), or the session address lies in the entry's network.
pub fn netaddr_match(key: &str, entry: &str) -> bool {
    if key.eq_ignore_ascii_case(entry) {
        return true;
    }
    let (Some(addr), Some(net)) = (session_addr(key), parse_netaddr(entry)) else {
        return false;
    };
    match (addr, net.addr) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix_eq(&a.octets(), &n.octets(), net.bits),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix_eq(&a.octets(), &n.octets(), net.bits),
        _ => false,
    }
}

/// Source tables hold single addresses: compare as addresses when both
/// parse, else as case-insensitive text.
pub fn source_match(key: &str, entry: &str) -> bool {
    match (session_addr(key), parse_ip(entry)) {
        (Some(a), Some(b)) => a == b,
        _ => key.eq_ignore_ascii_case(entry),
    }
}

/// OpenSMTPD's mailaddr_match: entry `@` matches everything; an entry
/// domain is a glob on the key's domain; an entry user is compared
/// case-insensitively, ignoring the key's `+tag` unless the entry itself
/// has a tag.
pub fn mailaddr_match(key: &str, entry: &str, delim: char) -> bool {
    let k = MailAddr::parse(key);
    let e = MailAddr::parse(entry);
    if e.user.is_empty() && e.domain.is_empty() {
        return true;
    }
    if !e.domain.is_empty() && !domain_match(&k.domain, &e.domain) {
        return false;
    }
    if !e.user.is_empty() {
        let user = if e.user.contains(delim) {
            k.user.as_str()
        } else {
            k.user.split(delim).next().unwrap_or_default()
        };
        if !user.eq_ignore_ascii_case(&e.user) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(domain_match("example.org", "example.org"));
        assert!(domain_match("EXAMPLE.Org", "example.ORG"));
        assert!(!domain_match("example.org", "example.com"));
        assert!(domain_match("a.example.org", "*.example.org"));
        assert!(domain_match("a.b.example.org", "*.example.org"));
        assert!(!domain_match("example.org", "*.example.org"));
        assert!(!domain_match("badexample.org", "*.example.org"));
        assert!(domain_match("anything.at.all", "*"));
        assert!(!domain_match("", "*"));
        assert!(domain_match("", ""));
        assert!(domain_match("mx1.example.org", "mx*.example.org"));
        assert!(!domain_match("www.example.org", "mx*.example.org"));
        assert!(domain_match("[127.0.0.1]", "[127.0.0.1]"));
        assert!(!domain_match("[127.0.0.2]", "[127.0.0.1]"));
        assert!(domain_match("aaa", "**a**"));
        assert!(!domain_match("example.org", "example.or"));
        assert!(!domain_match("example.or", "example.org"));
    }

    #[test]
    fn netaddrs() {
        assert!(netaddr_match("192.168.1.1", "192.168.1.1"));
        assert!(!netaddr_match("192.168.1.2", "192.168.1.1"));
        assert!(netaddr_match("192.168.1.77", "192.168.1.0/24"));
        assert!(!netaddr_match("192.168.2.77", "192.168.1.0/24"));
        assert!(netaddr_match("10.1.2.3", "10.0.0.0/8"));
        assert!(netaddr_match("127.0.0.1", "127.0.0.0/8"));
        assert!(netaddr_match("203.0.113.9", "0.0.0.0/0"));
        assert!(!netaddr_match("::1", "0.0.0.0/0"));
        assert!(netaddr_match("2001:db8::1", "::/0"));
        assert!(!netaddr_match("1.2.3.4", "::/0"));
        assert!(netaddr_match("::1", "[::1]"));
        assert!(netaddr_match("[::1]", "[::1]"));
        assert!(netaddr_match("[IPv6:::1]", "::1"));
        assert!(!netaddr_match("::2", "[::1]"));
        assert!(netaddr_match("2001:db8:ffff::1", "[2001:db8::/32]"));
        assert!(netaddr_match("2001:db8:ffff::1", "[2001:db8::]/32"));
        assert!(netaddr_match("2001:db8:ffff::1", "2001:DB8::/32"));
        assert!(!netaddr_match("2001:db9::1", "2001:db8::/32"));
        // /33 cuts inside a byte
        assert!(netaddr_match("2001:db8:7fff::1", "2001:db8::/33"));
        assert!(!netaddr_match("2001:db8:8000::1", "2001:db8::/33"));
        assert!(netaddr_match("192.168.1.130", "192.168.1.128/25"));
        assert!(!netaddr_match("192.168.1.127", "192.168.1.128/25"));
        // mapped addresses compare as IPv4
        assert!(netaddr_match("::ffff:127.0.0.1", "127.0.0.0/8"));
        assert!(netaddr_match("local", "local"));
        assert!(netaddr_match("LOCAL", "local"));
        assert!(!netaddr_match("127.0.0.1", "local"));
        assert!(!netaddr_match("local", "127.0.0.0/8"));
        // malformed entries never match
        assert!(!netaddr_match("1.2.3.4", "1.2.3.4/33"));
        assert!(!netaddr_match("1.2.3.4", "1.2.3/24"));
        assert!(!netaddr_match("::1", "[::1"));
        assert!(!netaddr_match("::1", "::1/129"));
        assert!(!netaddr_match("garbage", "0.0.0.0/0"));
    }

    #[test]
    fn ips_and_sources() {
        assert_eq!(parse_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip("127.0.0.1/32"), None);
        assert_eq!(parse_ip("example.org"), None);
        assert!(source_match("::1", "[::1]"));
        assert!(source_match("192.168.1.2", "192.168.1.2"));
        assert!(!source_match("192.168.1.3", "192.168.1.2"));
    }

    #[test]
    fn mailaddrs() {
        let m = |k, e| mailaddr_match(k, e, '+');
        assert!(m("user@example.org", "user"));
        assert!(m("USER@example.org", "user"));
        assert!(m("user+tag@example.org", "user"));
        assert!(!m("user+tag@example.org", "user+other"));
        assert!(m("user+tag@example.org", "user+tag"));
        assert!(!m("user@example.org", "user+tag"));
        assert!(!m("other@example.org", "user"));
        assert!(m("anyone@domain", "@domain"));
        assert!(m("anyone@DOMAIN", "@domain"));
        assert!(!m("anyone@other", "@domain"));
        assert!(m("user@domain", "user@domain"));
        assert!(!m("user@domain2", "user@domain"));
        assert!(m("user@a.domain", "user@*.domain"));
        assert!(!m("user@domain", "user@*.domain"));
        assert!(!m("other@a.domain", "user@*.domain"));
        assert!(m("x@y", "@"));
        assert!(m("", "@"));
        assert!(!m("user", "@domain"));
        assert!(mailaddr_match("user-tag@d", "user@d", '-'));
    }
}
