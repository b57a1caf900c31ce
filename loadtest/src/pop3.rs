//! POP3 retrieval load (RFC 1939): each client loops over sessions of
//! USER/PASS, STAT, LIST, UIDL, RETR of a few messages, QUIT.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::imap::conn::{connect, Target};
use crate::imap::Accounts;
use crate::ops::{OpError, OpStats};
use crate::smtp::conn::Stream;

const MAX_LINE: usize = 8 * 1024;
const MAX_MULTILINE: usize = 64 << 20;

/// Finds the end of a single CRLF line at the start of `buf`.
fn line_end(buf: &[u8]) -> Result<Option<usize>, OpError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && buf[lf - 1] == b'\r' => Ok(Some(lf + 1)),
        Some(_) => Err(OpError::Protocol("line ended by LF without CR".into())),
        None if buf.len() > MAX_LINE => Err(OpError::Protocol("status line too long".into())),
        None => Ok(None),
    }
}

/// Finds the end of a multi-line body (after the status line) terminated
/// by `.\r\n` on a line of its own; returns the index just past it.
fn multiline_end(buf: &[u8]) -> Result<Option<usize>, OpError> {
    if buf.starts_with(b".\r\n") {
        return Ok(Some(3));
    }
    match buf.windows(5).position(|w| w == b"\r\n.\r\n") {
        Some(p) => Ok(Some(p + 5)),
        None if buf.len() > MAX_MULTILINE => Err(OpError::Protocol("multi-line response too long".into())),
        None => Ok(None),
    }
}

/// Checks a status line: `+OK ...` → Ok, `-ERR ...` → Rejected, else garbage.
fn status(line: &[u8]) -> Result<(), OpError> {
    let text = String::from_utf8_lossy(line).trim_end().to_owned();
    if text == "+OK" || text.starts_with("+OK ") {
        Ok(())
    } else if text.starts_with("-ERR") {
        Err(OpError::Rejected(text))
    } else {
        Err(OpError::Protocol(format!("malformed status line {:?}", text.chars().take(80).collect::<String>())))
    }
}

