//! The POP3 server session: one state machine per connection.
//!
//! `receive` reads command lines (or, during AUTH, SASL response lines),
//! answers what it can itself and parks in an `Await*` state while an
//! [`Action`] is outstanding.

use std::rc::Rc;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use memchr::memchr;

use super::{uidl, Action, AuthVerdict, MaildropFailure, Pop3Message, SessionConfig};
use super::{COMMAND_LINE_BYTES_MAX, CREDENTIAL_BYTES_MAX, OUTPUT_BYTES_MAX, SASL_LINE_BYTES_MAX, TIMEOUT_MIN};

/// Base64 as clients send it: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// RFC 1939 §4: before a successful login.
    Authorization,
    /// `AUTH PLAIN` without initial response: waiting for the line after `+ `.
    SaslPlain,
    AwaitAuth,
    AwaitMaildrop,
    /// RFC 1939 §5.
    Transaction,
    AwaitMessage {
        top: Option<u32>,
        size: u64,
    },
    AwaitCommit,
    /// After `+OK Begin TLS negotiation`: input is discarded.
    TlsHandshake,
    Closed,
}

/// A POP3 server session. See the [module docs](super) for the driver loop.
#[derive(Debug)]
pub struct Session {
    config: Rc<SessionConfig>,
    tls: bool,
    state: State,
    out: Vec<u8>,
    pending: Option<Action>,
    /// The name given with USER.
    user: Option<String>,
    /// The maildrop owner after a successful authentication.
    authenticated: Option<String>,
    messages: Vec<Pop3Message>,
    deleted: Vec<bool>,
    uidvalidity: u32,
    errors: u32,
    auth_failures: u32,
    /// Inside an over-long line, discarding up to its LF.
    discarding_line: bool,
    shutdown: bool,
}

/// One line read from the input.
enum LineRead<'a> {
    NeedMore,
    /// Without LF and a CR before it; octets consumed.
    Line(&'a [u8], usize),
    /// The end of an over-long line.
    TooLong(usize),
    /// Part of an over-long line.
    Discarded(usize),
}

impl Session {
    /// A new session; `tls`: the connection is already TLS (port 995,
    /// RFC 8314). The greeting is queued.
    pub fn new(config: Rc<SessionConfig>, tls: bool) -> Session {
        let mut s = Session {
            config,
            tls,
            state: State::Authorization,
            out: Vec::with_capacity(256),
            pending: None,
            user: None,
            authenticated: None,
            messages: Vec::new(),
            deleted: Vec::new(),
            uidvalidity: 0,
            errors: 0,
            auth_failures: 0,
            discarding_line: false,
            shutdown: false,
        };
        let greeting = format!("{} Varan POP3 ready", s.config.hostname);
        s.ok(&greeting);
        s
    }

