//! `smtpctl spf walk`: the addresses a domain's SPF record allows, found
//! by following `include:` and `redirect=` and resolving `a` and `mx`, to
//! build a table of a provider's outbound servers. The record parser is
//! pure (and fuzzed: records come from DNS); the walk is bounded as RFC
//! 7208 4.6.4 bounds evaluation (10 lookups that reach DNS).

use std::collections::BTreeSet;

use crate::resolve::{MxAnswer, Resolver};

/// RFC 7208 4.6.4: at most 10 terms that cause DNS lookups.
pub const MAX_LOOKUPS: usize = 10;
/// Records longer than this are not read (a TXT record of 450 octets is
/// already more than SPF expects).
pub const MAX_RECORD: usize = 4096;

/// One term of a record that the walk follows; the rest is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `ip4:` / `ip6:` value, as written (an address or a network).
    Net(String),
    Include(String),
    Redirect(String),
    /// `a` or `a:domain` (a CIDR length after `/` is dropped).
    A(Option<String>),
    Mx(Option<String>),
}

/// The terms of `record` if it is an SPF record (`v=spf1` first). Terms
/// with macros (`%{...}`) cannot be walked statically and are skipped; a
/// term's qualifier (`+ - ~ ?`) is dropped except `-`/`~`/`?` mechanisms,
/// which allow nothing and are skipped.
pub fn parse_record(record: &str) -> Option<Vec<Term>> {
    if record.len() > MAX_RECORD {
        return None;
    }
    let mut words = record.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("v=spf1") {
        return None;
    }
    let mut terms = Vec::new();
    for word in words {
        if word.contains('%') {
            continue;
        }
        let (qualifier, body) = match word.as_bytes().first() {
            Some(b'+') => ('+', word.get(1..).unwrap_or_default()),
            Some(b'-' | b'~' | b'?') => ('-', word.get(1..).unwrap_or_default()),
            _ => ('+', word),
        };
        let lower = body.to_ascii_lowercase();
        let arg = |prefix: &str| {
            lower
                .strip_prefix(prefix)
                .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
                .filter(|s| !s.is_empty())
        };
        if let Some(domain) = lower.strip_prefix("redirect=") {
            if !domain.is_empty() {
                terms.push(Term::Redirect(domain.to_owned()));
            }
            continue;
        }
        if qualifier == '-' {
            continue;
        }
        let term = if let Some(net) = lower
            .strip_prefix("ip4:")
            .or_else(|| lower.strip_prefix("ip6:"))
        {
            (!net.is_empty()).then(|| Term::Net(net.to_owned()))
        } else if let Some(d) = arg("include:") {
            Some(Term::Include(d))
        } else if lower == "a" || lower.starts_with("a/") {
            Some(Term::A(None))
        } else if let Some(d) = arg("a:") {
            Some(Term::A(Some(d)))
        } else if lower == "mx" || lower.starts_with("mx/") {
            Some(Term::Mx(None))
        } else {
            arg("mx:").map(|d| Term::Mx(Some(d)))
        };
        terms.extend(term);
    }
    Some(terms)
}

/// Every address or network `domain`'s SPF record allows, sorted. DNS
/// failures and the lookup limit end that branch of the walk, not the
/// others; what was skipped goes to `notes`.
pub async fn walk(resolver: &Resolver, domain: &str, notes: &mut Vec<String>) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![domain.to_ascii_lowercase()];
    let mut lookups = 0usize;
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if lookups >= MAX_LOOKUPS {
            notes.push(format!("{name}: not walked, past {MAX_LOOKUPS} lookups"));
            continue;
        }
        lookups += 1;
        let records = match resolver.txt(&name).await {
            Ok(r) => r,
            Err(e) => {
                notes.push(format!("{name}: {e}"));
                continue;
            }
        };
        let Some(terms) = records.iter().find_map(|r| parse_record(r)) else {
            notes.push(format!("{name}: no SPF record"));
            continue;
        };
        for term in terms {
            match term {
                Term::Net(net) => {
                    out.insert(net);
                }
                Term::Include(d) | Term::Redirect(d) => todo.push(d),
                Term::A(d) => {
                    let host = d.unwrap_or_else(|| name.clone());
                    match resolver.addresses(&host).await {
                        Ok(ips) => out.extend(ips.iter().map(ToString::to_string)),
                        Err(e) => notes.push(format!("{host}: {e}")),
                    }
                }
                Term::Mx(d) => {
                    let host = d.unwrap_or_else(|| name.clone());
                    match resolver.mx(&host).await {
                        Ok(MxAnswer::Records(mxs)) => {
                            for mx in mxs {
                                if let Ok(ips) = resolver.addresses(&mx.exchange).await {
                                    out.extend(ips.iter().map(ToString::to_string));
                                }
                            }
                        }
                        Ok(MxAnswer::NoData) => {}
                        Err(e) => notes.push(format!("{host}: {e}")),
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_terms() {
        assert_eq!(parse_record("v=spf2.0 ip4:1.2.3.4"), None);
        assert_eq!(parse_record("hello"), None);
        assert_eq!(
            parse_record(
                "v=spf1 ip4:192.0.2.0/24 +ip6:2001:db8::/32 include:_spf.example a mx:mail.example/24 \
                 -ip4:198.51.100.1 ~all exists:%{i}.x redirect=other.example"
            ),
            Some(vec![
                Term::Net("192.0.2.0/24".into()),
                Term::Net("2001:db8::/32".into()),
                Term::Include("_spf.example".into()),
                Term::A(None),
                Term::Mx(Some("mail.example".into())),
                Term::Redirect("other.example".into()),
            ])
        );
        assert_eq!(
            parse_record("V=SPF1 IP4:10.0.0.1"),
            Some(vec![Term::Net("10.0.0.1".into())])
        );
        assert_eq!(parse_record(&format!("v=spf1 {}", "a ".repeat(3000))), None);
    }
}
