//! A client connection as the drivers see it: plain TCP or TLS over TCP,
//! with the upgrade STARTTLS needs.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::io;
use std::sync::Arc;

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// Transient state during an upgrade; every operation fails.
    Gone,
}

/// Negotiated TLS parameters, for Received headers and logs.
pub struct TlsParams {
    pub protocol: String,
    pub cipher: String,
}

impl Conn {
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf).await,
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub async fn close(&mut self) {
        match self {
            Conn::Plain(s) => {
                let _ = s.close().await;
            }
            Conn::Tls(s) => {
                let _ = s.close().await;
            }
            Conn::Gone => {}
        }
    }

    /// Performs the server side of a TLS handshake (implicit TLS, or after
    /// STARTTLS). On failure the connection is gone.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<TlsParams> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other("TLS already active"));
        };
        let tls = futures_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let (_, session) = tls.get_ref();
        let params = TlsParams {
            protocol: session.protocol_version().and_then(|v| v.as_str()).unwrap_or("TLS").replace("TLSv1_", "TLSv1.").to_string(),
            cipher: session.negotiated_cipher_suite().and_then(|c| c.suite().as_str()).unwrap_or("unknown").to_string(),
        };
        *self = Conn::Tls(Box::new(tls));
        Ok(params)
    }
}
