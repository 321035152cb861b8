//! Privilege separation: each child role gives up what its job does not
//! need before it reads a byte from anyone. Every step is checked; a step
//! that fails is fatal, never skipped (a daemon that thinks it dropped
//! privileges and did not is worse than one that does not start).

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

/// The unprivileged user of the roles that face the network or parse
/// untrusted data.
pub const SMTPD_USER: &str = "_smtpd";
/// The user that owns the spool; only the queue role runs as it.
pub const QUEUE_USER: &str = "_smtpq";
/// An empty, root-owned directory the confined roles chroot into.
pub const EMPTY_DIR: &str = "/var/empty";

/// What a role becomes after start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    /// The account to become.
    pub user: &'static str,
    /// The directory to chroot into, if any.
    pub chroot: Option<PathBuf>,
}

/// Whether the daemon runs with privileges (started as root) or as the
/// user who started it (development, the quick start, most tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    Root,
    /// Same processes, no drops, deliveries only to this uid.
    Unprivileged {
        uid: u32,
    },
}

impl Mode {
    pub fn current() -> Mode {
        let uid = Uid::current();
        if uid.is_root() {
            Mode::Root
        } else {
            Mode::Unprivileged { uid: uid.as_raw() }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivsepError {
    #[error("user {0} does not exist (run scripts/setup.sh as root to create it)")]
    NoSuchUser(&'static str),
    #[error("looking up user {user}: {source}")]
    Lookup {
        user: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{step} failed: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("chroot directory {0}: {1}")]
    ChrootDir(PathBuf, String),
    #[error("privileges still held after dropping to {0}")]
    StillPrivileged(&'static str),
}

/// A system account as the daemon needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

pub fn account(user: &'static str) -> Result<Account, PrivsepError> {
    match User::from_name(user) {
        Ok(Some(u)) => Ok(Account {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
        }),
        Ok(None) => Err(PrivsepError::NoSuchUser(user)),
        Err(source) => Err(PrivsepError::Lookup { user, source }),
    }
}

/// Apply `drop` to the current process. As an unprivileged user this is a
/// no-op: there is nothing to drop and chroot is impossible.
pub fn apply(mode: Mode, drop: &Drop) -> Result<(), PrivsepError> {
    if let Mode::Unprivileged { .. } = mode {
        return Ok(());
    }
    let who = account(drop.user)?;
    if let Some(dir) = &drop.chroot {
        check_chroot_dir(dir)?;
        nix::unistd::chroot(dir.as_path()).map_err(|source| PrivsepError::Step {
            step: "chroot",
            source,
        })?;
        nix::unistd::chdir("/").map_err(|source| PrivsepError::Step {
            step: "chdir /",
            source,
        })?;
    }
    nix::unistd::setgroups(&[who.gid]).map_err(|source| PrivsepError::Step {
        step: "setgroups",
        source,
    })?;
    nix::unistd::setresgid(who.gid, who.gid, who.gid).map_err(|source| PrivsepError::Step {
        step: "setresgid",
        source,
    })?;
    nix::unistd::setresuid(who.uid, who.uid, who.uid).map_err(|source| PrivsepError::Step {
        step: "setresuid",
        source,
    })?;
    verify(drop.user, &who)
}

/// The drop must be irreversible: ids all changed, and root unreachable.
fn verify(user: &'static str, who: &Account) -> Result<(), PrivsepError> {
    let ids = nix::unistd::getresuid().map_err(|source| PrivsepError::Step {
        step: "getresuid",
        source,
    })?;
    let gids = nix::unistd::getresgid().map_err(|source| PrivsepError::Step {
        step: "getresgid",
        source,
    })?;
    let all_user = [ids.real, ids.effective, ids.saved]
        .iter()
        .all(|u| *u == who.uid);
    let all_group = [gids.real, gids.effective, gids.saved]
        .iter()
        .all(|g| *g == who.gid);
    if !all_user || !all_group || nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivsepError::StillPrivileged(user));
    }
    Ok(())
}

/// A chroot is only as good as its directory: it must exist, be a
/// directory owned by root and not writable by anyone else, or the
/// confined process could plant files there.
fn check_chroot_dir(dir: &Path) -> Result<(), PrivsepError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)
        .map_err(|e| PrivsepError::ChrootDir(dir.to_path_buf(), e.to_string()))?;
    if !meta.is_dir() {
        return Err(PrivsepError::ChrootDir(
            dir.to_path_buf(),
            "not a directory".into(),
        ));
    }
    if meta.uid() != 0 {
        return Err(PrivsepError::ChrootDir(
            dir.to_path_buf(),
            "not owned by root".into(),
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(PrivsepError::ChrootDir(
            dir.to_path_buf(),
            "writable by group or others".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_mode_changes_nothing() {
        let before = nix::unistd::getresuid().unwrap();
        apply(
            Mode::Unprivileged { uid: 1000 },
            &Drop {
                user: SMTPD_USER,
                chroot: Some("/nonexistent".into()),
            },
        )
        .unwrap();
        assert_eq!(nix::unistd::getresuid().unwrap(), before);
    }

    #[test]
    fn chroot_dir_checks() {
        let dir = std::env::temp_dir().join(format!("rsmtpd-chroot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_chroot_dir(&dir).unwrap_err();
        let text = err.to_string();
        // As root the mode is the problem; as a user, the owner is.
        assert!(
            text.contains("writable by group or others") || text.contains("not owned by root"),
            "{text}"
        );
        assert!(check_chroot_dir(Path::new("/nonexistent/x")).is_err());
        let file = dir.join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(
            check_chroot_dir(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn missing_user_is_reported_by_name() {
        // `account` takes a &'static str; use a name no system has.
        let err = account("_rsmtpd_no_such_user").unwrap_err();
        assert!(matches!(
            err,
            PrivsepError::NoSuchUser("_rsmtpd_no_such_user")
        ));
    }
}
