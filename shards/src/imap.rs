//! The IMAP driver: sockets, TLS, timeouts, logins and IDLE waits around
//! the IMAP session of `varan-protocols`. Commands that touch the mail
//! store run on the shard's blocking pool (the session is moved there and
//! back), everything else inline. See docs/design/imap.md.

use crate::conn::Conn;
use crate::live::{ConnGuard, Live, Refusal};
use crate::shard::ShardCtx;
use futures_lite::FutureExt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use varan_core::mailstore::MailStore;
use varan_protocols::imap::framer::{Frame, Framer};
use varan_protocols::imap::session::{Credentials, LoginOutcome, Session, SessionConfig, Step};

/// Bytes read from the socket at a time between commands. Most commands
/// are short, and an idle connection keeps this buffer for as long as it
/// waits, so it is small (thousands of idle clients are normal).
const READ_CHUNK: usize = 4 << 10;
/// Read size in IDLE: the client can only send `DONE`.
const IDLE_READ_CHUNK: usize = 256;
/// Read size while a command (an APPEND literal) is half-received.
const BULK_READ_CHUNK: usize = 64 << 10;
/// A client has this long to finish a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a shutdown notice, how long a session may still take to go away.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Input held while the session works through earlier commands (pipelined
/// commands beyond this are not read until the backlog shrinks).
const INPUT_PENDING_MAX: usize = 1 << 20;

