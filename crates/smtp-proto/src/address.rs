//! RFC 5321 paths (`<local@domain>`), domains, address literals and RFC 3461
//! xtext.
//!
//! Every value this module hands out has been validated: no CR, LF, NUL,
//! space or other control character can be inside a [`Mailbox`], a
//! [`Domain`] or an [`XText`], so code further down (envelopes, logs, headers)
//! cannot be tricked into writing a line break an attacker chose.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1.
pub const MAX_LOCAL_PART_OCTETS: usize = 64;
/// RFC 5321 4.5.3.1.2.
pub const MAX_DOMAIN_OCTETS: usize = 255;
/// RFC 5321 4.5.3.1.3, angle brackets included.
pub const MAX_PATH_OCTETS: usize = 256;
/// RFC 1035 label limit.
const MAX_LABEL_OCTETS: usize = 63;

/// Why a path, mailbox or domain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("path must be enclosed in angle brackets")]
    MissingBrackets,
    #[error("path longer than {MAX_PATH_OCTETS} octets")]
    PathTooLong,
    #[error("local part longer than {MAX_LOCAL_PART_OCTETS} octets")]
    LocalPartTooLong,
    #[error("domain longer than {MAX_DOMAIN_OCTETS} octets")]
    DomainTooLong,
    #[error("empty local part")]
    EmptyLocalPart,
    #[error("empty domain")]
    EmptyDomain,
    #[error("address has no domain")]
    MissingDomain,
    #[error("invalid local part")]
    InvalidLocalPart,
    #[error("invalid domain")]
    InvalidDomain,
    #[error("invalid address literal")]
    InvalidAddressLiteral,
    #[error("invalid source route")]
    InvalidSourceRoute,
    #[error("null path not allowed here")]
    NullNotAllowed,
    #[error("address is not valid UTF-8")]
    InvalidUtf8,
    /// Kept apart from the syntax errors: the session answers 553 5.6.7.
    #[error("non-ASCII address without SMTPUTF8")]
    NonAsciiWithoutSmtputf8,
}

/// Whether non-ASCII (UTF-8) text is allowed in what is being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// Plain RFC 5321.
    Ascii,
    /// The transaction said SMTPUTF8 (RFC 6531).
    Utf8,
}

/// A domain name: dot-separated labels of letters, digits and hyphens (plus
/// UTF-8 U-labels under SMTPUTF8), stored with ASCII letters lower-cased so
/// that equality is the DNS one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// Parses a domain name. `allow_underscore` is for HELO names only, where
    /// real hosts (Windows machine names) use it.
    pub fn parse(s: &str, charset: Charset, allow_underscore: bool) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        if s.len() > MAX_DOMAIN_OCTETS {
            return Err(AddressError::DomainTooLong);
        }
        if !s.is_ascii() && charset == Charset::Ascii {
            return Err(AddressError::NonAsciiWithoutSmtputf8);
        }
        for label in s.split('.') {
            let bytes = label.as_bytes();
            if bytes.is_empty() || bytes.len() > MAX_LABEL_OCTETS {
                return Err(AddressError::InvalidDomain);
            }
            if bytes.first() == Some(&b'-') || bytes.last() == Some(&b'-') {
                return Err(AddressError::InvalidDomain);
            }
            let ok = label.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || c == '-'
                    || (allow_underscore && c == '_')
                    || (charset == Charset::Utf8 && is_safe_non_ascii(c))
            });
            if !ok {
                return Err(AddressError::InvalidDomain);
            }
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The part after the `@`: a name or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    Name(DomainName),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl Domain {
    /// Parses a domain or an address literal (`[1.2.3.4]`, `[IPv6:::1]`).
    /// General address literals (`[tag:...]`) are refused: nothing routes them.
    pub fn parse(s: &str, charset: Charset) -> Result<Self, AddressError> {
        Self::parse_inner(s, charset, false)
    }

    /// Like [`Domain::parse`] but for HELO/EHLO arguments, which may carry `_`.
    pub fn parse_helo(s: &str) -> Result<Self, AddressError> {
        Self::parse_inner(s, Charset::Ascii, true)
    }

    fn parse_inner(s: &str, charset: Charset, underscore: bool) -> Result<Self, AddressError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(AddressError::InvalidAddressLiteral)?;
            if s.len() > MAX_DOMAIN_OCTETS {
                return Err(AddressError::DomainTooLong);
            }
            if let Some(tag) = inner.get(..5)
                && tag.eq_ignore_ascii_case("IPv6:")
            {
                let v6 = inner.get(5..).ok_or(AddressError::InvalidAddressLiteral)?;
                return v6
                    .parse::<Ipv6Addr>()
                    .map(Domain::Ipv6)
                    .map_err(|_| AddressError::InvalidAddressLiteral);
            }
            return inner
                .parse::<Ipv4Addr>()
                .map(Domain::Ipv4)
                .map_err(|_| AddressError::InvalidAddressLiteral);
        }
        DomainName::parse(s, charset, underscore).map(Domain::Name)
    }

    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(n) => n.0.is_ascii(),
            Domain::Ipv4(_) | Domain::Ipv6(_) => true,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(&n.0),
            Domain::Ipv4(a) => write!(f, "[{a}]"),
            Domain::Ipv6(a) => write!(f, "[IPv6:{a}]"),
        }
    }
}

