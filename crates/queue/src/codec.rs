//! The envelope file format (version 1).
//!
//! ```text
//! rsmtpd-envelope 1
//! id: 0e07f53e9d06e807
//! ...one `key: value` line per field...
//! checksum: <length> <crc32>
//! end
//! ```
//!
//! `length` is the byte count of everything before the checksum line and
//! `crc32` (8 lowercase hex digits) its CRC-32. A value may hold any UTF-8
//! except CR, LF and NUL: encoding one of those is an error, not an escape,
//! so no value can ever forge a line (CVE-2020-8794 was exactly that).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::crc32::crc32;
use crate::envelope::{
    BodyType, Dispatcher, DsnNotify, DsnRet, Envelope, ErrorClass, LastError, LocalTarget, Origin,
    RcptState, Sender,
};
use crate::id::EnvelopeId;

/// The version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// No envelope file is larger; a bigger one is corrupt, not read.
pub const MAX_ENVELOPE_SIZE: usize = 64 * 1024;

const MAGIC: &str = "rsmtpd-envelope ";
const END: &[u8] = b"end\n";
const CHECKSUM: &str = "checksum: ";

macro_rules! fields {
    ($($v:ident = $name:literal,)*) => {
        /// The fields of the format, in the order they are written.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field { $($v,)* }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$v,)*];

            /// The key as written in the file.
            pub fn name(self) -> &'static str {
                match self { $(Field::$v => $name,)* }
            }

            fn from_name(s: &str) -> Option<Field> {
                match s { $($name => Some(Field::$v),)* _ => None }
            }
        }
    };
}

fields! {
    Id = "id",
    Created = "created",
    Ttl = "ttl",
    Action = "action",
    Dispatcher = "dispatcher",
    Sender = "sender",
    Rcpt = "rcpt",
    Dest = "dest",
    User = "user",
    Target = "target",
    DsnNotify = "dsn-notify",
    DsnOrcpt = "dsn-orcpt",
    DsnRet = "dsn-ret",
    DsnEnvid = "dsn-envid",
    Body = "body",
    Smtputf8 = "smtputf8",
    Helo = "helo",
    Origin = "origin",
    Rdns = "rdns",
    Hostname = "hostname",
    Tag = "tag",
    AuthUser = "auth-user",
    Retry = "retry",
    LastTry = "last-try",
    NextTry = "next-try",
    LastError = "last-error",
    Hold = "hold",
    State = "state",
}

