//! The SMTP sink's behaviours, each observed by a raw TcpStream client
//! with exact bytes in both directions.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rsmtpd_test_support::sink::{
    Action, Behaviour, Conns, Dir, Malformed, Rule, Sink, Stage, reply, unstuff,
};

const WAIT: Duration = Duration::from_secs(5);

struct Client {
    s: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        Client { s }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    /// Reads exactly `want.len()` bytes and compares.
    fn expect(&mut self, want: &[u8]) {
        let mut got = vec![0u8; want.len()];
        if let Err(e) = self.s.read_exact(&mut got) {
            panic!("reading {:?}: {e}", want.escape_ascii().to_string());
        }
        assert_eq!(
            got.escape_ascii().to_string(),
            want.escape_ascii().to_string()
        );
    }

    /// The sink closes: EOF (or a reset) with nothing more sent.
    fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        match self.s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("more bytes: {:?}", buf[..n].escape_ascii().to_string()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("no EOF: {e}"),
        }
    }

    fn send_expect(&mut self, cmd: &[u8], want: &[u8]) {
        self.send(cmd);
        self.expect(want);
    }

    /// Banner and EHLO with the default behaviour's answers.
    fn hello(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        c.expect(b"220 sink.test ESMTP sink\r\n");
        c.send_expect(b"EHLO client.test\r\n", DEFAULT_EHLO);
        c
    }
}

const DEFAULT_EHLO: &[u8] = b"250-sink.test Hello client.test\r\n250-PIPELINING\r\n\
250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";

#[test]
fn accepts_a_message_and_records_everything_exactly() {
    let sink = Sink::start(Behaviour::accept());
    let mut c = Client::hello(sink.addr());
    c.send_expect(
        b"MAIL FROM:<a@example.test> BODY=8BITMIME SIZE=40\r\n",
        b"250 2.1.0 Ok\r\n",
    );
    c.send_expect(b"RCPT TO:<b@dest.test>\r\n", b"250 2.1.5 Ok\r\n");
    c.send_expect(
        b"RCPT TO:<C@Dest.test> NOTIFY=NEVER\r\n",
        b"250 2.1.5 Ok\r\n",
    );
    c.send_expect(b"DATA\r\n", b"354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Subject: hi\r\n\r\n..dot\r\n.\r\n");
    c.expect(b"250 2.0.0 Ok: queued\r\n");
    c.send_expect(b"QUIT\r\n", b"221 2.0.0 Bye\r\n");
    c.expect_eof();

    let msgs = sink.wait_for_messages(1, WAIT);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(
        (m.connection, m.ehlo, &m.helo[..]),
        (0, true, "client.test")
    );
    assert_eq!(m.mail_from, "a@example.test");
    assert_eq!(m.mail_params, vec!["BODY=8BITMIME", "SIZE=40"]);
    assert_eq!(m.rcpts, vec!["b@dest.test", "C@Dest.test"]);
    assert_eq!(
        m.rcpt_params,
        vec![vec![], vec!["NOTIFY=NEVER".to_string()]]
    );
    assert_eq!(m.data, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(m.raw, b"Subject: hi\r\n\r\n..dot\r\n");
    assert_eq!(m.reply, b"250 2.0.0 Ok: queued\r\n");
    assert!(m.accepted);

    assert!(sink.wait_closed(0, WAIT));
    assert_eq!(sink.connections(), 1);
    let t = sink.transcript(0);
    assert_eq!(
        t.received(),
        b"EHLO client.test\r\nMAIL FROM:<a@example.test> BODY=8BITMIME SIZE=40\r\n\
RCPT TO:<b@dest.test>\r\nRCPT TO:<C@Dest.test> NOTIFY=NEVER\r\nDATA\r\n\
Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n"
    );
    let mut sent = b"220 sink.test ESMTP sink\r\n".to_vec();
    sent.extend_from_slice(DEFAULT_EHLO);
    sent.extend_from_slice(
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n",
    );
    assert_eq!(t.sent(), sent);
    assert_eq!(
        t.events[0],
        (Dir::Server, b"220 sink.test ESMTP sink\r\n".to_vec())
    );
    assert_eq!(t.events[1], (Dir::Client, b"EHLO client.test\r\n".to_vec()));
    assert!(
        t.text()
            .starts_with("S: 220 sink.test ESMTP sink\\r\\n\nC: EHLO")
    );
}

#[test]
fn several_messages_rset_helo_and_pipelined_commands() {
    let sink = Sink::start(Behaviour::accept());
    let mut c = Client::connect(sink.addr());
    c.expect(b"220 sink.test ESMTP sink\r\n");
    c.send_expect(b"HELO old.test\r\n", b"250 sink.test\r\n");
    // MAIL, RCPT and DATA in one write; then the data and the next
    // transaction's MAIL in one write.
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
    c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b".\r\nMAIL FROM:<p@q>\r\nRSET\r\nMAIL FROM:<r@s>\r\nRCPT TO:<t@u>\r\nDATA\r\n");
    c.expect(
        b"250 2.0.0 Ok: queued\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n\
250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    );
    c.send_expect(b"body\r\n.\r\n", b"250 2.0.0 Ok: queued\r\n");
    let msgs = sink.wait_for_messages(2, WAIT);
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].ehlo, &msgs[0].helo[..]), (false, "old.test"));
    assert_eq!(msgs[0].mail_from, "");
    assert_eq!(msgs[0].data, b"");
    assert_eq!(msgs[1].mail_from, "r@s");
    assert_eq!(msgs[1].rcpts, vec!["t@u"]);
    assert_eq!(msgs[1].data, b"body\r\n");
}

