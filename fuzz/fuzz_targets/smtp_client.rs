#![no_main]
//! The client session fed arbitrary server bytes while it sends one
//! message to three recipients (SMTP or LMTP, chosen by the input). It must
//! never panic, never stop making progress, keep its output bounded, and
//! report each recipient at most once. Half the inputs authenticate first.
use libfuzzer_sys::fuzz_target;
use rsmtpd_smtp_proto::address::{Charset, Domain, ForwardPath, ReversePath};
use rsmtpd_smtp_proto::client::{ClientConfig, ClientSession, Envelope, Event, Mode};
use rsmtpd_smtp_proto::command::{MailParams, RcptParams};
use rsmtpd_smtp_proto::server::Recipient;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mode = if seed & 1 == 0 { Mode::Smtp } else { Mode::Lmtp };
    let helo = Domain::parse_helo("client.example").expect("valid name");
    let mut s = ClientSession::new(ClientConfig { mode, helo });
    let rcpt = |a: &str| Recipient {
        path: ForwardPath::parse(a.as_bytes(), Charset::Ascii).expect("valid address"),
        params: RcptParams::default(),
    };
    let envelope = Envelope::new(
        ReversePath::parse(b"<a@example.org>", Charset::Ascii).expect("valid sender"),
        MailParams::default(),
        vec![rcpt("<b@example.net>"), rcpt("<c@example.net>"), rcpt("<d@example.net>")],
    )
    .expect("valid envelope");
    let chunk = usize::from(seed / 2 % 16) + 1;
    let mut rest = input;
    let mut reported = [false; 3];
    let mut sent = false;
    // Half the inputs authenticate first (as to a smarthost): the AUTH
    // exchange meets arbitrary replies too.
    let mut authenticate = seed & 0x40 != 0;
    for _round in 0..100_000 {
        let n = s.feed(&rest[..rest.len().min(chunk)]);
        rest = &rest[n..];
        for _step in 0..10_000 {
            match s.poll() {
                None => break,
                Some(Event::Ready) if authenticate && !s.is_authenticated() => {
                    authenticate = false;
                    let _ = s.authenticate("joe", b"secret");
                }
                Some(Event::Ready) if !sent => {
                    sent = true;
                    let _ = s.send_mail(&envelope);
                }
                Some(Event::Ready) => {
                    let _ = s.quit();
                }
                Some(Event::SendBody) => {
                    let _ = s.write_body(b"Subject: x\r\n\r\n.dot\nbare\r\n");
                    let _ = s.end_body();
                }
                Some(Event::Recipient { index, .. }) => {
                    let slot = reported.get_mut(index).expect("index in range");
                    assert!(!*slot, "recipient {index} reported twice");
                    *slot = true;
                }
                Some(Event::Closed) | Some(Event::Failed(_)) => return,
                Some(_) => {}
            }
        }
        assert!(s.output().len() < 1 << 20, "output unbounded");
        let _ = s.take_output();
        if rest.is_empty() {
            s.closed();
            while s.poll().is_some() {}
            return;
        }
    }
});
