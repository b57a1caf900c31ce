//! One IMAP client connection: commands with checked tagged responses.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::response::{parse, Kind, Response};
use crate::ops::OpError;
use crate::smtp::conn::Stream;

const READ_CHUNK: usize = 16 * 1024;

/// Where and how to connect; shared by IMAP and POP3.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Implicit TLS from the first byte.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Limit for each connect, handshake, write and response.
    pub timeout: Duration,
}

pub async fn connect(t: &Target) -> Result<Stream, OpError> {
    let tcp = timeout(t.timeout, TcpStream::connect(t.addr)).await.map_err(|_| OpError::Timeout)??;
    tcp.set_nodelay(true)?;
    match &t.tls {
        None => Ok(Stream::Plain(tcp)),
        Some((connector, name)) => {
            let tls = timeout(t.timeout, connector.connect(name.clone(), tcp)).await.map_err(|_| OpError::Timeout)?.map_err(|e| OpError::Io(format!("tls: {e}")))?;
            Ok(Stream::Tls(Box::new(tls)))
        }
    }
}

/// Result of a completed command.
pub struct Done {
    pub untagged: Vec<Response>,
    pub tagged: Response,
}

pub struct ImapConn {
    stream: Stream,
    buf: Vec<u8>,
    next_tag: u64,
    timeout: Duration,
}

impl ImapConn {
    /// Connects and checks the greeting (`* OK`; `* PREAUTH` is accepted).
    pub async fn open(t: &Target) -> Result<ImapConn, OpError> {
        let stream = connect(t).await?;
        let mut c = ImapConn { stream, buf: Vec::with_capacity(READ_CHUNK), next_tag: 1, timeout: t.timeout };
        let greeting = c.read_response().await?;
        match (&greeting.kind, greeting.status()) {
            (Kind::Untagged, Some("OK" | "PREAUTH")) => Ok(c),
            (Kind::Untagged, Some(s @ ("BYE" | "NO" | "BAD"))) => Err(OpError::Rejected(format!("greeting {s}: {}", greeting.text))),
            _ => Err(OpError::Protocol(format!("bad greeting {:?}", greeting.text))),
        }
    }

