use super::*;

const HEAD: &str = "From: a@x.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@x.org>\n";

fn opts() -> PrepareOptions {
    PrepareOptions {
        ignore_dots: false,
        read_recipients: false,
        extra_recipients: vec!["bob@y.org".into()],
        sender: "joe@host.example".into(),
        full_name: None,
        hostname: "host.example".into(),
        date: "Tue, 2 Jan 2024 10:00:00 +0100".into(),
        message_id: "<abc.1@host.example>".into(),
        max_size: 1 << 20,
    }
}

fn t_opts() -> PrepareOptions {
    PrepareOptions {
        read_recipients: true,
        extra_recipients: vec![],
        ..opts()
    }
}

fn ok(input: &str, o: &PrepareOptions) -> Prepared {
    prepare(input.as_bytes(), o).unwrap()
}

fn text(p: &Prepared) -> &str {
    std::str::from_utf8(&p.message).unwrap()
}

#[test]
fn bare_lf_becomes_crlf() {
    let p = ok(&format!("{HEAD}Subject: hi\n\nline 1\nline 2\n"), &opts());
    assert_eq!(
        p.message,
        b"From: a@x.org\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@x.org>\r\n\
          Subject: hi\r\n\r\nline 1\r\nline 2\r\n"
    );
    assert!(p.added.is_empty());
    assert_eq!(p.recipients, ["bob@y.org"]);
    assert_eq!(p.sender, "joe@host.example");
}

#[test]
fn crlf_kept_bare_cr_becomes_crlf_final_newline_added() {
    let p = ok(&format!("{HEAD}\r\na\r\nb\rc\r\rd"), &opts());
    assert!(
        text(&p).ends_with("\r\n\r\na\r\nb\r\nc\r\n\r\nd\r\n"),
        "{:?}",
        text(&p)
    );
    // CR LF split by nothing else is one line end, CR CR LF is two.
    let p = ok(&format!("{HEAD}\nx\r\r\ny"), &opts());
    assert!(
        text(&p).ends_with("\r\n\r\nx\r\n\r\ny\r\n"),
        "{:?}",
        text(&p)
    );
}

#[test]
fn dot_line_ends_input_without_i() {
    let input = format!("{HEAD}\nbody\n.\nafter\0\n");
    let p = ok(&input, &opts());
    assert!(text(&p).ends_with("\r\n\r\nbody\r\n"), "{:?}", text(&p));
    assert!(!text(&p).contains("after"));
    // The same at the very end, with no line end, and ended by CR alone.
    let p = ok(&format!("{HEAD}\nbody\n."), &opts());
    assert!(text(&p).ends_with("body\r\n"));
    let p = ok(&format!("{HEAD}\nbody\r.\rmore"), &opts());
    assert!(text(&p).ends_with("body\r\n"));
}

#[test]
fn dot_line_is_content_with_i_and_nothing_is_stuffed() {
    let o = PrepareOptions {
        ignore_dots: true,
        ..opts()
    };
    let p = ok(&format!("{HEAD}\nbody\n.\n..\n.x\nafter\n"), &o);
    assert!(
        text(&p).ends_with("\r\n\r\nbody\r\n.\r\n..\r\n.x\r\nafter\r\n"),
        "{:?}",
        text(&p)
    );
    // Without -i, lines that merely start with a dot are content too.
    let p = ok(&format!("{HEAD}\n..\n.x\n"), &opts());
    assert!(text(&p).ends_with("\r\n\r\n..\r\n.x\r\n"));
}

#[test]
fn nul_is_refused_with_its_line() {
    let e = prepare(format!("{HEAD}\nok\nb\0d\n").as_bytes(), &opts()).unwrap_err();
    assert_eq!(e, MessageError::Nul { line: 6 });
    assert_eq!(e.to_string(), "line 6: NUL octet in message");
    assert_eq!(e.exit_code(), crate::sysexits::EX_DATAERR);
    assert_eq!(prepare(b"\0", &opts()), Err(MessageError::Nul { line: 1 }));
    // Line numbers count bare CR and CRLF line ends alike.
    assert_eq!(
        prepare(b"a: b\r\n\rc\r\0", &opts()),
        Err(MessageError::Nul { line: 4 })
    );
}

