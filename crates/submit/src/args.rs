//! The sendmail(8) command line.
//!
//! Getopt style: options start with `-`, flags bundle (`-ti`), an option's
//! argument is attached (`-fjoe@x`) or the next argument (`-f joe@x`), and
//! `--` ends the options. Like GNU getopt (which the sendmail of most Linux
//! systems uses), options may also follow recipients: `sendmail joe@x -t` is
//! `sendmail -t joe@x`. A lone `-` is an argument, not an option.
//!
//! Understood: `-f`/`-r` (sender), `-F` (full name), `-t`, `-i`/`-oi`,
//! `-N`, `-R`, `-V`, `-C`, `-v`, and the modes `-bm` (the default), `-bi`
//! (also `-I`: newaliases) and `-bp` (mailq). Accepted and ignored, for
//! compatibility with Sendmail's callers: `-A X`, `-B type`, `-d X`,
//! `-e X`, `-h N`, `-L tag`, `-o anything` (except `-oi`), `-O opt=value`,
//! `-X file`, `-G`, `-m`, `-n`, `-U`, and `-q` with whatever is attached
//! to it. Anything else, and the other modes (`-bs`, `-bd`, `-bD`, `-bv`,
//! `-bt`, ...), is an error: a caller relying on them would otherwise be
//! silently misunderstood.

use std::path::PathBuf;

use crate::address::is_plausible_address;
use crate::sysexits::EX_USAGE;
use crate::{Ret, is_valid_envid, normalize_notify};

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Submit the message on standard input (`-bm`, the default).
    #[default]
    Submit,
    /// Rebuild the aliases database (`-bi`, `-I`, or run as `newaliases`).
    Newaliases,
    /// List the queue (`-bp`, or run as `mailq`).
    Mailq,
}

/// A parsed sendmail command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub mode: Mode,
    /// `-f` or `-r`: the envelope sender, surrounding angle brackets
    /// removed; `Some("")` for the null sender (`-f ''`, `-f '<>'`).
    pub from: Option<String>,
    /// `-F`: the sender's full name (no control characters).
    pub full_name: Option<String>,
    /// `-t`: read recipients from `To:`, `Cc:` and `Bcc:`.
    pub read_recipients: bool,
    /// `-i` or `-oi`: a line with a single `.` is content, not the end.
    pub ignore_dots: bool,
    /// `-N`: the DSN NOTIFY value in SMTP form (see
    /// [`crate::normalize_notify`]): `NEVER`, or a list of `SUCCESS`,
    /// `FAILURE`, `DELAY`.
    pub notify: Option<String>,
    /// `-R full|hdrs`.
    pub ret: Option<Ret>,
    /// `-V`: the DSN envelope id (printable ASCII, at most 100 octets).
    pub envid: Option<String>,
    /// `-C FILE`: another configuration file.
    pub config: Option<PathBuf>,
    /// `-v`.
    pub verbose: bool,
    /// The arguments that are not options, as given (each may be an
    /// address list; [`crate::prepare`] reads them).
    pub recipients: Vec<String>,
}

/// Why a command line was refused. All are usage errors ([`EX_USAGE`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown option -{0}")]
    UnknownOption(char),
    #[error("unknown option {0}: sendmail has no long options")]
    LongOption(String),
    #[error("option -{0} requires an argument")]
    MissingArgument(char),
    #[error("unsupported mode -b{0}: only -bm (the default), -bi and -bp are supported")]
    UnsupportedMode(String),
    #[error("invalid sender address {0:?} for -f")]
    BadSender(String),
    #[error("invalid full name for -F: control characters are not allowed")]
    BadFullName,
    #[error(
        "invalid -N value {0:?}: expected never, or a comma-separated list of success, failure and delay"
    )]
    BadNotify(String),
    #[error("invalid -R value {0:?}: expected full or hdrs")]
    BadRet(String),
    #[error("invalid -V envelope id: printable ASCII only, 1 to 100 characters")]
    BadEnvid,
}

impl ArgsError {
    /// The sysexits(3) code to exit with.
    pub fn exit_code(&self) -> u8 {
        match self {
            ArgsError::UnknownOption(_)
            | ArgsError::LongOption(_)
            | ArgsError::MissingArgument(_)
            | ArgsError::UnsupportedMode(_)
            | ArgsError::BadSender(_)
            | ArgsError::BadFullName
            | ArgsError::BadNotify(_)
            | ArgsError::BadRet(_)
            | ArgsError::BadEnvid => EX_USAGE,
        }
    }
}

