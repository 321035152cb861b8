//! Password checking for SMTP AUTH, as OpenSMTPD does it.
//!
//! What is checked where, and why:
//!
//! - The SMTP process only decodes what the client sent (the smtp-proto
//!   crate's `sasl` module): it never sees a stored hash.
//! - `listen on ... auth <table>`: the lookup process, which owns the
//!   tables, fetches the user's value (a crypt(3) hash made by
//!   `smtpctl encrypt`, see [`hash::encrypt`]) and checks it with
//!   [`credentials::check_table_entry`]. No privilege needed.
//! - `listen on ... auth` without a table: system accounts. /etc/shadow is
//!   readable by root only, so the privileged parent process checks them
//!   with [`system::check_system_password`], and answers yes or no: the
//!   hash never leaves it.
//!
//! Hashes: sha512-crypt, sha256-crypt and bcrypt are checked; other
//! schemes (yescrypt, md5-crypt, DES, ...) are reported by name so an
//! admin can re-hash with `smtpctl encrypt`. The work a stored hash may
//! demand is bounded ([`CostLimits`]) so a bad table cannot stall a
//! process.

pub mod credentials;
pub mod hash;
pub mod system;

pub use credentials::check_table_entry;
pub use hash::{CostLimits, HashError, encrypt, verify, verify_with_limits};
pub use system::{SystemError, check_system_password, shadow_hash, shadow_hash_in};
