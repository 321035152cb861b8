//! The control role: serves the control socket (docs/operations.md) that
//! smtpctl and sendmail connect to. Any local user can, so every
//! connection is untrusted: one bounded first frame, read with a deadline;
//! the user is who the kernel says (SO_PEERCRED). A local submission
//! (`Enqueue`) hands the connection itself to smtp, which runs an SMTP
//! session on it for that user. Commands go to the queue (which passes
//! scheduling ones on to the scheduler) or smtp; only `show stats` and
//! `show status` are open to every user, the rest need root (or, for a
//! daemon a user started, that user).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsmtpd_ipc::Channel;
use rsmtpd_ipc::frame::HEADER_LEN;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::links::{
    ChildToParent, ControlToMta, ControlToQueue, ControlToSmtp, FdKind, FromLookup, LogChange,
    MtaToControl, ParentToChild, QueueToControl, Role, SmtpToControl, Start, ToLookup,
};
use crate::privsep::Mode;
use crate::roles::rpc::Client;
use crate::roles::{ParentLink, Received, RoleError};
use crate::smtpd::Subsystem;
use crate::{log_info, log_warn};
use rsmtpd_control::{Command, Reply, Request, Target};

/// The first frame must arrive within this.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being read or served at once; more wait in the backlog.
const MAX_PENDING: usize = 64;
/// An answer from another process.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What `show status` says; pause and resume go through here.
#[derive(Debug, Clone, Copy)]
struct Status {
    mda: bool,
    mta: bool,
    smtp: bool,
}

