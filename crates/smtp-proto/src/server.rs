//! The server session state machine.
//!
//! Bytes from the client go in with [`ServerSession::feed`]; the caller then
//! calls [`ServerSession::poll`] until it returns `None`, and sends what
//! [`ServerSession::output`] holds. When a command needs an outside answer
//! (is this recipient valid? did the queue commit?) `poll` returns an
//! [`Event`] and the session parses nothing more until the caller answers
//! with the matching method. That is how pipelined commands get their
//! replies in order without the session knowing any policy.
//!
//! Everything is bounded: the input buffer ([`INPUT_CAPACITY`]: `feed`
//! takes only what fits), the output (the session stops working while more
//! than [`OUTPUT_HIGH_WATER`] bytes wait to be sent) and every counter.

use crate::address::{Charset, Domain, ForwardPath, ReversePath};
use crate::command::{Command, MailParams, RcptParams};
use crate::data::{DataError, DataReader};
use crate::reply::Reply;
use crate::sasl::{self, Credentials, SaslError};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const MAX_COMMAND_LINE_OCTETS: usize = 512;
/// RFC 4954 4: a line of an AUTH exchange may be up to 12288 octets.
pub const MAX_AUTH_LINE_OCTETS: usize = 12288;
/// Most unparsed input the session holds.
pub const INPUT_CAPACITY: usize = 64 * 1024;
/// The session stops producing replies while more than this waits to be sent.
pub const OUTPUT_HIGH_WATER: usize = 8 * 1024;

/// What the daemon tells the session. Policy (who may send, who receives)
/// stays with the daemon: it answers the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Our name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised as SIZE).
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Messages per session.
    pub max_messages: u32,
    /// Refused commands before the session is closed with 421.
    pub max_errors: u32,
    /// Offer DSN (RFC 3461) and accept its parameters.
    pub dsn: bool,
    pub tls: TlsPolicy,
    /// AUTH, offered only once TLS is up.
    pub auth: AuthPolicy,
    /// Failed AUTH attempts before the session is closed with 421.
    pub max_auth_failures: u32,
}

/// How the session uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    #[default]
    Off,
    /// STARTTLS offered (RFC 3207); `required`: no MAIL before it.
    StartTls { required: bool },
    /// The connection is TLS from the first byte (smtps): the caller made
    /// the handshake before creating the session.
    Implicit,
}

/// Whether AUTH (RFC 4954) is offered, and whether MAIL needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    #[default]
    Off,
    Optional,
    Required,
}

/// The SASL mechanisms offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            // OpenSMTPD's default max-message-size (35M).
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 1000,
            max_messages: 100,
            max_errors: 10,
            dsn: true,
            tls: TlsPolicy::Off,
            auth: AuthPolicy::Off,
            max_auth_failures: 3,
        }
    }
}

/// The client's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helo {
    pub name: Domain,
    /// EHLO (true) or HELO (false).
    pub esmtp: bool,
}

/// One accepted recipient and its own DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub path: ForwardPath,
    pub params: RcptParams,
}

/// The mail transaction as the session hands it to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub helo: Helo,
    pub sender: ReversePath,
    /// SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH as given at MAIL.
    pub params: MailParams,
    /// Accepted recipients, each once.
    pub recipients: Vec<Recipient>,
}

/// Something the caller must act on. Events that need an answer say which.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Answer with [`ServerSession::accept_mail`] or [`ServerSession::reject_mail`].
    MailFrom {
        from: &'a ReversePath,
        params: &'a MailParams,
    },
    /// Answer with [`ServerSession::accept_rcpt`] or [`ServerSession::reject_rcpt`].
    Recipient {
        to: &'a ForwardPath,
        params: &'a RcptParams,
    },
    /// The queue should create the message. Answer with
    /// [`ServerSession::data_ready`] (354) or [`ServerSession::data_refused`].
    DataStart { transaction: &'a Transaction },
    /// Message content (dot-unstuffed, CRLF line ends) to append. No answer.
    DataChunk(&'a [u8]),
    /// The final dot. With `Ok` the caller commits and answers with
    /// [`ServerSession::message_accepted`] or [`ServerSession::message_failed`];
    /// with `Err` the session has already replied and the caller drops the
    /// message (no answer).
    DataEnd {
        transaction: &'a Transaction,
        verdict: Result<(), DataError>,
    },
    /// The 220 to STARTTLS is in the output: send it, make the TLS
    /// handshake, then call [`ServerSession::tls_established`] (or drop the
    /// session if the handshake fails). Input given meanwhile is dropped.
    StartTls,
    /// Check the credentials; answer with [`ServerSession::auth_accepted`],
    /// [`ServerSession::auth_rejected`] or [`ServerSession::auth_unavailable`].
    Auth {
        mechanism: Mechanism,
        credentials: &'a Credentials,
    },
    /// The last reply is in the output: send it, then close. Given once.
    Close,
}

/// The caller answered something the session did not ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the session is not waiting for this answer")]
    Unexpected,
    #[error("a refusal must be a 4xx or 5xx reply")]
    NotARefusal,
}

