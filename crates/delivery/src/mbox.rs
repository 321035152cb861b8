//! mbox delivery into the system spool (`/var/mail/USER`), the way
//! OpenBSD's mail.local does it and Debian's MUAs (mutt, dovecot, procmail)
//! expect: the root parent makes sure the file exists and belongs to the
//! user ([`prepare_mailbox`]); the delivery child, already the user, appends
//! one mboxrd entry under both an fcntl lock and a `USER.lock` dotlock
//! ([`deliver`]), and truncates back on any failure so the mailbox never
//! ends in half a message.
//!
//! No path is ever followed through a symbolic link and no decision is made
//! on a `stat` of a name: files are opened with `O_NOFOLLOW` and checked
//! with `fstat` on the descriptor that is then used.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufWriter, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::unistd::{Gid, Uid};

use crate::headers::{HeaderBlock, write_trace_fields};
use crate::{Class, DeliveryError};

/// Longest user name accepted as a spool file name. Real systems stop at 32;
/// the bound only keeps hostile input from making long paths.
pub const MAX_NAME_LEN: usize = 128;

/// Why a mbox delivery (or its preparation) failed.
#[derive(Debug, thiserror::Error)]
pub enum MboxError {
    /// The message itself: a `Delivered-To` loop, an oversized header
    /// block, or an error reading it from the queue.
    #[error(transparent)]
    Message(#[from] DeliveryError),
    #[error("{0:?} cannot name a mailbox file in the spool")]
    BadName(String),
    #[error("refusing mailbox {path}: {reason}")]
    Unsafe { path: PathBuf, reason: Unsafe },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mailbox {path} is still locked ({lock}) after waiting")]
    Locked { path: PathBuf, lock: LockKind },
    /// The worst case: a write failed and so did the truncation that should
    /// have undone it.
    #[error(
        "{cause}; truncating {path} back to {size} bytes failed too ({source}): \
         the mailbox may end in a partial message"
    )]
    Damaged {
        path: PathBuf,
        size: u64,
        cause: Box<MboxError>,
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with the file at a mailbox path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    #[error("it is a symbolic link")]
    Symlink,
    #[error("it has {0} hard links")]
    HardLink(u64),
    #[error("it is not a regular file")]
    NotRegular,
    #[error("it is owned by uid {found}, not {expected}")]
    Owner { expected: u32, found: u32 },
    #[error("it keeps being replaced while we open it")]
    Changing,
}

/// Which of the two locks could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Dotlock,
    Fcntl,
}

impl std::fmt::Display for LockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockKind::Dotlock => "dotlock",
            LockKind::Fcntl => "fcntl lock",
        })
    }
}

impl MboxError {
    pub fn class(&self) -> Class {
        match self {
            MboxError::Message(e) => e.class(),
            // Only a broken passwd entry gives such a name; retrying
            // cannot help.
            MboxError::BadName(_) => Class::Permanent,
            MboxError::Unsafe { .. }
            | MboxError::Io { .. }
            | MboxError::Locked { .. }
            | MboxError::Damaged { .. } => Class::Temporary,
        }
    }

    /// RFC 3463 status for the bounce or the log.
    pub fn status(&self) -> &'static str {
        match self {
            MboxError::Message(e) => e.status(),
            MboxError::BadName(_) => "5.3.5",
            MboxError::Unsafe { .. } => "4.2.1",
            MboxError::Io { source, .. } if is_full(source) => "4.2.2",
            MboxError::Io { .. } | MboxError::Locked { .. } | MboxError::Damaged { .. } => "4.2.0",
        }
    }
}

fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG)
    )
}

/// A user name checked to be usable as one file name in the spool: not
/// empty, not too long, no `/`, no leading `.`, no control characters or
/// white space, and not ending in `.lock` (that name is another mailbox's
/// dotlock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxName(String);

