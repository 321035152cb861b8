//! The mta role: outbound SMTP. For each transaction the queue hands over
//! (recipients of one domain and action, and the message's fd), it routes
//! (smarthost, `domain <table>` or MX), connects to each candidate in turn
//! (or reuses a kept connection, [`pool`]) within the connection limits
//! ([`limits`]), drives the sans-IO client session, then reports one
//! outcome per recipient. As root it is `_smtpd` in an empty chroot; the
//! resolver's configuration and the tables are read before the chroot.
//!
//!
//! TLS: STARTTLS is taken whenever offered, unverified, and a failed
//! handshake is retried once in plaintext (OpenSMTPD's default); with
//! `smtp+tls://`, `smtps://` or the action's `tls` it is mandatory and the
//! certificate is verified (unless `tls no-verify`). Credentials of
//! `auth <table>` are only ever sent over TLS. Handshake signatures for a
//! client certificate (`pki`) are made by the crypto process.

mod limits;
mod pool;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rsmtpd_config::model::{Config, Dispatcher, RelayDispatcher, SourceAddrs};
use rsmtpd_ipc::Channel;
use rsmtpd_mta::resolve::{Hop, Resolver};
use rsmtpd_mta::route::{self, Protocol, Random, TlsMode, XorShift};
use rsmtpd_smtp_proto::address::{Charset, Domain, ForwardPath, ReversePath, XText};
use rsmtpd_smtp_proto::client::{
    ClientConfig, ClientSession, Envelope, Event, Mode, RecipientOutcome, SendError,
};
use rsmtpd_smtp_proto::command::{Body, MailParams, NotifyOn, Orcpt, RcptParams, Ret};
use rsmtpd_smtp_proto::reply::Reply;
use rsmtpd_smtp_proto::server::Recipient;
use rsmtpd_table::{Service, Table, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::conn::Conn;
use crate::links::{
    ControlToMta, MtaToControl, MtaToQueue, Notify, Outcome, QueueToMta, RelayRequest, Role, Start,
};
use crate::logging::visible;
use crate::roles::{ParentLink, Received, RoleError, writer};
use crate::{log_info, log_warn};

/// Transactions under way at once.
const MAX_SESSIONS: usize = 100;
/// Connecting to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for any one reply (RFC 5321 4.5.3.2 asks for minutes; the
/// longest, after the final dot, is 10).
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let queue = fds.link(Role::Queue)?;
    let control = fds.link(Role::Control)?;
    // Everything read from the filesystem is read before the chroot.
    let tables = rsmtpd_config::ruleset::open_tables(&start.config)
        .map_err(|e| RoleError::Setup(e.to_string()))?;
    let resolver = match start.tuning.resolver {
        Some(addr) => Resolver::with_nameserver(addr),
        None => Resolver::system(),
    }
    .map_err(|e| RoleError::Setup(format!("resolver: {e}")))?;
    let rng = XorShift::from_entropy();
    let (crypto, pkis) = crate::tls::CryptoLink::connect(fds.link(Role::Crypto)?)?;
    let roots = start
        .tuning
        .ca_file
        .clone()
        .unwrap_or_else(|| crate::tls::SYSTEM_ROOTS.into());
    let tls = crate::tls::Certificates::new(pkis, crypto).client_configs(&start.config, &roots)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Mta, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::ignore_interrupts()?;
        let parent = parent.into_async()?;
        let queue: Channel<MtaToQueue, QueueToMta> = Channel::from_fd(queue)?;
        let (queue_tx, mut queue_rx) = queue.split();
        let answers = writer(queue_tx);
        let mta = Arc::new(Mta {
            own_names: own_names(&start.config),
            limits: limits::Limits::new(start.config.mta.clone()),
            pool: pool::Pool::new(
                Duration::from_secs(start.config.mta.limits.session_keepalive),
                usize::try_from(
                    (start.config.mta.limits.max_conn_per_host)
                        .min(start.config.mta.limits.max_conn_per_route),
                )
                .unwrap_or(1),
            ),
            session_mail_max: start.config.mta.limits.session_mail_max,
            tls,
            hoststats: std::sync::Mutex::new(HashMap::new()),
            config: std::sync::Mutex::new(Arc::new(start.config)),
            tables,
            resolver,
            rng: Mutex::new(rng),
            mx_port: start.tuning.mx_port,
            slots: Semaphore::new(MAX_SESSIONS),
        });
        let control: Channel<MtaToControl, ControlToMta> = Channel::from_fd(control)?;
        tokio::spawn(answer_control(mta.clone(), control));
        // Idle connections past the keepalive are ended once a second.
        let reaper = mta.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for idle in reaper.pool.expired() {
                    tokio::spawn(say_goodbye(idle.session, idle.stream));
                }
            }
        });
        let (done_tx, mut done) = mpsc::unbounded_channel::<()>();
        let serve = async {
            while let Some((msg, mut fds)) = queue_rx.recv().await? {
                let QueueToMta::Relay(request) = msg;
                let Some(message) = fds.pop() else {
                    log_warn!("mta: relay request without a message");
                    continue;
                };
                let mta = mta.clone();
                let answers = answers.clone();
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    let (outcomes, remote_mta) = mta.relay(&request, message).await;
                    let _ = answers.send((
                        MtaToQueue::Done {
                            id: request.id,
                            outcomes,
                            remote_mta,
                        },
                        Vec::new(),
                    ));
                    drop(done_tx);
                });
            }
            Ok::<(), RoleError>(())
        };
        tokio::select! {
            r = serve => r,
            r = super::serve_parent(parent, |config| {
                *mta.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                log_info!("mta: configuration reloaded");
            }) => r,
        }?;
        drop(done_tx);
        // Let transactions under way finish their current step (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(5), done.recv()).await;
        Ok(())
    })
}

