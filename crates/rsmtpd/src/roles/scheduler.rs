//! The scheduler role: an in-memory schedule of envelope metadata. It says
//! when each envelope is tried, backs off after temporary failures and
//! expires envelopes past their ttl; it never sees addresses or content.
//!
//! Backoff as OpenSMTPD's ramqueue: try n waits `base * n^2` after the
//! n-th failure, with base 10 s for local deliveries and 400 s for relays
//! (see [`crate::tuning::Tuning`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rsmtpd_ipc::Channel;

use crate::clock::now;
use crate::links::{QueueToScheduler, Role, Schedule, SchedulerToQueue, Start};
use crate::roles::{ParentLink, Received, RoleError};
use crate::smtpd::Subsystem;

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let queue = fds.link(Role::Queue)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Scheduler, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let parent = parent.into_async()?;
        let queue: Channel<SchedulerToQueue, QueueToScheduler> = Channel::from_fd(queue)?;
        let schedule = Scheduler::new(
            (start.tuning.retry_base_local, start.tuning.retry_base_relay),
            start.config.scheduler.max_inflight as usize,
            start.paused.contains(&Subsystem::Mda),
            start.paused.contains(&Subsystem::Mta),
        );
        tokio::select! {
            r = drive(schedule, queue) => r,
            r = super::wait_for_shutdown(parent) => r,
        }
    })
}

