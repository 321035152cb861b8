//! Relaying when things go wrong: kill -9 of the whole daemon while it
//! relays under load, and remote servers (scripted sinks) that refuse,
//! drop the connection, answer with malformed replies or answer slowly.
//! Assertions are on the exact bytes the sink received and on the
//! daemon's `relay: Ok|TempFail|PermFail for ...` log lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rsmtpd_test_support::daemon::{Client, Daemon, Setup, current_user};
use rsmtpd_test_support::load::{LoadClient, Rng};
use rsmtpd_test_support::sink::{
    Action, Behaviour, Conns, Malformed, Message, Sink, Stage, Transcript,
};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

/// A daemon relaying `remote.example` to the sink at `sink` and
/// delivering `example.org` (where bounces go) to its Maildir.
/// Each transaction on a connection of its own: the transcripts the tests
/// check are per connection.
fn start(name: &str, sink: SocketAddr, env: &[(&str, &str)]) -> Daemon {
    start_with(name, sink, "mta limit session-mail-max 1\n", env)
}

fn start_with(name: &str, sink: SocketAddr, extra: &str, env: &[(&str, &str)]) -> Daemon {
    let user = current_user();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n{extra}\
         action \"out\" relay host \"smtp://{sink}\"\n\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n\
         match from any for domain \"remote.example\" action \"out\"\n\
         match from any for domain \"example.org\" action \"local\"\n"
    );
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body: &body,
            args: &[],
            env,
        },
    )
}

/// One message from alice@example.org; panics unless it gets its 250.
fn send(d: &Daemon, to: &[&str], body: &str) {
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    for t in to {
        let r = c.cmd(&format!("RCPT TO:<{t}>"));
        assert!(r.starts_with("250"), "{t}: {r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("{body}\r\n."));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");
}

/// One `relay: RESULT for EVPID: from=<..>, to=<..>, stat=..` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RelayLine {
    result: String,
    evpid: String,
    to: String,
    stat: String,
}

/// The outcome lines of the log, in order.
fn relay_lines(log: &str) -> Vec<RelayLine> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("relay: ")?;
            let (result, rest) = rest.split_once(" for ")?;
            if !matches!(result, "Ok" | "TempFail" | "PermFail") {
                return None;
            }
            let (evpid, rest) = rest.split_once(": from=<")?;
            let (_, rest) = rest.split_once(">, to=<")?;
            let (to, stat) = rest.split_once(">, stat=")?;
            Some(RelayLine {
                result: result.into(),
                evpid: evpid.into(),
                to: to.into(),
                stat: stat.into(),
            })
        })
        .collect()
}

/// The outcome lines for recipient `to`.
fn lines_for(d: &Daemon, to: &str) -> Vec<RelayLine> {
    relay_lines(&d.log())
        .into_iter()
        .filter(|l| l.to == to)
        .collect()
}

/// Waits (bounded) until recipient `to` has `n` outcome lines.
fn wait_for_outcomes(d: &Daemon, to: &str, n: usize, timeout: Duration) -> Vec<RelayLine> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = lines_for(d, to);
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn results(lines: &[RelayLine]) -> Vec<&str> {
    lines.iter().map(|l| l.result.as_str()).collect()
}

/// The name the daemon gave in EHLO on a connection (from its first line).
fn helo_of(t: &Transcript) -> String {
    let received = String::from_utf8_lossy(&t.received()).into_owned();
    let first = received.split("\r\n").next().unwrap_or_default();
    let name = first
        .strip_prefix("EHLO ")
        .unwrap_or_else(|| panic!("no EHLO first:\n{}", t.text()));
    assert!(
        !name.is_empty() && !name.contains(' '),
        "EHLO name {name:?}"
    );
    name.to_string()
}

