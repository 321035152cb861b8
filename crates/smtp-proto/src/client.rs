//! The client session state machine, for SMTP (the relay) and LMTP (local
//! delivery to an LMTP server, RFC 2033).
//!
//! Bytes from the server go in with [`ClientSession::feed`]; the caller then
//! calls [`ClientSession::poll`] until it returns `None`, acts on the events,
//! and sends what [`ClientSession::take_output`] gives. No sockets, no
//! clocks: timeouts are the caller's, who simply abandons the session.
//!
//! One session: greeting, EHLO (LHLO in LMTP; HELO when an SMTP server
//! refuses EHLO with 5xx), then any number of transactions, then QUIT. A
//! transaction: MAIL, one RCPT per recipient (pipelined with MAIL when the
//! server offers PIPELINING), DATA only when a recipient was accepted, the
//! body the caller writes (dot-stuffed and CRLF-normalised here), the final
//! dot, and its reply: one for SMTP, one per accepted recipient for LMTP.
//!
//! Every recipient gets exactly one [`Event::Recipient`] with its final
//! outcome, then the transaction ends with [`Event::TransactionDone`]. When
//! the session fails ([`Event::Failed`]), every recipient not yet reported
//! was not delivered: the error says whether to retry.
//!
//! Replies are untrusted input: anything malformed or out of order fails the
//! session (temporarily), memory is bounded by the in-flight commands, and
//! reply text reaches the caller only as [`Reply`], whose text is escaped.

use std::collections::VecDeque;
use std::fmt;

use crate::address::{Domain, ReversePath};
use crate::command::{Body, MailParams, Notify, RcptParams, Ret};
use crate::reply::{Reply, ReplyError, ReplyParser};
use crate::server::Recipient;

/// Most recipients in one transaction (RFC 5321 4.5.3.1.8 asks servers for
/// at least 100; OpenSMTPD's relay sends at most 100 per transaction too,
/// but a local LMTP delivery may carry more).
pub const MAX_RECIPIENTS: usize = 1000;
/// Commands written without waiting for their replies when the server
/// offers PIPELINING. A window (rather than all RCPTs at once) keeps both
/// sides from blocking on full socket buffers (RFC 2920 3.1).
pub const PIPELINE_WINDOW: usize = 100;
/// [`ClientSession::write_body`] takes no more while this much output waits.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// AUTH mechanisms kept from an EHLO reply; more is a hostile server.
const MAX_AUTH_MECHANISMS: usize = 16;
/// RFC 4422 3.1: a SASL mechanism name is 1-20 characters.
const MAX_MECHANISM_OCTETS: usize = 20;

/// Which protocol the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Smtp,
    /// RFC 2033: LHLO, no HELO fallback, one reply per recipient after DATA.
    Lmtp,
}

/// What the caller tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub mode: Mode,
    /// Our name in EHLO/HELO/LHLO (validated: it cannot inject a line).
    pub helo: Domain,
}

/// The server's SIZE extension (RFC 1870).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeLimit {
    #[default]
    NotOffered,
    /// `SIZE` without a value, with 0, or with a value we cannot read.
    Unlimited,
    Max(u64),
}