async fn drive(
    mut sched: Scheduler,
    mut queue: Channel<SchedulerToQueue, QueueToScheduler>,
) -> Result<(), RoleError> {
    loop {
        for order in sched.due(now()) {
            queue.send(&order, Vec::new()).await?;
        }
        let wait = sched.next_wakeup().map_or(Duration::from_secs(3600), |t| {
            Duration::from_secs(t.saturating_sub(now()))
        });
        tokio::select! {
            msg = queue.recv() => match msg? {
                None => return Ok(()),
                Some((msg, _)) => sched.handle(msg, now()),
            },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// When try `retries + 1` is due after a failure at `now`: `base * n^2`
/// with the local or relay base, never past the expiry (a message expires
/// on time, not at the next try after it). The queue records the same
/// value in the envelope, so a restart keeps the schedule and `smtpctl
/// show queue` shows it.
pub fn next_try(backoff: (u64, u64), relay: bool, retries: u32, expires: u64, now: u64) -> u64 {
    let base = if relay { backoff.1 } else { backoff.0 };
    let n = u64::from(retries);
    now.saturating_add(base.saturating_mul(n.saturating_mul(n)))
        .min(expires.max(now))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    sched: Schedule,
    inflight: bool,
}

/// The schedule itself, free of I/O and clocks (time is passed in).
#[derive(Debug)]
pub struct Scheduler {
    entries: HashMap<u64, Entry>,
    /// (due time, evpid) of every entry not in flight.
    waiting: BTreeSet<(u64, u64)>,
    inflight: usize,
    max_inflight: usize,
    /// Backoff bases (local, relay) in seconds.
    backoff: (u64, u64),
    pause_local: bool,
    pause_relay: bool,
}

impl Scheduler {
    pub fn new(
        backoff: (u64, u64),
        max_inflight: usize,
        pause_local: bool,
        pause_relay: bool,
    ) -> Scheduler {
        Scheduler {
            backoff,
            entries: HashMap::new(),
            waiting: BTreeSet::new(),
            inflight: 0,
            max_inflight: max_inflight.max(1),
            pause_local,
            pause_relay,
        }
    }

    pub fn handle(&mut self, msg: QueueToScheduler, now: u64) {
        match msg {
            QueueToScheduler::Insert(list) => {
                for s in list {
                    self.remove(s.evpid);
                    self.entries.insert(
                        s.evpid,
                        Entry {
                            sched: s,
                            inflight: false,
                        },
                    );
                    self.waiting.insert((s.next_try, s.evpid));
                }
            }
            QueueToScheduler::Remove { evpid } => self.remove(evpid),
            QueueToScheduler::Now { evpids } => {
                for evpid in evpids {
                    if let Some(e) = self.entries.get_mut(&evpid)
                        && !e.inflight
                    {
                        self.waiting.remove(&(e.sched.next_try, evpid));
                        e.sched.next_try = now;
                        self.waiting.insert((now, evpid));
                    }
                }
            }
            QueueToScheduler::Hold { evpid, hold } => {
                if let Some(e) = self.entries.get_mut(&evpid) {
                    e.sched.hold = hold;
                }
            }
            QueueToScheduler::Pause { local, relay } => {
                if let Some(p) = local {
                    self.pause_local = p;
                }
                if let Some(p) = relay {
                    self.pause_relay = p;
                }
            }
            QueueToScheduler::Retry { evpid } => {
                if let Some(e) = self.entries.get_mut(&evpid) {
                    if e.inflight {
                        e.inflight = false;
                        self.inflight -= 1;
                    }
                    e.sched.retries = e.sched.retries.saturating_add(1);
                    e.sched.next_try = next_try(
                        self.backoff,
                        e.sched.relay,
                        e.sched.retries,
                        e.sched.expires,
                        now,
                    );
                    self.waiting.insert((e.sched.next_try, evpid));
                }
            }
        }
    }

    fn remove(&mut self, evpid: u64) {
        if let Some(e) = self.entries.remove(&evpid) {
            if e.inflight {
                self.inflight -= 1;
            } else {
                self.waiting.remove(&(e.sched.next_try, evpid));
            }
        }
    }

    /// Orders due at `now`: expiries first, then one batch of every due
    /// delivery up to the in-flight limit, skipping paused kinds. One
    /// batch lets the queue put a message's recipients into one
    /// transaction.
    pub fn due(&mut self, now: u64) -> Vec<SchedulerToQueue> {
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let due: Vec<(u64, u64)> = self.waiting.range(..=(now, u64::MAX)).copied().collect();
        for (at, evpid) in due {
            let Some(e) = self.entries.get_mut(&evpid) else {
                self.waiting.remove(&(at, evpid));
                continue;
            };
            if now >= e.sched.expires {
                self.waiting.remove(&(at, evpid));
                e.inflight = true;
                self.inflight += 1;
                out.push(SchedulerToQueue::Expire { evpid });
                continue;
            }
            let paused = e.sched.hold
                || if e.sched.relay {
                    self.pause_relay
                } else {
                    self.pause_local
                };
            if paused || self.inflight >= self.max_inflight {
                continue;
            }
            self.waiting.remove(&(at, evpid));
            e.inflight = true;
            self.inflight += 1;
            batch.push(evpid);
        }
        if !batch.is_empty() {
            out.push(SchedulerToQueue::Deliver { evpids: batch });
        }
        out
    }

    /// When something next becomes due (or expires), if anything waits.
    /// With every slot in flight only expiries count: a finished delivery
    /// (a message from the queue) is what frees a slot.
    pub fn next_wakeup(&self) -> Option<u64> {
        let full = self.inflight >= self.max_inflight;
        let first_due = self.waiting.iter().filter(|_| !full).find(|(_, evpid)| {
            self.entries.get(evpid).is_some_and(|e| {
                let paused = e.sched.hold
                    || if e.sched.relay {
                        self.pause_relay
                    } else {
                        self.pause_local
                    };
                !paused
            })
        });
        let first_expiry = self
            .waiting
            .iter()
            .filter_map(|(_, evpid)| self.entries.get(evpid))
            .map(|e| e.sched.expires)
            .min();
        match (first_due.map(|(t, _)| *t), first_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(evpids: &[u64]) -> SchedulerToQueue {
        SchedulerToQueue::Deliver {
            evpids: evpids.to_vec(),
        }
    }

    fn sched(evpid: u64, relay: bool, next_try: u64) -> Schedule {
        Schedule {
            evpid,
            relay,
            created: 1000,
            expires: 1000 + 4 * 86_400,
            retries: 0,
            next_try,
            hold: false,
        }
    }

    #[test]
    fn new_envelopes_are_due_at_once() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        s.handle(
            QueueToScheduler::Insert(vec![sched(1, false, 0), sched(2, true, 0)]),
            1000,
        );
        let due = s.due(1000);
        assert_eq!(due, vec![deliver(&[1, 2])], "one batch");
        assert!(s.due(1000).is_empty(), "in flight once");
    }

    #[test]
    fn retries_back_off_quadratically() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        s.handle(QueueToScheduler::Insert(vec![sched(1, false, 0)]), 1000);
        s.due(1000);
        s.handle(QueueToScheduler::Retry { evpid: 1 }, 1000);
        assert!(s.due(1009).is_empty());
        assert_eq!(s.due(1010), vec![deliver(&[1])]);
        s.handle(QueueToScheduler::Retry { evpid: 1 }, 1010);
        assert_eq!(s.next_wakeup(), Some(1050));
        s.handle(QueueToScheduler::Retry { evpid: 1 }, 1010);
        assert!(s.due(1049).is_empty());
    }

    #[test]
    fn relays_back_off_longer() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        s.handle(QueueToScheduler::Insert(vec![sched(7, true, 0)]), 1000);
        s.due(1000);
        s.handle(QueueToScheduler::Retry { evpid: 7 }, 1000);
        assert_eq!(s.next_wakeup(), Some(1400));
    }

    #[test]
    fn expired_envelopes_are_expired_not_delivered() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        s.handle(QueueToScheduler::Insert(vec![sched(3, false, 0)]), 1000);
        let expiry = 1000 + 4 * 86_400;
        assert_eq!(s.due(expiry), vec![SchedulerToQueue::Expire { evpid: 3 }]);
    }

    #[test]
    fn a_retry_never_waits_past_the_expiry() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        s.handle(QueueToScheduler::Insert(vec![sched(5, true, 0)]), 1000);
        s.due(1000);
        // The first relay retry would be at +400 s; expiry comes first.
        s.handle(
            QueueToScheduler::Retry { evpid: 5 },
            1000 + 4 * 86_400 - 100,
        );
        assert_eq!(s.next_wakeup(), Some(1000 + 4 * 86_400));
        assert_eq!(
            s.due(1000 + 4 * 86_400),
            vec![SchedulerToQueue::Expire { evpid: 5 }]
        );
    }

    #[test]
    fn inflight_limit_and_pauses() {
        let mut s = Scheduler::new((10, 400), 1, false, true);
        s.handle(
            QueueToScheduler::Insert(vec![
                sched(1, false, 0),
                sched(2, false, 0),
                sched(3, true, 0),
            ]),
            1000,
        );
        assert_eq!(s.due(1000), vec![deliver(&[1])]);
        assert_eq!(
            s.next_wakeup(),
            Some(1000 + 4 * 86_400),
            "full: only expiries wake"
        );
        s.handle(QueueToScheduler::Remove { evpid: 1 }, 1000);
        assert_eq!(s.due(1000), vec![deliver(&[2])]);
        s.handle(QueueToScheduler::Remove { evpid: 2 }, 1000);
        assert!(s.due(1000).is_empty(), "relay is paused");
    }

    #[test]
    fn removal_forgets_the_envelope() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        s.handle(QueueToScheduler::Insert(vec![sched(1, false, 5000)]), 1000);
        s.handle(QueueToScheduler::Remove { evpid: 1 }, 1000);
        assert_eq!(s.next_wakeup(), None);
        assert!(s.due(10_000).is_empty());
    }

    #[test]
    fn expiries_come_before_the_batch() {
        let mut s = Scheduler::new((10, 400), 10, false, false);
        let mut old = sched(1, false, 0);
        old.expires = 1500;
        s.handle(
            QueueToScheduler::Insert(vec![sched(2, false, 0), old, sched(3, false, 0)]),
            1000,
        );
        assert_eq!(
            s.due(2000),
            vec![SchedulerToQueue::Expire { evpid: 1 }, deliver(&[2, 3])]
        );
    }

    #[test]
    fn a_batch_stops_at_the_inflight_limit() {
        let mut s = Scheduler::new((10, 400), 2, false, false);
        s.handle(
            QueueToScheduler::Insert(vec![
                sched(1, false, 0),
                sched(2, false, 0),
                sched(3, false, 0),
            ]),
            1000,
        );
        assert_eq!(s.due(1000), vec![deliver(&[1, 2])]);
        s.handle(QueueToScheduler::Remove { evpid: 2 }, 1000);
        assert_eq!(s.due(1000), vec![deliver(&[3])]);
    }
}
