//! Rule evaluation (`rsmtpd_config::ruleset`): configurations given as
//! text, evaluated for many sessions. Every assertion names the exact
//! verdict: which rule matched and what it decided, or no match.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::net::IpAddr;

use rsmtpd_config::model::{ActionId, Decision};
use rsmtpd_config::ruleset::{EvalError, MatchContext, Source, Verdict, evaluate, open_tables};
use rsmtpd_config::{Config, InterfaceAddr, ParseOptions, parse_str};
use rsmtpd_table::Table;

/// Fixed server name and interfaces: `lo` (127.0.0.1, ::1) and `eth0`
/// (192.0.2.10, 2001:db8::10).
fn opts() -> ParseOptions {
    let iface = |name: &str, addr: &str| InterfaceAddr {
        name: name.into(),
        addr: addr.parse().expect("ip"),
    };
    ParseOptions {
        hostname: Some("mail.example.org".into()),
        interfaces: Some(vec![
            iface("lo", "127.0.0.1"),
            iface("lo", "::1"),
            iface("eth0", "192.0.2.10"),
            iface("eth0", "2001:db8::10"),
        ]),
        ..ParseOptions::default()
    }
}

/// Two actions every config starts with: "local" is action 0, "relay" 1.
const ACTIONS: &str = "action \"local\" mbox\naction \"relay\" relay\n";

struct Rules {
    config: Config,
    tables: Vec<Table>,
}

impl Rules {
    #[track_caller]
    fn verdict(&self, ctx: &MatchContext<'_>) -> Verdict {
        match evaluate(&self.config, &self.tables, ctx) {
            Ok(v) => v,
            Err(e) => panic!("evaluation failed: {e} for {ctx:?}"),
        }
    }
}

/// Parse `ACTIONS` + `rules` and open the tables.
#[track_caller]
fn rules(rules: &str) -> Rules {
    let text = format!("{ACTIONS}{rules}");
    let config = match parse_str("ruleset.conf", &text, &opts()) {
        Ok(c) => c,
        Err(d) => panic!("config refused:\n{text}\n{d}"),
    };
    let tables = open_tables(&config).expect("open tables");
    Rules { config, tables }
}

fn local(rule: usize) -> Verdict {
    Verdict::Matched {
        rule,
        decision: Decision::Action(ActionId(0)),
    }
}

fn relay(rule: usize) -> Verdict {
    Verdict::Matched {
        rule,
        decision: Decision::Action(ActionId(1)),
    }
}

fn reject(rule: usize) -> Verdict {
    Verdict::Matched {
        rule,
        decision: Decision::Reject,
    }
}

const NO: Verdict = Verdict::NoMatch;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A foreign network client without reverse DNS, not authenticated, no
/// TLS, mailing alice@example.net -> bob@mail.example.org.
fn ctx() -> MatchContext<'static> {
    MatchContext {
        source: Source::Network {
            addr: ip("203.0.113.5"),
            rdns: None,
        },
        tag: None,
        helo: Some("client.example.net"),
        auth_user: None,
        tls: false,
        sender: "alice@example.net",
        rcpt: "bob@mail.example.org",
        rcpt_domain: "mail.example.org",
    }
}

fn from_ip(addr: &str) -> MatchContext<'static> {
    MatchContext {
        source: Source::Network {
            addr: ip(addr),
            rdns: None,
        },
        ..ctx()
    }
}

