//! The header block of a queued message, read once and bounded, for the
//! decisions a local delivery makes before writing anything: a
//! `Delivered-To` loop, an `X-Spam` verdict.

use std::io::{BufRead, Write};

use crate::DeliveryError;

/// Larger header blocks are refused: no real mail needs more, and the block
/// is held in memory.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// The raw header block, line ends as stored, including the blank line that
/// ends it when the message has a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderBlock {
    pub raw: Vec<u8>,
}

impl HeaderBlock {
    /// Read lines up to and including the first empty line (or to the end
    /// of a message that has no body).
    pub fn read(input: &mut impl BufRead) -> Result<HeaderBlock, DeliveryError> {
        let mut raw = Vec::new();
        loop {
            let start = raw.len();
            let limit = (MAX_HEADER_BYTES + 1 - start) as u64;
            let n = std::io::Read::take(&mut *input, limit)
                .read_until(b'\n', &mut raw)
                .map_err(DeliveryError::Read)?;
            if raw.len() > MAX_HEADER_BYTES {
                return Err(DeliveryError::HeadersTooLarge(MAX_HEADER_BYTES));
            }
            let line = raw.get(start..).unwrap_or_default();
            if n == 0 || line == b"\n" || line == b"\r\n" {
                return Ok(HeaderBlock { raw });
            }
        }
    }

    /// The fields as (name, unfolded value) pairs, in order.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in self.raw.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(line);
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if let Some((_, value)) = fields.last_mut() {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(text.trim());
                }
                continue;
            }
            if let Some((name, value)) = text.split_once(':') {
                fields.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        fields
    }

    /// Whether a `Delivered-To` field names `address` (case-insensitive, as
    /// addresses compare in practice).
    pub fn delivered_to(&self, address: &str) -> bool {
        self.fields().iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("Delivered-To")
                && value
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .eq_ignore_ascii_case(address)
        })
    }

    /// Whether a filter marked the message as spam (`X-Spam: yes`, or
    /// SpamAssassin's `X-Spam-Flag: yes`, as OpenSMTPD checks).
    pub fn is_spam(&self) -> bool {
        self.fields().iter().any(|(name, value)| {
            (name.eq_ignore_ascii_case("X-Spam") || name.eq_ignore_ascii_case("X-Spam-Flag"))
                && value.eq_ignore_ascii_case("yes")
        })
    }
}

/// Write the trace fields every local delivery puts first: `Return-Path`
/// (the envelope sender, `<>` for the null sender) and `Delivered-To` (the
/// recipient, which later deliveries check for loops), with LF line ends.
/// Control characters become `_`: a CR or LF from the envelope must never
/// start a field of its own.
pub fn write_trace_fields(
    out: &mut impl Write,
    sender: &str,
    recipient: &str,
) -> std::io::Result<()> {
    writeln!(out, "Return-Path: <{}>", field_safe(sender))?;
    writeln!(out, "Delivered-To: {}", field_safe(recipient))
}

fn field_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &[u8]) -> (HeaderBlock, Vec<u8>) {
        let mut input = std::io::Cursor::new(text.to_vec());
        let block = HeaderBlock::read(&mut input).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut input, &mut rest).unwrap();
        (block, rest)
    }

    #[test]
    fn stops_after_the_blank_line() {
        let (b, rest) = block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n");
        assert_eq!(b.raw, b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(rest, b"body\r\n");
    }

    #[test]
    fn message_without_body() {
        let (b, rest) = block(b"A: 1\nB: 2\n");
        assert_eq!(b.raw, b"A: 1\nB: 2\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn folded_fields_are_unfolded() {
        let (b, _) = block(b"Delivered-To:\r\n <Bob@Example.org>\r\nX-Spam:  YES\r\n\r\n");
        assert!(b.delivered_to("bob@example.org"));
        assert!(!b.delivered_to("alice@example.org"));
        assert!(b.is_spam());
    }

    #[test]
    fn spam_needs_yes() {
        let (b, _) = block(b"X-Spam: no\r\nX-Spam-Status: yes\r\n\r\n");
        assert!(!b.is_spam());
        let (b, _) = block(b"X-Spam-Flag: YES\r\n\r\n");
        assert!(b.is_spam());
    }

    #[test]
    fn oversized_header_block_is_refused() {
        let mut text = Vec::new();
        while text.len() <= MAX_HEADER_BYTES {
            text.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let err = HeaderBlock::read(&mut std::io::Cursor::new(text)).unwrap_err();
        assert!(matches!(err, DeliveryError::HeadersTooLarge(_)));
    }

    #[test]
    fn trace_fields() {
        let mut out = Vec::new();
        write_trace_fields(&mut out, "", "bob@example.org").unwrap();
        assert_eq!(out, b"Return-Path: <>\nDelivered-To: bob@example.org\n");
        out.clear();
        write_trace_fields(&mut out, "a\r\nX-Evil: 1", "b\n@c").unwrap();
        assert_eq!(out, b"Return-Path: <a__X-Evil: 1>\nDelivered-To: b_@c\n");
    }

    #[test]
    fn one_endless_line_is_bounded() {
        let text = vec![b'x'; MAX_HEADER_BYTES * 2];
        let err = HeaderBlock::read(&mut std::io::Cursor::new(text)).unwrap_err();
        assert!(matches!(err, DeliveryError::HeadersTooLarge(_)));
    }
}
