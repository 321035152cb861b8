//! Offline submissions: `sendmail` run while the daemon was down left its
//! message in the spool's offline folder. Once the daemon is up, the parent
//! starts `smtpd --offline-submit SOCKET FILE` for each file, as the file's
//! owner, which submits it through the control socket like any local
//! submission: the recorded identity is the owner's, checked by the kernel,
//! whoever wrote what into the file. The folder is writable by everyone
//! (sticky, like /tmp), so the parent only lists it and reads owners; the
//! parsing happens in the unprivileged child.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::privsep::Mode;
use crate::{log_info, log_warn};

/// The argument that starts the submitter: `smtpd --offline-submit SOCKET FILE`.
pub const OFFLINE_FLAG: &str = "--offline-submit";
/// One submission may take this long.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Files handled per start; the rest wait for the next.
const MAX_FILES: usize = 10_000;

/// Creates the folder: everyone may add files and remove their own.
pub fn prepare(spool: &Path, mode: Mode) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = spool.join(crate::sendmail::OFFLINE_DIR);
    let perm = match mode {
        Mode::Root => 0o1777,
        Mode::Unprivileged { .. } => 0o700,
    };
    match std::fs::DirBuilder::new().mode(perm).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("offline is not a directory"));
    }
    if mode == Mode::Root {
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
        )?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(perm))
}

/// Submits every file waiting in the folder, one after the other.
pub async fn submit_all(spool: PathBuf, socket: PathBuf, exe: PathBuf, mode: Mode) {
    use std::os::unix::fs::MetadataExt;
    let dir = spool.join(crate::sendmail::OFFLINE_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<(PathBuf, u32)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            meta.is_file().then(|| (e.path(), meta.uid()))
        })
        .take(MAX_FILES)
        .collect();
    files.sort();
    for (file, uid) in files {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg(OFFLINE_FLAG)
            .arg(&socket)
            .arg(&file)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match mode {
            Mode::Root => {
                let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                else {
                    log_warn!(
                        "offline: {}: owner uid {uid} is not a user, left alone",
                        file.display()
                    );
                    continue;
                };
                cmd.uid(uid).gid(user.gid.as_raw());
            }
            Mode::Unprivileged { uid: ours } if ours != uid => {
                log_warn!(
                    "offline: {}: not ours (uid {uid}), left alone",
                    file.display()
                );
                continue;
            }
            Mode::Unprivileged { .. } => {}
        }
        let run = tokio::time::timeout(TIMEOUT, cmd.output()).await;
        match run {
            Ok(Ok(out)) => {
                for line in String::from_utf8_lossy(&out.stderr).lines().take(100) {
                    log_info!("offline: uid {uid}: {}", crate::logging::visible(line));
                }
                if out.status.success() {
                    log_info!("offline: {} submitted for uid {uid}", file.display());
                } else {
                    log_warn!(
                        "offline: {} not submitted ({}), kept for the next start",
                        file.display(),
                        out.status
                    );
                }
            }
            Ok(Err(e)) => log_warn!("offline: cannot start the submitter: {e}"),
            Err(_) => log_warn!("offline: {} timed out, kept", file.display()),
        }
    }
}
