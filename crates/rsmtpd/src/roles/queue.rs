//! The queue role: the only process that touches the spool. It creates
//! message files for smtp, commits them (group commit: durable before the
//! 250), hands envelopes to local delivery when the scheduler says so,
//! records outcomes, and writes bounces.
//!
//! Everything arrives as an [`Event`] on one channel and is handled in
//! order by one loop that owns the state; only commits (which wait for
//! fsyncs) run on blocking threads, so that many sessions' fsyncs overlap.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rsmtpd_config::model::{Config, Dispatcher as ConfigDispatcher, LocalDispatcher, LocalMethod};
use rsmtpd_ipc::Channel;
use rsmtpd_queue::{
    BodyType, Dispatcher, DsnNotify, DsnRet, Envelope, ErrorClass, LastError, MsgId, Origin,
    RcptState, Sender, Spool, SpoolError, Urandom,
};
use tokio::sync::mpsc;

use crate::clock::now;
use crate::dsn;
use crate::links::{
    ChildToParent, ControlToQueue, FromLookup, LocalDelivery, LocalRecipient, MtaToQueue, Outcome,
    ParentToChild, Planned, QueueToControl, QueueToMta, QueueToScheduler, QueueToSmtp, RelayRcpt,
    RelayRequest, Role, RouteAnswer, RouteQuery, Schedule, SchedulerToQueue, SessionFacts,
    SmtpToQueue, Start, Submission, ToLookup,
};
use crate::logging::visible;
use crate::roles::{ParentLink, Received, RoleError, writer};
use crate::{log_debug, log_info, log_warn};
use rsmtpd_control::{Command, QueueLine, Reply, Selector, Target};

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let smtp = fds.link(Role::Smtp)?;
    let scheduler = fds.link(Role::Scheduler)?;
    let lookup = fds.link(Role::Lookup)?;
    let mta = fds.link(Role::Mta)?;
    let control = fds.link(Role::Control)?;
    // /dev/urandom lives outside the chroot.
    let rng = Urandom::open().map_err(|e| RoleError::Setup(format!("/dev/urandom: {e}")))?;
    let drop = super::privileges(Role::Queue, &start);
    crate::privsep::apply(start.mode, &drop)?;
    let root = match start.mode {
        crate::privsep::Mode::Root => std::path::PathBuf::from("/"),
        crate::privsep::Mode::Unprivileged { .. } => start.config.queue.path.clone(),
    };
    let spool = Spool::open_with(root, rng).map_err(|e| RoleError::Setup(format!("spool: {e}")))?;
    let report = spool
        .load()
        .map_err(|e| RoleError::Setup(format!("spool: {e}")))?;
    for moved in &report.moved_aside {
        log_warn!(
            "queue: moved aside {} to {}: {}",
            moved.from.display(),
            moved.to.display(),
            moved.reason
        );
    }
    for path in &report.discarded_incoming {
        log_info!("queue: removed uncommitted message {}", path.display());
    }
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::ignore_interrupts()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let parent = parent.into_async()?;
        let (parent_tx, parent_rx) = parent.split();
        let smtp: Channel<QueueToSmtp, SmtpToQueue> = Channel::from_fd(smtp)?;
        let (smtp_tx, smtp_rx) = smtp.split();
        let sched: Channel<QueueToScheduler, SchedulerToQueue> = Channel::from_fd(scheduler)?;
        let (sched_tx, sched_rx) = sched.split();
        let lookup: Channel<ToLookup, FromLookup> = Channel::from_fd(lookup)?;
        let (lookup_tx, lookup_rx) = lookup.split();
        let mta: Channel<QueueToMta, MtaToQueue> = Channel::from_fd(mta)?;
        let (mta_tx, mta_rx) = mta.split();
        let control: Channel<QueueToControl, ControlToQueue> = Channel::from_fd(control)?;
        let (control_tx, control_rx) = control.split();
        super::reader(Role::Parent, parent_rx, events_tx.clone(), |m, _| {
            Event::Parent(m)
        });
        super::reader(Role::Smtp, smtp_rx, events_tx.clone(), |m, _| {
            Event::Smtp(m)
        });
        super::reader(Role::Scheduler, sched_rx, events_tx.clone(), |m, _| {
            Event::Scheduler(m)
        });
        super::reader(Role::Lookup, lookup_rx, events_tx.clone(), |m, _| {
            Event::Lookup(m)
        });
        super::reader(Role::Mta, mta_rx, events_tx.clone(), |m, _| Event::Mta(m));
        super::reader(Role::Control, control_rx, events_tx.clone(), |m, _| {
            Event::Control(m)
        });
        let spool = Arc::new(spool);
        let (reaper, reaper_thread) = start_reaper(spool.clone())?;
        let mut queue = Queue {
            config: start.config,
            reaper,
            spool,
            envelopes: HashMap::new(),
            bounces: HashMap::new(),
            next_id: 1,
            events: events_tx,
            parent: writer(parent_tx),
            smtp: writer(smtp_tx),
            scheduler: writer(sched_tx),
            lookup: writer(lookup_tx),
            mta: writer(mta_tx),
            control: writer(control_tx),
            inflight: HashSet::new(),
            backoff: (start.tuning.retry_base_local, start.tuning.retry_base_relay),
            counters: Counters::default(),
        };
        queue.resume(report.envelopes);
        let result = queue.run(events).await;
        // The reaper ends once the queue (its sender) is gone; its pending
        // removals are done before the process exits.
        std::mem::drop(queue);
        let _ = reaper_thread.join();
        result
    })
}

/// What the spool no longer needs to keep.
enum Done {
    /// An envelope whose delivery is over.
    Finished(rsmtpd_queue::EnvelopeId),
    /// A message the session gave up before its commit.
    Aborted(MsgId),
}

