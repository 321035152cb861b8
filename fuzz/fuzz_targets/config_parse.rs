#![no_main]
//! Arbitrary bytes as smtpd.conf: the parser must answer with a config or
//! diagnostics, never panic, hang or grow without bound. Includes are off,
//! the machine is described by fixed options (no system lookups, no DNS).

use libfuzzer_sys::fuzz_target;
use rsmtpd_config::{
    HostResolver, Includes, InterfaceAddr, ParseOptions, TableFiles, analyze_bytes,
};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        macros: vec![("m".into(), "tls pki x".into())],
        hostname: Some("fuzz.example.org".into()),
        includes: Includes::Disabled,
        table_files: TableFiles::Skip,
        interfaces: Some(vec![
            InterfaceAddr {
                name: "lo".into(),
                addr: [127, 0, 0, 1].into(),
            },
            InterfaceAddr {
                name: "lo".into(),
                addr: std::net::Ipv6Addr::LOCALHOST.into(),
            },
        ]),
        resolver: HostResolver::Disabled,
    };
    let out = analyze_bytes("fuzz.conf", data, &opts);
    // Rendering every diagnostic must not panic either.
    let _ = out.diagnostics.to_string();
    if out.config.is_some() {
        assert!(!out.diagnostics.has_errors());
    }
});