    /// Consumes what can be processed now; returns the octets consumed.
    /// Stops while an action is outstanding, after close, on an incomplete
    /// line, or with more than [`OUTPUT_BYTES_MAX`] octets queued. After
    /// `Action::StartTls` everything is consumed and discarded.
    pub fn receive(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let used = match self.state {
                State::TlsHandshake => rest.len(),
                _ if self.pending.is_some() => break,
                State::Authorization | State::Transaction | State::SaslPlain => {
                    self.check_shutdown();
                    if self.is_closed() || self.out.len() >= OUTPUT_BYTES_MAX {
                        break;
                    }
                    let max = if self.state == State::SaslPlain { SASL_LINE_BYTES_MAX } else { COMMAND_LINE_BYTES_MAX };
                    match self.read_line(rest, max) {
                        LineRead::NeedMore => break,
                        LineRead::Discarded(n) => n,
                        LineRead::TooLong(n) => {
                            if self.state == State::SaslPlain {
                                self.state = State::Authorization;
                            }
                            self.error("Line too long");
                            n
                        }
                        LineRead::Line(line, n) => {
                            if self.state == State::SaslPlain {
                                self.sasl_response(line);
                            } else {
                                self.command(line);
                            }
                            n
                        }
                    }
                }
                State::AwaitAuth | State::AwaitMaildrop | State::AwaitMessage { .. } | State::AwaitCommit | State::Closed => break,
            };
            if used == 0 {
                break;
            }
            pos += used;
        }
        self.check_shutdown();
        pos
    }

    /// Appends the queued output to `out` and forgets it.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.out);
        self.out.clear();
        if self.out.capacity() > 64 << 10 {
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

    /// Answer to `Action::Authenticate`.
    pub fn auth_checked(&mut self, verdict: AuthVerdict) {
        if !self.expecting(State::AwaitAuth) {
            return;
        }
        match verdict {
            AuthVerdict::Success => {
                self.state = State::AwaitMaildrop;
                let user = self.authenticated.clone().unwrap_or_default();
                self.pending = Some(Action::OpenMaildrop { user });
            }
            AuthVerdict::Failure => {
                self.state = State::Authorization;
                self.authenticated = None;
                self.user = None;
                self.auth_failures = self.auth_failures.saturating_add(1);
                if self.auth_failures >= self.config.auth_failures_max {
                    self.close_with("-ERR [AUTH] Too many authentication failures");
                } else {
                    self.err("[AUTH] Authentication failed");
                }
            }
            AuthVerdict::TempFailure => {
                self.state = State::Authorization;
                self.authenticated = None;
                self.user = None;
                self.err("[SYS/TEMP] Temporary authentication failure");
            }
        }
        self.check_shutdown();
    }

    /// Answer to `Action::OpenMaildrop`: the messages in maildrop order
    /// (message n is `messages[n - 1]`).
    pub fn maildrop_opened(&mut self, messages: Vec<Pop3Message>, uidvalidity: u32) {
        if !self.expecting(State::AwaitMaildrop) {
            return;
        }
        let total: u64 = messages.iter().map(|m| m.size).sum();
        self.deleted = vec![false; messages.len()];
        let text = format!("Maildrop has {} messages ({total} octets)", messages.len());
        self.messages = messages;
        self.uidvalidity = uidvalidity;
        self.state = State::Transaction;
        self.ok(&text);
        self.check_shutdown();
    }

    /// Answer to `Action::OpenMaildrop`: the session stays in the
    /// AUTHORIZATION state (RFC 1939 §4), the login is forgotten.
    pub fn maildrop_failed(&mut self, failure: MaildropFailure) {
        if !self.expecting(State::AwaitMaildrop) {
            return;
        }
        self.state = State::Authorization;
        self.authenticated = None;
        self.user = None;
        self.err(match failure {
            MaildropFailure::InUse => "[IN-USE] Maildrop is locked by another session",
            MaildropFailure::Temporary => "[SYS/TEMP] Maildrop is not available, try again later",
            MaildropFailure::Permanent => "[SYS/PERM] Maildrop cannot be opened",
        });
        self.check_shutdown();
    }

    /// Answer to `Action::Retrieve`: the whole message, CRLF line endings.
    /// RETR sends it all, TOP the header and the requested body lines;
    /// either way dot-stuffed and terminated (RFC 1939 §3).
    pub fn message(&mut self, bytes: &[u8]) {
        let State::AwaitMessage { top, size } = self.state else {
            return self.mismatch();
        };
        self.pending = None;
        self.state = State::Transaction;
        match top {
            None => self.ok(&format!("{size} octets")),
            Some(_) => self.ok("Top of message follows"),
        }
        write_dot_stuffed(&mut self.out, bytes, top);
        self.check_shutdown();
    }

    /// Answer to `Action::Retrieve`: the message could not be read.
    pub fn message_failed(&mut self) {
        if !matches!(self.state, State::AwaitMessage { .. }) {
            return self.mismatch();
        }
        self.pending = None;
        self.state = State::Transaction;
        self.err("[SYS/TEMP] Message cannot be read now");
        self.check_shutdown();
    }

    /// Answer to `Action::Commit`; the session closes either way.
    pub fn committed(&mut self, ok: bool) {
        if !self.expecting(State::AwaitCommit) {
            return;
        }
        if ok {
            self.close_with("+OK Logging out");
        } else {
            self.close_with("-ERR [SYS/TEMP] Some deleted messages were not removed");
        }
    }

    /// The handshake after `Action::StartTls` succeeded: back to a fresh
    /// AUTHORIZATION state (RFC 2595 §4).
    pub fn tls_started(&mut self) {
        if !self.expecting(State::TlsHandshake) {
            return;
        }
        self.tls = true;
        self.state = State::Authorization;
        self.user = None;
        self.discarding_line = false;
        self.check_shutdown();
    }

    /// The handshake failed: close without a word.
    pub fn tls_failed(&mut self) {
        self.state = State::Closed;
        self.pending = Some(Action::Close);
    }

    /// The autologout timer (RFC 1939 §3: at least ten minutes).
    pub fn timeout(&self) -> Duration {
        self.config.command_timeout.max(TIMEOUT_MIN)
    }

    /// The timer expired: close without entering UPDATE (RFC 1939 §3).
    pub fn timed_out(&mut self) {
        if !self.is_closed() {
            self.close_with("-ERR Disconnected for inactivity");
        }
    }

    /// The server is stopping: at the next command boundary, close
    /// without committing deletions.
    pub fn shutting_down(&mut self) {
        self.shutdown = true;
        self.check_shutdown();
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The maildrop owner once logged in.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref().filter(|_| matches!(self.state, State::Transaction | State::AwaitMessage { .. } | State::AwaitCommit))
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn error_count(&self) -> u32 {
        self.errors
    }

    // ---- internals ----

    fn expecting(&mut self, state: State) -> bool {
        if self.state != state {
            self.mismatch();
            return false;
        }
        self.pending = None;
        true
    }

    /// A completion that does not match the state: ignored after a close,
    /// a driver bug otherwise (never a panic in release builds).
    fn mismatch(&self) {
        debug_assert!(self.is_closed(), "completion does not match the outstanding action in {:?}", self.state);
    }

    fn ok(&mut self, text: &str) {
        self.line("+OK", text);
    }

    fn err(&mut self, text: &str) {
        self.line("-ERR", text);
    }

    /// `status text\r\n`; control characters in `text` become spaces.
    fn line(&mut self, status: &str, text: &str) {
        self.out.extend_from_slice(status.as_bytes());
        if !text.is_empty() {
            self.out.push(b' ');
            self.out.extend(text.bytes().map(|b| if b < 0x20 || b == 0x7f { b' ' } else { b }));
        }
        self.out.extend_from_slice(b"\r\n");
    }

    /// A protocol error; past `errors_max` the session closes instead.
    fn error(&mut self, text: &str) {
        self.errors = self.errors.saturating_add(1);
        if self.errors > self.config.errors_max {
            self.close_with("-ERR Too many errors");
        } else {
            self.err(text);
        }
    }

    /// Writes the final line (a whole `+OK ...`/`-ERR ...`) and closes.
    fn close_with(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.state = State::Closed;
        self.pending = Some(Action::Close);
    }

    fn check_shutdown(&mut self) {
        if self.shutdown && matches!(self.state, State::Authorization | State::Transaction) && self.pending.is_none() {
            self.close_with("-ERR [SYS/TEMP] Server shutting down");
        }
    }

    /// The next line within `max` octets including its LF; an over-long
    /// line is discarded up to its LF and answered once.
    fn read_line<'a>(&mut self, rest: &'a [u8], max: usize) -> LineRead<'a> {
        if self.discarding_line {
            return match memchr(b'\n', rest) {
                Some(p) => {
                    self.discarding_line = false;
                    LineRead::TooLong(p + 1)
                }
                None => LineRead::Discarded(rest.len()),
            };
        }
        let window = &rest[..rest.len().min(max)];
        if let Some(p) = memchr(b'\n', window) {
            let line = &rest[..p];
            return LineRead::Line(line.strip_suffix(b"\r").unwrap_or(line), p + 1);
        }
        if rest.len() < max {
            return LineRead::NeedMore;
        }
        match memchr(b'\n', &rest[max..]) {
            Some(q) => LineRead::TooLong(max + q + 1),
            None => {
                self.discarding_line = true;
                LineRead::Discarded(rest.len())
            }
        }
    }

    /// Cleartext login is allowed here.
    fn login_allowed(&self) -> bool {
        self.tls || self.config.auth_without_tls
    }

    fn command(&mut self, line: &[u8]) {
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return self.error("Invalid characters in command");
        }
        let (verb, args) = match memchr(b' ', line) {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, &b""[..]),
        };
        let verb = String::from_utf8_lossy(verb).to_ascii_uppercase();
        let transaction = self.state == State::Transaction;
        match (verb.as_str(), transaction) {
            ("CAPA", _) => self.capa(),
            ("QUIT", false) => self.close_with("+OK Logging out"),
            ("QUIT", true) => {
                self.state = State::AwaitCommit;
                let deleted_uids = self.messages.iter().zip(&self.deleted).filter(|(_, d)| **d).map(|(m, _)| m.uid).collect();
                self.pending = Some(Action::Commit { deleted_uids });
            }
            ("USER", false) => self.user_cmd(args),
            ("PASS", false) => self.pass(args),
            ("AUTH", false) => self.auth(args),
            ("STLS", false) => self.stls(),
            ("STLS", true) => self.error("Command not valid in this state"),
            ("NOOP", true) => self.ok(""),
            ("STAT", true) => {
                let (n, size) = self.live().fold((0u64, 0u64), |(n, s), (_, m)| (n + 1, s + m.size));
                self.ok(&format!("{n} {size}"));
            }
            ("LIST", true) | ("UIDL", true) => self.listing(args, verb == "UIDL"),
            ("RETR", true) => {
                if let Some(i) = self.one_message(args) {
                    self.retrieve(i, None);
                }
            }
            ("TOP", true) => self.top(args),
            ("DELE", true) => {
                if let Some(i) = self.one_message(args) {
                    self.deleted[i] = true;
                    self.ok("Marked to be deleted");
                }
            }
            ("RSET", true) => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                let text = format!("Maildrop has {} messages", self.messages.len());
                self.ok(&text);
            }
            ("USER" | "PASS" | "AUTH", true) | ("NOOP" | "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET", false) => self.error("Command not valid in this state"),
            _ => self.error("Unknown command"),
        }
    }

    /// RFC 2449 §5. USER, SASL and STLS only where they can be used.
    fn capa(&mut self) {
        self.ok("Capability list follows");
        let mut caps: Vec<&str> = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if self.state == State::Authorization {
            if self.login_allowed() {
                caps.push("USER");
                caps.push("SASL PLAIN");
            }
            if self.config.tls_available && !self.tls {
                caps.push("STLS");
            }
        }
        caps.push("IMPLEMENTATION Varan");
        for c in caps {
            self.out.extend_from_slice(c.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
    }

    fn user_cmd(&mut self, args: &[u8]) {
        if !self.login_allowed() {
            return self.err("[AUTH] Plaintext authentication disallowed on non-secure connections");
        }
        let name = trim(args);
        match std::str::from_utf8(name) {
            Ok(n) if !n.is_empty() && n.len() <= CREDENTIAL_BYTES_MAX && !n.contains(' ') => {
                self.user = Some(n.to_owned());
                self.ok("");
            }
            _ => self.error("Syntax: USER name"),
        }
    }

    /// RFC 1939 §7: the whole rest of the line is the password (it may
    /// contain spaces).
    fn pass(&mut self, args: &[u8]) {
        if !self.login_allowed() {
            return self.err("[AUTH] Plaintext authentication disallowed on non-secure connections");
        }
        let Some(user) = self.user.take() else {
            return self.error("USER first");
        };
        match std::str::from_utf8(args) {
            Ok(p) if !p.is_empty() && p.len() <= CREDENTIAL_BYTES_MAX => self.authenticate(String::new(), user, p.to_owned()),
            _ => self.error("Syntax: PASS password"),
        }
    }

    fn authenticate(&mut self, authzid: String, authcid: String, password: String) {
        self.authenticated = Some(if authzid.is_empty() { authcid.clone() } else { authzid.clone() });
        self.state = State::AwaitAuth;
        self.pending = Some(Action::Authenticate { authzid, authcid, password });
    }

    /// `AUTH` (list mechanisms, a common extension), `AUTH PLAIN [ir]`
    /// (RFC 5034).
    fn auth(&mut self, args: &[u8]) {
        let args = trim(args);
        if args.is_empty() {
            self.ok("");
            if self.login_allowed() {
                self.out.extend_from_slice(b"PLAIN\r\n");
            }
            self.out.extend_from_slice(b".\r\n");
            return;
        }
        if !self.login_allowed() {
            return self.err("[AUTH] Plaintext authentication disallowed on non-secure connections");
        }
        let (mech, ir) = match memchr(b' ', args) {
            Some(p) => (&args[..p], Some(trim(&args[p + 1..]))),
            None => (args, None),
        };
        if !mech.eq_ignore_ascii_case(b"PLAIN") {
            return self.error("Unsupported authentication mechanism");
        }
        self.user = None;
        match ir {
            None => {
                self.state = State::SaslPlain;
                self.out.extend_from_slice(b"+ \r\n");
            }
            Some(ir) => self.sasl_response(ir),
        }
    }

    /// The client's PLAIN response (initial or after `+ `).
    fn sasl_response(&mut self, line: &[u8]) {
        self.state = State::Authorization;
        if line == b"*" {
            return self.error("Authentication cancelled");
        }
        let raw = if line == b"=" { Ok(Vec::new()) } else { BASE64.decode(line) };
        let Ok(raw) = raw else {
            return self.error("Invalid base64");
        };
        match decode_plain(&raw) {
            Some((authzid, authcid, password)) => self.authenticate(authzid, authcid, password),
            None => {
                // Malformed credentials count as a failed attempt.
                self.state = State::AwaitAuth;
                self.auth_checked(AuthVerdict::Failure);
            }
        }
    }

    fn stls(&mut self) {
        if self.tls {
            return self.error("Command not permitted when TLS active");
        }
        if !self.config.tls_available {
            return self.error("STLS not available");
        }
        self.ok("Begin TLS negotiation");
        self.state = State::TlsHandshake;
        self.pending = Some(Action::StartTls);
    }

    /// Messages not marked deleted, with their 0-based indexes.
    fn live(&self) -> impl Iterator<Item = (usize, &Pop3Message)> {
        self.messages.iter().enumerate().filter(|(i, _)| !self.deleted.get(*i).copied().unwrap_or(true))
    }

    /// A message number argument: the 0-based index of a live message, or
    /// the error is answered.
    fn message_number(&mut self, arg: &[u8]) -> Option<usize> {
        let n = parse_number(arg);
        let Some(n) = n else {
            self.error("Invalid message number");
            return None;
        };
        let i = (n as usize).checked_sub(1).filter(|&i| i < self.messages.len());
        match i {
            None => {
                self.err("No such message");
                None
            }
            Some(i) if self.deleted[i] => {
                self.err("Message is deleted");
                None
            }
            Some(i) => Some(i),
        }
    }

    /// Exactly one message-number argument.
    fn one_message(&mut self, args: &[u8]) -> Option<usize> {
        let args = trim(args);
        if args.is_empty() || memchr(b' ', args).is_some() {
            self.error("Syntax: a message number is needed");
            return None;
        }
        self.message_number(args)
    }

    /// LIST / UIDL, with or without a message number.
    fn listing(&mut self, args: &[u8], uidl_form: bool) {
        let args = trim(args);
        let value = |s: &Session, m: &Pop3Message| if uidl_form { uidl(m.uid, s.uidvalidity) } else { m.size.to_string() };
        if !args.is_empty() {
            if let Some(i) = self.one_message(args) {
                let text = format!("{} {}", i + 1, value(self, &self.messages[i]));
                self.ok(&text);
            }
            return;
        }
        let mut body = Vec::new();
        let (mut n, mut total) = (0u64, 0u64);
        for (i, m) in self.live() {
            n += 1;
            total += m.size;
            body.extend_from_slice(format!("{} {}\r\n", i + 1, value(self, m)).as_bytes());
        }
        if uidl_form {
            self.ok("");
        } else {
            self.ok(&format!("{n} messages ({total} octets)"));
        }
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(b".\r\n");
    }

    /// `TOP msg n` (RFC 1939 §7).
    fn top(&mut self, args: &[u8]) {
        let args = trim(args);
        let mut parts = args.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let (Some(msg), Some(lines), None) = (parts.next(), parts.next(), parts.next()) else {
            return self.error("Syntax: TOP message lines");
        };
        let Some(lines) = parse_number(lines) else {
            return self.error("Invalid line count");
        };
        if let Some(i) = self.message_number(msg) {
            self.retrieve(i, Some(lines));
        }
    }

    fn retrieve(&mut self, i: usize, top_lines: Option<u32>) {
        let m = self.messages[i];
        self.state = State::AwaitMessage { top: top_lines, size: m.size };
        self.pending = Some(Action::Retrieve { index: i as u32 + 1, uid: m.uid, top_lines });
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

/// A decimal number without sign, at most `u32::MAX`.
fn parse_number(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616 §2), each UTF-8 without
/// NUL, at most [`CREDENTIAL_BYTES_MAX`]; authcid and password non-empty.
fn decode_plain(raw: &[u8]) -> Option<(String, String, String)> {
    let mut parts = raw.split(|&b| b == 0);
    let (Some(z), Some(c), Some(p), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let field = |f: &[u8]| (f.len() <= CREDENTIAL_BYTES_MAX).then(|| String::from_utf8(f.to_vec()).ok()).flatten();
    let (z, c, p) = (field(z)?, field(c)?, field(p)?);
    (!c.is_empty() && !p.is_empty()).then_some((z, c, p))
}

/// Writes a message dot-stuffed (RFC 1939 §3) with the terminating `.`:
/// every line ends in CRLF (a bare LF, or a missing final line end, is
/// completed), a line starting with `.` gets another. `top`: only the
/// header, the empty line after it, and that many body lines.
pub(crate) fn write_dot_stuffed(out: &mut Vec<u8>, message: &[u8], top: Option<u32>) {
    let mut body_lines: Option<u32> = None;
    let mut rest = message;
    while !rest.is_empty() {
        if let (Some(limit), Some(done)) = (top, body_lines) {
            if done >= limit {
                break;
            }
        }
        let (line, next) = match memchr(b'\n', rest) {
            Some(p) => (&rest[..p], &rest[p + 1..]),
            None => (rest, &b""[..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        match &mut body_lines {
            Some(n) => *n += 1,
            None if line.is_empty() => body_lines = Some(0),
            None => {}
        }
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Rc<SessionConfig> {
        Rc::new(SessionConfig {
            hostname: "pop.example".into(),
            tls_available: true,
            auth_without_tls: false,
            errors_max: 5,
            auth_failures_max: 2,
            command_timeout: Duration::from_secs(600),
        })
    }

    const MESSAGES: [&[u8]; 3] = [b"Subject: one\r\n\r\nHello\r\n.dot line\r\n", b"Subject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n", b"Subject: three\r\n\r\nbody"];

    /// A driver that accepts alice/secret, serves `MESSAGES`, records
    /// actions. Feeds `input` in chunks of `chunk` octets.
    fn drive(session: &mut Session, input: &[u8], chunk: usize, log: &mut Vec<String>) -> String {
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        for _ in 0..100_000 {
            if fed < input.len() {
                let n = chunk.min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            let n = session.receive(&buf);
            buf.drain(..n);
            session.take_output(&mut out);
            let mut acted = false;
            while let Some(action) = session.poll_action() {
                acted = true;
                log.push(format!("{action:?}"));
                match action {
                    Action::Authenticate { authcid, password, .. } => {
                        session.auth_checked(if authcid == "alice" && password == "secret" { AuthVerdict::Success } else { AuthVerdict::Failure })
                    }
                    Action::OpenMaildrop { .. } => {
                        let msgs = MESSAGES.iter().enumerate().map(|(i, m)| Pop3Message { uid: i as u32 + 10, size: m.len() as u64 }).collect();
                        session.maildrop_opened(msgs, 0x5f00_0000);
                    }
                    Action::Retrieve { index, .. } => session.message(MESSAGES[index as usize - 1]),
                    Action::Commit { .. } => session.committed(true),
                    Action::StartTls => {
                        let _ = session.receive(&buf);
                        buf.clear();
                        session.tls_started();
                    }
                    Action::Close => {}
                }
            }
            if session.is_closed() || (fed == input.len() && n == 0 && !acted && !session.has_output()) {
                break;
            }
        }
        session.take_output(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Runs a transcript whole and byte by byte; both must agree.
    fn transcript(tls: bool, input: &str) -> (String, Vec<String>) {
        let mut log = Vec::new();
        let whole = drive(&mut Session::new(config(), tls), input.as_bytes(), input.len().max(1), &mut log);
        let mut log1 = Vec::new();
        let bytewise = drive(&mut Session::new(config(), tls), input.as_bytes(), 1, &mut log1);
        assert_eq!(whole, bytewise);
        assert_eq!(log, log1);
        (whole, log)
    }

    #[test]
    fn full_session() {
        let (out, log) = transcript(
            true,
            "CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nRETR 1\r\nTOP 2 1\r\nTOP 3 0\r\nDELE 1\r\nDELE 1\r\nLIST\r\nRETR 1\r\nRSET\r\nDELE 2\r\nNOOP\r\nQUIT\r\n",
        );
        let expected = "+OK pop.example Varan POP3 ready\r\n\
            +OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\nSASL PLAIN\r\nIMPLEMENTATION Varan\r\n.\r\n\
            +OK\r\n\
            +OK Maildrop has 3 messages (90 octets)\r\n\
            +OK 3 90\r\n\
            +OK 3 messages (90 octets)\r\n1 34\r\n2 34\r\n3 22\r\n.\r\n\
            +OK 2 34\r\n\
            +OK\r\n1 0000000a5f000000\r\n2 0000000b5f000000\r\n3 0000000c5f000000\r\n.\r\n\
            +OK 3 0000000c5f000000\r\n\
            +OK 34 octets\r\nSubject: one\r\n\r\nHello\r\n..dot line\r\n.\r\n\
            +OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\nl1\r\n.\r\n\
            +OK Top of message follows\r\nSubject: three\r\n\r\n.\r\n\
            +OK Marked to be deleted\r\n\
            -ERR Message is deleted\r\n\
            +OK 2 messages (56 octets)\r\n2 34\r\n3 22\r\n.\r\n\
            -ERR Message is deleted\r\n\
            +OK Maildrop has 3 messages\r\n\
            +OK Marked to be deleted\r\n\
            +OK\r\n\
            +OK Logging out\r\n";
        assert_eq!(out, expected);
        assert_eq!(
            log,
            vec![
                "Authenticate { authzid: \"\", authcid: \"alice\", password: \"<redacted>\" }",
                "OpenMaildrop { user: \"alice\" }",
                "Retrieve { index: 1, uid: 10, top_lines: None }",
                "Retrieve { index: 2, uid: 11, top_lines: Some(1) }",
                "Retrieve { index: 3, uid: 12, top_lines: Some(0) }",
                "Commit { deleted_uids: [11] }",
                "Close",
            ]
        );
    }

    #[test]
    fn auth_plain() {
        // base64("\0alice\0secret") and a continuation.
        let (out, log) = transcript(true, "AUTH\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n");
        assert_eq!(out, "+OK pop.example Varan POP3 ready\r\n+OK\r\nPLAIN\r\n.\r\n+OK Maildrop has 3 messages (90 octets)\r\n+OK Logging out\r\n");
        assert_eq!(log[0], "Authenticate { authzid: \"\", authcid: \"alice\", password: \"<redacted>\" }");
        assert_eq!(log.last().unwrap(), "Close");
        let (out, _) = transcript(true, "AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA\r\nSTAT\r\n");
        assert!(out.ends_with("+ \r\n+OK Maildrop has 3 messages (90 octets)\r\n+OK 3 90\r\n"), "{out}");
        let (out, _) = transcript(true, "AUTH PLAIN\r\n*\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!\r\n");
        assert!(out.ends_with("+ \r\n-ERR Authentication cancelled\r\n-ERR Unsupported authentication mechanism\r\n-ERR Invalid base64\r\n"), "{out}");
        // authzid: the maildrop is the authzid's.
        let (_, log) = transcript(true, "AUTH PLAIN Ym9zcwBhbGljZQBzZWNyZXQ=\r\n");
        assert_eq!(log[1], "OpenMaildrop { user: \"boss\" }");
    }

    #[test]
    fn failures_and_limits() {
        // Wrong password twice: the second closes (auth_failures_max = 2).
        let (out, log) = transcript(true, "USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS wrong again\r\nNOOP\r\n");
        assert!(out.ends_with("+OK\r\n-ERR [AUTH] Authentication failed\r\n+OK\r\n-ERR [AUTH] Too many authentication failures\r\n"), "{out}");
        assert_eq!(log.last().unwrap(), "Close");
        // Cleartext login refused; CAPA hides USER/SASL and offers STLS.
        let (out, _) = transcript(false, "CAPA\r\nUSER alice\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        assert!(out.contains("PIPELINING\r\nSTLS\r\nIMPLEMENTATION Varan\r\n.\r\n") && !out.contains("USER\r\n"), "{out}");
        assert!(out.ends_with(
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n"
        ));
        // Errors: wrong state, unknown, syntax; the sixth closes.
        let (out, _) = transcript(true, "STAT\r\nFOO\r\nPASS x\r\nUSER\r\nTOP\r\nXYZ\r\nNOOP\r\n");
        assert!(
            out.ends_with("-ERR Command not valid in this state\r\n-ERR Unknown command\r\n-ERR USER first\r\n-ERR Syntax: USER name\r\n-ERR Command not valid in this state\r\n-ERR Too many errors\r\n"),
            "{out}"
        );
        // An over-long line is refused once, then the session goes on.
        let long = format!("USER {}\r\nQUIT\r\n", "x".repeat(COMMAND_LINE_BYTES_MAX));
        let (out, _) = transcript(true, &long);
        assert!(out.ends_with("-ERR Line too long\r\n+OK Logging out\r\n"), "{out}");
        // Message-number errors.
        let (out, _) = transcript(true, "USER alice\r\nPASS secret\r\nRETR 0\r\nRETR 4\r\nRETR x\r\nRETR\r\nTOP 1\r\nTOP 1 -1\r\nLIST 99999999999\r\n");
        assert!(
            out.ends_with(
                "-ERR No such message\r\n-ERR No such message\r\n-ERR Invalid message number\r\n-ERR Syntax: a message number is needed\r\n-ERR Syntax: TOP message lines\r\n-ERR Invalid line count\r\n-ERR Invalid message number\r\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn stls() {
        // Fed whole: the bytes after STLS arrived before the handshake.
        let mut log = Vec::new();
        let input = b"STLS\r\nUSER injected\r\nCAPA\r\n";
        let out = drive(&mut Session::new(config(), false), input, input.len(), &mut log);
        // The pipelined commands after STLS were discarded.
        assert_eq!(out, "+OK pop.example Varan POP3 ready\r\n+OK Begin TLS negotiation\r\n");
        assert_eq!(log, vec!["StartTls"]);
        let mut s = Session::new(config(), false);
        let mut log = Vec::new();
        let out = drive(&mut s, b"STLS\r\n", 6, &mut log);
        assert!(out.ends_with("+OK Begin TLS negotiation\r\n") && s.is_tls());
        let out = drive(&mut s, b"STLS\r\nCAPA\r\n", 12, &mut log);
        assert!(out.starts_with("-ERR Command not permitted when TLS active\r\n+OK Capability list follows\r\n") && !out.contains("STLS\r\n"), "{out}");
    }

    #[test]
    fn disconnect_does_not_commit() {
        let mut s = Session::new(config(), true);
        let mut log = Vec::new();
        drive(&mut s, b"USER alice\r\nPASS secret\r\nDELE 1\r\n", 64, &mut log);
        s.timed_out();
        assert_eq!(s.poll_action(), Some(Action::Close));
        let mut out = Vec::new();
        s.take_output(&mut out);
        assert!(out.ends_with(b"-ERR Disconnected for inactivity\r\n"));
        assert!(!log.iter().any(|l| l.starts_with("Commit")));
        let mut s = Session::new(config(), true);
        s.shutting_down();
        assert_eq!(s.poll_action(), Some(Action::Close));
        assert!(s.timeout() >= TIMEOUT_MIN);
    }

    #[test]
    fn maildrop_failures() {
        let mut s = Session::new(config(), true);
        s.receive(b"USER alice\r\nPASS secret\r\n");
        assert!(matches!(s.poll_action(), Some(Action::Authenticate { .. })));
        s.auth_checked(AuthVerdict::Success);
        assert_eq!(s.poll_action(), Some(Action::OpenMaildrop { user: "alice".into() }));
        s.maildrop_failed(MaildropFailure::InUse);
        s.receive(b"STAT\r\n");
        let mut out = Vec::new();
        s.take_output(&mut out);
        assert!(String::from_utf8(out).unwrap().ends_with("-ERR [IN-USE] Maildrop is locked by another session\r\n-ERR Command not valid in this state\r\n"));
        assert_eq!(s.authenticated(), None);
    }

    #[test]
    fn dot_stuffing() {
        let w = |m: &[u8], top| {
            let mut out = Vec::new();
            write_dot_stuffed(&mut out, m, top);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(w(b"", None), ".\r\n");
        assert_eq!(w(b".\r\n..\r\nx", None), "..\r\n...\r\nx\r\n.\r\n");
        assert_eq!(w(b"a\nb\r\n", None), "a\r\nb\r\n.\r\n");
        assert_eq!(w(b"H: 1\r\n\r\n1\r\n2\r\n", Some(0)), "H: 1\r\n\r\n.\r\n");
        assert_eq!(w(b"H: 1\r\n\r\n1\r\n2\r\n", Some(5)), "H: 1\r\n\r\n1\r\n2\r\n.\r\n");
        assert_eq!(w(b"H: 1\r\nno body", Some(3)), "H: 1\r\nno body\r\n.\r\n");
        assert_eq!(uidl(1, 0x1234_abcd), "000000011234abcd");
    }

    proptest::proptest! {
        /// Command soup split anywhere: no panic, the loop ends, and
        /// without STLS the split does not change the output.
        #[test]
        fn any_input(words in proptest::collection::vec(proptest::prop_oneof![
            proptest::strategy::Just("USER alice\r\n"), proptest::strategy::Just("PASS secret\r\n"), proptest::strategy::Just("RETR 1\r\n"),
            proptest::strategy::Just("TOP 2 1\r\n"), proptest::strategy::Just("DELE 3\r\n"), proptest::strategy::Just("LIST\r\n"), proptest::strategy::Just("UIDL 1\r\n"),
            proptest::strategy::Just("AUTH PLAIN\r\n"), proptest::strategy::Just("AGFsaWNlAHNlY3JldA\r\n"), proptest::strategy::Just("RSET\r\n"), proptest::strategy::Just("\r\n"),
            proptest::strategy::Just("QUIT\r\n"), proptest::strategy::Just("x\0\u{ff}"), proptest::strategy::Just("\n"), proptest::strategy::Just("CAPA\r\n"),
        ], 0..40), chunk in 1usize..16) {
            let input = words.concat();
            let mut log = Vec::new();
            let split = drive(&mut Session::new(config(), true), input.as_bytes(), chunk, &mut log);
            let whole = drive(&mut Session::new(config(), true), input.as_bytes(), input.len().max(1), &mut Vec::new());
            proptest::prop_assert_eq!(&split, &whole);
            proptest::prop_assert!(split.ends_with("\r\n"));
        }
    }
}
