//! Checks of single values (delays, sizes, names, relay URLs, filter
//! messages) with OpenSMTPD's rules, and the checks made once the whole file
//! is read.

use std::time::Duration;

use crate::model::{RelayProto, RelayUrl};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("a delay is a positive number followed by s, m, h or d")]
    Delay,
    #[error("a size is a positive number, optionally scaled by K, M, G or T")]
    Size,
    #[error("size is too large")]
    SizeOverflow,
    #[error("unknown protocol \"{0}\" (smtp, smtp+tls, smtp+notls, lmtp or smtps)")]
    RelayProto(String),
    #[error("empty host")]
    RelayHost,
    #[error("invalid port \"{0}\"")]
    RelayPort(String),
    #[error("lmtp:// needs a port")]
    LmtpPort,
    #[error("a label needs a protocol (e.g. smtp+tls://label@host)")]
    LabelWithoutProto,
}

/// OpenSMTPD's `delaytonum`: digits then one unit among s, m, h, d; the
/// number is 1 to `i32::MAX / factor`.
pub fn parse_delay(s: &str) -> Result<Duration, ValueError> {
    let (num, unit) = s
        .split_at_checked(s.len().saturating_sub(1))
        .ok_or(ValueError::Delay)?;
    let factor: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(ValueError::Delay),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Delay);
    }
    let n: u64 = num.parse().map_err(|_| ValueError::Delay)?;
    let max = u64::from(i32::MAX.unsigned_abs()) / factor;
    if n == 0 || n > max {
        return Err(ValueError::Delay);
    }
    Ok(Duration::from_secs(n * factor))
}

/// OpenBSD's `scan_scaled`: a decimal number, optionally with a fraction,
/// followed by at most one unit (B, K, M, G, T, P, E, any case; powers of
/// 1024). As an extension a `B` may follow the unit (`35MB`).
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int_part, rest) = s.split_at(digits_end);
    let (frac_part, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            r.split_at(end)
        }
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(ValueError::Size);
    }
    let shift: u32 = match rest.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        "p" | "pb" => 50,
        "e" | "eb" => 60,
        _ => return Err(ValueError::Size),
    };
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| ValueError::SizeOverflow)?
    };
    let scale: u128 = 1u128 << shift;
    let mut total = int.checked_mul(scale).ok_or(ValueError::SizeOverflow)?;
    if !frac_part.is_empty() && shift > 0 {
        // Only the first digits matter at these scales; keep the walk short.
        let frac = frac_part.get(..frac_part.len().min(18)).unwrap_or("");
        let num: u128 = frac.parse().map_err(|_| ValueError::Size)?;
        let den: u128 = 10u128.pow(u32::try_from(frac.len()).map_err(|_| ValueError::Size)?);
        total = total
            .checked_add(num * scale / den)
            .ok_or(ValueError::SizeOverflow)?;
    }
    let total = u64::try_from(total).map_err(|_| ValueError::SizeOverflow)?;
    if total > i64::MAX.unsigned_abs() {
        return Err(ValueError::SizeOverflow);
    }
    Ok(total)
}

/// OpenBSD's `res_hnok`, as used for pki and ca names: labels of letters,
/// digits, `-` and `_`, separated by dots, not starting or ending with `-`.
pub fn valid_hostname(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// `[proto://[label@]]host[:port]`, as `text_to_relayhost` reads it.
pub fn parse_relay_url(s: &str) -> Result<RelayUrl, ValueError> {
    let (proto, rest) = match s.split_once("://") {
        Some((p, rest)) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "smtp" => RelayProto::Smtp,
                "smtp+tls" => RelayProto::SmtpTls,
                "smtp+notls" => RelayProto::SmtpNoTls,
                "lmtp" => RelayProto::Lmtp,
                "smtps" => RelayProto::Smtps,
                _ => return Err(ValueError::RelayProto(p.to_string())),
            };
            (Some(proto), rest)
        }
        None => (None, s),
    };
    let (label, hostport) = match rest.rsplit_once('@') {
        Some((l, h)) if !l.is_empty() => (Some(l.to_string()), h),
        Some((_, _)) => return Err(ValueError::RelayHost),
        None => (None, rest),
    };
    if label.is_some() && proto.is_none() {
        return Err(ValueError::LabelWithoutProto);
    }
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or(ValueError::RelayHost)?;
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(ValueError::RelayHost),
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/')
    {
        return Err(ValueError::RelayHost);
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(ValueError::RelayPort(p.to_string())),
        },
        None => None,
    };
    let proto = proto.unwrap_or(RelayProto::Smtp);
    if proto == RelayProto::Lmtp && port.is_none() {
        return Err(ValueError::LmtpPort);
    }
    Ok(RelayUrl {
        proto,
        label,
        host: host.to_string(),
        port,
    })
}

/// A filter message must read as an SMTP reply: a 4xx or 5xx code, then
/// the end, a space or a dash.
pub fn valid_filter_message(msg: &str) -> bool {
    let b = msg.as_bytes();
    matches!(b.first(), Some(b'4' | b'5'))
        && b.get(1).is_some_and(u8::is_ascii_digit)
        && b.get(2).is_some_and(u8::is_ascii_digit)
        && matches!(b.get(3), None | Some(b' ' | b'-'))
}