/// A local part in its canonical wire form: a Dot-string as is, or a
/// Quoted-string (quotes included) when it cannot be written as a Dot-string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPart(String);

impl LocalPart {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a whole local part (Dot-string or Quoted-string).
    pub fn parse(s: &str, charset: Charset) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if s.len() > MAX_LOCAL_PART_OCTETS {
            return Err(AddressError::LocalPartTooLong);
        }
        if !s.is_ascii() && charset == Charset::Ascii {
            return Err(AddressError::NonAsciiWithoutSmtputf8);
        }
        if let Some(quoted) = s.strip_prefix('"') {
            let content = unquote(quoted, charset)?;
            if content.is_empty() {
                return Err(AddressError::EmptyLocalPart);
            }
            if is_dot_string(&content, charset) {
                // RFC 5321 4.1.2: a quoted form that needs no quotes is the
                // same mailbox; keep one spelling.
                return Ok(Self(content));
            }
            let mut out = String::with_capacity(content.len() + 2);
            out.push('"');
            for c in content.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            return Ok(Self(out));
        }
        if is_dot_string(s, charset) {
            Ok(Self(s.to_owned()))
        } else {
            Err(AddressError::InvalidLocalPart)
        }
    }
}

/// Non-ASCII characters allowed under SMTPUTF8: not C1 controls (U+0085
/// is a line break to some software), not Unicode spaces or line separators.
fn is_safe_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

/// RFC 5322 atext, plus UTF-8 under SMTPUTF8 (RFC 6531 3.3).
fn is_atext(c: char, charset: Charset) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (charset == Charset::Utf8 && is_safe_non_ascii(c))
}

fn is_dot_string(s: &str, charset: Charset) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| is_atext(c, charset)))
}

/// Decodes the inside of a Quoted-string; `s` starts after the opening quote
/// and must end with the closing one. Space is refused, raw or escaped: the
/// types of this module promise never to carry one.
fn unquote(s: &str, charset: Charset) -> Result<String, AddressError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    loop {
        match chars.next() {
            None => return Err(AddressError::InvalidLocalPart),
            Some('"') => {
                return if chars.next().is_none() {
                    Ok(out)
                } else {
                    Err(AddressError::InvalidLocalPart)
                };
            }
            Some('\\') => match chars.next() {
                Some(c) if c.is_ascii_graphic() => out.push(c),
                _ => return Err(AddressError::InvalidLocalPart),
            },
            // qtextSMTP: %d33 / %d35-91 / %d93-126 (space left out on purpose).
            Some(c) if c.is_ascii_graphic() => out.push(c),
            Some(c) if charset == Charset::Utf8 && is_safe_non_ascii(c) => out.push(c),
            Some(_) => return Err(AddressError::InvalidLocalPart),
        }
    }
}

/// A mailbox. `domain` is `None` only for a recipient written without one
/// (`<postmaster>`), which the daemon completes with its own domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local_part: LocalPart,
    domain: Option<Domain>,
}

impl Mailbox {
    pub fn local_part(&self) -> &str {
        self.local_part.as_str()
    }

    pub fn domain(&self) -> Option<&Domain> {
        self.domain.as_ref()
    }

    /// True when the address needs SMTPUTF8 to be relayed.
    pub fn is_ascii(&self) -> bool {
        self.local_part.0.is_ascii() && self.domain.as_ref().is_none_or(Domain::is_ascii)
    }

