//! The parent: the only process that keeps root. It binds the listeners,
//! prepares the spool, starts every child role (re-executing this binary),
//! runs local deliveries as the recipient user, and supervises: a child
//! that dies takes the daemon down cleanly, since the spool is the state
//! and a restart resumes it.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use rsmtpd_config::expand::resolve_user;
use rsmtpd_config::model::{Config, Dispatcher, LocalMethod};
use rsmtpd_delivery::format;
use rsmtpd_ipc::{BlockingChannel, Channel};
use rsmtpd_table::{Table, Userinfo};
use tokio::sync::mpsc;

use crate::clock::now;
use crate::links::{
    AuthVerdict, ChildToParent, FdKind, ForwardOwner, ForwardResult, LocalDelivery, LocalRecipient,
    LogChange, Outcome, ParentToChild, Role, Secret, Start,
};
use crate::logging::visible;
use crate::privsep::{self, Mode};
use crate::roles::deliver::{self, LmtpRcpt, Method};
use crate::roles::delivery_workers;
use crate::roles::{ROLE_FLAG, RoleError, writer};
use crate::smtpd::Flags;
use crate::{log_error, log_info, log_warn};

/// How long a local delivery may take before it is killed and retried.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The pairs of child roles that talk directly.
const LINKS: [(Role, Role); 11] = [
    (Role::Smtp, Role::Queue),
    (Role::Control, Role::Mta),
    (Role::Control, Role::Smtp),
    (Role::Control, Role::Queue),
    (Role::Control, Role::Lookup),
    (Role::Smtp, Role::Crypto),
    (Role::Mta, Role::Crypto),
    (Role::Smtp, Role::Lookup),
    (Role::Queue, Role::Scheduler),
    (Role::Queue, Role::Lookup),
    (Role::Queue, Role::Mta),
];

