//! Channels over real socketpairs: typed round trips, fd passing, and
//! peers that send garbage.

// Test helpers outside #[test] fns panic on purpose, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use rsmtpd_ipc::frame::{FrameError, HEADER_LEN, MAGIC, VERSION};
use rsmtpd_ipc::{
    BlockingChannel, Channel, IpcError, MAX_FDS, MAX_PAYLOAD_LEN, encode_message, pair,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Envelope {
        id: u64,
        from: String,
        rcpts: Vec<Rcpt>,
        params: BTreeMap<String, Option<String>>,
    },
    Blob(Vec<u8>),
    Bye,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rcpt {
    addr: String,
    notify: Option<Vec<u8>>,
}

fn sample() -> Msg {
    let mut params = BTreeMap::new();
    params.insert("SIZE".to_string(), Some("1234".to_string()));
    params.insert("SMTPUTF8".to_string(), None);
    Msg::Envelope {
        id: 0xdead_beef_0000_0001,
        from: "jöhn@example.org".into(),
        rcpts: vec![
            Rcpt {
                addr: "a@example.net".into(),
                notify: Some(vec![1, 2]),
            },
            Rcpt {
                addr: "b@example.net".into(),
                notify: None,
            },
        ],
        params,
    }
}

/// A unique temp file path per test.
fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rsmtpd-ipc-{}-{tag}", std::process::id()))
}

/// An async channel and the raw other end, for a peer that misbehaves.
fn raw_peer() -> (Channel<Msg>, StdUnixStream) {
    let (a, b) = pair().unwrap();
    (Channel::from_fd(a).unwrap(), StdUnixStream::from(b))
}

/// Sends `bytes` with `fds` attached in one sendmsg, as a hostile peer might.
fn raw_sendmsg(sock: &StdUnixStream, bytes: &[u8], fds: &[RawFd]) {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(n, bytes.len());
}

/// A pipe: the test keeps the read end and passes the write end. Once every
/// copy of the write end is closed, reading gives EOF: that proves the
/// receiver closed what it got.
fn pipe() -> (File, OwnedFd) {
    let (r, w) = nix::unistd::pipe().unwrap();
    (File::from(r), w)
}

fn assert_all_closed(mut read_end: File) {
    let mut buf = Vec::new();
    // Blocks forever if some copy of the write end is still open: the test
    // harness would then hang, which is the failure we want to see.
    read_end.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty());
}

fn is_cloexec(fd: &impl AsFd) -> bool {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    flags & nix::libc::FD_CLOEXEC != 0
}

