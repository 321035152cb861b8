//! The client side (mta process): configs for outbound sessions.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{PkiError, TlsConfigError};
use crate::options::provider_and_versions;
use crate::pki::read_ca_file;

/// How the server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Opportunistic TLS, OpenSMTPD's default: any certificate is accepted,
    /// but the handshake signatures are still checked against it, so the
    /// session is at least bound to whoever holds that certificate's key.
    Nothing,
    /// The certificate must chain to these roots and name the server.
    Roots(Arc<RootCertStore>),
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub verify: Verify,
    /// A certificate to present if the server asks (mta's relay `pki`).
    pub client_cert: Option<(Vec<CertificateDer<'static>>, Arc<dyn SigningKey>)>,
    pub protocols: Option<String>,
    pub ciphers: Option<String>,
}

pub fn client_config(opts: ClientOptions) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let (provider, versions) =
        provider_and_versions(opts.protocols.as_deref(), opts.ciphers.as_deref())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;
    let builder = match opts.verify {
        Verify::Roots(roots) => {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            })),
    };
    let config = match opts.client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            if chain.is_empty() {
                return Err(TlsConfigError::ClientCertificate(PkiError::NoCertificate));
            }
            let resolver: Arc<dyn ResolvesClientCert> =
                Arc::new(SingleCertAndKey::from(CertifiedKey::new(chain, key)));
            builder.with_client_cert_resolver(resolver)
        }
    };
    Ok(Arc::new(config))
}

/// The name to connect to `host` under: a host name with at most one trailing
/// dot removed (certificates never carry it), an IP address, or an SMTP
/// address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsConfigError> {
    let invalid = || TlsConfigError::InvalidServerName(host.to_owned());
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let address = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => inner
                .get(5..)
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6),
            _ => inner.parse::<IpAddr>().ok(),
        };
        return address
            .map(|a| ServerName::IpAddress(a.into()))
            .ok_or_else(invalid);
    }
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(address.into()));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // Only one dot goes: "a.example.." is not a host name.
    if name.ends_with('.') {
        return Err(invalid());
    }
    ServerName::try_from(name.to_owned()).map_err(|_| invalid())
}

/// The system CA bundle (or any CA file) as roots for [`Verify::Roots`].
pub fn system_roots(path: &Path) -> Result<RootCertStore, PkiError> {
    let pem = std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })?;
    read_ca_file(&pem)
}