impl MailboxName {
    pub fn new(user: &str) -> Result<MailboxName, MboxError> {
        let ok = !user.is_empty()
            && user.len() <= MAX_NAME_LEN
            && !user.starts_with('.')
            && !user.ends_with(".lock")
            && !user
                .chars()
                .any(|c| c == '/' || c.is_control() || c.is_whitespace());
        if ok {
            Ok(MailboxName(user.to_owned()))
        } else {
            Err(MboxError::BadName(user.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The recipient user's ids, as the passwd entry gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    pub uid: Uid,
    pub gid: Gid,
}

/// In the root parent, before the delivery child starts: make sure
/// `SPOOL_DIR/USER` exists as a regular file of the user's, and return its
/// path. A missing file is created (`O_EXCL`, mode 0600, owner the user,
/// group `mail_group` if given or else the user's group). An existing one
/// is left as it is (its mode and group are the administrator's choice) but
/// refused if it is a link, not a regular file, or someone else's.
pub fn prepare_mailbox(
    spool_dir: &Path,
    user: &str,
    ids: UserIds,
    mail_group: Option<Gid>,
) -> Result<PathBuf, MboxError> {
    let name = MailboxName::new(user)?;
    let path = spool_dir.join(name.as_str());
    // Bounded: each turn only repeats when another process created or
    // removed the file between our two opens.
    for _ in 0..3 {
        // O_NONBLOCK: opening a FIFO someone put there must not hang us.
        // Read-only, so nothing is written through whatever we opened.
        let existing = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path);
        match existing {
            Ok(file) => {
                check_mailbox(&file, &path, ids.uid)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_error(&path, "opening", e)),
        }
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&path);
        match created {
            Ok(file) => {
                if let Err(e) = hand_over(&file, &path, ids, mail_group) {
                    // Left behind, a root-owned file would refuse every
                    // later delivery; we made it, so it goes.
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                return Ok(path);
            }
            // Made by someone else meanwhile: check it on the next turn.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_error(&path, "creating", e)),
        }
    }
    Err(MboxError::Unsafe {
        path,
        reason: Unsafe::Changing,
    })
}

/// Give a freshly created mailbox to its user, mode 0600 whatever the umask.
fn hand_over(
    file: &File,
    path: &Path,
    ids: UserIds,
    mail_group: Option<Gid>,
) -> Result<(), MboxError> {
    let group = mail_group.unwrap_or(ids.gid);
    std::os::unix::fs::fchown(file, Some(ids.uid.as_raw()), Some(group.as_raw()))
        .map_err(|source| io("changing the owner of", path, source))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|source| io("changing the mode of", path, source))?;
    file.sync_all()
        .map_err(|source| io("syncing", path, source))
}

/// The checks on an opened mailbox, on the descriptor itself.
fn check_mailbox(file: &File, path: &Path, owner: Uid) -> Result<(), MboxError> {
    let meta = file
        .metadata()
        .map_err(|source| io("checking", path, source))?;
    let reason = if !meta.file_type().is_file() {
        Some(Unsafe::NotRegular)
    } else if meta.nlink() != 1 {
        Some(Unsafe::HardLink(meta.nlink()))
    } else if meta.uid() != owner.as_raw() {
        Some(Unsafe::Owner {
            expected: owner.as_raw(),
            found: meta.uid(),
        })
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MboxError::Unsafe {
            path: path.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Name the errors `O_NOFOLLOW` and `O_NONBLOCK` give for what they guard
/// against, so the log says why.
fn open_error(path: &Path, what: &'static str, source: std::io::Error) -> MboxError {
    let reason = match source.raw_os_error().map(Errno::from_raw) {
        // Linux says ELOOP for a final symlink under O_NOFOLLOW, the BSDs
        // EMLINK.
        Some(Errno::ELOOP | Errno::EMLINK) => Some(Unsafe::Symlink),
        // A FIFO without a reader (or a device without a driver) opened
        // for writing with O_NONBLOCK.
        Some(Errno::ENXIO) => Some(Unsafe::NotRegular),
        _ => None,
    };
    match reason {
        Some(reason) => MboxError::Unsafe {
            path: path.to_path_buf(),
            reason,
        },
        None => io(what, path, source),
    }
}

/// The envelope facts one mbox entry records.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// MAIL FROM, empty for the null sender.
    pub sender: &'a str,
    /// The recipient after expansion: becomes `Delivered-To`.
    pub recipient: &'a str,
    /// The envelope's creation time (Unix seconds), for the `From ` line,
    /// so a retried delivery writes the same separator.
    pub created: u64,
}

/// How long to wait for the mailbox locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// Tries at taking both locks; never zero, so the wait is bounded and
    /// there is always at least one try.
    pub attempts: NonZeroU32,
    /// The pause between two tries.
    pub interval: Duration,
    /// A dotlock older than this is a leftover of a crashed program and is
    /// removed.
    pub stale_after: Duration,
}

impl Default for LockPolicy {
    /// Up to about 30 s of waiting, then a temporary failure: the queue
    /// retries later, which is better than holding a delivery slot for
    /// minutes behind a MUA that keeps the mailbox open.
    fn default() -> Self {
        LockPolicy {
            attempts: NonZeroU32::MIN.saturating_add(59),
            interval: Duration::from_millis(500),
            stale_after: Duration::from_secs(5 * 60),
        }
    }
}

/// In the delivery child, as the user: append `message` (as stored in the
/// queue, CRLF line ends) to the mailbox at `path` that
/// [`prepare_mailbox`] made sure of, with the default [`LockPolicy`].
pub fn deliver(
    path: &Path,
    facts: &Facts<'_>,
    message: &mut impl BufRead,
) -> Result<(), MboxError> {
    deliver_with(path, facts, message, &LockPolicy::default())
}

/// [`deliver`] with an explicit lock policy.
pub fn deliver_with(
    path: &Path,
    facts: &Facts<'_>,
    message: &mut impl BufRead,
    policy: &LockPolicy,
) -> Result<(), MboxError> {
    deliver_reporting(path, facts, message, policy, &mut |_| {})
}

/// [`deliver_with`], calling `locked(size)` once the locks are held and
/// before the first byte is written: `size` is where this entry starts.
/// The caller passes it on (to the parent), so that if this process is
/// killed half way, [`repair`] can cut the partial entry off.
pub fn deliver_reporting(
    path: &Path,
    facts: &Facts<'_>,
    message: &mut impl BufRead,
    policy: &LockPolicy,
    locked: &mut dyn FnMut(u64),
) -> Result<(), MboxError> {
    let headers = HeaderBlock::read(message)?;
    if headers.delivered_to(facts.recipient) {
        return Err(DeliveryError::Loop(facts.recipient.to_owned()).into());
    }
    let owner = nix::unistd::geteuid();
    // Bounded: a turn repeats only when the mailbox was replaced (a MUA
    // rewriting it by rename) while we waited for the locks; appending to
    // the old, unlinked file would lose the message.
    for _ in 0..3 {
        let file = open_for_append(path, owner)?;
        let locks = Locks::acquire(&file, path, policy)?;
        if !still_in_place(&file, path)? {
            continue;
        }
        let size = file
            .metadata()
            .map_err(|source| io("checking", path, source))?
            .len();
        locked(size);
        let result = write_entry(&file, path, facts, &headers, message);
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(cause) => Err(undo(&file, path, size, cause)),
        };
        // Unlock (fcntl first, then the dotlock) only once the file is
        // whole again.
        drop(locks);
        return outcome;
    }
    Err(MboxError::Unsafe {
        path: path.to_path_buf(),
        reason: Unsafe::Changing,
    })
}

/// After a delivery process died while writing (killed, or timed out and
/// killed): cut the mailbox back to `size`, where its entry started, under
/// the fcntl lock. Run by the parent (root) at once: the dead process's
/// dotlock is still there, so no cooperating writer has appended since.
/// Returns whether anything was cut.
pub fn repair(path: &Path, size: u64) -> Result<bool, MboxError> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| open_error(path, "opening", e))?;
    let meta = file
        .metadata()
        .map_err(|source| io("checking", path, source))?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(MboxError::Unsafe {
            path: path.to_path_buf(),
            reason: Unsafe::NotRegular,
        });
    }
    let _lock = FcntlLock::acquire_bounded(&file, path, &LockPolicy::default())?;
    let now = file
        .metadata()
        .map_err(|source| io("checking", path, source))?
        .len();
    if now <= size {
        return Ok(false);
    }
    file.set_len(size)
        .map_err(|source| io("truncating", path, source))?;
    file.sync_all()
        .map_err(|source| io("syncing", path, source))?;
    Ok(true)
}

