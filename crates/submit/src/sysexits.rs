//! The exit codes of sysexits.h, which sendmail's callers interpret (cron,
//! MUAs, PHP's `mail()` and friends tell a temporary failure, 75, from a
//! permanent one).

/// Success.
pub const EX_OK: u8 = 0;
/// The command was used incorrectly (bad option, missing argument).
pub const EX_USAGE: u8 = 64;
/// The input data was incorrect in some way.
pub const EX_DATAERR: u8 = 65;
/// An input file did not exist or was not readable.
pub const EX_NOINPUT: u8 = 66;
/// The user specified did not exist.
pub const EX_NOUSER: u8 = 67;
/// The host specified did not exist.
pub const EX_NOHOST: u8 = 68;
/// A service is unavailable.
pub const EX_UNAVAILABLE: u8 = 69;
/// An internal software error.
pub const EX_SOFTWARE: u8 = 70;
/// An operating system error (cannot fork, ...).
pub const EX_OSERR: u8 = 71;
/// A (user specified) output file cannot be created.
pub const EX_CANTCREAT: u8 = 73;
/// An error occurred while doing I/O on some file.
pub const EX_IOERR: u8 = 74;
/// Temporary failure: the caller is invited to retry later.
pub const EX_TEMPFAIL: u8 = 75;
/// Insufficient permission.
pub const EX_NOPERM: u8 = 77;
/// Something was found in an unconfigured or misconfigured state.
pub const EX_CONFIG: u8 = 78;
