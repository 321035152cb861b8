//! SASL PLAIN (RFC 4616) and LOGIN as SMTP AUTH carries them (RFC 4954):
//! base64 on the wire, decoded strictly. Pure functions, fuzzed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Longest user name accepted.
pub const MAX_USER: usize = 255;
/// Longest password accepted.
pub const MAX_PASSWORD: usize = 1024;
/// The LOGIN prompts: "Username:" and "Password:" in base64.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASS_PROMPT: &str = "UGFzc3dvcmQ6";

/// A user name and password the client gave.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log line, even a debug one.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    BadBase64,
    #[error("malformed PLAIN message")]
    Malformed,
    #[error("empty user name or password")]
    Empty,
    #[error("CR, LF or NUL in a user name or password")]
    ForbiddenChar,
    #[error("authorization identity differs from the user")]
    AuthzidMismatch,
    #[error("user name is not UTF-8")]
    NotUtf8,
    #[error("user name or password too long")]
    TooLong,
}

fn decode_b64(b64: &[u8]) -> Result<Vec<u8>, SaslError> {
    // Longer input cannot decode to anything we would accept.
    if b64.len() > 4 * (MAX_USER + MAX_PASSWORD + 8) / 3 + 4 {
        return Err(SaslError::TooLong);
    }
    STANDARD.decode(b64).map_err(|_| SaslError::BadBase64)
}

fn check_chars(part: &[u8]) -> Result<(), SaslError> {
    if part.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(SaslError::ForbiddenChar);
    }
    Ok(())
}

fn user_name(raw: &[u8]) -> Result<String, SaslError> {
    if raw.is_empty() {
        return Err(SaslError::Empty);
    }
    if raw.len() > MAX_USER {
        return Err(SaslError::TooLong);
    }
    check_chars(raw)?;
    String::from_utf8(raw.to_vec()).map_err(|_| SaslError::NotUtf8)
}

fn password(raw: &[u8]) -> Result<Vec<u8>, SaslError> {
    if raw.is_empty() {
        return Err(SaslError::Empty);
    }
    if raw.len() > MAX_PASSWORD {
        return Err(SaslError::TooLong);
    }
    check_chars(raw)?;
    Ok(raw.to_vec())
}

/// `authzid NUL authcid NUL passwd`; the authzid must be empty or the user.
pub fn decode_plain(b64: &[u8]) -> Result<Credentials, SaslError> {
    let raw = decode_b64(b64)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let user = user_name(authcid)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials {
        user,
        password: password(pass)?,
    })
}

/// The user name line of LOGIN.
pub fn decode_login_user(b64: &[u8]) -> Result<String, SaslError> {
    user_name(&decode_b64(b64)?)
}

/// The password line of LOGIN.
pub fn decode_login_password(b64: &[u8]) -> Result<Vec<u8>, SaslError> {
    password(&decode_b64(b64)?)
}

/// The PLAIN initial response a client sends (empty authzid).
pub fn encode_plain(user: &str, password: &[u8]) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password);
    STANDARD.encode(raw)
}

pub fn encode_b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> Vec<u8> {
        STANDARD.encode(s).into_bytes()
    }

    #[test]
    fn plain_round_trip_and_authzid() {
        let c = decode_plain(encode_plain("joe", b"p w \xc3\xa9").as_bytes()).unwrap();
        assert_eq!(c.user, "joe");
        assert_eq!(c.password, b"p w \xc3\xa9");
        assert!(decode_plain(&b64(b"joe\0joe\0pw")).is_ok());
        assert_eq!(
            decode_plain(&b64(b"root\0joe\0pw")),
            Err(SaslError::AuthzidMismatch)
        );
    }

    #[test]
    fn plain_refusals() {
        assert_eq!(decode_plain(b"%%%"), Err(SaslError::BadBase64));
        assert_eq!(decode_plain(b"am9l"), Err(SaslError::Malformed));
        assert_eq!(
            decode_plain(&b64(b"\0joe\0pw\0x")),
            Err(SaslError::Malformed)
        );
        assert_eq!(decode_plain(&b64(b"\0\0pw")), Err(SaslError::Empty));
        assert_eq!(decode_plain(&b64(b"\0joe\0")), Err(SaslError::Empty));
        assert_eq!(
            decode_plain(&b64(b"\0jo\re\0pw")),
            Err(SaslError::ForbiddenChar)
        );
        assert_eq!(
            decode_plain(&b64(b"\0joe\0p\nw")),
            Err(SaslError::ForbiddenChar)
        );
        assert_eq!(decode_plain(&b64(b"\0\xff\0pw")), Err(SaslError::NotUtf8));
        let long = [b'a'; MAX_USER + 1];
        let mut raw = vec![0];
        raw.extend_from_slice(&long);
        raw.extend_from_slice(b"\0pw");
        assert_eq!(decode_plain(&b64(&raw)), Err(SaslError::TooLong));
        assert_eq!(decode_plain(&[b'A'; 8000]), Err(SaslError::TooLong));
    }

    #[test]
    fn login_fields() {
        assert_eq!(decode_login_user(&b64(b"joe")).unwrap(), "joe");
        assert_eq!(decode_login_password(&b64(b"secret")).unwrap(), b"secret");
        assert_eq!(decode_login_user(b""), Err(SaslError::Empty));
        assert_eq!(
            decode_login_password(&b64(b"a\0b")),
            Err(SaslError::ForbiddenChar)
        );
        assert_eq!(decode_login_user(&b64(b"Username:")).unwrap(), "Username:");
        assert_eq!(
            String::from_utf8(STANDARD.decode(LOGIN_PASS_PROMPT).unwrap()).unwrap(),
            "Password:"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials {
            user: "joe".into(),
            password: b"hunter2".to_vec(),
        };
        let s = format!("{c:?}");
        assert!(s.contains("joe") && !s.contains("hunter2"), "{s}");
    }
}