/// What the server offered in its EHLO/LHLO reply. All off after HELO.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// EHLO or LHLO succeeded (false after the HELO fallback).
    pub esmtp: bool,
    pub pipelining: bool,
    pub size: SizeLimit,
    pub eight_bit_mime: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// Upper-cased SASL mechanism names, at most 16.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the keyword lines (all but the first) of an EHLO reply. Unknown
    /// keywords and malformed values are ignored: they offer nothing we use.
    pub fn parse(reply: &Reply) -> Self {
        let mut caps = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = size_limit(words.next()),
                "8BITMIME" => caps.eight_bit_mime = true,
                "DSN" => caps.dsn = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => {
                    for mechanism in words {
                        let m = mechanism.to_ascii_uppercase();
                        if caps.auth.len() < MAX_AUTH_MECHANISMS
                            && is_mechanism(&m)
                            && !caps.auth.contains(&m)
                        {
                            caps.auth.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }
}

fn size_limit(value: Option<&str>) -> SizeLimit {
    match value {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => match v.parse() {
            Ok(0) | Err(_) => SizeLimit::Unlimited,
            Ok(n) => SizeLimit::Max(n),
        },
        _ => SizeLimit::Unlimited,
    }
}

fn is_mechanism(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_MECHANISM_OCTETS
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// One message's envelope: never without a recipient, never over
/// [`MAX_RECIPIENTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    sender: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("an envelope needs at least one recipient")]
    NoRecipients,
    #[error("more than {MAX_RECIPIENTS} recipients in one envelope")]
    TooManyRecipients,
}

impl Envelope {
    /// `params` says what the message needs: `size` (sent as SIZE= when
    /// offered), `body` (BODY=8BITMIME when offered; an 8-bit message goes
    /// as is otherwise, as most MTAs do), `smtputf8` (refused by
    /// [`ClientSession::send_mail`] when not offered), `ret`/`envid` and
    /// each recipient's NOTIFY/ORCPT (sent only when DSN is offered).
    /// `auth` is not sent: AUTH is not implemented yet.
    pub fn new(
        sender: ReversePath,
        params: MailParams,
        recipients: Vec<Recipient>,
    ) -> Result<Self, EnvelopeError> {
        if recipients.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        if recipients.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients);
        }
        Ok(Self {
            sender,
            params,
            recipients,
        })
    }

    pub fn sender(&self) -> &ReversePath {
        &self.sender
    }

    pub fn params(&self) -> &MailParams {
        &self.params
    }

    /// In the order given; [`Event::Recipient`] indexes into this.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// True when an address or the message needs SMTPUTF8.
    fn needs_smtputf8(&self) -> bool {
        self.params.smtputf8
            || !self.sender.is_ascii()
            || self.recipients.iter().any(|r| !r.path.is_ascii())
    }
}

/// The final fate of one recipient, with the server's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// SMTP: the server took responsibility for the message. LMTP: delivered.
    Accepted(Reply),
    /// 4xx: retry later.
    Temporary(Reply),
    /// 5xx: bounce.
    Permanent(Reply),
}

impl RecipientOutcome {
    /// Only for 2xx, 4xx and 5xx replies (3xx is sorted out before).
    fn from_reply(reply: Reply) -> Self {
        if reply.is_positive() {
            RecipientOutcome::Accepted(reply)
        } else if reply.is_transient() {
            RecipientOutcome::Temporary(reply)
        } else {
            RecipientOutcome::Permanent(reply)
        }
    }

    pub fn reply(&self) -> &Reply {
        match self {
            RecipientOutcome::Accepted(r)
            | RecipientOutcome::Temporary(r)
            | RecipientOutcome::Permanent(r) => r,
        }
    }
}

/// How a transaction ended. The recipients' own events came before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionOutcome {
    /// MAIL was refused; every recipient got this reply.
    MailRefused(Reply),
    /// Every RCPT was refused, so DATA was not sent.
    NoRecipientAccepted,
    /// DATA was refused; every accepted recipient got this reply.
    DataRefused(Reply),
    /// The message was sent and answered; counts over all recipients.
    Sent { accepted: usize, refused: usize },
}

/// What the client was waiting for when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    Greeting,
    Ehlo,
    Helo,
    Lhlo,
    StartTls,
    /// A step of AUTH (RFC 4954).
    Auth,
    Mail,
    /// The RCPT of this recipient (index into the envelope).
    Rcpt(usize),
    Data,
    /// SMTP: the one reply after the final dot.
    Dot,
    /// LMTP: this recipient's reply after the final dot.
    LmtpDot(usize),
    Rset,
    Quit,
    /// No command was in flight.
    Nothing,
}

impl fmt::Display for Awaiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Awaiting::Greeting => f.write_str("greeting"),
            Awaiting::Ehlo => f.write_str("EHLO"),
            Awaiting::Helo => f.write_str("HELO"),
            Awaiting::Lhlo => f.write_str("LHLO"),
            Awaiting::StartTls => f.write_str("STARTTLS"),
            Awaiting::Auth => f.write_str("AUTH"),
            Awaiting::Mail => f.write_str("MAIL"),
            Awaiting::Rcpt(i) => write!(f, "RCPT #{i}"),
            Awaiting::Data => f.write_str("DATA"),
            Awaiting::Dot => f.write_str("end of data"),
            Awaiting::LmtpDot(i) => write!(f, "end of data for recipient #{i}"),
            Awaiting::Rset => f.write_str("RSET"),
            Awaiting::Quit => f.write_str("QUIT"),
            Awaiting::Nothing => f.write_str("nothing"),
        }
    }
}

