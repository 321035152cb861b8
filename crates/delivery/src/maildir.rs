//! Maildir delivery: write into `tmp/`, fsync, rename into `new/`, fsync
//! `new/`. The file name comes from the envelope, not from the clock, so a
//! delivery repeated after a crash (done, but not yet recorded) replaces its
//! own file instead of leaving a second copy.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::DeliveryError;
use crate::headers::HeaderBlock;

/// One delivery into one Maildir.
#[derive(Debug, Clone)]
pub struct Maildir<'a> {
    /// The Maildir's top directory (already expanded: no `~`, no format).
    pub path: &'a Path,
    /// `junk`: messages with `X-Spam: yes` go to the `.Junk` folder.
    pub junk: bool,
    /// The recipient's sub-address (`bob+lists` -> `lists`): delivered to
    /// the `.lists` folder when the user made one; never created here.
    pub extension: Option<&'a str>,
}

/// The facts of the envelope the delivery records in the file.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// A name unique to this envelope and stable across retries (the
    /// envelope id); used in the file name.
    pub unique: &'a str,
    /// The envelope's creation time (seconds), for the file name.
    pub created: u64,
    /// The server name, for the file name.
    pub hostname: &'a str,
    /// MAIL FROM, empty for the null sender: becomes `Return-Path`.
    pub sender: &'a str,
    /// The recipient after expansion: becomes `Delivered-To`.
    pub recipient: &'a str,
}

/// Deliver `message` (as stored in the queue: CRLF line ends) and return
/// the path of the new file. Line ends become LF, as Maildir readers expect.
pub fn deliver(
    maildir: &Maildir<'_>,
    envelope: &Envelope<'_>,
    message: &mut impl BufRead,
) -> Result<PathBuf, DeliveryError> {
    let headers = HeaderBlock::read(message)?;
    if headers.delivered_to(envelope.recipient) {
        return Err(DeliveryError::Loop(envelope.recipient.to_owned()));
    }
    let folder = if maildir.junk && headers.is_spam() {
        maildir.path.join(".Junk")
    } else {
        match maildir.extension.map(folder_name) {
            Some(name) if maildir.path.join(&name).is_dir() => maildir.path.join(name),
            _ => maildir.path.to_path_buf(),
        }
    };
    ensure_maildir(maildir.path)?;
    ensure_maildir(&folder)?;

    let name = file_name(envelope);
    let tmp = folder.join("tmp").join(&name);
    let new = folder.join("new").join(&name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        // Never write through a link someone planted in tmp/.
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|source| io("creating", &tmp, source))?;
    let result = write_message(file, envelope, &headers, message, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &new).map_err(|source| io("renaming into", &new, source))?;
    sync_dir(&folder.join("new"))?;
    Ok(new)
}

fn write_message(
    file: File,
    envelope: &Envelope<'_>,
    headers: &HeaderBlock,
    rest: &mut impl BufRead,
    path: &Path,
) -> Result<(), DeliveryError> {
    let mut out = BufWriter::new(file);
    let werr = |source| io("writing", path, source);
    crate::headers::write_trace_fields(&mut out, envelope.sender, envelope.recipient)
        .map_err(werr)?;
    write_lf(&mut out, &headers.raw).map_err(werr)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = rest
            .read_until(b'\n', &mut line)
            .map_err(DeliveryError::Read)?;
        if n == 0 {
            break;
        }
        write_lf(&mut out, &line).map_err(werr)?;
    }
    let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
    file.sync_all()
        .map_err(|source| io("syncing", path, source))
}

/// Write `bytes` with every CRLF turned into LF.
fn write_lf(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let mut start = 0;
    let mut i = 0;
    while let Some(pos) = bytes
        .get(i..)
        .and_then(|b| b.windows(2).position(|w| w == b"\r\n"))
    {
        let cr = i + pos;
        out.write_all(bytes.get(start..cr).unwrap_or_default())?;
        start = cr + 1;
        i = cr + 2;
    }
    out.write_all(bytes.get(start..).unwrap_or_default())
}

/// The Maildir++ folder for a sub-address: `.` then the extension with
/// the characters OpenSMTPD escapes (and `/`) turned into `:`, so it is
/// always one directory entry below the Maildir.
fn folder_name(extension: &str) -> String {
    let cleaned: String = extension
        .chars()
        .map(|c| {
            if "!#$%&'*/?^`{|}~".contains(c) || c.is_control() {
                ':'
            } else {
                c
            }
        })
        .collect();
    format!(".{cleaned}")
}

/// `<created>.R<unique>.<host>`, the host escaped as the Maildir
/// convention asks (`/` and `:` cannot appear in a name).
fn file_name(envelope: &Envelope<'_>) -> String {
    let host: String = envelope
        .hostname
        .chars()
        .map(|c| match c {
            '/' => "\\057".to_owned(),
            ':' => "\\072".to_owned(),
            c if c.is_ascii_graphic() => c.to_string(),
            _ => "_".to_owned(),
        })
        .collect();
    let unique: String = envelope
        .unique
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{}.R{}.{}", envelope.created, unique, host)
}

