//! The DATA reader: a streaming state machine from the bytes after `354` to
//! the final `CR LF . CR LF`.
//!
//! Only `CR LF . CR LF` ends the message (the first CRLF belongs to the
//! message; at the very start of DATA the message begins "after a CRLF", so
//! the first line may be the final dot). A bare LF or bare CR is never a line
//! end: it refuses the message but reading goes on to the real terminator, so
//! whatever an attacker hides behind `LF . LF` stays message data and can
//! never become a second message (SMTP smuggling).
//!
//! Memory is constant: the reader keeps a handful of counters whatever it is
//! fed; content goes straight into the caller's buffer.

use crate::reply::Reply;

/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets, CRLF included.
pub const MAX_TEXT_LINE_OCTETS: usize = 1000;
/// More `Received:` headers than this means a mail loop (RFC 5321 6.3).
pub const MAX_RECEIVED_HEADERS: u32 = 100;

/// Why a message is refused. The first problem seen wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("bare LF in message data")]
    BareLf,
    #[error("bare CR in message data")]
    BareCr,
    #[error("NUL byte in message data")]
    Nul,
    #[error("line longer than {MAX_TEXT_LINE_OCTETS} octets")]
    LineTooLong,
    #[error("message exceeds the size limit")]
    TooBig,
    #[error("more than {MAX_RECEIVED_HEADERS} Received headers")]
    TooManyReceived,
    #[error("first line starts with whitespace")]
    NotRfc5322,
}

impl DataError {
    /// The one reply for each refusal, sent after the final dot.
    pub fn reply(&self) -> Reply {
        match self {
            DataError::BareLf => Reply::fixed(
                550,
                (5, 6, 0),
                "Message refused: bare LF in data, lines must end with CRLF",
            ),
            DataError::BareCr => Reply::fixed(
                550,
                (5, 6, 0),
                "Message refused: bare CR in data, lines must end with CRLF",
            ),
            DataError::Nul => Reply::fixed(550, (5, 6, 0), "Message refused: NUL byte in data"),
            DataError::LineTooLong => Reply::fixed(
                550,
                (5, 6, 0),
                "Message refused: line longer than 1000 octets",
            ),
            DataError::TooBig => Reply::fixed(552, (5, 3, 4), "Message too big for system"),
            DataError::TooManyReceived => Reply::fixed(
                554,
                (5, 4, 6),
                "Routing loop detected: too many Received headers",
            ),
            DataError::NotRfc5322 => Reply::fixed(
                550,
                (5, 7, 1),
                "Delivery not authorized, message refused: Message is not RFC 5322 compliant",
            ),
        }
    }
}

/// Where the framing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Just after a CRLF (or at the start of DATA).
    LineStart,
    /// A `.` at line start, held back (dropped if it turns out stuffed).
    Dot,
    /// `.` CR at line start: one LF away from the end.
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside a line, held back until we know whether LF follows.
    Cr,
    /// The terminator was read.
    Done,
}

/// Progress through the `Received:` prefix of the current header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// Still in the header block; `matched` octets of `received:` seen at
    /// the start of this line, or `None` once the line cannot match.
    InHeaders {
        matched: Option<u8>,
    },
    Body,
}

const RECEIVED: &[u8] = b"received:";

/// Streaming DATA reader; see the module doc.
#[derive(Debug, Clone)]
pub struct DataReader {
    framing: Framing,
    refused: Option<DataError>,
    max_size: u64,
    size: u64,
    /// Content octets in the current line, CRLF included.
    line_len: usize,
    first_line: bool,
    header: Header,
    received: u32,
}

impl DataReader {
    /// `max_size`: the largest message accepted, in content octets.
    pub fn new(max_size: u64) -> Self {
        Self {
            framing: Framing::LineStart,
            refused: None,
            max_size,
            size: 0,
            line_len: 0,
            first_line: true,
            header: Header::InHeaders { matched: Some(0) },
            received: 0,
        }
    }

