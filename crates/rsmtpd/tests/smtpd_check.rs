//! `smtpd -n`: the configuration check as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::PathBuf;
use std::process::{Command, Output};

fn smtpd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smtpd"))
        .args(args)
        .env_remove("XDG_STATE_HOME")
        .output()
        .expect("run smtpd")
}

fn temp_conf(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsmtpd-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("smtpd.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn valid_config_prints_configuration_ok() {
    let conf = temp_conf(
        "ok",
        "listen on 127.0.0.1 port 2525\naction \"local\" maildir\nmatch from any for local action \"local\"\n",
    );
    let out = smtpd(&["-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(stderr(&out), "configuration OK\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn errors_carry_file_line_and_column() {
    let conf = temp_conf(
        "bad",
        "listen on 127.0.0.1\naction \"local\" maildir\nmatch for domain @example.org action \"local\"\n",
    );
    let out = smtpd(&["-n", "-f", conf.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let prefix = format!("{}:3:", conf.display());
    assert!(err.starts_with(&prefix), "{err}");
    assert!(!err.contains("configuration OK"), "{err}");
}

#[test]
fn macros_from_the_command_line_override_the_file() {
    // The file's value would be a syntax error; -D replaces it.
    let conf = temp_conf(
        "macro",
        "port_no = \"bad port\"\nlisten on 127.0.0.1 port $port_no\naction \"l\" maildir\nmatch for local action \"l\"\n",
    );
    let out = smtpd(&["-n", "-D", "port_no=2526", "-f", conf.to_str().unwrap()]);
    assert_eq!(stderr(&out), "configuration OK\n");
    let out = smtpd(&["-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn missing_config_file_is_an_error_naming_it() {
    let out = smtpd(&["-n", "-f", "/nonexistent/rsmtpd/smtpd.conf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/rsmtpd/smtpd.conf"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn quickstart_config_is_valid() {
    let out = smtpd(&["--quickstart", "-n", "-v"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("listen on 127.0.0.1 port 2525"), "{err}");
    assert!(err.ends_with("configuration OK\n"), "{err}");
}

#[test]
fn usage_errors_exit_1_with_usage() {
    let out = smtpd(&["-P", "queue"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("usage: smtpd"), "{}", stderr(&out));
    let out = smtpd(&["-h"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("usage: smtpd"));
}