pub async fn serve(ctx: Rc<ShardCtx>, stream: glommio::net::TcpStream, implicit_tls: bool) {
    let (Ok(remote), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else { return };
    let live = ctx.live();
    let imap = &live.config.imap;
    if let Err(refusal) = ctx.counters.protect.admit(&live, remote.ip(), crate::protect::Service::Imap) {
        tracing::info!(peer = %remote, ?refusal, "IMAP connection refused");
        let mut conn = Conn::Plain(stream);
        // Implicit TLS: the client cannot read a cleartext BYE; just close.
        if !implicit_tls {
            let _ = conn.write_all(refusal.imap_reply().as_bytes()).await;
        }
        conn.close().await;
        return;
    }
    let slot = match ctx.counters.imap.admit(remote.ip(), imap.connections_max, imap.connections_per_ip_max) {
        Ok(g) => g,
        Err(why) => {
            let text = match why {
                Refusal::ServerFull => "Too many connections, try again later",
                Refusal::KeyFull => "Too many connections from your address",
            };
            let mut conn = Conn::Plain(stream);
            // Implicit TLS: the client cannot read a cleartext BYE; just close.
            if !implicit_tls {
                let _ = conn.write_all(format!("* BYE [UNAVAILABLE] {text}\r\n").as_bytes()).await;
            }
            conn.close().await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let id = ctx.next_connection_id();
    let span = tracing::info_span!("imap", shard = ctx.shard, conn = id, peer = %remote);
    session(ctx, stream, implicit_tls, live, remote, local, slot).instrument(span).await;
}

async fn session(
    ctx: Rc<ShardCtx>,
    stream: glommio::net::TcpStream,
    implicit_tls: bool,
    live: Arc<Live>,
    _remote: SocketAddr,
    _local: SocketAddr,
    slot: ConnGuard<std::net::IpAddr>,
) {
    if live.config.server.log_sessions {
        tracing::info!(tls = implicit_tls, "session start");
    }
    let mut conn = Conn::Plain(stream);
    if implicit_tls {
        let Some(cfg) = live.tls.clone() else { return };
        match glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async { Ok(conn.start_tls(cfg).await) }).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
    let config = Arc::new(SessionConfig::from_config(&live.config, live.tls.is_some()));
    let session = Session::new(config, Arc::clone(&ctx.imap_cache), implicit_tls);
    let framer = Framer::new(session.framer_limits());
    let mut driver =
        Driver { ctx, live: Arc::clone(&live), session: Some(session), framer, conn, remote: *slot.key(), slot: Some(slot), user_slot: None, user: None, tls: implicit_tls };
    driver.run().await;
    if live.config.server.log_sessions {
        tracing::info!(user = driver.user.as_deref().unwrap_or("-"), "session end");
    }
}

struct Driver {
    ctx: Rc<ShardCtx>,
    live: Arc<Live>,
    /// `None` only while the session is away on the blocking pool.
    session: Option<Session>,
    framer: Framer,
    conn: Conn,
    /// The client's address (bans count failed logins per IP).
    remote: std::net::IpAddr,
    /// Places in the connection limits, given back before the socket closes.
    slot: Option<ConnGuard<std::net::IpAddr>>,
    user_slot: Option<ConnGuard<String>>,
    user: Option<String>,
    /// TLS is active (implicit, or after STARTTLS).
    tls: bool,
}

enum Input {
    Data,
    Closed,
    TimedOut,
    Shutdown,
    /// IDLE: the selected mailbox changed.
    Changed,
}

/// What the input is parsed as next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Commands,
    /// One raw line for AUTHENTICATE.
    SaslLine,
    /// IDLE: waiting for DONE or a mailbox change.
    Idle,
}

impl Driver {
    fn s(&mut self) -> &mut Session {
        self.session.as_mut().expect("session is home")
    }

    async fn close(&mut self) {
        self.slot = None;
        self.user_slot = None;
        self.conn.close().await;
    }

    async fn flush(&mut self) -> bool {
        let out = self.s().take_output();
        if out.is_empty() {
            return true;
        }
        self.conn.write_all(&out).await.is_ok()
    }

    async fn run(&mut self) {
        self.s().greeting();
        let mut input: Vec<u8> = Vec::new();
        let mut mode = Mode::Commands;
        let mut shutdown_seen = false;
        loop {
            // Work through what is buffered.
            loop {
                let step = match mode {
                    Mode::Commands => {
                        let (used, frame) = self.framer.feed(&input);
                        input.drain(..used);
                        match frame {
                            Some(Frame::Continue) => {
                                self.s().continue_literal();
                                Step::Continue
                            }
                            Some(frame) => self.s().frame(frame),
                            None => break,
                        }
                    }
                    Mode::SaslLine | Mode::Idle => {
                        let (used, line) = self.framer.feed_line(&input);
                        input.drain(..used);
                        match (line, mode) {
                            (Some(line), Mode::SaslLine) => self.s().sasl_line(line),
                            (Some(line), _) => self.s().idle_line(line),
                            (None, _) => break,
                        }
                    }
                };
                let tls_before = self.tls;
                mode = match self.step(step).await {
                    Some(m) => m,
                    None => return,
                };
                if self.tls != tls_before {
                    // Nothing sent in cleartext before the handshake may be
                    // taken as a command afterwards (command injection,
                    // RFC 9051 §6.2.1 / CVE-2011-0411 class).
                    input.clear();
                    self.framer = Framer::new(self.s().framer_limits());
                }
                // Stream large responses out as they are produced.
                if self.s().output_len() >= 64 << 10 && !self.flush().await {
                    return;
                }
            }
            if !self.flush().await {
                return;
            }
            if self.s().is_closed() {
                self.close().await;
                return;
            }
            let limits = self.s().framer_limits();
            self.framer.set_limits(limits);
            if input.len() > INPUT_PENDING_MAX {
                tracing::error!(pending = input.len(), "session stopped consuming input; closing");
                return;
            }
            let timeout = if shutdown_seen { SHUTDOWN_FLUSH } else { self.s().timeout() };
            match self.read(&mut input, timeout, !shutdown_seen, mode == Mode::Idle).await {
                Input::Data => {}
                Input::Closed => return,
                Input::TimedOut if shutdown_seen => return,
                Input::TimedOut => self.s().timed_out(),
                Input::Shutdown => {
                    shutdown_seen = true;
                    self.s().shutting_down();
                }
                Input::Changed => {
                    self.s().idle_changed();
                    if self.work().await.is_none() {
                        return;
                    }
                }
            }
        }
    }

    /// Carries out what the session asked for; the next input mode, or
    /// `None` when the connection is finished.
    async fn step(&mut self, mut step: Step) -> Option<Mode> {
        loop {
            step = match step {
                Step::Continue => return Some(Mode::Commands),
                Step::Work => {
                    let next = self.work().await?;
                    if self.s().output_len() >= 64 << 10 && !self.flush().await {
                        return None;
                    }
                    next
                }
                Step::Authenticate(creds) => self.login(creds).await,
                Step::SaslLine => {
                    if !self.flush().await {
                        return None;
                    }
                    return Some(Mode::SaslLine);
                }
                Step::StartTls => {
                    if !self.flush().await {
                        return None;
                    }
                    let cfg = self.live.tls.clone()?;
                    let conn = &mut self.conn;
                    match glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async { Ok(conn.start_tls(cfg).await) }).await {
                        Ok(Ok(_)) => {
                            self.tls = true;
                            self.s().tls_started();
                        }
                        _ => return None,
                    }
                    return Some(Mode::Commands);
                }
                Step::Idle => {
                    if !self.flush().await {
                        return None;
                    }
                    return Some(Mode::Idle);
                }
                Step::Close => {
                    self.flush().await;
                    self.close().await;
                    return None;
                }
            };
        }
    }

    /// Runs the session's pending store work on the blocking pool.
    async fn work(&mut self) -> Option<Step> {
        let mut session = self.session.take().expect("session is home");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        session.set_now(now);
        let (mut session, step) = glommio::executor()
            .spawn_blocking(move || {
                let step = session.work();
                (session, step)
            })
            .await;
        for e in session.take_storage_errors() {
            tracing::error!(user = self.user.as_deref().unwrap_or("-"), error = %e, "mail store error");
        }
        self.session = Some(session);
        Some(step)
    }

    async fn login(&mut self, creds: Credentials) -> Step {
        let verdict = self.ctx.counters.protect.login(&self.live, self.remote, &creds.authzid, &creds.authcid, creds.password).await;
        let address = match verdict {
            Ok(a) => a,
            Err(v) => {
                tracing::info!(login = %creds.authcid, "authentication failed");
                let outcome = if v == varan_protocols::smtp::AuthVerdict::TempFailure { LoginOutcome::TempFailure } else { LoginOutcome::Failed };
                return self.s().login_result(outcome);
            }
        };
        let imap = &self.live.config.imap;
        let key = address.key();
        match self.ctx.counters.imap_users.admit(key.clone(), usize::MAX, imap.connections_per_user_max) {
            Ok(g) => self.user_slot = Some(g),
            Err(_) => return self.s().login_result(LoginOutcome::TooManySessions),
        }
        let store = Arc::clone(&self.ctx.mailstore);
        let target = address.clone();
        let opened = glommio::executor().spawn_blocking(move || store.user(&target)).await;
        match opened {
            Ok(user) => {
                let account = self.live.directories.account(&address).ok().flatten();
                let quota = account.as_ref().map(|a| self.live.quota_of(a)).filter(|q| *q != u64::MAX);
                let trash_extra = self.live.config.domain(address.domain()).map_or(0, |d| d.trash_extra_quota);
                self.user = Some(key);
                tracing::info!(user = %address, "logged in");
                self.s().login_result(LoginOutcome::Ok { user, username: address.to_string(), quota_limit: quota, trash_extra })
            }
            Err(e) => {
                tracing::error!(error = %e, user = %address, "cannot open the mail store");
                self.user_slot = None;
                self.s().login_result(LoginOutcome::TempFailure)
            }
        }
    }

    async fn read(&mut self, input: &mut Vec<u8>, timeout: Duration, watch_shutdown: bool, idle: bool) -> Input {
        let start = input.len();
        let mid_command = start > 0 || !self.framer.is_idle();
        let chunk = match (idle, mid_command) {
            (true, _) => IDLE_READ_CHUNK,
            (false, false) => READ_CHUNK,
            (false, true) => BULK_READ_CHUNK,
        };
        // Give back what a large command needed once it is done.
        if !mid_command && input.capacity() > chunk {
            input.shrink_to(chunk);
        }
        input.resize(start + chunk, 0);
        let changed = if idle { self.s().idle_watch() } else { None };
        let conn = &mut self.conn;
        let buf = &mut input[start..];
        let read = async { Ok(Some(Ok(conn.read(buf).await))) };
        let shutdown = Rc::clone(&self.ctx.shutdown);
        let stop = async move {
            if watch_shutdown {
                shutdown.wait().await;
                Ok(None)
            } else {
                futures_lite::future::pending().await
            }
        };
        let change = async move {
            match changed {
                Some(f) => {
                    f.await;
                    Ok(Some(Err(())))
                }
                None => futures_lite::future::pending().await,
            }
        };
        let result = glommio::timer::timeout(timeout, read.or(stop).or(change)).await;
        let outcome = match result {
            Ok(Some(Ok(Ok(0)))) | Ok(Some(Ok(Err(_)))) => Input::Closed,
            Ok(Some(Ok(Ok(n)))) => {
                input.truncate(start + n);
                return Input::Data;
            }
            Ok(Some(Err(()))) => Input::Changed,
            Ok(None) => Input::Shutdown,
            Err(_) => Input::TimedOut,
        };
        input.truncate(start);
        outcome
    }
}
