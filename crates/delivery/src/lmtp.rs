//! LMTP delivery (smtpd.conf `lmtp destination [rcpt-to]`): one message to
//! one or several recipients over LMTP (RFC 2033), at `host:port` or a unix
//! socket, with blocking std I/O driving the sans-IO client session of
//! `rsmtpd_smtp_proto::client`.
//!
//! The message goes as queued (the LMTP server adds Return-Path and
//! Delivered-To itself). The result is one [`Outcome`] per recipient: after
//! DATA the server answers for each one separately, so one full mailbox does
//! not make the others retry.
//!
//! Every read and write has a timeout, and the whole session a deadline: a
//! server that stalls or trickles costs at most `session_timeout`.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rsmtpd_smtp_proto::address::{Charset, Domain, ForwardPath, ReversePath};
use rsmtpd_smtp_proto::client::{
    ClientConfig, ClientSession, Envelope, Event, Mode, RecipientOutcome, SendError, SessionError,
};
use rsmtpd_smtp_proto::command::{Body, MailParams, RcptParams};
use rsmtpd_smtp_proto::server::Recipient;

use crate::Class;

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `host:port`, `[v6addr]:port`.
    Inet { host: String, port: u16 },
    /// An absolute path to a unix socket.
    Unix(PathBuf),
}

impl Destination {
    /// Reads smtpd.conf's destination: a path starting with `/`, or
    /// `host:port`.
    pub fn parse(s: &str) -> Result<Self, LmtpError> {
        let bad = || LmtpError::BadDestination(s.escape_debug().to_string());
        if s.starts_with('/') {
            return Ok(Destination::Unix(PathBuf::from(s)));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(|c: char| c.is_whitespace()) {
            return Err(bad());
        }
        Ok(Destination::Inet {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Destination::Inet { host, port } => write!(f, "{host}:{port}"),
            Destination::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How to deliver.
#[derive(Debug, Clone)]
pub struct Lmtp<'a> {
    pub destination: &'a Destination,
    /// smtpd.conf's `rcpt-to`: RCPT TO is the full address, not the user.
    pub rcpt_to_address: bool,
    /// Our name in LHLO (OpenSMTPD's mail.lmtp says `localhost`).
    pub lhlo: &'a str,
    /// For each connect, read and write.
    pub io_timeout: Duration,
    /// For the whole session.
    pub session_timeout: Duration,
}

/// One recipient of the message.
#[derive(Debug, Clone, Copy)]
pub struct LmtpRecipient<'a> {
    /// The local user the envelope resolved to.
    pub user: &'a str,
    /// The recipient address after expansion (`user@domain`).
    pub address: &'a str,
}

/// One recipient's result. The text is safe to log: it is the server's
/// escaped reply (`452 4.2.2 ...`) or our own description of the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Temporary(String),
    Permanent(String),
}

/// Failures before any recipient could be tried: they apply to all.
#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("invalid LMTP destination {0:?}")]
    BadDestination(String),
    #[error("invalid LHLO name {0:?}")]
    BadLhlo(String),
    #[error("invalid sender address {0:?}")]
    BadSender(String),
    #[error("no recipient")]
    NoRecipients,
    #[error("connecting to {destination}: {source}")]
    Connect {
        destination: String,
        #[source]
        source: io::Error,
    },
}

impl LmtpError {
    /// Configuration mistakes are temporary: fixing the config fixes the
    /// queued mail. Only a sender that can never be written is permanent.
    pub fn class(&self) -> Class {
        match self {
            LmtpError::BadSender(_) => Class::Permanent,
            LmtpError::BadDestination(_)
            | LmtpError::BadLhlo(_)
            | LmtpError::NoRecipients
            | LmtpError::Connect { .. } => Class::Temporary,
        }
    }

    /// RFC 3463 status for the bounce or the log.
    pub fn status(&self) -> &'static str {
        match self {
            LmtpError::BadSender(_) => "5.1.7",
            LmtpError::BadDestination(_) | LmtpError::BadLhlo(_) => "4.3.5",
            LmtpError::NoRecipients => "4.3.0",
            LmtpError::Connect { .. } => "4.4.1",
        }
    }
}

