//! One SMTP command line (without its CRLF) into a [`Command`].
//!
//! The parser knows syntax only; whether a command is allowed now is the
//! session's business. Every refusal is a [`CommandError`] variant, and
//! [`CommandError::reply`] is the one place that turns it into a reply.

use crate::address::{AddressError, Charset, Domain, ForwardPath, ReversePath, XText, split_path};
use crate::reply::Reply;

/// RFC 3461 4.4: ENVID is at most 100 characters.
pub const MAX_ENVID_OCTETS: usize = 100;
/// RFC 3461 4.2: ORCPT is at most 500 characters.
pub const MAX_ORCPT_OCTETS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(Domain),
    Ehlo(Domain),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
        params: RcptParams,
    },
    Data,
    Rset,
    /// Any argument is ignored (RFC 5321 4.1.1.9).
    Noop,
    Quit,
    /// Any topic is ignored: one help text for all.
    Help,
    /// The argument is not kept: the answer never depends on it.
    Vrfy,
    Expn,
    StartTls,
    Auth {
        /// Upper-cased SASL mechanism name.
        mechanism: String,
        /// Base64 initial response, or `=` for an empty one.
        initial: Option<String>,
    },
}

/// BODY= (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// RET= (RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// Parameters of MAIL FROM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// Declared size; a number too big for u64 saturates (and is refused by
    /// any limit).
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<XText>,
    pub auth: Option<XText>,
}

impl MailParams {
    /// Uses RET or ENVID (refused when DSN is not offered).
    pub fn uses_dsn(&self) -> bool {
        self.ret.is_some() || self.envid.is_some()
    }
}

/// The conditions of NOTIFY=, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotifyOn {
    success: bool,
    failure: bool,
    delay: bool,
}

impl NotifyOn {
    /// The conditions a client asks for when relaying; `None` if none is
    /// set (NOTIFY needs at least one).
    pub fn new(success: bool, failure: bool, delay: bool) -> Option<NotifyOn> {
        (success || failure || delay).then_some(NotifyOn {
            success,
            failure,
            delay,
        })
    }

    pub fn success(&self) -> bool {
        self.success
    }
    pub fn failure(&self) -> bool {
        self.failure
    }
    pub fn delay(&self) -> bool {
        self.delay
    }
}

/// NOTIFY= (RFC 3461 4.1): NEVER alone, or a non-empty set of conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    Never,
    On(NotifyOn),
}

/// ORCPT= (RFC 3461 4.2): `addr-type;xtext`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orcpt {
    /// Lower-cased atom, e.g. `rfc822`.
    pub addr_type: String,
    pub address: XText,
}

/// Parameters of RCPT TO; they belong to that one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

impl RcptParams {
    pub fn uses_dsn(&self) -> bool {
        self.notify.is_some() || self.orcpt.is_some()
    }
}

/// Which command a HELO-family error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeloVerb {
    Helo,
    Ehlo,
}

impl HeloVerb {
    fn name(self) -> &'static str {
        match self {
            HeloVerb::Helo => "HELO",
            HeloVerb::Ehlo => "EHLO",
        }
    }
}

/// A MAIL or RCPT parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("malformed parameter")]
    Syntax,
    /// The keyword passed the esmtp-keyword syntax, so it is safe to echo.
    #[error("unsupported parameter {0}")]
    Unknown(String),
    #[error("duplicate parameter {0}")]
    Duplicate(&'static str),
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    #[error("unsupported BODY type")]
    UnsupportedBody,
    #[error("NOTIFY=NEVER cannot be combined with other values")]
    NotifyNeverCombined,
    #[error("{0} value too long")]
    TooLong(&'static str),
}

/// A command line was refused by the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command line")]
    Empty,
    #[error("control character or invalid byte in command")]
    InvalidCharacter,
    #[error("command unrecognized")]
    Unrecognized,
    /// Known verbs we do not offer (BDAT without CHUNKING, ETRN, TURN...).
    #[error("command not implemented")]
    NotImplemented,
    #[error("{} requires a domain name", .0.name())]
    HeloMissingDomain(HeloVerb),
    #[error("invalid domain name")]
    HeloInvalidDomain,
    #[error("command takes no arguments")]
    NoArgumentsAllowed,
    #[error("command requires an argument")]
    ArgumentRequired,
    #[error("MAIL syntax is MAIL FROM:<address>")]
    MailSyntax,
    #[error("RCPT syntax is RCPT TO:<address>")]
    RcptSyntax,
    #[error("sender address: {0}")]
    Sender(AddressError),
    #[error("recipient address: {0}")]
    Recipient(AddressError),
    #[error("parameter: {0}")]
    Param(ParamError),
    #[error("invalid AUTH arguments")]
    AuthSyntax,
}