/// Options that take an argument.
const WITH_ARGUMENT: &str = "ABCFLNORVXbdefhor";

/// Parses sendmail's arguments (without `argv[0]`); see the module doc.
pub fn parse_args(argv: &[String]) -> Result<Invocation, ArgsError> {
    let mut inv = Invocation::default();
    let mut rest = argv.iter();
    let mut options_done = false;
    while let Some(arg) = rest.next() {
        if options_done || arg == "-" || !arg.starts_with('-') {
            inv.recipients.push(arg.clone());
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        if arg.starts_with("--") {
            return Err(ArgsError::LongOption(arg.clone()));
        }
        for (at, flag) in arg.char_indices().skip(1) {
            if WITH_ARGUMENT.contains(flag) {
                let attached = &arg[at + flag.len_utf8()..];
                let value = if attached.is_empty() {
                    rest.next().ok_or(ArgsError::MissingArgument(flag))?
                } else {
                    attached
                };
                option_with_argument(&mut inv, flag, value)?;
                break;
            }
            match flag {
                't' => inv.read_recipients = true,
                'i' => inv.ignore_dots = true,
                'v' => inv.verbose = true,
                'I' => inv.mode = Mode::Newaliases,
                'G' | 'm' | 'n' | 'U' => {}
                // -q[time] or -q[!]Xstring: everything attached is its.
                'q' => break,
                _ => return Err(ArgsError::UnknownOption(flag)),
            }
        }
    }
    Ok(inv)
}

fn option_with_argument(inv: &mut Invocation, flag: char, value: &str) -> Result<(), ArgsError> {
    match flag {
        'f' | 'r' => {
            let bare = value
                .strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(value);
            if !bare.is_empty() && !is_plausible_address(bare) {
                return Err(ArgsError::BadSender(value.to_owned()));
            }
            inv.from = Some(bare.to_owned());
        }
        'F' => {
            if value.chars().any(char::is_control) {
                return Err(ArgsError::BadFullName);
            }
            inv.full_name = Some(value.to_owned());
        }
        'N' => {
            inv.notify = Some(
                normalize_notify(value).ok_or_else(|| ArgsError::BadNotify(value.to_owned()))?,
            );
        }
        'R' => {
            inv.ret = Some(Ret::parse(value).ok_or_else(|| ArgsError::BadRet(value.to_owned()))?)
        }
        'V' => {
            if !is_valid_envid(value) {
                return Err(ArgsError::BadEnvid);
            }
            inv.envid = Some(value.to_owned());
        }
        'C' => inv.config = Some(PathBuf::from(value)),
        'b' => {
            inv.mode = match value {
                "m" => Mode::Submit,
                "i" => Mode::Newaliases,
                "p" => Mode::Mailq,
                other => return Err(ArgsError::UnsupportedMode(other.to_owned())),
            }
        }
        'o' if value == "i" => inv.ignore_dots = true,
        // -A -B -d -e -h -L -O -X, and -o other than -oi: accepted, no effect.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ArgsError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args(&v)
    }

    #[test]
    fn defaults() {
        let inv = parse(&["joe@x.org"]).unwrap();
        assert_eq!(inv.mode, Mode::Submit);
        assert_eq!(inv.recipients, ["joe@x.org"]);
        assert!(!inv.read_recipients && !inv.ignore_dots && !inv.verbose);
        assert_eq!(inv.from, None);
    }

    #[test]
    fn bundled_flags_and_attached_arguments() {
        let inv = parse(&["-tif", "me@x.org", "-Fjoe q", "-vN", "success,delay"]).unwrap();
        assert!(inv.read_recipients && inv.ignore_dots && inv.verbose);
        assert_eq!(inv.from.as_deref(), Some("me@x.org"));
        assert_eq!(inv.full_name.as_deref(), Some("joe q"));
        assert_eq!(inv.notify.as_deref(), Some("SUCCESS,DELAY"));
        assert!(inv.recipients.is_empty());

        let inv = parse(&["-fme@x.org", "-R", "hdrs", "-Vabc", "-C", "/etc/x.conf"]).unwrap();
        assert_eq!(inv.from.as_deref(), Some("me@x.org"));
        assert_eq!(inv.ret, Some(Ret::Hdrs));
        assert_eq!(inv.envid.as_deref(), Some("abc"));
        assert_eq!(inv.config, Some(PathBuf::from("/etc/x.conf")));
    }

    #[test]
    fn r_is_f_and_brackets_are_removed() {
        assert_eq!(
            parse(&["-r", "<me@x.org>"]).unwrap().from.as_deref(),
            Some("me@x.org")
        );
        assert_eq!(parse(&["-f", "<>"]).unwrap().from.as_deref(), Some(""));
        assert_eq!(parse(&["-f", ""]).unwrap().from.as_deref(), Some(""));
        assert_eq!(
            parse(&["-f", "a b@x"]),
            Err(ArgsError::BadSender("a b@x".into()))
        );
        assert_eq!(
            parse(&["-f", "me@x\r\nRCPT"]),
            Err(ArgsError::BadSender("me@x\r\nRCPT".into()))
        );
    }

    #[test]
    fn oi_and_o_others() {
        assert!(parse(&["-oi"]).unwrap().ignore_dots);
        assert!(parse(&["-o", "i"]).unwrap().ignore_dots);
        assert!(parse(&["-toi"]).unwrap().ignore_dots);
        let inv = parse(&["-oem", "-odb", "-o", "Q/x"]).unwrap();
        assert!(!inv.ignore_dots);
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["-bi"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(parse(&["-I"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(parse(&["-b", "p"]).unwrap().mode, Mode::Mailq);
        assert_eq!(parse(&["-bp", "-bm"]).unwrap().mode, Mode::Submit);
        for m in ["s", "d", "D", "v", "t", "h", "H", "P", ""] {
            let e = parse(&[&format!("-b{m}"), "x"]).unwrap_err();
            assert!(matches!(e, ArgsError::UnsupportedMode(_)), "{m}: {e:?}");
            assert_eq!(e.exit_code(), 64);
        }
        assert!(
            ArgsError::UnsupportedMode("s".into())
                .to_string()
                .contains("-bs")
        );
    }

    #[test]
    fn ignored_options() {
        let inv = parse(&[
            "-B", "8BITMIME", "-bm", "-d0.1", "-h", "5", "-L", "tag", "-m", "-n", "-odb", "-q1h",
            "-U", "-X", "/tmp/log", "-e", "q", "-G", "-A", "c", "-O", "x=y", "joe",
        ])
        .unwrap();
        assert_eq!(inv.recipients, ["joe"]);
        assert_eq!(
            inv,
            Invocation {
                recipients: vec!["joe".into()],
                ..Invocation::default()
            }
        );
        // -q swallows what is attached, even letters that are flags.
        assert!(!parse(&["-qRt"]).unwrap().read_recipients);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&["-Z"]), Err(ArgsError::UnknownOption('Z')));
        assert_eq!(parse(&["-tZ"]), Err(ArgsError::UnknownOption('Z')));
        assert_eq!(parse(&["-f"]), Err(ArgsError::MissingArgument('f')));
        assert_eq!(parse(&["-t", "-F"]), Err(ArgsError::MissingArgument('F')));
        assert_eq!(
            parse(&["-N", "sometimes"]),
            Err(ArgsError::BadNotify("sometimes".into()))
        );
        assert_eq!(parse(&["-R", "all"]), Err(ArgsError::BadRet("all".into())));
        assert_eq!(parse(&["-V", "a\u{7f}"]), Err(ArgsError::BadEnvid));
        assert_eq!(parse(&["-F", "Joe\nBcc: x"]), Err(ArgsError::BadFullName));
        assert_eq!(
            parse(&["--version"]),
            Err(ArgsError::LongOption("--version".into()))
        );
        assert_eq!(
            ArgsError::LongOption("--x".into()).to_string(),
            "unknown option --x: sendmail has no long options"
        );
        assert_eq!(parse(&["-\u{e9}"]), Err(ArgsError::UnknownOption('\u{e9}')));
        for e in [
            ArgsError::UnknownOption('x'),
            ArgsError::BadEnvid,
            ArgsError::BadFullName,
        ] {
            assert_eq!(e.exit_code(), crate::sysexits::EX_USAGE);
        }
        assert_eq!(
            ArgsError::MissingArgument('f').to_string(),
            "option -f requires an argument"
        );
    }

    #[test]
    fn double_dash_and_permutation() {
        let inv = parse(&["joe@x.org", "-t", "--", "-i", "-"]).unwrap();
        assert!(inv.read_recipients);
        assert!(!inv.ignore_dots);
        assert_eq!(inv.recipients, ["joe@x.org", "-i", "-"]);
        // The argument of an option may start with a dash.
        assert_eq!(
            parse(&["-F", "-x-"]).unwrap().full_name.as_deref(),
            Some("-x-")
        );
    }
}
