//! From what a local program writes on sendmail's standard input to the
//! message and recipients that are submitted.
//!
//! The rules, in the order they apply (see [`prepare`]):
//!
//! 1. **Size.** An input longer than `max_size` octets is refused
//!    ([`MessageError::TooBig`]), before anything else; the limit is on
//!    the input as given, including anything after a final `.` line.
//! 2. **Lines.** A line ends with CRLF, a bare LF or a bare CR (one not
//!    followed by LF); each becomes CRLF in the output (scripts write LF; a
//!    bare CR is taken as a line end too, as Postfix does, rather than
//!    refused or kept: the daemon would refuse a bare CR, and dropping it
//!    would glue two lines). A last line without a line end gets CRLF.
//!    Lines are numbered from 1 in the input, for error messages.
//! 3. **The `.` line.** Without `ignore_dots` (`-i`, `-oi`), a line made of
//!    a single `.` ends the input: it and everything after it are dropped
//!    (sendmail semantics). With it, such a line is content. Other lines
//!    starting with a dot are kept as they are: the output is **not**
//!    dot-stuffed, the SMTP client that submits it does that.
//! 4. **NUL and line length.** A NUL octet in a kept line is refused
//!    ([`MessageError::Nul`]); so is a line longer than 998 octets without
//!    its line end ([`MessageError::LineTooLong`], RFC 5322 2.1.1), in the
//!    headers and in the body alike: the daemon's DATA reader refuses those
//!    lines, so refusing them here gives the user the reason and the line.
//! 5. **Mbox `From ` line.** A first line starting with `From ` that is
//!    followed by a header field is the separator line of an mbox file, not
//!    part of the message: it is dropped. (Followed by anything else, it is
//!    the first line of a body.)
//! 6. **The header block.** If the first line (after a dropped mbox
//!    `From ` line) is a header field, `name:` where the name is
//!    one or more printable ASCII characters other than `:` (RFC 5322 2.2;
//!    no space before the colon), the message has a header block. It runs
//!    to the first empty line, which separates it from the body and is kept,
//!    or to the end of the input (a message without body). Inside it every
//!    line must be a header field or a continuation line (starting with a
//!    space or a tab); any other line means the block was not terminated by
//!    the empty line its author forgot, and is refused
//!    ([`MessageError::UnterminatedHeaders`] with its line number) rather
//!    than guessed at (Sendmail and Postfix would silently start the body
//!    there). A first line that starts with a space or a tab is a
//!    continuation with no field before it, refused
//!    ([`MessageError::ContinuationWithoutHeader`]). A first line that is
//!    empty or not a header field means there are no headers: everything is
//!    body (and an empty line is inserted after the added headers if the
//!    body does not start with one). The header block is at most
//!    [`MAX_HEADER_BLOCK`] octets ([`MessageError::HeadersTooBig`]).
//! 7. **Added headers.** `From:`, `Date:` and `Message-ID:` are added at
//!    the top, in that order, each only when the header block has no field
//!    of that name (names compare case-insensitively). `From:` is the
//!    sender, qualified with the hostname when it is a bare login
//!    (`MAILER-DAEMON@hostname` for the null sender), with the full name,
//!    when given and not empty, as a display name: a quoted string with `"`
//!    and `\` escaped when it is ASCII (`From: "Joe Q" <joe@host>`), RFC 2047
//!    encoded words (UTF-8, base64) when it is not. Full names with control
//!    characters are refused ([`MessageError::BadFullName`]).
//! 8. **Recipients.** With `read_recipients` (`-t`), the addresses of every
//!    `To:`, `Cc:` and `Bcc:` field (RFC 5322 3.4 address lists, read by
//!    [`crate::parse_address_list`]), then the command-line recipients
//!    (which are added, as Postfix does). Every `Bcc:` field, with its
//!    continuation lines, is removed from the output. Without it, the
//!    command-line recipients only, and `Bcc:` fields are kept as they are.
//!    Each command-line argument is an address list too (`"a@x, b@y"`,
//!    `"Joe <joe@x>"`). Each address must be plausible
//!    ([`crate::is_plausible_address`]); a bare local part is qualified with
//!    the hostname (the daemon requires a domain in `RCPT TO`). Duplicates
//!    (same local part, domain in any case) are dropped, the first kept.
//!    None at all is [`MessageError::NoRecipients`]; more than
//!    [`crate::MAX_RECIPIENTS`] is [`MessageError::TooManyRecipients`].
//!    Header fields themselves are never rewritten.
//!
//! Time and memory are linear in the input; there is no recursion.

