//! Every directive and option of smtpd.conf(5), parsed into the model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{RULE, ok};
use rsmtpd_config::model::*;
use rsmtpd_table::TableDecl;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn table(c: &Config, id: TableId) -> &NamedTable {
    &c.tables[id.0]
}

fn local(c: &Config, name: &str) -> LocalDispatcher {
    let a = c.actions.iter().find(|a| a.name == name).expect("action");
    match &a.dispatcher {
        Dispatcher::Local(d) => d.clone(),
        other => panic!("{name}: local expected, got {other:?}"),
    }
}

fn relay(c: &Config, name: &str) -> RelayDispatcher {
    let a = c.actions.iter().find(|a| a.name == name).expect("action");
    match &a.dispatcher {
        Dispatcher::Relay(d) => d.clone(),
        other => panic!("{name}: relay expected, got {other:?}"),
    }
}

#[test]
fn defaults_without_directives() {
    let c = ok(RULE);
    assert_eq!(c.smtp, SmtpOptions::default());
    assert_eq!(c.smtp.max_message_size, 35 * 1024 * 1024);
    assert_eq!(c.queue, QueueOptions::default());
    assert_eq!(c.bounce_warn_interval, vec![Duration::from_secs(4 * 3600)]);
    assert_eq!(c.mta, MtaOptions::default());
    assert_eq!(c.mda, MdaOptions::default());
    assert_eq!(c.scheduler, SchedulerLimits::default());
    assert_eq!(c.srs, SrsOptions::default());
    assert_eq!(c.admd, None);
    assert_eq!(c.hostname, "mail.example.org");
    assert!(c.listeners.is_empty());
    assert_eq!(c.socket.span, None);
    assert_eq!(c.files, vec![PathBuf::from("test.conf")]);
}

#[test]
fn builtin_tables() {
    let c = ok(RULE);
    let names: Vec<&str> = c.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "<localhost>",
            "<anyhost>",
            "<localnames>",
            "<anydestination>",
            "<getpwnam>"
        ]
    );
    assert_eq!(
        c.tables[0].decl,
        TableDecl::StaticList(vec![
            "local".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "192.0.2.10".into(),
            "2001:db8::10".into(),
        ])
    );
    assert_eq!(
        c.tables[1].decl,
        TableDecl::StaticList(vec!["local".into(), "0.0.0.0/0".into(), "::/0".into()])
    );
    let TableDecl::StaticList(names) = &c.tables[2].decl else {
        panic!("list expected")
    };
    for v in [
        "localhost",
        "mail.example.org",
        "[127.0.0.1]",
        "[::1]",
        "[192.0.2.10]",
        "[ipv6:2001:db8::10]",
    ] {
        assert!(names.iter().any(|n| n == v), "{v} missing from {names:?}");
    }
    assert_eq!(c.tables[3].decl, TableDecl::StaticList(vec!["*".into()]));
    assert_eq!(c.tables[4].decl, TableDecl::Getpwnam);
    assert!(c.tables.iter().all(|t| t.span.is_none()));
}

#[test]
fn tables_declared_then_builtin_then_anonymous() {
    let dir = common::temp_dir("decl-order");
    let (fc, fd, fe) = (dir.join("c"), dir.join("d"), dir.join("e"));
    for f in [&fc, &fd, &fe] {
        std::fs::write(f, "example.org\n").expect("write");
    }
    let c = ok(&format!(
        "table a {{ x, y }}\n\
         table b {{ k = v, k2 => v2 }}\n\
         table c file:{}\n\
         table d file:{}\n\
         table e \"{}\"\n\
         action \"l\" mbox\n\
         match for domain \"example.com\" action \"l\"\n",
        fc.display(),
        fd.display(),
        fe.display()
    ));
    let names: Vec<&str> = c.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(&names[..5], &["a", "b", "c", "d", "e"]);
    assert_eq!(
        &names[5..10],
        &[
            "<localhost>",
            "<anyhost>",
            "<localnames>",
            "<anydestination>",
            "<getpwnam>"
        ]
    );
    assert_eq!(names[10], "<dynamic:0>");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        c.tables[0].decl,
        TableDecl::StaticList(vec!["x".into(), "y".into()])
    );
    assert_eq!(
        c.tables[1].decl,
        TableDecl::StaticMap(vec![("k".into(), "v".into()), ("k2".into(), "v2".into())])
    );
    assert_eq!(c.tables[2].decl, TableDecl::File(fc.clone()));
    assert_eq!(c.tables[3].decl, TableDecl::File(fd.clone()));
    assert_eq!(c.tables[4].decl, TableDecl::File(fe.clone()));
    assert_eq!(
        c.tables[0].span,
        Some(Span {
            file: 0,
            line: 1,
            col: 1
        })
    );
    let Destination::Domain(m) = c.rules[0].to.value else {
        panic!("domain expected")
    };
    assert_eq!(m.table, TableId(10));
    assert!(!m.regex);
    assert_eq!(
        table(&c, m.table).decl,
        TableDecl::StaticList(vec!["example.com".into()])
    );
}

