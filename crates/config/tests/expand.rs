//! Recipient expansion (`rsmtpd_config::expand`): configurations as text
//! with inline tables, users from an inline userinfo table, `.forward` and
//! include files from a fake reader. Each test asserts the exact deliveries
//! or the exact refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rsmtpd_config::expand::{
    Delivery, ExpandError, Expander, Expansion, ForwardError, ForwardOnlyViolation, ForwardReader,
    MAX_DELIVERIES, Note, RunAs, Step, TempError, expand,
};
use rsmtpd_config::model::{ActionId, Decision};
use rsmtpd_config::ruleset::{MatchContext, Source, Verdict, evaluate, open_tables};
use rsmtpd_config::{Config, parse_str};
use rsmtpd_table::{Table, Userinfo};

const USERS: &str = "table users { alice = \"1000:1000:/home/alice\", \
     bob = \"1001:1001:/home/bob\", carol = \"1002:1002:/home/carol\", \
     root = \"0:0:/root\" }\n";

/// Rules shared by most configs: local names go to "local" (declared by
/// each test), example.net is relayed, blocked.example is rejected.
const RULES: &str = "action \"relay\" relay\n\
     match from any for domain \"blocked.example\" reject\n\
     match from any for local action \"local\"\n\
     match from any for domain \"example.net\" action \"relay\"\n";

fn user(name: &str) -> Userinfo {
    let (uid, dir) = match name {
        "alice" => (1000, "/home/alice"),
        "bob" => (1001, "/home/bob"),
        "carol" => (1002, "/home/carol"),
        "root" => (0, "/root"),
        other => panic!("no test user {other}"),
    };
    Userinfo {
        username: name.into(),
        uid,
        gid: uid,
        directory: dir.into(),
    }
}

/// `.forward` and include files by user name / path; records every read.
#[derive(Default)]
struct Fake {
    forwards: HashMap<String, Result<Option<Vec<String>>, ForwardError>>,
    includes: HashMap<PathBuf, Result<Vec<String>, ForwardError>>,
    reads: RefCell<Vec<String>>,
}

impl Fake {
    fn forward(mut self, user: &str, lines: &[&str]) -> Self {
        self.forwards.insert(
            user.into(),
            Ok(Some(lines.iter().map(|s| s.to_string()).collect())),
        );
        self
    }
    fn forward_err(mut self, user: &str, e: ForwardError) -> Self {
        self.forwards.insert(user.into(), Err(e));
        self
    }
    fn include(mut self, path: &str, lines: &[&str]) -> Self {
        self.includes.insert(
            path.into(),
            Ok(lines.iter().map(|s| s.to_string()).collect()),
        );
        self
    }
    fn reads(&self) -> Vec<String> {
        self.reads.borrow().clone()
    }
}

impl ForwardReader for Fake {
    fn forward(&self, user: &Userinfo) -> Result<Option<Vec<String>>, ForwardError> {
        self.reads.borrow_mut().push(format!("~{}", user.username));
        self.forwards
            .get(&user.username)
            .cloned()
            .unwrap_or(Ok(None))
    }
    fn include(&self, path: &Path) -> Result<Vec<String>, ForwardError> {
        self.reads.borrow_mut().push(path.display().to_string());
        self.includes.get(path).cloned().unwrap_or_else(|| {
            Err(ForwardError::Io {
                path: path.into(),
                reason: "no such file".into(),
            })
        })
    }
}

struct Setup {
    config: Config,
    tables: Vec<Table>,
}

#[track_caller]
fn setup(text: &str) -> Setup {
    let config = match parse_str("expand.conf", text, &common::opts()) {
        Ok(c) => c,
        Err(d) => panic!("config refused:\n{text}\n{d}"),
    };
    let tables = open_tables(&config).expect("open tables");
    Setup { config, tables }
}

/// A config with `USERS`, `tables`, the action "local" with `local_opts`,
/// and `RULES`.
#[track_caller]
fn with_local(tables: &str, local: &str) -> Setup {
    setup(&format!("{USERS}{tables}action \"local\" {local}\n{RULES}"))
}

