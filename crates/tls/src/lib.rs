//! TLS for rsmtpd.
