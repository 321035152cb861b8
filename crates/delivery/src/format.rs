//! smtpd.conf's format specifiers (`%{rcpt.user}`, `%{dest.domain[0:3]}`,
//! `%{rcpt:lowercase|strip}`, ...), expanded in `maildir` paths and `mda`
//! commands at delivery time, as OpenSMTPD does.
//!
//! Values that come from the envelope are sanitised before they are put
//! into the text: every character that is not a letter, a digit or one of
//! `.-_+=@` becomes `:`. That covers OpenSMTPD's set (`!#$%&'*?`{|}~`) and
//! goes further, because our addresses may carry quoted local parts (spaces,
//! `;`, `(`, `)`, `/`, newlines) that OpenSMTPD's address parser never lets
//! in. `:raw` keeps the value but still turns control characters into `:`:
//! a newline in a command line or a path is never wanted.
//!
//! Pure: no I/O, every step bounded by [`MAX_EXPANSION`].

use std::path::{Component, Path, PathBuf};

use crate::Class;

/// The longest expansion (and the longest value) accepted, in bytes. Larger
/// than OpenSMTPD's 1024 so that long home directories fit; a path longer
/// than this would not open anyway.
pub const MAX_EXPANSION: usize = 4096;

/// The longest text between `%{` and `}`.
const MAX_TOKEN: usize = 128;

/// One side of the envelope: a mailbox split at its last `@`. The null
/// sender is two empty strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Address<'a> {
    pub user: &'a str,
    pub domain: &'a str,
}

impl<'a> Address<'a> {
    /// Split `address` at its last `@` (a quoted local part may hold more);
    /// an address without `@` is all user.
    pub fn parse(address: &'a str) -> Address<'a> {
        match address.rsplit_once('@') {
            Some((user, domain)) => Address { user, domain },
            None => Address {
                user: address,
                domain: "",
            },
        }
    }

    /// `user@domain`; empty for the null sender, `user` alone when there is
    /// no domain.
    pub fn joined(&self) -> String {
        match (self.user.is_empty(), self.domain.is_empty()) {
            (true, true) => String::new(),
            (_, true) => self.user.to_owned(),
            _ => format!("{}@{}", self.user, self.domain),
        }
    }
}

/// The local user the delivery runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User<'a> {
    pub username: &'a str,
    /// The home directory, from the password database (trusted: it is
    /// inserted as is).
    pub directory: &'a str,
}

/// Everything a format may refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vars<'a> {
    /// MAIL FROM; [`Address::default`] for the null sender.
    pub sender: Address<'a>,
    /// The recipient as it came in RCPT TO.
    pub rcpt: Address<'a>,
    /// The recipient after alias/virtual expansion.
    pub dest: Address<'a>,
    pub user: User<'a>,
    /// The action's command, when expanding an `mda wrapper`; `None`
    /// elsewhere, where `%{mda}` is an error.
    pub mda: Option<&'a str>,
    /// The sub-address delimiter (`subaddressing-delimiter`, `+` by default)
    /// that `:strip` removes.
    pub delimiter: char,
}

/// Why a format could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unterminated %{{ at byte {0}")]
    Unterminated(usize),
    #[error("format token longer than {MAX_TOKEN} bytes at byte {0}")]
    TokenTooLong(usize),
    #[error("unknown format token %{{{0}}}")]
    UnknownToken(String),
    #[error("unknown modifier {modifier:?} in %{{{token}}}")]
    UnknownModifier { token: String, modifier: String },
    #[error("malformed substring in %{{{0}}}")]
    BadSubstring(String),
    #[error("%{{{token}}} is out of range of {value:?}")]
    OutOfRange { token: String, value: String },
    #[error("%{{mda}} is only available in an mda wrapper")]
    NoMdaCommand,
    #[error("~/ used but the user has no home directory")]
    NoHome,
    #[error("expansion longer than {MAX_EXPANSION} bytes")]
    TooLong,
}

