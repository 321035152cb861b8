//! OpenSMTPD's reference example configs 01, 02, 03, 06, 08 and 09, run as
//! they are written and delivering real mail, as root (01's relaying
//! half and 02 as any user; 02's smarthost is a second rsmtpd with
//! STARTTLS and AUTH, its certificate from a test CA).
//!
//! Each test reads the example from the reference directory and rewrites
//! only what cannot work on this machine, line by line and visibly (every
//! rewrite must find its line, so a changed example fails loudly):
//! `/etc/mail/...` tables become files the test writes in its temporary
//! directory (`db:` ones built by our makemap), `lo0`/`egress`/`localhost`
//! listeners get a loopback address and a free port, 03's `/path/to/mda`
//! becomes a script, and a `queue path` line is added. Everything else
//! (actions, rules, table names) is the example's own text.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rsmtpd_test_support::certs::{Issued, KeyType, TestCa};
use rsmtpd_test_support::daemon::{Client, Daemon, Setup};
use rsmtpd_test_support::dns::{DnsServer, Zone};
use rsmtpd_test_support::examples::{example, rewrite, rewrite_line, sha512_crypt};
use rsmtpd_test_support::sink::{Behaviour, Sink};
use rsmtpd_test_support::temp_dir;

fn smtpd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_smtpd"))
}

fn root() -> bool {
    if nix::unistd::getuid().is_root() {
        return true;
    }
    eprintln!("skipped (needs root; CI runs as root)");
    false
}

fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn with_queue_path(text: &str) -> String {
    format!("queue path \"{{spool}}\"\n{text}")
}

/// Build `dir/name.db` from `dir/name` with makemap (a link named
/// `makemap` to the binary), as makemap.8 says.
fn makemap(dir: &Path, ty: &str, name: &str) {
    let link = dir.join("makemap");
    if !link.exists() {
        std::os::unix::fs::symlink(smtpd(), &link).unwrap();
    }
    let out = Command::new(&link)
        .args(["-t", ty])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "makemap -t {ty} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join(format!("{name}.db")).is_file());
}

/// A directory for the test's own files, reachable by every user.
fn files_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    chmod(&dir, 0o755);
    dir
}

fn start(name: &str, body: &str, env: &[(&str, &str)]) -> Daemon {
    Daemon::start(
        smtpd(),
        &Setup {
            name,
            body,
            args: &[],
            env,
        },
    )
}

/// One message through the harness client, from 127.0.0.1.
fn send(d: &Daemon, from: &str, to: &str, body: &str) {
    let mut c = Client::connect(d.addr());
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    assert!(r.starts_with("250"), "RCPT {to}: {r}\nlog:\n{}", d.log());
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("{body}\r\n."));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");
}

/// The reply to RCPT TO:<to> (after EHLO and MAIL FROM:<from>).
fn rcpt_reply(d: &Daemon, from: &str, to: &str) -> String {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    r
}

/// Wait (up to 15 s) until `path` holds text satisfying `done`; returns
/// the last text read.
fn wait_text(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mail spool for `mbox` (`RSMTPD_MAIL_SPOOL`), in place of /var/mail.
fn mail_spool(name: &str) -> PathBuf {
    let spool = temp_dir(name);
    chmod(&spool, 0o755);
    spool
}

/// `user`'s mbox in `spool` once it holds `n` messages (mboxrd: a body's
/// "From " lines are quoted, so only separators start with it); checks the
/// owner and mode.
fn mbox_of(d: &Daemon, spool: &Path, user: &str, n: usize) -> String {
    let path = spool.join(user);
    let count = |t: &str| t.lines().filter(|l| l.starts_with("From ")).count();
    let text = wait_text(&path, |t| count(t) >= n);
    assert_eq!(count(&text), n, "{user}'s mbox:\n{text}\nlog:\n{}", d.log());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), uid_of(user), "owner of {}", path.display());
    assert_eq!(meta.mode() & 0o777, 0o600);
    text
}

// ------------------------------------------------------------------- 01

