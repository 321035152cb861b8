//! OpenSMTPD's own example configurations, with the verdicts `smtpd -n`
//! gave on them (reference/opensmtpd/examples/README.md).
//!
//! Paths under /etc/mail and /etc/ssl are rewritten to files this test
//! creates in a temporary directory, `lo0` and `egress` become `lo`, and
//! `db:` tables become `file:` tables (as the README allows for 08 and 09).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::path::{Path, PathBuf};

use rsmtpd_config::parse_str;

fn examples_dir() -> PathBuf {
    rsmtpd_test_support::reference_dir().join("examples")
}

/// Table contents good for the way each example uses the file.
fn placeholder(name: &str) -> &'static str {
    match name {
        "aliases" => "root: postmaster\npostmaster: alice\n",
        "secrets" => "bob username:password\n",
        "other-relays" => "192.0.2.1\n198.51.100.0/24\n",
        "domains.db" | "vdomains.db" => "example.org\nexample.com\n",
        "users.db" => "alice@example.org alice\n@example.org bob\n",
        _ => "-----BEGIN PLACEHOLDER-----\n-----END PLACEHOLDER-----\n",
    }
}

/// Rewrite the example for this machine and create the files it names.
fn localize(text: &str, root: &Path) -> String {
    let root_s = root.display().to_string();
    let mut out = text
        .replace("/etc/mail/", &format!("{root_s}/etc/mail/"))
        .replace("/etc/ssl/", &format!("{root_s}/etc/ssl/"))
        .replace("db:/", "file:/");
    for (from, to) in [(" lo0", " lo"), (" egress", " lo")] {
        out = out.replace(from, to);
    }
    // Create every file under the root that the text names.
    let mut rest = out.as_str();
    while let Some(i) = rest.find(&root_s) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let path = PathBuf::from(&tail[..end]);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        std::fs::write(&path, placeholder(name)).expect("write placeholder");
        rest = &tail[end..];
    }
    out
}

fn verdict(file: &str) -> Result<(), &'static str> {
    match file {
        "05-rspamd-filter-fragment.conf" | "11-table-static-inline-fragment.conf" => {
            Err("no rules, nothing to do")
        }
        "07-macros-fragment.conf" => Err("invalid listen option: pki required for tls/smtps"),
        _ => Ok(()),
    }
}

#[test]
fn every_example_gets_opensmtpd_verdict() {
    let dir = examples_dir();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reference examples missing at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 12,
        "expected the 12 examples, found {}",
        entries.len()
    );

    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let root = common::temp_dir(&format!("example-{}", &name[..2]));
        let text = std::fs::read_to_string(&path).expect("read example");
        let local = localize(&text, &root);
        let result = parse_str(&name, &local, &common::opts());
        match (verdict(&name), result) {
            (Ok(()), Ok(config)) => {
                assert!(!config.rules.is_empty(), "{name}: no rules");
            }
            (Ok(()), Err(d)) => panic!("{name}: expected OK, got:\n{d}"),
            (Err(msg), Ok(_)) => panic!("{name}: expected failure '{msg}', got OK"),
            (Err(msg), Err(d)) => {
                assert!(
                    d.iter().any(|x| x.message == msg),
                    "{name}: expected '{msg}', got:\n{d}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn example_01_means_what_it_says() {
    let path = examples_dir().join("01-default-smtpd.conf");
    let root = common::temp_dir("example-01-model");
    let text = localize(&std::fs::read_to_string(path).expect("read"), &root);
    let c = parse_str("01.conf", &text, &common::opts()).expect("parses");
    use rsmtpd_config::model::*;
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.on, ListenOn::Hostname("localhost".into()));
    assert_eq!(
        l.addresses,
        vec![
            "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert_eq!(l.port, 25);
    assert_eq!(c.actions.len(), 2);
    assert_eq!(c.actions[0].name, "local");
    match &c.actions[0].dispatcher {
        Dispatcher::Local(d) => {
            assert_eq!(
                d.method,
                LocalMethod::Maildir {
                    path: None,
                    junk: false
                }
            );
            let Some(Expansion::Alias(t)) = d.expansion else {
                panic!("alias expected")
            };
            assert_eq!(c.tables[t.0].name, "aliases");
        }
        other => panic!("local expected, got {other:?}"),
    }
    assert_eq!(c.rules.len(), 2);
    assert_eq!(c.rules[0].from.value, Origin::Local);
    assert_eq!(c.rules[0].to.value, Destination::Local);
    assert_eq!(c.rules[0].decision, Decision::Action(ActionId(0)));
    assert_eq!(c.rules[1].to.value, Destination::Any);
    assert_eq!(c.rules[1].decision, Decision::Action(ActionId(1)));
    let _ = std::fs::remove_dir_all(&root);
}
