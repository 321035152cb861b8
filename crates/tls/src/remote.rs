//! The signing key smtp and mta hold: it knows which schemes the real key
//! supports and asks the crypto process for every signature.

use std::sync::Arc;

use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::keys::PublicKeyInfo;

/// Whatever carries a sign request to the key's holder (an IPC round trip
/// in the daemon). It blocks until the signature or an error comes back.
pub trait SignBackend: Send + Sync + std::fmt::Debug {
    fn sign(&self, index: usize, scheme: u16, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// A [`SigningKey`] whose private half lives in another process.
#[derive(Debug, Clone)]
pub struct RemoteKey {
    info: PublicKeyInfo,
    schemes: Vec<SignatureScheme>,
    backend: Arc<dyn SignBackend>,
}

impl RemoteKey {
    pub fn new(info: PublicKeyInfo, backend: Arc<dyn SignBackend>) -> Self {
        let schemes = info
            .schemes
            .iter()
            .copied()
            .map(SignatureScheme::from)
            .collect();
        Self {
            info,
            schemes,
            backend,
        }
    }

    pub fn info(&self) -> &PublicKeyInfo {
        &self.info
    }
}

impl SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // The key's order, not the peer's: that is what rustls's own keys do.
        let scheme = self.schemes.iter().find(|s| offered.contains(s))?;
        Some(Box::new(RemoteSigner {
            index: self.info.index,
            scheme: *scheme,
            backend: Arc::clone(&self.backend),
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.info.algorithm.to_rustls()
    }
}

#[derive(Debug)]
struct RemoteSigner {
    index: usize,
    scheme: SignatureScheme,
    backend: Arc<dyn SignBackend>,
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.backend
            .sign(self.index, u16::from(self.scheme), message)
            .map_err(|e| rustls::Error::General(format!("remote signing failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use crate::testutil::{
        KeyKind, LocalBackend, Side, TestCa, connect, exchange, remote_key, self_signed,
    };
    use crate::{ClientOptions, ServerOptions, ServerPki, Verify, client_config, server_config};

    fn server_with(pki: &crate::testutil::TestCert, protocols: &str) -> Arc<rustls::ServerConfig> {
        server_config(ServerOptions {
            pkis: vec![ServerPki {
                name: "test".to_owned(),
                chain: pki.chain.clone(),
                key: remote_key(pki),
            }],
            client_ca: None,
            verify_client: false,
            protocols: Some(protocols.to_owned()),
            ciphers: None,
        })
        .unwrap()
    }

    fn check_handshake(kind: KeyKind, protocols: &str, expected: rustls::ProtocolVersion) {
        let ca = TestCa::new("Remote CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(&["mx.example.org"], kind);
        let client = client_config(ClientOptions {
            verify: Verify::Roots(Arc::new(ca.roots())),
            client_cert: None,
            protocols: Some(protocols.to_owned()),
            ciphers: None,
        })
        .unwrap();
        let (mut c, mut s) = connect(&client, &server_with(&leaf, protocols), "mx.example.org");
        exchange(&mut c, &mut s).unwrap();
        assert_eq!(c.protocol_version(), Some(expected));
        assert_eq!(s.protocol_version(), Some(expected));
    }

    #[test]
    fn handshakes_with_every_key_type_and_version() {
        for kind in [KeyKind::Rsa, KeyKind::EcdsaP256, KeyKind::Ed25519] {
            check_handshake(kind, "tlsv1.3", rustls::ProtocolVersion::TLSv1_3);
            check_handshake(kind, "tlsv1.2", rustls::ProtocolVersion::TLSv1_2);
        }
    }

    #[test]
    fn choose_scheme_follows_the_key_order_and_the_offer() {
        let rsa = self_signed(&["a.example"], KeyKind::Rsa);
        let key = remote_key(&rsa);
        assert_eq!(key.algorithm(), SignatureAlgorithm::RSA);
        let offered = [
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let signer = key.choose_scheme(&offered).unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
        assert!(
            key.choose_scheme(&[
                SignatureScheme::ED25519,
                SignatureScheme::ECDSA_NISTP256_SHA256
            ])
            .is_none()
        );
        assert!(key.choose_scheme(&[]).is_none());
    }

    #[derive(Debug)]
    struct Failing;

    impl SignBackend for Failing {
        fn sign(&self, _: usize, _: u16, _: &[u8]) -> Result<Vec<u8>, String> {
            Err("crypto process gone".to_owned())
        }
    }

    #[test]
    fn backend_failure_is_a_rustls_error() {
        let info = PublicKeyInfo {
            index: 0,
            algorithm: KeyAlgorithm::Ed25519,
            schemes: vec![u16::from(SignatureScheme::ED25519)],
        };
        let key = RemoteKey::new(info, Arc::new(Failing));
        let signer = key.choose_scheme(&[SignatureScheme::ED25519]).unwrap();
        match signer.sign(b"x") {
            Err(rustls::Error::General(text)) => assert!(text.contains("crypto process gone")),
            other => panic!("unexpected {other:?}"),
        }

        // In a handshake the server fails, and the client does not succeed.
        let cert = self_signed(&["a.example"], KeyKind::Ed25519);
        let config = server_config(ServerOptions {
            pkis: vec![ServerPki {
                name: "a".to_owned(),
                chain: cert.chain.clone(),
                key: Arc::new(key),
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
            protocols: None,
            ciphers: None,
        })
        .unwrap();
        let (mut c, mut s) = connect(&client, &config, "a.example");
        let failure = exchange(&mut c, &mut s).unwrap_err();
        assert_eq!(failure.side, Side::Server);
    }

    #[test]
    fn wrong_signature_is_caught_by_the_client() {
        // A backend signing with the wrong key: the client must notice, even
        // with Verify::Nothing.
        let real = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let other = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let backend = LocalBackend::new(&other);
        let info = backend.info.clone();
        let key = RemoteKey::new(info, Arc::new(backend));
        let config = server_config(ServerOptions {
            pkis: vec![ServerPki {
                name: "a".to_owned(),
                chain: real.chain.clone(),
                key: Arc::new(key),
            }],
            client_ca: None,
            verify_client: false,
            protocols: None,
            ciphers: None,
        })
        .unwrap();
        for protocols in ["tlsv1.3", "tlsv1.2"] {
            let client = client_config(ClientOptions {
                verify: Verify::Nothing,
                client_cert: None,
                protocols: Some(protocols.to_owned()),
                ciphers: None,
            })
            .unwrap();
            let (mut c, mut s) = connect(&client, &config, "a.example");
            let failure = exchange(&mut c, &mut s).unwrap_err();
            assert_eq!(failure.side, Side::Client, "{protocols}");
        }
    }
}