/// Why a started session stopped before every recipient had its answer.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("session: {0}")]
    Session(SessionError),
    #[error("I/O: {0}")]
    Io(#[source] io::Error),
    #[error("the server did not answer in time")]
    Timeout,
    #[error("reading the message: {0}")]
    Message(#[source] io::Error),
    #[error("LMTP session in an unexpected state")]
    Confused,
}

/// Delivers `message` (queued form, CRLF) from `sender` (empty for the null
/// sender) and returns one outcome per recipient, in order. `size`, when
/// known, is declared with SIZE= if the server offers it.
pub fn deliver(
    lmtp: &Lmtp<'_>,
    sender: &str,
    recipients: &[LmtpRecipient<'_>],
    size: Option<u64>,
    message: &mut impl BufRead,
) -> Result<Vec<Outcome>, LmtpError> {
    if recipients.is_empty() {
        return Err(LmtpError::NoRecipients);
    }
    let helo = Domain::parse_helo(lmtp.lhlo)
        .map_err(|_| LmtpError::BadLhlo(lmtp.lhlo.escape_debug().to_string()))?;
    let from = ReversePath::parse(format!("<{sender}>").as_bytes(), Charset::Utf8)
        .map_err(|_| LmtpError::BadSender(sender.escape_debug().to_string()))?;

    // Recipients whose RCPT could not even be written fail alone.
    let mut outcomes: Vec<Option<Outcome>> = vec![None; recipients.len()];
    let mut sent = Vec::new();
    let mut index_of = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        let name = if lmtp.rcpt_to_address {
            r.address
        } else {
            r.user
        };
        match ForwardPath::parse(format!("<{name}>").as_bytes(), Charset::Utf8) {
            Ok(path) => {
                sent.push(Recipient {
                    path,
                    params: RcptParams::default(),
                });
                index_of.push(i);
            }
            Err(e) => {
                outcomes[i] = Some(Outcome::Permanent(format!(
                    "5.1.3 invalid LMTP recipient {:?}: {e}",
                    name.escape_debug().to_string()
                )));
            }
        }
    }
    if sent.is_empty() {
        return Ok(finish(outcomes, "4.3.0 no recipient was tried"));
    }
    let params = MailParams {
        size,
        // Sent only when offered; the queued message may hold 8-bit text.
        body: Some(Body::EightBitMime),
        ..MailParams::default()
    };
    let envelope = match Envelope::new(from, params, sent) {
        Ok(e) => e,
        // Only when over client::MAX_RECIPIENTS: the caller splits first.
        Err(e) => return Ok(finish(outcomes, &format!("4.5.3 {e}"))),
    };

    let deadline = Instant::now() + lmtp.session_timeout;
    let mut conn =
        Conn::connect(lmtp.destination, lmtp.io_timeout).map_err(|source| LmtpError::Connect {
            destination: lmtp.destination.to_string(),
            source,
        })?;
    let mut session = ClientSession::new(ClientConfig {
        mode: Mode::Lmtp,
        helo,
    });
    let mut run = Run {
        conn: &mut conn,
        session: &mut session,
        deadline,
        io_timeout: lmtp.io_timeout,
    };
    let stopped = run.drive(&envelope, message, &mut |index, outcome| {
        if let Some(slot) = index_of.get(index).and_then(|&i| outcomes.get_mut(i)) {
            *slot = Some(outcome);
        }
    });
    let (permanent, why) = match stopped {
        Ok(()) => (
            false,
            "4.3.0 LMTP server gave no answer for this recipient".to_owned(),
        ),
        Err(e) => (
            matches!(&e, Stop::Session(e) if e.is_permanent()),
            e.to_string(),
        ),
    };
    if permanent {
        // A 5xx greeting or LHLO: this server will never take it.
        return Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Permanent(why.clone())))
            .collect());
    }
    Ok(finish(outcomes, &why))
}

/// One SMTP transaction over an open Unix stream: how `sendmail` hands a
/// message to the daemon's local enqueue path, with the same driver as
/// LMTP. One outcome per recipient of `envelope`, in order.
pub fn submit(
    stream: UnixStream,
    helo: &str,
    envelope: &Envelope,
    message: &mut impl BufRead,
    io_timeout: Duration,
    session_timeout: Duration,
) -> Result<Vec<Outcome>, LmtpError> {
    let helo = Domain::parse_helo(helo)
        .map_err(|_| LmtpError::BadLhlo(helo.escape_debug().to_string()))?;
    let mut conn = Conn::Unix(stream);
    let mut session = ClientSession::new(ClientConfig {
        mode: Mode::Smtp,
        helo,
    });
    let mut outcomes: Vec<Option<Outcome>> = vec![None; envelope.recipients().len()];
    let mut run = Run {
        conn: &mut conn,
        session: &mut session,
        deadline: Instant::now() + session_timeout,
        io_timeout,
    };
    let stopped = run.drive(envelope, message, &mut |index, outcome| {
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    });
    let why = match stopped {
        Ok(()) => "4.3.0 the server gave no answer for this recipient".to_owned(),
        Err(e) => e.to_string(),
    };
    Ok(finish(outcomes, &why))
}

