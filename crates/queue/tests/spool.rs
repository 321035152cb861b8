//! The spool through its public API, on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: helpers panic on setup failure

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rsmtpd_queue::{
    BodyType, CorruptReason, DecodeError, Dispatcher, EncodeError, Envelope, EnvelopeId, Field,
    MsgId, Origin, RcptState, Sender, Spool, SpoolError, decode, encode,
};

struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("rsmtpd-queue-it-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        TestDir(p)
    }
    fn spool(&self) -> PathBuf {
        self.0.join("spool")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn envelope(id: EnvelopeId, rcpt: &str) -> Envelope {
    Envelope {
        id,
        created: 1_800_000_000,
        ttl: 86400,
        action: "local".into(),
        dispatcher: Dispatcher::Local,
        sender: Sender::Address("a@example.org".into()),
        rcpt: rcpt.into(),
        dest: rcpt.into(),
        user: None,
        target: None,
        dsn_notify: None,
        dsn_orcpt: None,
        dsn_ret: None,
        dsn_envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        helo: "client".into(),
        origin: Origin::Inet {
            addr: "127.0.0.1".parse().unwrap(),
            rdns: Some("localhost".into()),
        },
        hostname: "mx.example.org".into(),
        tag: None,
        auth_user: None,
        retry: 0,
        last_try: None,
        next_try: 1_800_000_000,
        last_error: None,
        hold: false,
        state: RcptState::Pending,
    }
}

const DATA: &[u8] = b"Subject: hi\r\n\r\nbody\r\n";

/// Creates, writes and commits a message with `n` recipients.
fn committed(spool: &Spool, n: usize) -> (MsgId, Vec<Envelope>) {
    let (m, mut f) = spool.create_message().unwrap();
    f.write_all(DATA).unwrap();
    let envs: Vec<Envelope> = (0..n)
        .map(|i| {
            envelope(
                spool.new_envelope_id(m).unwrap(),
                &format!("r{i}@example.net"),
            )
        })
        .collect();
    spool.commit(m, envs.clone()).unwrap();
    (m, envs)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn msg_dir(root: &Path, m: MsgId) -> PathBuf {
    root.join("queue").join(m.bucket()).join(m.to_string())
}

fn sorted(mut v: Vec<Envelope>) -> Vec<Envelope> {
    v.sort_by_key(|e| e.id);
    v
}

#[test]
fn open_creates_tree_with_private_modes() {
    let d = TestDir::new("open");
    let spool = Spool::open(d.spool()).unwrap();
    for sub in ["incoming", "queue", "purge", "corrupt"] {
        assert_eq!(mode(&d.spool().join(sub)), 0o700, "{sub}");
    }
    drop(spool);
    // A loosened directory is tightened again.
    fs::set_permissions(d.spool().join("queue"), fs::Permissions::from_mode(0o755)).unwrap();
    Spool::open(d.spool()).unwrap();
    assert_eq!(mode(&d.spool().join("queue")), 0o700);
}

#[test]
fn open_refuses_file_or_symlink_in_place_of_directory() {
    let d = TestDir::new("open-bad");
    fs::create_dir(d.spool()).unwrap();
    fs::write(d.spool().join("queue"), b"").unwrap();
    let e = Spool::open(d.spool()).unwrap_err();
    assert!(
        matches!(e, SpoolError::NotADirectory { ref path } if *path == d.spool().join("queue"))
    );
    fs::remove_file(d.spool().join("queue")).unwrap();
    std::os::unix::fs::symlink("/tmp", d.spool().join("queue")).unwrap();
    let e = Spool::open(d.spool()).unwrap_err();
    assert!(matches!(e, SpoolError::NotADirectory { .. }), "{e:?}");
    let file_root = d.0.join("plain");
    fs::write(&file_root, b"").unwrap();
    assert!(matches!(
        Spool::open(&file_root),
        Err(SpoolError::NotADirectory { .. })
    ));
}

#[test]
fn commit_then_load_and_read_message() {
    let d = TestDir::new("commit");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, envs) = committed(&spool, 3);
    let dir = msg_dir(&d.spool(), m);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("message")), 0o600);
    for e in &envs {
        let bytes = fs::read(dir.join(e.id.to_string())).unwrap();
        assert_eq!(bytes, encode(e).unwrap());
        assert_eq!(mode(&dir.join(e.id.to_string())), 0o600);
    }
    let mut data = Vec::new();
    spool
        .open_message(m)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data, DATA);
    assert!(
        fs::read_dir(d.spool().join("incoming"))
            .unwrap()
            .next()
            .is_none()
    );
    drop(spool);
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    assert_eq!(report.envelopes, sorted(envs));
    assert!(report.moved_aside.is_empty());
    assert!(report.discarded_incoming.is_empty());
}