    pub async fn read_response(&mut self) -> Result<Response, OpError> {
        loop {
            match parse(&self.buf) {
                Ok(Some((r, n))) => {
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(OpError::Protocol(e.to_string())),
            }
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            let read = timeout(self.timeout, self.stream.read(&mut self.buf[len..])).await;
            let n = match read {
                Err(_) => {
                    self.buf.truncate(len);
                    return Err(OpError::Timeout);
                }
                Ok(r) => {
                    let n = r.inspect_err(|_| self.buf.truncate(len))?;
                    self.buf.truncate(len + n);
                    n
                }
            };
            if n == 0 {
                return Err(OpError::Io("connection closed by server".into()));
            }
        }
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), OpError> {
        timeout(self.timeout, async {
            self.stream.write_all(data).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| OpError::Timeout)??;
        Ok(())
    }

    fn tag(&mut self) -> String {
        let t = format!("A{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Reads until the tagged response for `tag`. Untagged BYE is an error
    /// unless `bye_ok` (LOGOUT); a continuation request is an error unless
    /// `want_continuation`, in which case it ends the wait (returned as the
    /// "tagged" response with kind Continuation).
    async fn complete(&mut self, tag: &str, bye_ok: bool, want_continuation: bool) -> Result<Done, OpError> {
        let mut untagged = Vec::new();
        loop {
            let r = self.read_response().await?;
            match &r.kind {
                Kind::Untagged => {
                    if !bye_ok && r.status() == Some("BYE") {
                        return Err(OpError::Rejected(format!("BYE {}", r.text)));
                    }
                    untagged.push(r);
                }
                Kind::Continuation if want_continuation => return Ok(Done { untagged, tagged: r }),
                Kind::Continuation => return Err(OpError::Protocol(format!("unexpected continuation {:?}", r.text))),
                Kind::Tagged(t) if t == tag => {
                    return match r.status() {
                        Some("OK") => Ok(Done { untagged, tagged: r }),
                        _ => Err(OpError::Rejected(r.text)),
                    };
                }
                Kind::Tagged(t) => return Err(OpError::Protocol(format!("response for unknown tag {t}"))),
            }
        }
    }

    /// Sends one command line (without tag and CRLF) and waits for OK.
    pub async fn command(&mut self, cmd: &str) -> Result<Done, OpError> {
        let tag = self.tag();
        self.write(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        let bye_ok = cmd.eq_ignore_ascii_case("LOGOUT");
        let done = self.complete(&tag, bye_ok, false).await?;
        if bye_ok && !done.untagged.iter().any(|r| r.status() == Some("BYE")) {
            return Err(OpError::Protocol("LOGOUT without untagged BYE".into()));
        }
        Ok(done)
    }

    /// `head {n}` + synchronising literal + `tail`, e.g. APPEND.
    pub async fn command_with_literal(&mut self, head: &str, literal: &[u8], tail: &str) -> Result<Done, OpError> {
        let tag = self.tag();
        self.write(format!("{tag} {head} {{{}}}\r\n", literal.len()).as_bytes()).await?;
        let go = self.complete(&tag, false, true).await?;
        if go.tagged.kind != Kind::Continuation {
            return Err(OpError::Protocol("literal not accepted".into()));
        }
        let mut data = Vec::with_capacity(literal.len() + tail.len() + 2);
        data.extend_from_slice(literal);
        data.extend_from_slice(tail.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.write(&data).await?;
        self.complete(&tag, false, false).await
    }

    /// `AUTHENTICATE PLAIN` with the token sent after the continuation.
    pub async fn authenticate_plain(&mut self, token: &str) -> Result<Done, OpError> {
        let tag = self.tag();
        self.write(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes()).await?;
        let go = self.complete(&tag, false, true).await?;
        if go.tagged.kind != Kind::Continuation {
            return Err(OpError::Protocol("AUTHENTICATE without continuation".into()));
        }
        self.write(format!("{token}\r\n").as_bytes()).await?;
        self.complete(&tag, false, false).await
    }

    /// Starts IDLE: returns once the server sent its continuation.
    pub async fn idle_start(&mut self) -> Result<String, OpError> {
        let tag = self.tag();
        self.write(format!("{tag} IDLE\r\n").as_bytes()).await?;
        let go = self.complete(&tag, false, true).await?;
        if go.tagged.kind != Kind::Continuation {
            return Err(OpError::Protocol("IDLE ended without continuation".into()));
        }
        Ok(tag)
    }

    /// Ends IDLE with DONE and waits for the tagged OK.
    pub async fn idle_done(&mut self, tag: &str) -> Result<Done, OpError> {
        self.write(b"DONE\r\n").await?;
        self.complete(tag, false, false).await
    }

    /// Changes the per-step limit (IDLE ends use a longer one).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    pub async fn shutdown(mut self) {
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

/// `"a b\"c"` quoting for IMAP quoted strings.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    #[test]
    fn quoting() {
        assert_eq!(quote("pw"), "\"pw\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    /// A scripted server: for each client line it expects a prefix and
    /// answers with canned bytes.
    async fn scripted(script: Vec<(&'static str, &'static [u8])>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"* OK ready\r\n").await.unwrap();
            for (expect, answer) in script {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                assert!(line.starts_with(expect), "{line:?} vs {expect:?}");
                w.write_all(answer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn commands_check_tags_and_status() {
        let addr = scripted(vec![
            ("A1 LOGIN", b"* CAPABILITY IMAP4rev1\r\nA1 OK done\r\n"),
            ("A2 APPEND INBOX {3}", b"+ go\r\n"),
            ("abc", b"A2 OK [APPENDUID 1 9] ok\r\n"),
            ("A3 SELECT", b"* 5 EXISTS\r\nA3 NO nope\r\n"),
            ("A4 NOOP", b"A9 OK wrong tag\r\n"),
        ])
        .await;
        let t = Target { addr, tls: None, timeout: Duration::from_secs(5) };
        let mut c = ImapConn::open(&t).await.unwrap();
        let d = c.command("LOGIN u pw").await.unwrap();
        assert_eq!(d.untagged.len(), 1);
        let d = c.command_with_literal("APPEND INBOX", b"abc", "").await.unwrap();
        assert_eq!(d.tagged.code("APPENDUID"), Some("1 9"));
        assert_eq!(c.command("SELECT INBOX").await.err(), Some(OpError::Rejected("NO nope".into())));
        assert!(matches!(c.command("NOOP").await, Err(OpError::Protocol(_))));
    }

    #[tokio::test]
    async fn bye_and_close_are_errors() {
        let addr = scripted(vec![("A1 NOOP", b"* BYE going away\r\n"), ("A2 LOGOUT", b"* BYE ok\r\nA2 OK bye\r\n")]).await;
        let t = Target { addr, tls: None, timeout: Duration::from_secs(5) };
        let mut c = ImapConn::open(&t).await.unwrap();
        assert!(matches!(c.command("NOOP").await, Err(OpError::Rejected(_))));
        c.command("LOGOUT").await.unwrap();
        assert!(matches!(c.command("NOOP").await, Err(OpError::Io(_))));
    }
}