fn from_rdns(name: Option<&'static str>) -> MatchContext<'static> {
    MatchContext {
        source: Source::Network {
            addr: ip("203.0.113.5"),
            rdns: name,
        },
        ..ctx()
    }
}

fn with_source(source: Source<'static>) -> MatchContext<'static> {
    MatchContext { source, ..ctx() }
}

/// The context with recipient `rcpt` (its domain taken after the last `@`).
fn to(rcpt: &'static str) -> MatchContext<'static> {
    to_from(ctx(), rcpt)
}

fn to_from(base: MatchContext<'static>, rcpt: &'static str) -> MatchContext<'static> {
    let domain = rcpt.rsplit_once('@').map_or("mail.example.org", |(_, d)| d);
    MatchContext {
        rcpt,
        rcpt_domain: domain,
        ..base
    }
}

fn sender(sender: &'static str) -> MatchContext<'static> {
    MatchContext { sender, ..ctx() }
}

fn auth(user: Option<&'static str>) -> MatchContext<'static> {
    MatchContext {
        auth_user: user,
        ..ctx()
    }
}

// ------------------------------------------------------------ rule order

#[test]
fn first_match_wins_in_file_order() {
    let r = rules(
        "match from any for any action \"relay\"\n\
         match from any for local action \"local\"\n",
    );
    // The second rule is shadowed: a local recipient takes the first.
    assert_eq!(r.verdict(&ctx()), relay(0));
    assert_eq!(r.verdict(&to("carol@example.com")), relay(0));

    let r = rules(
        "match from any for local action \"local\"\n\
         match from any for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&ctx()), local(0));
    assert_eq!(r.verdict(&to("carol@example.com")), relay(1));
}

#[test]
fn no_matching_rule_is_no_match() {
    let r = rules("match from local for local action \"local\"\n");
    // foreign source
    assert_eq!(r.verdict(&ctx()), NO);
    // local source, foreign domain
    assert_eq!(
        r.verdict(&to_from(from_ip("127.0.0.1"), "x@example.com")),
        NO
    );
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), local(0));
}

#[test]
fn reject_rules_decide_reject() {
    let r = rules(
        "match from src \"203.0.113.0/24\" for any reject\n\
         match from any for any action \"relay\"\n\
         match from any for local reject\n",
    );
    assert_eq!(r.verdict(&ctx()), reject(0));
    assert_eq!(r.verdict(&to("x@example.com")), reject(0));
    assert_eq!(r.verdict(&from_ip("198.51.100.1")), relay(1));
}

#[test]
fn reject_before_accept_and_after() {
    let r = rules(
        "match from any for domain \"spam.example\" reject\n\
         match from any for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&to("a@spam.example")), reject(0));
    assert_eq!(r.verdict(&to("a@ham.example")), relay(1));
}

// ------------------------------------------------------------- defaults

#[test]
fn omitted_from_and_for_mean_local() {
    let r = rules("match action \"local\"\n");
    // from local
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), local(0));
    // Other loopback addresses are foreign, as in OpenSMTPD.
    assert_eq!(r.verdict(&from_ip("127.1.2.3")), NO);
    assert_eq!(r.verdict(&from_ip("::1")), local(0));
    assert_eq!(r.verdict(&from_ip("192.0.2.10")), local(0));
    assert_eq!(r.verdict(&from_ip("2001:db8::10")), local(0));
    assert_eq!(r.verdict(&with_source(Source::Local)), local(0));
    assert_eq!(r.verdict(&ctx()), NO);
    // for local
    let lo = from_ip("127.0.0.1");
    assert_eq!(r.verdict(&to_from(lo, "bob@localhost")), local(0));
    assert_eq!(r.verdict(&to_from(lo, "bob@example.com")), NO);

    let r = rules("match from any action \"local\"\n");
    assert_eq!(r.verdict(&ctx()), local(0));
    assert_eq!(r.verdict(&to("bob@example.com")), NO);

    let r = rules("match for any action \"relay\"\n");
    assert_eq!(r.verdict(&to_from(lo, "bob@example.com")), relay(0));
    assert_eq!(r.verdict(&to("bob@example.com")), NO);
}

// --------------------------------------------------------------- origins

#[test]
fn from_any() {
    let r = rules("match from any for any action \"relay\"\n");
    assert_eq!(r.verdict(&ctx()), relay(0));
    assert_eq!(r.verdict(&from_ip("2001:db8:ffff::1")), relay(0));
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Internal)), relay(0));

    let r = rules("match !from any for any action \"relay\"\n");
    assert_eq!(r.verdict(&ctx()), NO);
    assert_eq!(r.verdict(&with_source(Source::Local)), NO);
}

#[test]
fn from_local() {
    let r = rules("match from local for any action \"relay\"\n");
    // the loopback addresses, IPv4 and IPv6; not the rest of 127/8, so a
    // client on 127.0.0.2 can play a foreign host
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), relay(0));
    assert_eq!(r.verdict(&from_ip("127.0.0.2")), NO);
    assert_eq!(r.verdict(&from_ip("::1")), relay(0));
    // IPv4-mapped loopback from a dual-stack socket
    assert_eq!(r.verdict(&from_ip("::ffff:127.0.0.1")), relay(0));
    // the machine's own interface addresses
    assert_eq!(r.verdict(&from_ip("192.0.2.10")), relay(0));
    assert_eq!(r.verdict(&from_ip("2001:db8::10")), relay(0));
    // a neighbour on the same network is not local
    assert_eq!(r.verdict(&from_ip("192.0.2.11")), NO);
    assert_eq!(r.verdict(&from_ip("2001:db8::11")), NO);
    assert_eq!(r.verdict(&ctx()), NO);
    // the local enqueuer, and addresses made by alias expansion
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Internal)), relay(0));
}

#[test]
fn not_from_local() {
    let r = rules(
        "match !from local for any reject\n\
         match from any for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&ctx()), reject(0));
    assert_eq!(r.verdict(&from_ip("2001:db8::11")), reject(0));
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), relay(1));
    assert_eq!(r.verdict(&from_ip("192.0.2.10")), relay(1));
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(1));
}