impl Setup {
    fn action(&self, name: &str) -> ActionId {
        ActionId(
            self.config
                .actions
                .iter()
                .position(|a| a.name == name)
                .unwrap_or_else(|| panic!("no action {name}")),
        )
    }

    /// What the daemon does for RCPT: evaluate the rules for a network
    /// client, then expand with the matched action.
    #[track_caller]
    fn rcpt(&self, rcpt: &str, fake: &Fake) -> Result<Expansion, ExpandError> {
        let (_, domain) = rcpt.rsplit_once('@').unwrap_or((rcpt, "mail.example.org"));
        let ctx = MatchContext {
            source: Source::Network {
                addr: "198.51.100.7".parse().unwrap(),
                rdns: None,
            },
            tag: None,
            helo: Some("client.example"),
            auth_user: None,
            tls: false,
            sender: "sender@example.net",
            rcpt,
            rcpt_domain: domain,
        };
        let action = match evaluate(&self.config, &self.tables, &ctx).unwrap() {
            Verdict::Matched {
                decision: Decision::Action(a),
                ..
            } => a,
            v => panic!("{rcpt} did not match an action: {v:?}"),
        };
        expand(&self.config, &self.tables, fake, action, rcpt, &ctx)
    }

    #[track_caller]
    fn ok(&self, rcpt: &str, fake: &Fake) -> Vec<Delivery> {
        match self.rcpt(rcpt, fake) {
            Ok(e) => e.deliveries,
            Err(e) => panic!("{rcpt} refused: {e:?}"),
        }
    }

    #[track_caller]
    fn err(&self, rcpt: &str, fake: &Fake) -> ExpandError {
        match self.rcpt(rcpt, fake) {
            Ok(e) => panic!("{rcpt} accepted: {e:?}"),
            Err(e) => e,
        }
    }

    fn local(&self, dest: &str, who: &str) -> Delivery {
        Delivery::Local {
            action: self.action("local"),
            dest: dest.into(),
            user: user(who),
        }
    }

    fn relay(&self, dest: &str) -> Delivery {
        Delivery::Relay {
            action: self.action("relay"),
            dest: dest.into(),
        }
    }
}

fn no_files() -> Fake {
    Fake::default()
}

const LOCAL: &str = "maildir alias <aliases> userbase <users>";

// ----------------------------------------------------------- alias forms

#[test]
fn every_alias_form() {
    let s = with_local(
        "table aliases { everything = \"alice, bob@example.net, /var/mail/everything, \
         \\\"|/usr/bin/prog -x\\\", :include:/etc/mail/inc\" }\n",
        LOCAL,
    );
    let fake = no_files().include(
        "/etc/mail/inc",
        &[
            "# the list",
            "carol",
            "",
            "dave@example.net   # trailing comment",
        ],
    );
    let got = s.ok("everything@mail.example.org", &fake);
    let local = s.action("local");
    assert_eq!(
        got,
        vec![
            s.local("everything@mail.example.org", "alice"),
            s.relay("bob@example.net"),
            Delivery::File {
                action: local,
                path: "/var/mail/everything".into(),
                run_as: RunAs::Unprivileged,
            },
            Delivery::Command {
                action: local,
                command: "/usr/bin/prog -x".into(),
                run_as: RunAs::Unprivileged,
            },
            s.local("everything@mail.example.org", "carol"),
            s.relay("dave@example.net"),
        ]
    );
    // Each local user's .forward was asked for, once, after the include.
    assert_eq!(fake.reads(), vec!["~alice", "/etc/mail/inc", "~carol"]);
}

