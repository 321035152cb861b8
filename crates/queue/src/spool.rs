//! The spool: the directory tree under the root, the commit protocol,
//! per-envelope updates and removals, and start-up recovery.
//!
//! ```text
//! <root>/incoming/<msgid>/message           being received; never committed
//! <root>/incoming/<msgid>/<evpid>           staged by a commit in progress
//! <root>/queue/<bucket>/<msgid>/message     committed (bucket = 2 first hex digits)
//! <root>/queue/<bucket>/<msgid>/<evpid>     one file per recipient
//! <root>/queue/<bucket>/<msgid>/<evpid>.tmp an update in progress
//! <root>/purge/spare.<n>                    a finished message's directory, kept
//!                                            for a new message to reuse
//! <root>/corrupt/<name>.<rand>[.reason]     what failed its check, and why
//! <root>/offline/                           not the queue's: sendmail's offline
//!                                            submissions (world-writable, sticky;
//!                                            the parent owns it)
//! ```
//!
//! Callers serialise operations on one message (the queue process does);
//! removals take a lock so that two "last envelope" removals cannot race.
//!
//! Finished message directories are recycled rather than deleted: a new
//! message takes over a spare directory and the files in it, so that a
//! steady flow of mail allocates no inodes. On ext4 without a journal,
//! allocating an inode scans past every inode freed in the last one to six
//! minutes (`recently_deleted`): with three inodes per message that scan
//! was a third of the machine's CPU time (docs/performance.md).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::codec::{self, DecodeError, EncodeError, MAX_ENVELOPE_SIZE};
use crate::envelope::Envelope;
use crate::id::{EnvelopeId, MsgId};
use crate::random::Urandom;

const INCOMING: &str = "incoming";
const QUEUE: &str = "queue";
const PURGE: &str = "purge";
const CORRUPT: &str = "corrupt";
const MESSAGE: &str = "message";
/// The directories right below the root: whoever prepares the spool for
/// the queue user (the parent, as root) creates exactly these.
pub const SPOOL_DIRS: [&str; 4] = [INCOMING, QUEUE, PURGE, CORRUPT];
const TMP_SUFFIX: &str = ".tmp";
/// Tries to find an unused message id before giving up; with 2^32 ids a
/// second try is already rare.
const ID_TRIES: usize = 32;
/// Spare message directories kept for reuse: enough for every message in
/// flight at once under load; beyond that, finished ones are deleted.
const MAX_SPARES: usize = 512;

/// A spool operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("envelope {evpid}: {source}")]
    Encode {
        evpid: EnvelopeId,
        #[source]
        source: EncodeError,
    },
    #[error("envelope {evpid} does not belong to message {msgid}")]
    WrongMessage { msgid: MsgId, evpid: EnvelopeId },
    #[error("commit of message {0} without any envelope")]
    NoEnvelopes(MsgId),
    #[error("envelope {0} given twice")]
    DuplicateEnvelope(EnvelopeId),
    #[error("no message {0} in this state")]
    UnknownMessage(MsgId),
    #[error("no envelope {0} in the queue")]
    UnknownEnvelope(EnvelopeId),
    #[error("no free message id after {ID_TRIES} tries")]
    IdSpaceExhausted,
    #[error("group commit: fsync of {path} failed ({kind})")]
    RoundSync { path: PathBuf, kind: io::ErrorKind },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Why something was moved into corrupt/.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptReason {
    /// An envelope file that fails its check.
    Decode(DecodeError),
    /// An envelope file that could not be read.
    Unreadable(io::ErrorKind),
    /// The envelope inside is not the one its file name says.
    IdMismatch { inside: EnvelopeId },
    /// A name or file type that has no place in the queue.
    UnexpectedEntry,
    /// A message directory in a bucket that its id does not belong to.
    WrongBucket,
    /// A message directory without its message file.
    MissingMessage,
    /// A message directory without a single valid envelope.
    NoValidEnvelope,
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::Decode(e) => write!(f, "envelope fails its check: {e}"),
            CorruptReason::Unreadable(k) => write!(f, "envelope unreadable: {k}"),
            CorruptReason::IdMismatch { inside } => {
                write!(f, "file name does not match envelope id {inside}")
            }
            CorruptReason::UnexpectedEntry => f.write_str("unexpected entry"),
            CorruptReason::WrongBucket => f.write_str("message directory in the wrong bucket"),
            CorruptReason::MissingMessage => f.write_str("message file missing"),
            CorruptReason::NoValidEnvelope => f.write_str("no valid envelope"),
        }
    }
}

