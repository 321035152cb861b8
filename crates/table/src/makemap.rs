//! makemap(8), the library part: read table text with makemap's rules,
//! write a `db:` file (cdb, see docs/tables.md) atomically, dump one back.
//!
//! Input rules (OpenSMTPD's makemap, via fparseln(3)): `#` starts a comment
//! anywhere unless escaped as `\#`; a line ending in `\` continues on the
//! next line; the first word is the key, the rest after blanks and/or
//! colons is the value. Keys are folded to lower case.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::value::{ValueError, is_blank, parse_alias_list_strict, trim_blanks};
use crate::{META_TYPE_KEY, TableError, cdb, read_bounded, text};

/// The `-t` type of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// Unstructured key/value strings (the default).
    Plain,
    /// Values are aliases(5) lists, checked at build time.
    Aliases,
    /// Keys only (`-t set`): the db is a list.
    Set,
}

impl MapType {
    pub(crate) fn as_meta(self) -> &'static str {
        match self {
            MapType::Plain => "map",
            MapType::Aliases => "aliases",
            MapType::Set => "set",
        }
    }

    pub(crate) fn from_meta(s: &str) -> Option<MapType> {
        match s {
            "map" => Some(MapType::Plain),
            "aliases" => Some(MapType::Aliases),
            "set" => Some(MapType::Set),
            _ => None,
        }
    }
}

/// What is wrong with an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxReason {
    #[error("line longer than {} bytes", text::MAX_LINE)]
    LineTooLong,
    #[error("NUL byte in line")]
    NulByte,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("invalid entry: key without a value")]
    MissingValue,
    #[error("invalid entry: missing ']' after '['")]
    UnterminatedBracket,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MakemapError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: SyntaxReason,
    },
    #[error("{path}:{line}: duplicate entry for {key}")]
    Duplicate {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{path}:{line}: invalid aliases value: {reason}")]
    Alias {
        path: PathBuf,
        line: usize,
        reason: ValueError,
    },
    #[error("{path}: {reason}")]
    Db { path: PathBuf, reason: String },
}

impl From<TableError> for MakemapError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Io { path, reason } | TableError::Db { path, reason } => {
                MakemapError::Io { path, reason }
            }
            other => MakemapError::Db {
                path: PathBuf::new(),
                reason: other.to_string(),
            },
        }
    }
}

/// Position of the first `#` not escaped by an odd run of backslashes.
fn comment_start(line: &[u8]) -> Option<usize> {
    let mut run = 0usize;
    for (i, &b) in line.iter().enumerate() {
        if b == b'#' && run.is_multiple_of(2) {
            return Some(i);
        }
        run = if b == b'\\' { run + 1 } else { 0 };
    }
    None
}

fn ends_with_unescaped_backslash(s: &[u8]) -> bool {
    let run = s.iter().rev().take_while(|&&b| b == b'\\').count();
    !run.is_multiple_of(2)
}