#[test]
fn error_entries_refuse_with_their_code() {
    let s = with_local(
        "table aliases { moved = \"alice, error:550 5.1.6 moved to elsewhere\", \
         later = \"error:450 mailbox being migrated\", \
         odd = \"error:551 4.1.1 wrong class is text\" }\n",
        LOCAL,
    );
    let e = s.err("moved@mail.example.org", &no_files());
    assert_eq!(
        e,
        ExpandError::ErrorEntry {
            code: 550,
            status: "5.1.6".into(),
            text: "moved to elsewhere".into()
        }
    );
    assert!(!e.is_temporary());
    let e = s.err("later@mail.example.org", &no_files());
    let r = e.reply();
    assert_eq!(
        (r.code, r.status.as_str(), r.text.as_str()),
        (450, "4.0.0", "mailbox being migrated")
    );
    assert!(e.is_temporary());
    let r = s.err("odd@mail.example.org", &no_files()).reply();
    assert_eq!(
        (r.code, r.status.as_str(), r.text.as_str()),
        (551, "5.0.0", "4.1.1 wrong class is text")
    );
}

#[test]
fn unreadable_include_is_temporary() {
    let s = with_local(
        "table aliases { list = \":include:/etc/mail/missing\" }\n",
        LOCAL,
    );
    let e = s.err("list@mail.example.org", &no_files());
    assert!(
        matches!(&e, ExpandError::Temporary(TempError::Include { path, .. }) if path == Path::new("/etc/mail/missing")),
        "{e:?}"
    );
    assert_eq!(e.reply().code, 451);
    // A nested include is not followed, and said so.
    let fake = no_files().include("/etc/mail/missing", &["bob, :include:/etc/mail/other"]);
    let x = s.rcpt("list@mail.example.org", &fake).unwrap();
    assert_eq!(x.deliveries, vec![s.local("list@mail.example.org", "bob")]);
    assert_eq!(
        x.notes,
        vec![Note::NestedInclude {
            path: "/etc/mail/other".into()
        }]
    );
}

#[test]
fn bad_table_value_is_temporary() {
    let s = with_local("table aliases { broken = \"not a user\" }\n", LOCAL);
    let e = s.err("broken@mail.example.org", &no_files());
    assert!(
        matches!(e, ExpandError::Temporary(TempError::Table { .. })),
        "{e:?}"
    );
    assert!(e.is_temporary());
}

// -------------------------------------------------------------- virtual

const VIRTUAL: &str = "table vdomains { example.com, other.org }\n\
     table vusers { \"alice+tag@example.com\" = carol, \"alice@example.com\" = alice, \
     \"bob+x\" = carol, bob = bob, \"@example.com\" = alice, \"@\" = \"ops@example.net\" }\n\
     table strict { \"alice@strict.example\" = alice }\n";

fn virtual_setup() -> Setup {
    setup(&format!(
        "{USERS}{VIRTUAL}action \"local\" maildir virtual <vusers> userbase <users>\n\
         action \"strict\" maildir virtual <strict> userbase <users>\n\
         action \"relay\" relay\n\
         match from any for domain \"strict.example\" action \"strict\"\n\
         match from any for domain <vdomains> action \"local\"\n\
         match from any for domain \"example.net\" action \"relay\"\n"
    ))
}

#[test]
fn virtual_lookup_order() {
    let s = virtual_setup();
    let f = no_files();
    // user+tag@domain first.
    assert_eq!(
        s.ok("Alice+Tag@Example.com", &f),
        vec![s.local("Alice+Tag@Example.com", "carol")]
    );
    // Then user@domain.
    assert_eq!(
        s.ok("alice+other@example.com", &f),
        vec![s.local("alice+other@example.com", "alice")]
    );
    // Then user+tag, then user (any virtual domain).
    assert_eq!(
        s.ok("bob+x@other.org", &f),
        vec![s.local("bob+x@other.org", "carol")]
    );
    assert_eq!(
        s.ok("bob+y@other.org", &f),
        vec![s.local("bob+y@other.org", "bob")]
    );
    // Then @domain, then @.
    assert_eq!(
        s.ok("zed@example.com", &f),
        vec![s.local("zed@example.com", "alice")]
    );
    assert_eq!(s.ok("zed@other.org", &f), vec![s.relay("ops@example.net")]);
}

