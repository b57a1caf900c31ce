//! SMTP (RFC 5321) and LMTP (RFC 2033) client side as a sans-IO
//! [`Client`]: what a queue runner speaks to the next hop.
//!
//! # Driving a client
//!
//! The driver owns the socket, TLS and the clock. Its loop:
//!
//! 1. Read, call [`Client::receive`] with all unconsumed bytes, drop the
//!    consumed prefix.
//! 2. Write [`Client::take_output`].
//! 3. Handle every [`Client::poll_event`]:
//!    - `StartTls`: flush, handshake, then `tls_started` or `tls_failed`.
//!      Bytes the server sent after its `220` were discarded (RFC 3207 §6:
//!      nothing from before the handshake is trusted).
//!    - `Ready`: `send` a transaction, or `quit`.
//!    - `SendContent`: stream the message through `content` (flushing
//!      output in between), then `content_end`.
//!    - `TransactionDone`: per-recipient outcomes; `Ready` follows.
//!    - `Failed`: the connection is unusable, close it. Recipients of a
//!      transaction in flight have no outcome: they are temporarily failed
//!      with the error's text.
//!    - `Closed`: QUIT was answered; close.
//! 4. Arm [`Client::timeout`]; on expiry call [`Client::timed_out`].
//!
//! # Policy decisions
//!
//! - EHLO refused with 5xx → HELO (RFC 5321 §3.2); 4xx → failure. LMTP has
//!   no HELO (RFC 2033 §4.1).
//! - STARTTLS: used when offered and the driver allows it. If the server
//!   refuses it, or the driver reports a failed handshake, what happens is
//!   the driver's [`TlsPolicy`]: `Opportunistic` carries on in plaintext
//!   (only after a refusal: a failed handshake leaves the connection dead,
//!   the driver reconnects without TLS), `Required` fails.
//! - 8-bit content to a server without 8BITMIME: sent as is, without
//!   `BODY=`, and reported in [`TransactionResult::eight_bit_unannounced`]
//!   for the log. RFC 6152 §3 asks for a conversion or a bounce; like
//!   Postfix and Exim we send, because nearly every server accepts 8-bit
//!   text and bouncing legitimate mail is the worse failure.
//! - A message that needs SMTPUTF8 to a server that lacks it: every
//!   recipient fails with 550 5.6.7 without a MAIL command (RFC 6531
//!   §3.4 allows no downgrade here).
//! - A message larger than the server's SIZE: 552 5.3.4 for every
//!   recipient without a MAIL command (RFC 1870 §6).
//! - Garbage, over-long or too many reply lines: `Failed` (temporary).

mod encode;
mod reply;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use varan_core::queue::{BodyInfo, Notify, Ret};

pub use encode::DataEncoder;
pub use reply::{ReplyError, ReplyParser, ServerReply, REPLY_LINES_MAX, REPLY_LINE_BYTES_MAX};

/// Timeouts of RFC 5321 §4.5.3.2, minimum values it recommends.
pub mod timeouts {
    use std::time::Duration;
    /// §4.5.3.2.1: the greeting.
    pub const GREETING: Duration = Duration::from_secs(300);
    /// §4.5.3.2.2–3: MAIL and RCPT; also EHLO, STARTTLS, AUTH, RSET, QUIT.
    pub const COMMAND: Duration = Duration::from_secs(300);
    /// §4.5.3.2.4: the 354 reply to DATA.
    pub const DATA_INIT: Duration = Duration::from_secs(120);
    /// §4.5.3.2.6: the reply after the final dot.
    pub const DATA_END: Duration = Duration::from_secs(600);
}

/// Recipients sent in one transaction (RFC 5321 §4.5.3.1.8: servers must
/// take 100; more may be refused with 452, which we would then retry).
pub const RECIPIENTS_PER_TRANSACTION_MAX: usize = 100;

/// What to do when STARTTLS is unavailable or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Do not use STARTTLS even if offered.
    Never,
    /// Use it when offered; plaintext if not offered or refused.
    Opportunistic,
    /// Fail the connection unless TLS is established (smarthost with TLS).
    Required,
}

