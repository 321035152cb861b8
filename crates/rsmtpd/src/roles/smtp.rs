//! The smtp role: inbound SMTP sessions. Thin I/O around the sans-IO
//! session of rsmtpd-smtp-proto: bytes from the socket go into the session,
//! its events become questions to lookup (each RCPT) and the queue (a
//! message file, then the commit), its output goes back to the socket.
//! TLS (STARTTLS and smtps) is done here with rustls; the handshake's
//! signature is made by the crypto process, so this process holds no keys,
//! opens no files and runs nothing; as root it is `_smtpd` in an empty
//! chroot. AUTH passwords go to lookup to be checked.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsmtpd_config::model::Config;
use rsmtpd_config::model::ListenerTls;
use rsmtpd_ipc::Channel;
use rsmtpd_smtp_proto::received::{AuthClause, Protocol, ReceivedInfo, format_received};
use rsmtpd_smtp_proto::reply::{EnhancedCode, Reply};
use rsmtpd_smtp_proto::sasl::Credentials;
use rsmtpd_smtp_proto::server::{
    AuthPolicy, Event, ServerConfig, ServerSession, TlsPolicy, Transaction,
};
use rsmtpd_tls::TlsInfo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::clock::now;
use crate::conn::Conn;
use crate::links::{
    AuthVerdict, ControlToSmtp, FromLookup, QueueToSmtp, Role, RouteAnswer, RouteQuery, Secret,
    SessionFacts, SmtpToControl, SmtpToQueue, Start, Submission, SubmittedRcpt, ToLookup,
};
use crate::logging::visible;
use crate::roles::rpc::Client;
use crate::roles::{ParentLink, Received, RoleError};
use crate::{log_info, log_warn};

/// Inside DATA, the least a client must send per window
/// ([`crate::tuning::Tuning::data_window`]): a client trickling a byte a
/// minute would hold a session forever otherwise.
pub const MIN_DATA_BYTES_PER_WINDOW: u64 = 1024;
/// A failed AUTH is answered after this pause: it slows guessing down
/// without holding anything but the guesser's own session.
const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failed AUTH attempts from one address, across sessions, within
/// [`AUTH_FAILURE_WINDOW`]; past it every AUTH gets 454 unchecked.
const MAX_AUTH_FAILURES_PER_ADDRESS: u32 = 10;
const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered for that count; the oldest go first.
const MAX_AUTH_FAILURE_ENTRIES: usize = 10_000;

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let queue = fds.link(Role::Queue)?;
    let lookup = fds.link(Role::Lookup)?;
    let listeners = fds.listeners();
    let ids = SessionIds::new();
    let control = fds.link(Role::Control)?;
    let (crypto, pkis) = crate::tls::CryptoLink::connect(fds.link(Role::Crypto)?)?;
    let tls = crate::tls::Certificates::new(pkis, crypto).server_configs(&start.config)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Smtp, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let parent = parent.into_async()?;
        let queue: Channel<SmtpToQueue, QueueToSmtp> = Channel::from_fd(queue)?;
        let lookup: Channel<ToLookup, FromLookup> = Channel::from_fd(lookup)?;
        let shared = Arc::new(Shared {
            config: Mutex::new(Arc::new(start.config)),
            tuning: start.tuning,
            queue: Client::start(queue),
            lookup: Client::start(lookup),
            sessions: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            ids,
            per_address: Mutex::new(HashMap::new()),
            tls,
            auth_failures: Mutex::new(HashMap::new()),
        });
        let (stop_tx, stop) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        // `-P smtp` and `smtpctl pause smtp`: the sockets stay bound
        // (clients wait in the backlog) but nothing is accepted until
        // `smtpctl resume smtp`.
        let paused = start.paused.contains(&crate::smtpd::Subsystem::Smtp);
        if paused {
            log_info!("smtp-in: paused, not accepting connections");
        }
        let (accepting_tx, accepting) = watch::channel(!paused);
        for (index, addr, hostname, fd) in listeners {
            let std_listener = std::net::TcpListener::from(fd);
            std_listener
                .set_nonblocking(true)
                .map_err(|e| RoleError::Setup(format!("listener {addr}: {e}")))?;
            let listener = TcpListener::from_std(std_listener)
                .map_err(|e| RoleError::Setup(format!("listener {addr}: {e}")))?;
            let at = Listening {
                index,
                addr,
                hostname,
            };
            tasks.spawn(accept_loop(
                listener,
                at,
                shared.clone(),
                stop.clone(),
                accepting.clone(),
            ));
        }
        let control: Channel<SmtpToControl, ControlToSmtp> = Channel::from_fd(control)?;
        tasks.spawn(control_link(
            control,
            shared.clone(),
            stop.clone(),
            accepting_tx,
        ));
        let reloads = shared.clone();
        super::serve_parent(parent, move |config| {
            *reloads.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
            log_info!("smtp-in: configuration reloaded");
        })
        .await?;
        let _ = stop_tx.send(true);
        // Give sessions a moment to say 421 and go.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    })
}