#[test]
fn from_socket() {
    let r = rules("match from socket for any action \"relay\"\n");
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(0));
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), NO);
    assert_eq!(r.verdict(&ctx()), NO);
    // OpenSMTPD: an internal envelope never matches a table-less origin
    assert_eq!(r.verdict(&with_source(Source::Internal)), NO);

    let r = rules("match !from socket for any action \"relay\"\n");
    assert_eq!(r.verdict(&with_source(Source::Local)), NO);
    assert_eq!(r.verdict(&from_ip("127.0.0.1")), relay(0));
    assert_eq!(r.verdict(&ctx()), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Internal)), NO);
}

#[test]
fn from_src_literal_address() {
    let r = rules("match from src 203.0.113.5 for any action \"relay\"\n");
    assert_eq!(r.verdict(&ctx()), relay(0));
    assert_eq!(r.verdict(&from_ip("203.0.113.6")), NO);
    assert_eq!(r.verdict(&with_source(Source::Local)), NO);

    let r = rules("match !from src 203.0.113.5 for any action \"relay\"\n");
    assert_eq!(r.verdict(&ctx()), NO);
    assert_eq!(r.verdict(&from_ip("203.0.113.6")), relay(0));
}

#[test]
fn from_src_cidr_literal() {
    let r = rules("match from src \"198.51.100.0/24\" for any action \"relay\"\n");
    assert_eq!(r.verdict(&from_ip("198.51.100.0")), relay(0));
    assert_eq!(r.verdict(&from_ip("198.51.100.255")), relay(0));
    assert_eq!(r.verdict(&from_ip("198.51.101.1")), NO);
    assert_eq!(r.verdict(&from_ip("::ffff:198.51.100.7")), relay(0));
}

#[test]
fn from_src_list_table() {
    let r = rules(
        "table nets { \"10.0.0.0/8\", 192.168.1.1, \"[::1]\", \"[2001:db8:1::]/48\", \"local\" }\n\
         match from src <nets> for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&from_ip("10.200.3.4")), relay(0));
    assert_eq!(r.verdict(&from_ip("192.168.1.1")), relay(0));
    assert_eq!(r.verdict(&from_ip("192.168.1.2")), NO);
    assert_eq!(r.verdict(&from_ip("::1")), relay(0));
    assert_eq!(r.verdict(&from_ip("::2")), NO);
    assert_eq!(r.verdict(&from_ip("2001:db8:1:ffff::9")), relay(0));
    assert_eq!(r.verdict(&from_ip("2001:db8:2::9")), NO);
    assert_eq!(r.verdict(&ctx()), NO);
    // the `local` entry names the local enqueuer
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Internal)), relay(0));
}

#[test]
fn from_src_ipv6_bracketed_literal() {
    let r = rules("match from src \"[2001:db8::5]\" for any action \"relay\"\n");
    assert_eq!(r.verdict(&from_ip("2001:db8::5")), relay(0));
    assert_eq!(r.verdict(&from_ip("2001:db8::6")), NO);
}

#[test]
fn from_src_regex() {
    let r = rules(
        "match from src regex \"^10[.]1[.]\" for any action \"relay\"\n\
         match from src regex \"^\\[2001:db8:\" for any action \"local\"\n\
         match from src regex \"^local$\" for any reject\n",
    );
    assert_eq!(r.verdict(&from_ip("10.1.2.3")), relay(0));
    assert_eq!(r.verdict(&from_ip("10.2.1.3")), NO);
    // IPv6 addresses are seen as `[addr]`, as OpenSMTPD writes them
    assert_eq!(r.verdict(&from_ip("2001:db8::77")), local(1));
    assert_eq!(r.verdict(&from_ip("2001:db9::77")), NO);
    // a mapped IPv4 address is seen as IPv4
    assert_eq!(r.verdict(&from_ip("::ffff:10.1.0.1")), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Local)), reject(2));
}

#[test]
fn from_rdns_without_name() {
    let r = rules("match from rdns for any action \"relay\"\n");
    assert_eq!(r.verdict(&from_rdns(Some("mx.example.net"))), relay(0));
    assert_eq!(r.verdict(&from_rdns(None)), NO);
    // the local enqueuer's name is the server name, as in OpenSMTPD
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(0));
    assert_eq!(r.verdict(&with_source(Source::Internal)), NO);

    let r = rules(
        "match !from rdns for any reject\n\
         match from any for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&from_rdns(None)), reject(0));
    assert_eq!(r.verdict(&from_rdns(Some("mx.example.net"))), relay(1));
    // so `!from rdns ... reject` does not lock out local sendmail
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(1));
    assert_eq!(r.verdict(&with_source(Source::Internal)), relay(1));
}

