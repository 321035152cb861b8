//! Credentials tables (`listen on ... auth <table>`): the table maps a user
//! name to a crypt(3) hash, made with `smtpctl encrypt`.

use crate::hash::{self, HashError};

/// Check `password` against `stored`, the table's value for the user.
///
/// Table backends hand the value over as written, so surrounding
/// whitespace (a stray space or CR in a hand-edited file) is trimmed;
/// a crypt hash never contains any.
pub fn check_table_entry(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    hash::verify(password, stored.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

    #[test]
    fn checks_the_trimmed_value() {
        assert!(check_table_entry(HELLO, b"Hello world!").unwrap());
        assert!(check_table_entry(&format!(" \t{HELLO}\r\n"), b"Hello world!").unwrap());
        assert!(!check_table_entry(HELLO, b"hello world!").unwrap());
    }

    #[test]
    fn empty_or_locked_values_never_match() {
        for v in ["", "   ", "*", "!", &format!("!{HELLO}")] {
            assert!(!check_table_entry(v, b"Hello world!").unwrap(), "{v:?}");
        }
    }

    #[test]
    fn plaintext_is_not_a_hash() {
        // A table holding a clear password must not be taken as one.
        assert!(matches!(
            check_table_entry("Hello world!", b"Hello world!"),
            Err(HashError::Malformed(_))
        ));
    }

    #[test]
    fn yescrypt_is_reported() {
        let e = check_table_entry(
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$42RgPIrXdXSEEs77lDi/4IqKVqFBAVaHJkzw5uD1r57",
            b"Hello world!",
        )
        .unwrap_err();
        assert!(e.to_string().contains("yescrypt"), "{e}");
    }
}