/// Accepts any certificate; checks the handshake signatures properly.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        KeyKind, Side, TestCa, TestCert, connect, connect_to, exchange, remote_key, self_signed,
    };
    use crate::{ServerOptions, ServerPki, server_config};
    use rustls::pki_types::{IpAddr as PkiIpAddr, Ipv4Addr, Ipv6Addr};

    fn server_for(cert: &TestCert) -> Arc<rustls::ServerConfig> {
        server_config(ServerOptions {
            pkis: vec![ServerPki {
                name: "mx".to_owned(),
                chain: cert.chain.clone(),
                key: remote_key(cert),
            }],
            client_ca: None,
            verify_client: false,
            protocols: None,
            ciphers: None,
        })
        .unwrap()
    }

    fn client(verify: Verify, protocols: &str) -> Arc<rustls::ClientConfig> {
        client_config(ClientOptions {
            verify,
            client_cert: None,
            protocols: Some(protocols.to_owned()),
            ciphers: None,
        })
        .unwrap()
    }

    fn roots(ca: &TestCa) -> Verify {
        Verify::Roots(Arc::new(ca.roots()))
    }

    #[test]
    fn verified_handshake() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(&["mx.example.org", "*.example.net"], KeyKind::Rsa);
        let server = server_for(&leaf);
        for protocols in ["tlsv1.3", "tlsv1.2"] {
            for host in ["mx.example.org", "MX.EXAMPLE.ORG.", "mail.example.net"] {
                let (mut c, mut s) = connect(&client(roots(&ca), protocols), &server, host);
                exchange(&mut c, &mut s).unwrap_or_else(|f| panic!("{host} {protocols}: {f:?}"));
            }
        }
    }

    #[test]
    fn wrong_ca_fails() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let other = TestCa::new("Other CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(&["mx.example.org"], KeyKind::EcdsaP256);
        let server = server_for(&leaf);
        for protocols in ["tlsv1.3", "tlsv1.2"] {
            let (mut c, mut s) =
                connect(&client(roots(&other), protocols), &server, "mx.example.org");
            let failure = exchange(&mut c, &mut s).unwrap_err();
            assert_eq!(failure.side, Side::Client);
            assert!(matches!(
                failure.error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ));
        }
        // A self-signed certificate is no better.
        let own = self_signed(&["mx.example.org"], KeyKind::EcdsaP256);
        let (mut c, mut s) = connect(
            &client(roots(&ca), "all"),
            &server_for(&own),
            "mx.example.org",
        );
        assert_eq!(exchange(&mut c, &mut s).unwrap_err().side, Side::Client);
    }

    #[test]
    fn name_mismatch_fails() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(&["mx.example.org", "*.example.net"], KeyKind::EcdsaP256);
        let server = server_for(&leaf);
        for host in [
            "mx2.example.org",
            "a.b.example.net",
            "example.net",
            "192.0.2.1",
        ] {
            let (mut c, mut s) = connect(&client(roots(&ca), "all"), &server, host);
            let failure = exchange(&mut c, &mut s).unwrap_err();
            assert_eq!(failure.side, Side::Client, "{host}");
            assert!(
                matches!(
                    failure.error,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    )
                ),
                "{host}: {:?}",
                failure.error
            );
        }
    }

    #[test]
    fn nothing_accepts_any_certificate() {
        for kind in [KeyKind::Rsa, KeyKind::EcdsaP256, KeyKind::Ed25519] {
            let own = self_signed(&["somewhere.example"], kind);
            let server = server_for(&own);
            for protocols in ["tlsv1.3", "tlsv1.2"] {
                let (mut c, mut s) = connect(
                    &client(Verify::Nothing, protocols),
                    &server,
                    "elsewhere.example",
                );
                exchange(&mut c, &mut s).unwrap();
                assert_eq!(c.peer_certificates().unwrap()[0], own.chain[0]);
            }
        }
    }

    #[test]
    fn client_certificate_through_remote_key() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let server_cert = ca.leaf(&["mx.example.org"], KeyKind::EcdsaP256);
        for kind in [KeyKind::Rsa, KeyKind::EcdsaP256, KeyKind::Ed25519] {
            let client_cert = ca.leaf(&["relay.example.com"], kind);
            let server = server_config(ServerOptions {
                pkis: vec![ServerPki {
                    name: "mx".to_owned(),
                    chain: server_cert.chain.clone(),
                    key: remote_key(&server_cert),
                }],
                client_ca: Some(Arc::new(ca.roots())),
                verify_client: true,
                protocols: None,
                ciphers: None,
            })
            .unwrap();
            for protocols in ["tlsv1.3", "tlsv1.2"] {
                let config = client_config(ClientOptions {
                    verify: roots(&ca),
                    client_cert: Some((client_cert.chain.clone(), remote_key(&client_cert))),
                    protocols: Some(protocols.to_owned()),
                    ciphers: None,
                })
                .unwrap();
                let (mut c, mut s) = connect(&config, &server, "mx.example.org");
                exchange(&mut c, &mut s).unwrap();
                assert_eq!(s.peer_certificates().unwrap()[0], client_cert.chain[0]);
            }
        }
    }

    #[test]
    fn client_options_errors() {
        let own = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let result = client_config(ClientOptions {
            verify: Verify::Nothing,
            client_cert: Some((vec![], remote_key(&own))),
            protocols: None,
            ciphers: None,
        });
        assert!(matches!(
            result,
            Err(TlsConfigError::ClientCertificate(PkiError::NoCertificate))
        ));
        let result = client_config(ClientOptions {
            verify: Verify::Roots(Arc::new(RootCertStore::empty())),
            client_cert: None,
            protocols: None,
            ciphers: None,
        });
        assert!(matches!(result, Err(TlsConfigError::Verifier(_))));
        let result = client_config(ClientOptions {
            verify: Verify::Nothing,
            client_cert: None,
            protocols: None,
            ciphers: Some("RC4-MD5".to_owned()),
        });
        assert!(matches!(result, Err(TlsConfigError::UnknownCipher(_))));
    }

    #[test]
    fn restricted_ciphers_are_used() {
        let own = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let server = server_for(&own);
        let config = client_config(ClientOptions {
            verify: Verify::Nothing,
            client_cert: None,
            protocols: None,
            ciphers: Some("ECDHE-ECDSA-CHACHA20-POLY1305".to_owned()),
        })
        .unwrap();
        let (mut c, mut s) = connect(&config, &server, "a.example");
        exchange(&mut c, &mut s).unwrap();
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(
            c.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        );
    }

    #[test]
    fn server_names() {
        let dns = |s: &str| match server_name(s).unwrap() {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            other => panic!("{s}: {other:?}"),
        };
        let ip = |s: &str| match server_name(s).unwrap() {
            ServerName::IpAddress(address) => address,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(dns("mx.example.org"), "mx.example.org");
        assert_eq!(dns("mx.example.org."), "mx.example.org");
        assert_eq!(dns("localhost"), "localhost");
        assert_eq!(
            ip("192.0.2.1"),
            PkiIpAddr::V4(Ipv4Addr::try_from("192.0.2.1").unwrap())
        );
        assert_eq!(
            ip("[192.0.2.1]"),
            PkiIpAddr::V4(Ipv4Addr::try_from("192.0.2.1").unwrap())
        );
        assert_eq!(
            ip("[IPv6:2001:db8::1]"),
            PkiIpAddr::V6(Ipv6Addr::try_from("2001:db8::1").unwrap())
        );
        assert_eq!(
            ip("[ipv6:::1]"),
            PkiIpAddr::V6(Ipv6Addr::try_from("::1").unwrap())
        );
        assert_eq!(
            ip("2001:db8::1"),
            PkiIpAddr::V6(Ipv6Addr::try_from("2001:db8::1").unwrap())
        );
        for bad in [
            "",
            ".",
            "mx.example.org..",
            "[]",
            "[mx.example.org]",
            "[IPv6:192.0.2.1]",
            "[IPv6:]",
            "[192.0.2.1",
            "bad name.example",
            "a..example",
            "-",
        ] {
            assert!(
                matches!(server_name(bad), Err(TlsConfigError::InvalidServerName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn system_roots_reads_a_file() {
        let ca = TestCa::new("File CA", KeyKind::EcdsaP256);
        let dir = std::env::temp_dir().join(format!("rsmtpd-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, &ca.cert_pem).unwrap();
        let store = system_roots(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(store.unwrap().len(), 1);
        assert!(matches!(
            system_roots(&dir.join("missing.pem")),
            Err(PkiError::Read { .. })
        ));
    }

    #[test]
    fn server_name_connects_with_literals() {
        // An address literal yields no SNI and is checked against IP SANs.
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(&["192.0.2.7"], KeyKind::EcdsaP256);
        let server = server_for(&leaf);
        let name = server_name("[192.0.2.7]").unwrap();
        let (mut c, mut s) = connect_to(&client(roots(&ca), "all"), &server, name);
        exchange(&mut c, &mut s).unwrap();
        assert_eq!(s.server_name(), None);
    }
}