#[test]
fn sequence_errors_and_syntax() {
    let sink = Sink::start(Behaviour::accept());
    let mut c = Client::connect(sink.addr());
    c.expect(b"220 sink.test ESMTP sink\r\n");
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"503 5.5.1 EHLO or HELO first\r\n");
    c.send_expect(b"EHLO\r\n", b"501 5.5.4 Syntax: EHLO hostname\r\n");
    c.send_expect(
        b"EHLO c\r\n",
        b"250-sink.test Hello c\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
    );
    c.send_expect(b"RCPT TO:<a@b>\r\n", b"503 5.5.1 MAIL first\r\n");
    c.send_expect(b"DATA\r\n", b"503 5.5.1 MAIL first\r\n");
    c.send_expect(
        b"MAIL FROM: <a@b>\r\n",
        b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
    );
    c.send_expect(
        b"MAIL FROM:a@b\r\n",
        b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
    );
    c.send_expect(b"mail from:<a@b>\r\n", b"250 2.1.0 Ok\r\n");
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"503 5.5.1 Nested MAIL command\r\n");
    c.send_expect(
        b"RCPT TO:<a@b>x\r\n",
        b"501 5.5.4 Syntax: RCPT TO:<address>\r\n",
    );
    c.send_expect(b"DATA\r\n", b"554 5.5.1 No valid recipients\r\n");
    c.send_expect(b"STARTTLS\r\n", b"454 4.7.0 TLS not available\r\n");
    c.send_expect(b"VRFY x\r\n", b"252 2.5.0 Cannot VRFY user\r\n");
    c.send_expect(b"BDAT 10 LAST\r\n", b"500 5.5.1 Command unrecognized\r\n");
    c.send_expect(b"NOOP\r\n", b"250 2.0.0 Ok\r\n");
    // An overlong command line, with and without its end in the same read.
    let mut long = vec![b'N'; 10_000];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    c.send_expect(&long, b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
    let mut long = b"NOOP ".to_vec();
    long.extend_from_slice(&[b'x'; 4093]);
    long.extend_from_slice(b"\r\n");
    c.send_expect(&long, b"500 5.5.2 Line too long\r\n");
    c.send_expect(b"QUIT\r\n", b"221 2.0.0 Bye\r\n");
    c.expect_eof();
}