/// One thing load() moved into corrupt/.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedAside {
    pub from: PathBuf,
    pub to: PathBuf,
    pub reason: CorruptReason,
}

/// What load() found. Everything it removed or moved is listed, so the
/// caller can log it: nothing disappears silently.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The valid committed envelopes, sorted by id.
    pub envelopes: Vec<Envelope>,
    pub moved_aside: Vec<MovedAside>,
    /// Messages under incoming/ (never acknowledged), removed.
    pub discarded_incoming: Vec<PathBuf>,
    /// Messages under purge/ (finished, removal interrupted), removed.
    pub purged: Vec<PathBuf>,
    /// Leftover temp files of interrupted updates, removed (the envelope
    /// they would have replaced is still there).
    pub removed_temp: Vec<PathBuf>,
}

/// The on-disk queue.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    rng: Urandom,
    removal: Mutex<()>,
    spares: Mutex<Spares>,
    /// `incoming/` and the buckets, kept open for their fsyncs at every
    /// commit (an open bucket is also known to exist).
    incoming: File,
    buckets: Mutex<HashMap<String, Arc<File>>>,
}

/// The directories under purge/ that a new message may take over.
#[derive(Debug, Default)]
struct Spares {
    free: Vec<u64>,
    /// The next spare's number: unique within a run (purge/ starts empty).
    next: u64,
}

fn spare_name(n: u64) -> String {
    format!("spare.{n}")
}

/// Where commit staging stops; only tests stop early, to leave the on-disk
/// state a crash at that point would leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CommitStep {
    /// Envelope file number n (0-based) written and fsynced.
    EnvelopeWritten(usize),
    MessageSynced,
    MessageDirSynced,
    BucketReady,
    Renamed,
}

pub(crate) enum Staged {
    /// Renamed into the queue; these directories still need an fsync.
    Done {
        bucket_dir: PathBuf,
        bucket: Arc<File>,
    },
    #[cfg(test)]
    Stopped,
}

fn sync_dir(path: &Path) -> Result<(), SpoolError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", path))
}

fn make_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

/// Makes sure `path` is a real directory (not a symlink) of mode 0700,
/// creating it if missing. Returns whether it was just created (by us or
/// by a concurrent caller): the caller then makes its name durable, and
/// does not rely on the other caller's fsync having happened yet.
fn ensure_dir(path: &Path) -> Result<bool, SpoolError> {
    let not_a_dir = || SpoolError::NotADirectory {
        path: path.to_owned(),
    };
    let created = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => false,
        Ok(_) => return Err(not_a_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match make_dir(path) {
            Ok(()) => true,
            // Another commit made it between our stat and our mkdir.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
            Err(e) => return Err(io_err("mkdir", path)(e)),
        },
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    if !meta.is_dir() {
        return Err(not_a_dir());
    }
    // The umask may have taken bits away, and an old tree may have more.
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", path))?;
    }
    Ok(created)
}

fn write_synced(path: &Path, data: &[u8], create_new: bool) -> Result<(), SpoolError> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    let mut f = opts.open(path).map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

/// Ends a message file from [`Spool::create_message`] where its writer's
/// offset is: a reused file is longer, with zeros after what was written.
pub fn end_message(file: &File) -> io::Result<()> {
    let mut at = file;
    let len = io::Seek::stream_position(&mut at)?;
    file.set_len(len)
}

/// Overwrites a retired message file with zeros, keeping its blocks; one
/// larger than [`MAX_BLANKED`] is emptied instead (rare, and zeroing it
/// would write it all again).
fn blank(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_BLANKED {
        return file.set_len(0);
    }
    const ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];
    let mut left = usize::try_from(len).unwrap_or(0);
    let mut out = &file;
    while left > 0 {
        let n = left.min(ZEROS.len());
        out.write_all(ZEROS.get(..n).unwrap_or_default())?;
        left -= n;
    }
    Ok(())
}

/// The largest message file a spare keeps its blocks for.
const MAX_BLANKED: u64 = 256 * 1024;

fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn exists(path: &Path) -> Result<bool, SpoolError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Reads at most MAX_ENVELOPE_SIZE + 1 bytes: enough to tell "too large".
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = Vec::new();
    f.take(MAX_ENVELOPE_SIZE as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Entries of a directory, sorted by name, with their type (not followed).
fn list(dir: &Path) -> Result<Vec<(String, PathBuf, fs::FileType)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("readdir", dir))? {
        let entry = entry.map_err(io_err("readdir", dir))?;
        let ft = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        // A name that is not UTF-8 is kept lossy: it is unexpected anyway
        // and moved aside by its real path.
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path(), ft));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The committed envelopes under `root`, read without changing anything:
/// what `smtpctl show queue` prints while the daemon is down. Whatever
/// [`Spool::load`] would move aside or clean is skipped here and left for
/// it. Sorted by id.
pub fn scan_read_only(root: &Path) -> Result<Vec<Envelope>, SpoolError> {
    let mut out = Vec::new();
    for (bname, bpath, bft) in list(&root.join(QUEUE))? {
        if !bft.is_dir() || bname.len() != 2 {
            continue;
        }
        for (mname, mpath, mft) in list(&bpath)? {
            let Ok(msgid) = mname.parse::<MsgId>() else {
                continue;
            };
            if !mft.is_dir() || msgid.bucket() != bname {
                continue;
            }
            for (name, path, ft) in list(&mpath)? {
                let Ok(id) = name.parse::<EnvelopeId>() else {
                    continue;
                };
                if !ft.is_file() || id.msgid() != msgid {
                    continue;
                }
                if let Some(Ok(env)) = read_bounded(&path).ok().map(|b| codec::decode(&b))
                    && env.id == id
                {
                    out.push(env);
                }
            }
        }
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

impl Spool {
    /// Opens the spool at `root`, creating the tree if missing. Opens
    /// /dev/urandom too: call before chroot, or use [`Spool::open_with`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let rng = Urandom::open().map_err(io_err("open", Path::new("/dev/urandom")))?;
        Spool::open_with(root, rng)
    }

    /// Opens the spool with an already open random source.
    pub fn open_with(root: impl Into<PathBuf>, rng: Urandom) -> Result<Spool, SpoolError> {
        let root = root.into();
        let mut created = false;
        match fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(SpoolError::NotADirectory { path: root }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                make_dir(&root).map_err(io_err("mkdir", &root))?;
            }
            Err(e) => return Err(io_err("stat", &root)(e)),
        }
        for sub in SPOOL_DIRS {
            created |= ensure_dir(&root.join(sub))?;
        }
        if created {
            sync_dir(&root)?;
        }
        let incoming_path = root.join(INCOMING);
        let incoming = File::open(&incoming_path).map_err(io_err("open", &incoming_path))?;
        Ok(Spool {
            root,
            rng,
            removal: Mutex::new(()),
            spares: Mutex::new(Spares::default()),
            incoming,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn incoming_root(&self) -> PathBuf {
        self.root.join(INCOMING)
    }

    fn incoming_dir(&self, m: MsgId) -> PathBuf {
        self.root.join(INCOMING).join(m.to_string())
    }

    fn bucket_dir(&self, m: MsgId) -> PathBuf {
        self.root.join(QUEUE).join(m.bucket())
    }

    fn queue_dir(&self, m: MsgId) -> PathBuf {
        self.bucket_dir(m).join(m.to_string())
    }

    fn envelope_path(&self, id: EnvelopeId) -> PathBuf {
        self.queue_dir(id.msgid()).join(id.to_string())
    }

    /// A fresh envelope id for a recipient of `msgid`.
    pub fn new_envelope_id(&self, msgid: MsgId) -> Result<EnvelopeId, SpoolError> {
        EnvelopeId::random(msgid, &self.rng).map_err(io_err("read", Path::new("/dev/urandom")))
    }

    /// Creates a message under incoming/ and returns its id and its file,
    /// open for writing at offset 0, to hand to the process that receives
    /// the data. A spare directory is reused when there is one; its file
    /// holds only zeros, and whoever writes the message ends it with
    /// [`end_message`] before the commit.
    pub fn create_message(&self) -> Result<(MsgId, File), SpoolError> {
        let (m, dir) = self.reserve_id()?;
        let path = dir.join(MESSAGE);
        // A spare's message file is reused as it is: zeroed when it was
        // retired, its blocks kept (freeing them costs more than writing
        // them again); a fresh directory gets a new one.
        let reused = if is_regular(&path) {
            OpenOptions::new().read(true).write(true).open(&path).ok()
        } else {
            None
        };
        let file = match reused {
            Some(f) => f,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err("create", &path))?,
        };
        Ok((m, file))
    }

    /// A fresh message id and its directory under incoming/: a spare moved
    /// there, else a new one.
    fn reserve_id(&self) -> Result<(MsgId, PathBuf), SpoolError> {
        // Everything that creates names in incoming/ holds this lock, so
        // the existence checks below cannot race (a rename onto an empty
        // directory would replace it).
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..ID_TRIES {
            let m = MsgId::random(&self.rng).map_err(io_err("read", Path::new("/dev/urandom")))?;
            let dir = self.incoming_dir(m);
            // Not in use in incoming/ nor in queue/. A commit moves
            // incoming -> queue in one rename, so the id cannot slip
            // between the two checks.
            if exists(&dir)? || exists(&self.queue_dir(m))? {
                continue;
            }
            while let Some(n) = spares.free.pop() {
                let spare = self.root.join(PURGE).join(spare_name(n));
                if fs::rename(&spare, &dir).is_ok() {
                    return Ok((m, dir));
                }
                // Gone (removed by hand?): try the next, else mkdir.
            }
            make_dir(&dir).map_err(io_err("mkdir", &dir))?;
            return Ok((m, dir));
        }
        Err(SpoolError::IdSpaceExhausted)
    }

    /// Moves a message directory that is done with (`from`, in incoming/
    /// or queue/) to purge/, as a spare for a later message, or deletes it
    /// when there are enough spares. One rename: a crash leaves it where
    /// it was or in purge/, which start-up empties.
    fn retire(&self, from: &Path) -> Result<(), SpoolError> {
        let (n, keep) = {
            let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
            spares.next += 1;
            (spares.next, spares.free.len() < MAX_SPARES)
        };
        let target = self.root.join(PURGE).join(spare_name(n));
        fs::rename(from, &target).map_err(io_err("rename", from))?;
        // Nothing of this message may reach the next one's writer: zeroed
        // now, by whoever retires it (off a session's path).
        let message = target.join(MESSAGE);
        if keep && (!is_regular(&message) || blank(&message).is_ok()) {
            let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
            spares.free.push(n);
            return Ok(());
        }
        fs::remove_dir_all(&target).map_err(io_err("remove", &target))
    }

    /// Drops a message that was never committed (client gone, refused).
    pub fn abort(&self, msgid: MsgId) -> Result<(), SpoolError> {
        let dir = self.incoming_dir(msgid);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => self.retire(&dir),
            Ok(_) => fs::remove_file(&dir).map_err(io_err("unlink", &dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpoolError::UnknownMessage(msgid)),
            Err(e) => Err(io_err("stat", &dir)(e)),
        }
    }

    /// THE COMMIT PROTOCOL. Makes the message and its envelopes durable in
    /// the queue; only after Ok may the caller acknowledge the message.
    /// After an Err the message is not acknowledged; the caller aborts it.
    pub fn commit(&self, msgid: MsgId, envelopes: Vec<Envelope>) -> Result<(), SpoolError> {
        match self.stage(msgid, &envelopes, None)? {
            Staged::Done { bucket_dir, bucket } => {
                bucket.sync_all().map_err(io_err("fsync", &bucket_dir))?;
                self.incoming
                    .sync_all()
                    .map_err(io_err("fsync", &self.incoming_root()))
            }
            #[cfg(test)]
            Staged::Stopped => Ok(()),
        }
    }

    /// Every step of a commit but the last directory fsyncs (the bucket
    /// directory, that now holds the message, and incoming/, that no longer
    /// does), which group commit shares between callers.
    pub(crate) fn stage(
        &self,
        msgid: MsgId,
        envelopes: &[Envelope],
        #[cfg_attr(not(test), allow(unused_variables))] stop_after: Option<CommitStep>,
    ) -> Result<Staged, SpoolError> {
        macro_rules! step {
            ($s:expr) => {
                #[cfg(test)]
                if stop_after == Some($s) {
                    return Ok(Staged::Stopped);
                }
                #[cfg(not(test))]
                let _ = $s;
            };
        }
        // Check and encode everything before touching the disk.
        if envelopes.is_empty() {
            return Err(SpoolError::NoEnvelopes(msgid));
        }
        let mut seen = BTreeSet::new();
        let mut encoded = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            if e.msgid() != msgid {
                return Err(SpoolError::WrongMessage { msgid, evpid: e.id });
            }
            if !seen.insert(e.id) {
                return Err(SpoolError::DuplicateEnvelope(e.id));
            }
            let bytes = codec::encode(e).map_err(|source| SpoolError::Encode {
                evpid: e.id,
                source,
            })?;
            encoded.push((e.id, bytes));
        }
        let dir = self.incoming_dir(msgid);
        let message = dir.join(MESSAGE);
        let data = File::open(&message)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
            .ok_or(SpoolError::UnknownMessage(msgid))?;
        // Files a spare directory still holds from its last message: each
        // is renamed to a new envelope's name and rewritten (no new
        // inode); whatever is left over goes.
        let mut leftovers: Vec<PathBuf> = list(&dir)?
            .into_iter()
            .filter(|(name, _, ft)| name != MESSAGE && ft.is_file())
            .map(|(_, path, _)| path)
            .collect();
        // 1. Each envelope written and fsynced: its bytes are on disk.
        for (n, (id, bytes)) in encoded.iter().enumerate() {
            let path = dir.join(id.to_string());
            match leftovers.pop() {
                Some(old) => {
                    fs::rename(&old, &path).map_err(io_err("rename", &old))?;
                    write_synced(&path, bytes, false)?;
                }
                None => write_synced(&path, bytes, true)?,
            }
            step!(CommitStep::EnvelopeWritten(n));
        }
        for old in leftovers {
            fs::remove_file(&old).map_err(io_err("unlink", &old))?;
        }
        // 2. The message data, written by another process through its own
        //    fd: fsync on any fd of the file flushes it.
        data.sync_all().map_err(io_err("fsync", &message))?;
        step!(CommitStep::MessageSynced);
        // 3. The message directory: the names of the files in it.
        sync_dir(&dir)?;
        step!(CommitStep::MessageDirSynced);
        // 4. The bucket, created on first use; its name made durable in
        //    queue/ before anything is renamed into it.
        let bucket_dir = self.bucket_dir(msgid);
        let bucket = self.bucket(msgid, &bucket_dir)?;
        step!(CommitStep::BucketReady);
        // 5. One rename: the message is in the queue with all its
        //    envelopes, or still in incoming/. Never half.
        let target = self.queue_dir(msgid);
        if let Err(e) = fs::rename(&dir, &target) {
            // The bucket may have gone behind our back: look again next time.
            self.lock_buckets().remove(&msgid.bucket());
            return Err(io_err("rename", &dir)(e));
        }
        step!(CommitStep::Renamed);
        Ok(Staged::Done { bucket_dir, bucket })
    }

    fn lock_buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<File>>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `msgid`'s bucket, open: created on first use, its name made durable
    /// in queue/ before anything is renamed into it.
    fn bucket(&self, msgid: MsgId, path: &Path) -> Result<Arc<File>, SpoolError> {
        let name = msgid.bucket();
        if let Some(open) = self.lock_buckets().get(&name) {
            return Ok(open.clone());
        }
        if ensure_dir(path)? {
            sync_dir(&self.root.join(QUEUE))?;
        }
        let open = Arc::new(File::open(path).map_err(io_err("open", path))?);
        self.lock_buckets().insert(name, open.clone());
        Ok(open)
    }

    /// Opens a committed message read-only, for a delivery.
    pub fn open_message(&self, msgid: MsgId) -> Result<File, SpoolError> {
        let path = self.queue_dir(msgid).join(MESSAGE);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SpoolError::UnknownMessage(msgid)
            } else {
                io_err("open", &path)(e)
            }
        })
    }

    /// Atomically replaces a committed envelope: when this returns Ok, the
    /// new state is on disk, and a crash at any point leaves the old or the
    /// new one, whole.
    pub fn update(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let bytes = codec::encode(envelope).map_err(|source| SpoolError::Encode {
            evpid: envelope.id,
            source,
        })?;
        let path = self.envelope_path(envelope.id);
        // Updating never resurrects a removed envelope.
        if !is_regular(&path) {
            return Err(SpoolError::UnknownEnvelope(envelope.id));
        }
        let dir = self.queue_dir(envelope.msgid());
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", envelope.id));
        write_synced(&tmp, &bytes, false)?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        sync_dir(&dir)
    }

    /// Removes one envelope; when it was the message's last, the message
    /// goes too. Returns whether the message was removed.
    ///
    /// Nothing here is fsynced: a removal lost to a power cut brings the
    /// envelope back at start-up and its delivery is made again, a
    /// duplicate and never a loss (Postfix and OpenSMTPD do the same).
    /// Syncing three directories per delivered message cost a third of
    /// the queue's disk writes (docs/performance.md).
    pub fn remove_envelope(&self, evpid: EnvelopeId) -> Result<bool, SpoolError> {
        let msgid = evpid.msgid();
        let dir = self.queue_dir(msgid);
        let guard = self.removal.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        let mut others = 0usize;
        let entries = match list(&dir) {
            Ok(e) => e,
            Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::UnknownEnvelope(evpid));
            }
            Err(e) => return Err(e),
        };
        for (name, _, _) in &entries {
            match name.parse::<EnvelopeId>() {
                Ok(id) if id == evpid => found = true,
                Ok(_) => others += 1,
                Err(_) => {}
            }
        }
        if !found {
            return Err(SpoolError::UnknownEnvelope(evpid));
        }
        if others > 0 {
            let path = dir.join(evpid.to_string());
            fs::remove_file(&path).map_err(io_err("unlink", &path))?;
            return Ok(false);
        }
        // The last one: move the whole message to purge/ in one rename, so
        // that a crash never leaves a message without envelopes in queue/.
        self.retire(&dir)?;
        drop(guard);
        Ok(true)
    }

    /// Start-up recovery; call before any other operation. Empties purge/
    /// and incoming/, reads every committed envelope, moves whatever fails
    /// its check into corrupt/, and reports all of it.
    pub fn load(&self) -> Result<LoadReport, SpoolError> {
        let mut report = LoadReport::default();
        for (sub, out) in [
            (PURGE, &mut report.purged),
            (INCOMING, &mut report.discarded_incoming),
        ] {
            let dir = self.root.join(sub);
            for (_, path, ft) in list(&dir)? {
                if ft.is_dir() {
                    fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
                } else {
                    fs::remove_file(&path).map_err(io_err("unlink", &path))?;
                }
                out.push(path);
            }
            sync_dir(&dir)?;
        }
        let queue = self.root.join(QUEUE);
        for (bname, bpath, bft) in list(&queue)? {
            let is_bucket = bft.is_dir()
                && bname.len() == 2
                && bname
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !is_bucket {
                self.move_aside(&bpath, CorruptReason::UnexpectedEntry, &mut report)?;
                continue;
            }
            for (mname, mpath, mft) in list(&bpath)? {
                let msgid = match mname.parse::<MsgId>() {
                    Ok(m) if mft.is_dir() => m,
                    _ => {
                        self.move_aside(&mpath, CorruptReason::UnexpectedEntry, &mut report)?;
                        continue;
                    }
                };
                if msgid.bucket() != bname {
                    self.move_aside(&mpath, CorruptReason::WrongBucket, &mut report)?;
                    continue;
                }
                self.load_message(msgid, &mpath, &mut report)?;
            }
        }
        report.envelopes.sort_by_key(|e| e.id);
        Ok(report)
    }

    fn load_message(
        &self,
        msgid: MsgId,
        dir: &Path,
        report: &mut LoadReport,
    ) -> Result<(), SpoolError> {
        let mut has_message = false;
        let mut candidates = Vec::new();
        for (name, path, ft) in list(dir)? {
            if name == MESSAGE && ft.is_file() {
                has_message = true;
                continue;
            }
            let tmp_of = name
                .strip_suffix(TMP_SUFFIX)
                .and_then(|s| s.parse::<EnvelopeId>().ok());
            if let Some(id) = tmp_of
                && id.msgid() == msgid
                && ft.is_file()
            {
                fs::remove_file(&path).map_err(io_err("unlink", &path))?;
                report.removed_temp.push(path);
                continue;
            }
            match name.parse::<EnvelopeId>() {
                Ok(id) if id.msgid() == msgid && ft.is_file() => candidates.push((id, path)),
                _ => self.move_aside(&path, CorruptReason::UnexpectedEntry, report)?,
            }
        }
        if !has_message {
            return self.move_aside(dir, CorruptReason::MissingMessage, report);
        }
        let mut valid = Vec::new();
        for (id, path) in candidates {
            let reason = match read_bounded(&path) {
                Err(e) => CorruptReason::Unreadable(e.kind()),
                Ok(bytes) => match codec::decode(&bytes) {
                    Err(e) => CorruptReason::Decode(e),
                    Ok(env) if env.id != id => CorruptReason::IdMismatch { inside: env.id },
                    Ok(env) => {
                        valid.push(env);
                        continue;
                    }
                },
            };
            self.move_aside(&path, reason, report)?;
        }
        if valid.is_empty() {
            return self.move_aside(dir, CorruptReason::NoValidEnvelope, report);
        }
        report.envelopes.append(&mut valid);
        Ok(())
    }

    /// Moves `path` into corrupt/ under a fresh name, with a `.reason`
    /// file beside it for the admin, and records it in the report.
    fn move_aside(
        &self,
        path: &Path,
        reason: CorruptReason,
        report: &mut LoadReport,
    ) -> Result<(), SpoolError> {
        let corrupt = self.root.join(CORRUPT);
        // The name tells where it came from: queue/0e/0e07f53e/x -> 0e07f53e-x
        let base: String = path
            .strip_prefix(self.root.join(QUEUE))
            .unwrap_or(path)
            .components()
            .skip(1)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("-");
        let base = if base.is_empty() {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "entry".to_owned())
        } else {
            base
        };
        let mut to = None;
        for _ in 0..ID_TRIES {
            let r = self
                .rng
                .next_u32()
                .map_err(io_err("read", Path::new("/dev/urandom")))?;
            let candidate = corrupt.join(format!("{base}.{r:08x}"));
            let why = corrupt.join(format!("{base}.{r:08x}.reason"));
            if !exists(&candidate)? && !exists(&why)? {
                to = Some((candidate, why));
                break;
            }
        }
        let (to, why) = to.ok_or(SpoolError::IdSpaceExhausted)?;
        write_synced(&why, format!("{reason}\n").as_bytes(), true)?;
        fs::rename(path, &to).map_err(io_err("rename", path))?;
        sync_dir(&corrupt)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        report.moved_aside.push(MovedAside {
            from: path.to_owned(),
            to,
            reason,
        });
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::envelope::{Dispatcher, Sender};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, unique to one test, removed
    /// when dropped.
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        pub(crate) fn new(name: &str) -> TestDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let p = std::env::temp_dir().join(format!(
                "rsmtpd-queue-unit-{name}-{}-{nanos}-{n}",
                std::process::id()
            ));
            fs::create_dir(&p).unwrap();
            TestDir(p)
        }

        pub(crate) fn path(&self) -> PathBuf {
            self.0.join("spool")
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn sample_envelope(id: EnvelopeId) -> Envelope {
        Envelope {
            id,
            created: 1_795_717_118,
            ttl: 4 * 86400,
            action: "relay".into(),
            dispatcher: Dispatcher::Relay,
            sender: Sender::Address("a@example.org".into()),
            rcpt: "b@example.net".into(),
            dest: "b@example.net".into(),
            user: None,
            target: None,
            dsn_notify: None,
            dsn_orcpt: None,
            dsn_ret: None,
            dsn_envid: None,
            body: Default::default(),
            smtputf8: false,
            helo: "c".into(),
            origin: crate::envelope::Origin::LocalSocket,
            hostname: "mx.example.org".into(),
            tag: None,
            auth_user: None,
            retry: 0,
            last_try: None,
            next_try: 1_795_717_118,
            last_error: None,
            hold: false,
            state: Default::default(),
        }
    }

    const DATA: &[u8] = b"Subject: crash\r\n\r\nbody\r\n";

    fn queue_entries(root: &Path) -> usize {
        list(&root.join(QUEUE))
            .unwrap()
            .iter()
            .map(|(_, p, _)| list(p).unwrap().len())
            .sum()
    }

    /// A crash after each step of the commit protocol: the restarted queue
    /// has the whole message or nothing of it.
    /// Commits racing to create the same bucket both succeed, and both
    /// are told to make its name durable.
    #[test]
    fn concurrent_creation_of_one_directory_succeeds_for_everyone() {
        let dir = TestDir::new("ensure-race");
        std::fs::create_dir_all(dir.path()).unwrap();
        for round in 0..50 {
            let path = dir.path().join(format!("b{round}"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        ensure_dir(&path)
                    })
                })
                .collect();
            for h in handles {
                let created = h.join().unwrap();
                assert!(matches!(created, Ok(true) | Ok(false)), "{created:?}");
            }
            assert!(path.is_dir());
        }
        // A file in the way is still an error.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            ensure_dir(&file),
            Err(SpoolError::NotADirectory { .. })
        ));
    }

    #[test]
    fn crash_at_each_commit_step_is_all_or_nothing() {
        let steps = [
            CommitStep::EnvelopeWritten(0),
            CommitStep::EnvelopeWritten(1),
            CommitStep::EnvelopeWritten(2),
            CommitStep::MessageSynced,
            CommitStep::MessageDirSynced,
            CommitStep::BucketReady,
            CommitStep::Renamed,
        ];
        for step in steps {
            let dir = TestDir::new("crash");
            let spool = Spool::open(dir.path()).unwrap();
            let (m, mut f) = spool.create_message().unwrap();
            f.write_all(DATA).unwrap();
            drop(f);
            let envs: Vec<Envelope> = (0..3)
                .map(|_| sample_envelope(spool.new_envelope_id(m).unwrap()))
                .collect();
            assert!(matches!(
                spool.stage(m, &envs, Some(step)).unwrap(),
                Staged::Stopped
            ));
            drop(spool); // the crash

            let spool = Spool::open(dir.path()).unwrap();
            let report = spool.load().unwrap();
            assert!(
                report.moved_aside.is_empty(),
                "{step:?}: {:?}",
                report.moved_aside
            );
            if step == CommitStep::Renamed {
                let mut want = envs.clone();
                want.sort_by_key(|e| e.id);
                assert_eq!(report.envelopes, want, "{step:?}");
                assert!(report.discarded_incoming.is_empty());
                let mut data = Vec::new();
                spool
                    .open_message(m)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                assert_eq!(data, DATA);
            } else {
                assert!(report.envelopes.is_empty(), "{step:?}");
                assert_eq!(report.discarded_incoming, vec![spool.incoming_dir(m)]);
                assert_eq!(queue_entries(&dir.path()), 0, "{step:?}");
                assert!(
                    matches!(spool.open_message(m), Err(SpoolError::UnknownMessage(x)) if x == m)
                );
            }
            assert_eq!(list(&spool.incoming_root()).unwrap().len(), 0);
        }
    }

    /// A crash in the middle of writing an envelope (a torn file) before the
    /// rename: the message was never acknowledged and is discarded whole.
    #[test]
    fn torn_staged_envelope_is_discarded() {
        let dir = TestDir::new("torn");
        let spool = Spool::open(dir.path()).unwrap();
        let (m, _f) = spool.create_message().unwrap();
        let e = sample_envelope(spool.new_envelope_id(m).unwrap());
        let bytes = codec::encode(&e).unwrap();
        fs::write(
            spool.incoming_dir(m).join(e.id.to_string()),
            &bytes[..bytes.len() / 2],
        )
        .unwrap();
        let report = Spool::open(dir.path()).unwrap().load().unwrap();
        assert!(report.envelopes.is_empty());
        assert!(report.moved_aside.is_empty());
        assert_eq!(report.discarded_incoming.len(), 1);
    }

    /// A crash while removing the last envelope (after the move to purge/).
    #[test]
    fn crash_during_final_removal_is_finished_by_load() {
        let dir = TestDir::new("purge");
        let spool = Spool::open(dir.path()).unwrap();
        let (m, _f) = spool.create_message().unwrap();
        let e = sample_envelope(spool.new_envelope_id(m).unwrap());
        spool.commit(m, vec![e]).unwrap();
        // What remove_envelope leaves right after its rename.
        let purged = dir.path().join(PURGE).join(m.to_string());
        fs::rename(spool.queue_dir(m), &purged).unwrap();
        drop(spool);
        let report = Spool::open(dir.path()).unwrap().load().unwrap();
        assert!(report.envelopes.is_empty());
        assert!(report.moved_aside.is_empty());
        assert_eq!(report.purged, vec![purged.clone()]);
        assert!(!purged.exists());
    }
}
