//! Transcript harness for the SMTP session: a fake driver that feeds
//! scripted client bytes (whole, one byte at a time, or in uneven chunks),
//! answers actions from a fixed policy, and checks the server's replies.
//!
//! Script lines:
//! - `C: text`  client sends `text` + CRLF
//! - `C~ text`  client sends `text` raw, with escapes `\r \n \t \0 \\ \xNN`
//! - `S: text`  the next server line is exactly `text`
//! - `S~ text`  the same with escapes (`334\x20` for a trailing space)
//! - `S: 250*`  any number of `250-` lines, then one `250 ` line (EHLO)
//! - `-- tls`      driver completes the STARTTLS handshake (tls_started)
//! - `-- timeout`  driver's read timer fires (timed_out)
//! - `-- shutdown` server stops (shutting_down)
//! - `-- closed`   assert the session is closed here
//! - `#` comments, blank lines ignored
//!
//! Policy: recipients whose local part starts with `unknown` get 550 5.1.1,
//! `busy` gets 450 4.2.1, all others are accepted; `alice`/`secret`
//! authenticates, password `tempfail` gives TempFailure, others fail;
//! messages from `tempfail@…` get 451, from `permfail@…` 554, others are
//! queued as Q1, Q2, ….
#![allow(dead_code)]

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use varan_core::config::BareNewlines;
use varan_protocols::smtp::{
    Action, AuthVerdict, BodySink, Envelope, ListenerKind, PeerInfo, RcptVerdict, Reply, Session, SessionConfig, SinkError, StoreOutcome, TlsInfo, REPLY_LINE_BYTES_MAX,
};

pub fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        kind: ListenerKind::Mx,
        tls_available: true,
        auth_without_tls: false,
        message_size_max: 10_000,
        recipients_max: 100,
        command_line_max: 512,
        commands_max: 1000,
        errors_max: 5,
        auth_failures_max: 3,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
        bare_newlines: BareNewlines::Normalize,
        check_sender: false,
    }
}

pub fn peer() -> PeerInfo {
    let remote: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let local: SocketAddr = "198.51.100.1:25".parse().unwrap();
    PeerInfo { remote, local }
}

pub fn tls_info() -> TlsInfo {
    TlsInfo { protocol: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() }
}

/// How client bytes are handed to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Whole,
    ByteAtATime,
    /// Chunks of 1, 2, 3, 5, 8, 13, 1, … octets.
    Uneven,
}

pub const FEEDS: [Feed; 3] = [Feed::Whole, Feed::ByteAtATime, Feed::Uneven];

/// A message the fake driver stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub envelope: Envelope,
    pub content: Vec<u8>,
    pub sizes: (u64, u64),
    pub eight_bit: bool,
}

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub output: String,
    pub actions: Vec<String>,
    pub messages: Vec<Stored>,
    pub closed: bool,
    pub authenticated: Option<String>,
    pub helo: Option<String>,
    pub sink_begins: usize,
}

/// The driver's spool.
#[derive(Default)]
pub struct TestSink {
    pub content: Vec<u8>,
    pub begins: usize,
    pub fail: bool,
}

impl BodySink for TestSink {
    fn begin(&mut self) {
        self.begins += 1;
        self.content.clear();
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        assert!(self.begins > 0, "write before begin");
        if self.fail {
            return Err(SinkError::Full);
        }
        self.content.extend_from_slice(bytes);
        Ok(())
    }
}

pub enum Step {
    Send(Vec<u8>),
    Tls,
    Timeout,
    Shutdown,
    AssertClosed,
}

/// The fake driver.
pub struct Driver {
    pub session: Session,
    pub sink: TestSink,
    buf: Vec<u8>,
    out: Vec<u8>,
    actions: Vec<String>,
    messages: Vec<Stored>,
    queue_ids: u32,
    tls_pending: bool,
    closed: bool,
}

impl Driver {
    pub fn new(config: SessionConfig, tls: Option<TlsInfo>) -> Self {
        Driver {
            session: Session::new(Rc::new(config), peer(), tls),
            sink: TestSink::default(),
            buf: Vec::new(),
            out: Vec::new(),
            actions: Vec::new(),
            messages: Vec::new(),
            queue_ids: 0,
            tls_pending: false,
            closed: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8], feed: Feed) {
        let pattern: &[usize] = match feed {
            Feed::Whole => &[usize::MAX],
            Feed::ByteAtATime => &[1],
            Feed::Uneven => &[1, 2, 3, 5, 8, 13],
        };
        self.send_split(bytes, pattern);
    }