const FIELD_COUNT: usize = Field::ALL.len();

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an envelope cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field {field}: forbidden byte {byte:#04x} (CR, LF and NUL cannot be stored)")]
    ForbiddenByte { field: Field, byte: u8 },
    #[error("field {0}: empty value")]
    Empty(Field),
    #[error("field {field}: {why}")]
    NotRepresentable { field: Field, why: &'static str },
    #[error("encoded envelope is {size} bytes, more than the limit")]
    TooLarge { size: usize },
}

/// Why bytes are not a valid envelope. Each kind of damage has its own
/// variant so that the reason given for moving a file aside is precise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("file is {size} bytes or more, over the {MAX_ENVELOPE_SIZE} byte limit")]
    TooLarge { size: usize },
    #[error("no end marker (truncated file?)")]
    MissingEnd,
    #[error("not an rsmtpd envelope (bad first line)")]
    BadMagic,
    #[error("unknown envelope format version {0}")]
    UnknownVersion(u32),
    #[error("no checksum line")]
    MissingChecksum,
    #[error("malformed checksum line")]
    BadChecksumLine,
    #[error("length mismatch: stated {stated}, actual {actual}")]
    LengthMismatch { stated: usize, actual: usize },
    #[error("checksum mismatch: stated {stated:08x}, actual {actual:08x}")]
    ChecksumMismatch { stated: u32, actual: u32 },
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: not a `key: value` line")]
    BadLine { line: usize },
    #[error("line {line}: unknown field {name:?}")]
    UnknownField { line: usize, name: String },
    #[error("field {0} appears twice")]
    DuplicateField(Field),
    #[error("field {0} is missing")]
    MissingField(Field),
    #[error("field {field}: {why}")]
    BadValue { field: Field, why: &'static str },
}

// ---------------------------------------------------------------- encode

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn notify_text(n: DsnNotify) -> Result<String, EncodeError> {
    match n {
        DsnNotify::Never => Ok("never".to_owned()),
        DsnNotify::On {
            success,
            failure,
            delay,
        } => {
            let parts: Vec<&str> = [(success, "success"), (failure, "failure"), (delay, "delay")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| *n)
                .collect();
            if parts.is_empty() {
                return Err(EncodeError::NotRepresentable {
                    field: Field::DsnNotify,
                    why: "NOTIFY with no event (use Never)",
                });
            }
            Ok(parts.join(","))
        }
    }
}

/// Encodes `e` in the current format. Fails, writing nothing, on a value
/// the format cannot hold.
pub fn encode(e: &Envelope) -> Result<Vec<u8>, EncodeError> {
    use Field as F;
    let mut lines: Vec<(Field, Cow<'_, str>)> = Vec::with_capacity(FIELD_COUNT);
    lines.push((F::Id, e.id.to_string().into()));
    lines.push((F::Created, e.created.to_string().into()));
    lines.push((F::Ttl, e.ttl.to_string().into()));
    lines.push((F::Action, non_empty(F::Action, &e.action)?));
    lines.push((
        F::Dispatcher,
        match e.dispatcher {
            Dispatcher::Local => "local",
            Dispatcher::Relay => "relay",
        }
        .into(),
    ));
    lines.push((
        F::Sender,
        match &e.sender {
            Sender::Null => "<>".into(),
            Sender::Address(a) if a == "<>" => {
                return Err(EncodeError::NotRepresentable {
                    field: F::Sender,
                    why: "address \"<>\" (use Sender::Null)",
                });
            }
            Sender::Address(a) => non_empty(F::Sender, a)?,
        },
    ));
    lines.push((F::Rcpt, non_empty(F::Rcpt, &e.rcpt)?));
    lines.push((F::Dest, non_empty(F::Dest, &e.dest)?));
    if let Some(u) = &e.user {
        lines.push((F::User, non_empty(F::User, u)?));
    }
    match &e.target {
        None => {}
        Some(LocalTarget::File(path)) => {
            non_empty(F::Target, path)?;
            lines.push((F::Target, format!("file {path}").into()));
        }
        Some(LocalTarget::Command(cmd)) => {
            non_empty(F::Target, cmd)?;
            lines.push((F::Target, format!("command {cmd}").into()));
        }
    }
    if let Some(n) = e.dsn_notify {
        lines.push((F::DsnNotify, notify_text(n)?.into()));
    }
    if let Some(v) = &e.dsn_orcpt {
        lines.push((F::DsnOrcpt, non_empty(F::DsnOrcpt, v)?));
    }
    if let Some(r) = e.dsn_ret {
        let v = match r {
            DsnRet::Full => "full",
            DsnRet::Headers => "hdrs",
        };
        lines.push((F::DsnRet, v.into()));
    }
    if let Some(v) = &e.dsn_envid {
        lines.push((F::DsnEnvid, non_empty(F::DsnEnvid, v)?));
    }
    let body = match e.body {
        BodyType::SevenBit => "7bit",
        BodyType::EightBitMime => "8bitmime",
        BodyType::BinaryMime => "binarymime",
    };
    lines.push((F::Body, body.into()));
    lines.push((F::Smtputf8, yes_no(e.smtputf8).into()));
    lines.push((F::Helo, e.helo.as_str().into()));
    match &e.origin {
        Origin::LocalSocket => lines.push((F::Origin, "local".into())),
        Origin::Inet { addr, rdns } => {
            lines.push((F::Origin, format!("inet {addr}").into()));
            if let Some(r) = rdns {
                lines.push((F::Rdns, non_empty(F::Rdns, r)?));
            }
        }
    }
    lines.push((F::Hostname, e.hostname.as_str().into()));
    if let Some(v) = &e.tag {
        lines.push((F::Tag, non_empty(F::Tag, v)?));
    }
    if let Some(v) = &e.auth_user {
        lines.push((F::AuthUser, non_empty(F::AuthUser, v)?));
    }
    lines.push((F::Retry, e.retry.to_string().into()));
    if let Some(t) = e.last_try {
        lines.push((F::LastTry, t.to_string().into()));
    }
    lines.push((F::NextTry, e.next_try.to_string().into()));
    if let Some(le) = &e.last_error {
        non_empty(F::LastError, &le.text)?;
        let class = match le.class {
            ErrorClass::Temporary => "temporary",
            ErrorClass::Permanent => "permanent",
        };
        lines.push((F::LastError, format!("{class} {}", le.text).into()));
    }
    lines.push((F::Hold, yes_no(e.hold).into()));
    let state = match e.state {
        RcptState::Pending => "pending",
        RcptState::Delivered => "delivered",
        RcptState::Bounced => "bounced",
    };
    lines.push((F::State, state.into()));

    let mut out = format!("{MAGIC}{FORMAT_VERSION}\n");
    for (field, value) in &lines {
        if let Some(&byte) = value
            .as_bytes()
            .iter()
            .find(|b| matches!(b, b'\r' | b'\n' | b'\0'))
        {
            return Err(EncodeError::ForbiddenByte {
                field: *field,
                byte,
            });
        }
        out.push_str(field.name());
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    }
    let crc = crc32(out.as_bytes());
    let len = out.len();
    // Writing into a String cannot fail.
    let _ = writeln!(out, "{CHECKSUM}{len} {crc:08x}");
    out.push_str("end\n");
    if out.len() > MAX_ENVELOPE_SIZE {
        return Err(EncodeError::TooLarge { size: out.len() });
    }
    Ok(out.into_bytes())
}

fn non_empty(f: Field, v: &str) -> Result<Cow<'_, str>, EncodeError> {
    if v.is_empty() {
        Err(EncodeError::Empty(f))
    } else {
        Ok(Cow::Borrowed(v))
    }
}

// ---------------------------------------------------------------- decode

/// Decodes one envelope file. Strict: anything but what `encode` writes
/// (fields may come in any order) is an error.
pub fn decode(data: &[u8]) -> Result<Envelope, DecodeError> {
    if data.len() > MAX_ENVELOPE_SIZE {
        return Err(DecodeError::TooLarge { size: data.len() });
    }
    // The end marker must be a whole line of its own at the very end.
    let before_end = data
        .strip_suffix(END)
        .filter(|b| b.is_empty() || b.ends_with(b"\n"))
        .ok_or(DecodeError::MissingEnd)?;
    // Magic first: a file that is not an envelope at all is told as such.
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let version = first
        .strip_prefix(MAGIC.as_bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| parse_decimal::<u32>(v).ok())
        .ok_or(DecodeError::BadMagic)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    // The checksum line is the last line before the end marker.
    let without_nl = before_end
        .strip_suffix(b"\n")
        .ok_or(DecodeError::MissingChecksum)?;
    let covered_len = without_nl
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|p| p + 1)
        .ok_or(DecodeError::MissingChecksum)?;
    let (covered, ck_line) = without_nl.split_at(covered_len);
    let ck_line = std::str::from_utf8(ck_line).map_err(|_| DecodeError::BadChecksumLine)?;
    let ck_rest = ck_line
        .strip_prefix(CHECKSUM)
        .ok_or(DecodeError::MissingChecksum)?;
    let (len_s, crc_s) = ck_rest
        .split_once(' ')
        .ok_or(DecodeError::BadChecksumLine)?;
    let stated_len = parse_decimal::<usize>(len_s).map_err(|_| DecodeError::BadChecksumLine)?;
    let stated_crc = parse_crc(crc_s).ok_or(DecodeError::BadChecksumLine)?;
    if stated_len != covered.len() {
        return Err(DecodeError::LengthMismatch {
            stated: stated_len,
            actual: covered.len(),
        });
    }
    let actual_crc = crc32(covered);
    if stated_crc != actual_crc {
        return Err(DecodeError::ChecksumMismatch {
            stated: stated_crc,
            actual: actual_crc,
        });
    }

    // Fields. `covered` ends with '\n' and starts with the magic line.
    let mut values: [Option<&str>; FIELD_COUNT] = [None; FIELD_COUNT];
    let body_lines = covered
        .strip_suffix(b"\n")
        .unwrap_or(covered)
        .split(|&b| b == b'\n')
        .enumerate()
        .skip(1);
    for (idx, raw) in body_lines {
        let line = idx + 1;
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::NotUtf8 { line })?;
        if text.bytes().any(|b| b == b'\r' || b == b'\0') {
            return Err(DecodeError::BadLine { line });
        }
        let (key, value) = text.split_once(": ").ok_or(DecodeError::BadLine { line })?;
        let field = Field::from_name(key).ok_or_else(|| DecodeError::UnknownField {
            line,
            name: key.chars().take(64).collect(),
        })?;
        let slot = values
            .get_mut(field as usize)
            .ok_or(DecodeError::UnknownField {
                line,
                name: String::new(),
            })?;
        if slot.is_some() {
            return Err(DecodeError::DuplicateField(field));
        }
        *slot = Some(value);
    }
    Fields(values).build()
}

