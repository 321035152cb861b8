#![no_main]
//! What any local user can send the control socket: a frame header and a
//! payload, read as the control process reads them. Checks: no panic, the
//! length bound holds, and an accepted request re-encodes to a frame the
//! daemon reads back as the same request.

use libfuzzer_sys::fuzz_target;
use rsmtpd_control::{MAX_REQUEST, decode_request, request_length};
use rsmtpd_ipc::frame::HEADER_LEN;

fuzz_target!(|data: &[u8]| {
    let Some((header, payload)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let Ok(len) = request_length(*header) else {
        return;
    };
    assert!(len <= MAX_REQUEST);
    let Some(payload) = payload.get(..len) else {
        return;
    };
    if let Ok(request) = decode_request(payload) {
        let frame = rsmtpd_ipc::encode_message(&request, 0).expect("a request encodes");
        let (h, p) = frame.split_first_chunk::<HEADER_LEN>().expect("a header");
        let again = decode_request(p.get(..request_length(*h).expect("our header")).expect("payload"));
        assert_eq!(again.ok(), Some(request));
    }
});
