//! POSIX getopt(3) semantics for our personalities (smtpd, smtpctl,
//! sendmail, makemap): OpenSMTPD users type `-dv`, `-fFILE` and `-f FILE`,
//! and sendmail callers pass odd clusters that must parse exactly as they
//! do with the C tools.

use std::ffi::OsString;

/// One option seen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// `-x`, with its argument when the spec says it takes one.
    Short(char, Option<OsString>),
    /// `--name`: extensions only; OpenSMTPD's tools have no long options.
    Long(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetoptError {
    #[error("unknown option -- {0}")]
    Unknown(char),
    #[error("option requires an argument -- {0}")]
    MissingArgument(char),
    #[error("unknown option --{0}")]
    UnknownLong(String),
    #[error("option -{0} is not valid text")]
    NotText(char),
}

/// The parsed command line: options in order, then the operands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub opts: Vec<Opt>,
    pub operands: Vec<OsString>,
}

/// Parse `args` (without argv[0]). `spec` is getopt's option string
/// (`"dD:f:"`: a colon after a letter means it takes an argument); `longs`
/// lists the accepted `--name` flags. Parsing stops at `--` or at the first
/// operand, as POSIX getopt does.
pub fn getopt(args: &[OsString], spec: &str, longs: &[&str]) -> Result<Parsed, GetoptError> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" {
            i += 1;
            break;
        }
        if let Some(name) = bytes.strip_prefix(b"--") {
            let name = String::from_utf8_lossy(name).into_owned();
            if !longs.contains(&name.as_str()) {
                return Err(GetoptError::UnknownLong(name));
            }
            parsed.opts.push(Opt::Long(name));
            i += 1;
            continue;
        }
        if bytes.len() < 2 || bytes.first() != Some(&b'-') {
            break;
        }
        // A cluster such as `-dv` or `-fFILE`. Options are ASCII letters,
        // so a non-UTF-8 cluster can only be an unknown option.
        let Some(cluster) = arg.to_str() else {
            return Err(GetoptError::Unknown('?'));
        };
        for (pos, c) in cluster.char_indices().skip(1) {
            match takes_argument(spec, c) {
                None => return Err(GetoptError::Unknown(c)),
                Some(false) => parsed.opts.push(Opt::Short(c, None)),
                Some(true) => {
                    let rest = &cluster[pos + c.len_utf8()..];
                    let value = if !rest.is_empty() {
                        OsString::from(rest)
                    } else {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or(GetoptError::MissingArgument(c))?
                    };
                    parsed.opts.push(Opt::Short(c, Some(value)));
                    break;
                }
            }
        }
        i += 1;
    }
    parsed.operands = args.get(i..).unwrap_or_default().to_vec();
    Ok(parsed)
}

/// `Some(true)` if `c` is in `spec` and takes an argument.
fn takes_argument(spec: &str, c: char) -> Option<bool> {
    if c == ':' {
        return None;
    }
    let pos = spec.find(c)?;
    Some(spec[pos + c.len_utf8()..].starts_with(':'))
}

/// The argument of an option as text, for options whose values must be
/// UTF-8 (macro definitions, subsystem names).
pub fn text_arg(c: char, value: &OsString) -> Result<String, GetoptError> {
    value
        .to_str()
        .map(str::to_owned)
        .ok_or(GetoptError::NotText(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn short(c: char, v: Option<&str>) -> Opt {
        Opt::Short(c, v.map(OsString::from))
    }

    #[test]
    fn clusters_and_attached_arguments() {
        let p = getopt(&args(&["-dv", "-fconf", "-D", "a=b", "x"]), "dvf:D:", &[]).unwrap();
        assert_eq!(
            p.opts,
            vec![
                short('d', None),
                short('v', None),
                short('f', Some("conf")),
                short('D', Some("a=b"))
            ]
        );
        assert_eq!(p.operands, args(&["x"]));
    }

    #[test]
    fn argument_taken_from_the_rest_of_a_cluster() {
        let p = getopt(&args(&["-nf/etc/x.conf"]), "nf:", &[]).unwrap();
        assert_eq!(
            p.opts,
            vec![short('n', None), short('f', Some("/etc/x.conf"))]
        );
    }

    #[test]
    fn double_dash_ends_options() {
        let p = getopt(&args(&["-d", "--", "-v"]), "dv", &[]).unwrap();
        assert_eq!(p.opts, vec![short('d', None)]);
        assert_eq!(p.operands, args(&["-v"]));
    }

    #[test]
    fn first_operand_ends_options() {
        let p = getopt(&args(&["show", "-v"]), "v", &[]).unwrap();
        assert!(p.opts.is_empty());
        assert_eq!(p.operands, args(&["show", "-v"]));
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(
            getopt(&args(&["-x"]), "d", &[]),
            Err(GetoptError::Unknown('x'))
        );
        assert_eq!(
            getopt(&args(&["-f"]), "f:", &[]),
            Err(GetoptError::MissingArgument('f'))
        );
        assert_eq!(
            getopt(&args(&["--nope"]), "f:", &["quickstart"]),
            Err(GetoptError::UnknownLong("nope".into()))
        );
        assert_eq!(
            getopt(&args(&["-:"]), "f:", &[]),
            Err(GetoptError::Unknown(':'))
        );
    }

    #[test]
    fn long_extension_flags() {
        let p = getopt(&args(&["--quickstart", "-n"]), "n", &["quickstart"]).unwrap();
        assert_eq!(
            p.opts,
            vec![Opt::Long("quickstart".into()), short('n', None)]
        );
    }

    #[test]
    fn lone_dash_is_an_operand() {
        let p = getopt(&args(&["-"]), "n", &[]).unwrap();
        assert_eq!(p.operands, args(&["-"]));
    }
}