impl CommandError {
    /// The one reply for each refusal.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Empty => Reply::fixed(500, (5, 5, 2), "Syntax error: empty command"),
            CommandError::InvalidCharacter => {
                Reply::fixed(500, (5, 5, 2), "Syntax error: invalid character in command")
            }
            CommandError::Unrecognized => {
                Reply::fixed(500, (5, 5, 1), "Invalid command: Command unrecognized")
            }
            CommandError::NotImplemented => {
                Reply::fixed(502, (5, 5, 1), "Invalid command: Command not implemented")
            }
            CommandError::HeloMissingDomain(verb) => Reply::fixed(
                501,
                (5, 5, 1),
                format!("Invalid command: {} requires domain name", verb.name()),
            ),
            CommandError::HeloInvalidDomain => Reply::fixed(
                501,
                (5, 5, 4),
                "Invalid command arguments: Invalid domain name",
            ),
            CommandError::NoArgumentsAllowed => Reply::fixed(
                501,
                (5, 5, 4),
                "Invalid command arguments: No parameters allowed",
            ),
            CommandError::ArgumentRequired => Reply::fixed(
                501,
                (5, 5, 4),
                "Invalid command arguments: Argument required",
            ),
            CommandError::MailSyntax => Reply::fixed(501, (5, 5, 4), "Syntax: MAIL FROM:<address>"),
            CommandError::RcptSyntax => Reply::fixed(501, (5, 5, 4), "Syntax: RCPT TO:<address>"),
            CommandError::Sender(AddressError::NonAsciiWithoutSmtputf8)
            | CommandError::Recipient(AddressError::NonAsciiWithoutSmtputf8) => {
                Reply::fixed(553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8")
            }
            CommandError::Sender(_) => Reply::fixed(553, (5, 1, 0), "Sender address syntax error"),
            CommandError::Recipient(_) => {
                Reply::fixed(501, (5, 1, 3), "Recipient address syntax error")
            }
            CommandError::Param(p) => match p {
                ParamError::Syntax => Reply::fixed(501, (5, 5, 4), "Syntax error in parameters"),
                ParamError::Unknown(k) => {
                    Reply::fixed(555, (5, 5, 4), format!("Unsupported parameter {k}"))
                }
                ParamError::Duplicate(k) => {
                    Reply::fixed(501, (5, 5, 4), format!("Duplicate parameter {k}"))
                }
                ParamError::InvalidValue(k) => {
                    Reply::fixed(501, (5, 5, 4), format!("Invalid value for {k}"))
                }
                ParamError::UnsupportedBody => {
                    Reply::fixed(555, (5, 5, 4), "Unsupported BODY type")
                }
                ParamError::NotifyNeverCombined => Reply::fixed(
                    501,
                    (5, 5, 4),
                    "NOTIFY=NEVER cannot be combined with other values",
                ),
                ParamError::TooLong(k) => {
                    Reply::fixed(501, (5, 5, 4), format!("{k} value too long"))
                }
            },
            CommandError::AuthSyntax => Reply::fixed(
                501,
                (5, 5, 4),
                "Invalid command arguments: AUTH mechanism [initial-response]",
            ),
        }
    }
}