#[test]
fn greeting_4xx_closes_5xx_refuses_everything_but_quit() {
    let sink = Sink::start(Behaviour::accept().greet_on(Conns::Only(0), "421 4.3.2 busy"));
    let mut c = Client::connect(sink.addr());
    c.expect(b"421 4.3.2 busy\r\n");
    c.expect_eof();
    // The second connection is greeted normally.
    let _c = Client::hello(sink.addr());

    let sink = Sink::start(Behaviour::accept().greet("554 5.3.2 go away"));
    let mut c = Client::connect(sink.addr());
    c.expect(b"554 5.3.2 go away\r\n");
    c.send_expect(b"EHLO x\r\n", b"503 5.5.1 No service\r\n");
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"503 5.5.1 No service\r\n");
    c.send_expect(b"QUIT\r\n", b"221 2.0.0 Bye\r\n");
    c.expect_eof();
}

#[test]
fn mail_tempfail_for_the_first_k_connections() {
    let sink = Sink::start(Behaviour::accept().mail_tempfail_first(2));
    for want in [
        &b"451 4.3.0 Try again later\r\n"[..],
        b"451 4.3.0 Try again later\r\n",
        b"250 2.1.0 Ok\r\n",
        b"250 2.1.0 Ok\r\n",
    ] {
        let mut c = Client::hello(sink.addr());
        c.send_expect(b"MAIL FROM:<a@b>\r\n", want);
        c.send_expect(b"QUIT\r\n", b"221 2.0.0 Bye\r\n");
    }
    assert_eq!(sink.wait_for_connections(4, WAIT), 4);
    // A refused MAIL leaves no transaction.
    let sink = Sink::start(Behaviour::accept().mail_tempfail_first(1));
    let mut c = Client::hello(sink.addr());
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"451 4.3.0 Try again later\r\n");
    c.send_expect(b"RCPT TO:<c@d>\r\n", b"503 5.5.1 MAIL first\r\n");
}

#[test]
fn chosen_recipients_refused() {
    let sink = Sink::start(
        Behaviour::accept()
            .refuse_rcpt("nobody@dest.test")
            .tempfail_rcpt("busy@dest.test")
            .rcpt_reply("full@dest.test", "552 5.2.2 Mailbox full"),
    );
    let mut c = Client::hello(sink.addr());
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"250 2.1.0 Ok\r\n");
    c.send(
        b"RCPT TO:<NoBody@dest.test>\r\nRCPT TO:<busy@dest.test>\r\nRCPT TO:<ok@dest.test>\r\n\
RCPT TO:<full@dest.test>\r\nDATA\r\n",
    );
    c.expect(
        b"550 5.1.1 No such user\r\n450 4.2.1 Mailbox busy\r\n250 2.1.5 Ok\r\n\
552 5.2.2 Mailbox full\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    );
    c.send_expect(b"x\r\n.\r\n", b"250 2.0.0 Ok: queued\r\n");
    let msgs = sink.wait_for_messages(1, WAIT);
    assert_eq!(msgs[0].rcpts, vec!["ok@dest.test"]);
}

#[test]
fn reply_after_the_final_dot() {
    let sink = Sink::start(
        Behaviour::accept()
            .dot_reply_on(Conns::First(1), "451 4.3.0 queue full")
            .dot_reply_on(Conns::Only(1), "554 5.6.0 rejected"),
    );
    let dialogue = |want: &[u8]| {
        let mut c = Client::hello(sink.addr());
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
        c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
        c.send_expect(b"hello\r\n.\r\n", want);
    };
    dialogue(b"451 4.3.0 queue full\r\n");
    dialogue(b"554 5.6.0 rejected\r\n");
    dialogue(b"250 2.0.0 Ok: queued\r\n");
    let all = sink.wait_for_transactions(3, WAIT);
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter().map(|m| m.accepted).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(all[0].reply, b"451 4.3.0 queue full\r\n");
    assert!(all.iter().all(|m| m.data == b"hello\r\n"));
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(sink.messages()[0].connection, 2);
}

