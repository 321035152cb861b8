//! System accounts (`listen on ... auth` without a table): the password
//! hash from /etc/shadow, or /etc/passwd on systems without shadow.
//!
//! Only root can read /etc/shadow, so this runs in the privileged parent
//! process. Like OpenSMTPD's getpwnam() + getspnam(), a user exists when
//! /etc/passwd has a line for it, and the shadow line, when there is one,
//! holds the hash. Files only: NSS sources (LDAP, ...) are not consulted.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::hash::{self, HashError};

/// Where the hashes are.
pub const SHADOW_PATH: &str = "/etc/shadow";
/// Where the accounts are.
pub const PASSWD_PATH: &str = "/etc/passwd";

/// Largest account file read; bounds memory if one is replaced by junk.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Longest line accepted in an account file.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Checked for unknown users so that answering "no" takes about as long as
/// a real check, and does not tell which accounts exist. Hash of a random
/// password, default rounds like most sha512-crypt shadow entries.
const DUMMY_HASH: &str = "$6$wH9xRLKHeGtsURg5$8a5Z0bojX8K9f8l7lPuoOsYiNYZ5AENBXfuqjR6a2i1MVXckVPnFSzjeIyddqOAmQoGgHpfhzYqMsMbevjj6U0";

/// Why the account files could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {MAX_FILE_SIZE} bytes", path.display())]
    FileTooLarge { path: PathBuf },
    #[error("{}:{line}: line longer than {MAX_LINE_LEN} bytes", path.display())]
    LineTooLong { path: PathBuf, line: usize },
    #[error("{}:{line}: entry has no password field", path.display())]
    NoPasswordField { path: PathBuf, line: usize },
    #[error("{}:{line}: password field is not UTF-8", path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// The password hash of `user` from the system files.
///
/// `Ok(None)` when the user does not exist or has no hash at all
/// (`x`/`*` in /etc/passwd and no shadow line): either way no password
/// can match.
pub fn shadow_hash(user: &str) -> Result<Option<String>, SystemError> {
    shadow_hash_in(Path::new(SHADOW_PATH), Path::new(PASSWD_PATH), user)
}

/// [`shadow_hash`] with explicit file paths. A missing shadow file is
/// not an error (systems without shadow passwords); a missing passwd is.
pub fn shadow_hash_in(
    shadow: &Path,
    passwd: &Path,
    user: &str,
) -> Result<Option<String>, SystemError> {
    if !valid_user(user) {
        return Ok(None);
    }
    let Some(passwd_data) = read_bounded(passwd, false)? else {
        return Ok(None);
    };
    let Some(passwd_field) = find_field(&passwd_data, passwd, user)? else {
        return Ok(None);
    };
    if let Some(shadow_data) = read_bounded(shadow, true)?
        && let Some(hash) = find_field(&shadow_data, shadow, user)?
    {
        return Ok(Some(hash));
    }
    // "x": the hash is in a shadow file we do not have; "*": no login.
    if passwd_field == "x" || passwd_field == "*" {
        return Ok(None);
    }
    Ok(Some(passwd_field))
}

/// Check `password` for the system account `user`.
pub fn check_system_password(user: &str, password: &[u8]) -> Result<bool, SystemError> {
    check_system_password_in(
        Path::new(SHADOW_PATH),
        Path::new(PASSWD_PATH),
        user,
        password,
    )
}

/// [`check_system_password`] with explicit file paths.
pub fn check_system_password_in(
    shadow: &Path,
    passwd: &Path,
    user: &str,
    password: &[u8],
) -> Result<bool, SystemError> {
    match shadow_hash_in(shadow, passwd, user)? {
        Some(h) => Ok(hash::verify(password, &h)?),
        None => {
            // Same work as for a real account; the answer is no anyway.
            let _ = hash::verify(password, DUMMY_HASH);
            Ok(false)
        }
    }
}

/// Names that can never be an account: they would match a malformed line
/// or a NIS compat entry (`+name`, `-name`).
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with(['+', '-'])
        && !user.bytes().any(|b| matches!(b, b':' | b'\n' | b'\r' | 0))
}

/// The file's bytes; `None` if it does not exist and `missing_ok`.
fn read_bounded(path: &Path, missing_ok: bool) -> Result<Option<Vec<u8>>, SystemError> {
    let io_err = |source| SystemError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if missing_ok && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let too_large = || SystemError::FileTooLarge {
        path: path.to_owned(),
    };
    if file.metadata().map_err(io_err)?.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let mut data = Vec::new();
    // The file may grow between stat and read: read one byte past the cap.
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(Some(data))
}

