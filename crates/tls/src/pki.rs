//! PEM reading and the few certificate facts the daemon needs (host names).

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::PkiError;

/// Every certificate in a PEM file, in file order (leaf first for a chain).
pub fn read_cert_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(PkiError::NoCertificate);
    }
    Ok(chain)
}

/// The single private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
/// More than one key is refused: which one was meant would be a guess.
pub fn read_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PkiError> {
    let mut keys = PrivateKeyDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    match keys.len() {
        0 => Err(PkiError::NoPrivateKey),
        1 => keys.pop().ok_or(PkiError::NoPrivateKey),
        n => Err(PkiError::MultiplePrivateKeys(n)),
    }
}

/// A CA bundle. Certificates rustls cannot use are skipped (system bundles
/// carry a few odd ones), but a file yielding none is an error.
pub fn read_ca_file(pem: &[u8]) -> Result<RootCertStore, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let mut store = RootCertStore::empty();
    let (_added, invalid) = store.add_parsable_certificates(certs);
    if store.is_empty() {
        return Err(PkiError::NoUsableCa { invalid });
    }
    Ok(store)
}

/// The host names a certificate is for, lower-cased: its DNS subjectAltNames,
/// or, only when it has none, its subject common name(s), as RFC 6125 says.
pub fn cert_names(leaf: &CertificateDer) -> Result<Vec<String>, PkiError> {
    let parsed = parse_names(leaf.as_ref())?;
    let mut names = Vec::new();
    let source = if parsed.dns_sans.is_empty() {
        parsed.common_names
    } else {
        parsed.dns_sans
    };
    for name in source {
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Whether a certificate name matches a host: case-insensitively equal, or a
/// `*.` wildcard standing for exactly one leftmost label. A trailing dot on
/// either side is ignored (absolute names are the same names).
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    let host = host.strip_suffix('.').unwrap_or(host);
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // The wildcard must stand for a whole label and be followed by at least
    // two labels, so `*.com` or `*` never match everything.
    let Some(parent) = suffix.strip_prefix('.') else {
        return false;
    };
    if !parent.contains('.') || parent.starts_with('.') || parent.contains('*') {
        return false;
    }
    if host.len() <= suffix.len() {
        return false;
    }
    // get() rather than split_at(): a non-ASCII host must not panic.
    let cut = host.len() - suffix.len();
    match (host.get(..cut), host.get(cut..)) {
        (Some(label), Some(rest)) => {
            rest.eq_ignore_ascii_case(suffix) && !label.is_empty() && !label.contains('.')
        }
        _ => false,
    }
}

struct ParsedNames {
    dns_sans: Vec<String>,
    common_names: Vec<String>,
}

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
const TAG_SAN_DNS: u8 = 0x82;

/// 2.5.29.17, subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3, commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// Walks just the parts of the certificate that hold names. Every read is
/// bounds-checked and the walk never recurses, so garbage only yields errors.
fn parse_names(der: &[u8]) -> Result<ParsedNames, PkiError> {
    let certificate = Der::new(der).expect(TAG_SEQUENCE, "certificate")?;
    let mut tbs = Der::new(certificate).expect_der(TAG_SEQUENCE, "tbsCertificate")?;
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.read("version")?;
    }
    tbs.expect(TAG_INTEGER, "serial number")?;
    tbs.expect(TAG_SEQUENCE, "signature algorithm")?;
    tbs.expect(TAG_SEQUENCE, "issuer")?;
    tbs.expect(TAG_SEQUENCE, "validity")?;
    let subject = tbs.expect(TAG_SEQUENCE, "subject")?;
    tbs.expect(TAG_SEQUENCE, "subject public key info")?;

    let mut dns_sans = Vec::new();
    // Then optional unique ids ([1], [2]) and extensions ([3]).
    while !tbs.is_empty() {
        let (tag, body) = tbs.read("tbsCertificate field")?;
        if tag != TAG_EXTENSIONS {
            continue;
        }
        let mut extensions = Der::new(body).expect_der(TAG_SEQUENCE, "extensions")?;
        while !extensions.is_empty() {
            let mut extension = extensions.expect_der(TAG_SEQUENCE, "extension")?;
            let oid = extension.expect(TAG_OID, "extension id")?;
            if extension.peek_tag() == Some(TAG_BOOLEAN) {
                extension.read("extension criticality")?;
            }
            let value = extension.expect(TAG_OCTET_STRING, "extension value")?;
            if oid != OID_SAN {
                continue;
            }
            let mut general_names = Der::new(value).expect_der(TAG_SEQUENCE, "subjectAltName")?;
            while !general_names.is_empty() {
                let (tag, body) = general_names.read("subjectAltName entry")?;
                // dNSName is an IA5String: anything not ASCII is not a host name.
                if tag == TAG_SAN_DNS
                    && body.is_ascii()
                    && let Ok(name) = std::str::from_utf8(body)
                {
                    dns_sans.push(name.to_owned());
                }
            }
        }
    }

    let mut common_names = Vec::new();
    let mut rdns = Der::new(subject);
    while !rdns.is_empty() {
        let mut rdn = rdns.expect_der(TAG_SET, "relative distinguished name")?;
        while !rdn.is_empty() {
            let mut attribute = rdn.expect_der(TAG_SEQUENCE, "attribute")?;
            let oid = attribute.expect(TAG_OID, "attribute type")?;
            let (tag, value) = attribute.read("attribute value")?;
            if oid == OID_CN
                && let Some(name) = decode_directory_string(tag, value)
            {
                common_names.push(name);
            }
        }
    }
    Ok(ParsedNames {
        dns_sans,
        common_names,
    })
}