impl From<ParamError> for CommandError {
    fn from(e: ParamError) -> Self {
        CommandError::Param(e)
    }
}

impl Command {
    /// Parses one line, CRLF already removed. `rcpt_charset` says whether
    /// the open transaction declared SMTPUTF8 (MAIL carries its own flag).
    pub fn parse(line: &[u8], rcpt_charset: Charset) -> Result<Command, CommandError> {
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        // Control characters never belong in a command; bytes >= 0x80 may,
        // inside an SMTPUTF8 path, and are checked there.
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(CommandError::InvalidCharacter);
        }
        let mut halves = line.splitn(2, |&b| b == b' ');
        let verb = halves.next().unwrap_or_default();
        let args = halves.next();
        let verb_is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
        // Treat "VERB " (trailing spaces only) as no argument.
        let args = args.filter(|a| a.iter().any(|&b| b != b' '));

        if verb_is("HELO") || verb_is("EHLO") {
            let which = if verb_is("HELO") {
                HeloVerb::Helo
            } else {
                HeloVerb::Ehlo
            };
            let arg = args.ok_or(CommandError::HeloMissingDomain(which))?;
            let arg = std::str::from_utf8(trim_spaces(arg))
                .map_err(|_| CommandError::HeloInvalidDomain)?;
            let domain = Domain::parse_helo(arg).map_err(|_| CommandError::HeloInvalidDomain)?;
            return Ok(match which {
                HeloVerb::Helo => Command::Helo(domain),
                HeloVerb::Ehlo => Command::Ehlo(domain),
            });
        }
        if verb_is("MAIL") {
            let path_and_params = strip_prefix_ci(args.unwrap_or_default(), b"FROM:")
                .ok_or(CommandError::MailSyntax)?;
            let (path, rest) =
                split_path(trim_leading_spaces(path_and_params)).map_err(CommandError::Sender)?;
            let params = parse_mail_params(rest)?;
            let charset = if params.smtputf8 {
                Charset::Utf8
            } else {
                Charset::Ascii
            };
            let from = ReversePath::parse(path, charset).map_err(CommandError::Sender)?;
            return Ok(Command::Mail { from, params });
        }
        if verb_is("RCPT") {
            let path_and_params = strip_prefix_ci(args.unwrap_or_default(), b"TO:")
                .ok_or(CommandError::RcptSyntax)?;
            let (path, rest) = split_path(trim_leading_spaces(path_and_params))
                .map_err(CommandError::Recipient)?;
            let params = parse_rcpt_params(rest)?;
            let to = ForwardPath::parse(path, rcpt_charset).map_err(CommandError::Recipient)?;
            return Ok(Command::Rcpt { to, params });
        }
        let no_args = |cmd: Command| match args {
            None => Ok(cmd),
            Some(_) => Err(CommandError::NoArgumentsAllowed),
        };
        let needs_arg = |cmd: Command| match args {
            Some(_) => Ok(cmd),
            None => Err(CommandError::ArgumentRequired),
        };
        if verb_is("DATA") {
            return no_args(Command::Data);
        }
        if verb_is("RSET") {
            return no_args(Command::Rset);
        }
        if verb_is("QUIT") {
            return no_args(Command::Quit);
        }
        if verb_is("STARTTLS") {
            return no_args(Command::StartTls);
        }
        if verb_is("NOOP") {
            return Ok(Command::Noop);
        }
        if verb_is("HELP") {
            return Ok(Command::Help);
        }
        if verb_is("VRFY") {
            return needs_arg(Command::Vrfy);
        }
        if verb_is("EXPN") {
            return needs_arg(Command::Expn);
        }
        if verb_is("AUTH") {
            return parse_auth(args.ok_or(CommandError::ArgumentRequired)?);
        }
        if ["BDAT", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML"]
            .iter()
            .any(|v| verb_is(v))
        {
            return Err(CommandError::NotImplemented);
        }
        Err(CommandError::Unrecognized)
    }
}