#[test]
fn table_lists_across_lines() {
    let text = format!(
        "table t {{\n  one,\n  two\n  three, four\n}}\ntable m {{ a = \"1\",\n b = \"2\" }}\n{RULE}"
    );
    let c = ok(&text);
    assert_eq!(
        c.tables[0].decl,
        TableDecl::StaticList(vec![
            "one".into(),
            "two".into(),
            "three".into(),
            "four".into()
        ])
    );
    assert_eq!(
        c.tables[1].decl,
        TableDecl::StaticMap(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
    );
}

#[test]
fn admd_bounce_and_globals() {
    let c = ok(&format!(
        "admd \"example.org\"\n\
         bounce warn-interval 1h, 30m, 2d, 10s\n\
         smtp max-message-size 10M\n\
         smtp limit max-mails 5 max-rcpt 7\n\
         smtp limit max-sessions 20 max-sessions-per-address 3 max-errors 4\n\
         smtp ciphers \"HIGH:!aNULL\"\n\
         smtp sub-addr-delim \"-\"\n\
         queue compression\n\
         queue ttl 2d\n\
         queue encryption \"sekrit\"\n\
         queue path \"/var/spool/rsmtpd\"\n\
         scheduler limit max-inflight 10 max-evp-batch-size 11 max-msg-batch-size 12 max-schedule 13\n\
         srs key \"k1\"\n\
         srs key backup \"k0\"\n\
         srs ttl 7d\n\
         {RULE}"
    ));
    assert_eq!(c.admd.as_deref(), Some("example.org"));
    assert_eq!(
        c.bounce_warn_interval,
        vec![
            Duration::from_secs(3600),
            Duration::from_secs(1800),
            Duration::from_secs(2 * 86400),
            Duration::from_secs(10)
        ]
    );
    assert_eq!(
        c.smtp,
        SmtpOptions {
            max_message_size: 10 * 1024 * 1024,
            max_mails: 5,
            max_rcpt: 7,
            max_sessions: 20,
            max_sessions_per_address: 3,
            max_errors: 4,
            sub_addr_delim: '-',
            ciphers: Some("HIGH:!aNULL".into()),
        }
    );
    assert_eq!(
        c.queue,
        QueueOptions {
            path: "/var/spool/rsmtpd".into(),
            ttl: Duration::from_secs(2 * 86400),
            compression: true,
            encryption: Some(QueueEncryption::Key("sekrit".into())),
        }
    );
    assert_eq!(
        c.scheduler,
        SchedulerLimits {
            max_inflight: 10,
            max_evp_batch_size: 11,
            max_msg_batch_size: 12,
            max_schedule: 13
        }
    );
    assert_eq!(
        c.srs,
        SrsOptions {
            key: Some("k1".into()),
            backup_key: Some("k0".into()),
            ttl: Duration::from_secs(7 * 86400)
        }
    );
}

#[test]
fn sizes_and_encryption_forms() {
    for (text, size) in [
        ("smtp max-message-size 1000", 1000u64),
        ("smtp max-message-size 35m", 35 << 20),
        ("smtp max-message-size 2G", 2 << 30),
        ("smtp max-message-size 1K", 1024),
    ] {
        let c = ok(&format!("{text}\n{RULE}"));
        assert_eq!(c.smtp.max_message_size, size, "{text}");
    }
    for (text, enc) in [
        ("queue encryption", QueueEncryption::Prompt),
        ("queue encryption stdin", QueueEncryption::Stdin),
        ("queue encryption \"-\"", QueueEncryption::Stdin),
        (
            "queue encryption \"abc\"",
            QueueEncryption::Key("abc".into()),
        ),
    ] {
        let c = ok(&format!("{text}\n{RULE}"));
        assert_eq!(c.queue.encryption, Some(enc), "{text}");
    }
}

#[test]
fn srs_ttl_keeps_whole_days() {
    let c = ok(&format!("srs ttl 36h\n{RULE}"));
    assert_eq!(c.srs.ttl, Duration::from_secs(86400));
}

#[test]
fn mda_and_mta() {
    let c = ok(&format!(
        "mda wrapper w \"/usr/bin/wrap %{{mda}}\"\n\
         mda limit max-session 1 max-session-per-user 2 task-lowat 3 task-hiwat 4 task-release 5\n\
         mta max-deferred 9\n\
         mta limit inet4 max-conn-per-host 3 session-keepalive 20\n\
         mta limit for domain example.org max-conn-per-route 1 inet6\n\
         {RULE}"
    ));
    assert_eq!(
        c.mda.wrappers.get("w").map(String::as_str),
        Some("/usr/bin/wrap %{mda}")
    );
    assert_eq!(
        c.mda.limits,
        MdaLimits {
            max_session: 1,
            max_session_per_user: 2,
            task_lowat: 3,
            task_hiwat: 4,
            task_release: 5
        }
    );
    assert_eq!(c.mta.max_deferred, 9);
    assert_eq!(c.mta.limits.family, Some(Family::Inet4));
    assert_eq!(c.mta.limits.max_conn_per_host, 3);
    assert_eq!(c.mta.limits.session_keepalive, 20);
    let d = c
        .mta
        .domain_limits
        .get("example.org")
        .expect("domain limits");
    // Starts from the defaults in force, then applies its own keys.
    assert_eq!(d.max_conn_per_route, 1);
    assert_eq!(d.family, Some(Family::Inet6));
    assert_eq!(d.max_conn_per_host, 3);
}

#[test]
fn pki_ca_proc() {
    let c = ok(&format!(
        "pki Mail.Example.COM cert \"/etc/ssl/a.crt\"\n\
         pki mail.example.com key \"/etc/ssl/a.key\" dhe auto\n\
         pki \"*\" cert \"/c\" key \"/k\"\n\
         ca myca cert \"/etc/ssl/ca.pem\"\n\
         proc p1 \"/usr/libexec/filter\" user _f group _g chroot \"/var/empty\"\n\
         proc p2 \"x\"\n\
         {RULE}"
    ));
    assert_eq!(c.pkis.len(), 2);
    assert_eq!(c.pkis[0].name, "mail.example.com");
    assert_eq!(c.pkis[0].cert, PathBuf::from("/etc/ssl/a.crt"));
    assert_eq!(c.pkis[0].key, PathBuf::from("/etc/ssl/a.key"));
    assert_eq!(c.pkis[0].dhe, Dhe::Auto);
    assert_eq!(
        c.pkis[0].span,
        Span {
            file: 0,
            line: 1,
            col: 1
        }
    );
    assert_eq!(c.pkis[1].name, "*");
    assert_eq!(c.pkis[1].dhe, Dhe::None);
    assert_eq!(c.cas[0].name, "myca");
    assert_eq!(c.cas[0].cert, PathBuf::from("/etc/ssl/ca.pem"));
    assert_eq!(c.procs[0].name, "p1");
    assert_eq!(c.procs[0].command, "/usr/libexec/filter");
    assert_eq!(c.procs[0].user.as_deref(), Some("_f"));
    assert_eq!(c.procs[0].group.as_deref(), Some("_g"));
    assert_eq!(c.procs[0].chroot.as_deref(), Some("/var/empty"));
    assert_eq!(c.procs[1].user, None);
}

#[test]
fn filters_all_forms() {
    let c = ok(&format!(
        "proc p \"/bin/filter\"\n\
         filter f1 proc p\n\
         filter f2 proc-exec \"filter-dkimsign -d x\" user _dkim group _dkim chroot \"/c\"\n\
         filter f3 phase connect match !fcrdns disconnect \"550 no FCrDNS\"\n\
         filter f4 phase helo match helo regex \"^[0-9.]+$\" reject \"550 bad helo\"\n\
         filter f5 phase mail-from match mail-from <senders> junk\n\
         filter f6 phase rcpt-to match rcpt-to \"a@b\" rewrite \"c@d\"\n\
         filter f7 phase data match auth bypass\n\
         filter f8 phase commit match !rdns report \"x\"\n\
         filter f9 phase ehlo match src {{ 10.0.0.0/8 }} bypass\n\
         filter chain1 chain {{ f1, f2\n f3 }}\n\
         {RULE}"
    )
    .replace("<senders>", "\"a@example.org\""));
    let names: Vec<&str> = c.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "chain1"
        ]
    );
    assert!(matches!(c.filters[0].kind, FilterKind::Proc(ProcId(0))));
    let FilterKind::ProcExec(pid) = c.filters[1].kind else {
        panic!("proc-exec")
    };
    assert_eq!(c.procs[pid.0].name, "f2");
    assert_eq!(c.procs[pid.0].command, "filter-dkimsign -d x");
    assert_eq!(c.procs[pid.0].user.as_deref(), Some("_dkim"));
    assert_eq!(c.procs[pid.0].chroot.as_deref(), Some("/c"));
    let builtin = |i: usize| match &c.filters[i].kind {
        FilterKind::Builtin {
            phase,
            conditions,
            decision,
        } => (*phase, conditions.clone(), decision.clone()),
        other => panic!("builtin expected, got {other:?}"),
    };
    let (p, conds, d) = builtin(2);
    assert_eq!(p, FilterPhase::Connect);
    assert_eq!(
        conds,
        vec![Negatable {
            negated: true,
            value: FilterCondition::Fcrdns
        }]
    );
    assert_eq!(d, FilterDecision::Disconnect("550 no FCrDNS".into()));
    let (p, conds, d) = builtin(3);
    assert_eq!(p, FilterPhase::Helo);
    let FilterCondition::Helo(m) = conds[0].value else {
        panic!("helo")
    };
    assert!(m.regex);
    assert_eq!(
        table(&c, m.table).decl,
        TableDecl::StaticList(vec!["^[0-9.]+$".into()])
    );
    assert_eq!(d, FilterDecision::Reject("550 bad helo".into()));
    assert_eq!(builtin(4).0, FilterPhase::MailFrom);
    assert_eq!(builtin(4).2, FilterDecision::Junk);
    assert_eq!(builtin(5).2, FilterDecision::Rewrite("c@d".into()));
    assert_eq!(builtin(6).1[0].value, FilterCondition::Auth(None));
    assert_eq!(builtin(6).2, FilterDecision::Bypass);
    assert_eq!(builtin(7).0, FilterPhase::Commit);
    assert_eq!(
        builtin(7).1[0],
        Negatable {
            negated: true,
            value: FilterCondition::Rdns(None)
        }
    );
    assert_eq!(builtin(7).2, FilterDecision::Report("x".into()));
    assert_eq!(builtin(8).0, FilterPhase::Ehlo);
    let FilterKind::Chain(chain) = &c.filters[9].kind else {
        panic!("chain")
    };
    assert_eq!(chain, &vec![FilterId(0), FilterId(1), FilterId(2)]);
}

