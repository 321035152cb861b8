//! Reading a user's `~/.forward`: a job for the user's delivery child
//! (roles/deliver.rs), so the file is opened with the user's rights only
//! (never root's), and the checks forward(5) implies are made on the
//! opened file: the home and the file must belong to the user (or root),
//! must not be writable by group or others, and the file must be a regular
//! file. A refusal is a temporary failure: the user can fix it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Larger files are refused: a .forward is a few lines.
pub const MAX_FORWARD_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is writable by group or others")]
    Writable(String),
    #[error("{0} is not owned by the user")]
    Owner(String),
    #[error("{0} is not a regular file")]
    NotRegular(String),
    #[error("{0} is larger than {MAX_FORWARD_BYTES} bytes")]
    TooLarge(String),
    #[error("{0} has the sticky bit: mail waits until it is cleared")]
    Sticky(String),
    #[error("{0}: {1}")]
    Io(String, String),
}

/// The checks and the read, as the current user.
pub fn read(home: &Path, uid: u32) -> Result<Option<String>, Refusal> {
    let show = |p: &Path| p.display().to_string();
    let home_meta = match std::fs::metadata(home) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Refusal::Io(show(home), e.to_string())),
    };
    check_owner_and_mode(home, &home_meta, uid)?;
    // forward(5): a sticky home defers mail while the user edits the file.
    if home_meta.mode() & 0o1000 != 0 {
        return Err(Refusal::Sticky(show(home)));
    }
    let path = home.join(".forward");
    let file = match File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink gives ELOOP.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Refusal::NotRegular(show(&path)));
        }
        Err(e) => return Err(Refusal::Io(show(&path), e.to_string())),
    };
    let meta = file
        .metadata()
        .map_err(|e| Refusal::Io(show(&path), e.to_string()))?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular(show(&path)));
    }
    check_owner_and_mode(&path, &meta, uid)?;
    let mut text = String::new();
    let n = file
        .take(MAX_FORWARD_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Refusal::Io(show(&path), e.to_string()))?;
    if n as u64 > MAX_FORWARD_BYTES {
        return Err(Refusal::TooLarge(show(&path)));
    }
    Ok(Some(text))
}

fn check_owner_and_mode(path: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), Refusal> {
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(Refusal::Owner(path.display().to_string()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Refusal::Writable(path.display().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn home(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rsmtpd-fwd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn me() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn reads_a_good_forward() {
        let h = home("good");
        std::fs::write(h.join(".forward"), "bob@example.org\n\\alice\n").unwrap();
        std::fs::set_permissions(h.join(".forward"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert_eq!(
            read(&h, me()).unwrap().unwrap(),
            "bob@example.org\n\\alice\n"
        );
    }

    #[test]
    fn no_forward_or_no_home_is_none() {
        let h = home("none");
        assert_eq!(read(&h, me()).unwrap(), None);
        assert_eq!(read(&h.join("missing"), me()).unwrap(), None);
    }

    #[test]
    fn refusals() {
        let h = home("writable");
        std::fs::write(h.join(".forward"), "x\n").unwrap();
        std::fs::set_permissions(h.join(".forward"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        assert!(matches!(read(&h, me()), Err(Refusal::Writable(_))));

        let h = home("writable-home");
        std::fs::write(h.join(".forward"), "x\n").unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(read(&h, me()), Err(Refusal::Writable(_))));

        let h = home("symlink");
        std::fs::write(h.join("target"), "x\n").unwrap();
        std::os::unix::fs::symlink(h.join("target"), h.join(".forward")).unwrap();
        assert!(matches!(read(&h, me()), Err(Refusal::NotRegular(_))));

        let h = home("sticky");
        std::fs::write(h.join(".forward"), "x\n").unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o1755)).unwrap();
        assert!(matches!(read(&h, me()), Err(Refusal::Sticky(_))));

        let h = home("dir");
        std::fs::create_dir(h.join(".forward")).unwrap();
        assert!(matches!(read(&h, me()), Err(Refusal::NotRegular(_))));

        let h = home("big");
        std::fs::write(
            h.join(".forward"),
            vec![b'a'; MAX_FORWARD_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::set_permissions(h.join(".forward"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(matches!(read(&h, me()), Err(Refusal::TooLarge(_))));

        let h = home("owner");
        std::fs::write(h.join(".forward"), "x\n").unwrap();
        std::fs::set_permissions(h.join(".forward"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        // A file owned by neither the reader nor root.
        let reader = if me() == 0 {
            nix::unistd::chown(
                &h.join(".forward"),
                Some(nix::unistd::Uid::from_raw(54321)),
                None,
            )
            .unwrap();
            12345
        } else {
            me() + 1
        };
        assert!(matches!(read(&h, reader), Err(Refusal::Owner(_))));
    }
}
