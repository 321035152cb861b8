//! Request and answer over a link that many tasks share: each request
//! gets a fresh id, the answer (which carries it) wakes the task that
//! asked. Used by smtp (to lookup and the queue), control (to the queue
//! and smtp) and lookup (to the parent, with a reader of its own).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rsmtpd_ipc::Channel;
use tokio::sync::{mpsc, oneshot};

use crate::links::{FromLookup, QueueToControl, QueueToSmtp, SmtpToControl};
use crate::roles::writer;

/// Answers carry the id of the request they answer.
pub trait Correlated {
    fn id(&self) -> u64;
}

impl Correlated for FromLookup {
    fn id(&self) -> u64 {
        match self {
            FromLookup::Route { id, .. }
            | FromLookup::Authenticated { id, .. }
            | FromLookup::Sender { id, .. }
            | FromLookup::TableUpdated { id, .. } => *id,
        }
    }
}

impl Correlated for QueueToSmtp {
    fn id(&self) -> u64 {
        match self {
            QueueToSmtp::Created { id, .. }
            | QueueToSmtp::CreateFailed { id, .. }
            | QueueToSmtp::Committed { id, .. }
            | QueueToSmtp::CommitFailed { id, .. } => *id,
        }
    }
}

type Waiter<Resp> = oneshot::Sender<(Resp, Vec<OwnedFd>)>;

/// The requests waiting for their answers, by id.
pub struct Pending<Resp> {
    waiting: Mutex<HashMap<u64, Waiter<Resp>>>,
}

impl<Resp> Pending<Resp> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter<Resp>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the task that asked request `id` (an answer nobody waits for
    /// is dropped).
    pub fn answer(&self, id: u64, msg: Resp, fds: Vec<OwnedFd>) {
        if let Some(w) = self.lock().remove(&id) {
            let _ = w.send((msg, fds));
        }
    }

    /// The link is gone: every waiter gets None.
    pub fn close(&self) {
        self.lock().clear();
    }
}

/// Request/answer over a link shared by many sessions.
pub struct Client<Req, Resp> {
    next: AtomicU64,
    pending: Arc<Pending<Resp>>,
    out: mpsc::UnboundedSender<(Req, Vec<OwnedFd>)>,
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: serde::Serialize + Send + Sync + 'static,
    Resp: serde::de::DeserializeOwned + Correlated + Send + 'static,
{
    pub fn start(channel: Channel<Req, Resp>) -> Arc<Self> {
        let (tx, mut rx) = channel.split();
        let client = Client::new(tx);
        let routes = client.pending();
        tokio::spawn(async move {
            while let Ok(Some((msg, fds))) = rx.recv().await {
                routes.answer(msg.id(), msg, fds);
            }
            routes.close();
        });
        client
    }
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: serde::Serialize + Send + Sync + 'static,
{
    /// A client whose answers the caller's own reader routes, through
    /// [`Client::pending`].
    pub fn new(tx: rsmtpd_ipc::Sender<Req>) -> Arc<Self> {
        Arc::new(Client {
            next: AtomicU64::new(1),
            pending: Arc::new(Pending {
                waiting: Mutex::new(HashMap::new()),
            }),
            out: writer(tx),
        })
    }

    /// Where answers go.
    pub fn pending(&self) -> Arc<Pending<Resp>> {
        self.pending.clone()
    }

    /// Send a request made with a fresh id and wait for its answer; `None`
    /// if the link went away.
    pub async fn call(&self, make: impl FnOnce(u64) -> Req) -> Option<(Resp, Vec<OwnedFd>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self.out.send((make(id), Vec::new())).is_err() {
            self.pending.lock().remove(&id);
            return None;
        }
        rx.await.ok()
    }

    /// A request without an answer.
    pub fn send(&self, req: Req) {
        let _ = self.out.send((req, Vec::new()));
    }

    /// A request without an answer, with descriptors.
    pub fn send_with(&self, req: Req, fds: Vec<OwnedFd>) {
        let _ = self.out.send((req, fds));
    }
}

impl Correlated for QueueToControl {
    fn id(&self) -> u64 {
        self.id
    }
}

impl Correlated for crate::links::MtaToControl {
    fn id(&self) -> u64 {
        self.id
    }
}

impl Correlated for SmtpToControl {
    fn id(&self) -> u64 {
        match self {
            SmtpToControl::Stats { id, .. } => *id,
        }
    }
}