#[tokio::test]
async fn typed_round_trip_both_ways() {
    let (mut a, mut b) = Channel::<Msg>::pair().unwrap();
    a.send(&sample(), vec![]).await.unwrap();
    let (m, fds) = b.recv().await.unwrap().unwrap();
    assert_eq!(m, sample());
    assert!(fds.is_empty());
    b.send(&Msg::Ping(7), vec![]).await.unwrap();
    assert_eq!(a.recv().await.unwrap().unwrap().0, Msg::Ping(7));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Request {
    Open(u32),
}
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Reply {
    Opened { id: u32 },
}

#[tokio::test]
async fn directions_may_have_distinct_types() {
    let (mut client, mut server) = Channel::<Request, Reply>::pair().unwrap();
    client.send(&Request::Open(3), vec![]).await.unwrap();
    let (req, _) = server.recv().await.unwrap().unwrap();
    assert_eq!(req, Request::Open(3));
    server.send(&Reply::Opened { id: 3 }, vec![]).await.unwrap();
    assert_eq!(
        client.recv().await.unwrap().unwrap().0,
        Reply::Opened { id: 3 }
    );
}

#[tokio::test]
async fn many_messages_in_one_write() {
    let (mut ch, mut raw) = raw_peer();
    let mut wire = Vec::new();
    for i in 0..1000u64 {
        wire.extend(encode_message(&Msg::Ping(i), 0).unwrap());
    }
    wire.extend(encode_message(&sample(), 0).unwrap());
    raw.write_all(&wire).unwrap();
    drop(raw);
    for i in 0..1000u64 {
        assert_eq!(ch.recv().await.unwrap().unwrap().0, Msg::Ping(i));
    }
    assert_eq!(ch.recv().await.unwrap().unwrap().0, sample());
    assert!(ch.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn one_message_split_over_many_writes() {
    let (mut ch, mut raw) = raw_peer();
    let wire = encode_message(&sample(), 0).unwrap();
    let writer = std::thread::spawn(move || {
        for b in &wire {
            raw.write_all(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        raw
    });
    assert_eq!(ch.recv().await.unwrap().unwrap().0, sample());
    drop(writer.join().unwrap());
    assert!(ch.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    let (mut ch, mut raw) = raw_peer();
    let wire = encode_message(&sample(), 0).unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in wire.chunks(3) {
            raw.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        raw
    });
    // Cancel recv over and over while the frame trickles in.
    let got = loop {
        tokio::select! {
            r = ch.recv() => break r.unwrap().unwrap().0,
            _ = tokio::time::sleep(Duration::from_micros(500)) => {}
        }
    };
    assert_eq!(got, sample());
    drop(writer.join().unwrap());
}

#[tokio::test]
async fn largest_message_round_trips() {
    let (mut a, mut b) = Channel::<Msg>::pair().unwrap();
    // Vec<u8> costs a length prefix of 3 bytes and the variant tag 1.
    let blob = Msg::Blob(vec![0xa5; MAX_PAYLOAD_LEN - 4]);
    assert_eq!(
        encode_message(&blob, 0).unwrap().len(),
        HEADER_LEN + MAX_PAYLOAD_LEN
    );
    let send = {
        let blob = blob.clone();
        tokio::spawn(async move {
            a.send(&blob, vec![]).await.unwrap();
            a.send(&Msg::Bye, vec![]).await.unwrap();
            a
        })
    };
    assert_eq!(b.recv().await.unwrap().unwrap().0, blob);
    assert_eq!(b.recv().await.unwrap().unwrap().0, Msg::Bye);
    send.await.unwrap();

    let too_big = Msg::Blob(vec![0; MAX_PAYLOAD_LEN]);
    let (mut a, _b) = Channel::<Msg>::pair().unwrap();
    assert!(matches!(
        a.send(&too_big, vec![]).await,
        Err(IpcError::Frame(FrameError::Oversized { .. }))
    ));
    // Refused before a byte went out: the link is still good.
    a.send(&Msg::Bye, vec![]).await.unwrap();
}

#[tokio::test]
async fn passed_fd_writes_into_the_file() {
    let path = temp_path("fdpass");
    let file = File::create(&path).unwrap();
    let (mut queue, mut smtp) = Channel::<Msg>::pair().unwrap();
    queue.send(&Msg::Ping(1), vec![file.into()]).await.unwrap();
    // The sender's copy is closed; only the receiver's remains.
    let (m, mut fds) = smtp.recv().await.unwrap().unwrap();
    assert_eq!(m, Msg::Ping(1));
    assert_eq!(fds.len(), 1);
    let fd = fds.pop().unwrap();
    assert!(is_cloexec(&fd));
    let mut f = File::from(fd);
    f.write_all(b"Subject: hi\r\n\r\nbody\r\n").unwrap();
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"Subject: hi\r\n\r\nbody\r\n");
    fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn fds_stay_with_their_frames() {
    // Frames with and without fds, sent back to back so that reads
    // straddle frames: each must get exactly its own fds.
    let path = temp_path("pairing");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let (mut a, mut b) = Channel::<Msg>::pair().unwrap();
    let sender = {
        let file = file.try_clone().unwrap();
        tokio::spawn(async move {
            for i in 0..300u64 {
                let n = usize::try_from(i % (MAX_FDS as u64 + 1)).unwrap();
                let fds = (0..n)
                    .map(|_| file.as_fd().try_clone_to_owned().unwrap())
                    .collect();
                a.send(&Msg::Ping(i), fds).await.unwrap();
                if i % 7 == 0 {
                    a.send(&Msg::Blob(vec![i as u8; 70_000]), vec![])
                        .await
                        .unwrap();
                }
            }
        })
    };
    let mut expected = Vec::new();
    for i in 0..300u64 {
        let (m, fds) = b.recv().await.unwrap().unwrap();
        assert_eq!(m, Msg::Ping(i));
        let n = usize::try_from(i % (MAX_FDS as u64 + 1)).unwrap();
        assert_eq!(fds.len(), n, "frame {i}");
        for fd in fds {
            let mut f = File::from(fd);
            f.write_all(&[b'a' + (i % 26) as u8]).unwrap();
            expected.push(b'a' + (i % 26) as u8);
        }
        if i % 7 == 0 {
            let (m, fds) = b.recv().await.unwrap().unwrap();
            assert_eq!(m, Msg::Blob(vec![i as u8; 70_000]));
            assert!(fds.is_empty());
        }
    }
    sender.await.unwrap();
    assert!(b.recv().await.unwrap().is_none());
    let mut got = Vec::new();
    file.rewind().unwrap();
    file.read_to_end(&mut got).unwrap();
    assert_eq!(got, expected);
    fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn too_many_fds_refused_by_sender() {
    let (mut a, _b) = Channel::<Msg>::pair().unwrap();
    let (read_end, w) = pipe();
    let fds: Vec<OwnedFd> = (0..=MAX_FDS).map(|_| w.try_clone().unwrap()).collect();
    drop(w);
    assert!(matches!(
        a.send(&Msg::Bye, fds).await,
        Err(IpcError::Frame(FrameError::TooManyFds { count })) if count == MAX_FDS + 1
    ));
    assert_all_closed(read_end);
}

#[tokio::test]
async fn garbage_is_an_error_then_broken() {
    let (mut ch, mut raw) = raw_peer();
    raw.write_all(b"EHLO evil.example\r\n").unwrap();
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::Frame(FrameError::BadMagic { found: b'E' }))
    ));
    // Even a good frame afterwards is not taken: the stream is out of sync.
    raw.write_all(&encode_message(&Msg::Bye, 0).unwrap())
        .unwrap();
    assert!(matches!(ch.recv().await, Err(IpcError::Broken)));
}

#[tokio::test]
async fn oversized_length_prefix_refused_at_once() {
    let (mut ch, mut raw) = raw_peer();
    // The peer keeps the socket open and sends nothing more: the error
    // must come from the header alone, without waiting for 4 GiB.
    raw.write_all(&[MAGIC, VERSION, 0xff, 0xff, 0xff, 0xff, 0, 0])
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), ch.recv())
        .await
        .unwrap();
    assert!(matches!(
        r,
        Err(IpcError::Frame(FrameError::Oversized { len: 0xffff_ffff }))
    ));
    drop(raw);
}

#[tokio::test]
async fn truncated_frame_then_eof() {
    let (mut ch, mut raw) = raw_peer();
    let wire = encode_message(&sample(), 0).unwrap();
    raw.write_all(&wire[..wire.len() - 1]).unwrap();
    drop(raw);
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::Frame(FrameError::TruncatedAtEof { buffered })) if buffered == wire.len() - 1
    ));
}