fn trim_leading_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let s = trim_leading_spaces(s);
    let end = s.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    s.get(..end).unwrap_or_default()
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Splits what follows a path into `KEYWORD[=value]` tokens. The rest must
/// be empty or start with a space.
fn params(rest: &[u8]) -> Result<Vec<(String, Option<&str>)>, ParamError> {
    if !rest.is_empty() && rest.first() != Some(&b' ') {
        return Err(ParamError::Syntax);
    }
    let rest = std::str::from_utf8(rest).map_err(|_| ParamError::Syntax)?;
    let mut out = Vec::new();
    for token in rest.split(' ').filter(|t| !t.is_empty()) {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        // esmtp-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // esmtp-value: 1*(%d33-60 / %d62-126)
        let value_ok = value.is_none_or(|v| {
            !v.is_empty() && v.bytes().all(|b| (33..=126).contains(&b) && b != b'=')
        });
        if !key_ok || !value_ok {
            return Err(ParamError::Syntax);
        }
        out.push((key.to_ascii_uppercase(), value));
    }
    Ok(out)
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError::Duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

fn xtext_value(v: Option<&str>, name: &'static str, max: usize) -> Result<XText, ParamError> {
    let v = v.ok_or(ParamError::InvalidValue(name))?;
    if v.len() > max {
        return Err(ParamError::TooLong(name));
    }
    XText::parse(v).map_err(|_| ParamError::InvalidValue(name))
}

fn parse_mail_params(rest: &[u8]) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    for (key, value) in params(rest)? {
        match key.as_str() {
            "SIZE" => {
                let v = value.ok_or(ParamError::InvalidValue("SIZE"))?;
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParamError::InvalidValue("SIZE").into());
                }
                // 20 digits can exceed u64: saturate, any limit refuses it.
                let n = v.parse::<u64>().unwrap_or(u64::MAX);
                set_once(&mut p.size, n, "SIZE")?;
            }
            "BODY" => {
                let v = value.ok_or(ParamError::InvalidValue("BODY"))?;
                let body = if v.eq_ignore_ascii_case("7BIT") {
                    Body::SevenBit
                } else if v.eq_ignore_ascii_case("8BITMIME") {
                    Body::EightBitMime
                } else if v.eq_ignore_ascii_case("BINARYMIME") {
                    return Err(ParamError::UnsupportedBody.into());
                } else {
                    return Err(ParamError::InvalidValue("BODY").into());
                };
                set_once(&mut p.body, body, "BODY")?;
            }
            "SMTPUTF8" => {
                if value.is_some() {
                    return Err(ParamError::InvalidValue("SMTPUTF8").into());
                }
                if p.smtputf8 {
                    return Err(ParamError::Duplicate("SMTPUTF8").into());
                }
                p.smtputf8 = true;
            }
            "RET" => {
                let v = value.ok_or(ParamError::InvalidValue("RET"))?;
                let ret = if v.eq_ignore_ascii_case("FULL") {
                    Ret::Full
                } else if v.eq_ignore_ascii_case("HDRS") {
                    Ret::Hdrs
                } else {
                    return Err(ParamError::InvalidValue("RET").into());
                };
                set_once(&mut p.ret, ret, "RET")?;
            }
            "ENVID" => {
                let x = xtext_value(value, "ENVID", MAX_ENVID_OCTETS)?;
                set_once(&mut p.envid, x, "ENVID")?;
            }
            "AUTH" => {
                // RFC 4954 5: `<>` or an xtext mailbox; 500 is generous.
                let x = xtext_value(value, "AUTH", MAX_ORCPT_OCTETS)?;
                set_once(&mut p.auth, x, "AUTH")?;
            }
            _ => return Err(ParamError::Unknown(key).into()),
        }
    }
    Ok(p)
}