#[test]
fn virtual_without_match_is_unknown() {
    let s = virtual_setup();
    let e = s.err("bob@strict.example", &no_files());
    assert_eq!(
        e,
        ExpandError::UnknownRecipient {
            address: "bob@strict.example".into()
        }
    );
    let r = e.reply();
    assert_eq!((r.code, r.status.as_str()), (550, "5.1.1"));
    assert_eq!(
        s.ok("alice@strict.example", &no_files()),
        vec![Delivery::Local {
            action: s.action("strict"),
            dest: "alice@strict.example".into(),
            user: user("alice")
        }]
    );
}

// ------------------------------------------------------------ userbase

#[test]
fn userbase_users_case_and_sub_addresses() {
    let s = with_local("table aliases { \"bob+urgent\" = carol }\n", LOCAL);
    let f = no_files();
    assert_eq!(
        s.ok("Alice+Lists@Mail.Example.Org", &f),
        vec![s.local("Alice+Lists@Mail.Example.Org", "alice")]
    );
    // An alias key with the tag wins over the user.
    assert_eq!(
        s.ok("bob+urgent@mail.example.org", &f),
        vec![s.local("bob+urgent@mail.example.org", "carol")]
    );
    assert_eq!(
        s.ok("bob+other@localhost", &f),
        vec![s.local("bob+other@localhost", "bob")]
    );
    let e = s.err("nobody@mail.example.org", &f);
    assert_eq!(
        e,
        ExpandError::UnknownRecipient {
            address: "nobody@mail.example.org".into()
        }
    );
    // The sub-address delimiter is the configured one.
    let s = setup(&format!(
        "smtp sub-addr-delim \"-\"\n{USERS}table aliases {{ x = y }}\n\
         action \"local\" {LOCAL}\n{RULES}"
    ));
    assert_eq!(
        s.ok("carol-news@mail.example.org", &f),
        vec![s.local("carol-news@mail.example.org", "carol")]
    );
    assert!(matches!(
        s.err("carol+news@mail.example.org", &f),
        ExpandError::UnknownRecipient { .. }
    ));
}

