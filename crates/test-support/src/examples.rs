//! OpenSMTPD's reference example configs, read and rewritten for a test:
//! each rewrite must find what it replaces as often as expected, so an
//! example that changes fails loudly instead of being half rewritten.

use crate::reference_dir;

/// The example's text, from the reference directory.
pub fn example(name: &str) -> String {
    let path = reference_dir().join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replace the line `old` (exactly, whole line) by `new`; `old` must occur
/// `count` times.
pub fn rewrite_line(text: &str, old: &str, new: &str, count: usize) -> String {
    let found = text.lines().filter(|l| *l == old).count();
    assert_eq!(found, count, "line {old:?} in the example:\n{text}");
    let mut out: String = text
        .lines()
        .map(|l| if l == old { new } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// Replace `old` by `new` inside the text; `old` must occur `count` times.
pub fn rewrite(text: &str, old: &str, new: &str, count: usize) -> String {
    assert_eq!(
        text.matches(old).count(),
        count,
        "{old:?} in the example:\n{text}"
    );
    text.replace(old, new)
}

/// A sha512-crypt hash made by `openssl passwd -6`, as an admin makes one.
pub fn sha512_crypt(password: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", password])
        .output()
        .expect("openssl passwd (scripts/setup.sh installs openssl)");
    assert!(out.status.success(), "openssl passwd failed");
    let hash = String::from_utf8(out.stdout)
        .expect("ASCII hash")
        .trim()
        .to_owned();
    assert!(hash.starts_with("$6$"), "{hash}");
    hash
}