impl FormatError {
    /// Mistakes in the configured text are temporary: the config check
    /// should have caught them, and fixing the config fixes queued mail.
    /// What depends on the envelope's values fails the same way on every
    /// retry, so it bounces.
    pub fn class(&self) -> Class {
        match self {
            FormatError::Unterminated(_)
            | FormatError::TokenTooLong(_)
            | FormatError::UnknownToken(_)
            | FormatError::UnknownModifier { .. }
            | FormatError::BadSubstring(_)
            | FormatError::NoMdaCommand => Class::Temporary,
            FormatError::OutOfRange { .. } | FormatError::NoHome | FormatError::TooLong => {
                Class::Permanent
            }
        }
    }

    /// RFC 3463 status: a configuration problem of the mail system.
    pub fn status(&self) -> &'static str {
        match self.class() {
            Class::Temporary => "4.3.5",
            Class::Permanent => "5.3.5",
        }
    }
}

/// Why a maildir path template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("{0:?} has a '..' component")]
    ParentComponent(String),
}

impl PathError {
    pub fn class(&self) -> Class {
        match self {
            PathError::Format(e) => e.class(),
            PathError::NotAbsolute(_) | PathError::ParentComponent(_) => Class::Permanent,
        }
    }

    pub fn status(&self) -> &'static str {
        match self {
            PathError::Format(e) => e.status(),
            PathError::NotAbsolute(_) | PathError::ParentComponent(_) => "5.3.5",
        }
    }
}

/// Expand `template`: a leading `~/` becomes the home directory, `%%` a
/// `%`, and each `%{...}` its value.
pub fn expand(template: &str, vars: &Vars<'_>) -> Result<String, FormatError> {
    walk(template, Some(vars), vars.mda.is_some())
}

/// Check a template's syntax without values (for the config check):
/// tokens, substrings and modifiers must be known; `%{mda}` only when
/// `wrapper`.
pub fn check(template: &str, wrapper: bool) -> Result<(), FormatError> {
    walk(template, None, wrapper).map(drop)
}

/// Expand a maildir path: `~/`, then the format, then refuse anything that
/// is not absolute or that climbs out with `..`.
pub fn expand_path(template: &str, vars: &Vars<'_>) -> Result<PathBuf, PathError> {
    let text = expand(template, vars)?;
    let path = Path::new(&text);
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute(text));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::ParentComponent(text));
    }
    Ok(PathBuf::from(text))
}

/// Replace every character that could mean something to a shell or to a
/// path with `:`.
pub fn sanitise(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            let safe = if c.is_ascii() {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '=' | '@')
            } else {
                // UTF-8 letters never contain an ASCII byte, so no shell
                // reads them as syntax.
                c.is_alphanumeric()
            };
            if safe { c } else { ':' }
        })
        .collect()
}

/// Replace control characters (and DEL) with `:`: what `:raw` values and
/// an mda's environment still get.
pub fn strip_controls(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ':' } else { c })
        .collect()
}

/// One pass over the template. With `vars` it builds the expansion; without,
/// it only checks the syntax.
fn walk(template: &str, vars: Option<&Vars<'_>>, wrapper: bool) -> Result<String, FormatError> {
    let mut out = String::new();
    let mut rest = template;
    if let Some(after) = template.strip_prefix("~/") {
        if let Some(vars) = vars {
            if vars.user.directory.is_empty() {
                return Err(FormatError::NoHome);
            }
            // The home is inserted after `~/` is taken off, never expanded.
            push(&mut out, vars.user.directory)?;
            push(&mut out, "/")?;
        }
        rest = after;
    }
    while let Some(pos) = rest.find('%') {
        let offset = template.len() - rest.len() + pos;
        let (literal, from_percent) = rest.split_at(pos);
        push(&mut out, literal)?;
        if let Some(after) = from_percent.strip_prefix("%%") {
            push(&mut out, "%")?;
            rest = after;
        } else if let Some(after) = from_percent.strip_prefix("%{") {
            let end = after.find('}').ok_or(FormatError::Unterminated(offset))?;
            let (text, after_brace) = after.split_at(end);
            if text.len() > MAX_TOKEN {
                return Err(FormatError::TokenTooLong(offset));
            }
            let spec = Spec::parse(text)?;
            if spec.token == Token::Mda && !wrapper {
                return Err(FormatError::NoMdaCommand);
            }
            if let Some(vars) = vars {
                let value = spec.evaluate(text, vars)?;
                push(&mut out, &value)?;
            }
            rest = after_brace.get(1..).unwrap_or_default();
        } else {
            // A lone `%` is itself.
            push(&mut out, "%")?;
            rest = from_percent.get(1..).unwrap_or_default();
        }
    }
    push(&mut out, rest)?;
    Ok(out)
}