struct Mta {
    /// The running configuration; a transaction keeps the one it started
    /// with. A reload never changes the tables (their ids would shift; the
    /// parent refuses such a reload).
    config: std::sync::Mutex<Arc<Config>>,
    tables: Vec<Table>,
    resolver: Resolver,
    rng: Mutex<XorShift>,
    own_names: Vec<String>,
    mx_port: u16,
    slots: Semaphore,
    /// Connections per host and transactions per domain (`mta limit`).
    limits: limits::Limits,
    /// Sessions waiting for their next transaction.
    pool: pool::Pool,
    /// Transactions per connection at most (`session-mail-max`).
    session_mail_max: u64,
    /// TLS client configurations by relay action name.
    tls: std::collections::HashMap<String, crate::tls::ClientTls>,
    /// The last result by recipient domain: when, and what (`smtpctl show
    /// hoststats`).
    hoststats: std::sync::Mutex<HashMap<String, (u64, String)>>,
}

/// How long `show hoststats` remembers a domain.
const HOSTSTATS_SPAN: u64 = 4 * 3600;
/// Domains remembered at most.
const MAX_HOSTSTATS: usize = 10_000;

/// smtpctl's questions about connections and routes.
async fn answer_control(mta: Arc<Mta>, control: Channel<MtaToControl, ControlToMta>) {
    use rsmtpd_control::{Command, Reply};
    let (mut tx, mut rx) = control.split();
    while let Ok(Some((ControlToMta { id, command }, _))) = rx.recv().await {
        let reply = match command {
            Command::ShowHosts => Reply::Text(
                mta.limits
                    .hosts()
                    .iter()
                    .map(|(ip, n)| format!("{ip} connections={n}\n"))
                    .collect(),
            ),
            Command::ShowRelays => Reply::Text(
                mta.limits
                    .relays()
                    .iter()
                    .map(|(d, n)| format!("{d} transactions={n}\n"))
                    .collect(),
            ),
            Command::ShowRoutes => Reply::Text(
                mta.limits
                    .penalties()
                    .iter()
                    .map(|(at, left, why)| format!("{at} D penalty={left}s {why}\n"))
                    .collect(),
            ),
            Command::ShowHoststats => {
                let now = crate::clock::now();
                let map = mta.hoststats.lock().unwrap_or_else(|p| p.into_inner());
                let mut lines: Vec<String> = map
                    .iter()
                    .filter(|(_, (at, _))| now.saturating_sub(*at) <= HOSTSTATS_SPAN)
                    .map(|(d, (at, stat))| format!("{d}|{at}|{stat}\n"))
                    .collect();
                lines.sort();
                Reply::Text(lines.concat())
            }
            Command::ResumeRoute(route) => match route.parse::<SocketAddr>() {
                Ok(at) if mta.limits.forgive(at) => Reply::Done(format!("route {at} resumed")),
                Ok(at) => Reply::Refused(format!("route {at} is not disabled")),
                Err(_) => Reply::Refused("a route is address:port, as show routes prints".into()),
            },
            _ => Reply::Refused("not an mta command".into()),
        };
        if tx
            .send(&MtaToControl { id, reply }, Vec::new())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// How one connection speaks TLS, decided per attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TlsPlan {
    /// STARTTLS when offered; a failed handshake is retried in plaintext.
    Opportunistic,
    /// Opportunistic TLS failed at this address: plaintext this time.
    PlainFallback,
    /// Never (`smtp+notls://`, `lmtp://`).
    Never,
    /// STARTTLS or fail.
    Starttls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// The names this server greets as: its host name and every listener's
/// `hostname`. An MX or a greeting with one of them is us.
fn own_names(config: &Config) -> Vec<String> {
    let mut names = vec![config.hostname.to_ascii_lowercase()];
    for l in &config.listeners {
        if let Some(name) = &l.hostname {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// How one attempt at one address ended.
enum Attempt {
    /// Every recipient has its outcome.
    Done(Vec<Outcome>),
    /// Nothing was decided (4xx greeting, the session broke before any
    /// recipient): try the next address.
    Next(String),
    /// Could not connect: try the next address, and spare this one for a
    /// while.
    Unreachable(String),
    /// The TLS handshake failed; opportunistic TLS tries again in
    /// plaintext.
    TlsFailed(String),
}

impl Mta {
    fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The outcomes, and the host that gave them.
    async fn relay(
        &self,
        req: &RelayRequest,
        message: OwnedFd,
    ) -> (Vec<(u64, Outcome)>, Option<String>) {
        let all = |outcome: Outcome| {
            req.recipients
                .iter()
                .map(|r| (r.evpid, outcome.clone()))
                .collect::<Vec<_>>()
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return (all(temporary("4.3.0", "shutting down")), None);
        };
        let Some(_domain) = self.limits.domain(&req.domain).await else {
            return (all(temporary("4.3.0", "shutting down")), None);
        };
        let (outcomes, remote_mta) = match self.try_relay(req, message).await {
            Ok((outcomes, host)) => (outcomes, Some(host)),
            Err(outcome) => (vec![outcome; req.recipients.len()], None),
        };
        if let Some(o) = outcomes.first() {
            let stat = match o {
                Outcome::Ok | Outcome::Relayed | Outcome::PassedOn => "ok".to_string(),
                Outcome::Temporary { text, .. } => format!("tempfail: {text}"),
                Outcome::Permanent { text, .. } => format!("permfail: {text}"),
            };
            let domain = req.domain.to_ascii_lowercase();
            let now = crate::clock::now();
            let mut map = self.hoststats.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_HOSTSTATS && !map.contains_key(&domain) {
                map.retain(|_, (at, _)| now.saturating_sub(*at) <= HOSTSTATS_SPAN);
            }
            if map.len() < MAX_HOSTSTATS || map.contains_key(&domain) {
                map.insert(domain, (now, stat));
            }
        }
        for (r, o) in req.recipients.iter().zip(&outcomes) {
            let (result, stat) = match o {
                Outcome::Ok | Outcome::Relayed | Outcome::PassedOn => {
                    ("Ok", "Delivered".to_string())
                }
                Outcome::Temporary { text, .. } => ("TempFail", text.clone()),
                Outcome::Permanent { text, .. } => ("PermFail", text.clone()),
            };
            log_info!(
                "relay: {result} for {:016x}: from=<{}>, to=<{}>, stat={}",
                r.evpid,
                visible(&req.sender),
                visible(&r.dest),
                visible(&stat)
            );
        }
        let outcomes = req
            .recipients
            .iter()
            .map(|r| r.evpid)
            .zip(outcomes)
            .collect();
        (outcomes, remote_mta)
    }

    async fn try_relay(
        &self,
        req: &RelayRequest,
        message: OwnedFd,
    ) -> Result<(Vec<Outcome>, String), Outcome> {
        let config = self.config();
        let action = config
            .actions
            .iter()
            .find(|a| a.name == req.action)
            .ok_or_else(|| temporary("4.3.0", &format!("no action named {:?}", req.action)))?;
        let Dispatcher::Relay(dispatcher) = &action.dispatcher else {
            return Err(temporary("4.3.0", "not a relay action"));
        };
        let plan = route::plan(dispatcher, &req.domain, self.mx_port, |id| {
            self.tables.get(id.0)
        })
        .map_err(route_failure)?;
        let hops = {
            let mut rng = self.rng.lock().await;
            self.resolver
                .route(&plan, &self.own_names, &mut *rng)
                .await
                .map_err(route_failure)?
        };
        let envelope = envelope(req, dispatcher.mail_from.as_deref())?;
        // Read in place: the message was just written, so it is in the
        // page cache, and a thread hop per read costs more than the read.
        let mut file = std::fs::File::from(message);
        let mut last = String::from("no route");
        for hop in &hops {
            for addr in &hop.addrs {
                let at = SocketAddr::new(*addr, hop.target.port);
                if let Some(why) = self.limits.penalty(at) {
                    last = format!("{} [{at}]: {why}", hop.target.host);
                    continue;
                }
                let Some(_connection) = self.limits.host(&req.domain, *addr).await else {
                    return Err(temporary("4.3.0", "shutting down"));
                };
                let mut plan = match hop.target.tls {
                    TlsMode::Opportunistic => TlsPlan::Opportunistic,
                    TlsMode::Plain => TlsPlan::Never,
                    TlsMode::Starttls => TlsPlan::Starttls,
                    TlsMode::Implicit => TlsPlan::Implicit,
                };
                let why = loop {
                    let attempt = self
                        .attempt(&req.action, dispatcher, hop, at, plan, &envelope, &mut file)
                        .await;
                    break match attempt {
                        Attempt::Done(outcomes) => {
                            return Ok((outcomes, hop.target.host.clone()));
                        }
                        Attempt::TlsFailed(why) if plan == TlsPlan::Opportunistic => {
                            log_info!(
                                "relay: {}: TLS failed ({}), trying again without",
                                at,
                                visible(&why)
                            );
                            plan = TlsPlan::PlainFallback;
                            continue;
                        }
                        Attempt::Next(why) | Attempt::TlsFailed(why) => why,
                        Attempt::Unreachable(why) => {
                            self.limits.penalise(at, &why);
                            why
                        }
                    };
                };
                log_info!("relay: {}: {}", at, visible(&why));
                last = format!("{} [{at}]: {why}", hop.target.host);
            }
        }
        Err(temporary("4.4.1", &last))
    }

    /// The local address to connect from (`src`): the literal, or one of
    /// the table's addresses of the destination's family, in turn. An
    /// address of the other family cannot reach `at`.
    async fn source(
        &self,
        dispatcher: &RelayDispatcher,
        at: SocketAddr,
    ) -> Result<Option<IpAddr>, String> {
        let same_family = |ip: &IpAddr| ip.is_ipv4() == at.is_ipv4();
        match &dispatcher.src {
            None => Ok(None),
            Some(SourceAddrs::Literal(ip)) if same_family(ip) => Ok(Some(*ip)),
            Some(SourceAddrs::Literal(ip)) => Err(format!(
                "source address {ip} cannot reach this address family"
            )),
            Some(SourceAddrs::Table(id)) => {
                let table = self
                    .tables
                    .get(id.0)
                    .ok_or_else(|| "source table missing".to_string())?;
                let usable: Vec<IpAddr> = table
                    .sources()
                    .map_err(|e| format!("source table: {e}"))?
                    .into_iter()
                    .filter(same_family)
                    .collect();
                if usable.is_empty() {
                    return Err("no source address of this address family".into());
                }
                let pick = self.rng.lock().await.below(usable.len());
                Ok(usable.get(pick).copied())
            }
        }
    }

    /// The name we greet with: `helo-src`'s name for the source address,
    /// else `helo`, else the server's host name.
    fn helo_name(
        &self,
        dispatcher: &RelayDispatcher,
        source: Option<IpAddr>,
    ) -> Result<Domain, String> {
        let mut name = dispatcher
            .helo
            .as_deref()
            .unwrap_or(&self.config().hostname)
            .to_owned();
        if let (Some(id), Some(ip)) = (&dispatcher.helo_src, source) {
            let table = self
                .tables
                .get(id.0)
                .ok_or_else(|| "helo-src table missing".to_string())?;
            match table.lookup(Service::Addrname, &ip.to_string()) {
                Ok(Some(Value::Addrname(n))) => name = n,
                Ok(_) => {}
                Err(e) => return Err(format!("helo-src table: {e}")),
            }
        }
        Domain::parse_helo(&name).map_err(|_| format!("{name:?} is not a valid HELO name"))
    }

    /// Whether a server greeting as `name` is this server: relaying to it
    /// would loop (an MX, smarthost or `domain` entry pointing back here).
    fn is_us(&self, name: Option<&str>) -> bool {
        name.is_some_and(|n| self.own_names.iter().any(|o| o.eq_ignore_ascii_case(n)))
    }

    /// One transaction at `at`: on a connection kept from an earlier one
    /// when there is one (and on a new one if that fails before anything
    /// was decided), else on a new connection.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        action: &str,
        dispatcher: &RelayDispatcher,
        hop: &Hop,
        at: SocketAddr,
        plan: TlsPlan,
        envelope: &Envelope,
        file: &mut std::fs::File,
    ) -> Attempt {
        let source = match self.source(dispatcher, at).await {
            Ok(source) => source,
            Err(why) => return Attempt::Next(why),
        };
        let helo = match self.helo_name(dispatcher, source) {
            Ok(name) => name,
            Err(why) => return Attempt::Next(why),
        };
        let mode = match hop.target.protocol {
            Protocol::Smtp => Mode::Smtp,
            Protocol::Lmtp => Mode::Lmtp,
        };
        let tls = Tls {
            plan,
            // An action added by a reload speaks TLS with the defaults.
            configs: self.tls.get(action).or_else(|| self.tls.get("")),
            verify: hop.target.verify,
            credentials: match self.credentials(dispatcher, hop) {
                Ok(c) => c,
                Err(why) => return Attempt::Next(why),
            },
        };
        let key = pool::Key {
            at,
            source,
            helo: helo.to_string(),
            lmtp: mode == Mode::Lmtp,
            tls: plan,
        };
        if let Some(idle) = self.pool.take(&key) {
            let kept = self
                .transact(
                    hop,
                    &key,
                    &tls,
                    idle.session,
                    idle.stream,
                    idle.mails,
                    envelope,
                    file,
                )
                .await;
            match kept {
                // The server may have closed it meanwhile: a new one.
                Attempt::Next(why) | Attempt::Unreachable(why) | Attempt::TlsFailed(why) => {
                    log_info!("relay: {}: kept connection failed: {}", at, visible(&why));
                }
                done @ Attempt::Done(_) => return done,
            }
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(source, at)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Attempt::Unreachable(format!("connect: {e}")),
            Err(_) => return Attempt::Unreachable("connect: timed out".into()),
        };
        let mut conn = Conn::Plain(stream);
        if plan == TlsPlan::Implicit
            && let Err(why) = tls.handshake(&mut conn, &hop.target.host).await
        {
            return Attempt::TlsFailed(why);
        }
        let session = ClientSession::new(ClientConfig { mode, helo });
        self.transact(hop, &key, &tls, session, conn, 0, envelope, file)
            .await
    }

    /// The `auth <table>` credentials for this hop: the entry named by the
    /// relay URL's label, else by the host name.
    fn credentials(
        &self,
        dispatcher: &RelayDispatcher,
        hop: &Hop,
    ) -> Result<Option<rsmtpd_table::Credentials>, String> {
        let Some(id) = dispatcher.auth else {
            return Ok(None);
        };
        let table = self
            .tables
            .get(id.0)
            .ok_or_else(|| "auth table missing".to_string())?;
        let label = hop.target.label.as_deref().unwrap_or(&hop.target.host);
        match table.lookup(Service::Credentials, label) {
            Ok(Some(Value::Credentials(c))) => Ok(Some(c)),
            Ok(_) => Err(format!(
                "no credentials for {} in the auth table",
                visible(label)
            )),
            Err(e) => Err(format!("auth table: {e}")),
        }
    }

    /// Drive one transaction on session `s`, new (`mails` = 0: it starts at
    /// the greeting) or kept (idle, after `mails` transactions). Afterwards
    /// the session is kept for the next one, or ended.
    #[allow(clippy::too_many_arguments)]
    async fn transact(
        &self,
        hop: &Hop,
        key: &pool::Key,
        tls: &Tls<'_>,
        mut s: ClientSession,
        mut stream: Conn,
        mails: u64,
        envelope: &Envelope,
        file: &mut std::fs::File,
    ) -> Attempt {
        let mode = if key.lmtp { Mode::Lmtp } else { Mode::Smtp };
        let count = envelope.recipients().len();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
        let mut buf = vec![0u8; 16 * 1024];
        let mut body = vec![0u8; 16 * 1024];
        if let Err(e) = std::io::Seek::rewind(file) {
            tokio::spawn(say_goodbye(s, stream));
            return Attempt::Next(format!("message: {e}"));
        }
        let mut sent = false;
        let mut done = false;
        if mails > 0 {
            sent = true;
            if let Err(e) = s.send_mail(envelope) {
                tokio::spawn(say_goodbye(s, stream));
                return refused(e, count);
            }
        }
        // Bounded: every turn reads or writes something, and each read has
        // a timeout.
        loop {
            while let Some(event) = s.poll() {
                match event {
                    Event::Ready if !sent => {
                        // TLS first, then AUTH, then the mail.
                        if !stream.is_tls() && tls.plan != TlsPlan::Never && mode == Mode::Smtp {
                            let offered = s.capabilities().starttls;
                            if offered && tls.plan != TlsPlan::PlainFallback {
                                let _ = s.start_tls();
                                continue;
                            }
                            if tls.plan == TlsPlan::Starttls {
                                tokio::spawn(say_goodbye(s, stream));
                                return Attempt::Next(format!(
                                    "{}: TLS is required and the server does not offer STARTTLS",
                                    hop.target.host
                                ));
                            }
                        }
                        if let Some(c) = &tls.credentials
                            && !s.is_authenticated()
                        {
                            if !stream.is_tls() {
                                tokio::spawn(say_goodbye(s, stream));
                                return Attempt::Next(format!(
                                    "{}: will not send credentials without TLS",
                                    hop.target.host
                                ));
                            }
                            if let Err(e) = s.authenticate(&c.username, c.password.as_bytes()) {
                                tokio::spawn(say_goodbye(s, stream));
                                return Attempt::Next(format!("{}: {e}", hop.target.host));
                            }
                            continue;
                        }
                        sent = true;
                        if mode == Mode::Smtp && self.is_us(s.greeted_as()) {
                            let outcome = Outcome::Permanent {
                                status: "5.4.6".into(),
                                text: format!("{}: mail loops back to myself", hop.target.host),
                            };
                            tokio::spawn(say_goodbye(s, stream));
                            return Attempt::Done(vec![outcome; count]);
                        }
                        if let Err(e) = s.send_mail(envelope) {
                            tokio::spawn(say_goodbye(s, stream));
                            return refused(e, count);
                        }
                    }
                    Event::Ready => {
                        let _ = s.quit();
                    }
                    Event::TlsReady => {
                        let out = s.take_output();
                        if !out.is_empty() && stream.write_all(&out).await.is_err() {
                            return Attempt::Next("the connection broke while writing".into());
                        }
                        if let Err(why) = tls.handshake(&mut stream, &hop.target.host).await {
                            return Attempt::TlsFailed(why);
                        }
                        let _ = s.tls_established();
                    }
                    Event::SendBody => {
                        if let Err(why) = send_body(&mut s, &mut stream, file, &mut body).await {
                            return Attempt::Next(why);
                        }
                    }
                    Event::Recipient { index, outcome } => {
                        if let Some(slot) = outcomes.get_mut(index) {
                            *slot = Some(recipient_outcome(&outcome, mode, s.capabilities().dsn));
                        }
                    }
                    Event::TransactionDone(_) => done = true,
                    Event::Closed => {
                        return finish_or_next(outcomes, "the server closed the connection");
                    }
                    Event::Failed(e) => return finish_or_next(outcomes, &e.to_string()),
                }
            }
            let out = s.take_output();
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return finish_or_next(outcomes, "the connection broke while writing");
            }
            if done || outcomes.iter().all(Option::is_some) {
                // Report now: waiting for a 221 would only widen the window
                // in which a crash makes us send the message twice.
                let mails = mails.saturating_add(1);
                if done && s.is_idle() && mails < self.session_mail_max {
                    if let Some(idle) = self
                        .pool
                        .park(key.clone(), pool::Idle::new(s, stream, mails))
                    {
                        tokio::spawn(say_goodbye(idle.session, idle.stream));
                    }
                } else if !s.is_done() {
                    tokio::spawn(say_goodbye(s, stream));
                }
                return finish(outcomes, "the server did not answer for this recipient");
            }
            match tokio::time::timeout(REPLY_TIMEOUT, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    s.closed();
                }
                Ok(Ok(n)) => feed_all(&mut s, buf.get(..n).unwrap_or_default()),
                Err(_) => return finish_or_next(outcomes, "the server did not answer in time"),
            }
        }
    }
}

/// The client refused to send the message: a bounce when the refusal is
/// about the message (too big, needs SMTPUTF8), else another try.
fn refused(e: SendError, count: usize) -> Attempt {
    match e.status() {
        Some(status) => Attempt::Done(vec![
            Outcome::Permanent {
                status: status.into(),
                text: e.to_string(),
            };
            count
        ]),
        None => Attempt::Next(e.to_string()),
    }
}

/// How long ending a session may take once its outcomes are known.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(30);

/// End a session whose outcomes are already reported: QUIT as soon as the
/// session allows, read the 221, close. Bounded by [`GOODBYE_TIMEOUT`].
async fn say_goodbye(mut s: ClientSession, mut stream: Conn) {
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
        let _ = s.quit();
        loop {
            while let Some(event) = s.poll() {
                match event {
                    Event::Ready | Event::TransactionDone(_) => {
                        let _ = s.quit();
                    }
                    Event::Closed | Event::Failed(_) => return,
                    _ => {}
                }
            }
            let out = s.take_output();
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return;
            }
            if s.is_done() || !s.wants_input() {
                return;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => feed_all(&mut s, buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    stream.shutdown().await;
}

/// What one connection needs to speak TLS and authenticate.
struct Tls<'a> {
    plan: TlsPlan,
    configs: Option<&'a crate::tls::ClientTls>,
    verify: bool,
    credentials: Option<rsmtpd_table::Credentials>,
}

impl Tls<'_> {
    /// The client handshake with `host` (its name without a trailing dot:
    /// certificates never carry one).
    async fn handshake(&self, conn: &mut Conn, host: &str) -> Result<(), String> {
        let configs = self
            .configs
            .ok_or_else(|| "no TLS configuration for this action".to_string())?;
        let name = rsmtpd_tls::server_name(host).map_err(|e| e.to_string())?;
        let config = if self.verify {
            configs.verified.clone()
        } else {
            configs.unverified.clone()
        };
        let info = conn
            .connect_tls(config, name, self.verify, REPLY_TIMEOUT)
            .await?;
        log_info!(
            "relay: TLS with {}: {}{}",
            visible(host),
            info.log_form(),
            if self.verify { ", verified" } else { "" }
        );
        Ok(())
    }
}

/// Give the session what was read; what it does not take (after a fatal
/// reply) is dropped.
fn feed_all(s: &mut ClientSession, mut chunk: &[u8]) {
    while !chunk.is_empty() {
        let taken = s.feed(chunk);
        if taken == 0 {
            break;
        }
        chunk = chunk.get(taken..).unwrap_or_default();
    }
}

/// Connect to `at`, from `source` when given.
async fn connect(source: Option<IpAddr>, at: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if at.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    // Commands and body chunks go out as soon as they are written: Nagle
    // plus the peer's delayed ACK would add ~40 ms to a short last write
    // (the final dot), at every transaction.
    socket.set_nodelay(true)?;
    socket.connect(at).await
}

/// Write the message through the session's dot-stuffing, then the final
/// dot: output goes out when 64 KiB are ready, the rest with the dot (one
/// write for a small message).
async fn send_body(
    s: &mut ClientSession,
    stream: &mut Conn,
    file: &mut std::fs::File,
    buf: &mut [u8],
) -> Result<(), String> {
    const FLUSH_AT: usize = 64 * 1024;
    let mut out = Vec::new();
    loop {
        let n = std::io::Read::read(file, buf).map_err(|e| format!("message: {e}"))?;
        if n == 0 {
            break;
        }
        let mut chunk = buf.get(..n).unwrap_or_default();
        while !chunk.is_empty() {
            let taken = s.write_body(chunk).map_err(|e| e.to_string())?;
            out.extend_from_slice(&s.take_output());
            if out.len() >= FLUSH_AT {
                stream
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("writing: {e}"))?;
                out.clear();
            }
            chunk = chunk.get(taken..).unwrap_or_default();
        }
    }
    s.end_body().map_err(|e| e.to_string())?;
    out.extend_from_slice(&s.take_output());
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("writing: {e}"))
}