#[test]
fn drop_in_the_middle_of_data() {
    let sink = Sink::start(Behaviour::accept().drop_in_data_on(Conns::First(1), 10));
    let mut c = Client::hello(sink.addr());
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"0123456789abcdef\r\n");
    c.expect_eof();
    assert!(sink.wait_closed(0, WAIT));
    assert!(sink.transactions().is_empty());
    assert!(sink.received(0).ends_with(b"DATA\r\n0123456789abcdef\r\n"));
    // The next connection gets through.
    let mut c = Client::hello(sink.addr());
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n0123456789abcdef\r\n.\r\n");
    c.expect(
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
250 2.0.0 Ok: queued\r\n",
    );
    assert_eq!(
        sink.wait_for_messages(1, WAIT)[0].data,
        b"0123456789abcdef\r\n"
    );
}

#[test]
fn drop_right_after_the_final_dot() {
    let sink = Sink::start(Behaviour::accept().drop_after_dot());
    let mut c = Client::hello(sink.addr());
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"text\r\n.\r\n");
    c.expect_eof();
    let all = sink.wait_for_transactions(1, WAIT);
    assert_eq!(all.len(), 1);
    assert!(!all[0].accepted);
    assert!(all[0].reply.is_empty());
    assert!(sink.messages().is_empty());
}

#[test]
fn only_crlf_dot_crlf_ends_data() {
    let sink = Sink::start(Behaviour::accept());
    let mut c = Client::hello(sink.addr());
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    // Bare LF before and after the dot: not an end, not a stuffed dot.
    c.send(b"a\n.\nb\r\n.\r");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"\n");
    c.expect(b"250 2.0.0 Ok: queued\r\n");
    let m = &sink.wait_for_messages(1, WAIT)[0];
    assert_eq!(m.data, b"a\n.\nb\r\n");
    assert_eq!(unstuff(b".a\r\n..b\r\nc.\r\n"), b"a\r\n.b\r\nc.\r\n");
}