#[test]
fn from_rdns_with_name_and_table() {
    let r = rules(
        "table good { \"*.example.net\", partner.example }\n\
         match from rdns \"mx.example.com\" for any action \"relay\"\n\
         match from rdns <good> for any action \"local\"\n",
    );
    assert_eq!(r.verdict(&from_rdns(Some("mx.example.com"))), relay(0));
    assert_eq!(r.verdict(&from_rdns(Some("MX.Example.COM"))), relay(0));
    assert_eq!(r.verdict(&from_rdns(Some("a.b.example.net"))), local(1));
    assert_eq!(r.verdict(&from_rdns(Some("example.net"))), NO);
    assert_eq!(r.verdict(&from_rdns(Some("partner.example"))), local(1));
    assert_eq!(r.verdict(&from_rdns(Some("other.example"))), NO);
    assert_eq!(r.verdict(&from_rdns(None)), NO);
}

#[test]
fn from_rdns_local_enqueuer_is_server_name() {
    let r = rules("match from rdns \"mail.example.org\" for any action \"relay\"\n");
    assert_eq!(r.verdict(&with_source(Source::Local)), relay(0));
    assert_eq!(r.verdict(&from_rdns(Some("mail.example.org"))), relay(0));
    assert_eq!(r.verdict(&from_rdns(Some("other.example.org"))), NO);
}

