//! Addresses as local programs write them: RFC 5322 3.4 address lists (the
//! values of `To:`, `Cc:`, `Bcc:` and the recipient arguments of sendmail),
//! and a plausibility check for one address.
//!
//! The check is deliberately a plausibility check, not the RFC 5321 parser
//! of rsmtpd-smtp-proto: the daemon checks again when the message is
//! submitted over SMTP. What it guarantees is what matters before that: no
//! control character, no space outside quotes, a bounded length, at most one
//! `@` outside quotes, so that an address can go into an SMTP command line
//! or an offline file without breaking it.

/// The longest address accepted, in octets (RFC 5321 4.5.3.1.3 bounds a
/// path to 256 octets with its angle brackets; being generous costs
/// nothing, the daemon checks the exact limits).
pub const MAX_ADDRESS_OCTETS: usize = 256;

/// Why an address list could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressListError {
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("unterminated comment")]
    UnterminatedComment,
    #[error("unterminated domain literal")]
    UnterminatedLiteral,
    #[error("'<' without a closing '>'")]
    UnterminatedAngle,
    #[error("'>' without an opening '<'")]
    UnmatchedAngle,
    #[error("'<' inside an angle address")]
    NestedAngle,
    #[error("empty address <>")]
    EmptyAngle,
    #[error("text after an angle address")]
    TextAfterAngle,
    #[error("malformed source route in angle address")]
    BadRoute,
    #[error("group inside a group")]
    NestedGroup,
    #[error("';' outside a group")]
    GroupEndOutsideGroup,
    #[error("display name without an <address>")]
    PhraseWithoutAddress,
    #[error("unexpected character {0:?}")]
    UnexpectedCharacter(char),
    #[error("address is not valid UTF-8")]
    NotUtf8,
}

/// RFC 5322 3.2.3 atext, plus `.` (dot-atoms and obsolete phrases) and any
/// non-ASCII octet (RFC 6532 UTF-8).
fn is_atom_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b) || b >= 0x80
}

/// Where the reader is within one list element.
#[derive(Debug, Default)]
struct Item {
    /// Words, quoted strings, literals and `@` of the element (or, inside
    /// `<...>`, of the angle address), without comments or white space.
    text: Vec<u8>,
    /// The last thing appended was a word (atom, quoted string, literal).
    last_was_word: bool,
    /// Two words were separated by white space: a phrase, valid only as
    /// a display name before `<` or `:`.
    phrase: bool,
    /// Inside `<...>`.
    in_angle: bool,
    /// The address of the element's `<...>`, once closed.
    angle: Option<Vec<u8>>,
}

impl Item {
    fn word(&mut self, w: &[u8], space_before: bool) -> Result<(), AddressListError> {
        if self.angle.is_some() {
            return Err(AddressListError::TextAfterAngle);
        }
        if self.last_was_word && space_before {
            if self.in_angle {
                // `<joe smith@x>`: no phrase can be inside an angle address.
                return Err(AddressListError::PhraseWithoutAddress);
            }
            self.phrase = true;
        }
        self.text.extend_from_slice(w);
        self.last_was_word = true;
        Ok(())
    }

    /// Ends the element: its address, if it has one, goes to `out`.
    fn finish(&mut self, out: &mut Vec<String>) -> Result<(), AddressListError> {
        if self.in_angle {
            return Err(AddressListError::UnterminatedAngle);
        }
        let done = std::mem::take(self);
        let addr = match done.angle {
            Some(a) => a,
            None if done.text.is_empty() => return Ok(()), // empty element
            None if done.phrase => return Err(AddressListError::PhraseWithoutAddress),
            None => done.text,
        };
        out.push(String::from_utf8(addr).map_err(|_| AddressListError::NotUtf8)?);
        Ok(())
    }
}

