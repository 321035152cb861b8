//! One error type per concern: reading certificates and keys, signing in
//! the crypto process, and building rustls configurations.

use std::path::PathBuf;

/// Certificates, keys and CA files.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("no certificate found")]
    NoCertificate,
    #[error("no private key found")]
    NoPrivateKey,
    #[error("{0} private keys found, expected exactly one")]
    MultiplePrivateKeys(usize),
    #[error("no usable CA certificate found ({invalid} could not be parsed)")]
    NoUsableCa { invalid: usize },
    #[error("malformed certificate: {0}")]
    MalformedCertificate(&'static str),
    #[error("certificate rejected: {0}")]
    BadCertificate(String),
    #[error("unsupported private key: {0}")]
    UnsupportedKey(String),
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Signing on behalf of another process (crypto process side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no key with index {0}")]
    UnknownKey(usize),
    #[error("key {index} cannot sign with signature scheme 0x{scheme:04x}")]
    UnsupportedScheme { index: usize, scheme: u16 },
    #[error("signing failed: {0}")]
    Failed(String),
}

/// Building a rustls configuration, or checking the strings that shape it.
/// The Display texts are meant to be shown as config diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("protocol '{0}' is not supported: rustls speaks TLSv1.2 and TLSv1.3 only")]
    UnsupportedProtocol(String),
    #[error(
        "unknown protocol '{0}': expected all, default, secure, legacy, tlsv1.2 or tlsv1.3, optionally preceded by '!'"
    )]
    UnknownProtocol(String),
    #[error("protocols leave no TLS version enabled")]
    NoProtocol,
    #[error(
        "cipher '{0}' is not supported: rustls offers only {list}",
        list = crate::options::supported_cipher_names()
    )]
    UnknownCipher(String),
    #[error("ciphers leave no cipher suite enabled")]
    NoCipher,
    #[error("none of the chosen ciphers can be used with the enabled protocols")]
    NoSuiteForProtocols,
    #[error("a TLS listener needs at least one pki")]
    NoPki,
    #[error("pki {pki}: {source}")]
    Pki {
        pki: String,
        #[source]
        source: PkiError,
    },
    #[error("client certificate: {0}")]
    ClientCertificate(#[source] PkiError),
    #[error("verify requires a CA to check client certificates against")]
    VerifyWithoutCa,
    #[error("cannot build certificate verifier: {0}")]
    Verifier(String),
    #[error("'{0}' is not a valid host name or address for TLS")]
    InvalidServerName(String),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}
