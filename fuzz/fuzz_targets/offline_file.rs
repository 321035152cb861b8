#![no_main]
//! Arbitrary bytes into the offline file reader: it must return, never
//! panic, and whatever it accepts must survive encode -> decode unchanged,
//! the encoding being the very bytes read (one spelling per submission).
//!
//! Random bytes almost never start with the magic line, which would leave
//! the key parser unexercised; so the input is also tried after a valid
//! start.
use libfuzzer_sys::fuzz_target;
use rsmtpd_submit::offline::{decode, encode};

fn check(data: &[u8]) {
    if let Ok(sub) = decode(data) {
        let bytes = match encode(&sub) {
            Ok(b) => b,
            Err(e) => panic!("decoded submission does not encode: {e:?}"),
        };
        assert_eq!(bytes, data);
        assert_eq!(decode(&bytes).as_ref(), Ok(&sub));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = b"rsmtpd-offline 1\nfrom a@example.org\n".to_vec();
    framed.extend_from_slice(data);
    check(&framed);
});
