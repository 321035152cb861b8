//! Delivery status notifications (RFC 3464) in a multipart/report
//! (RFC 6522): what the queue sends back to a sender when mail fails, is
//! delayed, or was relayed where no DSN can follow.
//!
//! Every value that may come from outside (addresses, remote replies) is
//! put on one line with control characters escaped, so a hostile reply
//! cannot add a header or a MIME part to the report.

use std::io::{self, BufRead, Write};

/// The per-recipient `Action:` (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// How much of the original message the report carries (RET=).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Full,
    Headers,
}

/// One recipient's part of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub final_recipient: String,
    /// ORCPT as the client gave it (`rfc822;addr`), if it did.
    pub original_recipient: Option<String>,
    pub action: Action,
    /// RFC 3463 code, e.g. `5.1.1`.
    pub status: String,
    pub remote_mta: Option<String>,
    /// The reply or error that explains the status.
    pub diagnostic: Option<String>,
    pub last_attempt: u64,
    pub will_retry_until: Option<u64>,
}

/// A whole report about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// This server's name.
    pub reporting_mta: String,
    /// Who gets the report: the original envelope sender (never empty: the
    /// caller must not report to the null sender).
    pub to: String,
    pub arrival_date: u64,
    pub envid: Option<String>,
    pub ret: Return,
    pub recipients: Vec<RecipientStatus>,
    /// Now, for Date:.
    pub date: u64,
    /// Unique text for Message-ID and the MIME boundary (e.g. the new
    /// message id and a random number).
    pub unique: String,
}

/// Headers of an original message beyond which a full copy is not
/// returned: a report must stay deliverable.
pub const MAX_RETURNED_BYTES: u64 = 1024 * 1024;

impl Report {
    fn subject(&self) -> &'static str {
        let all = |a: Action| self.recipients.iter().all(|r| r.action == a);
        if all(Action::Delayed) {
            "Delivery status notification: delayed"
        } else if all(Action::Delivered) || all(Action::Relayed) {
            "Delivery status notification: success"
        } else {
            "Delivery status notification: error"
        }
    }

    /// Write the report, with `original` (the queued message, CRLF line
    /// ends) returned according to `ret`.
    pub fn write(&self, original: &mut impl BufRead, out: &mut impl Write) -> io::Result<()> {
        let boundary = format!("{}/{}", clean(&self.unique), clean(&self.reporting_mta));
        let host = clean(&self.reporting_mta);
        write!(out, "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n")?;
        write!(out, "To: {}\r\n", clean(&self.to))?;
        write!(out, "Subject: {}\r\n", self.subject())?;
        write!(out, "Date: {}\r\n", rfc5322_date(self.date))?;
        write!(out, "Message-ID: <{}@{host}>\r\n", clean(&self.unique))?;
        write!(out, "Auto-Submitted: auto-replied\r\n")?;
        write!(out, "MIME-Version: 1.0\r\n")?;
        write!(
            out,
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
        )?;
        write!(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n")?;

        write!(out, "--{boundary}\r\n")?;
        write!(out, "Content-Type: text/plain; charset=utf-8\r\n")?;
        write!(out, "Content-Transfer-Encoding: 8bit\r\n\r\n")?;
        self.write_explanation(out)?;

        write!(out, "\r\n--{boundary}\r\n")?;
        write!(out, "Content-Type: message/delivery-status\r\n\r\n")?;
        self.write_status(out)?;

        write!(out, "\r\n--{boundary}\r\n")?;
        match self.ret {
            Return::Full => write!(out, "Content-Type: message/rfc822\r\n\r\n")?,
            Return::Headers => write!(out, "Content-Type: text/rfc822-headers\r\n\r\n")?,
        }
        copy_original(original, self.ret, out)?;
        write!(out, "\r\n--{boundary}--\r\n")
    }

    fn write_explanation(&self, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "This is the mail system at {}.\r\n\r\n",
            clean(&self.reporting_mta)
        )?;
        let delayed = self.recipients.iter().any(|r| r.action == Action::Delayed);
        let failed = self.recipients.iter().any(|r| r.action == Action::Failed);
        if failed {
            write!(
                out,
                "Your message could not be delivered to one or more recipients.\r\n"
            )?;
        }
        if delayed {
            write!(
                out,
                "Your message has not been delivered yet to one or more recipients;\r\n\
                 delivery will be retried. You do not need to send it again.\r\n"
            )?;
        }
        if !failed && !delayed {
            write!(
                out,
                "Your message was delivered or passed on as requested.\r\n"
            )?;
        }
        write!(out, "\r\n")?;
        for r in &self.recipients {
            write!(
                out,
                "<{}>: {}",
                clean(&r.final_recipient),
                r.action.as_str()
            )?;
            if let Some(d) = &r.diagnostic {
                write!(out, ": {}", clean(d))?;
            }
            write!(out, "\r\n")?;
        }
        Ok(())
    }

    fn write_status(&self, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "Reporting-MTA: dns; {}\r\n",
            clean(&self.reporting_mta)
        )?;
        if let Some(envid) = &self.envid {
            write!(out, "Original-Envelope-Id: {}\r\n", clean(envid))?;
        }
        write!(out, "Arrival-Date: {}\r\n", rfc5322_date(self.arrival_date))?;
        for r in &self.recipients {
            write!(
                out,
                "\r\nFinal-Recipient: rfc822; {}\r\n",
                clean(&r.final_recipient)
            )?;
            if let Some(orcpt) = &r.original_recipient {
                write!(out, "Original-Recipient: {}\r\n", clean(orcpt))?;
            }
            write!(out, "Action: {}\r\n", r.action.as_str())?;
            write!(out, "Status: {}\r\n", clean(&r.status))?;
            if let Some(mta) = &r.remote_mta {
                write!(out, "Remote-MTA: dns; {}\r\n", clean(mta))?;
            }
            if let Some(d) = &r.diagnostic {
                write!(out, "Diagnostic-Code: smtp; {}\r\n", clean(d))?;
            }
            write!(
                out,
                "Last-Attempt-Date: {}\r\n",
                rfc5322_date(r.last_attempt)
            )?;
            if let Some(until) = r.will_retry_until {
                write!(out, "Will-Retry-Until: {}\r\n", rfc5322_date(until))?;
            }
        }
        Ok(())
    }
}