#[test]
fn user_option_delivers_as_that_account() {
    // `root` exists on every system, so `<getpwnam>` can answer.
    let s = setup(&format!(
        "{USERS}table aliases {{ list = \"anyone, |/bin/archive\" }}\n\
         action \"local\" maildir alias <aliases> user root\n{RULES}"
    ));
    let fake = no_files();
    let got = s.ok("Anything+x@mail.example.org", &fake);
    let [Delivery::Local { action, dest, user }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(*action, s.action("local"));
    assert_eq!(dest, "Anything+x@mail.example.org");
    assert_eq!((user.username.as_str(), user.uid), ("root", 0));
    // Only the delivery user's own .forward is read.
    assert!(fake.reads().is_empty(), "{:?}", fake.reads());
    s.ok("root@mail.example.org", &fake);
    assert_eq!(fake.reads(), vec!["~root"]);
    // Alias commands of that action run as that account too.
    let got = s.ok("list@mail.example.org", &no_files());
    assert!(
        matches!(&got[1], Delivery::Command { run_as: RunAs::User(u), .. } if u.uid == 0),
        "{got:?}"
    );
}

// ----------------------------------------------------- nesting and limits

#[test]
fn nested_aliases() {
    let s = with_local(
        "table aliases { a = b, b = \"c, bob\", c = alice }\n",
        LOCAL,
    );
    assert_eq!(
        s.ok("a@mail.example.org", &no_files()),
        vec![
            s.local("a@mail.example.org", "bob"),
            s.local("a@mail.example.org", "alice"),
        ]
    );
}

fn chain(levels: usize) -> String {
    let mut t = String::from("table aliases { ");
    for i in 0..levels {
        t.push_str(&format!("l{i} = l{}, ", i + 1));
    }
    t.push_str(&format!("l{levels} = alice }}\n"));
    t
}

#[test]
fn depth_limit() {
    // l0 is depth 1 under the address; alice ends up at depth levels + 2.
    let s = with_local(&chain(7), LOCAL);
    assert_eq!(
        s.ok("l0@mail.example.org", &no_files()),
        vec![s.local("l0@mail.example.org", "alice")]
    );
    let s = with_local(&chain(8), LOCAL);
    let e = s.err("l0@mail.example.org", &no_files());
    assert_eq!(e, ExpandError::TooDeep);
    let r = e.reply();
    assert_eq!((r.code, r.status.as_str()), (524, "5.2.4"));
}

#[test]
fn alias_loop_between_names() {
    let s = with_local(
        "table aliases { a = b, b = a, alice = carol, carol = alice }\n",
        LOCAL,
    );
    // Neither a nor b is a user: nothing to deliver to.
    let e = s.err("a@mail.example.org", &no_files());
    assert_eq!(
        e,
        ExpandError::Loop {
            address: "a@mail.example.org".into()
        }
    );
    assert_eq!(e.reply().status, "5.4.6");
    // Both are users: the name that comes back is that user's mailbox,
    // delivered once.
    let x = s.rcpt("alice@mail.example.org", &no_files()).unwrap();
    assert_eq!(
        x.deliveries,
        vec![s.local("alice@mail.example.org", "alice")]
    );
}

#[test]
fn alias_loop_through_addresses() {
    let s = with_local(
        "table aliases { x = \"x@mail.example.org\", y = \"y@localhost, bob\" }\n",
        LOCAL,
    );
    assert!(matches!(
        s.err("x@mail.example.org", &no_files()),
        ExpandError::Loop { .. }
    ));
    let x = s.rcpt("y@localhost", &no_files()).unwrap();
    assert_eq!(x.deliveries, vec![s.local("y@localhost", "bob")]);
    assert_eq!(
        x.notes,
        vec![Note::LoopBroken {
            at: "y@localhost".into()
        }]
    );
}

#[test]
fn self_reference_delivers_to_the_mailbox() {
    let s = with_local("table aliases { bob = \"bob, carol\" }\n", LOCAL);
    let fake = no_files();
    assert_eq!(
        s.ok("bob@mail.example.org", &fake),
        vec![
            s.local("bob@mail.example.org", "bob"),
            s.local("bob@mail.example.org", "carol"),
        ]
    );
}

#[test]
fn duplicates_are_delivered_once() {
    let s = with_local(
        "table aliases { team = \"alice, Alice, bob, sub, ext@example.net, EXT@example.net\", \
         sub = \"alice, bob, /var/log/team, /var/log/team, ext@example.net\" }\n",
        LOCAL,
    );
    let fake = no_files();
    assert_eq!(
        s.ok("team@mail.example.org", &fake),
        vec![
            s.local("team@mail.example.org", "alice"),
            s.local("team@mail.example.org", "bob"),
            s.relay("ext@example.net"),
            Delivery::File {
                action: s.action("local"),
                path: "/var/log/team".into(),
                run_as: RunAs::Unprivileged
            },
        ]
    );
    assert_eq!(fake.reads(), vec!["~alice", "~bob"]);
}

#[test]
fn result_is_bounded() {
    // 21 groups of 50 distinct remote addresses: over the limit.
    let mut t = String::from("table aliases { big = \"");
    t.push_str(
        &(0..21)
            .map(|g| format!("g{g}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    t.push('"');
    for g in 0..21 {
        let addrs: Vec<String> = (0..50).map(|i| format!("u{g}x{i}@example.net")).collect();
        t.push_str(&format!(", g{g} = \"{}\"", addrs.join(", ")));
    }
    t.push_str(" }\n");
    let s = with_local(&t, LOCAL);
    const { assert!(21 * 50 > MAX_DELIVERIES) };
    let e = s.err("big@mail.example.org", &no_files());
    assert_eq!(e, ExpandError::TooMany);
    assert_eq!(e.reply().code, 550);
}

// ------------------------------------------------------------ re-matching

#[test]
fn expanded_addresses_are_matched_again() {
    let s = setup(&format!(
        "{USERS}table aliases {{ ext = \"someone@example.net\", int = \"x@internal.example\", \
         blk = \"x@blocked.example\", lost = \"x@nowhere.example\", \
         here = \"carol@localhost\" }}\n\
         action \"local\" {LOCAL}\naction \"internal\" relay host smtp://192.0.2.1\n\
         match from local for domain \"internal.example\" action \"internal\"\n{RULES}"
    ));
    let f = no_files();
    assert_eq!(
        s.ok("ext@mail.example.org", &f),
        vec![s.relay("someone@example.net")]
    );
    // `from local` matches an expanded (internal) address, not the client.
    assert_eq!(
        s.ok("int@mail.example.org", &f),
        vec![Delivery::Relay {
            action: s.action("internal"),
            dest: "x@internal.example".into()
        }]
    );
    // An address that lands on a local action is expanded by it.
    assert_eq!(
        s.ok("here@mail.example.org", &f),
        vec![s.local("carol@localhost", "carol")]
    );
    let e = s.err("blk@mail.example.org", &f);
    assert_eq!(
        e,
        ExpandError::Rejected {
            address: "x@blocked.example".into()
        }
    );
    assert_eq!(e.reply().status, "5.7.1");
    // The reply never names the internal address.
    assert!(!e.reply().text.contains("blocked"));
    assert!(matches!(
        s.err("lost@mail.example.org", &f),
        ExpandError::NoRule { .. }
    ));
}

#[test]
fn relay_recipient_is_one_relay_delivery() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    assert_eq!(
        s.ok("Someone@Example.net", &no_files()),
        vec![s.relay("Someone@Example.net")]
    );
}

// ------------------------------------------------------------- .forward

#[test]
fn forward_file_entries() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    let fake = no_files().forward(
        "alice",
        &[
            "# keep a copy and forward",
            "alice@example.net, \\alice",
            "\"|/usr/bin/vacation alice\"",
            "/home/alice/mail.log",
            "",
        ],
    );
    let local = s.action("local");
    assert_eq!(
        s.ok("alice@mail.example.org", &fake),
        vec![
            s.relay("alice@example.net"),
            s.local("alice@mail.example.org", "alice"),
            Delivery::Command {
                action: local,
                command: "/usr/bin/vacation alice".into(),
                run_as: RunAs::User(user("alice"))
            },
            Delivery::File {
                action: local,
                path: "/home/alice/mail.log".into(),
                run_as: RunAs::User(user("alice"))
            },
        ]
    );
    // `\alice` did not read the .forward a second time.
    assert_eq!(fake.reads(), vec!["~alice"]);
}

#[test]
fn forward_only_to_elsewhere_does_not_keep_a_copy() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    let fake = no_files().forward("bob", &["bob@example.net"]);
    assert_eq!(
        s.ok("bob@mail.example.org", &fake),
        vec![s.relay("bob@example.net")]
    );
    // Naming another local user expands that user (and their .forward).
    let fake = no_files()
        .forward("bob", &["carol"])
        .forward("carol", &["\\carol, bob"]);
    assert_eq!(
        s.ok("bob@mail.example.org", &fake),
        vec![
            s.local("bob@mail.example.org", "carol"),
            s.local("bob@mail.example.org", "bob"),
        ]
    );
}

#[test]
fn forward_refused_by_the_reader_is_temporary() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    for err in [
        ForwardError::Writable {
            path: "/home/bob/.forward".into(),
        },
        ForwardError::WrongOwner {
            path: "/home/bob/.forward".into(),
            user: "bob".into(),
        },
        ForwardError::NotRegular {
            path: "/home/bob/.forward".into(),
        },
    ] {
        let fake = no_files().forward_err("bob", err.clone());
        let e = s.err("bob@mail.example.org", &fake);
        assert_eq!(
            e,
            ExpandError::Temporary(TempError::Forward {
                user: "bob".into(),
                source: err
            })
        );
        assert!(e.is_temporary());
        assert_eq!(e.reply().code, 451);
    }
}

