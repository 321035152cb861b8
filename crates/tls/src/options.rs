//! OpenSMTPD's `protocols` and `ciphers` strings (libtls syntax) mapped onto
//! what rustls offers. What rustls cannot do is an error, never silently
//! ignored, except exclusions of things rustls never offers anyway.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use crate::error::TlsConfigError;

const TLS12: u8 = 1;
const TLS13: u8 = 2;
const BOTH: u8 = TLS12 | TLS13;

/// The TLS versions a `protocols` string enables; `None` means the default
/// (TLSv1.2 and TLSv1.3). Syntax of libtls's tls_config_parse_protocols.
pub fn protocol_versions(
    s: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsConfigError> {
    let Some(s) = s else {
        return Ok(versions_of(BOTH));
    };
    let mut enabled = 0u8;
    for raw in s.split([',', ':']) {
        let token = raw.trim();
        let (negate, word) = match token.strip_prefix('!') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, token),
        };
        // As libtls: a list that starts by removing starts from everything.
        if negate && enabled == 0 {
            enabled = BOTH;
        }
        let bits = match word.to_ascii_lowercase().as_str() {
            "all" | "legacy" | "default" | "secure" => BOTH,
            "tlsv1.2" => TLS12,
            "tlsv1.3" => TLS13,
            "tlsv1" | "tlsv1.0" | "tlsv1.1" if negate => 0,
            "tlsv1" | "tlsv1.0" | "tlsv1.1" => {
                return Err(TlsConfigError::UnsupportedProtocol(word.to_owned()));
            }
            _ => return Err(TlsConfigError::UnknownProtocol(token.to_owned())),
        };
        if negate {
            enabled &= !bits;
        } else {
            enabled |= bits;
        }
    }
    if enabled == 0 {
        return Err(TlsConfigError::NoProtocol);
    }
    Ok(versions_of(enabled))
}

fn versions_of(bits: u8) -> Vec<&'static SupportedProtocolVersion> {
    let mut versions = Vec::new();
    if bits & TLS13 != 0 {
        versions.push(&rustls::version::TLS13);
    }
    if bits & TLS12 != 0 {
        versions.push(&rustls::version::TLS12);
    }
    versions
}

/// Names and strength of every suite the ring provider can offer.
struct SuiteName {
    code: u16,
    iana: &'static str,
    openssl: &'static str,
    bits: u16,
}

const SUITE_NAMES: &[SuiteName] = &[
    SuiteName {
        code: 0x1301,
        iana: "TLS_AES_128_GCM_SHA256",
        openssl: "TLS_AES_128_GCM_SHA256",
        bits: 128,
    },
    SuiteName {
        code: 0x1302,
        iana: "TLS_AES_256_GCM_SHA384",
        openssl: "TLS_AES_256_GCM_SHA384",
        bits: 256,
    },
    SuiteName {
        code: 0x1303,
        iana: "TLS_CHACHA20_POLY1305_SHA256",
        openssl: "TLS_CHACHA20_POLY1305_SHA256",
        bits: 256,
    },
    SuiteName {
        code: 0xc02b,
        iana: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
        bits: 128,
    },
    SuiteName {
        code: 0xc02c,
        iana: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
        bits: 256,
    },
    SuiteName {
        code: 0xcca9,
        iana: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
        bits: 256,
    },
    SuiteName {
        code: 0xc02f,
        iana: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        openssl: "ECDHE-RSA-AES128-GCM-SHA256",
        bits: 128,
    },
    SuiteName {
        code: 0xc030,
        iana: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        openssl: "ECDHE-RSA-AES256-GCM-SHA384",
        bits: 256,
    },
    SuiteName {
        code: 0xcca8,
        iana: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        openssl: "ECDHE-RSA-CHACHA20-POLY1305",
        bits: 256,
    },
];

fn suite_name(suite: SupportedCipherSuite) -> Option<&'static SuiteName> {
    let code = u16::from(suite.suite());
    SUITE_NAMES.iter().find(|n| n.code == code)
}

/// The IANA name of a suite, e.g. `TLS_AES_256_GCM_SHA384`.
pub fn iana_name(suite: SupportedCipherSuite) -> Option<&'static str> {
    suite_name(suite).map(|n| n.iana)
}

