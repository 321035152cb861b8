//! A scriptable SMTP server ("sink") for relay tests: it listens on a
//! loopback address, serves each connection on its own thread, records
//! every byte in both directions and every message that reached the final
//! dot, and misbehaves on demand ([`Behaviour`]).
//!
//! Connections are numbered from 0 in the order they were accepted; rules
//! select them with [`Conns`] ("the first K connections", "from the K-th
//! on"), so "4xx for the first K tries, then accept" is one rule.
//!
//! Default dialogue (host name "sink.test"), byte for byte:
//! ```text
//! S: 220 sink.test ESMTP sink
//! C: EHLO client.test
//! S: 250-sink.test Hello client.test
//! S: 250-PIPELINING
//! S: 250-8BITMIME
//! S: 250 ENHANCEDSTATUSCODES
//! C: MAIL FROM:<a@b>           S: 250 2.1.0 Ok
//! C: RCPT TO:<c@d>             S: 250 2.1.5 Ok
//! C: DATA                      S: 354 End data with <CR><LF>.<CR><LF>
//! C: ... .                     S: 250 2.0.0 Ok: queued
//! C: RSET                      S: 250 2.0.0 Ok
//! C: NOOP                      S: 250 2.0.0 Ok
//! C: QUIT                      S: 221 2.0.0 Bye   (then the sink closes)
//! ```
//! Extension lines come in the order SIZE, PIPELINING, 8BITMIME, DSN,
//! SMTPUTF8, STARTTLS, ENHANCEDSTATUSCODES, then [`Behaviour::extra_ehlo`].
//!
//! The sink is strict where a client's bugs matter: the end of DATA is only
//! `<CRLF>.<CRLF>` (a bare LF never ends or splits a line in the data);
//! MAIL needs a prior EHLO/HELO, RCPT a MAIL, DATA a recipient; `MAIL
//! FROM:<...>` and `RCPT TO:<...>` must have the angle brackets and no
//! space after the colon. It is lenient about pipelining: commands sent
//! ahead are served in order even when PIPELINING is not advertised (the
//! transcript shows what the client did). STARTTLS is never performed (std
//! only): it is answered `454 4.7.0 TLS not available` unless a rule says
//! otherwise.
//!
//! Bounds: command lines of at most [`MAX_LINE`] bytes (longer ones get
//! `500 5.5.2 Line too long`), [`MAX_COMMANDS`] commands per connection,
//! [`Behaviour::max_message`] bytes of DATA (more: `552` and close),
//! [`Behaviour::max_rcpts`] recipients, [`Behaviour::max_connections`]
//! connections (later ones are closed at once), [`Behaviour::idle_timeout`]
//! of silence. Dropping the [`Sink`] stops the listener and every
//! connection thread (within a few tens of milliseconds).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest command line the sink reads, CRLF included.
pub const MAX_LINE: usize = 4096;
/// Commands served per connection before the sink closes it.
pub const MAX_COMMANDS: usize = 10_000;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(10);

/// Where in the dialogue a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The banner, before any command.
    Greeting,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    /// The reply to DATA (default 354).
    Data,
    /// The reply after the final dot.
    Dot,
    Rset,
    Noop,
    Quit,
    StartTls,
    /// Any other command (VRFY, HELP, BDAT, unknown verbs).
    Other,
}

/// Which connections (numbered from 0 in accept order) a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conns {
    All,
    /// Connections 0..k.
    First(usize),
    /// Connections k.. .
    From(usize),
    /// Connection k only.
    Only(usize),
}

impl Conns {
    pub fn matches(self, index: usize) -> bool {
        match self {
            Conns::All => true,
            Conns::First(k) => index < k,
            Conns::From(k) => index >= k,
            Conns::Only(k) => index == k,
        }
    }
}

/// What the sink does at a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these exact bytes (the caller writes the CRLFs), then carry on:
    /// a reply starting with '2' or '3' counts as success for the stage.
    Reply(Vec<u8>),
    /// Send these bytes, then close the connection.
    ReplyAndClose(Vec<u8>),
    /// Close the connection without replying.
    Close,
    /// Never reply: keep reading (and recording) until the client closes,
    /// the idle timeout passes or the sink stops.
    Hang,
}