fn parse_rcpt_params(rest: &[u8]) -> Result<RcptParams, CommandError> {
    let mut p = RcptParams::default();
    for (key, value) in params(rest)? {
        match key.as_str() {
            "NOTIFY" => {
                let v = value.ok_or(ParamError::InvalidValue("NOTIFY"))?;
                set_once(&mut p.notify, parse_notify(v)?, "NOTIFY")?;
            }
            "ORCPT" => {
                let v = value.ok_or(ParamError::InvalidValue("ORCPT"))?;
                if v.len() > MAX_ORCPT_OCTETS {
                    return Err(ParamError::TooLong("ORCPT").into());
                }
                let (addr_type, addr) =
                    v.split_once(';').ok_or(ParamError::InvalidValue("ORCPT"))?;
                let type_ok = !addr_type.is_empty()
                    && addr_type
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !type_ok {
                    return Err(ParamError::InvalidValue("ORCPT").into());
                }
                let address = XText::parse(addr).map_err(|_| ParamError::InvalidValue("ORCPT"))?;
                let orcpt = Orcpt {
                    addr_type: addr_type.to_ascii_lowercase(),
                    address,
                };
                set_once(&mut p.orcpt, orcpt, "ORCPT")?;
            }
            _ => return Err(ParamError::Unknown(key).into()),
        }
    }
    Ok(p)
}

fn parse_notify(v: &str) -> Result<Notify, ParamError> {
    let mut never = false;
    let mut on = NotifyOn {
        success: false,
        failure: false,
        delay: false,
    };
    for item in v.split(',') {
        let flag = if item.eq_ignore_ascii_case("NEVER") {
            &mut never
        } else if item.eq_ignore_ascii_case("SUCCESS") {
            &mut on.success
        } else if item.eq_ignore_ascii_case("FAILURE") {
            &mut on.failure
        } else if item.eq_ignore_ascii_case("DELAY") {
            &mut on.delay
        } else {
            return Err(ParamError::InvalidValue("NOTIFY"));
        };
        if *flag {
            return Err(ParamError::InvalidValue("NOTIFY"));
        }
        *flag = true;
    }
    match (never, on.success || on.failure || on.delay) {
        (true, true) => Err(ParamError::NotifyNeverCombined),
        (true, false) => Ok(Notify::Never),
        (false, _) => Ok(Notify::On(on)),
    }
}