#[tokio::test]
async fn truncated_header_then_eof() {
    let (mut ch, mut raw) = raw_peer();
    raw.write_all(&[MAGIC, VERSION, 0]).unwrap();
    drop(raw);
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::Frame(FrameError::TruncatedAtEof { buffered: 3 }))
    ));
}

#[tokio::test]
async fn frame_claiming_fds_that_did_not_come() {
    let (mut ch, mut raw) = raw_peer();
    raw.write_all(&encode_message(&Msg::Ping(1), 2).unwrap())
        .unwrap();
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::FdCountMismatch {
            declared: 2,
            received: 0
        })
    ));
}

#[tokio::test]
async fn fds_the_frame_does_not_declare_are_refused_and_closed() {
    let (mut ch, raw) = raw_peer();
    let (read_end, w) = pipe();
    raw_sendmsg(
        &raw,
        &encode_message(&Msg::Ping(1), 0).unwrap(),
        &[w.as_raw_fd()],
    );
    drop(w);
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::FdCountMismatch {
            declared: 0,
            received: 1
        })
    ));
    assert_all_closed(read_end);
}

#[tokio::test]
async fn fewer_fds_than_declared_are_refused_and_closed() {
    let (mut ch, raw) = raw_peer();
    let (read_end, w) = pipe();
    raw_sendmsg(
        &raw,
        &encode_message(&Msg::Ping(1), 2).unwrap(),
        &[w.as_raw_fd()],
    );
    drop(w);
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::FdCountMismatch {
            declared: 2,
            received: 1
        })
    ));
    assert_all_closed(read_end);
}

