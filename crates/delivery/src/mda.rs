//! The `mda` method: hand the message to a command, as OpenSMTPD does.
//!
//! The command (already expanded with [`crate::format`]) runs as
//! `/bin/sh -c COMMAND` in its own process group, with a fixed environment,
//! the message on its standard input (`Return-Path` and `Delivered-To`
//! first, LF line ends) and its output captured (the last
//! [`OUTPUT_TAIL`] bytes). Its exit status is the outcome: 0 delivered,
//! 71 or 75 try again later, anything else (or a signal) bounce with the
//! last line it printed. Past the timeout the whole group is killed.
//!
//! One thread, no `unsafe`: both pipes are non-blocking and serviced in
//! turn, so neither a command that never reads nor a grandchild that keeps
//! a pipe open can hang the delivery.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};

use crate::format::{Address, strip_controls};
use crate::headers::{self, HeaderBlock};
use crate::{Class, DeliveryError};

/// The command's `PATH`: OpenBSD's `_PATH_DEFPATH`, minus X11.
pub const PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin";

/// How much of the command's output is kept (the end of it).
pub const OUTPUT_TAIL: usize = 4096;

/// The longest failure text taken from the output, in characters.
const MAX_REASON: usize = 256;

/// Exit statuses that mean "try again later" (EX_OSERR, EX_TEMPFAIL).
const TEMPFAIL_CODES: [i32; 2] = [71, 75];

/// How long to wait for the killed command to be reaped before giving up
/// on it (a process stuck in the kernel cannot be hurried).
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The account the command runs as.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    pub username: &'a str,
    pub directory: &'a Path,
    pub uid: Uid,
    pub gid: Gid,
}

/// One delivery through a command.
#[derive(Debug, Clone, Copy)]
pub struct Mda<'a> {
    /// The command line, formats already expanded.
    pub command: &'a str,
    pub user: Account<'a>,
    /// MAIL FROM ([`Address::default`] for the null sender).
    pub sender: Address<'a>,
    /// The recipient as received (`ORIGINAL_RECIPIENT`, `LOCAL`, `DOMAIN`).
    pub rcpt: Address<'a>,
    /// The recipient after expansion (`RECIPIENT`, `Delivered-To`).
    pub dest: Address<'a>,
    /// The recipient's sub-address (`EXTENSION`), if it has one.
    pub extension: Option<&'a str>,
    /// After this long the command and everything it started is killed.
    pub timeout: Duration,
}

/// Why a delivery through a command failed.
#[derive(Debug, thiserror::Error)]
pub enum MdaError {
    #[error("delivery to root through an mda is refused")]
    Root,
    #[error("running as uid {running}, cannot run the mda as uid {target}")]
    WrongUser { running: u32, target: u32 },
    #[error("the mda command is empty or contains a NUL byte")]
    BadCommand,
    /// Reading the message, or a loop found in its header.
    #[error(transparent)]
    Message(#[from] DeliveryError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the mda ran longer than {0:?} and was killed")]
    Timeout(Duration),
    /// Exit 71 or 75; `text` is the command's last line of output.
    #[error("{text}")]
    TempFail { code: i32, text: String },
    /// Any other non-zero exit.
    #[error("{text}")]
    PermFail { code: i32, text: String },
    #[error("{text}")]
    Signal { signal: i32, text: String },
}

impl MdaError {
    pub fn class(&self) -> Class {
        match self {
            MdaError::Message(e) => e.class(),
            MdaError::Root
            | MdaError::BadCommand
            | MdaError::PermFail { .. }
            | MdaError::Signal { .. } => Class::Permanent,
            MdaError::WrongUser { .. }
            | MdaError::Io { .. }
            | MdaError::Timeout(_)
            | MdaError::TempFail { .. } => Class::Temporary,
        }
    }

    /// RFC 3463 status for the bounce or the log.
    pub fn status(&self) -> &'static str {
        match self {
            MdaError::Message(e) => e.status(),
            MdaError::Root => "5.7.1",
            MdaError::BadCommand => "5.3.5",
            MdaError::PermFail { .. } | MdaError::Signal { .. } => "5.2.0",
            MdaError::TempFail { .. } => "4.2.0",
            MdaError::WrongUser { .. } | MdaError::Io { .. } | MdaError::Timeout(_) => "4.3.0",
        }
    }
}

