//! The server side (smtp process): one rustls config per listener, choosing
//! among the listener's pkis by SNI.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SigningKey};

use crate::error::{PkiError, TlsConfigError};
use crate::options::provider_and_versions;
use crate::pki::{cert_names, name_matches};

/// One `pki` of the config, as the smtp process has it: no private key, just
/// something that signs (a [`crate::RemoteKey`] in the daemon).
#[derive(Debug, Clone)]
pub struct ServerPki {
    /// The pki name from the config, lower-case.
    pub name: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<dyn SigningKey>,
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The listener's pkis in config order; the first is the fallback.
    pub pkis: Vec<ServerPki>,
    pub client_ca: Option<Arc<RootCertStore>>,
    /// Require a client certificate that chains to `client_ca`.
    pub verify_client: bool,
    pub protocols: Option<String>,
    pub ciphers: Option<String>,
}

pub fn server_config(opts: ServerOptions) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let (provider, versions) =
        provider_and_versions(opts.protocols.as_deref(), opts.ciphers.as_deref())?;
    let resolver = Arc::new(SniResolver::new(opts.pkis)?);
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;
    let builder = if opts.verify_client {
        let ca = opts.client_ca.ok_or(TlsConfigError::VerifyWithoutCa)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(ca, provider)
            .build()
            .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(builder.with_cert_resolver(resolver)))
}

#[derive(Debug)]
struct SniPki {
    name: String,
    cert_names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks the certificate for a ClientHello, as OpenSMTPD does: the first pki
/// whose certificate covers the SNI name, else the first whose config name is
/// the SNI name, else the first.
#[derive(Debug)]
struct SniResolver {
    pkis: Vec<SniPki>,
}

impl SniResolver {
    fn new(pkis: Vec<ServerPki>) -> Result<Self, TlsConfigError> {
        if pkis.is_empty() {
            return Err(TlsConfigError::NoPki);
        }
        let pkis = pkis
            .into_iter()
            .map(|pki| {
                let leaf = pki.chain.first().ok_or_else(|| TlsConfigError::Pki {
                    pki: pki.name.clone(),
                    source: PkiError::NoCertificate,
                })?;
                let names = cert_names(leaf).map_err(|source| TlsConfigError::Pki {
                    pki: pki.name.clone(),
                    source,
                })?;
                Ok(SniPki {
                    name: pki.name,
                    cert_names: names,
                    key: Arc::new(CertifiedKey::new(pki.chain, pki.key)),
                })
            })
            .collect::<Result<Vec<_>, TlsConfigError>>()?;
        Ok(Self { pkis })
    }

    fn choose(&self, sni: Option<&str>) -> Option<&SniPki> {
        let by_sni = sni.and_then(|sni| {
            self.pkis
                .iter()
                .find(|pki| pki.cert_names.iter().any(|n| name_matches(n, sni)))
                .or_else(|| {
                    let sni = sni.strip_suffix('.').unwrap_or(sni);
                    self.pkis
                        .iter()
                        .find(|pki| pki.name.eq_ignore_ascii_case(sni))
                })
        });
        by_sni.or_else(|| self.pkis.first())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name())
            .map(|pki| Arc::clone(&pki.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{KeyKind, Side, TestCa, TestCert, connect, exchange, remote_key};
    use crate::{ClientOptions, Verify, client_config};

    fn pki(name: &str, cert: &TestCert) -> ServerPki {
        ServerPki {
            name: name.to_owned(),
            chain: cert.chain.clone(),
            key: remote_key(cert),
        }
    }

    fn options(pkis: Vec<ServerPki>) -> ServerOptions {
        ServerOptions {
            pkis,
            client_ca: None,
            verify_client: false,
            protocols: None,
            ciphers: None,
        }
    }

    fn any_client() -> Arc<rustls::ClientConfig> {
        client_config(ClientOptions {
            verify: Verify::Nothing,
            client_cert: None,
            protocols: None,
            ciphers: None,
        })
        .unwrap()
    }

    /// The leaf certificate the client saw when connecting as `host`.
    fn seen(server: &Arc<rustls::ServerConfig>, host: &str) -> CertificateDer<'static> {
        let (mut c, mut s) = connect(&any_client(), server, host);
        exchange(&mut c, &mut s).unwrap();
        c.peer_certificates().unwrap()[0].clone()
    }

    #[test]
    fn sni_picks_the_certificate() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let first = ca.leaf(&["first.example.com"], KeyKind::EcdsaP256);
        let mx = ca.leaf(&["mx.example.org", "*.example.net"], KeyKind::Ed25519);
        let other = ca.leaf(&["unrelated.example"], KeyKind::Rsa);
        let config = server_config(options(vec![
            pki("first", &first),
            pki("mx", &mx),
            pki("mail.example.com", &other),
        ]))
        .unwrap();
        assert_eq!(seen(&config, "first.example.com"), first.chain[0]);
        assert_eq!(seen(&config, "MX.example.org"), mx.chain[0]);
        assert_eq!(seen(&config, "smtp.example.net"), mx.chain[0]);
        // No certificate names it, but a pki is called so.
        assert_eq!(seen(&config, "mail.example.com"), other.chain[0]);
        // Nothing matches: the first.
        assert_eq!(seen(&config, "nowhere.example"), first.chain[0]);
        assert_eq!(seen(&config, "a.b.example.net"), first.chain[0]);
        // No SNI at all (rustls sends none for an address): the first.
        assert_eq!(seen(&config, "192.0.2.1"), first.chain[0]);
    }

