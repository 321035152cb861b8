//! Resolution end to end against the test DNS server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rsmtpd_config::check::parse_relay_url;
use rsmtpd_config::model::{RelayDispatcher, Route};
use rsmtpd_mta::resolve::{ENV_MX_PORT, ENV_RESOLVER};
use rsmtpd_mta::{
    KnobError, Knobs, MxAnswer, MxRecord, Plan, Resolver, RouteError, XorShift, plan,
};
use rsmtpd_test_support::dns::{self, DnsServer, Zone};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn resolver(server: &DnsServer) -> Resolver {
    Resolver::with_nameserver(server.addr())
        .unwrap()
        .with_timeout(Duration::from_secs(3))
}

fn mx_plan(domain: &str, port: u16) -> Plan {
    plan(&RelayDispatcher::default(), domain, port, |_| None).unwrap()
}

async fn route(
    r: &Resolver,
    domain: &str,
    own: &[&str],
) -> Result<Vec<(String, Vec<IpAddr>)>, RouteError> {
    let own: Vec<String> = own.iter().map(|s| s.to_string()).collect();
    let hops = r
        .route(&mx_plan(domain, 2525), &own, &mut XorShift::new(42))
        .await?;
    for h in &hops {
        assert_eq!(h.target.port, 2525);
        assert!(!h.addrs.is_empty());
    }
    Ok(hops.into_iter().map(|h| (h.target.host, h.addrs)).collect())
}

#[tokio::test]
async fn mx_with_several_hosts_and_addresses() {
    let server = DnsServer::start(
        Zone::new()
            .mx("example.org", 20, "mx2.example.org")
            .mx("example.org", 10, "mx1.example.org")
            .a("mx1.example.org", v4("192.0.2.1"))
            .a("mx1.example.org", v4("192.0.2.2"))
            .aaaa("mx1.example.org", v6("2001:db8::1"))
            .aaaa("mx2.example.org", v6("2001:db8::2"))
            // mx3's name does not exist: skipped, the others still used.
            .mx("example.org", 30, "mx3.example.org")
            .a("unrelated.example.org", v4("192.0.2.99")),
    );
    let r = resolver(&server);
    assert_eq!(
        r.mx("Example.ORG.").await.unwrap(),
        MxAnswer::Records(vec![
            MxRecord {
                preference: 20,
                exchange: "mx2.example.org".into()
            },
            MxRecord {
                preference: 10,
                exchange: "mx1.example.org".into()
            },
            MxRecord {
                preference: 30,
                exchange: "mx3.example.org".into()
            },
        ])
    );
    let hops = route(&r, "example.org", &[]).await.unwrap();
    assert_eq!(
        hops,
        [
            (
                "mx1.example.org".to_string(),
                vec![ip("2001:db8::1"), ip("192.0.2.1"), ip("192.0.2.2")]
            ),
            ("mx2.example.org".to_string(), vec![ip("2001:db8::2")]),
        ]
    );
}

#[tokio::test]
async fn backup_and_loop_through_dns() {
    let server = DnsServer::start(
        Zone::new()
            .mx("example.org", 10, "mx1.example.org")
            .mx("example.org", 20, "me.example.net")
            .a("mx1.example.org", v4("192.0.2.1"))
            .a("me.example.net", v4("192.0.2.50"))
            .mx("mine.example.org", 10, "me.example.net")
            .mx("mine.example.org", 20, "other.example.org"),
    );
    let r = resolver(&server);
    let hops = route(&r, "example.org", &["me.example.net"]).await.unwrap();
    assert_eq!(
        hops,
        [("mx1.example.org".to_string(), vec![ip("192.0.2.1")])]
    );
    let e = route(&r, "mine.example.org", &["me.example.net"])
        .await
        .unwrap_err();
    assert!(matches!(e, RouteError::LoopsToMyself { .. }), "{e:?}");
}

#[tokio::test]
async fn nxdomain_is_permanent() {
    let server = DnsServer::start(Zone::new().a("exists.example.org", v4("192.0.2.1")));
    let r = resolver(&server);
    let e = r.mx("nope.example.org").await.unwrap_err();
    assert_eq!(
        e,
        RouteError::NoSuchDomain {
            domain: "nope.example.org".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), "5.1.2");
    let e = route(&r, "nope.example.org", &[]).await.unwrap_err();
    assert!(matches!(e, RouteError::NoSuchDomain { .. }), "{e:?}");
}

