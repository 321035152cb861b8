//! The wire format of one IPC frame, and a sans-IO incremental decoder.
//!
//! A frame is an 8-byte header followed by the payload:
//!
//! ```text
//! offset  size  field
//!      0     1  MAGIC (0xD5)
//!      1     1  VERSION (1)
//!      2     4  payload length, u32 big-endian, at most MAX_PAYLOAD_LEN
//!      6     1  number of file descriptors sent with this frame, at most MAX_FDS
//!      7     1  reserved, must be 0
//!      8     n  payload (one postcard-encoded message)
//! ```
//!
//! The decoder checks the header as soon as its 8 bytes are in, so a
//! hostile length is refused before anything is allocated for it, and it
//! never buffers more than one maximal frame.

use thiserror::Error;

/// First byte of every frame. Not ASCII, so text written to the socket by
/// mistake (a log line, a shell) is caught at once.
pub const MAGIC: u8 = 0xD5;
/// Wire format version; bumped on any incompatible change. All processes
/// come from the same binary, so there is no negotiation: a mismatch is an error.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Largest payload accepted or sent. Messages carry metadata, never mail
/// bodies (those travel through passed fds), so 1 MiB is generous.
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;
/// Largest whole frame.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;
/// Most file descriptors one frame may carry. The start frame of the smtp
/// process carries its links and every listening socket (`listen on
/// localhost` alone is two), so this is well above what messages need.
pub const MAX_FDS: usize = 128;

/// How much the decoder asks to read at a time when it does not need more
/// for the frame in progress.
const READ_CHUNK: usize = 16 * 1024;

/// Why a byte stream is not a valid sequence of frames.
///
/// Every one of these means the stream is out of sync or hostile: the
/// decoder stops at the first and keeps returning it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("bad frame magic byte {found:#04x} (expected {MAGIC:#04x})")]
    BadMagic { found: u8 },
    #[error("unsupported frame version {found} (expected {VERSION})")]
    UnsupportedVersion { found: u8 },
    #[error("frame payload of {len} bytes exceeds the limit of {MAX_PAYLOAD_LEN}")]
    Oversized { len: usize },
    #[error("frame carries {count} file descriptors, at most {MAX_FDS} allowed")]
    TooManyFds { count: usize },
    #[error("reserved frame header byte is {found:#04x}, must be 0")]
    ReservedNonZero { found: u8 },
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    TruncatedAtEof { buffered: usize },
}

/// A validated frame header: it cannot hold a length or fd count over the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    payload_len: u32,
    fd_count: u8,
}

impl FrameHeader {
    /// A header for a payload of `payload_len` bytes sent with `fd_count` fds.
    pub fn new(payload_len: usize, fd_count: usize) -> Result<Self, FrameError> {
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(FrameError::Oversized { len: payload_len });
        }
        if fd_count > MAX_FDS {
            return Err(FrameError::TooManyFds { count: fd_count });
        }
        // Both conversions succeed after the checks above; the error arms
        // only keep this free of `as` casts.
        let payload_len =
            u32::try_from(payload_len).map_err(|_| FrameError::Oversized { len: payload_len })?;
        let fd_count =
            u8::try_from(fd_count).map_err(|_| FrameError::TooManyFds { count: fd_count })?;
        Ok(Self {
            payload_len,
            fd_count,
        })
    }

    /// Parses and checks a received header.
    pub fn decode(bytes: [u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let [magic, version, l0, l1, l2, l3, fd_count, reserved] = bytes;
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { found: version });
        }
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        // u32 always fits in usize on the platforms we build for (64-bit
        // Unix); saturate rather than cast so a 16-bit target would still
        // refuse instead of wrapping.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let header = Self::new(len, usize::from(fd_count))?;
        if reserved != 0 {
            return Err(FrameError::ReservedNonZero { found: reserved });
        }
        Ok(header)
    }

    /// The header's bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [l0, l1, l2, l3] = self.payload_len.to_be_bytes();
        [MAGIC, VERSION, l0, l1, l2, l3, self.fd_count, 0]
    }

    pub fn payload_len(&self) -> usize {
        // Bounded by MAX_PAYLOAD_LEN at construction.
        usize::try_from(self.payload_len).unwrap_or(usize::MAX)
    }

    pub fn fd_count(&self) -> usize {
        usize::from(self.fd_count)
    }

    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
}

/// One complete frame taken off the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    header: FrameHeader,
    payload: Vec<u8>,
}