use std::collections::HashSet;

use crate::MAX_RECIPIENTS;
use crate::address::{
    AddressListError, MAX_ADDRESS_OCTETS, address_shape, is_plausible_domain, parse_address_list,
};
use crate::sysexits::{EX_DATAERR, EX_SOFTWARE, EX_USAGE};

/// RFC 5322 2.1.1: at most 998 octets in a line, CRLF excluded.
pub const MAX_LINE_OCTETS: usize = 998;
/// The header block is at most this many octets (with its CRLFs).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// A full name is at most this many octets.
pub const MAX_FULL_NAME_OCTETS: usize = 256;

/// What [`prepare`] needs besides the input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrepareOptions {
    /// `-i`: a single `.` line is content.
    pub ignore_dots: bool,
    /// `-t`: recipients from `To:`, `Cc:`, `Bcc:`; `Bcc:` removed.
    pub read_recipients: bool,
    /// The command line's recipients (each an address list).
    pub extra_recipients: Vec<String>,
    /// The envelope sender as the caller resolved it: `-f`, else the user's
    /// `login@hostname`; empty for the null sender; a bare login is
    /// qualified with `hostname`.
    pub sender: String,
    /// `-F` (or the account's full name): the `From:` display name.
    pub full_name: Option<String>,
    /// This host's name, to qualify bare addresses.
    pub hostname: String,
    /// The `Date:` value if one must be added (RFC 5322 3.3), made by the
    /// caller: there is no clock here.
    pub date: String,
    /// The `Message-ID:` value if one must be added, `<...@host>`.
    pub message_id: String,
    /// The largest input accepted, in octets.
    pub max_size: usize,
}

/// The message ready for submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The envelope sender: `sender`, qualified with the hostname when it
    /// was a bare login; empty for the null sender.
    pub sender: String,
    /// The envelope recipients, each `local@domain`, without duplicates.
    pub recipients: Vec<String>,
    /// The message: CRLF lines, the last one ended, not dot-stuffed.
    pub message: Vec<u8>,
    /// The names of the headers added, in order (`From`, `Date`,
    /// `Message-ID`).
    pub added: Vec<&'static str>,
    /// The message has octets above 127 (submit with `BODY=8BITMIME`).
    pub eight_bit: bool,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message larger than {max} octets")]
    TooBig { max: usize },
    #[error("line {line}: NUL octet in message")]
    Nul { line: usize },
    #[error("line {line}: longer than {MAX_LINE_OCTETS} octets")]
    LineTooLong { line: usize },
    #[error(
        "line {line}: continuation line (starting with white space) without a header field before it"
    )]
    ContinuationWithoutHeader { line: usize },
    #[error(
        "line {line}: unterminated header block: neither a header field, a continuation line, nor the empty line that must separate the headers from the body"
    )]
    UnterminatedHeaders { line: usize },
    #[error("header block larger than {MAX_HEADER_BLOCK} octets")]
    HeadersTooBig,
    #[error("line {line}: malformed {field}: header: {source}")]
    BadAddressList {
        line: usize,
        field: &'static str,
        source: AddressListError,
    },
    #[error("invalid recipient address {0:?}")]
    BadRecipient(String),
    #[error("too many recipients (at most {MAX_RECIPIENTS})")]
    TooManyRecipients,
    #[error("no recipients: give them on the command line, or use -t with To:, Cc: or Bcc:")]
    NoRecipients,
    #[error("invalid sender address {0:?}")]
    BadSender(String),
    #[error("invalid full name: no control characters, at most {MAX_FULL_NAME_OCTETS} octets")]
    BadFullName,
    /// A value the calling program computed (hostname, date, message id) is
    /// unusable: a bug there, not the user's mistake.
    #[error("internal error: invalid {0} for the message headers")]
    BadParameter(&'static str),
}

