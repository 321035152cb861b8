//! One line per event, to stderr (`-d`) or syslog's mail facility, in
//! OpenSMTPD's style (`smtp-in: session ...: connected address=...`,
//! `delivery: Ok for ...`) so existing log watchers keep working.
//!
//! Anything that came from outside goes through [`visible`] first: a log
//! line is one line, whatever a client sends.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

impl Level {
    /// syslog priority with the mail facility (LOG_MAIL = 2 << 3).
    fn syslog_priority(self) -> u8 {
        16 + match self {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }
}

enum Sink {
    Stderr,
    /// Connected to /dev/log before any chroot.
    Syslog(UnixDatagram),
}

static SINK: OnceLock<Mutex<Sink>> = OnceLock::new();
static VERBOSE: AtomicU8 = AtomicU8::new(0);
/// Subsystems whose debug lines are written even when not verbose
/// (`smtpctl trace`), a bit each: see [`Settings`].
static TRACES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Verbosity and traces, as `smtpctl log` and `trace` set them; the parent
/// passes them to every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub verbose: u8,
    pub traces: u32,
}

/// smtpctl's trace subsystems and the log prefixes that are theirs.
/// Subsystems without lines of their own here (imsg, io, filters, stat,
/// mproc) are accepted and trace nothing.
const SUBSYSTEMS: [(&str, &[&str]); 15] = [
    ("imsg", &[]),
    ("io", &[]),
    ("smtp", &["smtp-in:"]),
    ("filters", &[]),
    ("mta", &["relay:", "mta:"]),
    ("bounce", &["bounce:"]),
    ("scheduler", &["scheduler:", "queue:"]),
    ("expand", &["lookup: expanding"]),
    ("lookup", &["lookup:"]),
    ("stat", &[]),
    ("rules", &["lookup: route"]),
    ("mproc", &[]),
    ("all", &[""]),
    // `smtpctl profile`: timings of queue I/O; imsg has none here.
    ("profile-queue", &["profile: queue"]),
    ("profile-imsg", &[]),
];

/// The bit of trace subsystem `name`.
pub fn trace_bit(name: &str) -> Option<u32> {
    SUBSYSTEMS
        .iter()
        .position(|(n, _)| *n == name)
        .map(|i| 1u32 << i)
}

pub fn apply(settings: Settings) {
    VERBOSE.store(settings.verbose, Ordering::Relaxed);
    TRACES.store(settings.traces, Ordering::Relaxed);
}

/// Whether a debug line is traced.
fn traced(line: &str) -> bool {
    let traces = TRACES.load(Ordering::Relaxed);
    traces != 0
        && SUBSYSTEMS.iter().enumerate().any(|(i, (_, prefixes))| {
            traces & (1 << i) != 0 && prefixes.iter().any(|p| line.starts_with(p))
        })
}

/// Choose where lines go. Call once per process, before chroot (syslog's
/// socket lives outside any chroot). Without it, lines go to stderr.
pub fn init(foreground: bool, verbose: u8) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    let sink = if foreground {
        Sink::Stderr
    } else {
        match UnixDatagram::unbound().and_then(|s| s.connect("/dev/log").map(|()| s)) {
            Ok(sock) => Sink::Syslog(sock),
            Err(_) => Sink::Stderr,
        }
    };
    let _ = SINK.set(Mutex::new(sink));
}

pub fn verbose() -> u8 {
    VERBOSE.load(Ordering::Relaxed)
}

/// Write one line. Used through the `log_*!` macros.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let line = args.to_string();
    if level == Level::Debug && verbose() == 0 && !traced(&line) {
        return;
    }
    let sink = SINK.get_or_init(|| Mutex::new(Sink::Stderr));
    let Ok(mut sink) = sink.lock() else {
        return;
    };
    match &mut *sink {
        Sink::Stderr => {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
        Sink::Syslog(sock) => {
            let msg = format!(
                "<{}>smtpd[{}]: {line}",
                level.syslog_priority(),
                std::process::id()
            );
            if sock.send(msg.as_bytes()).is_err() {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }
}

#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::logging::write($crate::logging::Level::Error, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::logging::write($crate::logging::Level::Warning, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::logging::write($crate::logging::Level::Info, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! log_debug {
    ($($t:tt)*) => { $crate::logging::write($crate::logging::Level::Debug, format_args!($($t)*)) };
}

/// `text` safe for a log line: control characters, backslashes, quotes
/// and non-ASCII bytes escaped as `\xNN` (like OpenSMTPD's strnvis), so a
/// client cannot forge a line or hide one.
pub fn visible(text: &str) -> Cow<'_, str> {
    let clean = |c: char| c.is_ascii_graphic() && c != '\\' && c != '"' || c == ' ';
    if text.chars().all(clean) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if clean(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_keeps_plain_text() {
        assert!(matches!(visible("a@b.c <x> y=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn visible_escapes_what_could_forge_a_line() {
        assert_eq!(visible("a\r\nb"), "a\\x0d\\x0ab");
        assert_eq!(visible("q\"\\"), "q\\x22\\x5c");
        assert_eq!(visible("é"), "\\xc3\\xa9");
        assert_eq!(visible("\0\x1b[31m"), "\\x00\\x1b[31m");
    }
}
