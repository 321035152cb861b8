//! Messages to frames and back, and the bookkeeping that pairs received
//! fds with the frame they were sent with. Shared by the async and the
//! blocking channel; no I/O of its own beyond one step at a time.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::IpcError;
use crate::fdpass::{self, Received};
use crate::frame::{FrameDecoder, FrameError, FrameHeader, HEADER_LEN, MAX_FDS};

/// Serialises `msg` into one complete frame (header and payload) that
/// announces `fd_count` fds.
pub fn encode_message<M: Serialize + ?Sized>(
    msg: &M,
    fd_count: usize,
) -> Result<Vec<u8>, IpcError> {
    // Serialise behind a placeholder header, then fill it in: one buffer,
    // no copy of the payload.
    let out = postcard::to_extend(msg, vec![0u8; HEADER_LEN]).map_err(IpcError::Encode)?;
    let header = FrameHeader::new(out.len() - HEADER_LEN, fd_count)?;
    let mut out = out;
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    Ok(out)
}

/// Deserialises one message from a frame's payload. The payload must be
/// exactly one message: trailing bytes mean the peer and we disagree on
/// the type, which must not pass silently.
pub fn decode_message<M: DeserializeOwned>(payload: &[u8]) -> Result<M, IpcError> {
    let (msg, rest) = postcard::take_from_bytes::<M>(payload).map_err(IpcError::Decode)?;
    if !rest.is_empty() {
        return Err(IpcError::TrailingBytes { extra: rest.len() });
    }
    Ok(msg)
}

/// A frame being sent, possibly over several `sendmsg` calls.
#[derive(Debug)]
pub(crate) struct OutFrame {
    bytes: Vec<u8>,
    /// Kept open until the kernel has taken them with the first byte.
    fds: Vec<OwnedFd>,
    written: usize,
}

impl OutFrame {
    pub(crate) fn new<M: Serialize + ?Sized>(msg: &M, fds: Vec<OwnedFd>) -> Result<Self, IpcError> {
        let bytes = encode_message(msg, fds.len())?;
        Ok(Self {
            bytes,
            fds,
            written: 0,
        })
    }

    pub(crate) fn is_done(&self) -> bool {
        self.written == self.bytes.len()
    }

    /// Part of the frame is on the wire: abandoning it now would leave the
    /// stream out of sync.
    pub(crate) fn is_partial(&self) -> bool {
        self.written > 0 && !self.is_done()
    }

    /// One `sendmsg`. The fds ride with the frame's first byte, so that the
    /// receiver gets them with the frame's start.
    pub(crate) fn step(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let Some(rest) = self.bytes.get(self.written..) else {
            return Ok(());
        };
        let raw: Vec<RawFd> = if self.written == 0 {
            self.fds.iter().map(|f| f.as_raw_fd()).collect()
        } else {
            Vec::new()
        };
        let n = fdpass::send_step(fd, rest, &raw)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.written += n;
        // The kernel took its own references with the first byte; ours can go.
        self.fds.clear();
        Ok(())
    }
}

/// The fds that came with one `recvmsg`, and the stream range
/// `[first, end)` of the bytes that came with them.
#[derive(Debug)]
struct FdBatch {
    first: u64,
    end: u64,
    fds: Vec<OwnedFd>,
}

/// At most this many fd batches may wait for their frame. A correct peer
/// needs two (the frame being received, and the next one whose start came
/// in the same read); more is a peer trying to pile up fds in our table.
const MAX_PENDING_BATCHES: usize = 2;

/// What the receive side should do next.
#[derive(Debug)]
pub(crate) enum Next<M> {
    Message(M, Vec<OwnedFd>),
    NeedRead,
    Eof,
}

/// Receive state: decoder, fds waiting for their frame, end-of-stream.
///
/// How fds are paired with frames. The sender attaches a frame's fds to
/// the `sendmsg` that carries the frame's first byte. On a stream socket
/// Linux hands them out with the `recvmsg` that reads the first bytes of
/// that send, and ends that `recvmsg` inside the same send. Such a read may
/// also carry the tail of earlier frames, so the fds belong to the frame
/// that holds the *last* byte of the read, and that frame must start within
/// the read. Anything else (fds no frame claims, a count that differs from
/// the header's) is an error, and the fds are closed.
#[derive(Debug)]
pub(crate) struct Inbox {
    decoder: FrameDecoder,
    batches: VecDeque<FdBatch>,
    cmsg: Vec<u8>,
    eof: bool,
    failed: bool,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            decoder: FrameDecoder::new(),
            batches: VecDeque::new(),
            cmsg: fdpass::cmsg_buffer(),
            eof: false,
            failed: false,
        }
    }
}

impl Inbox {
    /// Marks the link unusable (an out-of-sync or hostile stream is never
    /// resumed), closes any waiting fds and passes the error through.
    pub(crate) fn poison(&mut self, e: IpcError) -> IpcError {
        self.failed = true;
        self.batches.clear();
        e
    }

    /// The next message if one is complete; never touches the socket.
    pub(crate) fn poll_next<M: DeserializeOwned>(&mut self) -> Result<Next<M>, IpcError> {
        if self.failed {
            return Err(IpcError::Broken);
        }
        self.decode_next().map_err(|e| self.poison(e))
    }

