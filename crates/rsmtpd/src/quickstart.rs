//! The embedded quick-start configuration: one command, no root, no system
//! mail set-up. It listens on 127.0.0.1:2525 and delivers every message to
//! the Maildir of the user who started it, with the spool under that user's
//! home.

use std::path::{Path, PathBuf};

/// The name diagnostics use for the embedded configuration.
pub const NAME: &str = "<quickstart>";

/// The port the quick start listens on: unprivileged, and not 25 or 587 so
/// that it never collides with a system MTA.
pub const PORT: u16 = 2525;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuickstartError {
    #[error("cannot find the current user in the user database")]
    NoUser,
    #[error("the path {0:?} cannot be written in a configuration string")]
    UnquotablePath(PathBuf),
}

/// The generated configuration and the paths it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quickstart {
    pub text: String,
    pub spool: PathBuf,
    pub maildir: PathBuf,
}

impl Quickstart {
    pub fn for_current_user() -> Result<Quickstart, QuickstartError> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .ok_or(QuickstartError::NoUser)?;
        // $HOME first, as every other program of the user does.
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or(user.dir);
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".local/state"));
        Quickstart::new(&user.name, &home, &state.join("rsmtpd/spool"))
    }

    pub fn new(user: &str, home: &Path, spool: &Path) -> Result<Quickstart, QuickstartError> {
        let maildir = home.join("Maildir");
        let text = format!(
            "# rsmtpd quick start (generated; `smtpd --quickstart -nv` prints it)\n\
             queue path {spool}\n\
             listen on 127.0.0.1 port {PORT}\n\
             action \"local\" maildir {maildir} user {user}\n\
             match from any for any action \"local\"\n",
            spool = quote(spool)?,
            maildir = quote(&maildir)?,
            user = quote(Path::new(user))?,
        );
        Ok(Quickstart {
            text,
            spool: spool.to_path_buf(),
            maildir,
        })
    }
}

/// A double-quoted smtpd.conf string. Paths with a quote, a backslash or a
/// control character are refused rather than escaped: the lexer's escapes
/// are not worth a surprise in a generated file.
fn quote(path: &Path) -> Result<String, QuickstartError> {
    let text = path
        .to_str()
        .filter(|t| !t.chars().any(|c| c == '"' || c == '\\' || c.is_control()))
        .ok_or_else(|| QuickstartError::UnquotablePath(path.to_path_buf()))?;
    Ok(format!("\"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_the_user_paths() {
        let qs = Quickstart::new(
            "alice",
            Path::new("/home/alice"),
            Path::new("/home/alice/.local/state/rsmtpd/spool"),
        )
        .unwrap();
        assert!(
            qs.text
                .contains("queue path \"/home/alice/.local/state/rsmtpd/spool\"\n")
        );
        assert!(qs.text.contains("listen on 127.0.0.1 port 2525\n"));
        assert!(
            qs.text
                .contains("maildir \"/home/alice/Maildir\" user \"alice\"\n")
        );
        assert_eq!(qs.maildir, PathBuf::from("/home/alice/Maildir"));
    }

    #[test]
    fn unquotable_paths_are_refused() {
        let err = Quickstart::new("a", Path::new("/home/a\"b"), Path::new("/s")).unwrap_err();
        assert_eq!(
            err,
            QuickstartError::UnquotablePath("/home/a\"b/Maildir".into())
        );
    }
}
