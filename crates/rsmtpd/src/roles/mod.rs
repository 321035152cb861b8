//! The daemon's processes. The parent ([`parent`]) parses the
//! configuration, binds the listeners and re-executes this binary once per
//! child role with `--role NAME`; each child reads its [`Start`] frame from
//! the socket on its standard input, drops privileges, and runs.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use rsmtpd_ipc::BlockingChannel;

use crate::links::{ChildToParent, FdKind, ParentToChild, Role, Start};
use crate::privsep;

pub mod control;
pub mod crypto;
pub mod deliver;
pub mod delivery_workers;
pub mod forward;
pub mod lookup;
pub mod mta;
pub mod offline;
pub mod parent;
pub mod queue;
pub mod rpc;
pub mod scheduler;
pub mod smtp;

/// The argument that starts a child role: `smtpd --role smtp`.
pub const ROLE_FLAG: &str = "--role";

/// The link to the parent, as a child holds it before its runtime starts.
pub type ParentLink = BlockingChannel<ChildToParent, ParentToChild>;

/// Why a child role stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("ipc: {0}")]
    Ipc(#[from] rsmtpd_ipc::IpcError),
    #[error("the parent closed the link before sending the start frame")]
    NoStart,
    #[error("the first frame from the parent was not Start")]
    NotStart,
    #[error("the start frame lists {listed} fds but {received} came")]
    FdMismatch { listed: usize, received: usize },
    #[error("no link to {0:?} was passed")]
    MissingLink(Role),
    #[error("privileges: {0}")]
    Privsep(#[from] privsep::PrivsepError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// The fds a child received, by kind.
pub struct Received {
    fds: Vec<(FdKind, OwnedFd)>,
}

impl Received {
    /// The socket to `peer`.
    pub fn link(&mut self, peer: Role) -> Result<OwnedFd, RoleError> {
        let pos = self
            .fds
            .iter()
            .position(|(kind, _)| *kind == FdKind::Link(peer))
            .ok_or(RoleError::MissingLink(peer))?;
        Ok(self.fds.remove(pos).1)
    }

    /// The first fd of this kind (not a link: see [`Received::link`]).
    pub fn take(&mut self, kind: &FdKind) -> Option<OwnedFd> {
        let pos = self.fds.iter().position(|(k, _)| k == kind)?;
        Some(self.fds.remove(pos).1)
    }

    /// Every listener socket: (listener index, address, server name, fd).
    pub fn listeners(&mut self) -> Vec<(usize, std::net::SocketAddr, String, OwnedFd)> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for (kind, fd) in self.fds.drain(..) {
            match kind {
                FdKind::Listener {
                    index,
                    addr,
                    hostname,
                } => out.push((index, addr, hostname, fd)),
                other => rest.push((other, fd)),
            }
        }
        self.fds = rest;
        out
    }
}

/// Entry point of a child: `smtpd --role NAME`.
pub fn child_main(name: &str) -> ExitCode {
    let Some(role) = Role::from_name(name) else {
        eprintln!("smtpd: unknown role {name:?}");
        return ExitCode::from(1);
    };
    match start_child(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::log_error!("{}: fatal: {e}", role.name());
            ExitCode::from(1)
        }
    }
}

fn start_child(role: Role) -> Result<(), RoleError> {
    let sock = rsmtpd_ipc::take_from_parent()?;
    let mut parent: ParentLink = BlockingChannel::from_fd(sock)?;
    let (msg, fds) = parent.recv()?.ok_or(RoleError::NoStart)?;
    let ParentToChild::Start(start) = msg else {
        return Err(RoleError::NotStart);
    };
    if start.fds.len() != fds.len() {
        return Err(RoleError::FdMismatch {
            listed: start.fds.len(),
            received: fds.len(),
        });
    }
    crate::logging::init(start.foreground_log, start.verbose);
    let received = Received {
        fds: start.fds.iter().cloned().zip(fds).collect(),
    };
    match role {
        Role::Smtp => smtp::run(*start, parent, received),
        Role::Queue => queue::run(*start, parent, received),
        Role::Scheduler => scheduler::run(*start, parent, received),
        Role::Lookup => lookup::run(*start, parent, received),
        Role::Mta => mta::run(*start, parent, received),
        Role::Control => control::run(*start, parent, received),
        Role::Crypto => crypto::run(*start, parent, received),
        Role::Parent => Err(RoleError::Setup("the parent is not a child role".into())),
    }
}

