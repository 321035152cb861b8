//! The table(5) text format of `file:` tables.

use std::path::Path;

use crate::value::trim_blanks;
use crate::{Shape, TableError};

/// Longest accepted line of a table file.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest accepted table file.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// Entries of a parsed text table, in file order (keys as written).
#[derive(Debug)]
pub(crate) struct ParsedText {
    pub shape: Shape,
    pub entries: Vec<(String, Option<String>)>,
}

fn syntax(path: &Path, line: usize, reason: impl Into<String>) -> TableError {
    TableError::Syntax {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Parse table(5) text. As OpenSMTPD's parse_table_line: the first entry
/// decides list or mapping (a single column makes a list) unless a
/// `# @list` comment came first; in a list the whole trimmed line is the
/// value; in a mapping the key ends at the first blank or colon (or after
/// `]` for `[ipv6]` keys), one separator is consumed, blanks are skipped,
/// and the rest is the value, which must not be empty.
pub(crate) fn parse_table_text(path: &Path, data: &[u8]) -> Result<ParsedText, TableError> {
    if data.len() as u64 > MAX_FILE {
        return Err(TableError::Io {
            path: path.to_path_buf(),
            reason: format!("file larger than {MAX_FILE} bytes"),
        });
    }
    let mut shape: Option<Shape> = None;
    let mut entries = Vec::new();
    for (idx, raw) in data.split(|&b| b == b'\n').enumerate() {
        let lineno = idx + 1;
        if raw.len() > MAX_LINE {
            return Err(syntax(
                path,
                lineno,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
        if raw.contains(&0) {
            return Err(syntax(path, lineno, "NUL byte in line"));
        }
        let line = std::str::from_utf8(raw).map_err(|_| syntax(path, lineno, "not valid UTF-8"))?;
        let line = trim_blanks(line);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if shape.is_none() && trim_blanks(comment) == "@list" {
                shape = Some(Shape::List);
            }
            continue;
        }
        let key_end = if line.starts_with('[') {
            match line.find(']') {
                Some(i) => i + 1,
                None => return Err(syntax(path, lineno, "missing ']' after '['")),
            }
        } else {
            line.bytes()
                .position(|b| b == b' ' || b == b'\t' || b == b':')
                .unwrap_or(line.len())
        };
        let (key, rest) = line.split_at(key_end);
        let shape = *shape.get_or_insert(if rest.is_empty() {
            Shape::List
        } else {
            Shape::Map
        });
        if shape == Shape::List {
            entries.push((line.to_string(), None));
            continue;
        }
        let mut rest = rest.as_bytes();
        if let Some((&sep, tail)) = rest.split_first() {
            if !(sep == b' ' || sep == b'\t' || sep == b':') {
                return Err(syntax(path, lineno, "expected blank or ':' after key"));
            }
            rest = tail;
        }
        while let Some((&b, tail)) = rest.split_first() {
            if b != b' ' && b != b'\t' {
                break;
            }
            rest = tail;
        }
        // `rest` is a suffix of `line` after ASCII bytes, so still UTF-8.
        let value = line.get(line.len() - rest.len()..).unwrap_or_default();
        if value.is_empty() {
            return Err(syntax(
                path,
                lineno,
                format!("mapping entry {key:?} has no value"),
            ));
        }
        entries.push((key.to_string(), Some(value.to_string())));
    }
    // An empty file is a mapping (OpenSMTPD accepts empty alias files).
    Ok(ParsedText {
        shape: shape.unwrap_or(Shape::Map),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ParsedText, TableError> {
        parse_table_text(Path::new("/t"), s.as_bytes())
    }

    fn pairs(p: &ParsedText) -> Vec<(&str, Option<&str>)> {
        p.entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect()
    }

    #[test]
    fn list_and_map_detection() {
        let p = parse("# comment\n\n  value1  \nvalue2\r\n").unwrap();
        assert_eq!(p.shape, Shape::List);
        assert_eq!(pairs(&p), vec![("value1", None), ("value2", None)]);

        let p = parse("key1:\tvalue1\nkey2   value2 \nkey3:value3\n[::1] localhost\n").unwrap();
        assert_eq!(p.shape, Shape::Map);
        assert_eq!(
            pairs(&p),
            vec![
                ("key1", Some("value1")),
                ("key2", Some("value2")),
                ("key3", Some("value3")),
                ("[::1]", Some("localhost")),
            ]
        );
    }

    #[test]
    fn forced_list_keeps_whole_lines() {
        let p = parse("# @list\nuser value with spaces\nx:y\n").unwrap();
        assert_eq!(p.shape, Shape::List);
        assert_eq!(
            pairs(&p),
            vec![("user value with spaces", None), ("x:y", None)]
        );
        // Only before the first entry.
        let p = parse("a b\n# @list\nc d\n").unwrap();
        assert_eq!(p.shape, Shape::Map);
    }

    #[test]
    fn map_then_single_column_is_an_error() {
        let e = parse("a b\n\nlonely\n").unwrap_err();
        assert_eq!(
            e,
            TableError::Syntax {
                path: "/t".into(),
                line: 3,
                reason: "mapping entry \"lonely\" has no value".into()
            }
        );
        // A list followed by a two-column line: that line is one value.
        let p = parse("one\ntwo words\n").unwrap();
        assert_eq!(pairs(&p), vec![("one", None), ("two words", None)]);
    }

    #[test]
    fn bracket_keys() {
        assert_eq!(parse("[::1]\n").unwrap().shape, Shape::List);
        let e = parse("[::1 localhost\n").unwrap_err();
        assert!(matches!(e, TableError::Syntax { line: 1, .. }), "{e:?}");
        let e = parse("[::1]x localhost\n").unwrap_err();
        assert!(matches!(e, TableError::Syntax { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn empty_file_is_a_map() {
        let p = parse("").unwrap();
        assert_eq!(p.shape, Shape::Map);
        assert!(p.entries.is_empty());
        let p = parse("# only comments\n   \n").unwrap();
        assert_eq!(p.shape, Shape::Map);
    }

    #[test]
    fn bad_bytes() {
        assert_eq!(
            parse_table_text(Path::new("/t"), b"ok\n\xff\xfe\n").unwrap_err(),
            TableError::Syntax {
                path: "/t".into(),
                line: 2,
                reason: "not valid UTF-8".into()
            }
        );
        assert_eq!(
            parse_table_text(Path::new("/t"), b"a\0b\n").unwrap_err(),
            TableError::Syntax {
                path: "/t".into(),
                line: 1,
                reason: "NUL byte in line".into()
            }
        );
    }

    #[test]
    fn long_line() {
        let mut s = "x".repeat(MAX_LINE + 1);
        s.insert_str(0, "ok\n");
        let e = parse(&s).unwrap_err();
        assert_eq!(
            e,
            TableError::Syntax {
                path: "/t".into(),
                line: 2,
                reason: format!("line longer than {MAX_LINE} bytes")
            }
        );
    }
}