/// Reads an RFC 5322 3.4 address list and returns its addresses in order:
/// display names, comments and source routes dropped, groups opened
/// (`team: a@x, b@y;` gives `a@x` and `b@y`, an empty group nothing), quoted
/// local parts kept with their quotes (`"a,b"@x`). `value` is an unfolded
/// field body (or a command-line argument); line breaks have been removed.
///
/// Lenient where real mail is: empty elements (`a@x,,b@y`), a group not
/// closed by `;` at the end of the value, dots in display names. The
/// addresses returned are not yet checked (see [`is_plausible_address`]).
///
/// One pass, no recursion (nested comments are counted), output no longer
/// than the input.
pub fn parse_address_list(value: &[u8]) -> Result<Vec<String>, AddressListError> {
    let mut out = Vec::new();
    let mut item = Item::default();
    let mut in_group = false;
    // White space or a comment since the last token.
    let mut space = false;
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                space = true;
                i += 1;
                continue;
            }
            b'(' => {
                i = skip_comment(value, i)?;
                space = true;
                continue;
            }
            b'"' => {
                let end = skip_quoted(value, i, b'"', AddressListError::UnterminatedQuote)?;
                item.word(&value[i..end], space)?;
                i = end;
            }
            b'[' => {
                let end = skip_quoted(value, i, b']', AddressListError::UnterminatedLiteral)?;
                item.word(&value[i..end], space)?;
                i = end;
            }
            b'<' => {
                if item.in_angle {
                    return Err(AddressListError::NestedAngle);
                }
                if item.angle.is_some() {
                    return Err(AddressListError::TextAfterAngle);
                }
                // What came before was the display name.
                item.text.clear();
                item.last_was_word = false;
                item.phrase = false;
                item.in_angle = true;
                i += 1;
            }
            b'>' => {
                if !item.in_angle {
                    return Err(AddressListError::UnmatchedAngle);
                }
                item.in_angle = false;
                let addr = std::mem::take(&mut item.text);
                if addr.is_empty() {
                    return Err(AddressListError::EmptyAngle);
                }
                item.angle = Some(addr);
                item.last_was_word = false;
                i += 1;
            }
            b'@' => {
                if item.angle.is_some() {
                    return Err(AddressListError::TextAfterAngle);
                }
                item.text.push(b'@');
                item.last_was_word = false;
                i += 1;
            }
            b',' if item.in_angle => {
                // Only inside an obsolete source route: `<@a,@b:joe@x>`.
                if item.text.first() != Some(&b'@') {
                    return Err(AddressListError::BadRoute);
                }
                item.text.push(b',');
                item.last_was_word = false;
                i += 1;
            }
            b':' if item.in_angle => {
                // The end of a source route: what follows is the address.
                if item.text.first() != Some(&b'@') {
                    return Err(AddressListError::BadRoute);
                }
                item.text.clear();
                item.last_was_word = false;
                i += 1;
            }
            b',' => {
                item.finish(&mut out)?;
                i += 1;
            }
            b':' => {
                if in_group {
                    return Err(AddressListError::NestedGroup);
                }
                if item.angle.is_some() {
                    return Err(AddressListError::TextAfterAngle);
                }
                // What came before was the group's display name.
                item = Item::default();
                in_group = true;
                i += 1;
            }
            b';' if item.in_angle => return Err(AddressListError::UnterminatedAngle),
            b';' => {
                if !in_group {
                    return Err(AddressListError::GroupEndOutsideGroup);
                }
                item.finish(&mut out)?;
                in_group = false;
                i += 1;
            }
            _ if is_atom_byte(b) => {
                let start = i;
                while value.get(i).is_some_and(|&c| is_atom_byte(c)) {
                    i += 1;
                }
                item.word(&value[start..i], space)?;
            }
            _ => return Err(AddressListError::UnexpectedCharacter(char::from(b))),
        }
        space = false;
    }
    item.finish(&mut out)?;
    Ok(out)
}

