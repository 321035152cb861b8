//! TLS for rsmtpd: certificates, rustls configurations, and signing keys
//! held by another process.
//!
//! # Who holds what
//!
//! Private keys are read only by the **crypto** process. It loads each
//! `pki`'s key into a [`KeyHolder`], which checks the key against the
//! certificate and answers with a [`PublicKeyInfo`] (an index, the key
//! algorithm and the signature schemes it supports). That description,
//! never the key, travels over IPC.
//!
//! The **smtp** process (inbound) and the **mta** process (outbound) hold
//! the public certificate chains and a [`RemoteKey`] per key: a rustls
//! [`SigningKey`](rustls::sign::SigningKey) that forwards every handshake
//! signature to the crypto process through a [`SignBackend`] (the blocking
//! IPC call) and gets the signature back.
//!
//! With those, smtp builds one [`server_config`] per listener (SNI picks
//! among the listener's pkis, optional client certificate verification) and
//! mta builds [`client_config`]s (opportunistic or verified, optionally with
//! a client certificate). [`options`] maps OpenSMTPD's `protocols` and
//! `ciphers` strings onto rustls, and the config checker can call
//! [`protocol_versions`] and [`cipher_suites`] to validate them early.
//! [`tls_info`] describes a finished handshake for Received headers and logs.
//!
//! Nothing here installs a process-wide crypto provider: every builder is
//! given the ring provider explicitly.

pub mod client;
pub mod error;
pub mod info;
pub mod keys;
pub mod options;
pub mod pki;
pub mod remote;
pub mod server;

#[cfg(test)]
mod testutil;

pub use client::{ClientOptions, Verify, client_config, server_name, system_roots};
pub use error::{PkiError, SignError, TlsConfigError};
pub use info::{TlsInfo, tls_info};
pub use keys::{KeyAlgorithm, KeyHolder, PublicKeyInfo};
pub use options::{cipher_suites, protocol_versions};
pub use pki::{cert_names, name_matches, read_ca_file, read_cert_chain, read_private_key};
pub use remote::{RemoteKey, SignBackend};
pub use server::{ServerOptions, ServerPki, server_config};
