//! Group commit: many sessions share one round of directory fsyncs.
//!
//! Each caller stages its own message in its own thread (envelope and
//! message fsyncs, the rename into the queue: the kernel merges concurrent
//! fsyncs into one journal commit). The last step, the fsync of the
//! directories the renames changed, is done once per round for everyone:
//!
//! - after its rename, a caller adds its directories and a ticket to the
//!   pending set, under the lock;
//! - if no round is running, it becomes the round's leader: it takes the
//!   whole pending set (under the lock), fsyncs those directories (without
//!   the lock), then records the outcome for every ticket it took;
//! - a caller returns only when the outcome for its ticket is recorded.
//!
//! A round therefore covers exactly the requests that arrived while the
//! previous one was syncing, and every fsync of a round happens after the
//! renames of all the tickets it answers (they were added before it took the
//! set). The argument is written out in docs/queue.md.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::envelope::Envelope;
use crate::id::MsgId;
use crate::spool::{Spool, SpoolError, Staged};

/// Why a round failed, copied to every ticket of the round.
type RoundOutcome = Result<(), (PathBuf, io::ErrorKind)>;

#[derive(Debug, Default)]
struct State {
    pending_dirs: BTreeSet<PathBuf>,
    pending_tickets: Vec<u64>,
    next_ticket: u64,
    syncing: bool,
    /// Outcomes not yet collected; each entry is removed by its caller.
    finished: HashMap<u64, RoundOutcome>,
    rounds: u64,
}

/// Commits messages for many concurrent callers with shared directory
/// fsyncs. Share it between threads (`Arc<Committer>`).
#[derive(Debug)]
pub struct Committer {
    spool: Arc<Spool>,
    state: Mutex<State>,
    round_done: Condvar,
}