#[test]
fn forward_syntax_and_size() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    let fake = no_files().forward("bob", &["ok@example.net", "not a target"]);
    assert!(matches!(
        s.err("bob@mail.example.org", &fake),
        ExpandError::Temporary(TempError::ForwardSyntax { line: 2, .. })
    ));
    let long = "x".repeat(5000);
    let fake = no_files().forward("bob", &[long.as_str()]);
    assert!(matches!(
        s.err("bob@mail.example.org", &fake),
        ExpandError::Temporary(TempError::ForwardTooLarge { .. })
    ));
    // Empty or comment-only: as if there were none.
    let fake = no_files().forward("bob", &["# nothing", ""]);
    assert_eq!(
        s.ok("bob@mail.example.org", &fake),
        vec![s.local("bob@mail.example.org", "bob")]
    );
    // An include in a .forward is not followed.
    let fake = no_files().forward("bob", &[":include:/etc/shadow"]);
    let x = s.rcpt("bob@mail.example.org", &fake).unwrap();
    assert_eq!(x.deliveries, vec![s.local("bob@mail.example.org", "bob")]);
    assert_eq!(
        x.notes,
        vec![Note::NestedInclude {
            path: "/etc/shadow".into()
        }]
    );
    assert!(!fake.reads().contains(&"/etc/shadow".to_string()));
}

