#![no_main]
//! A whole server session fed arbitrary bytes; every event answered with
//! accept (or, driven by the input, a refusal). It must never panic, never
//! stop making progress and keep its output bounded.
use libfuzzer_sys::fuzz_target;
use rsmtpd_smtp_proto::reply::{EnhancedCode, Reply};
use rsmtpd_smtp_proto::server::{
    AuthPolicy, Event, OUTPUT_HIGH_WATER, ServerConfig, ServerSession, TlsPolicy,
};

enum Answer {
    Accept,
    Refuse,
    Commit,
    None,
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let config = ServerConfig {
        hostname: "mx.example".into(),
        max_message_size: u64::from(seed) * 16,
        max_recipients: usize::from(seed % 5) + 1,
        max_messages: u32::from(seed % 3) + 1,
        max_errors: u32::from(seed % 20) + 1,
        dsn: seed & 1 == 0,
        tls: match seed % 3 {
            0 => TlsPolicy::Off,
            1 => TlsPolicy::StartTls {
                required: seed & 2 == 0,
            },
            _ => TlsPolicy::Implicit,
        },
        auth: match seed % 5 {
            0 | 1 => AuthPolicy::Off,
            2 | 3 => AuthPolicy::Optional,
            _ => AuthPolicy::Required,
        },
        max_auth_failures: u32::from(seed % 4) + 1,
    };
    let mut s = ServerSession::new(config);
    let refusal =
        Reply::new(550, Some(EnhancedCode::new(5, 7, 1)), vec!["no".into()]).expect("valid reply");
    let chunk = usize::from(seed % 32) + 1;
    let mut rest = body;
    let mut answers = body.iter().cycle();
    let mut steps = 0usize;
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        assert!(rounds < 1_000_000, "session stuck");
        let n = s.feed(&rest[..rest.len().min(chunk)]);
        rest = &rest[n..];
        loop {
            steps += 1;
            assert!(steps < 1_000_000, "no progress");
            let answer = match s.poll() {
                None => break,
                Some(Event::DataChunk(c)) => {
                    assert!(!c.is_empty());
                    Answer::None
                }
                Some(Event::DataEnd {
                    verdict: Ok(()), ..
                }) => Answer::Commit,
                Some(Event::DataEnd {
                    verdict: Err(_), ..
                })
                | Some(Event::Close) => Answer::None,
                Some(_) => {
                    if answers.next().is_some_and(|b| b % 7 == 0) {
                        Answer::Refuse
                    } else {
                        Answer::Accept
                    }
                }
            };
            // Answering the wrong thing is an error value, never a panic.
            match answer {
                Answer::Accept => {
                    let _ = s
                        .accept_mail()
                        .or_else(|_| s.accept_rcpt())
                        .or_else(|_| s.data_ready())
                        .or_else(|_| s.tls_established())
                        .or_else(|_| s.auth_accepted());
                }
                Answer::Refuse => {
                    let _ = s
                        .reject_mail(refusal.clone())
                        .or_else(|_| s.reject_rcpt(refusal.clone()))
                        .or_else(|_| s.data_refused(refusal.clone()))
                        .or_else(|_| s.auth_rejected())
                        .or_else(|_| s.auth_unavailable());
                }
                Answer::Commit => s.message_accepted("0123abcd").expect("waiting for commit"),
                Answer::None => {}
            }
            assert!(s.output().len() <= OUTPUT_HIGH_WATER + 4096);
        }
        let out = s.take_output();
        assert!(out.is_empty() || out.ends_with(b"\r\n"));
        if s.is_closed() || rest.is_empty() {
            break;
        }
    }
    s.on_timeout();
    while s.poll().is_some() {}
    assert!(s.is_closed());
});
