//! Sans-IO SMTP protocol cores: bytes in, events and bytes out. No sockets,
//! no clocks, no async: the daemon wraps these state machines in thin I/O code.
//!
//! - [`address`]: RFC 5321 paths and RFC 3461 xtext.
//! - [`command`]: one command line into a [`command::Command`].
//! - [`reply`]: replies, their wire form and a strict client-side parser.
//! - [`data`]: the DATA reader (CRLF.CRLF framing, dot-unstuffing, limits).
//! - [`server`]: the server session state machine.
//! - [`received`]: the `Received:` header.
//! - [`sasl`]: the PLAIN and LOGIN exchanges of AUTH, decoded strictly.

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod received;
pub mod reply;
pub mod sasl;
pub mod server;