/// The service names `port` accepts besides numbers.
pub fn port_by_name(name: &str) -> Option<u16> {
    match name {
        "smtp" => Some(25),
        "lmtp" => Some(24),
        "smtps" | "submissions" => Some(465),
        "submission" => Some(587),
        _ => None,
    }
}

/// `smtp sub-addr-delim`: one printable, non-space ASCII character other
/// than `@`.
pub fn valid_sub_addr_delim(c: char) -> bool {
    c.is_ascii_graphic() && c != '@'
}

/// A macro name: letters, digits and underscores.
pub fn valid_macro_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Filter chains, proc names and others are at most this long in
/// OpenSMTPD's fixed buffers; tags are shorter.
pub const MAX_TAG_LEN: usize = 31;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        assert_eq!(parse_delay("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_delay("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_delay("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_delay("4d"), Ok(Duration::from_secs(4 * 86400)));
        for bad in [
            "",
            "d",
            "0d",
            "4",
            "4w",
            "-4d",
            "4 d",
            "x4d",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_delay(bad), Err(ValueError::Delay), "{bad}");
        }
        assert_eq!(
            parse_delay("24855d"),
            Ok(Duration::from_secs(24855 * 86400))
        );
        assert_eq!(parse_delay("24856d"), Err(ValueError::Delay));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("35M"), Ok(35 * 1024 * 1024));
        assert_eq!(parse_size("35m"), Ok(35 * 1024 * 1024));
        assert_eq!(parse_size("35MB"), Ok(35 * 1024 * 1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        for bad in ["", "M", "35X", "35 M M", "-1M", "1.2.3K"] {
            assert_eq!(parse_size(bad), Err(ValueError::Size), "{bad}");
        }
        assert_eq!(parse_size("99999999999E"), Err(ValueError::SizeOverflow));
        assert_eq!(
            parse_size("999999999999999999999999999999999999999999"),
            Err(ValueError::SizeOverflow)
        );
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("mail.example.com"));
        assert!(valid_hostname("localhost"));
        assert!(valid_hostname("a_b.example"));
        assert!(!valid_hostname("-a.example"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(""));
    }

    #[test]
    fn relay_urls() {
        assert_eq!(
            parse_relay_url("smtp+tls://bob@smtp.example.com"),
            Ok(RelayUrl {
                proto: RelayProto::SmtpTls,
                label: Some("bob".into()),
                host: "smtp.example.com".into(),
                port: None
            })
        );
        assert_eq!(
            parse_relay_url("smtp://127.0.0.1:10027"),
            Ok(RelayUrl {
                proto: RelayProto::Smtp,
                label: None,
                host: "127.0.0.1".into(),
                port: Some(10027)
            })
        );
        assert_eq!(
            parse_relay_url("mx.example.org"),
            Ok(RelayUrl {
                proto: RelayProto::Smtp,
                label: None,
                host: "mx.example.org".into(),
                port: None
            })
        );
        assert_eq!(
            parse_relay_url("smtps://[::1]:4650"),
            Ok(RelayUrl {
                proto: RelayProto::Smtps,
                label: None,
                host: "::1".into(),
                port: Some(4650)
            })
        );
        assert_eq!(parse_relay_url("lmtp://h"), Err(ValueError::LmtpPort));
        assert_eq!(
            parse_relay_url("ftp://h"),
            Err(ValueError::RelayProto("ftp".into()))
        );
        assert_eq!(
            parse_relay_url("smtp://h:0"),
            Err(ValueError::RelayPort("0".into()))
        );
        assert_eq!(
            parse_relay_url("smtp://h:x"),
            Err(ValueError::RelayPort("x".into()))
        );
        assert_eq!(parse_relay_url("smtp://"), Err(ValueError::RelayHost));
        assert_eq!(parse_relay_url("bob@h"), Err(ValueError::LabelWithoutProto));
    }

    #[test]
    fn filter_messages() {
        assert!(valid_filter_message("550 go away"));
        assert!(valid_filter_message("421"));
        assert!(valid_filter_message("451-later"));
        assert!(!valid_filter_message("250 ok"));
        assert!(!valid_filter_message("go away"));
        assert!(!valid_filter_message("5500 x"));
        assert!(!valid_filter_message(""));
    }

    #[test]
    fn small_values() {
        assert_eq!(port_by_name("submission"), Some(587));
        assert_eq!(port_by_name("http"), None);
        assert!(valid_sub_addr_delim('+'));
        assert!(valid_sub_addr_delim('-'));
        assert!(!valid_sub_addr_delim('@'));
        assert!(!valid_sub_addr_delim(' '));
        assert!(!valid_sub_addr_delim('\u{e9}'));
        assert!(valid_macro_name("lan_addr2"));
        assert!(!valid_macro_name("lan-addr"));
        assert!(!valid_macro_name(""));
    }
}