fn open_for_append(path: &Path, owner: Uid) -> Result<File, MboxError> {
    // O_NONBLOCK: opening a FIFO must fail (ENXIO) or return at once, never
    // wait for a reader. It is cleared below, once we know it is a file.
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| open_error(path, "opening", e))?;
    check_mailbox(&file, path, owner)?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::O_APPEND))
        .map_err(|e| io("setting the flags of", path, e.into()))?;
    Ok(file)
}

/// Whether `path` still names the file we hold, with no other link to it.
/// Only compares; the decision to write is on the descriptor.
fn still_in_place(file: &File, path: &Path) -> Result<bool, MboxError> {
    let held = file
        .metadata()
        .map_err(|source| io("checking", path, source))?;
    if held.nlink() != 1 {
        return Ok(false);
    }
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io("checking", path, source)),
    }
}

/// Cut the mailbox back to `size` after `cause`, so it holds exactly what
/// it held before this delivery.
fn undo(file: &File, path: &Path, size: u64, cause: MboxError) -> MboxError {
    match file.set_len(size) {
        Ok(()) => {
            // Best effort: the truncation is what matters, and it is done.
            let _ = file.sync_all();
            cause
        }
        Err(source) => MboxError::Damaged {
            path: path.to_path_buf(),
            size,
            cause: Box::new(cause),
            source,
        },
    }
}

