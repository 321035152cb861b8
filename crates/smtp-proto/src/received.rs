//! The `Received:` header the server prepends to each message (RFC 5321
//! 4.4, RFC 5322 3.6.7), folded at 78 columns.
//!
//! Every value that came from the client is escaped again here, even though
//! the session validated it: a `;` would end the clauses early, a `(` or `)`
//! would unbalance a comment, and a control character has no place in a
//! header.

use std::net::IpAddr;

/// RFC 5322 2.1.1: lines SHOULD be at most 78 characters.
const FOLD_AT: usize = 78;

/// What the session knows about how the message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    /// EHLO rather than HELO.
    pub esmtp: bool,
    pub tls: bool,
    pub auth: bool,
    /// The transaction said SMTPUTF8.
    pub utf8: bool,
}

impl Protocol {
    /// The `with` keyword (RFC 3848, RFC 6531 3.7.3).
    pub fn keyword(self) -> &'static str {
        if !self.esmtp {
            return "SMTP";
        }
        match (self.utf8, self.tls, self.auth) {
            (false, false, false) => "ESMTP",
            (false, true, false) => "ESMTPS",
            (false, false, true) => "ESMTPA",
            (false, true, true) => "ESMTPSA",
            (true, false, false) => "UTF8SMTP",
            (true, true, false) => "UTF8SMTPS",
            (true, false, true) => "UTF8SMTPA",
            (true, true, true) => "UTF8SMTPSA",
        }
    }
}

/// The authentication clause (OpenSMTPD's `received-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthClause<'a> {
    /// The listener does not show it.
    Hidden,
    /// `auth=no`.
    No,
    /// `auth=pass user=NAME`.
    Pass(&'a str),
}

/// The parts of a `Received:` header.
#[derive(Debug, Clone)]
pub struct ReceivedInfo<'a> {
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// Reverse DNS name of the client, if known.
    pub client_host: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    /// A local submission: the submitting user's name and uid, as the
    /// kernel gave them (not what the client claimed).
    pub local_user: Option<(&'a str, u32)>,
    /// Hide the `from` clause (OpenSMTPD's `mask-src`).
    pub mask_src: bool,
    /// Our host name.
    pub by: &'a str,
    pub protocol: Protocol,
    /// Queue id of the message.
    pub id: &'a str,
    /// The TLS clause, e.g. `TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO`, as
    /// OpenSMTPD writes it in a comment.
    pub tls: Option<&'a str>,
    /// What `received-auth` shows.
    pub auth: AuthClause<'a>,
    /// The recipient, when the message has exactly one.
    pub for_rcpt: Option<&'a str>,
    /// RFC 5322 date-time, formatted by the caller.
    pub date: &'a str,
}

/// Formats the header, `Received:` to the final CRLF.
pub fn format_received(info: &ReceivedInfo<'_>) -> String {
    let utf8 = info.protocol.utf8;
    let mut words: Vec<String> = Vec::new();
    if !info.mask_src {
        words.push("from".into());
        words.push(token(info.helo, utf8));
        let host = info.client_host.map(|h| token(h, utf8));
        match (host, info.client_ip) {
            (Some(h), Some(ip)) => {
                words.push(format!("({h}"));
                words.push(format!("[{ip}])"));
            }
            (Some(h), None) => words.push(format!("({h})")),
            (None, Some(ip)) => words.push(format!("([{ip}])")),
            (None, None) => {}
        }
        if let Some((user, uid)) = info.local_user {
            words.push(format!("(user={}", token(user, utf8)));
            words.push(format!("uid={uid})"));
        }
    }
    words.push("by".into());
    words.push(token(info.by, utf8));
    words.push("(rsmtpd)".into());
    words.push("with".into());
    words.push(info.protocol.keyword().into());
    words.push("id".into());
    words.push(token(info.id, false));
    if let Some(tls) = info.tls {
        words.push(format!("({})", token(tls, false)));
    }
    match info.auth {
        AuthClause::Hidden => {}
        AuthClause::No => words.push("auth=no".into()),
        AuthClause::Pass(user) => {
            words.push("auth=pass".into());
            words.push(format!("user={}", token(user, utf8)));
        }
    }
    if let Some(rcpt) = info.for_rcpt {
        words.push("for".into());
        words.push(format!("{};", token(rcpt, utf8)));
    } else if let Some(last) = words.last_mut() {
        last.push(';');
    }
    for w in info.date.split(' ').filter(|w| !w.is_empty()) {
        words.push(token(w, false));
    }
    fold("Received:", &words)
}