#[tokio::test]
async fn more_fds_than_the_limit_are_refused_and_closed() {
    let (mut ch, raw) = raw_peer();
    let (read_end, w) = pipe();
    let raws = vec![w.as_raw_fd(); MAX_FDS + 10];
    raw_sendmsg(&raw, &encode_message(&Msg::Ping(1), 4).unwrap(), &raws);
    drop(w);
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::Frame(FrameError::TooManyFds { count })) if count == MAX_FDS + 10
    ));
    assert_all_closed(read_end);
}

#[tokio::test]
async fn fds_sent_mid_frame_are_refused_and_closed() {
    let (mut ch, mut raw) = raw_peer();
    let (read_end, w) = pipe();
    let wire = encode_message(&sample(), 1).unwrap();
    raw.write_all(&wire[..10]).unwrap();
    // Give the receiver a chance to read the first part on its own.
    let _ = tokio::time::timeout(Duration::from_millis(50), ch.recv()).await;
    raw_sendmsg(&raw, &wire[10..], &[w.as_raw_fd()]);
    drop(w);
    assert!(matches!(ch.recv().await, Err(IpcError::MisplacedFds)));
    assert_all_closed(read_end);
}

#[tokio::test]
async fn fds_with_a_truncated_frame_are_closed() {
    let (mut ch, raw) = raw_peer();
    let (read_end, w) = pipe();
    let wire = encode_message(&sample(), 1).unwrap();
    raw_sendmsg(&raw, &wire[..wire.len() - 2], &[w.as_raw_fd()]);
    drop(w);
    drop(raw);
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::Frame(FrameError::TruncatedAtEof { .. }))
    ));
    drop(ch);
    assert_all_closed(read_end);
}

#[tokio::test]
async fn payload_of_the_wrong_type_is_refused() {
    // Variant 9 does not exist in Msg.
    let (mut ch, mut raw) = raw_peer();
    raw.write_all(&encode_message(&9u32, 0).unwrap()).unwrap();
    assert!(matches!(ch.recv().await, Err(IpcError::Decode(_))));

    // Decodes as Msg::Bye (variant 3) with bytes left over.
    let (mut ch, mut raw) = raw_peer();
    raw.write_all(&encode_message(&vec!["x".to_string(); 3], 0).unwrap())
        .unwrap();
    assert!(matches!(
        ch.recv().await,
        Err(IpcError::TrailingBytes { extra: 6 })
    ));
}

#[tokio::test]
async fn eof_is_none_and_stays_none() {
    let (mut a, b) = Channel::<Msg>::pair().unwrap();
    drop(b);
    assert!(a.recv().await.unwrap().is_none());
    assert!(a.recv().await.unwrap().is_none());
    // Writing to a closed peer is an error, not a SIGPIPE.
    assert!(matches!(
        a.send(&Msg::Bye, vec![]).await,
        Err(IpcError::Io(_))
    ));
}

#[tokio::test]
async fn dropping_a_sender_ends_that_direction_only() {
    let (a, mut b) = Channel::<Msg>::pair().unwrap();
    let (tx, mut rx) = a.split();
    drop(tx);
    assert!(b.recv().await.unwrap().is_none());
    b.send(&Msg::Ping(5), vec![]).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap().0, Msg::Ping(5));
}

