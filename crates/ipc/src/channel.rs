//! Typed channels over one end of a Unix stream socketpair: an async one
//! for the daemon's tokio code and a blocking one for code that runs before
//! the runtime starts. Both share the codec, so bytes read by one are kept
//! when it becomes the other ([`BlockingChannel::into_async`]).
//!
//! `Tx` is the message type this end sends, `Rx` the type it receives; a
//! link whose two directions speak one enum uses `Channel<M>`.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::IpcError;
use crate::codec::{Inbox, Next, OutFrame};
use crate::process::{self, PeerCred};

/// A received message and the fds that came with it (as many as its frame
/// declared; already close-on-exec).
pub type Incoming<M> = (M, Vec<OwnedFd>);

/// `WouldBlock` and timeouts leave the stream in sync; other I/O errors
/// mean the link is gone.
fn is_retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The sending half of a [`Channel`].
///
/// `send` takes `&mut self`, so two tasks cannot interleave frames; share
/// a sender through a `tokio::sync::Mutex` or funnel through an mpsc queue.
/// Dropping it shuts the socket down for writing: the peer sees end of stream.
#[derive(Debug)]
pub struct Sender<Tx> {
    half: OwnedWriteHalf,
    /// A frame was left half-written (send cancelled or failed mid-frame):
    /// anything sent after it would be read as garbage.
    broken: bool,
    _tx: PhantomData<fn(&Tx)>,
}

impl<Tx: Serialize> Sender<Tx> {
    /// Sends one message with `fds` (at most [`MAX_FDS`](crate::MAX_FDS)).
    /// Our copies of the fds are closed once the kernel has taken them.
    ///
    /// Not cancel-safe: dropping the future after part of the frame went
    /// out leaves the sender broken (every later send fails with
    /// [`IpcError::Broken`]) rather than corrupting the stream.
    pub async fn send(&mut self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), IpcError> {
        if self.broken {
            return Err(IpcError::Broken);
        }
        let mut frame = OutFrame::new(msg, fds)?;
        while !frame.is_done() {
            if let Err(e) = self.half.writable().await {
                self.broken = true;
                return Err(e.into());
            }
            let stream: &UnixStream = self.half.as_ref();
            match stream.try_io(Interest::WRITABLE, || frame.step(stream.as_fd())) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
            // Stays set if this future is dropped at the next await.
            self.broken = frame.is_partial();
        }
        Ok(())
    }
}

/// The receiving half of a [`Channel`].
#[derive(Debug)]
pub struct Receiver<Rx> {
    half: OwnedReadHalf,
    inbox: Inbox,
    _rx: PhantomData<fn() -> Rx>,
}

impl<Rx: DeserializeOwned> Receiver<Rx> {
    /// The next message; `None` once the peer closed cleanly between frames.
    ///
    /// Cancel-safe (usable in `select!`): bytes read are kept in `self`.
    /// Any error means the peer is broken or hostile: the receiver refuses
    /// everything after it ([`IpcError::Broken`]) and the caller should drop
    /// the link.
    pub async fn recv(&mut self) -> Result<Option<Incoming<Rx>>, IpcError> {
        loop {
            match self.inbox.poll_next()? {
                Next::Message(msg, fds) => return Ok(Some((msg, fds))),
                Next::Eof => return Ok(None),
                Next::NeedRead => {}
            }
            if let Err(e) = self.half.readable().await {
                return Err(self.inbox.poison(e.into()));
            }
            let stream: &UnixStream = self.half.as_ref();
            let inbox = &mut self.inbox;
            match stream.try_io(Interest::READABLE, || inbox.read_step(stream.as_fd())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.inbox.poison(e.into())),
            }
        }
    }
}

/// An async typed channel over one end of a socketpair.
#[derive(Debug)]
pub struct Channel<Tx, Rx = Tx> {
    tx: Sender<Tx>,
    rx: Receiver<Rx>,
}

impl<Tx: Serialize, Rx: DeserializeOwned> Channel<Tx, Rx> {
    pub fn new(stream: UnixStream) -> Self {
        Self::with_inbox(stream, Inbox::default())
    }

    fn with_inbox(stream: UnixStream, inbox: Inbox) -> Self {
        let (r, w) = stream.into_split();
        Self {
            tx: Sender {
                half: w,
                broken: false,
                _tx: PhantomData,
            },
            rx: Receiver {
                half: r,
                inbox,
                _rx: PhantomData,
            },
        }
    }

    /// Wraps an fd that must be a connected Unix stream socket (e.g. from
    /// [`take_from_parent`](crate::take_from_parent) or received in a frame).
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, IpcError> {
        process::check_unix_stream(&fd)?;
        Self::from_std(StdUnixStream::from(fd), Inbox::default())
    }