/// Greedy folding: a word that would pass column 78 starts a new line,
/// indented with a tab.
fn fold(name: &str, words: &[String]) -> String {
    let mut out = String::from(name);
    let mut col = out.len();
    for w in words {
        if col + 1 + w.len() > FOLD_AT && col > 1 {
            out.push_str("\r\n\t");
            col = 1;
        } else {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += w.len();
    }
    out.push_str("\r\n");
    out
}

/// A word outside comments: anything that could end a clause or a line, or
/// open a comment, is written `\xNN`.
fn token(s: &str, utf8: bool) -> String {
    escape(s, utf8, |c| {
        c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')' | '\\')
    })
}

fn escape(s: &str, utf8: bool, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if keep(c) || (utf8 && !c.is_ascii() && !c.is_control() && !c.is_whitespace()) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02X}"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("unknown");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn info<'a>() -> ReceivedInfo<'a> {
        ReceivedInfo {
            helo: "client.example",
            client_host: Some("host.example"),
            client_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            local_user: None,
            mask_src: false,
            by: "mx.example",
            protocol: Protocol {
                esmtp: true,
                tls: false,
                auth: false,
                utf8: false,
            },
            id: "4b100749",
            tls: None,
            auth: AuthClause::Hidden,
            for_rcpt: Some("<b@example.net>"),
            date: "Thu, 26 Nov 2026 20:00:00 +0000",
        }
    }

    #[test]
    fn shape_and_folding() {
        assert_eq!(
            format_received(&info()),
            "Received: from client.example (host.example [192.0.2.1]) by mx.example\r\n\
             \t(rsmtpd) with ESMTP id 4b100749 for <b@example.net>; Thu, 26 Nov 2026\r\n\
             \t20:00:00 +0000\r\n"
        );
    }

    #[test]
    fn tls_and_auth_clauses() {
        let mut i = info();
        i.protocol.tls = true;
        i.protocol.auth = true;
        i.tls = Some("TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO");
        i.auth = AuthClause::Pass("joe");
        assert_eq!(
            format_received(&i),
            "Received: from client.example (host.example [192.0.2.1]) by mx.example\r\n\
             \t(rsmtpd) with ESMTPSA id 4b100749 (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO)\r\n\
             \tauth=pass user=joe for <b@example.net>; Thu, 26 Nov 2026 20:00:00 +0000\r\n"
        );
        i.auth = AuthClause::No;
        assert!(
            format_received(&i)
                .replace("\r\n\t", " ")
                .contains(" auth=no for")
        );
    }

    #[test]
    fn mask_src_and_no_rcpt() {
        let mut i = info();
        i.mask_src = true;
        i.for_rcpt = None;
        assert_eq!(
            format_received(&i),
            "Received: by mx.example (rsmtpd) with ESMTP id 4b100749; Thu, 26 Nov 2026\r\n\
             \t20:00:00 +0000\r\n"
        );
    }

    #[test]
    fn hostile_values_are_escaped() {
        let mut i = info();
        i.helo = "evil;\r\nX-Injected: (yes)";
        i.client_host = Some("a(b)c\\");
        i.for_rcpt = Some("<\"a;b\"@x>");
        let h = format_received(&i);
        assert_eq!(
            h.matches("\r\n").count(),
            h.matches("\r\n\t").count() + 1,
            "{h}"
        );
        assert!(!h.contains("X-Injected: (yes)"));
        assert!(
            h.contains("evil\\x3B\\x0D\\x0AX-Injected:\\x20\\x28yes\\x29"),
            "{h}"
        );
        assert!(h.contains("(a\\x28b\\x29c\\x5C\r\n\t[192.0.2.1])"), "{h}");
        assert!(h.contains("<\"a\\x3Bb\"@x>;"), "{h}");
        assert_eq!(h.matches(';').count(), 1);
    }

    #[test]
    fn lines_stay_within_78_columns() {
        let mut i = info();
        let long = format!("{}.example", "a".repeat(60));
        i.helo = &long;
        i.client_host = Some(&long);
        let h = format_received(&i);
        for line in h.split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
    }

    #[test]
    fn utf8_kept_only_under_smtputf8() {
        let mut i = info();
        i.for_rcpt = Some("<j\u{f6}rg@x>");
        assert!(format_received(&i).contains("<j\\xC3\\xB6rg@x>;"));
        i.protocol.utf8 = true;
        let h = format_received(&i);
        assert!(h.contains("<j\u{f6}rg@x>;"));
        assert!(h.contains("with UTF8SMTP id"));
    }

    #[test]
    fn protocol_keywords() {
        let p = |esmtp, tls, auth, utf8| {
            Protocol {
                esmtp,
                tls,
                auth,
                utf8,
            }
            .keyword()
        };
        assert_eq!(p(false, true, true, true), "SMTP");
        assert_eq!(p(true, false, false, false), "ESMTP");
        assert_eq!(p(true, true, false, false), "ESMTPS");
        assert_eq!(p(true, true, true, false), "ESMTPSA");
        assert_eq!(p(true, false, true, false), "ESMTPA");
        assert_eq!(p(true, true, true, true), "UTF8SMTPSA");
    }
}
