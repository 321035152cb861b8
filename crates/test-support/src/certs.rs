//! Certificates for TLS tests, made with rcgen: a private CA and leaf
//! certificates it signs, written as PEM files a config can name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};

/// A test CA; its certificate is at [`TestCa::cert_path`].
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Key types the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    Rsa2048,
    Ed25519,
}

impl KeyType {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

fn key_pair(kind: KeyType) -> KeyPair {
    match kind {
        // rcgen cannot generate RSA keys with ring: ask openssl.
        KeyType::Rsa2048 => {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .output()
                .expect("openssl genpkey (the openssl package)");
            assert!(out.status.success(), "openssl genpkey failed");
            let pem = String::from_utf8(out.stdout).expect("PEM");
            KeyPair::from_pem_and_sign_algo(&pem, kind.algorithm()).expect("RSA key")
        }
        _ => KeyPair::generate_for(kind.algorithm()).expect("key generation"),
    }
}

impl TestCa {
    /// A new CA whose files go in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("cert dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = key_pair(KeyType::EcdsaP256);
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = cert.pem();
        std::fs::write(dir.join(format!("{name}-ca.pem")), &pem).expect("write CA");
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (the first is the file name too).
    pub fn issue(&self, names: &[&str], kind: KeyType) -> Issued {
        self.issue_with(names, kind, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn issue_client(&self, name: &str) -> Issued {
        self.issue_with(
            &[name],
            KeyType::EcdsaP256,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue_with(&self, names: &[&str], kind: KeyType, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("names");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
        params.extended_key_usages = vec![usage];
        let key = key_pair(kind);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let base = names
            .first()
            .copied()
            .unwrap_or("test")
            .replace('*', "star");
        let cert_path = self.dir.join(format!("{base}.{}.crt", self.name));
        let key_path = self.dir.join(format!("{base}.{}.key", self.name));
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        std::fs::write(&cert_path, &cert_pem).expect("write cert");
        std::fs::write(&key_path, &key_pem).expect("write key");
        set_private(&key_path);
        Issued {
            cert: cert_path,
            key: key_path,
            cert_pem,
            key_pem,
        }
    }

    /// A client configuration that trusts only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add root");
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// Like [`TestCa::client_config`], presenting a client certificate.
    pub fn client_config_with_cert(&self, client: &Issued) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add root");
        }
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
            .map(|c| c.expect("cert PEM"))
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
            .expect("key PEM");
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
        )
    }
}

use rustls::pki_types::pem::PemObject;

/// Key files are 0600, as an admin keeps them; readable by the test user
/// (and root, who starts the daemon in CI).
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}