/// One rule: at `stage`, on connections `conns`, when the argument matches
/// `arg` (the address for MAIL and RCPT, the whole argument otherwise;
/// case-insensitive; `None` matches anything), do `action`. The first
/// matching rule wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub stage: Stage,
    pub conns: Conns,
    pub arg: Option<String>,
    pub action: Action,
}

/// Malformed replies (each otherwise a success code for its stage: 220,
/// 250, 354, 221).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// `250 2.0.0 Ok\n`: LF without CR.
    BareLf,
    /// `600 2.0.0 Ok\r\n`, a code outside 200-599 (`099 ...` for `Low`).
    BadCode,
    BadCodeLow,
    /// `250-first line\r\n250\r\n`: the last line of a multi-line reply is
    /// only the code (the CVE-2020-8794 shape).
    ShortLastLine,
    /// `250 ` and n 'x's then CRLF.
    Overlong(usize),
    /// `250-first line\r\n550 5.0.0 second line\r\n`.
    MixedCodes,
    /// `250Ok\r\n`: no separator after the code.
    NoSeparator,
    /// `250-first line\r\n` and then nothing: an unterminated multi-line
    /// reply.
    Unfinished,
}

impl Malformed {
    /// The bytes sent for this malformation at `stage`.
    pub fn bytes(self, stage: Stage) -> Vec<u8> {
        let code = match stage {
            Stage::Greeting => "220",
            Stage::Data => "354",
            Stage::Quit => "221",
            _ => "250",
        };
        let text = match self {
            Malformed::BareLf => format!("{code} 2.0.0 Ok\n"),
            Malformed::BadCode => "600 2.0.0 Ok\r\n".to_string(),
            Malformed::BadCodeLow => "099 2.0.0 Ok\r\n".to_string(),
            Malformed::ShortLastLine => format!("{code}-first line\r\n{code}\r\n"),
            Malformed::Overlong(n) => format!("{code} {}\r\n", "x".repeat(n)),
            Malformed::MixedCodes => format!("{code}-first line\r\n550 5.0.0 second line\r\n"),
            Malformed::NoSeparator => format!("{code}Ok\r\n"),
            Malformed::Unfinished => format!("{code}-first line\r\n"),
        };
        text.into_bytes()
    }
}

/// A reply line: `text` and CRLF (unless `text` already ends with LF).
pub fn reply(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    if !v.ends_with(b"\n") {
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// How the sink behaves. Build with [`Behaviour::accept`] and the chained
/// methods; fields are public for anything else.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub hostname: String,
    pub pipelining: bool,
    /// `SIZE n`; when set, `MAIL ... SIZE=m` with m > n and data longer
    /// than n are refused with 552.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub enhancedstatuscodes: bool,
    /// More EHLO keyword lines, as written.
    pub extra_ehlo: Vec<String>,
    pub rules: Vec<Rule>,
    /// Before every reply.
    pub delay: Duration,
    /// Per stage, added to `delay`.
    pub stage_delays: Vec<(Stage, Duration)>,
    /// Close the connection once this many bytes of DATA content arrived
    /// (on the connections `drop_in_data_conns`).
    pub drop_in_data_after: Option<usize>,
    pub drop_in_data_conns: Conns,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_message: usize,
    pub max_rcpts: usize,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour::accept()
    }
}

impl Behaviour {
    /// Accepts everything, as in the module documentation.
    pub fn accept() -> Behaviour {
        Behaviour {
            hostname: "sink.test".to_string(),
            pipelining: true,
            size: None,
            eightbitmime: true,
            dsn: false,
            smtputf8: false,
            starttls: false,
            enhancedstatuscodes: true,
            extra_ehlo: Vec::new(),
            rules: Vec::new(),
            delay: Duration::ZERO,
            stage_delays: Vec::new(),
            drop_in_data_after: None,
            drop_in_data_conns: Conns::All,
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_message: 32 << 20,
            max_rcpts: 1000,
        }
    }

    pub fn hostname(mut self, name: &str) -> Behaviour {
        self.hostname = name.to_string();
        self
    }

    pub fn pipelining(mut self, on: bool) -> Behaviour {
        self.pipelining = on;
        self
    }

    pub fn size(mut self, limit: Option<u64>) -> Behaviour {
        self.size = limit;
        self
    }

    pub fn eightbitmime(mut self, on: bool) -> Behaviour {
        self.eightbitmime = on;
        self
    }

    pub fn dsn(mut self, on: bool) -> Behaviour {
        self.dsn = on;
        self
    }