struct Shared {
    /// The running configuration; a session keeps the one it started with.
    config: Mutex<Arc<Config>>,
    tuning: crate::tuning::Tuning,
    queue: Arc<Client<SmtpToQueue, QueueToSmtp>>,
    lookup: Arc<Client<ToLookup, FromLookup>>,
    sessions: AtomicUsize,
    /// Sessions opened and closed since the start (`smtpctl monitor`).
    opened: AtomicU64,
    closed: AtomicU64,
    ids: SessionIds,
    per_address: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// By listener index; `None` for a listener without TLS.
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// Failed AUTH attempts by client address: (count, window start).
    auth_failures: Mutex<HashMap<std::net::IpAddr, (u32, tokio::time::Instant)>>,
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when this address failed AUTH too often lately.
    fn auth_blocked(&self, ip: std::net::IpAddr) -> bool {
        let map = self.auth_failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).is_some_and(|(n, since)| {
            *n >= MAX_AUTH_FAILURES_PER_ADDRESS && since.elapsed() < AUTH_FAILURE_WINDOW
        })
    }

    fn auth_failed(&self, ip: std::net::IpAddr) {
        let mut map = self.auth_failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_AUTH_FAILURE_ENTRIES && !map.contains_key(&ip) {
            map.retain(|_, (_, since)| since.elapsed() < AUTH_FAILURE_WINDOW);
            if map.len() >= MAX_AUTH_FAILURE_ENTRIES
                && let Some(oldest) = map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let now = tokio::time::Instant::now();
        let entry = map.entry(ip).or_insert((0, now));
        if entry.1.elapsed() >= AUTH_FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// One bound socket: which listener it belongs to and what it is called.
#[derive(Debug, Clone)]
struct Listening {
    index: usize,
    addr: SocketAddr,
    hostname: String,
}

async fn accept_loop(
    listener: TcpListener,
    at: Listening,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut accepting: watch::Receiver<bool>,
) {
    let at = Arc::new(at);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let open = *accepting.borrow_and_update();
        tokio::select! {
            _ = accepting.changed() => {}
            accepted = listener.accept(), if open => match accepted {
                Ok((stream, peer)) => {
                    // A reply goes out when the session writes it; Nagle
                    // would hold a short one for the client's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let Some(slot) = SessionSlot::take(&shared, Some(peer.ip())) else {
                        refuse_busy(stream);
                        continue;
                    };
                    let entry = Entry::Listener(at.clone());
                    sessions.spawn(session(Conn::Plain(stream), Peer::Remote(peer), entry, shared.clone(), stop.clone(), slot));
                }
                Err(e) => {
                    log_warn!("smtp-in: accept on {}: {e}", at.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    while sessions.join_next().await.is_some() {}
}

/// What control asks: local submissions (sendmail), each an SMTP session
/// on the client's own connection as the `listen on socket` listener;
/// pause and resume; the session count.
async fn control_link(
    control: Channel<SmtpToControl, ControlToSmtp>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    accepting: watch::Sender<bool>,
) {
    let (mut answers, mut control) = control.split();
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            msg = control.recv() => match msg {
                Ok(Some((ControlToSmtp::Accepting(on), _))) => {
                    log_info!(
                        "smtp-in: {}",
                        if on { "resumed" } else { "paused, not accepting connections" }
                    );
                    let _ = accepting.send(on);
                }
                Ok(Some((ControlToSmtp::Stats { id }, _))) => {
                    let stats = SmtpToControl::Stats {
                        id,
                        sessions: shared.sessions.load(Ordering::Relaxed),
                        opened: shared.opened.load(Ordering::Relaxed),
                        closed: shared.closed.load(Ordering::Relaxed),
                    };
                    let _ = answers.send(&stats, Vec::new()).await;
                }
                Ok(Some((ControlToSmtp::Enqueue { uid, user }, mut fds))) => {
                    let Some(fd) = fds.pop() else { continue };
                    let std = std::os::unix::net::UnixStream::from(fd);
                    if std.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let Ok(stream) = tokio::net::UnixStream::from_std(std) else {
                        continue;
                    };
                    let Some(slot) = SessionSlot::take(&shared, None) else {
                        let mut conn = Conn::Local(stream);
                        let _ = conn
                            .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
                            .await;
                        continue;
                    };
                    sessions.spawn(session(
                        Conn::Local(stream),
                        Peer::Local { uid, user },
                        Entry::Socket,
                        shared.clone(),
                        stop.clone(),
                        slot,
                    ));
                }
                // Control is gone: the daemon is stopping.
                Ok(None) | Err(_) => break,
            },
            _ = stop.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    while sessions.join_next().await.is_some() {}
}

/// Who is at the other end of a session.
enum Peer {
    Remote(SocketAddr),
    /// A local submission: the user the kernel vouches for.
    Local {
        uid: u32,
        user: String,
    },
}

impl Peer {
    fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Remote(addr) => Some(addr.ip()),
            Peer::Local { .. } => None,
        }
    }
}

/// Where a session came in.
enum Entry {
    Listener(Arc<Listening>),
    /// The control socket's local enqueue path (`listen on socket`).
    Socket,
}

/// Too many sessions: say so and close, without reading anything.
fn refuse_busy(mut stream: TcpStream) {
    tokio::spawn(async move {
        let _ = stream
            .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
            .await;
    });
}

/// A counted session; gives its place back when dropped.
struct SessionSlot {
    shared: Arc<Shared>,
    /// `None` for a local submission: counted in the total only.
    ip: Option<std::net::IpAddr>,
}

impl SessionSlot {
    fn take(shared: &Arc<Shared>, ip: Option<std::net::IpAddr>) -> Option<SessionSlot> {
        let mut per = shared.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let config = shared.config();
        let limits = &config.smtp;
        let here = ip.and_then(|ip| per.get(&ip).copied()).unwrap_or(0);
        if here as u64 >= limits.max_sessions_per_address
            || shared.sessions.load(Ordering::Relaxed) as u64 >= limits.max_sessions
        {
            return None;
        }
        if let Some(ip) = ip {
            per.insert(ip, here + 1);
        }
        shared.sessions.fetch_add(1, Ordering::Relaxed);
        shared.opened.fetch_add(1, Ordering::Relaxed);
        Some(SessionSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
        self.shared.closed.fetch_add(1, Ordering::Relaxed);
        let mut per = self
            .shared
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = self.ip
            && let Some(n) = per.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                per.remove(&ip);
            }
        }
    }
}

/// Session ids: a random base read before chroot, then a counter spread
/// over the 64 bits (an odd multiplier is a bijection), so ids never repeat
/// within a run and do not reveal how many sessions there were.
struct SessionIds {
    base: u64,
    next: AtomicU64,
}

impl SessionIds {
    fn new() -> SessionIds {
        let mut buf = [0u8; 8];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
            .is_err()
        {
            buf = now().to_be_bytes();
        }
        SessionIds {
            base: u64::from_be_bytes(buf),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", self.base ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// What the loop must do after an event, with the borrow of the session
/// released.
enum Todo {
    StartTls,
    Auth(&'static str, Credentials),
    /// MAIL FROM this sender (empty for `<>`): check `senders`, if any.
    MailFrom(String),
    Route(String),
    Create(Transaction),
    Write(Vec<u8>),
    Commit(Transaction),
    Drop,
    Close,
}

/// The message being received.
struct Incoming {
    msgid: u32,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    failed: bool,
}

/// One SMTP session, from accept to close.
async fn session(
    mut conn: Conn,
    peer: Peer,
    entry: Entry,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _slot: SessionSlot,
) {
    let config = &*shared.config();
    let (listener, hostname, tls_config) = match &entry {
        Entry::Listener(at) => (
            config.listeners.get(at.index),
            at.hostname.clone(),
            shared.tls.get(at.index).cloned().flatten(),
        ),
        Entry::Socket => (None, config.hostname.clone(), None),
    };
    let socket = &config.socket;
    let id = shared.ids.next();
    match &peer {
        Peer::Remote(addr) => log_info!(
            "smtp-in: session {id}: connected address={} host=<unknown>",
            addr.ip()
        ),
        Peer::Local { uid, user } => log_info!(
            "smtp-in: session {id}: connected address=local user={} uid={uid}",
            visible(user)
        ),
    }
    let tls_policy = match (listener.map(|l| l.tls), &tls_config) {
        (Some(ListenerTls::StartTls { required, .. }), Some(_)) => TlsPolicy::StartTls { required },
        (Some(ListenerTls::Smtps { .. }), Some(_)) => TlsPolicy::Implicit,
        _ => TlsPolicy::Off,
    };
    let auth = listener.and_then(|l| l.auth.clone());
    let mut tls_info: Option<TlsInfo> = None;
    if let (TlsPolicy::Implicit, Some(tls)) = (tls_policy, &tls_config) {
        match conn
            .accept_tls(tls.clone(), shared.tuning.command_timeout)
            .await
        {
            Ok(info) => {
                log_info!("smtp-in: session {id}: TLS {}", info.log_form());
                tls_info = Some(info);
            }
            Err(e) => {
                log_info!(
                    "smtp-in: session {id}: TLS handshake failed: {}",
                    visible(&e)
                );
                log_info!("smtp-in: session {id}: closed reason=tls-failure");
                return;
            }
        }
    }
    let mut s = ServerSession::new(ServerConfig {
        hostname: hostname.clone(),
        max_message_size: config.smtp.max_message_size,
        max_recipients: usize::try_from(config.smtp.max_rcpt).unwrap_or(usize::MAX),
        max_messages: u32::try_from(config.smtp.max_mails).unwrap_or(u32::MAX),
        max_errors: u32::try_from(config.smtp.max_errors).unwrap_or(u32::MAX),
        dsn: match &entry {
            Entry::Listener(_) => !listener.is_some_and(|l| l.no_dsn),
            Entry::Socket => !socket.no_dsn,
        },
        tls: tls_policy,
        auth: match &auth {
            None => AuthPolicy::Off,
            Some(a) if a.required => AuthPolicy::Required,
            Some(_) => AuthPolicy::Optional,
        },
        ..ServerConfig::default()
    });
    let facts_base = SessionFacts {
        peer: peer.ip(),
        rdns: None,
        helo: None,
        tag: match &entry {
            Entry::Listener(_) => listener.and_then(|l| l.tag.clone()),
            Entry::Socket => socket.tag.clone(),
        },
        auth_user: None,
        tls: false,
    };
    let received_auth = listener.is_some_and(|l| l.received_auth);
    let mask_src = match &entry {
        Entry::Listener(_) => listener.is_some_and(|l| l.mask_src),
        Entry::Socket => socket.mask_src,
    };
    let mut routes: Vec<(String, RouteAnswer)> = Vec::new();
    let mut incoming: Option<Incoming> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending_input: Vec<u8> = Vec::new();
    let mut window_start = tokio::time::Instant::now();
    let mut window_bytes: u64 = 0;
    let mut last_progress = tokio::time::Instant::now();
    let mut reason = "disconnect";

    'session: loop {
        // Run the session on what it has, answering its questions.
        loop {
            let todo = match s.poll() {
                None => break,
                Some(Event::MailFrom { from, .. }) => {
                    routes.clear();
                    Todo::MailFrom(from.mailbox().map(|m| m.to_string()).unwrap_or_default())
                }
                Some(Event::StartTls) => Todo::StartTls,
                Some(Event::Auth {
                    mechanism,
                    credentials,
                }) => Todo::Auth(mechanism.name(), credentials.clone()),
                Some(Event::Recipient { to, .. }) => Todo::Route(to.mailbox().to_string()),
                Some(Event::DataStart { transaction }) => Todo::Create(transaction.clone()),
                Some(Event::DataChunk(bytes)) => Todo::Write(bytes.to_vec()),
                Some(Event::DataEnd {
                    transaction,
                    verdict,
                }) => match verdict {
                    Ok(()) => Todo::Commit(transaction.clone()),
                    Err(e) => {
                        log_info!("smtp-in: session {id}: message refused: {e}");
                        Todo::Drop
                    }
                },
                Some(Event::Close) => Todo::Close,
            };
            match todo {
                Todo::StartTls => {
                    // The 220 goes out in plaintext first; whatever the
                    // client sent after STARTTLS is dropped with the buffer.
                    let out = s.take_output();
                    pending_input.clear();
                    if conn.write_all(&out).await.is_err() {
                        break 'session;
                    }
                    let Some(tls) = tls_config.clone() else {
                        break 'session;
                    };
                    match conn.accept_tls(tls, shared.tuning.command_timeout).await {
                        Ok(info) => {
                            log_info!("smtp-in: session {id}: STARTTLS {}", info.log_form());
                            tls_info = Some(info);
                            let _ = s.tls_established();
                            last_progress = tokio::time::Instant::now();
                        }
                        Err(e) => {
                            log_info!(
                                "smtp-in: session {id}: TLS handshake failed: {}",
                                visible(&e)
                            );
                            reason = "tls-failure";
                            break 'session;
                        }
                    }
                }
                Todo::Auth(mechanism, credentials) => {
                    let ip = peer.ip();
                    let verdict = if ip.is_some_and(|ip| shared.auth_blocked(ip)) {
                        AuthVerdict::Unavailable("too many failures from this address".into())
                    } else {
                        let table = auth.as_ref().and_then(|a| a.table);
                        let Credentials { user, password } = credentials.clone();
                        shared
                            .lookup
                            .call(|id| ToLookup::Authenticate {
                                id,
                                table,
                                user,
                                password: Secret(password),
                            })
                            .await
                            .and_then(|(answer, _)| match answer {
                                FromLookup::Authenticated { verdict, .. } => Some(verdict),
                                _ => None,
                            })
                            .unwrap_or(AuthVerdict::Unavailable("lookup is gone".into()))
                    };
                    let user = visible(&credentials.user);
                    match verdict {
                        AuthVerdict::Accepted => {
                            log_info!(
                                "smtp-in: session {id}: authentication user={user} mechanism={mechanism} result=ok"
                            );
                            let _ = s.auth_accepted();
                        }
                        AuthVerdict::Rejected => {
                            log_info!(
                                "smtp-in: session {id}: authentication user={user} mechanism={mechanism} result=permfail"
                            );
                            if let Some(ip) = ip {
                                shared.auth_failed(ip);
                            }
                            tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                            let _ = s.auth_rejected();
                        }
                        AuthVerdict::Unavailable(why) => {
                            log_warn!(
                                "smtp-in: session {id}: authentication user={user} mechanism={mechanism} result=tempfail: {}",
                                visible(&why)
                            );
                            let _ = s.auth_unavailable();
                        }
                    }
                }
                Todo::MailFrom(sender) => {
                    let senders = listener.and_then(|l| l.senders.as_ref());
                    let (Some(senders), Some(user)) = (senders, s.auth_user()) else {
                        let _ = s.accept_mail();
                        continue;
                    };
                    let (table, user) = (senders.table, user.to_owned());
                    let allowed = shared
                        .lookup
                        .call(|id| ToLookup::Sender {
                            id,
                            table,
                            user: user.clone(),
                            sender: sender.clone(),
                        })
                        .await
                        .and_then(|(answer, _)| match answer {
                            FromLookup::Sender { allowed, .. } => allowed,
                            _ => None,
                        });
                    match allowed {
                        Some(true) => {
                            let _ = s.accept_mail();
                        }
                        Some(false) => {
                            log_info!(
                                "smtp-in: session {id}: failed-command command=\"MAIL FROM:<{}>\" result=\"553 5.7.1 not allowed for user {}\"",
                                visible(&sender),
                                visible(&user)
                            );
                            let _ = s.reject_mail(reply(
                                553,
                                "5.7.1",
                                "Sender address rejected: not allowed for the authenticated user"
                                    .into(),
                            ));
                        }
                        None => {
                            let _ = s.reject_mail(reply(451, "4.3.0", "Temporary failure".into()));
                        }
                    }
                }
                Todo::Route(rcpt) => {
                    let sender = s
                        .transaction()
                        .and_then(|t| t.sender.mailbox().map(|m| m.to_string()))
                        .unwrap_or_default();
                    let facts = SessionFacts {
                        helo: s.helo().map(|h| h.name.to_string()),
                        auth_user: s.auth_user().map(str::to_owned),
                        tls: s.is_tls(),
                        ..facts_base.clone()
                    };
                    let query = RouteQuery {
                        facts,
                        sender,
                        rcpt: rcpt.clone(),
                    };
                    let answer = shared
                        .lookup
                        .call(|id| ToLookup::Route { id, query })
                        .await
                        .and_then(|(answer, _)| match answer {
                            FromLookup::Route { answer, .. } => Some(answer),
                            _ => None,
                        });
                    match answer {
                        Some(RouteAnswer::Accept { .. }) => {
                            if let Some(a) = answer {
                                routes.push((rcpt, a));
                            }
                            let _ = s.accept_rcpt();
                        }
                        Some(RouteAnswer::Reject { code, status, text }) => {
                            log_info!(
                                "smtp-in: session {id}: failed-command command=\"RCPT TO:<{}>\" result=\"{code} {status} {}\"",
                                visible(&rcpt),
                                visible(&text)
                            );
                            let _ = s.reject_rcpt(reply(code, &status, text));
                        }
                        Some(RouteAnswer::TempFail { text }) => {
                            let _ = s.reject_rcpt(reply(451, "4.3.0", text));
                        }
                        None => {
                            let _ = s.reject_rcpt(reply(451, "4.3.0", "Temporary failure".into()));
                        }
                    }
                }
                Todo::Create(tx) => {
                    let how = HowReceived {
                        tls: tls_info.as_ref(),
                        auth_user: s.auth_user(),
                        received_auth,
                    };
                    match create_message(&shared, &tx, &hostname, &peer, mask_src, &how).await {
                        Ok(msg) => {
                            incoming = Some(msg);
                            let _ = s.data_ready();
                        }
                        Err(text) => {
                            let _ = s.data_refused(reply(451, "4.3.0", text));
                        }
                    }
                }
                Todo::Write(bytes) => {
                    if let Some(msg) = incoming.as_mut()
                        && !msg.failed
                    {
                        msg.size += bytes.len() as u64;
                        if msg.file.write_all(&bytes).is_err() {
                            msg.failed = true;
                        }
                    }
                }
                Todo::Drop => {
                    if let Some(msg) = incoming.take() {
                        shared.queue.send(SmtpToQueue::Abort { msgid: msg.msgid });
                    }
                }
                Todo::Commit(tx) => {
                    let facts = SessionFacts {
                        auth_user: s.auth_user().map(str::to_owned),
                        tls: s.is_tls(),
                        ..facts_base.clone()
                    };
                    let result =
                        commit(&shared, incoming.take(), &tx, &routes, &facts, &hostname).await;
                    match result {
                        Ok((msgid, size)) => {
                            log_info!(
                                "smtp-in: session {id}: message msgid={msgid:08x} size={size} nrcpt={} proto={}",
                                tx.recipients.len(),
                                if tx.helo.esmtp { "ESMTP" } else { "SMTP" }
                            );
                            let _ = s.message_accepted(&format!("{msgid:08x}"));
                        }
                        Err(text) => {
                            let _ = s.message_failed(reply(451, "4.3.0", text));
                        }
                    }
                    routes.clear();
                }
                Todo::Close => {
                    if reason == "disconnect" {
                        reason = "quit";
                    }
                }
            }
        }
        let out = s.take_output();
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                break 'session;
            }
            // A reply means a command was handled: the command timeout
            // counts from here, not from the last byte read.
            last_progress = tokio::time::Instant::now();
            // The session pauses while its output is large; it may hold
            // more pipelined commands, so run it again before reading.
            if !s.is_closed() {
                continue;
            }
        }
        if s.is_closed() {
            break;
        }
        // Input the session could not take yet (its buffer was full). Read
        // nothing more until it is taken, so memory stays bounded.
        if !pending_input.is_empty() {
            let n = s.feed(&pending_input);
            pending_input.drain(..n);
            if n > 0 {
                continue;
            }
            // Idle, output sent, yet no room for input: cannot happen with
            // a well-behaved session; never spin on it.
            log_warn!("smtp-in: session {id}: input stalled, closing");
            break 'session;
        }
        let in_data = incoming.is_some();
        let timeout = if in_data {
            shared
                .tuning
                .data_window
                .saturating_sub(window_start.elapsed())
        } else {
            // Per command, as RFC 5321 4.5.3.2 means it: a client trickling
            // bytes without ever finishing a command times out too.
            shared
                .tuning
                .command_timeout
                .saturating_sub(last_progress.elapsed())
        };
        tokio::select! {
            read = tokio::time::timeout(timeout, conn.read(&mut buf)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => break 'session,
                Ok(Ok(n)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    window_bytes += n as u64;
                    let taken = s.feed(data);
                    pending_input.extend_from_slice(data.get(taken..).unwrap_or_default());
                }
                Err(_) if in_data => {
                    if window_bytes < MIN_DATA_BYTES_PER_WINDOW {
                        reason = "too slow";
                        s.on_timeout();
                    }
                    window_start = tokio::time::Instant::now();
                    window_bytes = 0;
                }
                Err(_) => {
                    reason = "timeout";
                    s.on_timeout();
                }
            },
            _ = stop.changed() => {
                reason = "shutdown";
                s.shutdown();
            }
        }
        if !in_data {
            window_start = tokio::time::Instant::now();
            window_bytes = 0;
        }
    }
    if let Some(msg) = incoming.take() {
        shared.queue.send(SmtpToQueue::Abort { msgid: msg.msgid });
    }
    conn.shutdown().await;
    log_info!("smtp-in: session {id}: closed reason={reason}");
}

/// A reply from lookup's or the queue's answer; one that does not make a
/// valid reply (it would be a bug of ours) becomes a temporary failure.
fn reply(code: u16, status: &str, text: String) -> Reply {
    Reply::new(code, parse_status(status), vec![text]).unwrap_or_else(|_| temporary_failure())
}

#[allow(clippy::expect_used)]
fn temporary_failure() -> Reply {
    // Constant arguments that Reply::new accepts: a valid code, a matching
    // class and one line.
    Reply::new(
        451,
        Some(EnhancedCode::new(4, 3, 0)),
        vec!["Temporary failure".into()],
    )
    .expect("constant reply")
}

fn parse_status(status: &str) -> Option<EnhancedCode> {
    let mut parts = status.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    Some(EnhancedCode::new(class, subject, detail))
}

/// What the Received header says about TLS and AUTH.
struct HowReceived<'a> {
    tls: Option<&'a TlsInfo>,
    auth_user: Option<&'a str>,
    /// The listener's `received-auth`.
    received_auth: bool,
}

async fn create_message(
    shared: &Shared,
    tx: &Transaction,
    hostname: &str,
    peer: &Peer,
    mask_src: bool,
    how: &HowReceived<'_>,
) -> Result<Incoming, String> {
    let (answer, mut fds) = shared
        .queue
        .call(|id| SmtpToQueue::Create { id })
        .await
        .ok_or("Temporary queue failure")?;
    let msgid = match answer {
        QueueToSmtp::Created { msgid, .. } => msgid,
        QueueToSmtp::CreateFailed { reason, .. } => return Err(reason),
        _ => return Err("Temporary queue failure".into()),
    };
    let fd: OwnedFd = fds.pop().ok_or("Temporary queue failure")?;
    let mut file = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::from(fd));
    let for_rcpt = match tx.recipients.as_slice() {
        [one] => Some(one.path.mailbox().to_string()),
        _ => None,
    };
    let date = crate::dsn::rfc5322_date(now());
    let id = format!("{msgid:08x}");
    let tls_clause = how.tls.map(TlsInfo::received_clause);
    let header = format_received(&ReceivedInfo {
        helo: &tx.helo.name.to_string(),
        client_host: None,
        client_ip: peer.ip(),
        local_user: match peer {
            Peer::Local { uid, user } => Some((user.as_str(), *uid)),
            Peer::Remote(_) => None,
        },
        mask_src,
        by: hostname,
        protocol: Protocol {
            esmtp: tx.helo.esmtp,
            tls: how.tls.is_some(),
            auth: how.auth_user.is_some(),
            utf8: tx.params.smtputf8,
        },
        id: &id,
        tls: tls_clause.as_deref(),
        auth: match (how.received_auth, how.auth_user) {
            (false, _) => AuthClause::Hidden,
            (true, None) => AuthClause::No,
            (true, Some(user)) => AuthClause::Pass(user),
        },
        for_rcpt: for_rcpt.as_deref(),
        date: &date,
    });
    file.write_all(header.as_bytes())
        .map_err(|_| "Temporary queue failure".to_string())?;
    Ok(Incoming {
        msgid,
        size: 0,
        failed: false,
        file,
    })
}

async fn commit(
    shared: &Shared,
    incoming: Option<Incoming>,
    tx: &Transaction,
    routes: &[(String, RouteAnswer)],
    facts: &SessionFacts,
    hostname: &str,
) -> Result<(u32, u64), String> {
    let msg = incoming.ok_or("Temporary queue failure")?;
    let msgid = msg.msgid;
    let size = msg.size;
    // Flushed, and cut where the writing ended (a reused file is longer).
    let flushed = !msg.failed
        && msg
            .file
            .into_inner()
            .is_ok_and(|f| rsmtpd_queue::end_message(&f).is_ok());
    if !flushed {
        shared.queue.send(SmtpToQueue::Abort { msgid });
        return Err("Temporary queue failure: cannot write the message".into());
    }
    let mut recipients = Vec::with_capacity(tx.recipients.len());
    for r in &tx.recipients {
        let rcpt = r.path.mailbox().to_string();
        let Some((_, RouteAnswer::Accept { deliveries })) = routes.iter().find(|(k, _)| *k == rcpt)
        else {
            continue;
        };
        let notify = match r.params.notify {
            None => String::new(),
            Some(rsmtpd_smtp_proto::command::Notify::Never) => "NEVER".into(),
            Some(rsmtpd_smtp_proto::command::Notify::On(on)) => {
                let mut v = Vec::new();
                if on.success() {
                    v.push("SUCCESS");
                }
                if on.failure() {
                    v.push("FAILURE");
                }
                if on.delay() {
                    v.push("DELAY");
                }
                v.join(",")
            }
        };
        let orcpt = r.params.orcpt.as_ref().map(|o| {
            format!(
                "{};{}",
                o.addr_type,
                String::from_utf8_lossy(&o.address.decode())
            )
        });
        // One envelope per delivery the recipient expanded to.
        for delivery in deliveries {
            recipients.push(SubmittedRcpt {
                rcpt: rcpt.clone(),
                delivery: delivery.clone(),
                notify: notify.clone(),
                orcpt: orcpt.clone(),
            });
        }
    }
    let submission = Submission {
        sender: tx
            .sender
            .mailbox()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        recipients,
        facts: SessionFacts {
            helo: Some(tx.helo.name.to_string()),
            ..facts.clone()
        },
        hostname: hostname.to_owned(),
        ret: tx.params.ret.map(|r| match r {
            rsmtpd_smtp_proto::command::Ret::Full => "FULL".into(),
            rsmtpd_smtp_proto::command::Ret::Hdrs => "HDRS".into(),
        }),
        envid: tx
            .params
            .envid
            .as_ref()
            .map(|e| String::from_utf8_lossy(&e.decode()).into_owned()),
        body_8bit: tx.params.body == Some(rsmtpd_smtp_proto::command::Body::EightBitMime),
        smtputf8: tx.params.smtputf8,
    };
    let answer = shared
        .queue
        .call(|id| SmtpToQueue::Commit {
            id,
            msgid,
            submission: Box::new(submission),
        })
        .await
        .map(|(a, _)| a);
    match answer {
        Some(QueueToSmtp::Committed { .. }) => Ok((msgid, size)),
        Some(QueueToSmtp::CommitFailed { reason, .. }) => Err(reason),
        _ => Err("Temporary queue failure".into()),
    }
}
