use super::*;

fn list(items: &[&str]) -> Table {
    Table::open(&TableDecl::StaticList(
        items.iter().map(|s| s.to_string()).collect(),
    ))
    .unwrap()
}

fn map(items: &[(&str, &str)]) -> Table {
    Table::open(&TableDecl::StaticMap(
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
    .unwrap()
}

fn db(text: &str, ty: MapType) -> Table {
    let (img, _) = makemap::build_db(Path::new("src"), text.as_bytes(), ty).unwrap();
    Table::from_db_bytes(Path::new("/x.db"), img).unwrap()
}

#[test]
fn shapes() {
    assert_eq!(list(&["a"]).shape(), Shape::List);
    assert_eq!(list(&[]).shape(), Shape::List);
    assert_eq!(map(&[("a", "b")]).shape(), Shape::Map);
    assert_eq!(
        Table::open(&TableDecl::Getpwnam).unwrap().shape(),
        Shape::Dynamic
    );
    assert_eq!(db("a b\n", MapType::Plain).shape(), Shape::Map);
    assert_eq!(db("a b\n", MapType::Aliases).shape(), Shape::Map);
    assert_eq!(db("a\n", MapType::Set).shape(), Shape::List);
}

#[test]
fn builtin_lists() {
    let localhost = list(&["127.0.0.0/8", "[::1]", "local"]);
    for k in [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "[::1]",
        "local",
        "::ffff:127.0.0.1",
    ] {
        assert!(localhost.matches(Service::Netaddr, k).unwrap(), "{k}");
    }
    for k in ["128.0.0.1", "::2", "192.168.1.1", "localhost"] {
        assert!(!localhost.matches(Service::Netaddr, k).unwrap(), "{k}");
    }
    let anyhost = list(&["0.0.0.0/0", "::/0", "local"]);
    for k in ["1.2.3.4", "2001:db8::1", "local", "[fe80::1]"] {
        assert!(anyhost.matches(Service::Netaddr, k).unwrap(), "{k}");
    }
    assert!(!anyhost.matches(Service::Netaddr, "not-an-ip").unwrap());
    let localnames = list(&["localhost", "mx.example.org", "[127.0.0.1]", "[::1]"]);
    for k in [
        "localhost",
        "LOCALHOST",
        "mx.example.org",
        "[127.0.0.1]",
        "[::1]",
    ] {
        assert!(localnames.matches(Service::Domain, k).unwrap(), "{k}");
    }
    assert!(!localnames.matches(Service::Domain, "example.org").unwrap());
    let anydest = list(&["*"]);
    assert!(
        anydest
            .matches(Service::Domain, "whatever.example")
            .unwrap()
    );
    assert!(!anydest.matches(Service::Domain, "").unwrap());
}

#[test]
fn domain_list_wildcards() {
    let t = list(&["example.org", "*.Example.NET"]);
    assert!(t.matches(Service::Domain, "EXAMPLE.org").unwrap());
    assert!(t.matches(Service::Domain, "mx.example.net").unwrap());
    assert!(t.matches(Service::Domain, "a.b.example.net").unwrap());
    assert!(!t.matches(Service::Domain, "example.net").unwrap());
    assert!(!t.matches(Service::Domain, "sub.example.org").unwrap());
}

#[test]
fn string_and_mailaddr() {
    let t = list(&["Tag1", "user", "@domain", "user@domain", "user@*.domain"]);
    assert!(t.matches(Service::String, "tag1").unwrap());
    assert!(t.matches(Service::String, "TAG1").unwrap());
    assert!(!t.matches(Service::String, "tag").unwrap());
    assert!(!t.matches(Service::String, "u*").unwrap());
    let m = list(&["user", "@domain", "bob@*.example.org"]);
    assert!(m.matches(Service::Mailaddr, "user+x@anywhere").unwrap());
    assert!(m.matches(Service::Mailaddr, "eve@domain").unwrap());
    assert!(m.matches(Service::Mailaddr, "Bob@mx.Example.org").unwrap());
    assert!(!m.matches(Service::Mailaddr, "bob@example.org").unwrap());
    assert!(!m.matches(Service::Mailaddr, "eve@other").unwrap());
    assert!(m.matches_mailaddr("user-x@anywhere", '-').unwrap());
    assert!(!m.matches_mailaddr("user-x@anywhere", '+').unwrap());
}

#[test]
fn source_tables() {
    let t = list(&["192.168.1.2", "[::1]", "[::2]"]);
    assert!(t.matches(Service::Source, "::1").unwrap());
    assert!(t.matches(Service::Source, "192.168.1.2").unwrap());
    assert!(!t.matches(Service::Source, "192.168.1.3").unwrap());
    assert_eq!(
        t.sources().unwrap(),
        vec![
            "192.168.1.2".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap(),
            "::2".parse().unwrap()
        ]
    );
    let bad = list(&["1.2.3.4", "nope"]);
    assert_eq!(
        bad.sources().unwrap_err(),
        TableError::Value {
            service: Service::Source,
            key: "nope".into(),
            reason: ValueError::NotAnAddress("nope".into())
        }
    );
}

#[test]
fn duplicates_later_wins() {
    let t = map(&[("Key", "one"), ("key", "two")]);
    assert_eq!(t.len(), Some(1));
    assert_eq!(
        t.lookup(Service::String, "KEY").unwrap(),
        Some(Value::Raw("two".into()))
    );
}

#[test]
fn regex_matching_and_cache() {
    let t = list(&["^admin@", "\\d{3}-spam", "(?i)^root$"]);
    assert!(t.regexes.get().is_none());
    assert!(t.matches(Service::Regex, "admin@example.org").unwrap());
    assert!(t.matches(Service::Regex, "ADMIN@example.org").unwrap());
    assert!(t.matches(Service::Regex, "x123-spam@y").unwrap());
    assert!(t.matches(Service::Regex, "Root").unwrap());
    assert!(!t.matches(Service::Regex, "abc-spam").unwrap());
    // Compiled once: the same slice is handed out every time.
    let first = t.regexes().unwrap().as_ptr();
    let _ = t.matches(Service::Regex, "x").unwrap();
    assert_eq!(first, t.regexes().unwrap().as_ptr());
    // Uppercase escapes keep their meaning (\D is a non-digit).
    let d = list(&["^\\D+$"]);
    assert!(d.matches(Service::Regex, "abc").unwrap());
    assert!(!d.matches(Service::Regex, "a1c").unwrap());
}

#[test]
fn invalid_regex_is_an_error() {
    let t = list(&["ok", "(unclosed"]);
    // Other services do not care.
    assert!(t.matches(Service::String, "ok").unwrap());
    let e = t.check_regex().unwrap_err();
    assert!(
        matches!(&e, TableError::Regex { pattern, .. } if pattern == "(unclosed"),
        "{e:?}"
    );
    assert_eq!(t.matches(Service::Regex, "ok").unwrap_err(), e);
}

#[test]
fn huge_regex_is_refused() {
    let t = list(&["(a{1000}){1000}"]);
    assert!(matches!(
        t.check_regex().unwrap_err(),
        TableError::Regex { .. }
    ));
}

#[test]
fn key_too_long() {
    let t = list(&["a"]);
    let key = "a".repeat(MAX_KEY_LEN + 1);
    assert_eq!(
        t.matches(Service::Domain, &key).unwrap_err(),
        TableError::KeyTooLong {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        }
    );
    assert!(t.matches(Service::Domain, &"a".repeat(MAX_KEY_LEN)).is_ok());
    assert!(matches!(
        map(&[("a", "b")]).lookup(Service::Alias, &key),
        Err(TableError::KeyTooLong { .. })
    ));
}

#[test]
fn typed_lookups() {
    let t = map(&[
        ("Root", "bob, /var/mail/root, |/bin/prog, error:550 gone"),
        ("label1", "user:pass"),
        ("user1", "$2b$10$hash"),
        ("joe", "1000:100:/home/virtual/joe"),
        ("127.0.0.1", "localhost"),
        ("[::1]", "ip6-localhost"),
        ("alice", "alice@example.org, @example.net"),
        ("example.org", "smtp+tls://relay.example.org:587"),
        ("broken", "bad target here"),
    ]);
    assert_eq!(
        t.lookup(Service::Alias, "ROOT").unwrap(),
        Some(Value::Alias(vec![
            AliasTarget::User("bob".into()),
            AliasTarget::File("/var/mail/root".into()),
            AliasTarget::Command("/bin/prog".into()),
            AliasTarget::Error {
                code: 550,
                message: "gone".into()
            },
        ]))
    );
    assert_eq!(t.lookup(Service::Alias, "nobody").unwrap(), None);
    assert_eq!(
        t.lookup(Service::Credentials, "label1").unwrap(),
        Some(Value::Credentials(Credentials {
            username: "user".into(),
            password: "pass".into()
        }))
    );
    assert_eq!(
        t.lookup(Service::Credentials, "user1").unwrap(),
        Some(Value::Credentials(Credentials {
            username: "user1".into(),
            password: "$2b$10$hash".into()
        }))
    );
    assert_eq!(
        t.lookup(Service::Userinfo, "joe").unwrap(),
        Some(Value::Userinfo(Userinfo {
            username: "joe".into(),
            uid: 1000,
            gid: 100,
            directory: "/home/virtual/joe".into()
        }))
    );
    assert_eq!(
        t.lookup(Service::Addrname, "127.0.0.1").unwrap(),
        Some(Value::Addrname("localhost".into()))
    );
    assert_eq!(
        t.lookup(Service::Addrname, "::1").unwrap(),
        Some(Value::Addrname("ip6-localhost".into()))
    );
    assert_eq!(
        t.lookup(Service::Addrname, "[::1]").unwrap(),
        Some(Value::Addrname("ip6-localhost".into()))
    );
    assert_eq!(t.lookup(Service::Addrname, "10.0.0.1").unwrap(), None);
    assert_eq!(
        t.lookup(Service::Addrname, "example.org").unwrap_err(),
        TableError::Value {
            service: Service::Addrname,
            key: "example.org".into(),
            reason: ValueError::NotAnAddress("example.org".into())
        }
    );
    assert_eq!(
        t.lookup(Service::Mailaddrmap, "alice").unwrap(),
        Some(Value::Mailaddrmap(vec![
            MailAddr::parse("alice@example.org"),
            MailAddr::parse("@example.net")
        ]))
    );
    assert_eq!(
        t.lookup(Service::Relayhost, "example.org").unwrap(),
        Some(Value::Relayhost("smtp+tls://relay.example.org:587".into()))
    );
    assert_eq!(
        t.lookup(Service::Alias, "broken").unwrap_err(),
        TableError::Value {
            service: Service::Alias,
            key: "broken".into(),
            reason: ValueError::InvalidAliasTarget("bad target here".into())
        }
    );
    assert_eq!(
        t.lookup(Service::Userinfo, "label1").unwrap_err(),
        TableError::Value {
            service: Service::Userinfo,
            key: "label1".into(),
            reason: ValueError::UserinfoSyntax
        }
    );
    assert_eq!(
        t.lookup(Service::Domain, "x").unwrap_err(),
        TableError::Unsupported {
            backend: "mapping",
            service: Service::Domain
        }
    );
    assert_eq!(
        list(&["a"]).lookup(Service::Alias, "a").unwrap_err(),
        TableError::Unsupported {
            backend: "list",
            service: Service::Alias
        }
    );
    // Mapping keys also answer the list services.
    assert!(t.matches(Service::Domain, "EXAMPLE.ORG").unwrap());
    assert!(t.matches(Service::Userinfo, "joe").unwrap());
    assert!(!t.matches(Service::Userinfo, "jack").unwrap());
}

#[test]
fn virtual_lookup_order() {
    let all = [
        ("user+tag@example.org", "k1"),
        ("user@example.org", "k2"),
        ("user+tag", "k3"),
        ("user", "k4"),
        ("@example.org", "k5"),
        ("@", "k6"),
    ];
    for skip in 0..all.len() {
        let t = map(&all[skip..]);
        let m = t
            .lookup_virtual("User+Tag", "Example.ORG", '+')
            .unwrap()
            .unwrap();
        assert_eq!(m.key, all[skip].0);
        assert_eq!(m.targets, vec![AliasTarget::User(all[skip].1.into())]);
    }
    // No tag: the tagged keys are never tried.
    let t = map(&[("user+tag", "x"), ("@", "catchall@example.com")]);
    let m = t
        .lookup_virtual("user", "example.org", '+')
        .unwrap()
        .unwrap();
    assert_eq!(m.key, "@");
    // No domain: no catch-alls.
    assert_eq!(t.lookup_virtual("nobody", "", '+').unwrap(), None);
    // Another delimiter.
    let t = map(&[("user@d", "x")]);
    assert_eq!(
        t.lookup_virtual("user-tag", "d", '-').unwrap().unwrap().key,
        "user@d"
    );
    assert_eq!(t.lookup_virtual("user-tag", "d", '+').unwrap(), None);
}

#[test]
fn alias_lookup_with_tag() {
    let t = map(&[("bob", "root"), ("bob+lists", "/var/lists")]);
    assert_eq!(
        t.lookup_alias("Bob+Lists", '+').unwrap().unwrap().key,
        "bob+lists"
    );
    assert_eq!(
        t.lookup_alias("bob+other", '+').unwrap().unwrap().key,
        "bob"
    );
    assert_eq!(t.lookup_alias("bob", '+').unwrap().unwrap().key, "bob");
    assert_eq!(t.lookup_alias("alice", '+').unwrap(), None);
}

#[test]
fn getpwnam_backend() {
    let t = Table::open(&TableDecl::Getpwnam).unwrap();
    match t.lookup(Service::Userinfo, "root").unwrap() {
        Some(Value::Userinfo(u)) => {
            assert_eq!(u.uid, 0);
            assert_eq!(u.username, "root");
        }
        other => panic!("root: {other:?}"),
    }
    assert!(t.matches(Service::Userinfo, "ROOT").unwrap());
    assert_eq!(
        t.lookup(Service::Userinfo, "no-such-user-rsmtpd-test")
            .unwrap(),
        None
    );
    assert!(!t.matches(Service::Userinfo, "a\0b").unwrap());
    assert_eq!(
        t.matches(Service::Domain, "x").unwrap_err(),
        TableError::Unsupported {
            backend: "getpwnam",
            service: Service::Domain
        }
    );
    assert!(t.sources().is_err());
}

#[test]
fn db_tables() {
    let t = db(
        "example.org\n*.example.net\n192.168.0.0/16\n[2001:db8::/32]\n",
        MapType::Set,
    );
    assert_eq!(t.len(), Some(4));
    assert!(t.matches(Service::Domain, "Example.ORG").unwrap());
    assert!(t.matches(Service::Domain, "a.b.example.net").unwrap());
    assert!(!t.matches(Service::Domain, "example.net").unwrap());
    assert!(t.matches(Service::Netaddr, "192.168.44.1").unwrap());
    assert!(t.matches(Service::Netaddr, "2001:db8::5").unwrap());
    assert!(!t.matches(Service::Netaddr, "10.0.0.1").unwrap());
    // The metadata record is invisible.
    assert!(!t.matches(Service::String, META_TYPE_KEY).unwrap());
    let r = db("^rs\n", MapType::Set);
    assert!(!r.matches(Service::Regex, "\0rsmtpd-type").unwrap());
    assert!(r.matches(Service::Regex, "rsmtpd").unwrap());
    assert!(matches!(
        t.lookup(Service::Alias, "example.org"),
        Err(TableError::Unsupported { .. })
    ));

    let a = db(
        "Root: bob, /dev/null\n@: catchall@example.com\n",
        MapType::Aliases,
    );
    assert_eq!(
        a.lookup(Service::Alias, "root").unwrap(),
        Some(Value::Alias(vec![
            AliasTarget::User("bob".into()),
            AliasTarget::File("/dev/null".into())
        ]))
    );
    assert_eq!(
        a.lookup_virtual("x", "y.org", '+').unwrap().unwrap().key,
        "@"
    );
}

#[test]
fn foreign_and_bad_db_files() {
    // A plain cdb without our metadata is a mapping.
    let img = cdb::build([(&b"k"[..], &b"v"[..])]).unwrap();
    let t = Table::from_db_bytes(Path::new("/f.db"), img).unwrap();
    assert_eq!(t.shape(), Shape::Map);
    assert_eq!(
        t.lookup(Service::String, "k").unwrap(),
        Some(Value::Raw("v".into()))
    );
    // Unknown type tag.
    let img = cdb::build([(META_TYPE_KEY.as_bytes(), &b"weird"[..])]).unwrap();
    assert_eq!(
        Table::from_db_bytes(Path::new("/f.db"), img).unwrap_err(),
        TableError::Db {
            path: "/f.db".into(),
            reason: "unknown map type \"weird\"".into()
        }
    );
    // Berkeley DB hash file header.
    let mut bdb = vec![0u8; 64];
    bdb[12..16].copy_from_slice(&0x0006_1561u32.to_le_bytes());
    let e = Table::from_db_bytes(Path::new("/a.db"), bdb).unwrap_err();
    assert!(
        matches!(&e, TableError::Db { reason, .. } if reason.contains("Berkeley DB")),
        "{e:?}"
    );
    // Garbage.
    assert_eq!(
        Table::from_db_bytes(Path::new("/g.db"), vec![1, 2, 3]).unwrap_err(),
        TableError::Db {
            path: "/g.db".into(),
            reason: "file too short for a cdb header (3 bytes)".into()
        }
    );
}

#[test]
fn error_messages() {
    assert_eq!(
        TableError::Unsupported {
            backend: "getpwnam",
            service: Service::Alias
        }
        .to_string(),
        "getpwnam table cannot answer alias lookups"
    );
    assert_eq!(
        TableError::Value {
            service: Service::Userinfo,
            key: "joe".into(),
            reason: ValueError::UserinfoSyntax
        }
        .to_string(),
        "invalid userinfo value for \"joe\": userinfo must be \"uid:gid:/directory\""
    );
}

#[test]
fn table_is_shareable_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<Table>();
    check::<TableError>();
}
