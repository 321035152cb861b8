//! The test DNS server, queried by a small client written here: answers
//! are decoded from the wire, independently of the server's encoder.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rsmtpd_test_support::dns::{
    self, A, AAAA, CNAME, DnsServer, Failure, MX, NOERROR, NXDOMAIN, REFUSED, SERVFAIL, TXT, Zone,
};

#[derive(Debug, PartialEq, Eq, Clone)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(u16, String),
    Cname(String),
    Txt(Vec<u8>),
    Other(u16, Vec<u8>),
}

#[derive(Debug)]
struct Reply {
    id: u16,
    qr: bool,
    aa: bool,
    tc: bool,
    rd: bool,
    rcode: u8,
    qdcount: u16,
    question: Option<(String, u16, u16)>,
    answers: Vec<(String, u16, u32, Data)>,
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![];
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

fn u16_at(m: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([m[at], m[at + 1]])
}

/// Reads a possibly compressed name; returns it (original case, no
/// trailing dot) and the offset after it.
fn read_name(m: &[u8], mut at: usize) -> (String, usize) {
    let mut labels = vec![];
    let mut end = None;
    for _ in 0..64 {
        let len = m[at];
        if len & 0xC0 == 0xC0 {
            end.get_or_insert(at + 2);
            at = usize::from(u16_at(m, at) & 0x3FFF);
            continue;
        }
        if len == 0 {
            end.get_or_insert(at + 1);
            break;
        }
        labels.push(String::from_utf8_lossy(&m[at + 1..at + 1 + len as usize]).into_owned());
        at += 1 + len as usize;
    }
    (labels.join("."), end.expect("name ends"))
}

fn decode(m: &[u8]) -> Reply {
    assert!(m.len() >= 12, "short reply {m:?}");
    let flags = u16_at(m, 2);
    let qdcount = u16_at(m, 4);
    let ancount = u16_at(m, 6);
    assert_eq!((u16_at(m, 8), u16_at(m, 10)), (0, 0));
    let mut at = 12;
    let mut question = None;
    if qdcount == 1 {
        let (name, next) = read_name(m, at);
        question = Some((name, u16_at(m, next), u16_at(m, next + 2)));
        at = next + 4;
    }
    let mut answers = vec![];
    for _ in 0..ancount {
        let (owner, next) = read_name(m, at);
        let rtype = u16_at(m, next);
        assert_eq!(u16_at(m, next + 2), 1, "class IN");
        let ttl = u32::from_be_bytes([m[next + 4], m[next + 5], m[next + 6], m[next + 7]]);
        let rdlen = usize::from(u16_at(m, next + 8));
        let rd = next + 10;
        let rdata = &m[rd..rd + rdlen];
        let data = match rtype {
            A => Data::A(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            AAAA => Data::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).expect("16"))),
            MX => {
                let (ex, end) = read_name(m, rd + 2);
                assert_eq!(end, rd + rdlen, "MX rdata length");
                Data::Mx(u16_at(m, rd), ex)
            }
            CNAME => Data::Cname(read_name(m, rd).0),
            TXT => Data::Txt(rdata.to_vec()),
            t => Data::Other(t, rdata.to_vec()),
        };
        answers.push((owner, rtype, ttl, data));
        at = rd + rdlen;
    }
    assert_eq!(at, m.len(), "no trailing bytes");
    Reply {
        id: u16_at(m, 0),
        qr: flags & 0x8000 != 0,
        aa: flags & 0x0400 != 0,
        tc: flags & 0x0200 != 0,
        rd: flags & 0x0100 != 0,
        rcode: (flags & 0xf) as u8,
        qdcount,
        question,
        answers,
    }
}

fn udp_raw(server: SocketAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(wait)).expect("timeout");
    sock.send_to(msg, server).expect("send");
    let mut buf = [0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn ask(server: &DnsServer, name: &str, qtype: u16) -> Reply {
    let q = query(0x1234, name, qtype);
    let raw = udp_raw(server.addr(), &q, Duration::from_secs(5)).expect("an answer");
    let r = decode(&raw);
    assert_eq!(r.id, 0x1234);
    assert!(r.qr && r.aa && r.rd);
    assert_eq!(r.qdcount, 1);
    assert_eq!(
        r.question,
        Some((name.to_string(), qtype, 1)),
        "question echoed"
    );
    r
}

fn ask_tcp(server: &DnsServer, name: &str, qtype: u16) -> Reply {
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let q = query(7, name, qtype);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("length");
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).expect("message");
    decode(&msg)
}