/// Write one whole entry and fsync it.
fn write_entry(
    file: &File,
    path: &Path,
    facts: &Facts<'_>,
    headers: &HeaderBlock,
    rest: &mut impl BufRead,
) -> Result<(), MboxError> {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    match write_body(&mut out, path, facts, headers, rest) {
        Ok(()) => {}
        Err(e) => {
            // Discard what is still buffered: dropping the BufWriter would
            // write it, after the failure, at the end of the mailbox.
            let _ = out.into_parts();
            return Err(e);
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| io("writing", path, e.into_error()))?;
    file.sync_all()
        .map_err(|source| io("syncing", path, source))
}

fn write_body(
    out: &mut BufWriter<&File>,
    path: &Path,
    facts: &Facts<'_>,
    headers: &HeaderBlock,
    rest: &mut impl BufRead,
) -> Result<(), MboxError> {
    let werr = |source| io("writing", path, source);
    out.write_all(from_line(facts).as_bytes()).map_err(werr)?;
    write_trace_fields(out, facts.sender, facts.recipient).map_err(werr)?;
    let mut body = Mboxrd::new(out);
    body.write(&headers.raw).map_err(werr)?;
    loop {
        let chunk = rest.fill_buf().map_err(DeliveryError::Read)?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        body.write(chunk).map_err(werr)?;
        rest.consume(n);
    }
    body.finish().map_err(werr)
}

/// `From SENDER DATE\n`, the separator every mbox reader looks for.
fn from_line(facts: &Facts<'_>) -> String {
    let sender: String = if facts.sender.is_empty() {
        "MAILER-DAEMON".to_owned()
    } else {
        // Readers split this line on white space; a quoted local part with
        // a space in it must not shift the date.
        facts
            .sender
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    format!("From {sender} {}\n", crate::date::asctime(facts.created))
}

/// Streams message bytes into mbox form: CRLF becomes LF (a bare CR stays),
/// and every line that matches `>*From ` gets one more `>` (mboxrd, which
/// readers undo exactly). Headers are quoted too: a header line starting
/// with `From ` is not a field, and unquoted it would split the message.
/// Memory is constant whatever the input: a run of `>` is only counted.
struct Mboxrd<W: Write> {
    out: W,
    state: Line,
    /// A CR was the last byte seen; whether it is dropped depends on the
    /// next byte.
    pending_cr: bool,
}

/// Where the writer is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line, having held back `quotes` `>` and the first
    /// `matched` bytes of `From `, none of them written yet.
    Start { quotes: u64, matched: usize },
    /// Past the point where quoting is decided.
    Middle,
}

const FROM: &[u8; 5] = b"From ";

impl<W: Write> Mboxrd<W> {
    fn new(out: W) -> Self {
        Mboxrd {
            out,
            state: Line::Start {
                quotes: 0,
                matched: 0,
            },
            pending_cr: false,
        }
    }

    fn write(&mut self, mut input: &[u8]) -> std::io::Result<()> {
        while let Some((&first, tail)) = input.split_first() {
            if self.pending_cr {
                self.pending_cr = false;
                if first != b'\n' {
                    self.byte(b'\r')?;
                }
            }
            if self.state == Line::Middle {
                // Fast path: copy up to the next CR or LF in one write; that
                // byte itself goes the slow way below, on the next turn.
                let end = input
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len());
                if end > 0 {
                    let (text, rest) = input.split_at(end);
                    self.out.write_all(text)?;
                    input = rest;
                    continue;
                }
            }
            if first == b'\r' {
                self.pending_cr = true;
            } else {
                self.byte(first)?;
            }
            input = tail;
        }
        Ok(())
    }

    /// One content byte (a CR here is a bare CR).
    fn byte(&mut self, b: u8) -> std::io::Result<()> {
        match self.state {
            Line::Middle => {
                self.out.write_all(&[b])?;
                if b == b'\n' {
                    self.state = Line::Start {
                        quotes: 0,
                        matched: 0,
                    };
                }
                Ok(())
            }
            Line::Start { quotes, matched } => {
                if matched == 0 && b == b'>' {
                    self.state = Line::Start {
                        quotes: quotes.saturating_add(1),
                        matched,
                    };
                    Ok(())
                } else if FROM.get(matched) == Some(&b) {
                    if matched + 1 == FROM.len() {
                        self.gts(quotes.saturating_add(1))?;
                        self.out.write_all(FROM)?;
                        self.state = Line::Middle;
                    } else {
                        self.state = Line::Start {
                            quotes,
                            matched: matched + 1,
                        };
                    }
                    Ok(())
                } else {
                    self.release_held()?;
                    self.byte(b)
                }
            }
        }
    }

    /// Write what the line start held back, unquoted: it did not match.
    fn release_held(&mut self) -> std::io::Result<()> {
        if let Line::Start { quotes, matched } = self.state {
            self.gts(quotes)?;
            self.out
                .write_all(FROM.get(..matched).unwrap_or_default())?;
            self.state = Line::Middle;
        }
        Ok(())
    }

    fn gts(&mut self, mut n: u64) -> std::io::Result<()> {
        const GTS: [u8; 64] = [b'>'; 64];
        while n > 0 {
            let k = n.min(GTS.len() as u64);
            self.out
                .write_all(GTS.get(..k as usize).unwrap_or_default())?;
            n -= k;
        }
        Ok(())
    }

    /// End the message: complete its last line, then the blank line that
    /// separates it from the next entry.
    fn finish(mut self) -> std::io::Result<()> {
        if self.pending_cr {
            self.pending_cr = false;
            self.byte(b'\r')?;
        }
        let at_line_start = self.state
            == Line::Start {
                quotes: 0,
                matched: 0,
            };
        if !at_line_start {
            self.release_held()?;
            self.out.write_all(b"\n")?;
        }
        self.out.write_all(b"\n")
    }
}