struct Control {
    mode: Mode,
    started: u64,
    status: Mutex<Status>,
    smtp: Arc<Client<ControlToSmtp, SmtpToControl>>,
    queue: Arc<Client<ControlToQueue, QueueToControl>>,
    lookup: Arc<Client<ToLookup, FromLookup>>,
    mta: Arc<Client<ControlToMta, MtaToControl>>,
    parent: tokio::sync::mpsc::UnboundedSender<(ChildToParent, Vec<OwnedFd>)>,
    /// Who waits for the parent's answer to a reload (one at a time).
    reloading: tokio::sync::Mutex<()>,
    reloaded: Mutex<Option<tokio::sync::oneshot::Sender<Result<(), String>>>>,
}

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let socket = fds
        .take(&FdKind::ControlSocket)
        .ok_or_else(|| RoleError::Setup("no control socket was passed".into()))?;
    let smtp = fds.link(Role::Smtp)?;
    let queue = fds.link(Role::Queue)?;
    let lookup = fds.link(Role::Lookup)?;
    let mta = fds.link(Role::Mta)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Control, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::ignore_interrupts()?;
        let (parent_tx, mut parent_rx) = parent.into_async()?.split();
        let listener = std::os::unix::net::UnixListener::from(socket);
        listener
            .set_nonblocking(true)
            .map_err(|e| RoleError::Setup(format!("control socket: {e}")))?;
        let listener = UnixListener::from_std(listener)
            .map_err(|e| RoleError::Setup(format!("control socket: {e}")))?;
        let control = Arc::new(Control {
            mode: start.mode,
            started: crate::clock::now(),
            status: Mutex::new(Status {
                mda: start.paused.contains(&Subsystem::Mda),
                mta: start.paused.contains(&Subsystem::Mta),
                smtp: start.paused.contains(&Subsystem::Smtp),
            }),
            smtp: Client::start(Channel::from_fd(smtp)?),
            queue: Client::start(Channel::from_fd(queue)?),
            lookup: Client::start(Channel::from_fd(lookup)?),
            mta: Client::start(Channel::from_fd(mta)?),
            parent: super::writer(parent_tx),
            reloading: tokio::sync::Mutex::new(()),
            reloaded: Mutex::new(None),
        });
        let from_parent = {
            let control = control.clone();
            async move {
                loop {
                    match parent_rx.recv().await {
                        Ok(Some((ParentToChild::Reloaded(result), _))) => {
                            let waiter = control
                                .reloaded
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .take();
                            if let Some(w) = waiter {
                                let _ = w.send(result);
                            }
                        }
                        Ok(Some((ParentToChild::Shutdown, _))) | Ok(None) | Err(_) => {
                            return Ok::<(), RoleError>(());
                        }
                        Ok(Some((ParentToChild::Logging(v), _))) => {
                            crate::logging::apply(v);
                        }
                        Ok(Some(_)) => {}
                    }
                }
            }
        };
        let pending = Arc::new(Semaphore::new(MAX_PENDING));
        let serve = async {
            loop {
                let Ok(permit) = pending.clone().acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let control = control.clone();
                        tokio::spawn(async move {
                            control.connection(stream).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        log_warn!("control: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::select! {
            () = serve => Ok(()),
            r = from_parent => r,
        }
    })
}

impl Control {
    /// One client: its first frame, then what it asked for.
    async fn connection(&self, mut stream: UnixStream) {
        let Ok(cred) = rsmtpd_ipc::peer_cred(&stream) else {
            return;
        };
        let uid = cred.uid.as_raw();
        let request =
            match tokio::time::timeout(FIRST_FRAME_TIMEOUT, first_frame(&mut stream)).await {
                Ok(Ok(request)) => request,
                Ok(Err(why)) => {
                    log_warn!("control: uid {uid}: {why}");
                    return;
                }
                Err(_) => {
                    log_warn!("control: uid {uid}: no request in time");
                    return;
                }
            };
        let command = match request {
            Request::Enqueue => return self.enqueue(stream, cred.uid),
            Request::Command(command) => command,
        };
        let (reply, fds) = if command.is_open_to_all() || self.is_admin(uid) {
            self.command(command).await
        } else {
            log_info!("control: uid {uid}: refused {command:?}: permission denied");
            (Reply::Refused("permission denied".into()), Vec::new())
        };
        let mut channel: Channel<Reply, Request> = Channel::new(stream);
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, channel.send(&reply, fds)).await;
    }

    /// Root, or the user a non-root daemon runs as.
    fn is_admin(&self, uid: u32) -> bool {
        match self.mode {
            Mode::Root => uid == 0,
            Mode::Unprivileged { uid: ours } => uid == ours,
        }
    }

    /// The connection goes to smtp as it is: nothing was read past the
    /// request.
    fn enqueue(&self, stream: UnixStream, uid: nix::unistd::Uid) {
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let Ok(std) = stream.into_std() else {
            return;
        };
        self.smtp.send_with(
            ControlToSmtp::Enqueue {
                uid: uid.as_raw(),
                user,
            },
            vec![OwnedFd::from(std)],
        );
    }

    async fn command(&self, command: Command) -> (Reply, Vec<OwnedFd>) {
        log_info!("control: {command:?}");
        match command {
            Command::ShowStatus => {
                let s = *self.status.lock().unwrap_or_else(|p| p.into_inner());
                let word = |paused: bool| if paused { "paused" } else { "running" };
                (
                    Reply::Text(format!(
                        "MDA {}\nMTA {}\nSMTP {}\n",
                        word(s.mda),
                        word(s.mta),
                        word(s.smtp)
                    )),
                    Vec::new(),
                )
            }
            Command::ShowStats => (Reply::Text(self.stats().await), Vec::new()),
            Command::ShowHosts
            | Command::ShowHoststats
            | Command::ShowRelays
            | Command::ShowRoutes
            | Command::ResumeRoute(_) => {
                let call = self.mta.call(|id| ControlToMta { id, command });
                match tokio::time::timeout(ANSWER_TIMEOUT, call).await {
                    Ok(Some((answer, _))) => (answer.reply, Vec::new()),
                    _ => (Reply::Refused("the mta did not answer".into()), Vec::new()),
                }
            }
            Command::Reload => {
                let _one_at_a_time = self.reloading.lock().await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                *self.reloaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
                let _ = self.parent.send((ChildToParent::Reload, Vec::new()));
                let reply = match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                    Ok(Ok(Ok(()))) => Reply::Done("configuration reloaded".into()),
                    Ok(Ok(Err(why))) => Reply::Refused(format!("reload failed: {why}")),
                    _ => Reply::Refused("the parent did not answer".into()),
                };
                (reply, Vec::new())
            }
            Command::LogVerbose(on) => {
                let _ = self
                    .parent
                    .send((ChildToParent::Logging(LogChange::Verbose(on)), Vec::new()));
                let what = if on { "verbose" } else { "brief" };
                (Reply::Done(format!("logging {what}")), Vec::new())
            }
            Command::Trace { subsystem, on } => {
                let Some(bit) = crate::logging::trace_bit(&subsystem) else {
                    return (
                        Reply::Refused(format!(
                            "unknown subsystem {}",
                            crate::logging::visible(&subsystem)
                        )),
                        Vec::new(),
                    );
                };
                let _ = self.parent.send((
                    ChildToParent::Logging(LogChange::Trace { bit, on }),
                    Vec::new(),
                ));
                let what = if on { "tracing" } else { "not tracing" };
                (Reply::Done(format!("{what} {subsystem}")), Vec::new())
            }
            Command::UpdateTable(name) => {
                let call = self.lookup.call(|id| ToLookup::UpdateTable { id, name });
                let reply = match tokio::time::timeout(ANSWER_TIMEOUT, call).await {
                    Ok(Some((FromLookup::TableUpdated { result: Ok(()), .. }, _))) => {
                        Reply::Done("table updated".into())
                    }
                    Ok(Some((FromLookup::TableUpdated { result: Err(e), .. }, _))) => {
                        Reply::Refused(e)
                    }
                    _ => Reply::Refused("lookup did not answer".into()),
                };
                (reply, Vec::new())
            }
            Command::Pause(Target::Smtp) | Command::Resume(Target::Smtp) => {
                let pause = matches!(command, Command::Pause(_));
                self.smtp.send(ControlToSmtp::Accepting(!pause));
                self.status.lock().unwrap_or_else(|p| p.into_inner()).smtp = pause;
                (
                    Reply::Done(if pause { "paused" } else { "resumed" }.into()),
                    Vec::new(),
                )
            }
            other => {
                let status = match &other {
                    Command::Pause(Target::Mda) => Some((true, true)),
                    Command::Resume(Target::Mda) => Some((true, false)),
                    Command::Pause(Target::Mta) => Some((false, true)),
                    Command::Resume(Target::Mta) => Some((false, false)),
                    _ => None,
                };
                let answer = self.ask_queue(other).await;
                if let (Some((mda, paused)), (Reply::Done(_), _)) = (status, &answer) {
                    let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    if mda {
                        s.mda = paused;
                    } else {
                        s.mta = paused;
                    }
                }
                answer
            }
        }
    }

    async fn ask_queue(&self, command: Command) -> (Reply, Vec<OwnedFd>) {
        let call = self.queue.call(|id| ControlToQueue { id, command });
        match tokio::time::timeout(ANSWER_TIMEOUT, call).await {
            Ok(Some((answer, fds))) => (answer.reply, fds),
            _ => (
                Reply::Refused("the queue did not answer".into()),
                Vec::new(),
            ),
        }
    }

    /// `name=value` lines, OpenSMTPD's style.
    async fn stats(&self) -> String {
        let mut out = format!(
            "uptime={}\n",
            crate::clock::now().saturating_sub(self.started)
        );
        let call = self.smtp.call(|id| ControlToSmtp::Stats { id });
        if let Ok(Some((
            SmtpToControl::Stats {
                sessions,
                opened,
                closed,
                ..
            },
            _,
        ))) = tokio::time::timeout(ANSWER_TIMEOUT, call).await
        {
            out.push_str(&format!(
                "smtp.session={sessions}\nsmtp.session.opened={opened}\nsmtp.session.closed={closed}\n"
            ));
        }
        if let (Reply::Text(queue), _) = self.ask_queue(Command::ShowStats).await {
            out.push_str(&queue);
        }
        out
    }
}

/// Reads exactly one request frame (never a byte more: what follows may
/// be an SMTP session for smtp to read).
async fn first_frame(stream: &mut UnixStream) -> Result<Request, String> {
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    let len = rsmtpd_control::request_length(header).map_err(|e| format!("bad request: {e}"))?;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    rsmtpd_control::decode_request(&payload).map_err(|e| format!("bad request: {e}"))
}