#[test]
fn not_from_rdns_with_table() {
    let r = rules(
        "table good { \"*.example.net\" }\n\
         match !from rdns <good> for any reject\n\
         match from any for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&from_rdns(Some("mx.example.net"))), relay(1));
    assert_eq!(r.verdict(&from_rdns(Some("mx.example.com"))), reject(0));
    // Deliberate: a client without reverse DNS is not in <good>
    // (OpenSMTPD lets it through this rule).
    assert_eq!(r.verdict(&from_rdns(None)), reject(0));
}

#[test]
fn from_rdns_regex() {
    let r = rules("match from rdns regex \"[.]dyn[.]\" for any reject\n");
    assert_eq!(
        r.verdict(&from_rdns(Some("1-2-3-4.dyn.isp.example"))),
        reject(0)
    );
    assert_eq!(
        r.verdict(&from_rdns(Some("1-2-3-4.DYN.isp.example"))),
        reject(0)
    );
    assert_eq!(r.verdict(&from_rdns(Some("mx.isp.example"))), NO);
    assert_eq!(r.verdict(&from_rdns(None)), NO);
}

#[test]
fn from_auth_any_user() {
    let r = rules("match from auth for any action \"relay\"\n");
    assert_eq!(r.verdict(&auth(Some("alice"))), relay(0));
    assert_eq!(r.verdict(&auth(None)), NO);
    // the origin does not matter
    let lo = MatchContext {
        auth_user: Some("alice"),
        ..from_ip("127.0.0.1")
    };
    assert_eq!(r.verdict(&lo), relay(0));
    // OpenSMTPD's local enqueuer: authenticated with an empty name
    let enq = MatchContext {
        auth_user: Some(""),
        ..with_source(Source::Local)
    };
    assert_eq!(r.verdict(&enq), relay(0));

    // `!from auth`: any source, not authenticated
    let r = rules("match !from auth for any action \"relay\"\n");
    assert_eq!(r.verdict(&auth(None)), relay(0));
    assert_eq!(r.verdict(&auth(Some("alice"))), NO);
}

#[test]
fn from_auth_user_and_table() {
    let r = rules(
        "table users { alice, \"bob@example.org\" }\n\
         match from auth \"carol\" for any action \"local\"\n\
         match from auth <users> for any action \"relay\"\n",
    );
    assert_eq!(r.verdict(&auth(Some("carol"))), local(0));
    assert_eq!(r.verdict(&auth(Some("alice"))), relay(1));
    assert_eq!(r.verdict(&auth(Some("ALICE"))), relay(1));
    // a user name with `@` is compared as a mail address
    assert_eq!(r.verdict(&auth(Some("bob@example.org"))), relay(1));
    assert_eq!(r.verdict(&auth(Some("Bob@Example.ORG"))), relay(1));
    assert_eq!(r.verdict(&auth(Some("bob@example.com"))), NO);
    assert_eq!(r.verdict(&auth(Some("dave"))), NO);
    assert_eq!(r.verdict(&auth(None)), NO);
    let enq = MatchContext {
        auth_user: Some(""),
        ..with_source(Source::Local)
    };
    assert_eq!(r.verdict(&enq), NO);

    let r = rules("match !from auth \"carol\" for any action \"relay\"\n");
    assert_eq!(r.verdict(&auth(Some("carol"))), NO);
    assert_eq!(r.verdict(&auth(Some("alice"))), relay(0));
    assert_eq!(r.verdict(&auth(None)), relay(0));
}

#[test]
fn from_auth_regex() {
    let r = rules("match from auth regex \"^adm-\" for any action \"relay\"\n");
    assert_eq!(r.verdict(&auth(Some("adm-joe"))), relay(0));
    assert_eq!(r.verdict(&auth(Some("joe"))), NO);
    assert_eq!(r.verdict(&auth(None)), NO);
}

#[test]
fn from_mail_from_forms() {
    let r = rules(
        "match from mail-from \"@example.com\" for any action \"relay\"\n\
         match from mail-from \"carol@example.net\" for any action \"local\"\n\
         match from mail-from \"dave\" for any reject\n",
    );
    assert_eq!(r.verdict(&sender("anyone@example.com")), relay(0));
    assert_eq!(r.verdict(&sender("Anyone@EXAMPLE.com")), relay(0));
    assert_eq!(r.verdict(&sender("anyone@sub.example.com")), NO);
    assert_eq!(r.verdict(&sender("carol@example.net")), local(1));
    assert_eq!(r.verdict(&sender("carol+list@example.net")), local(1));
    assert_eq!(r.verdict(&sender("carol@example.org")), NO);
    // a bare user matches that user at any domain
    assert_eq!(r.verdict(&sender("dave@anywhere.example")), reject(2));
    assert_eq!(r.verdict(&sender("dave+x@else.example")), reject(2));
    assert_eq!(r.verdict(&sender("eve@example.net")), NO);
    // whatever the source
    let enq = MatchContext {
        sender: "dave@mail.example.org",
        ..with_source(Source::Local)
    };
    assert_eq!(r.verdict(&enq), reject(2));
}

#[test]
fn from_mail_from_table_and_regex() {
    let r = rules(
        "table snd { \"@example.com\", \"ops@*.example.net\" }\n\
         match from mail-from <snd> for any action \"relay\"\n\
         match from mail-from regex \"^bounce-[0-9]+@\" for any action \"local\"\n",
    );
    assert_eq!(r.verdict(&sender("x@example.com")), relay(0));
    assert_eq!(r.verdict(&sender("ops@a.example.net")), relay(0));
    assert_eq!(r.verdict(&sender("ops@example.net")), NO);
    assert_eq!(r.verdict(&sender("bounce-42@lists.example")), local(1));
    assert_eq!(r.verdict(&sender("bounce-x@lists.example")), NO);

    let r = rules("match !from mail-from \"@example.com\" for any action \"relay\"\n");
    assert_eq!(r.verdict(&sender("x@example.com")), NO);
    assert_eq!(r.verdict(&sender("x@example.net")), relay(0));
}

// ----------------------------------------------------------- destinations

#[test]
fn for_any() {
    let r = rules("match from any for any action \"relay\"\n");
    assert_eq!(r.verdict(&to("a@example.com")), relay(0));
    assert_eq!(r.verdict(&to("a@mail.example.org")), relay(0));
    assert_eq!(r.verdict(&to("a@[192.0.2.99]")), relay(0));

    let r = rules("match from any !for any action \"relay\"\n");
    assert_eq!(r.verdict(&to("a@example.com")), NO);
}

#[test]
fn for_local() {
    let r = rules("match from any for local action \"local\"\n");
    assert_eq!(r.verdict(&to("a@mail.example.org")), local(0));
    assert_eq!(r.verdict(&to("a@MAIL.Example.ORG")), local(0));
    assert_eq!(r.verdict(&to("a@localhost")), local(0));
    assert_eq!(r.verdict(&to("a@LocalHost")), local(0));
    // address literals of the machine's interfaces
    assert_eq!(r.verdict(&to("a@[192.0.2.10]")), local(0));
    assert_eq!(r.verdict(&to("a@[127.0.0.1]")), local(0));
    assert_eq!(r.verdict(&to("a@[192.0.2.11]")), NO);
    assert_eq!(r.verdict(&to("a@example.org")), NO);
    assert_eq!(r.verdict(&to("a@sub.mail.example.org")), NO);
    assert_eq!(r.verdict(&to("a@example.com")), NO);
}

#[test]
fn not_for_local() {
    let r = rules(
        "match from any !for local reject\n\
         match from any for any action \"local\"\n",
    );
    assert_eq!(r.verdict(&to("a@example.com")), reject(0));
    assert_eq!(r.verdict(&to("a@mail.example.org")), local(1));
    assert_eq!(r.verdict(&to("a@localhost")), local(1));
}

#[test]
fn for_domain_literal() {
    let r = rules("match from any for domain example.com action \"relay\"\n");
    assert_eq!(r.verdict(&to("a@example.com")), relay(0));
    assert_eq!(r.verdict(&to("a@EXAMPLE.COM")), relay(0));
    assert_eq!(r.verdict(&to("a@sub.example.com")), NO);
    assert_eq!(r.verdict(&to("a@example.org")), NO);

    let r = rules("match from any !for domain example.com action \"relay\"\n");
    assert_eq!(r.verdict(&to("a@example.com")), NO);
    assert_eq!(r.verdict(&to("a@example.org")), relay(0));
}

#[test]
fn for_domain_table_with_wildcard() {
    let r = rules(
        "table doms { example.org, \"*.example.org\" }\n\
         match from any for domain <doms> action \"relay\"\n",
    );
    assert_eq!(r.verdict(&to("a@example.org")), relay(0));
    assert_eq!(r.verdict(&to("a@a.example.org")), relay(0));
    assert_eq!(r.verdict(&to("a@A.B.Example.Org")), relay(0));
    assert_eq!(r.verdict(&to("a@badexample.org")), NO);
    assert_eq!(r.verdict(&to("a@example.org.evil")), NO);

    let r = rules(
        "table doms { \"*.example.org\" }\n\
         match from any for domain <doms> action \"relay\"\n",
    );
    // the wildcard needs a label in front
    assert_eq!(r.verdict(&to("a@example.org")), NO);
    assert_eq!(r.verdict(&to("a@x.example.org")), relay(0));
}

#[test]
fn for_domain_regex() {
    let r =
        rules("match from any for domain regex \"^(eu|us)[.]example[.]com$\" action \"relay\"\n");
    assert_eq!(r.verdict(&to("a@eu.example.com")), relay(0));
    assert_eq!(r.verdict(&to("a@US.example.com")), relay(0));
    assert_eq!(r.verdict(&to("a@asia.example.com")), NO);
}

#[test]
fn for_rcpt_to() {
    let r = rules(
        "table rcpts { \"@lists.example\", postmaster }\n\
         match from any for rcpt-to \"bob@example.com\" action \"relay\"\n\
         match from any for rcpt-to <rcpts> action \"local\"\n\
         match from any for rcpt-to regex \"^abuse@\" reject\n",
    );
    assert_eq!(r.verdict(&to("bob@example.com")), relay(0));
    assert_eq!(r.verdict(&to("BOB@Example.com")), relay(0));
    assert_eq!(r.verdict(&to("bob+tag@example.com")), relay(0));
    assert_eq!(r.verdict(&to("bob@example.net")), NO);
    assert_eq!(r.verdict(&to("x@lists.example")), local(1));
    assert_eq!(r.verdict(&to("postmaster@anything.example")), local(1));
    assert_eq!(r.verdict(&to("abuse@anything.example")), reject(2));
    assert_eq!(r.verdict(&to("carol@example.com")), NO);

    // `!for rcpt-to`: any destination except that recipient
    let r = rules("match from any !for rcpt-to \"bob@example.com\" action \"relay\"\n");
    assert_eq!(r.verdict(&to("bob@example.com")), NO);
    assert_eq!(r.verdict(&to("carol@example.com")), relay(0));
    assert_eq!(r.verdict(&to("carol@mail.example.org")), relay(0));
}

#[test]
fn sub_address_delimiter_is_configurable() {
    let r = rules(
        "smtp sub-addr-delim \"-\"\n\
         match from any for rcpt-to \"bob@example.com\" action \"relay\"\n",
    );
    assert_eq!(r.verdict(&to("bob-tag@example.com")), relay(0));
    // `+` is now an ordinary character
    assert_eq!(r.verdict(&to("bob+tag@example.com")), NO);
}

// ------------------------------------------------- transaction conditions

#[test]
fn condition_auth() {
    let r = rules(
        "match from any for any auth action \"relay\"\n\
         match from any for any !auth action \"local\"\n",
    );
    assert_eq!(r.verdict(&auth(Some("alice"))), relay(0));
    assert_eq!(r.verdict(&auth(None)), local(1));

    let r = rules(
        "table users { alice, bob }\n\
         match from any for any auth <users> action \"relay\"\n\
         match from any for any !auth \"carol\" action \"local\"\n",
    );
    assert_eq!(r.verdict(&auth(Some("bob"))), relay(0));
    assert_eq!(r.verdict(&auth(Some("dave"))), local(1));
    assert_eq!(r.verdict(&auth(None)), local(1));
    assert_eq!(r.verdict(&auth(Some("carol"))), NO);

    let r = rules("match from any for any auth regex \"^a\" action \"relay\"\n");
    assert_eq!(r.verdict(&auth(Some("alice"))), relay(0));
    assert_eq!(r.verdict(&auth(Some("bob"))), NO);
    assert_eq!(r.verdict(&auth(None)), NO);
}

#[test]
fn condition_helo() {
    let r = rules(
        "table helos { \"*.example.net\" }\n\
         match from any for any helo \"mx.partner.example\" action \"relay\"\n\
         match from any for any helo <helos> action \"local\"\n\
         match from any for any !helo regex \"[.]\" reject\n",
    );
    let helo = |h: &'static str| MatchContext {
        helo: Some(h),
        ..ctx()
    };
    assert_eq!(r.verdict(&helo("mx.partner.example")), relay(0));
    assert_eq!(r.verdict(&helo("MX.Partner.Example")), relay(0));
    assert_eq!(r.verdict(&helo("client.example.net")), local(1));
    assert_eq!(r.verdict(&helo("other.example")), NO);
    // a HELO name without a dot
    assert_eq!(r.verdict(&helo("localhost")), reject(2));
    assert_eq!(
        r.verdict(&MatchContext {
            helo: None,
            ..ctx()
        }),
        reject(2)
    );
}

