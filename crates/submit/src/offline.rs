//! The offline queue file: a submission written by sendmail while the
//! daemon was down, into the world-writable, sticky offline folder, and
//! submitted again by the daemon later, as the file's owner.
//!
//! The format, text lines ended by LF, then the message:
//!
//! ```text
//! rsmtpd-offline 1
//! from <sender>           exactly once, first; empty value: the null sender
//! rcpt <address>          1 to 1000 times
//! notify <NOTIFY value>   optional: NEVER, or a list of SUCCESS, FAILURE, DELAY
//! ret full|hdrs           optional
//! envid <ENVID>           optional: printable ASCII, at most 100 octets
//!                         an empty line
//! <the message>           CRLF lines, each at most 998 octets, the last ended
//! ```
//!
//! The reader trusts nothing: any local user can write such a file, and the
//! daemon reads it with privileges. [`decode`] accepts exactly what
//! [`encode`] writes (so `encode(decode(f)) == f`): the exact magic and
//! version; known keys only, in the order above, each at most once
//! (`rcpt` excepted); a single space after the key; addresses that are
//! plausible, with a domain, at most 256 octets; no control character in a
//! value; a message without NUL, bare CR or bare LF; the whole file at most
//! [`MAX_OFFLINE_FILE`] octets. No input makes it panic; time and memory
//! are linear.
//!
//! What the daemon must do around it (I/O, not here): open each file with
//! `O_NOFOLLOW` (and `O_NONBLOCK`, then check it is a regular file with
//! one link, with `fstat` on the descriptor), take the owner from that
//! `fstat`, read at most [`MAX_OFFLINE_FILE`] + 1 octets, and submit as
//! that owner: nothing in the file says who wrote it.

use crate::address::{MAX_ADDRESS_OCTETS, is_qualified_address};
use crate::sysexits::{EX_DATAERR, EX_SOFTWARE};
use crate::{MAX_RECIPIENTS, Ret, is_valid_envid, normalize_notify};

/// The largest offline file, in octets.
pub const MAX_OFFLINE_FILE: usize = 64 << 20;
/// The first line, without its LF.
const MAGIC: &[u8] = b"rsmtpd-offline 1";
/// The first line's constant part.
const MAGIC_PREFIX: &[u8] = b"rsmtpd-offline ";
/// The longest line before the message, LF excluded: `notify` and an
/// address, with room to spare.
const MAX_META_LINE: usize = 16 + MAX_ADDRESS_OCTETS;
/// RFC 5322 2.1.1.
const MAX_MESSAGE_LINE: usize = 998;

/// One submission waiting for the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfflineSubmission {
    /// The envelope sender, `local@domain`; empty for the null sender.
    pub sender: String,
    /// The envelope recipients, each `local@domain`.
    pub recipients: Vec<String>,
    /// The DSN NOTIFY value in SMTP form (see [`crate::normalize_notify`]).
    pub notify: Option<String>,
    pub ret: Option<Ret>,
    /// The DSN envelope id.
    pub envid: Option<String>,
    /// The prepared message (see [`crate::prepare`]).
    pub message: Vec<u8>,
}

/// What is wrong with the message part of an offline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageFault {
    #[error("empty message")]
    Empty,
    #[error("NUL octet")]
    Nul,
    #[error("bare CR")]
    BareCr,
    #[error("bare LF")]
    BareLf,
    #[error("longer than {MAX_MESSAGE_LINE} octets")]
    LineTooLong,
    #[error("last line not ended by CRLF")]
    Unterminated,
}

