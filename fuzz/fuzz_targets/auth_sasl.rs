#![no_main]
//! SASL PLAIN and LOGIN decoding on arbitrary bytes, then an arbitrary
//! password checked against an arbitrary hash string.
use libfuzzer_sys::fuzz_target;
use rsmtpd_auth::hash::{self, CostLimits};
use rsmtpd_smtp_proto::sasl;

/// Small bounds so one input stays in milliseconds; the default 5000
/// sha-crypt rounds and the minimum bcrypt cost are still reached.
const LIMITS: CostLimits = CostLimits {
    max_sha_rounds: 5_000,
    max_bcrypt_cost: 4,
};

/// What an accepted user name or password may never contain.
fn assert_clean(part: &[u8]) {
    assert!(!part.is_empty());
    assert!(!part.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = sasl::decode_plain(data) {
        assert_clean(c.user.as_bytes());
        assert_clean(&c.password);
        assert!(c.user.len() <= sasl::MAX_USER);
        assert!(c.password.len() <= sasl::MAX_PASSWORD);
        assert!(format!("{c:?}").contains("<redacted>"));
        let again = sasl::decode_plain(sasl::encode_plain(&c.user, &c.password).as_bytes());
        assert_eq!(again, Ok(c));
    }
    if let Ok(field) = sasl::decode_login_password(data) {
        assert_clean(&field);
        // Strict base64: only the canonical encoding decodes.
        assert_eq!(sasl::encode_b64(&field).as_bytes(), data);
    }
    if let Ok(user) = sasl::decode_login_user(data) {
        assert_clean(user.as_bytes());
        assert!(user.len() <= sasl::MAX_USER);
    }

    // The first byte says how much of the rest is the password.
    if let Some((&n, rest)) = data.split_first() {
        let (password, stored) = rest.split_at(usize::from(n).min(rest.len()));
        let stored = String::from_utf8_lossy(stored);
        let result = hash::verify_with_limits(password, &stored, LIMITS);
        if stored.is_empty() || stored.starts_with(['*', '!']) {
            assert!(matches!(result, Ok(false)), "locked entry: {result:?}");
        }
        if matches!(result, Ok(true)) {
            assert!(!password.contains(&0));
        }
    }
});