#[test]
fn listen_on_every_option() {
    let c = ok(&format!(
        "pki a cert \"/a.crt\" key \"/a.key\"\n\
         pki b cert \"/b.crt\" key \"/b.key\"\n\
         ca c cert \"/ca.pem\"\n\
         table creds {{ u = pw }}\n\
         table snd {{ u = \"u@example.org\" }}\n\
         table names {{ 192.0.2.10 = mx.example.org }}\n\
         filter f phase connect match rdns bypass\n\
         listen on eth0 inet4 port 587 tls-require verify pki a pki b ca c \\\n\
           ciphers \"HIGH\" protocols \"tlsv1.3\" auth <creds> tag SUBMIT hostname mx.example.org \\\n\
           hostnames <names> mask-src received-auth no-dsn proxy-v2 senders <snd> masquerade filter f\n\
         {RULE}"
    ));
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.on, ListenOn::Interface("eth0".into()));
    assert_eq!(l.addresses, vec![ip("192.0.2.10")]);
    assert_eq!(l.family, Some(Family::Inet4));
    assert_eq!(l.port, 587);
    assert_eq!(
        l.tls,
        ListenerTls::StartTls {
            required: true,
            verify_client: true
        }
    );
    assert_eq!(l.pkis, vec![PkiId(0), PkiId(1)]);
    assert_eq!(l.ca, Some(CaId(0)));
    assert_eq!(l.ciphers.as_deref(), Some("HIGH"));
    assert_eq!(l.protocols.as_deref(), Some("tlsv1.3"));
    let auth = l.auth.clone().expect("auth");
    assert!(auth.required);
    assert_eq!(
        auth.table.map(|t| c.tables[t.0].name.clone()).as_deref(),
        Some("creds")
    );
    assert_eq!(l.tag.as_deref(), Some("SUBMIT"));
    assert_eq!(l.hostname.as_deref(), Some("mx.example.org"));
    assert_eq!(
        l.hostnames.map(|t| c.tables[t.0].name.clone()).as_deref(),
        Some("names")
    );
    assert!(l.mask_src && l.received_auth && l.no_dsn && l.proxy_v2);
    let s = l.senders.clone().expect("senders");
    assert!(s.masquerade);
    assert_eq!(c.tables[s.table.0].name, "snd");
    assert_eq!(l.filter, Some(FilterId(0)));
    assert_eq!(
        l.span,
        Span {
            file: 0,
            line: 8,
            col: 1
        }
    );
}

