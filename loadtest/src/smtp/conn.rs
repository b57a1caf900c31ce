//! Buffered, bounded, timeout-limited line I/O over plain TCP or TLS.

use std::fmt;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::reply::{Reply, ReplyError, ReplyParser, MAX_LINE_LEN};
use super::SmtpError;
use crate::report::{Stage, StageCounts};

/// Read granularity; the read buffer never holds more than one partial line
/// plus one chunk.
const READ_CHUNK: usize = 16 * 1024;

/// The plain or TLS byte stream under a connection; an enum rather than a
/// trait object so STARTTLS can take the TCP stream back out.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Buffered, timeout-bounded line I/O over a [`Stream`].
pub(super) struct Conn {
    stream: Stream,
    /// Received bytes; `rbuf[rpos..]` is not yet consumed.
    rbuf: Vec<u8>,
    rpos: usize,
    /// How much of `rbuf[rpos..]` is known to contain no LF.
    scanned: usize,
    /// Commands queued for the next write.
    wbuf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    pub(super) fn new(stream: Stream, timeout: Duration) -> Self {
        Conn { stream, rbuf: Vec::new(), rpos: 0, scanned: 0, wbuf: Vec::new(), timeout }
    }

    pub(super) fn queue(&mut self, cmd: fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        let _ = self.wbuf.write_fmt(cmd);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Writes all queued commands in one go.
    pub(super) async fn flush(&mut self) -> Result<(), SmtpError> {
        self.check_in_sync()?;
        let Conn { stream, wbuf, timeout: limit, .. } = self;
        let result = timeout(*limit, async {
            stream.write_all(wbuf).await?;
            stream.flush().await
        })
        .await;
        wbuf.clear();
        result.map_err(|_| SmtpError::Timeout)?.map_err(SmtpError::from)
    }

    pub(super) async fn write_raw(&mut self, data: &[u8]) -> Result<(), SmtpError> {
        self.check_in_sync()?;
        let stream = &mut self.stream;
        let result = timeout(self.timeout, async {
            stream.write_all(data).await?;
            stream.flush().await
        })
        .await;
        result.map_err(|_| SmtpError::Timeout)?.map_err(SmtpError::from)
    }

    pub(super) async fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        match timeout(self.timeout, self.read_reply_untimed()).await {
            Ok(result) => result,
            Err(_) => Err(SmtpError::Timeout),
        }
    }

    async fn read_reply_untimed(&mut self) -> Result<Reply, SmtpError> {
        let mut parser = ReplyParser::default();
        loop {
            while let Some(range) = self.next_line()? {
                if let Some(reply) = parser.push_line(&self.rbuf[range])? {
                    return Ok(reply);
                }
            }
            self.fill().await?;
        }
    }

    /// Returns the byte range of the next buffered line (without its line
    /// terminator) and consumes it, or `None` if no full line is buffered.
    fn next_line(&mut self) -> Result<Option<std::ops::Range<usize>>, ReplyError> {
        let unread = &self.rbuf[self.rpos..];
        match unread[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let start = self.rpos;
                let mut end = start + self.scanned + i;
                self.rpos = end + 1;
                self.scanned = 0;
                if end > start && self.rbuf[end - 1] == b'\r' {
                    end -= 1;
                }
                Ok(Some(start..end))
            }
            None if unread.len() > MAX_LINE_LEN + 1 => Err(ReplyError::LineTooLong),
            None => {
                self.scanned = unread.len();
                Ok(None)
            }
        }
    }

    async fn fill(&mut self) -> Result<(), SmtpError> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        self.rbuf.reserve(READ_CHUNK);
        // read_buf only appends initialised bytes, so a timeout that drops
        // this future leaves the buffer consistent.
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(SmtpError::Closed);
        }
        Ok(())
    }

    pub(super) fn has_unread_input(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// Every reply so far has been matched to a command, so unread input
    /// before a new command means the server sent something unsolicited;
    /// continuing would pair later replies with the wrong commands.
    fn check_in_sync(&self) -> Result<(), SmtpError> {
        if self.has_unread_input() {
            return Err(SmtpError::Protocol("server sent data nobody asked for"));
        }
        Ok(())
    }

    /// Sends one command and reads its reply, counting it against `stage`.
    pub(super) async fn command(&mut self, stats: &mut StageCounts, stage: Stage, cmd: &str) -> Result<Reply, SmtpError> {
        // Takes a &str, not fmt::Arguments: the latter is !Send and would
        // make every future holding it across an await !Send.
        self.queue(format_args!("{cmd}"));
        self.flush().await?;
        self.reply(stats, stage).await
    }

    pub(super) async fn reply(&mut self, stats: &mut StageCounts, stage: Stage) -> Result<Reply, SmtpError> {
        let reply = self.read_reply().await?;
        stats.record_reply(stage, reply.code);
        Ok(reply)
    }

    /// Best-effort QUIT and orderly shutdown (TLS close_notify, then FIN).
    pub(super) async fn quit(&mut self) {
        self.queue(format_args!("QUIT"));
        if self.flush().await.is_ok() {
            let _ = self.read_reply().await;
        }
        let _ = timeout(self.timeout, self.stream.shutdown()).await;
    }

    /// Replaces the plain stream with TLS (STARTTLS). Buffers are dropped:
    /// nothing received in plaintext may be trusted after the upgrade.
    pub(super) async fn upgrade(self, tls: &TlsConnector, name: &ServerName<'static>) -> Result<Conn, SmtpError> {
        let Stream::Plain(tcp) = self.stream else {
            return Err(SmtpError::Protocol("STARTTLS on a connection that already uses TLS"));
        };
        let stream = handshake(tls, name, tcp, self.timeout).await?;
        Ok(Conn::new(Stream::Tls(Box::new(stream)), self.timeout))
    }
}

pub(super) async fn handshake(tls: &TlsConnector, name: &ServerName<'static>, tcp: TcpStream, limit: Duration) -> Result<TlsStream<TcpStream>, SmtpError> {
    match timeout(limit, tls.connect(name.clone(), tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(SmtpError::Tls(e)),
        Err(_) => Err(SmtpError::Timeout),
    }
}