/// The thread that removes what is done with from the spool, in order, off
/// the loop: nothing waits for it.
fn start_reaper(
    spool: Arc<Spool>,
) -> Result<(std::sync::mpsc::Sender<Done>, std::thread::JoinHandle<()>), RoleError> {
    let (tx, rx) = std::sync::mpsc::channel::<Done>();
    let thread = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            for done in rx {
                match done {
                    Done::Finished(evpid) => {
                        if let Err(err) = spool.remove_envelope(evpid) {
                            log_warn!("queue: envelope {evpid}: cannot remove: {err}");
                        }
                    }
                    Done::Aborted(msgid) => {
                        let _ = spool.abort(msgid);
                    }
                }
            }
        })
        .map_err(|e| RoleError::Setup(format!("reaper thread: {e}")))?;
    Ok((tx, thread))
}

/// Everything the loop reacts to.
enum Event {
    Parent(ParentToChild),
    Smtp(SmtpToQueue),
    Scheduler(SchedulerToQueue),
    Lookup(FromLookup),
    Mta(MtaToQueue),
    Control(ControlToQueue),
    /// A commit finished on a blocking thread.
    Committed {
        id: u64,
        msgid: MsgId,
        result: Result<Vec<Envelope>, String>,
    },
    /// A link closed or broke: time to stop.
    Closed(Role),
}

impl super::LinkEvent for Event {
    fn closed(role: Role) -> Self {
        Event::Closed(role)
    }
}

/// The most recipients in one LMTP transaction: a bound on the request
/// and on what one failed session sends back to retry.
const MAX_LMTP_GROUP: usize = 100;

/// Recipients in one relayed SMTP transaction: what every server takes.
const MAX_RELAY_GROUP: usize = 100;

type Out<T> = mpsc::UnboundedSender<(T, Vec<OwnedFd>)>;

/// One recipient's news for its sender, waiting to be reported: a
/// failure (the envelope is done once reported), a delay warning (a copy:
/// the envelope stays queued) or a success the sender asked for with
/// NOTIFY=SUCCESS (the envelope is already done).
struct Notice {
    envelope: Envelope,
    action: dsn::Action,
    /// The reason or the remote server's reply, for the report and the log.
    text: String,
    status: String,
    /// The server that gave the outcome, for relayed mail.
    remote_mta: Option<String>,
}

/// A bounce waiting for lookup to route it: the notices of one message
/// from one event, reported together (one DSN per message and event).
struct PendingBounce {
    notices: Vec<Notice>,
}

struct Queue {
    config: Config,
    spool: Arc<Spool>,
    /// What the reaper thread is to remove from the spool.
    reaper: std::sync::mpsc::Sender<Done>,
    /// Every committed envelope still pending, by id.
    envelopes: HashMap<u64, Envelope>,
    bounces: HashMap<u64, PendingBounce>,
    next_id: u64,
    events: mpsc::UnboundedSender<Event>,
    parent: Out<ChildToParent>,
    smtp: Out<QueueToSmtp>,
    scheduler: Out<QueueToScheduler>,
    lookup: Out<ToLookup>,
    mta: Out<QueueToMta>,
    control: Out<QueueToControl>,
    /// Envelopes handed to a delivery and not yet answered.
    inflight: HashSet<u64>,
    /// Retry bases (local, relay), as the scheduler's.
    backoff: (u64, u64),
    counters: Counters,
}

/// What `smtpctl show stats` and `monitor` count, since the start.
#[derive(Debug, Default)]
struct Counters {
    enqueued: u64,
    dequeued: u64,
    ok: u64,
    tempfail: u64,
    permfail: u64,
    loops: u64,
    expired: u64,
    removed: u64,
    bounces: u64,
}

fn schedule_of(e: &Envelope) -> Schedule {
    Schedule {
        evpid: e.id.get(),
        relay: e.dispatcher == Dispatcher::Relay,
        created: e.created,
        expires: e.expires_at(),
        retries: e.retry,
        next_try: e.next_try,
        hold: e.hold,
    }
}