#[test]
fn listen_on_defaults_and_forms() {
    let c = ok(&format!(
        "pki p cert \"/c\" key \"/k\"\n\
         listen on lo\n\
         listen on 127.0.0.1 smtps pki p\n\
         listen on :: port smtps smtps verify pki p auth-optional\n\
         listen on 0.0.0.0 port submission tls pki p auth\n\
         listen on localhost inet6\n\
         listen on mx.test port 2525\n\
         {RULE}"
    ));
    let l = &c.listeners;
    assert_eq!(l[0].on, ListenOn::Interface("lo".into()));
    assert_eq!(l[0].addresses, vec![ip("127.0.0.1"), ip("::1")]);
    assert_eq!(l[0].port, 25);
    assert_eq!(l[0].tls, ListenerTls::None);
    assert!(l[0].auth.is_none() && !l[0].mask_src && !l[0].no_dsn);
    assert_eq!(l[1].on, ListenOn::Address(ip("127.0.0.1")));
    assert_eq!(l[1].port, 465);
    assert_eq!(
        l[1].tls,
        ListenerTls::Smtps {
            verify_client: false
        }
    );
    assert_eq!(l[2].on, ListenOn::Address(ip("::")));
    assert_eq!(l[2].port, 465);
    assert_eq!(
        l[2].tls,
        ListenerTls::Smtps {
            verify_client: true
        }
    );
    assert_eq!(
        l[2].auth,
        Some(ListenerAuth {
            required: false,
            table: None
        })
    );
    assert_eq!(l[3].port, 587);
    assert_eq!(
        l[3].tls,
        ListenerTls::StartTls {
            required: false,
            verify_client: false
        }
    );
    assert_eq!(
        l[3].auth,
        Some(ListenerAuth {
            required: true,
            table: None
        })
    );
    assert_eq!(l[4].on, ListenOn::Hostname("localhost".into()));
    assert_eq!(l[4].addresses, vec![ip("::1")]);
    assert_eq!(l[5].on, ListenOn::Hostname("mx.test".into()));
    assert_eq!(l[5].addresses, vec![ip("192.0.2.25")]);
    assert_eq!(l[5].port, 2525);
}