/// Both locks on the mailbox, released in reverse order when dropped.
struct Locks<'a> {
    _fcntl: FcntlLock<'a>,
    _dot: Option<DotLock>,
}

impl<'a> Locks<'a> {
    /// Take the fcntl lock, then the dotlock, without ever blocking: when
    /// the second is busy the first is given back before the pause, so
    /// programs that take them in the other order cannot deadlock with us
    /// (the scheme Debian's policy describes for mailbox locking).
    fn acquire(file: &'a File, path: &Path, policy: &LockPolicy) -> Result<Locks<'a>, MboxError> {
        let lock_path = dotlock_path(path);
        let mut busy = LockKind::Fcntl;
        for attempt in 0..policy.attempts.get() {
            if attempt > 0 {
                std::thread::sleep(policy.interval);
            }
            let Some(fcntl) = FcntlLock::try_acquire(file, path)? else {
                busy = LockKind::Fcntl;
                continue;
            };
            match DotLock::try_acquire(&lock_path, policy.stale_after)? {
                Dot::Held(dot) => {
                    return Ok(Locks {
                        _fcntl: fcntl,
                        _dot: Some(dot),
                    });
                }
                // The spool is not writable for us (Debian's /var/mail is
                // root:mail 2775 and the child has no supplementary
                // groups): the fcntl lock alone must do, as it does for
                // mutt and dovecot in the same position.
                Dot::Impossible => {
                    return Ok(Locks {
                        _fcntl: fcntl,
                        _dot: None,
                    });
                }
                Dot::Busy => busy = LockKind::Dotlock,
            }
        }
        Err(MboxError::Locked {
            path: path.to_path_buf(),
            lock: busy,
        })
    }
}

/// A POSIX record lock on the whole file. Process-wide, as MUAs expect
/// (they use the same kind); closing the file would release it as well.
struct FcntlLock<'a> {
    file: &'a File,
}