#[derive(Debug, thiserror::Error)]
pub enum ParentError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: nix::Error,
    },
    #[error("spool {path}: {reason}")]
    Spool { path: PathBuf, reason: String },
    #[error("control socket {path}: {reason}")]
    Control { path: PathBuf, reason: String },
    #[error("cannot start the {role} process: {reason}")]
    Spawn { role: &'static str, reason: String },
    #[error("{0}")]
    Role(#[from] RoleError),
    #[error("{0}")]
    Privsep(#[from] privsep::PrivsepError),
    #[error("ipc: {0}")]
    Ipc(#[from] rsmtpd_ipc::IpcError),
}

pub fn run(flags: &Flags, config: Config) -> ExitCode {
    crate::logging::init(flags.debug, flags.verbose);
    match start(flags, config) {
        Ok(code) => code,
        Err(e) => {
            log_error!("smtpd: {e}");
            ExitCode::from(1)
        }
    }
}

struct ChildProc {
    role: Role,
    process: Child,
}

fn start(flags: &Flags, config: Config) -> Result<ExitCode, ParentError> {
    let mode = Mode::current();
    let tables = rsmtpd_config::ruleset::open_tables(&config)
        .map_err(|e| RoleError::Setup(e.to_string()))?;
    match mode {
        Mode::Unprivileged { uid } => {
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            log_warn!(
                "smtpd: running as {name}, not root: no privilege drops or chroot, and local deliveries only to {name}"
            );
        }
        Mode::Root => {
            privsep::account(privsep::SMTPD_USER)?;
            privsep::account(privsep::QUEUE_USER)?;
            ensure_empty_dir(Path::new(privsep::EMPTY_DIR))?;
        }
    }
    prepare_spool(mode, &config.queue.path)?;
    super::offline::prepare(&config.queue.path, mode).map_err(|e| ParentError::Spool {
        path: config.queue.path.join(crate::sendmail::OFFLINE_DIR),
        reason: e.to_string(),
    })?;
    let listeners = bind_listeners(&config)?;
    for (_, addr, _) in &listeners {
        log_info!("smtpd: listening on {addr}");
    }
    let control_path = rsmtpd_control::socket_path(&config);
    let control = bind_control(&control_path)?;
    let exe = std::env::current_exe().map_err(|e| ParentError::Spawn {
        role: "smtpd",
        reason: e.to_string(),
    })?;

    // Every link end, by the role that gets it.
    let mut ends: Vec<(Role, FdKind, OwnedFd)> = Vec::new();
    for (a, b) in LINKS {
        let (ea, eb) = rsmtpd_ipc::pair()?;
        ends.push((a, FdKind::Link(b), ea));
        ends.push((b, FdKind::Link(a), eb));
    }
    ends.push((Role::Control, FdKind::ControlSocket, control));
    for (index, addr, fd) in listeners {
        let hostname = server_name(&config, &tables, index, addr.ip());
        ends.push((
            Role::Smtp,
            FdKind::Listener {
                index,
                addr,
                hostname,
            },
            fd,
        ));
    }

    let mut children = Vec::new();
    let mut links = Vec::new();
    for role in Role::CHILDREN {
        let (mine, theirs) = rsmtpd_ipc::pair()?;
        let mut cmd = Command::new(&exe);
        cmd.arg(ROLE_FLAG)
            .arg(role.name())
            .env_clear()
            .stdout(Stdio::null())
            .stderr(if flags.debug {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let process =
            rsmtpd_ipc::spawn_with_socket(cmd, theirs).map_err(|e| ParentError::Spawn {
                role: role.name(),
                reason: e.to_string(),
            })?;
        children.push(ChildProc { role, process });
        let mut link: BlockingChannel<ParentToChild, ChildToParent> =
            BlockingChannel::from_fd(mine)?;
        let (kinds, fds): (Vec<FdKind>, Vec<OwnedFd>) =
            take_ends(&mut ends, role).into_iter().unzip();
        let start = Start {
            config: config.clone(),
            mode,
            verbose: flags.verbose,
            foreground_log: flags.debug,
            paused: flags.paused.clone(),
            tuning: crate::tuning::Tuning::from_env(),
            fds: kinds,
        };
        link.send(&ParentToChild::Start(Box::new(start)), fds)?;
        links.push((role, link));
    }
    // Wait for every child to finish its start-up before going on.
    for (role, link) in &mut links {
        match link.recv()? {
            Some((ChildToParent::Ready, _)) => {}
            _ => {
                shutdown_children(&mut children, Duration::from_secs(2));
                return Err(ParentError::Spawn {
                    role: role.name(),
                    reason: "it exited during start-up".into(),
                });
            }
        }
    }
    log_info!("smtpd: ready");
    let rt = super::runtime()?;
    let code = rt.block_on(async {
        tokio::spawn(super::offline::submit_all(
            config.queue.path.clone(),
            control_path.clone(),
            exe.clone(),
            mode,
        ));
        supervise(config, tables, mode, exe, links, flags).await
    });
    shutdown_children(&mut children, Duration::from_secs(10));
    let _ = std::fs::remove_file(&control_path);
    log_info!("smtpd: exiting");
    Ok(code)
}

fn take_ends(ends: &mut Vec<(Role, FdKind, OwnedFd)>, role: Role) -> Vec<(FdKind, OwnedFd)> {
    let mut mine = Vec::new();
    let mut rest = Vec::new();
    for (r, kind, fd) in ends.drain(..) {
        if r == role {
            mine.push((kind, fd));
        } else {
            rest.push((r, kind, fd));
        }
    }
    *ends = rest;
    mine
}

/// Wait for the children to exit, killing those that outlive `grace`.
fn shutdown_children(children: &mut [ChildProc], grace: Duration) {
    let deadline = Instant::now() + grace;
    for child in children.iter_mut() {
        loop {
            match child.process.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    log_warn!("smtpd: killing the {} process", child.role.name());
                    let _ = child.process.kill();
                    let _ = child.process.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

enum Event {
    Child(Role, ChildToParent, Vec<OwnedFd>),
    Closed(Role),
    /// A local delivery's outcomes, by envelope id.
    Delivered(Vec<(u64, Outcome)>),
    ForwardRead(u64, ForwardResult),
    PasswordChecked(u64, AuthVerdict),
    /// SIGHUP, or `smtpctl reload` (whose answer goes back to control).
    Reload {
        asked_by_control: bool,
    },
}

/// Why a new configuration cannot be applied without a restart: what the
/// running processes were set up with (bound sockets, keys, the spool, the
/// tables the confined mta opened before its chroot).
fn reload_blockers(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let listeners = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| (l.addresses.clone(), l.port, l.tls, l.pkis.clone(), l.ca))
            .collect::<Vec<_>>()
    };
    if listeners(old) != listeners(new) {
        out.push("listen on");
    }
    let pkis = |c: &Config| {
        c.pkis
            .iter()
            .map(|p| (p.name.clone(), p.cert.clone(), p.key.clone()))
            .collect::<Vec<_>>()
    };
    if pkis(old) != pkis(new) {
        out.push("pki");
    }
    let cas = |c: &Config| {
        c.cas
            .iter()
            .map(|a| (a.name.clone(), a.cert.clone()))
            .collect::<Vec<_>>()
    };
    if cas(old) != cas(new) {
        out.push("ca");
    }
    if old.queue.path != new.queue.path {
        out.push("queue path");
    }
    // The mta built a TLS client configuration per relay action with its
    // own ca, pki, ciphers or protocols before its chroot; new actions
    // without them use the defaults.
    let relay_tls = |c: &Config| {
        let mut v: Vec<_> = c
            .actions
            .iter()
            .filter_map(|a| match &a.dispatcher {
                rsmtpd_config::model::Dispatcher::Relay(r)
                    if r.ca.is_some()
                        || r.pki.is_some()
                        || r.ciphers.is_some()
                        || r.protocols.is_some() =>
                {
                    Some((
                        a.name.clone(),
                        r.ca,
                        r.pki,
                        r.ciphers.clone(),
                        r.protocols.clone(),
                    ))
                }
                _ => None,
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if relay_tls(old) != relay_tls(new) || old.smtp.ciphers != new.smtp.ciphers {
        out.push("relay TLS options (ca, pki, ciphers, protocols)");
    }
    // The mta opened its tables before its chroot and finds them by index:
    // every table a relay action of the new configuration names must be
    // the same declaration at the same index as before. (Other processes
    // open every table again.)
    let relay_tables = new.actions.iter().flat_map(|a| match &a.dispatcher {
        rsmtpd_config::model::Dispatcher::Relay(r) => {
            let mut ids = Vec::new();
            ids.extend(r.auth);
            ids.extend(r.helo_src);
            if let Some(rsmtpd_config::model::SourceAddrs::Table(t)) = &r.src {
                ids.push(*t);
            }
            if let rsmtpd_config::model::Route::Domain(t) = &r.route {
                ids.push(*t);
            }
            ids
        }
        _ => Vec::new(),
    });
    let changed = |id: rsmtpd_config::model::TableId| {
        old.tables.get(id.0).map(|t| &t.decl) != new.tables.get(id.0).map(|t| &t.decl)
    };
    if relay_tables.into_iter().any(changed) {
        out.push("tables of relay actions");
    }
    out
}

async fn supervise(
    config: Config,
    tables: Vec<Table>,
    mode: Mode,
    exe: PathBuf,
    links: Vec<(Role, BlockingChannel<ParentToChild, ChildToParent>)>,
    flags: &Flags,
) -> ExitCode {
    let debug = flags.debug;
    let mut logging = crate::logging::Settings {
        verbose: flags.verbose,
        traces: 0,
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut senders = Vec::new();
    // Once stopping, links closing is expected, not news.
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (role, link) in links {
        let channel: Channel<ParentToChild, ChildToParent> = match link.into_async() {
            Ok(c) => c,
            Err(e) => {
                log_error!("smtpd: link to {}: {e}", role.name());
                return ExitCode::from(1);
            }
        };
        let (tx, mut rx) = channel.split();
        senders.push((role, writer(tx)));
        let events = events_tx.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Some((msg, fds))) => {
                        if events.send(Event::Child(role, msg, fds)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                            log_warn!("smtpd: link to {}: {e}", role.name());
                        }
                        break;
                    }
                }
            }
            let _ = events.send(Event::Closed(role));
        });
    }
    let sender_to = |role: Role| {
        senders
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, s)| s.clone())
    };
    let queue = sender_to(Role::Queue);
    let lookup = sender_to(Role::Lookup);
    let slots = usize::try_from(config.mda.limits.max_session)
        .unwrap_or(usize::MAX)
        .max(1);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(slots));
    let workers = std::sync::Arc::new(delivery_workers::Workers::new(exe.clone(), mode, debug));
    let mut current = config.clone();
    let mut delivery = std::sync::Arc::new(DeliveryContext {
        config,
        tables,
        mode,
        slots: slots.clone(),
        workers: workers.clone(),
    });
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            log_error!("smtpd: signals: {e}");
            return ExitCode::from(1);
        }
    };
    // A reload: parse, check, hand the new configuration to every child
    // that uses it, and use it for the next local deliveries.
    let reload = |current: &Config| -> Result<(DeliveryContext, Config), String> {
        let new = crate::smtpd::load(flags).map_err(|text| text.trim_end().replace('\n', "; "))?;
        let blockers = reload_blockers(current, &new);
        if !blockers.is_empty() {
            return Err(format!(
                "{} changed: restart smtpd to apply this configuration",
                blockers.join(", ")
            ));
        }
        let tables = rsmtpd_config::ruleset::open_tables(&new).map_err(|e| e.to_string())?;
        Ok((
            DeliveryContext {
                config: new.clone(),
                tables,
                mode,
                slots: slots.clone(),
                workers: workers.clone(),
            },
            new,
        ))
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log_error!("smtpd: signals: {e}");
            return ExitCode::from(1);
        }
    };
    // Idle delivery children past their keepalive are let go.
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let code = loop {
        tokio::select! {
            _ = expiry.tick() => workers.expire(),
            _ = term.recv() => {
                log_info!("smtpd: received SIGTERM, shutting down");
                break ExitCode::SUCCESS;
            }
            _ = tokio::signal::ctrl_c() => {
                log_info!("smtpd: interrupted, shutting down");
                break ExitCode::SUCCESS;
            }
            _ = hup.recv() => {
                log_info!("smtpd: received SIGHUP, reloading the configuration");
                let _ = events_tx.send(Event::Reload { asked_by_control: false });
            }
            event = events.recv() => match event {
                None => break ExitCode::from(1),
                Some(Event::Closed(role)) => {
                    log_error!("smtpd: the {} process exited, shutting down", role.name());
                    break ExitCode::from(1);
                }
                Some(Event::Child(_, ChildToParent::Ready, _)) => {}
                Some(Event::Child(role, ChildToParent::Logging(change), _)) => {
                    if role == Role::Control {
                        match change {
                            LogChange::Verbose(on) => logging.verbose = u8::from(on),
                            LogChange::Trace { bit, on: true } => logging.traces |= bit,
                            LogChange::Trace { bit, on: false } => logging.traces &= !bit,
                        }
                        crate::logging::apply(logging);
                        for (_, s) in &senders {
                            let _ = s.send((ParentToChild::Logging(logging), Vec::new()));
                        }
                        log_info!(
                            "smtpd: logging {}, traces {:#x}",
                            if logging.verbose > 0 { "verbose" } else { "brief" },
                            logging.traces
                        );
                    }
                }
                Some(Event::Child(role, ChildToParent::Reload, _)) => {
                    if role == Role::Control {
                        let _ = events_tx.send(Event::Reload { asked_by_control: true });
                    }
                }
                Some(Event::Reload { asked_by_control }) => {
                    let result = match reload(&current) {
                        Ok((ctx, new)) => {
                            for role in [Role::Smtp, Role::Lookup, Role::Queue, Role::Mta] {
                                if let Some(s) = sender_to(role) {
                                    let _ = s.send((
                                        ParentToChild::Reload(Box::new(new.clone())),
                                        Vec::new(),
                                    ));
                                }
                            }
                            delivery = std::sync::Arc::new(ctx);
                            current = new;
                            log_info!("smtpd: configuration reloaded");
                            Ok(())
                        }
                        Err(why) => {
                            log_warn!(
                                "smtpd: reload failed, keeping the running configuration: {}",
                                visible(&why)
                            );
                            Err(why)
                        }
                    };
                    if asked_by_control && let Some(s) = sender_to(Role::Control) {
                        let _ = s.send((ParentToChild::Reloaded(result), Vec::new()));
                    }
                }
                Some(Event::Child(role, ChildToParent::Deliver(req), mut fds)) => {
                    if role != Role::Queue {
                        log_warn!("smtpd: delivery request from {}, ignored", role.name());
                        continue;
                    }
                    let Some(message) = fds.pop() else {
                        log_warn!("smtpd: delivery request without a message");
                        continue;
                    };
                    let ctx = delivery.clone();
                    let events = events_tx.clone();
                    tokio::spawn(async move {
                        let outcomes = ctx.deliver(&req, message).await;
                        let _ = events.send(Event::Delivered(outcomes));
                    });
                }
                Some(Event::Child(role, ChildToParent::ReadForward { id, owner }, _)) => {
                    if role != Role::Lookup {
                        log_warn!("smtpd: forward request from {}, ignored", role.name());
                        continue;
                    }
                    let ctx = delivery.clone();
                    let events = events_tx.clone();
                    tokio::spawn(async move {
                        let result = ctx.read_forward(&owner).await;
                        let _ = events.send(Event::ForwardRead(id, result));
                    });
                }
                Some(Event::Child(role, ChildToParent::CheckPassword { id, user, password }, _)) => {
                    if role != Role::Lookup {
                        log_warn!("smtpd: password check from {}, ignored", role.name());
                        continue;
                    }
                    let events = events_tx.clone();
                    tokio::spawn(async move {
                        let verdict = check_system_password(user, password).await;
                        let _ = events.send(Event::PasswordChecked(id, verdict));
                    });
                }
                Some(Event::PasswordChecked(id, verdict)) => {
                    if let Some(l) = &lookup {
                        let _ = l.send((ParentToChild::Password { id, verdict }, Vec::new()));
                    }
                }
                Some(Event::ForwardRead(id, result)) => {
                    if let Some(l) = &lookup {
                        let _ = l.send((ParentToChild::Forward { id, result }, Vec::new()));
                    }
                }
                Some(Event::Delivered(outcomes)) => {
                    if let Some(q) = &queue {
                        let _ = q.send((ParentToChild::Delivered { outcomes }, Vec::new()));
                    }
                }
            }
        }
    };
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    for (_, sender) in &senders {
        let _ = sender.send((ParentToChild::Shutdown, Vec::new()));
    }
    // Let the writers flush the Shutdown frames.
    tokio::time::sleep(Duration::from_millis(50)).await;
    code
}