#[test]
fn listen_with_inline_filter_chain() {
    let c = ok(&format!(
        "filter a phase connect match rdns bypass\n\
         filter b phase helo match helo \"x\" bypass\n\
         listen on lo filter {{ a, b }}\n\
         listen on socket filter {{ b }} mask-src no-dsn tag LOCAL\n\
         {RULE}"
    ));
    let chain = c.listeners[0].filter.expect("filter");
    assert_eq!(c.filters[chain.0].name, "<dynchain:00000001>");
    assert!(
        matches!(&c.filters[chain.0].kind, FilterKind::Chain(v) if v == &vec![FilterId(0), FilterId(1)])
    );
    let s = &c.socket;
    assert_eq!(
        s.span,
        Some(Span {
            file: 0,
            line: 4,
            col: 1
        })
    );
    assert!(s.mask_src && s.no_dsn);
    assert_eq!(s.tag.as_deref(), Some("LOCAL"));
    let f = s.filter.expect("socket filter");
    assert_eq!(c.filters[f.0].name, "<dynchain:00000002>");
}

#[test]
fn local_actions() {
    let c = ok(&format!(
        "table aliases {{ root = alice }}\n\
         table vusers {{ \"a@example.org\" = alice }}\n\
         table ub {{ alice = \"1000:1000:/home/alice\" }}\n\
         mda wrapper w \"/bin/w\"\n\
         action m1 mbox alias <aliases>\n\
         action m2 maildir\n\
         action m3 maildir junk\n\
         action m4 maildir \"~/Mail\" junk virtual <vusers> user vmail\n\
         action m5 maildir \"/var/mail/%{{rcpt.domain}}\" userbase <ub> ttl 1d\n\
         action m6 lmtp \"/var/run/dovecot/lmtp\" rcpt-to\n\
         action m7 lmtp \"127.0.0.1:24\"\n\
         action m8 mda \"/usr/bin/procmail -f -\" wrapper w user bob\n\
         action m9 forward-only alias <aliases>\n\
         action m10 expand-only\n\
         {RULE}"
    ));
    let d = local(&c, "m1");
    assert_eq!(d.method, LocalMethod::Mbox);
    assert!(matches!(d.expansion, Some(Expansion::Alias(t)) if c.tables[t.0].name == "aliases"));
    assert_eq!(
        local(&c, "m2").method,
        LocalMethod::Maildir {
            path: None,
            junk: false
        }
    );
    assert_eq!(
        local(&c, "m3").method,
        LocalMethod::Maildir {
            path: None,
            junk: true
        }
    );
    let d = local(&c, "m4");
    assert_eq!(
        d.method,
        LocalMethod::Maildir {
            path: Some("~/Mail".into()),
            junk: true
        }
    );
    assert!(matches!(d.expansion, Some(Expansion::Virtual(t)) if c.tables[t.0].name == "vusers"));
    assert_eq!(d.user.as_deref(), Some("vmail"));
    let d = local(&c, "m5");
    assert_eq!(
        d.method,
        LocalMethod::Maildir {
            path: Some("/var/mail/%{rcpt.domain}".into()),
            junk: false
        }
    );
    assert!(matches!(d.userbase, Some(t) if c.tables[t.0].name == "ub"));
    let m5 = c.actions.iter().find(|a| a.name == "m5").expect("m5");
    assert_eq!(m5.ttl, Some(Duration::from_secs(86400)));
    assert_eq!(
        local(&c, "m6").method,
        LocalMethod::Lmtp {
            destination: "/var/run/dovecot/lmtp".into(),
            rcpt_to: true
        }
    );
    assert_eq!(
        local(&c, "m7").method,
        LocalMethod::Lmtp {
            destination: "127.0.0.1:24".into(),
            rcpt_to: false
        }
    );
    let d = local(&c, "m8");
    assert_eq!(
        d.method,
        LocalMethod::Mda {
            command: "/usr/bin/procmail -f -".into()
        }
    );
    assert_eq!(d.wrapper.as_deref(), Some("w"));
    assert_eq!(d.user.as_deref(), Some("bob"));
    assert_eq!(local(&c, "m9").method, LocalMethod::ForwardOnly);
    assert_eq!(local(&c, "m10").method, LocalMethod::ExpandOnly);
    assert_eq!(local(&c, "m10").userbase, None);
}