impl MessageError {
    /// The sysexits(3) code to exit with.
    pub fn exit_code(&self) -> u8 {
        match self {
            MessageError::NoRecipients => EX_USAGE,
            MessageError::BadParameter(_) => EX_SOFTWARE,
            MessageError::TooBig { .. }
            | MessageError::Nul { .. }
            | MessageError::LineTooLong { .. }
            | MessageError::ContinuationWithoutHeader { .. }
            | MessageError::UnterminatedHeaders { .. }
            | MessageError::HeadersTooBig
            | MessageError::BadAddressList { .. }
            | MessageError::BadRecipient(_)
            | MessageError::TooManyRecipients
            | MessageError::BadSender(_)
            | MessageError::BadFullName => EX_DATAERR,
        }
    }
}

/// One header field: its name, the number of its first line in the input,
/// and its lines, `header[first..end]`.
struct Field<'a> {
    name: &'a [u8],
    line: usize,
    first: usize,
    end: usize,
}

/// Prepares a submission; the rules are in the module doc.
pub fn prepare(input: &[u8], opts: &PrepareOptions) -> Result<Prepared, MessageError> {
    if input.len() > opts.max_size {
        return Err(MessageError::TooBig { max: opts.max_size });
    }
    check_parameters(opts)?;
    let sender = qualify(&opts.sender, &opts.hostname)
        .ok_or_else(|| MessageError::BadSender(opts.sender.clone()))?;

    let mut lines = Lines::new(input, opts.ignore_dots);

    // An mbox `From ` line before a header field is dropped.
    let mut peek = lines.clone();
    if peek.next_line()?.is_some_and(|l| l.starts_with(b"From "))
        && peek
            .clone()
            .next_line()?
            .is_some_and(|l| field_name(l).is_some())
    {
        lines = peek;
    }

    // The header block, kept line by line (it is bounded); the body is
    // streamed from `lines` afterwards.
    let mut header: Vec<&[u8]> = Vec::new();
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut separator = false;
    let mut peek = lines.clone();
    match peek.next_line()? {
        Some(l) if is_continuation(l) => {
            return Err(MessageError::ContinuationWithoutHeader { line: peek.number });
        }
        Some(l) if field_name(l).is_some() => {
            let mut size = 0usize;
            while let Some(l) = lines.next_line()? {
                if l.is_empty() {
                    separator = true;
                    break;
                }
                size += l.len() + 2;
                if size > MAX_HEADER_BLOCK {
                    return Err(MessageError::HeadersTooBig);
                }
                if is_continuation(l) {
                    if let Some(f) = fields.last_mut() {
                        f.end = header.len() + 1;
                    }
                } else if let Some(name) = field_name(l) {
                    fields.push(Field {
                        name,
                        line: lines.number,
                        first: header.len(),
                        end: header.len() + 1,
                    });
                } else {
                    return Err(MessageError::UnterminatedHeaders { line: lines.number });
                }
                header.push(l);
            }
        }
        _ => {}
    }
    let has = |name: &str| {
        fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
    };

    // Recipients.
    let mut rcpts = Recipients::new(&opts.hostname);
    if opts.read_recipients {
        for f in &fields {
            let Some(field) = ["To", "Cc", "Bcc"]
                .into_iter()
                .find(|n| f.name.eq_ignore_ascii_case(n.as_bytes()))
            else {
                continue;
            };
            let value = unfold(&header[f.first..f.end], f.name.len() + 1);
            let list =
                parse_address_list(&value).map_err(|source| MessageError::BadAddressList {
                    line: f.line,
                    field,
                    source,
                })?;
            for a in list {
                rcpts.add(a)?;
            }
        }
    }
    for arg in &opts.extra_recipients {
        let list = parse_address_list(arg.as_bytes())
            .ok()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| MessageError::BadRecipient(arg.clone()))?;
        for a in list {
            rcpts.add(a)?;
        }
    }
    if rcpts.list.is_empty() {
        return Err(MessageError::NoRecipients);
    }

    // The output.
    let mut message = Vec::with_capacity(input.len() + input.len() / 16 + 1024);
    let mut added = Vec::new();
    if !has("From") {
        let from = from_header(&sender, opts.full_name.as_deref(), &opts.hostname)?;
        push_line(&mut message, from.as_bytes());
        added.push("From");
    }
    if !has("Date") {
        push_line(&mut message, format!("Date: {}", opts.date).as_bytes());
        added.push("Date");
    }
    if !has("Message-ID") {
        push_line(
            &mut message,
            format!("Message-ID: {}", opts.message_id).as_bytes(),
        );
        added.push("Message-ID");
    }
    for f in &fields {
        if opts.read_recipients && f.name.eq_ignore_ascii_case(b"Bcc") {
            continue;
        }
        for l in &header[f.first..f.end] {
            push_line(&mut message, l);
        }
    }
    if separator || (fields.is_empty() && lines.clone().next_line()?.is_some_and(|l| !l.is_empty()))
    {
        // The empty line after the headers; inserted when there were no
        // headers (the body starts after the added ones) unless the body
        // starts with one.
        message.extend_from_slice(b"\r\n");
    }
    while let Some(l) = lines.next_line()? {
        push_line(&mut message, l);
    }
    let eight_bit = !message.is_ascii();
    Ok(Prepared {
        sender,
        recipients: rcpts.list,
        message,
        added,
        eight_bit,
    })
}

