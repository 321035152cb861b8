//! Typed values of mapping lookups and the parsers that build them from a
//! table's value text (aliases(5) lists, credentials, userinfo, ...).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::matching::parse_ip;

/// Longest value text any service parses; OpenSMTPD caps these at
/// LINE_MAX-sized buffers, we are more generous but still bounded.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// A mail address split at its last `@`, as OpenSMTPD's text_to_mailaddr
/// does. Either part may be empty (`user`, `@domain`, `@`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailAddr {
    pub user: String,
    pub domain: String,
}

impl MailAddr {
    /// Split `text` at its last `@`. Never fails: a text without `@` is a
    /// bare user part.
    pub fn parse(text: &str) -> MailAddr {
        match text.rfind('@') {
            None => MailAddr {
                user: text.to_string(),
                domain: String::new(),
            },
            Some(at) => MailAddr {
                user: text.get(..at).unwrap_or_default().to_string(),
                domain: text.get(at + 1..).unwrap_or_default().to_string(),
            },
        }
    }
}

impl fmt::Display for MailAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            write!(f, "{}", self.user)
        } else {
            write!(f, "{}@{}", self.user, self.domain)
        }
    }
}

/// One destination of an aliases(5) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasTarget {
    /// A local user name (further expanded through aliases / ~/.forward).
    User(String),
    /// `user@domain`.
    Address(MailAddr),
    /// `/path/to/file`: append to the file.
    File(PathBuf),
    /// `|command` or `"|command"`: pipe to the command.
    Command(String),
    /// `:include:/path` (or `include:/path`): read more targets from a file.
    Include(PathBuf),
    /// `error:550 text`: reject with this status.
    Error { code: u16, message: String },
}

/// The credentials stored for a key: `user:password` (relay labels) or a
/// bare password hash (listener auth, where the user is the key).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A userbase entry: `uid:gid:/home/dir` under the key's user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userinfo {
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub directory: PathBuf,
}

/// The parsed answer of [`crate::Table::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Alias(Vec<AliasTarget>),
    Credentials(Credentials),
    Userinfo(Userinfo),
    /// Hostname for an address (`hostnames`, `helo-src`).
    Addrname(String),
    /// Addresses a user may send as (`senders`).
    Mailaddrmap(Vec<MailAddr>),
    /// A relay URL, unparsed (the config crate owns relay URL syntax).
    Relayhost(String),
    /// The raw value of an exact-key lookup (service `String`).
    Raw(String),
}

/// Why a value text is not valid for its service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is {len} bytes, at most {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("unbalanced quote")]
    UnbalancedQuote,
    #[error("backslash at end of value")]
    TrailingEscape,
    #[error("empty element in list")]
    EmptyElement,
    #[error("invalid alias target {0:?}")]
    InvalidAliasTarget(String),
    #[error("credentials must be \"user:password\" or a password hash")]
    Credentials,
    #[error("userinfo must be \"uid:gid:/directory\"")]
    UserinfoSyntax,
    #[error("invalid uid or gid {0:?}")]
    UserinfoId(String),
    #[error("home directory {0:?} is not an absolute path")]
    UserinfoDirectory(String),
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("empty value")]
    Empty,
}

fn check_len(text: &str) -> Result<(), ValueError> {
    if text.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLong {
            len: text.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// Blank as C's isspace() in the C locale.
pub(crate) fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

pub(crate) fn trim_blanks(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_blank(c as u8))
}

/// Split a comma-separated list the way OpenSMTPD's expand_line_split does:
/// a backslash takes the next character literally (and is dropped), commas
/// inside single or double quotes do not split, the quote characters are
/// kept. Elements are trimmed; empty ones are returned as empty strings.
pub(crate) fn split_list(text: &str) -> Result<Vec<String>, ValueError> {
    check_len(text)?;
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut esc, mut dq, mut sq) = (false, false, false);
    for c in text.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            ',' if !dq && !sq => {
                out.push(trim_blanks(&cur).to_string());
                cur.clear();
            }
            _ => {
                cur.push(c);
                if c == '"' && !sq {
                    dq = !dq;
                }
                if c == '\'' && !dq {
                    sq = !sq;
                }
            }
        }
    }
    if esc {
        return Err(ValueError::TrailingEscape);
    }
    if dq || sq {
        return Err(ValueError::UnbalancedQuote);
    }
    out.push(trim_blanks(&cur).to_string());
    Ok(out)
}

