//! The SMTP server session: one state machine per connection.
//!
//! `receive` walks the input in the current [`State`]: command lines,
//! SASL response lines, DATA content or BDAT chunk octets. A command that
//! needs the outside world (recipient check, credentials, storage, TLS)
//! sets the one outstanding [`Action`] and parks the session in an
//! `Await*` state; input processing resumes after the driver's answer.
//! Command handlers live in `session/commands.rs`, content handling in
//! `session/content.rs`.

mod commands;
mod content;

use std::rc::Rc;
use std::time::Duration;

use memchr::memchr;
use varan_core::config::protect::SenderLists;

use super::data::{Body, LineDecoder};
use super::envelope::{Envelope, Recipient};
use super::reply::{self, refusal, write_line, Reply};
use super::OUTPUT_BYTES_MAX;
use super::{Action, AuthVerdict, BodySink, PeerInfo, RcptVerdict, SessionConfig, SinkError, StoreOutcome, TlsInfo};

/// Where the session is in the protocol.
#[derive(Debug)]
enum State {
    /// Waiting for a command line.
    Command,
    /// AUTH in progress: waiting for the client's next SASL response line.
    Sasl(SaslStep),
    /// After 354: message content until `<CRLF>.<CRLF>`.
    Data(LineDecoder),
    /// Inside a BDAT chunk.
    Bdat(Chunk),
    /// `CheckSender` outstanding; the transaction MAIL opens on Accept.
    AwaitSender(Box<Transaction>),
    /// `CheckRecipient` outstanding; the recipient to add on Accept.
    AwaitRecipient(Recipient),
    /// `Authenticate` outstanding.
    AwaitAuth { authcid: String },
    /// `MessageComplete` outstanding.
    AwaitStore,
    /// After "220 Ready to start TLS": input is discarded (RFC 3207 §4.2).
    TlsHandshake,
    /// After 221/421 or a failed handshake.
    Closed,
}

#[derive(Debug)]
enum SaslStep {
    PlainResponse,
    LoginUsername,
    LoginPassword { username: String },
}

/// A BDAT chunk being read (RFC 3030 §2).
#[derive(Debug)]
struct Chunk {
    size: u64,
    remaining: u64,
    last: bool,
    /// The command was refused; its octets are still consumed (RFC 3030
    /// §2/§4.2: the server must read the chunk to stay in sync) and the
    /// reply is sent after them. `bool`: counts as a protocol error.
    refusal: Option<(Reply, bool)>,
}

/// The mail transaction (RFC 5321 §3.3), reset by RSET, EHLO/HELO,
/// STARTTLS and the end of each message.
#[derive(Debug, Default)]
struct Transaction {
    /// MAIL was accepted.
    active: bool,
    envelope: Envelope,
    /// BDAT chunks have started (then DATA and RCPT are out of sequence).
    bdat: Option<LineDecoder>,
    /// Octets announced by the accepted BDAT commands so far.
    bdat_octets: u64,
}

/// One line read from the input.
enum LineRead<'a> {
    NeedMore,
    /// A line without its LF (and without a CR before the LF); `usize`
    /// octets consumed.
    Line(&'a [u8], usize),
    /// The end of an over-long line: answer 500 5.5.6.
    TooLong(usize),
    /// Part of an over-long line whose end is not here yet.
    Discarded(usize),
}

/// An SMTP server session. See the [module docs](super) for the driver loop.
/// `Debug` shows state and envelope; the session never holds a password
/// (it moves straight into `Action::Authenticate`).
#[derive(Debug)]
pub struct Session {
    config: Rc<SessionConfig>,
    peer: PeerInfo,
    tls: Option<TlsInfo>,
    state: State,
    /// Queued reply text (always UTF-8: replies are written as text).
    out: String,
    pending: Option<Action>,
    helo: Option<String>,
    /// The client used EHLO (ESMTP) rather than HELO.
    extended: bool,
    authenticated: Option<String>,
    txn: Transaction,
    body: Body,
    commands: u32,
    errors: u32,
    auth_failures: u32,
    /// Inside an over-long command line, discarding up to its LF.
    discarding_line: bool,
    shutdown: bool,
    /// The client is on `[protection.lists] ip_allow` (set by the driver):
    /// exempt from greylisting and DNS blocklists.
    allow_listed: bool,
    /// Sender allow/deny lists checked at MAIL (set by the driver).
    sender_lists: Option<std::sync::Arc<SenderLists>>,
}