    pub fn smtputf8(mut self, on: bool) -> Behaviour {
        self.smtputf8 = on;
        self
    }

    pub fn starttls(mut self, on: bool) -> Behaviour {
        self.starttls = on;
        self
    }

    pub fn enhancedstatuscodes(mut self, on: bool) -> Behaviour {
        self.enhancedstatuscodes = on;
        self
    }

    pub fn extra_ehlo(mut self, line: &str) -> Behaviour {
        self.extra_ehlo.push(line.to_string());
        self
    }

    /// Adds a rule (after the existing ones: earlier rules win).
    pub fn rule(mut self, rule: Rule) -> Behaviour {
        self.rules.push(rule);
        self
    }

    /// Adds a rule without an argument condition.
    pub fn on(self, stage: Stage, conns: Conns, action: Action) -> Behaviour {
        self.rule(Rule {
            stage,
            conns,
            arg: None,
            action,
        })
    }

    /// The banner on every connection, e.g. `"554 5.3.2 go away"`. After a
    /// 421 banner the sink closes; after another non-2xx banner it answers
    /// `503 5.5.1 No service` to everything but QUIT (RFC 5321 3.1).
    pub fn greet(self, text: &str) -> Behaviour {
        self.greet_on(Conns::All, text)
    }

    pub fn greet_on(self, conns: Conns, text: &str) -> Behaviour {
        self.on(Stage::Greeting, conns, Action::Reply(reply(text)))
    }

    /// `451 4.3.0 Try again later` to MAIL on the first `k` connections.
    pub fn mail_tempfail_first(self, k: usize) -> Behaviour {
        self.on(
            Stage::Mail,
            Conns::First(k),
            Action::Reply(reply("451 4.3.0 Try again later")),
        )
    }

    /// Answers RCPT TO:<`addr`> with `text` on every connection.
    pub fn rcpt_reply(self, addr: &str, text: &str) -> Behaviour {
        self.rule(Rule {
            stage: Stage::Rcpt,
            conns: Conns::All,
            arg: Some(addr.to_string()),
            action: Action::Reply(reply(text)),
        })
    }

    /// `550 5.1.1 No such user` to RCPT TO:<`addr`>.
    pub fn refuse_rcpt(self, addr: &str) -> Behaviour {
        self.rcpt_reply(addr, "550 5.1.1 No such user")
    }

    /// `450 4.2.1 Mailbox busy` to RCPT TO:<`addr`>.
    pub fn tempfail_rcpt(self, addr: &str) -> Behaviour {
        self.rcpt_reply(addr, "450 4.2.1 Mailbox busy")
    }

    /// The reply after the final dot, on every connection.
    pub fn dot_reply(self, text: &str) -> Behaviour {
        self.dot_reply_on(Conns::All, text)
    }

    pub fn dot_reply_on(self, conns: Conns, text: &str) -> Behaviour {
        self.on(Stage::Dot, conns, Action::Reply(reply(text)))
    }

    /// Close the connection once `n` bytes of DATA content have arrived.
    pub fn drop_in_data(self, n: usize) -> Behaviour {
        self.drop_in_data_on(Conns::All, n)
    }

    pub fn drop_in_data_on(mut self, conns: Conns, n: usize) -> Behaviour {
        self.drop_in_data_after = Some(n);
        self.drop_in_data_conns = conns;
        self
    }

    /// Close the connection right after the final dot, without a reply
    /// (the message is recorded with `accepted: false`).
    pub fn drop_after_dot(self) -> Behaviour {
        self.on(Stage::Dot, Conns::All, Action::Close)
    }

    /// Wait this long before every reply.
    pub fn delay(mut self, delay: Duration) -> Behaviour {
        self.delay = delay;
        self
    }

    /// Wait this long (more) before the replies of one stage.
    pub fn stage_delay(mut self, stage: Stage, delay: Duration) -> Behaviour {
        self.stage_delays.push((stage, delay));
        self
    }

    /// Send a malformed reply at `stage` on every connection.
    pub fn malformed(self, stage: Stage, m: Malformed) -> Behaviour {
        self.on(stage, Conns::All, Action::Reply(m.bytes(stage)))
    }

    pub fn idle_timeout(mut self, t: Duration) -> Behaviour {
        self.idle_timeout = t;
        self
    }