/// AUTH against the system accounts: only the parent (root) can read the
/// shadow file. Hashing runs on a blocking thread.
async fn check_system_password(user: String, password: Secret) -> AuthVerdict {
    let checked =
        tokio::task::spawn_blocking(move || rsmtpd_auth::check_system_password(&user, &password.0))
            .await;
    match checked {
        Ok(Ok(true)) => AuthVerdict::Accepted,
        Ok(Ok(false)) => AuthVerdict::Rejected,
        Ok(Err(e)) => AuthVerdict::Unavailable(format!("system password: {e}")),
        Err(_) => AuthVerdict::Unavailable("password check failed".into()),
    }
}

/// What the parent needs to run local deliveries.
struct DeliveryContext {
    config: Config,
    tables: Vec<Table>,
    mode: Mode,
    /// `mda limit max-session`: deliveries at once (shared by the
    /// contexts of successive reloads, as is the next one).
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// The delivery children, running and idle.
    workers: std::sync::Arc<delivery_workers::Workers>,
}

impl DeliveryContext {
    /// Deliver every recipient of `req`: one outcome each, with its
    /// envelope id, in the request's order. Each recipient is planned on
    /// its own (one that cannot be resolved fails alone); LMTP recipients
    /// for the same server then share one child and one transaction.
    async fn deliver(&self, req: &LocalDelivery, message: OwnedFd) -> Vec<(u64, Outcome)> {
        // Closed only if the context is dropped, which ends the daemon.
        let Ok(_slot) = self.slots.acquire().await else {
            return req
                .recipients
                .iter()
                .map(|r| (r.evpid, temporary("shutting down".into())))
                .collect();
        };
        // (outcome, account, method) per recipient, filled in as known.
        let mut results: Vec<Option<(Outcome, String, &'static str)>> =
            vec![None; req.recipients.len()];
        let mut runs: Vec<Run> = Vec::new();
        for (i, r) in req.recipients.iter().enumerate() {
            match self.plan(req, r) {
                Err(outcome) => results[i] = Some((outcome, String::from("-"), "-")),
                Ok((user, request)) => match runs.iter_mut().find(|run| run.joins(&user, &request))
                {
                    Some(run) => run.add(i, request),
                    None => runs.push(Run {
                        user,
                        request,
                        members: vec![i],
                    }),
                },
            }
        }
        let mut message = std::fs::File::from(message);
        for run in runs {
            let method = method_of(&run.request.method);
            // Several runs happen only if the configuration splits what the
            // queue grouped; each child reads the message from the start.
            let fd = std::io::Seek::rewind(&mut message).and_then(|()| message.try_clone());
            let outcomes = match fd {
                Ok(fd) => self.spawn(&run.user, &run.request, OwnedFd::from(fd)).await,
                Err(e) => vec![temporary(format!("message: {e}")); run.members.len()],
            };
            for (i, outcome) in run.members.into_iter().zip(outcomes) {
                results[i] = Some((outcome, run.user.username.clone(), method));
            }
        }
        let mut out = Vec::with_capacity(req.recipients.len());
        for (r, result) in req.recipients.iter().zip(results) {
            let (outcome, user, method) = result.unwrap_or_else(|| {
                (
                    temporary("no outcome for the recipient".into()),
                    String::from("-"),
                    "-",
                )
            });
            // Time in the queue, as OpenSMTPD's delay= (this attempt included).
            let delay = now().saturating_sub(r.created);
            let (result, stat) = match &outcome {
                Outcome::Ok | Outcome::Relayed | Outcome::PassedOn => {
                    ("Ok", "Delivered".to_string())
                }
                Outcome::Temporary { text, .. } => ("TempFail", text.clone()),
                Outcome::Permanent { text, .. } => ("PermFail", text.clone()),
            };
            log_info!(
                "delivery: {result} for {:016x}: from=<{}>, to=<{}>, user={}, method={method}, delay={delay}s, stat={}",
                r.evpid,
                visible(&req.sender),
                visible(&r.dest),
                visible(&user),
                visible(&stat)
            );
            out.push((r.evpid, outcome));
        }
        out
    }

    /// Resolve the action (from the current configuration), the user and
    /// the method; an error is already the outcome.
    fn plan(
        &self,
        req: &LocalDelivery,
        r: &LocalRecipient,
    ) -> Result<(Userinfo, deliver::Request), Outcome> {
        let action = self
            .config
            .actions
            .iter()
            .find(|a| a.name == req.action)
            .ok_or_else(|| {
                temporary(format!(
                    "no action named {:?} in the configuration",
                    req.action
                ))
            })?;
        let Dispatcher::Local(local) = &action.dispatcher else {
            return Err(temporary(format!(
                "action {:?} is not a local delivery",
                req.action
            )));
        };
        // Expansion named the account; without a name (mail queued by an
        // older version) the destination's user part is resolved.
        let name = match (&r.user, &r.target) {
            (Some(name), _) => Some(name.clone()),
            (None, Some(_)) => None,
            (None, None) => {
                let local_part = r.dest.rsplit_once('@').map_or(r.dest.as_str(), |(l, _)| l);
                let base = local_part
                    .split(self.config.smtp.sub_addr_delim)
                    .next()
                    .unwrap_or(local_part);
                Some(base.to_ascii_lowercase())
            }
        };
        let account = match &name {
            Some(name) => resolve_user(&self.config, &self.tables, local, name)
                .map_err(|e| temporary(e.to_string()))?
                .ok_or_else(|| name.clone()),
            None => self.unprivileged_account(),
        };
        let user = account.map_err(|name| Outcome::Permanent {
            status: "5.1.1".into(),
            text: format!("no such user {name:?}"),
        })?;
        if let Mode::Unprivileged { uid } = self.mode
            && user.uid != uid
        {
            return Err(Outcome::Permanent {
                status: "5.7.1".into(),
                text: format!(
                    "cannot deliver to user {}: the daemon does not run as root",
                    user.username
                ),
            });
        }
        let home = user.directory.to_string_lossy().into_owned();
        let vars = format::Vars {
            sender: format::Address::parse(&req.sender),
            rcpt: format::Address::parse(&r.rcpt),
            dest: format::Address::parse(&r.dest),
            user: format::User {
                username: &user.username,
                directory: &home,
            },
            mda: None,
            delimiter: self.config.smtp.sub_addr_delim,
        };
        let method = match (&r.target, &local.method) {
            (Some(rsmtpd_queue::LocalTarget::File(path)), _) => Method::File {
                path: PathBuf::from(path),
            },
            (Some(rsmtpd_queue::LocalTarget::Command(command)), _) => Method::Mda {
                command: command.clone(),
            },
            (None, LocalMethod::Maildir { path, junk }) => Method::Maildir {
                path: match path {
                    None => user.directory.join("Maildir"),
                    Some(template) => format::expand_path(template, &vars)
                        .map_err(|e| failure(e.class(), e.status(), e.to_string()))?,
                },
                junk: *junk,
            },
            (None, LocalMethod::Mbox) => Method::Mbox {
                path: prepare_mbox(&user)?,
            },
            (None, LocalMethod::Mda { command }) => {
                let expanded = format::expand(command, &vars)
                    .map_err(|e| failure(e.class(), e.status(), e.to_string()))?;
                // A wrapper runs instead, with the command as %{mda}.
                let command = match &local.wrapper {
                    None => expanded,
                    Some(name) => {
                        let wrapper =
                            self.config.mda.wrappers.get(name).ok_or_else(|| {
                                temporary(format!("no mda wrapper named {name:?}"))
                            })?;
                        let vars = format::Vars {
                            mda: Some(&expanded),
                            ..vars
                        };
                        format::expand(wrapper, &vars)
                            .map_err(|e| failure(e.class(), e.status(), e.to_string()))?
                    }
                };
                Method::Mda { command }
            }
            (
                None,
                LocalMethod::Lmtp {
                    destination,
                    rcpt_to,
                },
            ) => {
                // LMTP talks to a server, not to the user's files: it runs as
                // the unprivileged account, as OpenSMTPD's does.
                let lmtp = Method::Lmtp {
                    destination: destination.clone(),
                    rcpt_to: *rcpt_to,
                    recipients: vec![LmtpRcpt {
                        user: user.username.clone(),
                        address: r.dest.clone(),
                    }],
                };
                let run_as = self
                    .unprivileged_account()
                    .map_err(|name| temporary(format!("no account {name:?} to run LMTP as")))?;
                return Ok((run_as, self.request(req, r, lmtp)));
            }
            (None, other) => {
                return Err(temporary(format!(
                    "delivery method {} is not available yet",
                    method_name(other)
                )));
            }
        };
        Ok((user, self.request(req, r, method)))
    }

    fn request(&self, req: &LocalDelivery, r: &LocalRecipient, method: Method) -> deliver::Request {
        deliver::Request {
            method,
            unique: format!("{:016x}", r.evpid),
            created: r.created,
            hostname: self.config.hostname.clone(),
            sender: req.sender.clone(),
            rcpt: r.rcpt.clone(),
            recipient: r.dest.clone(),
            delimiter: self.config.smtp.sub_addr_delim,
        }
    }

    /// The account alias-table files and commands run as: `_smtpd` as
    /// root, the running user otherwise (aliases(5)).
    fn unprivileged_account(&self) -> Result<Userinfo, String> {
        let uid = match self.mode {
            Mode::Root => privsep::account(privsep::SMTPD_USER)
                .map_err(|_| privsep::SMTPD_USER.to_owned())?
                .uid
                .as_raw(),
            Mode::Unprivileged { uid } => uid,
        };
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => Ok(Userinfo {
                username: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                directory: u.dir,
            }),
            _ => Err(uid.to_string()),
        }
    }

