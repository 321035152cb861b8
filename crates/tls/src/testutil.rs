//! Test certificates (rcgen) and an in-memory handshake pump.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::SigningKey;
use rustls::{ClientConnection, ConnectionCommon, RootCertStore, ServerConnection};

use crate::keys::{KeyHolder, PublicKeyInfo};
use crate::remote::{RemoteKey, SignBackend};

#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Rsa,
    EcdsaP256,
    Ed25519,
}

impl KeyKind {
    pub fn key_pair(self) -> KeyPair {
        match self {
            // ring cannot generate RSA keys, so one fixed key serves.
            KeyKind::Rsa => KeyPair::from_pem(include_str!("testdata/rsa2048.pkcs8.pem")).unwrap(),
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        }
    }
}

pub struct TestCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl TestCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

pub struct TestCa {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(common_name: &str, kind: KeyKind) -> Self {
        let key = kind.key_pair();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn leaf(&self, names: &[&str], kind: KeyKind) -> TestCert {
        let key = kind.key_pair();
        let params = leaf_params(names);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCert {
            chain: vec![cert.der().clone()],
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        store.add(self.cert.clone()).unwrap();
        store
    }
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap()
}

pub fn self_signed(names: &[&str], kind: KeyKind) -> TestCert {
    let key = kind.key_pair();
    let cert = leaf_params(names).self_signed(&key).unwrap();
    TestCert {
        chain: vec![cert.der().clone()],
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
}

/// A certificate with no subjectAltName, only a subject CN.
pub fn cn_only(common_name: &str, kind: KeyKind) -> CertificateDer<'static> {
    let key = kind.key_pair();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.self_signed(&key).unwrap().der().clone()
}

/// The crypto process, in-process: a KeyHolder behind the backend trait.
#[derive(Debug)]
pub struct LocalBackend {
    holder: KeyHolder,
    pub info: PublicKeyInfo,
}

impl LocalBackend {
    pub fn new(cert: &TestCert) -> Self {
        let mut holder = KeyHolder::new();
        let info = holder.add(&cert.chain, cert.key()).unwrap();
        Self { holder, info }
    }
}

impl SignBackend for LocalBackend {
    fn sign(&self, index: usize, scheme: u16, message: &[u8]) -> Result<Vec<u8>, String> {
        self.holder
            .sign(index, scheme, message)
            .map_err(|e| e.to_string())
    }
}

pub fn remote_key(cert: &TestCert) -> Arc<dyn SigningKey> {
    let backend = LocalBackend::new(cert);
    let info = backend.info.clone();
    Arc::new(RemoteKey::new(info, Arc::new(backend)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

#[derive(Debug)]
pub struct Failure {
    pub side: Side,
    pub error: rustls::Error,
}

pub fn connect(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
    host: &str,
) -> (ClientConnection, ServerConnection) {
    connect_to(client, server, crate::server_name(host).unwrap())
}

pub fn connect_to(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
    name: ServerName<'static>,
) -> (ClientConnection, ServerConnection) {
    (
        ClientConnection::new(Arc::clone(client), name).unwrap(),
        ServerConnection::new(Arc::clone(server)).unwrap(),
    )
}

/// Moves everything `from` has to send into `to`; errors are `to`'s.
fn transfer<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
) -> Result<usize, rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        to.process_new_packets()?;
    }
    Ok(buf.len())
}

pub fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), Failure> {
    for _ in 0..32 {
        let to_server = transfer(c, s).map_err(|error| Failure {
            side: Side::Server,
            error,
        })?;
        let to_client = transfer(s, c).map_err(|error| Failure {
            side: Side::Client,
            error,
        })?;
        if to_server == 0 && to_client == 0 {
            break;
        }
    }
    assert!(
        !c.is_handshaking() && !s.is_handshaking(),
        "handshake stalled"
    );
    Ok(())
}

/// A handshake, then a line each way to prove the keys agree.
pub fn exchange(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), Failure> {
    handshake(c, s)?;
    let mut buf = [0u8; 64];
    c.writer().write_all(b"EHLO client.example").unwrap();
    transfer(c, s).map_err(|error| Failure {
        side: Side::Server,
        error,
    })?;
    let n = s.reader().read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"EHLO client.example");
    s.writer().write_all(b"250 ok").unwrap();
    transfer(s, c).map_err(|error| Failure {
        side: Side::Client,
        error,
    })?;
    let n = c.reader().read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"250 ok");
    Ok(())
}