#[test]
fn commit_rejects_bad_requests_without_touching_the_queue() {
    let d = TestDir::new("commit-bad");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, _f) = spool.create_message().unwrap();
    let other = MsgId::new(m.get().wrapping_add(1).max(1)).unwrap();
    let good = envelope(spool.new_envelope_id(m).unwrap(), "x@example.net");

    assert!(matches!(spool.commit(m, vec![]), Err(SpoolError::NoEnvelopes(x)) if x == m));
    let foreign = envelope(EnvelopeId::new(other, 1), "x@example.net");
    assert!(matches!(
        spool.commit(m, vec![good.clone(), foreign]),
        Err(SpoolError::WrongMessage { .. })
    ));
    assert!(matches!(
        spool.commit(m, vec![good.clone(), good.clone()]),
        Err(SpoolError::DuplicateEnvelope(id)) if id == good.id
    ));
    let mut injected = envelope(spool.new_envelope_id(m).unwrap(), "x@example.net");
    injected.dest = "x@example.net\nstate: delivered".into();
    assert!(matches!(
        spool.commit(m, vec![good.clone(), injected]),
        Err(SpoolError::Encode {
            source: EncodeError::ForbiddenByte {
                field: Field::Dest,
                byte: b'\n'
            },
            ..
        })
    ));
    // Nothing staged by the refused requests: the good commit still works.
    assert_eq!(
        fs::read_dir(d.spool().join("incoming").join(m.to_string()))
            .unwrap()
            .count(),
        1
    );
    spool.commit(m, vec![good.clone()]).unwrap();
    // A second commit of the same message finds it no longer incoming.
    assert!(matches!(spool.commit(m, vec![good]), Err(SpoolError::UnknownMessage(x)) if x == m));
    assert!(
        matches!(spool.commit(other, vec![envelope(EnvelopeId::new(other, 2), "y@example.net")]),
        Err(SpoolError::UnknownMessage(x)) if x == other)
    );
}

#[test]
fn abort_removes_incoming_only() {
    let d = TestDir::new("abort");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, mut f) = spool.create_message().unwrap();
    f.write_all(b"partial").unwrap();
    spool.abort(m).unwrap();
    assert!(!d.spool().join("incoming").join(m.to_string()).exists());
    assert!(matches!(spool.abort(m), Err(SpoolError::UnknownMessage(x)) if x == m));
    let (c, _) = committed(&spool, 1);
    assert!(matches!(spool.abort(c), Err(SpoolError::UnknownMessage(_))));
    assert!(msg_dir(&d.spool(), c).join("message").exists());
}

#[test]
fn create_message_ids_are_distinct() {
    let d = TestDir::new("ids");
    let spool = Spool::open(d.spool()).unwrap();
    let mut ids: Vec<MsgId> = (0..200)
        .map(|_| spool.create_message().unwrap().0)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

#[test]
fn update_replaces_atomically_and_survives_reload() {
    let d = TestDir::new("update");
    let spool = Spool::open(d.spool()).unwrap();
    let (_m, envs) = committed(&spool, 2);
    let mut e = envs[0].clone();
    e.retry = 1;
    e.last_try = Some(1_800_000_100);
    e.next_try = 1_800_000_700;
    e.state = RcptState::Delivered;
    spool.update(&e).unwrap();
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    assert_eq!(report.envelopes, sorted(vec![e.clone(), envs[1].clone()]));

    let mut bad = e.clone();
    bad.helo = "a\r\nb".into();
    assert!(matches!(spool.update(&bad), Err(SpoolError::Encode { .. })));
    let unknown = envelope(
        EnvelopeId::new(e.msgid(), !e.id.get() as u32),
        "z@example.net",
    );
    assert!(
        matches!(spool.update(&unknown), Err(SpoolError::UnknownEnvelope(id)) if id == unknown.id)
    );
    // The refused updates changed nothing.
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    assert_eq!(report.envelopes, sorted(vec![e, envs[1].clone()]));
}

#[test]
fn interrupted_update_leaves_old_envelope_and_temp_is_removed() {
    let d = TestDir::new("update-crash");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, envs) = committed(&spool, 1);
    // What a crash between the temp write and the rename leaves.
    let tmp = msg_dir(&d.spool(), m).join(format!("{}.tmp", envs[0].id));
    fs::write(&tmp, b"rsmtpd-envelope 1\nid: half").unwrap();
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    assert_eq!(report.envelopes, envs);
    assert_eq!(report.removed_temp, vec![tmp.clone()]);
    assert!(!tmp.exists());
}

