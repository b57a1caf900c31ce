//! The IMAP server session (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1 and the
//! extensions in [`capabilities`]).
//!
//! The driver hands in whole frames from the [`Framer`](super::framer::Framer)
//! and carries out the [`Step`] each returns. Commands that touch the mail
//! store are parked and executed by [`Session::work`], which the driver runs
//! on a blocking thread (see docs/design/imap.md); the session never opens a
//! socket, a file or a clock itself.

mod cache;
mod mailboxes;
mod messages;
mod search;
#[cfg(test)]
mod tests;
mod view;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use varan_core::config::Config;
use varan_core::mailstore::{StoreError, Uid, UserStore};

pub use cache::{Key as CacheKey, SummaryCache};
pub use view::View;

use super::command::{Command, CommandBody};
use super::framer::{Frame, FramerLimits, Rejection};
use super::parse::{parse_command, ParseErrorKind};
use super::response::{write_status, ResponseCode, Status};
use super::sequence::SequenceSet;

/// The server's name in ID responses (RFC 2971).
const SERVER_NAME: &str = "Varan";
/// Output produced before a long command (FETCH of many messages) hands
/// control back so the driver can send it: bounds memory per session.
pub const OUTPUT_CHUNK_BYTES: usize = 1 << 20;
/// SASL responses longer than this are refused (PLAIN needs a few hundred).
const SASL_LINE_BYTES_MAX: usize = 8192;

/// Settings of a session, from `[imap]` and `[server]`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    /// A certificate is configured: STARTTLS is offered.
    pub tls_available: bool,
    pub auth_without_tls: bool,
    pub append_limit: u64,
    pub command_line_max: usize,
    pub auth_failures_max: u32,
    pub errors_max: u32,
    pub idle_timeout: Duration,
    pub login_timeout: Duration,
    /// The Trash folder's name, which gets the extra Trash quota.
    pub trash_folder: String,
}

impl SessionConfig {
    pub fn from_config(c: &Config, tls_available: bool) -> Self {
        let i = &c.imap;
        Self {
            hostname: c.server.hostname.clone(),
            tls_available,
            auth_without_tls: i.auth_without_tls,
            append_limit: i.append_size_max,
            command_line_max: i.command_line_max as usize,
            auth_failures_max: i.auth_failures_max,
            errors_max: i.errors_max,
            idle_timeout: i.idle_timeout,
            login_timeout: i.login_timeout,
            trash_folder: c.storage.trash_folder.clone(),
        }
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// Nothing: send the output, go on reading commands.
    Continue,
    /// Call [`Session::work`] (on a blocking thread: it uses the store).
    Work,
    /// Verify these credentials, then call [`Session::login_result`].
    Authenticate(Credentials),
    /// Send the output, then read one raw line for [`Session::sasl_line`].
    SaslLine,
    /// Send the output, then do the TLS handshake and call [`Session::tls_started`].
    StartTls,
    /// IDLE is on: send the output, then wait for a line
    /// ([`Session::idle_line`]) or a change of [`Session::idle_watch`]
    /// (then [`Session::idle_changed`] and [`Session::work`]).
    Idle,
    /// Send the output and close the connection.
    Close,
}

#[derive(Debug)]
pub struct Credentials {
    pub authzid: String,
    pub authcid: String,
    pub password: String,
}

/// The driver's answer to [`Step::Authenticate`].
pub enum LoginOutcome {
    /// `quota_limit`: bytes (None: unlimited); `trash_extra`: room the Trash
    /// folder gets beyond it (seed §6.2.5.1.10).
    Ok {
        user: Arc<dyn UserStore>,
        username: String,
        quota_limit: Option<u64>,
        trash_extra: u64,
    },
    Failed,
    TempFailure,
    TooManySessions,
}

enum State {
    NotAuthenticated,
    Authenticated,
    Selected(View),
    Logout,
}

/// AUTHENTICATE in progress.
enum Sasl {
    Plain,
    LoginUser,
    LoginPassword(String),
}

/// Work parked for [`Session::work`].
enum Pending {
    /// The command and the frame it was parsed from (APPEND data stays there).
    Command(Command, Vec<u8>),
    /// A FETCH that produced [`OUTPUT_CHUNK_BYTES`] and continues here.
    Fetch(messages::FetchJob),
    /// IDLE: the mailbox changed; send the updates.
    IdleUpdate,
}

pub struct Session {
    config: Arc<SessionConfig>,
    cache: Arc<SummaryCache>,
    state: State,
    tls: bool,
    out: Vec<u8>,
    closed: bool,
    user: Option<Arc<dyn UserStore>>,
    username: String,
    quota_limit: Option<u64>,
    trash_extra: u64,
    auth_failures: u32,
    errors: u32,
    /// ENABLEd extensions (RFC 5161).
    rev2: bool,
    utf8: bool,
    condstore: bool,
    qresync: bool,
    /// Tag of the command in progress for SASL or IDLE.
    tag: String,
    sasl: Option<Sasl>,
    idle: bool,
    pending: Option<Pending>,
    /// SEARCHRES (RFC 5182): the last `SEARCH RETURN (SAVE)` result, UIDs.
    saved: Vec<Uid>,
    /// Unix time, set by the driver before [`Session::work`] (WITHIN keys).
    now: i64,
    /// Storage failures for the driver to log (the client sees a generic NO).
    storage_errors: Vec<String>,
}

impl Session {
    pub fn new(config: Arc<SessionConfig>, cache: Arc<SummaryCache>, tls: bool) -> Self {
        Session {
            config,
            cache,
            state: State::NotAuthenticated,
            tls,
            out: Vec::with_capacity(1024),
            closed: false,
            user: None,
            username: String::new(),
            quota_limit: None,
            trash_extra: 0,
            auth_failures: 0,
            errors: 0,
            rev2: false,
            utf8: false,
            condstore: false,
            qresync: false,
            tag: String::new(),
            sasl: None,
            idle: false,
            pending: None,
            saved: Vec::new(),
            now: 0,
            storage_errors: Vec::new(),
        }
    }