/// Every recipient without an outcome yet fails temporarily with `why`.
fn finish(outcomes: Vec<Option<Outcome>>, why: &str) -> Attempt {
    Attempt::Done(
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| temporary("4.4.2", why)))
            .collect(),
    )
}

/// Before any recipient was decided, another address may do better.
fn finish_or_next(outcomes: Vec<Option<Outcome>>, why: &str) -> Attempt {
    if outcomes.iter().all(Option::is_none) {
        Attempt::Next(why.to_owned())
    } else {
        finish(outcomes, why)
    }
}

/// An accepted recipient is delivered (LMTP), or passed on to a server
/// that reports from now on (DSN offered), or relayed where no report
/// will follow.
fn recipient_outcome(outcome: &RecipientOutcome, mode: Mode, dsn: bool) -> Outcome {
    let (reply, permanent) = match outcome {
        RecipientOutcome::Accepted(_) => {
            return match (mode, dsn) {
                (Mode::Lmtp, _) => Outcome::Ok,
                (Mode::Smtp, true) => Outcome::PassedOn,
                (Mode::Smtp, false) => Outcome::Relayed,
            };
        }
        RecipientOutcome::Temporary(r) => (r, false),
        RecipientOutcome::Permanent(r) => (r, true),
    };
    let status = status_of(reply, permanent);
    let text = format!("{} {}", reply.code(), reply.safe_text());
    if permanent {
        Outcome::Permanent { status, text }
    } else {
        Outcome::Temporary { status, text }
    }
}