#[tokio::test]
async fn nodata_for_mx_is_the_implicit_mx() {
    let server = DnsServer::start(
        Zone::new()
            .a("example.org", v4("192.0.2.10"))
            .aaaa("example.org", v6("2001:db8::10"))
            .empty("nothing.example.org"),
    );
    let r = resolver(&server);
    assert_eq!(r.mx("example.org").await.unwrap(), MxAnswer::NoData);
    let hops = route(&r, "example.org", &[]).await.unwrap();
    assert_eq!(
        hops,
        [(
            "example.org".to_string(),
            vec![ip("2001:db8::10"), ip("192.0.2.10")]
        )]
    );
    // Exists, but neither MX nor address: nowhere to go, permanently.
    let e = route(&r, "nothing.example.org", &[]).await.unwrap_err();
    assert!(matches!(e, RouteError::NoAddress { .. }), "{e:?}");
    assert!(e.is_permanent());
}

#[tokio::test]
async fn null_mx_through_dns() {
    let server = DnsServer::start(Zone::new().null_mx("nomail.example.org"));
    let r = resolver(&server);
    let e = route(&r, "nomail.example.org", &[]).await.unwrap_err();
    assert_eq!(e.status(), "5.1.10");
}

#[tokio::test]
async fn servfail_is_temporary() {
    let server = DnsServer::start(
        Zone::new()
            .servfail("broken.example.org")
            .mx("example.org", 10, "mx.broken.example.org")
            .fail_type("mx.broken.example.org", dns::A, dns::Failure::ServFail)
            .fail_type("mx.broken.example.org", dns::AAAA, dns::Failure::ServFail),
    );
    let r = resolver(&server);
    let e = r.mx("broken.example.org").await.unwrap_err();
    assert!(matches!(e, RouteError::DnsTemporary { .. }), "{e:?}");
    assert!(!e.is_permanent());
    assert_eq!(e.status(), "4.4.3");
    // The MX answers, its host's addresses do not.
    let e = route(&r, "example.org", &[]).await.unwrap_err();
    assert!(matches!(e, RouteError::DnsTemporary { .. }), "{e:?}");
}

#[tokio::test]
async fn one_family_failing_is_ignored_when_the_other_answers() {
    let server = DnsServer::start(
        Zone::new()
            .a("half.example.org", v4("192.0.2.3"))
            .fail_type("half.example.org", dns::AAAA, dns::Failure::ServFail),
    );
    let r = resolver(&server);
    assert_eq!(
        r.addresses("half.example.org").await.unwrap(),
        [ip("192.0.2.3")]
    );
}