    // ----- driver interface -------------------------------------------

    pub fn greeting(&mut self) {
        let caps = self.capabilities();
        let text = format!("{} Varan IMAP ready", self.config.hostname);
        write_status(&mut self.out, None, Status::Ok, Some(&ResponseCode::Capability(caps)), &text);
    }

    /// The current time (Unix seconds), for YOUNGER/OLDER (RFC 5032).
    pub fn set_now(&mut self, unix: i64) {
        self.now = unix;
    }

    /// Storage failures since the last call, for the operator's log.
    pub fn take_storage_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.storage_errors)
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Inactivity allowed before [`Session::timed_out`].
    pub fn timeout(&self) -> Duration {
        if self.user.is_some() {
            self.config.idle_timeout
        } else {
            self.config.login_timeout
        }
    }

    pub fn framer_limits(&self) -> FramerLimits {
        if self.user.is_some() {
            let mut l = FramerLimits::after_login(self.config.append_limit);
            l.line_bytes_max = l.line_bytes_max.max(self.config.command_line_max);
            l
        } else {
            FramerLimits::before_login()
        }
    }

    pub fn timed_out(&mut self) {
        self.bye("Autologout; idle for too long");
    }

    pub fn shutting_down(&mut self) {
        self.bye("Server shutting down");
    }

    fn bye(&mut self, text: &str) {
        write_status(&mut self.out, None, Status::Bye, None, text);
        self.closed = true;
        self.state = State::Logout;
    }

    /// A synchronizing literal was accepted by the framer.
    pub fn continue_literal(&mut self) {
        self.out.extend_from_slice(b"+ Ready for literal data\r\n");
    }