fn zone() -> Zone {
    Zone::new()
        .mx("example.test", 10, "mx1.example.test")
        .mx("example.test", 20, "mx2.example.test.")
        .a("mx1.example.test", [127, 0, 0, 3])
        .a("mx2.example.test", [127, 0, 0, 4])
        .aaaa("mx1.example.test", Ipv6Addr::LOCALHOST)
        .null_mx("nomail.test")
        .a("deep.sub.only-a.test", [127, 0, 0, 9])
        .cname("alias.example.test", "mx1.example.test")
        .empty("hollow.test")
        .txt("example.test", "v=spf1 -all")
}

#[test]
fn mx_answer_in_order_with_names_decoded() {
    let server = DnsServer::start(zone());
    let r = ask(&server, "example.test", MX);
    assert_eq!(r.rcode, NOERROR);
    assert!(!r.tc);
    let got: Vec<_> = r
        .answers
        .iter()
        .map(|a| (&a.0[..], a.1, a.2, &a.3))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "example.test",
                MX,
                300,
                &Data::Mx(10, "mx1.example.test".into())
            ),
            (
                "example.test",
                MX,
                300,
                &Data::Mx(20, "mx2.example.test".into())
            ),
        ]
    );
    assert_eq!(server.query_count("example.test", MX), 1);
    assert_eq!(server.query_count("EXAMPLE.test.", MX), 1);
    assert_eq!(server.query_count("example.test", A), 0);
}

#[test]
fn a_and_aaaa() {
    let server = DnsServer::start(zone());
    let r = ask(&server, "mx1.example.test", A);
    assert_eq!(r.rcode, NOERROR);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].3, Data::A(Ipv4Addr::new(127, 0, 0, 3)));
    let r = ask(&server, "mx1.example.test", AAAA);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].3, Data::Aaaa(Ipv6Addr::LOCALHOST));
    let r = ask(&server, "example.test", TXT);
    assert_eq!(r.answers[0].3, Data::Txt(b"\x0bv=spf1 -all".to_vec()));
}

#[test]
fn names_are_case_insensitive_and_the_question_keeps_its_case() {
    let server = DnsServer::start(zone());
    let r = ask(&server, "Mx1.ExAmple.TEST", A);
    assert_eq!(r.rcode, NOERROR);
    // The answer's owner points at the question: same case as asked.
    assert_eq!(r.answers[0].0, "Mx1.ExAmple.TEST");
    assert_eq!(r.answers[0].3, Data::A(Ipv4Addr::new(127, 0, 0, 3)));
    assert_eq!(server.query_count("mx1.example.test", A), 1);
}

#[test]
fn nxdomain_and_nodata() {
    let server = DnsServer::start(zone());
    let r = ask(&server, "nowhere.test", MX);
    assert_eq!((r.rcode, r.answers.len()), (NXDOMAIN, 0));
    // The name has an A record only: NODATA for MX and AAAA.
    let r = ask(&server, "mx2.example.test", MX);
    assert_eq!((r.rcode, r.answers.len()), (NOERROR, 0));
    let r = ask(&server, "mx2.example.test", AAAA);
    assert_eq!((r.rcode, r.answers.len()), (NOERROR, 0));
    // An empty non-terminal exists; an explicitly empty name too.
    let r = ask(&server, "sub.only-a.test", A);
    assert_eq!((r.rcode, r.answers.len()), (NOERROR, 0));
    let r = ask(&server, "hollow.test", MX);
    assert_eq!((r.rcode, r.answers.len()), (NOERROR, 0));
    // A name sharing only a suffix string is not an ancestor.
    let r = ask(&server, "ample.test", MX);
    assert_eq!(r.rcode, NXDOMAIN);
}

