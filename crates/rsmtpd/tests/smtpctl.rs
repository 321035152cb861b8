//! `smtpctl` as an admin runs it (a link named smtpctl to the binary). For
//! now: `encrypt`, whose hashes glibc's crypt(3) (through Python) and our
//! own AUTH check must both accept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rsmtpd_test_support::temp_dir;

fn smtpctl(dir: &Path) -> PathBuf {
    let link = dir.join("smtpctl");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smtpd"), &link).unwrap();
    }
    link
}

/// glibc's crypt(3) verdict, through Python's crypt module.
fn libc_accepts(password: &str, hash: &str) -> bool {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])",
            password,
            hash,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

#[test]
fn encrypt_argument_is_a_sha512_crypt_hash_libc_accepts() {
    let dir = temp_dir("smtpctl-encrypt");
    let out = Command::new(smtpctl(&dir))
        .args(["encrypt", "correct horse"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim_end_matches('\n');
    assert!(hash.starts_with("$6$"), "{hash}");
    assert_eq!(hash.lines().count(), 1);
    assert!(libc_accepts("correct horse", hash));
    assert!(!libc_accepts("correct horsE", hash));
    // A prefix works as the command name, as smtpctl allows.
    let out = Command::new(smtpctl(&dir))
        .args(["enc", "x"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn encrypt_reads_one_password_per_line_from_stdin() {
    let dir = temp_dir("smtpctl-stdin");
    let mut child = Command::new(smtpctl(&dir))
        .arg("encrypt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first\nsecond\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hashes: Vec<&str> = text.lines().collect();
    assert_eq!(hashes.len(), 2, "{text}");
    assert!(libc_accepts("first", hashes[0]));
    assert!(libc_accepts("second", hashes[1]));
    // A fresh salt each time.
    assert_ne!(hashes[0].get(..19), hashes[1].get(..19));
}

#[test]
fn other_commands_are_refused_clearly() {
    let dir = temp_dir("smtpctl-other");
    let out = Command::new(smtpctl(&dir))
        .args(["show", "queue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("show: not available yet"), "{err}");
}