    /// Sends `bytes` in pieces whose sizes cycle through `pattern`
    /// (0 is treated as 1; an empty pattern sends everything at once).
    pub fn send_split(&mut self, bytes: &[u8], pattern: &[usize]) {
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = pattern.get(i % pattern.len().max(1)).copied().unwrap_or(usize::MAX).max(1).min(bytes.len() - pos);
            i += 1;
            self.buf.extend_from_slice(&bytes[pos..pos + n]);
            pos += n;
            self.pump();
        }
        self.pump();
    }

    /// Calls `receive` until it makes no more progress, answering actions.
    pub fn pump(&mut self) {
        loop {
            if self.closed {
                // The driver closes the socket: nothing more is read.
                self.buf.clear();
                self.drain_output();
                return;
            }
            let n = self.session.receive(&self.buf, &mut self.sink);
            assert!(n <= self.buf.len(), "consumed more than given");
            self.buf.drain(..n);
            let had_output = self.drain_output();
            let acted = self.handle_actions();
            if n == 0 && !acted && !had_output {
                return;
            }
        }
    }

    fn drain_output(&mut self) -> bool {
        let had = self.session.has_output();
        self.session.take_output(&mut self.out);
        assert!(!self.session.has_output(), "take_output did not drain");
        had
    }

    fn handle_actions(&mut self) -> bool {
        let mut acted = false;
        while let Some(action) = self.session.poll_action() {
            acted = true;
            self.actions.push(format!("{action:?}"));
            match action {
                Action::CheckSender { sender } => {
                    let refuse = sender.as_ref().is_some_and(|a| a.local_part().starts_with("spf-fail"));
                    self.session.sender_checked(refuse.then(|| Reply::fixed(550, (5, 7, 23), "SPF validation failed")));
                }
                Action::CheckRecipient { address, .. } => {
                    let local = address.local_part();
                    let verdict = if local.starts_with("unknown") {
                        RcptVerdict::Reject(Reply::user_unknown())
                    } else if local.starts_with("busy") {
                        RcptVerdict::Reject(Reply::fixed(450, (4, 2, 1), "Mailbox busy"))
                    } else {
                        RcptVerdict::Accept
                    };
                    self.session.recipient_checked(verdict);
                }
                Action::Authenticate { authcid, password, .. } => {
                    let verdict = match (authcid.as_str(), password.as_str()) {
                        (_, "tempfail") => AuthVerdict::TempFailure,
                        ("alice", "secret") => AuthVerdict::Success,
                        _ => AuthVerdict::Failure,
                    };
                    self.session.auth_checked(verdict);
                }
                Action::MessageComplete => {
                    let envelope = self.session.envelope().clone();
                    let from = envelope.mail_from.as_ref().map(|a| a.local_part().to_owned()).unwrap_or_default();
                    self.messages.push(Stored { envelope, content: self.sink.content.clone(), sizes: self.session.message_sizes(), eight_bit: self.session.message_8bit() });
                    let outcome = match from.as_str() {
                        "tempfail" => StoreOutcome::TempFail(Reply::fixed(451, (4, 3, 0), "Try again later")),
                        "permfail" => StoreOutcome::PermFail(Reply::fixed(554, (5, 6, 0), "Content rejected")),
                        _ => {
                            self.queue_ids += 1;
                            StoreOutcome::Accepted { queue_id: format!("Q{}", self.queue_ids) }
                        }
                    };
                    self.session.message_stored(outcome);
                }
                Action::StartTls => self.tls_pending = true,
                Action::Close => self.closed = true,
            }
        }
        acted
    }

    pub fn step(&mut self, step: &Step, feed: Feed) {
        match step {
            Step::Send(bytes) => self.send(bytes, feed),
            Step::Tls => {
                assert!(self.tls_pending, "-- tls without a StartTls action");
                self.tls_pending = false;
                self.session.tls_started(tls_info());
                self.pump();
            }
            Step::Timeout => {
                self.session.timed_out();
                self.handle_actions();
                self.pump();
            }
            Step::Shutdown => {
                self.session.shutting_down();
                self.handle_actions();
                self.pump();
            }
            Step::AssertClosed => assert!(self.session.is_closed(), "session not closed at -- closed"),
        }
    }

    pub fn finish(mut self) -> Outcome {
        self.pump();
        let output = String::from_utf8(self.out).expect("replies are UTF-8");
        for line in output.split_inclusive("\r\n") {
            assert!(line.len() <= REPLY_LINE_BYTES_MAX, "reply line too long: {line:?}");
            assert!(line.ends_with("\r\n"), "reply not CRLF-terminated: {line:?}");
        }
        Outcome {
            output,
            actions: self.actions,
            messages: self.messages,
            closed: self.session.is_closed(),
            authenticated: self.session.authenticated().map(str::to_owned),
            helo: self.session.helo().map(str::to_owned),
            sink_begins: self.sink.begins,
        }
    }
}

