//! TLS set-up for smtp and mta: the link to the crypto process that signs
//! their handshakes, and the rustls configurations built from smtpd.conf
//! with its public certificates. Everything here runs before the chroot
//! (CA files are read then); nothing here ever sees a private key.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use std::collections::HashMap;

use rsmtpd_config::model::{Config, Dispatcher, Listener, ListenerTls, PkiId};
use rsmtpd_ipc::BlockingChannel;
use rsmtpd_tls::{ClientOptions, RemoteKey, ServerOptions, ServerPki, SignBackend, Verify};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use crate::links::{FromCrypto, PkiPublic, ToCrypto};
use crate::roles::RoleError;

/// The system's CA bundle (Debian's ca-certificates), for verified relays.
/// `SSL_CERT_FILE` names another ([`crate::tuning::Tuning::ca_file`]).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest CA file read.
const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;

/// A blocking link to the crypto process. rustls signs synchronously in
/// the middle of a handshake, so the call blocks this process's event loop
/// for one round trip (an ECDSA signature takes tens of microseconds, an
/// RSA-2048 one about a millisecond).
#[derive(Debug)]
pub struct CryptoLink {
    link: Mutex<BlockingChannel<ToCrypto, FromCrypto>>,
}

impl CryptoLink {
    /// Connects and asks for the public side of every pki.
    pub fn connect(fd: OwnedFd) -> Result<(Arc<CryptoLink>, Vec<PkiPublic>), RoleError> {
        let mut link: BlockingChannel<ToCrypto, FromCrypto> = BlockingChannel::from_fd(fd)?;
        link.send(&ToCrypto::Describe, Vec::new())?;
        let pkis = match link.recv()? {
            Some((FromCrypto::Pkis(pkis), _)) => pkis,
            _ => return Err(RoleError::Setup("crypto: no certificates".into())),
        };
        Ok((
            Arc::new(CryptoLink {
                link: Mutex::new(link),
            }),
            pkis,
        ))
    }
}

impl SignBackend for CryptoLink {
    fn sign(&self, index: usize, scheme: u16, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let request = ToCrypto::Sign {
            key: index,
            scheme,
            message: message.to_vec(),
        };
        link.send(&request, Vec::new()).map_err(|e| e.to_string())?;
        match link.recv() {
            Ok(Some((FromCrypto::Signed(result), _))) => result,
            Ok(_) => Err("crypto: unexpected answer".into()),
            Err(e) => Err(format!("crypto: {e}")),
        }
    }
}

/// The certificates of the pkis, with keys that sign through `crypto`.
pub struct Certificates {
    pkis: Vec<PkiPublic>,
    crypto: Arc<CryptoLink>,
}

impl Certificates {
    pub fn new(pkis: Vec<PkiPublic>, crypto: Arc<CryptoLink>) -> Certificates {
        Certificates { pkis, crypto }
    }

    /// The chain and a remote signing key of pki `id`.
    pub fn pki(&self, id: PkiId) -> Option<ServerPki> {
        let p = self.pkis.get(id.0)?;
        let backend: Arc<dyn SignBackend> = self.crypto.clone();
        Some(ServerPki {
            name: p.name.clone(),
            chain: p
                .chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect(),
            key: Arc::new(RemoteKey::new(p.key.clone(), backend)),
        })
    }

    /// The server configuration of each listener (`None` without TLS),
    /// by listener index.
    pub fn server_configs(
        &self,
        config: &Config,
    ) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, RoleError> {
        config
            .listeners
            .iter()
            .map(|l| self.server_config(config, l))
            .collect()
    }

