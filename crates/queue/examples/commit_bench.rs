//! Commits per second on this disk, 1 vs many concurrent requesters, with
//! and without group commit.
//!
//! cargo run --release -p rsmtpd-queue --example commit_bench -- [DIR] [SECONDS]
//!
//! DIR (default: a fresh directory under the temp dir) must be on the disk
//! to measure; it is removed afterwards.

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsmtpd_queue::{
    BodyType, Committer, Dispatcher, Envelope, EnvelopeId, Origin, RcptState, Sender, Spool,
};

fn envelope(id: EnvelopeId) -> Envelope {
    Envelope {
        id,
        created: 1_800_000_000,
        ttl: 4 * 86400,
        action: "relay".into(),
        dispatcher: Dispatcher::Relay,
        sender: Sender::Address("a@example.org".into()),
        rcpt: "b@example.net".into(),
        dest: "b@example.net".into(),
        user: None,
        target: None,
        dsn_notify: None,
        dsn_orcpt: None,
        dsn_ret: None,
        dsn_envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        helo: "client.example.org".into(),
        origin: Origin::Inet {
            addr: [192, 0, 2, 1].into(),
            rdns: None,
        },
        hostname: "mx.example.org".into(),
        tag: None,
        auth_user: None,
        retry: 0,
        last_try: None,
        next_try: 1_800_000_000,
        last_error: None,
        hold: false,
        state: RcptState::Pending,
    }
}

/// One message as a session would: create, write 2 KiB, commit.
fn one(spool: &Spool, group: Option<&Committer>) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (m, mut f) = spool.create_message()?;
    f.write_all(&[b'x'; 2048])?;
    drop(f);
    let envs = vec![envelope(spool.new_envelope_id(m)?)];
    match group {
        Some(c) => c.commit(m, envs)?,
        None => spool.commit(m, envs)?,
    }
    Ok(())
}

fn run(
    spool: &Arc<Spool>,
    threads: usize,
    grouped: bool,
    secs: u64,
) -> Result<(u64, f64, u64), Box<dyn Error + Send + Sync>> {
    let committer = Arc::new(Committer::new(spool.clone()));
    let stop = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let spool = spool.clone();
            let c = committer.clone();
            std::thread::spawn(move || -> Result<u64, Box<dyn Error + Send + Sync>> {
                let mut n = 0u64;
                while Instant::now() < stop {
                    one(&spool, grouped.then_some(&*c))?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "thread panicked")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok((total, total as f64 / elapsed, committer.rounds()))
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("rsmtpd-commit-bench-{}", std::process::id())),
    };
    let secs: u64 = match args.next() {
        Some(s) => s.parse()?,
        None => 5,
    };
    let spool = Arc::new(Spool::open(&dir)?);
    println!(
        "spool {} , {secs} s per run, 2 KiB message, 1 recipient",
        dir.display()
    );
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>8}",
        "threads", "group", "commits", "commits/s", "rounds"
    );
    for (threads, grouped) in [(1, false), (1, true), (20, false), (20, true)] {
        let (n, rate, rounds) = run(&spool, threads, grouped, secs)?;
        println!(
            "{threads:>8} {:>8} {n:>10} {rate:>10.0} {:>8}",
            if grouped { "yes" } else { "no" },
            if grouped {
                rounds.to_string()
            } else {
                "-".into()
            }
        );
        // Empty the queue between runs so each starts alike.
        let report = spool.load()?;
        for e in report.envelopes {
            spool.remove_envelope(e.id)?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