impl Frame {
    /// How many fds the sender says it sent with this frame.
    pub fn fd_count(&self) -> usize {
        self.header.fd_count()
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Length of the frame on the wire.
    pub fn frame_len(&self) -> usize {
        self.header.frame_len()
    }
}

/// Appends one frame (header and payload) to `out`.
///
/// Checks the limits, so a sender cannot emit a frame its peer must refuse.
pub fn encode_frame(payload: &[u8], fd_count: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let header = FrameHeader::new(payload.len(), fd_count)?;
    out.reserve(header.frame_len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(())
}

/// Incremental, sans-IO frame decoder: bytes in, frames out.
///
/// Either copy bytes in with [`push`](Self::push), or read straight into
/// [`read_buf`](Self::read_buf) and report the count with
/// [`advance`](Self::advance). Then drain with
/// [`next_frame`](Self::next_frame) until it yields `None`. At end of
/// stream call [`finish`](Self::finish) to learn whether the stream ended
/// between frames.
///
/// Memory is bounded by [`MAX_FRAME_LEN`]: the decoder only offers room for
/// the frame in progress (or a small read chunk), never more.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Allocated (and zeroed) space; `buf[start..filled]` is data not yet decoded.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Stream offset of `buf[start]`: bytes taken off the stream as frames.
    position: u64,
    /// First framing error; once set the stream is out of sync for good.
    error: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stream offset at which the next frame starts (total bytes decoded).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Total bytes received so far (decoded plus buffered).
    pub fn received(&self) -> u64 {
        self.position + self.buffered_len() as u64
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered_len(&self) -> usize {
        self.filled - self.start
    }

    /// How many bytes, counted from `start`, the frame in progress needs.
    /// Before its header is in, only the header is needed.
    fn needed(&self) -> usize {
        let data = &self.buf[self.start..self.filled];
        match data.first_chunk::<HEADER_LEN>() {
            Some(h) => match FrameHeader::decode(*h) {
                Ok(header) => header.frame_len(),
                // A bad header needs nothing more; next_frame reports it.
                Err(_) => HEADER_LEN,
            },
            None => HEADER_LEN,
        }
    }

    /// Space to read into. Never empty after [`next_frame`](Self::next_frame)
    /// returned `Ok(None)`; empty after a framing error.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.error.is_some() {
            return &mut [];
        }
        // Move the undecoded tail to the front so the buffer never needs
        // more than one maximal frame.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        // Constants with READ_CHUNK < MAX_FRAME_LEN, so clamp cannot panic.
        let want = self.needed().clamp(READ_CHUNK, MAX_FRAME_LEN);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let end = want.max(self.filled);
        &mut self.buf[self.filled..end]
    }

