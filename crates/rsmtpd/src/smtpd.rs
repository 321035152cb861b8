//! The `smtpd` command line (smtpd(8)): `smtpd [-dFhnv] [-D macro=value]
//! [-f file] [-P system] [-T trace]`, plus the `--quickstart` extension.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use rsmtpd_config::{DefineError, ParseOptions};

use crate::getopt::{self, GetoptError, Opt};
use crate::quickstart;

/// The default configuration file, as OpenSMTPD's.
pub const DEFAULT_CONFIG: &str = "/etc/mail/smtpd.conf";

const USAGE: &str =
    "usage: smtpd [-dFhnv] [-D macro=value] [-f file] [-P system] [-T trace] [--quickstart]";

/// A subsystem `-P` can pause at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Subsystem {
    Mda,
    Mta,
    Smtp,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// The embedded quick-start configuration.
    Quickstart,
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Flags {
    pub config: ConfigSource,
    /// `-d`: foreground, log to stderr.
    pub debug: bool,
    /// `-F`: foreground, log to syslog.
    pub foreground: bool,
    /// `-n`: check the configuration and exit.
    pub check_only: bool,
    /// `-v`, repeatable.
    pub verbose: u8,
    /// Carries the `-D name=value` macros, in order.
    pub parse: ParseOptions,
    pub paused: Vec<Subsystem>,
    /// `-T`: accepted and kept for the daemon.
    pub traces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error("{0}")]
    Getopt(#[from] GetoptError),
    #[error("{0}")]
    Define(#[from] DefineError),
    #[error("-P {0}: the subsystems are mda, mta and smtp")]
    BadSubsystem(String),
    #[error("unexpected argument {0:?}")]
    Operand(String),
    #[error("-f and --quickstart are exclusive")]
    TwoConfigs,
}

/// `-h` is not an error but asks for usage only.
#[derive(Debug)]
pub enum Command {
    Run(Flags),
    Help,
}

pub fn parse_flags(args: &[OsString]) -> Result<Command, FlagsError> {
    let parsed = getopt::getopt(args, "dD:Ff:hnP:T:v", &["quickstart"])?;
    if let Some(op) = parsed.operands.first() {
        return Err(FlagsError::Operand(op.to_string_lossy().into_owned()));
    }
    let mut flags = Flags {
        config: ConfigSource::File(PathBuf::from(DEFAULT_CONFIG)),
        debug: false,
        foreground: false,
        check_only: false,
        verbose: 0,
        parse: ParseOptions::default(),
        paused: Vec::new(),
        traces: Vec::new(),
    };
    let mut file_given = false;
    let mut quickstart = false;
    for opt in parsed.opts {
        match opt {
            Opt::Long(_) => quickstart = true,
            Opt::Short('h', _) => return Ok(Command::Help),
            Opt::Short('d', _) => flags.debug = true,
            Opt::Short('F', _) => flags.foreground = true,
            Opt::Short('n', _) => flags.check_only = true,
            Opt::Short('v', _) => flags.verbose = flags.verbose.saturating_add(1),
            Opt::Short(c @ 'D', Some(v)) => {
                flags.parse.define(&getopt::text_arg(c, &v)?)?;
            }
            Opt::Short('f', Some(v)) => {
                file_given = true;
                flags.config = ConfigSource::File(PathBuf::from(v));
            }
            Opt::Short(c @ 'P', Some(v)) => {
                let text = getopt::text_arg(c, &v)?;
                let sub = match text.as_str() {
                    "mda" => Subsystem::Mda,
                    "mta" => Subsystem::Mta,
                    "smtp" => Subsystem::Smtp,
                    _ => return Err(FlagsError::BadSubsystem(text)),
                };
                if !flags.paused.contains(&sub) {
                    flags.paused.push(sub);
                }
            }
            Opt::Short(c @ 'T', Some(v)) => flags.traces.push(getopt::text_arg(c, &v)?),
            Opt::Short(c, _) => return Err(GetoptError::Unknown(c).into()),
        }
    }
    if quickstart {
        if file_given {
            return Err(FlagsError::TwoConfigs);
        }
        flags.config = ConfigSource::Quickstart;
    }
    Ok(Command::Run(flags))
}

pub fn main(args: &[OsString]) -> ExitCode {
    let flags = match parse_flags(args) {
        Ok(Command::Run(flags)) => flags,
        Ok(Command::Help) => {
            eprintln!("rsmtpd {}\n{USAGE}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("smtpd: {e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    if flags.verbose > 0
        && flags.config == ConfigSource::Quickstart
        && let Ok(qs) = quickstart::Quickstart::for_current_user()
    {
        eprint!("{}", qs.text);
    }
    let config = match load(&flags) {
        Ok(config) => config,
        Err(text) => {
            eprint!("{text}");
            return ExitCode::from(1);
        }
    };
    if flags.check_only {
        eprintln!("configuration OK");
        return ExitCode::SUCCESS;
    }
    if !flags.debug && !flags.foreground {
        return detach(args);
    }
    crate::roles::parent::run(&flags, config)
}

/// Reads the configuration the command line names (at start and at every
/// reload); the error is the diagnostics' text, lines ended.
pub fn load(flags: &Flags) -> Result<rsmtpd_config::model::Config, String> {
    let options = &flags.parse;
    let parsed = match &flags.config {
        ConfigSource::File(path) => rsmtpd_config::parse_file(path, options),
        ConfigSource::Quickstart => match quickstart::Quickstart::for_current_user() {
            Ok(qs) => rsmtpd_config::parse_str(quickstart::NAME, &qs.text, options),
            Err(e) => return Err(format!("smtpd: quick start: {e}\n")),
        },
    };
    parsed.map_err(|diagnostics| diagnostics.to_string())
}

/// Without -d or -F the daemon goes to the background: the same command
/// runs again with -F, detached from the terminal, and this one returns.
fn detach(args: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("smtpd: {e}");
            return ExitCode::from(1);
        }
    };
    let spawned = std::process::Command::new(exe)
        .arg("-F")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpd: cannot go to the background: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(list: &[&str]) -> Result<Command, FlagsError> {
        let args: Vec<OsString> = list.iter().map(OsString::from).collect();
        parse_flags(&args)
    }

    #[test]
    fn all_flags_of_smtpd_8() {
        let Command::Run(f) = run(&[
            "-dFnvv", "-D", "a=b=c", "-f", "/x.conf", "-P", "mta", "-Psmtp", "-T", "smtp",
        ])
        .unwrap() else {
            panic!("help")
        };
        assert!(f.debug && f.foreground && f.check_only);
        assert_eq!(f.verbose, 2);
        assert_eq!(f.parse.macros, vec![("a".into(), "b=c".into())]);
        assert_eq!(f.config, ConfigSource::File("/x.conf".into()));
        assert_eq!(f.paused, vec![Subsystem::Mta, Subsystem::Smtp]);
        assert_eq!(f.traces, vec!["smtp".to_string()]);
    }

    #[test]
    fn defaults() {
        let Command::Run(f) = run(&[]).unwrap() else {
            panic!("help")
        };
        assert_eq!(f.config, ConfigSource::File(DEFAULT_CONFIG.into()));
        assert!(!f.debug && !f.check_only && f.parse.macros.is_empty());
    }

    #[test]
    fn help_wins() {
        assert!(matches!(run(&["-n", "-h"]).unwrap(), Command::Help));
    }

    #[test]
    fn refusals() {
        let err = |args: &[&str]| run(args).err().map(|e| e.to_string());
        assert_eq!(
            err(&["-D", "novalue"]).unwrap(),
            "-D novalue: expected name=value"
        );
        assert!(matches!(run(&["-D", "=x"]), Err(FlagsError::Define(_))));
        assert!(matches!(run(&["-P", "queue"]), Err(FlagsError::BadSubsystem(s)) if s == "queue"));
        assert!(matches!(run(&["extra"]), Err(FlagsError::Operand(s)) if s == "extra"));
        assert!(matches!(
            run(&["--quickstart", "-f", "/x"]),
            Err(FlagsError::TwoConfigs)
        ));
        assert!(matches!(
            run(&["-z"]),
            Err(FlagsError::Getopt(GetoptError::Unknown('z')))
        ));
    }

    #[test]
    fn quickstart_flag() {
        let Command::Run(f) = run(&["--quickstart", "-n"]).unwrap() else {
            panic!("help")
        };
        assert_eq!(f.config, ConfigSource::Quickstart);
    }
}