    /// A whole frame from the framer.
    pub fn frame(&mut self, frame: Frame) -> Step {
        match frame {
            Frame::Command(bytes) => match parse_command(&bytes) {
                Ok(cmd) => self.command(cmd, bytes),
                Err(e) => {
                    let tag = e.tag.clone();
                    match e.kind {
                        ParseErrorKind::BadCharset => {
                            self.tagged(tag.as_deref(), Status::No, Some(&ResponseCode::BadCharset(vec!["UTF-8".into(), "US-ASCII".into()])), "Unsupported charset")
                        }
                        ParseErrorKind::UnknownCommand => {
                            self.tagged(tag.as_deref(), Status::Bad, None, "Unknown command");
                            return self.count_error();
                        }
                        ParseErrorKind::Bad(text) => {
                            self.tagged(tag.as_deref(), Status::Bad, Some(&ResponseCode::Parse), &text);
                            return self.count_error();
                        }
                    }
                    Step::Continue
                }
            },
            Frame::Continue => {
                self.continue_literal();
                Step::Continue
            }
            Frame::Rejected { tag, response } => {
                response.write(&mut self.out, tag.as_deref());
                if response.status() == Status::Bad {
                    return self.count_error();
                }
                Step::Continue
            }
            Frame::Fatal(text) => {
                self.bye(text);
                Step::Close
            }
        }
    }

    fn count_error(&mut self) -> Step {
        self.errors += 1;
        if self.errors >= self.config.errors_max {
            self.bye("Too many invalid commands");
            return Step::Close;
        }
        Step::Continue
    }

    /// Runs parked store work. May return [`Step::Work`] again when a long
    /// response is being produced in chunks.
    pub fn work(&mut self) -> Step {
        let step = match self.pending.take() {
            Some(Pending::Command(cmd, frame)) => self.execute(cmd, frame),
            Some(Pending::Fetch(job)) => self.fetch_continue(job),
            Some(Pending::IdleUpdate) => {
                self.catch_up(true, true);
                return if self.idle { Step::Idle } else { Step::Continue };
            }
            None => Step::Continue,
        };
        if self.closed {
            return Step::Close;
        }
        step
    }

    pub fn login_result(&mut self, outcome: LoginOutcome) -> Step {
        let tag = std::mem::take(&mut self.tag);
        match outcome {
            LoginOutcome::Ok { user, username, quota_limit, trash_extra } => {
                self.trash_extra = trash_extra;
                self.user = Some(user);
                self.username = username;
                self.quota_limit = quota_limit;
                self.state = State::Authenticated;
                let caps = self.capabilities();
                self.tagged(Some(&tag), Status::Ok, Some(&ResponseCode::Capability(caps)), "Logged in");
                Step::Continue
            }
            LoginOutcome::TempFailure => {
                self.tagged(Some(&tag), Status::No, Some(&ResponseCode::Unavailable), "Temporary authentication failure, try again later");
                Step::Continue
            }
            LoginOutcome::TooManySessions => {
                self.tagged(Some(&tag), Status::No, Some(&ResponseCode::Limit), "Too many sessions of this user");
                Step::Continue
            }
            LoginOutcome::Failed => {
                self.auth_failures += 1;
                self.tagged(Some(&tag), Status::No, Some(&ResponseCode::AuthenticationFailed), "Authentication failed");
                if self.auth_failures >= self.config.auth_failures_max {
                    self.bye("Too many authentication failures");
                    return Step::Close;
                }
                Step::Continue
            }
        }
    }

    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    /// A line while AUTHENTICATE waits for the client (RFC 9051 §6.2.2).
    pub fn sasl_line(&mut self, line: Result<Vec<u8>, Rejection>) -> Step {
        let tag = self.tag.clone();
        let Some(stage) = self.sasl.take() else { return Step::Continue };
        let line = match line {
            Ok(l) if l.len() <= SASL_LINE_BYTES_MAX => l,
            _ => {
                self.tagged(Some(&tag), Status::Bad, Some(&ResponseCode::Limit), "SASL response too long");
                return self.count_error();
            }
        };
        if line == b"*" {
            self.tagged(Some(&tag), Status::Bad, None, "Authentication cancelled");
            return Step::Continue;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&line) else {
            self.tagged(Some(&tag), Status::Bad, None, "Invalid base64");
            return self.count_error();
        };
        match stage {
            Sasl::Plain => self.sasl_plain(&decoded),
            Sasl::LoginUser => {
                self.sasl = Some(Sasl::LoginPassword(String::from_utf8_lossy(&decoded).into_owned()));
                self.out.extend_from_slice(b"+ UGFzc3dvcmQ6\r\n");
                Step::SaslLine
            }
            Sasl::LoginPassword(user) => {
                let password = String::from_utf8_lossy(&decoded).into_owned();
                Step::Authenticate(Credentials { authzid: String::new(), authcid: user, password })
            }
        }
    }