impl<'a> FcntlLock<'a> {
    fn try_acquire(file: &'a File, path: &Path) -> Result<Option<FcntlLock<'a>>, MboxError> {
        match fcntl(file, FcntlArg::F_SETLK(&whole_file(libc::F_WRLCK))) {
            Ok(_) => Ok(Some(FcntlLock { file })),
            Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => Ok(None),
            Err(e) => Err(io("locking", path, e.into())),
        }
    }

    /// Retry as `policy` says; the fcntl lock only (see [`repair`]).
    fn acquire_bounded(
        file: &'a File,
        path: &Path,
        policy: &LockPolicy,
    ) -> Result<FcntlLock<'a>, MboxError> {
        for attempt in 0..policy.attempts.get() {
            if attempt > 0 {
                std::thread::sleep(policy.interval);
            }
            if let Some(lock) = FcntlLock::try_acquire(file, path)? {
                return Ok(lock);
            }
        }
        Err(MboxError::Locked {
            path: path.to_path_buf(),
            lock: LockKind::Fcntl,
        })
    }
}

impl Drop for FcntlLock<'_> {
    fn drop(&mut self) {
        // Nothing to do on failure: closing the file releases it anyway.
        let _ = fcntl(self.file, FcntlArg::F_SETLK(&whole_file(libc::F_UNLCK)));
    }
}

fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        // 0: to the end of the file, however far it grows.
        l_len: 0,
        l_pid: 0,
    }
}

/// `PATH.lock`, beside the mailbox.
fn dotlock_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// A `PATH.lock` file we created; removed when dropped.
struct DotLock {
    path: PathBuf,
    /// To remove only our own lock, not one that replaced it after ours
    /// was judged stale by someone else.
    dev: u64,
    ino: u64,
}

enum Dot {
    Held(DotLock),
    Busy,
    /// The directory does not let us create files.
    Impossible,
}

