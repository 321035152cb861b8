//! Tables backed by real files: file: tables, makemap-built db: tables from
//! the reference examples, and the failure modes of both.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rsmtpd_table::makemap::{self, MakemapError, MapType};
use rsmtpd_table::{
    AliasTarget, Credentials, MailAddr, Service, Shape, Table, TableDecl, TableError, Userinfo,
    Value,
};

fn tempdir(name: &str) -> PathBuf {
    rsmtpd_test_support::temp_dir(&format!("table-{name}"))
}

fn example(name: &str) -> PathBuf {
    rsmtpd_test_support::reference_dir()
        .join("examples/tables")
        .join(name)
}

fn build(dir: &Path, name: &str, ty: MapType) -> Table {
    let out = dir.join(format!("{name}.db"));
    makemap::makemap(&example(name), &out, ty).unwrap();
    Table::open(&TableDecl::Db(out)).unwrap()
}

#[test]
fn missing_file() {
    let dir = tempdir("missing");
    let p = dir.join("nope");
    match Table::open(&TableDecl::File(p.clone())).unwrap_err() {
        TableError::Io { path, reason } => {
            assert_eq!(path, p);
            assert!(reason.contains("No such file"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        Table::open(&TableDecl::Db(p.clone())),
        Err(TableError::Io { .. })
    ));
}

#[test]
fn directory_and_fifo_are_not_tables() {
    let dir = tempdir("dir");
    assert_eq!(
        Table::open(&TableDecl::File(dir.clone())).unwrap_err(),
        TableError::Io {
            path: dir.clone(),
            reason: "not a regular file".into()
        }
    );
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Must not block waiting for a writer.
    assert_eq!(
        Table::open(&TableDecl::File(fifo.clone())).unwrap_err(),
        TableError::Io {
            path: fifo,
            reason: "not a regular file".into()
        }
    );
}

#[test]
fn ten_megabyte_line() {
    let dir = tempdir("bigline");
    let p = dir.join("t");
    let mut data = b"first\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    data.push(b'\n');
    fs::write(&p, &data).unwrap();
    assert_eq!(
        Table::open(&TableDecl::File(p.clone())).unwrap_err(),
        TableError::Syntax {
            path: p.clone(),
            line: 2,
            reason: format!("line longer than {} bytes", rsmtpd_table::MAX_LINE)
        }
    );
    assert!(matches!(
        makemap::makemap(&p, &dir.join("t.db"), MapType::Set).unwrap_err(),
        MakemapError::Syntax { line: 2, .. }
    ));
    assert!(!dir.join("t.db").exists());
}

#[test]
fn file_over_size_limit() {
    let dir = tempdir("bigfile");
    let p = dir.join("t");
    let f = fs::File::create(&p).unwrap();
    // Sparse: no disk used.
    f.set_len(rsmtpd_table::MAX_FILE + 1).unwrap();
    assert_eq!(
        Table::open(&TableDecl::File(p.clone())).unwrap_err(),
        TableError::Io {
            path: p,
            reason: format!("file larger than {} bytes", rsmtpd_table::MAX_FILE)
        }
    );
}

#[test]
fn forced_list_file() {
    let dir = tempdir("atlist");
    let p = dir.join("t");
    fs::write(&p, "# @list\nuser@example.org   whatever\n@example.net\n").unwrap();
    let t = Table::open(&TableDecl::File(p)).unwrap();
    assert_eq!(t.shape(), Shape::List);
    assert!(
        t.matches(Service::String, "user@example.org   whatever")
            .unwrap()
    );
    assert!(t.matches(Service::Mailaddr, "x@example.net").unwrap());
}

#[test]
fn example_file_tables() {
    let t = Table::open(&TableDecl::File(example("list.txt"))).unwrap();
    assert_eq!(t.shape(), Shape::List);
    assert!(t.matches(Service::String, "value2").unwrap());

    let t = Table::open(&TableDecl::File(example("mapping.txt"))).unwrap();
    assert_eq!(t.shape(), Shape::Map);
    assert_eq!(
        t.lookup(Service::String, "key1").unwrap(),
        Some(Value::Raw("value1".into()))
    );

    let t = Table::open(&TableDecl::File(example("netaddr.txt"))).unwrap();
    assert!(t.matches(Service::Netaddr, "192.168.1.200").unwrap());
    assert!(t.matches(Service::Netaddr, "::1").unwrap());
    assert!(!t.matches(Service::Netaddr, "192.168.2.1").unwrap());

    let t = Table::open(&TableDecl::File(example("addrname.txt"))).unwrap();
    assert_eq!(
        t.lookup(Service::Addrname, "::1").unwrap(),
        Some(Value::Addrname("localhost".into()))
    );
    assert_eq!(
        t.lookup(Service::Addrname, "88.190.23.165").unwrap(),
        Some(Value::Addrname("www.opensmtpd.org".into()))
    );

    let t = Table::open(&TableDecl::File(example("aliases.etc-default.txt"))).unwrap();
    assert_eq!(
        t.lookup(Service::Alias, "mailer-daemon").unwrap(),
        Some(Value::Alias(vec![AliasTarget::User("postmaster".into())]))
    );
    assert_eq!(
        t.lookup(Service::Alias, "_bgpd").unwrap(),
        Some(Value::Alias(vec![AliasTarget::File("/dev/null".into())]))
    );
}

#[test]
fn makemap_examples_read_back() {
    let dir = tempdir("examples");

    let t = build(&dir, "aliases-primary.txt", MapType::Aliases);
    assert_eq!(
        t.lookup(Service::Alias, "user2").unwrap(),
        Some(Value::Alias(vec![
            AliasTarget::User("otheruser1".into()),
            AliasTarget::User("otheruser2".into())
        ]))
    );
    assert_eq!(
        t.lookup(Service::Alias, "user3").unwrap(),
        Some(Value::Alias(vec![AliasTarget::Address(MailAddr {
            user: "otheruser".into(),
            domain: "example.com".into()
        })]))
    );

    let t = build(&dir, "aliases.etc-default.txt", MapType::Aliases);
    assert_eq!(
        t.lookup_alias("MAILER-DAEMON", '+')
            .unwrap()
            .unwrap()
            .targets,
        vec![AliasTarget::User("postmaster".into())]
    );

    let t = build(&dir, "virtual.txt", MapType::Aliases);
    assert_eq!(
        t.lookup_virtual("user2", "example.org", '+')
            .unwrap()
            .unwrap()
            .key,
        "user2@example.org"
    );
    assert_eq!(
        t.lookup_virtual("someone", "example.org", '+')
            .unwrap()
            .unwrap()
            .key,
        "@example.org"
    );
    assert_eq!(
        t.lookup_virtual("someone", "elsewhere.net", '+')
            .unwrap()
            .unwrap()
            .targets,
        vec![AliasTarget::Address(MailAddr {
            user: "catchall".into(),
            domain: "example.com".into()
        })]
    );
    assert_eq!(
        t.lookup_virtual("user1", "any.org", '+')
            .unwrap()
            .unwrap()
            .key,
        "user1"
    );

    let t = build(&dir, "domains.txt", MapType::Set);
    assert_eq!(t.shape(), Shape::List);
    assert!(t.matches(Service::Domain, "example.org").unwrap());
    assert!(t.matches(Service::Domain, "mx.example.org").unwrap());
    assert!(!t.matches(Service::Domain, "example.com").unwrap());

    let t = build(&dir, "credentials-relay.txt", MapType::Plain);
    assert_eq!(
        t.lookup(Service::Credentials, "label1").unwrap(),
        Some(Value::Credentials(Credentials {
            username: "user".into(),
            password: "password".into()
        }))
    );
    let t = build(&dir, "credentials-listener.txt", MapType::Plain);
    assert_eq!(
        t.lookup(Service::Credentials, "user2").unwrap(),
        Some(Value::Credentials(Credentials {
            username: "user2".into(),
            password: "$2b$10$bwSmUOBGcZGamIfRuXGTvuTo3VLbPG9k5yeKNMBtULBhksV5KdGsK".into()
        }))
    );

    let t = build(&dir, "userinfo.txt", MapType::Plain);
    assert_eq!(
        t.lookup(Service::Userinfo, "jack").unwrap(),
        Some(Value::Userinfo(Userinfo {
            username: "jack".into(),
            uid: 1000,
            gid: 100,
            directory: "/home/virtual/jack".into()
        }))
    );

    let t = build(&dir, "addrname.txt", MapType::Plain);
    assert_eq!(
        t.lookup(Service::Addrname, "[::1]").unwrap(),
        Some(Value::Addrname("localhost".into()))
    );

    let t = build(&dir, "netaddr.txt", MapType::Set);
    assert!(t.matches(Service::Netaddr, "192.168.1.9").unwrap());

    let t = build(&dir, "mailaddr.txt", MapType::Set);
    assert!(t.matches(Service::Mailaddr, "user@x.domain").unwrap());
    assert!(t.matches(Service::Mailaddr, "bob@domain").unwrap());
    assert!(!t.matches(Service::Mailaddr, "bob@other").unwrap());

    // A list without -t set is not a valid map (as OpenSMTPD's makemap).
    assert!(matches!(
        makemap::makemap(&example("domains.txt"), &dir.join("bad.db"), MapType::Plain).unwrap_err(),
        MakemapError::Syntax {
            line: 1,
            reason: makemap::SyntaxReason::MissingValue,
            ..
        }
    ));
    assert!(!dir.join("bad.db").exists());
}

#[test]
fn makemap_replaces_atomically_and_keeps_mode() {
    let dir = tempdir("atomic");
    let src = dir.join("aliases");
    fs::write(&src, "root: bob\n").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    let out = makemap::default_output(&src);
    assert_eq!(out, dir.join("aliases.db"));
    assert_eq!(makemap::makemap(&src, &out, MapType::Aliases).unwrap(), 1);
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o640
    );
    fs::write(&src, "root: alice\npostmaster: root\n").unwrap();
    assert_eq!(makemap::makemap(&src, &out, MapType::Aliases).unwrap(), 2);
    let t = Table::open(&TableDecl::Db(out.clone())).unwrap();
    assert_eq!(
        t.lookup(Service::Alias, "root").unwrap(),
        Some(Value::Alias(vec![AliasTarget::User("alice".into())]))
    );
    // A failed build leaves the old db in place and no temp files behind.
    fs::write(&src, "root: bad target\n").unwrap();
    assert!(matches!(
        makemap::makemap(&src, &out, MapType::Aliases),
        Err(MakemapError::Alias { line: 1, .. })
    ));
    let t = Table::open(&TableDecl::Db(out.clone())).unwrap();
    assert_eq!(t.len(), Some(2));
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["aliases", "aliases.db"]);

    let mut dumped = Vec::new();
    assert_eq!(makemap::dump(&out, &mut dumped).unwrap(), 2);
    assert_eq!(
        String::from_utf8(dumped).unwrap(),
        "root\talice\npostmaster\troot\n"
    );
}

