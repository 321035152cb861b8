//! The pure routing step: relay URLs, MX ordering, loops, Null MX.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use rsmtpd_config::check::parse_relay_url;
use rsmtpd_config::model::{RelayDispatcher, RelayTls, Route, TableId};
use rsmtpd_mta::route::{MAX_ADDRS_PER_HOST, MAX_MX_HOSTS};
use rsmtpd_mta::{
    MxQuery, MxRecord, Plan, Protocol, Random, RouteError, Target, TlsMode, XorShift,
    order_addresses, plan, select_mx,
};
use rsmtpd_table::Table;

fn host_dispatcher(url: &str) -> RelayDispatcher {
    RelayDispatcher {
        route: Route::Host(parse_relay_url(url).unwrap()),
        ..RelayDispatcher::default()
    }
}

fn direct(d: &RelayDispatcher, domain: &str) -> Target {
    match plan(d, domain, 25, |_| None).unwrap() {
        Plan::Direct(t) => t,
        other => panic!("expected a direct target, got {other:?}"),
    }
}

fn mxq(domain: &str) -> MxQuery {
    match plan(&RelayDispatcher::default(), domain, 25, |_| None).unwrap() {
        Plan::Mx(q) => q,
        other => panic!("expected an MX plan, got {other:?}"),
    }
}

fn mx(preference: u16, exchange: &str) -> MxRecord {
    MxRecord {
        preference,
        exchange: exchange.to_string(),
    }
}

fn hosts(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.host.as_str()).collect()
}

fn select(
    q: &MxQuery,
    records: &[MxRecord],
    own: &[&str],
    seed: u64,
) -> Result<Vec<Target>, RouteError> {
    let own: Vec<String> = own.iter().map(|s| s.to_string()).collect();
    select_mx(q, records, &own, &mut XorShift::new(seed))
}

// ---------------------------------------------------------------- relay URLs

#[test]
fn relay_urls_of_every_protocol_with_and_without_port() {
    let cases: &[(&str, &str, u16, Protocol, TlsMode)] = &[
        (
            "smtp://relay.example.net",
            "relay.example.net",
            25,
            Protocol::Smtp,
            TlsMode::Opportunistic,
        ),
        (
            "smtp://relay.example.net:2525",
            "relay.example.net",
            2525,
            Protocol::Smtp,
            TlsMode::Opportunistic,
        ),
        (
            "relay.example.net",
            "relay.example.net",
            25,
            Protocol::Smtp,
            TlsMode::Opportunistic,
        ),
        (
            "smtp+tls://Relay.Example.NET.",
            "relay.example.net",
            25,
            Protocol::Smtp,
            TlsMode::Starttls,
        ),
        (
            "smtp+tls://relay.example.net:587",
            "relay.example.net",
            587,
            Protocol::Smtp,
            TlsMode::Starttls,
        ),
        (
            "smtp+notls://relay.example.net",
            "relay.example.net",
            25,
            Protocol::Smtp,
            TlsMode::Plain,
        ),
        (
            "smtp+notls://127.0.0.1:10025",
            "127.0.0.1",
            10025,
            Protocol::Smtp,
            TlsMode::Plain,
        ),
        (
            "smtps://relay.example.net",
            "relay.example.net",
            465,
            Protocol::Smtp,
            TlsMode::Implicit,
        ),
        (
            "smtps://[::1]:4650",
            "::1",
            4650,
            Protocol::Smtp,
            TlsMode::Implicit,
        ),
        (
            "lmtp://lmtp.example.net:24",
            "lmtp.example.net",
            24,
            Protocol::Lmtp,
            TlsMode::Plain,
        ),
    ];
    for (url, host, port, protocol, tls) in cases {
        let t = direct(&host_dispatcher(url), "example.org");
        assert_eq!(t.host, *host, "{url}");
        assert_eq!(t.port, *port, "{url}");
        assert_eq!(t.protocol, *protocol, "{url}");
        assert_eq!(t.tls, *tls, "{url}");
        assert_eq!(t.label, None, "{url}");
        assert_eq!(t.preference, None, "{url}");
        // Mandatory TLS from the URL verifies; opportunistic never does.
        assert_eq!(
            t.verify,
            matches!(tls, TlsMode::Starttls | TlsMode::Implicit),
            "{url}"
        );
    }
}