pub struct Pop3Conn {
    stream: Stream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Pop3Conn {
    pub async fn open(t: &Target) -> Result<Pop3Conn, OpError> {
        let stream = connect(t).await?;
        let mut c = Pop3Conn { stream, buf: Vec::with_capacity(16 * 1024), timeout: t.timeout };
        c.response(false).await?;
        Ok(c)
    }

    async fn fill(&mut self) -> Result<(), OpError> {
        let len = self.buf.len();
        self.buf.resize(len + 16 * 1024, 0);
        let r = timeout(self.timeout, self.stream.read(&mut self.buf[len..])).await;
        let n = match r {
            Err(_) => Err(OpError::Timeout),
            Ok(Err(e)) => Err(OpError::from(e)),
            Ok(Ok(0)) => Err(OpError::Io("connection closed by server".into())),
            Ok(Ok(n)) => Ok(n),
        };
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        n.map(|_| ())
    }

    /// Reads one response; with `multi`, the body after a `+OK` line up to
    /// the terminating dot line. Returns the body length in bytes.
    async fn response(&mut self, multi: bool) -> Result<usize, OpError> {
        let end = loop {
            if let Some(end) = line_end(&self.buf)? {
                break end;
            }
            self.fill().await?;
        };
        let line: Vec<u8> = self.buf.drain(..end).collect();
        status(&line)?;
        if !multi {
            return Ok(0);
        }
        let end = loop {
            if let Some(end) = multiline_end(&self.buf)? {
                break end;
            }
            self.fill().await?;
        };
        self.buf.drain(..end);
        Ok(end)
    }

    async fn command(&mut self, cmd: &str, multi: bool) -> Result<usize, OpError> {
        timeout(self.timeout, async {
            self.stream.write_all(format!("{cmd}\r\n").as_bytes()).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| OpError::Timeout)??;
        self.response(multi).await
    }

    /// Like `command` but returns the first status line's text too (STAT).
    async fn stat(&mut self) -> Result<u32, OpError> {
        timeout(self.timeout, async {
            self.stream.write_all(b"STAT\r\n").await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| OpError::Timeout)??;
        let end = loop {
            if let Some(end) = line_end(&self.buf)? {
                break end;
            }
            self.fill().await?;
        };
        let line: Vec<u8> = self.buf.drain(..end).collect();
        status(&line)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        text.split_whitespace().nth(1).and_then(|n| n.parse().ok()).ok_or_else(|| OpError::Protocol(format!("bad STAT reply {:?}", text.trim_end())))
    }
}

#[derive(Clone)]
pub struct Pop3Plan {
    pub clients: usize,
    pub duration: Duration,
    pub max_ops: Option<u64>,
    /// RETR this many random messages per session.
    pub retr: u32,
    pub seed: u64,
}

async fn timed<T>(stats: &mut OpStats, name: &'static str, f: impl std::future::Future<Output = Result<T, OpError>>) -> Result<T, OpError> {
    let t0 = Instant::now();
    let r = f.await;
    stats.record(name, t0.elapsed(), &r.as_ref().map(|_| ()).map_err(Clone::clone));
    r
}

pub async fn run(target: Target, acc: Accounts, plan: Pop3Plan) -> (OpStats, Duration) {
    let start = Instant::now();
    let deadline = start + plan.duration;
    let budget = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let max_ops = plan.max_ops.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for i in 0..plan.clients as u64 {
        let (target, acc, plan, budget, stop) = (target.clone(), acc.clone(), plan.clone(), budget.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = OpStats::default();
            let mut rng = StdRng::seed_from_u64(plan.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let login = acc.login_name(i);
            let go = || {
                let ok = !stop.load(Ordering::Relaxed) && Instant::now() < deadline && budget.fetch_add(1, Ordering::Relaxed) < max_ops;
                if !ok {
                    stop.store(true, Ordering::Relaxed);
                }
                ok
            };
            while go() {
                let r: Result<(), OpError> = async {
                    let t0 = Instant::now();
                    let opened = Pop3Conn::open(&target).await;
                    stats.record("CONNECT", t0.elapsed(), &opened.as_ref().map(|_| ()).map_err(Clone::clone));
                    let mut c = opened?;
                    stats.connections += 1;
                    timed(&mut stats, "USER", c.command(&format!("USER {login}"), false)).await?;
                    timed(&mut stats, "PASS", c.command(&format!("PASS {}", acc.password), false)).await?;
                    let n = timed(&mut stats, "STAT", c.stat()).await?;
                    timed(&mut stats, "LIST", c.command("LIST", true)).await?;
                    timed(&mut stats, "UIDL", c.command("UIDL", true)).await?;
                    for _ in 0..plan.retr.min(n) {
                        if !go() {
                            break;
                        }
                        let m = rng.gen_range(1..=n);
                        let bytes = timed(&mut stats, "RETR", c.command(&format!("RETR {m}"), true)).await?;
                        stats.bytes_fetched += bytes as u64;
                    }
                    timed(&mut stats, "QUIT", c.command("QUIT", false)).await?;
                    Ok(())
                }
                .await;
                if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            stats
        }));
    }
    let mut all = OpStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    (all, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(line_end(b"+OK hi\r\nrest"), Ok(Some(8)));
        assert_eq!(line_end(b"+OK hi"), Ok(None));
        assert!(line_end(b"+OK hi\n").is_err());
        assert_eq!(multiline_end(b".\r\n"), Ok(Some(3)));
        assert_eq!(multiline_end(b"1 100\r\n2 200\r\n.\r\n+OK next"), Ok(Some(17)));
        // A dot-stuffed line is not the terminator.
        assert_eq!(multiline_end(b"a\r\n..\r\nb\r\n"), Ok(None));
        assert_eq!(status(b"+OK 2 320\r\n"), Ok(()));
        assert_eq!(status(b"+OK\r\n"), Ok(()));
        assert!(matches!(status(b"-ERR no\r\n"), Err(OpError::Rejected(_))));
        assert!(matches!(status(b"+OKAY\r\n"), Err(OpError::Protocol(_))));
        assert!(matches!(status(b"* OK imap?\r\n"), Err(OpError::Protocol(_))));
    }
}