struct Fields<'a>([Option<&'a str>; FIELD_COUNT]);

fn bad(field: Field, why: &'static str) -> DecodeError {
    DecodeError::BadValue { field, why }
}

impl<'a> Fields<'a> {
    fn opt(&self, f: Field) -> Option<&'a str> {
        self.0.get(f as usize).copied().flatten()
    }

    fn req(&self, f: Field) -> Result<&'a str, DecodeError> {
        self.opt(f).ok_or(DecodeError::MissingField(f))
    }

    fn non_empty(&self, f: Field) -> Result<String, DecodeError> {
        let v = self.req(f)?;
        if v.is_empty() {
            return Err(bad(f, "empty"));
        }
        Ok(v.to_owned())
    }

    fn opt_non_empty(&self, f: Field) -> Result<Option<String>, DecodeError> {
        match self.opt(f) {
            None => Ok(None),
            Some("") => Err(bad(f, "empty")),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    fn num<T: std::str::FromStr>(&self, f: Field) -> Result<T, DecodeError> {
        parse_decimal(self.req(f)?).map_err(|why| bad(f, why))
    }

    fn opt_num<T: std::str::FromStr>(&self, f: Field) -> Result<Option<T>, DecodeError> {
        self.opt(f)
            .map(|v| parse_decimal(v).map_err(|why| bad(f, why)))
            .transpose()
    }

    fn yes_no(&self, f: Field) -> Result<bool, DecodeError> {
        match self.req(f)? {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(bad(f, "expected yes or no")),
        }
    }

    fn build(self) -> Result<Envelope, DecodeError> {
        use Field as F;
        let id: EnvelopeId = self
            .req(F::Id)?
            .parse()
            .map_err(|_| bad(F::Id, "not an envelope id"))?;
        let dispatcher = match self.req(F::Dispatcher)? {
            "local" => Dispatcher::Local,
            "relay" => Dispatcher::Relay,
            _ => return Err(bad(F::Dispatcher, "expected local or relay")),
        };
        let sender = match self.req(F::Sender)? {
            "" => return Err(bad(F::Sender, "empty")),
            "<>" => Sender::Null,
            a => Sender::Address(a.to_owned()),
        };
        let dsn_notify = self.opt(F::DsnNotify).map(parse_notify).transpose()?;
        let dsn_ret = match self.opt(F::DsnRet) {
            None => None,
            Some("full") => Some(DsnRet::Full),
            Some("hdrs") => Some(DsnRet::Headers),
            Some(_) => return Err(bad(F::DsnRet, "expected full or hdrs")),
        };
        let body = match self.req(F::Body)? {
            "7bit" => BodyType::SevenBit,
            "8bitmime" => BodyType::EightBitMime,
            "binarymime" => BodyType::BinaryMime,
            _ => return Err(bad(F::Body, "expected 7bit, 8bitmime or binarymime")),
        };
        let rdns = self.opt_non_empty(F::Rdns)?;
        let origin = match self.req(F::Origin)? {
            "local" => {
                if rdns.is_some() {
                    return Err(bad(F::Rdns, "rdns with a local origin"));
                }
                Origin::LocalSocket
            }
            o => {
                let addr = o
                    .strip_prefix("inet ")
                    .ok_or(bad(F::Origin, "expected local or inet ADDRESS"))?;
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|_| bad(F::Origin, "not an IP address"))?;
                // Canonical form only, so that decode and encode agree.
                if addr.to_string() != o.get(5..).unwrap_or_default() {
                    return Err(bad(F::Origin, "IP address not in canonical form"));
                }
                Origin::Inet { addr, rdns }
            }
        };
        let last_error = match self.opt(F::LastError) {
            None => None,
            Some(v) => {
                let (class, text) = v
                    .split_once(' ')
                    .ok_or(bad(F::LastError, "expected CLASS TEXT"))?;
                let class = match class {
                    "temporary" => ErrorClass::Temporary,
                    "permanent" => ErrorClass::Permanent,
                    _ => return Err(bad(F::LastError, "class is not temporary or permanent")),
                };
                if text.is_empty() {
                    return Err(bad(F::LastError, "empty text"));
                }
                Some(LastError {
                    class,
                    text: text.to_owned(),
                })
            }
        };
        let state = match self.req(F::State)? {
            "pending" => RcptState::Pending,
            "delivered" => RcptState::Delivered,
            "bounced" => RcptState::Bounced,
            _ => return Err(bad(F::State, "expected pending, delivered or bounced")),
        };
        Ok(Envelope {
            id,
            created: self.num(F::Created)?,
            ttl: self.num(F::Ttl)?,
            action: self.non_empty(F::Action)?,
            dispatcher,
            sender,
            rcpt: self.non_empty(F::Rcpt)?,
            dest: self.non_empty(F::Dest)?,
            user: self.opt_non_empty(F::User)?,
            target: match self.opt(F::Target) {
                None => None,
                Some(v) => match v.split_once(' ') {
                    Some(("file", path)) if !path.is_empty() => {
                        Some(LocalTarget::File(path.to_owned()))
                    }
                    Some(("command", cmd)) if !cmd.is_empty() => {
                        Some(LocalTarget::Command(cmd.to_owned()))
                    }
                    _ => return Err(bad(F::Target, "expected file PATH or command CMD")),
                },
            },
            dsn_notify,
            dsn_orcpt: self.opt_non_empty(F::DsnOrcpt)?,
            dsn_ret,
            dsn_envid: self.opt_non_empty(F::DsnEnvid)?,
            body,
            smtputf8: self.yes_no(F::Smtputf8)?,
            helo: self.req(F::Helo)?.to_owned(),
            origin,
            hostname: self.req(F::Hostname)?.to_owned(),
            tag: self.opt_non_empty(F::Tag)?,
            auth_user: self.opt_non_empty(F::AuthUser)?,
            retry: self.num(F::Retry)?,
            last_try: self.opt_num(F::LastTry)?,
            next_try: self.num(F::NextTry)?,
            last_error,
            hold: self.yes_no(F::Hold)?,
            state,
        })
    }
}

