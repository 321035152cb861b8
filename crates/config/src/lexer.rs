//! The smtpd.conf lexer, with OpenSMTPD's rules.
//!
//! - Unquoted strings start with a letter, digit, `:` or `_` and go on with
//!   letters, digits and punctuation other than `( ) { } < > ! = # ,`.
//!   A reserved word is returned as a [`Keyword`], never as a string.
//! - Quoted strings use `"` or `'`; a backslash escapes the quote, a space or
//!   a tab; backslash-newline joins lines; a bare newline inside quotes is
//!   dropped, as OpenSMTPD does.
//! - Outside quotes, backslash-newline joins lines and a backslash before any
//!   other character is dropped.
//! - Numbers: an optional `-` and digits, ended by white space, `)`, `,`,
//!   `/`, `}`, `=` or the end of input; otherwise the same characters are
//!   read again as a string (`35M`, `192.168.0.1`).
//! - `$name` outside quotes expands a macro: its value is pushed back into the
//!   input and lexed again; no expansion happens inside an expansion.
//! - Newlines are tokens; `#` starts a comment to the end of the line.
//!
//! Limits: a token longer than [`MAX_TOKEN`] bytes is "string too long"; the
//! lexer never holds more than that per token. On any error the rest of the
//! line is skipped (through its newline), so the parser can go on with the
//! next line.

use std::collections::HashMap;
use std::fmt;

/// Longest token, in bytes (OpenSMTPD's lexer buffer).
pub const MAX_TOKEN: usize = 8096;

/// A position in the input: file index, 1-based line and column (counted in
/// characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub file: usize,
    pub line: u32,
    pub col: u32,
}