#[test]
fn relay_actions() {
    let c = ok(&format!(
        "table secrets {{ bob = \"user:pw\" }}\n\
         table relays {{ example.com = \"smtp+tls://mx.example.com\" }}\n\
         table helos {{ 192.0.2.10 = mx.example.org }}\n\
         table srcs {{ 192.0.2.10, 192.0.2.11 }}\n\
         pki p cert \"/c\" key \"/k\"\n\
         ca c cert \"/ca\"\n\
         srs key \"s\"\n\
         filter f phase connect match rdns bypass\n\
         action r1 relay\n\
         action r2 relay host smtp+tls://bob@smtp.example.com:587 auth <secrets> tls no-verify\n\
         action r3 relay domain <relays> helo mx.example.org helo-src <helos> src <srcs>\n\
         action r4 relay backup mx mx2.example.org src 192.0.2.10 mail-from \"bounce@example.org\"\n\
         action r5 relay backup pki p ca c ciphers \"HIGH\" protocols \"tlsv1.2\" srs filter f ttl 3h\n\
         action r6 relay host lmtp://127.0.0.1:2424 tls\n\
         action r7 relay host smtps://relay.example.net filter {{ f }}\n\
         {RULE}"
    ));
    let d = relay(&c, "r1");
    assert_eq!(d.route, Route::Mx);
    assert_eq!(d.tls, RelayTls::Opportunistic);
    assert_eq!(d.backup, None);
    let d = relay(&c, "r2");
    assert_eq!(
        d.route,
        Route::Host(RelayUrl {
            proto: RelayProto::SmtpTls,
            label: Some("bob".into()),
            host: "smtp.example.com".into(),
            port: Some(587)
        })
    );
    assert!(matches!(d.auth, Some(t) if c.tables[t.0].name == "secrets"));
    assert_eq!(d.tls, RelayTls::Required { verify: false });
    let d = relay(&c, "r3");
    assert!(matches!(d.route, Route::Domain(t) if c.tables[t.0].name == "relays"));
    assert_eq!(d.helo.as_deref(), Some("mx.example.org"));
    assert!(matches!(d.helo_src, Some(t) if c.tables[t.0].name == "helos"));
    assert!(matches!(d.src, Some(SourceAddrs::Table(t)) if c.tables[t.0].name == "srcs"));
    let d = relay(&c, "r4");
    assert_eq!(d.backup, Some(Some("mx2.example.org".into())));
    assert_eq!(d.src, Some(SourceAddrs::Literal(ip("192.0.2.10"))));
    assert_eq!(d.mail_from.as_deref(), Some("bounce@example.org"));
    let d = relay(&c, "r5");
    assert_eq!(d.backup, Some(None));
    assert_eq!(d.pki, Some(PkiId(0)));
    assert_eq!(d.ca, Some(CaId(0)));
    assert_eq!(d.ciphers.as_deref(), Some("HIGH"));
    assert_eq!(d.protocols.as_deref(), Some("tlsv1.2"));
    assert!(d.srs);
    assert_eq!(d.filter, Some(FilterId(0)));
    let r5 = c.actions.iter().find(|a| a.name == "r5").expect("r5");
    assert_eq!(r5.ttl, Some(Duration::from_secs(3 * 3600)));
    let d = relay(&c, "r6");
    assert_eq!(d.tls, RelayTls::Required { verify: true });
    assert!(matches!(
        d.route,
        Route::Host(RelayUrl {
            proto: RelayProto::Lmtp,
            port: Some(2424),
            ..
        })
    ));
    let d = relay(&c, "r7");
    assert!(matches!(
        d.route,
        Route::Host(RelayUrl {
            proto: RelayProto::Smtps,
            port: None,
            ..
        })
    ));
    let f = d.filter.expect("filter");
    assert!(matches!(&c.filters[f.0].kind, FilterKind::Chain(v) if v == &vec![FilterId(0)]));
}