    /// Read `owner`'s .forward as that user: a job for the account's
    /// delivery child (roles/forward.rs has the checks).
    async fn read_forward(&self, owner: &ForwardOwner) -> ForwardResult {
        if let Mode::Unprivileged { uid } = self.mode
            && owner.uid != uid
        {
            // Without root, only our own .forward can be read as its owner.
            return ForwardResult::None;
        }
        let user = Userinfo {
            username: owner.username.clone(),
            uid: owner.uid,
            gid: owner.gid,
            directory: owner.home.clone(),
        };
        let job = deliver::Job::ReadForward {
            home: owner.home.clone(),
        };
        let mut worker = match self.workers.hand_over(&user, &job, None).await {
            Ok(w) => w,
            Err(why) => return ForwardResult::Refused(format!("cannot read .forward: {why}")),
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), worker.link.recv()).await;
        match answer {
            Ok(Ok(Some((deliver::Report::Forward(result), _)))) => {
                self.workers.put_back(&user, worker);
                result
            }
            Ok(_) => {
                worker.kill().await;
                ForwardResult::Refused("cannot read .forward: the reader failed".into())
            }
            Err(_) => {
                worker.kill().await;
                ForwardResult::Refused("reading .forward timed out".into())
            }
        }
    }

    /// Have a delivery child running as the user deliver `request` and
    /// wait for its outcomes, one per recipient. Anything short of that (a
    /// child that dies, hangs or miscounts) is a temporary failure for
    /// every one. A child that answered in full is kept for the user's
    /// next delivery (roles/delivery_workers.rs).
    async fn spawn(
        &self,
        user: &Userinfo,
        request: &deliver::Request,
        message: OwnedFd,
    ) -> Vec<Outcome> {
        let expected = request.method.recipients();
        let all = |text: String| vec![temporary(text); expected];
        let job = deliver::Job::Deliver(request.clone());
        let mut worker = match self.workers.hand_over(user, &job, Some(message)).await {
            Ok(w) => w,
            Err(text) => return all(text),
        };
        // Where an mbox entry started, once the child says it is writing.
        let mut writing: Option<u64> = None;
        let result = tokio::time::timeout(DELIVERY_TIMEOUT, async {
            loop {
                match worker.link.recv().await? {
                    Some((deliver::Report::Writing { offset }, _)) => writing = Some(offset),
                    Some((deliver::Report::Done(outcomes), _)) => {
                        return Ok::<_, rsmtpd_ipc::IpcError>(Some(outcomes));
                    }
                    // Out of turn: a broken child, never used again.
                    Some((deliver::Report::Forward(_), _)) | None => return Ok(None),
                }
            }
        })
        .await;
        let outcomes: Result<Vec<Outcome>, String> = match result {
            Ok(Ok(Some(outcomes))) if outcomes.len() == expected => Ok(outcomes),
            Ok(Ok(Some(outcomes))) => Err(format!(
                "the delivery process answered for {} of {expected} recipients",
                outcomes.len()
            )),
            Ok(Ok(None)) => Err("the delivery process ended without an answer".into()),
            Ok(Err(e)) => Err(format!("delivery process: {e}")),
            Err(_) => Err("delivery timed out".into()),
        };
        match outcomes {
            Ok(outcomes) => {
                self.workers.put_back(user, worker);
                outcomes
            }
            Err(text) => {
                worker.kill().await;
                // A child that died while appending left a partial entry:
                // cut it off now, before anyone appends after it.
                if let (Some(offset), Method::Mbox { path } | Method::File { path }) =
                    (writing, &request.method)
                {
                    repair_mailbox(path, offset).await;
                }
                all(text)
            }
        }
    }
}

