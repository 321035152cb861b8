//! The client's SASL data for AUTH PLAIN (RFC 4616) and AUTH LOGIN, as
//! SMTP carries them (RFC 4954): base64, decoded strictly. Pure functions,
//! fuzzed (fuzz target `auth_sasl`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Longest user name accepted.
pub const MAX_USER_LEN: usize = 255;
/// Longest password accepted.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// "Username:" in base64, the first AUTH LOGIN prompt.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// "Password:" in base64, the second AUTH LOGIN prompt.
pub const LOGIN_PASS_PROMPT: &str = "UGFzc3dvcmQ6";

/// Longest decoded PLAIN message: authzid (equal to the user), user,
/// password and two NULs.
const MAX_DECODED: usize = 2 * MAX_USER_LEN + MAX_PASSWORD_LEN + 2;
/// Longest base64 text worth decoding; refusing longer input up front
/// bounds the allocation.
const MAX_ENCODED: usize = MAX_DECODED.div_ceil(3) * 4;

/// A user name and password a client sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    // A password must never reach a log, not even a debug one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &format_args!("<redacted>"))
            .finish()
    }
}

/// Why the client's SASL data is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    BadBase64,
    #[error("malformed PLAIN message (needs authzid NUL authcid NUL passwd)")]
    Malformed,
    #[error("empty user name or password")]
    Empty,
    #[error("NUL, CR or LF in a user name or password")]
    ForbiddenChar,
    #[error("authorization identity differs from the authentication identity")]
    AuthzidMismatch,
    #[error("user name is not UTF-8")]
    NotUtf8,
    #[error("user name or password too long")]
    TooLong,
}

/// Decode an AUTH PLAIN response: `authzid NUL authcid NUL passwd`.
///
/// The authzid must be empty or the authcid: we do not let one user act
/// as another.
pub fn decode_plain(b64: &[u8]) -> Result<Credentials, SaslError> {
    let raw = decode_b64(b64)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let user = user_field(authcid)?;
    check_password(password)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials {
        user,
        password: password.to_vec(),
    })
}

/// Decode one AUTH LOGIN line (user name or password): not empty, no NUL,
/// CR or LF, at most [`MAX_PASSWORD_LEN`] bytes. For the user name line,
/// [`decode_login_user`] also checks UTF-8 and the user length.
pub fn decode_login_field(b64: &[u8]) -> Result<Vec<u8>, SaslError> {
    let raw = decode_b64(b64)?;
    check_password(&raw)?;
    Ok(raw)
}

/// Decode the AUTH LOGIN user name line.
pub fn decode_login_user(b64: &[u8]) -> Result<String, SaslError> {
    user_field(&decode_b64(b64)?)
}

/// The AUTH PLAIN response a client sends (empty authzid).
pub fn encode_plain(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    STANDARD.encode(raw)
}

/// Base64 (RFC 4648, padded), e.g. for the AUTH LOGIN answers.
pub fn encode_b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn decode_b64(b64: &[u8]) -> Result<Vec<u8>, SaslError> {
    // RFC 4954: a lone "=" is an empty response.
    if b64 == b"=" {
        return Ok(Vec::new());
    }
    if b64.len() > MAX_ENCODED {
        return Err(SaslError::TooLong);
    }
    // STANDARD requires canonical padding and no stray trailing bits.
    STANDARD.decode(b64).map_err(|_| SaslError::BadBase64)
}

fn check_chars(part: &[u8]) -> Result<(), SaslError> {
    if part.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(SaslError::ForbiddenChar);
    }
    Ok(())
}

fn user_field(raw: &[u8]) -> Result<String, SaslError> {
    if raw.is_empty() {
        return Err(SaslError::Empty);
    }
    if raw.len() > MAX_USER_LEN {
        return Err(SaslError::TooLong);
    }
    check_chars(raw)?;
    String::from_utf8(raw.to_vec()).map_err(|_| SaslError::NotUtf8)
}