/// Why the whole session failed. Recipients not yet reported were not
/// delivered; [`SessionError::is_permanent`] says whether to bounce them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed reply: {0}")]
    Malformed(#[from] ReplyError),
    #[error("unexpected reply to {to}: {reply}")]
    Unexpected { to: Awaiting, reply: Reply },
    #[error("{to} refused: {reply}")]
    Refused { to: Awaiting, reply: Reply },
    /// 421: the server is closing the connection (RFC 5321 3.8).
    #[error("service closing: {0}")]
    Closing(Reply),
    #[error("connection closed by the server while waiting for {0}")]
    ConnectionClosed(Awaiting),
    /// Plaintext after the 220 to STARTTLS could be an injection.
    #[error("server sent data after its reply to STARTTLS")]
    DataAfterStartTls,
}

impl SessionError {
    /// A 5xx to the greeting or to EHLO/HELO/LHLO means this server will not
    /// take mail from us; everything else is worth another try.
    pub fn is_permanent(&self) -> bool {
        match self {
            SessionError::Refused { to, reply } => {
                reply.is_permanent()
                    && matches!(
                        to,
                        Awaiting::Greeting | Awaiting::Ehlo | Awaiting::Helo | Awaiting::Lhlo
                    )
            }
            _ => false,
        }
    }
}

/// The caller asked for something the session cannot do now, or the
/// message cannot go to this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the session is not in a state to do this")]
    NotReady,
    /// Bounce with 5.6.7 (RFC 6531 3.2).
    #[error("the message needs SMTPUTF8 and the server does not offer it")]
    Smtputf8NotOffered,
    /// Bounce with 5.3.4 (RFC 1870 6.2).
    #[error("message of {size} octets exceeds the server's limit of {max}")]
    TooBig { size: u64, max: u64 },
    #[error("the server does not offer STARTTLS")]
    StartTlsNotOffered,
    #[error("the server offers neither AUTH PLAIN nor AUTH LOGIN")]
    AuthNotOffered,
}

impl SendError {
    /// RFC 3463 status for a bounce, when the refusal is about the message.
    pub fn status(&self) -> Option<&'static str> {
        match self {
            SendError::Smtputf8NotOffered => Some("5.6.7"),
            SendError::TooBig { .. } => Some("5.3.4"),
            SendError::NotReady | SendError::StartTlsNotOffered | SendError::AuthNotOffered => None,
        }
    }
}

/// Something the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Greeted and introduced; [`ClientSession::capabilities`] is known.
    /// Call [`ClientSession::send_mail`], [`ClientSession::start_tls`] or
    /// [`ClientSession::quit`]. After a transaction ends the same calls are
    /// open again, without a new `Ready`.
    Ready,
    /// The server said 220 to STARTTLS: send the output, do the TLS
    /// handshake, then call [`ClientSession::tls_established`].
    TlsReady,
    /// One recipient's final outcome; `index` is into the envelope.
    Recipient {
        index: usize,
        outcome: RecipientOutcome,
    },
    /// 354: write the message with [`ClientSession::write_body`], then
    /// [`ClientSession::end_body`].
    SendBody,
    TransactionDone(TransactionOutcome),
    /// QUIT was answered (or the server closed after it): close.
    Closed,
    /// The session is over; close the connection.
    Failed(SessionError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the greeting or the EHLO/HELO/LHLO reply.
    Opening,
    /// STARTTLS sent, waiting for 220.
    StartTls,
    /// The caller is doing TLS; nothing may be read until it is done.
    Handshake,
    /// AUTH sent, waiting for 334 or 235.
    Auth,
    Idle,
    /// MAIL and RCPTs in flight.
    Envelope,
    /// DATA sent, waiting for 354.
    Data,
    /// The caller writes the body.
    Body,
    /// The final dot sent, waiting for its reply or replies.
    Dot,
    Quitting,
    Done,
}

/// Recipients of the current transaction not yet reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RcptState {
    Waiting,
    /// 2xx to RCPT; the final outcome comes after the dot.
    Accepted,
    Reported,
}