/// Refusals that come from the session's state, not a command's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    LineTooLong,
    BareLf,
    NeedHelo,
    NestedMail,
    NeedMail,
    NoValidRecipients,
    TooManyMessages,
    TooManyRecipients,
    SizeExceeded,
    DsnDisabled,
    EsmtpParamsAfterHelo,
    NotOffered,
    ExpnDisabled,
    TooManyErrors,
    Timeout,
    Shutdown,
    NeedStartTls,
    NeedAuth,
    AlreadyTls,
    AlreadyAuthenticated,
    AuthInTransaction,
    UnknownMechanism,
    AuthCancelled,
    AuthData,
    AuthFailed,
    AuthUnavailable,
    TooManyAuthFailures,
    AuthNeedsTls,
}

impl Refusal {
    /// The one reply for each refusal.
    pub fn reply(self, hostname: &str) -> Reply {
        match self {
            Refusal::LineTooLong => Reply::fixed(500, (5, 5, 2), "Line too long"),
            Refusal::BareLf => {
                Reply::fixed(500, (5, 5, 2), "Syntax error: lines must end with CRLF")
            }
            Refusal::NeedHelo => {
                Reply::fixed(503, (5, 5, 1), "Invalid command: Send HELO/EHLO first")
            }
            Refusal::NestedMail => {
                Reply::fixed(503, (5, 5, 1), "Invalid command: Nested MAIL command")
            }
            Refusal::NeedMail => Reply::fixed(503, (5, 5, 1), "Invalid command: Need MAIL first"),
            Refusal::NoValidRecipients => Reply::fixed(554, (5, 5, 1), "No valid recipients"),
            Refusal::TooManyMessages => {
                Reply::fixed(452, (4, 5, 3), "Too many messages for this session")
            }
            Refusal::TooManyRecipients => Reply::fixed(452, (4, 5, 3), "Too many recipients"),
            Refusal::SizeExceeded => Reply::fixed(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ),
            Refusal::DsnDisabled => Reply::fixed(555, (5, 5, 4), "DSN parameters not supported"),
            Refusal::EsmtpParamsAfterHelo => {
                Reply::fixed(555, (5, 5, 4), "Parameters need EHLO, not HELO")
            }
            Refusal::NotOffered => {
                Reply::fixed(502, (5, 5, 1), "Invalid command: Command not supported")
            }
            Refusal::ExpnDisabled => Reply::fixed(502, (5, 5, 1), "EXPN not supported"),
            Refusal::TooManyErrors => Reply::fixed(
                421,
                (4, 7, 0),
                format!("{hostname} Too many errors, closing connection"),
            ),
            Refusal::Timeout => Reply::fixed(
                421,
                (4, 4, 2),
                format!("{hostname} Timeout, closing connection"),
            ),
            Refusal::Shutdown => Reply::fixed(
                421,
                (4, 3, 0),
                format!("{hostname} Server shutting down, closing connection"),
            ),
            Refusal::NeedStartTls => {
                Reply::fixed(530, (5, 7, 0), "Must issue a STARTTLS command first")
            }
            Refusal::NeedAuth => Reply::fixed(530, (5, 7, 0), "Must issue an AUTH command first"),
            Refusal::AlreadyTls => Reply::fixed(503, (5, 5, 1), "TLS already active"),
            Refusal::AlreadyAuthenticated => Reply::fixed(503, (5, 5, 1), "Already authenticated"),
            Refusal::AuthInTransaction => {
                Reply::fixed(503, (5, 5, 1), "AUTH not allowed in a mail transaction")
            }
            Refusal::UnknownMechanism => {
                Reply::fixed(504, (5, 5, 4), "Unrecognized authentication type")
            }
            Refusal::AuthCancelled => Reply::fixed(501, (5, 0, 0), "Authentication cancelled"),
            Refusal::AuthData => {
                Reply::fixed(501, (5, 5, 2), "Syntax error in authentication data")
            }
            Refusal::AuthFailed => Reply::fixed(535, (5, 7, 8), "Authentication failed"),
            Refusal::AuthUnavailable => {
                Reply::fixed(454, (4, 7, 0), "Temporary authentication failure")
            }
            Refusal::AuthNeedsTls => Reply::fixed(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ),
            Refusal::TooManyAuthFailures => Reply::fixed(
                421,
                (4, 7, 0),
                format!("{hostname} Too many authentication failures, closing connection"),
            ),
        }
    }
}

/// What the session is stopped on.
#[derive(Debug, Clone)]
enum Pending {
    Auth(Mechanism, Credentials),
    Mail(ReversePath, MailParams),
    Rcpt(Recipient),
    DataStart,
    Commit,
}

