//! `smtpctl` and `mailq` (argv[0] personalities): the administrator's
//! commands. `encrypt` needs no daemon; the others ask the running daemon
//! over its control socket (found through the same configuration: `-f
//! FILE`, else `$RSMTPD_CONFIG`, else the default), and `show queue` reads
//! the spool itself when the daemon is down. Commands may be abbreviated
//! to any unambiguous prefix (`sh q` is `show queue`).

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use rsmtpd_config::model::Config;
use rsmtpd_ipc::BlockingChannel;

use rsmtpd_control::{Command, QueueLine, Reply, Request, Selector, Target};

const USAGE: &str = "usage: smtpctl [-f file] [--json] command [argument ...]";

/// Longest password line read from standard input.
const MAX_LINE: usize = 4096;

/// The command words, in the order they are matched. `ID` is an envelope
/// id, `SEL` an envelope id, a message id or `all`, `ARG` anything.
const GRAMMAR: &[&[&str]] = &[
    &["encrypt"],
    &["encrypt", "ARG"],
    &["show", "queue"],
    &["show", "envelope", "ID"],
    &["show", "message", "ID"],
    &["show", "stats"],
    &["show", "status"],
    &["show", "hosts"],
    &["show", "hoststats"],
    &["show", "relays"],
    &["show", "routes"],
    &["schedule", "SEL"],
    &["remove", "SEL"],
    &["pause", "mda"],
    &["pause", "mta"],
    &["pause", "smtp"],
    &["pause", "envelope", "SEL"],
    &["resume", "mda"],
    &["resume", "mta"],
    &["resume", "smtp"],
    &["resume", "envelope", "SEL"],
    &["resume", "route", "ARG"],
    &["discover", "SEL"],
    &["monitor"],
    &["log", "brief"],
    &["log", "verbose"],
    &["trace", "ARG"],
    &["untrace", "ARG"],
    &["profile", "ARG"],
    &["unprofile", "ARG"],
    &["update", "table", "ARG"],
    &["spf", "walk"],
    &["reload"],
];

/// The grammar entry `words` abbreviate, with the arguments in place.
fn resolve(words: &[String]) -> Result<(&'static [&'static str], Vec<String>), String> {
    let fits = |pattern: &[&str]| {
        pattern.len() == words.len()
            && pattern.iter().zip(words).all(|(p, w)| match *p {
                "ID" | "SEL" | "ARG" => true,
                keyword => !w.is_empty() && keyword.starts_with(w.as_str()),
            })
    };
    let matching: Vec<&'static [&'static str]> =
        GRAMMAR.iter().copied().filter(|p| fits(p)).collect();
    // An exact keyword wins over a longer one it prefixes (`show hosts`
    // against `show hoststats`).
    let exact: Vec<&'static [&'static str]> = matching
        .iter()
        .copied()
        .filter(|p| {
            p.iter()
                .zip(words)
                .all(|(p, w)| matches!(*p, "ID" | "SEL" | "ARG") || *p == w)
        })
        .collect();
    let pick = match (exact.as_slice(), matching.as_slice()) {
        ([one], _) | (_, [one]) => *one,
        (_, []) => return Err(format!("unknown command: {}", words.join(" "))),
        _ => {
            let names: Vec<String> = matching.iter().map(|p| p.join(" ")).collect();
            return Err(format!("ambiguous command, could be: {}", names.join(", ")));
        }
    };
    let args = pick
        .iter()
        .zip(words)
        .filter(|(p, _)| matches!(**p, "ID" | "SEL" | "ARG"))
        .map(|(_, w)| w.clone())
        .collect();
    Ok((pick, args))
}

struct Options {
    config: Option<PathBuf>,
    json: bool,
    words: Vec<String>,
}

fn options(args: &[OsString]) -> Result<Options, String> {
    let mut o = Options {
        config: None,
        json: false,
        words: Vec::new(),
    };
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => o.config = Some(PathBuf::from(it.next().ok_or("-f needs a file")?)),
            "--json" => o.json = true,
            _ if a.starts_with("-f") && a.len() > 2 => {
                o.config = Some(PathBuf::from(a.get(2..).unwrap_or_default()));
            }
            _ => o.words.push(a),
        }
    }
    Ok(o)
}

