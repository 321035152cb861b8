//! Reload (SIGHUP, `smtpctl reload`): a valid configuration is taken by
//! new sessions and deliveries while mail keeps flowing; an invalid one, or
//! one that changes what needs a restart, is refused with the reason and
//! the running one stays.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rsmtpd_test_support::daemon::{Client, Daemon, Setup, current_user};

const WAIT: Duration = Duration::from_secs(30);

fn config(domains: &[&str]) -> String {
    let user = current_user();
    let mut text = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n"
    );
    for d in domains {
        text.push_str(&format!(
            "match from any for domain \"{d}\" action \"local\"\n"
        ));
    }
    text
}

/// The config file as the daemon reads it: the harness's substitutions.
fn write_config(d: &Daemon, text: &str) {
    let text = text
        .replace("{port}", &d.port.to_string())
        .replace("{spool}", &d.spool().display().to_string())
        .replace("{maildir}", &d.maildir().display().to_string());
    std::fs::write(&d.config, text).unwrap();
}

fn rcpt(d: &Daemon, to: &str) -> String {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<s@example.net>");
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    r
}

fn send(addr: std::net::SocketAddr, to: &str) -> bool {
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<s@example.net>");
    if !c.cmd(&format!("RCPT TO:<{to}>")).starts_with("250") {
        return false;
    }
    c.cmd("DATA");
    let ok = c
        .cmd("Subject: load\r\n\r\nduring reloads\r\n.")
        .starts_with("250");
    c.cmd("QUIT");
    ok
}

/// smtpctl's exit code and everything it said.
fn smtpctl(d: &Daemon, args: &[&str]) -> (i32, String) {
    let (code, out, err) = d.smtpctl(args, None);
    (code, out + &err)
}

#[test]
fn reload_under_load() {
    let d = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_smtpd")),
        &Setup {
            name: "reload",
            body: &config(&["a.example"]),
            args: &[],
            env: &[],
        },
    );
    assert!(rcpt(&d, "x@b.example").starts_with("550"));
    // Mail for a.example flows all along: 60 messages, one after the other.
    // The sender holds only the address: the daemon goes with this test
    // even if it fails.
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, sent, failed) = (d.addr(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            for _ in 0..60 {
                if send(addr, "x@a.example") {
                    sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    // SIGHUP with b.example added.
    write_config(&d, &config(&["a.example", "b.example"]));
    let pid = nix::unistd::Pid::from_raw(d.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    d.wait_for_log("smtpd: configuration reloaded", WAIT);
    d.wait_for_log("lookup: configuration reloaded", WAIT);
    assert!(rcpt(&d, "x@b.example").starts_with("250"), "{}", d.log());
    // An invalid file: SIGHUP is refused, the reason logged, the running
    // configuration stays; smtpctl (which reads the same file to find the
    // daemon) shows the diagnostics.
    std::fs::write(&d.config, "listen on 127.0.0.1 port\nmatch for\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    d.wait_for_log("reload failed, keeping the running configuration", WAIT);
    assert!(
        d.log().contains("syntax error: expected a port"),
        "{}",
        d.log()
    );
    let (code, out) = smtpctl(&d, &["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("smtpd.conf:1:25: syntax error"), "{out}");
    assert!(rcpt(&d, "x@b.example").starts_with("250"));
    // A change that needs a restart (the listening port) is refused too.
    let moved = config(&["a.example"]).replace("port {port}", "port 1");
    write_config(&d, &moved);
    let (code, out) = smtpctl(&d, &["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("listen on changed"), "{out}");
    assert!(rcpt(&d, "x@b.example").starts_with("250"));
    // smtpctl reload with a valid change: b.example goes again.
    write_config(&d, &config(&["a.example"]));
    let (code, out) = smtpctl(&d, &["reload"]);
    assert_eq!((code, out.as_str()), (0, "configuration reloaded\n"));
    assert!(rcpt(&d, "x@b.example").starts_with("550"));
    load.join().unwrap();
    // Nothing refused or lost while reloading.
    assert!(!failed.load(Ordering::Relaxed), "{}", d.log());
    assert_eq!(sent.load(Ordering::Relaxed), 60);
    assert_eq!(d.wait_for_delivered(60, WAIT).len(), 60, "{}", d.log());
}
