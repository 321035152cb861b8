//! Aliases, virtual tables and .forward, end to end as root: who gets the
//! mail, as whom files and commands run, and what a hostile recipient can
//! not do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsmtpd_test_support::daemon::{Client, Daemon, Setup};

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

fn ids(name: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(name).unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

/// A directory owned by `user`, mode 0755.
fn owned_dir(path: &Path, user: &str) {
    std::fs::create_dir_all(path).unwrap();
    let (uid, gid) = ids(user);
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Files in `maildir/new`, waiting up to 10 s for at least `n`.
fn wait_files(maildir: &Path, n: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= n || Instant::now() >= deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Env {
    d: Daemon,
    mail: PathBuf,
}

/// A daemon whose local action delivers to `{dir}/mail/<user>`, with
/// `tables` and `action_opts` added to the action.
fn start(name: &str, tables: &str, action_opts: &str, rules: &str) -> Env {
    let body = format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n{tables}\n\
         action \"local\" maildir \"{{dir}}/mail/%{{user.username}}\" {action_opts}\n{rules}\n"
    );
    let d = Daemon::start(
        smtpd(),
        &Setup {
            name,
            body: &body,
            args: &[],
            env: &[],
        },
    );
    let mail = d.dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o755)).unwrap();
    for u in ["rsmtpdtest1", "rsmtpdtest2"] {
        owned_dir(&mail.join(u), u);
    }
    Env { d, mail }
}

fn rcpt(d: &Daemon, to: &str) -> String {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<alice@sender.example>");
    c.cmd(&format!("RCPT TO:<{to}>"))
}

fn send(d: &Daemon, to: &str, body: &str) {
    let mut c = Client::connect(d.addr());
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<alice@sender.example>").starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    assert!(r.starts_with("250"), "{to}: {r}");
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("{body}\r\n."));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT");
}

const LOCAL: &str = "match from any for domain \"example.org\" action \"local\"";

#[test]
fn aliases_fan_out_to_users_files_and_commands() {
    if !root() {
        return;
    }
    let out = rsmtpd_test_support::temp_dir("alias-out");
    owned_dir(&out, "_smtpd");
    let o = out.display().to_string();
    let tables = format!(
        "table aliases {{ team = \"rsmtpdtest1, rsmtpdtest2\", \
         archive = \"{o}/archive.mbox\", \
         pipe = \"|cat > {o}/pipe.out; id -un > {o}/pipe.user\", \
         closed = \"error:550 5.2.1 this list is closed\", \
         \"chain\" = team }}"
    );
    let e = start("alias", &tables, "alias <aliases>", LOCAL);
    send(&e.d, "team@example.org", "Subject: team\r\n\r\nhello team");
    assert_eq!(
        wait_files(&e.mail.join("rsmtpdtest1"), 1).len(),
        1,
        "{}",
        e.d.log()
    );
    assert_eq!(wait_files(&e.mail.join("rsmtpdtest2"), 1).len(), 1);

    send(
        &e.d,
        "archive@example.org",
        "Subject: kept\r\n\r\nfor the record",
    );
    let archive = out.join("archive.mbox");
    assert!(wait_for(&archive), "{}", e.d.log());
    e.d.wait_for_log("method=file", Duration::from_secs(10));
    let text = std::fs::read_to_string(&archive).unwrap();
    assert!(text.starts_with("From alice@sender.example "), "{text}");
    assert!(text.contains("Subject: kept\n\nfor the record\n"), "{text}");
    assert_eq!(std::fs::metadata(&archive).unwrap().uid(), ids("_smtpd").0);

    send(&e.d, "pipe@example.org", "Subject: piped\r\n\r\nthrough");
    assert!(wait_for(&out.join("pipe.user")), "{}", e.d.log());
    e.d.wait_for_log("method=mda", Duration::from_secs(10));
    assert_eq!(
        std::fs::read_to_string(out.join("pipe.user"))
            .unwrap()
            .trim(),
        "_smtpd"
    );
    assert!(
        std::fs::read_to_string(out.join("pipe.out"))
            .unwrap()
            .contains("Subject: piped\n\nthrough\n")
    );

    let refused = rcpt(&e.d, "closed@example.org");
    assert_eq!(refused, "550 5.2.1 this list is closed\r\n");

    send(
        &e.d,
        "chain@example.org",
        "Subject: chained\r\n\r\nvia team",
    );
    assert_eq!(wait_files(&e.mail.join("rsmtpdtest1"), 2).len(), 2);
}