/// Parse an aliases(5) value as smtpd does at lookup time: empty elements
/// are skipped, every other element must be a valid target.
pub fn parse_alias_list(text: &str) -> Result<Vec<AliasTarget>, ValueError> {
    split_list(text)?
        .iter()
        .filter(|e| !e.is_empty())
        .map(|e| parse_alias_target(e))
        .collect()
}

/// Like [`parse_alias_list`] but an empty element (`a,,b`, a trailing
/// comma, an empty value) is an error: makemap's `-t aliases` check.
pub fn parse_alias_list_strict(text: &str) -> Result<Vec<AliasTarget>, ValueError> {
    let parts = split_list(text)?;
    if parts.iter().any(|e| e.is_empty()) {
        return Err(ValueError::EmptyElement);
    }
    parts.iter().map(|e| parse_alias_target(e)).collect()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// One element of an alias list, tried in OpenSMTPD's order: error,
/// include, command, file, address, user name.
pub fn parse_alias_target(elem: &str) -> Result<AliasTarget, ValueError> {
    let invalid = || ValueError::InvalidAliasTarget(elem.to_string());
    if let Some(rest) = strip_prefix_ci(elem, ":error:").or_else(|| strip_prefix_ci(elem, "error:"))
        && let Some(t) = alias_error(rest)
    {
        return Ok(t);
    }
    if let Some(rest) =
        strip_prefix_ci(elem, ":include:").or_else(|| strip_prefix_ci(elem, "include:"))
        && rest.starts_with('/')
    {
        return Ok(AliasTarget::Include(PathBuf::from(rest)));
    }
    if let Some(t) = alias_command(elem) {
        return t.ok_or_else(invalid);
    }
    if elem.starts_with('/') {
        return Ok(AliasTarget::File(PathBuf::from(elem)));
    }
    if let Some(addr) = alias_address(elem) {
        return Ok(AliasTarget::Address(addr));
    }
    if !elem.is_empty()
        && elem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+'))
    {
        return Ok(AliasTarget::User(elem.to_string()));
    }
    Err(invalid())
}

/// `[45][0-9][0-9] <alnum>...`
fn alias_error(rest: &str) -> Option<AliasTarget> {
    let b = rest.as_bytes();
    let ok = b.len() >= 5
        && matches!(b.first(), Some(b'4' | b'5'))
        && b.get(1).is_some_and(u8::is_ascii_digit)
        && b.get(2).is_some_and(u8::is_ascii_digit)
        && b.get(3) == Some(&b' ')
        && b.get(4).is_some_and(u8::is_ascii_alphanumeric);
    if !ok {
        return None;
    }
    let code = rest.get(..3)?.parse().ok()?;
    Some(AliasTarget::Error {
        code,
        message: rest.get(4..)?.to_string(),
    })
}

/// `None`: not a command at all; `Some(None)`: looks like one but is
/// malformed (quoted without closing quote, or empty).
fn alias_command(elem: &str) -> Option<Option<AliasTarget>> {
    let (quoted, rest) = match elem.strip_prefix('"') {
        Some(r) => (true, r),
        None => (false, elem),
    };
    let cmd = rest.strip_prefix('|')?;
    let cmd = if quoted {
        match cmd.strip_suffix('"') {
            Some(c) => c,
            None => return Some(None),
        }
    } else {
        cmd
    };
    // An empty command would run the empty string through the shell.
    if trim_blanks(cmd).is_empty() {
        return Some(None);
    }
    Some(Some(AliasTarget::Command(cmd.to_string())))
}

fn alias_address(elem: &str) -> Option<MailAddr> {
    if elem.len() < 3 {
        return None;
    }
    let at = elem.find('@')?;
    let user = elem.get(..at)?;
    let domain = elem.get(at + 1..)?;
    if user.is_empty() || domain.is_empty() {
        return None;
    }
    const USER_EXTRA: &[u8] = b"!#$%*/?|^{}`~&'+-=_.";
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || USER_EXTRA.contains(&b))
    {
        return None;
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(MailAddr {
        user: user.to_string(),
        domain: domain.to_string(),
    })
}

/// `user:password`, or a bare password (hash) whose user is `key`.
pub fn parse_credentials(key: &str, text: &str) -> Result<Credentials, ValueError> {
    check_len(text)?;
    if text.len() < 3 {
        return Err(ValueError::Credentials);
    }
    match text.split_once(':') {
        None => Ok(Credentials {
            username: key.to_string(),
            password: text.to_string(),
        }),
        Some((user, pass)) if !user.is_empty() && !pass.is_empty() => Ok(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }),
        Some(_) => Err(ValueError::Credentials),
    }
}