    fn ehlo_reply(&self, arg: &str) -> Vec<u8> {
        let mut lines = vec![format!("{} Hello {arg}", self.hostname)];
        if let Some(n) = self.size {
            lines.push(format!("SIZE {n}"));
        }
        let flags = [
            (self.pipelining, "PIPELINING"),
            (self.eightbitmime, "8BITMIME"),
            (self.dsn, "DSN"),
            (self.smtputf8, "SMTPUTF8"),
            (self.starttls, "STARTTLS"),
            (self.enhancedstatuscodes, "ENHANCEDSTATUSCODES"),
        ];
        lines.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
        lines.extend(self.extra_ehlo.iter().cloned());
        let mut out = String::new();
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{line}\r\n"));
        }
        out.into_bytes()
    }

    fn find(&self, stage: Stage, conn: usize, arg: Option<&str>) -> Option<&Action> {
        self.rules
            .iter()
            .find(|r| {
                r.stage == stage
                    && r.conns.matches(conn)
                    && match (&r.arg, arg) {
                        (None, _) => true,
                        (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                        (Some(_), None) => false,
                    }
            })
            .map(|r| &r.action)
    }
}

/// Who sent bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Received by the sink.
    Client,
    /// Sent by the sink.
    Server,
}

/// Everything that went over one connection, in order; consecutive chunks
/// in the same direction are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    pub events: Vec<(Dir, Vec<u8>)>,
}

impl Transcript {
    /// All bytes the sink received.
    pub fn received(&self) -> Vec<u8> {
        self.side(Dir::Client)
    }

    /// All bytes the sink sent.
    pub fn sent(&self) -> Vec<u8> {
        self.side(Dir::Server)
    }

    fn side(&self, dir: Dir) -> Vec<u8> {
        self.events
            .iter()
            .filter(|e| e.0 == dir)
            .flat_map(|e| e.1.iter().copied())
            .collect()
    }

    /// A readable rendering for assertion messages: one `C: ` or `S: ` line
    /// per line sent, bytes escaped (CR as `\r`, LF as `\n`).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (dir, bytes) in &self.events {
            let tag = match dir {
                Dir::Client => "C: ",
                Dir::Server => "S: ",
            };
            for line in bytes.split_inclusive(|&b| b == b'\n') {
                out.push_str(tag);
                out.push_str(&line.escape_ascii().to_string());
                out.push('\n');
            }
        }
        out
    }

    fn push(&mut self, dir: Dir, bytes: &[u8]) {
        match self.events.last_mut() {
            Some((d, v)) if *d == dir => v.extend_from_slice(bytes),
            _ => self.events.push((dir, bytes.to_vec())),
        }
    }
}

/// A transaction that reached the final dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The connection's number.
    pub connection: usize,
    /// Whether the client said EHLO (else HELO).
    pub ehlo: bool,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// The reverse-path, without the angle brackets.
    pub mail_from: String,
    /// MAIL parameters as sent (`SIZE=123`, `BODY=8BITMIME`, ...).
    pub mail_params: Vec<String>,
    /// The accepted recipients, without the angle brackets.
    pub rcpts: Vec<String>,
    /// Each accepted recipient's parameters.
    pub rcpt_params: Vec<Vec<String>>,
    /// The content, dot-unstuffed, up to and including the CRLF before the
    /// final dot.
    pub data: Vec<u8>,
    /// The content as received (still dot-stuffed).
    pub raw: Vec<u8>,
    /// What the sink answered after the dot (empty if nothing).
    pub reply: Vec<u8>,
    /// Whether that answer was a 2xx.
    pub accepted: bool,
}

struct ConnRecord {
    peer: SocketAddr,
    transcript: Transcript,
    closed: bool,
}

#[derive(Default)]
struct State {
    conns: Vec<ConnRecord>,
    messages: Vec<Message>,
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    /// Connections open now, and the most ever open at once.
    open: usize,
    max_open: usize,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn record(&self, conn: usize, dir: Dir, bytes: &[u8]) {
        if let Some(c) = self.lock().conns.get_mut(conn) {
            c.transcript.push(dir, bytes);
        }
        self.cond.notify_all();
    }

