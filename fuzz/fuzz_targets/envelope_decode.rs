#![no_main]
//! Arbitrary bytes into the envelope decoder: it must return, never panic,
//! and whatever it accepts must survive encode -> decode unchanged.
//!
//! Random bytes almost never carry a valid checksum, which would leave the
//! field parser unexercised; so the input is also tried as the checksummed
//! part of a file, sealed here with a correct trailer.
use libfuzzer_sys::fuzz_target;
use rsmtpd_queue::{crc32, decode, encode};

fn check(data: &[u8]) {
    if let Ok(env) = decode(data) {
        let bytes = match encode(&env) {
            Ok(b) => b,
            Err(e) => panic!("decoded envelope does not encode: {e:?}"),
        };
        assert_eq!(decode(&bytes).as_ref(), Ok(&env));
        // Encoding is canonical: a second pass gives the same bytes.
        assert_eq!(encode(&env).as_deref(), Ok(bytes.as_slice()));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(format!("checksum: {} {:08x}\nend\n", data.len(), crc32(data)).as_bytes());
    check(&sealed);
});