#[test]
fn null_mx_is_preference_zero_and_the_root() {
    let server = DnsServer::start(zone());
    let q = query(9, "nomail.test", MX);
    let raw = udp_raw(server.addr(), &q, Duration::from_secs(5)).expect("answer");
    let r = decode(&raw);
    assert_eq!(r.rcode, NOERROR);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].3, Data::Mx(0, String::new()));
    // The exact RDATA: preference 0, then the root (one zero byte).
    assert!(raw.ends_with(&[0, 3, 0, 0, 0]), "{raw:?}");
}

#[test]
fn cname_is_chased_inside_the_zone() {
    let server = DnsServer::start(zone().cname("dangling.test", "nowhere.test"));
    let r = ask(&server, "alias.example.test", A);
    assert_eq!(r.rcode, NOERROR);
    let data: Vec<_> = r
        .answers
        .iter()
        .map(|a| (a.0.clone(), a.3.clone()))
        .collect();
    assert_eq!(
        data,
        vec![
            (
                "alias.example.test".into(),
                Data::Cname("mx1.example.test".into())
            ),
            (
                "mx1.example.test".into(),
                Data::A(Ipv4Addr::new(127, 0, 0, 3))
            ),
        ]
    );
    let r = ask(&server, "alias.example.test", CNAME);
    assert_eq!(r.answers.len(), 1);
    let r = ask(&server, "dangling.test", A);
    assert_eq!((r.rcode, r.answers.len()), (NXDOMAIN, 1));
    let looped = DnsServer::start(
        Zone::new()
            .cname("a.test", "b.test")
            .cname("b.test", "a.test"),
    );
    assert_eq!(ask(&looped, "a.test", A).rcode, SERVFAIL);
}

#[test]
fn servfail_refused_and_silence() {
    let z = zone()
        .servfail("broken.test")
        .fail("closed.test", Failure::Refused)
        .timeout("slow.test")
        .fail_type("example.test", AAAA, Failure::ServFail);
    let server = DnsServer::start(z);
    let r = ask(&server, "broken.test", MX);
    assert_eq!((r.rcode, r.answers.len()), (SERVFAIL, 0));
    assert_eq!(ask(&server, "closed.test", A).rcode, REFUSED);
    assert_eq!(ask(&server, "example.test", AAAA).rcode, SERVFAIL);
    assert_eq!(ask(&server, "example.test", MX).rcode, NOERROR);
    let q = query(1, "slow.test", MX);
    assert_eq!(udp_raw(server.addr(), &q, Duration::from_millis(300)), None);
    assert_eq!(server.query_count("slow.test", MX), 1);
    // The zone can be changed while running.
    server.set_zone(zone().mx("slow.test", 5, "mx1.example.test"));
    let r = ask(&server, "slow.test", MX);
    assert_eq!(r.answers[0].3, Data::Mx(5, "mx1.example.test".into()));
    assert_eq!(server.query_count("slow.test", MX), 2);
}

#[test]
fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let mut z = Zone::new();
    for i in 0..40u8 {
        z = z.mx(
            "many.test",
            u16::from(i),
            &format!("mx{i}.a-rather-long-name.many.test"),
        );
    }
    let server = DnsServer::start(z);
    let r = ask(&server, "many.test", MX);
    assert!(r.tc);
    assert!(r.answers.is_empty());
    let r = ask_tcp(&server, "many.test", MX);
    assert!(!r.tc);
    assert_eq!(r.answers.len(), 40);
    assert_eq!(
        r.answers[39].3,
        Data::Mx(39, "mx39.a-rather-long-name.many.test".into())
    );
    let r = ask_tcp(&server, "nomail.test", MX);
    assert_eq!(r.rcode, NXDOMAIN);
    assert_eq!(server.query_count("many.test", MX), 2);
}

