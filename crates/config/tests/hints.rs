//! Hints for the common mistakes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use common::{RULE, one_error};

fn hint_of(text: &str) -> (String, String) {
    let e = one_error(text);
    (e.message, e.hint.unwrap_or_default())
}

#[test]
fn unquoted_at_domain_and_path() {
    let (msg, hint) =
        hint_of("action a mbox\nmatch from mail-from @example.com for any action a\n");
    assert_eq!(msg, "unexpected character '@'");
    assert_eq!(
        hint,
        "a string that does not start with a letter, digit, ':' or '_' must be quoted: \"@example.com\""
    );
    let (msg, hint) = hint_of(&format!("table aliases /etc/mail/aliases\n{RULE}"));
    assert_eq!(msg, "unexpected character '/'");
    assert!(
        hint.ends_with("must be quoted: \"/etc/mail/aliases\""),
        "{hint}"
    );
}

#[test]
fn declared_below_its_use() {
    let (msg, hint) = hint_of("match for any action out\naction out relay\n");
    assert_eq!(msg, "no such dispatcher: out");
    assert_eq!(
        hint,
        "action \"out\" is declared at test.conf:2; declarations must come before their use: move it above line 1"
    );
    let (msg, hint) = hint_of(&format!(
        "action a mbox alias <al>\ntable al {{ a = b }}\n{RULE}"
    ));
    assert_eq!(msg, "no such table: al");
    assert!(
        hint.starts_with("table \"al\" is declared at test.conf:2"),
        "{hint}"
    );
    let (_, hint) = hint_of(&format!(
        "listen on lo tls pki mail\npki mail cert \"/c\" key \"/k\"\n{RULE}"
    ));
    assert!(
        hint.starts_with("pki \"mail\" is declared at test.conf:2"),
        "{hint}"
    );
    let (_, hint) = hint_of(&format!(
        "listen on lo filter f\nfilter f phase connect match rdns bypass\n{RULE}"
    ));
    assert!(
        hint.starts_with("filter \"f\" is declared at test.conf:2"),
        "{hint}"
    );
    let (_, hint) = hint_of(&format!("filter f proc p\nproc p \"/bin/p\"\n{RULE}"));
    assert!(
        hint.starts_with("proc \"p\" is declared at test.conf:2"),
        "{hint}"
    );
    let (_, hint) = hint_of(&format!(
        "action w mda \"x\" wrapper ww\nmda wrapper ww \"/bin/w\"\n{RULE}"
    ));
    assert!(
        hint.starts_with("mda wrapper \"ww\" is declared at test.conf:2"),
        "{hint}"
    );
}

#[test]
fn misspelled_names_get_a_suggestion() {
    let (msg, hint) = hint_of("action inbound mbox\nmatch for any action inbond\n");
    assert_eq!(msg, "no such dispatcher: inbond");
    assert_eq!(hint, "did you mean \"inbound\"?");
}

#[test]
fn pre_6_4_grammar() {
    let (msg, hint) = hint_of(&format!(
        "accept from any for domain example.org alias <aliases> deliver to maildir \"~/Mail\"\n{RULE}"
    ));
    assert_eq!(msg, "unknown directive 'accept'");
    assert_eq!(
        hint,
        "the grammar changed in OpenSMTPD 6.4; write it as:\n    action \"local\" maildir \"~/Mail\" alias <aliases>\n    match from any for domain example.org action \"local\""
    );
    let (msg, hint) = hint_of(&format!("reject from any for domain example.com\n{RULE}"));
    assert_eq!(msg, "unknown directive 'reject'");
    assert!(
        hint.ends_with("    match from any for domain example.com reject"),
        "{hint}"
    );
    let (_, hint) = hint_of(&format!("accept for any relay via smtp://mx.test\n{RULE}"));
    assert!(
        hint.ends_with(
            "    action \"relay\" relay host smtp://mx.test\n    match for any action \"relay\""
        ),
        "{hint}"
    );
    let (msg, hint) = hint_of(&format!("listen on lo port 25 tls certificate mx\n{RULE}"));
    assert_eq!(msg, "invalid listen option: certificate");
    assert!(hint.contains("pki NAME cert FILE"), "{hint}");
    let (msg, hint) = hint_of(&format!("expire 4d\n{RULE}"));
    assert_eq!(msg, "unknown directive 'expire'");
    assert!(hint.contains("queue ttl"), "{hint}");
    let (msg, hint) = hint_of(&format!("limit mta inet4\n{RULE}"));
    assert_eq!(msg, "unknown directive 'limit'");
    assert!(hint.contains("mta limit"), "{hint}");
    let (_, hint) = hint_of(&format!("max-message-size 35M\n{RULE}"));
    assert!(hint.contains("smtp max-message-size"), "{hint}");
    let (_, hint) = hint_of(&format!("pki mail certificate \"/c\"\n{RULE}"));
    assert!(hint.contains("pki NAME cert FILE"), "{hint}");
    let errs = common::errors("action a relay via smtp://x\nmatch action a\n");
    let hint = errs[0].hint.clone().unwrap_or_default();
    assert!(hint.contains("relay host URL"), "{hint}");
}

#[test]
fn keywords_as_names() {
    let (msg, hint) = hint_of("action relay relay\nmatch for any action \"relay\"\n");
    assert_eq!(
        msg,
        "syntax error: expected an action name, found keyword 'relay'"
    );
    assert_eq!(
        hint,
        "'relay' is a reserved word; write \"relay\" to use it as an action name"
    );
    let (_, hint) = hint_of(&format!("listen on lo tag local\n{RULE}"));
    assert_eq!(
        hint,
        "'local' is a reserved word; write \"local\" to use it as a tag"
    );
}

#[test]
fn misspelled_keywords() {
    let cases = [
        ("lisen on lo", "did you mean 'listen'?"),
        ("acton a mbox", "did you mean 'action'?"),
        ("listen on lo mask-scr", "did you mean 'mask-src'?"),
        ("listen on lo mask-source", "did you mean 'mask-src'?"),
        ("action a mbox alais { a = b }", "did you mean 'alias'?"),
        ("action a mboxx", "did you mean 'mbox'?"),
        ("action a relay hots mx.test", "did you mean 'host'?"),
        ("smtp limit max-rcpts 1", "did you mean 'max-rcpt'?"),
        (
            "mta limit max-conn-per-hots 1",
            "did you mean 'max-conn-per-host'?",
        ),
    ];
    for (line, want) in cases {
        let (_, hint) = hint_of(&format!("{line}\n{RULE}"));
        assert_eq!(hint, want, "{line}");
    }
    let (msg, hint) = hint_of("action a mbox\nmatch frm any action a\n");
    assert_eq!(msg, "syntax error: unknown match option 'frm'");
    assert_eq!(hint, "did you mean 'from'?");
}

#[test]
fn interface_names_from_openbsd() {
    let (msg, hint) = hint_of(&format!("listen on egress\n{RULE}"));
    assert_eq!(msg, "invalid virtual ip or interface: egress");
    assert!(hint.contains("OpenBSD interface group"), "{hint}");
    let (_, hint) = hint_of(&format!("listen on lo0\n{RULE}"));
    assert_eq!(hint, "lo0 is OpenBSD's loopback; on Linux it is lo");
}

#[test]
fn delays_without_units() {
    let (msg, hint) = hint_of(&format!("queue ttl 4\n{RULE}"));
    assert_eq!(msg, "invalid delay: 4");
    assert_eq!(hint, "add a unit: 4s, 4m, 4h or 4d");
}
