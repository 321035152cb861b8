//! Helpers shared by the tests of several crates.

use std::path::PathBuf;

/// OpenSMTPD's reference material (man pages, example configs and tables):
/// `$RSMTPD_REFERENCE_DIR`, or `shared/reference/opensmtpd` beside the
/// checkout. Panics with a clear message when it is missing: the tests that
/// use it must not pass vacuously.
pub fn reference_dir() -> PathBuf {
    let dir = match std::env::var_os("RSMTPD_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/opensmtpd")
        }
    };
    assert!(
        dir.join("examples").is_dir(),
        "OpenSMTPD reference material not found at {} (set RSMTPD_REFERENCE_DIR)",
        dir.display()
    );
    dir
}

/// A fresh, empty directory for one test, under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsmtpd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub mod certs;
pub mod daemon;
pub mod dns;
pub mod examples;
pub mod load;
pub mod sink;