#[test]
fn bad_queries_are_refused_or_ignored_and_the_server_survives() {
    let server = DnsServer::start(zone());
    let wait = Duration::from_millis(200);
    // Too short, and a response (QR set): no reply.
    assert_eq!(udp_raw(server.addr(), &[1, 2, 3], wait), None);
    let mut response = query(5, "example.test", MX);
    response[2] |= 0x80;
    assert_eq!(udp_raw(server.addr(), &response, wait), None);
    let rcode_of = |msg: &[u8]| {
        let raw = udp_raw(server.addr(), msg, Duration::from_secs(5)).expect("an answer");
        let r = decode(&raw);
        assert_eq!(r.id, u16_at(msg, 0));
        assert!(r.answers.is_empty());
        r.rcode
    };
    // Two questions.
    let mut two = query(6, "example.test", MX);
    two[5] = 2;
    assert_eq!(rcode_of(&two), dns::FORMERR);
    // An opcode other than QUERY (STATUS).
    let mut status = query(7, "example.test", MX);
    status[2] |= 2 << 3;
    assert_eq!(rcode_of(&status), dns::NOTIMP);
    // Class CH.
    let mut chaos = query(8, "example.test", MX);
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert_eq!(rcode_of(&chaos), REFUSED);
    // A compression pointer in the question, a truncated question, a label
    // longer than 63.
    let mut pointer = query(9, "x", MX);
    pointer.splice(12..15, [0xC0, 0x0C]);
    assert_eq!(rcode_of(&pointer), dns::FORMERR);
    let short = query(10, "example.test", MX);
    assert_eq!(rcode_of(&short[..short.len() - 3]), dns::FORMERR);
    let mut long = query(11, "x", MX);
    long[12] = 64;
    assert_eq!(rcode_of(&long), dns::FORMERR);
    // Garbage from a fixed pseudo-random sequence.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut seed: u32 = 0x2545_F491;
    for i in 0..2000usize {
        let mut msg = vec![0u8; i % 300];
        for b in msg.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        if msg.len() >= 12 && i % 2 == 0 {
            // Plausible headers: one question, no other records.
            msg[2] &= 0x7f;
            msg[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        }
        sock.send_to(&msg, server.addr()).expect("send");
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Over TCP too: a length prefix announcing more than is sent, then a
    // close.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.write_all(&[0xff, 0xff, 1, 2, 3]).expect("write");
    drop(s);
    // The garbage may have filled the server's receive buffer, dropping a
    // query sent right after it: retry as a resolver would.
    let q = query(0x4321, "example.test", MX);
    let raw = (0..5)
        .find_map(|_| udp_raw(server.addr(), &q, Duration::from_secs(1)))
        .expect("the server still answers");
    let r = decode(&raw);
    assert_eq!((r.id, r.answers.len()), (0x4321, 2));
}

#[test]
fn tcp_serves_several_queries_on_one_connection() {
    let server = DnsServer::start(zone());
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut both = vec![];
    for (id, name) in [(1u16, "mx1.example.test"), (2, "mx2.example.test")] {
        let q = query(id, name, A);
        both.extend_from_slice(&(q.len() as u16).to_be_bytes());
        both.extend_from_slice(&q);
    }
    s.write_all(&both).expect("write");
    for want in [Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)] {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("length");
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg).expect("message");
        assert_eq!(decode(&msg).answers[0].3, Data::A(want));
    }
}

#[test]
fn query_log_and_reset() {
    let server = DnsServer::start(zone());
    ask(&server, "example.test", MX);
    ask(&server, "mx1.example.test", A);
    ask(&server, "mx1.example.test", AAAA);
    assert_eq!(
        server.queries(),
        vec![
            ("example.test".to_string(), MX),
            ("mx1.example.test".to_string(), A),
            ("mx1.example.test".to_string(), AAAA),
        ]
    );
    server.reset_queries();
    assert!(server.queries().is_empty());
}

#[test]
fn stops_quickly_on_drop_even_with_a_client_connected() {
    let server = DnsServer::start(zone());
    let addr = server.addr();
    let _idle = TcpStream::connect(addr).expect("connect");
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        udp_raw(
            addr,
            &query(1, "example.test", MX),
            Duration::from_millis(200)
        ),
        None
    );
}

#[test]
#[should_panic(expected = "not an encodable domain name")]
fn zone_refuses_unencodable_names() {
    let _ = Zone::new().a(&"x".repeat(64), [127, 0, 0, 1]);
}