    fn server_config(
        &self,
        config: &Config,
        listener: &Listener,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, RoleError> {
        let verify_client = match listener.tls {
            ListenerTls::None => return Ok(None),
            ListenerTls::StartTls { verify_client, .. } | ListenerTls::Smtps { verify_client } => {
                verify_client
            }
        };
        let fail =
            |e: String| RoleError::Setup(format!("listener at line {}: {e}", listener.span.line));
        let ids = listener_pkis(config, listener);
        if ids.is_empty() {
            return Err(fail(format!(
                "TLS needs a certificate: declare pki {} or name one with `pki`",
                listener.hostname.as_deref().unwrap_or(&config.hostname)
            )));
        }
        let pkis = ids
            .into_iter()
            .map(|id| self.pki(id).ok_or_else(|| fail("pki missing".into())))
            .collect::<Result<Vec<_>, _>>()?;
        let client_ca = match listener.ca {
            Some(ca) => {
                let ca = config
                    .cas
                    .get(ca.0)
                    .ok_or_else(|| fail("ca missing".into()))?;
                Some(Arc::new(read_roots(&ca.cert).map_err(fail)?))
            }
            None => None,
        };
        let protocols = listener.protocols.clone();
        let ciphers = listener.ciphers.clone().or(config.smtp.ciphers.clone());
        rsmtpd_tls::server_config(ServerOptions {
            pkis,
            client_ca,
            verify_client,
            protocols,
            ciphers,
        })
        .map(Some)
        .map_err(|e| fail(e.to_string()))
    }
}

/// The two client configurations of a relay action: opportunistic TLS
/// accepts any certificate (as OpenSMTPD does by default), mandatory TLS
/// with verification checks it against the action's `ca` or the system's
/// roots.
pub struct ClientTls {
    pub unverified: Arc<rustls::ClientConfig>,
    pub verified: Arc<rustls::ClientConfig>,
}

impl Certificates {
    /// One [`ClientTls`] per relay action, by action name, and the defaults
    /// (system roots, no client certificate) under the empty name.
    pub fn client_configs(
        &self,
        config: &Config,
        system_roots: &Path,
    ) -> Result<HashMap<String, ClientTls>, RoleError> {
        let mut system: Option<Arc<RootCertStore>> = None;
        let mut out = HashMap::new();
        let defaults = rsmtpd_config::model::RelayDispatcher::default();
        let all = config
            .actions
            .iter()
            .filter_map(|a| match &a.dispatcher {
                Dispatcher::Relay(relay) => Some((a.name.as_str(), relay)),
                _ => None,
            })
            .chain(std::iter::once(("", &defaults)));
        for (name, relay) in all {
            let fail = |e: String| RoleError::Setup(format!("action {name}: {e}"));
            let roots = match relay.ca {
                Some(ca) => {
                    let ca = config
                        .cas
                        .get(ca.0)
                        .ok_or_else(|| fail("ca missing".into()))?;
                    Arc::new(read_roots(&ca.cert).map_err(fail)?)
                }
                None => system
                    .get_or_insert_with(|| {
                        Arc::new(read_roots(system_roots).unwrap_or_else(|e| {
                            crate::log_warn!(
                                "mta: no system CA certificates ({e}): verified TLS will fail"
                            );
                            RootCertStore::empty()
                        }))
                    })
                    .clone(),
            };
            let client_cert = match relay.pki {
                Some(id) => {
                    let pki = self.pki(id).ok_or_else(|| fail("pki missing".into()))?;
                    Some((pki.chain, pki.key))
                }
                None => None,
            };
            let build = |verify: Verify| {
                rsmtpd_tls::client_config(ClientOptions {
                    verify,
                    client_cert: client_cert.clone(),
                    protocols: relay.protocols.clone(),
                    ciphers: relay.ciphers.clone().or(config.smtp.ciphers.clone()),
                })
                .map_err(|e| fail(e.to_string()))
            };
            out.insert(
                name.to_owned(),
                ClientTls {
                    unverified: build(Verify::Nothing)?,
                    verified: build(Verify::Roots(roots))?,
                },
            );
        }
        Ok(out)
    }
}

/// A listener's pkis: the ones it names, else the one named like its host
/// name or the server's (OpenSMTPD's default).
fn listener_pkis(config: &Config, listener: &Listener) -> Vec<PkiId> {
    if !listener.pkis.is_empty() {
        return listener.pkis.clone();
    }
    let name = listener
        .hostname
        .as_deref()
        .unwrap_or(&config.hostname)
        .to_ascii_lowercase();
    config
        .pkis
        .iter()
        .position(|p| p.name == name)
        .map(|i| vec![PkiId(i)])
        .unwrap_or_default()
}

/// A CA bundle file.
pub fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pem = Vec::new();
    file.take(MAX_CA_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_CA_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CA_BYTES} bytes",
            path.display()
        ));
    }
    rsmtpd_tls::read_ca_file(&pem).map_err(|e| format!("{}: {e}", path.display()))
}