/// `mailq`: `smtpctl show queue`.
pub fn mailq(args: &[OsString]) -> ExitCode {
    let mut with: Vec<OsString> = args.to_vec();
    with.push("show".into());
    with.push("queue".into());
    main(&with)
}

pub fn main(args: &[OsString]) -> ExitCode {
    let o = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("smtpctl: {e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    if o.words.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    }
    let (pattern, args) = match resolve(&o.words) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smtpctl: {}\n{USAGE}", crate::logging::visible(&e));
            return ExitCode::from(1);
        }
    };
    if pattern.first() == Some(&"encrypt") {
        return encrypt(&args);
    }
    if pattern == ["spf", "walk"] {
        return match spf_walk() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smtpctl: {}", crate::logging::visible(&e));
                ExitCode::from(1)
            }
        };
    }
    if pattern == ["monitor"] {
        return match monitor(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smtpctl: {}", crate::logging::visible(&e));
                ExitCode::from(1)
            }
        };
    }
    let result = command(pattern, &args).and_then(|command| run(&o, command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpctl: {}", crate::logging::visible(&e));
            ExitCode::from(1)
        }
    }
}

/// The daemon command a resolved pattern means.
fn command(pattern: &[&str], args: &[String]) -> Result<Command, String> {
    let arg = || args.first().map(String::as_str).unwrap_or_default();
    let selector = || Selector::parse(arg()).ok_or_else(|| format!("invalid id: {}", arg()));
    let envelope = || match Selector::parse(arg()) {
        Some(Selector::Envelope(id)) => Ok(id),
        _ => Err(format!("invalid envelope id: {}", arg())),
    };
    Ok(match pattern {
        ["show", "queue"] => Command::ShowQueue,
        ["show", "envelope", _] => Command::ShowEnvelope(envelope()?),
        ["show", "message", _] => Command::ShowMessage(envelope()?),
        ["show", "stats"] => Command::ShowStats,
        ["show", "status"] => Command::ShowStatus,
        ["schedule", _] => Command::Schedule(selector()?),
        ["remove", _] => Command::Remove(selector()?),
        ["pause", "mda"] => Command::Pause(Target::Mda),
        ["pause", "mta"] => Command::Pause(Target::Mta),
        ["pause", "smtp"] => Command::Pause(Target::Smtp),
        ["pause", "envelope", _] => Command::Pause(Target::Envelope(selector()?)),
        ["resume", "mda"] => Command::Resume(Target::Mda),
        ["resume", "mta"] => Command::Resume(Target::Mta),
        ["resume", "smtp"] => Command::Resume(Target::Smtp),
        ["resume", "envelope", _] => Command::Resume(Target::Envelope(selector()?)),
        ["update", "table", _] => Command::UpdateTable(arg().to_owned()),
        ["reload"] => Command::Reload,
        ["discover", _] => Command::Discover(selector()?),
        ["show", "hosts"] => Command::ShowHosts,
        ["show", "hoststats"] => Command::ShowHoststats,
        ["show", "relays"] => Command::ShowRelays,
        ["show", "routes"] => Command::ShowRoutes,
        ["resume", "route", _] => Command::ResumeRoute(arg().to_owned()),
        ["log", "verbose"] => Command::LogVerbose(true),
        ["log", "brief"] => Command::LogVerbose(false),
        ["trace", _] => Command::Trace {
            subsystem: arg().to_owned(),
            on: true,
        },
        ["untrace", _] => Command::Trace {
            subsystem: arg().to_owned(),
            on: false,
        },
        ["profile", _] | ["unprofile", _] if matches!(arg(), "queue" | "imsg") => Command::Trace {
            subsystem: format!("profile-{}", arg()),
            on: pattern.first() == Some(&"profile"),
        },
        ["profile", _] | ["unprofile", _] => {
            return Err(format!(
                "unknown profiling subsystem {} (queue, imsg)",
                arg()
            ));
        }
        other => return Err(format!("{}: not available yet", other.join(" "))),
    })
}