#[test]
fn relay_url_labels() {
    for (url, label) in [
        ("smtp://bob@relay.example.net", "bob"),
        ("smtp+tls://bob@relay.example.net:587", "bob"),
        ("smtp+notls://x@relay.example.net", "x"),
        ("smtps://alice@relay.example.net", "alice"),
        ("lmtp://l@relay.example.net:24", "l"),
    ] {
        let t = direct(&host_dispatcher(url), "example.org");
        assert_eq!(t.label.as_deref(), Some(label), "{url}");
        assert_eq!(t.host, "relay.example.net");
    }
}

#[test]
fn tls_option_makes_opportunistic_mandatory() {
    let mut d = host_dispatcher("smtp://relay.example.net");
    d.tls = RelayTls::Required { verify: true };
    let t = direct(&d, "example.org");
    assert_eq!((t.tls, t.verify), (TlsMode::Starttls, true));

    d.tls = RelayTls::Required { verify: false };
    assert_eq!(direct(&d, "example.org").tls, TlsMode::Starttls);

    let mut d = host_dispatcher("smtps://relay.example.net");
    d.tls = RelayTls::Required { verify: true };
    let t = direct(&d, "example.org");
    assert_eq!((t.tls, t.verify), (TlsMode::Implicit, true));

    let d = RelayDispatcher {
        tls: RelayTls::Required { verify: false },
        ..RelayDispatcher::default()
    };
    let Plan::Mx(q) = plan(&d, "example.org", 25, |_| None).unwrap() else {
        panic!("MX plan expected");
    };
    assert_eq!((q.tls, q.verify), (TlsMode::Starttls, false));
}

#[test]
fn lmtp_without_port_is_refused() {
    let mut url = parse_relay_url("lmtp://h:24").unwrap();
    url.port = None;
    let d = RelayDispatcher {
        route: Route::Host(url),
        ..RelayDispatcher::default()
    };
    let e = plan(&d, "example.org", 25, |_| None).unwrap_err();
    assert!(matches!(e, RouteError::LmtpWithoutPort { .. }), "{e:?}");
    assert!(!e.is_permanent());
}

#[test]
fn domain_table_gives_the_relay_url() {
    let table = Table::from_text(
        Path::new("relays"),
        b"example.org smtps://bob@relay.example.net:4650\n\
          example.com lmtp://10.0.0.1:24\n\
          broken.example ftp://nope\n",
    )
    .unwrap();
    let d = RelayDispatcher {
        route: Route::Domain(TableId(3)),
        ..RelayDispatcher::default()
    };
    let lookup = |id: TableId| {
        assert_eq!(id, TableId(3));
        Some(&table)
    };
    let Plan::Direct(t) = plan(&d, "Example.ORG", 25, lookup).unwrap() else {
        panic!("direct expected");
    };
    assert_eq!(
        (t.host.as_str(), t.port, t.tls, t.label.as_deref()),
        ("relay.example.net", 4650, TlsMode::Implicit, Some("bob"))
    );
    let Plan::Direct(t) = plan(&d, "example.com", 25, lookup).unwrap() else {
        panic!("direct expected");
    };
    assert_eq!(
        (t.host.as_str(), t.port, t.protocol),
        ("10.0.0.1", 24, Protocol::Lmtp)
    );

    let e = plan(&d, "unknown.example", 25, lookup).unwrap_err();
    assert!(matches!(e, RouteError::NoSmarthost { .. }), "{e:?}");
    assert!(!e.is_permanent());
    let e = plan(&d, "broken.example", 25, lookup).unwrap_err();
    assert!(matches!(e, RouteError::BadRelayUrl { .. }), "{e:?}");
    assert!(!e.is_permanent());
    let e = plan(&d, "example.org", 25, |_| None).unwrap_err();
    assert!(matches!(e, RouteError::Table { .. }), "{e:?}");
}

#[test]
fn mx_plan_uses_the_mx_port_and_the_backup_name() {
    let d = RelayDispatcher {
        backup: Some(Some("MX2.Example.ORG.".into())),
        ..RelayDispatcher::default()
    };
    let Plan::Mx(q) = plan(&d, "Example.ORG.", 2525, |_| None).unwrap() else {
        panic!("MX plan expected");
    };
    assert_eq!(q.domain, "example.org");
    assert_eq!(q.port, 2525);
    assert_eq!(q.backup_name.as_deref(), Some("mx2.example.org"));
    let t = select(&q, &[], &[], 1).unwrap();
    assert_eq!(t[0].port, 2525);
}

