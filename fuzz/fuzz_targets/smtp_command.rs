#![no_main]
//! One command line, then the address and xtext parsers on the same bytes.
use libfuzzer_sys::fuzz_target;
use rsmtpd_smtp_proto::address::{Charset, ForwardPath, ReversePath, XText, split_path};
use rsmtpd_smtp_proto::command::Command;

/// What a validated path may never contain.
fn assert_clean(shown: &str) {
    assert!(
        !shown.chars().any(|c| c.is_control() || c == ' '),
        "unsafe character in {shown:?}"
    );
}

/// A reply is one or more CRLF lines of printable ASCII, 512 octets at most each.
fn assert_reply(wire: &[u8]) {
    assert!(wire.ends_with(b"\r\n"));
    for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() < 512);
        let text = line.strip_suffix(b"\r").expect("CRLF");
        assert!(text.iter().all(|&b| (0x20..0x7f).contains(&b)));
    }
}

fuzz_target!(|data: &[u8]| {
    for cs in [Charset::Ascii, Charset::Utf8] {
        match Command::parse(data, cs) {
            Ok(Command::Mail { from, params }) => {
                assert_clean(&from.to_string());
                if let Some(e) = params.envid {
                    assert_clean(e.as_str());
                }
            }
            Ok(Command::Rcpt { to, params }) => {
                assert_clean(&to.to_string());
                if let Some(o) = params.orcpt {
                    assert_clean(o.address.as_str());
                }
            }
            Ok(Command::Helo(d) | Command::Ehlo(d)) => assert_clean(&d.to_string()),
            Ok(_) => {}
            Err(e) => assert_reply(&e.reply().to_wire()),
        }
        if let Ok(p) = ReversePath::parse(data, cs) {
            let shown = p.to_string();
            assert_clean(&shown);
            // The canonical form parses back to the same path.
            assert_eq!(ReversePath::parse(shown.as_bytes(), cs), Ok(p));
        }
        if let Ok(p) = ForwardPath::parse(data, cs) {
            let shown = p.to_string();
            assert_clean(&shown);
            assert_eq!(ForwardPath::parse(shown.as_bytes(), cs), Ok(p));
        }
    }
    if let Ok((path, rest)) = split_path(data) {
        assert_eq!(path.len() + rest.len(), data.len());
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(x) = XText::parse(s)
    {
        assert_clean(x.as_str());
        assert_eq!(XText::encode(&x.decode()).decode(), x.decode());
    }
    assert_eq!(XText::encode(data).decode(), data);
});