/// Cut `path` back to `offset` after its writer died (as root, under the
/// fcntl lock; see rsmtpd_delivery::mbox::repair).
async fn repair_mailbox(path: &Path, offset: u64) {
    let owned = path.to_path_buf();
    let result =
        tokio::task::spawn_blocking(move || rsmtpd_delivery::mbox::repair(&owned, offset)).await;
    match result {
        Ok(Ok(true)) => log_warn!(
            "delivery: {}: a delivery died while writing; cut back to {offset} bytes",
            visible(&path.display().to_string())
        ),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => log_error!(
            "delivery: {}: cannot cut back a partial entry: {e}",
            visible(&path.display().to_string())
        ),
        Err(e) => log_error!("delivery: repair task: {e}"),
    }
}

/// Recipients that one delivery child handles together.
struct Run {
    /// The account the child runs as.
    user: Userinfo,
    request: deliver::Request,
    /// Indexes into the request's recipients, in the child's order.
    members: Vec<usize>,
}

impl Run {
    /// Whether `request` (one recipient, as planned) can join this run:
    /// only LMTP to the same server, as the same account.
    fn joins(&self, user: &Userinfo, request: &deliver::Request) -> bool {
        match (&self.request.method, &request.method) {
            (
                Method::Lmtp {
                    destination: d1,
                    rcpt_to: r1,
                    ..
                },
                Method::Lmtp {
                    destination: d2,
                    rcpt_to: r2,
                    ..
                },
            ) => d1 == d2 && r1 == r2 && self.user.uid == user.uid && self.user.gid == user.gid,
            _ => false,
        }
    }