#[test]
fn root_forward_may_not_run_commands_or_write_files() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    let fake = no_files().forward(
        "root",
        &["|/bin/sh -c 'id'", "/etc/passwd", "ops@example.net"],
    );
    let x = s.rcpt("root@mail.example.org", &fake).unwrap();
    assert_eq!(x.deliveries, vec![s.relay("ops@example.net")]);
    assert_eq!(
        x.notes,
        vec![
            Note::RootForward {
                entry: "|/bin/sh -c 'id'".into()
            },
            Note::RootForward {
                entry: "/etc/passwd".into()
            },
        ]
    );
    // Nothing usable left: root's mailbox.
    let fake = no_files().forward("root", &["|/bin/evil"]);
    assert_eq!(
        s.ok("root@mail.example.org", &fake),
        vec![s.local("root@mail.example.org", "root")]
    );
}

// ---------------------------------------------- expand-only, forward-only

#[test]
fn expand_only() {
    let s = setup(&format!(
        "{USERS}table aliases {{ list = \"ext@example.net\", team = alice }}\n\
         action \"local\" expand-only alias <aliases> userbase <users>\n{RULES}"
    ));
    assert_eq!(
        s.ok("list@mail.example.org", &no_files()),
        vec![s.relay("ext@example.net")]
    );
    let e = s.err("bob@mail.example.org", &no_files());
    assert_eq!(e, ExpandError::ExpandOnly { user: "bob".into() });
    assert_eq!(e.reply().status, "5.2.4");
    assert!(!e.is_temporary());
    // An alias to a user still needs that user's .forward.
    assert!(matches!(
        s.err("team@mail.example.org", &no_files()),
        ExpandError::ExpandOnly { .. }
    ));
    let fake = no_files().forward("alice", &["|/usr/bin/procmail"]);
    assert_eq!(
        s.ok("team@mail.example.org", &fake),
        vec![Delivery::Command {
            action: s.action("local"),
            command: "/usr/bin/procmail".into(),
            run_as: RunAs::User(user("alice"))
        }]
    );
}

#[test]
fn forward_only() {
    let s = setup(&format!(
        "{USERS}table aliases {{ list = \"ext@example.net\", pipe = \"|/bin/x\" }}\n\
         action \"local\" forward-only alias <aliases> userbase <users>\n{RULES}"
    ));
    assert_eq!(
        s.ok("list@mail.example.org", &no_files()),
        vec![s.relay("ext@example.net")]
    );
    let fake = no_files().forward("bob", &["bob@example.net"]);
    assert_eq!(
        s.ok("bob@mail.example.org", &fake),
        vec![s.relay("bob@example.net")]
    );
    let e = s.err("carol@mail.example.org", &no_files());
    assert_eq!(
        e,
        ExpandError::ForwardOnly(ForwardOnlyViolation::NoForward("carol".into()))
    );
    assert!(e.is_temporary());
    assert_eq!(e.reply().code, 451);
    assert_eq!(
        s.err("pipe@mail.example.org", &no_files()),
        ExpandError::ForwardOnly(ForwardOnlyViolation::Command)
    );
    let fake = no_files().forward("bob", &["bob@example.net", "/tmp/copy"]);
    assert_eq!(
        s.err("bob@mail.example.org", &fake),
        ExpandError::ForwardOnly(ForwardOnlyViolation::File)
    );
}