fn parse_notify(v: &str) -> Result<DsnNotify, DecodeError> {
    if v == "never" {
        return Ok(DsnNotify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for word in v.split(',') {
        let flag = match word {
            "success" => &mut success,
            "failure" => &mut failure,
            "delay" => &mut delay,
            _ => return Err(bad(Field::DsnNotify, "unknown NOTIFY keyword")),
        };
        if *flag {
            return Err(bad(Field::DsnNotify, "NOTIFY keyword repeated"));
        }
        *flag = true;
    }
    Ok(DsnNotify::On {
        success,
        failure,
        delay,
    })
}

/// A canonical decimal: digits only, no sign, no leading zero.
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Result<T, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number");
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err("leading zero");
    }
    s.parse().map_err(|_| "number out of range")
}

fn parse_crc(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MsgId;

    fn minimal() -> Envelope {
        Envelope {
            id: "0e07f53e9d06e807".parse().unwrap(),
            created: 1_795_717_118,
            ttl: 345_600,
            action: "relay".into(),
            dispatcher: Dispatcher::Relay,
            sender: Sender::Null,
            rcpt: "b@example.net".into(),
            dest: "b@example.net".into(),
            user: None,
            target: None,
            dsn_notify: None,
            dsn_orcpt: None,
            dsn_ret: None,
            dsn_envid: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            helo: String::new(),
            origin: Origin::LocalSocket,
            hostname: "mx.example.org".into(),
            tag: None,
            auth_user: None,
            retry: 0,
            last_try: None,
            next_try: 1_795_717_118,
            last_error: None,
            hold: false,
            state: RcptState::Pending,
        }
    }

    fn full() -> Envelope {
        Envelope {
            action: "local mail".into(),
            dispatcher: Dispatcher::Local,
            sender: Sender::Address("a@example.org".into()),
            rcpt: "postmaster@example.net".into(),
            dest: "bob@example.net".into(),
            user: Some("bob".into()),
            target: Some(LocalTarget::Command("/usr/bin/procmail -d bob".into())),
            dsn_notify: Some(DsnNotify::On {
                success: true,
                failure: true,
                delay: false,
            }),
            dsn_orcpt: Some("rfc822;postmaster@example.net".into()),
            dsn_ret: Some(DsnRet::Headers),
            dsn_envid: Some("QQ314159".into()),
            body: BodyType::EightBitMime,
            smtputf8: true,
            helo: "client.example.org".into(),
            origin: Origin::Inet {
                addr: "2001:db8::25".parse().unwrap(),
                rdns: Some("client.example.org".into()),
            },
            tag: Some("ÜBER".into()),
            auth_user: Some("alice".into()),
            retry: 3,
            last_try: Some(1_795_718_000),
            next_try: 1_795_719_000,
            last_error: Some(LastError {
                class: ErrorClass::Temporary,
                text: "421 4.3.0 try: later".into(),
            }),
            hold: true,
            state: RcptState::Bounced,
            ..minimal()
        }
    }

    const FULL: &str = "rsmtpd-envelope 1
id: 0e07f53e9d06e807
created: 1795717118
ttl: 345600
action: local mail
dispatcher: local
sender: a@example.org
rcpt: postmaster@example.net
dest: bob@example.net
user: bob
target: command /usr/bin/procmail -d bob
dsn-notify: success,failure
dsn-orcpt: rfc822;postmaster@example.net
dsn-ret: hdrs
dsn-envid: QQ314159
body: 8bitmime
smtputf8: yes
helo: client.example.org
origin: inet 2001:db8::25
rdns: client.example.org
hostname: mx.example.org
tag: ÜBER
auth-user: alice
retry: 3
last-try: 1795718000
next-try: 1795719000
last-error: temporary 421 4.3.0 try: later
hold: yes
state: bounced
";

    /// Magic and body lines sealed with a correct checksum and end marker.
    fn seal(covered: &[u8]) -> Vec<u8> {
        let mut out = covered.to_vec();
        out.extend_from_slice(
            format!("checksum: {} {:08x}\nend\n", covered.len(), crc32(covered)).as_bytes(),
        );
        out
    }

    fn min_text() -> String {
        let bytes = encode(&minimal()).unwrap();
        let s = String::from_utf8(bytes).unwrap();
        let cut = s.find("checksum: ").unwrap();
        s[..cut].to_owned()
    }

    fn with_line(find: &str, replace: &str) -> Vec<u8> {
        let t = min_text();
        assert!(t.contains(find), "{find}");
        seal(t.replacen(find, replace, 1).as_bytes())
    }

    #[test]
    fn full_envelope_exact_bytes_and_round_trip() {
        let bytes = encode(&full()).unwrap();
        assert_eq!(bytes, seal(FULL.as_bytes()));
        let tail = format!(
            "checksum: {} {:08x}\nend\n",
            FULL.len(),
            crc32(FULL.as_bytes())
        );
        assert!(bytes.ends_with(tail.as_bytes()));
        assert_eq!(decode(&bytes), Ok(full()));
    }

    #[test]
    fn minimal_round_trip_and_null_sender() {
        let bytes = encode(&minimal()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\nsender: <>\n"));
        assert!(text.contains("\nhelo: \n"));
        assert!(text.contains("\norigin: local\n"));
        assert!(!text.contains("dsn-"));
        assert_eq!(decode(&bytes), Ok(minimal()));
    }

    #[test]
    fn fields_in_any_order_decode() {
        let t = min_text();
        let mut lines: Vec<&str> = t.lines().collect();
        lines[1..].reverse();
        let mut s = lines.join("\n");
        s.push('\n');
        assert_eq!(decode(&seal(s.as_bytes())), Ok(minimal()));
    }

    #[test]
    fn encode_refuses_cr_lf_nul() {
        let mut e = minimal();
        e.rcpt = "b@example.net\nstate: delivered".into();
        assert_eq!(
            encode(&e),
            Err(EncodeError::ForbiddenByte {
                field: Field::Rcpt,
                byte: b'\n'
            })
        );
        let mut e = minimal();
        e.helo = "x\ry".into();
        assert_eq!(
            encode(&e),
            Err(EncodeError::ForbiddenByte {
                field: Field::Helo,
                byte: b'\r'
            })
        );
        let mut e = minimal();
        e.last_error = Some(LastError {
            class: ErrorClass::Permanent,
            text: "550\0".into(),
        });
        assert_eq!(
            encode(&e),
            Err(EncodeError::ForbiddenByte {
                field: Field::LastError,
                byte: 0
            })
        );
    }

    #[test]
    fn encode_refuses_unrepresentable() {
        let mut e = minimal();
        e.action.clear();
        assert_eq!(encode(&e), Err(EncodeError::Empty(Field::Action)));
        let mut e = minimal();
        e.tag = Some(String::new());
        assert_eq!(encode(&e), Err(EncodeError::Empty(Field::Tag)));
        let mut e = minimal();
        e.sender = Sender::Address("<>".into());
        assert!(matches!(
            encode(&e),
            Err(EncodeError::NotRepresentable {
                field: Field::Sender,
                ..
            })
        ));
        let mut e = minimal();
        e.sender = Sender::Address(String::new());
        assert_eq!(encode(&e), Err(EncodeError::Empty(Field::Sender)));
        let mut e = minimal();
        e.dsn_notify = Some(DsnNotify::On {
            success: false,
            failure: false,
            delay: false,
        });
        assert!(matches!(
            encode(&e),
            Err(EncodeError::NotRepresentable {
                field: Field::DsnNotify,
                ..
            })
        ));
        let mut e = minimal();
        e.tag = Some("x".repeat(MAX_ENVELOPE_SIZE));
        assert!(matches!(encode(&e), Err(EncodeError::TooLarge { .. })));
    }

    #[test]
    fn decode_framing_errors() {
        let good = encode(&minimal()).unwrap();
        let mut big = good.clone();
        big.resize(MAX_ENVELOPE_SIZE + 1, b'x');
        assert_eq!(
            decode(&big),
            Err(DecodeError::TooLarge {
                size: MAX_ENVELOPE_SIZE + 1
            })
        );
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::MissingEnd)
        );
        assert_eq!(decode(b""), Err(DecodeError::MissingEnd));
        assert_eq!(decode(b"end\n"), Err(DecodeError::BadMagic));
        let mut glued = good[..good.len() - 4].to_vec();
        glued.pop();
        glued.extend_from_slice(b"end\n");
        assert_eq!(decode(&glued), Err(DecodeError::MissingEnd));
        let t = String::from_utf8(good.clone()).unwrap();
        assert_eq!(
            decode(
                t.replacen("rsmtpd-envelope 1", "smtpd-envelope 1", 1)
                    .as_bytes()
            ),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(
            decode(
                t.replacen("rsmtpd-envelope 1", "rsmtpd-envelope 01", 1)
                    .as_bytes()
            ),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(
            decode(
                t.replacen("rsmtpd-envelope 1", "rsmtpd-envelope 2", 1)
                    .as_bytes()
            ),
            Err(DecodeError::UnknownVersion(2))
        );
        assert_eq!(
            decode(b"rsmtpd-envelope 1\nend\n"),
            Err(DecodeError::MissingChecksum)
        );
        // The checksum line removed: the last line is a field.
        let mut no_ck = min_text().into_bytes();
        no_ck.extend_from_slice(b"end\n");
        assert_eq!(decode(&no_ck), Err(DecodeError::MissingChecksum));
        let cov = min_text();
        let bad_ck = format!(
            "{cov}checksum: {} {:08X}\nend\n",
            cov.len(),
            crc32(cov.as_bytes())
        );
        assert_eq!(decode(bad_ck.as_bytes()), Err(DecodeError::BadChecksumLine));
        let bad_ck = format!(
            "{cov}checksum: +{} {:08x}\nend\n",
            cov.len(),
            crc32(cov.as_bytes())
        );
        assert_eq!(decode(bad_ck.as_bytes()), Err(DecodeError::BadChecksumLine));
        let bad_len = format!(
            "{cov}checksum: {} {:08x}\nend\n",
            cov.len() + 1,
            crc32(cov.as_bytes())
        );
        assert_eq!(
            decode(bad_len.as_bytes()),
            Err(DecodeError::LengthMismatch {
                stated: cov.len() + 1,
                actual: cov.len()
            })
        );
        // One flipped bit in a value.
        let mut flipped = good.clone();
        let pos = t.find("b@example").unwrap();
        flipped[pos] ^= 0x01;
        assert!(matches!(
            decode(&flipped),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
        // CRLF line ends (a file "fixed" by an editor) are not ours.
        let crlf = t.replace('\n', "\r\n");
        assert_eq!(decode(crlf.as_bytes()), Err(DecodeError::MissingEnd));
    }

    #[test]
    fn decode_field_errors() {
        assert_eq!(
            decode(&with_line(
                "rcpt: b@example.net\n",
                "rcpt: b@example.net\nrcpt: c@example.net\n"
            )),
            Err(DecodeError::DuplicateField(Field::Rcpt))
        );
        assert_eq!(
            decode(&with_line("dest: b@example.net\n", "")),
            Err(DecodeError::MissingField(Field::Dest))
        );
        assert_eq!(
            decode(&with_line("hold: no\n", "hold: no\ncolor: red\n")),
            Err(DecodeError::UnknownField {
                line: 18,
                name: "color".into()
            })
        );
        assert_eq!(
            decode(&with_line("hold: no\n", "hold:no\n")),
            Err(DecodeError::BadLine { line: 17 })
        );
        assert_eq!(
            decode(&with_line("hold: no\n", "hold: no\r\n")),
            Err(DecodeError::BadLine { line: 17 })
        );
        assert_eq!(
            decode(&with_line("helo: \n", "helo: \0\n")),
            Err(DecodeError::BadLine { line: 12 })
        );
        let mut t = min_text().into_bytes();
        t.extend_from_slice(b"tag: \xff\n");
        assert_eq!(decode(&seal(&t)), Err(DecodeError::NotUtf8 { line: 19 }));
        let bad = |find: &str, replace: &str, field: Field| {
            let r = decode(&with_line(find, replace));
            assert!(
                matches!(r, Err(DecodeError::BadValue { field: f, .. }) if f == field),
                "{replace:?}: {r:?}"
            );
        };
        bad(
            "created: 1795717118",
            "created: +1795717118",
            Field::Created,
        );
        bad(
            "created: 1795717118",
            "created: 01795717118",
            Field::Created,
        );
        bad(
            "created: 1795717118",
            "created: 99999999999999999999",
            Field::Created,
        );
        bad("retry: 0", "retry: 4294967296", Field::Retry);
        bad("retry: 0", "retry: ", Field::Retry);
        bad("id: 0e07f53e9d06e807", "id: 0E07F53E9D06E807", Field::Id);
        bad("id: 0e07f53e9d06e807", "id: 000000009d06e807", Field::Id);
        bad("dispatcher: relay", "dispatcher: mda", Field::Dispatcher);
        bad("sender: <>", "sender: ", Field::Sender);
        bad("rcpt: b@example.net", "rcpt: ", Field::Rcpt);
        bad("action: relay", "action: ", Field::Action);
        bad("body: 7bit", "body: 8BITMIME", Field::Body);
        bad("smtputf8: no", "smtputf8: true", Field::Smtputf8);
        bad("origin: local", "origin: inet 2001:DB8::1", Field::Origin);
        bad("origin: local", "origin: inet 192.0.2.300", Field::Origin);
        bad("origin: local", "origin: unix", Field::Origin);
        bad(
            "origin: local",
            "origin: local\nrdns: x.example",
            Field::Rdns,
        );
        bad(
            "hold: no",
            "hold: no\ndsn-notify: success,success",
            Field::DsnNotify,
        );
        bad("hold: no", "hold: no\ndsn-notify: ", Field::DsnNotify);
        bad(
            "hold: no",
            "hold: no\ndsn-notify: never,success",
            Field::DsnNotify,
        );
        bad("hold: no", "hold: no\ndsn-ret: FULL", Field::DsnRet);
        bad("hold: no", "hold: no\ntag: ", Field::Tag);
        bad(
            "hold: no",
            "hold: no\nlast-error: fatal boom",
            Field::LastError,
        );
        bad(
            "hold: no",
            "hold: no\nlast-error: temporary ",
            Field::LastError,
        );
        bad(
            "hold: no",
            "hold: no\nlast-error: temporary",
            Field::LastError,
        );
        bad("hold: no", "hold: no\nlast-try: -1", Field::LastTry);
        bad("state: pending", "state: done", Field::State);
    }

    #[test]
    fn ipv4_origin_round_trips() {
        let mut e = minimal();
        e.origin = Origin::Inet {
            addr: "192.0.2.1".parse().unwrap(),
            rdns: None,
        };
        e.id = crate::id::EnvelopeId::new(MsgId::new(1).unwrap(), 0);
        let b = encode(&e).unwrap();
        assert!(String::from_utf8_lossy(&b).contains("\norigin: inet 192.0.2.1\n"));
        assert!(String::from_utf8_lossy(&b).contains("\nid: 0000000100000000\n"));
        assert_eq!(decode(&b), Ok(e));
    }
}