/// `\#` becomes `#`; every other backslash stays.
fn unescape_comment(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match (b, s.get(i + 1)) {
            (b'\\', Some(&b'#')) => {
                out.push(b'#');
                i += 2;
            }
            (b'\\', Some(&b'\\')) => {
                out.extend_from_slice(b"\\\\");
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Logical lines (comments removed, continuations joined), each with the
/// number of its first physical line.
fn logical_lines(path: &Path, data: &[u8]) -> Result<Vec<(usize, String)>, MakemapError> {
    let err = |line, reason| MakemapError::Syntax {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut out = Vec::new();
    let mut acc: Option<(usize, Vec<u8>)> = None;
    for (idx, raw) in data.split(|&b| b == b'\n').enumerate() {
        let lineno = idx + 1;
        if raw.len() > text::MAX_LINE {
            return Err(err(lineno, SyntaxReason::LineTooLong));
        }
        if raw.contains(&0) {
            return Err(err(lineno, SyntaxReason::NulByte));
        }
        let mut piece = match comment_start(raw) {
            Some(i) => raw.get(..i).unwrap_or_default(),
            None => raw,
        };
        let cont = ends_with_unescaped_backslash(piece);
        if cont {
            piece = piece.get(..piece.len() - 1).unwrap_or_default();
        }
        let (start, buf) = acc.get_or_insert_with(|| (lineno, Vec::new()));
        buf.extend_from_slice(piece);
        if buf.len() > text::MAX_LINE {
            return Err(err(*start, SyntaxReason::LineTooLong));
        }
        if !cont && let Some((start, buf)) = acc.take() {
            let s = String::from_utf8(unescape_comment(&buf))
                .map_err(|_| err(start, SyntaxReason::NotUtf8))?;
            out.push((start, s));
        }
    }
    if let Some((start, buf)) = acc.take() {
        let s = String::from_utf8(unescape_comment(&buf))
            .map_err(|_| err(start, SyntaxReason::NotUtf8))?;
        out.push((start, s));
    }
    Ok(out)
}

/// Parse makemap input into (key, value) records, keys folded to lower
/// case, values `None` for `Set`. `path` is only used in errors.
pub fn parse_source(
    path: &Path,
    data: &[u8],
    ty: MapType,
) -> Result<Vec<(String, Option<String>)>, MakemapError> {
    if data.len() as u64 > text::MAX_FILE {
        return Err(MakemapError::Io {
            path: path.to_path_buf(),
            reason: format!("file larger than {} bytes", text::MAX_FILE),
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (line, text) in logical_lines(path, data)? {
        let syntax = |reason| MakemapError::Syntax {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let text = trim_blanks(&text);
        if text.is_empty() {
            continue;
        }
        let (key, value) = if ty == MapType::Set {
            (text.to_ascii_lowercase(), None)
        } else {
            let key_end = if text.starts_with('[') {
                text.find(']')
                    .map(|i| i + 1)
                    .ok_or(syntax(SyntaxReason::UnterminatedBracket))?
            } else {
                text.bytes()
                    .position(|b| b == b' ' || b == b'\t' || b == b':')
                    .ok_or(syntax(SyntaxReason::MissingValue))?
            };
            let (key, rest) = text.split_at(key_end);
            let value =
                rest.trim_start_matches(|c: char| c == ':' || (c.is_ascii() && is_blank(c as u8)));
            if value.is_empty() || value.len() == rest.len() {
                // Nothing after the key, or `[addr]` glued to its value.
                return Err(syntax(SyntaxReason::MissingValue));
            }
            if ty == MapType::Aliases {
                parse_alias_list_strict(value).map_err(|reason| MakemapError::Alias {
                    path: path.to_path_buf(),
                    line,
                    reason,
                })?;
            }
            (key.to_ascii_lowercase(), Some(value.to_string()))
        };
        if !seen.insert(key.clone()) {
            return Err(MakemapError::Duplicate {
                path: path.to_path_buf(),
                line,
                key,
            });
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Build the db image for makemap input. Returns the image and the number
/// of entries.
pub fn build_db(path: &Path, data: &[u8], ty: MapType) -> Result<(Vec<u8>, usize), MakemapError> {
    let records = parse_source(path, data, ty)?;
    let meta = (META_TYPE_KEY.as_bytes(), ty.as_meta().as_bytes());
    let image = cdb::build(
        std::iter::once(meta).chain(
            records
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref().unwrap_or_default().as_bytes())),
        ),
    )
    .map_err(|e| MakemapError::Db {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((image, records.len()))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `output` atomically: a new temporary file in the same
/// directory, fsync, rename over `output`, fsync the directory. On any
/// failure the temporary file is removed and `output` is untouched.
pub fn write_atomic(output: &Path, bytes: &[u8], mode: u32) -> Result<(), MakemapError> {
    let io = |p: &Path, e: std::io::Error| MakemapError::Io {
        path: p.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = output.file_name() else {
        return Err(MakemapError::Io {
            path: output.to_path_buf(),
            reason: "not a file name".into(),
        });
    };
    let (tmp, mut file) = {
        let mut attempt = 0;
        loop {
            let mut tmp_name = OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(
                ".{}.{}.tmp",
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let tmp = dir.join(tmp_name);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(io(&tmp, e)),
            }
        }
    };
    let result = (|| {
        file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, output)?;
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(output, e));
    }
    Ok(())
}

/// OpenSMTPD's default output name: the input name plus `.db`.
pub fn default_output(input: &Path) -> PathBuf {
    let mut s = input.as_os_str().to_os_string();
    s.push(".db");
    PathBuf::from(s)
}

/// makemap: build `output` from the text file `input`. The db gets the
/// input's permission bits (not its owner: that needs root). Returns the
/// number of entries (OpenSMTPD warns when it is zero).
pub fn makemap(input: &Path, output: &Path, ty: MapType) -> Result<usize, MakemapError> {
    let data = read_bounded(input, text::MAX_FILE)?;
    let mode = fs::metadata(input)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    let (image, n) = build_db(input, &data, ty)?;
    write_atomic(output, &image, mode)?;
    Ok(n)
}

/// makemap -U on db bytes: one line per entry, `key TAB value`, or just
/// `key` for a set (so the output can be fed back to `makemap -t set`).
/// Returns the number of entries written.
pub fn dump_bytes(path: &Path, data: Vec<u8>, out: &mut dyn Write) -> Result<usize, MakemapError> {
    let db = |reason: String| MakemapError::Db {
        path: path.to_path_buf(),
        reason,
    };
    let cdb = cdb::Cdb::parse(data).map_err(|e| db(e.to_string()))?;
    let set = cdb
        .get(META_TYPE_KEY.as_bytes())
        .map_err(|e| db(e.to_string()))?
        == Some(MapType::Set.as_meta());
    let mut n = 0;
    let io = |e: std::io::Error| db(format!("writing the dump: {e}"));
    for (k, v) in cdb.iter().filter(|(k, _)| !k.starts_with('\0')) {
        if set {
            writeln!(out, "{k}").map_err(io)?;
        } else {
            writeln!(out, "{k}\t{v}").map_err(io)?;
        }
        n += 1;
    }
    Ok(n)
}

/// makemap -U: dump the db file at `path`.
pub fn dump(path: &Path, out: &mut dyn Write) -> Result<usize, MakemapError> {
    let data = read_bounded(path, cdb::MAX_DB)?;
    dump_bytes(path, data, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, ty: MapType) -> Result<Vec<(String, Option<String>)>, MakemapError> {
        parse_source(Path::new("in"), s.as_bytes(), ty)
    }

    fn kv(k: &str, v: &str) -> (String, Option<String>) {
        (k.into(), Some(v.into()))
    }

    #[test]
    fn plain_rules() {
        assert_eq!(
            parse(
                "# header\nKey1: value one  # trailing comment\nkey2\t\tv2\nkey3::: v3\n\n  [::1]  localhost\n",
                MapType::Plain
            )
            .unwrap(),
            vec![
                kv("key1", "value one"),
                kv("key2", "v2"),
                kv("key3", "v3"),
                kv("[::1]", "localhost"),
            ]
        );
    }

    #[test]
    fn continuation_and_escaped_hash() {
        assert_eq!(
            parse("list a,\\\n  b,\\\n  c\nk v\\#1 # c\n", MapType::Plain).unwrap(),
            vec![kv("list", "a,  b,  c"), kv("k", "v#1")]
        );
        // The comment is cut before the continuation check (as fparseln
        // does), so a backslash inside a comment does not continue.
        assert_eq!(
            parse("a b # x \\\nc d\n", MapType::Plain).unwrap(),
            vec![kv("a", "b"), kv("c", "d")]
        );
        // Escaped backslash before the newline: no continuation.
        assert_eq!(
            parse("a b\\\\\nc d\n", MapType::Plain).unwrap(),
            vec![kv("a", "b\\\\"), kv("c", "d")]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("a b\nlonely\n", MapType::Plain).unwrap_err(),
            MakemapError::Syntax {
                path: "in".into(),
                line: 2,
                reason: SyntaxReason::MissingValue
            }
        );
        assert_eq!(
            parse("a: \n", MapType::Plain).unwrap_err(),
            MakemapError::Syntax {
                path: "in".into(),
                line: 1,
                reason: SyntaxReason::MissingValue
            }
        );
        assert_eq!(
            parse("A b\na c\n", MapType::Plain).unwrap_err(),
            MakemapError::Duplicate {
                path: "in".into(),
                line: 2,
                key: "a".into()
            }
        );
        assert_eq!(
            parse("[::1 x\n", MapType::Plain).unwrap_err(),
            MakemapError::Syntax {
                path: "in".into(),
                line: 1,
                reason: SyntaxReason::UnterminatedBracket
            }
        );
        assert_eq!(
            parse("root bob,,x\n", MapType::Aliases).unwrap_err(),
            MakemapError::Alias {
                path: "in".into(),
                line: 1,
                reason: ValueError::EmptyElement
            }
        );
        assert_eq!(
            parse("root bad target\n", MapType::Aliases).unwrap_err(),
            MakemapError::Alias {
                path: "in".into(),
                line: 1,
                reason: ValueError::InvalidAliasTarget("bad target".into())
            }
        );
        assert_eq!(
            parse_source(Path::new("in"), b"a \xff\n", MapType::Plain).unwrap_err(),
            MakemapError::Syntax {
                path: "in".into(),
                line: 1,
                reason: SyntaxReason::NotUtf8
            }
        );
        let long = format!("a {}\\\n{}\n", "x".repeat(40000), "y".repeat(40000));
        assert_eq!(
            parse(&long, MapType::Plain).unwrap_err(),
            MakemapError::Syntax {
                path: "in".into(),
                line: 1,
                reason: SyntaxReason::LineTooLong
            }
        );
    }

    #[test]
    fn set_keys() {
        assert_eq!(
            parse("Example.ORG   # c\n*.example.org\n", MapType::Set).unwrap(),
            vec![
                ("example.org".to_string(), None),
                ("*.example.org".to_string(), None)
            ]
        );
    }

    #[test]
    fn dump_round_trip() {
        let (img, n) = build_db(Path::new("in"), b"b 2\na 1\n", MapType::Plain).unwrap();
        assert_eq!(n, 2);
        let mut out = Vec::new();
        assert_eq!(dump_bytes(Path::new("db"), img, &mut out).unwrap(), 2);
        assert_eq!(out, b"b\t2\na\t1\n");

        let (img, _) = build_db(Path::new("in"), b"x.org\n", MapType::Set).unwrap();
        let mut out = Vec::new();
        dump_bytes(Path::new("db"), img, &mut out).unwrap();
        assert_eq!(out, b"x.org\n");
    }
}