#[derive(Debug)]
struct Transaction {
    state: Vec<RcptState>,
    /// Recipients accepted at RCPT, in reply order (the LMTP reply order).
    accepted: Vec<usize>,
    /// MAIL's refusal, kept until the replies to RCPTs already in flight
    /// are read (so that none is taken for the next transaction's).
    mail_refused: Option<Reply>,
    delivered: usize,
    refused: usize,
}

/// CRLF normalisation and dot-stuffing of the body, across chunk borders.
#[derive(Debug, Clone, Copy)]
struct BodyEncoder {
    at_line_start: bool,
    pending_cr: bool,
}

impl BodyEncoder {
    fn new() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
        }
    }

    fn push(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            // CRLF, or a bare CR that becomes one.
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
            if b == b'\n' {
                return;
            }
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
            }
            _ => {
                if self.at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                self.at_line_start = false;
            }
        }
    }

    /// Ends the last line if needed, then the terminating dot.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::new();
    }
}

/// One client session; see the module doc.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    parser: ReplyParser,
    caps: Capabilities,
    phase: Phase,
    output: Vec<u8>,
    /// Commands written whose replies have not come, oldest first.
    in_flight: VecDeque<Awaiting>,
    /// Commands waiting for room in the pipelining window.
    queued: VecDeque<(Awaiting, Vec<u8>)>,
    events: VecDeque<Event>,
    tx: Option<Transaction>,
    body: BodyEncoder,
    /// The server may hold transaction state: RSET before the next MAIL.
    dirty: bool,
    /// The name in the server's 220 greeting, lower case.
    greeted_as: Option<String>,
    /// What AUTH still has to send, in base64, answering each 334.
    auth_steps: VecDeque<String>,
    authenticated: bool,
}