fn parse_id(s: &str) -> Result<u32, ValueError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::UserinfoId(s.to_string()));
    }
    s.parse().map_err(|_| ValueError::UserinfoId(s.to_string()))
}

/// `uid:gid:/directory` for user `key`. The directory may contain colons.
pub fn parse_userinfo(key: &str, text: &str) -> Result<Userinfo, ValueError> {
    check_len(text)?;
    let mut it = text.splitn(3, ':');
    let (Some(uid), Some(gid), Some(dir)) = (it.next(), it.next(), it.next()) else {
        return Err(ValueError::UserinfoSyntax);
    };
    let uid = parse_id(uid)?;
    let gid = parse_id(gid)?;
    // Deliveries chdir into and write below this directory: a relative
    // path would be resolved against whatever the daemon's cwd is.
    if !dir.starts_with('/') {
        return Err(ValueError::UserinfoDirectory(dir.to_string()));
    }
    Ok(Userinfo {
        username: key.to_string(),
        uid,
        gid,
        directory: PathBuf::from(dir),
    })
}

/// A list of mail addresses (`senders` tables), split like alias lists.
pub fn parse_mailaddr_list(text: &str) -> Result<Vec<MailAddr>, ValueError> {
    Ok(split_list(text)?
        .iter()
        .filter(|e| !e.is_empty())
        .map(|e| MailAddr::parse(e))
        .collect())
}