const LF: u8 = b'\n';

impl Session {
    /// A new session; the 220 banner (RFC 5321 §4.3.1) is queued.
    pub fn new(config: Rc<SessionConfig>, peer: PeerInfo, tls: Option<TlsInfo>) -> Session {
        let mut out = String::with_capacity(256);
        // RFC 2034 §3: no enhanced code in the greeting.
        write_line(&mut out, 220, false, None, &format!("{} ESMTP Varan", config.hostname));
        Session {
            config,
            peer,
            tls,
            state: State::Command,
            out,
            pending: None,
            helo: None,
            extended: false,
            authenticated: None,
            txn: Transaction::default(),
            body: Body::default(),
            commands: 0,
            errors: 0,
            auth_failures: 0,
            discarding_line: false,
            shutdown: false,
            allow_listed: false,
            sender_lists: None,
        }
    }

    /// Marks the client as allow-listed (`[protection.lists] ip_allow`).
    pub fn set_allow_listed(&mut self, allow_listed: bool) {
        self.allow_listed = allow_listed;
    }

    /// The client is allow-listed: later checks (greylisting, DNSBL) skip it.
    pub fn allow_listed(&self) -> bool {
        self.allow_listed
    }

    /// Sender lists for MAIL: a denied sender gets 550 5.7.1.
    pub fn set_sender_lists(&mut self, lists: Option<std::sync::Arc<SenderLists>>) {
        self.sender_lists = lists;
    }