/// Copy the original: headers only, or the whole message up to
/// [`MAX_RETURNED_BYTES`] (then headers only, as a message cut in half
/// would be worse than none).
fn copy_original(original: &mut impl BufRead, ret: Return, out: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut line = Vec::new();
    let mut in_headers = true;
    let mut header_len = 0;
    loop {
        line.clear();
        let n = std::io::Read::take(&mut *original, MAX_RETURNED_BYTES + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if in_headers && (line == b"\r\n" || line == b"\n") {
            in_headers = false;
            header_len = buf.len();
            if ret == Return::Headers {
                break;
            }
        }
        buf.extend_from_slice(&line);
        if buf.len() as u64 > MAX_RETURNED_BYTES {
            if in_headers {
                // A header block this large is not worth returning at all.
                buf.clear();
            } else {
                buf.truncate(header_len);
            }
            break;
        }
    }
    out.write_all(&buf)?;
    if !buf.ends_with(b"\n") && !buf.is_empty() {
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// One line, printable: CR, LF, tabs and other control characters become
/// `\xNN`, so nothing can start a header or a MIME part.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `Thu, 26 Nov 2026 20:10:50 +0000` for a Unix time.
pub fn rfc5322_date(unix: u64) -> String {
    rsmtpd_delivery::date::rfc5322(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(action: Action, ret: Return) -> Report {
        Report {
            reporting_mta: "mx.example.org".into(),
            to: "alice@example.net".into(),
            arrival_date: 1_764_187_850,
            envid: Some("env-1".into()),
            ret,
            recipients: vec![RecipientStatus {
                final_recipient: "bob@example.org".into(),
                original_recipient: Some("rfc822;Bob@Example.org".into()),
                action,
                status: "5.1.1".into(),
                remote_mta: Some("mx2.example.org".into()),
                diagnostic: Some("550 5.1.1 no such user\r\nX-Injected: yes".into()),
                last_attempt: 1_764_187_900,
                will_retry_until: (action == Action::Delayed).then_some(1_764_500_000),
            }],
            date: 1_764_187_910,
            unique: "4b100749".into(),
        }
    }

    fn render(r: &Report, original: &[u8]) -> String {
        let mut out = Vec::new();
        r.write(&mut std::io::Cursor::new(original.to_vec()), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_764_187_850),
            "Wed, 26 Nov 2025 20:10:50 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn failure_report_has_every_rfc3464_field() {
        let text = render(
            &report(Action::Failed, Return::Full),
            b"Subject: hi\r\n\r\nbody\r\n",
        );
        for needle in [
            "To: alice@example.net\r\n",
            "Subject: Delivery status notification: error\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"4b100749/mx.example.org\"\r\n",
            "Reporting-MTA: dns; mx.example.org\r\n",
            "Original-Envelope-Id: env-1\r\n",
            "Arrival-Date: Wed, 26 Nov 2025 20:10:50 +0000\r\n",
            "Final-Recipient: rfc822; bob@example.org\r\n",
            "Original-Recipient: rfc822;Bob@Example.org\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx2.example.org\r\n",
            "Last-Attempt-Date: Wed, 26 Nov 2025 20:11:40 +0000\r\n",
            "Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody\r\n",
            "\r\n--4b100749/mx.example.org--\r\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("Will-Retry-Until"));
    }

    #[test]
    fn hostile_diagnostics_stay_on_one_line() {
        let text = render(&report(Action::Failed, Return::Full), b"A: b\r\n\r\n");
        assert!(text.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\\x0d\\x0aX-Injected: yes\r\n"
        ));
        assert!(!text.contains("\r\nX-Injected"));
    }

    #[test]
    fn delay_report_with_headers_only() {
        let text = render(
            &report(Action::Delayed, Return::Headers),
            b"Subject: hi\r\n\r\nsecret body\r\n",
        );
        assert!(text.contains("Subject: Delivery status notification: delayed\r\n"));
        assert!(text.contains("Will-Retry-Until: "));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n"));
        assert!(!text.contains("secret body"));
    }

    #[test]
    fn large_originals_are_returned_as_headers() {
        let mut original = b"Subject: big\r\n\r\n".to_vec();
        original.extend(std::iter::repeat_n(b'x', MAX_RETURNED_BYTES as usize + 10));
        let text = render(&report(Action::Failed, Return::Full), &original);
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: big\r\n\r\n--"));
        assert!(text.len() < 10_000);
    }
}