#[test]
fn remove_envelopes_then_message() {
    let d = TestDir::new("remove");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, envs) = committed(&spool, 2);
    assert!(!spool.remove_envelope(envs[0].id).unwrap());
    assert!(!msg_dir(&d.spool(), m).join(envs[0].id.to_string()).exists());
    assert!(matches!(
        spool.remove_envelope(envs[0].id),
        Err(SpoolError::UnknownEnvelope(_))
    ));
    spool.open_message(m).unwrap();
    assert!(spool.remove_envelope(envs[1].id).unwrap());
    assert!(!msg_dir(&d.spool(), m).exists());
    // Kept as the one spare for the next message.
    assert_eq!(
        entries(&d.spool().join("purge")),
        vec!["spare.1".to_owned()]
    );
    assert!(matches!(
        spool.open_message(m),
        Err(SpoolError::UnknownMessage(_))
    ));
    assert!(matches!(
        spool.remove_envelope(envs[1].id),
        Err(SpoolError::UnknownEnvelope(_))
    ));
    let report = spool.load().unwrap();
    assert!(report.envelopes.is_empty() && report.moved_aside.is_empty());
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A finished message's directory and files serve the next message: no
/// new inode, the old data and envelopes gone, the new ones whole.
#[test]
fn finished_directories_are_reused_without_a_trace_of_their_last_message() {
    use std::os::unix::fs::MetadataExt;
    let d = TestDir::new("reuse");
    let spool = Spool::open(d.spool()).unwrap();
    let (m1, envs1) = committed(&spool, 3);
    let dir_ino = fs::metadata(msg_dir(&d.spool(), m1)).unwrap().ino();
    let file_ino = fs::metadata(msg_dir(&d.spool(), m1).join("message"))
        .unwrap()
        .ino();
    let env_inos: Vec<u64> = envs1
        .iter()
        .map(|e| {
            fs::metadata(msg_dir(&d.spool(), m1).join(e.id.to_string()))
                .unwrap()
                .ino()
        })
        .collect();
    for e in &envs1 {
        spool.remove_envelope(e.id).unwrap();
    }
    // The next message takes the spare: same directory, same message
    // file, nothing in it but zeros.
    let (m2, mut f) = spool.create_message().unwrap();
    assert!(entries(&d.spool().join("purge")).is_empty());
    let incoming = d.spool().join("incoming").join(m2.to_string());
    assert_eq!(fs::metadata(&incoming).unwrap().ino(), dir_ino);
    let message = incoming.join("message");
    assert_eq!(fs::metadata(&message).unwrap().ino(), file_ino);
    let left = fs::read(&message).unwrap();
    assert_eq!(left.len(), DATA.len());
    assert!(left.iter().all(|b| *b == 0), "{left:?}");
    f.write_all(b"short\r\n").unwrap();
    rsmtpd_queue::end_message(&f).unwrap();
    // One recipient now: one old envelope file is reused, two go.
    let e2 = envelope(spool.new_envelope_id(m2).unwrap(), "new@example.net");
    spool.commit(m2, vec![e2.clone()]).unwrap();
    let dir2 = msg_dir(&d.spool(), m2);
    assert_eq!(entries(&dir2), {
        let mut v = vec!["message".to_owned(), e2.id.to_string()];
        v.sort();
        v
    });
    let e2_ino = fs::metadata(dir2.join(e2.id.to_string())).unwrap().ino();
    assert!(env_inos.contains(&e2_ino));
    let mut data = Vec::new();
    spool
        .open_message(m2)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data, b"short\r\n");
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    assert_eq!(report.envelopes, vec![e2]);
    assert!(report.moved_aside.is_empty());
}