/// Every recipient without an answer gets a temporary failure.
fn finish(outcomes: Vec<Option<Outcome>>, why: &str) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Temporary(why.to_owned())))
        .collect()
}

/// The connection, whichever kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn connect(destination: &Destination, timeout: Duration) -> io::Result<Self> {
        match destination {
            Destination::Unix(path) => UnixStream::connect(path).map(Conn::Unix),
            Destination::Inet { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => return Ok(Conn::Tcp(s)),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(buf),
            Conn::Unix(s) => s.write_all(buf),
        }
    }
}

/// One session being driven.
struct Run<'c> {
    conn: &'c mut Conn,
    session: &'c mut ClientSession,
    deadline: Instant,
    io_timeout: Duration,
}

impl Run<'_> {
    /// Runs the session to its end. Outcomes go to `report` as they come.
    fn drive(
        &mut self,
        envelope: &Envelope,
        message: &mut impl BufRead,
        report: &mut impl FnMut(usize, Outcome),
    ) -> Result<(), Stop> {
        let mut buf = [0u8; 4096];
        // Each pass reads at least one byte or ends; replies are bounded, so
        // this bound is never reached by a server that behaves.
        for _ in 0..1_000_000 {
            self.flush()?;
            while let Some(event) = self.session.poll() {
                match event {
                    Event::Ready => {
                        if let Err(e) = self.session.send_mail(envelope) {
                            let text = refusal_text(e);
                            for i in 0..envelope.recipients().len() {
                                report(i, text.clone());
                            }
                            // Nothing was sent: just say goodbye.
                            let _ = self.session.quit();
                        }
                    }
                    Event::Recipient { index, outcome } => report(index, convert(outcome)),
                    Event::SendBody => self.send_body(message)?,
                    Event::TransactionDone(_) => {
                        // Every recipient has its answer; QUIT is courtesy.
                        let _ = self.session.quit();
                    }
                    Event::Closed => return Ok(()),
                    Event::Failed(e) => return Err(Stop::Session(e)),
                    // STARTTLS is never asked for here.
                    Event::TlsReady => return Err(Stop::Confused),
                }
            }
            self.flush()?;
            if self.session.is_done() {
                return Ok(());
            }
            if !self.session.wants_input() {
                return Err(Stop::Confused);
            }
            self.arm()?;
            match self.conn.read(&mut buf) {
                Ok(0) => self.session.closed(),
                Ok(n) => {
                    self.session.feed(buf.get(..n).unwrap_or_default());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_stop(e)),
            }
        }
        Err(Stop::Timeout)
    }

    fn send_body(&mut self, message: &mut impl BufRead) -> Result<(), Stop> {
        loop {
            let chunk = message.fill_buf().map_err(Stop::Message)?;
            if chunk.is_empty() {
                break;
            }
            let len = chunk.len();
            let mut rest = chunk;
            while !rest.is_empty() {
                let n = self.session.write_body(rest).map_err(|_| Stop::Confused)?;
                rest = rest.get(n..).unwrap_or_default();
                self.flush()?;
            }
            message.consume(len);
        }
        self.session.end_body().map_err(|_| Stop::Confused)?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), Stop> {
        let out = self.session.take_output();
        if out.is_empty() {
            return Ok(());
        }
        self.arm()?;
        self.conn.write_all(&out).map_err(io_stop)
    }

    /// The next I/O may take the I/O timeout, but never past the deadline.
    fn arm(&mut self) -> Result<(), Stop> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Stop::Timeout)?;
        self.conn
            .set_timeout(left.min(self.io_timeout))
            .map_err(Stop::Io)
    }
}

fn io_stop(e: io::Error) -> Stop {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Stop::Timeout,
        _ => Stop::Io(e),
    }
}

fn convert(outcome: RecipientOutcome) -> Outcome {
    match outcome {
        RecipientOutcome::Accepted(_) => Outcome::Delivered,
        RecipientOutcome::Temporary(r) => Outcome::Temporary(r.to_string()),
        RecipientOutcome::Permanent(r) => Outcome::Permanent(r.to_string()),
    }
}

fn refusal_text(e: SendError) -> Outcome {
    match e.status() {
        Some(status) => Outcome::Permanent(format!("{status} {e}")),
        None => Outcome::Temporary(format!("4.3.0 {e}")),
    }
}