/// The OpenSSL name of a suite, e.g. `ECDHE-RSA-AES128-GCM-SHA256` (TLS 1.3
/// suites carry their IANA names in OpenSSL too).
pub fn openssl_name(suite: SupportedCipherSuite) -> Option<&'static str> {
    suite_name(suite).map(|n| n.openssl)
}

/// Symmetric key bits of a suite: 128 or 256.
pub fn suite_bits(suite: SupportedCipherSuite) -> Option<u16> {
    suite_name(suite).map(|n| n.bits)
}

/// The supported suites, for error messages.
pub(crate) fn supported_cipher_names() -> String {
    provider_suites()
        .iter()
        .filter_map(|&s| openssl_name(s))
        .collect::<Vec<_>>()
        .join(", ")
}

fn provider_suites() -> &'static [SupportedCipherSuite] {
    rustls::crypto::ring::DEFAULT_CIPHER_SUITES
}

fn lookup_suite(name: &str) -> Option<SupportedCipherSuite> {
    provider_suites().iter().copied().find(|&suite| {
        // rustls's own spelling (TLS13_AES_...) is accepted as well.
        let rustls_name = suite.suite().as_str();
        suite_name(suite).is_some_and(|n| {
            n.iana.eq_ignore_ascii_case(name) || n.openssl.eq_ignore_ascii_case(name)
        }) || rustls_name.is_some_and(|r| r.eq_ignore_ascii_case(name))
    })
}

/// OpenSSL classes that contain no suite rustls offers: excluding them is
/// a no-op, so configs written for OpenSSL keep working.
const NEVER_OFFERED: &[&str] = &[
    "aNULL", "eNULL", "NULL", "ADH", "AECDH", "MD5", "RC4", "DES", "3DES", "EXPORT", "EXP", "LOW",
    "MEDIUM", "SSLv2", "SSLv3", "PSK", "SRP", "DSS", "aDSS", "CAMELLIA", "SEED", "IDEA", "ARIA",
    "kRSA", "DHE", "EDH", "kDHE", "kEDH", "SHA1", "SHA",
];

/// Whole-string libtls keywords; each means "the library's good defaults".
const CIPHER_KEYWORDS: &[&str] = &["secure", "default", "compat", "legacy", "all", "insecure"];

/// OpenSSL class words meaning "everything good", which is all rustls has.
const CIPHER_CLASSES_ALL: &[&str] = &["HIGH", "ALL", "DEFAULT"];

/// The cipher suites a `ciphers` string selects, in the order given; `None`
/// means the provider defaults.
pub fn cipher_suites(s: Option<&str>) -> Result<Vec<SupportedCipherSuite>, TlsConfigError> {
    let Some(s) = s else {
        return Ok(provider_suites().to_vec());
    };
    let whole = s.trim();
    if CIPHER_KEYWORDS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(whole))
    {
        return Ok(provider_suites().to_vec());
    }
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut excluded: Vec<SupportedCipherSuite> = Vec::new();
    // OpenSSL's separators; empty items are skipped as OpenSSL does.
    for token in whole
        .split([':', ',', ' ', ';', '\t'])
        .filter(|t| !t.is_empty())
    {
        let unknown = || TlsConfigError::UnknownCipher(token.to_owned());
        if let Some(name) = token.strip_prefix('!').or_else(|| token.strip_prefix('-')) {
            if let Some(suite) = lookup_suite(name) {
                chosen.retain(|s| *s != suite);
                // `!` removes for good; `-` only what is there now (OpenSSL).
                if token.starts_with('!') {
                    excluded.push(suite);
                }
            } else if !NEVER_OFFERED.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                return Err(unknown());
            }
        } else if CIPHER_CLASSES_ALL
            .iter()
            .any(|c| c.eq_ignore_ascii_case(token))
        {
            for &suite in provider_suites() {
                if !chosen.contains(&suite) && !excluded.contains(&suite) {
                    chosen.push(suite);
                }
            }
        } else if token.eq_ignore_ascii_case("@STRENGTH") {
            // Stable: equal strengths keep the order given.
            chosen.sort_by_key(|&s| std::cmp::Reverse(suite_bits(s).unwrap_or(0)));
        } else if let Some(suite) = lookup_suite(token) {
            if !chosen.contains(&suite) && !excluded.contains(&suite) {
                chosen.push(suite);
            }
        } else {
            return Err(unknown());
        }
    }
    if chosen.is_empty() {
        return Err(TlsConfigError::NoCipher);
    }
    Ok(chosen)
}

