//! The delivery child: `smtpd --deliver`, started by the parent for local
//! deliveries to one account, already as that user (uid, gid, no
//! supplementary groups, a clean environment, the home as working
//! directory). Standard output is a socket that carries requests in, each
//! with the message's fd (opened read-only by the queue), and for each the
//! outcomes out: one per recipient, in the request's order (several only
//! for LMTP, which delivers a message to many recipients at once). The
//! parent keeps the child between deliveries to the same account
//! (roles/delivery_workers.rs) and closes the socket to end it.

use std::fs::File;
use std::io::BufReader;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use rsmtpd_delivery::format::Address;
use rsmtpd_delivery::{Class, lmtp, maildir, mbox, mda};
use rsmtpd_ipc::BlockingChannel;
use serde::{Deserialize, Serialize};

use crate::links::{ForwardResult, Outcome};

/// The argument that starts a delivery child.
pub const DELIVER_FLAG: &str = "--deliver";

/// The method, fully resolved by the parent (paths expanded, user known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Maildir {
        path: PathBuf,
        junk: bool,
    },
    /// A mailbox the parent has prepared (created, checked) as root.
    Mbox {
        path: PathBuf,
    },
    /// A command run through /bin/sh (formats already expanded).
    Mda {
        command: String,
    },
    /// A file named by an alias or .forward: appended to in mbox format,
    /// created if missing.
    File {
        path: PathBuf,
    },
    /// An LMTP server (`host:port` or a socket path), with every
    /// recipient of the transaction (never empty).
    Lmtp {
        destination: String,
        rcpt_to: bool,
        recipients: Vec<LmtpRcpt>,
    },
}

/// One recipient of an LMTP transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmtpRcpt {
    /// The recipient's account, sent as RCPT TO unless `rcpt_to`.
    pub user: String,
    /// The recipient after expansion.
    pub address: String,
}

impl Method {
    /// How many outcomes the child answers with.
    pub fn recipients(&self) -> usize {
        match self {
            Method::Lmtp { recipients, .. } => recipients.len(),
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub method: Method,
    /// Stable per envelope: the envelope id (the first one's for LMTP).
    pub unique: String,
    pub created: u64,
    pub hostname: String,
    pub sender: String,
    /// The recipient as received (LMTP: the first one's; the method
    /// carries them all).
    pub rcpt: String,
    /// The recipient after expansion (LMTP: as `rcpt`).
    pub recipient: String,
    /// The sub-address delimiter, for EXTENSION.
    pub delimiter: char,
}

pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpd --deliver: {e}");
            ExitCode::from(75)
        }
    }
}

fn run() -> Result<(), String> {
    // Take the socket off stdout, so nothing printed can corrupt it.
    let sock = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())?;
    nix::unistd::dup2_stdout(&null).map_err(|e| e.to_string())?;
    let mut link: BlockingChannel<Report, Job> =
        BlockingChannel::from_fd(sock).map_err(|e| e.to_string())?;
    // One job after the other until the parent closes the socket.
    while let Some((job, fds)) = link.recv().map_err(|e| e.to_string())? {
        let request = match job {
            Job::Deliver(request) => request,
            Job::ReadForward { home } => {
                let uid = nix::unistd::getuid().as_raw();
                let answer = match crate::roles::forward::read(&home, uid) {
                    Ok(Some(text)) => ForwardResult::Found(text),
                    Ok(None) => ForwardResult::None,
                    Err(e) => ForwardResult::Refused(e.to_string()),
                };
                link.send(&Report::Forward(answer), Vec::new())
                    .map_err(|e| e.to_string())?;
                continue;
            }
        };
        let Some(message) = fds.into_iter().next() else {
            return Err("a request without its message".into());
        };
        let mut message = BufReader::with_capacity(64 * 1024, File::from(message));
        let mut sent = Ok(());
        let outcomes = deliver(&request, &mut message, &mut |offset| {
            sent = link.send(&Report::Writing { offset }, Vec::new());
        });
        // Without the parent knowing the offset, writing on would be
        // unsafe; but the entry is written by now: report the outcome
        // regardless.
        drop(sent);
        link.send(&Report::Done(outcomes), Vec::new())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What the parent asks of the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// Deliver; the message comes along as the one fd.
    Deliver(Request),
    /// Read the account's `.forward` in `home`, with the checks of
    /// roles/forward.rs, as the account.
    ReadForward { home: PathBuf },
}

/// What the child tells the parent. For a delivery, in order: at most one
/// `Writing`, then `Done`; for a `.forward`, `Forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// An mbox or file entry starts at `offset` and is being written: if
    /// this process dies before `Done`, the parent cuts the file back.
    Writing { offset: u64 },
    /// One outcome per recipient, in the request's order.
    Done(Vec<Outcome>),
    /// The answer to `Job::ReadForward`.
    Forward(ForwardResult),
}

/// Append to an mbox-format file, telling `report` where the entry starts.
fn append_mbox(
    request: &Request,
    path: &std::path::Path,
    message: &mut BufReader<File>,
    report: &mut dyn FnMut(u64),
) -> Outcome {
    let facts = mbox::Facts {
        sender: &request.sender,
        recipient: &request.recipient,
        created: request.created,
    };
    let policy = mbox::LockPolicy::default();
    let result = mbox::deliver_reporting(path, &facts, message, &policy, report);
    outcome(result, |e| (e.class(), e.status(), e.to_string()))
}

