//! Every semantic check, at the line and column it belongs to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use common::{RULE, assert_error_at, errors, fails, one_error, show};

const PKI: &str = "pki p cert \"/c\" key \"/k\"\n";

#[test]
fn no_rules_warns_and_fails() {
    let d = fails("table t { a }\n");
    let all: Vec<_> = d.iter().collect();
    assert_eq!(all.len(), 1, "{d}");
    assert!(!all[0].is_error());
    assert_eq!(all[0].message, "no rules, nothing to do");
    assert_eq!(
        d.to_string().lines().next(),
        Some("test.conf:1:1: warning: no rules, nothing to do")
    );
    // An empty file too.
    assert!(
        fails("")
            .iter()
            .any(|x| x.message == "no rules, nothing to do")
    );
}

#[test]
fn listener_tls_auth_pki_checks() {
    assert_error_at(
        &format!("listen on lo auth\n{RULE}"),
        1,
        14,
        "invalid listen option: auth requires tls/smtps",
    );
    assert_error_at(
        &format!("listen on lo auth-optional <x>\n{RULE}").replace(" <x>", ""),
        1,
        14,
        "invalid listen option: auth requires tls/smtps",
    );
    assert_error_at(
        &format!("{PKI}listen on lo pki p\n{RULE}"),
        2,
        14,
        "invalid listen option: pki requires tls/smtps",
    );
    assert_error_at(
        &format!("listen on lo tls\n{RULE}"),
        1,
        14,
        "invalid listen option: pki required for tls/smtps",
    );
    assert_error_at(
        &format!("listen on lo port 465 smtps\n{RULE}"),
        1,
        23,
        "invalid listen option: pki required for tls/smtps",
    );
    let e = one_error(&format!("{PKI}listen on lo tls pki p smtps\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 24, "TLS mode already specified")
    );
    let e = one_error(&format!("{PKI}listen on lo tls-require pki p tls\n{RULE}"));
    assert_eq!(e.message, "TLS mode already specified");
    // Both problems of one line are reported.
    let errs = errors(&format!("listen on lo tls auth\n{RULE}"));
    assert!(
        errs.iter().any(|d| d.message.contains("pki required")),
        "{}",
        show(&errs)
    );
    assert!(
        !errs.iter().any(|d| d.message.contains("auth requires")),
        "{}",
        show(&errs)
    );
}

#[test]
fn listener_duplicates_and_limits() {
    for (opt, what) in [
        ("inet4 inet6", "address family already specified"),
        ("port 25 port 26", "port already specified"),
        ("tag a tag b", "tag already specified"),
        ("hostname a hostname b", "hostname already specified"),
        ("mask-src mask-src", "mask-source already specified"),
        ("no-dsn no-dsn", "no-dsn already specified"),
        ("proxy-v2 proxy-v2", "proxy-v2 already specified"),
        (
            "received-auth received-auth",
            "received-auth already specified",
        ),
        ("ciphers HIGH ciphers HIGH", "ciphers already specified"),
        (
            "protocols secure protocols secure",
            "protocols already specified",
        ),
    ] {
        let e = one_error(&format!("listen on lo {opt}\n{RULE}"));
        assert_eq!(e.message, what, "{opt}");
        assert_eq!(e.line, 1);
    }
    let many: String = (0..33).map(|_| " pki p").collect();
    let e = one_error(&format!("{PKI}listen on lo tls{many}\n{RULE}"));
    assert_eq!(e.message, "too many pki specified");
    assert_eq!(e.col, 17 + 32 * 6 + 1);
    let e = one_error(&format!("listen on lo tag {}\n{RULE}", "t".repeat(32)));
    assert_eq!((e.col, e.message.as_str()), (18, "tag name too long"));
    let e = one_error(&format!("listen on lo port 0\n{RULE}"));
    assert_eq!((e.col, e.message.as_str()), (19, "invalid port: 0"));
    let e = one_error(&format!("listen on lo port 70000\n{RULE}"));
    assert_eq!(e.message, "invalid port: 70000");
    let e = one_error(&format!("listen on lo port http\n{RULE}"));
    assert_eq!(e.message, "invalid port: http");
}

#[test]
fn listener_names_must_be_declared_before() {
    let e = one_error(&format!("listen on lo tls pki nope\n{PKI}{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 22, "pki name not found: nope")
    );
    let e = one_error(&format!("{PKI}listen on lo tls pki p ca c\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 27, "ca name not found: c")
    );
    let e = one_error(&format!("listen on lo filter f\n{RULE}"));
    assert_eq!(
        (e.col, e.message.as_str()),
        (21, "no filter exist with that name: f")
    );
    let e = one_error(&format!("{PKI}listen on lo tls pki p auth <creds>\n{RULE}"));
    assert_eq!((e.col, e.message.as_str()), (30, "no such table: creds"));
}

#[test]
fn listener_table_uses() {
    let e = one_error(&format!(
        "table l {{ a, b }}\n{PKI}listen on lo tls pki p auth <l>\n{RULE}"
    ));
    assert_eq!((e.line, e.col), (3, 29));
    assert_eq!(e.message, "table \"l\" may not be used for auth lookups");
    let e = one_error(&format!(
        "table l {{ a }}\nlisten on lo senders <l>\n{RULE}"
    ));
    assert_eq!((e.line, e.col), (2, 22));
    assert_eq!(e.message, "invalid use of table \"l\" as SENDERS parameter");
    let e = one_error(&format!(
        "table l {{ a }}\nlisten on lo hostnames <l>\n{RULE}"
    ));
    assert_eq!(
        e.message,
        "invalid use of table \"l\" as HOSTNAMES parameter"
    );
}

#[test]
fn interfaces_that_do_not_exist() {
    let e = one_error(&format!("listen on wlan9\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 11, "invalid virtual ip or interface: wlan9")
    );
    let e = one_error(&format!("listen on 127.0.0.1 inet6\n{RULE}"));
    assert_eq!(e.message, "invalid virtual ip or interface: 127.0.0.1");
    let e = one_error(&format!("listen on nowhere.invalid\n{RULE}"));
    assert_eq!(
        e.message,
        "invalid virtual ip or interface: nowhere.invalid"
    );
}

#[test]
fn socket_listener_checks() {
    let e = one_error(&format!("listen on socket\nlisten on socket\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 1, "socket listener already configured")
    );
    let e = one_error(&format!("listen on socket port 25\n{RULE}"));
    assert_eq!(e.col, 18);
    assert_eq!(
        e.message,
        "invalid listen option: port is not allowed on the socket"
    );
}

#[test]
fn action_checks() {
    let cases: &[(&str, u32, &str)] = &[
        (
            "action a mbox user bob",
            15,
            "user may not be specified for this dispatcher",
        ),
        (
            "action a forward-only user bob",
            23,
            "user may not be specified for forward-only",
        ),
        (
            "action a expand-only user bob",
            22,
            "user may not be specified for expand-only",
        ),
        (
            "action a maildir user a user b",
            25,
            "user already specified for this dispatcher",
        ),
        (
            "action a maildir alias { x = y } virtual { x = y }",
            34,
            "alias mapping already specified for this dispatcher",
        ),
        (
            "action a maildir virtual { x = y } alias { x = y }",
            36,
            "virtual mapping already specified for this dispatcher",
        ),
        (
            "action a maildir alias { x, y }",
            24,
            "table \"<inline>\" may not be used for alias lookups",
        ),
        (
            "action a maildir userbase { x }",
            27,
            "table \"<inline>\" may not be used for userbase lookups",
        ),
        (
            "action a maildir wrapper w",
            26,
            "no mda wrapper with that name: w",
        ),
        (
            "action a mbox ttl 1d alias { x = y }",
            22,
            "syntax error: keyword 'alias' after ttl",
        ),
        (
            "action a mbox ttl 1d ttl 2d",
            22,
            "ttl already specified for this dispatcher",
        ),
        ("action a mbox ttl 0d", 19, "ttl delay \"0d\" is invalid"),
        (
            "action a relay auth { a = b }",
            16,
            "auth may not be specified without host on a dispatcher",
        ),
        (
            "action a relay host smtp+notls://mx.test tls",
            42,
            "tls may not be used with a smtp+notls:// relay host",
        ),
        (
            "action a relay tls host smtp+notls://mx.test",
            16,
            "tls may not be used with a smtp+notls:// relay host",
        ),
        (
            "action a relay backup host mx.test",
            23,
            "backup and host are mutually exclusive",
        ),
        (
            "action a relay host mx.test backup",
            29,
            "backup and host are mutually exclusive",
        ),
        (
            "action a relay domain { a = b } backup",
            33,
            "backup and host are mutually exclusive",
        ),
        (
            "action a relay backup domain { a = b }",
            23,
            "backup and domain are mutually exclusive",
        ),
        (
            "action a relay host mx.test host mx.test",
            29,
            "host mapping already specified for this dispatcher",
        ),
        (
            "action a relay helo a helo b",
            23,
            "helo already specified for this dispatcher",
        ),
        (
            "action a relay tls tls",
            20,
            "tls already specified for this dispatcher",
        ),
        (
            "action a relay srs",
            16,
            "an srs key is required for srs to be specified in an action",
        ),
        (
            "action a relay domain { a }",
            23,
            "table \"<inline>\" may not be used for host lookups",
        ),
        (
            "action a relay src nothere",
            20,
            "invalid source address: nothere",
        ),
        (
            "action a relay src { a = b }",
            20,
            "table \"<inline>\" may not be used for source lookups",
        ),
        (
            "action a relay host \"lmtp://h\"",
            21,
            "invalid relay url lmtp://h: lmtp:// needs a port",
        ),
        ("action a relay pki nope", 20, "pki name not found: nope"),
        ("action a relay ca nope", 19, "ca name not found: nope"),
        (
            "action a relay filter nope",
            23,
            "no filter exist with that name: nope",
        ),
        (
            "action a relay alias { a = b }",
            16,
            "syntax error: 'alias' is an option of local delivery methods",
        ),
        (
            "action a mbox host mx.test",
            15,
            "syntax error: 'host' is an option of relay actions",
        ),
    ];
    for (line, col, msg) in cases {
        let e = one_error(&format!("{line}\n{RULE}"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (1, *col, *msg),
            "{line}"
        );
    }
    let e = one_error(&format!("action a mbox\naction a maildir\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 8, "dispatcher already declared with that name: a")
    );
}

#[test]
fn match_checks() {
    let pre = "action a mbox\n";
    let cases: &[(&str, u32, &str)] = &[
        (
            "match from any from local action a",
            16,
            "from already specified for this rule",
        ),
        (
            "match for any for local action a",
            15,
            "for already specified for this rule",
        ),
        (
            "match tag a tag b action a",
            13,
            "tag already specified for this rule",
        ),
        (
            "match helo a helo b action a",
            14,
            "helo already specified for this rule",
        ),
        (
            "match tls !tls action a",
            12,
            "tls already specified for this rule",
        ),
        (
            "match auth auth action a",
            12,
            "auth already specified for this rule",
        ),
        (
            "match from auth auth action a",
            17,
            "auth already specified for this rule",
        ),
        (
            "match auth from auth action a",
            17,
            "auth already specified for this rule",
        ),
        (
            "match from mail-from \"a@b\" mail-from \"c@d\" action a",
            28,
            "mail-from already specified for this rule",
        ),
        (
            "match for rcpt-to \"a@b\" rcpt-to \"c@d\" action a",
            25,
            "rcpt-to already specified for this rule",
        ),
        ("match for any action nope", 22, "no such dispatcher: nope"),
        (
            "match for any",
            14,
            "syntax error: match needs `action NAME` or `reject` at the end",
        ),
        (
            "match for domain <nope> action a",
            19,
            "no such table: nope",
        ),
        (
            "match for domain { a = b } action a",
            18,
            "table \"<inline>\" may not be used for 'for' lookups",
        ),
        (
            "match from src { a = b } action a",
            16,
            "table \"<inline>\" may not be used for from lookups",
        ),
        (
            "match tag { a = b } action a",
            11,
            "table \"<inline>\" may not be used for tag lookups",
        ),
        ("match !action a", 8, "syntax error: '!' before 'action'"),
        (
            "match for any frob action a",
            15,
            "syntax error: unknown match option 'frob'",
        ),
    ];
    for (line, col, msg) in cases {
        let e = one_error(&format!("{pre}{line}\n"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (2, *col, *msg),
            "{line}"
        );
    }
}

#[test]
fn filter_checks() {
    let cases: &[(&str, u32, &str)] = &[
        (
            "filter f phase commit match rdns junk",
            34,
            "junk is not allowed in the commit phase",
        ),
        (
            "filter f phase commit match rdns bypass",
            34,
            "bypass is not allowed in the commit phase",
        ),
        (
            "filter f phase connect match rdns reject \"go away\"",
            42,
            "reject message must start with a 4xx or 5xx status code",
        ),
        (
            "filter f phase connect match rdns disconnect \"250 ok\"",
            46,
            "disconnect message must start with a 4xx or 5xx status code",
        ),
        (
            "filter f phase connect match helo \"x\" bypass",
            30,
            "condition helo is not available in the connect phase",
        ),
        (
            "filter f phase helo match mail-from \"x\" bypass",
            27,
            "condition mail-from is not available in the helo phase",
        ),
        (
            "filter f phase data match rcpt-to \"x\" bypass",
            27,
            "condition rcpt-to is not available in the data phase",
        ),
        (
            "filter f phase auth match rdns bypass",
            16,
            "filter phase 'auth' is not supported",
        ),
        (
            "filter f phase connect match rdns fcrdns bypass",
            35,
            "syntax error: a builtin filter takes one condition, then a decision",
        ),
        (
            "filter f proc nope",
            15,
            "no processor exist with that name: nope",
        ),
        (
            "filter f chain { nope }",
            18,
            "no filter exist with that name: nope",
        ),
    ];
    for (line, col, msg) in cases {
        let e = one_error(&format!("{line}\n{RULE}"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (1, *col, *msg),
            "{line}"
        );
    }
    let base = "proc p \"/bin/p\"\nfilter a proc p\nfilter b proc p\nfilter c phase connect match rdns bypass\nfilter ch chain { c }\n";
    let more: &[(&str, u32, &str)] = &[
        (
            "filter x chain { a, b }",
            21,
            "no proc allowed twice within a filter chain: p",
        ),
        (
            "filter x chain { c, c }",
            21,
            "no filter allowed twice within a filter chain: c",
        ),
        (
            "filter x chain { ch }",
            18,
            "no filter chain allowed within a filter chain: ch",
        ),
        (
            "filter a phase connect match rdns bypass",
            8,
            "filter already exists with that name: a",
        ),
        (
            "filter p proc-exec \"x\"",
            8,
            "processor already exists with that name: p",
        ),
        (
            "proc p \"y\"",
            6,
            "processor already exists with that name: p",
        ),
        (
            "proc q \"y\" user a user b",
            19,
            "user already specified for this processor",
        ),
    ];
    for (line, col, msg) in more {
        let e = one_error(&format!("{base}{line}\n{RULE}"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (6, *col, *msg),
            "{line}"
        );
    }
}

#[test]
fn global_value_checks() {
    let cases: &[(&str, u32, &str)] = &[
        (
            "smtp sub-addr-delim \"@\"",
            21,
            "sub-addr-delim uses invalid character",
        ),
        (
            "smtp sub-addr-delim \" \"",
            21,
            "sub-addr-delim uses invalid character",
        ),
        (
            "smtp sub-addr-delim \"++\"",
            21,
            "subaddressing-delimiter must be one character",
        ),
        ("smtp max-message-size 35X", 23, "invalid size: 35X"),
        ("smtp max-message-size -1", 23, "invalid size: -1"),
        (
            "smtp limit max-foo 1",
            12,
            "invalid session limit keyword: max-foo",
        ),
        ("mda limit foo 1", 11, "invalid mda limit keyword: foo"),
        ("mta limit foo 1", 11, "invalid mta limit keyword: foo"),
        (
            "scheduler limit foo 1",
            17,
            "invalid scheduler limit keyword: foo",
        ),
        ("queue ttl 4w", 11, "invalid ttl delay: 4w"),
        (
            "queue path \"relative/dir\"",
            12,
            "queue path must be absolute",
        ),
        ("srs ttl 1h", 9, "ttl delay \"1h\" is too short"),
        ("srs ttl x", 9, "ttl delay \"x\" is invalid"),
        (
            "bounce warn-interval 1h, 2h, 3h, 4h, 5h",
            38,
            "too many bounce delays (at most 4)",
        ),
        ("bounce warn-interval 1x", 22, "invalid bounce delay: 1x"),
        (
            "pki \"bad name!\" cert \"/c\"",
            5,
            "not a valid domain name: bad name!",
        ),
        ("pki p dhe strong", 11, "invalid DHE keyword: strong"),
        ("ca \"-x\" cert \"/c\"", 4, "not a valid domain name: -x"),
        ("admd \"a\tb\"", 6, "not a valid admd"),
        (
            "mda wrapper w \"a\"\nmda wrapper w \"b\"",
            13,
            "mda wrapper already declared with that name: w",
        ),
        (
            "table t { a }\ntable t { b }",
            7,
            "table \"t\" already defined",
        ),
        (
            "table t file:relative",
            9,
            "invalid backend parameter for table: t",
        ),
        (
            "table t ldap:/etc/x",
            9,
            "table backend \"ldap\" does not exist",
        ),
        ("table t {}", 10, "a table needs at least one value"),
        (
            "table t { a, b = c }",
            14,
            "a table is either a list of values or a list of key = value pairs",
        ),
        (
            "table t { a, }",
            14,
            "syntax error: expected a table value after ','",
        ),
    ];
    for (line, col, msg) in cases {
        let e = one_error(&format!("{line}\n{RULE}"));
        let expected_line = line.matches('\n').count() as u32 + 1;
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (expected_line, *col, *msg),
            "{line}"
        );
    }
}

#[test]
fn pki_needs_cert_and_key() {
    let e = one_error(&format!("pki a cert \"/c\"\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 1, "pki a has no key")
    );
    let e = one_error(&format!("pki a key \"/k\"\n{RULE}"));
    assert_eq!(e.message, "pki a has no cert");
    // cert and key may come on separate lines.
    common::ok(&format!("pki a cert \"/c\"\npki a key \"/k\"\n{RULE}"));
}

#[test]
fn every_error_of_a_file_is_reported() {
    let text = "listen on lo auth\n\
                action a mbox user x\n\
                match for any action b\n\
                smtp max-message-size lots\n\
                action ok mbox\n\
                match for any action ok\n";
    let errs = errors(text);
    let lines: Vec<u32> = errs.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![1, 2, 3, 4], "{}", show(&errs));
}

#[test]
fn error_count_is_bounded() {
    let text = "x\n".repeat(10_000);
    let d = fails(&text);
    assert!(d.len() <= 102, "{} diagnostics", d.len());
    assert!(d.iter().any(|x| x.message == "too many errors, giving up"));
}

#[test]
fn inline_tables_are_bounded() {
    let values: Vec<String> = (0..65_537).map(|i| format!("v{i}")).collect();
    let e = one_error(&format!("table t {{ {} }}\n{RULE}", values.join(", ")));
    assert_eq!(e.message, "too many values in one table (at most 65536)");
}

/// rustls speaks TLS 1.2 and 1.3 with AEAD suites only: anything else in
/// `protocols` or `ciphers` is refused where it is written.
#[test]
fn tls_options_rustls_cannot_honour() {
    assert_error_at(
        &format!("listen on lo protocols \"tlsv1.0\"\n{RULE}"),
        1,
        24,
        "protocols: protocol 'tlsv1.0' is not supported: rustls speaks TLSv1.2 and TLSv1.3 only",
    );
    let e = one_error(&format!("smtp ciphers \"RC4-MD5:HIGH\"\n{RULE}"));
    assert_eq!((e.line, e.col), (1, 14));
    assert!(
        e.message
            .starts_with("ciphers: cipher 'RC4-MD5' is not supported"),
        "{e:?}"
    );
    // The action fails as a whole: its later uses are reported too.
    let e = &errors(&format!(
        "action \"out\" relay ciphers \"ECDHE+AESGCM\"\n{RULE}"
    ))[0];
    assert_eq!((e.line, e.col), (1, 28));
    assert!(
        e.message.contains("'ECDHE+AESGCM' is not supported"),
        "{e:?}"
    );
    // What rustls can do is accepted, in OpenSSL's words or IANA's.
    common::ok(&format!(
        "listen on lo protocols \"tlsv1.2:tlsv1.3\" ciphers \"HIGH:!aNULL:!MD5\"\n\
         action \"out\" relay ciphers \"ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_128_GCM_SHA256\" \
         protocols \"secure\"\nmatch for any action \"out\"\n{RULE}"
    ));
}