#[test]
fn condition_mail_from() {
    let r = rules(
        "match from any for any mail-from \"@example.net\" action \"relay\"\n\
         match from any for any !mail-from \"@example.com\" action \"local\"\n",
    );
    assert_eq!(r.verdict(&sender("alice@example.net")), relay(0));
    assert_eq!(r.verdict(&sender("alice@example.org")), local(1));
    assert_eq!(r.verdict(&sender("alice@example.com")), NO);
}

#[test]
fn condition_rcpt_to() {
    let r = rules(
        "match from any for any rcpt-to \"bob@example.com\" action \"relay\"\n\
         match from any for any !rcpt-to regex \"^postmaster@\" action \"local\"\n",
    );
    assert_eq!(r.verdict(&to("bob@example.com")), relay(0));
    assert_eq!(r.verdict(&to("carol@example.com")), local(1));
    assert_eq!(r.verdict(&to("postmaster@example.com")), NO);
}

#[test]
fn condition_tag() {
    let r = rules(
        "match from any for any tag \"DKIM\" action \"relay\"\n\
         match from any for any tag regex \"^sub\" action \"local\"\n\
         match from any for any !tag \"internal\" reject\n",
    );
    let tag = |t: Option<&'static str>| MatchContext { tag: t, ..ctx() };
    assert_eq!(r.verdict(&tag(Some("DKIM"))), relay(0));
    assert_eq!(r.verdict(&tag(Some("submission"))), local(1));
    assert_eq!(r.verdict(&tag(Some("other"))), reject(2));
    assert_eq!(r.verdict(&tag(None)), reject(2));
    assert_eq!(r.verdict(&tag(Some("internal"))), NO);
}