/// The ring provider restricted to the chosen suites, and the versions that
/// have a suite left. A version without one is dropped, since rustls would
/// otherwise offer it and fail; if none is left, that is an error.
pub(crate) fn provider_and_versions(
    protocols: Option<&str>,
    ciphers: Option<&str>,
) -> Result<(Arc<CryptoProvider>, Vec<&'static SupportedProtocolVersion>), TlsConfigError> {
    let versions = protocol_versions(protocols)?;
    let suites: Vec<SupportedCipherSuite> = cipher_suites(ciphers)?
        .into_iter()
        .filter(|s| versions.contains(&s.version()))
        .collect();
    let versions: Vec<_> = versions
        .into_iter()
        .filter(|v| suites.iter().any(|s| s.version() == *v))
        .collect();
    if versions.is_empty() {
        return Err(TlsConfigError::NoSuiteForProtocols);
    }
    let provider = CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    Ok((Arc::new(provider), versions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::version::{TLS12, TLS13};

    fn versions(s: &str) -> Result<Vec<&'static SupportedProtocolVersion>, TlsConfigError> {
        protocol_versions(Some(s))
    }

    fn names(s: &str) -> Vec<&'static str> {
        cipher_suites(Some(s))
            .unwrap()
            .into_iter()
            .map(|s| iana_name(s).unwrap())
            .collect()
    }

    #[test]
    fn protocol_keywords() {
        assert_eq!(protocol_versions(None).unwrap(), vec![&TLS13, &TLS12]);
        for s in ["all", "DEFAULT", "secure", "legacy", " all "] {
            assert_eq!(versions(s).unwrap(), vec![&TLS13, &TLS12], "{s}");
        }
        assert_eq!(versions("tlsv1.2").unwrap(), vec![&TLS12]);
        assert_eq!(versions("TLSv1.3").unwrap(), vec![&TLS13]);
        assert_eq!(versions("tlsv1.2:tlsv1.3").unwrap(), vec![&TLS13, &TLS12]);
        assert_eq!(versions("tlsv1.3, tlsv1.2").unwrap(), vec![&TLS13, &TLS12]);
    }

    #[test]
    fn protocol_removal() {
        assert_eq!(versions("all,!tlsv1.2").unwrap(), vec![&TLS13]);
        // Leading removal starts from everything, as libtls does.
        assert_eq!(versions("!tlsv1.3").unwrap(), vec![&TLS12]);
        assert_eq!(versions("!tlsv1.0:!tlsv1.1").unwrap(), vec![&TLS13, &TLS12]);
        assert_eq!(versions("secure,!tlsv1").unwrap(), vec![&TLS13, &TLS12]);
        assert!(matches!(
            versions("!tlsv1.2,!tlsv1.3"),
            Err(TlsConfigError::NoProtocol)
        ));
        assert!(matches!(
            versions("tlsv1.2,!all"),
            Err(TlsConfigError::NoProtocol)
        ));
    }

    #[test]
    fn old_protocols_are_refused() {
        for s in ["tlsv1.0", "TLSv1.1", "tlsv1", "tlsv1.2:tlsv1.1"] {
            match versions(s) {
                Err(e @ TlsConfigError::UnsupportedProtocol(_)) => {
                    assert!(
                        e.to_string()
                            .contains("rustls speaks TLSv1.2 and TLSv1.3 only")
                    );
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        let e = versions("TLSv1.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol 'TLSv1.0' is not supported: rustls speaks TLSv1.2 and TLSv1.3 only"
        );
    }

    #[test]
    fn unknown_protocols_are_refused() {
        for s in ["", "sslv3", "tlsv1.4", "tlsv1.2,", "tls1.2", "!"] {
            assert!(
                matches!(versions(s), Err(TlsConfigError::UnknownProtocol(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn cipher_keywords() {
        let all = provider_suites().to_vec();
        assert_eq!(cipher_suites(None).unwrap(), all);
        for s in [
            "secure", "DEFAULT", "compat", "legacy", "all", "insecure", "HIGH",
        ] {
            assert_eq!(cipher_suites(Some(s)).unwrap(), all, "{s}");
        }
        assert_eq!(
            cipher_suites(Some("HIGH:!aNULL:!MD5:!RC4:!3DES:!EXPORT:!LOW:!MEDIUM")).unwrap(),
            all
        );
    }

    #[test]
    fn cipher_names_in_both_forms_keep_order() {
        assert_eq!(
            names(
                "ECDHE-RSA-CHACHA20-POLY1305:TLS_AES_128_GCM_SHA256,ecdhe-ecdsa-aes256-gcm-sha384"
            ),
            vec![
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ]
        );
        assert_eq!(
            names("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 TLS13_AES_256_GCM_SHA384"),
            vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_AES_256_GCM_SHA384"
            ]
        );
        // Duplicates collapse to the first place.
        assert_eq!(
            names("TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
            vec!["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
        );
    }

    #[test]
    fn cipher_exclusion_and_strength() {
        let listed = names("HIGH:!ECDHE-RSA-CHACHA20-POLY1305:!TLS_AES_128_GCM_SHA256");
        assert_eq!(listed.len(), provider_suites().len() - 2);
        assert!(!listed.contains(&"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"));
        assert!(!listed.contains(&"TLS_AES_128_GCM_SHA256"));
        // `!` is for good, `-` only removes what is there.
        assert_eq!(
            names("!TLS_AES_128_GCM_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"),
            vec!["TLS_AES_256_GCM_SHA384"]
        );
        assert_eq!(
            names("TLS_AES_128_GCM_SHA256:-TLS_AES_128_GCM_SHA256:TLS_AES_128_GCM_SHA256"),
            vec!["TLS_AES_128_GCM_SHA256"]
        );
        assert_eq!(
            names("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:@STRENGTH"),
            vec![
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
    }

    #[test]
    fn cipher_errors() {
        for s in [
            "RC4-SHA",
            "HIGH:!RSA",
            "AES128-SHA",
            "ECDHE+AESGCM",
            "bogus",
            "@SECLEVEL=2",
        ] {
            match cipher_suites(Some(s)) {
                Err(TlsConfigError::UnknownCipher(t)) => assert!(s.contains(&t), "{s}: {t}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        let e = cipher_suites(Some("DES-CBC3-SHA")).unwrap_err().to_string();
        assert!(
            e.starts_with("cipher 'DES-CBC3-SHA' is not supported"),
            "{e}"
        );
        assert!(e.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{e}");
        for s in [
            "",
            ":",
            "!aNULL",
            "TLS_AES_128_GCM_SHA256:!TLS_AES_128_GCM_SHA256",
        ] {
            assert!(
                matches!(cipher_suites(Some(s)), Err(TlsConfigError::NoCipher)),
                "{s}"
            );
        }
    }

    #[test]
    fn versions_without_suites_are_dropped() {
        let (provider, versions) =
            provider_and_versions(None, Some("ECDHE-RSA-AES128-GCM-SHA256")).unwrap();
        assert_eq!(versions, vec![&TLS12]);
        assert_eq!(provider.cipher_suites.len(), 1);
        let (provider, versions) =
            provider_and_versions(None, Some("TLS_AES_128_GCM_SHA256")).unwrap();
        assert_eq!(versions, vec![&TLS13]);
        assert_eq!(provider.cipher_suites.len(), 1);
        // Suites of a version not enabled are not kept either.
        let (provider, versions) = provider_and_versions(
            Some("tlsv1.3"),
            Some("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256"),
        )
        .unwrap();
        assert_eq!(versions, vec![&TLS13]);
        assert_eq!(provider.cipher_suites.len(), 1);
        assert!(matches!(
            provider_and_versions(Some("tlsv1.3"), Some("ECDHE-RSA-AES128-GCM-SHA256")),
            Err(TlsConfigError::NoSuiteForProtocols)
        ));
        let (_, versions) = provider_and_versions(None, None).unwrap();
        assert_eq!(versions, vec![&TLS13, &TLS12]);
    }

    #[test]
    fn every_provider_suite_has_names() {
        for &suite in rustls::crypto::ring::ALL_CIPHER_SUITES {
            assert!(iana_name(suite).is_some(), "{:?}", suite.suite());
            assert!(lookup_suite(iana_name(suite).unwrap()) == Some(suite));
            assert!(lookup_suite(openssl_name(suite).unwrap()) == Some(suite));
        }
    }
}
