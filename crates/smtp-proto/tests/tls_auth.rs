//! Byte scripts for STARTTLS (RFC 3207) and AUTH (RFC 4954) in the server
//! session: what is offered when, the injection defence, every refusal.
#![allow(clippy::unwrap_used)]

use rsmtpd_smtp_proto::sasl::encode_plain;
use rsmtpd_smtp_proto::server::{
    AuthPolicy, Event, Mechanism, ServerConfig, ServerSession, TlsPolicy,
};

fn config(tls: TlsPolicy, auth: AuthPolicy) -> ServerConfig {
    ServerConfig {
        hostname: "mx.example".into(),
        max_message_size: 1_000_000,
        tls,
        auth,
        ..ServerConfig::default()
    }
}

/// What the fake daemon saw.
#[derive(Debug, Default)]
struct Seen {
    starttls: usize,
    auths: Vec<(Mechanism, String, Vec<u8>)>,
    mails: Vec<String>,
    closed: bool,
}

/// Runs the session; the password "good" is right, "down" means the
/// checker is unavailable, anything else is wrong. A STARTTLS handshake
/// "succeeds" when `handshake` is true.
fn pump(s: &mut ServerSession, seen: &mut Seen, handshake: bool) {
    loop {
        enum A {
            Mail,
            Rcpt,
            Tls,
            Auth(Vec<u8>),
            None,
        }
        let a = match s.poll() {
            None => break,
            Some(Event::MailFrom { from, .. }) => {
                seen.mails.push(from.to_string());
                A::Mail
            }
            Some(Event::Recipient { .. }) => A::Rcpt,
            Some(Event::StartTls) => {
                seen.starttls += 1;
                A::Tls
            }
            Some(Event::Auth {
                mechanism,
                credentials,
            }) => {
                seen.auths.push((
                    mechanism,
                    credentials.user.clone(),
                    credentials.password.clone(),
                ));
                A::Auth(credentials.password.clone())
            }
            Some(Event::Close) => {
                seen.closed = true;
                A::None
            }
            Some(e) => panic!("unexpected {e:?}"),
        };
        match a {
            A::Mail => s.accept_mail().unwrap(),
            A::Rcpt => s.accept_rcpt().unwrap(),
            A::Tls => {
                if handshake {
                    s.tls_established().unwrap();
                }
            }
            A::Auth(p) if p == b"good" => s.auth_accepted().unwrap(),
            A::Auth(p) if p == b"down" => s.auth_unavailable().unwrap(),
            A::Auth(_) => s.auth_rejected().unwrap(),
            A::None => {}
        }
    }
}

/// Feeds `input`, runs the session, returns what it wrote.
fn say(s: &mut ServerSession, seen: &mut Seen, input: &str) -> String {
    assert_eq!(s.feed(input.as_bytes()), input.len());
    pump(s, seen, true);
    String::from_utf8(s.take_output()).unwrap()
}

fn ehlo_lines(out: &str) -> Vec<&str> {
    out.lines().map(|l| l.get(4..).unwrap_or("")).collect()
}