/// A large finished message is emptied rather than zeroed: its spare
/// starts with an empty file.
#[test]
fn a_large_message_leaves_an_empty_spare() {
    let d = TestDir::new("reuse-large");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, mut f) = spool.create_message().unwrap();
    f.write_all(&vec![b'x'; 300 * 1024]).unwrap();
    let e = envelope(spool.new_envelope_id(m).unwrap(), "big@example.net");
    spool.commit(m, vec![e.clone()]).unwrap();
    spool.remove_envelope(e.id).unwrap();
    let (m2, _f) = spool.create_message().unwrap();
    let message = d
        .spool()
        .join("incoming")
        .join(m2.to_string())
        .join("message");
    assert_eq!(fs::metadata(&message).unwrap().len(), 0);
}

/// An aborted message's directory is a spare too; spares left at a stop
/// are gone after start-up.
#[test]
fn aborted_directories_are_spares_and_start_up_clears_spares() {
    let d = TestDir::new("abort-spare");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, mut f) = spool.create_message().unwrap();
    f.write_all(b"half a message").unwrap();
    spool.abort(m).unwrap();
    assert!(!d.spool().join("incoming").join(m.to_string()).exists());
    assert_eq!(
        entries(&d.spool().join("purge")),
        vec!["spare.1".to_owned()]
    );
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    assert_eq!(report.purged, vec![d.spool().join("purge").join("spare.1")]);
    assert!(entries(&d.spool().join("purge")).is_empty());
}

#[test]
fn load_discards_incoming_and_reports_it() {
    let d = TestDir::new("incoming");
    let spool = Spool::open(d.spool()).unwrap();
    let (m, mut f) = spool.create_message().unwrap();
    f.write_all(b"never committed").unwrap();
    fs::write(d.spool().join("incoming").join("stray"), b"x").unwrap();
    let report = Spool::open(d.spool()).unwrap().load().unwrap();
    let mut want = vec![
        d.spool().join("incoming").join(m.to_string()),
        d.spool().join("incoming").join("stray"),
    ];
    want.sort();
    assert_eq!(report.discarded_incoming, want);
    assert!(report.envelopes.is_empty());
}

fn reason_of(report: &rsmtpd_queue::LoadReport, from: &Path) -> CorruptReason {
    let m = report
        .moved_aside
        .iter()
        .find(|m| m.from == from)
        .unwrap_or_else(|| panic!("{from:?} not moved aside: {:?}", report.moved_aside));
    assert!(!m.from.exists());
    m.reason.clone()
}