/// Expected server output, line by line.
enum Expect {
    Line(String),
    /// `250-…` lines then a `250 …` line.
    MultiLine250,
}

pub struct Script {
    steps: Vec<Step>,
    expect: Vec<Expect>,
}

pub fn parse_script(script: &str) -> Script {
    let mut steps = Vec::new();
    let mut expect = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for raw in script.lines() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(text) = line.strip_prefix("C: ").or(if line == "C:" { Some("") } else { None }) {
            pending.extend_from_slice(text.as_bytes());
            pending.extend_from_slice(b"\r\n");
        } else if let Some(text) = line.strip_prefix("C~ ") {
            pending.extend_from_slice(&unescape(text));
        } else if let Some(text) = line.strip_prefix("S~ ") {
            expect.push(Expect::Line(String::from_utf8(unescape(text)).expect("UTF-8")));
        } else if let Some(text) = line.strip_prefix("S: ") {
            expect.push(if text == "250*" { Expect::MultiLine250 } else { Expect::Line(text.to_owned()) });
        } else if let Some(directive) = line.strip_prefix("-- ") {
            if !pending.is_empty() {
                steps.push(Step::Send(std::mem::take(&mut pending)));
            }
            steps.push(match directive.trim() {
                "tls" => Step::Tls,
                "timeout" => Step::Timeout,
                "shutdown" => Step::Shutdown,
                "closed" => Step::AssertClosed,
                other => panic!("unknown directive {other:?}"),
            });
        } else {
            panic!("bad script line {raw:?}");
        }
    }
    if !pending.is_empty() {
        steps.push(Step::Send(pending));
    }
    Script { steps, expect }
}

pub fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("bad escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn check_output(output: &str, expect: &[Expect], feed: Feed) {
    let lines: Vec<&str> = output.split("\r\n").filter(|l| !l.is_empty()).collect();
    let mut i = 0;
    for (n, e) in expect.iter().enumerate() {
        match e {
            Expect::Line(want) => {
                let got = lines.get(i).copied().unwrap_or("<no more output>");
                assert_eq!(got, want, "feed {feed:?}: server line {i} (expectation {n})\nfull output:\n{output}");
                i += 1;
            }
            Expect::MultiLine250 => {
                while lines.get(i).is_some_and(|l| l.starts_with("250-")) {
                    i += 1;
                }
                let got = lines.get(i).copied().unwrap_or("<no more output>");
                assert!(got.starts_with("250 "), "feed {feed:?}: expected end of 250 reply, got {got:?}\nfull output:\n{output}");
                i += 1;
            }
        }
    }
    assert_eq!(i, lines.len(), "feed {feed:?}: unexpected extra output: {:?}\nfull output:\n{output}", &lines[i..]);
}

/// Options for a transcript run.
pub struct Transcript {
    pub config: SessionConfig,
    pub implicit_tls: bool,
    pub failing_sink: bool,
}

impl Transcript {
    pub fn new(config: SessionConfig) -> Self {
        Self { config, implicit_tls: false, failing_sink: false }
    }

    pub fn implicit_tls(mut self) -> Self {
        self.implicit_tls = true;
        self
    }

    pub fn failing_sink(mut self) -> Self {
        self.failing_sink = true;
        self
    }

    /// Runs the script with every feeding pattern, checks the server lines
    /// each time and that all patterns give identical outcomes.
    pub fn run(&self, script: &str) -> Outcome {
        let parsed = parse_script(script);
        let mut first: Option<Outcome> = None;
        for feed in FEEDS {
            let mut driver = Driver::new(self.config.clone(), self.implicit_tls.then(tls_info));
            driver.sink.fail = self.failing_sink;
            for step in &parsed.steps {
                driver.step(step, feed);
            }
            let outcome = driver.finish();
            check_output(&outcome.output, &parsed.expect, feed);
            match &first {
                None => first = Some(outcome),
                Some(f) => assert_eq!(&outcome, f, "feed {feed:?} differs from {:?}", Feed::Whole),
            }
        }
        first.expect("at least one feed")
    }
}

/// Runs `script` with the default test config.
pub fn transcript(script: &str) -> Outcome {
    Transcript::new(config()).run(script)
}
