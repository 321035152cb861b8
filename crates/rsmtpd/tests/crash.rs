//! Crashes: kill -9 of the whole daemon under load loses nothing that was
//! acknowledged and delivers nothing twice; SIGTERM closes open sessions
//! with 421 and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rsmtpd_test_support::daemon::{Client, Daemon, Setup, default_body};
use rsmtpd_test_support::load::{LoadClient, Rng};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

/// Messages the client sends, one token each.
const MESSAGES: usize = 2000;
/// Messages per connection before QUIT.
const PER_CONNECTION: usize = 8;
/// Whole-daemon kills while the client sends.
const KILLS: usize = 5;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Whether the daemon's parent is still running (not a zombie).
fn alive(d: &Daemon) -> bool {
    let Some(pid) = d.pid() else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    state.is_some() && state != Some("Z")
}

/// What the client saw.
#[derive(Default)]
struct Outcome {
    acked: BTreeSet<String>,
    sent: usize,
    errors: usize,
    connects: usize,
    /// Why the client stopped before sending everything, if it did.
    gave_up: Option<String>,
    /// The last few errors, for the report.
    last_errors: Vec<String>,
}

fn load(addr: SocketAddr, run: &str, sent: &AtomicUsize, stop: &AtomicBool) -> Outcome {
    let mut out = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn: Option<LoadClient> = None;
    let mut on_conn = 0;
    for i in 0..MESSAGES {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let token = format!("tok-{run}-{i:05}");
        // Connect, retrying while the daemon restarts (bounded).
        let mut tries = 0;
        let mut last = String::new();
        let since = Instant::now();
        // Longer than a restart may take (20 s): a slow start-up on a busy
        // machine is not the client's reason to stop.
        let give_up = Instant::now() + Duration::from_secs(30);
        while conn.is_none() && Instant::now() < give_up.min(deadline) {
            tries += 1;
            match LoadClient::connect(addr, "crash.example") {
                Ok(c) => {
                    conn = Some(c);
                    out.connects += 1;
                    on_conn = 0;
                }
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            out.gave_up = Some(format!(
                "no connection after {tries} tries in {:?}: {last}",
                since.elapsed()
            ));
            break;
        };
        out.sent += 1;
        sent.store(out.sent, Ordering::Relaxed);
        let data = format!("Subject: {token}\r\nX-Token: {token}\r\n\r\nmessage {token}");
        match c.message(&["sink@example.org".to_string()], &data) {
            Ok(true) => {
                out.acked.insert(token);
                on_conn += 1;
                if on_conn >= PER_CONNECTION {
                    let _ = c.cmd("QUIT");
                    conn = None;
                }
            }
            // Not acknowledged: the token is never sent again, so every
            // token is in at most one message.
            Ok(false) => {
                out.errors += 1;
                out.last_errors.push(format!("{token}: not acknowledged"));
                conn = None;
            }
            Err(e) => {
                out.errors += 1;
                out.last_errors.push(format!("{token}: {e}"));
                conn = None;
            }
        }
    }
    if let Some(mut c) = conn {
        let _ = c.cmd("QUIT");
    }
    out
}

/// Every file under the spool's incoming/.
fn incoming(spool: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(spool.join("incoming"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Message directories still in queue/<bucket>/.
fn queued(spool: &Path) -> usize {
    let Ok(buckets) = std::fs::read_dir(spool.join("queue")) else {
        return 0;
    };
    buckets
        .flatten()
        .map(|b| {
            std::fs::read_dir(b.path())
                .map(|rd| rd.count())
                .unwrap_or(0)
        })
        .sum()
}

/// Delivered files per token.
fn delivered_tokens(d: &Daemon, run: &str) -> BTreeMap<String, usize> {
    let prefix = format!("X-Token: tok-{run}-");
    let mut per_token = BTreeMap::new();
    for file in d.delivered() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let token = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|n| format!("tok-{run}-{n}"))
            .unwrap_or_else(|| panic!("no token in {}:\n{text}", file.display()));
        *per_token.entry(token).or_insert(0) += 1;
    }
    per_token
}

#[test]
fn kill_9_under_load_loses_and_duplicates_nothing_acknowledged() {
    let seed = std::env::var("RSMTPD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test seed {seed} (set RSMTPD_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let body = default_body();
    let mut d = Daemon::start(
        smtpd(),
        &Setup {
            name: "crash-kill9",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    let run = format!("{:x}", seed & 0xffff_ffff);
    let addr = d.addr();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (run, sent, stop) = (run.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || load(addr, &run, &sent, &stop))
    };

    // Kill when the client has sent a random number of messages, spread
    // over the run, plus a random sub-second delay.
    let mut marks: Vec<usize> = (0..KILLS)
        .map(|k| {
            let span = MESSAGES * 9 / 10 / KILLS;
            (k * span + rng.below(span as u64) as usize).max(20)
        })
        .collect();
    marks.sort_unstable();
    let started = Instant::now();
    let mut kills = 0;
    for mark in marks {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::Relaxed) < mark
            && Instant::now() < deadline
            && !client.is_finished()
        {
            if !alive(&d) {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "smtpd died on its own after {kills} kills; log:\n{}",
                    d.log()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if client.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_micros(rng.below(50_000)));
        d.kill_all();
        kills += 1;
        // Sometimes restart at once, sometimes let the client fail a while.
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        d.spawn(&[]);
    }
    let outcome = match client.join() {
        Ok(o) => o,
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            panic!("client thread panicked");
        }
    };
    let load_time = started.elapsed();
    println!("crash test: client errors: {:?}", outcome.last_errors);
    assert!(
        outcome.gave_up.is_none(),
        "the client gave up: {:?}; log:\n{}",
        outcome.gave_up,
        d.log()
    );

    // Once more, then let the queue drain.
    d.kill_all();
    d.spawn(&[]);
    let left = incoming(&d.spool());
    assert!(left.is_empty(), "incoming/ after start-up: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let per_token = delivered_tokens(&d, &run);
        let missing = outcome
            .acked
            .iter()
            .filter(|t| !per_token.contains_key(*t))
            .count();
        if (missing == 0 && queued(&d.spool()) == 0) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A last look after a pause: nothing may arrive late a second time.
    std::thread::sleep(Duration::from_millis(300));
    let per_token = delivered_tokens(&d, &run);
    let missing: Vec<&String> = outcome
        .acked
        .iter()
        .filter(|t| !per_token.contains_key(*t))
        .collect();
    let duplicated: Vec<(&String, &usize)> = per_token.iter().filter(|(_, n)| **n > 1).collect();
    let unacked_delivered = per_token
        .keys()
        .filter(|t| !outcome.acked.contains(*t))
        .count();
    let files: usize = per_token.values().sum();
    let log = d.log();
    let corrupt: Vec<PathBuf> = std::fs::read_dir(d.spool().join("corrupt"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    println!(
        "crash test: log: {} uncommitted messages removed at start-up, {} moved aside, \
         {} resume lines",
        count(&log, "removed uncommitted message"),
        count(&log, "moved aside"),
        count(&log, "queue: resuming"),
    );
    println!(
        "crash test: kills={kills} sent={} acked={} errors={} connections={} \
         delivered files={files} distinct={} unacked-but-delivered={unacked_delivered} \
         duplicates={} missing={} load time={load_time:?} still queued={}",
        outcome.sent,
        outcome.acked.len(),
        outcome.errors,
        outcome.connects,
        per_token.len(),
        duplicated.len(),
        missing.len(),
        queued(&d.spool()),
    );
    assert!(kills >= 4, "only {kills} kills happened during the load");
    assert!(
        outcome.acked.len() >= MESSAGES / 2,
        "too few acknowledged messages to mean anything: {}",
        outcome.acked.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {:?}",
        duplicated.iter().take(10).collect::<Vec<_>>()
    );
    // Commits and updates are renames: a crash never leaves a torn file.
    assert!(corrupt.is_empty(), "corrupt/ after kill -9: {corrupt:?}");
    let left = incoming(&d.spool());
    assert!(left.is_empty(), "incoming/ after draining: {left:?}");
}

#[test]
fn sigterm_says_421_to_open_sessions_and_exits_0() {
    let body = default_body();
    let mut d = Daemon::start(
        smtpd(),
        &Setup {
            name: "crash-sigterm",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok\r\n");
    let code = d.stop();
    assert_eq!(code, Some(0), "exit code; log:\n{}", d.log());
    let reply = c.reply();
    assert!(reply.starts_with("421 4.3.0 "), "{reply:?}");
    assert!(c.closed(), "connection still open after the 421");
}