/// Run the command and feed it `message` (as stored in the queue: CRLF
/// line ends). Ok means the command exited 0.
///
/// Run as root, the command gets the account's uid and gid (and no
/// supplementary groups); run as anyone else, it must already be the
/// account. The account may never be root.
pub fn deliver(mda: &Mda<'_>, message: &mut impl BufRead) -> Result<(), MdaError> {
    let target = mda.user.uid;
    if target.is_root() {
        return Err(MdaError::Root);
    }
    let (real, effective) = (nix::unistd::getuid(), nix::unistd::geteuid());
    let switch = real.is_root() || effective.is_root();
    if !switch && (real != target || effective != target) {
        return Err(MdaError::WrongUser {
            running: real.as_raw(),
            target: target.as_raw(),
        });
    }
    // An empty command would "deliver" into nothing and exit 0.
    if mda.command.trim().is_empty() || mda.command.contains('\0') {
        return Err(MdaError::BadCommand);
    }

    let headers = HeaderBlock::read(message)?;
    let dest = mda.dest.joined();
    if headers.delivered_to(&dest) {
        return Err(DeliveryError::Loop(dest).into());
    }
    let mut feed = Feed::new(message);
    headers::write_trace_fields(&mut feed.pending, &mda.sender.joined(), &dest)
        .map_err(io("writing the trace fields"))?;
    feed.convert(&headers.raw);

    let (output, output_w) = std::io::pipe().map_err(io("creating the output pipe"))?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(mda.command)
        .env_clear()
        .envs(environment(mda))
        .current_dir(if mda.user.directory.is_dir() {
            mda.user.directory
        } else {
            Path::new("/")
        })
        .stdin(Stdio::piped())
        .stdout(output_w.try_clone().map_err(io("duplicating a pipe"))?)
        .stderr(output_w)
        // Its own group, so that a timeout kills what it started too.
        .process_group(0);
    if switch {
        command.uid(target.as_raw()).gid(mda.user.gid.as_raw());
    }
    let spawned = command.spawn();
    // The Command holds copies of the output pipe's write end: drop them,
    // or the read end never sees EOF.
    drop(command);
    let mut child = spawned.map_err(io("starting /bin/sh"))?;
    let status = supervise(&mut child, feed, output, mda.timeout)?;
    outcome(status.status, &status.output)
}

/// The command's environment, and nothing else: values keep their shell
/// syntax (a variable is never re-parsed) but lose control characters.
fn environment(mda: &Mda<'_>) -> Vec<(&'static str, std::ffi::OsString)> {
    let text = |s: &str| std::ffi::OsString::from(strip_controls(s));
    let mut env = vec![
        ("PATH", PATH.into()),
        ("HOME", mda.user.directory.as_os_str().to_owned()),
        ("USER", text(mda.user.username)),
        ("LOGNAME", text(mda.user.username)),
        ("SHELL", "/bin/sh".into()),
        ("SENDER", text(&mda.sender.joined())),
        ("RECIPIENT", text(&mda.dest.joined())),
        ("ORIGINAL_RECIPIENT", text(&mda.rcpt.joined())),
        ("DOMAIN", text(mda.rcpt.domain)),
        ("LOCAL", text(mda.rcpt.user)),
    ];
    if let Some(extension) = mda.extension.filter(|e| !e.is_empty()) {
        env.push(("EXTENSION", text(extension)));
    }
    env
}

/// The message as the command reads it: a prologue, then the queued bytes
/// with CRLF turned into LF, produced a buffer at a time.
struct Feed<'m, R> {
    reader: &'m mut R,
    pending: Vec<u8>,
    written: usize,
    /// A CR ended the last chunk: whether it is kept depends on the next.
    held_cr: bool,
    exhausted: bool,
}

enum Fed {
    Progress,
    Blocked,
    Done,
}

impl<'m, R: BufRead> Feed<'m, R> {
    fn new(reader: &'m mut R) -> Self {
        Feed {
            reader,
            pending: Vec::new(),
            written: 0,
            held_cr: false,
            exhausted: false,
        }
    }

    fn convert(&mut self, bytes: &[u8]) {
        crlf_to_lf(bytes, &mut self.pending, &mut self.held_cr);
    }