    /// Waits (bounded by `timeout`) until `done` holds.
    fn wait<T>(&self, timeout: Duration, mut done: impl FnMut(&State) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(v) = done(&state) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = match self.cond.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// A running sink; stops on drop.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// On 127.0.0.1, ephemeral port.
    pub fn start(behaviour: Behaviour) -> Sink {
        Sink::start_on(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            behaviour,
        )
    }

    /// On `addr` (port 0 for an ephemeral one), e.g. 127.0.0.3:0 to give
    /// each "MX host" its own address. Panics when it cannot bind.
    pub fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Sink {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => panic!("sink: binding {addr}: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("sink: local address: {e}"),
        };
        if let Err(e) = listener.set_nonblocking(true) {
            panic!("sink: non-blocking listener: {e}");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let behaviour = Arc::new(behaviour);
        let acceptor = std::thread::spawn(move || accept_loop(&s, &listener, &behaviour));
        Sink {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The messages accepted (2xx after the final dot), in order.
    pub fn messages(&self) -> Vec<Message> {
        let state = self.shared.lock();
        state
            .messages
            .iter()
            .filter(|m| m.accepted)
            .cloned()
            .collect()
    }

    /// Every transaction that reached the final dot, accepted or not.
    pub fn transactions(&self) -> Vec<Message> {
        self.shared.lock().messages.clone()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// The most connections that were ever open at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.shared.lock().max_open
    }

    /// Connection `i`'s transcript (empty if there is no such connection).
    pub fn transcript(&self, i: usize) -> Transcript {
        let state = self.shared.lock();
        state
            .conns
            .get(i)
            .map(|c| c.transcript.clone())
            .unwrap_or_default()
    }

    /// Bytes received on connection `i`.
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.transcript(i).received()
    }

    /// Bytes sent on connection `i`.
    pub fn sent(&self, i: usize) -> Vec<u8> {
        self.transcript(i).sent()
    }

    /// The client's address on connection `i`.
    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        self.shared.lock().conns.get(i).map(|c| c.peer)
    }

    /// Whether the sink is done with connection `i` (either side closed).
    pub fn closed(&self, i: usize) -> bool {
        self.shared.lock().conns.get(i).is_some_and(|c| c.closed)
    }

    /// Waits until at least `n` messages were accepted or `timeout` passed;
    /// returns the accepted messages either way (check the length).
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let _ = self.shared.wait(timeout, |s| {
            (s.messages.iter().filter(|m| m.accepted).count() >= n).then_some(())
        });
        self.messages()
    }

    /// Waits until at least `n` transactions reached the final dot.
    pub fn wait_for_transactions(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let _ = self
            .shared
            .wait(timeout, |s| (s.messages.len() >= n).then_some(()));
        self.transactions()
    }

    /// Waits until at least `n` connections were accepted; returns the count.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> usize {
        let _ = self
            .shared
            .wait(timeout, |s| (s.conns.len() >= n).then_some(()));
        self.connections()
    }

    /// Waits until connection `i` is over; returns whether it is.
    pub fn wait_closed(&self, i: usize, timeout: Duration) -> bool {
        self.shared
            .wait(timeout, |s| {
                s.conns.get(i).is_some_and(|c| c.closed).then_some(())
            })
            .is_some()
    }

    /// Stops the listener and every connection (also done on drop).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let (streams, threads) = {
            let mut state = self.shared.lock();
            (
                std::mem::take(&mut state.streams),
                std::mem::take(&mut state.threads),
            )
        };
        for s in &streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        self.shared.cond.notify_all();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, behaviour: &Arc<Behaviour>) {
    while !shared.stopped() {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let index = {
            let mut state = shared.lock();
            state.conns.push(ConnRecord {
                peer,
                transcript: Transcript::default(),
                closed: false,
            });
            state.open += 1;
            state.max_open = state.max_open.max(state.open);
            state.conns.len() - 1
        };
        shared.cond.notify_all();
        if index >= behaviour.max_connections {
            let _ = stream.shutdown(Shutdown::Both);
            mark_closed(shared, index);
            continue;
        }
        // Replies go out at once, as a real server's would.
        let _ = stream.set_nodelay(true);
        let clone = stream.try_clone();
        let s = Arc::clone(shared);
        let b = Arc::clone(behaviour);
        let thread = std::thread::spawn(move || {
            let mut session = Session {
                shared: &s,
                b: &b,
                index,
                stream,
                buf: Vec::new(),
                discarding: false,
                last_read: Instant::now(),
            };
            session.run();
            let _ = session.stream.shutdown(Shutdown::Both);
            mark_closed(&s, index);
        });
        let mut state = shared.lock();
        if let Ok(c) = clone {
            state.streams.push(c);
        }
        state.threads.push(thread);
    }
}