#[test]
fn condition_tls() {
    let r = rules(
        "match from any for any tls action \"relay\"\n\
         match from any for any !tls action \"local\"\n",
    );
    let tls = |on: bool| MatchContext { tls: on, ..ctx() };
    assert_eq!(r.verdict(&tls(true)), relay(0));
    assert_eq!(r.verdict(&tls(false)), local(1));
}

#[test]
fn all_parts_must_match() {
    let r = rules(
        "match from src \"203.0.113.0/24\" for domain example.com auth tls \
         helo \"client.example.net\" mail-from \"@example.net\" rcpt-to \"bob\" \
         action \"relay\"\n",
    );
    let full = MatchContext {
        auth_user: Some("alice"),
        tls: true,
        ..to("bob@example.com")
    };
    assert_eq!(r.verdict(&full), relay(0));
    let miss: [MatchContext<'static>; 7] = [
        MatchContext {
            source: Source::Network {
                addr: ip("198.51.100.1"),
                rdns: None,
            },
            ..full
        },
        MatchContext {
            rcpt: "bob@example.org",
            rcpt_domain: "example.org",
            ..full
        },
        MatchContext {
            auth_user: None,
            ..full
        },
        MatchContext { tls: false, ..full },
        MatchContext {
            helo: Some("other.example"),
            ..full
        },
        MatchContext {
            sender: "alice@example.org",
            ..full
        },
        MatchContext {
            rcpt: "carol@example.com",
            ..full
        },
    ];
    for m in miss {
        assert_eq!(r.verdict(&m), NO, "{m:?}");
    }
}

// ------------------------------------------------------------ null sender

#[test]
fn null_sender() {
    let bounce = sender("");
    let r = rules(
        "match from any for any mail-from \"@example.com\" action \"relay\"\n\
         match from any for any mail-from \"postmaster\" action \"relay\"\n\
         match from any for any mail-from regex \"^@$\" action \"local\"\n",
    );
    // OpenSMTPD writes the null sender `@`: no user, no domain
    assert_eq!(r.verdict(&bounce), local(2));

    let r = rules("match from any for any mail-from \"@\" action \"relay\"\n");
    // the `@` entry matches every sender, the null one included
    assert_eq!(r.verdict(&bounce), relay(0));
    assert_eq!(r.verdict(&sender("x@example.com")), relay(0));

    let r = rules("match from any for any !mail-from \"@example.com\" action \"relay\"\n");
    assert_eq!(r.verdict(&bounce), relay(0));

    let r = rules("match from mail-from \"@example.com\" for any reject\n");
    assert_eq!(r.verdict(&bounce), NO);
}

// ---------------------------------------------------------- whole configs