    /// Reads from `input`, appending message content (dot-unstuffed, CRLF
    /// line ends) to `out`. Returns how many bytes were used: all of them,
    /// or fewer when the terminator was reached; what follows it is the next
    /// command. Once the message is refused nothing more is appended.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            if self.framing == Framing::Done {
                break;
            }
            // Fast path for a run of ordinary body bytes.
            if self.framing == Framing::Mid && self.refused.is_none() && self.header == Header::Body
            {
                let rest = input.get(i..).unwrap_or_default();
                let run = rest
                    .iter()
                    .position(|&c| c == b'\r' || c == b'\n' || c == 0)
                    .unwrap_or(rest.len());
                let line_room = MAX_TEXT_LINE_OCTETS.saturating_sub(self.line_len + 2);
                let size_room =
                    usize::try_from(self.max_size.saturating_sub(self.size)).unwrap_or(usize::MAX);
                let take = run.min(line_room).min(size_room);
                if take > 0 {
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    self.line_len += take;
                    self.size += take as u64;
                    i += take;
                    continue;
                }
            }
            self.step(b, out);
            i += 1;
        }
        i
    }

    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The outcome, once the terminator was read.
    pub fn verdict(&self) -> Option<Result<(), DataError>> {
        self.is_done().then(|| self.refused.map_or(Ok(()), Err))
    }

    /// The first refusal seen so far, if any.
    pub fn refused(&self) -> Option<DataError> {
        self.refused
    }

    /// Content octets accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn refuse(&mut self, e: DataError) {
        if self.refused.is_none() {
            self.refused = Some(e);
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.framing {
            Framing::LineStart => match b {
                b'.' => self.framing = Framing::Dot,
                b'\r' => self.framing = Framing::Cr,
                _ => self.mid(b, out),
            },
            // The held dot is dropped either way: stuffing (RFC 5321 4.5.2).
            Framing::Dot => match b {
                b'\r' => self.framing = Framing::DotCr,
                _ => self.mid(b, out),
            },
            Framing::DotCr => {
                if b == b'\n' {
                    self.framing = Framing::Done;
                } else {
                    // ".\r" then not LF: that CR was bare. Never an end,
                    // whatever follows (".\r\r\n" included).
                    self.refuse(DataError::BareCr);
                    self.mid(b, out);
                }
            }
            Framing::Mid => self.mid(b, out),
            Framing::Cr => match b {
                b'\n' => {
                    self.content(b'\r', out);
                    self.content(b'\n', out);
                    self.framing = Framing::LineStart;
                }
                b'\r' => self.refuse(DataError::BareCr),
                _ => {
                    self.refuse(DataError::BareCr);
                    self.mid(b, out);
                }
            },
            Framing::Done => {}
        }
    }

    /// A byte inside a line (or starting one that is not a dot or CR).
    fn mid(&mut self, b: u8, out: &mut Vec<u8>) {
        self.framing = Framing::Mid;
        match b {
            b'\r' => self.framing = Framing::Cr,
            // Not a line end: the framing stays mid-line, so a following
            // ".\r\n" cannot end the message.
            b'\n' => self.refuse(DataError::BareLf),
            0 => self.refuse(DataError::Nul),
            _ => self.content(b, out),
        }
    }

    /// One content octet: limits, header checks, output.
    fn content(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.refused.is_some() {
            return;
        }
        self.size += 1;
        if self.size > self.max_size {
            self.refuse(DataError::TooBig);
            return;
        }
        self.line_len += 1;
        // CR and LF only come here as a pair, so leave room for both.
        let reserve = if b == b'\r' || b == b'\n' { 0 } else { 2 };
        if self.line_len + reserve > MAX_TEXT_LINE_OCTETS {
            self.refuse(DataError::LineTooLong);
            return;
        }
        let col = self.line_len - 1;
        if col == 0 && self.first_line && (b == b' ' || b == b'\t') {
            self.refuse(DataError::NotRfc5322);
            return;
        }
        if let Header::InHeaders { matched: Some(m) } = self.header
            && usize::from(m) == col
        {
            let next = if RECEIVED.get(col) == Some(&b.to_ascii_lowercase()) {
                Some(m + 1)
            } else {
                None
            };
            self.header = Header::InHeaders { matched: next };
            if next.is_some_and(|n| usize::from(n) == RECEIVED.len()) {
                self.received += 1;
                if self.received > MAX_RECEIVED_HEADERS {
                    self.refuse(DataError::TooManyReceived);
                    return;
                }
            }
        }
        out.push(b);
        if b == b'\n' {
            // Only reached for a real CRLF.
            if self.line_len == 2 && matches!(self.header, Header::InHeaders { .. }) {
                self.header = Header::Body;
            } else if let Header::InHeaders { .. } = self.header {
                self.header = Header::InHeaders { matched: Some(0) };
            }
            self.line_len = 0;
            self.first_line = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1 << 20;

    /// Feeds `input` in one go: (consumed, content, verdict).
    fn run(input: &[u8]) -> (usize, Vec<u8>, Option<Result<(), DataError>>) {
        let mut r = DataReader::new(BIG);
        let mut out = Vec::new();
        let n = r.feed(input, &mut out);
        (n, out, r.verdict())
    }

    /// Feeds `input` in chunks of `size`, stopping when done.
    fn run_chunked(
        input: &[u8],
        size: usize,
        max: u64,
    ) -> (usize, Vec<u8>, Option<Result<(), DataError>>) {
        let mut r = DataReader::new(max);
        let mut out = Vec::new();
        let mut used = 0;
        for chunk in input.chunks(size) {
            let n = r.feed(chunk, &mut out);
            used += n;
            if n < chunk.len() || r.is_done() {
                break;
            }
        }
        (used, out, r.verdict())
    }

    #[test]
    fn plain_message_and_unstuffing() {
        let input = b"Subject: x\r\n\r\nbody\r\n..dotstuffed\r\n.\r\nQUIT\r\n";
        let (n, out, v) = run(input);
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n.dotstuffed\r\n");
        assert_eq!(v, Some(Ok(())));
    }

    #[test]
    fn empty_message_first_line_is_the_dot() {
        let (n, out, v) = run(b".\r\nNOOP\r\n");
        assert_eq!(n, 3);
        assert!(out.is_empty());
        assert_eq!(v, Some(Ok(())));
    }

    #[test]
    fn unfinished_message_is_not_done() {
        let (n, out, v) = run(b"a\r\nb");
        assert_eq!(n, 4);
        assert_eq!(out, b"a\r\nb");
        assert_eq!(v, None);
    }

    /// The OpenSMTPD-accepted and classic smuggling terminators: none ends
    /// DATA, each refuses the message, and the real end is found later.
    #[test]
    fn smuggling_variants_never_end_data() {
        let variants: &[(&[u8], DataError)] = &[
            (b"body\n.\n", DataError::BareLf),
            (b"body\r\n.\n", DataError::BareLf),
            (b"body\n.\r\n", DataError::BareLf),
            (b"body\r.\r", DataError::BareCr),
            (b"body\r\n.\r", DataError::BareCr),
            (b"body\r\n.\r\r\n", DataError::BareCr),
            (b"body\r\n\r.\r\n", DataError::BareCr),
            (b"body\r.\r\n", DataError::BareCr),
            (b"body\r\n.\n\r\n", DataError::BareLf),
            (b"body\n\n.\n\n", DataError::BareLf),
            (b"body\r\r\n.\r\r\n", DataError::BareCr),
            (b"body\x00\r\n.\r\n", DataError::Nul),
        ];
        for (fake, err) in variants {
            let mut input = b"Subject: smug\r\n\r\n".to_vec();
            input.extend_from_slice(fake);
            let smuggled = b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n";
            // Only the NUL case's fake end is a real CRLF.CRLF.
            if *err == DataError::Nul {
                let (n, _, v) = run(&input);
                assert_eq!(n, input.len());
                assert_eq!(v, Some(Err(DataError::Nul)));
                continue;
            }
            input.extend_from_slice(smuggled);
            let end = input.len();
            input.extend_from_slice(b".\r\nQUIT\r\n");
            for size in [1, 2, 3, 7, input.len()] {
                let (n, _, v) = run_chunked(&input, size, BIG);
                assert_eq!(n, end + 3, "{fake:?} chunk {size}");
                assert_eq!(v, Some(Err(*err)), "{fake:?} chunk {size}");
            }
        }
    }

    #[test]
    fn bare_lf_then_real_end() {
        // The transcript's attack: the smuggled commands end up inside the
        // (refused) first message, the next bytes are the following commands.
        let input =
            b"Subject: smug\r\n\r\nbody\n.\r\nMAIL FROM:<admin@example.org>\r\n.\r\nQUIT\r\n";
        let (n, out, v) = run(input);
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(v, Some(Err(DataError::BareLf)));
        // Refused messages stop producing content at the first problem.
        assert_eq!(out, b"Subject: smug\r\n\r\nbody");
    }

    #[test]
    fn split_at_every_position_equals_one_feed() {
        let inputs: &[&[u8]] = &[
            b"Received: a\r\nreceived:b\r\nX: y\r\n\r\n..x\r\n.\r\nNEXT",
            b"a\r\n.\r\r\n.\n.\r\n\r\n.\r\nNEXT",
            b"..\r\n...\r\n.a\r\n.\r\nNEXT",
            b" bad\r\n.\r\nNEXT",
            b"x\r\n\r\n\r\r\n.\r\nNEXT",
        ];
        for input in inputs {
            let whole = run(input);
            assert!(whole.2.is_some());
            assert_eq!(&input[whole.0..], b"NEXT");
            for split in 0..=input.len() {
                let mut r = DataReader::new(BIG);
                let mut out = Vec::new();
                let (a, b) = input.split_at(split);
                let mut n = r.feed(a, &mut out);
                if n == a.len() {
                    n += r.feed(b, &mut out);
                }
                assert_eq!((n, out, r.verdict()), whole, "split {split} of {input:?}");
            }
            assert_eq!(run_chunked(input, 1, BIG), whole);
        }
    }

    #[test]
    fn size_limit_keeps_reading_to_the_end() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nNEXT";
        let (n, out, v) = run_chunked(input, 5, 15);
        assert_eq!(&input[n..], b"NEXT");
        assert_eq!(v, Some(Err(DataError::TooBig)));
        assert!(out.len() <= 15);
        // Exactly at the limit is fine.
        let (_, out, v) = run_chunked(input, 64, 24);
        assert_eq!(out.len(), 24);
        assert_eq!(v, Some(Ok(())));
        let (_, _, v) = run_chunked(input, 64, 23);
        assert_eq!(v, Some(Err(DataError::TooBig)));
    }

    #[test]
    fn line_limit_is_1000_octets_with_crlf() {
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&ok).2, Some(Ok(())));
        // A stuffed line: the dot removed, the content is 998 + CRLF.
        let mut stuffed = vec![b'.'];
        stuffed.extend_from_slice(&ok);
        assert_eq!(run(&stuffed).2, Some(Ok(())));
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&long).2, Some(Err(DataError::LineTooLong)));
        // 70000-octet line: constant memory, refused, still finds the end.
        let mut huge = vec![b'x'; 70_000];
        huge.extend_from_slice(b"\r\n.\r\nNEXT");
        let (n, out, v) = run(&huge);
        assert_eq!(&huge[n..], b"NEXT");
        assert_eq!(v, Some(Err(DataError::LineTooLong)));
        assert_eq!(out.len(), MAX_TEXT_LINE_OCTETS - 2);
    }

    #[test]
    fn first_line_whitespace_refused() {
        assert_eq!(
            run(b" Subject: bad\r\n\r\nbody\r\n.\r\n").2,
            Some(Err(DataError::NotRfc5322))
        );
        assert_eq!(
            run(b"\tSubject: bad\r\n.\r\n").2,
            Some(Err(DataError::NotRfc5322))
        );
        // Folded headers later are fine.
        assert_eq!(
            run(b"Subject: a\r\n b\r\n\r\n body\r\n.\r\n").2,
            Some(Ok(()))
        );
    }

    #[test]
    fn received_header_loop_detection() {
        let mut msg = b"Received: from a\r\n".repeat(100);
        msg.extend_from_slice(b"\r\n");
        let mut ok = msg.clone();
        ok.extend_from_slice(b".\r\n");
        assert_eq!(run(&ok).2, Some(Ok(())));
        let mut bad = b"RECEIVED: x\r\n".to_vec();
        bad.extend_from_slice(&msg);
        bad.extend_from_slice(b".\r\n");
        assert_eq!(run(&bad).2, Some(Err(DataError::TooManyReceived)));
        // Received lines in the body do not count.
        let mut body = b"Subject: x\r\n\r\n".to_vec();
        body.extend_from_slice(&b"Received: x\r\n".repeat(150));
        body.extend_from_slice(b".\r\n");
        assert_eq!(run(&body).2, Some(Ok(())));
        // Neither do near misses or continuation lines.
        let mut near = b"Received : x\r\n Received: y\r\nXReceived: z\r\n".repeat(60);
        near.extend_from_slice(b".\r\n");
        assert_eq!(run(&near).2, Some(Ok(())));
    }

    #[test]
    fn eight_bit_data_passes() {
        let (_, out, v) = run(b"Subject: 8bit\r\n\r\nd\xc3\xa9j\xc3\xa0\r\n.\r\n");
        assert_eq!(out, b"Subject: 8bit\r\n\r\nd\xc3\xa9j\xc3\xa0\r\n");
        assert_eq!(v, Some(Ok(())));
    }

    #[test]
    fn every_refusal_is_a_valid_negative_reply() {
        use DataError::*;
        for e in [
            BareLf,
            BareCr,
            Nul,
            LineTooLong,
            TooBig,
            TooManyReceived,
            NotRfc5322,
        ] {
            let r = e.reply();
            assert!(r.is_permanent(), "{e:?}");
            assert!(Reply::new(r.code(), r.enhanced(), r.lines().to_vec()).is_ok());
        }
    }

    #[test]
    fn replies_are_exact() {
        assert_eq!(
            DataError::TooBig.reply().to_wire(),
            b"552 5.3.4 Message too big for system\r\n"
        );
        assert_eq!(
            DataError::TooManyReceived.reply().to_wire(),
            b"554 5.4.6 Routing loop detected: too many Received headers\r\n"
        );
        assert_eq!(
            DataError::NotRfc5322.reply().to_wire(),
            &b"550 5.7.1 Delivery not authorized, message refused: Message is not RFC 5322 compliant\r\n"[..]
        );
        assert_eq!(
            DataError::BareLf.reply().to_wire(),
            &b"550 5.6.0 Message refused: bare LF in data, lines must end with CRLF\r\n"[..]
        );
    }
}
