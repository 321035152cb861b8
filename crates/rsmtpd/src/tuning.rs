//! Timing knobs read from the environment at start-up, meant for tests
//! (a test cannot wait five minutes for a command timeout) and documented
//! in docs/operations.md. Each is a number of seconds; an absent or
//! malformed value keeps the default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuning {
    /// `RSMTPD_SMTP_TIMEOUT`: silence allowed between commands.
    pub command_timeout: Duration,
    /// `RSMTPD_SMTP_DATA_WINDOW`: the window of the minimum DATA rate.
    pub data_window: Duration,
    /// `RSMTPD_RETRY_BASE_LOCAL`: first retry of a local delivery.
    pub retry_base_local: u64,
    /// `RSMTPD_RETRY_BASE_RELAY`: first retry of a relayed one.
    pub retry_base_relay: u64,
    /// `RSMTPD_RESOLVER` (ip:port): the nameserver the mta asks instead of
    /// /etc/resolv.conf's.
    pub resolver: Option<std::net::SocketAddr>,
    /// `RSMTPD_MX_PORT`: the port of MX deliveries instead of 25.
    pub mx_port: u16,
    /// `SSL_CERT_FILE`: the CA bundle verified relays trust, instead of
    /// the system's (as OpenSSL's programs read it).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // RFC 5321 4.5.3.2 asks for at least 5 minutes.
            command_timeout: Duration::from_secs(300),
            data_window: Duration::from_secs(60),
            // OpenSMTPD's ramqueue backoff bases.
            retry_base_local: 10,
            retry_base_relay: 400,
            resolver: None,
            mx_port: 25,
            ca_file: None,
        }
    }
}

impl Tuning {
    pub fn from_env() -> Tuning {
        Tuning::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Tuning {
        let secs = |name: &str| {
            get(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
        };
        let d = Tuning::default();
        Tuning {
            command_timeout: secs("RSMTPD_SMTP_TIMEOUT")
                .map_or(d.command_timeout, Duration::from_secs),
            data_window: secs("RSMTPD_SMTP_DATA_WINDOW").map_or(d.data_window, Duration::from_secs),
            retry_base_local: secs("RSMTPD_RETRY_BASE_LOCAL").unwrap_or(d.retry_base_local),
            retry_base_relay: secs("RSMTPD_RETRY_BASE_RELAY").unwrap_or(d.retry_base_relay),
            resolver: get("RSMTPD_RESOLVER").and_then(|v| v.trim().parse().ok()),
            mx_port: get("RSMTPD_MX_PORT")
                .and_then(|v| v.trim().parse().ok())
                .filter(|p| *p > 0)
                .unwrap_or(d.mx_port),
            ca_file: get("SSL_CERT_FILE")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from),
        }
    }
}

/// Where mbox deliveries go: `/var/mail`, or `RSMTPD_MAIL_SPOOL` (an
/// absolute path; for tests, which cannot write /var/mail as another user).
pub fn mail_spool() -> std::path::PathBuf {
    std::env::var_os("RSMTPD_MAIL_SPOOL")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| std::path::PathBuf::from("/var/mail"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_fallbacks() {
        let t = Tuning::from_lookup(|n| match n {
            "RSMTPD_SMTP_TIMEOUT" => Some("2".into()),
            "RSMTPD_SMTP_DATA_WINDOW" => Some("nope".into()),
            "RSMTPD_RETRY_BASE_LOCAL" => Some("0".into()),
            _ => None,
        });
        assert_eq!(t.command_timeout, Duration::from_secs(2));
        assert_eq!(t.data_window, Tuning::default().data_window);
        assert_eq!(t.retry_base_local, 10);
    }
}