impl DotLock {
    fn try_acquire(path: &Path, stale_after: Duration) -> Result<Dot, MboxError> {
        // Two tries: the second only after removing a stale lock.
        for _ in 0..2 {
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
                .open(path);
            match created {
                Ok(file) => {
                    let meta = file
                        .metadata()
                        .map_err(|source| io("checking", path, source))?;
                    return Ok(Dot::Held(DotLock {
                        path: path.to_path_buf(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !is_stale(path, stale_after) {
                        return Ok(Dot::Busy);
                    }
                    // Left by a program that died. A racing deliverer may
                    // remove it too, or even a fresh lock made between our
                    // look and the unlink: the classic dotlock race, which
                    // the fcntl lock we hold covers.
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => return Ok(Dot::Busy),
                    }
                }
                Err(e)
                    if matches!(
                        e.raw_os_error().map(Errno::from_raw),
                        Some(Errno::EACCES | Errno::EPERM | Errno::EROFS)
                    ) =>
                {
                    return Ok(Dot::Impossible);
                }
                Err(source) => return Err(io("creating the lock", path, source)),
            }
        }
        Ok(Dot::Busy)
    }
}

/// Whether the lock at `path` was last changed more than `stale_after`
/// ago. The change time, not the modification time: a user cannot set it,
/// so a lock cannot be made to look fresh forever.
fn is_stale(path: &Path, stale_after: Duration) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        // Gone already: worth another try.
        return true;
    };
    let changed = UNIX_EPOCH
        + Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        );
    SystemTime::now()
        .duration_since(changed)
        .is_ok_and(|age| age > stale_after)
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> MboxError {
    MboxError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mboxrd(input: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Mboxrd::new(&mut out);
        for chunk in input {
            w.write(chunk).unwrap();
        }
        w.finish().unwrap();
        out
    }

    #[test]
    fn from_lines_are_quoted_one_level_more() {
        assert_eq!(
            mboxrd(&[b"From x\r\n>From y\r\n>>From z\r\nFrom\r\n>From\r\n Fro\r\n"]),
            b">From x\n>>From y\n>>>From z\nFrom\n>From\n Fro\n\n"
        );
    }

    #[test]
    fn only_line_starts_are_quoted() {
        assert_eq!(
            mboxrd(&[b"a From b\r\nx>From y\r\n"]),
            b"a From b\nx>From y\n\n"
        );
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let whole: &[u8] = b"A: b\r\n\r\nFrom a\r\n>>From b\r\nx\ry\r\n>Fro\r\nFrom\r\r\n";
        let expected = mboxrd(&[whole]);
        assert_eq!(
            expected,
            b"A: b\n\n>From a\n>>>From b\nx\ry\n>Fro\nFrom\r\n\n"
        );
        for split in 0..=whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(mboxrd(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(mboxrd(&bytes), expected);
    }

    #[test]
    fn unterminated_last_line_and_trailing_cr() {
        assert_eq!(mboxrd(&[b"a\r\nb"]), b"a\nb\n\n");
        assert_eq!(mboxrd(&[b"a\r"]), b"a\r\n\n");
        assert_eq!(mboxrd(&[b">>Fro"]), b">>Fro\n\n");
        assert_eq!(mboxrd(&[b""]), b"\n");
    }

    #[test]
    fn a_long_run_of_quotes_is_counted_not_buffered() {
        let mut input = vec![b'>'; 100_000];
        input.extend_from_slice(b"From x\r\n");
        let out = mboxrd(&[&input]);
        assert_eq!(out.len(), 100_001 + 8);
        assert!(out.starts_with(&[b'>'; 100_001]));
        assert!(out.ends_with(b">From x\n\n"));
    }

    #[test]
    fn from_line_sender() {
        let facts = Facts {
            sender: "",
            recipient: "bob@example.org",
            created: 0,
        };
        assert_eq!(
            from_line(&facts),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
        );
        let facts = Facts {
            sender: "\"a b\"@x\n",
            ..facts
        };
        assert_eq!(
            from_line(&facts),
            "From \"a_b\"@x_ Thu Jan  1 00:00:00 1970\n"
        );
    }

    #[test]
    fn mailbox_names() {
        for good in ["bob", "bob.smith", "b-o_b", "Bob1"] {
            assert!(MailboxName::new(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", ".", "..", ".bob", "a/b", "../etc", "a\nb", "a b", "a\0b", "bob.lock", &long,
        ] {
            let err = MailboxName::new(bad).unwrap_err();
            assert!(matches!(err, MboxError::BadName(_)), "{bad:?}");
            assert_eq!(err.class(), Class::Permanent);
        }
    }

    #[test]
    fn classes_and_statuses() {
        let full = io(
            "writing",
            Path::new("/x"),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!((full.class(), full.status()), (Class::Temporary, "4.2.2"));
        let locked = MboxError::Locked {
            path: PathBuf::from("/x"),
            lock: LockKind::Dotlock,
        };
        assert_eq!(
            (locked.class(), locked.status()),
            (Class::Temporary, "4.2.0")
        );
        assert_eq!(
            locked.to_string(),
            "mailbox /x is still locked (dotlock) after waiting"
        );
    }

    #[test]
    fn dotlock_path_is_beside_the_mailbox() {
        assert_eq!(
            dotlock_path(Path::new("/var/mail/bob")),
            PathBuf::from("/var/mail/bob.lock")
        );
    }
}
