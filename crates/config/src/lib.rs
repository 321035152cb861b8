//! smtpd.conf: OpenSMTPD's configuration language, parsed into [`model::Config`].

pub mod check;
pub mod diag;
pub mod lexer;
pub mod model;
pub mod parser;
pub mod ruleset;