/// What an accepting sink receives for one transaction that reaches the
/// final dot: `rcpts` pipelined after MAIL, then DATA, the content as
/// received (`raw`, still dot-stuffed), the dot, and QUIT.
fn full_transaction(helo: &str, rcpts: &[&str], raw: &[u8]) -> String {
    let mut v = format!("EHLO {helo}\r\nMAIL FROM:<alice@example.org>\r\n");
    for r in rcpts {
        v.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    v.push_str("DATA\r\n");
    v.push_str(&String::from_utf8_lossy(raw));
    v.push_str(".\r\nQUIT\r\n");
    v
}

/// What the sink receives when the transaction ends before DATA.
fn envelope_only(helo: &str, rcpts: &[&str]) -> String {
    let mut v = format!("EHLO {helo}\r\nMAIL FROM:<alice@example.org>\r\n");
    for r in rcpts {
        v.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    v.push_str("QUIT\r\n");
    v
}

/// The bytes the sink received on connection `i`, as text.
/// Everything the daemon sent on connection `i`, once it ended (outcomes
/// are reported before the QUIT, so the log can be ahead of the wire).
fn received(sink: &Sink, i: usize) -> String {
    sink.wait_closed(i, Duration::from_secs(10));
    String::from_utf8_lossy(&sink.received(i)).into_owned()
}

/// The message as the daemon stored it: our Received line, then exactly
/// what the client sent.
fn assert_content(m: &Message, body: &str) {
    let data = String::from_utf8_lossy(&m.data);
    assert!(
        data.starts_with("Received: from client.example ([127.0.0.1]) by "),
        "{data}"
    );
    assert!(data.ends_with(&format!("\r\n{body}\r\n")), "{data}");
    assert_eq!(m.data, m.raw, "nothing in this content needs dot-stuffing");
}

fn show(sink: &Sink) -> String {
    (0..sink.connections())
        .map(|i| format!("--- connection {i}\n{}", sink.transcript(i).text()))
        .collect()
}

// ---------------------------------------------------------------------------
// Remote faults.

#[test]
fn a_4xx_to_mail_on_the_first_connections_is_retried_then_delivered_once() {
    const K: usize = 2;
    let sink = Sink::start_on(
        "127.0.0.3:0".parse().unwrap(),
        Behaviour::accept().mail_tempfail_first(K),
    );
    let d = start(
        "rf-mail4xx",
        sink.addr(),
        &[("RSMTPD_RETRY_BASE_RELAY", "1")],
    );
    let body = "Subject: retried\r\n\r\nafter two 451s";
    send(&d, &["bob@remote.example"], body);
    // Tries at 0, +1 s, +1+4 s.
    let got = sink.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\nlog:\n{}", show(&sink), d.log());
    let lines = wait_for_outcomes(&d, "bob@remote.example", K + 1, Duration::from_secs(10));
    // Long enough for a wrong extra try (the next would be 9 s later, but
    // a duplicate caused by the Ok not being recorded would come at once).
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(sink.connections(), K + 1, "{}", show(&sink));
    assert_eq!(sink.transactions().len(), 1, "{}", show(&sink));
    let helo = helo_of(&sink.transcript(0));
    for i in 0..K {
        assert_eq!(
            received(&sink, i),
            envelope_only(&helo, &["bob@remote.example"]),
            "connection {i}:\n{}",
            sink.transcript(i).text()
        );
    }
    let m = &got[0];
    assert_eq!(m.connection, K);
    assert_eq!(m.mail_from, "alice@example.org");
    assert_eq!(m.rcpts, vec!["bob@remote.example"]);
    assert_content(m, body);
    assert_eq!(
        received(&sink, K),
        full_transaction(&helo, &["bob@remote.example"], &m.raw),
        "{}",
        sink.transcript(K).text()
    );

    let lines_now = lines_for(&d, "bob@remote.example");
    assert_eq!(lines_now, lines, "no outcome after the Ok");
    assert_eq!(results(&lines), vec!["TempFail", "TempFail", "Ok"]);
    assert!(lines.iter().all(|l| l.evpid == lines[0].evpid), "{lines:?}");
    for l in &lines[..K] {
        assert_eq!(l.stat, "451 Try again later");
    }
    assert_eq!(lines[K].stat, "Delivered");
}

#[test]
fn a_5xx_recipient_fails_permanently_bounces_and_the_other_is_delivered() {
    let sink = Sink::start_on(
        "127.0.0.3:0".parse().unwrap(),
        Behaviour::accept().refuse_rcpt("nobody@remote.example"),
    );
    let d = start(
        "rf-rcpt5xx",
        sink.addr(),
        &[("RSMTPD_RETRY_BASE_RELAY", "1")],
    );
    let body = "Subject: half\r\n\r\none of two";
    send(&d, &["bob@remote.example", "nobody@remote.example"], body);
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{}\nlog:\n{}", show(&sink), d.log());
    d.wait_for_log("bounce: ", Duration::from_secs(10));
    let bounces = d.wait_for_delivered(1, Duration::from_secs(10));
    // Nothing is retried: neither recipient's outcome was temporary.
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(sink.connections(), 1, "{}", show(&sink));
    let m = &got[0];
    assert_eq!(m.rcpts, vec!["bob@remote.example"]);
    assert_content(m, body);
    let helo = helo_of(&sink.transcript(0));
    // The two envelopes go in one transaction, in no particular order.
    let received = received(&sink, 0);
    let orders = [
        ["bob@remote.example", "nobody@remote.example"],
        ["nobody@remote.example", "bob@remote.example"],
    ];
    assert!(
        orders
            .iter()
            .any(|o| received == full_transaction(&helo, o, &m.raw)),
        "{}",
        sink.transcript(0).text()
    );

    let bob = lines_for(&d, "bob@remote.example");
    assert_eq!(results(&bob), vec!["Ok"]);
    let nobody = lines_for(&d, "nobody@remote.example");
    assert_eq!(results(&nobody), vec!["PermFail"], "{}", d.log());
    assert_eq!(nobody[0].stat, "550 No such user");

    let log = d.log();
    let bounce_lines: Vec<&str> = log.lines().filter(|l| l.starts_with("bounce: ")).collect();
    assert_eq!(bounce_lines.len(), 1, "{log}");
    assert!(
        bounce_lines[0]
            .contains(" for nobody@remote.example: sent to alice@example.org as message ")
            && bounce_lines[0].ends_with(": 550 No such user"),
        "{}",
        bounce_lines[0]
    );
    assert_eq!(bounces.len(), 1, "{log}");
    let report = std::fs::read_to_string(&bounces[0]).unwrap();
    for want in [
        "Return-Path: <>",
        "Final-Recipient: rfc822; nobody@remote.example",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 No such user",
        "Subject: half",
    ] {
        assert!(
            report.contains(want),
            "{want:?} not in the bounce:\n{report}"
        );
    }
    assert!(
        !report.contains("rfc822; bob@remote.example"),
        "the delivered recipient is not reported:\n{report}"
    );
}

#[test]
fn a_connection_dropped_during_data_fails_temporarily_then_delivers_once() {
    let sink = Sink::start_on(
        "127.0.0.3:0".parse().unwrap(),
        Behaviour::accept().drop_in_data_on(Conns::First(1), 3000),
    );
    let d = start(
        "rf-dropdata",
        sink.addr(),
        &[("RSMTPD_RETRY_BASE_RELAY", "1")],
    );
    // Well over the 3000 bytes after which the sink hangs up.
    let lines: Vec<String> = (0..1500)
        .map(|i| format!("line {i:05} of the body"))
        .collect();
    let body = format!("Subject: big\r\n\r\n{}", lines.join("\r\n"));
    send(&d, &["bob@remote.example"], &body);
    let got = sink.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\nlog:\n{}", show(&sink), d.log());
    let out = wait_for_outcomes(&d, "bob@remote.example", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(sink.connections(), 2, "{}", show(&sink));
    // The first connection never reached the final dot.
    let all = sink.transactions();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(sink.messages().len(), 1);
    let m = &got[0];
    assert_eq!(m.connection, 1);
    assert_content(m, &body);
    let helo = helo_of(&sink.transcript(0));
    assert_eq!(
        received(&sink, 1),
        full_transaction(&helo, &["bob@remote.example"], &m.raw),
    );
    let first = sink.received(0);
    let head = format!(
        "EHLO {helo}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@remote.example>\r\nDATA\r\n"
    );
    assert!(
        first.starts_with(head.as_bytes()),
        "{}",
        sink.transcript(0).text()
    );
    let partial = &first[head.len()..];
    assert!(
        partial.len() >= 3000 && m.raw.starts_with(partial),
        "connection 0 got {} bytes of content, a prefix of the message",
        partial.len()
    );
    assert!(
        !partial.windows(5).any(|w| w == b"\r\n.\r\n"),
        "no final dot on the dropped connection"
    );

    assert_eq!(lines_for(&d, "bob@remote.example"), out);
    assert_eq!(results(&out), vec!["TempFail", "Ok"], "{}", d.log());
    assert_eq!(out[0].evpid, out[1].evpid);
    // How the break shows depends on timing (EPIPE, ECONNRESET or EOF).
    println!("dropped in DATA: stat={}", out[0].stat);
    let at = format!("127.0.0.3 [{}]: ", sink.addr());
    assert!(out[0].stat.starts_with(&at), "{}", out[0].stat);
    assert_eq!(out[1].stat, "Delivered");
}

/// One malformed (or hostile) reply to MAIL and what must come of it.
struct Shape {
    name: &'static str,
    bytes: Vec<u8>,
    /// The relay outcome.
    result: &'static str,
    /// Its `stat=`, with `{at}` for the sink's `host [ip:port]`; `None`
    /// when only checked for being printable ASCII.
    stat: Option<&'static str>,
}

impl Shape {
    fn new(name: &'static str, bytes: Vec<u8>, result: &'static str, stat: &'static str) -> Shape {
        Shape {
            name,
            bytes,
            result,
            stat: Some(stat),
        }
    }
}

#[test]
fn malformed_replies_fail_temporarily_and_never_reach_the_log_raw() {
    let shapes = vec![
        Shape::new(
            "bare LF",
            Malformed::BareLf.bytes(Stage::Mail),
            "TempFail",
            "{at}: malformed reply: bare LF in reply",
        ),
        Shape::new(
            "code 600",
            Malformed::BadCode.bytes(Stage::Mail),
            "TempFail",
            "{at}: malformed reply: reply code is not three digits in 200-599",
        ),
        Shape::new(
            "code 099",
            Malformed::BadCodeLow.bytes(Stage::Mail),
            "TempFail",
            "{at}: malformed reply: reply code is not three digits in 200-599",
        ),
        // `250-first line` then `250`: RFC 5321 4.2's grammar allows a last
        // line of only the code (`Reply-code [ SP textstring ] CRLF`); the
        // CVE was OpenSMTPD reading past such a line. Read safely, it is a
        // positive reply to MAIL and the message goes.
        Shape::new(
            "CVE-2020-8794 short last line",
            Malformed::ShortLastLine.bytes(Stage::Mail),
            "Ok",
            "Delivered",
        ),
        Shape::new(
            "CVE-2020-8794 short last line, 4xx",
            b"451-first line\r\n451\r\n".to_vec(),
            "TempFail",
            "451 first line ",
        ),
        Shape::new(
            "overlong line",
            Malformed::Overlong(600).bytes(Stage::Mail),
            "TempFail",
            "{at}: malformed reply: reply line longer than 512 octets",
        ),
        Shape::new(
            "mixed codes",
            Malformed::MixedCodes.bytes(Stage::Mail),
            "TempFail",
            "{at}: malformed reply: multi-line reply mixes codes 250 and 550",
        ),
        Shape::new(
            "no separator",
            Malformed::NoSeparator.bytes(Stage::Mail),
            "TempFail",
            "{at}: malformed reply: reply code not followed by space or dash",
        ),
        // The pipelined RCPT's `250 2.1.5 Ok` ends the reply to MAIL; the
        // reply to RCPT never comes and the sink hangs up when idle.
        Shape::new(
            "unfinished multi-line",
            Malformed::Unfinished.bytes(Stage::Mail),
            "TempFail",
            "{at}: connection closed by the server while waiting for RCPT #0",
        ),
        Shape::new(
            "bare CR forging a log line",
            b"250 2.1.0 Ok\rrelay: Ok for 0000000000000000: forged\r\n".to_vec(),
            "TempFail",
            "{at}: malformed reply: bare CR in reply",
        ),
        Shape::new(
            "valid 451 whose text forges a log line",
            b"451-4.3.0 first\r\n451 4.3.0 relay: Ok for 0000000000000000: forged\r\n".to_vec(),
            "TempFail",
            "451 first relay: Ok for 0000000000000000: forged",
        ),
        Shape {
            name: "control and non-ASCII bytes in a 451",
            bytes: b"451 4.3.0 \x1b[31mred\x00\xff\"q\\\r\n".to_vec(),
            result: "TempFail",
            stat: None,
        },
    ];
    let mut behaviour = Behaviour::accept().idle_timeout(Duration::from_secs(2));
    for (i, s) in shapes.iter().enumerate() {
        behaviour = behaviour.on(Stage::Mail, Conns::Only(i), Action::Reply(s.bytes.clone()));
    }
    let sink = Sink::start_on("127.0.0.3:0".parse().unwrap(), behaviour);
    // No retry within the test: connection i is message i's only try.
    let d = start(
        "rf-malformed",
        sink.addr(),
        &[("RSMTPD_RETRY_BASE_RELAY", "600")],
    );
    let at = format!("127.0.0.3 [{}]", sink.addr());
    let mut failures = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let to = format!("m{i}@remote.example");
        send(&d, &[&to], &format!("Subject: shape {i}\r\n\r\n{}", s.name));
        let lines = wait_for_outcomes(&d, &to, 1, Duration::from_secs(15));
        let conn = sink.wait_for_connections(i + 1, Duration::from_secs(5));
        let got = results(&lines);
        let stat = lines.first().map(|l| l.stat.clone()).unwrap_or_default();
        println!("{:40} -> {got:?} stat={stat:?}", s.name);
        if got != vec![s.result] || conn != i + 1 {
            failures.push(format!(
                "{}: outcomes {got:?} (want [{:?}]), {conn} connections (want {}):\n{}",
                s.name,
                s.result,
                i + 1,
                sink.transcript(i).text()
            ));
        }
        match s.stat {
            Some(want) => {
                let want = want.replace("{at}", &at);
                if stat != want {
                    failures.push(format!("{}: stat {stat:?}, want {want:?}", s.name));
                }
            }
            None => {
                if !stat.starts_with("451 ")
                    || !stat.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                {
                    failures.push(format!("{}: stat {stat:?}", s.name));
                }
            }
        }
        // Exactly what the daemon sent on this connection.
        let helo = helo_of(&sink.transcript(i));
        let want = if s.result == "Ok" {
            let m = sink.messages().into_iter().find(|m| m.connection == i);
            full_transaction(&helo, &[&to], &m.map(|m| m.raw).unwrap_or_default())
        } else if s.name.starts_with("unfinished") {
            // No QUIT: the daemon still waited for the reply to RCPT.
            format!("EHLO {helo}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<{to}>\r\n")
        } else if s.stat.is_some_and(|st| st.starts_with("{at}")) {
            // A broken reply ends the session at once: no QUIT either.
            format!("EHLO {helo}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<{to}>\r\n")
        } else {
            envelope_only(&helo, &[&to])
        };
        let got = received(&sink, i);
        if got != want {
            failures.push(format!(
                "{}: the sink received {got:?}, want {want:?}",
                s.name
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = d.log();
    // Nothing of any reply reaches the log as (the start of) a line of its
    // own, and no raw control character reaches it at all.
    for s in &shapes {
        for fragment in s
            .bytes
            .split(|&b| b == b'\r' || b == b'\n')
            .filter(|f| !f.is_empty())
        {
            let fragment = String::from_utf8_lossy(fragment);
            if let Some(l) = log.lines().find(|l| l.starts_with(&*fragment)) {
                failures.push(format!(
                    "{}: a log line starts with {fragment:?}: {l:?}",
                    s.name
                ));
            }
        }
    }
    for l in log.lines() {
        if l.chars().any(|c| c.is_control() || !c.is_ascii()) {
            failures.push(format!("raw control or non-ASCII in the log: {l:?}"));
        }
    }
    let forged = log
        .lines()
        .filter(|l| l.starts_with("relay: Ok for 0000000000000000"))
        .count();
    assert_eq!(forged, 0);
    let delivered: Vec<Vec<String>> = sink.messages().into_iter().map(|m| m.rcpts).collect();
    assert_eq!(
        delivered,
        vec![vec!["m3@remote.example".to_string()]],
        "only the RFC-valid short last line lets a message through"
    );
    assert!(failures.is_empty(), "{}\nlog:\n{log}", failures.join("\n"));
}

#[test]
fn a_slow_server_within_the_timeouts_still_gets_the_message() {
    let sink = Sink::start_on(
        "127.0.0.3:0".parse().unwrap(),
        Behaviour::accept()
            .delay(Duration::from_millis(300))
            .stage_delay(Stage::Greeting, Duration::from_secs(1))
            .stage_delay(Stage::Dot, Duration::from_secs(3)),
    );
    let d = start("rf-slow", sink.addr(), &[("RSMTPD_RETRY_BASE_RELAY", "1")]);
    let body = "Subject: slow\r\n\r\ntake your time";
    send(&d, &["bob@remote.example"], body);
    let got = sink.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}\nlog:\n{}", show(&sink), d.log());
    let lines = wait_for_outcomes(&d, "bob@remote.example", 1, Duration::from_secs(10));
    assert_eq!(results(&lines), vec!["Ok"], "{}", d.log());
    assert_eq!(sink.connections(), 1);
    let m = &got[0];
    assert_content(m, body);
    let helo = helo_of(&sink.transcript(0));
    assert_eq!(
        received(&sink, 0),
        full_transaction(&helo, &["bob@remote.example"], &m.raw),
        "{}",
        sink.transcript(0).text()
    );
}

// ---------------------------------------------------------------------------
// kill -9 while relaying.

/// Messages the client sends, one token each.
const MESSAGES: usize = 1500;
/// Messages per client connection before QUIT.
const PER_CONNECTION: usize = 8;
/// Whole-daemon kills while the client sends.
const KILLS: usize = 4;
/// The mta's transactions under way at once (MAX_SESSIONS in
/// roles/mta.rs): a kill can catch at most that many between the remote
/// 250 and the removal of the envelopes.
const IN_FLIGHT: usize = 100;

/// The recipients of message `i`: one, or two for every fourth message
/// (one relay transaction, two envelopes).
fn rcpts_of(i: usize) -> Vec<String> {
    let mut v = vec![format!("r{}@remote.example", i % 7)];
    if i.is_multiple_of(4) {
        v.push("twin@remote.example".into());
    }
    v
}

/// What the client saw.
#[derive(Default)]
struct Outcome {
    /// (token, recipient) of every acknowledged message.
    acked: Vec<(String, String)>,
    acked_messages: usize,
    sent: usize,
    errors: usize,
    connects: usize,
    gave_up: Option<String>,
    last_errors: Vec<String>,
}

fn load(addr: SocketAddr, run: &str, sent: &AtomicUsize, stop: &AtomicBool) -> Outcome {
    let mut out = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(100);
    let mut conn: Option<LoadClient> = None;
    let mut on_conn = 0;
    for i in 0..MESSAGES {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let token = format!("rt-{run}-{i:05}");
        let rcpts = rcpts_of(i);
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while conn.is_none() && Instant::now() < give_up.min(deadline) {
            match LoadClient::connect(addr, "loader.example") {
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
            out.gave_up = Some(format!("no connection: {last}"));
            break;
        };
        out.sent += 1;
        sent.store(out.sent, Ordering::Relaxed);
        let data = format!("Subject: {token}\r\n\r\nmessage {token}");
        match c.message(&rcpts, &data) {
            Ok(true) => {
                out.acked_messages += 1;
                for r in rcpts {
                    out.acked.push((token.clone(), r));
                }
                on_conn += 1;
                if on_conn >= PER_CONNECTION {
                    let _ = c.cmd("QUIT");
                    conn = None;
                }
            }
            // Not acknowledged: the token is never sent again.
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

/// The token of a relayed message (its Subject).
fn token_of(m: &Message) -> Option<String> {
    String::from_utf8_lossy(&m.data)
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Subject: "))
        .map(str::to_string)
}

/// Where each (token, recipient) arrived: indexes into the sink's
/// accepted messages, in order.
fn arrivals(messages: &[Message]) -> BTreeMap<(String, String), Vec<usize>> {
    let mut map: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        let token = token_of(m).unwrap_or_else(|| panic!("no token in {m:?}"));
        for r in &m.rcpts {
            map.entry((token.clone(), r.clone())).or_default().push(i);
        }
    }
    map
}

#[test]
fn kill_9_while_relaying_loses_nothing_acknowledged() {
    let seed = std::env::var("RSMTPD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("relay crash test seed {seed} (set RSMTPD_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let mut behaviour = Behaviour::accept().idle_timeout(Duration::from_secs(10));
    behaviour.max_connections = 100_000;
    let sink = Sink::start_on("127.0.0.3:0".parse().unwrap(), behaviour);
    // Connections are kept between transactions, as by default.
    let mut d = start_with(
        "rf-crash",
        sink.addr(),
        "",
        &[("RSMTPD_RETRY_BASE_RELAY", "1")],
    );
    let run = format!("{:x}", seed & 0xffff_ffff);
    let addr = d.addr();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (run, sent, stop) = (run.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || load(addr, &run, &sent, &stop))
    };

    let mut marks: Vec<usize> = (0..KILLS)
        .map(|k| {
            let span = MESSAGES * 9 / 10 / KILLS;
            (k * span + rng.below(span as u64) as usize).max(20)
        })
        .collect();
    marks.sort_unstable();
    let started = Instant::now();
    // How many messages the sink had accepted when each kill was over.
    let mut at_kill: Vec<usize> = Vec::new();
    for mark in marks {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::Relaxed) < mark
            && Instant::now() < deadline
            && !client.is_finished()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        if client.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_micros(rng.below(50_000)));
        d.kill_all();
        // Let the sink finish recording what reached it before the kill.
        std::thread::sleep(Duration::from_millis(100));
        at_kill.push(sink.messages().len());
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        d.spawn(&[]);
    }
    let kills = at_kill.len();
    let outcome = match client.join() {
        Ok(o) => o,
        Err(_) => panic!("client thread panicked"),
    };
    let load_time = started.elapsed();
    println!(
        "relay crash test: last client errors: {:?}",
        outcome.last_errors.iter().rev().take(8).collect::<Vec<_>>()
    );
    assert!(
        outcome.gave_up.is_none(),
        "the client gave up: {:?}; log:\n{}",
        outcome.gave_up,
        d.log()
    );

    // Let the queue drain into the sink (bounded).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = arrivals(&sink.messages());
        let missing = outcome
            .acked
            .iter()
            .filter(|k| !got.contains_key(*k))
            .count();
        if missing == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A last look after a pause: late duplicates count too.
    std::thread::sleep(Duration::from_millis(1500));
    let messages = sink.messages();
    let got = arrivals(&messages);
    let missing: Vec<&(String, String)> = outcome
        .acked
        .iter()
        .filter(|k| !got.contains_key(*k))
        .collect();
    let duplicated: Vec<(&(String, String), &Vec<usize>)> =
        got.iter().filter(|(_, v)| v.len() > 1).collect();
    // A second copy is explained only by a kill between the two arrivals
    // (the first got its 250 from the sink, the daemon died before it
    // recorded that).
    let unexplained: Vec<String> = duplicated
        .iter()
        .filter(|(_, idx)| {
            idx.windows(2)
                .any(|w| !at_kill.iter().any(|&n| w[0] < n && n <= w[1]))
        })
        .map(|(k, idx)| format!("{k:?} at sink messages {idx:?} (kills after {at_kill:?})"))
        .collect();
    // Per kill, the copies it explains: at most the mta's transactions
    // under way when it came.
    let mut per_kill = vec![0usize; at_kill.len()];
    for (_, idx) in &duplicated {
        for w in idx.windows(2) {
            if let Some(k) = at_kill.iter().position(|&n| w[0] < n && n <= w[1]) {
                per_kill[k] += 1;
            }
        }
    }
    let extra_copies: usize = duplicated.iter().map(|(_, v)| v.len() - 1).sum();
    let acked: std::collections::BTreeSet<&(String, String)> = outcome.acked.iter().collect();
    let unacked_received = got.keys().filter(|k| !acked.contains(k)).count();
    let log = d.log();
    let count = |needle: &str| log.lines().filter(|l| l.starts_with(needle)).count();
    println!(
        "relay crash test: kills={kills} sent={} acked={} (recipients {}) errors={} \
         connections={} received={} (distinct recipients {}) duplicates={} (extra copies \
         {extra_copies}) unacked-but-received={unacked_received} missing={} \
         sink connections={} load time={load_time:?} total={:?}",
        outcome.sent,
        outcome.acked_messages,
        outcome.acked.len(),
        outcome.errors,
        outcome.connects,
        messages.len(),
        got.len(),
        duplicated.len(),
        missing.len(),
        sink.connections(),
        started.elapsed(),
    );
    println!(
        "relay crash test: log: relay Ok={} TempFail={} PermFail={}; sink accepted at kills \
         {at_kill:?}; copies explained per kill {per_kill:?}",
        count("relay: Ok for "),
        count("relay: TempFail for "),
        count("relay: PermFail for "),
    );
    if !duplicated.is_empty() {
        println!(
            "relay crash test: duplicated: {:?}",
            duplicated.iter().take(20).collect::<Vec<_>>()
        );
    }
    assert_eq!(kills, KILLS, "not every kill happened during the load");
    assert!(
        outcome.acked_messages >= MESSAGES / 2,
        "too few acknowledged messages to mean anything: {}",
        outcome.acked_messages
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged (token, recipient) pairs never reached the sink, e.g. {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        unexplained.is_empty(),
        "delivered twice without a kill in between: {unexplained:?}"
    );
    assert!(
        per_kill.iter().all(|&n| n <= IN_FLIGHT),
        "more copies after one kill than transactions under way: {per_kill:?}"
    );
    assert!(
        duplicated.len() <= kills * IN_FLIGHT,
        "{} duplicates for {kills} kills",
        duplicated.len()
    );
    assert_eq!(count("relay: PermFail for "), 0, "{log}");
}