    fn decode_next<M: DeserializeOwned>(&mut self) -> Result<Next<M>, IpcError> {
        let start = self.decoder.position();
        match self.decoder.next_frame()? {
            Some(frame) => {
                let end = start + frame.frame_len() as u64;
                // Fds first: if the payload is bad they are dropped, i.e. closed.
                let fds = self.claim_fds(start, end, frame.fd_count())?;
                let msg = decode_message(frame.payload())?;
                Ok(Next::Message(msg, fds))
            }
            None if self.eof => {
                self.decoder.finish()?;
                if let Some(b) = self.batches.front() {
                    return Err(IpcError::UnexpectedFds { count: b.fds.len() });
                }
                Ok(Next::Eof)
            }
            None => Ok(Next::NeedRead),
        }
    }

    /// The fds of the frame at stream range `[start, end)` that declares `declared`.
    fn claim_fds(
        &mut self,
        start: u64,
        end: u64,
        declared: usize,
    ) -> Result<Vec<OwnedFd>, IpcError> {
        if let Some(b) = self.batches.front() {
            // `end > first` for every batch: it came with at least one byte.
            let last = b.end - 1;
            if last < start {
                // Every earlier frame has been checked, so this cannot
                // happen; refuse rather than guess whose fds these are.
                return Err(IpcError::UnexpectedFds { count: b.fds.len() });
            }
            if last < end {
                if b.first > start {
                    return Err(IpcError::MisplacedFds);
                }
                let received = b.fds.len();
                if received != declared {
                    return Err(IpcError::FdCountMismatch { declared, received });
                }
                return Ok(self.batches.pop_front().map(|b| b.fds).unwrap_or_default());
            }
        }
        if declared != 0 {
            return Err(IpcError::FdCountMismatch {
                declared,
                received: 0,
            });
        }
        Ok(Vec::new())
    }

    /// One `recvmsg` into the decoder. The outer result is the system call
    /// (`WouldBlock` passes through for the async driver, and the caller
    /// poisons on the others); the inner one is a peer error, already poisoned.
    pub(crate) fn read_step(&mut self, fd: BorrowedFd<'_>) -> io::Result<Result<(), IpcError>> {
        if self.failed {
            return Ok(Err(IpcError::Broken));
        }
        let first = self.decoder.received();
        let buf = self.decoder.read_buf();
        if buf.is_empty() {
            // Only reachable if called without poll_next saying NeedRead;
            // a zero-length read would look like end of stream.
            return Ok(Err(IpcError::Broken));
        }
        let Received { bytes, fds } = match fdpass::recv_step(fd, buf, &mut self.cmsg)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(self.poison(e))),
        };
        if bytes == 0 {
            self.eof = true;
            if !fds.is_empty() {
                return Ok(Err(
                    self.poison(IpcError::UnexpectedFds { count: fds.len() })
                ));
            }
            return Ok(Ok(()));
        }
        self.decoder.advance(bytes);
        if fds.is_empty() {
            return Ok(Ok(()));
        }
        if fds.len() > MAX_FDS {
            let e = IpcError::Frame(FrameError::TooManyFds { count: fds.len() });
            return Ok(Err(self.poison(e)));
        }
        if self.batches.len() >= MAX_PENDING_BATCHES {
            return Ok(Err(
                self.poison(IpcError::UnexpectedFds { count: fds.len() })
            ));
        }
        self.batches.push_back(FdBatch {
            first,
            end: first + bytes as u64,
            fds,
        });
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Ping(u32),
        Text { s: String, tags: Vec<String> },
    }

    #[test]
    fn message_round_trip_through_frame() {
        let msg = Sample::Text {
            s: "héllo".into(),
            tags: vec!["a".into(), String::new()],
        };
        let wire = encode_message(&msg, 3).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&wire);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.fd_count(), 3);
        assert_eq!(decode_message::<Sample>(f.payload()).unwrap(), msg);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = postcard::to_stdvec(&Sample::Ping(7)).unwrap();
        payload.push(0);
        assert!(matches!(
            decode_message::<Sample>(&payload),
            Err(IpcError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        assert!(matches!(
            decode_message::<Sample>(&[9, 9, 9]),
            Err(IpcError::Decode(_))
        ));
        assert!(matches!(
            decode_message::<Sample>(&[]),
            Err(IpcError::Decode(_))
        ));
        // A string length far beyond the payload must fail, not allocate.
        assert!(matches!(
            decode_message::<Sample>(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(IpcError::Decode(_))
        ));
    }

    #[test]
    fn oversized_message_is_refused_by_the_sender() {
        let big = vec![0u8; crate::MAX_PAYLOAD_LEN];
        assert!(matches!(
            encode_message(&big, 0),
            Err(IpcError::Frame(FrameError::Oversized { .. }))
        ));
        assert!(matches!(
            encode_message(&Sample::Ping(1), MAX_FDS + 1),
            Err(IpcError::Frame(FrameError::TooManyFds { .. }))
        ));
    }
}
