//! Private keys, for the crypto process only: it loads them, checks each
//! against its certificate, and signs handshake messages on request.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{InconsistentKeys, SignatureAlgorithm, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::error::{PkiError, SignError};

/// The public side of a loaded key: what smtp and mta need to present it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// Index in the crypto process's [`KeyHolder`], named in sign requests.
    pub index: usize,
    pub algorithm: KeyAlgorithm,
    /// TLS SignatureScheme code points, most preferred first.
    pub schemes: Vec<u16>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    Rsa,
    Ecdsa,
    Ed25519,
}

impl KeyAlgorithm {
    pub fn from_rustls(algorithm: SignatureAlgorithm) -> Option<Self> {
        match algorithm {
            SignatureAlgorithm::RSA => Some(Self::Rsa),
            SignatureAlgorithm::ECDSA => Some(Self::Ecdsa),
            SignatureAlgorithm::ED25519 => Some(Self::Ed25519),
            _ => None,
        }
    }

    pub fn to_rustls(self) -> SignatureAlgorithm {
        match self {
            Self::Rsa => SignatureAlgorithm::RSA,
            Self::Ecdsa => SignatureAlgorithm::ECDSA,
            Self::Ed25519 => SignatureAlgorithm::ED25519,
        }
    }
}

/// Every scheme a key might support, in rustls's own preference order. Used
/// to ask a key which ones it really supports.
const CANDIDATE_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::ED448,
];

/// The schemes a key supports, in the key's own preference order: offer all,
/// take the one it picks, remove it, repeat.
fn supported_schemes(key: &dyn SigningKey) -> Vec<u16> {
    let mut remaining = CANDIDATE_SCHEMES.to_vec();
    let mut chosen = Vec::new();
    while let Some(signer) = key.choose_scheme(&remaining) {
        let scheme = signer.scheme();
        let before = remaining.len();
        remaining.retain(|s| *s != scheme);
        if remaining.len() == before {
            // A key answering with a scheme it was not offered; stop rather than loop.
            break;
        }
        chosen.push(u16::from(scheme));
    }
    chosen
}

struct Entry {
    key: Arc<dyn SigningKey>,
    info: PublicKeyInfo,
}

/// The loaded private keys, addressed by index.
#[derive(Default)]
pub struct KeyHolder {
    keys: Vec<Entry>,
}

impl std::fmt::Debug for KeyHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs; the public descriptions suffice.
        f.debug_list()
            .entries(self.keys.iter().map(|entry| &entry.info))
            .finish()
    }
}