/// Why an offline file was refused (or could not be written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineError {
    #[error("offline file larger than {MAX_OFFLINE_FILE} octets")]
    TooBig,
    #[error("not an rsmtpd offline file")]
    BadMagic,
    #[error("unsupported offline file version {0:?}")]
    UnsupportedVersion(String),
    #[error("line {line}: longer than {MAX_META_LINE} octets")]
    LineTooLong { line: usize },
    #[error("truncated offline file: no empty line before the message")]
    Truncated,
    #[error("line {line}: expected a key, a space and a value")]
    Malformed { line: usize },
    #[error("line {line}: unknown key {key:?}")]
    UnknownKey { line: usize, key: String },
    #[error("line {line}: {key} given twice")]
    Duplicate { line: usize, key: &'static str },
    #[error("line {line}: {key} out of order (from, rcpt, notify, ret, envid)")]
    OutOfOrder { line: usize, key: &'static str },
    #[error("line {line}: invalid {key} value")]
    BadValue { line: usize, key: &'static str },
    #[error("the first line after the version must be from")]
    MissingFrom,
    #[error("no recipients")]
    NoRecipients,
    #[error("more than {MAX_RECIPIENTS} recipients")]
    TooManyRecipients,
    #[error("message line {line}: {fault}")]
    BadMessage { line: usize, fault: MessageFault },
    /// [`encode`] only: a field that could not be read back.
    #[error("cannot write an offline file with this {0} value")]
    InvalidField(&'static str),
}

impl OfflineError {
    /// The sysexits(3) code to exit with.
    pub fn exit_code(&self) -> u8 {
        match self {
            OfflineError::InvalidField(_) => EX_SOFTWARE,
            OfflineError::TooBig
            | OfflineError::BadMagic
            | OfflineError::UnsupportedVersion(_)
            | OfflineError::LineTooLong { .. }
            | OfflineError::Truncated
            | OfflineError::Malformed { .. }
            | OfflineError::UnknownKey { .. }
            | OfflineError::Duplicate { .. }
            | OfflineError::OutOfOrder { .. }
            | OfflineError::BadValue { .. }
            | OfflineError::MissingFrom
            | OfflineError::NoRecipients
            | OfflineError::TooManyRecipients
            | OfflineError::BadMessage { .. } => EX_DATAERR,
        }
    }
}

/// The keys, in their order in the file.
const KEYS: [&str; 5] = ["from", "rcpt", "notify", "ret", "envid"];
const FROM: usize = 0;
const RCPT: usize = 1;
const NOTIFY: usize = 2;
const RET: usize = 3;
const ENVID: usize = 4;

fn valid_sender(s: &str) -> bool {
    s.is_empty() || is_qualified_address(s)
}

fn valid_notify(s: &str) -> bool {
    normalize_notify(s).as_deref() == Some(s)
}

fn parse_ret(s: &str) -> Option<Ret> {
    [Ret::Full, Ret::Hdrs].into_iter().find(|r| r.as_str() == s)
}

/// The message part: CRLF lines, no NUL, none longer than 998 octets.
fn check_message(m: &[u8]) -> Result<(), OfflineError> {
    let mut line = 1;
    let fault = |line, fault| Err(OfflineError::BadMessage { line, fault });
    if m.is_empty() {
        return fault(line, MessageFault::Empty);
    }
    let mut len = 0;
    let mut i = 0;
    while let Some(&b) = m.get(i) {
        match b {
            0 => return fault(line, MessageFault::Nul),
            b'\r' if m.get(i + 1) == Some(&b'\n') => {
                line += 1;
                len = 0;
                i += 2;
                continue;
            }
            b'\r' => return fault(line, MessageFault::BareCr),
            b'\n' => return fault(line, MessageFault::BareLf),
            _ => {
                len += 1;
                if len > MAX_MESSAGE_LINE {
                    return fault(line, MessageFault::LineTooLong);
                }
            }
        }
        i += 1;
    }
    if len > 0 {
        return fault(line, MessageFault::Unterminated);
    }
    Ok(())
}

/// Writes an offline file; refuses what [`decode`] would refuse.
pub fn encode(sub: &OfflineSubmission) -> Result<Vec<u8>, OfflineError> {
    if !valid_sender(&sub.sender) {
        return Err(OfflineError::InvalidField("from"));
    }
    if sub.recipients.is_empty() {
        return Err(OfflineError::NoRecipients);
    }
    if sub.recipients.len() > MAX_RECIPIENTS {
        return Err(OfflineError::TooManyRecipients);
    }
    if !sub.recipients.iter().all(|r| is_qualified_address(r)) {
        return Err(OfflineError::InvalidField("rcpt"));
    }
    if sub.notify.as_deref().is_some_and(|n| !valid_notify(n)) {
        return Err(OfflineError::InvalidField("notify"));
    }
    if sub.envid.as_deref().is_some_and(|e| !is_valid_envid(e)) {
        return Err(OfflineError::InvalidField("envid"));
    }
    if sub.message.len() > MAX_OFFLINE_FILE {
        return Err(OfflineError::TooBig);
    }
    check_message(&sub.message)?;

    let mut out = Vec::with_capacity(sub.message.len() + 64 + sub.recipients.len() * 32);
    let mut line = |key: &str, value: &str| {
        out.extend_from_slice(key.as_bytes());
        out.push(b' ');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    };
    line("rsmtpd-offline", "1");
    line(KEYS[FROM], &sub.sender);
    for r in &sub.recipients {
        line(KEYS[RCPT], r);
    }
    if let Some(n) = &sub.notify {
        line(KEYS[NOTIFY], n);
    }
    if let Some(r) = sub.ret {
        line(KEYS[RET], r.as_str());
    }
    if let Some(e) = &sub.envid {
        line(KEYS[ENVID], e);
    }
    out.push(b'\n');
    out.extend_from_slice(&sub.message);
    if out.len() > MAX_OFFLINE_FILE {
        return Err(OfflineError::TooBig);
    }
    Ok(out)
}

/// The next LF-ended line of the part before the message, at most
/// [`MAX_META_LINE`] octets; `rest` moves past it.
fn take_line<'a>(rest: &mut &'a [u8], line: usize) -> Result<&'a [u8], OfflineError> {
    let all: &'a [u8] = rest;
    let window = all.get(..MAX_META_LINE + 1).unwrap_or(all);
    match window.iter().position(|&b| b == b'\n') {
        Some(p) => {
            let (l, after) = all.split_at(p);
            *rest = after.get(1..).unwrap_or_default();
            Ok(l)
        }
        None if window.len() > MAX_META_LINE => Err(OfflineError::LineTooLong { line }),
        None => Err(OfflineError::Truncated),
    }
}

/// Reads an offline file, strictly; see the module doc.
pub fn decode(bytes: &[u8]) -> Result<OfflineSubmission, OfflineError> {
    if bytes.len() > MAX_OFFLINE_FILE {
        return Err(OfflineError::TooBig);
    }
    if !bytes.starts_with(MAGIC_PREFIX) {
        return Err(OfflineError::BadMagic);
    }
    let mut rest = bytes;
    let first = take_line(&mut rest, 1).map_err(|_| OfflineError::BadMagic)?;
    if first != MAGIC {
        let version = first.get(MAGIC_PREFIX.len()..).unwrap_or_default();
        let shown = String::from_utf8_lossy(version.get(..32).unwrap_or(version));
        return Err(OfflineError::UnsupportedVersion(shown.into_owned()));
    }

    let mut sub = OfflineSubmission::default();
    let mut seen = [false; KEYS.len()];
    let mut last = FROM;
    let mut number = 1;
    loop {
        number += 1;
        let line = take_line(&mut rest, number)?;
        if line.is_empty() {
            break;
        }
        let space = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or(OfflineError::Malformed { line: number })?;
        let (key, value) = (&line[..space], &line[space + 1..]);
        let Some(k) = KEYS.iter().position(|k| k.as_bytes() == key) else {
            let shown = String::from_utf8_lossy(key.get(..32).unwrap_or(key));
            return Err(OfflineError::UnknownKey {
                line: number,
                key: shown.into_owned(),
            });
        };
        let name = KEYS[k];
        if !seen[FROM] && k != FROM {
            return Err(OfflineError::MissingFrom);
        }
        if seen[k] && k != RCPT {
            return Err(OfflineError::Duplicate {
                line: number,
                key: name,
            });
        }
        if k < last {
            return Err(OfflineError::OutOfOrder {
                line: number,
                key: name,
            });
        }
        seen[k] = true;
        last = k;
        let bad = OfflineError::BadValue {
            line: number,
            key: name,
        };
        let value = std::str::from_utf8(value).map_err(|_| bad.clone())?;
        match k {
            FROM if valid_sender(value) => sub.sender = value.to_owned(),
            RCPT if is_qualified_address(value) => {
                if sub.recipients.len() == MAX_RECIPIENTS {
                    return Err(OfflineError::TooManyRecipients);
                }
                sub.recipients.push(value.to_owned());
            }
            NOTIFY if valid_notify(value) => sub.notify = Some(value.to_owned()),
            RET => sub.ret = Some(parse_ret(value).ok_or(bad)?),
            ENVID if is_valid_envid(value) => sub.envid = Some(value.to_owned()),
            _ => return Err(bad),
        }
    }
    if !seen[FROM] {
        return Err(OfflineError::MissingFrom);
    }
    if sub.recipients.is_empty() {
        return Err(OfflineError::NoRecipients);
    }
    check_message(rest)?;
    sub.message = rest.to_vec();
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OfflineSubmission {
        OfflineSubmission {
            sender: "joe@host.example".into(),
            recipients: vec!["a@x.org".into(), "\"b c\"@y.org".into()],
            notify: Some("SUCCESS,FAILURE".into()),
            ret: Some(Ret::Hdrs),
            envid: Some("id 42+x".into()),
            message: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
        }
    }

    const SAMPLE: &str = "rsmtpd-offline 1\nfrom joe@host.example\nrcpt a@x.org\nrcpt \"b c\"@y.org\nnotify SUCCESS,FAILURE\nret hdrs\nenvid id 42+x\n\nSubject: s\r\n\r\nbody\r\n";

    #[test]
    fn encodes_the_documented_format() {
        assert_eq!(encode(&sample()).unwrap(), SAMPLE.as_bytes());
    }

    #[test]
    fn round_trips() {
        let minimal = OfflineSubmission {
            sender: String::new(),
            recipients: vec!["r@x.org".into()],
            message: b"a\r\n".to_vec(),
            ..OfflineSubmission::default()
        };
        let many = OfflineSubmission {
            recipients: (0..MAX_RECIPIENTS).map(|i| format!("u{i}@x.org")).collect(),
            notify: Some("NEVER".into()),
            ret: Some(Ret::Full),
            envid: None,
            sender: "j\u{f6}e@b\u{fc}cher.de".into(),
            message: [b"x: y\r\n\r\n".as_slice(), &[0xff, b'\r', b'\n']].concat(),
        };
        for s in [sample(), minimal, many] {
            let bytes = encode(&s).unwrap();
            assert_eq!(decode(&bytes).unwrap(), s);
            assert_eq!(encode(&decode(&bytes).unwrap()).unwrap(), bytes);
        }
        assert_eq!(
            decode(b"rsmtpd-offline 1\nfrom \nrcpt a@b\n\nx\r\n")
                .unwrap()
                .sender,
            ""
        );
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let cases: Vec<(OfflineSubmission, OfflineError)> = vec![
            (
                OfflineSubmission {
                    sender: "a@x\r\nrcpt evil@x".into(),
                    ..sample()
                },
                OfflineError::InvalidField("from"),
            ),
            (
                OfflineSubmission {
                    recipients: vec!["a@x.org\nrcpt b@x.org".into()],
                    ..sample()
                },
                OfflineError::InvalidField("rcpt"),
            ),
            (
                OfflineSubmission {
                    recipients: vec!["bare".into()],
                    ..sample()
                },
                OfflineError::InvalidField("rcpt"),
            ),
            (
                OfflineSubmission {
                    recipients: vec![],
                    ..sample()
                },
                OfflineError::NoRecipients,
            ),
            (
                OfflineSubmission {
                    recipients: vec!["a@x.org".into(); MAX_RECIPIENTS + 1],
                    ..sample()
                },
                OfflineError::TooManyRecipients,
            ),
            (
                OfflineSubmission {
                    notify: Some("success".into()),
                    ..sample()
                },
                OfflineError::InvalidField("notify"),
            ),
            (
                OfflineSubmission {
                    envid: Some("a\0b".into()),
                    ..sample()
                },
                OfflineError::InvalidField("envid"),
            ),
            (
                OfflineSubmission {
                    message: b"a\nb\r\n".to_vec(),
                    ..sample()
                },
                OfflineError::BadMessage {
                    line: 1,
                    fault: MessageFault::BareLf,
                },
            ),
            (
                OfflineSubmission {
                    message: vec![],
                    ..sample()
                },
                OfflineError::BadMessage {
                    line: 1,
                    fault: MessageFault::Empty,
                },
            ),
        ];
        for (s, e) in cases {
            assert_eq!(encode(&s), Err(e));
        }
        assert_eq!(OfflineError::InvalidField("from").exit_code(), EX_SOFTWARE);
    }

    #[test]
    fn hostile_files_are_refused() {
        let head = "rsmtpd-offline 1\nfrom a@x.org\nrcpt b@y.org\n";
        let long_rcpt = format!("{head}rcpt {}@x.org\n\nm\r\n", "a".repeat(300));
        let too_many = format!(
            "rsmtpd-offline 1\nfrom a@x.org\n{}\nm\r\n",
            "rcpt b@y.org\n".repeat(MAX_RECIPIENTS + 1)
        );
        use MessageFault as F;
        use OfflineError as E;
        let cases: Vec<(Vec<u8>, E)> = vec![
            (b"".to_vec(), E::BadMagic),
            (b"rsmtpd-offline".to_vec(), E::BadMagic),
            (b"rsmtpd-offline 1".to_vec(), E::BadMagic),
            (b"RSMTPD-OFFLINE 1\n".to_vec(), E::BadMagic),
            (b" rsmtpd-offline 1\n".to_vec(), E::BadMagic),
            (
                b"rsmtpd-offline 2\n".to_vec(),
                E::UnsupportedVersion("2".into()),
            ),
            (
                b"rsmtpd-offline 1 \n".to_vec(),
                E::UnsupportedVersion("1 ".into()),
            ),
            (
                b"rsmtpd-offline 1\r\n".to_vec(),
                E::UnsupportedVersion("1\r".into()),
            ),
            (b"rsmtpd-offline 1\n".to_vec(), E::Truncated),
            (head.as_bytes().to_vec(), E::Truncated),
            (format!("{head}rcpt c@y.org").into_bytes(), E::Truncated),
            (
                format!("rsmtpd-offline 1\nfrom a@x.org\n{}", "x".repeat(1 << 20)).into_bytes(),
                E::LineTooLong { line: 3 },
            ),
            (long_rcpt.into_bytes(), E::LineTooLong { line: 4 }),
            (
                format!(
                    "{head}rcpt {}@x.org\n\nm\r\n",
                    "a".repeat(MAX_ADDRESS_OCTETS - 5)
                )
                .into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}\n").into_bytes(),
                E::BadMessage {
                    line: 1,
                    fault: F::Empty,
                },
            ),
            (
                format!("{head}\nab").into_bytes(),
                E::BadMessage {
                    line: 1,
                    fault: F::Unterminated,
                },
            ),
            (
                format!("{head}\na\r\nb\n").into_bytes(),
                E::BadMessage {
                    line: 2,
                    fault: F::BareLf,
                },
            ),
            (
                format!("{head}\na\rb\r\n").into_bytes(),
                E::BadMessage {
                    line: 1,
                    fault: F::BareCr,
                },
            ),
            (
                format!("{head}\na\0\r\n").into_bytes(),
                E::BadMessage {
                    line: 1,
                    fault: F::Nul,
                },
            ),
            (
                format!("{head}\n{}\r\n", "x".repeat(999)).into_bytes(),
                E::BadMessage {
                    line: 1,
                    fault: F::LineTooLong,
                },
            ),
            (
                b"rsmtpd-offline 1\nrcpt b@y.org\nfrom a@x.org\n\nm\r\n".to_vec(),
                E::MissingFrom,
            ),
            (b"rsmtpd-offline 1\n\nm\r\n".to_vec(), E::MissingFrom),
            (
                b"rsmtpd-offline 1\nfrom a@x.org\n\nm\r\n".to_vec(),
                E::NoRecipients,
            ),
            (
                format!("{head}from c@x.org\n\nm\r\n").into_bytes(),
                E::Duplicate {
                    line: 4,
                    key: "from",
                },
            ),
            (
                format!("{head}ret full\nret hdrs\n\nm\r\n").into_bytes(),
                E::Duplicate {
                    line: 5,
                    key: "ret",
                },
            ),
            (
                format!("{head}envid x\nret full\n\nm\r\n").into_bytes(),
                E::OutOfOrder {
                    line: 5,
                    key: "ret",
                },
            ),
            (
                format!("{head}notify NEVER\nrcpt c@y.org\n\nm\r\n").into_bytes(),
                E::OutOfOrder {
                    line: 5,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}size 12\n\nm\r\n").into_bytes(),
                E::UnknownKey {
                    line: 4,
                    key: "size".into(),
                },
            ),
            (
                format!("{head}RCPT c@y.org\n\nm\r\n").into_bytes(),
                E::UnknownKey {
                    line: 4,
                    key: "RCPT".into(),
                },
            ),
            (
                format!("{head}rcpt\n\nm\r\n").into_bytes(),
                E::Malformed { line: 4 },
            ),
            (
                format!("{head}rcpt  c@y.org\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}rcpt c@y.org \n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}rcpt c@y.org\r\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}rcpt bare\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}rcpt <c@y.org>\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "rcpt",
                },
            ),
            (
                b"rsmtpd-offline 1\nfrom a b\nrcpt b@y.org\n\nm\r\n".to_vec(),
                E::BadValue {
                    line: 2,
                    key: "from",
                },
            ),
            (
                b"rsmtpd-offline 1\nfrom <>\nrcpt b@y.org\n\nm\r\n".to_vec(),
                E::BadValue {
                    line: 2,
                    key: "from",
                },
            ),
            (
                b"rsmtpd-offline 1\nfrom a@x.org\nrcpt \xff@y.org\n\nm\r\n".to_vec(),
                E::BadValue {
                    line: 3,
                    key: "rcpt",
                },
            ),
            (
                format!("{head}notify never\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "notify",
                },
            ),
            (
                format!("{head}notify NEVER,DELAY\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "notify",
                },
            ),
            (
                format!("{head}ret FULL\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "ret",
                },
            ),
            (
                format!("{head}envid \n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "envid",
                },
            ),
            (
                format!("{head}envid a\tb\n\nm\r\n").into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "envid",
                },
            ),
            (
                format!("{head}envid {}\n\nm\r\n", "e".repeat(101)).into_bytes(),
                E::BadValue {
                    line: 4,
                    key: "envid",
                },
            ),
            (too_many.into_bytes(), E::TooManyRecipients),
        ];
        for (bytes, e) in cases {
            let got = decode(&bytes);
            assert_eq!(got, Err(e.clone()), "{:?}", String::from_utf8_lossy(&bytes));
            assert_eq!(e.exit_code(), EX_DATAERR);
        }
    }

    #[test]
    fn size_is_bounded() {
        let mut big = SAMPLE.as_bytes().to_vec();
        big.resize(MAX_OFFLINE_FILE + 1, b'x');
        assert_eq!(decode(&big), Err(OfflineError::TooBig));
        let s = OfflineSubmission {
            message: b"x\r\n".repeat(MAX_OFFLINE_FILE / 3),
            ..sample()
        };
        assert_eq!(encode(&s), Err(OfflineError::TooBig));
    }

    #[test]
    fn unknown_key_is_shown_bounded_and_escaped() {
        let key = "k\u{7}".repeat(100);
        let bytes = format!("rsmtpd-offline 1\nfrom a@x.org\n{key} v\n\nm\r\n");
        let Err(OfflineError::UnknownKey { key: shown, .. }) = decode(bytes.as_bytes()) else {
            panic!("not refused as unknown key");
        };
        assert!(shown.len() <= 32);
        let e = OfflineError::UnknownKey {
            line: 3,
            key: shown,
        };
        assert!(!e.to_string().contains('\u{7}'));
    }
}