#[tokio::test]
async fn a_timeout_is_temporary_within_the_bound() {
    let server = DnsServer::start(Zone::new().timeout("slow.example.org"));
    let r = Resolver::with_nameserver(server.addr())
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let e = r.mx("slow.example.org").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, RouteError::DnsTemporary { .. }), "{e:?}");
    assert!(!e.is_permanent());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let started = Instant::now();
    let e = route(&r, "slow.example.org", &[]).await.unwrap_err();
    assert!(matches!(e, RouteError::DnsTemporary { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn smarthost_by_name_and_by_literal() {
    let server = DnsServer::start(
        Zone::new()
            .aaaa("relay.example.net", v6("::1"))
            .a("relay.example.net", v4("127.0.0.1")),
    );
    let r = resolver(&server);
    for (url, want) in [
        (
            "smtp://bob@relay.example.net:2526",
            vec![ip("::1"), ip("127.0.0.1")],
        ),
        ("smtp+notls://127.0.0.1:2526", vec![ip("127.0.0.1")]),
        ("smtps://[::1]:2526", vec![ip("::1")]),
    ] {
        let d = RelayDispatcher {
            route: Route::Host(parse_relay_url(url).unwrap()),
            ..RelayDispatcher::default()
        };
        let p = plan(&d, "example.org", 25, |_| None).unwrap();
        let hops = r.route(&p, &[], &mut XorShift::new(1)).await.unwrap();
        assert_eq!(hops.len(), 1, "{url}");
        assert_eq!(hops[0].addrs, want, "{url}");
        assert_eq!(hops[0].target.port, 2526);
    }
    // No MX query was made for a smarthost.
    assert_eq!(server.query_count("example.org", dns::MX), 0);
}

#[tokio::test]
async fn resolver_over_ipv6_loopback() {
    let server = DnsServer::start_on(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        Zone::new()
            .mx("example.org", 10, "mx.example.org")
            .a("mx.example.org", v4("192.0.2.1")),
    );
    let r = resolver(&server);
    let hops = route(&r, "example.org", &[]).await.unwrap();
    assert_eq!(
        hops,
        [("mx.example.org".to_string(), vec![ip("192.0.2.1")])]
    );
}

#[test]
fn knobs_from_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(Knobs::from_vars(vars(&[])).unwrap(), Knobs::default());
    assert_eq!(Knobs::default().mx_port(), 25);
    let k = Knobs::from_vars(vars(&[
        (ENV_RESOLVER, "127.0.0.1:5353"),
        (ENV_MX_PORT, "2525"),
    ]))
    .unwrap();
    assert_eq!(
        k.resolver,
        Some("127.0.0.1:5353".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(k.mx_port(), 2525);
    let k = Knobs::from_vars(vars(&[(ENV_RESOLVER, "[::1]:53"), (ENV_MX_PORT, "")])).unwrap();
    assert_eq!(k.resolver, Some("[::1]:53".parse::<SocketAddr>().unwrap()));
    assert_eq!(k.mx_port, None);
    assert_eq!(
        Knobs::from_vars(vars(&[(ENV_RESOLVER, "127.0.0.1")])),
        Err(KnobError::Resolver("127.0.0.1".into()))
    );
    for bad in ["0", "65536", "x", "-1"] {
        let pairs: &'static [(&'static str, &'static str)] = match bad {
            "0" => &[(ENV_MX_PORT, "0")],
            "65536" => &[(ENV_MX_PORT, "65536")],
            "x" => &[(ENV_MX_PORT, "x")],
            _ => &[(ENV_MX_PORT, "-1")],
        };
        assert_eq!(
            Knobs::from_vars(vars(pairs)),
            Err(KnobError::MxPort(bad.into()))
        );
    }
}

#[tokio::test]
async fn resolver_from_knobs_uses_the_given_nameserver() {
    let server = DnsServer::start(Zone::new().mx("example.org", 10, "mx.example.org"));
    let knobs = Knobs {
        resolver: Some(server.addr()),
        mx_port: Some(2525),
    };
    let r = Resolver::from_knobs(&knobs).unwrap();
    assert!(matches!(r.mx("example.org").await.unwrap(), MxAnswer::Records(v) if v.len() == 1));
    assert_eq!(server.query_count("example.org", dns::MX), 1);
}

#[tokio::test]
async fn the_test_resolver_sees_zone_changes() {
    let server = DnsServer::start(Zone::new().a("other.example.net", v4("192.0.2.1")));
    let r = resolver(&server);
    assert!(matches!(
        r.mx("example.org").await,
        Err(RouteError::NoSuchDomain { .. })
    ));
    server.set_zone(Zone::new().mx("example.org", 10, "mx.example.org"));
    assert!(matches!(r.mx("example.org").await, Ok(MxAnswer::Records(v)) if v.len() == 1));
    server.set_zone(Zone::new().servfail("example.org"));
    assert!(matches!(
        r.mx("example.org").await,
        Err(RouteError::DnsTemporary { .. })
    ));
}

#[tokio::test]
async fn an_unknown_smarthost_is_temporary() {
    let server = DnsServer::start(Zone::new().a("other.example.net", v4("192.0.2.1")));
    let r = resolver(&server);
    let d = RelayDispatcher {
        route: Route::Host(parse_relay_url("smtp://typo.example.net").unwrap()),
        ..RelayDispatcher::default()
    };
    let p = plan(&d, "example.org", 25, |_| None).unwrap();
    let e = r.route(&p, &[], &mut XorShift::new(1)).await.unwrap_err();
    assert_eq!(
        e,
        RouteError::RelayHostUnknown {
            host: "typo.example.net".into()
        }
    );
    assert!(!e.is_permanent());
}
