//! smtpd.conf: OpenSMTPD's configuration language, parsed into [`model::Config`].
//!
//! ```no_run
//! use rsmtpd_config::{parse_file, ParseOptions};
//! let mut opts = ParseOptions::default();
//! opts.define("lan_addr=192.168.0.1").unwrap();
//! match parse_file(std::path::Path::new("/etc/mail/smtpd.conf"), &opts) {
//!     Ok(config) => println!("{} rules", config.rules.len()),
//!     Err(diagnostics) => eprintln!("{diagnostics}"),
//! }
//! ```
//!
//! Text in, a typed configuration or a list of diagnostics out: the parser
//! reads files only for `include`, and asks the system only for its
//! interfaces, its host name and host name resolution of `listen on NAME`;
//! each of those can be fixed in [`ParseOptions`].

pub mod check;
pub mod diag;
pub mod expand;
pub mod lexer;
pub mod model;
pub mod parser;
pub mod ruleset;

use std::net::IpAddr;
use std::path::Path;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::Config;

/// How `include "file"` is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Includes {
    /// Read the file from the filesystem (absolute paths only).
    #[default]
    Filesystem,
    /// Every `include` is an error (fuzzing, untrusted text).
    Disabled,
}

/// Whether declared file and db tables are opened while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableFiles {
    /// Open each with `rsmtpd_table::Table::open`: a missing or malformed
    /// file is a diagnostic, and its shape (list or mapping) is checked
    /// against its uses.
    #[default]
    Open,
    /// Do not touch the filesystem (fuzzing, untrusted text); file tables
    /// pass every shape check.
    Skip,
}

/// How `listen on NAME` resolves a host name that is neither an interface
/// nor an address literal, and how the server name is made canonical.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostResolver {
    /// The system resolver (getaddrinfo through std).
    #[default]
    System,
    /// No resolution: unknown names are errors.
    Disabled,
    /// A fixed table of names and their addresses (tests).
    Static(Vec<(String, Vec<IpAddr>)>),
}

/// One address of one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub name: String,
    pub addr: IpAddr,
}

/// Everything a parse may take from outside the text.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// `-D name=value` macros; they override definitions in the file.
    pub macros: Vec<(String, String)>,
    /// The server name; `None` reads /etc/mail/mailname, then the host name.
    pub hostname: Option<String>,
    pub includes: Includes,
    pub table_files: TableFiles,
    /// The machine's interface addresses; `None` asks the system.
    pub interfaces: Option<Vec<InterfaceAddr>>,
    pub resolver: HostResolver,
}

/// Why a `-D` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefineError {
    #[error("-D {0}: expected name=value")]
    NoEquals(String),
    #[error("-D {0}: a macro name is letters, digits and underscores")]
    BadName(String),
    #[error("-D {0}: value too long (at most {max} bytes)", max = lexer::MAX_TOKEN - 1)]
    TooLong(String),
}

impl ParseOptions {
    /// Add a `-D name=value` macro (split at the first `=`).
    pub fn define(&mut self, arg: &str) -> Result<(), DefineError> {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| DefineError::NoEquals(arg.to_string()))?;
        if !check::valid_macro_name(name) {
            return Err(DefineError::BadName(arg.to_string()));
        }
        if value.len() >= lexer::MAX_TOKEN {
            return Err(DefineError::TooLong(name.to_string()));
        }
        self.macros.push((name.to_string(), value.to_string()));
        Ok(())
    }
}

/// What a parse produced: the configuration when there was no error, and
/// every diagnostic (warnings included) in any case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub config: Option<Config>,
    pub diagnostics: Diagnostics,
}

impl Outcome {
    /// `Ok` when the configuration is usable; warnings are dropped.
    pub fn into_result(self) -> Result<Config, Diagnostics> {
        match self.config {
            Some(c) => Ok(c),
            None => Err(self.diagnostics),
        }
    }
}

/// Parse the configuration file at `path` (and what it includes).
pub fn parse_file(path: &Path, opts: &ParseOptions) -> Result<Config, Diagnostics> {
    analyze_file(path, opts).into_result()
}

/// Parse `text` as if it were the file `name`; includes are read from the
/// filesystem unless [`ParseOptions::includes`] says otherwise.
pub fn parse_str(name: &str, text: &str, opts: &ParseOptions) -> Result<Config, Diagnostics> {
    analyze_bytes(name, text.as_bytes(), opts).into_result()
}

/// Like [`parse_str`], for input that may not be UTF-8.
pub fn parse_bytes(name: &str, data: &[u8], opts: &ParseOptions) -> Result<Config, Diagnostics> {
    analyze_bytes(name, data, opts).into_result()
}

/// Parse a file and keep every diagnostic, warnings included.
pub fn analyze_file(path: &Path, opts: &ParseOptions) -> Outcome {
    parser::parse_path(path, opts)
}

/// Parse text and keep every diagnostic, warnings included.
pub fn analyze_bytes(name: &str, data: &[u8], opts: &ParseOptions) -> Outcome {
    parser::parse_data(Path::new(name), data.to_vec(), opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_splits_at_first_equals() {
        let mut o = ParseOptions::default();
        o.define("a=b=c").unwrap();
        assert_eq!(o.macros, vec![("a".to_string(), "b=c".to_string())]);
        assert_eq!(
            o.define("novalue"),
            Err(DefineError::NoEquals("novalue".into()))
        );
        assert_eq!(o.define("a-b=1"), Err(DefineError::BadName("a-b=1".into())));
        let long = format!("x={}", "v".repeat(lexer::MAX_TOKEN));
        assert_eq!(o.define(&long), Err(DefineError::TooLong("x".into())));
    }
}
