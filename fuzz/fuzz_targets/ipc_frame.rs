#![no_main]
//! Feeds arbitrary bytes, in arbitrary chunks, to the IPC frame decoder and
//! decodes each payload as a few message shapes. Checks: no panic, memory
//! bounded, every frame within the limits and re-encoding to the exact
//! bytes it was read from, and a clean end only on a frame boundary.

use libfuzzer_sys::fuzz_target;
use rsmtpd_ipc::frame::{FrameDecoder, HEADER_LEN, encode_frame};
use rsmtpd_ipc::{MAX_FDS, MAX_PAYLOAD_LEN, decode_message};

fuzz_target!(|data: &[u8]| {
    // First byte picks the chunk size, so splits land everywhere.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut decoder = FrameDecoder::new();
    let mut rest = stream;
    let mut consumed = 0usize;
    loop {
        let take = rest.len().min(chunk);
        let n = decoder.push(&rest[..take]);
        rest = &rest[n..];
        loop {
            let start = decoder.position();
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.payload().len() <= MAX_PAYLOAD_LEN);
                    assert!(frame.fd_count() <= MAX_FDS);
                    assert_eq!(decoder.position() - start, frame.frame_len() as u64);
                    let mut again = Vec::new();
                    encode_frame(frame.payload(), frame.fd_count(), &mut again).unwrap();
                    assert_eq!(again, stream[consumed..consumed + frame.frame_len()]);
                    consumed += frame.frame_len();
                    let _ = decode_message::<(u8, String, Vec<u64>)>(frame.payload());
                    let _ = decode_message::<Vec<Option<String>>>(frame.payload());
                    let _ = decode_message::<(i64, Vec<u8>, bool, char)>(frame.payload());
                }
                Ok(None) => break,
                Err(_) => {
                    // Sticky: the stream never resyncs.
                    assert!(decoder.next_frame().is_err());
                    assert!(decoder.finish().is_err());
                    return;
                }
            }
        }
        if n == 0 && take > 0 {
            panic!("decoder refused input without a frame or an error");
        }
        if rest.is_empty() {
            break;
        }
    }
    assert_eq!(decoder.received(), stream.len() as u64);
    match decoder.finish() {
        Ok(()) => assert_eq!(consumed, stream.len()),
        Err(_) => assert!(stream.len() - consumed > 0 && consumed + HEADER_LEN + MAX_PAYLOAD_LEN > stream.len()),
    }
});