// ------------------------------------------------------------ injection

const HOSTILE: &[&str] = &[
    "../../etc/passwd",
    "/etc/passwd",
    "$(id)",
    ";sleep 5;",
    "a|b",
    "|id",
    ":include:/etc/shadow",
    "error:250 ok",
    "\"|id\"",
];

fn only_mailboxes(got: &[Delivery]) -> bool {
    got.iter().all(|d| matches!(d, Delivery::Local { .. }))
}

#[test]
fn hostile_local_parts_never_become_files_commands_or_users() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    for h in HOSTILE {
        let fake = no_files();
        let rcpt = format!("{h}@mail.example.org");
        let e = s.err(&rcpt, &fake);
        assert_eq!(
            e,
            ExpandError::UnknownRecipient {
                address: rcpt.clone()
            },
            "{h}"
        );
        assert!(fake.reads().is_empty(), "{h}: {:?}", fake.reads());
    }
    // Even with a catch-all, they are only ever the catch-all's user.
    let s = virtual_setup();
    for h in HOSTILE {
        let rcpt = format!("{h}@example.com");
        let got = s.ok(&rcpt, &no_files());
        assert_eq!(got, vec![s.local(&rcpt, "alice")], "{h}");
    }
    // And with `user`, a mailbox delivery with the text as dest only.
    let s = setup(&format!(
        "{USERS}action \"local\" maildir user root\n{RULES}"
    ));
    for h in HOSTILE {
        let got = s.ok(&format!("{h}@mail.example.org"), &no_files());
        assert!(only_mailboxes(&got) && got.len() == 1, "{h}: {got:?}");
    }
}

#[test]
fn control_characters_are_refused_before_any_lookup() {
    let s = with_local("table aliases { x = y }\n", LOCAL);
    for rcpt in [
        "bob\n@mail.example.org",
        "bob\r\nRCPT TO:<x>",
        "a\0b",
        "bob\x7f",
    ] {
        let fake = no_files();
        let e = expand(
            &s.config,
            &s.tables,
            &fake,
            s.action("local"),
            rcpt,
            &MatchContext {
                source: Source::Local,
                tag: None,
                helo: None,
                auth_user: None,
                tls: false,
                sender: "",
                rcpt,
                rcpt_domain: "mail.example.org",
            },
        )
        .unwrap_err();
        assert_eq!(
            e,
            ExpandError::BadAddress {
                address: rcpt.into()
            }
        );
        assert_eq!(e.reply().status, "5.1.3");
        assert!(fake.reads().is_empty());
    }
}

// ------------------------------------------------------- the step driver

#[test]
fn expander_steps_ask_for_each_forward() {
    let s = with_local("table aliases { both = \"alice, bob\" }\n", LOCAL);
    let ctx = MatchContext {
        source: Source::Local,
        tag: None,
        helo: None,
        auth_user: None,
        tls: false,
        sender: "",
        rcpt: "both@mail.example.org",
        rcpt_domain: "mail.example.org",
    };
    let mut ex = Expander::new(
        &s.config,
        &s.tables,
        s.action("local"),
        "both@mail.example.org",
        &ctx,
    );
    let mut asked = Vec::new();
    let result = loop {
        ex = match ex.run() {
            Step::Done(r) => break r,
            Step::Forward(req) => {
                asked.push(req.user().username.clone());
                let answer = if req.user().username == "bob" {
                    Ok(Some(vec!["bob@example.net".to_string()]))
                } else {
                    Ok(None)
                };
                req.answer(answer)
            }
            Step::Include(req) => panic!("unexpected include {}", req.path().display()),
        };
    };
    assert_eq!(asked, vec!["alice", "bob"]);
    assert_eq!(
        result.unwrap().deliveries,
        vec![
            s.local("both@mail.example.org", "alice"),
            s.relay("bob@example.net"),
        ]
    );
}