    fn add(&mut self, index: usize, request: deliver::Request) {
        if let (
            Method::Lmtp { recipients, .. },
            Method::Lmtp {
                recipients: more, ..
            },
        ) = (&mut self.request.method, request.method)
        {
            recipients.extend(more);
            self.members.push(index);
        }
    }
}

/// The method's name in the log.
fn method_of(method: &Method) -> &'static str {
    match method {
        Method::Maildir { .. } => "maildir",
        Method::Mbox { .. } => "mbox",
        Method::Mda { .. } => "mda",
        Method::File { .. } => "file",
        Method::Lmtp { .. } => "lmtp",
    }
}

/// A temporary failure of the daemon's own (not the method's).
fn temporary(text: String) -> Outcome {
    Outcome::Temporary {
        status: "4.3.0".into(),
        text,
    }
}

/// An outcome from a method's error class, status and text.
fn failure(class: rsmtpd_delivery::Class, status: &str, text: String) -> Outcome {
    let status = status.to_owned();
    match class {
        rsmtpd_delivery::Class::Temporary => Outcome::Temporary { status, text },
        rsmtpd_delivery::Class::Permanent => Outcome::Permanent { status, text },
    }
}

/// As root, make sure the user's mailbox exists and is safe to append to;
/// the delivery child then writes it as the user.
fn prepare_mbox(user: &Userinfo) -> Result<PathBuf, Outcome> {
    use rsmtpd_delivery::mbox::{UserIds, prepare_mailbox};
    let ids = UserIds {
        uid: nix::unistd::Uid::from_raw(user.uid),
        gid: nix::unistd::Gid::from_raw(user.gid),
    };
    let mail_group = nix::unistd::Group::from_name("mail")
        .ok()
        .flatten()
        .map(|g| g.gid);
    prepare_mailbox(
        &crate::tuning::mail_spool(),
        &user.username,
        ids,
        mail_group,
    )
    .map_err(|e| failure(e.class(), e.status(), e.to_string()))
}