#[tokio::test]
async fn concurrent_senders_through_a_mutex_do_not_interleave() {
    let (a, mut b) = Channel::<Msg>::pair().unwrap();
    let (tx, _rx) = a.split();
    let tx = Arc::new(tokio::sync::Mutex::new(tx));
    let mut tasks = Vec::new();
    for t in 0..2u64 {
        let tx = Arc::clone(&tx);
        tasks.push(tokio::spawn(async move {
            for i in 0..200u64 {
                // Big enough that a frame needs several writes.
                let m = Msg::Blob(vec![(t * 200 + i) as u8; 20_000 + i as usize]);
                tx.lock().await.send(&m, vec![]).await.unwrap();
            }
        }));
    }
    let mut seen = 0;
    while seen < 400 {
        let (m, _) = b.recv().await.unwrap().unwrap();
        let Msg::Blob(v) = m else {
            panic!("unexpected {m:?}")
        };
        assert!(v.iter().all(|&x| x == v[0]));
        seen += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn cancelled_send_breaks_the_sender_not_the_stream() {
    let (mut a, mut b) = Channel::<Msg>::pair().unwrap();
    // Nobody reads b yet, so a 1 MiB frame cannot go out whole.
    let big = Msg::Blob(vec![1; MAX_PAYLOAD_LEN - 4]);
    let r = tokio::time::timeout(Duration::from_millis(100), a.send(&big, vec![])).await;
    assert!(r.is_err(), "send should still be pending");
    assert!(matches!(
        a.send(&Msg::Bye, vec![]).await,
        Err(IpcError::Broken)
    ));
    drop(a);
    // The receiver sees a truncated frame, never a corrupt message.
    assert!(matches!(
        b.recv().await,
        Err(IpcError::Frame(FrameError::TruncatedAtEof { .. }))
    ));
}

#[test]
fn blocking_round_trip_with_fd() {
    let (mut a, mut b) = BlockingChannel::<Msg>::pair().unwrap();
    let path = temp_path("blocking");
    let file = File::create(&path).unwrap();
    a.send(&sample(), vec![file.into()]).unwrap();
    let (m, mut fds) = b.recv().unwrap().unwrap();
    assert_eq!(m, sample());
    let mut f = File::from(fds.pop().unwrap());
    f.write_all(b"x").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"x");
    fs::remove_file(&path).unwrap();
    drop(a);
    assert!(b.recv().unwrap().is_none());
}

#[test]
fn blocking_then_async_keeps_buffered_messages() {
    let (mut a, mut b) = BlockingChannel::<Msg>::pair().unwrap();
    let path = temp_path("handover");
    let file = File::create(&path).unwrap();
    // Three frames in the socket before the child reads the first: one
    // read takes them all, and the rest must survive the switch to async.
    a.send(&Msg::Ping(1), vec![]).unwrap();
    a.send(&Msg::Ping(2), vec![file.into()]).unwrap();
    a.send(&Msg::Ping(3), vec![]).unwrap();
    assert_eq!(b.recv().unwrap().unwrap().0, Msg::Ping(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut b = b.into_async().unwrap();
        let (m, fds) = b.recv().await.unwrap().unwrap();
        assert_eq!(m, Msg::Ping(2));
        assert_eq!(fds.len(), 1);
        assert_eq!(b.recv().await.unwrap().unwrap().0, Msg::Ping(3));
        drop(a);
        assert!(b.recv().await.unwrap().is_none());
    });
    fs::remove_file(&path).unwrap();
}

#[test]
fn async_channel_outside_a_runtime_is_an_error() {
    let (a, _b) = pair().unwrap();
    assert!(matches!(
        Channel::<Msg>::from_fd(a),
        Err(IpcError::NoRuntime)
    ));
}

#[test]
fn blocking_garbage_then_broken() {
    let (a, b) = pair().unwrap();
    let mut ch = BlockingChannel::<Msg>::from_fd(a).unwrap();
    let mut raw = StdUnixStream::from(b);
    raw.write_all(&[MAGIC, VERSION, 0, 0, 0, 1, 0, 0, 0xff])
        .unwrap();
    assert!(matches!(ch.recv(), Err(IpcError::Decode(_))));
    assert!(matches!(ch.recv(), Err(IpcError::Broken)));
}