/// A session past STARTTLS and the second EHLO.
fn over_tls(auth: AuthPolicy) -> (ServerSession, Seen) {
    let mut s = ServerSession::new(config(TlsPolicy::StartTls { required: false }, auth));
    let mut seen = Seen::default();
    s.take_output();
    say(&mut s, &mut seen, "EHLO c\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "STARTTLS\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    assert!(s.is_tls());
    let out = say(&mut s, &mut seen, "EHLO c\r\n");
    assert!(out.starts_with("250-"), "{out}");
    (s, seen)
}

#[test]
fn starttls_offered_only_before_tls_and_auth_only_inside() {
    let mut s = ServerSession::new(config(
        TlsPolicy::StartTls { required: false },
        AuthPolicy::Optional,
    ));
    let mut seen = Seen::default();
    s.take_output();
    let before = say(&mut s, &mut seen, "EHLO c\r\n");
    assert!(ehlo_lines(&before).contains(&"STARTTLS"), "{before}");
    assert!(!before.contains("AUTH"), "{before}");
    let (_, _) = (s, seen);
    let (mut s, mut seen) = over_tls(AuthPolicy::Optional);
    let after = say(&mut s, &mut seen, "EHLO c\r\n");
    assert!(!after.contains("STARTTLS"), "{after}");
    assert!(ehlo_lines(&after).contains(&"AUTH PLAIN LOGIN"), "{after}");
    assert_eq!(
        say(&mut s, &mut seen, "STARTTLS\r\n"),
        "503 5.5.1 TLS already active\r\n"
    );
    // Once authenticated, AUTH is no longer offered.
    let plain = encode_plain("joe", b"good");
    assert_eq!(
        say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n")),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    assert_eq!(s.auth_user(), Some("joe"));
    let again = say(&mut s, &mut seen, "EHLO c\r\n");
    assert!(!again.contains("AUTH"), "{again}");
}

#[test]
fn plaintext_pipelined_after_starttls_is_never_read() {
    let mut s = ServerSession::new(config(
        TlsPolicy::StartTls { required: false },
        AuthPolicy::Off,
    ));
    let mut seen = Seen::default();
    s.take_output();
    say(&mut s, &mut seen, "EHLO c\r\n");
    // The classic injection: one write with STARTTLS and a command after.
    s.feed(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@x>\r\n");
    pump(&mut s, &mut seen, false);
    assert_eq!(s.take_output(), b"220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(seen.starttls, 1);
    // While the handshake runs, input is dropped, not buffered.
    let late = b"MAIL FROM:<evil2@x>\r\n";
    assert_eq!(s.feed(late), late.len());
    pump(&mut s, &mut seen, false);
    assert!(s.output().is_empty());
    s.tls_established().unwrap();
    pump(&mut s, &mut seen, false);
    assert!(s.output().is_empty(), "{:?}", s.output());
    assert!(seen.mails.is_empty());
    // The session started over: EHLO is needed again.
    assert_eq!(
        say(&mut s, &mut seen, "MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n"
    );
}

#[test]
fn starttls_needs_ehlo_and_must_be_offered() {
    let mut s = ServerSession::new(config(TlsPolicy::Off, AuthPolicy::Off));
    let mut seen = Seen::default();
    s.take_output();
    say(&mut s, &mut seen, "EHLO c\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "STARTTLS\r\n"),
        "502 5.5.1 Invalid command: Command not supported\r\n"
    );
    let mut s = ServerSession::new(config(
        TlsPolicy::StartTls { required: false },
        AuthPolicy::Off,
    ));
    s.take_output();
    assert_eq!(
        say(&mut s, &mut seen, "STARTTLS\r\n"),
        "503 5.5.1 Invalid command: Send HELO/EHLO first\r\n"
    );
    assert_eq!(seen.starttls, 0);
}

#[test]
fn tls_require_refuses_mail_before_starttls() {
    let mut s = ServerSession::new(config(
        TlsPolicy::StartTls { required: true },
        AuthPolicy::Off,
    ));
    let mut seen = Seen::default();
    s.take_output();
    say(&mut s, &mut seen, "EHLO c\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "MAIL FROM:<a@b>\r\n"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    say(&mut s, &mut seen, "STARTTLS\r\n");
    say(&mut s, &mut seen, "EHLO c\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "MAIL FROM:<a@b>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
}

#[test]
fn implicit_tls_starts_secure() {
    let mut s = ServerSession::new(config(TlsPolicy::Implicit, AuthPolicy::Required));
    let mut seen = Seen::default();
    assert!(s.is_tls());
    s.take_output();
    let out = say(&mut s, &mut seen, "EHLO c\r\n");
    assert!(
        !out.contains("STARTTLS") && out.contains("AUTH PLAIN LOGIN"),
        "{out}"
    );
}

#[test]
fn auth_required_refuses_mail_before_auth() {
    let (mut s, mut seen) = over_tls(AuthPolicy::Required);
    assert_eq!(
        say(&mut s, &mut seen, "MAIL FROM:<a@b>\r\n"),
        "530 5.7.0 Must issue an AUTH command first\r\n"
    );
    let plain = encode_plain("joe", b"good");
    say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n"));
    assert_eq!(
        say(&mut s, &mut seen, "MAIL FROM:<a@b>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(seen.mails, ["<a@b>"]);
}

#[test]
fn auth_before_tls_needs_encryption() {
    let mut s = ServerSession::new(config(
        TlsPolicy::StartTls { required: false },
        AuthPolicy::Required,
    ));
    let mut seen = Seen::default();
    s.take_output();
    say(&mut s, &mut seen, "EHLO c\r\n");
    let plain = encode_plain("joe", b"good");
    assert_eq!(
        say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n")),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert!(seen.auths.is_empty());
}

#[test]
fn plain_with_and_without_initial_response() {
    let (mut s, mut seen) = over_tls(AuthPolicy::Optional);
    assert_eq!(say(&mut s, &mut seen, "AUTH PLAIN\r\n"), "334 \r\n");
    let plain = encode_plain("joe", b"wrong");
    assert_eq!(
        say(&mut s, &mut seen, &format!("{plain}\r\n")),
        "535 5.7.8 Authentication failed\r\n"
    );
    assert_eq!(
        seen.auths,
        [(Mechanism::Plain, "joe".into(), b"wrong".to_vec())]
    );
    let plain = encode_plain("joe", b"down");
    assert_eq!(
        say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n")),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    assert_eq!(s.auth_user(), None);
}

#[test]
fn login_exchange() {
    let (mut s, mut seen) = over_tls(AuthPolicy::Optional);
    assert_eq!(
        say(&mut s, &mut seen, "AUTH LOGIN\r\n"),
        "334 VXNlcm5hbWU6\r\n"
    );
    assert_eq!(say(&mut s, &mut seen, "am9l\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "Z29vZA==\r\n"),
        "235 2.0.0 Authentication succeeded\r\n"
    );
    assert_eq!(
        seen.auths,
        [(Mechanism::Login, "joe".into(), b"good".to_vec())]
    );
    // With the user name as initial response.
    let (mut s, mut seen) = over_tls(AuthPolicy::Optional);
    assert_eq!(
        say(&mut s, &mut seen, "AUTH LOGIN am9l\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        say(&mut s, &mut seen, "Z29vZA==\r\n"),
        "235 2.0.0 Authentication succeeded\r\n"
    );
}

#[test]
fn auth_refusals() {
    let mut s = ServerSession::new(ServerConfig {
        max_errors: 100,
        ..config(
            TlsPolicy::StartTls { required: false },
            AuthPolicy::Optional,
        )
    });
    let mut seen = Seen::default();
    s.take_output();
    say(&mut s, &mut seen, "EHLO c\r\n");
    say(&mut s, &mut seen, "STARTTLS\r\n");
    say(&mut s, &mut seen, "EHLO c\r\n");
    // `*` cancels.
    say(&mut s, &mut seen, "AUTH LOGIN\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "*\r\n"),
        "501 5.0.0 Authentication cancelled\r\n"
    );
    // Bad base64.
    assert_eq!(
        say(&mut s, &mut seen, "AUTH PLAIN %%%%\r\n"),
        "501 5.5.2 Syntax error in authentication data\r\n"
    );
    say(&mut s, &mut seen, "AUTH PLAIN\r\n");
    assert_eq!(
        say(&mut s, &mut seen, "!!!!\r\n"),
        "501 5.5.2 Syntax error in authentication data\r\n"
    );
    // NUL, CR or LF inside the name or password.
    for raw in [&b"\0jo\ne\0good"[..], b"\0joe\0go\rod", b"\0joe\0go\0od"] {
        let b64 = rsmtpd_smtp_proto::sasl::encode_b64(raw);
        assert_eq!(
            say(&mut s, &mut seen, &format!("AUTH PLAIN {b64}\r\n")),
            "501 5.5.2 Syntax error in authentication data\r\n"
        );
    }
    // An empty initial response ("=") is a malformed PLAIN message.
    assert_eq!(
        say(&mut s, &mut seen, "AUTH PLAIN =\r\n"),
        "501 5.5.2 Syntax error in authentication data\r\n"
    );
    // Unknown mechanism.
    assert_eq!(
        say(&mut s, &mut seen, "AUTH CRAM-MD5\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    assert!(seen.auths.is_empty());
    // Inside a transaction.
    say(&mut s, &mut seen, "MAIL FROM:<a@b>\r\n");
    let plain = encode_plain("joe", b"good");
    assert_eq!(
        say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n")),
        "503 5.5.1 AUTH not allowed in a mail transaction\r\n"
    );
    say(&mut s, &mut seen, "RSET\r\n");
    say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n"));
    // Already authenticated.
    assert_eq!(
        say(&mut s, &mut seen, &format!("AUTH PLAIN {plain}\r\n")),
        "503 5.5.1 Already authenticated\r\n"
    );
    assert!(!seen.closed);
}

#[test]
fn repeated_failures_end_the_session() {
    let (mut s, mut seen) = over_tls(AuthPolicy::Optional);
    let bad = encode_plain("joe", b"bad");
    let mut out = String::new();
    for _ in 0..3 {
        out.push_str(&say(&mut s, &mut seen, &format!("AUTH PLAIN {bad}\r\n")));
    }
    assert_eq!(
        out,
        "535 5.7.8 Authentication failed\r\n\
         535 5.7.8 Authentication failed\r\n\
         535 5.7.8 Authentication failed\r\n\
         421 4.7.0 mx.example Too many authentication failures, closing connection\r\n"
    );
    assert!(seen.closed);
}

#[test]
fn long_auth_lines_are_bounded() {
    let (mut s, mut seen) = over_tls(AuthPolicy::Optional);
    say(&mut s, &mut seen, "AUTH PLAIN\r\n");
    // A response up to 12288 octets is read (and refused as too long for
    // a password), a longer one is a line-length refusal.
    let long = "A".repeat(13_000);
    let out = say(&mut s, &mut seen, &format!("{long}\r\n"));
    assert_eq!(out, "500 5.5.2 Line too long\r\n");
    // The session goes on with commands.
    assert_eq!(say(&mut s, &mut seen, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert!(seen.auths.is_empty());
}