/// One outcome per recipient: every method but LMTP has exactly one.
fn deliver(
    request: &Request,
    message: &mut BufReader<File>,
    report: &mut dyn FnMut(u64),
) -> Vec<Outcome> {
    let one = match &request.method {
        Method::Maildir { path, junk } => {
            let result = maildir::deliver(
                &maildir::Maildir {
                    path,
                    junk: *junk,
                    extension: extension_of(request),
                },
                &maildir::Envelope {
                    unique: &request.unique,
                    created: request.created,
                    hostname: &request.hostname,
                    sender: &request.sender,
                    recipient: &request.recipient,
                },
                message,
            );
            outcome(result.map(|_| ()), |e| {
                (e.class(), e.status(), e.to_string())
            })
        }
        Method::Mbox { path } => append_mbox(request, path, message, report),
        Method::Mda { command } => {
            let result = run_mda(request, command, message);
            outcome(result, |e| (e.class(), e.status(), e.to_string()))
        }
        Method::Lmtp {
            destination,
            rcpt_to,
            recipients,
        } => return run_lmtp(request, destination, *rcpt_to, recipients, message),
        Method::File { path } => {
            if let Err(e) = create_if_missing(path) {
                return vec![Outcome::Temporary {
                    status: "4.2.0".into(),
                    text: format!("{}: {e}", path.display()),
                }];
            }
            append_mbox(request, path, message, report)
        }
    };
    vec![one]
}

/// Every recipient in one LMTP transaction; the server answers for each
/// after the data, and adds the trace headers. One outcome per recipient,
/// in order.
fn run_lmtp(
    request: &Request,
    destination: &str,
    rcpt_to: bool,
    recipients: &[LmtpRcpt],
    message: &mut BufReader<File>,
) -> Vec<Outcome> {
    let all = |outcome: Outcome| vec![outcome; recipients.len()];
    let destination = match lmtp::Destination::parse(destination) {
        Ok(d) => d,
        Err(e) => {
            return all(Outcome::Temporary {
                status: "4.3.0".into(),
                text: e.to_string(),
            });
        }
    };
    let config = lmtp::Lmtp {
        destination: &destination,
        rcpt_to_address: rcpt_to,
        lhlo: "localhost",
        io_timeout: std::time::Duration::from_secs(60),
        session_timeout: MDA_TIMEOUT,
    };
    let list: Vec<lmtp::LmtpRecipient<'_>> = recipients
        .iter()
        .map(|r| lmtp::LmtpRecipient {
            user: &r.user,
            address: &r.address,
        })
        .collect();
    match lmtp::deliver(&config, &request.sender, &list, None, message) {
        // The parent checks the count: a short answer retries them all.
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|o| match o {
                lmtp::Outcome::Delivered => Outcome::Ok,
                lmtp::Outcome::Temporary(text) => Outcome::Temporary {
                    status: "4.2.0".into(),
                    text,
                },
                lmtp::Outcome::Permanent(text) => Outcome::Permanent {
                    status: "5.2.0".into(),
                    text,
                },
            })
            .collect(),
        Err(e) => {
            let (status, text) = (e.status().to_owned(), e.to_string());
            all(match e.class() {
                Class::Temporary => Outcome::Temporary { status, text },
                Class::Permanent => Outcome::Permanent { status, text },
            })
        }
    }
}

/// A file target that does not exist yet is created for the user, never
/// through a link (O_EXCL + O_NOFOLLOW), mode 0600.
fn create_if_missing(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long a delivery command may run; the parent's own limit is a
/// little longer.
const MDA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(290);

/// The command, as the user this process already is.
fn run_mda(
    request: &Request,
    command: &str,
    message: &mut BufReader<File>,
) -> Result<(), mda::MdaError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let (username, home) = match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => (u.name, u.dir),
        _ => (String::new(), PathBuf::from("/")),
    };
    // The parent set HOME and USER for this delivery (a userbase account
    // may differ from the password database's).
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or(home);
    let username = std::env::var("USER").unwrap_or(username);
    let rcpt = Address::parse(&request.rcpt);
    let extension = extension_of(request);
    mda::deliver(
        &mda::Mda {
            command,
            user: mda::Account {
                username: &username,
                directory: &home,
                uid,
                gid,
            },
            sender: Address::parse(&request.sender),
            rcpt,
            dest: Address::parse(&request.recipient),
            extension,
            timeout: MDA_TIMEOUT,
        },
        message,
    )
}

/// The recipient's sub-address (`bob+lists@...` -> `lists`), if any.
fn extension_of(request: &Request) -> Option<&str> {
    Address::parse(&request.rcpt)
        .user
        .split_once(request.delimiter)
        .map(|(_, ext)| ext)
        .filter(|e| !e.is_empty())
}

/// One mapping from a method's error to the outcome the queue records.
fn outcome<E>(
    result: Result<(), E>,
    describe: impl Fn(&E) -> (Class, &'static str, String),
) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            let (class, status, text) = describe(&e);
            let status = status.to_owned();
            match class {
                Class::Temporary => Outcome::Temporary { status, text },
                Class::Permanent => Outcome::Permanent { status, text },
            }
        }
    }
}