#[test]
fn corrupt_db_files() {
    let dir = tempdir("corrupt");
    let src = dir.join("src");
    fs::write(&src, "a 1\nb 2\nc 3\n").unwrap();
    let good = dir.join("good.db");
    makemap::makemap(&src, &good, MapType::Plain).unwrap();
    let bytes = fs::read(&good).unwrap();

    for cut in [0, 10, 2047, 2048, 2060, bytes.len() - 1] {
        let p = dir.join(format!("cut{cut}.db"));
        fs::write(&p, &bytes[..cut]).unwrap();
        match Table::open(&TableDecl::Db(p.clone())) {
            Err(TableError::Db { path, .. }) => assert_eq!(path, p),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Flip every header byte in turn: never a panic, always a Db error or
    // a table that still answers without panicking.
    for i in 0..2048 {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        if let Ok(t) = Table::from_db_bytes(&good, b) {
            let _ = t.matches(Service::Domain, "a");
            let _ = t.lookup(Service::String, "b");
        }
    }
    // Huge record length right after the header.
    let mut b = bytes.clone();
    b[2048..2052].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(matches!(
        Table::from_db_bytes(&good, b),
        Err(TableError::Db { .. })
    ));
    // A text file given as db.
    assert!(matches!(
        Table::open(&TableDecl::Db(src)),
        Err(TableError::Db { .. })
    ));
}