impl KeyHolder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn info(&self, index: usize) -> Option<&PublicKeyInfo> {
        self.keys.get(index).map(|entry| &entry.info)
    }

    /// Loads `key`, refusing it unless it is the key of the chain's leaf.
    pub fn add(
        &mut self,
        chain: &[CertificateDer<'static>],
        key: PrivateKeyDer<'static>,
    ) -> Result<PublicKeyInfo, PkiError> {
        if chain.is_empty() {
            return Err(PkiError::NoCertificate);
        }
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| PkiError::UnsupportedKey(e.to_string()))?;
        let algorithm = KeyAlgorithm::from_rustls(signing_key.algorithm()).ok_or_else(|| {
            PkiError::UnsupportedKey(format!("{:?} keys", signing_key.algorithm()))
        })?;
        match CertifiedKey::new(chain.to_vec(), Arc::clone(&signing_key)).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(PkiError::KeyMismatch);
            }
            Err(e) => return Err(PkiError::BadCertificate(e.to_string())),
        }
        let schemes = supported_schemes(signing_key.as_ref());
        if schemes.is_empty() {
            return Err(PkiError::UnsupportedKey(
                "the key supports no TLS signature scheme".to_owned(),
            ));
        }
        let info = PublicKeyInfo {
            index: self.keys.len(),
            algorithm,
            schemes,
        };
        self.keys.push(Entry {
            key: signing_key,
            info: info.clone(),
        });
        Ok(info)
    }

    /// Signs `message` with key `index` using `scheme`. Both come from a less
    /// privileged process, so both are checked.
    pub fn sign(&self, index: usize, scheme: u16, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let entry = self.keys.get(index).ok_or(SignError::UnknownKey(index))?;
        // The key itself says whether it can sign with this scheme.
        let unsupported = SignError::UnsupportedScheme { index, scheme };
        let signer = entry
            .key
            .choose_scheme(&[SignatureScheme::from(scheme)])
            .ok_or(unsupported)?;
        signer
            .sign(message)
            .map_err(|e| SignError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{KeyKind, self_signed};

    #[test]
    fn each_key_type_loads_with_its_schemes() {
        let mut holder = KeyHolder::new();
        let rsa = self_signed(&["rsa.example"], KeyKind::Rsa);
        let info = holder.add(&rsa.chain, rsa.key()).unwrap();
        assert_eq!(info.index, 0);
        assert_eq!(info.algorithm, KeyAlgorithm::Rsa);
        assert_eq!(
            info.schemes,
            [
                SignatureScheme::RSA_PSS_SHA512,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PKCS1_SHA512,
                SignatureScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RSA_PKCS1_SHA256,
            ]
            .map(u16::from)
        );

        let ec = self_signed(&["ec.example"], KeyKind::EcdsaP256);
        let info = holder.add(&ec.chain, ec.key()).unwrap();
        assert_eq!(info.index, 1);
        assert_eq!(info.algorithm, KeyAlgorithm::Ecdsa);
        assert_eq!(
            info.schemes,
            vec![u16::from(SignatureScheme::ECDSA_NISTP256_SHA256)]
        );

        let ed = self_signed(&["ed.example"], KeyKind::Ed25519);
        let info = holder.add(&ed.chain, ed.key()).unwrap();
        assert_eq!(info.index, 2);
        assert_eq!(info.algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(info.schemes, vec![u16::from(SignatureScheme::ED25519)]);
        assert_eq!(holder.len(), 3);
        assert_eq!(holder.info(2), Some(&info));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let mut holder = KeyHolder::new();
        let a = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let b = self_signed(&["b.example"], KeyKind::EcdsaP256);
        assert!(matches!(
            holder.add(&a.chain, b.key()),
            Err(PkiError::KeyMismatch)
        ));
        let rsa = self_signed(&["rsa.example"], KeyKind::Rsa);
        assert!(matches!(
            holder.add(&a.chain, rsa.key()),
            Err(PkiError::KeyMismatch)
        ));
        assert!(matches!(
            holder.add(&[], a.key()),
            Err(PkiError::NoCertificate)
        ));
        let junk = vec![CertificateDer::from(vec![0x30, 0x00])];
        assert!(matches!(
            holder.add(&junk, a.key()),
            Err(PkiError::BadCertificate(_))
        ));
        assert!(holder.is_empty());
    }

    #[test]
    fn garbage_key_is_refused() {
        let mut holder = KeyHolder::new();
        let a = self_signed(&["a.example"], KeyKind::EcdsaP256);
        let key = PrivateKeyDer::Pkcs8(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        assert!(matches!(
            holder.add(&a.chain, key),
            Err(PkiError::UnsupportedKey(_))
        ));
    }

    #[test]
    fn sign_checks_index_and_scheme() {
        let mut holder = KeyHolder::new();
        let ec = self_signed(&["ec.example"], KeyKind::EcdsaP256);
        holder.add(&ec.chain, ec.key()).unwrap();
        let p256 = u16::from(SignatureScheme::ECDSA_NISTP256_SHA256);
        let signature = holder.sign(0, p256, b"hello").unwrap();
        assert!(!signature.is_empty());
        assert_eq!(
            holder.sign(1, p256, b"hello"),
            Err(SignError::UnknownKey(1))
        );
        assert_eq!(
            holder.sign(usize::MAX, p256, b"hello"),
            Err(SignError::UnknownKey(usize::MAX))
        );
        for scheme in [
            u16::from(SignatureScheme::RSA_PSS_SHA256),
            u16::from(SignatureScheme::ECDSA_NISTP384_SHA384),
            0xffff,
            0,
        ] {
            assert_eq!(
                holder.sign(0, scheme, b"hello"),
                Err(SignError::UnsupportedScheme { index: 0, scheme })
            );
        }
    }
}