impl ClientSession {
    /// A new session, waiting for the server's greeting.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            parser: ReplyParser::new(),
            caps: Capabilities::default(),
            phase: Phase::Opening,
            output: Vec::new(),
            in_flight: VecDeque::from([Awaiting::Greeting]),
            queued: VecDeque::new(),
            events: VecDeque::new(),
            tx: None,
            body: BodyEncoder::new(),
            dirty: false,
            greeted_as: None,
            auth_steps: VecDeque::new(),
            authenticated: false,
        }
    }

    /// The host name the server gave in its greeting (its first word),
    /// lower case: how a route that loops back to us is recognised.
    pub fn greeted_as(&self) -> Option<&str> {
        self.greeted_as.as_deref()
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// True between transactions: a new one may start (or QUIT).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// True once the session ended (closed or failed).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// True while the caller should read from the server.
    pub fn wants_input(&self) -> bool {
        !self.in_flight.is_empty() && !matches!(self.phase, Phase::Done | Phase::Handshake)
    }

    /// Bytes to send to the server.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn poll(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes from the server. Returns how many were used: all of them,
    /// except that nothing after the 220 to STARTTLS is read (the rest is
    /// an error, see [`SessionError::DataAfterStartTls`]).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.phase {
                Phase::Done => return bytes.len(),
                Phase::Handshake => {
                    self.fail(SessionError::DataAfterStartTls);
                    return bytes.len() - rest.len();
                }
                _ => {}
            }
            match self.parser.parse(rest) {
                Err(e) => {
                    self.fail(SessionError::Malformed(e));
                    return bytes.len();
                }
                Ok(parsed) => {
                    rest = rest.get(parsed.consumed..).unwrap_or_default();
                    if let Some(reply) = parsed.reply {
                        self.on_reply(reply);
                    }
                }
            }
        }
        bytes.len()
    }

    /// The server closed the connection (end of file).
    pub fn closed(&mut self) {
        match self.phase {
            Phase::Done => {}
            Phase::Quitting => {
                self.phase = Phase::Done;
                self.in_flight.clear();
                self.events.push_back(Event::Closed);
            }
            _ => {
                let to = self.in_flight.front().copied().unwrap_or(Awaiting::Nothing);
                self.fail(SessionError::ConnectionClosed(to));
            }
        }
    }

    /// Starts a transaction. Allowed after [`Event::Ready`] and after each
    /// [`Event::TransactionDone`].
    pub fn send_mail(&mut self, envelope: &Envelope) -> Result<(), SendError> {
        if self.phase != Phase::Idle {
            return Err(SendError::NotReady);
        }
        if envelope.needs_smtputf8() && !self.caps.smtputf8 {
            return Err(SendError::Smtputf8NotOffered);
        }
        if let (Some(size), SizeLimit::Max(max)) = (envelope.params.size, self.caps.size)
            && size > max
        {
            return Err(SendError::TooBig { size, max });
        }
        if self.dirty {
            self.queued
                .push_back((Awaiting::Rset, b"RSET\r\n".to_vec()));
            self.dirty = false;
        }
        let mail = self.mail_line(envelope);
        self.queued.push_back((Awaiting::Mail, mail));
        for (i, r) in envelope.recipients.iter().enumerate() {
            let line = self.rcpt_line(r);
            self.queued.push_back((Awaiting::Rcpt(i), line));
        }
        self.tx = Some(Transaction {
            state: vec![RcptState::Waiting; envelope.recipients.len()],
            accepted: Vec::new(),
            mail_refused: None,
            delivered: 0,
            refused: 0,
        });
        self.phase = Phase::Envelope;
        self.pump();
        Ok(())
    }

    /// Message content after [`Event::SendBody`], in any chunks. Returns how
    /// many bytes were taken: fewer when the output is full (send it and
    /// call again with the rest).
    pub fn write_body(&mut self, chunk: &[u8]) -> Result<usize, SendError> {
        if self.phase != Phase::Body {
            return Err(SendError::NotReady);
        }
        // Each input byte becomes at most three output bytes (".", CR LF).
        let room = OUTPUT_HIGH_WATER.saturating_sub(self.output.len()) / 3;
        let n = chunk.len().min(room);
        for &b in chunk.get(..n).unwrap_or_default() {
            self.body.push(b, &mut self.output);
        }
        Ok(n)
    }

    /// The end of the message: writes the final dot.
    pub fn end_body(&mut self) -> Result<(), SendError> {
        if self.phase != Phase::Body {
            return Err(SendError::NotReady);
        }
        self.body.finish(&mut self.output);
        let accepted = self
            .tx
            .as_ref()
            .map(|t| t.accepted.clone())
            .unwrap_or_default();
        match self.config.mode {
            Mode::Smtp => self.in_flight.push_back(Awaiting::Dot),
            Mode::Lmtp => self
                .in_flight
                .extend(accepted.into_iter().map(Awaiting::LmtpDot)),
        }
        self.phase = Phase::Dot;
        Ok(())
    }

    /// Ends the session politely. Allowed when a transaction could start.
    pub fn quit(&mut self) -> Result<(), SendError> {
        if self.phase != Phase::Idle {
            return Err(SendError::NotReady);
        }
        self.write(Awaiting::Quit, b"QUIT\r\n");
        self.phase = Phase::Quitting;
        Ok(())
    }

    /// Asks for TLS (RFC 3207). On [`Event::TlsReady`] the caller does the
    /// handshake and calls [`ClientSession::tls_established`].
    pub fn start_tls(&mut self) -> Result<(), SendError> {
        if self.phase != Phase::Idle {
            return Err(SendError::NotReady);
        }
        if !self.caps.starttls {
            return Err(SendError::StartTlsNotOffered);
        }
        self.write(Awaiting::StartTls, b"STARTTLS\r\n");
        self.phase = Phase::StartTls;
        Ok(())
    }

    /// Authenticates with PLAIN (preferred) or LOGIN, whichever the server
    /// offers. On success [`Event::Ready`] comes again; a refusal fails the
    /// session. The caller sends credentials only over TLS.
    pub fn authenticate(&mut self, user: &str, password: &[u8]) -> Result<(), SendError> {
        if self.phase != Phase::Idle || self.authenticated {
            return Err(SendError::NotReady);
        }
        let offered = |m: &str| self.caps.auth.iter().any(|a| a == m);
        if offered("PLAIN") {
            let line = format!(
                "AUTH PLAIN {}\r\n",
                crate::sasl::encode_plain(user, password)
            );
            self.write(Awaiting::Auth, line.as_bytes());
        } else if offered("LOGIN") {
            self.auth_steps = VecDeque::from([
                crate::sasl::encode_b64(user.as_bytes()),
                crate::sasl::encode_b64(password),
            ]);
            self.write(Awaiting::Auth, b"AUTH LOGIN\r\n");
        } else {
            return Err(SendError::AuthNotOffered);
        }
        self.phase = Phase::Auth;
        Ok(())
    }

    /// True once the server accepted our credentials.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// TLS is up: forget what the server said in plaintext and introduce
    /// ourselves again (RFC 3207 4.2).
    pub fn tls_established(&mut self) -> Result<(), SendError> {
        if self.phase != Phase::Handshake {
            return Err(SendError::NotReady);
        }
        self.parser = ReplyParser::new();
        self.caps = Capabilities::default();
        self.phase = Phase::Opening;
        self.hello();
        Ok(())
    }

    fn mail_line(&self, envelope: &Envelope) -> Vec<u8> {
        let p = &envelope.params;
        let mut line = format!("MAIL FROM:{}", envelope.sender);
        if let (Some(size), SizeLimit::Unlimited | SizeLimit::Max(_)) = (p.size, self.caps.size) {
            line.push_str(&format!(" SIZE={size}"));
        }
        if p.body == Some(Body::EightBitMime) && self.caps.eight_bit_mime {
            line.push_str(" BODY=8BITMIME");
        }
        if envelope.needs_smtputf8() {
            // send_mail checked that it is offered.
            line.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            match p.ret {
                Some(Ret::Full) => line.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &p.envid {
                line.push_str(&format!(" ENVID={envid}"));
            }
        }
        line.push_str("\r\n");
        line.into_bytes()
    }

    fn rcpt_line(&self, r: &Recipient) -> Vec<u8> {
        let mut line = format!("RCPT TO:{}", r.path);
        if self.caps.dsn {
            let RcptParams { notify, orcpt } = &r.params;
            match notify {
                Some(Notify::Never) => line.push_str(" NOTIFY=NEVER"),
                Some(Notify::On(on)) => {
                    let names: Vec<&str> = [
                        (on.success(), "SUCCESS"),
                        (on.failure(), "FAILURE"),
                        (on.delay(), "DELAY"),
                    ]
                    .into_iter()
                    .filter_map(|(set, name)| set.then_some(name))
                    .collect();
                    line.push_str(&format!(" NOTIFY={}", names.join(",")));
                }
                None => {}
            }
            if let Some(o) = orcpt {
                line.push_str(&format!(" ORCPT={};{}", o.addr_type, o.address));
            }
        }
        line.push_str("\r\n");
        line.into_bytes()
    }

    fn hello(&mut self) {
        let (to, verb) = match self.config.mode {
            Mode::Smtp => (Awaiting::Ehlo, "EHLO"),
            Mode::Lmtp => (Awaiting::Lhlo, "LHLO"),
        };
        let line = format!("{verb} {}\r\n", self.config.helo);
        self.write(to, line.as_bytes());
    }

    fn write(&mut self, to: Awaiting, line: &[u8]) {
        self.output.extend_from_slice(line);
        self.in_flight.push_back(to);
    }

    /// Writes queued commands while the pipelining window has room.
    fn pump(&mut self) {
        let window = if self.caps.pipelining {
            PIPELINE_WINDOW
        } else {
            1
        };
        while self.in_flight.len() < window {
            let Some((to, line)) = self.queued.pop_front() else {
                break;
            };
            self.write(to, &line);
        }
    }

    fn fail(&mut self, error: SessionError) {
        self.phase = Phase::Done;
        self.in_flight.clear();
        self.queued.clear();
        self.tx = None;
        self.events.push_back(Event::Failed(error));
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(to) = self.in_flight.pop_front() else {
            let error = if reply.code() == 421 {
                SessionError::Closing(reply)
            } else {
                SessionError::Unexpected {
                    to: Awaiting::Nothing,
                    reply,
                }
            };
            return self.fail(error);
        };
        if to == Awaiting::Quit {
            self.phase = Phase::Done;
            self.in_flight.clear();
            return self.events.push_back(Event::Closed);
        }
        if reply.code() == 421 {
            // The server is going away: whatever it said before stands, the
            // rest of the transaction cannot happen.
            return self.closing(reply);
        }
        // Only DATA may be answered with 3xx, and only with 354; DATA
        // answered with 2xx would leave us not knowing what the server
        // thinks the following bytes are.
        let misfit = match to {
            Awaiting::Data => {
                reply.is_positive() || (reply.is_intermediate() && reply.code() != 354)
            }
            // 334 is how AUTH goes on; `on_auth` checks the rest.
            Awaiting::Auth => false,
            _ => reply.is_intermediate(),
        };
        if misfit {
            return self.fail(SessionError::Unexpected { to, reply });
        }
        match to {
            Awaiting::Greeting => self.on_greeting(reply),
            Awaiting::Ehlo | Awaiting::Lhlo => self.on_ehlo(to, reply),
            Awaiting::Helo => self.on_helo(reply),
            Awaiting::StartTls => self.on_starttls(reply),
            Awaiting::Auth => self.on_auth(reply),
            Awaiting::Rset => {
                if reply.is_positive() {
                    self.pump();
                } else {
                    self.fail(SessionError::Refused { to, reply });
                }
            }
            Awaiting::Mail => self.on_mail(reply),
            Awaiting::Rcpt(i) => self.on_rcpt(i, reply),
            Awaiting::Data => self.on_data(reply),
            Awaiting::Dot => self.on_dot(reply),
            Awaiting::LmtpDot(i) => self.on_lmtp_dot(i, reply),
            // Handled above; `Nothing` is never put in flight.
            Awaiting::Quit | Awaiting::Nothing => {}
        }
    }

    fn closing(&mut self, reply: Reply) {
        if let Some(tx) = self.tx.as_mut() {
            for (index, state) in tx.state.iter_mut().enumerate() {
                if *state != RcptState::Reported {
                    *state = RcptState::Reported;
                    self.events.push_back(Event::Recipient {
                        index,
                        outcome: RecipientOutcome::Temporary(reply.clone()),
                    });
                }
            }
        }
        self.fail(SessionError::Closing(reply));
    }

    fn on_greeting(&mut self, reply: Reply) {
        match reply.code() {
            220 => {
                self.greeted_as = reply
                    .lines()
                    .first()
                    .and_then(|l| l.split_ascii_whitespace().next())
                    .map(str::to_ascii_lowercase);
                self.hello();
            }
            _ if reply.is_positive() => self.fail(SessionError::Unexpected {
                to: Awaiting::Greeting,
                reply,
            }),
            _ => self.fail(SessionError::Refused {
                to: Awaiting::Greeting,
                reply,
            }),
        }
    }

    fn on_ehlo(&mut self, to: Awaiting, reply: Reply) {
        if reply.is_positive() {
            self.caps = Capabilities::parse(&reply);
            self.ready();
        } else if reply.is_permanent() && to == Awaiting::Ehlo {
            // RFC 5321 3.2: an old server; HELO it is, without extensions.
            let line = format!("HELO {}\r\n", self.config.helo);
            self.write(Awaiting::Helo, line.as_bytes());
        } else {
            self.fail(SessionError::Refused { to, reply });
        }
    }

    fn on_helo(&mut self, reply: Reply) {
        if reply.is_positive() {
            self.caps = Capabilities::default();
            self.ready();
        } else {
            self.fail(SessionError::Refused {
                to: Awaiting::Helo,
                reply,
            });
        }
    }

    fn ready(&mut self) {
        self.phase = Phase::Idle;
        self.events.push_back(Event::Ready);
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.code() == 220 {
            self.phase = Phase::Handshake;
            self.events.push_back(Event::TlsReady);
        } else {
            self.fail(SessionError::Refused {
                to: Awaiting::StartTls,
                reply,
            });
        }
    }

    fn on_auth(&mut self, reply: Reply) {
        match reply.code() {
            235 => {
                self.authenticated = true;
                self.auth_steps.clear();
                self.ready();
            }
            334 => match self.auth_steps.pop_front() {
                Some(step) => {
                    let line = format!("{step}\r\n");
                    self.write(Awaiting::Auth, line.as_bytes());
                }
                // A challenge more than the mechanism has steps: cancel.
                None => self.fail(SessionError::Unexpected {
                    to: Awaiting::Auth,
                    reply,
                }),
            },
            _ => {
                self.auth_steps.clear();
                self.fail(SessionError::Refused {
                    to: Awaiting::Auth,
                    reply,
                })
            }
        }
    }

    fn on_mail(&mut self, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else {
            return self.fail(SessionError::Unexpected {
                to: Awaiting::Mail,
                reply,
            });
        };
        if !reply.is_positive() {
            for (index, state) in tx.state.iter_mut().enumerate() {
                *state = RcptState::Reported;
                tx.refused += 1;
                self.events.push_back(Event::Recipient {
                    index,
                    outcome: RecipientOutcome::from_reply(reply.clone()),
                });
            }
            tx.mail_refused = Some(reply);
            // RCPTs not yet written never will be; those in flight still get
            // their (meaningless) replies before the transaction ends.
            self.queued
                .retain(|(to, _)| !matches!(to, Awaiting::Rcpt(_)));
        }
        self.pump();
        self.envelope_progress();
    }

    fn on_rcpt(&mut self, index: usize, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else {
            return self.fail(SessionError::Unexpected {
                to: Awaiting::Rcpt(index),
                reply,
            });
        };
        if tx.mail_refused.is_none()
            && let Some(state) = tx.state.get_mut(index)
        {
            if reply.is_positive() {
                *state = RcptState::Accepted;
                tx.accepted.push(index);
            } else {
                *state = RcptState::Reported;
                tx.refused += 1;
                self.events.push_back(Event::Recipient {
                    index,
                    outcome: RecipientOutcome::from_reply(reply),
                });
            }
        }
        self.pump();
        self.envelope_progress();
    }

    /// Once every MAIL/RCPT reply is in: DATA, or the end of the transaction.
    fn envelope_progress(&mut self) {
        if !self.in_flight.is_empty() || !self.queued.is_empty() {
            return;
        }
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        if let Some(reply) = tx.mail_refused.take() {
            self.finish(TransactionOutcome::MailRefused(reply), true);
            return;
        }
        if tx.accepted.is_empty() {
            self.finish(TransactionOutcome::NoRecipientAccepted, true);
        } else {
            self.write(Awaiting::Data, b"DATA\r\n");
            self.phase = Phase::Data;
        }
    }

    fn on_data(&mut self, reply: Reply) {
        if reply.code() == 354 {
            self.phase = Phase::Body;
            self.body = BodyEncoder::new();
            self.events.push_back(Event::SendBody);
            return;
        }
        self.report_accepted(&reply);
        self.finish(TransactionOutcome::DataRefused(reply), true);
    }

    fn on_dot(&mut self, reply: Reply) {
        self.report_accepted(&reply);
        self.finish_sent();
    }

    fn on_lmtp_dot(&mut self, index: usize, reply: Reply) {
        if let Some(tx) = self.tx.as_mut()
            && let Some(state) = tx.state.get_mut(index)
            && *state == RcptState::Accepted
        {
            *state = RcptState::Reported;
            if reply.is_positive() {
                tx.delivered += 1;
            } else {
                tx.refused += 1;
            }
            self.events.push_back(Event::Recipient {
                index,
                outcome: RecipientOutcome::from_reply(reply),
            });
        }
        if self.in_flight.is_empty() {
            self.finish_sent();
        }
    }

    /// Gives every recipient accepted at RCPT its final outcome.
    fn report_accepted(&mut self, reply: &Reply) {
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        for &index in &tx.accepted {
            if let Some(state) = tx.state.get_mut(index)
                && *state == RcptState::Accepted
            {
                *state = RcptState::Reported;
                if reply.is_positive() {
                    tx.delivered += 1;
                } else {
                    tx.refused += 1;
                }
                self.events.push_back(Event::Recipient {
                    index,
                    outcome: RecipientOutcome::from_reply(reply.clone()),
                });
            }
        }
    }

    fn finish_sent(&mut self) {
        let (accepted, refused) = self
            .tx
            .as_ref()
            .map_or((0, 0), |t| (t.delivered, t.refused));
        // After the final dot the server has reset its transaction, whatever
        // it answered.
        self.finish(TransactionOutcome::Sent { accepted, refused }, false);
    }

    fn finish(&mut self, outcome: TransactionOutcome, dirty: bool) {
        self.tx = None;
        self.dirty = dirty;
        self.phase = Phase::Idle;
        self.events.push_back(Event::TransactionDone(outcome));
    }
}