/// The reply's enhanced status, or the generic one of its class.
fn status_of(reply: &Reply, permanent: bool) -> String {
    match reply.enhanced() {
        Some(code) => code.to_string(),
        None if permanent => "5.0.0".into(),
        None => "4.0.0".into(),
    }
}

fn temporary(status: &str, text: &str) -> Outcome {
    Outcome::Temporary {
        status: status.into(),
        text: text.into(),
    }
}

fn route_failure(e: route::RouteError) -> Outcome {
    let text = e.to_string();
    if e.is_permanent() {
        Outcome::Permanent {
            status: e.status().into(),
            text,
        }
    } else {
        Outcome::Temporary {
            status: e.status().into(),
            text,
        }
    }
}

/// The client session's envelope from the queue's request.
/// `mail_from`, the action's `mail-from`, replaces the sender.
fn envelope(req: &RelayRequest, mail_from: Option<&str>) -> Result<Envelope, Outcome> {
    let permanent = |text: String| Outcome::Permanent {
        status: "5.1.7".into(),
        text,
    };
    let sender = mail_from.unwrap_or(&req.sender);
    let sender = ReversePath::parse(format!("<{sender}>").as_bytes(), Charset::Utf8)
        .map_err(|e| permanent(format!("sender: {e}")))?;
    let mut recipients = Vec::with_capacity(req.recipients.len());
    for r in &req.recipients {
        let path =
            ForwardPath::parse(format!("<{}>", r.dest).as_bytes(), Charset::Utf8).map_err(|e| {
                Outcome::Permanent {
                    status: "5.1.3".into(),
                    text: format!("recipient: {e}"),
                }
            })?;
        // DSN parameters travel on; the client sends them only to a
        // server that offers DSN.
        let params = RcptParams {
            notify: r.notify.and_then(|n| match n {
                Notify::Never => Some(rsmtpd_smtp_proto::command::Notify::Never),
                Notify::On {
                    success,
                    failure,
                    delay,
                } => NotifyOn::new(success, failure, delay)
                    .map(rsmtpd_smtp_proto::command::Notify::On),
            }),
            orcpt: r.orcpt.as_ref().map(|(kind, address)| Orcpt {
                addr_type: kind.clone(),
                address: XText::encode(address.as_bytes()),
            }),
        };
        recipients.push(Recipient { path, params });
    }
    let params = MailParams {
        size: Some(req.size),
        body: req.body_8bit.then_some(Body::EightBitMime),
        smtputf8: req.smtputf8,
        ret: req
            .ret_full
            .map(|full| if full { Ret::Full } else { Ret::Hdrs }),
        envid: req.envid.as_ref().map(|e| XText::encode(e.as_bytes())),
        ..MailParams::default()
    };
    Envelope::new(sender, params, recipients).map_err(|e| temporary("4.3.0", &e.to_string()))
}
