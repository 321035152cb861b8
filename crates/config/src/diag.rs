//! Diagnostics: what the parser says about a configuration, with the place
//! it says it about.
//!
//! A [`Diagnostic`] displays as `FILE:LINE:COL: message` (warnings carry a
//! `warning: ` prefix before the message), followed by `  hint: ...` on a
//! second line when there is a hint. [`Diagnostics`] holds every diagnostic
//! of one run, in the order they were found.

use std::fmt;
use std::path::PathBuf;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration is still usable.
    Warning,
    /// The configuration is rejected.
    Error,
}

/// One finding, tied to a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(file: PathBuf, line: u32, col: u32, message: impl Into<String>) -> Self {
        Diagnostic {
            file,
            line,
            col,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(file: PathBuf, line: u32, col: u32, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, col, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of one parse, errors and warnings, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Diagnostics::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| !d.is_error())
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut Diagnostic> {
        self.items.get_mut(index)
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Levenshtein distance, bounded: inputs longer than 64 bytes are not
/// compared (no suggestion is worth a quadratic walk over a long string).
pub(crate) fn edit_distance(a: &str, b: &str) -> Option<usize> {
    const MAX: usize = 64;
    let a = a.as_bytes();
    let b = b.as_bytes();
    if a.len() > MAX || b.len() > MAX {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(!ca.eq_ignore_ascii_case(cb));
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied()
}

/// The candidate nearest to `word`, if it is close enough to be a likely
/// misspelling (at most 2 edits, and fewer edits than half the word).
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if let Some(d) = edit_distance(word, c) {
            if d == 0 {
                continue;
            }
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, c));
            }
        }
    }
    let (d, c) = best?;
    let limit = 2.min(word.len().max(1).div_ceil(2));
    (d <= limit).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_without_hint() {
        let d = Diagnostic::error("/etc/smtpd.conf".into(), 3, 7, "syntax error");
        assert_eq!(d.to_string(), "/etc/smtpd.conf:3:7: syntax error");
    }

    #[test]
    fn display_with_hint_and_warning() {
        let d = Diagnostic::warning("a.conf".into(), 1, 1, "no rules, nothing to do")
            .with_hint("add a match line");
        assert_eq!(
            d.to_string(),
            "a.conf:1:1: warning: no rules, nothing to do\n  hint: add a match line"
        );
    }

    #[test]
    fn diagnostics_display_one_per_line() {
        let mut ds = Diagnostics::new();
        ds.push(Diagnostic::error("f".into(), 1, 2, "one"));
        ds.push(Diagnostic::warning("f".into(), 3, 4, "two"));
        assert_eq!(ds.to_string(), "f:1:2: one\nf:3:4: warning: two");
        assert!(ds.has_errors());
        assert_eq!(ds.errors().count(), 1);
        assert_eq!(ds.warnings().count(), 1);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("listen", "listen"), Some(0));
        assert_eq!(edit_distance("lisen", "listen"), Some(1));
        assert_eq!(edit_distance("acton", "action"), Some(1));
        assert_eq!(edit_distance(&"x".repeat(65), "x"), None);
    }

    #[test]
    fn suggestions_only_when_close() {
        let words = ["listen", "action", "match", "table"];
        assert_eq!(suggest("lisen", &words), Some("listen"));
        assert_eq!(suggest("mtach", &words), Some("match"));
        assert_eq!(suggest("zzzzzz", &words), None);
        assert_eq!(suggest("ab", &words), None);
    }
}