/// An addrname key must be an address (`127.0.0.1`, `[::1]`, `::1`).
pub fn parse_addrname_key(key: &str) -> Result<IpAddr, ValueError> {
    parse_ip(key).ok_or_else(|| ValueError::NotAnAddress(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> AliasTarget {
        AliasTarget::User(s.into())
    }

    #[test]
    fn alias_every_form() {
        let v = parse_alias_list(
            "root, bob@Example.org, /var/mail/x, |/usr/bin/prog -a, \
             :include:/etc/mail/inc, include:/etc/i2, error:550 No such user, \
             :ERROR:421 later, \"|/bin/cmd a,b\"",
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                user("root"),
                AliasTarget::Address(MailAddr {
                    user: "bob".into(),
                    domain: "Example.org".into()
                }),
                AliasTarget::File("/var/mail/x".into()),
                AliasTarget::Command("/usr/bin/prog -a".into()),
                AliasTarget::Include("/etc/mail/inc".into()),
                AliasTarget::Include("/etc/i2".into()),
                AliasTarget::Error {
                    code: 550,
                    message: "No such user".into()
                },
                AliasTarget::Error {
                    code: 421,
                    message: "later".into()
                },
                AliasTarget::Command("/bin/cmd a,b".into()),
            ]
        );
    }

    #[test]
    fn alias_escapes_and_empties() {
        assert_eq!(
            parse_alias_list("a\\,b").unwrap_err(),
            ValueError::InvalidAliasTarget("a,b".into())
        );
        assert_eq!(
            parse_alias_list("a,, b ,").unwrap(),
            vec![user("a"), user("b")]
        );
        assert_eq!(parse_alias_list("").unwrap(), vec![]);
        assert_eq!(
            parse_alias_list_strict("a,,b").unwrap_err(),
            ValueError::EmptyElement
        );
        assert_eq!(
            parse_alias_list_strict("a,").unwrap_err(),
            ValueError::EmptyElement
        );
        assert_eq!(
            parse_alias_list_strict("user.name+tag, x_y-z").unwrap(),
            vec![user("user.name+tag"), user("x_y-z")]
        );
    }

    #[test]
    fn alias_malformed() {
        assert_eq!(
            parse_alias_list("a\\").unwrap_err(),
            ValueError::TrailingEscape
        );
        assert_eq!(
            parse_alias_list("\"|cmd").unwrap_err(),
            ValueError::UnbalancedQuote
        );
        assert_eq!(
            parse_alias_list("'x").unwrap_err(),
            ValueError::UnbalancedQuote
        );
        for bad in [
            "error:55 short",
            "error:650 bad class",
            "error:550  space first",
            "error:550",
            ":include:relative",
            "|",
            "\"|\"",
            "\"|cmd\" x",
            "user name",
            "a@b@c",
            "@domain",
            "user@",
            "us\"er@x",
            "ünïcode",
        ] {
            assert!(
                matches!(parse_alias_target(bad), Err(ValueError::InvalidAliasTarget(ref s)) if s == bad),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn alias_too_long() {
        let long = "a".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            parse_alias_list(&long).unwrap_err(),
            ValueError::TooLong {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            }
        );
    }

    #[test]
    fn credentials_shapes() {
        assert_eq!(
            parse_credentials("label1", "user:pass:word").unwrap(),
            Credentials {
                username: "user".into(),
                password: "pass:word".into()
            }
        );
        assert_eq!(
            parse_credentials("user1", "$2b$10$hash").unwrap(),
            Credentials {
                username: "user1".into(),
                password: "$2b$10$hash".into()
            }
        );
        for bad in ["ab", ":password", "user:", ""] {
            assert_eq!(
                parse_credentials("k", bad).unwrap_err(),
                ValueError::Credentials
            );
        }
        let dbg = format!("{:?}", parse_credentials("k", "u:secret").unwrap());
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn userinfo_parsing() {
        assert_eq!(
            parse_userinfo("joe", "1000:100:/home/virtual/joe").unwrap(),
            Userinfo {
                username: "joe".into(),
                uid: 1000,
                gid: 100,
                directory: "/home/virtual/joe".into()
            }
        );
        assert_eq!(
            parse_userinfo("x", "0:0:/a:b").unwrap().directory,
            PathBuf::from("/a:b")
        );
        assert_eq!(
            parse_userinfo("x", "1000:100").unwrap_err(),
            ValueError::UserinfoSyntax
        );
        assert_eq!(
            parse_userinfo("x", "-1:100:/h").unwrap_err(),
            ValueError::UserinfoId("-1".into())
        );
        assert_eq!(
            parse_userinfo("x", "1:4294967296:/h").unwrap_err(),
            ValueError::UserinfoId("4294967296".into())
        );
        assert_eq!(
            parse_userinfo("x", "+1:1:/h").unwrap_err(),
            ValueError::UserinfoId("+1".into())
        );
        assert_eq!(
            parse_userinfo("x", "1:1:home").unwrap_err(),
            ValueError::UserinfoDirectory("home".into())
        );
        assert_eq!(parse_userinfo("x", "4294967295:0:/").unwrap().uid, u32::MAX);
    }

    #[test]
    fn mailaddr_list_and_parse() {
        assert_eq!(
            parse_mailaddr_list("a@b, @c , d, \"q,x\"@e").unwrap(),
            vec![
                MailAddr::parse("a@b"),
                MailAddr::parse("@c"),
                MailAddr::parse("d"),
                MailAddr::parse("\"q,x\"@e"),
            ]
        );
        assert_eq!(
            MailAddr::parse("a@b@c"),
            MailAddr {
                user: "a@b".into(),
                domain: "c".into()
            }
        );
        assert_eq!(MailAddr::parse("@").to_string(), "");
        assert_eq!(MailAddr::parse("u@d").to_string(), "u@d");
    }
}