/// The DirectoryString forms a CN can take; others are ignored.
fn decode_directory_string(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, TeletexString (in practice ASCII), IA5String
        0x0c | 0x13 | 0x14 | 0x16 => std::str::from_utf8(body).ok().map(str::to_owned),
        // BMPString: UCS-2 big-endian
        0x1e => {
            if !body.len().is_multiple_of(2) {
                return None;
            }
            let units = body
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// A cursor over DER-encoded TLVs.
struct Der<'a> {
    data: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// The next TLV as (tag, contents).
    fn read(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), PkiError> {
        let bad = || PkiError::MalformedCertificate(what);
        let (&tag, rest) = self.data.split_first().ok_or_else(bad)?;
        // Multi-byte tags never occur in the parts of X.509 we walk.
        if tag & 0x1f == 0x1f {
            return Err(bad());
        }
        let (&first, rest) = rest.split_first().ok_or_else(bad)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            // Long form; DER forbids the indefinite form (0x80), and four
            // length bytes are far more than any certificate needs.
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(bad());
            }
            let (bytes, rest) = rest.split_at(count);
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return Err(bad());
        }
        let (body, rest) = rest.split_at(len);
        self.data = rest;
        Ok((tag, body))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], PkiError> {
        match self.read(what)? {
            (found, body) if found == tag => Ok(body),
            _ => Err(PkiError::MalformedCertificate(what)),
        }
    }

    fn expect_der(&mut self, tag: u8, what: &'static str) -> Result<Der<'a>, PkiError> {
        self.expect(tag, what).map(Der::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{KeyKind, TestCa, self_signed};

    #[test]
    fn chain_reads_every_certificate_in_order() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(&["mx.example.org"], KeyKind::EcdsaP256);
        let pem = format!("{}{}", leaf.cert_pem, ca.cert_pem);
        let chain = read_cert_chain(pem.as_bytes()).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], leaf.chain[0]);
        assert_eq!(chain[1], ca.cert);
    }

    #[test]
    fn chain_without_certificate_is_an_error() {
        assert!(matches!(read_cert_chain(b""), Err(PkiError::NoCertificate)));
        let key = KeyKind::EcdsaP256.key_pair().serialize_pem();
        assert!(matches!(
            read_cert_chain(key.as_bytes()),
            Err(PkiError::NoCertificate)
        ));
    }

    #[test]
    fn private_key_formats() {
        let pkcs8 = read_private_key(include_bytes!("testdata/rsa2048.pkcs8.pem")).unwrap();
        assert!(matches!(pkcs8, PrivateKeyDer::Pkcs8(_)));
        let pkcs1 = read_private_key(include_bytes!("testdata/rsa2048.pkcs1.pem")).unwrap();
        assert!(matches!(pkcs1, PrivateKeyDer::Pkcs1(_)));
        let sec1 = read_private_key(include_bytes!("testdata/p256.sec1.pem")).unwrap();
        assert!(matches!(sec1, PrivateKeyDer::Sec1(_)));
        // A key next to its certificate (a combined file) is fine.
        let cert = self_signed(&["a.example"], KeyKind::Ed25519);
        let combined = format!("{}{}", cert.cert_pem, cert.key_pem);
        assert!(matches!(
            read_private_key(combined.as_bytes()).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
    }

    #[test]
    fn private_key_count_must_be_one() {
        assert!(matches!(
            read_private_key(b"nothing here"),
            Err(PkiError::NoPrivateKey)
        ));
        let two = format!(
            "{}{}",
            KeyKind::EcdsaP256.key_pair().serialize_pem(),
            KeyKind::Ed25519.key_pair().serialize_pem()
        );
        assert!(matches!(
            read_private_key(two.as_bytes()),
            Err(PkiError::MultiplePrivateKeys(2))
        ));
    }

    #[test]
    fn corrupt_pem_is_an_error() {
        let pem = b"-----BEGIN CERTIFICATE-----\n!!!notbase64!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(read_cert_chain(pem), Err(PkiError::Pem(_))));
    }

    #[test]
    fn ca_file() {
        let a = TestCa::new("CA one", KeyKind::EcdsaP256);
        let b = TestCa::new("CA two", KeyKind::Ed25519);
        let pem = format!("{}{}", a.cert_pem, b.cert_pem);
        assert_eq!(read_ca_file(pem.as_bytes()).unwrap().len(), 2);
        assert!(matches!(
            read_ca_file(b""),
            Err(PkiError::NoUsableCa { invalid: 0 })
        ));
        // Valid PEM wrapping bytes that are no certificate.
        let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            read_ca_file(junk.as_bytes()),
            Err(PkiError::NoUsableCa { invalid: 1 })
        ));
        // One bad entry among good ones is skipped.
        let mixed = format!("{junk}{}", a.cert_pem);
        assert_eq!(read_ca_file(mixed.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn names_come_from_dns_sans() {
        let ca = TestCa::new("Test CA", KeyKind::EcdsaP256);
        let leaf = ca.leaf(
            &["MX.Example.org", "*.example.net", "10.0.0.1"],
            KeyKind::EcdsaP256,
        );
        assert_eq!(
            cert_names(&leaf.chain[0]).unwrap(),
            vec!["mx.example.org".to_owned(), "*.example.net".to_owned()]
        );
    }

    #[test]
    fn common_name_only_without_dns_san() {
        let with_cn_only = crate::testutil::cn_only("Mail.Example.COM", KeyKind::EcdsaP256);
        assert_eq!(
            cert_names(&with_cn_only).unwrap(),
            vec!["mail.example.com".to_owned()]
        );
        // The CN rcgen puts in by default is ignored when SANs exist.
        let with_san = self_signed(&["a.example"], KeyKind::EcdsaP256);
        assert_eq!(cert_names(&with_san.chain[0]).unwrap(), vec!["a.example"]);
    }

    #[test]
    fn ca_names_parse_too() {
        // A CA certificate (no SAN) takes its names from the CN.
        let ca = TestCa::new("Some Test CA", KeyKind::Ed25519);
        assert_eq!(cert_names(&ca.cert).unwrap(), vec!["some test ca"]);
    }

    #[test]
    fn garbage_never_panics() {
        let good = self_signed(&["mx.example.org"], KeyKind::EcdsaP256).chain[0].to_vec();
        // Every truncation and a sweep of single-byte corruptions.
        for len in 0..good.len() {
            let _ = cert_names(&CertificateDer::from(good[..len].to_vec()));
        }
        for i in 0..good.len() {
            for v in [0x00, 0x30, 0x7f, 0x80, 0x84, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = cert_names(&CertificateDer::from(bad));
            }
        }
        for bytes in [
            &b""[..],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
        ] {
            assert!(cert_names(&CertificateDer::from(bytes.to_vec())).is_err());
        }
    }

    #[test]
    fn matching() {
        assert!(name_matches("mx.example.org", "MX.EXAMPLE.ORG"));
        assert!(name_matches("mx.example.org", "mx.example.org."));
        assert!(!name_matches("mx.example.org", "mx.example.org.."));
        assert!(!name_matches("mx.example.org", "example.org"));
        assert!(name_matches("*.example.net", "a.example.net"));
        assert!(name_matches("*.Example.NET", "A.example.net."));
        assert!(!name_matches("*.example.net", "example.net"));
        assert!(!name_matches("*.example.net", ".example.net"));
        assert!(!name_matches("*.example.net", "a.b.example.net"));
        assert!(!name_matches("*.example.net", "aexample.net"));
        assert!(!name_matches("*.com", "example.com"));
        assert!(!name_matches("*", "example"));
        assert!(!name_matches("a*.example.net", "ab.example.net"));
        assert!(name_matches("a*.example.net", "A*.example.net"));
        assert!(!name_matches("", ""));
        assert!(!name_matches("example.net", ""));
        assert!(!name_matches("*.*.net", "a.b.net"));
        assert!(!name_matches("*.example.net", "\u{e9}\u{e9}example.net"));
        assert!(name_matches("*.example.net", "\u{e9}.example.net"));
    }
}
