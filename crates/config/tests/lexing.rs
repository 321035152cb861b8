//! The lexer's rules seen through whole configurations: macros, quoting,
//! continuation, comments, numbers, includes, limits and bad bytes. Each bad
//! input gets a diagnostic, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::path::PathBuf;

use common::{RULE, errors, fails, ok, one_error, opts, show};
use rsmtpd_config::model::*;
use rsmtpd_config::{Includes, ParseOptions, parse_bytes, parse_file, parse_str};
use rsmtpd_table::TableDecl;

fn domain_values(c: &Config, rule: usize) -> Vec<String> {
    let Destination::Domain(m) = c.rules[rule].to.value else {
        panic!("domain expected")
    };
    match &c.tables[m.table.0].decl {
        TableDecl::StaticList(v) => v.clone(),
        other => panic!("list expected, got {other:?}"),
    }
}

#[test]
fn macros_expand_outside_quotes_only() {
    let c = ok("d = \"example.org\"\n\
         sub = mail\n\
         action a mbox\n\
         match for domain $d action a\n\
         match for domain \"$d\" action a\n\
         match for domain $sub.example.org action a\n\
         match for domain mail.$d action a\n");
    assert_eq!(domain_values(&c, 0), vec!["example.org"]);
    assert_eq!(domain_values(&c, 1), vec!["$d"]);
    assert_eq!(domain_values(&c, 2), vec!["mail.example.org"]);
    // `$` inside a word is not a macro (OpenSMTPD expands only at a token's start).
    assert_eq!(domain_values(&c, 3), vec!["mail.$d"]);
}

#[test]
fn macro_value_is_lexed_again() {
    // The man page's example: a macro holding several words.
    let c = ok("opts = \"tls pki p\"\n\
         pki p cert \"/c\" key \"/k\"\n\
         listen on lo $opts\n\
         action a mbox\nmatch action a\n");
    assert_eq!(
        c.listeners[0].tls,
        ListenerTls::StartTls {
            required: false,
            verify_client: false
        }
    );
}

#[test]
fn macro_redefinition_and_numbers() {
    let c = ok("p = 25\np = 2525\nlisten on lo port $p\naction a mbox\nmatch action a\n");
    assert_eq!(c.listeners[0].port, 2525);
}

#[test]
fn command_line_macros_override_the_file() {
    let mut o = opts();
    o.define("p=10025").expect("define");
    let text = "p = 25\nlisten on lo port $p\naction a mbox\nmatch action a\n";
    let c = parse_str("t.conf", text, &o).expect("parses");
    assert_eq!(c.listeners[0].port, 10025);
    // And they work when the file never defines them.
    let c = parse_str(
        "t.conf",
        "listen on lo port $p\naction a mbox\nmatch action a\n",
        &o,
    )
    .expect("parses");
    assert_eq!(c.listeners[0].port, 10025);
}

#[test]
fn undefined_macro() {
    let e = one_error(&format!("listen on $nope\n{RULE}"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 11, "macro 'nope' not defined")
    );
    assert!(
        e.hint
            .as_deref()
            .is_some_and(|h| h.contains("-D nope=value"))
    );
}

#[test]
fn macro_definition_rules() {
    let e = one_error(&format!("my-var = x\n{RULE}"));
    assert_eq!(
        e.message,
        "invalid macro name 'my-var': use letters, digits and underscores"
    );
    let e = one_error(&format!("\"a b\" = x\n{RULE}"));
    assert_eq!(e.message, "macro name cannot contain whitespace");
    // A reserved word cannot be a macro name: it reads as a directive.
    let e = one_error(&format!("listen = x\n{RULE}"));
    assert_eq!((e.line, e.col), (1, 8));
}

#[test]
fn quotes_escapes_and_continuation() {
    let c = ok("action a mda \"/bin/deliver \\\"%{rcpt}\\\"\"\n\
         action b mda '/bin/x arg'\n\
         action c mda \"/bin/long \\\n   --flag\"\n\
         action d \\\n  mbox\n\
         match for any action a\n");
    let cmd = |i: usize| match &c.actions[i].dispatcher {
        Dispatcher::Local(LocalDispatcher {
            method: LocalMethod::Mda { command },
            ..
        }) => command.clone(),
        _ => String::new(),
    };
    assert_eq!(cmd(0), "/bin/deliver \"%{rcpt}\"");
    assert_eq!(cmd(1), "/bin/x arg");
    assert_eq!(cmd(2), "/bin/long    --flag");
    assert_eq!(c.actions[3].name, "d");
    // Lines after a continuation keep their numbers.
    assert_eq!(c.rules[0].span.line, 7);
}

#[test]
fn reserved_words_need_quotes() {
    let e = one_error(&format!("table domain {{ a }}\n{RULE}"));
    assert_eq!((e.line, e.col), (1, 7));
    assert_eq!(
        e.message,
        "syntax error: expected a table name, found keyword 'domain'"
    );
    assert_eq!(
        e.hint.as_deref(),
        Some("'domain' is a reserved word; write \"domain\" to use it as a table name")
    );
    let c = ok(&format!("table \"domain\" {{ a }}\n{RULE}"));
    assert_eq!(c.tables[0].name, "domain");
}