macro_rules! keywords {
    ($($variant:ident => $text:literal,)*) => {
        /// The reserved words of smtpd.conf (OpenSMTPD's parse.y keyword table).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Keyword {
            $($variant,)*
        }

        impl Keyword {
            /// Every keyword, in the order of the table.
            pub const ALL: &'static [Keyword] = &[$(Keyword::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Keyword::$variant => $text,)*
                }
            }

            pub fn lookup(word: &str) -> Option<Keyword> {
                match word {
                    $($text => Some(Keyword::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

keywords! {
    Action => "action",
    Admd => "admd",
    Alias => "alias",
    Any => "any",
    Auth => "auth",
    AuthOptional => "auth-optional",
    Backup => "backup",
    Bounce => "bounce",
    Bypass => "bypass",
    Ca => "ca",
    Cert => "cert",
    Chain => "chain",
    Chroot => "chroot",
    Ciphers => "ciphers",
    Commit => "commit",
    Compression => "compression",
    Connect => "connect",
    Data => "data",
    DataLine => "data-line",
    Dhe => "dhe",
    Disconnect => "disconnect",
    Domain => "domain",
    Ehlo => "ehlo",
    Encryption => "encryption",
    ExpandOnly => "expand-only",
    Fcrdns => "fcrdns",
    Filter => "filter",
    For => "for",
    ForwardOnly => "forward-only",
    From => "from",
    Group => "group",
    Helo => "helo",
    HeloSrc => "helo-src",
    Host => "host",
    Hostname => "hostname",
    Hostnames => "hostnames",
    Include => "include",
    Inet4 => "inet4",
    Inet6 => "inet6",
    Junk => "junk",
    Key => "key",
    Limit => "limit",
    Listen => "listen",
    Lmtp => "lmtp",
    Local => "local",
    MailFrom => "mail-from",
    Maildir => "maildir",
    MaskSrc => "mask-src",
    Masquerade => "masquerade",
    Match => "match",
    MaxDeferred => "max-deferred",
    MaxMessageSize => "max-message-size",
    Mbox => "mbox",
    Mda => "mda",
    Mta => "mta",
    Mx => "mx",
    NoDsn => "no-dsn",
    NoVerify => "no-verify",
    Noop => "noop",
    On => "on",
    Phase => "phase",
    Pki => "pki",
    Port => "port",
    Proc => "proc",
    ProcExec => "proc-exec",
    Protocols => "protocols",
    ProxyV2 => "proxy-v2",
    Queue => "queue",
    Quit => "quit",
    RcptTo => "rcpt-to",
    Rdns => "rdns",
    ReceivedAuth => "received-auth",
    Recipient => "recipient",
    Regex => "regex",
    Reject => "reject",
    Relay => "relay",
    Report => "report",
    Rewrite => "rewrite",
    Rset => "rset",
    Scheduler => "scheduler",
    Senders => "senders",
    Smtp => "smtp",
    SmtpIn => "smtp-in",
    SmtpOut => "smtp-out",
    Smtps => "smtps",
    Socket => "socket",
    Src => "src",
    Srs => "srs",
    SubAddrDelim => "sub-addr-delim",
    Table => "table",
    Tag => "tag",
    Tagged => "tagged",
    Tls => "tls",
    TlsRequire => "tls-require",
    Ttl => "ttl",
    User => "user",
    Userbase => "userbase",
    Verify => "verify",
    Virtual => "virtual",
    WarnInterval => "warn-interval",
    Wrapper => "wrapper",
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Keyword(Keyword),
    /// A string; `quoted` tells whether it was written in quotes.
    Str {
        value: String,
        quoted: bool,
    },
    Number(i64),
    LBrace,
    RBrace,
    Lt,
    Gt,
    Bang,
    Eq,
    /// `=>`
    Arrow,
    Comma,
    Newline,
    Eof,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Keyword(k) => write!(f, "keyword '{k}'"),
            TokenKind::Str { value, .. } => {
                let shown: String = value.chars().take(40).collect();
                if shown.len() < value.len() {
                    write!(f, "string \"{shown}...\"")
                } else {
                    write!(f, "string \"{shown}\"")
                }
            }
            TokenKind::Number(n) => write!(f, "number {n}"),
            TokenKind::LBrace => f.write_str("'{'"),
            TokenKind::RBrace => f.write_str("'}'"),
            TokenKind::Lt => f.write_str("'<'"),
            TokenKind::Gt => f.write_str("'>'"),
            TokenKind::Bang => f.write_str("'!'"),
            TokenKind::Eq => f.write_str("'='"),
            TokenKind::Arrow => f.write_str("'=>'"),
            TokenKind::Comma => f.write_str("','"),
            TokenKind::Newline => f.write_str("end of line"),
            TokenKind::Eof => f.write_str("end of file"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub pos: Pos,
}

/// What went wrong while lexing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexErrorKind {
    #[error("string too long")]
    StringTooLong,
    #[error("macro '{0}' not defined")]
    UndefinedMacro(String),
    #[error("reached end of file while parsing quoted string")]
    UnterminatedQuote,
    #[error("NUL byte in input")]
    Nul,
    #[error("control character 0x{0:02x} in input")]
    Control(u8),
    #[error("invalid UTF-8 in input")]
    InvalidUtf8,
    #[error("unexpected character '{0}'")]
    Unexpected(char),
    #[error("\"{text}\" invalid number: {reason}")]
    InvalidNumber { text: String, reason: &'static str },
}

/// A lexing error, where it happened, and a hint for the common cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub kind: LexErrorKind,
    pub pos: Pos,
    pub hint: Option<String>,
}

/// One byte of input, or a marker around a macro's expansion.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Byte(u8, Pos),
    StartExpand,
    DoneExpand,
}

/// A byte read by [`Lexer::lgetc`], with its position; `None` is end of input.
type Ch = Option<(u8, Pos)>;

#[derive(Debug)]
struct Source {
    file: usize,
    data: Vec<u8>,
    offset: usize,
    line: u32,
    col: u32,
    /// Pushed-back units, last pushed = next read.
    unget: Vec<Unit>,
    eof_reached: bool,
}

impl Source {
    fn new(file: usize, data: Vec<u8>) -> Self {
        Source {
            file,
            data,
            offset: 0,
            line: 1,
            col: 1,
            unget: Vec::new(),
            eof_reached: false,
        }
    }

    fn end_pos(&self) -> Pos {
        Pos {
            file: self.file,
            line: self.line,
            col: self.col,
        }
    }
}

/// A macro value and whether it came from the command line (those win over
/// definitions in the file).
#[derive(Debug, Clone)]
struct Macro {
    value: String,
    persist: bool,
}

#[derive(Debug)]
pub struct Lexer {
    sources: Vec<Source>,
    macros: HashMap<String, Macro>,
    expanding: bool,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn allowed_to_end_number(c: u8) -> bool {
    is_space(c) || matches!(c, b')' | b',' | b'/' | b'}' | b'=')
}

/// OpenSMTPD's `allowed_in_string`: letters, digits and punctuation other
/// than the characters that are tokens of their own or start a comment.
fn allowed_in_string(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || (c.is_ascii_punctuation()
            && !matches!(
                c,
                b'(' | b')' | b'{' | b'}' | b'<' | b'>' | b'!' | b'=' | b'#' | b','
            ))
}

fn starts_string(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b':' || c == b'_'
}

impl Lexer {
    pub fn new(file: usize, data: Vec<u8>) -> Self {
        Lexer {
            sources: vec![Source::new(file, data)],
            macros: HashMap::new(),
            expanding: false,
        }
    }

    /// Continue with `data` (an included file); when it ends, lexing goes on
    /// where the including file stopped.
    pub fn push_file(&mut self, file: usize, data: Vec<u8>) {
        self.sources.push(Source::new(file, data));
    }

    /// File indices of the files being read, outermost first.
    pub fn file_stack(&self) -> Vec<usize> {
        self.sources.iter().map(|s| s.file).collect()
    }

    /// Define a macro. A persistent one (`-D name=value`) is not replaced by
    /// a later definition in the file.
    pub fn define_macro(&mut self, name: &str, value: &str, persist: bool) {
        if let Some(old) = self.macros.get(name)
            && old.persist
            && !persist
        {
            return;
        }
        self.macros.insert(
            name.to_string(),
            Macro {
                value: value.to_string(),
                persist,
            },
        );
    }

    pub fn macro_value(&self, name: &str) -> Option<&str> {
        self.macros.get(name).map(|m| m.value.as_str())
    }

    // ------------------------------------------------------------ reading

    /// Next raw unit of the current source, markers included; `None` at the
    /// end of the current source.
    fn igetc_unit(&mut self) -> Option<Unit> {
        let src = self.sources.last_mut()?;
        if let Some(u) = src.unget.pop() {
            return Some(u);
        }
        let b = *src.data.get(src.offset)?;
        src.offset += 1;
        let pos = Pos {
            file: src.file,
            line: src.line,
            col: src.col,
        };
        if b == b'\n' {
            src.line = src.line.saturating_add(1);
            src.col = 1;
        } else if b & 0xC0 != 0x80 {
            // UTF-8 continuation bytes belong to the previous character.
            src.col = src.col.saturating_add(1);
        }
        Some(Unit::Byte(b, pos))
    }

    /// Next byte of the current source, handling the expansion markers.
    fn igetc(&mut self) -> Ch {
        loop {
            match self.igetc_unit()? {
                Unit::StartExpand => self.expanding = true,
                Unit::DoneExpand => self.expanding = false,
                Unit::Byte(b, p) => return Some((b, p)),
            }
        }
    }

    fn unget(&mut self, c: Ch) {
        if let (Some((b, p)), Some(src)) = (c, self.sources.last_mut()) {
            src.unget.push(Unit::Byte(b, p));
        }
    }

    fn current_end_pos(&self) -> Pos {
        self.sources.last().map(Source::end_pos).unwrap_or_default()
    }

    /// A byte inside quotes: no continuation handling, end of file is an
    /// error for the caller.
    fn lgetc_quoted(&mut self) -> Ch {
        self.igetc()
    }

    /// A byte outside quotes: backslash-newline is skipped, a backslash
    /// before anything else is dropped, and the end of each file reads first
    /// as a newline (so a last line without one still ends), then as the
    /// continuation of the including file.
    fn lgetc(&mut self) -> Ch {
        let mut c = self.igetc();
        while let Some((b'\\', _)) = c {
            let next = self.igetc();
            match next {
                Some((b'\n', _)) => c = self.igetc(),
                _ => {
                    c = next;
                    break;
                }
            }
        }
        if c.is_some() {
            return c;
        }
        loop {
            let depth = self.sources.len();
            let src = self.sources.last_mut()?;
            if !src.eof_reached {
                src.eof_reached = true;
                return Some((b'\n', src.end_pos()));
            }
            if depth <= 1 {
                return None;
            }
            self.sources.pop();
            self.expanding = false;
            if let Some(c) = self.igetc() {
                return Some(c);
            }
        }
    }

    /// Skip to the end of the current line (through its newline).
    fn findeol(&mut self) {
        loop {
            match self.lgetc() {
                None | Some((b'\n', _)) => return,
                Some(_) => {}
            }
        }
    }

    fn fail(&mut self, kind: LexErrorKind, pos: Pos, hint: Option<String>) -> LexError {
        if kind != LexErrorKind::UnterminatedQuote {
            self.findeol();
        }
        LexError { kind, pos, hint }
    }

    /// The next token. On error the rest of the line has been skipped.
    pub fn next_token(&mut self) -> Result<Token, LexError> {
        loop {
            let mut c = self.lgetc();
            while let Some((b' ' | b'\t' | b'\r', _)) = c {
                c = self.lgetc();
            }
            if let Some((b'#', _)) = c {
                loop {
                    c = self.lgetc();
                    if matches!(c, None | Some((b'\n', _))) {
                        break;
                    }
                }
            }
            let Some((b, pos)) = c else {
                return Ok(Token {
                    kind: TokenKind::Eof,
                    pos: self.current_end_pos(),
                });
            };
            if b == b'$' && !self.expanding {
                self.expand_macro(pos)?;
                continue;
            }
            return self.token_from(b, pos);
        }
    }

    fn expand_macro(&mut self, pos: Pos) -> Result<(), LexError> {
        let mut name = String::new();
        loop {
            let c = self.lgetc();
            match c {
                Some((b, _)) if b.is_ascii_alphanumeric() || b == b'_' => {
                    if name.len() + 1 >= MAX_TOKEN {
                        return Err(self.fail(LexErrorKind::StringTooLong, pos, None));
                    }
                    name.push(char::from(b));
                }
                _ => {
                    self.unget(c);
                    break;
                }
            }
        }
        let Some(value) = self.macros.get(&name).map(|m| m.value.clone()) else {
            let hint = if name.is_empty() {
                Some("a '$' outside quotes starts a macro name; quote the string".to_string())
            } else {
                Some(format!(
                    "define it above this line (`{name} = value`) or with -D {name}=value"
                ))
            };
            return Err(self.fail(LexErrorKind::UndefinedMacro(name), pos, hint));
        };
        let Some(src) = self.sources.last_mut() else {
            return Ok(());
        };
        src.unget.push(Unit::DoneExpand);
        for b in value.bytes().rev() {
            src.unget.push(Unit::Byte(b, pos));
        }
        src.unget.push(Unit::StartExpand);
        Ok(())
    }

    fn token_from(&mut self, b: u8, pos: Pos) -> Result<Token, LexError> {
        let tok = |kind| Ok(Token { kind, pos });
        match b {
            b'"' | b'\'' => self.quoted(b, pos),
            b'-' | b'0'..=b'9' => self.number_or_string(b, pos),
            b'=' => {
                let c = self.lgetc();
                if let Some((b'>', _)) = c {
                    tok(TokenKind::Arrow)
                } else {
                    self.unget(c);
                    tok(TokenKind::Eq)
                }
            }
            b'\n' => tok(TokenKind::Newline),
            b'{' => tok(TokenKind::LBrace),
            b'}' => tok(TokenKind::RBrace),
            b'<' => tok(TokenKind::Lt),
            b'>' => tok(TokenKind::Gt),
            b'!' => tok(TokenKind::Bang),
            b',' => tok(TokenKind::Comma),
            _ if starts_string(b) => self.unquoted(b, pos),
            _ => Err(self.unexpected(b, pos)),
        }
    }

    fn unexpected(&mut self, b: u8, pos: Pos) -> LexError {
        match b {
            0 => self.fail(LexErrorKind::Nul, pos, None),
            0x80..=0xff => {
                // Decode the character for the message if it is valid UTF-8.
                let mut bytes = vec![b];
                let want = match b {
                    0xC2..=0xDF => 1,
                    0xE0..=0xEF => 2,
                    0xF0..=0xF4 => 3,
                    _ => 0,
                };
                for _ in 0..want {
                    let c = self.igetc();
                    match c {
                        Some((n, _)) if n & 0xC0 == 0x80 => bytes.push(n),
                        _ => {
                            self.unget(c);
                            break;
                        }
                    }
                }
                match std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.chars().next())
                {
                    Some(ch) if bytes.len() == want + 1 => self.fail(
                        LexErrorKind::Unexpected(ch),
                        pos,
                        Some("non-ASCII text must be quoted".to_string()),
                    ),
                    _ => self.fail(LexErrorKind::InvalidUtf8, pos, None),
                }
            }
            _ if b.is_ascii_control() => self.fail(LexErrorKind::Control(b), pos, None),
            _ => {
                // Read the rest of the would-be word for the hint.
                let mut word = vec![b];
                loop {
                    let c = self.lgetc();
                    match c {
                        Some((n, _)) if allowed_in_string(n) && word.len() < 80 => word.push(n),
                        _ => {
                            self.unget(c);
                            break;
                        }
                    }
                }
                let word = String::from_utf8_lossy(&word).into_owned();
                let hint = if b.is_ascii_punctuation() && word.len() > 1 {
                    Some(format!(
                        "a string that does not start with a letter, digit, ':' or '_' \
                         must be quoted: \"{word}\""
                    ))
                } else {
                    None
                };
                self.fail(LexErrorKind::Unexpected(char::from(b)), pos, hint)
            }
        }
    }

    fn quoted(&mut self, quote: u8, pos: Pos) -> Result<Token, LexError> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Some((mut c, cpos)) = self.lgetc_quoted() else {
                return Err(self.fail(LexErrorKind::UnterminatedQuote, pos, None));
            };
            if c == b'\n' {
                continue;
            }
            if c == b'\\' {
                let next = self.lgetc_quoted();
                match next {
                    None => {
                        return Err(self.fail(LexErrorKind::UnterminatedQuote, pos, None));
                    }
                    Some((n, _)) if n == quote || n == b' ' || n == b'\t' => c = n,
                    Some((b'\n', _)) => continue,
                    Some(_) => self.unget(next),
                }
            } else if c == quote {
                break;
            } else if c == 0 {
                return Err(self.fail(LexErrorKind::Nul, cpos, None));
            } else if c != b'\t' && (c < 0x20 || c == 0x7f) {
                return Err(self.fail(LexErrorKind::Control(c), cpos, None));
            }
            if buf.len() + 1 >= MAX_TOKEN - 1 {
                return Err(self.fail(LexErrorKind::StringTooLong, pos, None));
            }
            buf.push(c);
        }
        match String::from_utf8(buf) {
            Ok(value) => Ok(Token {
                kind: TokenKind::Str {
                    value,
                    quoted: true,
                },
                pos,
            }),
            Err(_) => Err(self.fail(LexErrorKind::InvalidUtf8, pos, None)),
        }
    }

    fn number_or_string(&mut self, first: u8, pos: Pos) -> Result<Token, LexError> {
        let mut digits: Vec<(u8, Pos)> = vec![(first, pos)];
        let mut c;
        loop {
            c = self.lgetc();
            match c {
                Some((d, p)) if d.is_ascii_digit() => {
                    if digits.len() >= MAX_TOKEN {
                        return Err(self.fail(LexErrorKind::StringTooLong, pos, None));
                    }
                    digits.push((d, p));
                }
                _ => break,
            }
        }
        let lone_minus = digits.len() == 1 && first == b'-';
        if !lone_minus && c.is_none_or(|(b, _)| allowed_to_end_number(b)) {
            self.unget(c);
            let text: String = digits.iter().map(|&(d, _)| char::from(d)).collect();
            return match text.parse::<i64>() {
                Ok(n) => Ok(Token {
                    kind: TokenKind::Number(n),
                    pos,
                }),
                Err(_) => {
                    let reason = if first == b'-' {
                        "too small"
                    } else {
                        "too large"
                    };
                    Err(self.fail(LexErrorKind::InvalidNumber { text, reason }, pos, None))
                }
            };
        }
        // Not a number: read the same characters again as a string.
        self.unget(c);
        for &d in digits.iter().skip(1).rev() {
            self.unget(Some(d));
        }
        if first == b'-' {
            return Err(self.unexpected(b'-', pos));
        }
        self.unquoted(first, pos)
    }

    fn unquoted(&mut self, first: u8, pos: Pos) -> Result<Token, LexError> {
        let mut buf = String::new();
        buf.push(char::from(first));
        loop {
            let c = self.lgetc();
            match c {
                Some((b, _)) if allowed_in_string(b) => {
                    if buf.len() + 1 >= MAX_TOKEN {
                        return Err(self.fail(LexErrorKind::StringTooLong, pos, None));
                    }
                    buf.push(char::from(b));
                }
                _ => {
                    self.unget(c);
                    break;
                }
            }
        }
        let kind = match Keyword::lookup(&buf) {
            Some(k) => TokenKind::Keyword(k),
            None => TokenKind::Str {
                value: buf,
                quoted: false,
            },
        };
        Ok(Token { kind, pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex_all(text: &str) -> Vec<Result<TokenKind, LexErrorKind>> {
        lex_bytes(text.as_bytes())
    }

    fn lex_bytes(data: &[u8]) -> Vec<Result<TokenKind, LexErrorKind>> {
        let mut lx = Lexer::new(0, data.to_vec());
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match lx.next_token() {
                Ok(t) if t.kind == TokenKind::Eof => break,
                Ok(t) => out.push(Ok(t.kind)),
                Err(e) => out.push(Err(e.kind)),
            }
        }
        out
    }

    fn s(v: &str) -> Result<TokenKind, LexErrorKind> {
        Ok(TokenKind::Str {
            value: v.to_string(),
            quoted: false,
        })
    }

    fn q(v: &str) -> Result<TokenKind, LexErrorKind> {
        Ok(TokenKind::Str {
            value: v.to_string(),
            quoted: true,
        })
    }

    fn kw(k: Keyword) -> Result<TokenKind, LexErrorKind> {
        Ok(TokenKind::Keyword(k))
    }

    const NL: Result<TokenKind, LexErrorKind> = Ok(TokenKind::Newline);

    #[test]
    fn keywords_strings_numbers() {
        assert_eq!(
            lex_all("listen on lo0 port 25\n"),
            vec![
                kw(Keyword::Listen),
                kw(Keyword::On),
                s("lo0"),
                kw(Keyword::Port),
                Ok(TokenKind::Number(25)),
                NL,
                NL, // the end of the file reads as one more newline
            ]
        );
    }

    #[test]
    fn keyword_table_is_sorted_and_complete() {
        let words: Vec<&str> = Keyword::ALL.iter().map(|k| k.as_str()).collect();
        let mut sorted = words.clone();
        sorted.sort_unstable();
        assert_eq!(words, sorted);
        assert_eq!(words.len(), 101);
        for k in Keyword::ALL {
            assert_eq!(Keyword::lookup(k.as_str()), Some(*k));
        }
    }

    #[test]
    fn numbers_end_only_at_allowed_chars() {
        assert_eq!(lex_all("35M")[0], s("35M"));
        assert_eq!(lex_all("192.168.0.1")[0], s("192.168.0.1"));
        assert_eq!(lex_all("-12 ")[0], Ok(TokenKind::Number(-12)));
        assert_eq!(
            lex_all("10,20"),
            vec![
                Ok(TokenKind::Number(10)),
                Ok(TokenKind::Comma),
                Ok(TokenKind::Number(20)),
                NL
            ]
        );
        assert_eq!(lex_all("4d")[0], s("4d"));
        assert_eq!(
            lex_all("99999999999999999999")[0],
            Err(LexErrorKind::InvalidNumber {
                text: "99999999999999999999".into(),
                reason: "too large"
            })
        );
        assert_eq!(lex_all("-x")[0], Err(LexErrorKind::Unexpected('-')));
    }

    #[test]
    fn punctuation_tokens_and_arrow() {
        assert_eq!(
            lex_all("{a=b,c=>d}<t>!"),
            vec![
                Ok(TokenKind::LBrace),
                s("a"),
                Ok(TokenKind::Eq),
                s("b"),
                Ok(TokenKind::Comma),
                s("c"),
                Ok(TokenKind::Arrow),
                s("d"),
                Ok(TokenKind::RBrace),
                Ok(TokenKind::Lt),
                s("t"),
                Ok(TokenKind::Gt),
                Ok(TokenKind::Bang),
                NL
            ]
        );
    }

    #[test]
    fn quoted_strings_and_escapes() {
        assert_eq!(lex_all(r#""a b""#)[0], q("a b"));
        assert_eq!(lex_all(r#"'it''s'"#)[0], q("it"));
        assert_eq!(lex_all(r#""say \"hi\"""#)[0], q("say \"hi\""));
        assert_eq!(lex_all(r#""a\ b\	c""#)[0], q("a b\tc"));
        // Other escapes keep the backslash.
        assert_eq!(lex_all(r#""a\nb""#)[0], q("a\\nb"));
        // Backslash-newline inside quotes joins; a bare newline is dropped.
        assert_eq!(lex_all("\"ab\\\n  cd\"")[0], q("ab  cd"));
        assert_eq!(lex_all("\"ab\ncd\"")[0], q("abcd"));
        // A keyword in quotes is a string.
        assert_eq!(lex_all("\"listen\"")[0], q("listen"));
    }

    #[test]
    fn continuation_and_comments() {
        assert_eq!(
            lex_all("a \\\n b # comment \\\n still comment\nc"),
            vec![s("a"), s("b"), NL, s("c"), NL]
        );
    }

    #[test]
    fn unquoted_at_and_slash_are_errors_with_hint() {
        let mut lx = Lexer::new(0, b"mail-from @example.com\n".to_vec());
        assert_eq!(
            lx.next_token().map(|t| t.kind),
            Ok(TokenKind::Keyword(Keyword::MailFrom))
        );
        let e = lx.next_token().expect_err("error");
        assert_eq!(e.kind, LexErrorKind::Unexpected('@'));
        assert_eq!(e.pos.col, 11);
        assert!(
            e.hint
                .as_deref()
                .is_some_and(|h| h.contains("\"@example.com\""))
        );
        // The rest of the line was skipped, newline included.
        assert_eq!(lx.next_token().map(|t| t.kind), Ok(TokenKind::Newline));
        assert_eq!(lx.next_token().map(|t| t.kind), Ok(TokenKind::Eof));
    }

    #[test]
    fn macros_expand_textually() {
        let mut lx = Lexer::new(0, b"listen on $a.com $b\n".to_vec());
        lx.define_macro("a", "example", false);
        lx.define_macro("b", "tls pki x", false);
        let kinds: Vec<TokenKind> = std::iter::from_fn(|| {
            lx.next_token()
                .ok()
                .filter(|t| t.kind != TokenKind::Eof)
                .map(|t| t.kind)
        })
        .collect();
        assert_eq!(
            kinds,
            vec![
                TokenKind::Keyword(Keyword::Listen),
                TokenKind::Keyword(Keyword::On),
                TokenKind::Str {
                    value: "example.com".into(),
                    quoted: false
                },
                TokenKind::Keyword(Keyword::Tls),
                TokenKind::Keyword(Keyword::Pki),
                TokenKind::Str {
                    value: "x".into(),
                    quoted: false
                },
                TokenKind::Newline,
                TokenKind::Newline,
            ]
        );
    }

    #[test]
    fn macro_in_macro_is_not_expanded() {
        let mut lx = Lexer::new(0, b"$a\n".to_vec());
        lx.define_macro("a", "$b", false);
        lx.define_macro("b", "x", false);
        let e = lx.next_token().expect_err("error");
        assert_eq!(e.kind, LexErrorKind::Unexpected('$'));
    }

    #[test]
    fn persistent_macros_win() {
        let mut lx = Lexer::new(0, Vec::new());
        lx.define_macro("a", "cmdline", true);
        lx.define_macro("a", "file", false);
        assert_eq!(lx.macro_value("a"), Some("cmdline"));
    }

    #[test]
    fn undefined_macro() {
        assert_eq!(
            lex_all("$nope x\ny"),
            vec![Err(LexErrorKind::UndefinedMacro("nope".into())), s("y"), NL]
        );
    }

    #[test]
    fn unterminated_quote() {
        assert_eq!(
            lex_all("\"abc"),
            vec![Err(LexErrorKind::UnterminatedQuote), NL]
        );
    }

    #[test]
    fn long_tokens_are_refused_without_big_buffers() {
        let long = "a".repeat(MAX_TOKEN + 10);
        assert_eq!(
            lex_all(&format!("{long} x\ny")),
            vec![Err(LexErrorKind::StringTooLong), s("y"), NL]
        );
        assert_eq!(
            lex_all(&format!("\"{long}\"\ny")),
            vec![Err(LexErrorKind::StringTooLong), s("y"), NL]
        );
        let just = "b".repeat(MAX_TOKEN - 2);
        assert_eq!(lex_all(&just)[0], s(&just));
    }

    #[test]
    fn control_bytes_and_utf8() {
        assert_eq!(lex_bytes(b"a\0b")[1], Err(LexErrorKind::Nul));
        assert_eq!(lex_bytes(b"\x01")[0], Err(LexErrorKind::Control(1)));
        assert_eq!(lex_bytes(b"\"a\x02\"")[0], Err(LexErrorKind::Control(2)));
        assert_eq!(lex_bytes(b"\xff\xfe")[0], Err(LexErrorKind::InvalidUtf8));
        assert_eq!(
            lex_bytes(b"\"\xc3\x28\"")[0],
            Err(LexErrorKind::InvalidUtf8)
        );
        assert_eq!(lex_all("\"caf\u{e9}\"")[0], q("caf\u{e9}"));
        assert_eq!(
            lex_all("\u{e9}")[0],
            Err(LexErrorKind::Unexpected('\u{e9}'))
        );
    }

    #[test]
    fn positions_count_characters() {
        let mut lx = Lexer::new(3, "\"\u{e9}\u{e9}\" x\n  y".as_bytes().to_vec());
        let a = lx.next_token().expect("token");
        let b = lx.next_token().expect("token");
        let _nl = lx.next_token().expect("token");
        let c = lx.next_token().expect("token");
        assert_eq!(
            a.pos,
            Pos {
                file: 3,
                line: 1,
                col: 1
            }
        );
        assert_eq!(
            b.pos,
            Pos {
                file: 3,
                line: 1,
                col: 6
            }
        );
        assert_eq!(
            c.pos,
            Pos {
                file: 3,
                line: 2,
                col: 3
            }
        );
    }

    #[test]
    fn include_stack_reads_newline_then_parent() {
        let mut lx = Lexer::new(0, b"a\nb\n".to_vec());
        assert_eq!(lx.next_token().map(|t| t.kind).map_err(|e| e.kind), s("a"));
        assert_eq!(lx.next_token().map(|t| t.kind).map_err(|e| e.kind), NL);
        lx.push_file(1, b"inner".to_vec());
        let t = lx.next_token().expect("token");
        assert_eq!(
            t.kind,
            TokenKind::Str {
                value: "inner".into(),
                quoted: false
            }
        );
        assert_eq!(t.pos.file, 1);
        assert_eq!(lx.next_token().map(|t| t.kind).map_err(|e| e.kind), NL);
        let t = lx.next_token().expect("token");
        assert_eq!(t.pos.file, 0);
        assert_eq!(
            t.kind,
            TokenKind::Str {
                value: "b".into(),
                quoted: false
            }
        );
    }
}