fn check_password(raw: &[u8]) -> Result<(), SaslError> {
    if raw.is_empty() {
        return Err(SaslError::Empty);
    }
    if raw.len() > MAX_PASSWORD_LEN {
        return Err(SaslError::TooLong);
    }
    check_chars(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(raw: &[u8]) -> Vec<u8> {
        encode_b64(raw).into_bytes()
    }

    #[test]
    fn plain_round_trip() {
        let c = decode_plain(encode_plain("joe", "pass word é").as_bytes()).unwrap();
        assert_eq!(c.user, "joe");
        assert_eq!(c.password, "pass word é".as_bytes());
        // The RFC 4616 example.
        let c = decode_plain(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm").unwrap();
        assert_eq!(c.user, "tim");
        assert_eq!(c.password, b"tanstaaftanstaaf");
    }

    #[test]
    fn plain_authzid_equal_to_user_is_accepted() {
        let c = decode_plain(&b64(b"joe\0joe\0pw")).unwrap();
        assert_eq!(c.user, "joe");
        assert_eq!(
            decode_plain(&b64(b"root\0joe\0pw")),
            Err(SaslError::AuthzidMismatch)
        );
        assert_eq!(
            decode_plain(&b64(b"Joe\0joe\0pw")),
            Err(SaslError::AuthzidMismatch)
        );
    }

    #[test]
    fn plain_utf8_user_and_raw_password() {
        let c = decode_plain(&b64("\0jöe\0pàss wörd".as_bytes())).unwrap();
        assert_eq!(c.user, "jöe");
        assert_eq!(c.password, "pàss wörd".as_bytes());
        // Passwords are bytes: not every client sends UTF-8.
        let c = decode_plain(&b64(b"\0joe\0\xe9t\xe9")).unwrap();
        assert_eq!(c.password, b"\xe9t\xe9");
    }

    #[test]
    fn plain_refusals() {
        use SaslError::*;
        assert_eq!(decode_plain(b"%%%%"), Err(BadBase64));
        assert_eq!(
            decode_plain(b"AGpvZQBwdw"),
            Err(BadBase64),
            "padding required"
        );
        assert_eq!(decode_plain(b"AGpvZQBwdw= ="), Err(BadBase64));
        assert_eq!(decode_plain(b" AGpvZQBwdw=="), Err(BadBase64));
        assert_eq!(
            decode_plain(b"AGpvZQBwdx=="),
            Err(BadBase64),
            "trailing bits"
        );
        assert_eq!(decode_plain(b"AGpvZQBwdw=="), Ok(cred("joe", b"pw")));
        assert_eq!(decode_plain(b""), Err(Malformed));
        assert_eq!(decode_plain(b"="), Err(Malformed));
        assert_eq!(decode_plain(&b64(b"joe")), Err(Malformed));
        assert_eq!(decode_plain(&b64(b"\0joe")), Err(Malformed));
        assert_eq!(decode_plain(&b64(b"\0joe\0pw\0")), Err(Malformed));
        assert_eq!(decode_plain(&b64(b"\0joe\0p\0w")), Err(Malformed));
        assert_eq!(decode_plain(&b64(b"\0\0pw")), Err(Empty));
        assert_eq!(decode_plain(&b64(b"\0joe\0")), Err(Empty));
        assert_eq!(decode_plain(&b64(b"\0jo\re\0pw")), Err(ForbiddenChar));
        assert_eq!(decode_plain(&b64(b"\0joe\0p\nw")), Err(ForbiddenChar));
        assert_eq!(decode_plain(&b64(b"\0joe\0pw\r")), Err(ForbiddenChar));
        assert_eq!(decode_plain(&b64(b"\0j\xffe\0pw")), Err(NotUtf8));
        let mut long_user = vec![0];
        long_user.extend_from_slice(&[b'a'; MAX_USER_LEN + 1]);
        long_user.extend_from_slice(b"\0pw");
        assert_eq!(decode_plain(&b64(&long_user)), Err(TooLong));
        let mut long_pw = b"\0joe\0".to_vec();
        long_pw.extend_from_slice(&[b'p'; MAX_PASSWORD_LEN + 1]);
        assert_eq!(decode_plain(&b64(&long_pw)), Err(TooLong));
        assert_eq!(decode_plain(&[b'A'; 10_000]), Err(TooLong));
    }

    #[test]
    fn plain_limits_are_inclusive() {
        let user = "u".repeat(MAX_USER_LEN);
        let pw = "p".repeat(MAX_PASSWORD_LEN);
        let mut raw = user.clone().into_bytes();
        raw.push(0);
        raw.extend_from_slice(user.as_bytes());
        raw.push(0);
        raw.extend_from_slice(pw.as_bytes());
        let c = decode_plain(&b64(&raw)).unwrap();
        assert_eq!(
            (c.user.len(), c.password.len()),
            (MAX_USER_LEN, MAX_PASSWORD_LEN)
        );
    }

    #[test]
    fn login_fields() {
        use SaslError::*;
        assert_eq!(decode_login_field(&b64(b"joe")).unwrap(), b"joe");
        assert_eq!(
            decode_login_field(&b64(b"my pass \xc3\xa9")).unwrap(),
            "my pass é".as_bytes()
        );
        assert_eq!(decode_login_user(&b64("jöe".as_bytes())).unwrap(), "jöe");
        assert_eq!(decode_login_field(b""), Err(Empty));
        assert_eq!(decode_login_field(b"="), Err(Empty));
        assert_eq!(decode_login_user(b""), Err(Empty));
        assert_eq!(decode_login_field(b"am9l!"), Err(BadBase64));
        assert_eq!(decode_login_field(b"am9"), Err(BadBase64));
        assert_eq!(decode_login_field(&b64(b"a\0b")), Err(ForbiddenChar));
        assert_eq!(decode_login_field(&b64(b"ab\r")), Err(ForbiddenChar));
        assert_eq!(decode_login_field(&b64(b"\nab")), Err(ForbiddenChar));
        assert_eq!(decode_login_user(&b64(b"\xffjoe")), Err(NotUtf8));
        assert_eq!(
            decode_login_user(&b64(&[b'u'; MAX_USER_LEN + 1])),
            Err(TooLong)
        );
        assert_eq!(
            decode_login_field(&b64(&[b'p'; MAX_PASSWORD_LEN + 1])),
            Err(TooLong)
        );
    }

    #[test]
    fn prompts_and_client_side() {
        assert_eq!(encode_b64(b"Username:"), LOGIN_USER_PROMPT);
        assert_eq!(encode_b64(b"Password:"), LOGIN_PASS_PROMPT);
        assert_eq!(
            encode_plain("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = cred("joe", b"hunter2");
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            r#"Credentials { user: "joe", password: <redacted> }"#
        );
        assert!(!format!("{c:#?}").contains("hunter2"));
    }

    fn cred(user: &str, password: &[u8]) -> Credentials {
        Credentials {
            user: user.to_owned(),
            password: password.to_vec(),
        }
    }
}