    /// Records that `n` bytes were written at the start of [`read_buf`](Self::read_buf).
    ///
    /// `n` larger than the space offered is a caller bug; it is clamped so
    /// that garbage is never exposed as data.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(self.filled + n <= self.buf.len(), "advance past read_buf");
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// Copies as much of `bytes` as fits; returns how many were taken.
    /// Call [`next_frame`](Self::next_frame) until `None`, then push the rest.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let room = self.read_buf();
        let n = room.len().min(bytes.len());
        room[..n].copy_from_slice(&bytes[..n]);
        self.advance(n);
        n
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let data = &self.buf[self.start..self.filled];
        let Some(raw_header) = data.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = match FrameHeader::decode(*raw_header) {
            Ok(h) => h,
            Err(e) => {
                self.error = Some(e.clone());
                return Err(e);
            }
        };
        let Some(payload) = data.get(HEADER_LEN..header.frame_len()) else {
            return Ok(None);
        };
        let frame = Frame {
            header,
            payload: payload.to_vec(),
        };
        self.start += header.frame_len();
        self.position += header.frame_len() as u64;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            // Give back the space of a big frame once it is consumed.
            if self.buf.len() > 4 * READ_CHUNK {
                self.buf = Vec::new();
            }
        }
        Ok(Some(frame))
    }

    /// Call at end of stream: `Ok` if it ended cleanly between frames.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.buffered_len() {
            0 => Ok(()),
            buffered => Err(FrameError::TruncatedAtEof { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(payload: &[u8], fds: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, fds, &mut out).unwrap();
        out
    }

    fn drain(d: &mut FrameDecoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn header_layout_is_fixed() {
        let bytes = frame_bytes(b"abc", 2);
        assert_eq!(bytes, [0xD5, 1, 0, 0, 0, 3, 2, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn round_trip_many_frames_in_one_push() {
        let mut wire = Vec::new();
        for i in 0..10u8 {
            encode_frame(&vec![i; usize::from(i)], usize::from(i % 3), &mut wire).unwrap();
        }
        let mut d = FrameDecoder::new();
        assert_eq!(d.push(&wire), wire.len());
        let frames = drain(&mut d);
        assert_eq!(frames.len(), 10);
        for (i, f) in (0..10u8).zip(&frames) {
            assert_eq!(f.payload(), vec![i; usize::from(i)].as_slice());
            assert_eq!(f.fd_count(), usize::from(i % 3));
        }
        assert_eq!(d.position(), wire.len() as u64);
        d.finish().unwrap();
    }

    #[test]
    fn frame_split_byte_by_byte() {
        let wire = frame_bytes(b"hello, world", 0);
        let mut d = FrameDecoder::new();
        for (i, b) in wire.iter().enumerate() {
            assert!(d.next_frame().unwrap().is_none());
            assert_eq!(d.push(std::slice::from_ref(b)), 1);
            if i + 1 < wire.len() {
                assert!(matches!(d.finish(), Err(FrameError::TruncatedAtEof { .. })));
            }
        }
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.payload(), b"hello, world");
        assert!(d.next_frame().unwrap().is_none());
        d.finish().unwrap();
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let mut d = FrameDecoder::new();
        d.push(&frame_bytes(b"", 0));
        assert_eq!(d.next_frame().unwrap().unwrap().payload(), b"");
    }

    #[test]
    fn bad_magic_is_sticky() {
        let mut d = FrameDecoder::new();
        d.push(b"EHLO example.org\r\n");
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic { found: b'E' }));
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic { found: b'E' }));
        assert_eq!(d.finish(), Err(FrameError::BadMagic { found: b'E' }));
        assert!(d.read_buf().is_empty());
        assert_eq!(d.push(b"more"), 0);
    }

    #[test]
    fn bad_version_and_reserved() {
        let mut d = FrameDecoder::new();
        d.push(&[MAGIC, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::UnsupportedVersion { found: 2 })
        );
        let mut d = FrameDecoder::new();
        d.push(&[MAGIC, VERSION, 0, 0, 0, 0, 0, 7]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::ReservedNonZero { found: 7 })
        );
    }

    #[test]
    fn oversized_length_refused_from_header_alone() {
        let mut d = FrameDecoder::new();
        d.push(&[MAGIC, VERSION, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Oversized { len: 0xffff_ffff })
        );
        // Nothing was allocated for the claimed 4 GiB.
        assert!(d.buf.len() <= READ_CHUNK);
    }

    #[test]
    fn limit_is_inclusive() {
        let payload = vec![0x5a; MAX_PAYLOAD_LEN];
        let wire = frame_bytes(&payload, MAX_FDS);
        assert_eq!(wire.len(), MAX_FRAME_LEN);
        let mut d = FrameDecoder::new();
        let mut off = 0;
        let mut got = None;
        while got.is_none() {
            off += d.push(&wire[off..]);
            got = d.next_frame().unwrap();
        }
        assert_eq!(off, wire.len());
        assert_eq!(got.unwrap().payload().len(), MAX_PAYLOAD_LEN);
        assert!(d.buf.len() <= MAX_FRAME_LEN);

        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&vec![0; MAX_PAYLOAD_LEN + 1], 0, &mut out),
            Err(FrameError::Oversized {
                len: MAX_PAYLOAD_LEN + 1
            })
        );
        assert_eq!(
            encode_frame(b"", MAX_FDS + 1, &mut out),
            Err(FrameError::TooManyFds { count: MAX_FDS + 1 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn too_many_fds_declared() {
        let mut d = FrameDecoder::new();
        let over = u8::try_from(MAX_FDS + 1).unwrap();
        d.push(&[MAGIC, VERSION, 0, 0, 0, 0, over, 0]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooManyFds { count: MAX_FDS + 1 })
        );
    }

    #[test]
    fn truncated_then_eof() {
        let wire = frame_bytes(b"0123456789", 0);
        let mut d = FrameDecoder::new();
        d.push(&wire[..12]);
        assert!(d.next_frame().unwrap().is_none());
        assert_eq!(d.finish(), Err(FrameError::TruncatedAtEof { buffered: 12 }));
    }

    #[test]
    fn buffer_stays_bounded_under_a_flood() {
        // Many small frames pushed in one go: push takes only what fits.
        let mut wire = Vec::new();
        for _ in 0..100_000 {
            encode_frame(b"xyzw", 0, &mut wire).unwrap();
        }
        let mut d = FrameDecoder::new();
        let mut off = 0;
        let mut count = 0;
        while off < wire.len() {
            let n = d.push(&wire[off..]);
            assert!(n > 0);
            off += n;
            assert!(d.buf.len() <= MAX_FRAME_LEN);
            count += drain(&mut d).len();
        }
        assert_eq!(count, 100_000);
        d.finish().unwrap();
    }
}
