//! Relaying end to end: the daemon hands mail to other servers (scripted
//! sinks on loopback), found through a smarthost URL or MX records from a
//! test DNS server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rsmtpd_test_support::daemon::{Client, Daemon, Setup};
use rsmtpd_test_support::dns::{DnsServer, Zone};
use rsmtpd_test_support::sink::{Behaviour, Sink, Stage};

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

fn send(d: &Daemon, from: &str, to: &[&str], body: &str) {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for t in to {
        let r = c.cmd(&format!("RCPT TO:<{t}>"));
        assert!(r.starts_with("250"), "{t}: {r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("{body}\r\n."));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");
}

fn start(name: &str, action: &str, env: &[(&str, &str)]) -> Daemon {
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"out\" relay {action}\n\
         match from any for domain \"remote.example\" action \"out\"\n"
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

/// Local delivery for example.org (where reports to alice go), relaying
/// for remote.example to `sink`; `extra` lines go before the actions.
fn start_reporting(name: &str, sink: SocketAddr, extra: &str, env: &[(&str, &str)]) -> Daemon {
    let user = rsmtpd_test_support::daemon::current_user();
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n{extra}\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n\
         action \"out\" relay host \"smtp://{sink}\"\n\
         match from any for domain \"example.org\" action \"local\"\n\
         match from any for domain \"remote.example\" action \"out\"\n"
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

#[test]
fn a_smarthost_gets_the_message_in_one_transaction() {
    let sink = Sink::start_on("127.0.0.3:0".parse().unwrap(), Behaviour::accept());
    let d = start(
        "relay-host",
        &format!("host \"smtp://127.0.0.3:{}\"", sink.port()),
        &[],
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example", "carol@remote.example"],
        "Subject: out\r\n\r\n.starts with a dot\r\nend",
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    let m = &got[0];
    assert_eq!(m.mail_from, "alice@example.org");
    let mut rcpts = m.rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["bob@remote.example", "carol@remote.example"]);
    let data = String::from_utf8_lossy(&m.data);
    assert!(data.starts_with("Received: from client.example"), "{data}");
    // The test client sent ".starts" unstuffed, so the stored line is
    // "starts"; the relay stuffed nothing new.
    assert!(
        data.ends_with("Subject: out\r\n\r\nstarts with a dot\r\nend\r\n"),
        "{data}"
    );
    d.wait_for_log("relay: Ok for ", Duration::from_secs(10));
}

#[test]
fn mx_records_lead_to_the_preferred_host_then_the_next() {
    // The preferred MX refuses connections (nothing listens on its port
    // at 127.0.0.4); the second one takes the message.
    let sink = Sink::start_on("127.0.0.5:0".parse().unwrap(), Behaviour::accept());
    let dns = DnsServer::start(
        Zone::new()
            .mx("remote.example", 10, "mx1.remote.example")
            .mx("remote.example", 20, "mx2.remote.example")
            .a("mx1.remote.example", [127, 0, 0, 4])
            .a("mx2.remote.example", [127, 0, 0, 5]),
    );
    let resolver = dns.addr().to_string();
    let port = sink.port().to_string();
    let d = start(
        "relay-mx",
        "",
        &[("RSMTPD_RESOLVER", &resolver), ("RSMTPD_MX_PORT", &port)],
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: mx\r\n\r\nvia mx",
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    assert_eq!(got[0].rcpts, vec!["bob@remote.example"]);
    let log = d.log();
    assert!(
        log.contains("127.0.0.4"),
        "the first MX was tried first:\n{log}"
    );
    // The unreachable MX is spared for a while: the next message goes
    // straight to the second one.
    send(
        &d,
        "alice@example.org",
        &["carol@remote.example"],
        "Subject: mx2\r\n\r\nagain",
    );
    let got = sink.wait_for_messages(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "log:\n{}", d.log());
    let log = d.log();
    let tries = log
        .lines()
        .filter(|l| l.starts_with(&format!("relay: 127.0.0.4:{port}: connect")))
        .count();
    assert_eq!(tries, 1, "{log}");
}

#[test]
fn a_5xx_recipient_bounces_and_a_null_mx_fails_at_once() {
    let sink = Sink::start_on(
        "127.0.0.6:0".parse().unwrap(),
        Behaviour::accept().refuse_rcpt("nobody@remote.example"),
    );
    let d = start(
        "relay-5xx",
        &format!("host \"smtp://127.0.0.6:{}\"", sink.port()),
        &[],
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example", "nobody@remote.example"],
        "Subject: mixed\r\n\r\nm",
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    assert_eq!(got[0].rcpts, vec!["bob@remote.example"]);
    d.wait_for_log("relay: PermFail for ", Duration::from_secs(10));
    // The bounce goes back to alice@example.org: no rule routes it here, so
    // it is logged as unroutable rather than sent.
    d.wait_for_log("bounce: ", Duration::from_secs(10));

    let dns = DnsServer::start(Zone::new().null_mx("remote.example"));
    let resolver = dns.addr().to_string();
    let d = start("relay-nullmx", "", &[("RSMTPD_RESOLVER", &resolver)]);
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: n\r\n\r\nn",
    );
    d.wait_for_log("relay: PermFail for ", Duration::from_secs(20));
    assert!(
        d.log().contains("5.1.10") || d.log().to_lowercase().contains("null mx"),
        "{}",
        d.log()
    );
}

/// Send one message with DSN parameters through `d`.
fn send_with_dsn(d: &Daemon) {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    let r = c.cmd("MAIL FROM:<alice@example.org> RET=HDRS ENVID=QQ314159");
    assert!(r.starts_with("250"), "{r}");
    let r = c
        .cmd("RCPT TO:<bob@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@remote.example");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: dsn\r\n\r\nd\r\n.").starts_with("250 2.0.0"));
    c.cmd("QUIT");
}

#[test]
fn dsn_parameters_travel_on_when_the_next_server_offers_dsn() {
    let sink = Sink::start_on(
        "127.0.0.7:0".parse().unwrap(),
        Behaviour::accept().dsn(true),
    );
    let d = start(
        "relay-dsn",
        &format!("host \"smtp://127.0.0.7:{}\"", sink.port()),
        &[],
    );
    send_with_dsn(&d);
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    let m = &got[0];
    assert!(
        m.mail_params.iter().any(|p| p == "RET=HDRS"),
        "{:?}",
        m.mail_params
    );
    assert!(
        m.mail_params.iter().any(|p| p == "ENVID=QQ314159"),
        "{:?}",
        m.mail_params
    );
    let rp = &m.rcpt_params[0];
    assert!(rp.iter().any(|p| p == "NOTIFY=SUCCESS,FAILURE"), "{rp:?}");
    assert!(
        rp.iter().any(|p| p == "ORCPT=rfc822;Bob@remote.example"),
        "{rp:?}"
    );

    // A server without DSN gets none of them.
    let plain = Sink::start_on("127.0.0.8:0".parse().unwrap(), Behaviour::accept());
    let d = start(
        "relay-nodsn",
        &format!("host \"smtp://127.0.0.8:{}\"", plain.port()),
        &[],
    );
    send_with_dsn(&d);
    let got = plain.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    assert!(
        got[0]
            .mail_params
            .iter()
            .all(|p| !p.starts_with("RET=") && !p.starts_with("ENVID="))
    );
    assert!(got[0].rcpt_params[0].is_empty(), "{:?}", got[0].rcpt_params);
}

#[test]
fn recipients_refused_together_get_one_report() {
    let sink = Sink::start_on(
        "127.0.0.9:0".parse().unwrap(),
        Behaviour::accept()
            .refuse_rcpt("nobody@remote.example")
            .refuse_rcpt("noone@remote.example"),
    );
    let d = start_reporting("relay-report", sink.addr(), "", &[]);
    send(
        &d,
        "alice@example.org",
        &[
            "nobody@remote.example",
            "noone@remote.example",
            "bob@remote.example",
        ],
        "Subject: three\r\n\r\nt",
    );
    let reports = d.wait_for_delivered(1, Duration::from_secs(20));
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    // Give a second report (which must not exist) time to show up.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.delivered().len(), 1, "one report for the message");
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@remote.example"),
        "{text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; noone@remote.example"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; bob@remote.example"),
        "{text}"
    );
    assert_eq!(text.matches("Action: failed").count(), 2, "{text}");
    assert_eq!(
        text.matches("Remote-MTA: dns; 127.0.0.9").count(),
        2,
        "{text}"
    );
    assert_eq!(
        sink.wait_for_messages(1, Duration::from_secs(5))[0].rcpts,
        vec!["bob@remote.example"]
    );
}

#[test]
fn a_long_delay_is_reported_once_per_warn_interval() {
    // Every MAIL gets a 4xx: the message stays queued, retried.
    let sink = Sink::start_on(
        "127.0.0.10:0".parse().unwrap(),
        Behaviour::accept().mail_tempfail_first(1000),
    );
    let d = start_reporting(
        "relay-delay",
        sink.addr(),
        "bounce warn-interval 2s\n",
        &[("RSMTPD_RETRY_BASE_RELAY", "1")],
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: slow\r\n\r\ns",
    );
    let reports = d.wait_for_delivered(1, Duration::from_secs(30));
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    assert!(
        text.contains("Subject: Delivery status notification: delayed"),
        "{text}"
    );
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; bob@remote.example"),
        "{text}"
    );
    // Retries go on, and no second warning comes for the same delay.
    d.wait_for_log("relay: TempFail for ", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.delivered().len(), 1);
}

#[test]
fn the_action_chooses_source_address_greeting_and_sender() {
    let sink = Sink::start_on("127.0.0.3:0".parse().unwrap(), Behaviour::accept());
    let d = start(
        "relay-src",
        &format!(
            "host \"smtp://127.0.0.3:{}\" src 127.0.0.6 helo relay.example.net \
             mail-from \"bounces@example.org\"",
            sink.port()
        ),
        &[],
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: src\r\n\r\nfrom elsewhere",
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    assert_eq!(got[0].helo, "relay.example.net");
    assert_eq!(got[0].mail_from, "bounces@example.org");
    let peer = sink
        .peer(got[0].connection)
        .expect("the sink saw the connection");
    assert_eq!(peer.ip().to_string(), "127.0.0.6");
}

#[test]
fn a_source_table_gives_the_address_and_helo_src_its_name() {
    let sink = Sink::start_on("127.0.0.3:0".parse().unwrap(), Behaviour::accept());
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         table sources {{ 127.0.0.7 }}\n\
         table names {{ 127.0.0.7 = out7.example.net }}\n\
         action \"out\" relay host \"smtp://127.0.0.3:{}\" src <sources> helo-src <names>\n\
         match from any for domain \"remote.example\" action \"out\"\n",
        sink.port()
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "relay-src-table",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: src\r\n\r\nfrom a table",
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    assert_eq!(got[0].helo, "out7.example.net");
    assert_eq!(got[0].mail_from, "alice@example.org");
    let peer = sink
        .peer(got[0].connection)
        .expect("the sink saw the connection");
    assert_eq!(peer.ip().to_string(), "127.0.0.7");
}

#[test]
fn notify_success_gets_a_relayed_report_only_where_no_dsn_follows() {
    // The next hop does not offer DSN: the report is ours, "relayed".
    let plain = Sink::start_on("127.0.0.11:0".parse().unwrap(), Behaviour::accept());
    let d = start_reporting("relay-success", plain.addr(), "", &[]);
    send_with_dsn(&d);
    assert_eq!(plain.wait_for_messages(1, Duration::from_secs(20)).len(), 1);
    let reports = d.wait_for_delivered(1, Duration::from_secs(20));
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    for want in [
        "Subject: Delivery status notification: success",
        "Original-Envelope-Id: QQ314159",
        "Original-Recipient: rfc822;Bob@remote.example",
        "Final-Recipient: rfc822; bob@remote.example",
        "Action: relayed",
        "Status: 2.0.0",
        "Remote-MTA: dns; 127.0.0.11",
        "Content-Type: text/rfc822-headers",
        "Subject: dsn",
    ] {
        assert!(text.contains(want), "{want:?} not in the report:\n{text}");
    }
    assert!(!text.contains("Diagnostic-Code"), "{text}");

    // A next hop that offers DSN took the NOTIFY: no report from us.
    let dsn = Sink::start_on(
        "127.0.0.11:0".parse().unwrap(),
        Behaviour::accept().dsn(true),
    );
    let d = start_reporting("relay-success-dsn", dsn.addr(), "", &[]);
    send_with_dsn(&d);
    assert_eq!(dsn.wait_for_messages(1, Duration::from_secs(20)).len(), 1);
    d.wait_for_log("relay: Ok for ", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.delivered().is_empty(), "log:\n{}", d.log());
}

#[test]
fn notify_success_on_a_local_delivery_reports_delivered() {
    let plain = Sink::start_on("127.0.0.11:0".parse().unwrap(), Behaviour::accept());
    let d = start_reporting("local-success", plain.addr(), "", &[]);
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    let r = c.cmd("RCPT TO:<carol@example.org> NOTIFY=SUCCESS");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<dave@example.org>");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: local\r\n\r\nl\r\n.").starts_with("250"));
    c.cmd("QUIT");
    // Two copies of the message and one report, for carol only.
    let files = d.wait_for_delivered(3, Duration::from_secs(20));
    assert_eq!(files.len(), 3, "log:\n{}", d.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.delivered().len(), 3, "log:\n{}", d.log());
    let reports: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .filter(|t| t.contains("Action: delivered"))
        .collect();
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    assert!(
        reports[0].contains("Final-Recipient: rfc822; carol@example.org"),
        "{}",
        reports[0]
    );
    assert!(!reports[0].contains("dave@example.org"), "{}", reports[0]);
}

#[test]
fn a_message_past_its_ttl_is_returned_and_tried_no_more() {
    let sink = Sink::start_on(
        "127.0.0.12:0".parse().unwrap(),
        Behaviour::accept().mail_tempfail_first(1000),
    );
    let d = start_reporting(
        "relay-expiry",
        sink.addr(),
        "queue ttl 3s\n",
        &[("RSMTPD_RETRY_BASE_RELAY", "1")],
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: never\r\n\r\nn",
    );
    let reports = d.wait_for_delivered(1, Duration::from_secs(30));
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    for want in [
        "Subject: Delivery status notification: error",
        "Final-Recipient: rfc822; bob@remote.example",
        "Action: failed",
        "Status: 4.4.7",
        "message expired after 3 seconds in the queue",
        "451",
        "Content-Type: message/rfc822",
        "Subject: never",
    ] {
        assert!(text.contains(want), "{want:?} not in the report:\n{text}");
    }
    assert!(!text.contains("Will-Retry-Until"), "{text}");
    // Tries at 0, +1 s (the next, +4 s, is past the ttl): then no more.
    let tries = sink.connections();
    assert!((1..=3).contains(&tries), "{tries} connections");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.connections(), tries, "tried after expiry");
    assert_eq!(d.delivered().len(), 1);
}