/// Example 06 of the reference examples, with the `other-relays` file
/// replaced by an inline table.
#[test]
fn example_06_reject_forged_local_sender() {
    let r = rules(
        "table other-relays { 198.51.100.7, \"2001:db8:77::/48\" }\n\
         match for local action \"local\"\n\
         match for any action \"relay\"\n\
         match !from src <other-relays> mail-from \"@example.com\" for any \\\n      reject\n\
         match from any for domain example.com action \"local\"\n",
    );
    let mail = |src: &str, snd: &'static str, rcpt: &'static str| {
        let base = MatchContext {
            sender: snd,
            ..from_ip(src)
        };
        to_from(base, rcpt)
    };
    // forged local sender from the Internet to our domain: refused
    assert_eq!(
        r.verdict(&mail("203.0.113.5", "ceo@example.com", "bob@example.com")),
        reject(2)
    );
    // the same sender through one of the other relays: delivered
    assert_eq!(
        r.verdict(&mail("198.51.100.7", "ceo@example.com", "bob@example.com")),
        local(3)
    );
    assert_eq!(
        r.verdict(&mail(
            "2001:db8:77::1",
            "ceo@example.com",
            "bob@example.com"
        )),
        local(3)
    );
    // any other sender from the Internet to our domain: delivered
    assert_eq!(
        r.verdict(&mail("203.0.113.5", "x@example.net", "bob@example.com")),
        local(3)
    );
    // the Internet may not relay elsewhere
    assert_eq!(
        r.verdict(&mail("203.0.113.5", "x@example.net", "bob@example.net")),
        NO
    );
    // local users: delivered locally or relayed, before the reject rule
    assert_eq!(
        r.verdict(&mail(
            "127.0.0.1",
            "ceo@example.com",
            "bob@mail.example.org"
        )),
        local(0)
    );
    assert_eq!(
        r.verdict(&mail("127.0.0.1", "ceo@example.com", "bob@example.net")),
        relay(1)
    );
    let enq = MatchContext {
        sender: "ceo@example.com",
        ..with_source(Source::Local)
    };
    assert_eq!(r.verdict(&to_from(enq, "x@example.net")), relay(1));
}

#[test]
fn internal_envelopes_match_as_local() {
    // An alias expanded to a remote address is relayed under `from local`.
    let r = rules(
        "match from local for any action \"relay\"\n\
         match from any for local action \"local\"\n",
    );
    let fwd = to_from(with_source(Source::Internal), "friend@example.net");
    assert_eq!(r.verdict(&fwd), relay(0));
}

// --------------------------------------------------------------- failures

#[test]
fn vanished_file_table_is_an_error_not_a_guess() {
    let dir = std::env::temp_dir().join(format!("rsmtpd-ruleset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("relays");
    std::fs::write(&path, "198.51.100.7\n").expect("write table");
    let text = format!(
        "{ACTIONS}table relays file:{}\nmatch from src <relays> for any action \"relay\"\n",
        path.display()
    );
    let config = parse_str("ruleset.conf", &text, &opts()).expect("config");
    // with the file present, it answers
    let tables = open_tables(&config).expect("open");
    let c = from_ip("198.51.100.7");
    assert_eq!(evaluate(&config, &tables, &c), Ok(relay(0)));

    std::fs::remove_file(&path).expect("remove");
    let _ = std::fs::remove_dir(&dir);
    match open_tables(&config) {
        Err(EvalError::Table { name, .. }) => assert_eq!(name, "relays"),
        other => panic!("expected a table error, got {other:?}"),
    }
}

#[test]
fn unopened_tables_are_an_error() {
    let r = rules("match from any for any action \"relay\"\nmatch for local action \"local\"\n");
    let none: Vec<Table> = Vec::new();
    // `from any for any` needs no table
    assert_eq!(evaluate(&r.config, &none, &ctx()), Ok(relay(0)));
    let r = rules("match from local for local action \"local\"\n");
    assert_eq!(
        evaluate(&r.config, &none, &from_ip("127.0.0.1")),
        Err(EvalError::MissingTable {
            name: "<localhost>".into()
        })
    );
}

#[test]
fn failing_lookup_is_an_error_unless_an_earlier_rule_matched() {
    // A key longer than any table accepts makes the lookup fail.
    let long: &'static str = Box::leak(format!("{}.example", "a".repeat(1100)).into_boxed_str());
    let c = MatchContext {
        helo: Some(long),
        ..ctx()
    };
    let r = rules(
        "match from any for any helo \"mx.example\" action \"relay\"\n\
         match from any for any action \"local\"\n",
    );
    assert!(
        matches!(
            evaluate(&r.config, &r.tables, &c),
            Err(EvalError::Table { .. })
        ),
        "a failed lookup must not be taken as a non-match"
    );
    let r = rules(
        "match from any for any action \"local\"\n\
         match from any for any helo \"mx.example\" action \"relay\"\n",
    );
    assert_eq!(evaluate(&r.config, &r.tables, &c), Ok(local(0)));
    // a rule that already failed on its origin does not look further
    let r = rules(
        "match from local for any helo \"mx.example\" action \"relay\"\n\
         match from any for any action \"local\"\n",
    );
    assert_eq!(evaluate(&r.config, &r.tables, &c), Ok(local(1)));
}