fn method_name(m: &LocalMethod) -> &'static str {
    match m {
        LocalMethod::Mbox => "mbox",
        LocalMethod::Maildir { .. } => "maildir",
        LocalMethod::Lmtp { .. } => "lmtp",
        LocalMethod::Mda { .. } => "mda",
        LocalMethod::ForwardOnly => "forward-only",
        LocalMethod::ExpandOnly => "expand-only",
    }
}

/// Create the spool; as root, the top belongs to root (it is the queue's
/// chroot) and the directories below to `_smtpq`.
fn prepare_spool(mode: Mode, path: &Path) -> Result<(), ParentError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |reason: String| ParentError::Spool {
        path: path.to_path_buf(),
        reason,
    };
    match mode {
        Mode::Unprivileged { .. } => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| err(e.to_string())),
        Mode::Root => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(path)
                .map_err(|e| err(e.to_string()))?;
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(0)),
            )
            .map_err(|e| err(e.to_string()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| err(e.to_string()))?;
            let owner = privsep::account(privsep::QUEUE_USER)?;
            for sub in rsmtpd_queue::SPOOL_DIRS {
                let dir = path.join(sub);
                match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(err(format!("{}: {e}", dir.display()))),
                }
                nix::unistd::chown(&dir, Some(owner.uid), Some(owner.gid))
                    .map_err(|e| err(format!("{}: {e}", dir.display())))?;
            }
            Ok(())
        }
    }
}