#[test]
fn virtual_tables_map_addresses_to_users() {
    if !root() {
        return;
    }
    let tables =
        "table vusers { \"bob@virt.example\" = rsmtpdtest2, \"@virt.example\" = rsmtpdtest1 }";
    let rules = "match from any for domain \"virt.example\" action \"local\"";
    let e = start("virtual", tables, "virtual <vusers>", rules);
    send(&e.d, "bob@virt.example", "Subject: to bob\r\n\r\nb");
    send(&e.d, "anyone@virt.example", "Subject: catch-all\r\n\r\nc");
    let two = wait_files(&e.mail.join("rsmtpdtest2"), 1);
    assert_eq!(two.len(), 1, "{}", e.d.log());
    assert!(
        std::fs::read_to_string(&two[0])
            .unwrap()
            .contains("Subject: to bob")
    );
    let one = wait_files(&e.mail.join("rsmtpdtest1"), 1);
    assert_eq!(one.len(), 1);
    assert!(
        std::fs::read_to_string(&one[0])
            .unwrap()
            .contains("Subject: catch-all")
    );
}

#[test]
fn a_forward_file_redirects_its_owners_mail() {
    if !root() {
        return;
    }
    // A virtual user with a real home, owned by rsmtpdtest1.
    let home = rsmtpd_test_support::temp_dir("fwd-home");
    owned_dir(&home, "rsmtpdtest1");
    let (uid, gid) = ids("rsmtpdtest1");
    std::fs::write(home.join(".forward"), "rsmtpdtest2\n").unwrap();
    nix::unistd::chown(
        &home.join(".forward"),
        Some(nix::unistd::Uid::from_raw(uid)),
        None,
    )
    .unwrap();
    std::fs::set_permissions(
        home.join(".forward"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let tables = format!(
        "table users {{ fwduser = \"{uid}:{gid}:{}\", rsmtpdtest2 = \"{}:{}:/nonexistent\" }}",
        home.display(),
        ids("rsmtpdtest2").0,
        ids("rsmtpdtest2").1
    );
    let e = start("forward", &tables, "userbase <users>", LOCAL);
    send(&e.d, "fwduser@example.org", "Subject: forwarded\r\n\r\nf");
    let got = wait_files(&e.mail.join("rsmtpdtest2"), 1);
    assert_eq!(got.len(), 1, "{}", e.d.log());
    assert_eq!(
        std::fs::metadata(&got[0]).unwrap().uid(),
        ids("rsmtpdtest2").0
    );

    // A world-writable .forward is refused: a temporary failure at RCPT.
    std::fs::set_permissions(
        home.join(".forward"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let reply = rcpt(&e.d, "fwduser@example.org");
    assert!(reply.starts_with("451 "), "{reply}");
}

#[test]
fn hostile_recipients_reach_no_file_no_command_no_other_user() {
    if !root() {
        return;
    }
    let e = start("hostile", "", "", LOCAL);
    let marker = e.d.dir.join("pwned");
    for to in [
        "\"../../etc/passwd\"@example.org",
        "\"$(touch /tmp/rsmtpd-pwned)\"@example.org",
        "\";sleep 5;\"@example.org",
        "\"a|b\"@example.org",
        "\"|touch pwned\"@example.org",
        "\"/tmp/file\"@example.org",
    ] {
        let reply = rcpt(&e.d, to);
        assert!(
            reply.starts_with("550 ") || reply.starts_with("553 ") || reply.starts_with("501 "),
            "{to}: {reply}"
        );
    }
    assert!(!marker.exists());
    assert!(!Path::new("/tmp/rsmtpd-pwned").exists());
}
