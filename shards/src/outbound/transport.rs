//! One outbound SMTP connection: TCP (optionally from a configured source
//! address), implicit TLS or STARTTLS with rustls, and the loop that
//! drives the sans-IO [`Client`] (protocols::smtp::client).
//!
//! TLS policy (docs/configuration.md, `[outbound]`):
//! - MX delivery is opportunistic (RFC 7435): the certificate is not
//!   checked (an MX host's certificate rarely matches its name and there
//!   is nothing to fall back to that is safer than plaintext); a refused
//!   STARTTLS continues in plaintext, a failed handshake makes the runner
//!   reconnect once without STARTTLS.
//! - A smarthost with `smarthost_tls = "starttls"` or `"implicit"` must
//!   complete TLS with a certificate valid for its name (roots from
//!   `outbound.ca_file`); otherwise the attempt fails temporarily, never
//!   falling back (its AUTH password must not go out in the clear).
//!
//! Limits: reads go into a [`READ_CHUNK_BYTES`] buffer; unconsumed reply
//! bytes are bounded by the client's reply-line limit; content is read
//! from the store in [`CONTENT_CHUNK_BYTES`] pieces on the blocking pool,
//! so a message never sits whole in memory.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use varan_core::queue::ContentReader;
use varan_protocols::smtp::client::{Client, ClientConfig, ClientError, ClientEvent, Transaction, TransactionResult};

/// Bytes read from the socket at a time.
pub const READ_CHUNK_BYTES: usize = 8 << 10;
/// Message content read from the store per blocking call.
pub const CONTENT_CHUNK_BYTES: usize = 64 << 10;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// Between states (a failed handshake consumed the socket).
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Ok(0)),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// How to reach and talk to one host.
#[derive(Clone)]
pub struct Dial {
    /// Name for logs and TLS (SNI and, when verifying, the certificate).
    pub host: String,
    pub addr: SocketAddr,
    pub client: ClientConfig,
    /// rustls configuration for STARTTLS / implicit TLS.
    pub tls: Arc<rustls::ClientConfig>,
    pub source: Option<IpAddr>,
    pub connect_timeout: Duration,
}

/// Why a connection could not be used.
#[derive(Debug)]
pub enum ConnError {
    /// TCP connect failed or timed out.
    Connect(String),
    /// The TLS handshake failed (the runner may retry without STARTTLS).
    Handshake(String),
    /// Reading or writing failed mid-session.
    Io(String),
    Protocol(ClientError),
}

impl ConnError {
    pub fn text(&self) -> String {
        match self {
            ConnError::Connect(e) => format!("connect: {e}"),
            ConnError::Handshake(e) => format!("TLS handshake: {e}"),
            ConnError::Io(e) => format!("connection: {e}"),
            ConnError::Protocol(e) => e.to_string(),
        }
    }
}

pub struct Connection {
    stream: Stream,
    client: Client,
    pending: Vec<u8>,
    dial: Dial,
}

impl Connection {
    /// Connects and runs greeting, EHLO, STARTTLS and AUTH until the
    /// client is ready for a transaction.
    pub async fn open(dial: Dial) -> Result<Self, ConnError> {
        let tcp = connect_tcp(&dial).await?;
        // Without it, the small last write of a message (the rest of the
        // content and ".") waits for the peer's delayed ACK of the
        // previous segment: ~40 ms per message (Nagle, RFC 896).
        let _ = tcp.set_nodelay(true);
        let mut stream = Stream::Plain(tcp);
        if dial.client.implicit_tls {
            stream = handshake(stream, &dial).await?;
        }
        let mut conn = Self { stream, client: Client::new(dial.client.clone()), pending: Vec::new(), dial };
        match conn.next_event().await? {
            ClientEvent::Ready => Ok(conn),
            other => Err(ConnError::Protocol(ClientError::Unexpected(event_name(&other)))),
        }
    }

    pub fn host(&self) -> &str {
        &self.dial.host
    }

    pub fn tls_active(&self) -> bool {
        self.client.tls_active()
    }

    /// Runs one transaction. `first` is the content's first chunk (read
    /// with [`read_full_chunk`] when the content was opened, so a small
    /// message costs one trip to the blocking pool); the rest of `content`
    /// is read there too.
    pub async fn send(&mut self, tx: Transaction, mut content: ContentReader, first: Vec<u8>) -> Result<TransactionResult, ConnError> {
        self.client.send(tx);
        let mut first = Some(first);
        loop {
            match self.next_event().await? {
                ClientEvent::SendContent => {
                    let mut chunk = first.take().unwrap_or_default();
                    loop {
                        self.client.content(&chunk);
                        if chunk.len() < CONTENT_CHUNK_BYTES {
                            break; // a short chunk is the end: no read for EOF
                        }
                        if self.client.output_len() >= CONTENT_CHUNK_BYTES {
                            self.flush().await?;
                        }
                        let (reader, next) = read_chunk(content).await;
                        content = reader;
                        chunk = next.map_err(|e| ConnError::Io(format!("queue content: {e}")))?;
                    }
                    // The tail and "." go out together in `next_event`.
                    self.client.content_end();
                }
                ClientEvent::TransactionDone(result) => {
                    // `Ready` follows; consume it so the next send starts clean.
                    if let Some(ClientEvent::Ready) = self.client.poll_event() {}
                    return Ok(result);
                }
                other => return Err(ConnError::Protocol(ClientError::Unexpected(event_name(&other)))),
            }
        }
    }

