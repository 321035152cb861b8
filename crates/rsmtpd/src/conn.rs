//! A TCP connection that may turn into TLS: inbound (after STARTTLS, or
//! from the start for smtps) and outbound (the same, as a client). One
//! type for both directions, so the session loops read and write the same
//! way whatever the connection became.

use std::sync::Arc;
use std::time::Duration;

use rsmtpd_tls::TlsInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub enum Conn {
    Plain(TcpStream),
    /// A local submission on the control socket (never TLS).
    Local(tokio::net::UnixStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while the plaintext stream is inside a handshake that failed.
    Gone,
}

impl Conn {
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Local(s) => s.read(buf).await,
            Conn::Server(s) => s.read(buf).await,
            Conn::Client(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes and flushes (a TLS stream buffers a record otherwise).
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(bytes).await,
            Conn::Local(s) => s.write_all(bytes).await,
            Conn::Server(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Client(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Local(s) => s.shutdown().await,
            Conn::Server(s) => s.shutdown().await,
            Conn::Client(s) => s.shutdown().await,
            Conn::Gone => Ok(()),
        };
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Server(_) | Conn::Client(_))
    }

    /// The server side of the handshake, bounded by `timeout`. On failure
    /// the connection is gone; the reason is for the log.
    pub async fn accept_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Result<TlsInfo, String> {
        let tcp = self.take_plain()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("handshake timed out".into()),
        };
        let (_, state) = tls.get_ref();
        // A client certificate is only ever asked for with `verify`, and
        // then rustls has verified it before the handshake ends.
        let verified = state.peer_certificates().is_some_and(|c| !c.is_empty());
        let info = rsmtpd_tls::tls_info(state, verified)
            .ok_or_else(|| "handshake incomplete".to_string())?;
        *self = Conn::Server(Box::new(tls));
        Ok(info)
    }

    /// The client side of the handshake with `name` (SNI and, when the
    /// config verifies, the name the certificate must carry).
    pub async fn connect_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        verified: bool,
        timeout: Duration,
    ) -> Result<TlsInfo, String> {
        let tcp = self.take_plain()?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("handshake timed out".into()),
        };
        let (_, state) = tls.get_ref();
        let info = rsmtpd_tls::tls_info(state, verified)
            .ok_or_else(|| "handshake incomplete".to_string())?;
        *self = Conn::Client(Box::new(tls));
        Ok(info)
    }

    fn take_plain(&mut self) -> Result<TcpStream, String> {
        match std::mem::replace(self, Conn::Gone) {
            Conn::Plain(tcp) => Ok(tcp),
            other => {
                *self = other;
                Err("TLS already active".into())
            }
        }
    }
}