    fn from_std(stream: StdUnixStream, inbox: Inbox) -> Result<Self, IpcError> {
        // tokio's from_std panics outside a runtime; make that an error.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(IpcError::NoRuntime);
        }
        stream.set_nonblocking(true)?;
        Ok(Self::with_inbox(UnixStream::from_std(stream)?, inbox))
    }

    /// A connected pair of channels, for two tasks of one process (and tests).
    pub fn pair() -> Result<(Self, Channel<Rx, Tx>), IpcError>
    where
        Tx: DeserializeOwned,
        Rx: Serialize,
    {
        let (a, b) = process::pair()?;
        Ok((Self::from_fd(a)?, Channel::from_fd(b)?))
    }

    /// See [`Sender::send`].
    pub async fn send(&mut self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), IpcError> {
        self.tx.send(msg, fds).await
    }

    /// See [`Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Option<Incoming<Rx>>, IpcError> {
        self.rx.recv().await
    }

    /// Credentials of the process at the other end.
    pub fn peer_cred(&self) -> Result<PeerCred, IpcError> {
        process::peer_cred(self)
    }

    /// Separate halves, for a task that sends while another receives.
    pub fn split(self) -> (Sender<Tx>, Receiver<Rx>) {
        (self.tx, self.rx)
    }
}

impl<Tx, Rx> AsFd for Channel<Tx, Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        let s: &UnixStream = self.rx.half.as_ref();
        s.as_fd()
    }
}

/// A blocking typed channel, for code that runs before (or without) the
/// runtime, such as a freshly exec'd child reading its first config frame.
#[derive(Debug)]
pub struct BlockingChannel<Tx, Rx = Tx> {
    stream: StdUnixStream,
    inbox: Inbox,
    send_broken: bool,
    _tx: PhantomData<fn(&Tx)>,
    _rx: PhantomData<fn() -> Rx>,
}

impl<Tx: Serialize, Rx: DeserializeOwned> BlockingChannel<Tx, Rx> {
    /// Wraps a connected Unix stream socket and puts it in blocking mode.
    pub fn new(stream: StdUnixStream) -> Result<Self, IpcError> {
        stream.set_nonblocking(false)?;
        Ok(Self {
            stream,
            inbox: Inbox::default(),
            send_broken: false,
            _tx: PhantomData,
            _rx: PhantomData,
        })
    }

    /// Like [`new`](Self::new), after checking that `fd` is a Unix stream socket.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, IpcError> {
        process::check_unix_stream(&fd)?;
        Self::new(StdUnixStream::from(fd))
    }

    /// A connected pair of blocking channels.
    pub fn pair() -> Result<(Self, BlockingChannel<Rx, Tx>), IpcError>
    where
        Tx: DeserializeOwned,
        Rx: Serialize,
    {
        let (a, b) = process::pair()?;
        Ok((Self::from_fd(a)?, BlockingChannel::from_fd(b)?))
    }

    /// Sends one message with `fds`, blocking until all of it is written.
    pub fn send(&mut self, msg: &Tx, fds: Vec<OwnedFd>) -> Result<(), IpcError> {
        if self.send_broken {
            return Err(IpcError::Broken);
        }
        let mut frame = OutFrame::new(msg, fds)?;
        while !frame.is_done() {
            if let Err(e) = frame.step(self.stream.as_fd()) {
                // A timeout before the first byte leaves the stream intact.
                self.send_broken = frame.is_partial() || !is_retryable(&e);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The next message; `None` once the peer closed cleanly between frames.
    /// Same rules as [`Receiver::recv`].
    pub fn recv(&mut self) -> Result<Option<Incoming<Rx>>, IpcError> {
        loop {
            match self.inbox.poll_next()? {
                Next::Message(msg, fds) => return Ok(Some((msg, fds))),
                Next::Eof => return Ok(None),
                Next::NeedRead => {}
            }
            match self.inbox.read_step(self.stream.as_fd()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                // A read timeout (SO_RCVTIMEO) leaves the stream in sync.
                Err(e) if is_retryable(&e) => return Err(e.into()),
                Err(e) => return Err(self.inbox.poison(e.into())),
            }
        }
    }

    /// Credentials of the process at the other end.
    pub fn peer_cred(&self) -> Result<PeerCred, IpcError> {
        process::peer_cred(&self.stream)
    }

    /// The socket, e.g. to set a read timeout.
    pub fn get_ref(&self) -> &StdUnixStream {
        &self.stream
    }

    /// The same link as an async channel, keeping any bytes and fds already
    /// read past the last message. Must be called inside a tokio runtime.
    pub fn into_async(self) -> Result<Channel<Tx, Rx>, IpcError> {
        if self.send_broken {
            return Err(IpcError::Broken);
        }
        Channel::from_std(self.stream, self.inbox)
    }
}