/// The daemon's configuration (`-f`, `RSMTPD_CONFIG` or the default); its
/// diagnostics were printed.
fn config(o: &Options) -> Result<Config, String> {
    crate::sendmail::load_config(&crate::sendmail::config_path(o.config.as_deref()))
        .map_err(|_| "cannot read the configuration".to_string())
}

/// Asks the daemon; `show queue` falls back to reading the spool.
fn run(o: &Options, command: Command) -> Result<(), String> {
    let config = config(o)?;
    let (reply, mut fds) = match ask(&config, command.clone()) {
        Ok(answer) => answer,
        Err(Ask::NotRunning(_)) if command == Command::ShowQueue => {
            return offline_queue(&config.queue.path, o.json);
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut out = std::io::stdout().lock();
    let written = match reply {
        Reply::Refused(why) => return Err(why),
        Reply::Queue(lines) => print_queue(&mut out, &lines, o.json),
        Reply::Text(text) if o.json => {
            let value = text_as_json(&command, &text);
            serde_json::to_string_pretty(&value)
                .map_err(std::io::Error::other)
                .and_then(|t| writeln!(out, "{t}"))
        }
        Reply::Text(text) => {
            // Envelope values came from the network: no control characters
            // reach the terminal.
            text.lines()
                .try_for_each(|l| writeln!(out, "{}", crate::logging::visible(l)))
        }
        Reply::Done(text) => writeln!(out, "{text}"),
        Reply::Message => {
            let fd = fds.pop().ok_or("no message file came")?;
            let mut file = std::fs::File::from(fd);
            std::io::copy(&mut file, &mut out).map(|_| ())
        }
    };
    written.map_err(|e| format!("writing: {e}"))
}

/// `spf walk`: for each domain on standard input (one per line), the
/// addresses and networks its SPF record allows, one per line, for a
/// table. What could not be walked is said on standard error. The resolver
/// is the system's (or `RSMTPD_RESOLVER`'s, as for the daemon).
fn spf_walk() -> Result<(), String> {
    const MAX_DOMAINS: usize = 10_000;
    let knobs = rsmtpd_mta::Knobs::from_env().map_err(|e| e.to_string())?;
    let resolver = rsmtpd_mta::Resolver::from_knobs(&knobs).map_err(|e| e.to_string())?;
    let mut domains = Vec::new();
    for line in std::io::stdin().lock().lines().take(MAX_DOMAINS) {
        let line = line.map_err(|e| format!("reading: {e}"))?;
        let d = line.trim();
        if !d.is_empty() && !d.starts_with('#') {
            domains.push(d.to_owned());
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for domain in domains {
        let mut notes = Vec::new();
        let found = rt.block_on(rsmtpd_mta::spf::walk(&resolver, &domain, &mut notes));
        for n in notes {
            eprintln!("smtpctl: spf walk: {}", crate::logging::visible(&n));
        }
        for f in found {
            writeln!(out, "{}", crate::logging::visible(&f)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `monitor`: once a second, the counters of `show stats` as OpenSMTPD
/// prints them: absolute for what is current (clients, envelopes), the
/// increase since the line before for the rest; the first line has the
/// values since the start. Runs until interrupted.
fn monitor(o: &Options) -> Result<(), String> {
    const COLUMNS: [(&str, bool); 13] = [
        ("smtp.session", true),
        ("smtp.session.opened", false),
        ("smtp.session.closed", false),
        ("queue.envelope", true),
        ("queue.envelope.enqueued", false),
        ("queue.envelope.dequeued", false),
        ("delivery.ok", false),
        ("delivery.tempfail", false),
        ("delivery.permfail", false),
        ("delivery.loop", false),
        ("queue.envelope.expired", false),
        ("queue.envelope.removed", false),
        ("queue.bounce", false),
    ];
    let config = config(o)?;
    let mut previous: Option<Vec<u64>> = None;
    let mut out = std::io::stdout().lock();
    for line in 0u64.. {
        let text = match ask(&config, Command::ShowStats).map_err(|e| e.to_string())? {
            (Reply::Text(text), _) => text,
            (Reply::Refused(why), _) => return Err(why),
            _ => return Err("unexpected answer".into()),
        };
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let now: Vec<u64> = COLUMNS.iter().map(|(name, _)| value(name)).collect();
        if line % 20 == 0 {
            let header = "--- client ---  -- envelope --   ---- relay/delivery --- ------- misc -------\n\
                          curr conn disc  curr  enq  deq   ok tmpfail prmfail loop expire remove bounce";
            writeln!(out, "{header}").map_err(|e| e.to_string())?;
        }
        let shown: Vec<u64> = now
            .iter()
            .zip(COLUMNS)
            .enumerate()
            .map(|(i, (v, (_, absolute)))| match (&previous, absolute) {
                (Some(p), false) => v.saturating_sub(p.get(i).copied().unwrap_or(0)),
                _ => *v,
            })
            .collect();
        let s = |i: usize| shown.get(i).copied().unwrap_or(0);
        writeln!(
            out,
            "{:4} {:4} {:4}  {:4} {:4} {:4} {:4} {:7} {:7} {:4} {:6} {:6} {:6}",
            s(0),
            s(1),
            s(2),
            s(3),
            s(4),
            s(5),
            s(6),
            s(7),
            s(8),
            s(9),
            s(10),
            s(11),
            s(12)
        )
        .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        previous = Some(now);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(())
}

/// `--json` for the text answers: `name=value` lines (stats) and `key:
/// value` lines (an envelope) become an object, `show status` an object of
/// states, the other lists an array of lines.
fn text_as_json(command: &Command, text: &str) -> serde_json::Value {
    use serde_json::{Map, Value};
    let pairs = |sep: &str| {
        let mut map = Map::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(sep) {
                let v = v.trim();
                let value = v
                    .parse::<u64>()
                    .map_or_else(|_| Value::from(v), Value::from);
                map.insert(k.trim().to_owned(), value);
            }
        }
        Value::Object(map)
    };
    match command {
        Command::ShowStats => pairs("="),
        Command::ShowEnvelope(_) => pairs(": "),
        Command::ShowStatus => {
            let mut map = Map::new();
            for line in text.lines() {
                if let Some((k, v)) = line.split_once(' ') {
                    map.insert(k.to_ascii_lowercase(), Value::from(v));
                }
            }
            Value::Object(map)
        }
        _ => Value::Array(text.lines().map(Value::from).collect()),
    }
}

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
enum Ask {
    #[error("smtpd is not running ({0})")]
    NotRunning(String),
    #[error("the daemon: {0}")]
    Link(String),
}

/// One command to the daemon of `config`, and its answer.
fn ask(config: &Config, command: Command) -> Result<(Reply, Vec<std::os::fd::OwnedFd>), Ask> {
    let socket = rsmtpd_control::socket_path(config);
    let stream = UnixStream::connect(&socket)
        .map_err(|e| Ask::NotRunning(format!("{}: {e}", socket.display())))?;
    let mut channel: BlockingChannel<Request, Reply> =
        BlockingChannel::new(stream).map_err(|e| Ask::Link(e.to_string()))?;
    channel
        .send(&Request::Command(command), Vec::new())
        .map_err(|e| Ask::Link(e.to_string()))?;
    channel
        .recv()
        .map_err(|e| Ask::Link(e.to_string()))?
        .ok_or_else(|| Ask::Link("it closed the connection".into()))
}

/// `newaliases [-f file]` (and `sendmail -bi`): rebuild every aliases and
/// virtual table kept as a db from its text file (makemap), then have the
/// running daemon read each again (`update table`).
pub fn newaliases(args: &[OsString]) -> ExitCode {
    let o = match options(args) {
        Ok(o) if o.words.is_empty() => o,
        _ => {
            eprintln!("usage: newaliases [-f file]");
            return ExitCode::from(1);
        }
    };
    let Ok(config) = config(&o) else {
        return ExitCode::from(1);
    };
    match rebuild_aliases(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("newaliases: {}", crate::logging::visible(&e));
            ExitCode::from(1)
        }
    }
}

fn rebuild_aliases(config: &Config) -> Result<(), String> {
    use rsmtpd_config::model::{Dispatcher, Expansion};
    use rsmtpd_table::TableDecl;
    use rsmtpd_table::makemap::MapType;
    let mut tables: Vec<(usize, MapType)> = Vec::new();
    for action in &config.actions {
        if let Dispatcher::Local(local) = &action.dispatcher {
            let found = match local.expansion {
                Some(Expansion::Alias(id)) => Some((id.0, MapType::Aliases)),
                Some(Expansion::Virtual(id)) => Some((id.0, MapType::Plain)),
                None => None,
            };
            if let Some(t) = found
                && !tables.iter().any(|(i, _)| *i == t.0)
            {
                tables.push(t);
            }
        }
    }
    let mut running = true;
    for (index, ty) in tables {
        let Some(table) = config.tables.get(index) else {
            continue;
        };
        if let TableDecl::Db(db) = &table.decl {
            let source = db
                .to_str()
                .and_then(|p| p.strip_suffix(".db"))
                .map(std::path::PathBuf::from)
                .ok_or_else(|| format!("{}: a db table's name must end in .db", db.display()))?;
            let n = rsmtpd_table::makemap::makemap(&source, db, ty).map_err(|e| e.to_string())?;
            println!("{}: {n} entries", db.display());
        }
        if !matches!(table.decl, TableDecl::Db(_) | TableDecl::File(_)) || !running {
            continue;
        }
        match ask(config, Command::UpdateTable(table.name.clone())) {
            Ok((Reply::Done(_), _)) => println!("{}: updated in the running smtpd", table.name),
            Ok((Reply::Refused(why), _)) => return Err(format!("{}: {why}", table.name)),
            Ok(_) => return Err(format!("{}: unexpected answer", table.name)),
            // Tables are read at start: nothing more to do.
            Err(Ask::NotRunning(_)) => running = false,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// OpenSMTPD's `|`-separated line. Every field is escaped: addresses and
/// errors came from the network.
fn queue_line(l: &QueueLine) -> String {
    let v = |s: &str| crate::logging::visible(s).replace('|', "\\x7c");
    format!(
        "{:016x}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        l.evpid,
        l.family,
        l.kind,
        l.flags.join(","),
        v(&l.sender),
        v(&l.rcpt),
        v(&l.dest),
        l.created,
        l.expires,
        l.last_try,
        l.retries,
        l.runstate,
        l.delay.map(|d| d.to_string()).unwrap_or_default(),
        v(&l.error),
    )
}

fn print_queue(out: &mut impl Write, lines: &[QueueLine], json: bool) -> std::io::Result<()> {
    if json {
        // Ids as the hex every other output shows, not as numbers.
        let mut value = serde_json::to_value(lines).map_err(std::io::Error::other)?;
        if let Some(items) = value.as_array_mut() {
            for (item, line) in items.iter_mut().zip(lines) {
                if let Some(obj) = item.as_object_mut() {
                    obj.insert("evpid".into(), format!("{:016x}", line.evpid).into());
                }
            }
        }
        let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
        return writeln!(out, "{text}");
    }
    for l in lines {
        writeln!(out, "{}", queue_line(l))?;
    }
    Ok(())
}

/// The daemon is down: the envelopes on disk, runstate `offline`. Needs
/// the right to read the spool (root, or the user of a non-root daemon).
fn offline_queue(spool: &std::path::Path, json: bool) -> Result<(), String> {
    let envelopes = rsmtpd_queue::scan_read_only(spool)
        .map_err(|e| format!("smtpd is not running, and the spool: {e}"))?;
    let lines: Vec<QueueLine> = envelopes
        .iter()
        .map(|e| QueueLine::new(e, "offline", None))
        .collect();
    print_queue(&mut std::io::stdout().lock(), &lines, json).map_err(|e| format!("writing: {e}"))
}

/// One hash per password: the argument, or each line of standard input.
fn encrypt(rest: &[String]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut emit = |password: &[u8]| match rsmtpd_auth::encrypt(password) {
        Ok(hash) => writeln!(out, "{hash}").is_ok(),
        Err(e) => {
            eprintln!("smtpctl: encrypt: {e}");
            false
        }
    };
    match rest {
        [] => {
            let stdin = std::io::stdin().lock();
            for line in stdin.split(b'\n') {
                let Ok(mut line) = line else {
                    return ExitCode::from(1);
                };
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE || !emit(&line) {
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        [password] => {
            if emit(password.as_bytes()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(1)
        }
    }
}
