//! What a finished handshake negotiated, for Received headers and logs.

use rustls::{CommonState, ProtocolVersion};
use serde::{Deserialize, Serialize};

use crate::options::{iana_name, suite_bits};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// e.g. "TLSv1.3"
    pub version: String,
    /// IANA name, e.g. TLS_AES_256_GCM_SHA384
    pub cipher: String,
    /// Symmetric key bits: 128 or 256.
    pub bits: u16,
    /// Whether the peer's certificate was verified.
    pub verified: bool,
}

/// The negotiated parameters, or `None` before the handshake has settled them.
pub fn tls_info(conn: &CommonState, verified: bool) -> Option<TlsInfo> {
    let version = match conn.protocol_version()? {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        // rustls negotiates nothing else; keep whatever it says rather than fail.
        other => format!("{other:?}"),
    };
    let suite = conn.negotiated_cipher_suite()?;
    let cipher = match iana_name(suite) {
        Some(name) => name.to_owned(),
        None => format!("{:?}", suite.suite()),
    };
    Some(TlsInfo {
        version,
        cipher,
        bits: suite_bits(suite).unwrap_or(0),
        verified,
    })
}

impl TlsInfo {
    /// The comment OpenSMTPD puts in its Received header (inside the
    /// parentheses): `TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO`.
    pub fn received_clause(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.version,
            self.cipher,
            self.bits,
            if self.verified { "YES" } else { "NO" }
        )
    }

    /// `version=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256`
    pub fn log_form(&self) -> String {
        format!(
            "version={}, cipher={}, bits={}",
            self.version, self.cipher, self.bits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{KeyKind, connect, exchange, remote_key, self_signed};
    use crate::{ClientOptions, ServerOptions, ServerPki, Verify, client_config, server_config};

    fn negotiate(protocols: &str, ciphers: &str) -> (Option<TlsInfo>, TlsInfo, TlsInfo) {
        let cert = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let server = server_config(ServerOptions {
            pkis: vec![ServerPki {
                name: "a".to_owned(),
                chain: cert.chain.clone(),
                key: remote_key(&cert),
            }],
            client_ca: None,
            verify_client: false,
            protocols: None,
            ciphers: None,
        })
        .unwrap();
        let client = client_config(ClientOptions {
            verify: Verify::Nothing,
            client_cert: None,
            protocols: Some(protocols.to_owned()),
            ciphers: Some(ciphers.to_owned()),
        })
        .unwrap();
        let (mut c, mut s) = connect(&client, &server, "a.example");
        let before = tls_info(&c, false);
        exchange(&mut c, &mut s).unwrap();
        (
            before,
            tls_info(&c, false).unwrap(),
            tls_info(&s, true).unwrap(),
        )
    }

    #[test]
    fn tls13() {
        let (before, client, server) = negotiate("tlsv1.3", "TLS_AES_256_GCM_SHA384");
        assert_eq!(before, None);
        let expected = TlsInfo {
            version: "TLSv1.3".to_owned(),
            cipher: "TLS_AES_256_GCM_SHA384".to_owned(),
            bits: 256,
            verified: false,
        };
        assert_eq!(client, expected);
        assert_eq!(
            client.received_clause(),
            "TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO"
        );
        assert_eq!(
            client.log_form(),
            "version=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256"
        );
        assert_eq!(
            server.received_clause(),
            "TLSv1.3:TLS_AES_256_GCM_SHA384:256:YES"
        );
    }

    #[test]
    fn tls12() {
        let (_, client, _) = negotiate("tlsv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256");
        assert_eq!(
            client.received_clause(),
            "TLSv1.2:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:128:NO"
        );
    }
}