    /// QUIT, bounded by the command timeout; errors do not matter any more.
    pub async fn quit(mut self) {
        self.client.quit();
        let _ = glommio::timer::timeout(Duration::from_secs(10), async {
            let _ = self.next_event().await;
            Ok(())
        })
        .await;
        let _ = self.stream.close().await;
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        let out = self.client.take_output();
        if !out.is_empty() {
            self.stream.write_all(&out).await.map_err(|e| ConnError::Io(e.to_string()))?;
            self.stream.flush().await.map_err(|e| ConnError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes output and reads replies until the client has an event;
    /// performs STARTTLS itself.
    async fn next_event(&mut self) -> Result<ClientEvent, ConnError> {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            self.flush().await?;
            match self.client.poll_event() {
                Some(ClientEvent::StartTls) => {
                    self.pending.clear();
                    let plain = std::mem::replace(&mut self.stream, Stream::Gone);
                    match handshake(plain, &self.dial).await {
                        Ok(tls) => {
                            self.stream = tls;
                            self.client.tls_started();
                        }
                        Err(e) => {
                            self.client.tls_failed();
                            return Err(e);
                        }
                    }
                    continue;
                }
                Some(ClientEvent::Failed(e)) => return Err(ConnError::Protocol(e)),
                Some(event) => return Ok(event),
                None => {}
            }
            let Some(wait) = self.client.timeout() else {
                return Err(ConnError::Protocol(ClientError::Unexpected("no event and nothing awaited")));
            };
            let read = glommio::timer::timeout(wait, async { Ok(self.stream.read(&mut buf).await) }).await;
            match read {
                Err(_) => self.client.timed_out(),
                Ok(Err(e)) => return Err(ConnError::Io(e.to_string())),
                Ok(Ok(0)) => self.client.eof(),
                Ok(Ok(n)) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    let used = self.client.receive(&self.pending);
                    self.pending.drain(..used.min(self.pending.len()));
                }
            }
        }
    }
}

fn event_name(e: &ClientEvent) -> &'static str {
    match e {
        ClientEvent::StartTls => "unexpected STARTTLS step",
        ClientEvent::Ready => "unexpected ready state",
        ClientEvent::SendContent => "unexpected 354",
        ClientEvent::TransactionDone(_) => "unexpected transaction result",
        ClientEvent::Failed(_) => "failure",
        ClientEvent::Closed => "connection closed",
    }
}

/// Reads up to [`CONTENT_CHUNK_BYTES`]; shorter only at the end of the
/// content. Blocking: call it on the blocking pool.
pub fn read_full_chunk(reader: &mut ContentReader) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CONTENT_CHUNK_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

async fn read_chunk(mut reader: ContentReader) -> (ContentReader, std::io::Result<Vec<u8>>) {
    glommio::executor()
        .spawn_blocking(move || {
            let r = read_full_chunk(&mut reader);
            (reader, r)
        })
        .await
}

async fn connect_tcp(dial: &Dial) -> Result<TcpStream, ConnError> {
    match dial.source {
        Some(source) => {
            let (addr, timeout) = (dial.addr, dial.connect_timeout);
            let fd = glommio::executor().spawn_blocking(move || crate::sys::connect_from(source, addr, timeout)).await.map_err(|e| ConnError::Connect(e.to_string()))?;
            Ok(crate::sys::tcp_stream_from(fd))
        }
        None => TcpStream::connect_timeout(dial.addr, dial.connect_timeout).await.map_err(|e| ConnError::Connect(e.to_string())),
    }
}

async fn handshake(stream: Stream, dial: &Dial) -> Result<Stream, ConnError> {
    let Stream::Plain(tcp) = stream else {
        return Err(ConnError::Handshake("not a plain connection".into()));
    };
    let name = match ServerName::try_from(dial.host.clone()) {
        Ok(n) => n,
        Err(_) => ServerName::IpAddress(dial.addr.ip().into()),
    };
    let connector = futures_rustls::TlsConnector::from(Arc::clone(&dial.tls));
    let tls = glommio::timer::timeout(dial.connect_timeout, async { Ok(connector.connect(name, tcp).await) })
        .await
        .map_err(|_| ConnError::Handshake("timed out".into()))?
        .map_err(|e| ConnError::Handshake(e.to_string()))?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// rustls for opportunistic TLS: any certificate (RFC 7435), signatures
/// still checked so the handshake is a real one.
pub fn opportunistic_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyCertificate(Arc::clone(&provider)));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls that verifies against the PEM roots in `ca_file` (smarthosts).
pub fn verified_tls(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        // A malformed root is skipped, as the system bundles carry a few.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificates", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map_err(|e| e.to_string())?.with_root_certificates(roots).with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
