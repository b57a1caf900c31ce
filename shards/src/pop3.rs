//! The POP3 driver: sockets, TLS, timeouts and the mail-store work behind
//! the POP3 session of `varan-protocols` (RFC 1939). The maildrop is the
//! user's INBOX; UIDLs are the IMAP UIDs with the UIDVALIDITY, so POP3 and
//! IMAP clients agree, and Dovecot's UIDLs survive a migration.

use crate::conn::Conn;
use crate::live::{ConnGuard, Live, Refusal};
use crate::shard::ShardCtx;
use futures_lite::FutureExt;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;
use varan_core::mailstore::{FlagOp, Mailbox, StoreError};
use varan_core::EmailAddress;
use varan_protocols::pop3::{Action, AuthVerdict, MaildropFailure, Pop3Message, Session, SessionConfig};

const READ_CHUNK: usize = 4096;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Input held while an action is outstanding (pipelined commands).
const INPUT_PENDING_MAX: usize = 64 << 10;
/// Messages listed in one maildrop (RFC 1939 numbers them in 32 bits;
/// this bounds the memory of one session's scan listing).
const MAILDROP_MESSAGES_MAX: usize = 1_000_000;

/// Maildrops open in a POP3 session, process-wide: RFC 1939 §8 gives the
/// session an exclusive lock, so a second POP3 login gets `[IN-USE]`.
fn locks() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static LOCKS: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    LOCKS.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|p| p.into_inner())
}

/// Releases the maildrop lock when the session ends, however it ends.
struct MaildropLock(String);

impl Drop for MaildropLock {
    fn drop(&mut self) {
        locks().remove(&self.0);
    }
}

