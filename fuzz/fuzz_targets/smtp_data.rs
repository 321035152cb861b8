#![no_main]
//! The DATA reader fed the input in chunks whose sizes come from the input.
use libfuzzer_sys::fuzz_target;
use rsmtpd_smtp_proto::data::DataReader;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let max_size = u64::from(seed) * 64;

    let mut whole = DataReader::new(max_size);
    let mut whole_out = Vec::new();
    let whole_used = whole.feed(body, &mut whole_out);

    let mut chunked = DataReader::new(max_size);
    let mut out = Vec::new();
    let mut used = 0;
    let mut sizes = data.iter().cycle().map(|&b| usize::from(b % 17) + 1);
    while used < body.len() && !chunked.is_done() {
        let size = sizes.next().unwrap_or(1);
        let chunk = &body[used..body.len().min(used + size)];
        let n = chunked.feed(chunk, &mut out);
        assert!(n <= chunk.len());
        used += n;
        if n < chunk.len() {
            assert!(chunked.is_done());
        }
        assert!(out.len() <= used, "output longer than input");
    }

    // Any chunking behaves as one feed.
    assert_eq!(used, whole_used);
    assert_eq!(out, whole_out);
    assert_eq!(chunked.verdict(), whole.verdict());
    assert!(out.len() as u64 <= max_size);

    // Stops exactly after the first CRLF.CRLF, the message starting after a
    // (virtual) CRLF.
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(body);
    let end = framed
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|i| i + 5 - 2);
    match end {
        Some(e) => {
            assert!(whole.is_done());
            assert_eq!(whole_used, e);
        }
        None => {
            assert!(!whole.is_done());
            assert_eq!(whole_used, body.len());
        }
    }
    // An accepted message has CRLF line ends only.
    if whole.verdict() == Some(Ok(())) {
        for (i, &b) in whole_out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(i.checked_sub(1).map(|j| whole_out[j]), Some(b'\r'));
            }
            if b == b'\r' {
                assert_eq!(whole_out.get(i + 1), Some(&b'\n'));
            }
            assert_ne!(b, 0);
        }
    }
});