impl Queue {
    async fn run(&mut self, mut events: mpsc::UnboundedReceiver<Event>) -> Result<(), RoleError> {
        while let Some(event) = events.recv().await {
            match event {
                Event::Parent(ParentToChild::Shutdown) => return Ok(()),
                Event::Closed(role) => {
                    if role != Role::Parent {
                        log_warn!("queue: the link to {} closed", role.name());
                    }
                    return Ok(());
                }
                Event::Parent(ParentToChild::Delivered { outcomes }) => {
                    self.outcomes(outcomes, None)
                }
                Event::Parent(ParentToChild::Logging(v)) => crate::logging::apply(v),
                Event::Parent(ParentToChild::Reload(config)) => {
                    // The next deliveries and bounces follow the new actions.
                    self.config = *config;
                }
                Event::Parent(
                    ParentToChild::Start(_)
                    | ParentToChild::Forward { .. }
                    | ParentToChild::Password { .. }
                    | ParentToChild::Reloaded(_),
                ) => {}
                Event::Smtp(msg) => self.smtp_request(msg),
                Event::Scheduler(SchedulerToQueue::Deliver { evpids }) => self.deliver(&evpids),
                Event::Scheduler(SchedulerToQueue::Expire { evpid }) => self.expire(evpid),
                Event::Lookup(FromLookup::Route { id, answer }) => self.bounce_routed(id, answer),
                // The queue only asks for routes.
                Event::Lookup(
                    FromLookup::Authenticated { .. }
                    | FromLookup::Sender { .. }
                    | FromLookup::TableUpdated { .. },
                ) => {}
                Event::Mta(MtaToQueue::Done {
                    outcomes,
                    remote_mta,
                    ..
                }) => self.outcomes(outcomes, remote_mta),
                Event::Committed { id, msgid, result } => self.committed(id, msgid, result),
                Event::Control(ControlToQueue { id, command }) => {
                    let (reply, fds) = self.control(command);
                    let _ = self.control.send((QueueToControl { id, reply }, fds));
                }
            }
        }
        Ok(())
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Envelopes found at start-up go back to the scheduler.
    fn resume(&mut self, envelopes: Vec<Envelope>) {
        let mut list = Vec::new();
        for e in envelopes {
            if e.state == RcptState::Pending {
                list.push(schedule_of(&e));
                self.envelopes.insert(e.id.get(), e);
            } else {
                // Finished but not yet removed when the daemon stopped.
                let _ = self.spool.remove_envelope(e.id);
            }
        }
        if !list.is_empty() {
            log_info!("queue: resuming {} envelope(s)", list.len());
            let _ = self
                .scheduler
                .send((QueueToScheduler::Insert(list), Vec::new()));
        }
    }

    fn smtp_request(&mut self, msg: SmtpToQueue) {
        match msg {
            // A spare directory renamed and its file opened: cheap enough
            // for the loop (a thread hop would cost more).
            SmtpToQueue::Create { id } => {
                let _ = self.smtp.send(create_reply(&self.spool, id));
            }
            SmtpToQueue::Abort { msgid } => {
                if let Some(m) = MsgId::new(msgid) {
                    let _ = self.reaper.send(Done::Aborted(m));
                }
            }
            SmtpToQueue::Commit {
                id,
                msgid,
                submission,
            } => {
                let Some(msgid) = MsgId::new(msgid) else {
                    let _ = self.smtp.send((
                        QueueToSmtp::CommitFailed {
                            id,
                            reason: "bad message id".into(),
                        },
                        Vec::new(),
                    ));
                    return;
                };
                match self.envelopes_for(msgid, &submission) {
                    Ok(envelopes) => self.commit(id, msgid, envelopes),
                    Err(e) => {
                        log_warn!("queue: message {msgid}: {e}");
                        let _ = self.spool.abort(msgid);
                        let _ = self.smtp.send((
                            QueueToSmtp::CommitFailed {
                                id,
                                reason: "Temporary queue failure".into(),
                            },
                            Vec::new(),
                        ));
                    }
                }
            }
        }
    }

    /// Commit on a blocking thread; the result comes back as an event.
    fn commit(&self, id: u64, msgid: MsgId, envelopes: Vec<Envelope>) {
        // Each commit syncs its own files and directories on a blocking
        // thread; concurrent commits overlap their fsyncs, which ext4's
        // journal merges (measured faster here than rsmtpd_queue::Committer's
        // explicit rounds, docs/queue.md).
        let spool = self.spool.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let count = envelopes.len();
            let result = spool
                .commit(msgid, envelopes.clone())
                .map(|()| envelopes)
                .map_err(|e| e.to_string());
            // Written when verbose, or with `smtpctl profile queue`.
            log_debug!(
                "profile: queue commit of message {msgid} ({count} envelope(s)): {} us",
                started.elapsed().as_micros()
            );
            let _ = events.send(Event::Committed { id, msgid, result });
        });
    }

    fn committed(&mut self, id: u64, msgid: MsgId, result: Result<Vec<Envelope>, String>) {
        match result {
            Ok(envelopes) => {
                self.counters.enqueued += envelopes.len() as u64;
                let list = envelopes.iter().map(schedule_of).collect();
                for e in envelopes {
                    self.envelopes.insert(e.id.get(), e);
                }
                if id != 0 {
                    let _ = self.smtp.send((
                        QueueToSmtp::Committed {
                            id,
                            msgid: msgid.get(),
                        },
                        Vec::new(),
                    ));
                }
                let _ = self
                    .scheduler
                    .send((QueueToScheduler::Insert(list), Vec::new()));
            }
            Err(e) => {
                log_warn!("queue: commit of message {msgid} failed: {e}");
                let _ = self.spool.abort(msgid);
                if id != 0 {
                    let _ = self.smtp.send((
                        QueueToSmtp::CommitFailed {
                            id,
                            reason: "Temporary queue failure".into(),
                        },
                        Vec::new(),
                    ));
                }
            }
        }
    }

    fn envelopes_for(&self, msgid: MsgId, sub: &Submission) -> Result<Vec<Envelope>, SpoolError> {
        let now = now();
        let mut out = Vec::with_capacity(sub.recipients.len());
        for r in &sub.recipients {
            let planned = &r.delivery;
            let ttl = self
                .config
                .actions
                .iter()
                .find(|a| a.name == planned.action)
                .and_then(|a| a.ttl)
                .unwrap_or(self.config.queue.ttl)
                .as_secs();
            out.push(Envelope {
                id: self.spool.new_envelope_id(msgid)?,
                created: now,
                ttl,
                action: planned.action.clone(),
                dispatcher: if planned.relay {
                    Dispatcher::Relay
                } else {
                    Dispatcher::Local
                },
                sender: sender_of(&sub.sender),
                rcpt: r.rcpt.clone(),
                dest: planned.dest.clone(),
                user: planned.user.clone(),
                target: planned.target.clone(),
                dsn_notify: parse_notify(&r.notify),
                dsn_orcpt: r.orcpt.clone(),
                dsn_ret: match sub.ret.as_deref() {
                    Some(r) if r.eq_ignore_ascii_case("FULL") => Some(DsnRet::Full),
                    Some(r) if r.eq_ignore_ascii_case("HDRS") => Some(DsnRet::Headers),
                    _ => None,
                },
                dsn_envid: sub.envid.clone(),
                body: if sub.body_8bit {
                    BodyType::EightBitMime
                } else {
                    BodyType::SevenBit
                },
                smtputf8: sub.smtputf8,
                helo: sub.facts.helo.clone().unwrap_or_default(),
                origin: match sub.facts.peer {
                    Some(addr) => Origin::Inet {
                        addr,
                        rdns: sub.facts.rdns.clone(),
                    },
                    None => Origin::LocalSocket,
                },
                hostname: sub.hostname.clone(),
                tag: sub.facts.tag.clone(),
                auth_user: sub.facts.auth_user.clone(),
                retry: 0,
                last_try: None,
                next_try: 0,
                last_error: None,
                hold: false,
                state: RcptState::Pending,
            });
        }
        Ok(out)
    }

    /// The scheduler says: try these envelopes now. Recipients of one
    /// message to one `lmtp` action go together, so that the server sees
    /// one transaction (RFC 2033) instead of one per recipient; every
    /// other envelope goes alone.
    fn deliver(&mut self, evpids: &[u64]) {
        let mut groups: Vec<Vec<u64>> = Vec::new();
        let mut open: HashMap<(MsgId, String, Sender), usize> = HashMap::new();
        // Relay: one transaction per message, action, sender and domain.
        let mut relays: Vec<Vec<u64>> = Vec::new();
        let mut open_relays: HashMap<(MsgId, String, Sender, String), usize> = HashMap::new();
        for &evpid in evpids {
            let Some(e) = self.envelopes.get(&evpid) else {
                let _ = self
                    .scheduler
                    .send((QueueToScheduler::Remove { evpid }, Vec::new()));
                continue;
            };
            self.inflight.insert(evpid);
            if e.dispatcher == Dispatcher::Relay {
                let domain = e
                    .dest
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default();
                let key = (e.msgid(), e.action.clone(), e.sender.clone(), domain);
                match open_relays.get(&key) {
                    Some(&i) if relays.get(i).is_some_and(|g| g.len() < MAX_RELAY_GROUP) => {
                        if let Some(g) = relays.get_mut(i) {
                            g.push(evpid);
                        }
                    }
                    _ => {
                        open_relays.insert(key, relays.len());
                        relays.push(vec![evpid]);
                    }
                }
                continue;
            }
            // A file or command target replaces the action's method.
            if e.target.is_some() || !self.is_lmtp(&e.action) {
                groups.push(vec![evpid]);
                continue;
            }
            let key = (e.msgid(), e.action.clone(), e.sender.clone());
            match open.get(&key) {
                Some(&i) if groups[i].len() < MAX_LMTP_GROUP => groups[i].push(evpid),
                _ => {
                    open.insert(key, groups.len());
                    groups.push(vec![evpid]);
                }
            }
        }
        for group in groups {
            self.deliver_group(&group);
        }
        for group in relays {
            self.relay_group(&group);
        }
    }

    /// One transaction's worth of relay envelopes to the mta.
    fn relay_group(&mut self, group: &[u64]) {
        let id = self.id();
        let Some(first) = group.first().and_then(|id| self.envelopes.get(id)) else {
            return;
        };
        let opened = self.spool.open_message(first.msgid()).and_then(|f| {
            let size =
                f.metadata()
                    .map(|m| m.len())
                    .map_err(|source| rsmtpd_queue::SpoolError::Io {
                        op: "stat",
                        path: std::path::PathBuf::from(first.msgid().to_string()),
                        source,
                    })?;
            Ok((f, size))
        });
        let (file, size) = match opened {
            Ok(v) => v,
            Err(err) => {
                log_warn!("queue: envelope {}: cannot open message: {err}", first.id);
                for &evpid in group {
                    self.delivered(
                        evpid,
                        Outcome::Temporary {
                            status: "4.3.0".into(),
                            text: "queue error".into(),
                        },
                    );
                }
                return;
            }
        };
        let request = RelayRequest {
            id,
            action: first.action.clone(),
            sender: match &first.sender {
                Sender::Null => String::new(),
                Sender::Address(a) => a.clone(),
            },
            domain: first
                .dest
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default(),
            recipients: group
                .iter()
                .filter_map(|id| self.envelopes.get(id))
                .map(|e| RelayRcpt {
                    evpid: e.id.get(),
                    dest: e.dest.clone(),
                    notify: e.dsn_notify.map(|n| match n {
                        DsnNotify::Never => crate::links::Notify::Never,
                        DsnNotify::On {
                            success,
                            failure,
                            delay,
                        } => crate::links::Notify::On {
                            success,
                            failure,
                            delay,
                        },
                    }),
                    orcpt: e
                        .dsn_orcpt
                        .as_ref()
                        .and_then(|o| o.split_once(';').map(|(t, a)| (t.to_owned(), a.to_owned()))),
                })
                .collect(),
            body_8bit: first.body != BodyType::SevenBit,
            smtputf8: first.smtputf8,
            size,
            ret_full: first.dsn_ret.map(|r| r == DsnRet::Full),
            envid: first.dsn_envid.clone(),
        };
        let _ = self.mta.send((
            QueueToMta::Relay(Box::new(request)),
            vec![OwnedFd::from(file)],
        ));
    }

    /// Whether `action` delivers over LMTP, in the current configuration.
    fn is_lmtp(&self, action: &str) -> bool {
        self.config.actions.iter().any(|a| {
            a.name == action
                && matches!(
                    &a.dispatcher,
                    ConfigDispatcher::Local(LocalDispatcher {
                        method: LocalMethod::Lmtp { .. },
                        ..
                    })
                )
        })
    }

    /// One request to the parent for envelopes of one message, action and
    /// sender (all local, all in `self.envelopes`).
    fn deliver_group(&mut self, group: &[u64]) {
        let Some(first) = group.first().and_then(|id| self.envelopes.get(id)) else {
            return;
        };
        let file = match self.spool.open_message(first.msgid()) {
            Ok(f) => f,
            Err(err) => {
                log_warn!("queue: envelope {}: cannot open message: {err}", first.id);
                for &evpid in group {
                    self.delivered(
                        evpid,
                        Outcome::Temporary {
                            status: "4.3.0".into(),
                            text: "queue error".into(),
                        },
                    );
                }
                return;
            }
        };
        let mut request = LocalDelivery {
            action: first.action.clone(),
            sender: match &first.sender {
                Sender::Null => String::new(),
                Sender::Address(a) => a.clone(),
            },
            recipients: Vec::with_capacity(group.len()),
        };
        for e in group.iter().filter_map(|id| self.envelopes.get(id)) {
            request.recipients.push(LocalRecipient {
                evpid: e.id.get(),
                rcpt: e.rcpt.clone(),
                dest: e.dest.clone(),
                user: e.user.clone(),
                target: e.target.clone(),
                created: e.created,
            });
        }
        let _ = self.parent.send((
            ChildToParent::Deliver(Box::new(request)),
            vec![OwnedFd::from(file)],
        ));
    }

    /// The outcomes of one attempt: remove, retry later, or bounce; the
    /// permanent notices of one message become one report.
    fn outcomes(&mut self, outcomes: Vec<(u64, Outcome)>, remote_mta: Option<String>) {
        let mut notices: Vec<Notice> = Vec::new();
        for (evpid, outcome) in outcomes {
            if let Some(mut f) = self.delivered(evpid, outcome) {
                f.remote_mta.clone_from(&remote_mta);
                notices.push(f);
            }
        }
        self.bounce_all(notices);
    }

    /// One envelope's outcome; a permanent failure is returned for the
    /// caller to report.
    fn delivered(&mut self, evpid: u64, outcome: Outcome) -> Option<Notice> {
        self.inflight.remove(&evpid);
        let mut e = self.envelopes.remove(&evpid)?;
        match outcome {
            Outcome::Ok | Outcome::Relayed | Outcome::PassedOn => {
                self.counters.ok += 1;
                // With a report to send, the envelope (and so the message
                // the report quotes) stays until the report is queued.
                let notice = success_notice(&e, &outcome);
                if notice.is_none() {
                    self.finish(&e);
                }
                notice
            }
            Outcome::Temporary { status, text } => {
                self.counters.tempfail += 1;
                let now = now();
                let previous = e.last_try.unwrap_or(e.created);
                e.retry = e.retry.saturating_add(1);
                e.last_try = Some(now);
                e.next_try = super::scheduler::next_try(
                    self.backoff,
                    e.dispatcher == Dispatcher::Relay,
                    e.retry,
                    e.expires_at(),
                    now,
                );
                e.last_error = Some(LastError {
                    class: ErrorClass::Temporary,
                    text: clean_line(&text),
                });
                let warning = self.delay_warning(&e, previous, now, &status);
                // The new state is on disk before the next attempt.
                if let Err(err) = self.spool.update(&e) {
                    log_warn!("queue: envelope {}: cannot record the attempt: {err}", e.id);
                }
                self.envelopes.insert(evpid, e);
                let _ = self
                    .scheduler
                    .send((QueueToScheduler::Retry { evpid }, Vec::new()));
                warning
            }
            Outcome::Permanent { status, text } => {
                self.counters.permfail += 1;
                if status == "5.4.6" {
                    self.counters.loops += 1;
                }
                Some(Notice {
                    envelope: e,
                    action: dsn::Action::Failed,
                    text: clean_line(&text),
                    status,
                    remote_mta: None,
                })
            }
        }
    }

    /// A delay warning when this attempt is the first since the envelope
    /// passed one of `bounce warn-interval`'s delays (at most one per
    /// delay, without keeping any state: each delay is crossed once), and
    /// the sender did not say NOTIFY without DELAY.
    fn delay_warning(&self, e: &Envelope, previous: u64, now: u64, status: &str) -> Option<Notice> {
        let wanted = match e.dsn_notify {
            None => true,
            Some(DsnNotify::Never) => false,
            Some(DsnNotify::On { delay, .. }) => delay,
        };
        let crossed = self.config.bounce_warn_interval.iter().any(|d| {
            let at = e.created.saturating_add(d.as_secs());
            previous < at && at <= now
        });
        (wanted && crossed && e.sender != Sender::Null).then(|| Notice {
            envelope: e.clone(),
            action: dsn::Action::Delayed,
            text: e
                .last_error
                .as_ref()
                .map_or_else(|| "temporary failure".into(), |l| l.text.clone()),
            status: status.to_owned(),
            remote_mta: None,
        })
    }

    /// Group notices by message and report each group once.
    fn bounce_all(&mut self, notices: Vec<Notice>) {
        let mut by_message: Vec<Vec<Notice>> = Vec::new();
        for f in notices {
            match by_message.iter_mut().find(|g| {
                g.first().is_some_and(|x| {
                    x.envelope.msgid() == f.envelope.msgid() && x.action == f.action
                })
            }) {
                Some(group) => group.push(f),
                None => by_message.push(vec![f]),
            }
        }
        for group in by_message {
            self.bounce(group);
        }
    }

    /// smtpctl's commands (control checked who may ask). Changes are made
    /// on disk first where they must outlive a restart (`hold`).
    fn control(&mut self, command: Command) -> (Reply, Vec<OwnedFd>) {
        let now = now();
        let selected = |envelopes: &HashMap<u64, Envelope>, which: Selector| {
            let mut ids: Vec<u64> = envelopes
                .keys()
                .copied()
                .filter(|id| which.matches(*id))
                .collect();
            ids.sort_unstable();
            ids
        };
        let reply = match command {
            Command::ShowQueue => {
                let mut lines: Vec<QueueLine> = self
                    .envelopes
                    .values()
                    .map(|e| {
                        let state = if self.inflight.contains(&e.id.get()) {
                            "inflight"
                        } else {
                            "pending"
                        };
                        QueueLine::new(e, state, Some(now))
                    })
                    .collect();
                lines.sort_by_key(|l| l.evpid);
                Reply::Queue(lines)
            }
            Command::ShowEnvelope(evpid) => match self.envelopes.get(&evpid) {
                Some(e) => match rsmtpd_queue::encode(e) {
                    Ok(bytes) => Reply::Text(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(err) => Reply::Refused(format!("envelope {evpid:016x}: {err}")),
                },
                None => Reply::Refused(format!("no envelope {evpid:016x}")),
            },
            Command::ShowMessage(evpid) => match self.envelopes.get(&evpid) {
                Some(e) => match self.spool.open_message(e.msgid()) {
                    Ok(file) => return (Reply::Message, vec![OwnedFd::from(file)]),
                    Err(err) => Reply::Refused(format!("message of {evpid:016x}: {err}")),
                },
                None => Reply::Refused(format!("no envelope {evpid:016x}")),
            },
            Command::ShowStats => {
                let relay = self
                    .envelopes
                    .values()
                    .filter(|e| e.dispatcher == Dispatcher::Relay)
                    .count();
                let c = &self.counters;
                Reply::Text(format!(
                    "queue.envelope={}\nqueue.envelope.local={}\nqueue.envelope.relay={relay}\n\
                     queue.inflight={}\nqueue.envelope.enqueued={}\nqueue.envelope.dequeued={}\n\
                     queue.envelope.expired={}\nqueue.envelope.removed={}\nqueue.bounce={}\n\
                     delivery.ok={}\ndelivery.tempfail={}\ndelivery.permfail={}\ndelivery.loop={}\n",
                    self.envelopes.len(),
                    self.envelopes.len() - relay,
                    self.inflight.len(),
                    c.enqueued,
                    c.dequeued,
                    c.expired,
                    c.removed,
                    c.bounces,
                    c.ok,
                    c.tempfail,
                    c.permfail,
                    c.loops,
                ))
            }
            Command::Schedule(which) => {
                let ids = selected(&self.envelopes, which);
                let n = ids.len();
                let _ = self
                    .scheduler
                    .send((QueueToScheduler::Now { evpids: ids }, Vec::new()));
                Reply::Done(format!("{n} envelope(s) scheduled"))
            }
            Command::Discover(which) => {
                // What is on disk and not known here: moved in by hand.
                let found = match rsmtpd_queue::scan_read_only(self.spool.root()) {
                    Ok(found) => found,
                    Err(e) => return (Reply::Refused(format!("spool: {e}")), Vec::new()),
                };
                let new: Vec<Envelope> = found
                    .into_iter()
                    .filter(|e| which.matches(e.id.get()))
                    .filter(|e| e.state == RcptState::Pending)
                    .filter(|e| !self.envelopes.contains_key(&e.id.get()))
                    .collect();
                let n = new.len();
                for e in &new {
                    log_info!("queue: envelope {} discovered", e.id);
                }
                self.resume(new);
                Reply::Done(format!("{n} envelope(s) discovered"))
            }
            Command::Remove(which) => {
                let ids = selected(&self.envelopes, which);
                for evpid in &ids {
                    if let Some(e) = self.envelopes.remove(evpid) {
                        self.counters.removed += 1;
                        log_info!("queue: envelope {} removed by the administrator", e.id);
                        self.finish(&e);
                    }
                }
                Reply::Done(format!("{} envelope(s) removed", ids.len()))
            }
            Command::Pause(Target::Envelope(which)) | Command::Resume(Target::Envelope(which)) => {
                let hold = matches!(command, Command::Pause(_));
                let ids = selected(&self.envelopes, which);
                let mut failed = 0;
                for evpid in &ids {
                    let Some(e) = self.envelopes.get_mut(evpid) else {
                        continue;
                    };
                    e.hold = hold;
                    if let Err(err) = self.spool.update(e) {
                        log_warn!("queue: envelope {}: cannot update: {err}", e.id);
                        failed += 1;
                        continue;
                    }
                    let _ = self.scheduler.send((
                        QueueToScheduler::Hold {
                            evpid: *evpid,
                            hold,
                        },
                        Vec::new(),
                    ));
                }
                let verb = if hold { "paused" } else { "resumed" };
                Reply::Done(format!("{} envelope(s) {verb}", ids.len() - failed))
            }
            Command::Pause(t @ (Target::Mda | Target::Mta))
            | Command::Resume(t @ (Target::Mda | Target::Mta)) => {
                let on = matches!(command, Command::Pause(_));
                let (local, relay) = match t {
                    Target::Mda => (Some(on), None),
                    _ => (None, Some(on)),
                };
                let _ = self
                    .scheduler
                    .send((QueueToScheduler::Pause { local, relay }, Vec::new()));
                Reply::Done(if on { "paused" } else { "resumed" }.into())
            }
            // Not the queue's: control answers these itself.
            Command::ShowStatus
            | Command::UpdateTable(_)
            | Command::Reload
            | Command::LogVerbose(_)
            | Command::Trace { .. }
            | Command::ShowHosts
            | Command::ShowHoststats
            | Command::ShowRelays
            | Command::ShowRoutes
            | Command::ResumeRoute(_)
            | Command::Pause(Target::Smtp)
            | Command::Resume(Target::Smtp) => Reply::Refused("not a queue command".into()),
        };
        (reply, Vec::new())
    }

    /// Past its ttl: bounce with what we last knew.
    fn expire(&mut self, evpid: u64) {
        self.inflight.remove(&evpid);
        self.counters.expired += 1;
        let Some(e) = self.envelopes.remove(&evpid) else {
            let _ = self
                .scheduler
                .send((QueueToScheduler::Remove { evpid }, Vec::new()));
            return;
        };
        let last = e
            .last_error
            .as_ref()
            .map_or_else(String::new, |l| format!(": {}", l.text));
        let text = format!("message expired after {} in the queue{last}", span(e.ttl));
        self.bounce(vec![Notice {
            envelope: e,
            action: dsn::Action::Failed,
            text,
            status: "4.4.7".into(),
            remote_mta: None,
        }]);
    }

    /// Remove a finished envelope from disk (by the reaper), memory and the
    /// schedule.
    fn finish(&mut self, e: &Envelope) {
        self.counters.dequeued += 1;
        let _ = self.reaper.send(Done::Finished(e.id));
        let _ = self
            .scheduler
            .send((QueueToScheduler::Remove { evpid: e.id.get() }, Vec::new()));
    }

    /// Start a bounce for notices of one message: ask lookup how to route
    /// it to the sender.
    fn bounce(&mut self, notices: Vec<Notice>) {
        let Some(first) = notices.first() else {
            return;
        };
        let Sender::Address(to) = &first.envelope.sender else {
            for f in &notices {
                log_info!(
                    "bounce: dropping failure for {} (null sender): {}",
                    visible(&f.envelope.rcpt),
                    visible(&f.text)
                );
                self.done_reporting(f);
            }
            return;
        };
        let id = self.id();
        let query = RouteQuery {
            facts: SessionFacts {
                peer: None,
                rdns: None,
                helo: None,
                tag: None,
                auth_user: None,
                tls: false,
            },
            sender: String::new(),
            rcpt: to.clone(),
        };
        let _ = self
            .lookup
            .send((ToLookup::Route { id, query }, Vec::new()));
        self.bounces.insert(id, PendingBounce { notices });
    }

    fn bounce_routed(&mut self, id: u64, answer: RouteAnswer) {
        let Some(pending) = self.bounces.remove(&id) else {
            return;
        };
        let Some(first) = pending.notices.first() else {
            return;
        };
        let rcpts = pending
            .notices
            .iter()
            .map(|f| f.envelope.rcpt.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let sender = first.envelope.sender.to_string();
        match answer {
            RouteAnswer::Accept { deliveries } => match self.write_bounce(&pending, &deliveries) {
                Ok((msgid, envelopes)) => {
                    log_info!(
                        "bounce: message {} for {}: sent to {} as message {msgid}: {}",
                        first.envelope.msgid(),
                        visible(&rcpts),
                        visible(&sender),
                        visible(&first.text)
                    );
                    // Committed (durable) before the failed envelopes go: a
                    // crash in between repeats a bounce, never loses one.
                    self.counters.bounces += 1;
                    self.commit(0, msgid, envelopes);
                    for f in &pending.notices {
                        self.done_reporting(f);
                    }
                }
                Err(e) => {
                    log_warn!(
                        "bounce: message {}: cannot write the bounce: {e}",
                        first.envelope.msgid()
                    );
                    // A failure is tried again (and reported then); a
                    // warning or a success that could not be written is
                    // let go.
                    for f in pending.notices {
                        if f.action != dsn::Action::Failed {
                            self.done_reporting(&f);
                            continue;
                        }
                        let evpid = f.envelope.id.get();
                        self.envelopes.insert(evpid, f.envelope);
                        let _ = self
                            .scheduler
                            .send((QueueToScheduler::Retry { evpid }, Vec::new()));
                    }
                }
            },
            RouteAnswer::Reject { text, .. } | RouteAnswer::TempFail { text } => {
                log_warn!(
                    "bounce: message {}: no route back to {}: {}; failure was: {}",
                    first.envelope.msgid(),
                    visible(&sender),
                    visible(&text),
                    visible(&first.text)
                );
                for f in &pending.notices {
                    self.done_reporting(f);
                }
            }
        }
    }

    /// After a report: a failed or a delivered envelope is finished; a
    /// delayed one stays.
    fn done_reporting(&mut self, f: &Notice) {
        if f.action != dsn::Action::Delayed {
            self.finish(&f.envelope);
        }
    }

    fn write_bounce(
        &self,
        pending: &PendingBounce,
        deliveries: &[Planned],
    ) -> Result<(MsgId, Vec<Envelope>), String> {
        let Some(first) = pending.notices.first() else {
            return Err("no failure to report".into());
        };
        let failed = &first.envelope;
        let (msgid, file) = self.spool.create_message().map_err(|e| e.to_string())?;
        let now = now();
        let report = dsn::Report {
            reporting_mta: self.config.hostname.clone(),
            to: failed.sender.to_string(),
            arrival_date: failed.created,
            envid: failed.dsn_envid.clone(),
            // RFC 3461 4.3: the full message comes back with a failure;
            // a success or a warning carries the headers.
            ret: match (first.action, failed.dsn_ret) {
                (dsn::Action::Failed, None | Some(DsnRet::Full)) => dsn::Return::Full,
                _ => dsn::Return::Headers,
            },
            recipients: pending
                .notices
                .iter()
                .map(|f| dsn::RecipientStatus {
                    final_recipient: f.envelope.dest.clone(),
                    original_recipient: f.envelope.dsn_orcpt.clone(),
                    action: f.action,
                    status: f.status.clone(),
                    remote_mta: f.remote_mta.clone(),
                    diagnostic: matches!(f.action, dsn::Action::Failed | dsn::Action::Delayed)
                        .then(|| f.text.clone()),
                    last_attempt: f.envelope.last_try.unwrap_or(now),
                    will_retry_until: (f.action == dsn::Action::Delayed)
                        .then(|| f.envelope.expires_at()),
                })
                .collect(),
            date: now,
            unique: msgid.to_string(),
        };
        let result = (|| {
            let original = self
                .spool
                .open_message(failed.msgid())
                .map_err(|e| e.to_string())?;
            let mut reader = std::io::BufReader::new(original);
            let mut out = std::io::BufWriter::new(file);
            report
                .write(&mut reader, &mut out)
                .map_err(|e| e.to_string())?;
            let file = out.into_inner().map_err(|e| e.to_string())?;
            rsmtpd_queue::end_message(&file).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            let _ = self.spool.abort(msgid);
            return Err(e);
        }
        let mut envelopes = Vec::with_capacity(deliveries.len());
        for planned in deliveries {
            envelopes.push(Envelope {
                id: self
                    .spool
                    .new_envelope_id(msgid)
                    .map_err(|e| e.to_string())?,
                created: now,
                ttl: self.config.queue.ttl.as_secs(),
                action: planned.action.clone(),
                dispatcher: if planned.relay {
                    Dispatcher::Relay
                } else {
                    Dispatcher::Local
                },
                sender: Sender::Null,
                rcpt: failed.sender.to_string(),
                dest: planned.dest.clone(),
                user: planned.user.clone(),
                target: planned.target.clone(),
                dsn_notify: None,
                dsn_orcpt: None,
                dsn_ret: None,
                dsn_envid: None,
                body: BodyType::EightBitMime,
                smtputf8: false,
                helo: String::new(),
                origin: Origin::LocalSocket,
                hostname: self.config.hostname.clone(),
                tag: None,
                auth_user: None,
                retry: 0,
                last_try: None,
                next_try: 0,
                last_error: None,
                hold: false,
                state: RcptState::Pending,
            });
        }
        Ok((msgid, envelopes))
    }
}

/// A new message under incoming/ for a session, or why not.
fn create_reply(spool: &Spool, id: u64) -> (QueueToSmtp, Vec<OwnedFd>) {
    match spool.create_message() {
        Ok((msgid, file)) => (
            QueueToSmtp::Created {
                id,
                msgid: msgid.get(),
            },
            vec![OwnedFd::from(file)],
        ),
        Err(e) => {
            log_warn!("queue: cannot create message: {e}");
            (
                QueueToSmtp::CreateFailed {
                    id,
                    reason: "Temporary queue failure".into(),
                },
                Vec::new(),
            )
        }
    }
}

/// The report a sender asked for with NOTIFY=SUCCESS, when it is ours to
/// send (RFC 3461 section 5.2.2: "relayed" where the next hop takes no
/// NOTIFY, nothing where it does).
fn success_notice(envelope: &Envelope, outcome: &Outcome) -> Option<Notice> {
    let asked = matches!(
        envelope.dsn_notify,
        Some(DsnNotify::On { success: true, .. })
    );
    if !asked || envelope.sender == Sender::Null {
        return None;
    }
    let (action, text) = match outcome {
        Outcome::Ok => (dsn::Action::Delivered, "delivered"),
        Outcome::Relayed => (
            dsn::Action::Relayed,
            "relayed to a server that does not offer delivery status notifications",
        ),
        _ => return None,
    };
    Some(Notice {
        envelope: envelope.clone(),
        action,
        text: text.into(),
        status: "2.0.0".into(),
        remote_mta: None,
    })
}

/// A queue lifetime in the largest unit that divides it ("4 days", "90
/// seconds").
fn span(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn sender_of(text: &str) -> Sender {
    if text.is_empty() {
        Sender::Null
    } else {
        Sender::Address(text.to_owned())
    }
}

/// NOTIFY text as the session kept it (`SUCCESS,DELAY`, `NEVER`).
fn parse_notify(text: &str) -> Option<DsnNotify> {
    if text.is_empty() {
        return None;
    }
    if text.eq_ignore_ascii_case("NEVER") {
        return Some(DsnNotify::Never);
    }
    let has = |w: &str| text.split(',').any(|t| t.trim().eq_ignore_ascii_case(w));
    let (success, failure, delay) = (has("SUCCESS"), has("FAILURE"), has("DELAY"));
    (success || failure || delay).then_some(DsnNotify::On {
        success,
        failure,
        delay,
    })
}

/// Error texts go into envelope files, which refuse line breaks.
fn clean_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(4 * 86_400), "4 days");
        assert_eq!(span(86_400), "1 day");
        assert_eq!(span(7_200), "2 hours");
        assert_eq!(span(90), "90 seconds");
        assert_eq!(span(120), "2 minutes");
        assert_eq!(span(1), "1 second");
    }

    #[test]
    fn notify_parsing() {
        assert_eq!(parse_notify(""), None);
        assert_eq!(parse_notify("never"), Some(DsnNotify::Never));
        assert_eq!(
            parse_notify("SUCCESS,DELAY"),
            Some(DsnNotify::On {
                success: true,
                failure: false,
                delay: true
            })
        );
    }

    #[test]
    fn error_text_is_one_line() {
        assert_eq!(clean_line("a\r\nb\0c"), "a  b c");
    }
}