#[test]
fn load_moves_damaged_files_aside_with_reasons() {
    let d = TestDir::new("corrupt");
    let spool = Spool::open(d.spool()).unwrap();
    let root = d.spool();

    // A: one of two envelopes has a flipped byte.
    let (a, a_envs) = committed(&spool, 2);
    let a0 = msg_dir(&root, a).join(a_envs[0].id.to_string());
    let mut bytes = fs::read(&a0).unwrap();
    let pos = bytes.iter().position(|&b| b == b'@').unwrap();
    bytes[pos] = b'#';
    fs::write(&a0, &bytes).unwrap();

    // B: its only envelope truncated: the file and then the message go.
    let (b, b_envs) = committed(&spool, 1);
    let b0 = msg_dir(&root, b).join(b_envs[0].id.to_string());
    let full = fs::read(&b0).unwrap();
    fs::write(&b0, &full[..full.len() - 2]).unwrap();

    // C: the message file is missing.
    let (c, _) = committed(&spool, 1);
    fs::remove_file(msg_dir(&root, c).join("message")).unwrap();

    // D: an envelope stored under another envelope's name, an oversized
    // file, a socket, and an unknown file.
    let (dd, d_envs) = committed(&spool, 1);
    let ddir = msg_dir(&root, dd);
    let alien = EnvelopeId::new(dd, !d_envs[0].id.get() as u32);
    fs::copy(
        ddir.join(d_envs[0].id.to_string()),
        ddir.join(alien.to_string()),
    )
    .unwrap();
    let huge = EnvelopeId::new(dd, (!d_envs[0].id.get() as u32) ^ 1);
    fs::write(ddir.join(huge.to_string()), vec![b'x'; 200_000]).unwrap();
    let sock = ddir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    fs::write(ddir.join("notes.txt"), b"admin was here").unwrap();

    // E: a message directory in the wrong bucket, and junk in queue/.
    let (e, _) = committed(&spool, 1);
    let wrong_bucket = if e.bucket() == "00" { "01" } else { "00" };
    fs::create_dir_all(root.join("queue").join(wrong_bucket)).unwrap();
    let misplaced = root.join("queue").join(wrong_bucket).join(e.to_string());
    fs::rename(msg_dir(&root, e), &misplaced).unwrap();
    fs::write(root.join("queue").join("README"), b"x").unwrap();
    fs::create_dir(root.join("queue").join("zz")).unwrap();

    drop(spool);
    let spool = Spool::open(&root).unwrap();
    let report = spool.load().unwrap();

    assert_eq!(
        report.envelopes,
        sorted(vec![a_envs[1].clone(), d_envs[0].clone()])
    );
    assert!(matches!(
        reason_of(&report, &a0),
        CorruptReason::Decode(DecodeError::ChecksumMismatch { .. })
    ));
    assert_eq!(
        reason_of(&report, &b0),
        CorruptReason::Decode(DecodeError::MissingEnd)
    );
    assert_eq!(
        reason_of(&report, &msg_dir(&root, b)),
        CorruptReason::NoValidEnvelope
    );
    assert_eq!(
        reason_of(&report, &msg_dir(&root, c)),
        CorruptReason::MissingMessage
    );
    assert_eq!(
        reason_of(&report, &ddir.join(alien.to_string())),
        CorruptReason::IdMismatch {
            inside: d_envs[0].id
        }
    );
    assert_eq!(
        reason_of(&report, &ddir.join(huge.to_string())),
        CorruptReason::Decode(DecodeError::TooLarge {
            size: 64 * 1024 + 1
        })
    );
    assert_eq!(reason_of(&report, &sock), CorruptReason::UnexpectedEntry);
    assert_eq!(
        reason_of(&report, &ddir.join("notes.txt")),
        CorruptReason::UnexpectedEntry
    );
    assert_eq!(reason_of(&report, &misplaced), CorruptReason::WrongBucket);
    assert_eq!(
        reason_of(&report, &root.join("queue").join("README")),
        CorruptReason::UnexpectedEntry
    );
    assert_eq!(
        reason_of(&report, &root.join("queue").join("zz")),
        CorruptReason::UnexpectedEntry
    );
    assert_eq!(report.moved_aside.len(), 11);

    // Everything is in corrupt/ with a reason file an admin can read.
    for m in &report.moved_aside {
        assert!(m.to.starts_with(root.join("corrupt")), "{m:?}");
        assert!(fs::symlink_metadata(&m.to).is_ok(), "{m:?}");
        let mut why = m.to.clone().into_os_string();
        why.push(".reason");
        assert_eq!(fs::read_to_string(&why).unwrap(), format!("{}\n", m.reason));
    }
    let moved_a0 = &report.moved_aside.iter().find(|m| m.from == a0).unwrap().to;
    assert_eq!(fs::read(moved_a0).unwrap(), bytes);
    assert!(
        moved_a0
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{a}-{}.", a_envs[0].id))
    );

    // A second load finds a clean queue.
    let again = spool.load().unwrap();
    assert_eq!(again.envelopes, report.envelopes);
    assert!(again.moved_aside.is_empty());
}

#[test]
fn decoded_file_matches_documented_example_shape() {
    let e = envelope(
        EnvelopeId::new(MsgId::new(0x0e07_f53e).unwrap(), 0x9d06_e807),
        "b@example.net",
    );
    let bytes = encode(&e).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("rsmtpd-envelope 1\nid: 0e07f53e9d06e807\n"));
    assert!(text.ends_with("\nend\n"));
    assert_eq!(decode(&bytes).unwrap(), e);
}
