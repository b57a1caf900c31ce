//! A small, strictly bounded SMTP client built for load generation.
//!
//! Every read is capped (line length, lines per reply) and every network
//! wait is bounded by the per-reply timeout, so no server behaviour can make
//! the client hang forever, buffer without limit or panic. Failures are
//! returned as [`SmtpError`] or as a rejected [`TxDone`], never thrown.

pub(crate) mod conn;
mod reply;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::message::Outgoing;
use crate::report::{Outcome, Stage, StageCounts};
use conn::{handshake, Conn, Stream};
pub use reply::{Capabilities, Reply, ReplyError};

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("timed out")]
    Timeout,
    #[error("connection closed by server")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("{0}")]
    Reply(#[from] ReplyError),
    #[error("{what} rejected: {}", reply.summary())]
    Rejected { what: &'static str, reply: Reply },
    #[error("{0}")]
    Protocol(&'static str),
}

impl SmtpError {
    /// How a message that could not be sent because of this error is counted.
    pub fn outcome(&self) -> Outcome {
        match self {
            SmtpError::Timeout => Outcome::Timeout,
            SmtpError::Rejected { reply, .. } => Outcome::from_code(reply.code),
            _ => Outcome::Error,
        }
    }

    /// Counts the error against `stage`, except rejections whose reply was
    /// already counted when it was read.
    fn count(&self, stats: &mut StageCounts, stage: Stage) {
        match self {
            SmtpError::Rejected { .. } => {}
            SmtpError::Timeout => stats.record_timeout(stage),
            _ => stats.record_error(stage),
        }
    }
}

/// Transport security for a connection.
#[derive(Clone)]
pub enum Security {
    Plain,
    StartTls(TlsConnector),
    Implicit(TlsConnector),
}

/// Everything a connection needs; shared by all workers.
#[derive(Clone)]
pub struct ClientSettings {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    pub ehlo: String,
    pub from: String,
    pub security: Security,
    /// Base64 of `\0user\0pass` for AUTH PLAIN.
    pub auth_plain: Option<String>,
    /// Use PIPELINING when the server advertises it.
    pub pipelining: bool,
    pub timeout: Duration,
}

/// Result of one mail transaction.
#[derive(Debug, Clone)]
pub struct TxDone {
    pub outcome: Outcome,
    /// Why the message was not accepted, for the failure breakdown.
    pub reason: Option<String>,
    /// From the origin (scheduled or MAIL sent) to the final reply.
    pub latency: Duration,
    /// Whether the connection can carry another transaction.
    pub keep: bool,
}

/// A negative reply that ended a transaction before the message was accepted.
struct Rejection {
    stage: Stage,
    reply: Reply,
    keep: bool,
}

impl Rejection {
    fn new(stage: Stage, reply: Reply) -> Self {
        // 421 means the server is closing the channel; anything outside 4xx/5xx
        // leaves the dialogue in an unknown state, so don't reuse it either.
        let keep = matches!(reply.class(), 4 | 5) && reply.code != 421;
        Rejection { stage, reply, keep }
    }

    fn into_done(self, latency: Duration) -> TxDone {
        TxDone { outcome: Outcome::from_code(self.reply.code), reason: Some(format!("{}: {}", self.stage, self.reply.summary())), latency, keep: self.keep }
    }
}

/// Tracks RCPT results; a message fails at RCPT only if every recipient did.
#[derive(Default)]
struct RcptTally {
    accepted: usize,
    first_failure: Option<Reply>,
}

impl RcptTally {
    fn note(&mut self, reply: Reply) {
        if reply.is_ok() {
            self.accepted += 1;
        } else if self.first_failure.as_ref().is_none_or(|f| f.class() == 5 && reply.class() == 4) {
            // Prefer a temporary failure: the message would be retried.
            self.first_failure = Some(reply);
        }
    }

    fn rejection(self) -> Option<Rejection> {
        match (self.accepted, self.first_failure) {
            (0, Some(reply)) => Some(Rejection::new(Stage::Rcpt, reply)),
            _ => None,
        }
    }
}

/// Either the server is ready for message content (354) or the envelope
/// was rejected.
type Envelope = Result<(), Rejection>;

/// An established SMTP session: connected, greeted, optionally TLS and
/// authenticated.
pub struct Session {
    conn: Conn,
    caps: Capabilities,
    /// A previous transaction failed part-way; RSET before the next one.
    needs_rset: bool,
}

impl Session {
    /// Connects and runs banner, EHLO and optional STARTTLS/AUTH. Replies
    /// are counted under [`Stage::Connect`].
    pub async fn connect(s: &ClientSettings, stats: &mut StageCounts) -> Result<Session, SmtpError> {
        let result = Self::establish(s, stats).await;
        if let Err(e) = &result {
            e.count(stats, Stage::Connect);
        }
        result
    }

    async fn establish(s: &ClientSettings, stats: &mut StageCounts) -> Result<Session, SmtpError> {
        let tcp = timeout(s.timeout, TcpStream::connect(s.addr)).await.map_err(|_| SmtpError::Timeout)??;
        // Commands are small and latency-critical; Nagle would add delays.
        tcp.set_nodelay(true)?;
        let stream = match &s.security {
            Security::Implicit(tls) => Stream::Tls(Box::new(handshake(tls, &s.server_name, tcp, s.timeout).await?)),
            _ => Stream::Plain(tcp),
        };
        let mut conn = Conn::new(stream, s.timeout);
        let banner = conn.reply(stats, Stage::Connect).await?;
        if !banner.is_ok() {
            return Err(SmtpError::Rejected { what: "greeting", reply: banner });
        }
        let mut caps = greet(&mut conn, s, stats).await?;
        if let Security::StartTls(tls) = &s.security {
            conn = start_tls(conn, caps, tls, s, stats).await?;
            caps = ehlo(&mut conn, s, stats).await?;
        }
        if let Some(token) = &s.auth_plain {
            authenticate(&mut conn, token, stats).await?;
        }
        Ok(Session { conn, caps, needs_rset: false })
    }

    /// Sends one message. `origin` is the scheduled send time in open-loop
    /// mode; otherwise latency is measured from just before MAIL FROM.
    pub async fn send(&mut self, s: &ClientSettings, msg: &Outgoing, origin: Option<Instant>, stats: &mut StageCounts) -> TxDone {
        let mut stage = Stage::Mail;
        match self.transaction(s, msg, origin, &mut stage, stats).await {
            Ok(done) => done,
            Err(e) => {
                e.count(stats, stage);
                TxDone { outcome: e.outcome(), reason: Some(format!("{stage}: {e}")), latency: Duration::ZERO, keep: false }
            }
        }
    }

    async fn transaction(&mut self, s: &ClientSettings, msg: &Outgoing, origin: Option<Instant>, stage: &mut Stage, stats: &mut StageCounts) -> Result<TxDone, SmtpError> {
        if self.needs_rset {
            let reply = self.conn.command(stats, Stage::Mail, "RSET").await?;
            if !reply.is_ok() {
                return Err(SmtpError::Rejected { what: "RSET", reply });
            }
            self.needs_rset = false;
        }
        let start = origin.unwrap_or_else(Instant::now);
        let envelope =
            if s.pipelining && self.caps.pipelining { self.envelope_pipelined(s, msg, stage, stats).await? } else { self.envelope_sequential(s, msg, stage, stats).await? };
        if let Err(rejection) = envelope {
            self.needs_rset = true;
            return Ok(rejection.into_done(start.elapsed()));
        }
        *stage = Stage::Eod;
        self.conn.write_raw(&msg.wire).await?;
        let reply = self.conn.reply(stats, Stage::Eod).await?;
        let latency = start.elapsed();
        if !reply.is_ok() {
            return Ok(Rejection::new(Stage::Eod, reply).into_done(latency));
        }
        Ok(TxDone { outcome: Outcome::Accepted, reason: None, latency, keep: true })
    }

    fn queue_mail_from(&mut self, s: &ClientSettings, msg: &Outgoing) {
        if self.caps.size {
            // RFC 1870: lets the server refuse oversized mail before DATA.
            self.conn.queue(format_args!("MAIL FROM:<{}> SIZE={}", s.from, msg.size));
        } else {
            self.conn.queue(format_args!("MAIL FROM:<{}>", s.from));
        }
    }

    /// One round trip per command.
    async fn envelope_sequential(&mut self, s: &ClientSettings, msg: &Outgoing, stage: &mut Stage, stats: &mut StageCounts) -> Result<Envelope, SmtpError> {
        self.queue_mail_from(s, msg);
        self.conn.flush().await?;
        let mail = self.conn.reply(stats, Stage::Mail).await?;
        if !mail.is_ok() {
            return Ok(Err(Rejection::new(Stage::Mail, mail)));
        }
        *stage = Stage::Rcpt;
        let mut tally = RcptTally::default();
        for rcpt in &msg.rcpts {
            let reply = self.conn.command(stats, Stage::Rcpt, &format!("RCPT TO:<{rcpt}>")).await?;
            if reply.code == 421 {
                return Ok(Err(Rejection::new(Stage::Rcpt, reply)));
            }
            tally.note(reply);
        }
        if let Some(rejection) = tally.rejection() {
            return Ok(Err(rejection));
        }
        *stage = Stage::Data;
        let data = self.conn.command(stats, Stage::Data, "DATA").await?;
        if data.code != 354 {
            return Ok(Err(Rejection::new(Stage::Data, data)));
        }
        Ok(Ok(()))
    }

    /// RFC 2920: MAIL, all RCPTs and DATA in one write, then every reply.
    async fn envelope_pipelined(&mut self, s: &ClientSettings, msg: &Outgoing, stage: &mut Stage, stats: &mut StageCounts) -> Result<Envelope, SmtpError> {
        self.queue_mail_from(s, msg);
        for rcpt in &msg.rcpts {
            self.conn.queue(format_args!("RCPT TO:<{rcpt}>"));
        }
        self.conn.queue(format_args!("DATA"));
        self.conn.flush().await?;

        let mail = self.conn.reply(stats, Stage::Mail).await?;
        if mail.code == 421 {
            return Ok(Err(Rejection::new(Stage::Mail, mail)));
        }
        *stage = Stage::Rcpt;
        let mut tally = RcptTally::default();
        for _ in &msg.rcpts {
            let reply = self.conn.reply(stats, Stage::Rcpt).await?;
            if reply.code == 421 {
                return Ok(Err(Rejection::new(Stage::Rcpt, reply)));
            }
            tally.note(reply);
        }
        *stage = Stage::Data;
        let data = self.conn.reply(stats, Stage::Data).await?;
        let envelope_failure = if mail.is_ok() { tally.rejection() } else { Some(Rejection::new(Stage::Mail, mail)) };
        match (data.code, envelope_failure) {
            (354, None) => Ok(Ok(())),
            (354, Some(mut rejection)) => {
                // RFC 2920 §3.1: DATA was accepted although the envelope
                // failed; send an empty message to get back in sync.
                *stage = Stage::Eod;
                self.conn.write_raw(b".\r\n").await?;
                let eod = self.conn.reply(stats, Stage::Eod).await?;
                rejection.keep &= eod.code != 421;
                Ok(Err(rejection))
            }
            (_, Some(rejection)) => Ok(Err(rejection)),
            (_, None) => Ok(Err(Rejection::new(Stage::Data, data))),
        }
    }

    /// Best-effort QUIT; every message outcome is already recorded.
    pub async fn quit(mut self) {
        self.conn.quit().await;
    }
}

/// EHLO, falling back to HELO for pre-ESMTP servers (RFC 5321 §3.2).
async fn greet(conn: &mut Conn, s: &ClientSettings, stats: &mut StageCounts) -> Result<Capabilities, SmtpError> {
    let reply = conn.command(stats, Stage::Connect, &format!("EHLO {}", s.ehlo)).await?;
    if reply.is_ok() {
        return Ok(Capabilities::from_ehlo(&reply));
    }
    // STARTTLS needs ESMTP, so HELO cannot help in that case.
    if reply.class() != 5 || matches!(s.security, Security::StartTls(_)) {
        return Err(SmtpError::Rejected { what: "EHLO", reply });
    }
    let reply = conn.command(stats, Stage::Connect, &format!("HELO {}", s.ehlo)).await?;
    if !reply.is_ok() {
        return Err(SmtpError::Rejected { what: "HELO", reply });
    }
    Ok(Capabilities::default())
}

async fn ehlo(conn: &mut Conn, s: &ClientSettings, stats: &mut StageCounts) -> Result<Capabilities, SmtpError> {
    let reply = conn.command(stats, Stage::Connect, &format!("EHLO {}", s.ehlo)).await?;
    if !reply.is_ok() {
        return Err(SmtpError::Rejected { what: "EHLO", reply });
    }
    Ok(Capabilities::from_ehlo(&reply))
}

async fn start_tls(mut conn: Conn, caps: Capabilities, tls: &TlsConnector, s: &ClientSettings, stats: &mut StageCounts) -> Result<Conn, SmtpError> {
    if !caps.starttls {
        return Err(SmtpError::Protocol("server does not advertise STARTTLS"));
    }
    let reply = conn.command(stats, Stage::Connect, "STARTTLS").await?;
    if reply.code != 220 {
        return Err(SmtpError::Rejected { what: "STARTTLS", reply });
    }
    // Bytes after the 220 would be plaintext injected ahead of the
    // handshake (cf. CVE-2011-0411); refuse rather than misparse them.
    if conn.has_unread_input() {
        return Err(SmtpError::Protocol("server sent data after the STARTTLS reply"));
    }
    conn.upgrade(tls, &s.server_name).await
}

/// AUTH PLAIN with an initial response (RFC 4954).
async fn authenticate(conn: &mut Conn, token: &str, stats: &mut StageCounts) -> Result<(), SmtpError> {
    let mut reply = conn.command(stats, Stage::Connect, &format!("AUTH PLAIN {token}")).await?;
    if reply.code == 334 {
        // The server ignored the initial response and asks for it again.
        reply = conn.command(stats, Stage::Connect, token).await?;
    }
    if !reply.is_ok() {
        return Err(SmtpError::Rejected { what: "AUTH", reply });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcpt_tally_prefers_tempfail() {
        let reply = |code| Reply { code, lines: vec![] };
        let mut t = RcptTally::default();
        t.note(reply(550));
        t.note(reply(451));
        t.note(reply(552));
        assert_eq!(t.rejection().unwrap().reply.code, 451);
        let mut t = RcptTally::default();
        t.note(reply(550));
        t.note(reply(250));
        assert!(t.rejection().is_none());
    }
}