#[test]
fn domain_literals_skip_the_mx_lookup() {
    let d = RelayDispatcher::default();
    let Plan::Direct(t) = plan(&d, "[192.0.2.7]", 2525, |_| None).unwrap() else {
        panic!("direct expected");
    };
    assert_eq!((t.host.as_str(), t.port), ("192.0.2.7", 2525));
    let Plan::Direct(t) = plan(&d, "[IPv6:2001:db8::1]", 25, |_| None).unwrap() else {
        panic!("direct expected");
    };
    assert_eq!(t.host, "2001:db8::1");
    let e = plan(&d, "[not-an-ip]", 25, |_| None).unwrap_err();
    assert!(matches!(e, RouteError::InvalidDomain { .. }));
    assert!(e.is_permanent());
    for bad in ["", "a..b", "a b.example"] {
        let e = plan(&d, bad, 25, |_| None).unwrap_err();
        assert!(matches!(e, RouteError::InvalidDomain { .. }), "{bad:?}");
    }
}

// ---------------------------------------------------------------- MX order

#[test]
fn mx_sorted_by_preference() {
    let q = mxq("example.org");
    let t = select(
        &q,
        &[
            mx(30, "c.example.org."),
            mx(10, "A.example.org."),
            mx(20, "b.example.org"),
        ],
        &[],
        7,
    )
    .unwrap();
    assert_eq!(
        hosts(&t),
        ["a.example.org", "b.example.org", "c.example.org"]
    );
    assert_eq!(t[0].preference, Some(10));
    assert_eq!(t[2].preference, Some(30));
    assert!(
        t.iter()
            .all(|t| t.port == 25 && t.tls == TlsMode::Opportunistic)
    );
}

#[test]
fn equal_preferences_are_shuffled_deterministically_by_seed() {
    let q = mxq("example.org");
    let records = [
        mx(10, "a.example.org"),
        mx(10, "b.example.org"),
        mx(10, "c.example.org"),
        mx(10, "d.example.org"),
        mx(5, "first.example.org"),
        mx(20, "last.example.org"),
    ];
    let mut orders = std::collections::BTreeSet::new();
    for seed in 1..=64 {
        let t = select(&q, &records, &[], seed).unwrap();
        let h = hosts(&t);
        assert_eq!(h[0], "first.example.org");
        assert_eq!(h[5], "last.example.org");
        let mut middle: Vec<&str> = h[1..5].to_vec();
        orders.insert(middle.join(","));
        middle.sort();
        assert_eq!(
            middle,
            [
                "a.example.org",
                "b.example.org",
                "c.example.org",
                "d.example.org"
            ]
        );
        // Same seed, same order.
        assert_eq!(hosts(&select(&q, &records, &[], seed).unwrap()), h);
    }
    // 64 seeds over 24 permutations: the shuffle does shuffle.
    assert!(orders.len() > 8, "only {} orders seen", orders.len());
}

/// A fixed sequence, to check the shuffle uses the injected source only.
struct Fixed(Vec<u64>);
impl Random for Fixed {
    fn next_u64(&mut self) -> u64 {
        self.0.pop().unwrap_or(0)
    }
}

#[test]
fn shuffle_uses_only_the_injected_randomness() {
    let q = mxq("example.org");
    let records = [mx(10, "a.example.org"), mx(10, "b.example.org")];
    // Fisher-Yates with i = 1: j = r % 2. 0 swaps, 1 keeps.
    let t = select_mx(&q, &records, &[], &mut Fixed(vec![0])).unwrap();
    assert_eq!(hosts(&t), ["b.example.org", "a.example.org"]);
    let t = select_mx(&q, &records, &[], &mut Fixed(vec![1])).unwrap();
    assert_eq!(hosts(&t), ["a.example.org", "b.example.org"]);
}