/// Credentials for AUTH (smarthost). Never formatted by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO/LHLO.
    pub helo_name: String,
    /// LMTP (RFC 2033) instead of SMTP.
    pub lmtp: bool,
    pub tls: TlsPolicy,
    /// AUTH after TLS (or in plaintext if the policy allows no TLS).
    pub auth: Option<ClientAuth>,
    /// TLS is already on (implicit TLS, port 465): no STARTTLS.
    pub implicit_tls: bool,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecipient {
    pub address: String,
    /// `ORCPT` as stored (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
    pub notify: Notify,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Reverse path without brackets; empty = `<>`.
    pub sender: String,
    /// At most [`RECIPIENTS_PER_TRANSACTION_MAX`]; the rest are reported
    /// as 452 4.5.3 to be retried.
    pub recipients: Vec<ClientRecipient>,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    pub body: BodyInfo,
}

/// The outcome for recipient `index` of the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    pub index: usize,
    /// 2xx: delivered; 4xx: try later; 5xx: failed.
    pub reply: ServerReply,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// One per recipient, in order.
    pub recipients: Vec<RecipientOutcome>,
    /// The server offered DSN: NOTIFY was passed on, so no "relayed" DSN
    /// is due from us (RFC 3461 §4.2).
    pub dsn_passed_on: bool,
    /// 8-bit content went to a server that did not offer 8BITMIME.
    pub eight_bit_unannounced: bool,
}

/// Why the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Unparseable reply.
    Garbage(ReplyError),
    /// A non-success reply at a stage with no per-recipient meaning
    /// (greeting, EHLO/HELO, STARTTLS under `Required`, AUTH).
    Rejected {
        stage: &'static str,
        reply: ServerReply,
    },
    /// TLS required but not offered or failed.
    TlsUnavailable,
    /// AUTH configured but the server offers neither PLAIN nor LOGIN.
    AuthUnavailable,
    TimedOut {
        stage: &'static str,
    },
    /// A reply arrived when none was expected, or the server closed.
    Unexpected(&'static str),
}