#[test]
fn long_lines_are_refused() {
    let max = "x".repeat(MAX_LINE_OCTETS);
    ok(&format!("{HEAD}X-Long: {}\n\n{max}\n", &max[8..]), &opts());
    assert_eq!(
        prepare(format!("{HEAD}\n{max}x\n").as_bytes(), &opts()),
        Err(MessageError::LineTooLong { line: 5 })
    );
    assert_eq!(
        prepare(
            format!("{HEAD}X-Long: {}\n\n", &max[7..]).as_bytes(),
            &opts()
        ),
        Err(MessageError::LineTooLong { line: 4 })
    );
}

#[test]
fn headers_added_when_missing_in_order() {
    let p = ok("Subject: hi\n\nbody\n", &opts());
    assert_eq!(p.added, ["From", "Date", "Message-ID"]);
    assert_eq!(
        text(&p),
        "From: joe@host.example\r\nDate: Tue, 2 Jan 2024 10:00:00 +0100\r\n\
         Message-ID: <abc.1@host.example>\r\nSubject: hi\r\n\r\nbody\r\n"
    );
    // Present in any case: not added.
    let p = ok("message-id: <q@x>\nFROM: z@x.org\n\nbody\n", &opts());
    assert_eq!(p.added, ["Date"]);
    assert!(text(&p).starts_with("Date: Tue, 2 Jan 2024 10:00:00 +0100\r\nmessage-id: <q@x>\r\n"));
    let p = ok("Date: x\nSubject: s\n", &opts());
    assert_eq!(p.added, ["From", "Message-ID"]);
    assert_eq!(
        text(&p),
        "From: joe@host.example\r\nMessage-ID: <abc.1@host.example>\r\nDate: x\r\nSubject: s\r\n"
    );
}

#[test]
fn no_headers_means_all_body() {
    // A separating empty line is inserted after the added headers...
    let p = ok("Hello there\nsecond\n", &opts());
    assert!(
        text(&p).ends_with("<abc.1@host.example>\r\n\r\nHello there\r\nsecond\r\n"),
        "{:?}",
        text(&p)
    );
    // ...but not when the body already starts with one.
    let p = ok("\nHello there\n", &opts());
    assert!(text(&p).ends_with("<abc.1@host.example>\r\n\r\nHello there\r\n"));
    // A name with a space before the colon is not a header field.
    let p = ok("Subject : hi\n", &opts());
    assert!(text(&p).ends_with(">\r\n\r\nSubject : hi\r\n"));
    // An empty input is a message with the added headers only.
    let p = ok("", &opts());
    assert_eq!(p.added, ["From", "Date", "Message-ID"]);
    assert_eq!(text(&p).matches("\r\n").count(), 3);
    let p = ok(".\nignored\n", &opts());
    assert_eq!(text(&p).matches("\r\n").count(), 3);
}

#[test]
fn header_only_message_gets_no_empty_line() {
    let p = ok(&format!("{HEAD}Subject: s"), &opts());
    assert!(text(&p).ends_with("<1@x.org>\r\nSubject: s\r\n"));
}

#[test]
fn unterminated_header_block_is_refused() {
    let e = prepare(b"Subject: hi\nHello there\n", &opts()).unwrap_err();
    assert_eq!(e, MessageError::UnterminatedHeaders { line: 2 });
    assert!(e.to_string().contains("line 2: unterminated header block"));
    assert_eq!(
        prepare(b"To: a@x\n\tb@y\nX-A: 1\nnot a header\n\nbody\n", &opts()),
        Err(MessageError::UnterminatedHeaders { line: 4 })
    );
    // A continuation with no field before it.
    assert_eq!(
        prepare(b" folded: x\n\nbody\n", &opts()),
        Err(MessageError::ContinuationWithoutHeader { line: 1 })
    );
    assert_eq!(
        prepare(b"\tx\n", &opts()),
        Err(MessageError::ContinuationWithoutHeader { line: 1 })
    );
    // After the empty line, anything goes.
    ok("Subject: hi\n\n not a header\nnor: this\n", &opts());
}