    /// Parses `local@domain` or, if `allow_no_domain`, a bare `local`.
    fn parse(s: &str, charset: Charset, allow_no_domain: bool) -> Result<Self, AddressError> {
        let (local, domain) = split_local_domain(s)?;
        let local_part = LocalPart::parse(local, charset)?;
        let domain = match domain {
            Some(d) => Some(Domain::parse(d, charset)?),
            None if allow_no_domain => None,
            None => return Err(AddressError::MissingDomain),
        };
        Ok(Self { local_part, domain })
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.local_part.as_str())?;
        if let Some(d) = &self.domain {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits at the `@` that follows the local part (a quoted local part may
/// itself contain `@`).
fn split_local_domain(s: &str) -> Result<(&str, Option<&str>), AddressError> {
    let end_of_local = if s.starts_with('"') {
        closing_quote(s).ok_or(AddressError::InvalidLocalPart)? + 1
    } else {
        s.find('@').unwrap_or(s.len())
    };
    let local = s
        .get(..end_of_local)
        .ok_or(AddressError::InvalidLocalPart)?;
    let rest = s
        .get(end_of_local..)
        .ok_or(AddressError::InvalidLocalPart)?;
    if rest.is_empty() {
        return Ok((local, None));
    }
    match rest.strip_prefix('@') {
        Some("") => Err(AddressError::EmptyDomain),
        Some(d) => Ok((local, Some(d))),
        None => Err(AddressError::InvalidLocalPart),
    }
}

/// Byte index of the quote closing the Quoted-string that `s` starts with.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate().skip(1) {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The MAIL FROM path: the null sender `<>` or a mailbox with a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

impl ReversePath {
    /// Parses a whole path, brackets included (`<>`, `<a@b>`, `<@r:a@b>`).
    pub fn parse(path: &[u8], charset: Charset) -> Result<Self, AddressError> {
        let inner = path_inner(path, charset)?;
        if inner.is_empty() {
            return Ok(ReversePath::Null);
        }
        Mailbox::parse(strip_source_route(inner)?, charset, false).map(ReversePath::Mailbox)
    }

    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }

    pub fn is_ascii(&self) -> bool {
        self.mailbox().is_none_or(Mailbox::is_ascii)
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// The RCPT TO path: a mailbox, possibly without a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForwardPath(Mailbox);

impl ForwardPath {
    /// Parses a whole path, brackets included.
    pub fn parse(path: &[u8], charset: Charset) -> Result<Self, AddressError> {
        let inner = path_inner(path, charset)?;
        if inner.is_empty() {
            return Err(AddressError::NullNotAllowed);
        }
        Mailbox::parse(strip_source_route(inner)?, charset, true).map(ForwardPath)
    }

    pub fn mailbox(&self) -> &Mailbox {
        &self.0
    }

    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

/// Checks length, brackets and charset of a whole path and returns what is
/// between the brackets.
fn path_inner(path: &[u8], charset: Charset) -> Result<&str, AddressError> {
    if path.len() > MAX_PATH_OCTETS {
        return Err(AddressError::PathTooLong);
    }
    let inner = path
        .strip_prefix(b"<")
        .and_then(|p| p.strip_suffix(b">"))
        .ok_or(AddressError::MissingBrackets)?;
    let inner = std::str::from_utf8(inner).map_err(|_| AddressError::InvalidUtf8)?;
    if !inner.is_ascii() && charset == Charset::Ascii {
        return Err(AddressError::NonAsciiWithoutSmtputf8);
    }
    Ok(inner)
}

/// Drops an RFC 5321 source route (`@a,@b:`) after checking its syntax.
/// A path that starts with `@` and has no route (`<@a>`) has an empty local part.
fn strip_source_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let mut rest = inner;
    loop {
        let Some(after_at) = rest.strip_prefix('@') else {
            return Err(AddressError::InvalidSourceRoute);
        };
        // A literal may hold ':' (IPv6), so it ends at its ']'.
        let end = if after_at.starts_with('[') {
            after_at.find(']').map(|i| i + 1)
        } else {
            after_at.find([',', ':'])
        };
        let Some(end) = end else {
            // `<@a>`: no route, only a missing local part.
            return Err(AddressError::EmptyLocalPart);
        };
        let domain = after_at
            .get(..end)
            .ok_or(AddressError::InvalidSourceRoute)?;
        Domain::parse(domain, Charset::Utf8).map_err(|_| AddressError::InvalidSourceRoute)?;
        let tail = after_at
            .get(end..)
            .ok_or(AddressError::InvalidSourceRoute)?;
        if let Some(next) = tail.strip_prefix(',') {
            rest = next;
        } else if let Some(mailbox) = tail.strip_prefix(':') {
            return Ok(mailbox);
        } else {
            return Err(AddressError::InvalidSourceRoute);
        }
    }
}

/// Finds the end of a path at the start of `input` (which must begin with
/// `<`): returns the path, brackets included, and what follows it. A `>`
/// inside a quoted local part does not end the path.
pub fn split_path(input: &[u8]) -> Result<(&[u8], &[u8]), AddressError> {
    if input.first() != Some(&b'<') {
        return Err(AddressError::MissingBrackets);
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in input.iter().enumerate() {
        if i >= MAX_PATH_OCTETS {
            return Err(AddressError::PathTooLong);
        }
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b'>') => return Ok(input.split_at(i + 1)),
            _ => {}
        }
    }
    Err(AddressError::MissingBrackets)
}

/// RFC 3461 xtext, kept in its encoded form: printable ASCII without `+`
/// and `=` except as `+XX` escapes. Storing the encoded form means a decoded
/// CR or LF can never reach a log line or an envelope by accident.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XText(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XTextError {
    #[error("xtext is empty")]
    Empty,
    #[error("invalid character in xtext")]
    InvalidChar,
    #[error("invalid +XX escape in xtext")]
    InvalidEscape,
}

impl XText {
    /// Validates an encoded xtext. Lower-case hex is accepted (decoding it is
    /// unambiguous); the encoder writes upper case.
    pub fn parse(s: &str) -> Result<Self, XTextError> {
        if s.is_empty() {
            return Err(XTextError::Empty);
        }
        let b = s.as_bytes();
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            match c {
                b'+' => {
                    let hex = b.get(i + 1..i + 3).ok_or(XTextError::InvalidEscape)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(XTextError::InvalidEscape);
                    }
                    i += 3;
                }
                b'=' => return Err(XTextError::InvalidChar),
                33..=126 => i += 1,
                _ => return Err(XTextError::InvalidChar),
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// Encodes arbitrary bytes.
    pub fn encode(raw: &[u8]) -> Self {
        let mut out = String::with_capacity(raw.len());
        for &b in raw {
            if (33..=126).contains(&b) && b != b'+' && b != b'=' {
                out.push(char::from(b));
            } else {
                out.push('+');
                out.push(hex_digit(b >> 4));
                out.push(hex_digit(b & 0xf));
            }
        }
        Self(out)
    }

    /// The decoded bytes: these may hold anything, CR and LF included.
    pub fn decode(&self) -> Vec<u8> {
        let b = self.0.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if c == b'+'
                && let (Some(h), Some(l)) = (
                    b.get(i + 1).and_then(|&h| hex_value(h)),
                    b.get(i + 2).and_then(|&l| hex_value(l)),
                )
            {
                out.push(h << 4 | l);
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        }
        out
    }

    /// The encoded form, safe to log or store as is.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for XText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex_digit(n: u8) -> char {
    char::from(
        b"0123456789ABCDEF"
            .get(usize::from(n & 0xf))
            .copied()
            .unwrap_or(b'0'),
    )
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(s: &str) -> Result<ReversePath, AddressError> {
        ReversePath::parse(s.as_bytes(), Charset::Ascii)
    }
    fn fwd(s: &str) -> Result<ForwardPath, AddressError> {
        ForwardPath::parse(s.as_bytes(), Charset::Ascii)
    }

    #[test]
    fn plain_addresses() {
        let p = fwd("<John.Doe@Example.ORG>").unwrap();
        assert_eq!(p.mailbox().local_part(), "John.Doe");
        assert_eq!(p.to_string(), "<John.Doe@example.org>");
        assert_eq!(rev("<>").unwrap(), ReversePath::Null);
        assert_eq!(rev("<a@b.c>").unwrap().to_string(), "<a@b.c>");
    }

    #[test]
    fn domainless_recipient_allowed_sender_not() {
        let p = fwd("<postmaster>").unwrap();
        assert_eq!(p.mailbox().domain(), None);
        assert_eq!(p.to_string(), "<postmaster>");
        assert_eq!(rev("<a>"), Err(AddressError::MissingDomain));
    }

    #[test]
    fn refusals_match_opensmtpd_cases() {
        assert_eq!(rev("<;sleep 66;>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(rev("<@a>"), Err(AddressError::EmptyLocalPart));
        assert_eq!(rev("<@>"), Err(AddressError::EmptyLocalPart));
        assert_eq!(rev("<a@>"), Err(AddressError::EmptyDomain));
        assert_eq!(rev("< @a>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(rev("<whatever:a@a>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(rev("a@example.org"), Err(AddressError::MissingBrackets));
        assert_eq!(fwd("<>"), Err(AddressError::NullNotAllowed));
    }

    #[test]
    fn source_route_dropped() {
        let p = fwd("<@relay.example,@[10.0.0.1]:user@example.org>").unwrap();
        assert_eq!(p.to_string(), "<user@example.org>");
        let p = fwd("<@[IPv6:::1]:u@x>").unwrap();
        assert_eq!(p.to_string(), "<u@x>");
        assert_eq!(fwd("<@bad_dom:u@x>"), Err(AddressError::InvalidSourceRoute));
        assert_eq!(fwd("<@a,b:u@x>"), Err(AddressError::InvalidSourceRoute));
    }

    #[test]
    fn dot_string_rules() {
        assert_eq!(fwd("<.a@b>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<a.@b>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<a..b@b>"), Err(AddressError::InvalidLocalPart));
        assert!(fwd("<a+tag!#$%&'*/=?^_`{|}~-@b>").is_ok());
        assert_eq!(fwd("<a\tb@c>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<a\0b@c>"), Err(AddressError::InvalidLocalPart));
    }

    #[test]
    fn quoted_local_parts() {
        // Needs no quotes: canonicalised.
        assert_eq!(fwd("<\"abc\"@x>").unwrap().mailbox().local_part(), "abc");
        // Needs quotes: kept quoted, escapes minimal.
        let p = fwd("<\"a@b\\\"c\"@x>").unwrap();
        assert_eq!(p.mailbox().local_part(), "\"a@b\\\"c\"");
        assert_eq!(p.to_string(), "<\"a@b\\\"c\"@x>");
        let p = fwd("<\"a\\b\"@x>").unwrap();
        assert_eq!(p.mailbox().local_part(), "ab");
        // Space, raw or escaped, is never let in.
        assert_eq!(fwd("<\"a b\"@x>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<\"a\\ b\"@x>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<\"\"@x>"), Err(AddressError::EmptyLocalPart));
        assert_eq!(fwd("<\"abc@x>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<\"a\"b@x>"), Err(AddressError::InvalidLocalPart));
        assert_eq!(fwd("<\"a\r\n\"@x>"), Err(AddressError::InvalidLocalPart));
    }

    #[test]
    fn domains() {
        assert_eq!(fwd("<a@-x.org>"), Err(AddressError::InvalidDomain));
        assert_eq!(fwd("<a@x-.org>"), Err(AddressError::InvalidDomain));
        assert_eq!(fwd("<a@x..org>"), Err(AddressError::InvalidDomain));
        assert_eq!(fwd("<a@x.org.>"), Err(AddressError::InvalidDomain));
        assert_eq!(fwd("<a@x_y.org>"), Err(AddressError::InvalidDomain));
        assert!(fwd("<a@x-y.o-r-g>").is_ok());
        let long_label = "a".repeat(64);
        assert_eq!(
            fwd(&format!("<a@{long_label}.org>")),
            Err(AddressError::InvalidDomain)
        );
        assert!(Domain::parse_helo("MY_PC").is_ok());
        assert_eq!(
            Domain::parse_helo("-bad_domain-"),
            Err(AddressError::InvalidDomain)
        );
    }

    #[test]
    fn address_literals() {
        let p = fwd("<a@[192.0.2.1]>").unwrap();
        assert_eq!(
            p.mailbox().domain(),
            Some(&Domain::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(p.to_string(), "<a@[192.0.2.1]>");
        let p = fwd("<a@[ipv6:2001:DB8::1]>").unwrap();
        assert_eq!(p.to_string(), "<a@[IPv6:2001:db8::1]>");
        assert_eq!(fwd("<a@[1.2.3]>"), Err(AddressError::InvalidAddressLiteral));
        assert_eq!(
            fwd("<a@[1.2.3.4>"),
            Err(AddressError::InvalidAddressLiteral)
        );
        assert_eq!(fwd("<a@[x:y]>"), Err(AddressError::InvalidAddressLiteral));
        assert_eq!(
            fwd("<a@[IPv6:fe80::1%eth0]>"),
            Err(AddressError::InvalidAddressLiteral)
        );
    }

    #[test]
    fn limits() {
        let local = "a".repeat(64);
        assert!(fwd(&format!("<{local}@x>")).is_ok());
        let local = "a".repeat(65);
        assert_eq!(
            fwd(&format!("<{local}@x>")),
            Err(AddressError::LocalPartTooLong)
        );
        // 4 labels of 63 + 3 dots = 255: fits the domain limit.
        let label = "b".repeat(63);
        let domain = [label.as_str(); 4].join(".");
        assert_eq!(domain.len(), 255);
        assert!(Domain::parse(&domain, Charset::Ascii).is_ok());
        assert_eq!(
            Domain::parse(&format!("c{domain}"), Charset::Ascii),
            Err(AddressError::DomainTooLong)
        );
        // ...but the whole path then exceeds 256 octets.
        assert_eq!(
            fwd(&format!("<a@{domain}>")),
            Err(AddressError::PathTooLong)
        );
        let path = format!("<{}@{}>", "a".repeat(64), "b".repeat(189));
        assert_eq!(path.len(), 256);
        assert_eq!(fwd(&path), Err(AddressError::InvalidDomain)); // 189-octet label
        let path = format!(
            "<{}@{}.{}.{}>",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(path.len(), 256);
        assert!(fwd(&path).is_ok());
    }

    #[test]
    fn utf8_needs_smtputf8() {
        let s = "<\u{e9}@example.org>".as_bytes();
        assert_eq!(
            ReversePath::parse(s, Charset::Ascii),
            Err(AddressError::NonAsciiWithoutSmtputf8)
        );
        let p = ReversePath::parse(s, Charset::Utf8).unwrap();
        assert!(!p.is_ascii());
        let p = ForwardPath::parse("<a@b\u{fc}cher.de>".as_bytes(), Charset::Utf8).unwrap();
        assert_eq!(p.to_string(), "<a@b\u{fc}cher.de>");
        assert_eq!(
            ForwardPath::parse(b"<\xff@x>", Charset::Utf8),
            Err(AddressError::InvalidUtf8)
        );
        // Control characters and Unicode line breaks stay out even under UTF-8.
        for bad in ["<a\u{85}b@x>", "<a\u{2028}b@x>", "<\"a\u{a0}b\"@x>"] {
            assert_eq!(
                ForwardPath::parse(bad.as_bytes(), Charset::Utf8),
                Err(AddressError::InvalidLocalPart),
                "{bad:?}"
            );
        }
        for bad in ["<a@b\u{85}c>", "<a@b\u{2029}c>", "<a@b\u{3000}c>"] {
            assert_eq!(
                ForwardPath::parse(bad.as_bytes(), Charset::Utf8),
                Err(AddressError::InvalidDomain),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn split_path_finds_the_end() {
        assert_eq!(
            split_path(b"<a@b> SIZE=1").unwrap(),
            (&b"<a@b>"[..], &b" SIZE=1"[..])
        );
        assert_eq!(
            split_path(b"<\"x>y\"@b> X").unwrap(),
            (&b"<\"x>y\"@b>"[..], &b" X"[..])
        );
        assert_eq!(split_path(b"<a@b"), Err(AddressError::MissingBrackets));
        assert_eq!(split_path(b"a@b>"), Err(AddressError::MissingBrackets));
        let long = format!("<{}>", "a".repeat(400));
        assert_eq!(split_path(long.as_bytes()), Err(AddressError::PathTooLong));
    }

    #[test]
    fn xtext_roundtrip() {
        let x = XText::parse("a+2Bb+3Dc").unwrap();
        assert_eq!(x.decode(), b"a+b=c");
        assert_eq!(XText::encode(b"a+b=c \r\n").as_str(), "a+2Bb+3Dc+20+0D+0A");
        assert_eq!(XText::encode(b"\r\n").decode(), b"\r\n");
        assert_eq!(XText::parse("a+2").unwrap_err(), XTextError::InvalidEscape);
        assert_eq!(XText::parse("a+zz").unwrap_err(), XTextError::InvalidEscape);
        assert_eq!(XText::parse("a=b").unwrap_err(), XTextError::InvalidChar);
        assert_eq!(XText::parse("a b").unwrap_err(), XTextError::InvalidChar);
        assert_eq!(XText::parse("").unwrap_err(), XTextError::Empty);
        assert_eq!(XText::parse("+0d").unwrap().decode(), b"\r");
    }

    #[test]
    fn displayed_paths_never_carry_controls_or_space() {
        for s in ["<\"a@b\\\"c\"@x>", "<a@[IPv6:::1]>", "<postmaster>"] {
            let shown = fwd(s).unwrap().to_string();
            assert!(!shown.bytes().any(|b| b <= b' ' || b == 0x7f), "{shown:?}");
        }
    }
}