/// `value[start]` opens a quoted string (`close` = `"`) or a domain literal
/// (`]`); returns the index just after its end. A backslash quotes the next
/// octet.
fn skip_quoted(
    value: &[u8],
    start: usize,
    close: u8,
    unterminated: AddressListError,
) -> Result<usize, AddressListError> {
    let mut i = start + 1;
    while let Some(&b) = value.get(i) {
        if b == b'\\' {
            i += 2;
        } else if b == close {
            return Ok(i + 1);
        } else if close == b']' && b == b'[' {
            return Err(AddressListError::UnexpectedCharacter('['));
        } else {
            i += 1;
        }
    }
    Err(unterminated)
}

/// `value[start]` is `(`; returns the index just after the matching `)`.
/// Comments nest (RFC 5322 3.2.2); the depth is a counter.
fn skip_comment(value: &[u8], start: usize) -> Result<usize, AddressListError> {
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&b) = value.get(i) {
        match b {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(AddressListError::UnterminatedComment)
}

/// The shape of a plausible address: `None` when implausible, else the
/// position of its `@` (`Some(None)` for a bare local part).
pub(crate) fn address_shape(s: &str) -> Option<Option<usize>> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_ADDRESS_OCTETS {
        return None;
    }
    // The local part: dot-atom text and quoted strings.
    let mut i = 0;
    let mut at = None;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => {
                            let q = *b.get(i + 1)?;
                            if q < 0x20 || q == 0x7f {
                                return None;
                            }
                            i += 2;
                        }
                        b'"' => break,
                        q if q < 0x20 || q == 0x7f => return None,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'@' => {
                at = Some(i);
                break;
            }
            c if is_atom_byte(c) => i += 1,
            _ => return None,
        }
    }
    if at == Some(0) {
        return None;
    }
    if let Some(at) = at
        && !is_plausible_domain(&b[at + 1..])
    {
        return None;
    }
    Some(at)
}

/// A name of letters, digits, hyphens (and UTF-8) in non-empty dot-separated
/// labels, or an address literal `[...]` of printable ASCII.
pub(crate) fn is_plausible_domain(d: &[u8]) -> bool {
    if let Some(inner) = d.strip_prefix(b"[") {
        return inner.strip_suffix(b"]").is_some_and(|lit| {
            !lit.is_empty()
                && lit
                    .iter()
                    .all(|&c| (0x21..0x7f).contains(&c) && !b"[]\\".contains(&c))
        });
    }
    !d.is_empty()
        && d.split(|&c| c == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80)
        })
}

/// Whether `s` is a plausible address: `local@domain` or a bare local part,
/// at most [`MAX_ADDRESS_OCTETS`] octets, the local part dot-atom text or
/// quoted strings, no control character anywhere, no space outside quotes,
/// the domain a dotted name or an address literal.
pub fn is_plausible_address(s: &str) -> bool {
    address_shape(s).is_some()
}