#[test]
fn header_block_is_bounded() {
    let line = format!("X-Big: {}\n", "y".repeat(990));
    let big = line.repeat(MAX_HEADER_BLOCK / line.len() + 1);
    let o = PrepareOptions {
        max_size: 4 << 20,
        ..opts()
    };
    assert_eq!(
        prepare(big.as_bytes(), &o),
        Err(MessageError::HeadersTooBig)
    );
    // The same octets as body are fine.
    ok(&format!("\n{big}"), &o);
}

#[test]
fn too_big_input() {
    let o = PrepareOptions {
        max_size: 10,
        ..opts()
    };
    assert_eq!(
        prepare(b"0123456789x", &o),
        Err(MessageError::TooBig { max: 10 })
    );
    ok("0123456789", &o);
}

#[test]
fn mbox_from_line_is_dropped_only_before_headers() {
    let p = ok(
        &format!("From joe Mon Jan  1 00:00:00 2024\n{HEAD}\nbody\n"),
        &opts(),
    );
    assert!(text(&p).starts_with("From: a@x.org\r\n"));
    assert!(!text(&p).contains("From joe"));
    let p = ok("From me to you, greetings\n", &opts());
    assert!(text(&p).ends_with("\r\n\r\nFrom me to you, greetings\r\n"));
}

#[test]
fn from_header_forms() {
    let o = PrepareOptions {
        full_name: Some("Joe \"Q\" \\ Public".into()),
        ..opts()
    };
    let p = ok("Subject: s\n", &o);
    assert!(
        text(&p).starts_with("From: \"Joe \\\"Q\\\" \\\\ Public\" <joe@host.example>\r\n"),
        "{:?}",
        text(&p)
    );
    let o = PrepareOptions {
        full_name: Some("Joe Q".into()),
        ..opts()
    };
    assert!(text(&ok("", &o)).starts_with("From: \"Joe Q\" <joe@host.example>\r\n"));
    let o = PrepareOptions {
        full_name: Some(String::new()),
        ..opts()
    };
    assert!(text(&ok("", &o)).starts_with("From: joe@host.example\r\n"));
    let o = PrepareOptions {
        full_name: Some("Jos\u{e9}".into()),
        ..opts()
    };
    assert!(text(&ok("", &o)).starts_with("From: =?UTF-8?B?Sm9zw6k=?= <joe@host.example>\r\n"));
    // A bare login is qualified; the null sender is MAILER-DAEMON.
    let o = PrepareOptions {
        sender: "joe".into(),
        ..opts()
    };
    let p = ok("", &o);
    assert_eq!(p.sender, "joe@host.example");
    assert!(text(&p).starts_with("From: joe@host.example\r\n"));
    let o = PrepareOptions {
        sender: String::new(),
        ..opts()
    };
    let p = ok("", &o);
    assert_eq!(p.sender, "");
    assert!(text(&p).starts_with("From: MAILER-DAEMON@host.example\r\n"));
}

#[test]
fn bad_full_name_and_sender() {
    for name in ["Joe\r\nBcc: evil@x", "Joe\nX", "Joe\rX", "a\0b"] {
        let o = PrepareOptions {
            full_name: Some(name.into()),
            ..opts()
        };
        assert_eq!(prepare(b"", &o), Err(MessageError::BadFullName), "{name:?}");
    }
    let o = PrepareOptions {
        full_name: Some("x".repeat(MAX_FULL_NAME_OCTETS + 1)),
        ..opts()
    };
    assert_eq!(prepare(b"", &o), Err(MessageError::BadFullName));
    for s in ["a b@x", "a@x\r\n", "<joe@x>"] {
        let o = PrepareOptions {
            sender: s.into(),
            ..opts()
        };
        assert_eq!(prepare(b"", &o), Err(MessageError::BadSender(s.into())));
    }
}

#[test]
fn long_non_ascii_name_is_split_into_encoded_words() {
    let name = "\u{e9}".repeat(100); // 200 octets
    let words = encoded_words(&name);
    let parts: Vec<&str> = words.split(' ').collect();
    assert_eq!(parts.len(), 5); // 44 octets (22 characters) each, and the rest
    for w in &parts {
        assert!(w.len() <= 75, "{w}");
        assert!(w.starts_with("=?UTF-8?B?") && w.ends_with("?="));
    }
    assert_eq!(
        parts[0],
        format!("=?UTF-8?B?{}?=", base64("\u{e9}".repeat(22).as_bytes()))
    );
    let o = PrepareOptions {
        full_name: Some("\u{1F600}".repeat(64)),
        ..opts()
    };
    let p = ok("", &o);
    assert!(p.message.is_ascii());
    assert!(!p.eight_bit);
}