#[test]
fn slow_replies() {
    let sink = Sink::start(
        Behaviour::accept()
            .delay(Duration::from_millis(100))
            .stage_delay(Stage::Mail, Duration::from_millis(200)),
    );
    let started = Instant::now();
    let mut c = Client::hello(sink.addr());
    assert!(started.elapsed() >= Duration::from_millis(200));
    let started = Instant::now();
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"250 2.1.0 Ok\r\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn extensions_advertised_or_not() {
    let sink = Sink::start(
        Behaviour::accept()
            .size(Some(100))
            .dsn(true)
            .smtputf8(true)
            .starttls(true)
            .extra_ehlo("CHUNKING"),
    );
    let mut c = Client::connect(sink.addr());
    c.expect(b"220 sink.test ESMTP sink\r\n");
    c.send_expect(
        b"EHLO c\r\n",
        b"250-sink.test Hello c\r\n250-SIZE 100\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
250-DSN\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n",
    );
    // SIZE is enforced, declared and actual.
    c.send_expect(
        b"MAIL FROM:<a@b> SIZE=101\r\n",
        b"552 5.3.4 Message too big\r\n",
    );
    c.send(b"MAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    let mut big = vec![b'x'; 200];
    big.extend_from_slice(b"\r\n.\r\n");
    c.send_expect(&big, b"552 5.3.4 Message too big\r\n");
    assert!(sink.messages().is_empty());

    let sink = Sink::start(
        Behaviour::accept()
            .pipelining(false)
            .eightbitmime(false)
            .enhancedstatuscodes(false)
            .hostname("mx.dest.test"),
    );
    let mut c = Client::connect(sink.addr());
    c.expect(b"220 mx.dest.test ESMTP sink\r\n");
    c.send_expect(b"EHLO c\r\n", b"250 mx.dest.test Hello c\r\n");
}

#[test]
fn malformed_replies() {
    let cases: [(Stage, Malformed, &[u8]); 9] = [
        (Stage::Greeting, Malformed::BareLf, b"220 2.0.0 Ok\n"),
        (
            Stage::Ehlo,
            Malformed::ShortLastLine,
            b"250-first line\r\n250\r\n",
        ),
        (
            Stage::Ehlo,
            Malformed::MixedCodes,
            b"250-first line\r\n550 5.0.0 second line\r\n",
        ),
        (Stage::Ehlo, Malformed::BadCode, b"600 2.0.0 Ok\r\n"),
        (Stage::Ehlo, Malformed::BadCodeLow, b"099 2.0.0 Ok\r\n"),
        (Stage::Ehlo, Malformed::NoSeparator, b"250Ok\r\n"),
        (Stage::Ehlo, Malformed::Unfinished, b"250-first line\r\n"),
        (
            Stage::Data,
            Malformed::ShortLastLine,
            b"354-first line\r\n354\r\n",
        ),
        (Stage::Ehlo, Malformed::Overlong(3), b"250 xxx\r\n"),
    ];
    for (stage, m, want) in cases {
        assert_eq!(m.bytes(stage), want, "{m:?}");
        let sink = Sink::start(Behaviour::accept().malformed(stage, m));
        let mut c = Client::connect(sink.addr());
        match stage {
            Stage::Greeting => c.expect(want),
            Stage::Ehlo => {
                c.expect(b"220 sink.test ESMTP sink\r\n");
                c.send_expect(b"EHLO c\r\n", want);
            }
            _ => {
                c.expect(b"220 sink.test ESMTP sink\r\n");
                c.send_expect(b"HELO c\r\n", b"250 sink.test\r\n");
                c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
                c.expect(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
                c.expect(want);
            }
        }
        assert!(sink.sent(0).ends_with(want));
    }
    let long = Malformed::Overlong(5000).bytes(Stage::Mail);
    assert_eq!(long.len(), 5006);
}

#[test]
fn raw_rules_close_and_hang() {
    let sink = Sink::start(
        Behaviour::accept()
            .rule(Rule {
                stage: Stage::Rcpt,
                conns: Conns::All,
                arg: Some("close@d".into()),
                action: Action::ReplyAndClose(reply("421 4.3.0 bye")),
            })
            .on(Stage::Mail, Conns::From(1), Action::Close)
            .on(Stage::Noop, Conns::All, Action::Hang),
    );
    let mut c = Client::hello(sink.addr());
    c.send_expect(b"MAIL FROM:<a@b>\r\n", b"250 2.1.0 Ok\r\n");
    c.send_expect(b"RCPT TO:<close@d>\r\n", b"421 4.3.0 bye\r\n");
    c.expect_eof();
    let mut c = Client::hello(sink.addr());
    c.send(b"MAIL FROM:<a@b>\r\n");
    c.expect_eof();
    let mut c = Client::hello(sink.addr());
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    c.send(b"NOOP\r\nNOOP\r\n");
    let mut buf = [0u8; 16];
    let err = c.s.read(&mut buf).expect_err("no reply while hanging");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    // Dropping the sink ends the hanging connection promptly.
    let started = Instant::now();
    drop(sink);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    c.s.set_read_timeout(Some(WAIT)).expect("timeout");
    c.expect_eof();
}

#[test]
fn own_address_and_peer() {
    let addr: SocketAddr = "127.0.0.3:0".parse().expect("addr");
    let sink = Sink::start_on(addr, Behaviour::accept());
    assert_eq!(sink.addr().ip(), addr.ip());
    assert_ne!(sink.port(), 0);
    let _c = Client::hello(sink.addr());
    assert_eq!(sink.wait_for_connections(1, WAIT), 1);
    assert!(sink.peer(0).is_some_and(|p| p.ip().is_loopback()));
    assert!(sink.peer(1).is_none());
    assert!(sink.transcript(7).events.is_empty());
}

#[test]
fn waits_are_bounded_and_idle_connections_time_out() {
    let sink = Sink::start(Behaviour::accept().idle_timeout(Duration::from_millis(200)));
    let started = Instant::now();
    assert!(
        sink.wait_for_messages(1, Duration::from_millis(100))
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    let mut c = Client::connect(sink.addr());
    c.expect(b"220 sink.test ESMTP sink\r\n");
    c.expect_eof();
    assert!(sink.wait_closed(0, WAIT));
    assert!(sink.closed(0));
}

#[test]
fn connection_limit() {
    let mut b = Behaviour::accept();
    b.max_connections = 1;
    let sink = Sink::start(b);
    let _first = Client::hello(sink.addr());
    let mut second = Client::connect(sink.addr());
    second.expect_eof();
    assert_eq!(sink.connections(), 2);
}