    fn sasl_plain(&mut self, decoded: &[u8]) -> Step {
        let mut parts = decoded.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
            let tag = self.tag.clone();
            self.tagged(Some(&tag), Status::Bad, None, "Malformed PLAIN response");
            return self.count_error();
        };
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Step::Authenticate(Credentials { authzid: s(authzid), authcid: s(authcid), password: s(password) })
    }

    /// A line during IDLE: `DONE` ends it (RFC 2177).
    pub fn idle_line(&mut self, line: Result<Vec<u8>, Rejection>) -> Step {
        self.idle = false;
        let tag = std::mem::take(&mut self.tag);
        match line {
            Ok(l) if l.eq_ignore_ascii_case(b"DONE") => {
                self.tagged(Some(&tag), Status::Ok, None, "IDLE terminated");
                Step::Continue
            }
            _ => {
                self.tagged(Some(&tag), Status::Bad, None, "Expected DONE");
                self.count_error()
            }
        }
    }

    /// During IDLE: a future that resolves when the selected mailbox
    /// changes (`None` when nothing is selected).
    pub fn idle_watch(&self) -> Option<varan_core::mailstore::ChangeFuture> {
        match &self.state {
            State::Selected(view) if self.idle => Some(view.mailbox.changed(view.version)),
            _ => None,
        }
    }

    /// The IDLE watch fired: the next [`Session::work`] sends the updates.
    pub fn idle_changed(&mut self) {
        self.pending = Some(Pending::IdleUpdate);
    }

    // ----- responses --------------------------------------------------

    /// A status response; `tag` `None` writes an untagged one.
    fn tagged(&mut self, tag: Option<&str>, status: Status, code: Option<&ResponseCode>, text: &str) {
        write_status(&mut self.out, tag, status, code, text);
    }

    fn ok(&mut self, tag: &str, text: &str) {
        self.tagged(Some(tag), Status::Ok, None, text);
    }

    fn no(&mut self, tag: &str, code: Option<ResponseCode>, text: &str) {
        self.tagged(Some(tag), Status::No, code.as_ref(), text);
    }

    fn bad(&mut self, tag: &str, text: &str) -> Step {
        self.tagged(Some(tag), Status::Bad, None, text);
        self.count_error()
    }

    /// The tagged NO for a store failure.
    fn store_error(&mut self, tag: &str, e: StoreError) {
        let (code, text) = match &e {
            StoreError::NoMailbox => (ResponseCode::NonExistent, "No such mailbox".to_owned()),
            StoreError::AlreadyExists => (ResponseCode::AlreadyExists, "Mailbox already exists".to_owned()),
            StoreError::BadName(t) | StoreError::Cannot(t) => (ResponseCode::Cannot, t.clone()),
            StoreError::OverQuota => (ResponseCode::OverQuota, "Quota exceeded".to_owned()),
            StoreError::Limit(t) => (ResponseCode::Limit, t.clone()),
            StoreError::Expunged => (ResponseCode::ExpungeIssued, "Some messages were expunged meanwhile".to_owned()),
            StoreError::Io(err) => {
                self.storage_errors.push(err.to_string());
                (ResponseCode::ServerBug, "Internal storage error; the administrator has the details".to_owned())
            }
        };
        self.no(tag, Some(code), &text);
    }

    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> =
            ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "CHILDREN"].iter().map(|s| s.to_string()).collect();
        if self.user.is_none() {
            if self.config.tls_available && !self.tls {
                caps.push("STARTTLS".into());
            }
            if self.tls || self.config.auth_without_tls {
                caps.push("AUTH=PLAIN".into());
                caps.push("AUTH=LOGIN".into());
            } else {
                caps.push("LOGINDISABLED".into());
            }
            return caps;
        }
        caps.extend(
            [
                "UIDPLUS",
                "MOVE",
                "SPECIAL-USE",
                "CREATE-SPECIAL-USE",
                "LIST-EXTENDED",
                "LIST-STATUS",
                "ESEARCH",
                "SEARCHRES",
                "WITHIN",
                "CONDSTORE",
                "QRESYNC",
                "QUOTA",
                "QUOTA=RES-STORAGE",
                "QUOTA=RES-MESSAGE",
                "SORT",
                "SORT=DISPLAY",
                "THREAD=ORDEREDSUBJECT",
                "THREAD=REFERENCES",
                "BINARY",
                "MULTIAPPEND",
                "STATUS=SIZE",
                "UTF8=ACCEPT",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        caps.push(format!("APPENDLIMIT={}", self.config.append_limit));
        caps
    }

    // ----- dispatch ---------------------------------------------------

    fn command(&mut self, cmd: Command, frame: Vec<u8>) -> Step {
        let tag = cmd.tag.clone();
        let authenticated = self.user.is_some();
        let selected = matches!(self.state, State::Selected(_));
        match &cmd.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.out.extend_from_slice(format!("* CAPABILITY {}\r\n", caps.join(" ")).as_bytes());
                self.ok(&tag, "CAPABILITY completed");
                Step::Continue
            }
            CommandBody::Logout => {
                write_status(&mut self.out, None, Status::Bye, None, "Logging out");
                self.ok(&tag, "LOGOUT completed");
                self.closed = true;
                self.state = State::Logout;
                Step::Close
            }
            CommandBody::Id(_) => {
                self.out.extend_from_slice(format!("* ID (\"name\" \"{SERVER_NAME}\" \"version\" \"{}\")\r\n", env!("CARGO_PKG_VERSION")).as_bytes());
                self.ok(&tag, "ID completed");
                Step::Continue
            }
            CommandBody::Noop | CommandBody::Check if selected => self.park(cmd, frame),
            CommandBody::Noop => {
                self.ok(&tag, "NOOP completed");
                Step::Continue
            }
            CommandBody::StartTls => {
                if authenticated || self.tls || !self.config.tls_available {
                    self.no(&tag, None, "STARTTLS not available now");
                    return Step::Continue;
                }
                self.ok(&tag, "Begin TLS negotiation now");
                Step::StartTls
            }
            CommandBody::Login { username, password } => {
                if authenticated {
                    return self.bad(&tag, "Already logged in");
                }
                if !self.tls && !self.config.auth_without_tls {
                    self.no(&tag, Some(ResponseCode::PrivacyRequired), "Use STARTTLS or port 993 before logging in");
                    return Step::Continue;
                }
                self.tag = tag;
                Step::Authenticate(Credentials { authzid: String::new(), authcid: username.clone(), password: password.0.clone() })
            }
            CommandBody::Authenticate { mechanism, initial_response } => {
                if authenticated {
                    return self.bad(&tag, "Already logged in");
                }
                if !self.tls && !self.config.auth_without_tls {
                    self.no(&tag, Some(ResponseCode::PrivacyRequired), "Use STARTTLS or port 993 before logging in");
                    return Step::Continue;
                }
                self.tag = tag.clone();
                let initial = initial_response.as_ref().map(|r| r.0.clone());
                // The parser has already decoded an initial response (SASL-IR).
                match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => match initial {
                        Some(data) => self.sasl_plain(&data),
                        None => {
                            self.sasl = Some(Sasl::Plain);
                            self.out.extend_from_slice(b"+ \r\n");
                            Step::SaslLine
                        }
                    },
                    "LOGIN" => {
                        match initial {
                            Some(user) => self.sasl = Some(Sasl::LoginPassword(String::from_utf8_lossy(&user).into_owned())),
                            None => {
                                self.sasl = Some(Sasl::LoginUser);
                                self.out.extend_from_slice(b"+ VXNlcm5hbWU6\r\n");
                                return Step::SaslLine;
                            }
                        }
                        self.out.extend_from_slice(b"+ UGFzc3dvcmQ6\r\n");
                        Step::SaslLine
                    }
                    _ => {
                        self.no(&tag, Some(ResponseCode::Cannot), "Unsupported authentication mechanism");
                        Step::Continue
                    }
                }
            }
            _ if !authenticated => self.bad(&tag, "Log in first"),
            CommandBody::Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    let up = c.to_ascii_uppercase();
                    let on = match up.as_str() {
                        "CONDSTORE" => !std::mem::replace(&mut self.condstore, true),
                        "QRESYNC" => {
                            self.condstore = true;
                            !std::mem::replace(&mut self.qresync, true)
                        }
                        "UTF8=ACCEPT" => !std::mem::replace(&mut self.utf8, true),
                        "IMAP4REV2" => !std::mem::replace(&mut self.rev2, true),
                        _ => false,
                    };
                    if on {
                        enabled.push(up);
                    }
                }
                self.out.extend_from_slice(b"* ENABLED");
                for e in &enabled {
                    self.out.push(b' ');
                    self.out.extend_from_slice(e.as_bytes());
                }
                self.out.extend_from_slice(b"\r\n");
                self.ok(&tag, "ENABLE completed");
                Step::Continue
            }
            CommandBody::Namespace => {
                self.out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                self.ok(&tag, "NAMESPACE completed");
                Step::Continue
            }
            CommandBody::Idle => {
                self.tag = tag;
                self.idle = true;
                self.out.extend_from_slice(b"+ idling\r\n");
                // Report what is already pending first.
                self.pending = Some(Pending::IdleUpdate);
                Step::Work
            }
            CommandBody::Unselect | CommandBody::Close if !selected => self.bad(&tag, "No mailbox selected"),
            CommandBody::Unselect => {
                self.state = State::Authenticated;
                self.ok(&tag, "UNSELECT completed");
                Step::Continue
            }
            CommandBody::SetQuota { .. } => {
                self.no(&tag, Some(ResponseCode::NoPerm), "Quotas are set by the administrator");
                Step::Continue
            }
            CommandBody::Compress(_) => {
                self.no(&tag, Some(ResponseCode::Cannot), "COMPRESS is not offered");
                Step::Continue
            }
            CommandBody::Check
            | CommandBody::Close
            | CommandBody::Expunge
            | CommandBody::UidExpunge(_)
            | CommandBody::Search(_)
            | CommandBody::Fetch(_)
            | CommandBody::Store(_)
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
            | CommandBody::Sort(_)
            | CommandBody::Thread(_)
                if !selected =>
            {
                self.bad(&tag, "No mailbox selected")
            }
            _ => self.park(cmd, frame),
        }
    }

    fn park(&mut self, cmd: Command, frame: Vec<u8>) -> Step {
        self.pending = Some(Pending::Command(cmd, frame));
        Step::Work
    }

    /// Executes a command that uses the store (on a blocking thread).
    fn execute(&mut self, cmd: Command, frame: Vec<u8>) -> Step {
        let tag = cmd.tag;
        match cmd.body {
            CommandBody::Noop | CommandBody::Check => {
                self.catch_up(true, true);
                self.ok(&tag, "NOOP completed");
            }
            CommandBody::Select { mailbox, params } => self.select(&tag, mailbox.as_bytes(), params, false),
            CommandBody::Examine { mailbox, params } => self.select(&tag, mailbox.as_bytes(), params, true),
            CommandBody::Create { mailbox, special_use, .. } => self.create(&tag, mailbox.as_bytes(), &special_use),
            CommandBody::Delete(mailbox) => self.delete(&tag, mailbox.as_bytes()),
            CommandBody::Rename { from, to } => self.rename(&tag, from.as_bytes(), to.as_bytes()),
            CommandBody::Subscribe(mailbox) => self.subscribe(&tag, mailbox.as_bytes(), true),
            CommandBody::Unsubscribe(mailbox) => self.subscribe(&tag, mailbox.as_bytes(), false),
            CommandBody::List(l) => self.list(&tag, l.reference.as_bytes(), &l.patterns, &l.selection, &l.returns),
            CommandBody::Lsub { reference, pattern } => self.lsub(&tag, reference.as_bytes(), &pattern),
            CommandBody::Status { mailbox, items } => self.status(&tag, mailbox.as_bytes(), &items),
            CommandBody::Append { mailbox, messages } => self.append(&tag, mailbox.as_bytes(), &messages, &frame),
            CommandBody::GetQuota(root) => self.get_quota(&tag, &root),
            CommandBody::GetQuotaRoot(mailbox) => self.get_quota_root(&tag, mailbox.as_bytes()),
            CommandBody::Close => self.close_mailbox(&tag),
            CommandBody::Expunge => self.expunge(&tag, None),
            CommandBody::UidExpunge(set) => self.expunge(&tag, Some(set)),
            CommandBody::Fetch(f) => return self.fetch(&tag, f.uid, &f.set, f.attrs, f.changed_since, f.vanished),
            CommandBody::Store(s) => self.store(&tag, s.uid, &s.set, s.unchanged_since, s.op, s.silent, &s.flags),
            CommandBody::Copy { uid, set, mailbox } => self.copy(&tag, uid, &set, mailbox.as_bytes(), false),
            CommandBody::Move { uid, set, mailbox } => self.copy(&tag, uid, &set, mailbox.as_bytes(), true),
            CommandBody::Search(s) => self.search(&tag, s.uid, s.ret, &s.key),
            CommandBody::Sort(s) => self.sort(&tag, s.uid, &s.criteria, &s.key),
            CommandBody::Thread(t) => self.thread(&tag, t.uid, t.algorithm, &t.key),
            _ => {
                self.no(&tag, None, "Command not allowed now");
            }
        }
        Step::Continue
    }

    /// Sends pending untagged updates of the selected mailbox.
    /// `expunge_allowed`: false while a FETCH/STORE/SEARCH by sequence
    /// number completes (RFC 9051 §7.5.1).
    fn catch_up(&mut self, rescan: bool, expunge_allowed: bool) {
        let report = view::Report { expunge_allowed, vanished: self.qresync, condstore: self.condstore, recent: !self.rev2 };
        let State::Selected(view) = &mut self.state else { return };
        if let Err(e) = view.catch_up(&mut self.out, report, rescan) {
            if let StoreError::NoMailbox = e {
                // The mailbox was deleted or renamed under us.
                self.bye("Selected mailbox was removed");
            } else if let StoreError::Io(err) = &e {
                self.storage_errors.push(err.to_string());
            }
        }
    }

    fn user(&self) -> Arc<dyn UserStore> {
        Arc::clone(self.user.as_ref().expect("authenticated"))
    }

    /// Mailbox name from the wire: UTF-8 when the client enabled it,
    /// modified UTF-7 otherwise (RFC 9051 §5.1, RFC 6855 §3).
    fn mailbox_name(&self, raw: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(raw).map_err(|_| "Mailbox name is not valid UTF-8".to_owned())?;
        let name = if self.utf8 || self.rev2 { text.to_owned() } else { super::mutf7::decode(text).ok_or_else(|| "Mailbox name is not valid modified UTF-7".to_owned())? };
        if name.eq_ignore_ascii_case("INBOX") {
            return Ok("INBOX".into());
        }
        if let Some(rest) = name.get(..6).filter(|p| p.eq_ignore_ascii_case("INBOX/")) {
            let _ = rest;
            return Ok(format!("INBOX{}", &name[5..]));
        }
        Ok(name)
    }

    /// A mailbox name for the wire.
    fn write_mailbox(&mut self, name: &str) {
        let utf8 = self.utf8 || self.rev2;
        if utf8 {
            super::wire::write_astring(&mut self.out, name.as_bytes(), true);
        } else {
            let encoded = super::mutf7::encode(name);
            super::wire::write_astring(&mut self.out, encoded.as_bytes(), false);
        }
    }
}

/// `1:3,5` for a sorted list of UIDs.
pub fn uid_set_text(uids: &[Uid]) -> String {
    SequenceSet::from_sorted(uids).to_string()
}