#[test]
fn comments_everywhere() {
    let c = ok("# leading\n\
         action a mbox # trailing\n\
         table t { a, # inside a list\n b }\n\
         match for any action a#attached\n");
    assert_eq!(
        c.tables[0].decl,
        TableDecl::StaticList(vec!["a".into(), "b".into()])
    );
}

#[test]
fn comment_continuation_swallows_next_line() {
    let d = fails("# comment \\\naction a mbox\nmatch action a\n");
    assert!(
        d.iter().any(|x| x.message == "no such dispatcher: a"),
        "{d}"
    );
}

#[test]
fn numbers_and_strings() {
    // 35M is a string, 25 a number, 192.0.2.1 a string.
    let c = ok(
        "smtp max-message-size 35M\nlisten on 192.0.2.10 port 25\naction a mbox\nmatch action a\n",
    );
    assert_eq!(c.smtp.max_message_size, 35 << 20);
    let e = one_error(&format!("listen on lo port 99999999999999999999\n{RULE}"));
    assert_eq!(
        e.message,
        "\"99999999999999999999\" invalid number: too large"
    );
    let e = one_error(&format!("admd 42\n{RULE}"));
    assert_eq!(
        e.message,
        "syntax error: expected an authserv-id, found number 42"
    );
}

#[test]
fn lists_across_lines() {
    let text = "filter a phase connect match rdns bypass\n\
         filter b phase connect match fcrdns bypass\n\
         filter c chain {\n  a,\n  b\n}\n\
         table t {\n  x = y\n  z = w\n}\n"
        .to_string()
        .add_rule();
    let c = ok(&text);
    assert!(matches!(&c.filters[2].kind, FilterKind::Chain(v) if v.len() == 2));
    assert_eq!(
        c.tables[0].decl,
        TableDecl::StaticMap(vec![("x".into(), "y".into()), ("z".into(), "w".into())])
    );
}

trait AddRule {
    fn add_rule(self) -> String;
}

impl AddRule for String {
    fn add_rule(mut self) -> String {
        self.push_str(RULE);
        self
    }
}

#[test]
fn unclosed_list_is_reported_at_its_brace() {
    let errs = errors(&format!("table t {{ a, b\nlisten on lo\n{RULE}"));
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!(
        (errs[0].line, errs[0].col, errs[0].message.as_str()),
        (1, 9, "unclosed '{'")
    );
    let e = one_error("action a mbox\nmatch action a\ntable t { a,\n b");
    assert_eq!((e.line, e.col, e.message.as_str()), (3, 9, "unclosed '{'"));
}

#[test]
fn unterminated_quote() {
    let errs = errors("action a mda \"/bin/x\nmatch action a\n");
    assert_eq!(
        errs[0].message,
        "reached end of file while parsing quoted string"
    );
    assert_eq!((errs[0].line, errs[0].col), (1, 14));
}

#[test]
fn ten_megabyte_line() {
    let long = "a".repeat(10 * 1024 * 1024);
    let text = format!("admd {long}\n{RULE}");
    let e = one_error(&text);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 6, "string too long")
    );
    let text = format!("admd \"{long}\"\n{RULE}");
    let e = one_error(&text);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 6, "string too long")
    );
    // A long comment is fine.
    ok(&format!("# {long}\n{RULE}"));
}

#[test]
fn binary_garbage_gets_diagnostics() {
    let mut data = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push((x & 0xff) as u8);
    }
    let d = parse_bytes("garbage.conf", &data, &opts()).expect_err("garbage");
    assert!(d.has_errors());
    assert!(d.len() <= 102);
}

#[test]
fn bad_bytes() {
    let d =
        parse_bytes("t.conf", b"action a mbox\x00\nmatch action a\n", &opts()).expect_err("nul");
    let e = d.errors().next().expect("error");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 14, "NUL byte in input")
    );
    let d = parse_bytes("t.conf", b"admd \"a\x01b\"\n", &opts()).expect_err("ctl");
    assert_eq!(
        d.errors().next().map(|e| e.message.as_str()),
        Some("control character 0x01 in input")
    );
    let d = parse_bytes("t.conf", b"admd \"caf\xe9\"\n", &opts()).expect_err("latin1");
    let e = d.errors().next().expect("error");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 6, "invalid UTF-8 in input")
    );
    let d = parse_bytes("t.conf", b"\xff\xfe listen\n", &opts()).expect_err("bom");
    assert_eq!(
        d.errors().next().map(|e| e.message.as_str()),
        Some("invalid UTF-8 in input")
    );
    // UTF-8 inside quotes is fine; outside it must be quoted.
    let c = ok("action a mda \"/bin/caf\u{e9}\"\nmatch action a\n");
    assert!(
        matches!(&c.actions[0].dispatcher, Dispatcher::Local(d) if d.method == LocalMethod::Mda { command: "/bin/caf\u{e9}".into() })
    );
    let e = one_error(&format!("admd caf\u{e9}\n{RULE}"));
    assert_eq!(
        (e.col, e.message.as_str()),
        (9, "unexpected character '\u{e9}'")
    );
}