    /// Consumes as much of `input` as can be processed now and returns the
    /// number of octets consumed; the driver keeps the rest and calls again
    /// with more appended. Stops early while an action is outstanding, when
    /// the session is closed, when a command line is incomplete, or when
    /// more than [`OUTPUT_BYTES_MAX`] reply octets are queued. After
    /// `Action::StartTls` everything is consumed and discarded.
    pub fn receive(&mut self, input: &[u8], sink: &mut dyn BodySink) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let used = match self.state {
                State::TlsHandshake => rest.len(),
                _ if self.pending.is_some() => break,
                State::Command => {
                    self.check_shutdown();
                    if self.is_closed() || self.out.len() >= OUTPUT_BYTES_MAX {
                        break;
                    }
                    match self.command_input(rest, sink) {
                        Some(n) => n,
                        None => break,
                    }
                }
                State::Sasl(_) => match self.sasl_input(rest) {
                    Some(n) => n,
                    None => break,
                },
                State::Data(_) => self.data_input(rest, sink),
                State::Bdat(_) => self.bdat_input(rest, sink),
                State::AwaitSender(_) | State::AwaitRecipient(_) | State::AwaitAuth { .. } | State::AwaitStore | State::Closed => break,
            };
            if used == 0 {
                // Only a close or a new action can end a step without
                // consuming; anything else would be a bug, never a loop.
                debug_assert!(self.pending.is_some() || self.is_closed(), "no progress in {:?}", self.state);
                break;
            }
            pos += used;
        }
        self.check_shutdown();
        pos
    }

    /// Appends the queued reply octets to `out` and forgets them.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.out.as_bytes());
        self.out.clear();
        // Give back the memory of a pipelining burst; idle sessions are many.
        if self.out.capacity() > 8 << 10 {
            self.out.shrink_to(512);
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next action for the driver; at most one is outstanding.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.pending.take()
    }

    /// Answer to `Action::CheckSender`: `None` accepts MAIL, a reply
    /// (4xx/5xx) refuses it.
    pub fn sender_checked(&mut self, refusal_reply: Option<Reply>) {
        if !self.expecting(|s| matches!(s, State::AwaitSender(_))) {
            return;
        }
        let State::AwaitSender(txn) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        match refusal_reply {
            None => {
                self.txn = *txn;
                self.reply(reply::MAIL_OK);
            }
            Some(r) => self.reply(refusal(r, 400..600)),
        }
        self.check_shutdown();
    }

    /// Answer to `Action::CheckRecipient`.
    pub fn recipient_checked(&mut self, verdict: RcptVerdict) {
        if !self.expecting(|s| matches!(s, State::AwaitRecipient(_))) {
            return;
        }
        let State::AwaitRecipient(recipient) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        match verdict {
            RcptVerdict::Accept => {
                self.txn.envelope.recipients.push(recipient);
                self.reply(reply::RCPT_OK);
            }
            RcptVerdict::Reject(r) => self.reply(refusal(r, 400..600)),
        }
        self.check_shutdown();
    }

    /// Answer to `Action::Authenticate`.
    pub fn auth_checked(&mut self, verdict: AuthVerdict) {
        if !self.expecting(|s| matches!(s, State::AwaitAuth { .. })) {
            return;
        }
        let State::AwaitAuth { authcid } = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        match verdict {
            AuthVerdict::Success => {
                self.authenticated = Some(authcid);
                self.reply(reply::AUTH_OK);
            }
            AuthVerdict::Failure => self.auth_failed(),
            AuthVerdict::TempFailure => self.reply(reply::AUTH_TEMPORARY),
        }
        self.check_shutdown();
    }

    /// Answer to `Action::MessageComplete`. The transaction ends either way.
    pub fn message_stored(&mut self, outcome: StoreOutcome) {
        if !self.expecting(|s| matches!(s, State::AwaitStore)) {
            return;
        }
        self.state = State::Command;
        self.txn = Transaction::default();
        let r = match outcome {
            StoreOutcome::Accepted { queue_id } => Reply::new(250, (2, 0, 0), format!("Ok: queued as {queue_id}")),
            StoreOutcome::TempFail(r) => refusal(r, 400..500),
            StoreOutcome::PermFail(r) => refusal(r, 500..600),
        };
        self.reply(r);
        self.check_shutdown();
    }

    /// The handshake after `Action::StartTls` succeeded. RFC 3207 §4.2: the
    /// session starts afresh; EHLO, AUTH and any transaction are forgotten.
    pub fn tls_started(&mut self, info: TlsInfo) {
        if !self.expecting(|s| matches!(s, State::TlsHandshake)) {
            return;
        }
        self.tls = Some(info);
        self.state = State::Command;
        self.helo = None;
        self.extended = false;
        self.authenticated = None;
        self.txn = Transaction::default();
        self.discarding_line = false;
        self.check_shutdown();
    }

    /// The handshake failed: nothing more can be said in clear; the driver
    /// closes the connection.
    pub fn tls_failed(&mut self) {
        self.state = State::Closed;
        self.pending = Some(Action::Close);
    }

    /// How long the driver should wait for the next read in this state.
    pub fn timeout(&self) -> Duration {
        match self.state {
            State::Data(_) | State::Bdat(_) => self.config.data_timeout,
            _ => self.config.command_timeout,
        }
    }

    /// The read timed out: `421 4.4.2 <host> Timeout` and close.
    pub fn timed_out(&mut self) {
        if !self.is_closed() {
            self.close_with((4, 4, 2), "Timeout");
        }
    }

    /// The server is stopping: at the next command boundary (now, if the
    /// session is waiting for a command) reply 421 4.3.2 and close.
    pub fn shutting_down(&mut self) {
        self.shutdown = true;
        self.check_shutdown();
    }

    /// True after QUIT, a 421, or a failed TLS handshake: flush the output,
    /// then close the socket.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The current transaction (kept until `message_stored` returns).
    pub fn envelope(&self) -> &Envelope {
        &self.txn.envelope
    }

    /// MAIL was accepted and the transaction is not over.
    pub fn in_transaction(&self) -> bool {
        self.txn.active
    }

    /// The SASL authentication identity after a successful AUTH.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// The name given with HELO/EHLO.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The client used EHLO (not HELO): the session is ESMTP.
    pub fn is_esmtp(&self) -> bool {
        self.extended
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Sizes of the current or last message content: (octets written to the
    /// sink with LF endings, the same with CRLF endings). Maildir `S=`/`W=`.
    pub fn message_sizes(&self) -> (u64, u64) {
        (self.body.lf_bytes, self.body.crlf_bytes())
    }

    /// The current or last message content had octets ≥ 0x80 (worth noting
    /// when the envelope says BODY=7BIT; accepted anyway).
    pub fn message_8bit(&self) -> bool {
        self.body.eight_bit
    }

    /// The current or last message content had a bare CR or LF.
    pub fn message_bare_newlines(&self) -> bool {
        self.body.bare_newline
    }

    /// The sink error behind a 451 4.3.0, for the driver's log.
    pub fn sink_error(&self) -> Option<&SinkError> {
        self.body.sink_error.as_ref()
    }

    /// Errors counted so far (towards `errors_max`).
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    /// Guards a completion method: true if the session is in the state the
    /// answer belongs to. A late answer after a close is ignored; any other
    /// mismatch is a driver bug.
    fn expecting(&mut self, ok: impl Fn(&State) -> bool) -> bool {
        if self.is_closed() {
            return false;
        }
        let matches = ok(&self.state);
        debug_assert!(matches, "completion does not match the outstanding action in {:?}", self.state);
        if matches {
            self.pending = None;
        }
        matches
    }

    fn command_input(&mut self, rest: &[u8], sink: &mut dyn BodySink) -> Option<usize> {
        match self.read_line(rest) {
            LineRead::NeedMore => None,
            LineRead::Discarded(n) => Some(n),
            LineRead::TooLong(n) => {
                if self.count_command() {
                    self.error(reply::LINE_TOO_LONG);
                }
                Some(n)
            }
            LineRead::Line(line, n) => {
                if self.count_command() {
                    self.command(line, sink);
                }
                Some(n)
            }
        }
    }

    /// Finds the next line within `command_line_max` octets including its
    /// terminator (RFC 5321 §4.5.3.1.4). LF ends a line; a CR before it is
    /// dropped. An over-long line is discarded up to its LF so the session
    /// stays in step with the client, and answered once.
    fn read_line<'a>(&mut self, rest: &'a [u8]) -> LineRead<'a> {
        let max = self.config.command_line_max;
        if self.discarding_line {
            return match memchr(LF, rest) {
                Some(p) => {
                    self.discarding_line = false;
                    LineRead::TooLong(p + 1)
                }
                None => LineRead::Discarded(rest.len()),
            };
        }
        let window = &rest[..rest.len().min(max)];
        if let Some(p) = memchr(LF, window) {
            let line = &rest[..p];
            return LineRead::Line(line.strip_suffix(b"\r").unwrap_or(line), p + 1);
        }
        if rest.len() < max {
            return LineRead::NeedMore;
        }
        match memchr(LF, &rest[max..]) {
            Some(q) => LineRead::TooLong(max + q + 1),
            None => {
                self.discarding_line = true;
                LineRead::Discarded(rest.len())
            }
        }
    }

    /// Counts a command; past `commands_max` the session closes with 421.
    fn count_command(&mut self) -> bool {
        self.commands = self.commands.saturating_add(1);
        if self.commands > self.config.commands_max {
            self.close_with((4, 7, 0), "Too many commands");
            return false;
        }
        true
    }

    /// Counts a protocol error; past `errors_max` the session closes with
    /// 421 instead of the error reply. True if the session goes on.
    fn count_error(&mut self) -> bool {
        self.errors = self.errors.saturating_add(1);
        if self.errors > self.config.errors_max {
            self.close_with((4, 7, 0), "Too many errors");
            return false;
        }
        true
    }

    fn reply(&mut self, r: Reply) {
        r.write_to(&mut self.out);
    }

    /// A reply to a syntax or sequence error.
    fn error(&mut self, r: Reply) {
        if self.count_error() {
            self.reply(r);
        }
    }

    /// A failed authentication; the `auth_failures_max`-th closes with 421.
    fn auth_failed(&mut self) {
        self.auth_failures = self.auth_failures.saturating_add(1);
        if self.auth_failures >= self.config.auth_failures_max {
            self.close_with((4, 7, 0), "Too many authentication failures");
        } else {
            self.reply(reply::AUTH_FAILED);
        }
    }

    /// `421 <enhanced> <host> <text>` (RFC 5321 §3.8) and close.
    fn close_with(&mut self, enhanced: (u8, u16, u16), text: &str) {
        let text = format!("{} {text}", self.config.hostname);
        write_line(&mut self.out, 421, false, Some(enhanced), &text);
        self.state = State::Closed;
        self.pending = Some(Action::Close);
    }

    fn check_shutdown(&mut self) {
        if self.shutdown && matches!(self.state, State::Command) && self.pending.is_none() {
            self.close_with((4, 3, 2), "Service shutting down");
        }
    }
}