    #[test]
    fn certificate_names_win_over_pki_names() {
        let a = crate::testutil::self_signed(&["a.example"], KeyKind::EcdsaP256);
        let b = crate::testutil::self_signed(&["b.example"], KeyKind::EcdsaP256);
        // pki "b.example" holds a's certificate; b's certificate names b.example.
        let config = server_config(options(vec![pki("b.example", &a), pki("other", &b)])).unwrap();
        assert_eq!(seen(&config, "b.example"), b.chain[0]);
    }

    #[test]
    fn resolver_choice() {
        let a = crate::testutil::self_signed(&["a.example"], KeyKind::EcdsaP256);
        let b = crate::testutil::self_signed(&["*.b.example"], KeyKind::EcdsaP256);
        let resolver = SniResolver::new(vec![pki("one", &a), pki("two", &b)]).unwrap();
        let pick = |sni| resolver.choose(sni).map(|p| p.name.as_str());
        assert_eq!(pick(None), Some("one"));
        assert_eq!(pick(Some("x.b.example")), Some("two"));
        assert_eq!(pick(Some("x.b.example.")), Some("two"));
        assert_eq!(pick(Some("TWO")), Some("two"));
        assert_eq!(pick(Some("two.")), Some("two"));
        assert_eq!(pick(Some("three")), Some("one"));
    }

    #[test]
    fn configuration_errors() {
        assert!(matches!(
            server_config(options(vec![])),
            Err(TlsConfigError::NoPki)
        ));
        let a = crate::testutil::self_signed(&["a.example"], KeyKind::EcdsaP256);
        let mut opts = options(vec![pki("a", &a)]);
        opts.verify_client = true;
        assert!(matches!(
            server_config(opts),
            Err(TlsConfigError::VerifyWithoutCa)
        ));
        let mut empty = pki("empty", &a);
        empty.chain.clear();
        assert!(matches!(
            server_config(options(vec![empty])),
            Err(TlsConfigError::Pki { pki, source: PkiError::NoCertificate }) if pki == "empty"
        ));
        let mut opts = options(vec![pki("a", &a)]);
        opts.protocols = Some("tlsv1.1".to_owned());
        assert!(matches!(
            server_config(opts),
            Err(TlsConfigError::UnsupportedProtocol(_))
        ));
    }

    fn verifying_server(
        ca: &TestCa,
        cert: &TestCert,
        protocols: &str,
    ) -> Arc<rustls::ServerConfig> {
        let mut opts = options(vec![pki("mx", cert)]);
        opts.verify_client = true;
        opts.client_ca = Some(Arc::new(ca.roots()));
        opts.protocols = Some(protocols.to_owned());
        server_config(opts).unwrap()
    }

    fn client_with(cert: Option<&TestCert>) -> Arc<rustls::ClientConfig> {
        client_config(ClientOptions {
            verify: Verify::Nothing,
            client_cert: cert.map(|c| (c.chain.clone(), remote_key(c))),
            protocols: None,
            ciphers: None,
        })
        .unwrap()
    }

    #[test]
    fn verify_client() {
        let ca = TestCa::new("Client CA", KeyKind::EcdsaP256);
        let stranger_ca = TestCa::new("Other CA", KeyKind::EcdsaP256);
        let server_cert = ca.leaf(&["mx.example.org"], KeyKind::EcdsaP256);
        let good = ca.leaf(&["client.example.org"], KeyKind::EcdsaP256);
        let foreign = stranger_ca.leaf(&["client.example.org"], KeyKind::EcdsaP256);
        let self_made = crate::testutil::self_signed(&["client.example.org"], KeyKind::Ed25519);

        for protocols in ["tlsv1.3", "tlsv1.2"] {
            let server = verifying_server(&ca, &server_cert, protocols);

            let (mut c, mut s) = connect(&client_with(Some(&good)), &server, "mx.example.org");
            exchange(&mut c, &mut s).unwrap();
            assert_eq!(s.peer_certificates().unwrap()[0], good.chain[0]);

            let (mut c, mut s) = connect(&client_with(None), &server, "mx.example.org");
            let failure = exchange(&mut c, &mut s).unwrap_err();
            assert_eq!(failure.side, Side::Server, "{protocols}");
            assert_eq!(failure.error, rustls::Error::NoCertificatesPresented);

            for bad in [&foreign, &self_made] {
                let (mut c, mut s) = connect(&client_with(Some(bad)), &server, "mx.example.org");
                let failure = exchange(&mut c, &mut s).unwrap_err();
                assert_eq!(failure.side, Side::Server, "{protocols}");
                assert!(
                    matches!(failure.error, rustls::Error::InvalidCertificate(_)),
                    "{protocols}: {:?}",
                    failure.error
                );
            }
        }
    }

    #[test]
    fn without_verify_no_client_certificate_is_asked() {
        let cert = crate::testutil::self_signed(&["mx.example.org"], KeyKind::EcdsaP256);
        let client_cert = crate::testutil::self_signed(&["c.example"], KeyKind::EcdsaP256);
        let server = server_config(options(vec![pki("mx", &cert)])).unwrap();
        let (mut c, mut s) = connect(&client_with(Some(&client_cert)), &server, "mx.example.org");
        exchange(&mut c, &mut s).unwrap();
        assert!(s.peer_certificates().is_none());
    }
}
