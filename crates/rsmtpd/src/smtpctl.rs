//! `smtpctl` (argv[0] personality). For now only `encrypt`, which needs no
//! daemon: it makes the crypt(3) hash a credentials table holds. The
//! commands that talk to the running daemon come with the control socket.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::process::ExitCode;

const USAGE: &str = "usage: smtpctl encrypt [string]";

/// Longest password line read from standard input.
const MAX_LINE: usize = 4096;

pub fn main(args: &[OsString]) -> ExitCode {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match words.first().map(String::as_str) {
        // Unambiguous prefixes, as smtpctl accepts them.
        Some(w) if !w.is_empty() && "encrypt".starts_with(w) => {
            encrypt(words.get(1..).unwrap_or(&[]))
        }
        Some(other) => {
            eprintln!(
                "smtpctl: {}: not available yet (only encrypt is)\n{USAGE}",
                crate::logging::visible(other)
            );
            ExitCode::from(1)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(1)
        }
    }
}

/// One hash per password: the argument, or each line of standard input.
fn encrypt(rest: &[String]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut emit = |password: &[u8]| match rsmtpd_auth::encrypt(password) {
        Ok(hash) => writeln!(out, "{hash}").is_ok(),
        Err(e) => {
            eprintln!("smtpctl: encrypt: {e}");
            false
        }
    };
    match rest {
        [] => {
            let stdin = std::io::stdin().lock();
            for line in stdin.split(b'\n') {
                let Ok(mut line) = line else {
                    return ExitCode::from(1);
                };
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE || !emit(&line) {
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        [password] => {
            if emit(password.as_bytes()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(1)
        }
    }
}