#[test]
fn base64_vectors() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(i.as_bytes()), o);
    }
    assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
}

#[test]
fn t_reads_groups_comments_quotes_and_folds() {
    let input = "From: me@x.org\n\
                 To: Friends: Ann <ann@a.org>, \"b,c\"@b.org;,\n\
                 \tdave@d.org (Dave, the (real) one)\n\
                 Cc: Eve\n  <eve@e.org>, \"Smith, Fred\" <fred@f.org>\n\
                 Subject: x\n\nbody\n";
    let p = ok(input, &t_opts());
    assert_eq!(
        p.recipients,
        [
            "ann@a.org",
            "\"b,c\"@b.org",
            "dave@d.org",
            "eve@e.org",
            "fred@f.org"
        ]
    );
    // Headers are not rewritten.
    assert!(text(&p).contains("To: Friends: Ann <ann@a.org>, \"b,c\"@b.org;,\r\n\tdave@d.org"));
}

#[test]
fn t_removes_bcc_with_continuations() {
    let input = "To: a@x.org\nBcc: hidden@x.org,\n  also@x.org\nbcc: more@x.org\nSubject: s\n\nBcc: body@x.org\n";
    let p = ok(input, &t_opts());
    assert_eq!(
        p.recipients,
        ["a@x.org", "hidden@x.org", "also@x.org", "more@x.org"]
    );
    let t = text(&p);
    assert!(
        !t.contains("hidden") && !t.contains("also") && !t.contains("more"),
        "{t:?}"
    );
    assert!(
        t.ends_with("To: a@x.org\r\nSubject: s\r\n\r\nBcc: body@x.org\r\n"),
        "{t:?}"
    );
}

#[test]
fn without_t_bcc_is_kept_and_headers_are_not_read() {
    let input = "To: a@x.org\nBcc: hidden@x.org\n\nbody\n";
    let p = ok(input, &opts());
    assert_eq!(p.recipients, ["bob@y.org"]);
    assert!(text(&p).contains("\r\nBcc: hidden@x.org\r\n"));
    // Not even a broken To: matters then.
    ok("To: <<broken\n\nbody\n", &opts());
}

#[test]
fn t_adds_command_line_recipients_and_drops_duplicates() {
    let o = PrepareOptions {
        extra_recipients: vec![
            "Carl <carl@c.org>, dan".into(),
            "A@X.ORG".into(),
            "B@X.ORG".into(),
        ],
        ..t_opts()
    };
    let p = ok("To: a@x.org, a@X.org\nCc: A@x.org\n\n", &o);
    assert_eq!(
        p.recipients,
        [
            "a@x.org",
            "A@x.org",
            "carl@c.org",
            "dan@host.example",
            "B@X.ORG"
        ]
    );
}

#[test]
fn recipient_refusals() {
    assert_eq!(
        prepare(
            b"To: a@x.org\n\n",
            &PrepareOptions {
                extra_recipients: vec![],
                ..opts()
            }
        ),
        Err(MessageError::NoRecipients)
    );
    assert_eq!(
        MessageError::NoRecipients.exit_code(),
        crate::sysexits::EX_USAGE
    );
    assert_eq!(
        prepare(b"To: undisclosed-recipients:;\n\n", &t_opts()),
        Err(MessageError::NoRecipients)
    );
    for bad in ["a b", "Joe Smith", "", "g:;", "a@b@c", "x@", "a\u{1}@x.org"] {
        let o = PrepareOptions {
            extra_recipients: vec![bad.into()],
            ..opts()
        };
        assert_eq!(
            prepare(b"", &o),
            Err(MessageError::BadRecipient(bad.into())),
            "{bad:?}"
        );
    }
    // From headers with -t, the address itself is named.
    assert_eq!(
        prepare(b"To: a@b@c.org\n\n", &t_opts()),
        Err(MessageError::BadRecipient("a@b@c.org".into()))
    );
    let long = format!("{}@x.org", "a".repeat(300));
    assert_eq!(
        prepare(format!("To: {long}\n\n").as_bytes(), &t_opts()),
        Err(MessageError::BadRecipient(long))
    );
}

