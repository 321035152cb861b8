#![no_main]
//! Arbitrary bytes as a table(5) text file, as makemap input, and as a db
//! file; every table that loads is queried under every service with keys
//! taken from the input itself.

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rsmtpd_table::makemap::{self, MapType};
use rsmtpd_table::{Service, Table};

const SERVICES: [Service; 12] = [
    Service::Alias,
    Service::Domain,
    Service::Credentials,
    Service::Netaddr,
    Service::Userinfo,
    Service::Source,
    Service::Mailaddr,
    Service::Addrname,
    Service::Mailaddrmap,
    Service::Relayhost,
    Service::String,
    Service::Regex,
];

fn exercise(t: &Table, keys: &[&str]) {
    let _ = t.shape();
    let _ = t.len();
    let _ = t.sources();
    for key in keys {
        for s in SERVICES {
            let _ = t.matches(s, key);
            let _ = t.lookup(s, key);
        }
        let _ = t.matches_mailaddr(key, '-');
        let _ = t.lookup_alias(key, '+');
        let (user, domain) = key.split_once('@').unwrap_or((key, "example.org"));
        let _ = t.lookup_virtual(user, domain, '+');
    }
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz");
    let text = String::from_utf8_lossy(data);
    // Keys: a few fixed ones plus every word of the input.
    let mut keys: Vec<&str> = vec!["", "@", "local", "127.0.0.1", "[::1]", "a.example.org"];
    keys.extend(text.split_whitespace().take(8));

    if let Ok(t) = Table::from_text(path, data) {
        exercise(&t, &keys);
    }
    for ty in [MapType::Plain, MapType::Aliases, MapType::Set] {
        if let Ok((img, _)) = makemap::build_db(path, data, ty) {
            // Whatever makemap builds must load and answer.
            let t = Table::from_db_bytes(path, img.clone()).expect("own db must load");
            exercise(&t, &keys);
            let _ = makemap::dump_bytes(path, img, &mut std::io::sink());
        }
    }
    if let Ok(t) = Table::from_db_bytes(path, data.to_vec()) {
        exercise(&t, &keys);
    }
    let _ = makemap::dump_bytes(path, data.to_vec(), &mut std::io::sink());
});