impl ClientError {
    /// The reply recorded for recipients a failure leaves unfinished.
    pub fn as_reply(&self) -> ServerReply {
        match self {
            ClientError::Rejected { reply, .. } if reply.is_transient() => reply.clone(),
            ClientError::Rejected { stage, reply } => {
                // Connection-level 5xx (greeting 554, EHLO refused) says
                // "not this host", not "not this recipient": retry later.
                ServerReply::local(451, (4, 4, 0), &format!("{stage} refused: {}", reply.one_line()))
            }
            ClientError::Garbage(_) => ServerReply::local(451, (4, 5, 0), "unparseable reply from the remote server"),
            ClientError::TlsUnavailable => ServerReply::local(451, (4, 7, 5), "TLS required but not available"),
            ClientError::AuthUnavailable => ServerReply::local(451, (4, 7, 0), "AUTH required but no usable mechanism offered"),
            ClientError::TimedOut { stage } => ServerReply::local(451, (4, 4, 2), &format!("timeout waiting for the reply to {stage}")),
            ClientError::Unexpected(what) => ServerReply::local(451, (4, 5, 0), &format!("protocol error: {what}")),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_reply().one_line())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    StartTls,
    Ready,
    SendContent,
    TransactionDone(TransactionResult),
    Failed(ClientError),
    Closed,
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    /// `SIZE n`; 0 = no limit announced.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
}

impl Extensions {
    fn parse(lines: &[String]) -> Self {
        let mut ext = Extensions::default();
        // The first line is the server's name and greeting text.
        for line in lines.iter().skip(1) {
            let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "AUTH" => {
                    for mech in words {
                        match mech.to_ascii_uppercase().as_str() {
                            "PLAIN" => ext.auth_plain = true,
                            "LOGIN" => ext.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        ext
    }
}

/// What the next reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass,
    AuthDone,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    /// LMTP: the reply for accepted recipient `index`; SMTP: index unused.
    DataEnd(usize),
    Quit,
}

impl Expect {
    fn stage(self) -> &'static str {
        match self {
            Expect::Greeting => "greeting",
            Expect::Ehlo => "EHLO",
            Expect::Helo => "HELO",
            Expect::StartTls => "STARTTLS",
            Expect::AuthPlain | Expect::AuthLoginUser | Expect::AuthLoginPass | Expect::AuthDone => "AUTH",
            Expect::Rset => "RSET",
            Expect::Mail => "MAIL FROM",
            Expect::Rcpt(_) => "RCPT TO",
            Expect::Data => "DATA",
            Expect::DataEnd(_) => "end of data",
            Expect::Quit => "QUIT",
        }
    }
    fn timeout(self) -> Duration {
        match self {
            Expect::Greeting => timeouts::GREETING,
            Expect::Data => timeouts::DATA_INIT,
            Expect::DataEnd(_) => timeouts::DATA_END,
            _ => timeouts::COMMAND,
        }
    }
}

/// The transaction in flight.
#[derive(Debug)]
struct InFlight {
    tx: Transaction,
    /// Recipients sent (the first `sent` of `tx.recipients`).
    sent: usize,
    mail: Option<ServerReply>,
    rcpt: Vec<Option<ServerReply>>,
    /// Indexes of recipients the server accepted, in order.
    accepted: Vec<usize>,
    outcomes: Vec<RecipientOutcome>,
    /// DATA was sent (pipelined or after the last RCPT reply).
    data_sent: bool,
    eight_bit_unannounced: bool,
}

#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    parser: ReplyParser,
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
    /// Replies we wait for, oldest first (several when pipelining).
    expect: VecDeque<Expect>,
    ext: Extensions,
    /// Whether the last EHLO was answered (HELO: no extensions).
    tls_active: bool,
    /// The previous transaction did not end with a final reply to the
    /// dot: RSET before the next one (RFC 5321 §4.1.1.5).
    needs_rset: bool,
    in_flight: Option<InFlight>,
    encoder: DataEncoder,
    /// In content: `content` may be called.
    sending_content: bool,
    /// A transaction waiting for the RSET reply (server without
    /// PIPELINING: one command at a time).
    after_rset: Option<(Transaction, Vec<RecipientOutcome>)>,
    dead: bool,
}

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        let tls_active = config.implicit_tls;
        Self {
            config,
            parser: ReplyParser::default(),
            output: Vec::new(),
            events: VecDeque::new(),
            expect: VecDeque::from([Expect::Greeting]),
            ext: Extensions::default(),
            tls_active,
            needs_rset: false,
            in_flight: None,
            encoder: DataEncoder::default(),
            sending_content: false,
            after_rset: None,
            dead: false,
        }
    }

    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Bytes produced and not yet taken.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// How long to wait for the next reply; `None` when none is awaited.
    pub fn timeout(&self) -> Option<Duration> {
        if self.dead || self.sending_content {
            return None;
        }
        self.expect.front().map(|e| e.timeout())
    }