#[test]
fn malformed_address_header_names_line_and_field() {
    let e = prepare(
        b"Subject: s\nCc: ok@x.org,\n  \"unterminated@x.org\n\n",
        &t_opts(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        MessageError::BadAddressList {
            line: 2,
            field: "Cc",
            source: AddressListError::UnterminatedQuote,
        }
    );
    assert_eq!(
        e.to_string(),
        "line 2: malformed Cc: header: unterminated quoted string"
    );
}

#[test]
fn too_many_recipients() {
    let list: Vec<String> = (0..=MAX_RECIPIENTS)
        .map(|i| format!("u{i}@x.org"))
        .collect();
    let o = PrepareOptions {
        extra_recipients: list[..MAX_RECIPIENTS].to_vec(),
        ..opts()
    };
    assert_eq!(ok("", &o).recipients.len(), MAX_RECIPIENTS);
    let o = PrepareOptions {
        extra_recipients: list.clone(),
        ..opts()
    };
    assert_eq!(prepare(b"", &o), Err(MessageError::TooManyRecipients));
    // In one To: header too.
    let input = format!("To: {}\n\n", list.join(",\n "));
    assert_eq!(
        prepare(input.as_bytes(), &t_opts()),
        Err(MessageError::TooManyRecipients)
    );
}

#[test]
fn caller_parameters_are_checked() {
    for (o, what) in [
        (
            PrepareOptions {
                date: "x\r\nBcc: y".into(),
                ..opts()
            },
            "date",
        ),
        (
            PrepareOptions {
                date: String::new(),
                ..opts()
            },
            "date",
        ),
        (
            PrepareOptions {
                message_id: "abc@x".into(),
                ..opts()
            },
            "message_id",
        ),
        (
            PrepareOptions {
                message_id: "<a b@x>".into(),
                ..opts()
            },
            "message_id",
        ),
        (
            PrepareOptions {
                hostname: "host\n".into(),
                ..opts()
            },
            "hostname",
        ),
        (
            PrepareOptions {
                hostname: String::new(),
                ..opts()
            },
            "hostname",
        ),
    ] {
        let e = prepare(b"", &o).unwrap_err();
        assert_eq!(e, MessageError::BadParameter(what));
        assert_eq!(e.exit_code(), crate::sysexits::EX_SOFTWARE);
    }
}

#[test]
fn eight_bit_is_reported() {
    assert!(!ok("Subject: s\n\nplain\n", &opts()).eight_bit);
    assert!(ok("Subject: s\n\ncaf\u{e9}\n", &opts()).eight_bit);
    // Not UTF-8 at all is still content.
    let p = prepare(b"Subject: s\n\n\xff\xfe\n", &opts()).unwrap();
    assert!(p.eight_bit);
    assert!(p.message.ends_with(b"\r\n\r\n\xff\xfe\r\n"));
}

#[test]
fn hostile_inputs_stay_linear() {
    let o = PrepareOptions {
        max_size: 16 << 20,
        ..t_opts()
    };
    // Deeply nested comments spread over continuation lines.
    let mut input = String::from("To: a@x.org ");
    for _ in 0..1000 {
        input.push_str(&"(".repeat(900));
        input.push_str("\n ");
    }
    input.push_str("\n\n");
    assert!(matches!(
        prepare(input.as_bytes(), &o),
        Err(MessageError::BadAddressList {
            source: AddressListError::UnterminatedComment,
            ..
        })
    ));
    // Millions of tiny lines.
    let body = "\n".repeat(8 << 20);
    let o = PrepareOptions {
        extra_recipients: vec!["a@x.org".into()],
        ..o
    };
    let p = prepare(body.as_bytes(), &o).unwrap();
    let added = "From: joe@host.example\r\nDate: Tue, 2 Jan 2024 10:00:00 +0100\r\n\
                 Message-ID: <abc.1@host.example>\r\n";
    assert_eq!(p.message.len(), added.len() + 2 * (8 << 20));
    assert!(p.message.starts_with(added.as_bytes()));
}