    /// Make sure there is something to write, unless the message is over.
    fn refill(&mut self) -> Result<(), DeliveryError> {
        // Each round consumes input, so this ends with the message.
        while self.written == self.pending.len() && !self.exhausted {
            self.pending.clear();
            self.written = 0;
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(DeliveryError::Read(e)),
            };
            let taken = chunk.len();
            crlf_to_lf(chunk, &mut self.pending, &mut self.held_cr);
            if taken == 0 {
                if std::mem::take(&mut self.held_cr) {
                    self.pending.push(b'\r');
                }
                self.exhausted = true;
            } else {
                self.reader.consume(taken);
            }
        }
        Ok(())
    }

    /// Write what the pipe takes now (a bounded number of writes, so the
    /// output gets its turn).
    fn step(&mut self, pipe: &mut ChildStdin) -> Result<Fed, FeedError> {
        let mut progress = false;
        for _ in 0..16 {
            self.refill().map_err(FeedError::Read)?;
            let Some(rest) = self.pending.get(self.written..).filter(|r| !r.is_empty()) else {
                return Ok(Fed::Done);
            };
            match pipe.write(rest) {
                Ok(n) => {
                    self.written += n;
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(FeedError::Write(e)),
            }
        }
        Ok(if progress {
            Fed::Progress
        } else {
            Fed::Blocked
        })
    }
}

/// Append `bytes` to `out` with every CRLF turned into LF; a CR at the end
/// is held until the next call shows what follows it.
fn crlf_to_lf(bytes: &[u8], out: &mut Vec<u8>, held_cr: &mut bool) {
    for &b in bytes {
        if std::mem::take(held_cr) && b != b'\n' {
            out.push(b'\r');
        }
        if b == b'\r' {
            *held_cr = true;
        } else {
            out.push(b);
        }
    }
}

enum FeedError {
    Read(DeliveryError),
    Write(std::io::Error),
}

/// The end of the output, bounded.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        // Trim in batches, not on every read.
        if self.0.len() > 2 * OUTPUT_TAIL {
            let cut = self.0.len() - OUTPUT_TAIL;
            self.0.drain(..cut);
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        let cut = self.0.len().saturating_sub(OUTPUT_TAIL);
        self.0.drain(..cut);
        self.0
    }

    /// Read what the pipe has now, up to a bounded number of reads. Says
    /// whether the pipe is still open and whether anything came.
    fn read_from(&mut self, pipe: &mut std::io::PipeReader) -> (bool, bool) {
        let mut buf = [0u8; 4096];
        let mut progress = false;
        for _ in 0..16 {
            match pipe.read(&mut buf) {
                Ok(0) => return (false, progress),
                Ok(n) => {
                    self.push(buf.get(..n).unwrap_or_default());
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Nothing more can come from a broken pipe.
                Err(_) => return (false, progress),
            }
        }
        (true, progress)
    }
}

struct Finished {
    status: ExitStatus,
    output: Vec<u8>,
}

/// Feed the input, collect the output, and wait for the exit or the
/// deadline, whichever comes first.
fn supervise<R: BufRead>(
    child: &mut Child,
    mut feed: Feed<'_, R>,
    output: std::io::PipeReader,
    timeout: Duration,
) -> Result<Finished, MdaError> {
    let started = Instant::now();
    let mut stdin = child.stdin.take();
    let mut output = Some(output);
    let prepared = stdin
        .as_ref()
        .map_or(Ok(()), nonblocking)
        .and_then(|()| output.as_ref().map_or(Ok(()), nonblocking));
    if let Err(source) = prepared {
        kill(child);
        return Err(MdaError::Io {
            what: "making the pipes non-blocking",
            source,
        });
    }
    let mut tail = Tail::default();
    let mut nap = Duration::from_micros(200);
    loop {
        let mut progress = false;
        if let Some(pipe) = stdin.as_mut() {
            match feed.step(pipe) {
                Ok(Fed::Progress) => progress = true,
                Ok(Fed::Blocked) => {}
                // Closing stdin is how the command learns the message ended.
                Ok(Fed::Done) => stdin = None,
                Err(FeedError::Read(e)) => {
                    // A truncated message must never count as delivered.
                    kill(child);
                    return Err(e.into());
                }
                // It stopped reading: its exit status says what that means.
                Err(FeedError::Write(e)) if e.kind() == ErrorKind::BrokenPipe => stdin = None,
                Err(FeedError::Write(source)) => {
                    kill(child);
                    return Err(MdaError::Io {
                        what: "writing to the mda",
                        source,
                    });
                }
            }
        }
        if let Some(pipe) = output.as_mut() {
            let (open, read) = tail.read_from(pipe);
            progress |= read;
            if !open {
                output = None;
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // Whatever it wrote before exiting is in the pipe already;
                // a grandchild that keeps writing is not waited for.
                if let Some(pipe) = output.as_mut() {
                    for _ in 0..64 {
                        let (open, read) = tail.read_from(pipe);
                        if !open || !read {
                            break;
                        }
                    }
                }
                return Ok(Finished {
                    status,
                    output: tail.into_bytes(),
                });
            }
            Ok(None) => {}
            Err(source) => {
                kill(child);
                return Err(MdaError::Io {
                    what: "waiting for the mda",
                    source,
                });
            }
        }
        if started.elapsed() >= timeout {
            kill(child);
            return Err(MdaError::Timeout(timeout));
        }
        if progress {
            nap = Duration::from_micros(200);
        } else {
            std::thread::sleep(nap.min(timeout.saturating_sub(started.elapsed())));
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }
}

fn nonblocking(fd: impl AsFd) -> std::io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

/// Kill the command's whole group (it is still unreaped, so its pid is
/// still its group's id) and reap it, for a bounded time.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let started = Instant::now();
    while started.elapsed() < REAP_GRACE {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

fn outcome(status: ExitStatus, output: &[u8]) -> Result<(), MdaError> {
    let said = last_line(output);
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) if TEMPFAIL_CODES.contains(&code) => Err(MdaError::TempFail {
            code,
            text: said.unwrap_or_else(|| format!("mda exited with status {code}")),
        }),
        (Some(code), _) => Err(MdaError::PermFail {
            code,
            text: said.unwrap_or_else(|| format!("mda exited with status {code}")),
        }),
        (None, signal) => {
            let signal = signal.unwrap_or(0);
            Err(MdaError::Signal {
                signal,
                text: said.unwrap_or_else(|| format!("mda killed by signal {signal}")),
            })
        }
    }
}