#[test]
fn duplicate_exchanges_are_tried_once_at_their_best_preference() {
    let q = mxq("example.org");
    let t = select(
        &q,
        &[
            mx(20, "a.example.org"),
            mx(10, "a.example.org."),
            mx(15, "b.example.org"),
        ],
        &[],
        3,
    )
    .unwrap();
    assert_eq!(hosts(&t), ["a.example.org", "b.example.org"]);
    assert_eq!(t[0].preference, Some(10));
}

#[test]
fn number_of_mx_hosts_is_bounded() {
    let q = mxq("example.org");
    let records: Vec<MxRecord> = (0..100)
        .map(|i| mx(i, &format!("mx{i}.example.org")))
        .collect();
    let t = select(&q, &records, &[], 3).unwrap();
    assert_eq!(t.len(), MAX_MX_HOSTS);
    assert_eq!(t[0].host, "mx0.example.org");
}

// ---------------------------------------------------------------- loops, backup

#[test]
fn we_are_an_mx_so_only_better_ones_are_kept() {
    let q = mxq("example.org");
    let records = [
        mx(10, "primary.example.org"),
        mx(20, "me.example.net"),
        mx(20, "peer.example.org"),
        mx(30, "tertiary.example.org"),
    ];
    let t = select(&q, &records, &["ME.example.net."], 1).unwrap();
    assert_eq!(hosts(&t), ["primary.example.org"]);
}

#[test]
fn plain_backup_relays_to_better_mxes() {
    let d = RelayDispatcher {
        backup: Some(None),
        ..RelayDispatcher::default()
    };
    let Plan::Mx(q) = plan(&d, "example.org", 25, |_| None).unwrap() else {
        panic!("MX plan expected");
    };
    assert_eq!(q.backup_name, None);
    let records = [
        mx(10, "a.example.org"),
        mx(10, "b.example.org"),
        mx(50, "backup.example.net"),
    ];
    let mut t = select(&q, &records, &["backup.example.net"], 9).unwrap();
    t.sort_by(|a, b| a.host.cmp(&b.host));
    assert_eq!(hosts(&t), ["a.example.org", "b.example.org"]);
}

#[test]
fn backup_mx_name_uses_that_names_preference() {
    let d = RelayDispatcher {
        backup: Some(Some("mx2.example.org".into())),
        ..RelayDispatcher::default()
    };
    let Plan::Mx(q) = plan(&d, "example.org", 25, |_| None).unwrap() else {
        panic!("MX plan expected");
    };
    let records = [
        mx(10, "mx1.example.org"),
        mx(20, "mx2.example.org"),
        mx(30, "mx3.example.org"),
    ];
    // Our own hostname is not among the MXes; the NAME decides.
    let t = select(&q, &records, &["relay.example.net"], 1).unwrap();
    assert_eq!(hosts(&t), ["mx1.example.org"]);
    // The NAME is the best MX: nothing better is left.
    let q2 = MxQuery {
        backup_name: Some("mx1.example.org".into()),
        ..q.clone()
    };
    let e = select(&q2, &records, &["relay.example.net"], 1).unwrap_err();
    assert!(matches!(e, RouteError::LoopsToMyself { .. }), "{e:?}");
    // A NAME that is not an MX of the domain restricts nothing.
    let q3 = MxQuery {
        backup_name: Some("elsewhere.example".into()),
        ..q
    };
    assert_eq!(select(&q3, &records, &[], 1).unwrap().len(), 3);
}

#[test]
fn loops_back_to_myself() {
    let q = mxq("example.org");
    // We are the best MX.
    let e = select(
        &q,
        &[mx(10, "me.example.net"), mx(20, "other.example.org")],
        &["me.example.net"],
        1,
    )
    .unwrap_err();
    assert_eq!(
        e,
        RouteError::LoopsToMyself {
            domain: "example.org".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), "5.4.6");
    assert_eq!(e.to_string(), "mail for example.org loops back to myself");
    // Tied with the best: equal preferences are dropped too.
    let e = select(
        &q,
        &[mx(10, "me.example.net"), mx(10, "other.example.org")],
        &["me.example.net"],
        1,
    )
    .unwrap_err();
    assert!(matches!(e, RouteError::LoopsToMyself { .. }));
    // Implicit MX that is us.
    let q = mxq("me.example.net");
    let e = select(&q, &[], &["me.example.net"], 1).unwrap_err();
    assert!(matches!(e, RouteError::LoopsToMyself { .. }));
}