#[test]
fn crlf_line_endings() {
    let c = ok("action a mbox\r\nmatch for any action a\r\n");
    assert_eq!(c.rules.len(), 1);
}

#[test]
fn includes() {
    let dir = common::temp_dir("lex-includes");
    let inner = dir.join("inner.conf");
    let middle = dir.join("middle.conf");
    std::fs::write(&inner, "action a mbox").expect("write"); // no final newline
    std::fs::write(
        &middle,
        format!("include \"{}\"\nmatch action a\n", inner.display()),
    )
    .expect("write");
    let main = dir.join("smtpd.conf");
    std::fs::write(
        &main,
        format!("include \"{}\"\nmatch for any action a\n", middle.display()),
    )
    .expect("write");
    let c = parse_file(&main, &opts()).expect("parses");
    assert_eq!(c.files, vec![main.clone(), middle.clone(), inner.clone()]);
    assert_eq!(c.rules.len(), 2);
    assert_eq!(
        c.rules[0].span,
        Span {
            file: 1,
            line: 2,
            col: 1
        }
    );
    assert_eq!(
        c.rules[1].span,
        Span {
            file: 0,
            line: 2,
            col: 1
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn include_errors() {
    let dir = common::temp_dir("lex-include-errors");
    let missing = dir.join("missing.conf");
    let e = one_error(&format!("include \"{}\"\n{RULE}", missing.display()));
    assert_eq!((e.line, e.col), (1, 9));
    assert!(
        e.message
            .starts_with(&format!("failed to include file {}: ", missing.display())),
        "{}",
        e.message
    );
    let e = one_error(&format!("include \"relative.conf\"\n{RULE}"));
    assert_eq!(
        e.message,
        "failed to include file relative.conf: the path must be absolute"
    );
    let mut o = opts();
    o.includes = Includes::Disabled;
    let d = parse_str("t.conf", &format!("include \"/etc/x\"\n{RULE}"), &o).expect_err("disabled");
    assert_eq!(
        d.errors().next().map(|e| e.message.as_str()),
        Some("failed to include file /etc/x: includes are disabled")
    );
    // An error inside an included file names that file.
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "\nbogus directive\n").expect("write");
    let e = one_error(&format!("include \"{}\"\n{RULE}", bad.display()));
    assert_eq!(e.file, bad);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 1, "unknown directive 'bogus'")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn include_loops() {
    let dir = common::temp_dir("lex-include-loop");
    let a = dir.join("a.conf");
    let b = dir.join("b.conf");
    std::fs::write(&a, format!("{RULE}include \"{}\"\n", b.display())).expect("write");
    std::fs::write(&b, format!("include \"{}\"\n", a.display())).expect("write");
    let d = parse_file(&a, &opts()).expect_err("loop");
    let e = d.errors().next().expect("error");
    assert_eq!(e.file, b);
    assert_eq!((e.line, e.col), (1, 9));
    assert!(e.message.contains("include loop"), "{}", e.message);
    assert_eq!(d.errors().count(), 1, "{d}");
    // Including itself directly.
    let s = dir.join("self.conf");
    std::fs::write(&s, format!("include \"{}\"\n{RULE}", s.display())).expect("write");
    let d = parse_file(&s, &opts()).expect_err("self loop");
    assert!(
        d.errors().any(|e| e.message.contains("include loop")),
        "{d}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn include_of_the_same_file_twice_is_not_a_loop() {
    let dir = common::temp_dir("lex-include-twice");
    let t = dir.join("t.conf");
    std::fs::write(&t, "admd \"x\"\n").expect("write");
    let c = ok(&format!(
        "include \"{0}\"\ninclude \"{0}\"\n{RULE}",
        t.display()
    ));
    assert_eq!(c.files.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_main_file() {
    let p = PathBuf::from("/nonexistent/rsmtpd/smtpd.conf");
    let d = parse_file(&p, &ParseOptions::default()).expect_err("missing");
    let e = d.errors().next().expect("error");
    assert_eq!(e.file, p);
    assert!(
        e.message
            .starts_with("cannot read /nonexistent/rsmtpd/smtpd.conf: ")
    );
}

#[test]
fn include_of_something_not_a_file() {
    let dir = common::temp_dir("lex-include-dir");
    let e = one_error(&format!("include \"{}\"\n{RULE}", dir.display()));
    assert_eq!(
        e.message,
        format!(
            "failed to include file {}: not a regular file",
            dir.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn table_files_can_be_left_alone() {
    let mut o = opts();
    o.table_files = rsmtpd_config::TableFiles::Skip;
    let c = parse_str(
        "t.conf",
        "table t file:/nonexistent/rsmtpd/t\naction a mbox alias <t>\nmatch for domain <t> action a\n",
        &o,
    )
    .expect("no file access, no shape checks");
    assert_eq!(
        c.tables[0].decl,
        TableDecl::File("/nonexistent/rsmtpd/t".into())
    );
}