impl Committer {
    pub fn new(spool: Arc<Spool>) -> Committer {
        Committer {
            spool,
            state: Mutex::new(State::default()),
            round_done: Condvar::new(),
        }
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Rounds of directory fsyncs done so far.
    pub fn rounds(&self) -> u64 {
        self.lock().rounds
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; should one, the state is
        // still consistent (every update is a single assignment or push).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Same contract as [`Spool::commit`]: Ok means durable. Blocks until
    /// the round that covers this message completed.
    pub fn commit(&self, msgid: MsgId, envelopes: Vec<Envelope>) -> Result<(), SpoolError> {
        let bucket_dir = match self.spool.stage(msgid, &envelopes, None)? {
            Staged::Done { bucket_dir, .. } => bucket_dir,
            #[cfg(test)]
            Staged::Stopped => return Ok(()),
        };
        self.join_round(bucket_dir)
    }

    fn join_round(&self, bucket_dir: PathBuf) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending_dirs.insert(bucket_dir);
        st.pending_dirs.insert(self.spool.incoming_root());
        st.pending_tickets.push(ticket);
        loop {
            if let Some(outcome) = st.finished.remove(&ticket) {
                return outcome.map_err(|(path, kind)| SpoolError::RoundSync { path, kind });
            }
            if st.syncing {
                st = self.round_done.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead a round: take everything pending, this ticket included.
            st.syncing = true;
            let dirs = std::mem::take(&mut st.pending_dirs);
            let tickets = std::mem::take(&mut st.pending_tickets);
            drop(st);
            let outcome = sync_all_dirs(&dirs);
            st = self.lock();
            for t in tickets {
                st.finished.insert(t, outcome.clone());
            }
            st.rounds += 1;
            st.syncing = false;
            // Wakes the callers answered and, among those still pending,
            // one that will lead the next round.
            self.round_done.notify_all();
        }
    }
}

/// At most this many threads fsync a round's directories.
const SYNC_THREADS: usize = 8;

/// Fsyncs every directory of the round, concurrently: the filesystem
/// merges concurrent fsyncs into one journal commit, while serial ones each
/// wait for their own (measured: serial was 4x slower, docs/queue.md).
fn sync_all_dirs(dirs: &BTreeSet<PathBuf>) -> RoundOutcome {
    fn sync(d: &PathBuf) -> RoundOutcome {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| (d.clone(), e.kind()))
    }
    let dirs: Vec<&PathBuf> = dirs.iter().collect();
    if dirs.len() <= 1 {
        return dirs.into_iter().try_for_each(sync);
    }
    let per_thread = dirs.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .chunks(per_thread)
            .map(|chunk| s.spawn(move || chunk.iter().copied().try_for_each(sync)))
            .collect();
        let mut outcome = Ok(());
        for h in handles {
            // No fsync thread panics; should one, the round fails.
            let r = h
                .join()
                .unwrap_or_else(|_| Err((PathBuf::from("<fsync thread>"), io::ErrorKind::Other)));
            if outcome.is_ok() {
                outcome = r;
            }
        }
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::{TestDir, sample_envelope};
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    /// While a round is running, arriving commits wait; when it ends, ONE
    /// round answers all of them, and none is answered before.
    #[test]
    fn waiters_join_one_round_and_wait_for_it() {
        let dir = TestDir::new("group-round");
        let spool = Arc::new(Spool::open(dir.path()).unwrap());
        let c = Arc::new(Committer::new(spool.clone()));
        // Pretend a round is in progress.
        c.lock().syncing = true;
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let (m, mut f) = spool.create_message().unwrap();
            f.write_all(b"Subject: x\r\n\r\nhi\r\n").unwrap();
            ids.push(m);
            let c = c.clone();
            let tx = tx.clone();
            let env = sample_envelope(spool.new_envelope_id(m).unwrap());
            handles.push(std::thread::spawn(move || {
                let r = c.commit(m, vec![env]);
                tx.send(()).unwrap();
                r
            }));
        }
        // All five stage and then wait for the round. Staging fsyncs,
        // which can take seconds on a busy disk: the bound is generous.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while c.lock().pending_tickets.len() < 5 {
            if rx.try_recv().is_ok() {
                // A caller returned without waiting: show why.
                let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
                panic!("a caller returned before its round: {results:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "callers did not arrive"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "answered before its round"
        );
        // End the pretend round.
        {
            let mut st = c.lock();
            st.syncing = false;
            c.round_done.notify_all();
        }
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(c.rounds(), 1);
        assert!(c.lock().finished.is_empty());
        let report = spool.load().unwrap();
        let mut got: Vec<MsgId> = report.envelopes.iter().map(|e| e.msgid()).collect();
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
    }

    #[test]
    fn round_failure_reaches_every_ticket() {
        let dir = TestDir::new("group-fail");
        let spool = Arc::new(Spool::open(dir.path()).unwrap());
        let c = Committer::new(spool);
        let missing = dir.path().join("no-such-dir");
        let err = c.join_round(missing.clone()).unwrap_err();
        assert!(
            matches!(err, SpoolError::RoundSync { ref path, kind: io::ErrorKind::NotFound } if *path == missing),
            "{err:?}"
        );
        assert!(c.lock().finished.is_empty());
    }

    #[test]
    fn many_threads_commit() {
        let dir = TestDir::new("group-many");
        let spool = Arc::new(Spool::open(dir.path()).unwrap());
        let c = Arc::new(Committer::new(spool.clone()));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for _ in 0..5 {
                        let (m, mut f) = c.spool().create_message().unwrap();
                        f.write_all(b"x\r\n").unwrap();
                        let env = sample_envelope(c.spool().new_envelope_id(m).unwrap());
                        c.commit(m, vec![env]).unwrap();
                        ids.push(m);
                    }
                    ids
                })
            })
            .collect();
        let mut all: Vec<MsgId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        let r = spool.load().unwrap();
        assert_eq!(r.envelopes.len(), 40);
        assert!(r.moved_aside.is_empty());
        let got: Vec<MsgId> = r.envelopes.iter().map(|e| e.msgid()).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, all);
        assert!(c.rounds() >= 1 && c.rounds() <= 40);
    }
}
