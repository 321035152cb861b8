//! The `makemap` personality (makemap(8)):
//! `makemap [-U] [-d dbtype] [-o dbfile] [-t type] file`.
//! Our db format is CDB (docs/tables.md); `-d hash` and `-d btree` are
//! accepted so existing scripts keep working, and mean the same.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use rsmtpd_table::makemap::{self, MapType};

use crate::getopt::{self, GetoptError, Opt};

const USAGE: &str = "usage: makemap [-U] [-d dbtype] [-o dbfile] [-t type] file";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub map_type: MapType,
    /// `-U`: dump a db as text instead of building one.
    pub dump: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error("{0}")]
    Getopt(#[from] GetoptError),
    #[error("unsupported database type {0:?} (hash and btree both build our CDB format)")]
    DbType(String),
    #[error("unsupported map type {0:?} (aliases or set)")]
    MapType(String),
    #[error("exactly one input file is needed")]
    Operands,
}

pub fn parse_flags(args: &[OsString]) -> Result<Flags, FlagsError> {
    let parsed = getopt::getopt(args, "d:o:t:U", &[])?;
    let mut output = None;
    let mut map_type = MapType::Plain;
    let mut dump = false;
    for opt in parsed.opts {
        match opt {
            Opt::Short(c @ 'd', Some(v)) => {
                let text = getopt::text_arg(c, &v)?;
                if text != "hash" && text != "btree" {
                    return Err(FlagsError::DbType(text));
                }
            }
            Opt::Short('o', Some(v)) => output = Some(PathBuf::from(v)),
            Opt::Short(c @ 't', Some(v)) => {
                let text = getopt::text_arg(c, &v)?;
                map_type = match text.as_str() {
                    "aliases" => MapType::Aliases,
                    "set" => MapType::Set,
                    _ => return Err(FlagsError::MapType(text)),
                };
            }
            Opt::Short('U', _) => dump = true,
            Opt::Short(c, _) => return Err(GetoptError::Unknown(c).into()),
            Opt::Long(name) => return Err(GetoptError::UnknownLong(name).into()),
        }
    }
    let [input] = parsed.operands.as_slice() else {
        return Err(FlagsError::Operands);
    };
    Ok(Flags {
        input: PathBuf::from(input),
        output,
        map_type,
        dump,
    })
}

pub fn main(args: &[OsString]) -> ExitCode {
    let flags = match parse_flags(args) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("makemap: {e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    let result = if flags.dump {
        makemap::dump(&flags.input, &mut std::io::stdout().lock()).map(|_| ())
    } else {
        let output = flags
            .output
            .clone()
            .unwrap_or_else(|| makemap::default_output(&flags.input));
        makemap::makemap(&flags.input, &output, flags.map_type).map(|_| ())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("makemap: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(list: &[&str]) -> Result<Flags, FlagsError> {
        let args: Vec<OsString> = list.iter().map(OsString::from).collect();
        parse_flags(&args)
    }

    #[test]
    fn flags_of_makemap_8() {
        let f = run(&[
            "-d",
            "hash",
            "-t",
            "aliases",
            "-o",
            "/x.db",
            "/etc/mail/aliases",
        ])
        .unwrap();
        assert_eq!(f.map_type, MapType::Aliases);
        assert_eq!(f.output, Some(PathBuf::from("/x.db")));
        assert_eq!(f.input, PathBuf::from("/etc/mail/aliases"));
        assert!(!f.dump);
        assert!(run(&["-U", "/x.db"]).unwrap().dump);
        assert_eq!(run(&["-tset", "f"]).unwrap().map_type, MapType::Set);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            run(&["-d", "gdbm", "f"]),
            Err(FlagsError::DbType("gdbm".into()))
        );
        assert_eq!(
            run(&["-t", "nope", "f"]),
            Err(FlagsError::MapType("nope".into()))
        );
        assert_eq!(run(&[]), Err(FlagsError::Operands));
        assert_eq!(run(&["a", "b"]), Err(FlagsError::Operands));
    }
}