fn push(out: &mut String, text: &str) -> Result<(), FormatError> {
    if out.len() + text.len() > MAX_EXPANSION {
        return Err(FormatError::TooLong);
    }
    out.push_str(text);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Sender,
    SenderUser,
    SenderDomain,
    Rcpt,
    RcptUser,
    RcptDomain,
    Dest,
    DestUser,
    DestDomain,
    UserName,
    UserDirectory,
    MboxFrom,
    Mda,
}

impl Token {
    fn parse(name: &str) -> Option<Token> {
        const NAMES: [(&str, Token); 13] = [
            ("sender", Token::Sender),
            ("sender.user", Token::SenderUser),
            ("sender.domain", Token::SenderDomain),
            ("rcpt", Token::Rcpt),
            ("rcpt.user", Token::RcptUser),
            ("rcpt.domain", Token::RcptDomain),
            ("dest", Token::Dest),
            ("dest.user", Token::DestUser),
            ("dest.domain", Token::DestDomain),
            ("user.username", Token::UserName),
            ("user.directory", Token::UserDirectory),
            ("mbox.from", Token::MboxFrom),
            ("mda", Token::Mda),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
    }

    fn value(self, vars: &Vars<'_>) -> Result<String, FormatError> {
        Ok(match self {
            Token::Sender => vars.sender.joined(),
            Token::SenderUser => vars.sender.user.to_owned(),
            Token::SenderDomain => vars.sender.domain.to_owned(),
            Token::Rcpt => vars.rcpt.joined(),
            Token::RcptUser => vars.rcpt.user.to_owned(),
            Token::RcptDomain => vars.rcpt.domain.to_owned(),
            Token::Dest => vars.dest.joined(),
            Token::DestUser => vars.dest.user.to_owned(),
            Token::DestDomain => vars.dest.domain.to_owned(),
            Token::UserName => vars.user.username.to_owned(),
            Token::UserDirectory => vars.user.directory.to_owned(),
            Token::MboxFrom => match vars.sender.joined() {
                s if s.is_empty() => "MAILER-DAEMON".to_owned(),
                s => s,
            },
            Token::Mda => vars.mda.ok_or(FormatError::NoMdaCommand)?.to_owned(),
        })
    }

    /// The home directory and the configured command are trusted text, not
    /// envelope values, and are inserted as they are.
    fn is_trusted(self) -> bool {
        matches!(self, Token::UserDirectory | Token::Mda)
    }
}

/// `[n]`, `[n:]`, `[:m]`, `[n:m]`: offsets in characters, negative ones
/// from the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    /// One character.
    Index(i64),
    /// From `begin` to `end` inclusive (OpenSMTPD's convention: a negative
    /// end drops that many characters from the end); `None` is the end.
    Span { begin: i64, end: Option<i64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    Lowercase,
    Uppercase,
    Strip,
}

/// A parsed `%{...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    token: Token,
    range: Option<Range>,
    /// In the order written; bounded by the token's length.
    modifiers: Vec<Modifier>,
    raw: bool,
}

