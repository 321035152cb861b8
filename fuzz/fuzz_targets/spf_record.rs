#![no_main]
//! SPF records as DNS returns them (anyone's TXT record): no panic, and
//! every term the walk would follow is non-empty and free of spaces.

use libfuzzer_sys::fuzz_target;
use rsmtpd_mta::spf::{MAX_RECORD, Term, parse_record};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(terms) = parse_record(&text) {
        assert!(text.len() <= MAX_RECORD);
        for t in terms {
            let s = match &t {
                Term::Net(s) | Term::Include(s) | Term::Redirect(s) => s.as_str(),
                Term::A(d) | Term::Mx(d) => d.as_deref().unwrap_or("x"),
            };
            assert!(!s.is_empty() && !s.contains(char::is_whitespace), "{t:?}");
        }
    }
});
