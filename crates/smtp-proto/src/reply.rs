//! SMTP replies: the value, its wire form, and a strict incremental parser
//! for the client side (the relay reads remote servers with it).

use std::fmt;

/// RFC 5321 4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
pub const MAX_REPLY_LINE_OCTETS: usize = 512;
/// More lines than this in one reply is a broken or hostile server.
pub const MAX_REPLY_LINES: usize = 100;

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Reads `C.S.D` (class 2, 4 or 5, then 1-3 digits twice) from the start
    /// of a reply text; returns the code and the text after it.
    fn strip_from(text: &str) -> Option<(Self, &str)> {
        let end = text.find(' ').unwrap_or(text.len());
        let (head, rest) = text.split_at(end);
        let mut parts = head.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let num = |s: &str, max_len: usize| -> Option<u16> {
            if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let class = u8::try_from(num(class, 1)?).ok()?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        let code = Self::new(class, num(subject, 3)?, num(detail, 3)?);
        Some((code, rest.strip_prefix(' ').unwrap_or(rest)))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Why a reply could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyBuildError {
    #[error("reply code {0} outside 200-599")]
    BadCode(u16),
    #[error("enhanced code class does not match the reply code")]
    ClassMismatch,
    #[error("reply has no line")]
    NoLines,
}

/// One SMTP reply. Its lines never hold CR, LF or other control characters
/// (the constructors escape them), so writing it can never inject a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

/// Room for `NNN-` + `C.SSS.DDD ` + CRLF in a 512-octet line.
const MAX_TEXT_OCTETS: usize = MAX_REPLY_LINE_OCTETS - 4 - 10 - 2;

impl Reply {
    /// A checked reply. Text is made safe: control and non-ASCII characters
    /// are escaped and over-long lines are cut to fit 512 octets.
    pub fn new(
        code: u16,
        enhanced: Option<EnhancedCode>,
        lines: Vec<String>,
    ) -> Result<Self, ReplyBuildError> {
        if !(200..=599).contains(&code) {
            return Err(ReplyBuildError::BadCode(code));
        }
        if let Some(e) = enhanced
            && u16::from(e.class) != code / 100
        {
            return Err(ReplyBuildError::ClassMismatch);
        }
        if lines.is_empty() {
            return Err(ReplyBuildError::NoLines);
        }
        Ok(Self::unchecked(code, enhanced, lines))
    }

    /// For the replies this crate writes itself, whose codes are constants
    /// (checked by the tests of the modules that use them).
    pub(crate) fn unchecked(code: u16, enhanced: Option<EnhancedCode>, lines: Vec<String>) -> Self {
        let lines = lines
            .iter()
            .take(MAX_REPLY_LINES)
            .map(|l| {
                let mut s = escape(l);
                truncate_ascii(&mut s, MAX_TEXT_OCTETS);
                s
            })
            .collect();
        Self {
            code,
            enhanced,
            lines,
        }
    }

    /// A one-line reply with an enhanced code, for this crate's own replies.
    pub(crate) fn fixed(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Self {
        let (c, s, d) = enhanced;
        Self::unchecked(code, Some(EnhancedCode::new(c, s, d)), vec![text.into()])
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: go on (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Appends the wire form (`250-first`...`250 last`, CRLF each).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(e) = self.enhanced {
                out.extend_from_slice(e.to_string().as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }

    /// The text on one line, safe for a log line or a DSN: lines joined by
    /// a space. Every line was escaped when the reply was built (anything
    /// outside printable ASCII as `\xNN`, `\` as `\\`): the text of a parsed
    /// reply comes from a remote server.
    pub fn safe_text(&self) -> String {
        // The lines were escaped when the reply was built.
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    /// `550 5.1.1 text`: one line, escaped (see [`Reply::safe_text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.safe_text())
    }
}

/// Printable ASCII kept, `\` doubled, every other byte as `\xNN`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out
}

/// Cuts an ASCII string to at most `max` octets.
fn truncate_ascii(s: &mut String, max: usize) {
    if s.len() > max {
        // escape() output is ASCII, so any index is a char boundary.
        s.truncate(max);
    }
}

/// A remote server broke the reply syntax. The connection cannot be trusted
/// to be in sync any more: the relay drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("bare LF in reply")]
    BareLf,
    #[error("bare CR in reply")]
    BareCr,
    #[error("reply line longer than {MAX_REPLY_LINE_OCTETS} octets")]
    LineTooLong,
    #[error("reply code is not three digits in 200-599")]
    BadCode,
    #[error("reply code not followed by space or dash")]
    BadSeparator,
    #[error("multi-line reply mixes codes {first} and {then}")]
    CodeMismatch { first: u16, then: u16 },
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
}

/// What one call to [`ReplyParser::parse`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes of the input used; the rest belongs to the next call.
    pub consumed: usize,
    /// A reply, when its last line was in the input.
    pub reply: Option<Reply>,
}

/// Incremental reply parser. Holds at most one line (512 octets) and one
/// reply (100 lines) whatever it is fed. After an error it stays failed.
#[derive(Debug, Default)]
pub struct ReplyParser {
    line: Vec<u8>,
    saw_cr: bool,
    code: Option<u16>,
    lines: Vec<String>,
    failed: Option<ReplyError>,
}

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `input` up to the end of the first complete reply. Call again
    /// with the unconsumed rest to get the next one.
    pub fn parse(&mut self, input: &[u8]) -> Result<Parsed, ReplyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.parse_inner(input);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn parse_inner(&mut self, input: &[u8]) -> Result<Parsed, ReplyError> {
        for (i, &b) in input.iter().enumerate() {
            if self.saw_cr {
                if b != b'\n' {
                    return Err(ReplyError::BareCr);
                }
                self.saw_cr = false;
                if let Some(reply) = self.end_of_line()? {
                    return Ok(Parsed {
                        consumed: i + 1,
                        reply: Some(reply),
                    });
                }
                continue;
            }
            match b {
                b'\r' => self.saw_cr = true,
                b'\n' => return Err(ReplyError::BareLf),
                _ => {
                    if self.line.len() + 1 + 2 > MAX_REPLY_LINE_OCTETS {
                        return Err(ReplyError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(Parsed {
            consumed: input.len(),
            reply: None,
        })
    }

    /// A complete line (without CRLF) is in `self.line`.
    fn end_of_line(&mut self) -> Result<Option<Reply>, ReplyError> {
        let line = std::mem::take(&mut self.line);
        let digits = line.get(..3).ok_or(ReplyError::BadCode)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::BadCode);
        }
        let code = digits
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
        if !(200..=599).contains(&code) {
            return Err(ReplyError::BadCode);
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::BadSeparator),
        };
        if let Some(first) = self.code
            && first != code
        {
            return Err(ReplyError::CodeMismatch { first, then: code });
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(code);
        let text = line.get(4..).unwrap_or_default();
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !last {
            return Ok(None);
        }
        self.code = None;
        let lines = std::mem::take(&mut self.lines);
        Ok(Some(Self::assemble(code, lines)))
    }

    /// Lifts the enhanced code out of the text when every line carries the
    /// same one of the right class.
    fn assemble(code: u16, lines: Vec<String>) -> Reply {
        let first = lines.first().and_then(|l| EnhancedCode::strip_from(l));
        if let Some((enh, _)) = first
            && u16::from(enh.class) == code / 100
            && lines
                .iter()
                .all(|l| EnhancedCode::strip_from(l).is_some_and(|(e, _)| e == enh))
        {
            let texts = lines
                .iter()
                .map(|l| {
                    EnhancedCode::strip_from(l)
                        .map_or("", |(_, t)| t)
                        .to_owned()
                })
                .collect();
            return Reply::unchecked(code, Some(enh), texts);
        }
        Reply::unchecked(code, None, lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let Parsed { consumed, reply } = p.parse(rest)?;
            rest = &rest[consumed..];
            match reply {
                Some(r) => out.push(r),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn wire_form_single_and_multi() {
        let r = Reply::fixed(250, (2, 0, 0), "Ok");
        assert_eq!(r.to_wire(), b"250 2.0.0 Ok\r\n");
        let r = Reply::new(
            214,
            Some(EnhancedCode::new(2, 0, 0)),
            vec!["a".into(), "b".into(), "c".into()],
        )
        .unwrap();
        assert_eq!(
            r.to_wire(),
            b"214-2.0.0 a\r\n214-2.0.0 b\r\n214 2.0.0 c\r\n"
        );
        let r = Reply::new(354, None, vec!["go".into()]).unwrap();
        assert_eq!(r.to_wire(), b"354 go\r\n");
    }

    #[test]
    fn constructor_checks_and_escapes() {
        assert_eq!(
            Reply::new(199, None, vec!["x".into()]),
            Err(ReplyBuildError::BadCode(199))
        );
        assert_eq!(
            Reply::new(600, None, vec!["x".into()]),
            Err(ReplyBuildError::BadCode(600))
        );
        assert_eq!(
            Reply::new(550, Some(EnhancedCode::new(4, 1, 1)), vec!["x".into()]),
            Err(ReplyBuildError::ClassMismatch)
        );
        assert_eq!(Reply::new(550, None, vec![]), Err(ReplyBuildError::NoLines));
        let r = Reply::new(550, None, vec!["evil\r\n250 ok".into()]).unwrap();
        assert_eq!(r.to_wire(), b"550 evil\\x0D\\x0A250 ok\r\n");
        let r = Reply::new(550, None, vec!["x".repeat(2000)]).unwrap();
        assert!(r.to_wire().len() <= MAX_REPLY_LINE_OCTETS);
    }

    #[test]
    fn parses_multiline_with_enhanced_codes() {
        let replies = parse_all(
            b"250-mx.example Hello\r\n250-PIPELINING\r\n250 SIZE 10\r\n550 5.1.1 No such user\r\n",
        )
        .unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].code(), 250);
        assert_eq!(replies[0].enhanced(), None);
        assert_eq!(
            replies[0].lines(),
            ["mx.example Hello", "PIPELINING", "SIZE 10"]
        );
        assert_eq!(replies[1].enhanced(), Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(replies[1].lines(), ["No such user"]);
        assert_eq!(replies[1].to_string(), "550 5.1.1 No such user");
    }

    #[test]
    fn wrong_class_enhanced_code_left_in_text() {
        let r = parse_all(b"550 4.1.1 odd\r\n").unwrap();
        assert_eq!(r[0].enhanced(), None);
        assert_eq!(r[0].lines(), ["4.1.1 odd"]);
    }

    #[test]
    fn bare_code_line_is_a_final_line() {
        let r = parse_all(b"250\r\n").unwrap();
        assert_eq!(r[0].lines(), [""]);
    }

    #[test]
    fn incremental_byte_by_byte() {
        let input = b"220-a\r\n220 b\r\n250 ok\r\n";
        let mut p = ReplyParser::new();
        let mut got = Vec::new();
        for b in input {
            let parsed = p.parse(std::slice::from_ref(b)).unwrap();
            assert_eq!(parsed.consumed, 1);
            got.extend(parsed.reply);
        }
        assert_eq!(got, parse_all(input).unwrap());
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(parse_all(b"250 ok\n"), Err(ReplyError::BareLf));
        assert_eq!(parse_all(b"250 o\rk\r\n"), Err(ReplyError::BareCr));
        assert_eq!(parse_all(b"25 ok\r\n"), Err(ReplyError::BadCode));
        assert_eq!(parse_all(b"2x0 ok\r\n"), Err(ReplyError::BadCode));
        assert_eq!(parse_all(b"199 ok\r\n"), Err(ReplyError::BadCode));
        assert_eq!(parse_all(b"600 ok\r\n"), Err(ReplyError::BadCode));
        assert_eq!(parse_all(b"2500 ok\r\n"), Err(ReplyError::BadSeparator));
        assert_eq!(parse_all(b"250_ok\r\n"), Err(ReplyError::BadSeparator));
        assert_eq!(
            parse_all(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch {
                first: 250,
                then: 251
            })
        );
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 506));
        long.extend_from_slice(b"\r\n");
        assert_eq!(long.len(), 512);
        assert_eq!(parse_all(&long).unwrap().len(), 1);
        long.insert(5, b'x');
        assert_eq!(parse_all(&long), Err(ReplyError::LineTooLong));
        let many = b"250-x\r\n".repeat(101);
        assert_eq!(parse_all(&many), Err(ReplyError::TooManyLines));
        let mut ok = b"250-x\r\n".repeat(99);
        ok.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&ok).unwrap()[0].lines().len(), 100);
    }

    #[test]
    fn parser_stays_failed() {
        let mut p = ReplyParser::new();
        assert_eq!(p.parse(b"250 a\n"), Err(ReplyError::BareLf));
        assert_eq!(p.parse(b"250 ok\r\n"), Err(ReplyError::BareLf));
    }

    #[test]
    fn safe_text_escapes_untrusted_bytes() {
        let r = parse_all(b"550-a\x1b[31m\\\r\n550 \xc3\xa9\x00\r\n").unwrap();
        assert_eq!(r[0].safe_text(), "a\\x1B[31m\\\\ \\xC3\\xA9\\x00");
        assert!(
            r[0].to_wire()
                .iter()
                .all(|&b| b == b'\r' || b == b'\n' || (0x20..0x7f).contains(&b))
        );
    }
}
