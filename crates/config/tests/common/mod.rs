//! Helpers shared by the integration tests: deterministic parse options and
//! per-test temporary directories.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::PathBuf;

use rsmtpd_config::{
    Config, Diagnostic, Diagnostics, HostResolver, Includes, InterfaceAddr, ParseOptions,
    TableFiles, parse_str,
};

/// Options that do not depend on the machine: a fixed server name, the
/// interfaces `lo` (127.0.0.1, ::1) and `eth0` (192.0.2.10, 2001:db8::10),
/// and a resolver that only knows `mx.test`.
pub fn opts() -> ParseOptions {
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    ParseOptions {
        macros: Vec::new(),
        hostname: Some("mail.example.org".into()),
        includes: Includes::Filesystem,
        table_files: TableFiles::Open,
        interfaces: Some(vec![
            InterfaceAddr {
                name: "lo".into(),
                addr: ip("127.0.0.1"),
            },
            InterfaceAddr {
                name: "lo".into(),
                addr: ip("::1"),
            },
            InterfaceAddr {
                name: "eth0".into(),
                addr: ip("192.0.2.10"),
            },
            InterfaceAddr {
                name: "eth0".into(),
                addr: ip("2001:db8::10"),
            },
        ]),
        resolver: HostResolver::Static(vec![("mx.test".into(), vec![ip("192.0.2.25")])]),
    }
}

/// A directory under the system temp dir, unique to `name` and this
/// process, emptied first.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsmtpd-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Parse text that must be accepted.
pub fn ok(text: &str) -> Config {
    match parse_str("test.conf", text, &opts()) {
        Ok(c) => c,
        Err(d) => panic!("expected OK, got:\n{d}"),
    }
}

/// Parse text that must be refused; returns the diagnostics.
pub fn fails(text: &str) -> Diagnostics {
    match parse_str("test.conf", text, &opts()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d,
    }
}

/// The error diagnostics of text that must be refused.
pub fn errors(text: &str) -> Vec<Diagnostic> {
    fails(text).errors().cloned().collect()
}

/// The one error of text that must fail with exactly one error.
pub fn one_error(text: &str) -> Diagnostic {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{}", show(&errs));
    errs.into_iter().next().expect("one")
}

pub fn show(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Assert an error with this message at this line and column.
#[track_caller]
pub fn assert_error_at(text: &str, line: u32, col: u32, message: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|d| d.line == line && d.col == col && d.message == message),
        "expected {line}:{col}: {message}\ngot:\n{}",
        show(&errs)
    );
}

/// A minimal valid tail so that snippets have a rule.
pub const RULE: &str = "action \"local\" mbox\nmatch for local action \"local\"\n";
