#![no_main]
//! The client-side reply parser on arbitrary server bytes, in chunks.
use libfuzzer_sys::fuzz_target;
use rsmtpd_smtp_proto::reply::{MAX_REPLY_LINES, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(seed % 64) + 1;
    let mut p = ReplyParser::new();
    let mut rest = body;
    let mut guard = 0;
    while !rest.is_empty() {
        guard += 1;
        assert!(guard <= 2 * body.len() + 2, "parser does not progress");
        let chunk = &rest[..rest.len().min(size)];
        let Ok(parsed) = p.parse(chunk) else {
            // Failed parsers stay failed.
            assert!(p.parse(b"250 ok\r\n").is_err());
            return;
        };
        assert!(parsed.consumed <= chunk.len());
        if let Some(reply) = parsed.reply {
            assert!((200..=599).contains(&reply.code()));
            assert!(!reply.lines().is_empty() && reply.lines().len() <= MAX_REPLY_LINES);
            let wire = reply.to_wire();
            for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(line.len() < 512);
            }
            assert!(reply.safe_text().bytes().all(|b| (0x20..0x7f).contains(&b)));
        } else {
            assert_eq!(parsed.consumed, chunk.len());
        }
        rest = &rest[parsed.consumed..];
    }
});