/// The input's lines, without their line ends, up to a `.` line unless
/// `ignore_dots`; NUL and over-long lines refused. Cloning it is cheap (a
/// look-ahead).
#[derive(Debug, Clone)]
struct Lines<'a> {
    rest: &'a [u8],
    /// The number of the line last returned (1 for the first).
    number: usize,
    ignore_dots: bool,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8], ignore_dots: bool) -> Self {
        Self {
            rest: input,
            number: 0,
            ignore_dots,
        }
    }

    fn next_line(&mut self) -> Result<Option<&'a [u8]>, MessageError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let rest = self.rest;
        let (len, ending) = match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(p) if rest[p] == b'\r' && rest.get(p + 1) == Some(&b'\n') => (p, 2),
            Some(p) => (p, 1),
            None => (rest.len(), 0),
        };
        let (line, after) = rest.split_at(len);
        self.number += 1;
        if !self.ignore_dots && line == b"." {
            self.rest = &[];
            return Ok(None);
        }
        if line.contains(&0) {
            return Err(MessageError::Nul { line: self.number });
        }
        if line.len() > MAX_LINE_OCTETS {
            return Err(MessageError::LineTooLong { line: self.number });
        }
        self.rest = after.get(ending..).unwrap_or_default();
        Ok(Some(line))
    }
}

fn is_continuation(line: &[u8]) -> bool {
    line.first().is_some_and(|&b| b == b' ' || b == b'\t')
}

/// The name of a header field line (`name:`), if it is one.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let len = line
        .iter()
        .position(|&b| !(0x21..0x7f).contains(&b) || b == b':')?;
    (len > 0 && line[len] == b':').then(|| &line[..len])
}

/// A field's body without its name and colon (`skip` octets of the first
/// line), its lines joined: RFC 5322 2.2.3 unfolding.
fn unfold(lines: &[&[u8]], skip: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        v.extend_from_slice(if i == 0 {
            l.get(skip..).unwrap_or_default()
        } else {
            l
        });
    }
    v
}

fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// `addr` with `@hostname` appended when it has no domain; `None` when it is
/// not plausible (or becomes too long). The empty sender stays empty.
fn qualify(addr: &str, hostname: &str) -> Option<String> {
    match address_shape(addr) {
        _ if addr.is_empty() => Some(String::new()),
        Some(Some(_)) => Some(addr.to_owned()),
        Some(None) => {
            let q = format!("{addr}@{hostname}");
            (q.len() <= MAX_ADDRESS_OCTETS).then_some(q)
        }
        None => None,
    }
}

/// The recipients so far, without duplicates.
struct Recipients<'a> {
    hostname: &'a str,
    list: Vec<String>,
    seen: HashSet<String>,
}

impl<'a> Recipients<'a> {
    fn new(hostname: &'a str) -> Self {
        Self {
            hostname,
            list: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn add(&mut self, addr: String) -> Result<(), MessageError> {
        let q = qualify(&addr, self.hostname)
            .filter(|q| !q.is_empty())
            .ok_or(MessageError::BadRecipient(addr))?;
        let key = match q.rsplit_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
            None => q.clone(),
        };
        if self.seen.insert(key) {
            if self.list.len() == MAX_RECIPIENTS {
                return Err(MessageError::TooManyRecipients);
            }
            self.list.push(q);
        }
        Ok(())
    }
}

/// The caller's values must not break the header lines they go into.
fn check_parameters(opts: &PrepareOptions) -> Result<(), MessageError> {
    if !is_plausible_domain(opts.hostname.as_bytes()) || opts.hostname.len() > 255 {
        return Err(MessageError::BadParameter("hostname"));
    }
    let date = &opts.date;
    if date.is_empty() || date.len() > 200 || date.chars().any(char::is_control) {
        return Err(MessageError::BadParameter("date"));
    }
    let id = opts.message_id.as_bytes();
    let id_ok = id.len() >= 3
        && id.len() <= 250
        && id.starts_with(b"<")
        && id.ends_with(b">")
        && id.iter().all(|&b| (0x21..0x7f).contains(&b));
    if !id_ok {
        return Err(MessageError::BadParameter("message_id"));
    }
    if let Some(n) = &opts.full_name
        && (n.len() > MAX_FULL_NAME_OCTETS || n.chars().any(char::is_control))
    {
        return Err(MessageError::BadFullName);
    }
    Ok(())
}

/// The `From:` line for `sender` (already qualified; empty: the null
/// sender) and the full name.
fn from_header(
    sender: &str,
    full_name: Option<&str>,
    hostname: &str,
) -> Result<String, MessageError> {
    let addr = if sender.is_empty() {
        format!("MAILER-DAEMON@{hostname}")
    } else {
        sender.to_owned()
    };
    let name = match full_name.filter(|n| !n.is_empty()) {
        None => return Ok(format!("From: {addr}")),
        Some(n) if n.chars().any(char::is_control) => return Err(MessageError::BadFullName),
        Some(n) if n.is_ascii() => {
            let mut q = String::with_capacity(n.len() + 2);
            q.push('"');
            for c in n.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        }
        Some(n) => encoded_words(n),
    };
    Ok(format!("From: {name} <{addr}>"))
}

/// RFC 2047 encoded words, UTF-8 and base64, each at most 75 characters
/// (45 octets of text each, cut between characters), separated by spaces.
fn encoded_words(text: &str) -> String {
    const CHUNK: usize = 45;
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if i + c.len_utf8() - start > CHUNK {
            words.push(encoded_word(&text.as_bytes()[start..i]));
            start = i;
        }
    }
    words.push(encoded_word(&text.as_bytes()[start..]));
    words.join(" ")
}

fn encoded_word(octets: &[u8]) -> String {
    format!("=?UTF-8?B?{}?=", base64(octets))
}

/// Standard base64 (RFC 4648 4), with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