#[test]
fn match_every_from_and_for() {
    let c = ok("table nets { 10.0.0.0/8 }\n\
         action a mbox\n\
         match from any for any action a\n\
         match from local for local action a\n\
         match from socket for domain <nets> action a\n\
         match from src 192.0.2.0/24 for domain regex \"^ex.*\" action a\n\
         match from src regex \"^10\\.\" for rcpt-to \"a@example.org\" action a\n\
         match from rdns for rcpt-to regex \".*@ex\" action a\n\
         match from rdns \"host.example.org\" action a\n\
         match from rdns regex \"example\" action a\n\
         match from auth action a\n\
         match from auth \"bob\" action a\n\
         match from auth regex \"^b\" action a\n\
         match from mail-from \"a@example.org\" action a\n\
         match from mail-from regex \"@example\" action a\n\
         match !from any !for any reject\n\
         match action a\n");
    let r = &c.rules;
    let tname = |m: &Matcher| c.tables[m.table.0].name.clone();
    let tdecl = |m: &Matcher| c.tables[m.table.0].decl.clone();
    assert_eq!(r[0].from.value, Origin::Any);
    assert_eq!(r[0].to.value, Destination::Any);
    assert_eq!(r[0].decision, Decision::Action(ActionId(0)));
    assert_eq!(r[1].from.value, Origin::Local);
    assert_eq!(r[1].to.value, Destination::Local);
    assert_eq!(r[2].from.value, Origin::Socket);
    let Destination::Domain(m) = r[2].to.value else {
        panic!()
    };
    assert_eq!(tname(&m), "nets");
    let Origin::Src(m) = r[3].from.value else {
        panic!()
    };
    assert!(!m.regex);
    assert_eq!(
        tdecl(&m),
        TableDecl::StaticList(vec!["192.0.2.0/24".into()])
    );
    let Destination::Domain(m) = r[3].to.value else {
        panic!()
    };
    assert!(m.regex);
    let Origin::Src(m) = r[4].from.value else {
        panic!()
    };
    assert!(m.regex);
    assert_eq!(tdecl(&m), TableDecl::StaticList(vec!["^10\\.".into()]));
    let Destination::RcptTo(m) = r[4].to.value else {
        panic!()
    };
    assert!(!m.regex);
    assert_eq!(r[5].from.value, Origin::Rdns(None));
    assert!(matches!(r[5].to.value, Destination::RcptTo(m) if m.regex));
    assert!(matches!(r[6].from.value, Origin::Rdns(Some(m)) if !m.regex));
    assert!(matches!(r[7].from.value, Origin::Rdns(Some(m)) if m.regex));
    assert_eq!(r[8].from.value, Origin::Auth(None));
    assert!(matches!(r[9].from.value, Origin::Auth(Some(m)) if !m.regex));
    assert!(matches!(r[10].from.value, Origin::Auth(Some(m)) if m.regex));
    assert!(matches!(r[11].from.value, Origin::MailFrom(m) if !m.regex));
    assert!(matches!(r[12].from.value, Origin::MailFrom(m) if m.regex));
    assert_eq!(
        r[13].from,
        Negatable {
            negated: true,
            value: Origin::Any
        }
    );
    assert_eq!(
        r[13].to,
        Negatable {
            negated: true,
            value: Destination::Any
        }
    );
    assert_eq!(r[13].decision, Decision::Reject);
    assert_eq!(
        r[14].from,
        Negatable {
            negated: false,
            value: Origin::Local
        }
    );
    assert_eq!(
        r[14].to,
        Negatable {
            negated: false,
            value: Destination::Local
        }
    );
    assert_eq!(
        r[14].span,
        Span {
            file: 0,
            line: 17,
            col: 1
        }
    );
}

