//! smtpd.conf: OpenSMTPD's configuration language, parsed into [`model::Config`].

pub mod model;