#[test]
fn null_mx_is_a_permanent_failure() {
    let q = mxq("example.org");
    for exchange in [".", ""] {
        let e = select(&q, &[mx(0, exchange)], &[], 1).unwrap_err();
        assert_eq!(
            e,
            RouteError::NullMx {
                domain: "example.org".into()
            }
        );
        assert!(e.is_permanent());
        assert_eq!(e.status(), "5.1.10");
    }
    // A root MX among others is a mistake, not a Null MX: it is skipped.
    let t = select(&q, &[mx(0, "."), mx(10, "mx.example.org")], &[], 1).unwrap();
    assert_eq!(hosts(&t), ["mx.example.org"]);
}

#[test]
fn localhost_mx_is_a_permanent_failure() {
    let q = mxq("example.org");
    for exchange in ["localhost", "LOCALHOST.", "mx.localhost"] {
        let e = select(&q, &[mx(10, exchange)], &[], 1).unwrap_err();
        assert!(
            matches!(e, RouteError::MxIsLocalhost { .. }),
            "{exchange}: {e:?}"
        );
        assert!(e.is_permanent());
        assert_eq!(e.status(), "5.4.4");
    }
    // localhost as good as the best MX: refused.
    let e = select(
        &q,
        &[
            mx(10, "localhost"),
            mx(10, "mx.example.org"),
            mx(20, "b.example.org"),
        ],
        &[],
        1,
    )
    .unwrap_err();
    assert!(matches!(e, RouteError::MxIsLocalhost { .. }), "{e:?}");
    // A better MX than localhost is still used.
    let t = select(&q, &[mx(5, "mx.example.org"), mx(10, "localhost")], &[], 1).unwrap();
    assert_eq!(hosts(&t), ["mx.example.org"]);
    // The implicit MX of "localhost".
    let e = select(&mxq("localhost"), &[], &[], 1).unwrap_err();
    assert!(matches!(e, RouteError::MxIsLocalhost { .. }));
}

#[test]
fn no_mx_records_means_the_implicit_mx() {
    let q = mxq("Example.ORG");
    let t = select(&q, &[], &["me.example.net"], 1).unwrap();
    assert_eq!(
        t,
        [Target {
            host: "example.org".into(),
            port: 25,
            protocol: Protocol::Smtp,
            tls: TlsMode::Opportunistic,
            verify: false,
            label: None,
            preference: None,
        }]
    );
}

// ---------------------------------------------------------------- addresses

#[test]
fn addresses_interleave_ipv6_first_and_are_bounded() {
    let v6: Vec<Ipv6Addr> = (1..=3)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))
        .collect();
    let v4: Vec<Ipv4Addr> = (1..=2).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    let a = order_addresses(&v6, &v4);
    assert_eq!(
        a,
        [
            IpAddr::V6(v6[0]),
            IpAddr::V4(v4[0]),
            IpAddr::V6(v6[1]),
            IpAddr::V4(v4[1]),
            IpAddr::V6(v6[2]),
        ]
    );
    assert_eq!(
        order_addresses(&[], &v4),
        [IpAddr::V4(v4[0]), IpAddr::V4(v4[1])]
    );
    assert!(order_addresses(&[], &[]).is_empty());

    let many: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
    assert_eq!(order_addresses(&[], &many).len(), MAX_ADDRS_PER_HOST);
    let dup = [Ipv4Addr::new(10, 0, 0, 1); 4];
    assert_eq!(order_addresses(&[], &dup).len(), 1);
}

#[test]
fn temporary_errors_are_not_permanent() {
    let e = RouteError::DnsTemporary {
        name: "example.org".into(),
        reason: "SERVFAIL".into(),
    };
    assert!(!e.is_permanent());
    assert_eq!(e.status(), "4.4.3");
    let e = RouteError::NoSuchDomain {
        domain: "example.org".into(),
    };
    assert!(e.is_permanent());
    assert_eq!(e.status(), "5.1.2");
}

#[test]
fn entropy_seeded_generators_differ() {
    let mut a = XorShift::from_entropy();
    let mut b = XorShift::from_entropy();
    assert_ne!((a.next_u64(), a.next_u64()), (b.next_u64(), b.next_u64()));
    // Seed 0 does not get stuck at 0.
    assert_ne!(XorShift::new(0).next_u64(), 0);
}