fn mark_closed(shared: &Shared, index: usize) {
    let mut state = shared.lock();
    if let Some(c) = state.conns.get_mut(index)
        && !c.closed
    {
        c.closed = true;
        state.open = state.open.saturating_sub(1);
    }
    drop(state);
    shared.cond.notify_all();
}

/// Whether a reply counts as success: it starts with '2' or '3'.
fn positive(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b'2' | b'3'))
}

/// How a stage ended.
enum Flow {
    /// A reply was sent: these bytes.
    Sent(Vec<u8>),
    /// The connection is to be closed (after the reply, if any).
    Close(Vec<u8>),
}

enum Line {
    Line(Vec<u8>),
    TooLong,
}

enum DataEnd {
    Complete(Vec<u8>),
    TooBig,
    Gone,
}

/// The SMTP transaction being built.
#[derive(Default)]
struct Txn {
    mail: Option<(String, Vec<String>)>,
    rcpts: Vec<(String, Vec<String>)>,
}

struct Session<'a> {
    shared: &'a Shared,
    b: &'a Behaviour,
    index: usize,
    stream: TcpStream,
    buf: Vec<u8>,
    discarding: bool,
    last_read: Instant,
}

impl Session<'_> {
    /// Reads more into `buf`; false when the client is gone, silent for
    /// too long, or the sink stops.
    fn fill(&mut self) -> bool {
        if self.stream.set_read_timeout(Some(POLL)).is_err() {
            return false;
        }
        let mut chunk = [0u8; 8192];
        while !self.shared.stopped() && self.last_read.elapsed() < self.b.idle_timeout {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.last_read = Instant::now();
                    self.shared.record(self.index, Dir::Client, &chunk[..n]);
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// The next command line (CRLF or LF ended), or `None` when the client
    /// is gone.
    fn line(&mut self) -> Option<Line> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if self.discarding {
                    self.discarding = false;
                    return Some(Line::TooLong);
                }
                if line.len() > MAX_LINE {
                    return Some(Line::TooLong);
                }
                return Some(Line::Line(line));
            }
            if self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.discarding = true;
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn pause(&self, stage: Stage) {
        let extra: Duration = self
            .b
            .stage_delays
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|(_, d)| *d)
            .sum();
        let deadline = Instant::now() + self.b.delay + extra;
        while !self.shared.stopped() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    fn send(&mut self, stage: Stage, bytes: &[u8]) -> bool {
        self.pause(stage);
        if self.shared.stopped() {
            return false;
        }
        if self
            .stream
            .set_write_timeout(Some(self.b.idle_timeout))
            .is_err()
        {
            return false;
        }
        self.shared.record(self.index, Dir::Server, bytes);
        self.stream.write_all(bytes).is_ok() && self.stream.flush().is_ok()
    }

    /// Replies at `stage`: a rule's action, else `default`.
    fn act(&mut self, stage: Stage, arg: Option<&str>, default: Vec<u8>) -> Flow {
        let action = self
            .b
            .find(stage, self.index, arg)
            .cloned()
            .unwrap_or(Action::Reply(default));
        match action {
            Action::Reply(bytes) => {
                if self.send(stage, &bytes) {
                    Flow::Sent(bytes)
                } else {
                    Flow::Close(bytes)
                }
            }
            Action::ReplyAndClose(bytes) => {
                self.send(stage, &bytes);
                Flow::Close(bytes)
            }
            Action::Close => Flow::Close(Vec::new()),
            Action::Hang => {
                for _ in 0..MAX_COMMANDS {
                    self.buf.clear();
                    if !self.fill() {
                        break;
                    }
                }
                Flow::Close(Vec::new())
            }
        }
    }

    fn simple(&mut self, stage: Stage, arg: &str, text: &str) -> bool {
        matches!(self.act(stage, Some(arg), reply(text)), Flow::Sent(_))
    }

    fn run(&mut self) {
        let banner = reply(&format!("220 {} ESMTP sink", self.b.hostname));
        let rejecting = match self.act(Stage::Greeting, None, banner) {
            Flow::Close(_) => return,
            Flow::Sent(b) if b.starts_with(b"421") => return,
            Flow::Sent(b) => !positive(&b),
        };
        let mut helo: Option<(bool, String)> = None;
        let mut txn = Txn::default();
        for _ in 0..MAX_COMMANDS {
            let line = match self.line() {
                None => return,
                Some(Line::TooLong) => {
                    if !self.send(Stage::Other, b"500 5.5.2 Line too long\r\n") {
                        return;
                    }
                    continue;
                }
                Some(Line::Line(l)) => l,
            };
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\n').trim_end_matches('\r');
            let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
            let verb = verb.to_ascii_uppercase();
            if rejecting {
                let (stage, text) = if verb == "QUIT" {
                    (Stage::Quit, "221 2.0.0 Bye")
                } else {
                    (Stage::Other, "503 5.5.1 No service")
                };
                if !self.simple(stage, arg, text) || stage == Stage::Quit {
                    return;
                }
                continue;
            }
            let go_on = match verb.as_str() {
                "EHLO" | "HELO" => {
                    let ehlo = verb == "EHLO";
                    if arg.is_empty() {
                        self.simple(Stage::Other, arg, "501 5.5.4 Syntax: EHLO hostname")
                    } else {
                        let (stage, default) = if ehlo {
                            (Stage::Ehlo, self.b.ehlo_reply(arg))
                        } else {
                            (Stage::Helo, reply(&format!("250 {}", self.b.hostname)))
                        };
                        match self.act(stage, Some(arg), default) {
                            Flow::Sent(b) => {
                                if positive(&b) {
                                    helo = Some((ehlo, arg.to_string()));
                                    txn = Txn::default();
                                }
                                true
                            }
                            Flow::Close(_) => false,
                        }
                    }
                }
                "MAIL" => self.mail(arg, helo.is_some(), &mut txn),
                "RCPT" => self.rcpt(arg, &mut txn),
                "DATA" => self.data(arg, &helo, &mut txn),
                "RSET" => {
                    txn = Txn::default();
                    self.simple(Stage::Rset, arg, "250 2.0.0 Ok")
                }
                "NOOP" => self.simple(Stage::Noop, arg, "250 2.0.0 Ok"),
                "QUIT" => {
                    self.simple(Stage::Quit, arg, "221 2.0.0 Bye");
                    false
                }
                "STARTTLS" => self.simple(Stage::StartTls, arg, "454 4.7.0 TLS not available"),
                "VRFY" => self.simple(Stage::Other, arg, "252 2.5.0 Cannot VRFY user"),
                "HELP" => self.simple(Stage::Other, arg, "214 2.0.0 sink"),
                _ => self.simple(Stage::Other, arg, "500 5.5.1 Command unrecognized"),
            };
            if !go_on {
                return;
            }
        }
    }

    fn mail(&mut self, arg: &str, greeted: bool, txn: &mut Txn) -> bool {
        if !greeted {
            return self.simple(Stage::Other, arg, "503 5.5.1 EHLO or HELO first");
        }
        if txn.mail.is_some() {
            return self.simple(Stage::Other, arg, "503 5.5.1 Nested MAIL command");
        }
        let Some((addr, params)) = path(arg, "FROM:") else {
            return self.simple(Stage::Other, arg, "501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        if let Some(limit) = self.b.size {
            let declared = params.iter().find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.eq_ignore_ascii_case("SIZE")
                    .then(|| v.parse::<u64>().ok())?
            });
            if declared.is_some_and(|n| n > limit) {
                return self.simple(Stage::Other, arg, "552 5.3.4 Message too big");
            }
        }
        match self.act(Stage::Mail, Some(&addr), reply("250 2.1.0 Ok")) {
            Flow::Sent(b) => {
                if positive(&b) {
                    txn.mail = Some((addr, params));
                }
                true
            }
            Flow::Close(_) => false,
        }
    }

    fn rcpt(&mut self, arg: &str, txn: &mut Txn) -> bool {
        if txn.mail.is_none() {
            return self.simple(Stage::Other, arg, "503 5.5.1 MAIL first");
        }
        let Some((addr, params)) = path(arg, "TO:") else {
            return self.simple(Stage::Other, arg, "501 5.5.4 Syntax: RCPT TO:<address>");
        };
        if txn.rcpts.len() >= self.b.max_rcpts {
            return self.simple(Stage::Other, arg, "452 4.5.3 Too many recipients");
        }
        match self.act(Stage::Rcpt, Some(&addr), reply("250 2.1.5 Ok")) {
            Flow::Sent(b) => {
                if positive(&b) {
                    txn.rcpts.push((addr, params));
                }
                true
            }
            Flow::Close(_) => false,
        }
    }

    fn data(&mut self, arg: &str, helo: &Option<(bool, String)>, txn: &mut Txn) -> bool {
        if !arg.is_empty() {
            return self.simple(Stage::Other, arg, "501 5.5.4 Syntax: DATA");
        }
        if txn.mail.is_none() {
            return self.simple(Stage::Other, arg, "503 5.5.1 MAIL first");
        }
        if txn.rcpts.is_empty() {
            return self.simple(Stage::Other, arg, "554 5.5.1 No valid recipients");
        }
        let go = reply("354 End data with <CR><LF>.<CR><LF>");
        match self.act(Stage::Data, None, go) {
            Flow::Close(_) => return false,
            Flow::Sent(b) if !positive(&b) => return true,
            Flow::Sent(_) => {}
        }
        let raw = match self.read_data() {
            DataEnd::Complete(raw) => raw,
            DataEnd::TooBig => {
                self.send(Stage::Dot, b"552 5.3.4 Message too big\r\n");
                return false;
            }
            DataEnd::Gone => return false,
        };
        let data = unstuff(&raw);
        let too_big = self.b.size.is_some_and(|n| data.len() as u64 > n);
        let default = if too_big {
            reply("552 5.3.4 Message too big")
        } else {
            reply("250 2.0.0 Ok: queued")
        };
        let (reply, go_on) = match self.act(Stage::Dot, None, default) {
            Flow::Sent(b) => (b, true),
            Flow::Close(b) => (b, false),
        };
        let (mail_from, mail_params) = txn.mail.take().unwrap_or_default();
        let rcpts = std::mem::take(&mut txn.rcpts);
        let (ehlo, helo) = helo.clone().unwrap_or_default();
        let message = Message {
            connection: self.index,
            ehlo,
            helo,
            mail_from,
            mail_params,
            rcpts: rcpts.iter().map(|r| r.0.clone()).collect(),
            rcpt_params: rcpts.into_iter().map(|r| r.1).collect(),
            data,
            raw,
            accepted: positive(&reply) && go_on,
            reply,
        };
        self.shared.lock().messages.push(message);
        self.shared.cond.notify_all();
        go_on
    }

    /// Reads DATA content up to `<CRLF>.<CRLF>` (returned without the final
    /// `.<CRLF>`); what follows stays in `buf` for the next commands.
    fn read_data(&mut self) -> DataEnd {
        let mut data: Vec<u8> = Vec::new();
        let mut scanned = 0;
        let drop_at = self
            .b
            .drop_in_data_after
            .filter(|_| self.b.drop_in_data_conns.matches(self.index));
        loop {
            data.append(&mut self.buf);
            if let Some(n) = drop_at
                && data.len() >= n
            {
                return DataEnd::Gone;
            }
            let end = if data.starts_with(b".\r\n") {
                Some(0)
            } else {
                data.get(scanned..)
                    .and_then(|tail| tail.windows(5).position(|w| w == b"\r\n.\r\n"))
                    .map(|p| scanned + p + 2)
            };
            if let Some(end) = end {
                self.buf = data.split_off(end + 3);
                data.truncate(end);
                return DataEnd::Complete(data);
            }
            scanned = data.len().saturating_sub(4);
            if data.len() > self.b.max_message.saturating_add(5) {
                return DataEnd::TooBig;
            }
            if !self.fill() {
                return DataEnd::Gone;
            }
        }
    }
}

/// `FROM:<addr> params` (with `prefix` "FROM:" or "TO:", case-insensitive,
/// no space before '<').
fn path(arg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg.get(prefix.len()..)?.strip_prefix('<')?;
    let close = rest.find('>')?;
    let addr = rest[..close].to_string();
    let params = &rest[close + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    let params = params.split_whitespace().map(str::to_string).collect();
    Some((addr, params))
}

/// Removes the leading dot of every line that has one (RFC 5321 4.5.2);
/// lines are CRLF-ended.
pub fn unstuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut line_start = true;
    let mut prev = 0u8;
    for &b in raw {
        if line_start && b == b'.' {
            line_start = false;
            prev = b;
            continue;
        }
        out.push(b);
        line_start = prev == b'\r' && b == b'\n';
        prev = b;
    }
    out
}
