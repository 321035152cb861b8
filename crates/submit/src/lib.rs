//! Local submission, the `sendmail` personality of the rsmtpd binary: the
//! parts that need no I/O, so that they can be tested and fuzzed alone.
//!
//! Who calls what:
//!
//! - The binary, started as `sendmail` (or `mailq`, `newaliases`), hands
//!   its arguments to [`parse_args`] and gets an [`Invocation`]. Errors carry
//!   their sysexits(3) code ([`ArgsError::exit_code`], [`sysexits`]), which
//!   is what programs calling sendmail look at.
//! - It reads standard input, resolves the envelope sender (`-f`, else the
//!   user's `login@hostname`), takes the clock and makes a Message-ID, and
//!   calls [`prepare`]: line ends normalised to CRLF, the `.` line and `-i`,
//!   the header block checked, `From:`/`Date:`/`Message-ID:` added when
//!   missing, recipients taken from the command line and (with `-t`) from
//!   `To:`/`Cc:`/`Bcc:`, `Bcc:` removed under `-t`. The result is not
//!   dot-stuffed: the SMTP client of rsmtpd-smtp-proto does that on the wire.
//! - It submits the [`Prepared`] message to the running daemon over its
//!   local socket. When the daemon is down, it writes an offline file
//!   ([`offline::encode`]) into the world-writable, sticky offline folder.
//! - The daemon, at start-up and as root, reads each offline file
//!   ([`offline::decode`]) and submits it again as the file's owner.
//!
//! Why the offline reader is strict: any local user can put a file in the
//! offline folder, and a privileged process parses it. So
//! [`offline::decode`] accepts exactly one spelling of each valid
//! submission (the one [`offline::encode`] writes): exact magic and
//! version, known keys in a fixed order, each at most once (`rcpt` excepted),
//! every value bounded and free of control characters, the message made of
//! CRLF lines, the whole file at most [`offline::MAX_OFFLINE_FILE`]. It never
//! panics, and its time and memory are linear in the file's size. It does not
//! and cannot establish who wrote the file: that is the file's owner, which
//! the daemon learns from `fstat` on the descriptor it opened (see
//! [`offline`]).

pub mod address;
pub mod args;
pub mod message;
pub mod offline;
pub mod sysexits;

pub use address::{
    AddressListError, MAX_ADDRESS_OCTETS, is_plausible_address, is_qualified_address,
    parse_address_list,
};
pub use args::{ArgsError, Invocation, Mode, parse_args};
pub use message::{MessageError, PrepareOptions, Prepared, prepare};
pub use offline::{MAX_OFFLINE_FILE, OfflineError, OfflineSubmission};

/// At most this many recipients in one submission (command line and
/// headers together, after removing duplicates), and in an offline file.
pub const MAX_RECIPIENTS: usize = 1000;

/// What a DSN returns of the message (`-R`, SMTP `RET=`, RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Its headers only.
    Hdrs,
}

impl Ret {
    /// `full` or `hdrs`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("full") {
            Some(Ret::Full)
        } else if s.eq_ignore_ascii_case("hdrs") {
            Some(Ret::Hdrs)
        } else {
            None
        }
    }

    /// The lower-case spelling (`full`, `hdrs`), as in the offline file.
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "full",
            Ret::Hdrs => "hdrs",
        }
    }

    /// The value of the SMTP `RET=` parameter (`FULL`, `HDRS`).
    pub fn as_smtp(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// RFC 3461 4.1 `NOTIFY`: `never`, or a comma-separated list of `success`,
/// `failure` and `delay` (any case, no spaces, no empty item). Returns the
/// canonical SMTP form: upper case, duplicates dropped, first-seen order
/// (`"NEVER"`, `"SUCCESS,FAILURE"`); `None` when invalid.
pub fn normalize_notify(s: &str) -> Option<String> {
    if s.eq_ignore_ascii_case("never") {
        return Some("NEVER".to_owned());
    }
    let mut seen: Vec<&'static str> = Vec::with_capacity(3);
    for item in s.split(',') {
        let canon = ["SUCCESS", "FAILURE", "DELAY"]
            .into_iter()
            .find(|k| item.eq_ignore_ascii_case(k))?;
        if !seen.contains(&canon) {
            seen.push(canon);
        }
    }
    Some(seen.join(","))
}

/// RFC 3461 4.4 `ENVID` before xtext encoding: printable US-ASCII (space
/// included), 1 to [`MAX_ENVID_OCTETS`] octets.
pub fn is_valid_envid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ENVID_OCTETS && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// RFC 3461 4.4: an ENVID is at most 100 characters.
pub const MAX_ENVID_OCTETS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_forms() {
        assert_eq!(normalize_notify("never").as_deref(), Some("NEVER"));
        assert_eq!(normalize_notify("NEVER").as_deref(), Some("NEVER"));
        assert_eq!(
            normalize_notify("success,Failure,delay").as_deref(),
            Some("SUCCESS,FAILURE,DELAY")
        );
        assert_eq!(
            normalize_notify("delay,success,delay").as_deref(),
            Some("DELAY,SUCCESS")
        );
        for bad in [
            "",
            ",",
            "success,",
            "never,success",
            "success, failure",
            "x",
        ] {
            assert_eq!(normalize_notify(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ret_forms() {
        assert_eq!(Ret::parse("FULL"), Some(Ret::Full));
        assert_eq!(Ret::parse("hdrs"), Some(Ret::Hdrs));
        assert_eq!(Ret::parse("headers"), None);
        assert_eq!(Ret::Hdrs.as_smtp(), "HDRS");
        assert_eq!(Ret::Full.as_str(), "full");
    }

    #[test]
    fn envid_bounds() {
        assert!(is_valid_envid("abc 123+x"));
        assert!(is_valid_envid(&"a".repeat(100)));
        assert!(!is_valid_envid(&"a".repeat(101)));
        assert!(!is_valid_envid(""));
        assert!(!is_valid_envid("a\tb"));
        assert!(!is_valid_envid("caf\u{e9}"));
    }
}
