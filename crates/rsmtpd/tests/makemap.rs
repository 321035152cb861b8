//! `makemap` as a user runs it (a link named makemap to the binary), and the
//! `db:` tables it builds as smtpd reads them: makemap.8's own examples.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rsmtpd_test_support::{reference_dir, temp_dir};

/// A `makemap` link to the binary, in `dir`.
fn makemap_link(dir: &Path) -> PathBuf {
    let link = dir.join("makemap");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smtpd"), &link).unwrap();
    }
    link
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn builds_and_dumps_an_aliases_db() {
    let dir = temp_dir("makemap-aliases");
    let makemap = makemap_link(&dir);
    let source = dir.join("aliases");
    std::fs::write(
        &source,
        "# comment\nroot: alice\npostmaster: root\nteam: alice, bob@example.org\n",
    )
    .unwrap();
    let out = run(&makemap, &["-t", "aliases", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let db = dir.join("aliases.db");
    assert!(db.is_file());
    let out = run(&makemap, &["-U", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let dump = text(&out.stdout);
    for line in [
        "root\talice",
        "postmaster\troot",
        "team\talice, bob@example.org",
    ] {
        assert!(dump.lines().any(|l| l == line), "{line:?} not in {dump:?}");
    }
}

#[test]
fn bad_input_names_file_and_line() {
    let dir = temp_dir("makemap-bad");
    let makemap = makemap_link(&dir);
    let source = dir.join("aliases");
    std::fs::write(&source, "root: alice\nbroken\n").unwrap();
    let out = run(&makemap, &["-t", "aliases", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:2:", source.display())), "{err}");
    assert!(!dir.join("aliases.db").exists());
}

/// makemap.8's PRIMARY DOMAINS and VIRTUAL DOMAINS configs, with `db:`
/// tables built by our makemap: OpenSMTPD says "configuration OK" when
/// built with db support.
#[test]
fn makemap_8_examples_check_ok_with_our_db_tables() {
    let dir = temp_dir("makemap-examples");
    let makemap = makemap_link(&dir);
    let examples = reference_dir().join("examples");
    std::fs::write(dir.join("domains"), "example.org\nexample.net\n").unwrap();
    std::fs::write(dir.join("vdomains"), "example.com\n").unwrap();
    std::fs::write(
        dir.join("users"),
        "alice@example.com alice\n@example.com bob\n",
    )
    .unwrap();
    for (name, ty) in [
        ("domains", "set"),
        ("vdomains", "set"),
        ("users", "aliases"),
    ] {
        let out = run(&makemap, &["-t", ty, dir.join(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    for example in [
        "08-makemap-primary-domains.conf",
        "09-makemap-virtual-domains.conf",
    ] {
        let conf = std::fs::read_to_string(examples.join(example)).unwrap();
        let conf = conf.replace("/etc/mail/", &format!("{}/", dir.display()));
        let path = dir.join(example);
        std::fs::write(&path, conf).unwrap();
        let out = run(
            Path::new(env!("CARGO_BIN_EXE_smtpd")),
            &["-n", "-f", path.to_str().unwrap()],
        );
        assert_eq!(text(&out.stderr), "configuration OK\n", "{example}");
        assert_eq!(out.status.code(), Some(0));
    }
}

#[test]
fn a_db_table_that_is_not_a_db_is_a_config_error() {
    let dir = temp_dir("makemap-notdb");
    std::fs::write(dir.join("domains.db"), "example.org\n").unwrap();
    let conf = dir.join("smtpd.conf");
    std::fs::write(
        &conf,
        format!(
            "table domains db:{}/domains.db\naction \"local\" mbox\nmatch for domain <domains> action \"local\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = run(
        Path::new(env!("CARGO_BIN_EXE_smtpd")),
        &["-n", "-f", conf.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("{}:1:", conf.display())), "{err}");
}