/// The chroot of the confined roles: created empty if missing.
fn ensure_empty_dir(path: &Path) -> Result<(), ParentError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ParentError::Spool {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The name a listener presents on `addr`: its `hostname`, else its
/// `hostnames` table's entry for the address, else the server name.
fn server_name(config: &Config, tables: &[Table], index: usize, addr: IpAddr) -> String {
    let Some(listener) = config.listeners.get(index) else {
        return config.hostname.clone();
    };
    if let Some(name) = &listener.hostname {
        return name.clone();
    }
    let from_table = listener.hostnames.and_then(|id| {
        let table = tables.get(id.0)?;
        match table.lookup(rsmtpd_table::Service::Addrname, &addr.to_string()) {
            Ok(Some(rsmtpd_table::Value::Addrname(name))) => Some(name),
            _ => None,
        }
    });
    from_table.unwrap_or_else(|| config.hostname.clone())
}

/// Bind every listener address; each socket goes to the smtp role.
fn bind_listeners(config: &Config) -> Result<Vec<(usize, SocketAddr, OwnedFd)>, ParentError> {
    let mut out = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        for ip in &listener.addresses {
            let addr = SocketAddr::new(*ip, listener.port);
            let fd = bind_one(addr).map_err(|source| ParentError::Listen { addr, source })?;
            out.push((index, addr, fd));
        }
    }
    Ok(out)
}

/// The control socket, open to every local user (mode 0666; the directory
/// decides who can reach it). A socket file left by a daemon that died is
/// replaced; one that answers belongs to a running daemon: that is an
/// error, so two daemons never share a spool.
fn bind_control(path: &Path) -> Result<OwnedFd, ParentError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |reason: String| ParentError::Control {
        path: path.to_path_buf(),
        reason,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err("exists and is not a socket".into()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another smtpd is running with this socket".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(e.to_string()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| err(e.to_string()))?;
    Ok(OwnedFd::from(listener))
}

fn bind_one(addr: SocketAddr) -> Result<OwnedFd, nix::Error> {
    let family = match addr.ip() {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if family == AddressFamily::Inet6 {
        // `listen on ::` and `listen on 0.0.0.0` may both be configured.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(1024)?)?;
    Ok(fd)
}