#[test]
fn a_route_back_to_this_server_bounces_as_a_loop() {
    // The next hop greets with the name this server answers to.
    let sink = Sink::start_on(
        "127.0.0.13:0".parse().unwrap(),
        Behaviour::accept().hostname("mail.loop.example"),
    );
    let user = rsmtpd_test_support::daemon::current_user();
    let body = format!(
        "queue path \"{{spool}}\"\n\
         listen on 127.0.0.1 port {{port}} hostname \"Mail.Loop.Example\"\n\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n\
         action \"out\" relay host \"smtp://127.0.0.13:{}\"\n\
         match from any for domain \"example.org\" action \"local\"\n\
         match from any for domain \"remote.example\" action \"out\"\n",
        sink.port()
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "relay-loop",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    send(
        &d,
        "alice@example.org",
        &["bob@remote.example"],
        "Subject: round\r\n\r\nand round",
    );
    let reports = d.wait_for_delivered(1, Duration::from_secs(20));
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    for want in [
        "Action: failed",
        "Status: 5.4.6",
        "mail loops back to myself",
        "Final-Recipient: rfc822; bob@remote.example",
    ] {
        assert!(text.contains(want), "{want:?} not in the report:\n{text}");
    }
    assert!(sink.transactions().is_empty(), "nothing was sent");
    let helo = String::from_utf8_lossy(&sink.received(0)).into_owned();
    assert!(!helo.contains("MAIL FROM"), "{helo}");
}

#[test]
fn connections_to_one_host_stay_within_the_mta_limit() {
    // A slow server: each transaction keeps its connection for 600 ms.
    let sink = Sink::start_on(
        "127.0.0.15:0".parse().unwrap(),
        Behaviour::accept().stage_delay(Stage::Dot, Duration::from_millis(600)),
    );
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         mta limit max-conn-per-host 2\n\
         action \"out\" relay host \"smtp://127.0.0.15:{}\"\n\
         match from any for domain \"remote.example\" action \"out\"\n",
        sink.port()
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "relay-limit",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    for i in 0..8 {
        send(
            &d,
            "alice@example.org",
            &[&format!("r{i}@remote.example")],
            &format!("Subject: {i}\r\n\r\nmessage {i}"),
        );
    }
    let got = sink.wait_for_messages(8, Duration::from_secs(30));
    assert_eq!(got.len(), 8, "log:\n{}", d.log());
    assert_eq!(sink.max_concurrent(), 2, "at most 2 at once, and 2 used");
}

#[test]
fn a_connection_carries_several_messages_then_is_closed_when_idle() {
    let sink = Sink::start_on("127.0.0.16:0".parse().unwrap(), Behaviour::accept());
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         mta limit session-mail-max 2\n\
         mta limit session-keepalive 2\n\
         action \"out\" relay host \"smtp://127.0.0.16:{}\"\n\
         match from any for domain \"remote.example\" action \"out\"\n",
        sink.port()
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "relay-reuse",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    for i in 1..=3 {
        send(
            &d,
            "alice@example.org",
            &[&format!("r{i}@remote.example")],
            &format!("Subject: {i}\r\n\r\nmessage {i}"),
        );
        let got = sink.wait_for_messages(i, Duration::from_secs(20));
        assert_eq!(got.len(), i, "log:\n{}", d.log());
    }
    // Two messages on the first connection (session-mail-max 2), the third
    // on a second one.
    assert_eq!(sink.connections(), 2, "log:\n{}", d.log());
    let conn = |i: usize| String::from_utf8_lossy(&sink.received(i)).into_owned();
    assert!(sink.wait_closed(0, Duration::from_secs(5)));
    let first = conn(0);
    assert_eq!(first.matches("MAIL FROM:").count(), 2, "{first}");
    assert_eq!(first.matches("EHLO ").count(), 1, "{first}");
    assert!(first.ends_with(".\r\nQUIT\r\n"), "{first}");
    // The second stays open while idle, then the keepalive (2 s) ends it.
    assert!(
        !sink.wait_closed(1, Duration::from_millis(500)),
        "closed at once"
    );
    assert!(sink.wait_closed(1, Duration::from_secs(10)), "not closed");
    let second = conn(1);
    assert_eq!(second.matches("MAIL FROM:").count(), 1, "{second}");
    assert!(second.ends_with(".\r\nQUIT\r\n"), "{second}");
}

#[test]
fn smtputf8_mail_to_a_server_without_smtputf8_bounces() {
    let sink = Sink::start_on("127.0.0.18:0".parse().unwrap(), Behaviour::accept());
    let d = start_reporting("relay-utf8", sink.addr(), "", &[]);
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    let r = c.cmd("MAIL FROM:<alice@example.org> SMTPUTF8");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<jürgen@remote.example>");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: utf8\r\n\r\nu\r\n.").starts_with("250"));
    c.cmd("QUIT");
    let reports = d.wait_for_delivered(1, Duration::from_secs(20));
    assert_eq!(reports.len(), 1, "log:\n{}", d.log());
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    for want in ["Action: failed", "Status: 5.6.7", "SMTPUTF8"] {
        assert!(text.contains(want), "{want:?} not in the report:\n{text}");
    }
    assert!(sink.transactions().is_empty(), "nothing was sent");
    // The session ends politely.
    assert!(sink.wait_closed(0, Duration::from_secs(10)));
    let wire = String::from_utf8_lossy(&sink.received(0)).into_owned();
    assert!(
        wire.starts_with("EHLO ") && wire.ends_with("\r\nQUIT\r\n"),
        "{wire:?}"
    );
    assert!(!wire.contains("MAIL FROM"), "{wire:?}");
}