/// The last line with something printable in it, control characters
/// replaced and cut to [`MAX_REASON`] characters.
fn last_line(output: &[u8]) -> Option<String> {
    output.split(|&b| b == b'\n').rev().find_map(|line| {
        let text: String = String::from_utf8_lossy(line)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let text = text.trim();
        (!text.is_empty()).then(|| text.chars().take(MAX_REASON).collect())
    })
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> MdaError {
    move |source| MdaError::Io { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_turns_crlf_into_lf_across_chunks() {
        let data = b"a\r\nb\rc\r\r\nd\r".to_vec();
        // A one-byte buffer splits every CRLF across reads.
        let mut reader = std::io::BufReader::with_capacity(1, std::io::Cursor::new(data));
        let mut feed = Feed::new(&mut reader);
        let mut out = Vec::new();
        for _ in 0..100 {
            feed.refill().unwrap();
            let rest = &feed.pending[feed.written..];
            if rest.is_empty() {
                break;
            }
            out.extend_from_slice(rest);
            feed.written = feed.pending.len();
        }
        assert_eq!(out, b"a\nb\rc\r\nd\r");
    }

    #[test]
    fn last_line_is_printable_and_bounded() {
        assert_eq!(last_line(b"one\ntwo\n\n  \n"), Some("two".into()));
        assert_eq!(last_line(b"a\x1b[31mred\r\n"), Some("a [31mred".into()));
        assert_eq!(last_line(b"\n\n"), None);
        let long = vec![b'x'; 10_000];
        assert_eq!(last_line(&long).map(|s| s.len()), Some(MAX_REASON));
        assert_eq!(last_line(b"caf\xc3\xa9 \xff"), Some("café \u{fffd}".into()));
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut tail = Tail::default();
        for i in 0..10_000u32 {
            tail.push(format!("{i}\n").as_bytes());
            assert!(tail.0.len() <= 2 * OUTPUT_TAIL + 6);
        }
        let bytes = tail.into_bytes();
        assert_eq!(bytes.len(), OUTPUT_TAIL);
        assert!(bytes.ends_with(b"9998\n9999\n"));
    }

    #[test]
    fn classes() {
        let perm = MdaError::PermFail {
            code: 1,
            text: "x".into(),
        };
        assert_eq!((perm.class(), perm.status()), (Class::Permanent, "5.2.0"));
        let temp = MdaError::TempFail {
            code: 75,
            text: "x".into(),
        };
        assert_eq!((temp.class(), temp.status()), (Class::Temporary, "4.2.0"));
        let lp = MdaError::from(DeliveryError::Loop("a@b".into()));
        assert_eq!((lp.class(), lp.status()), (Class::Permanent, "5.4.6"));
    }
}