/// Like [`is_plausible_address`], and with a domain (`local@domain`).
pub fn is_qualified_address(s: &str) -> bool {
    matches!(address_shape(s), Some(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        parse_address_list(s.as_bytes()).unwrap()
    }

    #[test]
    fn plain_and_named() {
        assert_eq!(list("a@x.org"), ["a@x.org"]);
        assert_eq!(list(" a@x.org , b@y.org "), ["a@x.org", "b@y.org"]);
        assert_eq!(
            list("Joe Q. Public <joe@x.org>, \"Smith, Ann\" <ann@y.org>"),
            ["joe@x.org", "ann@y.org"]
        );
        assert_eq!(list("<joe@x.org>"), ["joe@x.org"]);
        assert_eq!(list("joe"), ["joe"]);
    }

    #[test]
    fn groups() {
        assert_eq!(
            list("team: a@x.org, Bee <b@y.org>; c@z.org"),
            ["a@x.org", "b@y.org", "c@z.org"]
        );
        assert_eq!(list("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(list("undisclosed-recipients:"), Vec::<String>::new());
        assert_eq!(list("g: a@x.org"), ["a@x.org"]);
        assert_eq!(
            parse_address_list(b"a: b: c@x;;"),
            Err(AddressListError::NestedGroup)
        );
        assert_eq!(
            parse_address_list(b"a@x;"),
            Err(AddressListError::GroupEndOutsideGroup)
        );
    }

    #[test]
    fn comments_and_quotes() {
        assert_eq!(
            list("joe@x.org (Joe (the) Man), (c) ann@y.org"),
            ["joe@x.org", "ann@y.org"]
        );
        assert_eq!(list("\"a,b\"@x.org, c@y.org"), ["\"a,b\"@x.org", "c@y.org"]);
        assert_eq!(list("\"a\\\"b\"@x.org"), ["\"a\\\"b\"@x.org"]);
        assert_eq!(list("Q <\"a b\"@x.org>"), ["\"a b\"@x.org"]);
        assert_eq!(list("joe@[192.0.2.1]"), ["joe@[192.0.2.1]"]);
        assert_eq!(list("(only a comment)"), Vec::<String>::new());
        // Escaped parenthesis in a comment.
        assert_eq!(list("(a \\) b) joe@x.org"), ["joe@x.org"]);
    }

    #[test]
    fn routes_and_empty_elements() {
        assert_eq!(list("<@a.org,@b.org:joe@x.org>"), ["joe@x.org"]);
        assert_eq!(list(",a@x.org,,b@y.org,"), ["a@x.org", "b@y.org"]);
        assert_eq!(list(""), Vec::<String>::new());
    }

    #[test]
    fn refusals() {
        use AddressListError as E;
        for (v, e) in [
            ("\"abc@x", E::UnterminatedQuote),
            ("(abc a@x", E::UnterminatedComment),
            ("a@[1.2.3.4", E::UnterminatedLiteral),
            ("Joe <a@x", E::UnterminatedAngle),
            ("a@x>", E::UnmatchedAngle),
            ("<a<b@x>>", E::NestedAngle),
            ("<>", E::EmptyAngle),
            ("Joe <a@x> b", E::TextAfterAngle),
            ("<a,b@x>", E::BadRoute),
            ("<a:b@x>", E::BadRoute),
            ("Joe Smith", E::PhraseWithoutAddress),
            ("<joe smith@x>", E::PhraseWithoutAddress),
            ("a\\b@x", E::UnexpectedCharacter('\\')),
            ("a\u{1}b@x", E::UnexpectedCharacter('\u{1}')),
            ("g: <a@x;", E::UnterminatedAngle),
        ] {
            assert_eq!(parse_address_list(v.as_bytes()), Err(e), "{v:?}");
        }
        assert_eq!(
            parse_address_list(b"\xff@x"),
            Err(AddressListError::NotUtf8)
        );
    }

    #[test]
    fn plausibility() {
        for ok in [
            "joe",
            "joe@x.org",
            "j.o+e@x-y.org",
            "\"a b\"@x.org",
            "\"a\\\"b\"@x.org",
            "joe@[192.0.2.1]",
            "joe@[IPv6:2001:db8::1]",
            "j\u{f6}e@b\u{fc}cher.de",
        ] {
            assert!(is_plausible_address(ok), "{ok:?}");
        }
        for bad in [
            "",
            "a b@x.org",
            "a@b@x.org",
            "@x.org",
            "joe@",
            "joe@x..org",
            "joe@.x.org",
            "joe@x.org.",
            "joe@x org",
            "\"a\rb\"@x.org",
            "a\t@x.org",
            "\"unterminated@x.org",
            "a<b@x.org",
            "joe@[1.2.3.4",
            "joe@[a b]",
            "joe@\"x\".org",
        ] {
            assert!(!is_plausible_address(bad), "{bad:?}");
        }
        let long = format!("{}@x.org", "a".repeat(MAX_ADDRESS_OCTETS - 6));
        assert!(is_plausible_address(&long));
        let longer = format!("{}@x.org", "a".repeat(MAX_ADDRESS_OCTETS - 5));
        assert!(!is_plausible_address(&longer));
        assert!(is_qualified_address("a@x"));
        assert!(!is_qualified_address("a"));
    }
}