impl Spec {
    fn parse(text: &str) -> Result<Spec, FormatError> {
        let bad = || FormatError::BadSubstring(text.to_owned());
        let (name, range, mods) = match text.find('[') {
            Some(open) => {
                let (name, bracketed) = text.split_at(open);
                let close = bracketed.find(']').ok_or_else(bad)?;
                let content = bracketed.get(1..close).ok_or_else(bad)?;
                let after = bracketed.get(close + 1..).unwrap_or_default();
                let mods = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
                };
                (name, Some(parse_range(content).ok_or_else(bad)?), mods)
            }
            None => match text.split_once(':') {
                Some((name, mods)) => (name, None, Some(mods)),
                None => (text, None, None),
            },
        };
        let token = Token::parse(name).ok_or_else(|| FormatError::UnknownToken(text.to_owned()))?;
        let mut modifiers = Vec::new();
        let mut raw = false;
        for modifier in mods.into_iter().flat_map(|m| m.split('|')) {
            let known = [
                ("lowercase", Some(Modifier::Lowercase)),
                ("uppercase", Some(Modifier::Uppercase)),
                ("strip", Some(Modifier::Strip)),
                ("raw", None),
            ];
            match known.iter().find(|(n, _)| n.eq_ignore_ascii_case(modifier)) {
                Some((_, Some(m))) => modifiers.push(*m),
                Some((_, None)) => raw = true,
                None => {
                    return Err(FormatError::UnknownModifier {
                        token: text.to_owned(),
                        modifier: modifier.to_owned(),
                    });
                }
            }
        }
        Ok(Spec {
            token,
            range,
            modifiers,
            raw,
        })
    }

    /// Value, then modifiers, then sanitising, then the substring: the
    /// order OpenSMTPD applies them in.
    fn evaluate(&self, text: &str, vars: &Vars<'_>) -> Result<String, FormatError> {
        let mut value = self.token.value(vars)?;
        if value.len() > MAX_EXPANSION {
            return Err(FormatError::TooLong);
        }
        for modifier in &self.modifiers {
            value = match modifier {
                Modifier::Lowercase => value.to_ascii_lowercase(),
                Modifier::Uppercase => value.to_ascii_uppercase(),
                Modifier::Strip => strip_subaddress(&value, vars.delimiter),
            };
        }
        if !self.token.is_trusted() {
            value = if self.raw {
                strip_controls(&value)
            } else {
                sanitise(&value)
            };
        }
        match self.range {
            None => Ok(value),
            Some(range) => substring(&value, range).ok_or_else(|| FormatError::OutOfRange {
                token: text.to_owned(),
                value,
            }),
        }
    }
}

/// `[...]`'s content; offsets beyond ±MAX_EXPANSION are malformed.
fn parse_range(content: &str) -> Option<Range> {
    let number = |s: &str| {
        s.parse::<i64>()
            .ok()
            .filter(|n| n.unsigned_abs() <= MAX_EXPANSION as u64)
    };
    match content.split_once(':') {
        None => Some(Range::Index(number(content)?)),
        Some((begin, end)) => Some(Range::Span {
            begin: if begin.is_empty() { 0 } else { number(begin)? },
            end: if end.is_empty() {
                None
            } else {
                Some(number(end)?)
            },
        }),
    }
}

/// The characters `range` selects, or `None` when it selects nothing
/// valid. An empty value stays empty whatever the range.
fn substring(value: &str, range: Range) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let len = i64::try_from(chars.len()).ok()?;
    if len == 0 {
        return Some(String::new());
    }
    let (begin, end) = match range {
        Range::Index(i) => {
            let i = if i < 0 { i + len } else { i };
            (i, i)
        }
        Range::Span { begin, end } => {
            let begin = if begin < 0 { begin + len } else { begin };
            let end = match end {
                None => len - 1,
                Some(e) if e < 0 => e + len - 1,
                Some(e) => e.min(len - 1),
            };
            (begin, end)
        }
    };
    if begin < 0 || begin >= len || end < begin {
        return None;
    }
    let begin = usize::try_from(begin).ok()?;
    let end = usize::try_from(end).ok()?;
    Some(chars.get(begin..=end)?.iter().collect())
}