#[derive(Debug, Clone)]
enum State {
    /// Reading command lines. `discarding`: inside an over-long line whose
    /// rest is being dropped.
    Command {
        discarding: bool,
    },
    /// Stopped until the caller answers.
    Waiting(Pending),
    Data(Box<DataReader>),
    /// Inside an AUTH exchange, waiting for the client's next line.
    Auth(AuthStep),
    /// The caller is making the TLS handshake. The input was emptied on
    /// entry and stays empty: plaintext pipelined after STARTTLS is never
    /// read as if it came over TLS (CVE-2011-0411).
    TlsHandshake,
    /// The last reply is written; `Event::Close` not yet given.
    Closing,
    Closed,
}

/// Where an AUTH exchange stands.
#[derive(Debug, Clone)]
enum AuthStep {
    PlainResponse,
    LoginUser,
    LoginPassword(String),
}

/// The unparsed input: a buffer read from a cursor, compacted only when
/// new bytes arrive, so that many short pipelined lines cost linear time.
#[derive(Debug, Clone, Default)]
struct InputBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl InputBuffer {
    /// Takes what fits in [`INPUT_CAPACITY`]; returns how much.
    fn push(&mut self, bytes: &[u8]) -> usize {
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        let n = bytes
            .len()
            .min(INPUT_CAPACITY.saturating_sub(self.buf.len()));
        self.buf
            .extend_from_slice(bytes.get(..n).unwrap_or_default());
        n
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.buf.len());
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// A line read, or what to do instead.
enum Line {
    Got(Vec<u8>),
    Step(Step),
}

/// Internal result of one step of `poll`, free of borrows.
enum Step {
    Continue,
    Idle,
    Emit(Emitted),
}

enum Emitted {
    MailFrom,
    Recipient,
    DataStart,
    DataChunk,
    DataEnd(Result<(), DataError>),
    StartTls,
    Auth,
    Close,
}

/// One SMTP server session; see the module doc.
#[derive(Debug, Clone)]
pub struct ServerSession {
    config: ServerConfig,
    input: InputBuffer,
    output: Vec<u8>,
    state: State,
    helo: Option<Helo>,
    tx: Option<Transaction>,
    chunk: Vec<u8>,
    /// A transaction refused at the final dot, lent out with its DataEnd.
    ended: Option<Transaction>,
    messages: u32,
    errors: u32,
    tls: bool,
    auth_user: Option<String>,
    auth_failures: u32,
}

impl ServerSession {
    /// A new session; the greeting is already in the output.
    pub fn new(config: ServerConfig) -> Self {
        let mut s = Self {
            input: InputBuffer::default(),
            output: Vec::new(),
            state: State::Command { discarding: false },
            helo: None,
            tx: None,
            chunk: Vec::new(),
            ended: None,
            messages: 0,
            errors: 0,
            tls: config.tls == TlsPolicy::Implicit,
            auth_user: None,
            auth_failures: 0,
            config,
        };
        // RFC 2034: no enhanced code in the greeting.
        let greeting = Reply::unchecked(
            220,
            None,
            vec![format!("{} ESMTP rsmtpd", s.config.hostname)],
        );
        s.write(&greeting);
        s
    }