    /// Takes server bytes; returns how many were consumed.
    pub fn receive(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while !self.dead && pos < input.len() {
            let (n, reply) = match self.parser.parse(&input[pos..]) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(ClientError::Garbage(e));
                    return input.len();
                }
            };
            pos += n;
            let Some(reply) = reply else { break };
            let Some(expect) = self.expect.pop_front() else {
                self.fail(ClientError::Unexpected("reply without a command"));
                return input.len();
            };
            self.on_reply(expect, reply);
            if expect == Expect::StartTls && self.events.back() == Some(&ClientEvent::StartTls) {
                // RFC 3207 §6 / CVE-2011-0411: nothing received before
                // the handshake may be taken as a reply after it.
                return input.len();
            }
        }
        pos
    }

    /// The server closed the connection.
    pub fn eof(&mut self) {
        if self.dead {
            return;
        }
        if self.expect.front() == Some(&Expect::Quit) {
            self.dead = true;
            self.events.push_back(ClientEvent::Closed);
        } else {
            self.fail(ClientError::Unexpected("connection closed by the server"));
        }
    }

    pub fn timed_out(&mut self) {
        let stage = self.expect.front().map_or("idle", |e| e.stage());
        self.fail(ClientError::TimedOut { stage });
    }

    pub fn tls_started(&mut self) {
        self.tls_active = true;
        // RFC 3207 §4.2: forget everything learnt before TLS, EHLO again.
        self.ext = Extensions::default();
        self.parser = ReplyParser::default();
        self.send_hello();
    }

    /// The handshake failed; the connection is dead either way (the TLS
    /// layer's state is unknown). The driver may reconnect without TLS
    /// when its policy is `Opportunistic`.
    pub fn tls_failed(&mut self) {
        self.fail(ClientError::TlsUnavailable);
    }

    /// Starts a transaction; only after `Ready`.
    pub fn send(&mut self, mut tx: Transaction) {
        if self.dead || self.in_flight.is_some() || !self.expect.is_empty() {
            self.fail(ClientError::Unexpected("transaction started while busy"));
            return;
        }
        if tx.recipients.is_empty() {
            let done = TransactionResult { recipients: Vec::new(), dsn_passed_on: self.ext.dsn, eight_bit_unannounced: false };
            self.events.push_back(ClientEvent::TransactionDone(done));
            self.events.push_back(ClientEvent::Ready);
            return;
        }
        let overflow = tx.recipients.len().saturating_sub(RECIPIENTS_PER_TRANSACTION_MAX);
        let mut outcomes = Vec::new();
        if overflow > 0 {
            for index in RECIPIENTS_PER_TRANSACTION_MAX..tx.recipients.len() {
                outcomes.push(RecipientOutcome { index, reply: ServerReply::local(452, (4, 5, 3), "too many recipients for one transaction") });
            }
            tx.recipients.truncate(RECIPIENTS_PER_TRANSACTION_MAX);
        }
        let local_refusal = if tx.body.smtputf8 && !self.ext.smtputf8 {
            Some(ServerReply::local(550, (5, 6, 7), "the message needs SMTPUTF8, which the remote server does not support"))
        } else if self.ext.size.is_some_and(|max| max > 0 && tx.body.size > max) {
            Some(ServerReply::local(552, (5, 3, 4), "message larger than the remote server accepts"))
        } else {
            None
        };
        if let Some(reply) = local_refusal {
            let mut all: Vec<_> = (0..tx.recipients.len()).map(|index| RecipientOutcome { index, reply: reply.clone() }).collect();
            all.extend(outcomes);
            let done = TransactionResult { recipients: all, dsn_passed_on: self.ext.dsn, eight_bit_unannounced: false };
            self.events.push_back(ClientEvent::TransactionDone(done));
            self.events.push_back(ClientEvent::Ready);
            return;
        }
        if self.needs_rset {
            self.command("RSET");
            self.expect.push_back(Expect::Rset);
            self.needs_rset = false;
            if !self.ext.pipelining {
                // One command at a time: MAIL after the RSET reply.
                self.after_rset = Some((tx, outcomes));
                return;
            }
        }
        self.begin(tx, outcomes);
    }

    /// MAIL, and with PIPELINING every RCPT and DATA.
    fn begin(&mut self, tx: Transaction, outcomes: Vec<RecipientOutcome>) {
        let eight_bit_unannounced = tx.body.eight_bit && !self.ext.eight_bit_mime;
        let rcpt = vec![None; tx.recipients.len()];
        let mail = self.mail_command(&tx);
        self.command(&mail);
        self.expect.push_back(Expect::Mail);
        self.in_flight = Some(InFlight { tx, sent: 0, mail: None, rcpt, accepted: Vec::new(), outcomes, data_sent: false, eight_bit_unannounced });
        if self.ext.pipelining {
            // RFC 2920 §3.1: MAIL, every RCPT and DATA in one group.
            while self.send_next_rcpt() {}
            self.send_data();
        }
    }

    /// Message content (LF endings), after `SendContent`.
    pub fn content(&mut self, chunk: &[u8]) {
        if self.sending_content {
            self.encoder.encode(chunk, &mut self.output);
        }
    }

    /// The content is complete: terminate it and wait for the reply.
    pub fn content_end(&mut self) {
        if !self.sending_content {
            return;
        }
        self.sending_content = false;
        self.encoder.finish(&mut self.output);
        let Some(f) = self.in_flight.as_ref() else { return };
        if self.config.lmtp {
            // RFC 2033 §4.2: one reply per accepted recipient.
            for &i in &f.accepted {
                self.expect.push_back(Expect::DataEnd(i));
            }
            if f.accepted.is_empty() {
                // A server that answered 354 without recipients.
                self.expect.push_back(Expect::DataEnd(usize::MAX));
            }
        } else {
            self.expect.push_back(Expect::DataEnd(0));
        }
    }

    pub fn quit(&mut self) {
        if self.dead {
            return;
        }
        self.command("QUIT");
        self.expect.push_back(Expect::Quit);
    }

    fn fail(&mut self, e: ClientError) {
        if !self.dead {
            self.dead = true;
            self.sending_content = false;
            self.expect.clear();
            self.events.push_back(ClientEvent::Failed(e));
        }
    }

    fn command(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn send_hello(&mut self) {
        let verb = if self.config.lmtp { "LHLO" } else { "EHLO" };
        let line = format!("{verb} {}", self.config.helo_name);
        self.command(&line);
        self.expect.push_back(Expect::Ehlo);
    }

    fn on_reply(&mut self, expect: Expect, reply: ServerReply) {
        match expect {
            Expect::Greeting if reply.code == 220 => self.send_hello(),
            Expect::Ehlo if reply.code == 250 => {
                self.ext = Extensions::parse(&reply.lines);
                self.after_hello();
            }
            Expect::Ehlo if reply.is_permanent() && !self.config.lmtp => {
                let line = format!("HELO {}", self.config.helo_name);
                self.command(&line);
                self.expect.push_back(Expect::Helo);
            }
            Expect::Helo if reply.code == 250 => {
                self.ext = Extensions::default();
                self.after_hello();
            }
            Expect::StartTls if reply.code == 220 => self.events.push_back(ClientEvent::StartTls),
            Expect::StartTls if self.config.tls == TlsPolicy::Required => self.fail(ClientError::Rejected { stage: "STARTTLS", reply }),
            Expect::StartTls => {
                // Opportunistic: the server refused; go on in plaintext.
                self.after_tls_decision();
            }
            // RFC 4954 §6 says 235; like Postfix, any 2xx counts (some
            // servers, smtp-sink among them, answer 250).
            Expect::AuthPlain | Expect::AuthDone if (200..300).contains(&reply.code) => self.ready(),
            Expect::AuthLoginUser if reply.code == 334 => {
                let user = self.config.auth.as_ref().map(|a| base64::engine::general_purpose::STANDARD.encode(&a.username)).unwrap_or_default();
                self.command(&user);
                self.expect.push_back(Expect::AuthLoginPass);
            }
            Expect::AuthLoginPass if reply.code == 334 => {
                let pass = self.config.auth.as_ref().map(|a| base64::engine::general_purpose::STANDARD.encode(&a.password)).unwrap_or_default();
                self.command(&pass);
                self.expect.push_back(Expect::AuthDone);
            }
            Expect::Rset if reply.code == 250 => {
                if let Some((tx, outcomes)) = self.after_rset.take() {
                    self.begin(tx, outcomes);
                }
            }
            Expect::Mail => self.on_mail(reply),
            Expect::Rcpt(i) => self.on_rcpt(i, reply),
            Expect::Data => self.on_data(reply),
            Expect::DataEnd(i) => self.on_data_end(i, reply),
            Expect::Quit => {
                self.dead = true;
                self.events.push_back(ClientEvent::Closed);
            }
            _ => self.fail(ClientError::Rejected { stage: expect.stage(), reply }),
        }
    }

    fn after_hello(&mut self) {
        let want_tls = !self.tls_active && self.config.tls != TlsPolicy::Never;
        if want_tls && self.ext.starttls {
            self.command("STARTTLS");
            self.expect.push_back(Expect::StartTls);
        } else if want_tls && self.config.tls == TlsPolicy::Required {
            self.fail(ClientError::TlsUnavailable);
        } else {
            self.after_tls_decision();
        }
    }

    fn after_tls_decision(&mut self) {
        let Some(auth) = self.config.auth.clone() else {
            self.ready();
            return;
        };
        if self.ext.auth_plain {
            // RFC 4616: authzid empty, NUL, authcid, NUL, password.
            let message = format!("\0{}\0{}", auth.username, auth.password);
            let line = format!("AUTH PLAIN {}", base64::engine::general_purpose::STANDARD.encode(message));
            self.command(&line);
            self.expect.push_back(Expect::AuthPlain);
        } else if self.ext.auth_login {
            self.command("AUTH LOGIN");
            self.expect.push_back(Expect::AuthLoginUser);
        } else {
            self.fail(ClientError::AuthUnavailable);
        }
    }

    fn ready(&mut self) {
        self.events.push_back(ClientEvent::Ready);
    }

    fn mail_command(&self, tx: &Transaction) -> String {
        let mut line = format!("MAIL FROM:<{}>", tx.sender);
        if self.ext.size.is_some() {
            let _ = write!(line, " SIZE={}", tx.body.size);
        }
        if tx.body.eight_bit && self.ext.eight_bit_mime {
            line.push_str(" BODY=8BITMIME");
        }
        if tx.body.smtputf8 && self.ext.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        if self.ext.dsn {
            match tx.ret {
                Some(Ret::Full) => line.push_str(" RET=FULL"),
                Some(Ret::Headers) => line.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &tx.envid {
                let _ = write!(line, " ENVID={}", xtext_encode(envid.as_bytes()));
            }
        }
        line
    }

    fn rcpt_command(&self, r: &ClientRecipient) -> String {
        let mut line = format!("RCPT TO:<{}>", r.address);
        if self.ext.dsn {
            let n = r.notify;
            if n.never {
                line.push_str(" NOTIFY=NEVER");
            } else if n.explicit {
                let words: Vec<&str> = [(n.success, "SUCCESS"), (n.failure, "FAILURE"), (n.delay, "DELAY")].iter().filter(|(on, _)| *on).map(|(_, w)| *w).collect();
                if !words.is_empty() {
                    let _ = write!(line, " NOTIFY={}", words.join(","));
                }
            }
            if let Some(orcpt) = &r.orcpt {
                // RFC 3461 §4.2: addr-type ";" xtext.
                if let Some((kind, addr)) = orcpt.split_once(';') {
                    let _ = write!(line, " ORCPT={kind};{}", xtext_encode(addr.as_bytes()));
                }
            }
        }
        line
    }

    /// Sends the next RCPT; false when all are sent.
    fn send_next_rcpt(&mut self) -> bool {
        let Some(f) = self.in_flight.as_ref() else { return false };
        let Some(r) = f.tx.recipients.get(f.sent) else { return false };
        let line = self.rcpt_command(r);
        let i = f.sent;
        self.command(&line);
        self.expect.push_back(Expect::Rcpt(i));
        if let Some(f) = self.in_flight.as_mut() {
            f.sent += 1;
        }
        true
    }

    fn send_data(&mut self) {
        if let Some(f) = self.in_flight.as_mut() {
            f.data_sent = true;
        }
        self.command("DATA");
        self.expect.push_back(Expect::Data);
    }

    fn on_mail(&mut self, reply: ServerReply) {
        let Some(f) = self.in_flight.as_mut() else { return };
        let ok = reply.code == 250;
        f.mail = Some(reply);
        if !ok && !f.data_sent {
            // Not pipelined: nothing else was sent; finish here.
            self.finish_refused();
        } else if ok && !f.data_sent && !self.send_next_rcpt() {
            self.finish_refused();
        }
        // Pipelined: the RCPT and DATA replies follow and are collected.
    }

    fn on_rcpt(&mut self, i: usize, reply: ServerReply) {
        let Some(f) = self.in_flight.as_mut() else { return };
        let mail_ok = f.mail.as_ref().is_some_and(|m| m.code == 250);
        if mail_ok && (reply.code == 250 || reply.code == 251) {
            f.accepted.push(i);
        }
        if let Some(slot) = f.rcpt.get_mut(i) {
            *slot = Some(reply);
        }
        if f.data_sent {
            return;
        }
        if !self.send_next_rcpt() {
            let any = self.in_flight.as_ref().is_some_and(|f| !f.accepted.is_empty());
            if any {
                self.send_data();
            } else {
                self.finish_refused();
            }
        }
    }

    fn on_data(&mut self, reply: ServerReply) {
        let Some(f) = self.in_flight.as_mut() else { return };
        if reply.code == 354 {
            if f.accepted.is_empty() {
                // Pipelined DATA accepted although no RCPT was (a broken
                // server): end the empty message, its reply is ignored.
                self.output.extend_from_slice(b".\r\n");
                self.expect.push_back(Expect::DataEnd(usize::MAX));
                return;
            }
            self.sending_content = true;
            self.encoder = DataEncoder::default();
            self.events.push_back(ClientEvent::SendContent);
        } else if f.accepted.is_empty() {
            self.finish_refused();
        } else {
            // DATA refused with accepted recipients: they all get its reply.
            let accepted = f.accepted.clone();
            for i in accepted {
                self.outcome(i, reply.clone());
            }
            self.needs_rset = true;
            self.finish();
        }
    }

    fn on_data_end(&mut self, i: usize, reply: ServerReply) {
        let Some(f) = self.in_flight.as_ref() else { return };
        if i == usize::MAX {
            // End of the empty message sent to a broken server.
            self.needs_rset = true;
            self.finish_refused();
            return;
        }
        if self.config.lmtp {
            self.outcome(i, reply);
            if self.expect.front().is_some_and(|e| matches!(e, Expect::DataEnd(_))) {
                return;
            }
        } else {
            for j in f.accepted.clone() {
                self.outcome(j, reply.clone());
            }
        }
        self.finish();
    }

    fn outcome(&mut self, index: usize, reply: ServerReply) {
        if let Some(f) = self.in_flight.as_mut() {
            f.outcomes.push(RecipientOutcome { index, reply });
        }
    }

    /// No message was sent: each recipient gets its RCPT reply, or the MAIL
    /// reply if MAIL failed.
    fn finish_refused(&mut self) {
        let Some(f) = self.in_flight.as_mut() else { return };
        let mail_ok = f.mail.as_ref().is_some_and(|m| m.code == 250);
        for (index, rcpt) in f.rcpt.iter().enumerate() {
            if f.outcomes.iter().any(|o| o.index == index) {
                continue;
            }
            let reply = match (mail_ok, rcpt, &f.mail) {
                (true, Some(r), _) if !r.is_positive() => r.clone(),
                (false, _, Some(m)) => m.clone(),
                _ => ServerReply::local(451, (4, 5, 0), "no reply to this recipient"),
            };
            f.outcomes.push(RecipientOutcome { index, reply });
        }
        if !mail_ok {
            // A refused MAIL leaves no transaction, but a pipelined DATA
            // may have been answered oddly: reset to be sure.
            self.needs_rset = f.data_sent;
        }
        self.finish();
    }

    fn finish(&mut self) {
        let Some(mut f) = self.in_flight.take() else { return };
        // Recipients the server accepted but for which no final reply came
        // can only happen through `fail`; here everything is answered.
        for (index, rcpt) in f.rcpt.iter().enumerate() {
            if !f.outcomes.iter().any(|o| o.index == index) {
                let reply = rcpt.clone().filter(|r| !r.is_positive()).unwrap_or_else(|| ServerReply::local(451, (4, 5, 0), "no final reply"));
                f.outcomes.push(RecipientOutcome { index, reply });
            }
        }
        f.outcomes.sort_by_key(|o| o.index);
        let result = TransactionResult { recipients: f.outcomes, dsn_passed_on: self.ext.dsn, eight_bit_unannounced: f.eight_bit_unannounced };
        self.events.push_back(ClientEvent::TransactionDone(result));
        // A transaction ends on the last reply of its group, so nothing
        // else is awaited here.
        self.ready();
    }
}

/// xtext (RFC 3461 §4): `+XX` for `+`, `=`, and bytes outside 33–126.
pub fn xtext_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