/// `user+tag@domain` -> `user@domain`, `user+tag` -> `user`: the delimiter
/// and what follows it in the local part go.
fn strip_subaddress(value: &str, delimiter: char) -> String {
    let (local, domain) = match value.rfind('@') {
        Some(at) => value.split_at(at),
        None => (value, ""),
    };
    match local.find(delimiter) {
        Some(cut) => format!("{}{domain}", local.get(..cut).unwrap_or_default()),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(rcpt: &'a str) -> Vars<'a> {
        Vars {
            sender: Address::parse("Alice+list@Sender.example"),
            rcpt: Address::parse(rcpt),
            dest: Address::parse("bob+box@dest.example"),
            user: User {
                username: "bob",
                directory: "/home/bob",
            },
            mda: None,
            delimiter: '+',
        }
    }

    fn x(template: &str, rcpt: &str) -> Result<String, FormatError> {
        expand(template, &vars(rcpt))
    }

    fn ok(template: &str, rcpt: &str) -> String {
        x(template, rcpt).unwrap()
    }

    #[test]
    fn every_token() {
        let r = "User+Tag@Example.org";
        assert_eq!(ok("%{sender}", r), "Alice+list@Sender.example");
        assert_eq!(ok("%{sender.user}", r), "Alice+list");
        assert_eq!(ok("%{sender.domain}", r), "Sender.example");
        assert_eq!(ok("%{rcpt}", r), "User+Tag@Example.org");
        assert_eq!(ok("%{rcpt.user}", r), "User+Tag");
        assert_eq!(ok("%{rcpt.domain}", r), "Example.org");
        assert_eq!(ok("%{dest}", r), "bob+box@dest.example");
        assert_eq!(ok("%{dest.user}", r), "bob+box");
        assert_eq!(ok("%{dest.domain}", r), "dest.example");
        assert_eq!(ok("%{user.username}", r), "bob");
        assert_eq!(ok("%{user.directory}", r), "/home/bob");
        assert_eq!(ok("%{mbox.from}", r), "Alice+list@Sender.example");
        // Token names ignore case, as in OpenSMTPD.
        assert_eq!(ok("%{RCPT.Domain}", r), "Example.org");
    }

    #[test]
    fn null_sender() {
        let mut v = vars("a@b");
        v.sender = Address::default();
        assert_eq!(expand("<%{sender}>", &v).unwrap(), "<>");
        assert_eq!(expand("%{sender.user}%{sender.domain}", &v).unwrap(), "");
        assert_eq!(expand("%{mbox.from}", &v).unwrap(), "MAILER-DAEMON");
    }

    #[test]
    fn mda_only_in_wrappers() {
        let mut v = vars("a@b");
        assert_eq!(
            expand("wrap %{mda}", &v).unwrap_err(),
            FormatError::NoMdaCommand
        );
        v.mda = Some("/usr/bin/procmail -f '%x'");
        // The command is configuration, inserted untouched.
        assert_eq!(
            expand("wrap %{mda}", &v).unwrap(),
            "wrap /usr/bin/procmail -f '%x'"
        );
        assert_eq!(check("wrap %{mda}", true), Ok(()));
        assert_eq!(check("wrap %{mda}", false), Err(FormatError::NoMdaCommand));
    }

    #[test]
    fn man_page_substrings() {
        let r = "user@example.org";
        assert_eq!(ok("%{rcpt.domain[0]}", r), "e");
        assert_eq!(ok("%{rcpt.domain[1]}", r), "x");
        assert_eq!(ok("%{rcpt.domain[8:]}", r), "org");
        assert_eq!(ok("%{rcpt.domain[-3:]}", r), "org");
        assert_eq!(ok("%{rcpt.domain[0:6]}", r), "example");
        assert_eq!(ok("%{rcpt.domain[0:-4]}", r), "example");
    }

    #[test]
    fn more_substrings() {
        let r = "user@example.org";
        assert_eq!(ok("%{rcpt.domain[-1]}", r), "g");
        assert_eq!(ok("%{rcpt.domain[:2]}", r), "exa");
        assert_eq!(ok("%{rcpt.domain[:]}", r), "example.org");
        // An end past the value is clamped.
        assert_eq!(ok("%{rcpt.domain[8:100]}", r), "org");
        assert_eq!(ok("%{rcpt.user[1:-1]}", r), "se");
        // With modifiers after the brackets.
        assert_eq!(ok("%{rcpt.domain[0:6]:uppercase}", r), "EXAMPLE");
        // An empty value stays empty.
        assert_eq!(ok("[%{rcpt.domain[3:5]}]", "user"), "[]");
        // Offsets count characters, so UTF-8 is never cut in half.
        assert_eq!(ok("%{rcpt.user[1:2]}", "jürgen@example.org"), "ür");
    }

    #[test]
    fn out_of_range_substrings() {
        let r = "user@example.org";
        for t in [
            "%{rcpt.domain[11]}",
            "%{rcpt.domain[11:]}",
            "%{rcpt.domain[-12:]}",
            "%{rcpt.domain[5:2]}",
            "%{rcpt.domain[0:-12]}",
            "%{rcpt.domain[-12]}",
        ] {
            let err = x(t, r).unwrap_err();
            assert!(
                matches!(err, FormatError::OutOfRange { .. }),
                "{t}: {err:?}"
            );
            assert_eq!(err.class(), Class::Permanent);
        }
    }

    #[test]
    fn malformed_substrings() {
        for t in [
            "%{rcpt[]}",
            "%{rcpt[x]}",
            "%{rcpt[1:x]}",
            "%{rcpt[1:2:3]}",
            "%{rcpt[1}",
            "%{rcpt[1]x}",
            "%{rcpt[ 1]}",
            "%{rcpt[99999]}",
            "%{rcpt[-99999:]}",
            "%{rcpt[99999999999999999999]}",
        ] {
            let err = x(t, "a@b").unwrap_err();
            assert_eq!(err, FormatError::BadSubstring(t[2..t.len() - 1].to_owned()));
            assert_eq!(err.class(), Class::Temporary);
            assert_eq!(check(t, false).unwrap_err(), err);
        }
    }

    #[test]
    fn man_page_modifiers() {
        let r = "User+Tag@Example.org";
        assert_eq!(ok("%{rcpt:lowercase}", r), "user+tag@example.org");
        assert_eq!(ok("%{rcpt:uppercase}", r), "USER+TAG@EXAMPLE.ORG");
        assert_eq!(ok("%{rcpt:strip}", r), "User@Example.org");
        assert_eq!(ok("%{rcpt:lowercase|strip}", r), "user@example.org");
        assert_eq!(ok("%{rcpt:STRIP|Uppercase}", r), "USER@EXAMPLE.ORG");
        assert_eq!(ok("%{rcpt.user:strip}", r), "User");
        assert_eq!(ok("%{rcpt.domain:strip}", r), "Example.org");
        assert_eq!(
            ok("%{rcpt:strip}", "plain@example.org"),
            "plain@example.org"
        );
    }

    #[test]
    fn strip_uses_the_configured_delimiter() {
        let mut v = vars("bob-folder+x@example.org");
        v.delimiter = '-';
        assert_eq!(expand("%{rcpt:strip}", &v).unwrap(), "bob@example.org");
    }

    #[test]
    fn man_page_sanitising_and_raw() {
        let r = "user+t?g@example.org";
        assert_eq!(ok("%{rcpt}", r), "user+t:g@example.org");
        assert_eq!(ok("%{rcpt:raw}", r), "user+t?g@example.org");
        assert_eq!(ok("%{rcpt:raw|lowercase}", "A?b@C"), "a?b@c");
    }

    #[test]
    fn hostile_values_are_sanitised() {
        let cases = [
            ("$(id)@example.org", "::id:@example.org"),
            ("`id`@example.org", ":id:@example.org"),
            (";sleep 5;@example.org", ":sleep:5:@example.org"),
            ("a|b@example.org", "a:b@example.org"),
            ("../x@example.org", "..:x@example.org"),
            ("a\nb@example.org", "a:b@example.org"),
            ("\"q u\"@example.org", ":q:u:@example.org"),
            ("a&b>c<d'e\\f@example.org", "a:b:c:d:e:f@example.org"),
            ("!#$%&'*?`{|}~@x", ":::::::::::::@x"),
        ];
        for (rcpt, want) in cases {
            assert_eq!(ok("%{rcpt}", rcpt), want, "{rcpt:?}");
        }
        // Raw keeps shell syntax but never a control character.
        assert_eq!(ok("%{rcpt.user:raw}", "a\r\n\0b;c@x"), "a:::b;c");
        // The sender and the domains are sanitised the same way.
        let mut v = vars("a@b");
        v.sender = Address::parse("$(reboot)@evil;com");
        assert_eq!(expand("%{sender}", &v).unwrap(), "::reboot:@evil:com");
        assert_eq!(expand("%{mbox.from}", &v).unwrap(), "::reboot:@evil:com");
    }

    #[test]
    fn literals_percent_and_home() {
        let r = "u@d";
        assert_eq!(ok("100%% %{rcpt.user}", r), "100% u");
        assert_eq!(ok("50% off", r), "50% off");
        assert_eq!(ok("trailing %", r), "trailing %");
        assert_eq!(ok("~/Maildir/%{rcpt.user}", r), "/home/bob/Maildir/u");
        // ~ is special only at the start.
        assert_eq!(ok("a~/b", r), "a~/b");
        assert_eq!(ok("", r), "");
    }

    #[test]
    fn home_is_not_expanded_again() {
        let mut v = vars("u@d");
        v.user.directory = "/home/%{rcpt}";
        assert_eq!(expand("~/x", &v).unwrap(), "/home/%{rcpt}/x");
        v.user.directory = "";
        assert_eq!(expand("~/x", &v).unwrap_err(), FormatError::NoHome);
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            x("/var/%{rcpt", "u@d").unwrap_err(),
            FormatError::Unterminated(5)
        );
        assert_eq!(
            x("%{nope}", "u@d").unwrap_err(),
            FormatError::UnknownToken("nope".into())
        );
        assert_eq!(
            x("%{rcpt:lowercase:strip}", "u@d").unwrap_err(),
            FormatError::UnknownModifier {
                token: "rcpt:lowercase:strip".into(),
                modifier: "lowercase:strip".into()
            }
        );
        assert_eq!(
            x("%{rcpt:}", "u@d").unwrap_err(),
            FormatError::UnknownModifier {
                token: "rcpt:".into(),
                modifier: "".into()
            }
        );
        assert_eq!(
            x("%{rcpt:lowercase[0]}", "u@d").unwrap_err(),
            FormatError::UnknownToken("rcpt:lowercase[0]".into())
        );
        assert_eq!(
            x("%{}", "u@d").unwrap_err(),
            FormatError::UnknownToken("".into())
        );
        let long = format!("%{{{}}}", "a".repeat(MAX_TOKEN + 1));
        assert_eq!(x(&long, "u@d").unwrap_err(), FormatError::TokenTooLong(0));
        assert_eq!(check("%{rcpt", false), Err(FormatError::Unterminated(0)));
        assert_eq!(check("~/%{rcpt.user:lowercase}/x", false), Ok(()));
    }

    #[test]
    fn output_is_bounded() {
        let big = "a".repeat(MAX_EXPANSION);
        assert_eq!(x(&big, "u@d").unwrap(), big);
        assert_eq!(
            x(&format!("{big}b"), "u@d").unwrap_err(),
            FormatError::TooLong
        );
        let many = "%{rcpt}".repeat(MAX_EXPANSION);
        assert_eq!(
            x(&many, "user@example.org").unwrap_err(),
            FormatError::TooLong
        );
        // A huge value is refused before any work is done on it.
        let huge = format!("{}@d", "u".repeat(MAX_EXPANSION * 4));
        assert_eq!(x("%{rcpt[0]}", &huge).unwrap_err(), FormatError::TooLong);
    }

    #[test]
    fn paths() {
        let v = vars("User+Tag@Example.org");
        assert_eq!(
            expand_path("~/Maildir/%{rcpt.user:lowercase|strip}", &v).unwrap(),
            PathBuf::from("/home/bob/Maildir/user")
        );
        assert_eq!(
            expand_path("/var/mail/%{rcpt.domain}/%{rcpt.user}", &v).unwrap(),
            PathBuf::from("/var/mail/Example.org/User+Tag")
        );
        let err = expand_path("Maildir", &v).unwrap_err();
        assert_eq!(err, PathError::NotAbsolute("Maildir".into()));
        assert_eq!(err.class(), Class::Permanent);
        // A value of only dots would climb out; the check refuses it.
        let v = vars("..@Example.org");
        let err = expand_path("/var/mail/%{rcpt.user}/x", &v).unwrap_err();
        assert_eq!(err, PathError::ParentComponent("/var/mail/../x".into()));
        // `/` in a value never makes a component.
        let v = vars("../../etc@Example.org");
        assert_eq!(
            expand_path("/var/mail/%{rcpt.user}", &v).unwrap(),
            PathBuf::from("/var/mail/..:..:etc")
        );
        assert!(matches!(
            expand_path("/var/%{bogus}", &v).unwrap_err(),
            PathError::Format(FormatError::UnknownToken(_))
        ));
    }
}