    /// Takes as many bytes as fit in the input buffer and returns how many.
    /// Stop reading from the client while it returns less than given; poll
    /// and send first. After the session closed, input is dropped.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if matches!(
            self.state,
            State::Closing | State::Closed | State::TlsHandshake
        ) {
            return bytes.len();
        }
        self.input.push(bytes)
    }

    /// Bytes to send to the client.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Marks the first `n` output bytes as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.output.drain(..n.min(self.output.len()));
    }

    /// Takes all pending output.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// True once `Event::Close` was given.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn helo(&self) -> Option<&Helo> {
        self.helo.as_ref()
    }

    pub fn transaction(&self) -> Option<&Transaction> {
        self.tx.as_ref()
    }

    /// True once TLS is up (after STARTTLS, or from the start for smtps).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The user the client authenticated as.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// The handshake after STARTTLS succeeded: the session starts over
    /// (RFC 3207 4.2), the client must greet again, and nothing it said in
    /// plaintext counts.
    pub fn tls_established(&mut self) -> Result<(), AnswerError> {
        let State::TlsHandshake = self.state else {
            return Err(AnswerError::Unexpected);
        };
        self.input.clear();
        self.helo = None;
        self.tx = None;
        self.tls = true;
        self.state = State::Command { discarding: false };
        Ok(())
    }

    /// The credentials are good: 235.
    pub fn auth_accepted(&mut self) -> Result<(), AnswerError> {
        let State::Waiting(Pending::Auth(..)) = self.state else {
            return Err(AnswerError::Unexpected);
        };
        let State::Waiting(Pending::Auth(_, credentials)) =
            std::mem::replace(&mut self.state, State::Command { discarding: false })
        else {
            return Err(AnswerError::Unexpected);
        };
        self.auth_user = Some(credentials.user);
        self.write(&Reply::fixed(235, (2, 0, 0), "Authentication succeeded"));
        Ok(())
    }

    /// Wrong user or password: 535; too many closes the session.
    pub fn auth_rejected(&mut self) -> Result<(), AnswerError> {
        self.answer_refusal(Refusal::AuthFailed.reply(&self.config.hostname), |p| {
            matches!(p, Pending::Auth(..))
        })?;
        self.auth_failures = self.auth_failures.saturating_add(1);
        if self.auth_failures >= self.config.max_auth_failures {
            self.close_with(Refusal::TooManyAuthFailures);
        }
        Ok(())
    }

    /// The credentials could not be checked now: 454.
    pub fn auth_unavailable(&mut self) -> Result<(), AnswerError> {
        self.answer_refusal(Refusal::AuthUnavailable.reply(&self.config.hostname), |p| {
            matches!(p, Pending::Auth(..))
        })
    }

    /// Runs the session on buffered input until it needs the caller.
    pub fn poll(&mut self) -> Option<Event<'_>> {
        // What the previous event lent out has been used.
        self.chunk.clear();
        self.ended = None;
        loop {
            match self.step() {
                Step::Continue => {}
                Step::Idle => return None,
                Step::Emit(e) => return self.event(e),
            }
        }
    }

    /// The client was silent too long: 421 and close.
    pub fn on_timeout(&mut self) {
        self.close_with(Refusal::Timeout);
    }

    /// The daemon is stopping: 421 and close.
    pub fn shutdown(&mut self) {
        self.close_with(Refusal::Shutdown);
    }

    pub fn accept_mail(&mut self) -> Result<(), AnswerError> {
        // MAIL is only asked after HELO, so `helo` is set whenever it is.
        let (State::Waiting(Pending::Mail(..)), Some(helo)) = (&self.state, &self.helo) else {
            return Err(AnswerError::Unexpected);
        };
        let helo = helo.clone();
        let State::Waiting(Pending::Mail(sender, params)) =
            std::mem::replace(&mut self.state, State::Command { discarding: false })
        else {
            return Err(AnswerError::Unexpected);
        };
        self.tx = Some(Transaction {
            helo,
            sender,
            params,
            recipients: Vec::new(),
        });
        self.write(&Reply::fixed(250, (2, 1, 0), "Ok"));
        Ok(())
    }

    pub fn reject_mail(&mut self, reply: Reply) -> Result<(), AnswerError> {
        self.answer_refusal(reply, |p| matches!(p, Pending::Mail(..)))
    }

    pub fn accept_rcpt(&mut self) -> Result<(), AnswerError> {
        let State::Waiting(Pending::Rcpt(_)) = self.state else {
            return Err(AnswerError::Unexpected);
        };
        let State::Waiting(Pending::Rcpt(rcpt)) =
            std::mem::replace(&mut self.state, State::Command { discarding: false })
        else {
            return Err(AnswerError::Unexpected);
        };
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(rcpt);
        }
        self.write(&rcpt_ok());
        Ok(())
    }

    pub fn reject_rcpt(&mut self, reply: Reply) -> Result<(), AnswerError> {
        self.answer_refusal(reply, |p| matches!(p, Pending::Rcpt(_)))
    }

    /// The queue is ready for the content: 354.
    pub fn data_ready(&mut self) -> Result<(), AnswerError> {
        let State::Waiting(Pending::DataStart) = self.state else {
            return Err(AnswerError::Unexpected);
        };
        self.state = State::Data(Box::new(DataReader::new(self.config.max_message_size)));
        // 3xx replies carry no enhanced code (RFC 3463 has no class 3).
        let go = Reply::unchecked(
            354,
            None,
            vec!["Enter mail, end with \".\" on a line by itself".into()],
        );
        self.write(&go);
        Ok(())
    }

    /// The queue could not take a message (e.g. 451 4.3.0). The transaction
    /// stays: the client may try DATA again or RSET.
    pub fn data_refused(&mut self, reply: Reply) -> Result<(), AnswerError> {
        self.answer_refusal(reply, |p| matches!(p, Pending::DataStart))
    }

    /// The message is durable: `250 2.0.0 <id> Message accepted for delivery`.
    pub fn message_accepted(&mut self, id: &str) -> Result<(), AnswerError> {
        let State::Waiting(Pending::Commit) = self.state else {
            return Err(AnswerError::Unexpected);
        };
        self.state = State::Command { discarding: false };
        self.tx = None;
        self.messages = self.messages.saturating_add(1);
        self.write(&Reply::fixed(
            250,
            (2, 0, 0),
            format!("{id} Message accepted for delivery"),
        ));
        Ok(())
    }

    /// The commit failed; the transaction is over.
    pub fn message_failed(&mut self, reply: Reply) -> Result<(), AnswerError> {
        self.answer_refusal(reply, |p| matches!(p, Pending::Commit))?;
        self.tx = None;
        Ok(())
    }

    fn answer_refusal(
        &mut self,
        reply: Reply,
        expected: impl Fn(&Pending) -> bool,
    ) -> Result<(), AnswerError> {
        let State::Waiting(p) = &self.state else {
            return Err(AnswerError::Unexpected);
        };
        if !expected(p) {
            return Err(AnswerError::Unexpected);
        }
        if reply.code() < 400 {
            return Err(AnswerError::NotARefusal);
        }
        self.state = State::Command { discarding: false };
        self.refuse_with(&reply);
        Ok(())
    }

    fn write(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Writes a refusal and counts it; too many closes the session.
    fn refuse_with(&mut self, reply: &Reply) {
        self.write(reply);
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_errors {
            self.close_with(Refusal::TooManyErrors);
        }
    }

    fn refuse(&mut self, r: Refusal) {
        let reply = r.reply(&self.config.hostname);
        self.refuse_with(&reply);
    }

    fn close_with(&mut self, r: Refusal) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        let reply = r.reply(&self.config.hostname);
        self.write(&reply);
        self.input.clear();
        self.state = State::Closing;
    }

    fn event(&self, e: Emitted) -> Option<Event<'_>> {
        Some(match e {
            Emitted::MailFrom => match &self.state {
                State::Waiting(Pending::Mail(from, params)) => Event::MailFrom { from, params },
                _ => return None,
            },
            Emitted::Recipient => match &self.state {
                State::Waiting(Pending::Rcpt(r)) => Event::Recipient {
                    to: &r.path,
                    params: &r.params,
                },
                _ => return None,
            },
            Emitted::DataStart => Event::DataStart {
                transaction: self.tx.as_ref()?,
            },
            Emitted::DataChunk => Event::DataChunk(&self.chunk),
            Emitted::StartTls => Event::StartTls,
            Emitted::Auth => match &self.state {
                State::Waiting(Pending::Auth(mechanism, credentials)) => Event::Auth {
                    mechanism: *mechanism,
                    credentials,
                },
                _ => return None,
            },
            Emitted::DataEnd(verdict) => Event::DataEnd {
                transaction: match verdict {
                    Ok(()) => self.tx.as_ref()?,
                    Err(_) => self.ended.as_ref()?,
                },
                verdict,
            },
            Emitted::Close => Event::Close,
        })
    }

    fn step(&mut self) -> Step {
        match &mut self.state {
            State::Closed | State::Waiting(_) | State::TlsHandshake => Step::Idle,
            State::Closing => {
                self.state = State::Closed;
                Step::Emit(Emitted::Close)
            }
            _ if self.output.len() >= OUTPUT_HIGH_WATER => Step::Idle,
            State::Data(reader) => {
                if let Some(verdict) = reader.verdict() {
                    return self.end_of_data(verdict);
                }
                if self.input.pending().is_empty() {
                    return Step::Idle;
                }
                let used = reader.feed(self.input.pending(), &mut self.chunk);
                self.input.consume(used);
                if self.chunk.is_empty() {
                    Step::Continue
                } else {
                    Step::Emit(Emitted::DataChunk)
                }
            }
            State::Command { discarding } => {
                let discarding = *discarding;
                match self.read_line(discarding, MAX_COMMAND_LINE_OCTETS) {
                    Line::Got(line) => self.command(&line),
                    Line::Step(step) => step,
                }
            }
            State::Auth(_) => match self.read_line(false, MAX_AUTH_LINE_OCTETS) {
                Line::Got(line) => self.auth_line(&line),
                Line::Step(step) => step,
            },
        }
    }

    fn end_of_data(&mut self, verdict: Result<(), DataError>) -> Step {
        match verdict {
            Ok(()) => self.state = State::Waiting(Pending::Commit),
            Err(e) => {
                // The transaction is over; it is kept aside only to be lent
                // out with this event.
                self.state = State::Command { discarding: false };
                self.ended = self.tx.take();
                self.refuse_with(&e.reply());
            }
        }
        Step::Emit(Emitted::DataEnd(verdict))
    }

    /// One CRLF-terminated line of at most `max` octets, without its CRLF.
    fn read_line(&mut self, discarding: bool, max: usize) -> Line {
        let pending = self.input.pending();
        let window = pending.get(..max).unwrap_or(pending);
        let lf = if discarding {
            pending.iter().position(|&b| b == b'\n')
        } else {
            window.iter().position(|&b| b == b'\n')
        };
        if discarding {
            match lf {
                Some(i) => {
                    self.input.consume(i + 1);
                    self.state = State::Command { discarding: false };
                    return Line::Step(Step::Continue);
                }
                None => {
                    self.input.clear();
                    return Line::Step(Step::Idle);
                }
            }
        }
        let Some(i) = lf else {
            if pending.len() >= max {
                // No LF in `max` octets: refuse now, drop the rest of the
                // line as it comes (bounded, the session goes on).
                self.state = State::Command { discarding: true };
                self.refuse(Refusal::LineTooLong);
                return Line::Step(Step::Continue);
            }
            return Line::Step(Step::Idle);
        };
        let line = self.input.pending().get(..=i).unwrap_or_default().to_vec();
        self.input.consume(i + 1);
        let Some(line) = line.strip_suffix(b"\r\n") else {
            if matches!(self.state, State::Auth(_)) {
                self.state = State::Command { discarding: false };
            }
            self.refuse(Refusal::BareLf);
            return Line::Step(Step::Continue);
        };
        Line::Got(line.to_vec())
    }

    fn command(&mut self, line: &[u8]) -> Step {
        let charset = match &self.tx {
            Some(tx) if tx.params.smtputf8 => Charset::Utf8,
            _ => Charset::Ascii,
        };
        let cmd = match Command::parse(line, charset) {
            Ok(c) => c,
            Err(e) => {
                self.refuse_with(&e.reply());
                return Step::Continue;
            }
        };
        match cmd {
            Command::Helo(name) => self.greet(name, false),
            Command::Ehlo(name) => self.greet(name, true),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => {
                if self.helo.is_none() {
                    self.refuse(Refusal::NeedHelo);
                } else if let Some(tx) = &self.tx {
                    if tx.recipients.is_empty() {
                        self.refuse(Refusal::NoValidRecipients);
                    } else {
                        self.state = State::Waiting(Pending::DataStart);
                        return Step::Emit(Emitted::DataStart);
                    }
                } else {
                    self.refuse(Refusal::NeedMail);
                }
                Step::Continue
            }
            Command::Rset => {
                self.tx = None;
                self.write(&Reply::fixed(250, (2, 0, 0), "Reset state"));
                Step::Continue
            }
            Command::Noop => {
                self.write(&Reply::fixed(250, (2, 0, 0), "Ok"));
                Step::Continue
            }
            Command::Quit => {
                self.write(&Reply::fixed(221, (2, 0, 0), "Bye"));
                self.input.clear();
                self.state = State::Closing;
                Step::Continue
            }
            Command::Help => {
                let lines = [
                    "This is rsmtpd",
                    "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY",
                    "End of HELP info",
                ];
                let reply = Reply::unchecked(
                    214,
                    Some(crate::reply::EnhancedCode::new(2, 0, 0)),
                    lines.iter().map(|l| (*l).to_owned()).collect(),
                );
                self.write(&reply);
                Step::Continue
            }
            Command::Vrfy => {
                // Discloses nothing: the same answer for every argument.
                self.write(&Reply::fixed(
                    252,
                    (2, 1, 5),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Step::Continue
            }
            Command::Expn => {
                self.refuse(Refusal::ExpnDisabled);
                Step::Continue
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial.as_deref()),
        }
    }

    fn offers_starttls(&self) -> bool {
        matches!(self.config.tls, TlsPolicy::StartTls { .. }) && !self.tls
    }

    fn offers_auth(&self) -> bool {
        self.config.auth != AuthPolicy::Off && self.tls && self.auth_user.is_none()
    }

    fn starttls(&mut self) -> Step {
        if self.tls {
            self.refuse(Refusal::AlreadyTls);
        } else if !self.offers_starttls() {
            self.refuse(Refusal::NotOffered);
        } else if self.helo.is_none() {
            self.refuse(Refusal::NeedHelo);
        } else {
            self.write(&Reply::fixed(220, (2, 0, 0), "Ready to start TLS"));
            // Whatever the client pipelined after STARTTLS was sent in
            // plaintext: it is never read as a command.
            self.input.clear();
            self.state = State::TlsHandshake;
            return Step::Emit(Emitted::StartTls);
        }
        Step::Continue
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Step {
        if self.config.auth == AuthPolicy::Off {
            self.refuse(Refusal::NotOffered);
            return Step::Continue;
        }
        if self.helo.is_none() {
            self.refuse(Refusal::NeedHelo);
            return Step::Continue;
        }
        if self.auth_user.is_some() {
            self.refuse(Refusal::AlreadyAuthenticated);
            return Step::Continue;
        }
        if !self.tls {
            self.refuse(Refusal::AuthNeedsTls);
            return Step::Continue;
        }
        if !self.offers_auth() {
            self.refuse(Refusal::NotOffered);
            return Step::Continue;
        }
        if self.tx.is_some() {
            self.refuse(Refusal::AuthInTransaction);
            return Step::Continue;
        }
        let mechanism = match mechanism {
            "PLAIN" => Mechanism::Plain,
            "LOGIN" => Mechanism::Login,
            _ => {
                self.refuse(Refusal::UnknownMechanism);
                return Step::Continue;
            }
        };
        // RFC 4954 4: "=" is an empty initial response.
        let initial = initial.map(|i| if i == "=" { "" } else { i });
        match (mechanism, initial) {
            (Mechanism::Plain, Some(data)) => {
                self.auth_decoded(sasl::decode_plain(data.as_bytes()).map(|c| (mechanism, c)))
            }
            (Mechanism::Plain, None) => {
                self.challenge("");
                self.state = State::Auth(AuthStep::PlainResponse);
                Step::Continue
            }
            (Mechanism::Login, Some(user)) => match sasl::decode_login_user(user.as_bytes()) {
                Ok(user) => {
                    self.challenge(sasl::LOGIN_PASS_PROMPT);
                    self.state = State::Auth(AuthStep::LoginPassword(user));
                    Step::Continue
                }
                Err(e) => self.auth_decoded(Err(e)),
            },
            (Mechanism::Login, None) => {
                self.challenge(sasl::LOGIN_USER_PROMPT);
                self.state = State::Auth(AuthStep::LoginUser);
                Step::Continue
            }
        }
    }

    fn challenge(&mut self, text: &str) {
        // 334 carries base64 only: no enhanced code (RFC 4954 4).
        self.write(&Reply::unchecked(334, None, vec![text.to_owned()]));
    }

    /// A line of the AUTH exchange.
    fn auth_line(&mut self, line: &[u8]) -> Step {
        let State::Auth(step) =
            std::mem::replace(&mut self.state, State::Command { discarding: false })
        else {
            return Step::Continue;
        };
        if line == b"*" {
            self.refuse(Refusal::AuthCancelled);
            return Step::Continue;
        }
        match step {
            AuthStep::PlainResponse => {
                self.auth_decoded(sasl::decode_plain(line).map(|c| (Mechanism::Plain, c)))
            }
            AuthStep::LoginUser => match sasl::decode_login_user(line) {
                Ok(user) => {
                    self.challenge(sasl::LOGIN_PASS_PROMPT);
                    self.state = State::Auth(AuthStep::LoginPassword(user));
                    Step::Continue
                }
                Err(e) => self.auth_decoded(Err(e)),
            },
            AuthStep::LoginPassword(user) => {
                let decoded = sasl::decode_login_password(line)
                    .map(|password| (Mechanism::Login, Credentials { user, password }));
                self.auth_decoded(decoded)
            }
        }
    }

    fn auth_decoded(&mut self, decoded: Result<(Mechanism, Credentials), SaslError>) -> Step {
        match decoded {
            Ok((mechanism, credentials)) => {
                self.state = State::Waiting(Pending::Auth(mechanism, credentials));
                Step::Emit(Emitted::Auth)
            }
            Err(_) => {
                self.state = State::Command { discarding: false };
                self.refuse(Refusal::AuthData);
                Step::Continue
            }
        }
    }

    fn greet(&mut self, name: Domain, esmtp: bool) -> Step {
        // RFC 5321 4.1.4: a new HELO/EHLO resets the transaction.
        self.tx = None;
        let reply = if esmtp {
            self.ehlo_reply(&name)
        } else {
            // RFC 2034: no enhanced code in the HELO reply.
            Reply::unchecked(
                250,
                None,
                vec![format!(
                    "{} Hello {name}, pleased to meet you",
                    self.config.hostname
                )],
            )
        };
        self.write(&reply);
        self.helo = Some(Helo { name, esmtp });
        Step::Continue
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) -> Step {
        let Some(helo) = &self.helo else {
            self.refuse(Refusal::NeedHelo);
            return Step::Continue;
        };
        if self.config.tls == (TlsPolicy::StartTls { required: true }) && !self.tls {
            self.refuse(Refusal::NeedStartTls);
        } else if self.config.auth == AuthPolicy::Required && self.auth_user.is_none() {
            self.refuse(Refusal::NeedAuth);
        } else if self.tx.is_some() {
            self.refuse(Refusal::NestedMail);
        } else if self.messages >= self.config.max_messages {
            self.refuse(Refusal::TooManyMessages);
        } else if !helo.esmtp && params != MailParams::default() {
            self.refuse(Refusal::EsmtpParamsAfterHelo);
        } else if !self.config.dsn && params.uses_dsn() {
            self.refuse(Refusal::DsnDisabled);
        } else if params
            .size
            .is_some_and(|s| s > self.config.max_message_size)
        {
            self.refuse(Refusal::SizeExceeded);
        } else {
            self.state = State::Waiting(Pending::Mail(from, params));
            return Step::Emit(Emitted::MailFrom);
        }
        Step::Continue
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParams) -> Step {
        let Some(tx) = &self.tx else {
            self.refuse(Refusal::NeedMail);
            return Step::Continue;
        };
        if !tx.helo.esmtp && params != RcptParams::default() {
            self.refuse(Refusal::EsmtpParamsAfterHelo);
        } else if !self.config.dsn && params.uses_dsn() {
            self.refuse(Refusal::DsnDisabled);
        } else if tx.recipients.iter().any(|r| r.path == to) {
            // Already accepted: say yes again, deliver once.
            self.write(&rcpt_ok());
        } else if tx.recipients.len() >= self.config.max_recipients {
            self.refuse(Refusal::TooManyRecipients);
        } else {
            self.state = State::Waiting(Pending::Rcpt(Recipient { path: to, params }));
            return Step::Emit(Emitted::Recipient);
        }
        Step::Continue
    }

    fn ehlo_reply(&self, name: &Domain) -> Reply {
        let mut lines = vec![
            format!("{} Hello {name}, pleased to meet you", self.config.hostname),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
        ];
        if self.config.dsn {
            lines.push("DSN".to_owned());
        }
        lines.push("PIPELINING".to_owned());
        lines.push("SMTPUTF8".to_owned());
        if self.offers_starttls() {
            lines.push("STARTTLS".to_owned());
        }
        if self.offers_auth() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        lines.push("HELP".to_owned());
        // RFC 2034: no enhanced code in the EHLO reply.
        Reply::unchecked(250, None, lines)
    }
}

fn rcpt_ok() -> Reply {
    Reply::fixed(250, (2, 1, 5), "Destination address valid: Recipient ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 28] = [
        Refusal::LineTooLong,
        Refusal::BareLf,
        Refusal::NeedHelo,
        Refusal::NestedMail,
        Refusal::NeedMail,
        Refusal::NoValidRecipients,
        Refusal::TooManyMessages,
        Refusal::TooManyRecipients,
        Refusal::SizeExceeded,
        Refusal::DsnDisabled,
        Refusal::EsmtpParamsAfterHelo,
        Refusal::NotOffered,
        Refusal::ExpnDisabled,
        Refusal::TooManyErrors,
        Refusal::Timeout,
        Refusal::Shutdown,
        Refusal::NeedStartTls,
        Refusal::NeedAuth,
        Refusal::AlreadyTls,
        Refusal::AlreadyAuthenticated,
        Refusal::AuthInTransaction,
        Refusal::UnknownMechanism,
        Refusal::AuthCancelled,
        Refusal::AuthData,
        Refusal::AuthFailed,
        Refusal::AuthUnavailable,
        Refusal::TooManyAuthFailures,
        Refusal::AuthNeedsTls,
    ];

    /// The unchecked constructor is only sound if every constant reply
    /// would pass the checked one.
    #[test]
    fn every_refusal_is_a_valid_negative_reply() {
        for r in ALL {
            let reply = r.reply("mx.example");
            assert!(reply.code() >= 400, "{r:?}");
            let e = reply.enhanced().unwrap();
            assert_eq!(u16::from(e.class), reply.code() / 100, "{r:?}");
            assert!(Reply::new(reply.code(), reply.enhanced(), reply.lines().to_vec()).is_ok());
        }
    }

    #[test]
    fn closing_refusals_name_the_host() {
        for (r, want) in [
            (
                Refusal::TooManyErrors,
                "421 4.7.0 mx.example Too many errors, closing connection\r\n",
            ),
            (
                Refusal::Timeout,
                "421 4.4.2 mx.example Timeout, closing connection\r\n",
            ),
            (
                Refusal::Shutdown,
                "421 4.3.0 mx.example Server shutting down, closing connection\r\n",
            ),
        ] {
            assert_eq!(r.reply("mx.example").to_wire(), want.as_bytes());
        }
    }

    #[test]
    fn hostile_hostname_cannot_inject_lines() {
        let s = ServerSession::new(ServerConfig {
            hostname: "a\r\n250 b".into(),
            ..ServerConfig::default()
        });
        assert_eq!(s.output(), b"220 a\\x0D\\x0A250 b ESMTP rsmtpd\r\n");
    }

    #[test]
    fn input_buffer_compacts_on_push() {
        let mut b = InputBuffer::default();
        assert_eq!(b.push(&[1; INPUT_CAPACITY]), INPUT_CAPACITY);
        assert_eq!(b.push(&[2]), 0);
        b.consume(10);
        assert_eq!(b.pending().len(), INPUT_CAPACITY - 10);
        assert_eq!(b.push(&[3; 20]), 10);
        assert_eq!(b.pending().len(), INPUT_CAPACITY);
        assert_eq!(b.pending().last(), Some(&3));
        b.consume(usize::MAX);
        assert!(b.pending().is_empty());
    }
}