/// smtpctl's view of the mta: an unreachable smarthost shows as a disabled
/// route until `resume route`; a delivered domain shows in hoststats.
#[test]
fn smtpctl_shows_routes_and_hoststats() {
    let sink = Sink::start(Behaviour::accept());
    // A port nobody listens on: the connection is refused.
    let dead = SocketAddr::from(([127, 0, 0, 1], rsmtpd_test_support::daemon::free_port()));
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"out\" relay host \"smtp://{sink}\"\n\
         action \"dead\" relay host \"smtp://{dead}\"\n\
         match from any for domain \"remote.example\" action \"out\"\n\
         match from any for domain \"dead.example\" action \"dead\"\n",
        sink = sink.addr()
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name: "relay-smtpctl",
            body: &body,
            args: &[],
            env: &[],
        },
    );
    let ctl = |args: &[&str]| d.smtpctl(args, None);
    send(
        &d,
        "a@example.org",
        &["b@remote.example"],
        "Subject: x\r\n\r\nok",
    );
    send(
        &d,
        "a@example.org",
        &["b@dead.example"],
        "Subject: y\r\n\r\nnot",
    );
    sink.wait_for_messages(1, Duration::from_secs(20));
    d.wait_for_log("relay: TempFail for ", Duration::from_secs(20));
    let (code, out, err) = ctl(&["show", "routes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("{dead} D penalty=")), "{out}");
    let (_, stats, _) = ctl(&["show", "hoststats"]);
    assert!(
        stats.contains("remote.example|") && stats.contains("|ok\n"),
        "{stats}"
    );
    assert!(
        stats.contains("dead.example|") && stats.contains("|tempfail: "),
        "{stats}"
    );
    assert_eq!(ctl(&["show", "hosts"]).0, 0);
    assert_eq!(ctl(&["show", "relays"]).0, 0);
    let (code, out, _) = ctl(&["resume", "route", &dead.to_string()]);
    assert_eq!((code, out), (0, format!("route {dead} resumed\n")));
    assert_eq!(ctl(&["show", "routes"]).1, "");
    let (code, _, err) = ctl(&["resume", "route", &dead.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not disabled"), "{err}");
}