fn parse_auth(args: &[u8]) -> Result<Command, CommandError> {
    let args = std::str::from_utf8(args).map_err(|_| CommandError::AuthSyntax)?;
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(CommandError::ArgumentRequired)?;
    let initial = words.next();
    if words.next().is_some() {
        return Err(CommandError::AuthSyntax);
    }
    // RFC 4422 3.1: 1-20 of upper-case letters, digits, '-' and '_'.
    let mech_ok = mechanism.len() <= 20
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // The initial response is not checked here: whether it is base64 is
    // the AUTH exchange's to say (RFC 4954 4: 501 5.5.2 for a response
    // that cannot be decoded).
    if !mech_ok {
        return Err(CommandError::AuthSyntax);
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes(), Charset::Ascii)
    }

    fn wire(e: CommandError) -> String {
        String::from_utf8(e.reply().to_wire()).unwrap()
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(parse("data").unwrap(), Command::Data);
        assert_eq!(parse("RsEt").unwrap(), Command::Rset);
        assert_eq!(parse("QUIT").unwrap(), Command::Quit);
        assert_eq!(parse("QUIT ").unwrap(), Command::Quit);
        assert_eq!(parse("NOOP hello").unwrap(), Command::Noop);
        assert_eq!(parse("HELP MAIL").unwrap(), Command::Help);
        assert_eq!(parse("VRFY root").unwrap(), Command::Vrfy);
        assert_eq!(parse("EXPN list").unwrap(), Command::Expn);
        assert_eq!(parse("STARTTLS").unwrap(), Command::StartTls);
        assert_eq!(parse("QUIT x"), Err(CommandError::NoArgumentsAllowed));
        assert_eq!(parse("DATA x"), Err(CommandError::NoArgumentsAllowed));
        assert_eq!(parse("STARTTLS now"), Err(CommandError::NoArgumentsAllowed));
        assert_eq!(parse("VRFY"), Err(CommandError::ArgumentRequired));
        assert_eq!(parse("WIZ"), Err(CommandError::Unrecognized));
        assert_eq!(parse("BDAT 10 LAST"), Err(CommandError::NotImplemented));
        assert_eq!(parse("ETRN x"), Err(CommandError::NotImplemented));
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(parse("NOOP\0"), Err(CommandError::InvalidCharacter));
        assert_eq!(parse("NOOP a\rb"), Err(CommandError::InvalidCharacter));
        assert_eq!(
            parse("MAIL\tFROM:<a@b>"),
            Err(CommandError::InvalidCharacter)
        );
    }

    #[test]
    fn helo_and_ehlo() {
        assert!(matches!(parse("EHLO client.example"), Ok(Command::Ehlo(_))));
        assert!(matches!(
            parse("helo [127.0.0.1]"),
            Ok(Command::Helo(Domain::Ipv4(_)))
        ));
        assert_eq!(
            parse("HELO"),
            Err(CommandError::HeloMissingDomain(HeloVerb::Helo))
        );
        assert_eq!(
            parse("EHLO -bad_domain-"),
            Err(CommandError::HeloInvalidDomain)
        );
        assert_eq!(parse("EHLO a b"), Err(CommandError::HeloInvalidDomain));
        assert_eq!(
            wire(CommandError::HeloMissingDomain(HeloVerb::Ehlo)),
            "501 5.5.1 Invalid command: EHLO requires domain name\r\n"
        );
    }

    #[test]
    fn mail_from_forms() {
        let Command::Mail { from, params } = parse("MAIL FROM:<a@example.org>").unwrap() else {
            panic!()
        };
        assert_eq!(from.to_string(), "<a@example.org>");
        assert_eq!(params, MailParams::default());
        // Space after the colon tolerated, as OpenSMTPD does; case ignored.
        assert!(parse("mail from: <a@example.org>").is_ok());
        assert!(matches!(
            parse("MAIL FROM:<>"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                ..
            })
        ));
        assert_eq!(parse("MAIL <a@b>"), Err(CommandError::MailSyntax));
        assert_eq!(parse("MAIL"), Err(CommandError::MailSyntax));
        assert_eq!(
            parse("MAIL FROM:a@example.org"),
            Err(CommandError::Sender(AddressError::MissingBrackets))
        );
        assert_eq!(
            parse("MAIL FROM:<;sleep 66;>"),
            Err(CommandError::Sender(AddressError::InvalidLocalPart))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b>x"),
            Err(CommandError::Param(ParamError::Syntax))
        );
    }

    #[test]
    fn mail_params() {
        let Command::Mail { params, .. } = parse(
            "MAIL FROM:<a@example.org> size=999999999999 BODY=8BITMIME RET=HDRS ENVID=xyz+2B AUTH=<>",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(params.size, Some(999_999_999_999));
        assert_eq!(params.body, Some(Body::EightBitMime));
        assert_eq!(params.ret, Some(Ret::Hdrs));
        assert_eq!(params.envid.unwrap().decode(), b"xyz+");
        assert_eq!(params.auth.unwrap().as_str(), "<>");
        let Command::Mail { params, .. } =
            parse("MAIL FROM:<a@b> SIZE=99999999999999999999").unwrap()
        else {
            panic!()
        };
        assert_eq!(params.size, Some(u64::MAX));
        for (line, err) in [
            ("MAIL FROM:<a@b> FOO=BAR", ParamError::Unknown("FOO".into())),
            (
                "MAIL FROM:<a@b> BODY=BINARYMIME",
                ParamError::UnsupportedBody,
            ),
            (
                "MAIL FROM:<a@b> BODY=9BIT",
                ParamError::InvalidValue("BODY"),
            ),
            (
                "MAIL FROM:<a@b> SIZE=1 SIZE=2",
                ParamError::Duplicate("SIZE"),
            ),
            (
                "MAIL FROM:<a@b> SMTPUTF8 smtputf8",
                ParamError::Duplicate("SMTPUTF8"),
            ),
            ("MAIL FROM:<a@b> SIZE=-1", ParamError::InvalidValue("SIZE")),
            ("MAIL FROM:<a@b> SIZE", ParamError::InvalidValue("SIZE")),
            (
                "MAIL FROM:<a@b> SIZE=123456789012345678901",
                ParamError::InvalidValue("SIZE"),
            ),
            (
                "MAIL FROM:<a@b> SMTPUTF8=yes",
                ParamError::InvalidValue("SMTPUTF8"),
            ),
            ("MAIL FROM:<a@b> RET=ALL", ParamError::InvalidValue("RET")),
            ("MAIL FROM:<a@b> ENVID=a=b", ParamError::Syntax),
            ("MAIL FROM:<a@b> ENVID=", ParamError::Syntax),
            ("MAIL FROM:<a@b> -X", ParamError::Syntax),
        ] {
            assert_eq!(parse(line), Err(CommandError::Param(err)), "{line}");
        }
        let long = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(101));
        assert_eq!(
            parse(&long),
            Err(CommandError::Param(ParamError::TooLong("ENVID")))
        );
    }

    #[test]
    fn smtputf8_sender_needs_the_flag_on_the_same_line() {
        assert_eq!(
            parse("MAIL FROM:<\u{e9}@example.org>"),
            Err(CommandError::Sender(AddressError::NonAsciiWithoutSmtputf8))
        );
        assert!(parse("MAIL FROM:<\u{e9}@example.org> SMTPUTF8").is_ok());
        assert_eq!(
            wire(CommandError::Sender(AddressError::NonAsciiWithoutSmtputf8)),
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
        );
    }

    #[test]
    fn rcpt_to_forms_and_params() {
        let Command::Rcpt { to, params } =
            parse("RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40example.net")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(to.to_string(), "<b@example.net>");
        let Some(Notify::On(on)) = params.notify else {
            panic!()
        };
        assert!(on.success() && on.delay() && !on.failure());
        let orcpt = params.orcpt.unwrap();
        assert_eq!(orcpt.addr_type, "rfc822");
        assert_eq!(orcpt.address.decode(), b"b@example.net");
        assert!(matches!(parse("RCPT TO:<root>"), Ok(Command::Rcpt { .. })));
        assert_eq!(
            parse("RCPT TO:<b@x> NOTIFY=NEVER").unwrap(),
            Command::Rcpt {
                to: ForwardPath::parse(b"<b@x>", Charset::Ascii).unwrap(),
                params: RcptParams {
                    notify: Some(Notify::Never),
                    orcpt: None
                }
            }
        );
        for (line, err) in [
            (
                "RCPT TO:<b@x> NOTIFY=NEVER,SUCCESS",
                ParamError::NotifyNeverCombined,
            ),
            (
                "RCPT TO:<b@x> NOTIFY=SUCCESS,SUCCESS",
                ParamError::InvalidValue("NOTIFY"),
            ),
            (
                "RCPT TO:<b@x> NOTIFY=SOMETIMES",
                ParamError::InvalidValue("NOTIFY"),
            ),
            ("RCPT TO:<b@x> NOTIFY=", ParamError::Syntax),
            ("RCPT TO:<b@x> ORCPT=b@x", ParamError::InvalidValue("ORCPT")),
            ("RCPT TO:<b@x> ORCPT=;b", ParamError::InvalidValue("ORCPT")),
            ("RCPT TO:<b@x> FOO=BAR", ParamError::Unknown("FOO".into())),
            ("RCPT TO:<b@x> SIZE=1", ParamError::Unknown("SIZE".into())),
            (
                "RCPT TO:<b@x> NOTIFY=NEVER NOTIFY=NEVER",
                ParamError::Duplicate("NOTIFY"),
            ),
        ] {
            assert_eq!(parse(line), Err(CommandError::Param(err)), "{line}");
        }
        assert_eq!(
            parse("RCPT TO:<>"),
            Err(CommandError::Recipient(AddressError::NullNotAllowed))
        );
        assert_eq!(parse("RCPT <b@x>"), Err(CommandError::RcptSyntax));
        // The transaction's SMTPUTF8 decides for recipients.
        assert_eq!(
            parse("RCPT TO:<\u{e9}@x>"),
            Err(CommandError::Recipient(
                AddressError::NonAsciiWithoutSmtputf8
            ))
        );
        assert!(Command::parse("RCPT TO:<\u{e9}@x>".as_bytes(), Charset::Utf8).is_ok());
    }

    #[test]
    fn auth_syntax() {
        assert_eq!(
            parse("AUTH plain AGFsaWNlAHdyb25n").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGFsaWNlAHdyb25n".into())
            }
        );
        assert_eq!(parse("AUTH"), Err(CommandError::ArgumentRequired));
        assert_eq!(parse("AUTH PLAIN a b"), Err(CommandError::AuthSyntax));
        assert_eq!(parse("AUTH PL*IN"), Err(CommandError::AuthSyntax));
    }

    #[test]
    fn every_error_reply_is_exact() {
        let cases: Vec<(CommandError, &str)> = vec![
            (
                CommandError::Empty,
                "500 5.5.2 Syntax error: empty command\r\n",
            ),
            (
                CommandError::Unrecognized,
                "500 5.5.1 Invalid command: Command unrecognized\r\n",
            ),
            (
                CommandError::NotImplemented,
                "502 5.5.1 Invalid command: Command not implemented\r\n",
            ),
            (
                CommandError::NoArgumentsAllowed,
                "501 5.5.4 Invalid command arguments: No parameters allowed\r\n",
            ),
            (
                CommandError::Sender(AddressError::EmptyLocalPart),
                "553 5.1.0 Sender address syntax error\r\n",
            ),
            (
                CommandError::Recipient(AddressError::NullNotAllowed),
                "501 5.1.3 Recipient address syntax error\r\n",
            ),
            (
                CommandError::Param(ParamError::Unknown("FOO".into())),
                "555 5.5.4 Unsupported parameter FOO\r\n",
            ),
            (
                CommandError::Param(ParamError::NotifyNeverCombined),
                "501 5.5.4 NOTIFY=NEVER cannot be combined with other values\r\n",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(wire(err), want);
        }
        // Every variant gives a reply the checked constructor accepts.
        let all = [
            CommandError::Empty,
            CommandError::InvalidCharacter,
            CommandError::Unrecognized,
            CommandError::NotImplemented,
            CommandError::HeloMissingDomain(HeloVerb::Helo),
            CommandError::HeloInvalidDomain,
            CommandError::NoArgumentsAllowed,
            CommandError::ArgumentRequired,
            CommandError::MailSyntax,
            CommandError::RcptSyntax,
            CommandError::Sender(AddressError::NonAsciiWithoutSmtputf8),
            CommandError::Sender(AddressError::InvalidDomain),
            CommandError::Recipient(AddressError::NonAsciiWithoutSmtputf8),
            CommandError::Recipient(AddressError::InvalidDomain),
            CommandError::Param(ParamError::Syntax),
            CommandError::Param(ParamError::Unknown("X".into())),
            CommandError::Param(ParamError::Duplicate("SIZE")),
            CommandError::Param(ParamError::InvalidValue("SIZE")),
            CommandError::Param(ParamError::UnsupportedBody),
            CommandError::Param(ParamError::NotifyNeverCombined),
            CommandError::Param(ParamError::TooLong("ENVID")),
            CommandError::AuthSyntax,
        ];
        for e in all {
            let r = e.reply();
            assert!(r.code() >= 500, "{e:?}");
            assert!(
                Reply::new(r.code(), r.enhanced(), r.lines().to_vec()).is_ok(),
                "{e:?}"
            );
        }
    }
}