/// The second `:`-separated field of the first line whose first field is
/// exactly `user`.
fn find_field(data: &[u8], path: &Path, user: &str) -> Result<Option<String>, SystemError> {
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        if line.len() > MAX_LINE_LEN {
            return Err(SystemError::LineTooLong {
                path: path.to_owned(),
                line: line_no,
            });
        }
        let mut fields = line.splitn(3, |&b| b == b':');
        if fields.next() != Some(user.as_bytes()) {
            continue;
        }
        let field = fields.next().ok_or_else(|| SystemError::NoPasswordField {
            path: path.to_owned(),
            line: line_no,
        })?;
        let field = std::str::from_utf8(field).map_err(|_| SystemError::NotUtf8 {
            path: path.to_owned(),
            line: line_no,
        })?;
        return Ok(Some(field.to_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    const HELLO_256: &str = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";

    /// A directory for one test's files, removed afterwards.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("rsmtpd-auth-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn passwd_text(users: &[(&str, &str)]) -> String {
        users
            .iter()
            .enumerate()
            .map(|(i, (u, f))| format!("{u}:{f}:{}:{}::/home/{u}:/bin/sh\n", 1000 + i, 1000 + i))
            .collect()
    }

    #[test]
    fn shadow_has_the_hash() {
        let d = Dir::new("shadow");
        let passwd = d.file(
            "passwd",
            &passwd_text(&[("root", "x"), ("joe", "x"), ("bob", "x")]),
        );
        let shadow = d.file(
            "shadow",
            &format!("root:*:19000:0:99999:7:::\njoe:{HELLO}:19000:0:99999:7:::\nbob:!{HELLO}:19000::::::\n"),
        );
        assert_eq!(
            shadow_hash_in(&shadow, &passwd, "joe").unwrap().as_deref(),
            Some(HELLO)
        );
        assert!(check_system_password_in(&shadow, &passwd, "joe", b"Hello world!").unwrap());
        assert!(!check_system_password_in(&shadow, &passwd, "joe", b"Hello world").unwrap());
        // Locked entries never verify.
        assert!(!check_system_password_in(&shadow, &passwd, "bob", b"Hello world!").unwrap());
        assert!(!check_system_password_in(&shadow, &passwd, "root", b"").unwrap());
        assert_eq!(shadow_hash_in(&shadow, &passwd, "nobody").unwrap(), None);
        assert!(!check_system_password_in(&shadow, &passwd, "nobody", b"Hello world!").unwrap());
    }

    #[test]
    fn prefix_names_do_not_match() {
        let d = Dir::new("prefix");
        let passwd = d.file(
            "passwd",
            &passwd_text(&[("joey", "x"), ("jo", "x"), ("joe", "x")]),
        );
        let shadow = d.file(
            "shadow",
            &format!("joey:{HELLO_256}:1::::::\njo:!:1::::::\njoe:{HELLO}:1::::::\n"),
        );
        assert_eq!(
            shadow_hash_in(&shadow, &passwd, "joe").unwrap().as_deref(),
            Some(HELLO)
        );
        assert_eq!(
            shadow_hash_in(&shadow, &passwd, "joey").unwrap().as_deref(),
            Some(HELLO_256)
        );
        assert_eq!(
            shadow_hash_in(&shadow, &passwd, "jo").unwrap().as_deref(),
            Some("!")
        );
        assert_eq!(shadow_hash_in(&shadow, &passwd, "j").unwrap(), None);
        assert_eq!(shadow_hash_in(&shadow, &passwd, "joe2").unwrap(), None);
        // Exact, case-sensitive comparison.
        assert_eq!(shadow_hash_in(&shadow, &passwd, "Joe").unwrap(), None);
    }

    #[test]
    fn odd_names_never_match() {
        let d = Dir::new("odd");
        // Lines an odd name could hit if compared carelessly.
        let passwd = d.file(
            "passwd",
            &format!(
                ":{HELLO}:0:0::/:/bin/sh\n+:{HELLO}:::::\n+joe:{HELLO}:::::\n-bob:{HELLO}:::::\n"
            ),
        );
        let shadow = d.file("shadow", "");
        for user in ["", ":", "joe:x", "\n", "a\0", "+", "+joe", "-bob", "joe\r"] {
            assert_eq!(
                shadow_hash_in(&shadow, &passwd, user).unwrap(),
                None,
                "{user:?}"
            );
        }
    }

    #[test]
    fn passwd_fallback() {
        let d = Dir::new("fallback");
        let passwd = d.file(
            "passwd",
            &passwd_text(&[("joe", HELLO), ("ann", "x"), ("bin", "*"), ("nopw", "")]),
        );
        let missing = d.0.join("no-shadow");
        assert_eq!(
            shadow_hash_in(&missing, &passwd, "joe").unwrap().as_deref(),
            Some(HELLO)
        );
        assert!(check_system_password_in(&missing, &passwd, "joe", b"Hello world!").unwrap());
        assert_eq!(shadow_hash_in(&missing, &passwd, "ann").unwrap(), None);
        assert_eq!(shadow_hash_in(&missing, &passwd, "bin").unwrap(), None);
        // An empty password field is not "any password".
        assert_eq!(
            shadow_hash_in(&missing, &passwd, "nopw")
                .unwrap()
                .as_deref(),
            Some("")
        );
        assert!(!check_system_password_in(&missing, &passwd, "nopw", b"").unwrap());
        assert!(!check_system_password_in(&missing, &passwd, "nopw", b"x").unwrap());
        // A shadow file without the user: passwd's field still counts.
        let shadow = d.file("shadow", "other:!:1::::::\n");
        assert_eq!(
            shadow_hash_in(&shadow, &passwd, "joe").unwrap().as_deref(),
            Some(HELLO)
        );
    }

    #[test]
    fn user_must_be_in_passwd() {
        let d = Dir::new("passwd-only");
        let passwd = d.file("passwd", &passwd_text(&[("joe", "x")]));
        let shadow = d.file("shadow", &format!("ghost:{HELLO}:1::::::\n"));
        assert_eq!(shadow_hash_in(&shadow, &passwd, "ghost").unwrap(), None);
        let missing = d.0.join("no-passwd");
        assert!(matches!(
            shadow_hash_in(&shadow, &missing, "joe"),
            Err(SystemError::Io { .. })
        ));
    }

    #[test]
    fn bounds_and_bad_lines() {
        let d = Dir::new("bounds");
        let passwd = d.file("passwd", &passwd_text(&[("joe", "x"), ("ann", "x")]));
        let long = format!("{}\njoe:{HELLO}:1::::::\n", "a".repeat(MAX_LINE_LEN + 1));
        let shadow = d.file("shadow", &long);
        assert!(matches!(
            shadow_hash_in(&shadow, &passwd, "joe"),
            Err(SystemError::LineTooLong { line: 1, .. })
        ));
        let shadow = d.file("shadow", "ann\njoe:x\n");
        assert!(matches!(
            shadow_hash_in(&shadow, &passwd, "ann"),
            Err(SystemError::NoPasswordField { line: 1, .. })
        ));
        let shadow = d.0.join("shadow");
        std::fs::write(&shadow, b"joe:\xff\xfe:1::::::\n").unwrap();
        assert!(matches!(
            shadow_hash_in(&shadow, &passwd, "joe"),
            Err(SystemError::NotUtf8 { line: 1, .. })
        ));
        // Over the size cap: a sparse file, so the test writes nothing.
        let big = File::create(&shadow).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap();
        assert!(matches!(
            shadow_hash_in(&shadow, &passwd, "joe"),
            Err(SystemError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn unsupported_system_hash_is_an_error() {
        let d = Dir::new("yescrypt");
        let passwd = d.file("passwd", &passwd_text(&[("joe", "x")]));
        let shadow = d.file(
            "shadow",
            "joe:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$42RgPIrXdXSEEs77lDi/4IqKVqFBAVaHJkzw5uD1r57:1::::::\n",
        );
        let e = check_system_password_in(&shadow, &passwd, "joe", b"Hello world!").unwrap_err();
        assert!(matches!(e, SystemError::Hash(HashError::Unsupported(_))));
        assert!(e.to_string().contains("yescrypt"), "{e}");
    }

    #[test]
    fn dummy_hash_is_well_formed() {
        // Unknown users must cost a real hash computation, not an error.
        assert!(!hash::verify(b"x", DUMMY_HASH).unwrap());
    }
}