#[test]
fn match_conditions() {
    let c = ok("action a mbox\n\
         match tag T helo \"h.example\" tls auth mail-from \"a@b\" rcpt-to \"c@d\" action a\n\
         match !tag regex \"^T\" !helo regex \"x\" !tls !auth \"bob\" !mail-from regex \"y\" !rcpt-to regex \"z\" action a\n\
         match auth regex \"^adm\" for any action a\n");
    let conds = &c.rules[0].conditions;
    assert_eq!(conds.len(), 6);
    assert!(conds.iter().all(|c| !c.negated));
    assert!(matches!(conds[0].value, Condition::Tag(m) if !m.regex));
    assert!(matches!(conds[1].value, Condition::Helo(_)));
    assert_eq!(conds[2].value, Condition::Tls);
    assert_eq!(conds[3].value, Condition::Auth(None));
    assert!(matches!(conds[4].value, Condition::MailFrom(_)));
    assert!(matches!(conds[5].value, Condition::RcptTo(_)));
    let conds = &c.rules[1].conditions;
    assert!(conds.iter().all(|c| c.negated));
    assert!(matches!(conds[0].value, Condition::Tag(m) if m.regex));
    assert!(matches!(conds[3].value, Condition::Auth(Some(m)) if !m.regex));
    assert!(matches!(conds[5].value, Condition::RcptTo(m) if m.regex));
    assert!(matches!(c.rules[2].conditions[0].value, Condition::Auth(Some(m)) if m.regex));
}

#[test]
fn macros_and_includes_in_model() {
    let dir = common::temp_dir("model-include");
    let inc = dir.join("actions.conf");
    std::fs::write(&inc, "action \"local\" mbox\n").expect("write");
    let text = format!(
        "dom = \"example.org\"\ninclude \"{}\"\nmatch for domain $dom action \"local\"\n",
        inc.display()
    );
    let c = ok(&text);
    assert_eq!(c.files, vec![PathBuf::from("test.conf"), inc.clone()]);
    assert_eq!(
        c.actions[0].span,
        Span {
            file: 1,
            line: 1,
            col: 1
        }
    );
    assert_eq!(
        c.rules[0].span,
        Span {
            file: 0,
            line: 3,
            col: 1
        }
    );
    let Destination::Domain(m) = c.rules[0].to.value else {
        panic!()
    };
    assert_eq!(
        c.tables[m.table.0].decl,
        TableDecl::StaticList(vec!["example.org".into()])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