/// Create `dir` with tmp/, new/ and cur/ if they are missing.
fn ensure_maildir(dir: &Path) -> Result<(), DeliveryError> {
    for sub in ["", "tmp", "new", "cur"] {
        let path = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return Err(DeliveryError::NotADirectory(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io("checking", &path, source)),
        }
        match DirBuilder::new()
            .recursive(sub.is_empty())
            .mode(0o700)
            .create(&path)
        {
            Ok(()) => {}
            // Another delivery made it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io("creating", &path, source)),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), DeliveryError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("syncing", dir, source))
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> DeliveryError {
    DeliveryError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rsmtpd-maildir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn envelope() -> Envelope<'static> {
        Envelope {
            unique: "a1b2c3d4e5f60718",
            created: 1_700_000_000,
            hostname: "mx.example.org",
            sender: "alice@example.net",
            recipient: "bob@example.org",
        }
    }

    fn run(dir: &Path, junk: bool, message: &[u8]) -> Result<PathBuf, DeliveryError> {
        deliver(
            &Maildir {
                path: dir,
                junk,
                extension: None,
            },
            &envelope(),
            &mut std::io::Cursor::new(message.to_vec()),
        )
    }

    #[test]
    fn delivers_into_new_with_lf_line_ends_and_trace_headers() {
        let dir = temp_dir("basic").join("Maildir");
        let path = run(&dir, false, b"Subject: hi\r\n\r\nbody\r\nline 2\r\n").unwrap();
        assert_eq!(
            path,
            dir.join("new/1700000000.Ra1b2c3d4e5f60718.mx.example.org")
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"Return-Path: <alice@example.net>\nDelivered-To: bob@example.org\nSubject: hi\n\nbody\nline 2\n"
        );
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(dir.join("cur").is_dir());
    }

    #[test]
    fn same_envelope_twice_leaves_one_file() {
        let dir = temp_dir("twice");
        run(&dir, false, b"Subject: x\r\n\r\nb\r\n").unwrap();
        run(&dir, false, b"Subject: x\r\n\r\nb\r\n").unwrap();
        assert_eq!(std::fs::read_dir(dir.join("new")).unwrap().count(), 1);
    }

    #[test]
    fn delivered_to_loop_is_a_permanent_failure() {
        let dir = temp_dir("loop");
        let err = run(&dir, false, b"Delivered-To: BOB@example.org\r\n\r\nb\r\n").unwrap_err();
        assert!(matches!(err, DeliveryError::Loop(_)));
        assert_eq!(err.class(), Class::Permanent);
        assert_eq!(err.status(), "5.4.6");
        assert!(!dir.join("new").exists());
    }

    #[test]
    fn junk_goes_to_the_junk_folder_only_when_asked() {
        let dir = temp_dir("junk");
        let spam = b"X-Spam: yes\r\n\r\nbuy\r\n";
        let p = run(&dir, true, spam).unwrap();
        assert!(p.starts_with(dir.join(".Junk/new")), "{}", p.display());
        let dir2 = temp_dir("nojunk");
        let p = run(&dir2, false, spam).unwrap();
        assert!(p.starts_with(dir2.join("new")));
    }

    #[test]
    fn a_file_in_place_of_a_directory_is_a_temporary_failure() {
        let dir = temp_dir("notdir");
        std::fs::write(dir.join("new"), b"").unwrap();
        let err = run(&dir, false, b"A: b\r\n\r\n").unwrap_err();
        assert!(matches!(err, DeliveryError::NotADirectory(_)));
        assert_eq!(err.class(), Class::Temporary);
    }

    #[test]
    fn a_symlink_planted_in_tmp_is_not_followed() {
        let dir = temp_dir("symlink");
        run(&dir, false, b"A: b\r\n\r\n").unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let name = "1700000000.Ra1b2c3d4e5f60718.mx.example.org";
        std::os::unix::fs::symlink(&victim, dir.join("tmp").join(name)).unwrap();
        assert!(run(&dir, false, b"A: b\r\n\r\n").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn sub_addresses_go_to_an_existing_folder_only() {
        let dir = temp_dir("subaddr");
        let run_ext = |ext: &str| {
            deliver(
                &Maildir {
                    path: &dir,
                    junk: false,
                    extension: Some(ext),
                },
                &envelope(),
                &mut std::io::Cursor::new(b"A: b\r\n\r\n".to_vec()),
            )
            .unwrap()
        };
        // No .lists folder yet: the inbox.
        assert!(run_ext("lists").starts_with(dir.join("new")));
        std::fs::create_dir(dir.join(".lists")).unwrap();
        assert!(run_ext("lists").starts_with(dir.join(".lists/new")));
        assert!(dir.join(".lists/cur").is_dir());
        // Escaped characters cannot name another place.
        assert_eq!(folder_name("../../etc"), "...:..:etc");
        assert_eq!(folder_name("a|b"), ".a:b");
    }

    #[test]
    fn crlf_conversion_keeps_bare_bytes() {
        let mut out = Vec::new();
        write_lf(&mut out, b"a\r\nb\rc\nd\r\n\r\n").unwrap();
        assert_eq!(out, b"a\nb\rc\nd\n\n");
    }

    #[test]
    fn hostile_names_cannot_leave_the_folder() {
        let env = Envelope {
            unique: "../../etc/passwd",
            hostname: "a/b:c d",
            ..envelope()
        };
        assert_eq!(file_name(&env), "1700000000.Retcpasswd.a\\057b\\072c_d");
    }
}