pub async fn serve(ctx: Rc<ShardCtx>, stream: glommio::net::TcpStream, implicit_tls: bool) {
    let Ok(remote) = stream.peer_addr() else { return };
    let live = ctx.live();
    let pop3 = &live.config.pop3;
    if let Err(refusal) = ctx.counters.protect.admit(&live, remote.ip(), crate::protect::Service::Pop3) {
        tracing::info!(peer = %remote, ?refusal, "POP3 connection refused");
        let mut conn = Conn::Plain(stream);
        if !implicit_tls {
            let _ = conn.write_all(refusal.pop3_reply().as_bytes()).await;
        }
        conn.close().await;
        return;
    }
    let slot = match ctx.counters.pop3.admit(remote.ip(), pop3.connections_max, pop3.connections_per_ip_max) {
        Ok(g) => g,
        Err(why) => {
            let text = match why {
                Refusal::ServerFull => "Too many connections, try again later",
                Refusal::KeyFull => "Too many connections from your address",
            };
            let mut conn = Conn::Plain(stream);
            if !implicit_tls {
                let _ = conn.write_all(format!("-ERR [SYS/TEMP] {text}\r\n").as_bytes()).await;
            }
            conn.close().await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let id = ctx.next_connection_id();
    let span = tracing::info_span!("pop3", shard = ctx.shard, conn = id, peer = %remote);
    session(ctx, stream, implicit_tls, live, slot).instrument(span).await;
}

async fn session(ctx: Rc<ShardCtx>, stream: glommio::net::TcpStream, implicit_tls: bool, live: Arc<Live>, slot: ConnGuard<std::net::IpAddr>) {
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
    let p = &live.config.pop3;
    let config = Rc::new(SessionConfig {
        hostname: live.config.server.hostname.clone(),
        tls_available: live.tls.is_some(),
        auth_without_tls: p.auth_without_tls,
        errors_max: 10,
        auth_failures_max: p.auth_failures_max,
        command_timeout: p.idle_timeout,
    });
    let session = Session::new(config, implicit_tls);
    let mut driver = Driver { ctx, live: Arc::clone(&live), session, conn, remote: *slot.key(), slot: Some(slot), target: None, mailbox: None, lock: None };
    driver.run().await;
    if live.config.server.log_sessions {
        tracing::info!(user = driver.target.as_ref().map(|a| a.to_string()).unwrap_or_else(|| "-".into()), "session end");
    }
}

struct Driver {
    ctx: Rc<ShardCtx>,
    live: Arc<Live>,
    session: Session,
    conn: Conn,
    /// The client's address (bans count failed logins per IP).
    remote: std::net::IpAddr,
    slot: Option<ConnGuard<std::net::IpAddr>>,
    /// Whose maildrop the login opens (a master login opens another user's).
    target: Option<EmailAddress>,
    mailbox: Option<Arc<dyn Mailbox>>,
    lock: Option<MaildropLock>,
}

enum Input {
    Data,
    Closed,
    TimedOut,
    Shutdown,
}

impl Driver {
    async fn close(&mut self) {
        self.slot = None;
        self.lock = None;
        self.conn.close().await;
    }

    async fn flush(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.session.has_output() {
            return true;
        }
        out.clear();
        self.session.take_output(out);
        self.conn.write_all(out).await.is_ok()
    }

    async fn run(&mut self) {
        let mut input = Vec::with_capacity(READ_CHUNK);
        let mut out = Vec::new();
        let mut shutdown_seen = false;
        loop {
            loop {
                let used = self.session.receive(&input);
                input.drain(..used);
                match self.session.poll_action() {
                    Some(Action::Close) => {
                        self.flush(&mut out).await;
                        self.close().await;
                        return;
                    }
                    Some(Action::StartTls) => {
                        input.clear();
                        if !self.flush(&mut out).await {
                            return;
                        }
                        let Some(cfg) = self.live.tls.clone() else {
                            self.session.tls_failed();
                            return;
                        };
                        let conn = &mut self.conn;
                        match glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async { Ok(conn.start_tls(cfg).await) }).await {
                            Ok(Ok(_)) => self.session.tls_started(),
                            _ => return,
                        }
                    }
                    Some(action) => self.act(action).await,
                    None if used == 0 => break,
                    None => {}
                }
                if self.session.has_output() && !self.flush(&mut out).await {
                    return;
                }
            }
            if !self.flush(&mut out).await {
                return;
            }
            if self.session.is_closed() {
                self.close().await;
                return;
            }
            if input.len() > INPUT_PENDING_MAX {
                return;
            }
            let timeout = if shutdown_seen { SHUTDOWN_FLUSH } else { self.session.timeout() };
            match self.read(&mut input, timeout, !shutdown_seen).await {
                Input::Data => {}
                Input::Closed => return,
                Input::TimedOut if shutdown_seen => return,
                Input::TimedOut => self.session.timed_out(),
                Input::Shutdown => {
                    shutdown_seen = true;
                    self.session.shutting_down();
                }
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Authenticate { authzid, authcid, password } => match self.ctx.counters.protect.login(&self.live, self.remote, &authzid, &authcid, password).await {
                Ok(target) => {
                    self.target = Some(target);
                    self.session.auth_checked(AuthVerdict::Success);
                }
                Err(v) => {
                    tracing::info!(login = %authcid, "authentication failed");
                    let verdict = if v == varan_protocols::smtp::AuthVerdict::TempFailure { AuthVerdict::TempFailure } else { AuthVerdict::Failure };
                    self.session.auth_checked(verdict);
                }
            },
            Action::OpenMaildrop { .. } => {
                let Some(target) = self.target.clone() else {
                    self.session.maildrop_failed(MaildropFailure::Permanent);
                    return;
                };
                let key = target.key();
                if !locks().insert(key.clone()) {
                    self.session.maildrop_failed(MaildropFailure::InUse);
                    return;
                }
                self.lock = Some(MaildropLock(key));
                let store = Arc::clone(&self.ctx.mailstore);
                let opened = glommio::executor().spawn_blocking(move || open_maildrop(&*store, &target)).await;
                match opened {
                    Ok((mailbox, messages, uidvalidity)) => {
                        self.mailbox = Some(mailbox);
                        self.session.maildrop_opened(messages, uidvalidity);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open the maildrop");
                        self.lock = None;
                        self.session.maildrop_failed(MaildropFailure::Temporary);
                    }
                }
            }
            Action::Retrieve { uid, .. } => {
                let Some(mailbox) = self.mailbox.clone() else {
                    self.session.message_failed();
                    return;
                };
                match glommio::executor().spawn_blocking(move || mailbox.read(uid)).await {
                    Ok(bytes) => self.session.message(&bytes),
                    Err(e) => {
                        if !matches!(e, StoreError::Expunged) {
                            tracing::error!(error = %e, uid, "cannot read a message");
                        }
                        self.session.message_failed();
                    }
                }
            }
            Action::Commit { deleted_uids } => {
                let Some(mailbox) = self.mailbox.clone() else {
                    self.session.committed(true);
                    return;
                };
                let result = glommio::executor()
                    .spawn_blocking(move || -> Result<(), StoreError> {
                        if !deleted_uids.is_empty() {
                            mailbox.store(&deleted_uids, FlagOp::Add, &[varan_core::mailstore::Flag::Deleted], None)?;
                            mailbox.expunge(Some(&deleted_uids))?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "POP3 commit failed");
                }
                self.lock = None;
                self.session.committed(result.is_ok());
            }
            Action::StartTls | Action::Close => {}
        }
    }

    async fn read(&mut self, input: &mut Vec<u8>, timeout: Duration, watch_shutdown: bool) -> Input {
        let start = input.len();
        input.resize(start + READ_CHUNK, 0);
        let conn = &mut self.conn;
        let buf = &mut input[start..];
        let read = async { Ok(Some(conn.read(buf).await)) };
        let shutdown = Rc::clone(&self.ctx.shutdown);
        let stop = async move {
            if watch_shutdown {
                shutdown.wait().await;
                Ok(None)
            } else {
                futures_lite::future::pending().await
            }
        };
        let result = glommio::timer::timeout(timeout, read.or(stop)).await;
        let outcome = match result {
            Ok(Some(Ok(0))) | Ok(Some(Err(_))) => Input::Closed,
            Ok(Some(Ok(n))) => {
                input.truncate(start + n);
                return Input::Data;
            }
            Ok(None) => Input::Shutdown,
            Err(_) => Input::TimedOut,
        };
        input.truncate(start);
        outcome
    }
}

/// An open maildrop: the INBOX, its messages in UID order (the POP3
/// message numbers) and its UIDVALIDITY.
type Maildrop = (Arc<dyn Mailbox>, Vec<Pop3Message>, u32);

fn open_maildrop(store: &dyn varan_core::mailstore::MailStore, user: &EmailAddress) -> Result<Maildrop, StoreError> {
    let mailbox = store.user(user)?.open("INBOX")?;
    mailbox.sync()?;
    let changes = mailbox.changes_since(0)?;
    let messages = changes.changed.iter().take(MAILDROP_MESSAGES_MAX).map(|m| Pop3Message { uid: m.uid, size: m.size }).collect();
    Ok((mailbox, messages, changes.status.uidvalidity))
}
