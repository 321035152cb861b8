#![no_main]
//! sendmail's message preparation on arbitrary input, with the flags taken
//! from the first byte: it must return, never panic, and what it accepts
//! must be a clean message (CRLF lines of at most 998 octets, no NUL, no
//! Bcc: header under -t) with at least one qualified recipient.
use libfuzzer_sys::fuzz_target;
use rsmtpd_submit::{PrepareOptions, is_plausible_address, prepare};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let read_recipients = flags & 2 != 0;
    let opts = PrepareOptions {
        ignore_dots: flags & 1 != 0,
        read_recipients,
        extra_recipients: match flags & 12 {
            0 => vec![],
            4 => vec!["bob@example.org".into()],
            8 => vec!["Carl <carl@example.org>, dan".into()],
            _ => vec!["bob@example.org".into(), "joe".into()],
        },
        sender: if flags & 16 != 0 {
            "joe".into()
        } else {
            String::new()
        },
        full_name: match flags & 96 {
            0 => None,
            32 => Some("Joe \"Q\" \\ Public".into()),
            64 => Some("J\u{f6}rg M\u{fc}ller".into()),
            _ => Some(String::new()),
        },
        hostname: "host.example.org".into(),
        date: "Mon, 1 Jan 2024 00:00:00 +0000".into(),
        message_id: "<fuzz.1@host.example.org>".into(),
        max_size: if flags & 128 != 0 { 256 } else { 1 << 20 },
    };
    let Ok(p) = prepare(input, &opts) else {
        return;
    };
    let m = &p.message;
    assert!(m.ends_with(b"\r\n"));
    assert!(!m.contains(&0));
    for (i, &b) in m.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR"),
            b'\n' => assert_eq!(
                i.checked_sub(1).and_then(|j| m.get(j)),
                Some(&b'\r'),
                "bare LF"
            ),
            _ => {}
        }
    }
    let mut in_header = true;
    for line in m.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= 998);
        if line.is_empty() {
            in_header = false;
        }
        if in_header && read_recipients {
            assert!(
                !line
                    .get(..4)
                    .is_some_and(|n| n.eq_ignore_ascii_case(b"bcc:"))
            );
        }
    }
    // The output starts with a header field.
    assert!(
        m.first()
            .is_some_and(|&b| b != b' ' && b != b'\t' && b != b'\r')
    );
    assert!(!p.recipients.is_empty());
    for r in &p.recipients {
        assert!(is_plausible_address(r) && r.contains('@'), "{r:?}");
    }
    assert_eq!(p.eight_bit, !m.is_ascii());
});