/// What 01 leaves in /root/Maildir, removed on drop (also when the test
/// fails): the files holding `token`, and the directories the delivery
/// created (only if they were not there before, and only if empty).
struct RootMaildirCleanup {
    token: String,
    created: Vec<PathBuf>,
}

impl RootMaildirCleanup {
    fn new(token: &str) -> RootMaildirCleanup {
        let maildir = PathBuf::from("/root/Maildir");
        // Deepest first, so they can be removed in this order.
        let created = ["tmp", "new", "cur"]
            .iter()
            .map(|d| maildir.join(d))
            .chain([maildir.clone()])
            .filter(|p| !p.exists())
            .collect();
        RootMaildirCleanup {
            token: token.to_owned(),
            created,
        }
    }
}

impl Drop for RootMaildirCleanup {
    fn drop(&mut self) {
        for sub in ["new", "tmp", "cur"] {
            let Ok(entries) = std::fs::read_dir(Path::new("/root/Maildir").join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let ours = std::fs::read_to_string(e.path())
                    .map(|t| t.contains(&self.token))
                    .unwrap_or(false);
                if ours {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// 01: the default smtpd.conf. `maildir alias <aliases>`, listening on
/// localhost: an alias to root lands in root's ~/Maildir (the test users
/// have no home, so root is the one account whose default Maildir can be
/// made); an alias to a user without a home fails temporarily, and an
/// unknown local user is refused.
#[test]
fn example_01_default_maildir_with_aliases() {
    if !root() {
        return;
    }
    let files = files_dir("ex01-files");
    std::fs::write(
        files.join("aliases"),
        "# 01's /etc/mail/aliases\nex01-root: root\nex01-nohome: rsmtpdtest1\n",
    )
    .unwrap();
    let conf = example("01-default-smtpd.conf");
    let conf = rewrite_line(
        &conf,
        "table aliases file:/etc/mail/aliases",
        &format!("table aliases file:{}/aliases", files.display()),
        1,
    );
    let conf = rewrite_line(
        &conf,
        "listen on localhost",
        "listen on localhost port {port}",
        1,
    );
    let conf = with_queue_path(&conf);
    let token = format!("ex01-token-{}", std::process::id());
    let _cleanup = RootMaildirCleanup::new(&token);
    let d = start("ex01", &conf, &[]);

    assert_eq!(
        rcpt_reply(&d, "alice@example.org", "ex01-nosuchuser@localhost"),
        "550 5.1.1 Invalid recipient: <ex01-nosuchuser@localhost>\r\n"
    );
    send(
        &d,
        "alice@example.org",
        "ex01-root@localhost",
        &format!("Subject: 01\r\n\r\n{token}"),
    );
    let new = Path::new("/root/Maildir/new");
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        let ours: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(p)
                    .map(|t| t.contains(&token))
                    .unwrap_or(false)
            })
            .collect();
        if !ours.is_empty() || Instant::now() >= deadline {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(found.len(), 1, "{found:?}\nlog:\n{}", d.log());
    let text = std::fs::read_to_string(&found[0]).unwrap();
    assert!(
        text.starts_with("Return-Path: <alice@example.org>\nDelivered-To: ex01-root@localhost\n"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("Subject: 01\n\n{token}\n")),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&found[0]).unwrap().uid(), 0);
    d.wait_for_log("user=root, method=maildir, delay=", Duration::from_secs(10));

    // rsmtpdtest1's home is /nonexistent: its ~/Maildir cannot be made, so
    // the delivery is retried later, not lost and not bounced.
    send(
        &d,
        "alice@example.org",
        "ex01-nohome@localhost",
        "Subject: 01b\r\n\r\nnowhere to go",
    );
    d.wait_for_log("user=rsmtpdtest1, method=maildir", Duration::from_secs(15));
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("user=rsmtpdtest1, method=maildir"))
        .unwrap();
    assert!(line.starts_with("delivery: TempFail for "), "{line}");
    assert!(line.contains("/nonexistent/Maildir"), "{line}");
}

/// 01's second half: mail from a local client to any other domain is
/// relayed by MX (`action "relay" relay`, `match from local for any`).
/// The MX comes from a test DNS server, the delivery port from
/// RSMTPD_MX_PORT; no root needed.
#[test]
fn example_01_relays_local_mail_by_mx() {
    let sink = Sink::start_on("127.0.0.14:0".parse().unwrap(), Behaviour::accept());
    let dns = DnsServer::start(
        Zone::new()
            .mx("remote.example", 10, "mx.remote.example")
            .a("mx.remote.example", [127, 0, 0, 14]),
    );
    let files = files_dir("ex01r-files");
    std::fs::write(files.join("aliases"), "ex01-root: root\n").unwrap();
    let conf = example("01-default-smtpd.conf");
    let conf = rewrite_line(
        &conf,
        "table aliases file:/etc/mail/aliases",
        &format!("table aliases file:{}/aliases", files.display()),
        1,
    );
    let conf = rewrite_line(
        &conf,
        "listen on localhost",
        "listen on localhost port {port}",
        1,
    );
    let conf = with_queue_path(&conf);
    let resolver = dns.addr().to_string();
    let port = sink.port().to_string();
    let d = start(
        "ex01r",
        &conf,
        &[("RSMTPD_RESOLVER", &resolver), ("RSMTPD_MX_PORT", &port)],
    );
    send(
        &d,
        "alice@example.org",
        "bob@remote.example",
        "Subject: 01 out\r\n\r\nrelayed",
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "log:\n{}", d.log());
    assert_eq!(got[0].mail_from, "alice@example.org");
    assert_eq!(got[0].rcpts, vec!["bob@remote.example"]);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.ends_with("Subject: 01 out\r\n\r\nrelayed\r\n"),
        "{data}"
    );
    d.wait_for_log("relay: Ok for ", Duration::from_secs(10));
}

// ------------------------------------------------------------------- 02

/// Example 02's text with its tables in `files` and the smarthost URL
/// pointing at `port` (the host name stays: it is what the certificate is
/// checked against, and the test's DNS server answers for it).
fn example_02(files: &Path, port: u16) -> String {
    std::fs::write(files.join("aliases"), "ex02-root: root\n").unwrap();
    std::fs::write(files.join("secrets"), "bob bob:s3cret\n").unwrap();
    let conf = example("02-smarthost-relay-auth.conf");
    let conf = rewrite_line(
        &conf,
        "table aliases file:/etc/mail/aliases",
        &format!("table aliases file:{}/aliases", files.display()),
        1,
    );
    let conf = rewrite_line(
        &conf,
        "table secrets file:/etc/mail/secrets",
        &format!("table secrets file:{}/secrets", files.display()),
        1,
    );
    let conf = rewrite_line(&conf, "listen on lo0", "listen on 127.0.0.1 port {port}", 1);
    let conf = rewrite(
        &conf,
        "smtp+tls://bob@smtp.example.com",
        &format!("smtp+tls://bob@smtp.example.com:{port}"),
        1,
    );
    with_queue_path(&conf)
}

/// The smarthost of example 02: another rsmtpd on 127.0.0.18 that wants
/// STARTTLS and AUTH (bob / s3cret) and delivers to its Maildir.
fn smarthost(name: &str, cert: &Issued) -> Daemon {
    let body = format!(
        "queue path \"{{spool}}\"\n\
         pki smtp.example.com cert \"{}\"\n\
         pki smtp.example.com key \"{}\"\n\
         table creds {{ \"bob\" = \"{}\" }}\n\
         listen on 127.0.0.18 port {{port}} tls-require pki smtp.example.com \
         hostname smtp.example.com auth <creds>\n\
         action \"local\" maildir \"{{maildir}}\" user \"{}\"\n\
         match auth from any for any action \"local\"\n",
        cert.cert.display(),
        cert.key.display(),
        sha512_crypt("s3cret"),
        rsmtpd_test_support::daemon::current_user(),
    );
    start(name, &body, &[])
}

/// 02 end to end: the message goes to the smarthost over STARTTLS whose
/// certificate is verified against the CA (given as SSL_CERT_FILE, the
/// system roots' stand-in), with AUTH as bob; the smarthost delivers it.
#[test]
fn example_02_relays_over_verified_tls_with_auth() {
    let certs = files_dir("ex02-certs");
    let ca = TestCa::new(&certs, "ex02");
    let cert = ca.issue(&["smtp.example.com"], KeyType::EcdsaP256);
    let host = smarthost("ex02-smarthost", &cert);
    let dns = DnsServer::start(Zone::new().a("smtp.example.com", [127, 0, 0, 18]));
    let files = files_dir("ex02-files");
    let conf = example_02(&files, host.port);
    let resolver = dns.addr().to_string();
    let roots = ca.cert_path().display().to_string();
    let d = start(
        "ex02",
        &conf,
        &[("RSMTPD_RESOLVER", &resolver), ("SSL_CERT_FILE", &roots)],
    );
    send(
        &d,
        "alice@example.org",
        "bob@remote.example",
        "Subject: 02\r\n\r\nover TLS",
    );
    let got = host.wait_for_delivered(1, Duration::from_secs(20));
    assert_eq!(
        got.len(),
        1,
        "relay:\n{}\nsmarthost:\n{}",
        d.log(),
        host.log()
    );
    let text = std::fs::read_to_string(&got[0]).unwrap();
    assert!(
        text.contains("Subject: 02\n\nover TLS") || text.contains("Subject: 02\r\n\r\nover TLS"),
        "{text}"
    );
    // The smarthost's own Received line: TLS and AUTH were used.
    let unfolded = text.replace("\r\n\t", " ").replace("\n\t", " ");
    assert!(
        unfolded.contains("by smtp.example.com (rsmtpd) with ESMTPSA"),
        "{text}"
    );
    assert!(unfolded.contains("(TLSv1.3:"), "{text}");
    d.wait_for_log("relay: Ok for ", Duration::from_secs(10));
    let log = d.log();
    assert!(
        log.contains("relay: TLS with smtp.example.com: version=TLSv1.3"),
        "{log}"
    );
    assert!(log.contains(", verified"), "{log}");
    host.wait_for_log(
        "authentication user=bob mechanism=PLAIN result=ok",
        Duration::from_secs(5),
    );
    assert!(!log.contains("s3cret") && !host.log().contains("s3cret"));
}

/// 02 against a smarthost that cannot do TLS, and one whose certificate
/// does not verify: no credentials and no mail ever go out, the message
/// stays queued (retried), nothing bounces.
#[test]
fn example_02_sends_nothing_without_verified_tls() {
    // No STARTTLS at all.
    let sink = Sink::start_on("127.0.0.17:0".parse().unwrap(), Behaviour::accept());
    let dns = DnsServer::start(Zone::new().a("smtp.example.com", [127, 0, 0, 17]));
    let files = files_dir("ex02n-files");
    let conf = example_02(&files, sink.port());
    let resolver = dns.addr().to_string();
    let d = start(
        "ex02n",
        &conf,
        &[
            ("RSMTPD_RESOLVER", &resolver),
            ("RSMTPD_RETRY_BASE_RELAY", "1"),
        ],
    );
    send(
        &d,
        "alice@example.org",
        "bob@remote.example",
        "Subject: 02\r\n\r\nneeds TLS",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.log().matches("relay: TempFail for ").count() < 2 {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log();
    assert!(log.contains("does not offer STARTTLS"), "{log}");
    assert!(!log.contains("bounce:"), "{log}");
    for i in 0..sink.connections() {
        let said = String::from_utf8_lossy(&sink.received(i)).into_owned();
        assert!(
            !said.contains("AUTH") && !said.contains("MAIL FROM"),
            "{said}"
        );
    }
    assert!(sink.transactions().is_empty());

    // A certificate from a CA the relay does not trust.
    let certs = files_dir("ex02n-certs");
    let trusted = TestCa::new(&certs, "trusted");
    let rogue = TestCa::new(&certs, "rogue");
    let cert = rogue.issue(&["smtp.example.com"], KeyType::EcdsaP256);
    let host = smarthost("ex02n-rogue", &cert);
    let dns = DnsServer::start(Zone::new().a("smtp.example.com", [127, 0, 0, 18]));
    let files = files_dir("ex02r-files");
    let conf = example_02(&files, host.port);
    let resolver = dns.addr().to_string();
    let roots = trusted.cert_path().display().to_string();
    let d = start(
        "ex02r",
        &conf,
        &[("RSMTPD_RESOLVER", &resolver), ("SSL_CERT_FILE", &roots)],
    );
    send(
        &d,
        "alice@example.org",
        "bob@remote.example",
        "Subject: 02\r\n\r\nrogue",
    );
    d.wait_for_log("relay: TempFail for ", Duration::from_secs(20));
    let log = d.log();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    assert!(host.delivered().is_empty());
    assert!(
        !host.log().contains("authentication user=bob"),
        "{}",
        host.log()
    );
}

// ------------------------------------------------------------------- 03

/// 03: the submission example with an mda. `/path/to/mda -f -` becomes a
/// script that keeps its input, `id -u` and its arguments. Mail for a
/// local alias goes through `mda_with_aliases`, mail for example.com
/// through `mda_without_aliases`; each run as the recipient user.
#[test]
fn example_03_mda_for_local_and_example_com() {
    if !root() {
        return;
    }
    let files = files_dir("ex03-files");
    let out = files.join("out");
    std::fs::create_dir(&out).unwrap();
    chmod(&out, 0o777);
    std::fs::write(files.join("aliases"), "postmaster: rsmtpdtest1\n").unwrap();
    let mda = files.join("mda.sh");
    std::fs::write(
        &mda,
        format!(
            "#!/bin/sh\n# Stands in for /path/to/mda.\nu=$(id -u)\n\
             cat > {o}/$u.msg\nid -u > {o}/$u.uid\necho \"$*\" > {o}/$u.args\n",
            o = out.display()
        ),
    )
    .unwrap();
    chmod(&mda, 0o755);

    let conf = example("03-submission-auth-mda.conf");
    let conf = rewrite_line(
        &conf,
        "table aliases file:/etc/mail/aliases",
        &format!("table aliases file:{}/aliases", files.display()),
        1,
    );
    let conf = rewrite_line(&conf, "listen on lo0", "listen on 127.0.0.1 port {port}", 1);
    // egress (the outside interface) becomes a second loopback address.
    let conf = rewrite_line(
        &conf,
        "listen on egress tls pki mail.example.com auth",
        "listen on 127.0.0.2 port {port} tls pki mail.example.com auth",
        1,
    );
    // The pki files: a certificate from a test CA (the crypto process
    // reads them at start-up).
    let ca = TestCa::new(&files, "ex03");
    let cert = ca.issue(&["mail.example.com"], KeyType::EcdsaP256);
    let conf = rewrite_line(
        &conf,
        "pki mail.example.com cert \"/etc/ssl/mail.example.com.crt\"",
        &format!("pki mail.example.com cert \"{}\"", cert.cert.display()),
        1,
    );
    let conf = rewrite_line(
        &conf,
        "pki mail.example.com key \"/etc/ssl/private/mail.example.com.key\"",
        &format!("pki mail.example.com key \"{}\"", cert.key.display()),
        1,
    );
    let conf = rewrite(
        &conf,
        "\"/path/to/mda -f -\"",
        &format!("\"{} -f -\"", mda.display()),
        2,
    );
    let conf = with_queue_path(&conf);
    let d = start("ex03", &conf, &[]);

    // The alias applies under mda_with_aliases only.
    send(
        &d,
        "alice@example.org",
        "postmaster@localhost",
        "Subject: to the postmaster\r\n\r\nlocal alias",
    );
    send(
        &d,
        "alice@example.org",
        "rsmtpdtest2@example.com",
        "Subject: to example.com\r\n\r\nno aliases here",
    );
    assert_eq!(
        rcpt_reply(&d, "alice@example.org", "postmaster@example.com"),
        "550 5.1.1 Invalid recipient: <postmaster@example.com>\r\n"
    );

    for (user, dest, subject) in [
        ("rsmtpdtest1", "postmaster@localhost", "to the postmaster"),
        ("rsmtpdtest2", "rsmtpdtest2@example.com", "to example.com"),
    ] {
        let uid = uid_of(user);
        let msg_path = out.join(format!("{uid}.msg"));
        let args_path = out.join(format!("{uid}.args"));
        let args = wait_text(&args_path, |t| t.ends_with('\n'));
        assert_eq!(args, "-f -\n", "{user}\nlog:\n{}", d.log());
        let msg = std::fs::read_to_string(&msg_path).unwrap();
        assert!(
            msg.starts_with(&format!(
                "Return-Path: <alice@example.org>\nDelivered-To: {dest}\n"
            )),
            "{user}: {msg}"
        );
        assert!(msg.contains(&format!("\nSubject: {subject}\n")), "{msg}");
        assert_eq!(
            std::fs::read_to_string(out.join(format!("{uid}.uid"))).unwrap(),
            format!("{uid}\n")
        );
        assert_eq!(std::fs::metadata(&msg_path).unwrap().uid(), uid);
    }
    d.wait_for_log("user=rsmtpdtest1, method=mda", Duration::from_secs(10));
    d.wait_for_log("user=rsmtpdtest2, method=mda", Duration::from_secs(10));
}

// ------------------------------------------------------------------- 06

/// 06's text with its tables in `files` and its listeners on loopback:
/// lo0 on 127.0.0.1, egress on 127.0.0.2 (the same port).
fn example_06(files: &Path) -> String {
    let conf = example("06-reject-forged-local-sender.conf");
    let conf = rewrite_line(
        &conf,
        "table aliases file:/etc/mail/aliases",
        &format!("table aliases file:{}/aliases", files.display()),
        1,
    );
    let conf = rewrite_line(
        &conf,
        "table other-relays file:/etc/mail/other-relays",
        &format!("table other-relays file:{}/other-relays", files.display()),
        1,
    );
    let conf = rewrite_line(&conf, "listen on lo0", "listen on 127.0.0.1 port {port}", 1);
    let conf = rewrite_line(
        &conf,
        "listen on egress",
        "listen on 127.0.0.2 port {port}",
        1,
    );
    with_queue_path(&conf)
}

/// 06, the local side: local mail (through the alias table or straight to
/// a user) is delivered with mbox, also with an @example.com sender.
#[test]
fn example_06_local_mail_goes_to_mbox() {
    if !root() {
        return;
    }
    let files = files_dir("ex06-files");
    std::fs::write(files.join("aliases"), "postmaster: rsmtpdtest1\n").unwrap();
    std::fs::write(files.join("other-relays"), "192.0.2.200\n").unwrap();
    let spool = mail_spool("ex06-mail");
    let spool_s = spool.display().to_string();
    let d = start(
        "ex06",
        &example_06(&files),
        &[("RSMTPD_MAIL_SPOOL", &spool_s)],
    );
    send(
        &d,
        "alice@example.org",
        "postmaster@localhost",
        "Subject: via alias\r\n\r\none",
    );
    send(
        &d,
        "bob@example.com",
        "rsmtpdtest2@localhost",
        "Subject: local sender\r\n\r\ntwo",
    );
    let one = mbox_of(&d, &spool, "rsmtpdtest1", 1);
    assert!(one.starts_with("From alice@example.org "), "{one}");
    assert!(
        one.contains("Delivered-To: postmaster@localhost\n"),
        "{one}"
    );
    assert!(one.contains("Subject: via alias\n\none\n"), "{one}");
    let two = mbox_of(&d, &spool, "rsmtpdtest2", 1);
    assert!(two.starts_with("From bob@example.com "), "{two}");
    assert!(two.contains("Subject: local sender\n\ntwo\n"), "{two}");
}

/// A minimal SMTP client whose connection comes from `source`.
struct BoundClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl BoundClient {
    fn connect(source: [u8; 4], to: SocketAddr) -> BoundClient {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket,
        };
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let [a, b, c, e] = source;
        bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, e, 0)).unwrap();
        let SocketAddr::V4(v4) = to else {
            panic!("IPv4 only")
        };
        connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
        let stream = TcpStream::from(fd);
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = BoundClient {
            stream,
            buf: Vec::new(),
        };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }

    fn reply(&mut self) -> String {
        let mut out = String::new();
        for _ in 0..100 {
            let pos = loop {
                if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed after {out:?}");
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
            let line = String::from_utf8_lossy(&line).into_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            out.push_str(&line);
            if last {
                return out;
            }
        }
        panic!("reply too long: {out}")
    }

    fn cmd(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

/// 06, the foreign side: a client that is not local, sending as
/// @example.com, is refused unless its address is in <other-relays>; a
/// listed relay's mail for example.com is delivered with mbox.
///
/// The foreign client is a connection from 127.0.0.2. This cannot work
/// 127.0.0.2 is not in <localhost> (only 127.0.0.1, ::1 and interface
/// addresses are, as in OpenSMTPD), so a client bound to it is foreign.
#[test]
fn example_06_forged_local_sender_from_outside_is_rejected() {
    if !root() {
        return;
    }
    let files = files_dir("ex06f-files");
    std::fs::write(files.join("aliases"), "postmaster: rsmtpdtest1\n").unwrap();
    std::fs::write(files.join("other-relays"), "192.0.2.200\n").unwrap();
    let spool = mail_spool("ex06f-mail");
    let spool_s = spool.display().to_string();
    let env = [("RSMTPD_MAIL_SPOOL", spool_s.as_str())];
    let d = start("ex06f", &example_06(&files), &env);
    let egress = SocketAddr::from(([127, 0, 0, 2], d.port));
    let mut c = BoundClient::connect([127, 0, 0, 2], egress);
    assert!(c.cmd("EHLO outside.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<bob@example.com>").starts_with("250"));
    let r = c.cmd("RCPT TO:<rsmtpdtest1@example.com>");
    d.wait_for_log("connected address=127.0.0.2 ", Duration::from_secs(5));
    assert_eq!(r, "550 5.7.1 Delivery not authorized\r\n", "{}", d.log());
    c.cmd("QUIT");
    drop(d);

    // The same client, now listed in other-relays: its mail for
    // example.com is delivered locally (06's last rule).
    std::fs::write(files.join("other-relays"), "127.0.0.2\n").unwrap();
    let d = start("ex06g", &example_06(&files), &env);
    let egress = SocketAddr::from(([127, 0, 0, 2], d.port));
    let mut c = BoundClient::connect([127, 0, 0, 2], egress);
    assert!(c.cmd("EHLO relay.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<bob@example.com>").starts_with("250"));
    let r = c.cmd("RCPT TO:<rsmtpdtest1@example.com>");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd("Subject: relayed in\r\n\r\nthree\r\n.");
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");
    let text = mbox_of(&d, &spool, "rsmtpdtest1", 1);
    assert!(text.contains("Subject: relayed in\n\nthree\n"), "{text}");
}

// ------------------------------------------------------------- 08, 09

/// 08: primary domains in a db: table built by makemap -t set. A listed
/// domain is delivered with mbox; an unlisted one, or an unknown user of a
/// listed one, is refused.
#[test]
fn example_08_primary_domains_from_a_makemap_db() {
    if !root() {
        return;
    }
    let files = files_dir("ex08-files");
    std::fs::write(files.join("domains"), "example.org\nexample.net\n").unwrap();
    makemap(&files, "set", "domains");
    let conf = example("08-makemap-primary-domains.conf");
    let conf = rewrite_line(
        &conf,
        "table domains db:/etc/mail/domains.db",
        &format!("table domains db:{}/domains.db", files.display()),
        1,
    );
    // 08 has no listener: add one.
    let conf = with_queue_path(&format!("{conf}listen on 127.0.0.1 port {{port}}\n"));
    let spool = mail_spool("ex08-mail");
    let spool_s = spool.display().to_string();
    let d = start("ex08", &conf, &[("RSMTPD_MAIL_SPOOL", &spool_s)]);

    assert_eq!(
        rcpt_reply(&d, "alice@example.com", "rsmtpdtest1@example.com"),
        "550 5.1.1 Invalid recipient: <rsmtpdtest1@example.com>\r\n"
    );
    assert_eq!(
        rcpt_reply(&d, "alice@example.com", "ex08-nosuchuser@example.org"),
        "550 5.1.1 Invalid recipient: <ex08-nosuchuser@example.org>\r\n"
    );
    send(
        &d,
        "alice@example.com",
        "rsmtpdtest1@example.org",
        "Subject: org\r\n\r\nfirst",
    );
    send(
        &d,
        "alice@example.com",
        "rsmtpdtest1@example.net",
        "Subject: net\r\n\r\nsecond",
    );
    let text = mbox_of(&d, &spool, "rsmtpdtest1", 2);
    assert!(text.starts_with("From alice@example.com "), "{text}");
    assert!(
        text.contains("Delivered-To: rsmtpdtest1@example.org\n"),
        "{text}"
    );
    assert!(
        text.contains("Delivered-To: rsmtpdtest1@example.net\n"),
        "{text}"
    );
    assert!(text.contains("Subject: org\n\nfirst\n"), "{text}");
    assert!(text.contains("Subject: net\n\nsecond\n"), "{text}");
    assert!(!spool.join("rsmtpdtest2").exists());
}

/// 09: virtual domains. <vdomains> (makemap -t set) lists example.com,
/// the rule for "example.org" is in the file, and <vusers> (makemap -t
/// aliases) maps one address of each and a catch-all for example.org.
#[test]
fn example_09_virtual_domains_from_makemap_dbs() {
    if !root() {
        return;
    }
    let files = files_dir("ex09-files");
    std::fs::write(files.join("vdomains"), "example.com\n").unwrap();
    std::fs::write(
        files.join("users"),
        "info@example.org rsmtpdtest1\n@example.org rsmtpdtest2\nsales@example.com rsmtpdtest1\n",
    )
    .unwrap();
    makemap(&files, "set", "vdomains");
    makemap(&files, "aliases", "users");
    let conf = example("09-makemap-virtual-domains.conf");
    let conf = rewrite_line(
        &conf,
        "table vdomains db:/etc/mail/vdomains.db",
        &format!("table vdomains db:{}/vdomains.db", files.display()),
        1,
    );
    let conf = rewrite_line(
        &conf,
        "table vusers db:/etc/mail/users.db",
        &format!("table vusers db:{}/users.db", files.display()),
        1,
    );
    // 09 has no listener: add one.
    let conf = with_queue_path(&format!("{conf}listen on 127.0.0.1 port {{port}}\n"));
    let spool = mail_spool("ex09-mail");
    let spool_s = spool.display().to_string();
    let d = start("ex09", &conf, &[("RSMTPD_MAIL_SPOOL", &spool_s)]);

    // Not a virtual domain; example.com has no catch-all.
    assert_eq!(
        rcpt_reply(&d, "alice@example.net", "info@example.net"),
        "550 5.1.1 Invalid recipient: <info@example.net>\r\n"
    );
    assert_eq!(
        rcpt_reply(&d, "alice@example.net", "nobody@example.com"),
        "550 5.1.1 Invalid recipient: <nobody@example.com>\r\n"
    );
    send(
        &d,
        "alice@example.net",
        "info@example.org",
        "Subject: info\r\n\r\nexact address",
    );
    send(
        &d,
        "alice@example.net",
        "sales@example.com",
        "Subject: sales\r\n\r\nother domain",
    );
    send(
        &d,
        "alice@example.net",
        "anyone@example.org",
        "Subject: anyone\r\n\r\ncatch-all",
    );
    let one = mbox_of(&d, &spool, "rsmtpdtest1", 2);
    assert!(one.contains("Delivered-To: info@example.org\n"), "{one}");
    assert!(one.contains("Subject: info\n\nexact address\n"), "{one}");
    assert!(one.contains("Delivered-To: sales@example.com\n"), "{one}");
    assert!(one.contains("Subject: sales\n\nother domain\n"), "{one}");
    assert!(!one.contains("catch-all"), "{one}");
    let two = mbox_of(&d, &spool, "rsmtpdtest2", 1);
    assert!(two.contains("Delivered-To: anyone@example.org\n"), "{two}");
    assert!(two.contains("Subject: anyone\n\ncatch-all\n"), "{two}");
}