/// A single-threaded runtime: each role is one event loop.
pub fn runtime() -> Result<tokio::runtime::Runtime, RoleError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RoleError::Runtime)
}

/// What each role becomes after start-up (architecture section 4).
pub fn privileges(role: Role, start: &Start) -> privsep::Drop {
    let empty = || Some(std::path::PathBuf::from(privsep::EMPTY_DIR));
    match role {
        Role::Smtp | Role::Scheduler | Role::Mta | Role::Crypto => privsep::Drop {
            user: privsep::SMTPD_USER,
            chroot: empty(),
        },
        Role::Queue => privsep::Drop {
            user: privsep::QUEUE_USER,
            chroot: Some(start.config.queue.path.clone()),
        },
        // lookup reads tables and the user database; control binds a socket
        // path: neither can live in an empty chroot.
        Role::Lookup | Role::Control | Role::Parent => privsep::Drop {
            user: privsep::SMTPD_USER,
            chroot: None,
        },
    }
}

/// Tell the parent start-up is done.
pub fn ready(parent: &mut ParentLink) -> Result<(), RoleError> {
    parent.send(&ChildToParent::Ready, Vec::new())?;
    Ok(())
}

/// The async link to the parent, once a role's runtime runs.
pub type AsyncParentLink = rsmtpd_ipc::Channel<ChildToParent, ParentToChild>;

/// Returns when the parent says Shutdown or goes away: every role stops then.
///
/// SIGINT is caught and ignored: Ctrl-C in a terminal reaches every process
/// of the group, and only the parent decides how the daemon stops.
pub async fn wait_for_shutdown(mut parent: AsyncParentLink) -> Result<(), RoleError> {
    ignore_interrupts()?;
    loop {
        match parent.recv().await? {
            None | Some((ParentToChild::Shutdown, _)) => return Ok(()),
            Some((ParentToChild::Logging(v), _)) => crate::logging::apply(v),
            Some(_) => {}
        }
    }
}

/// Like [`wait_for_shutdown`], handing each new configuration to
/// `reload` meanwhile.
pub async fn serve_parent(
    mut parent: AsyncParentLink,
    mut reload: impl FnMut(rsmtpd_config::model::Config),
) -> Result<(), RoleError> {
    ignore_interrupts()?;
    loop {
        match parent.recv().await? {
            None | Some((ParentToChild::Shutdown, _)) => return Ok(()),
            Some((ParentToChild::Reload(config), _)) => reload(*config),
            Some((ParentToChild::Logging(v), _)) => crate::logging::apply(v),
            Some(_) => {}
        }
    }
}

/// Catch SIGINT and do nothing with it (see [`wait_for_shutdown`]).
pub fn ignore_interrupts() -> Result<(), RoleError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RoleError::Runtime)?;
    tokio::spawn(async move { while interrupt.recv().await.is_some() {} });
    Ok(())
}

/// An event enum that can say "the link to this role closed".
pub trait LinkEvent {
    fn closed(role: Role) -> Self;
}

/// Forward every message of `rx` into `events`, then a `closed` event when
/// the link ends or breaks (a broken link is logged: the peer is buggy or
/// gone).
pub fn reader<Rx, E, F>(
    peer: Role,
    mut rx: rsmtpd_ipc::Receiver<Rx>,
    events: tokio::sync::mpsc::UnboundedSender<E>,
    wrap: F,
) where
    Rx: serde::de::DeserializeOwned + Send + 'static,
    E: LinkEvent + Send + 'static,
    F: Fn(Rx, Vec<OwnedFd>) -> E + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Some((msg, fds))) => {
                    if events.send(wrap(msg, fds)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    crate::log_warn!("link to {}: {e}", peer.name());
                    break;
                }
            }
        }
        let _ = events.send(E::closed(peer));
    });
}

/// A queue that feeds `tx`: many parts of a role can send on one link
/// without sharing the sender, and frames never interleave.
pub fn writer<Tx>(
    mut tx: rsmtpd_ipc::Sender<Tx>,
) -> tokio::sync::mpsc::UnboundedSender<(Tx, Vec<OwnedFd>)>
where
    Tx: serde::Serialize + Send + Sync + 'static,
{
    let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel::<(Tx, Vec<OwnedFd>)>();
    tokio::spawn(async move {
        while let Some((msg, fds)) = pending.recv().await {
            if let Err(e) = tx.send(&msg, fds).await {
                crate::log_warn!("sending on a link: {e}");
                return;
            }
        }
    });
    queue
}
