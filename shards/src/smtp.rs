//! The SMTP connection driver: feeds socket bytes to the sans-IO
//! [`Session`] and carries out its actions (directory lookups, AUTH, TLS,
//! storing the message). Policy decisions live in [`crate::policy`].

use crate::conn::Conn;
use crate::shard::ShardCtx;
use crate::{headers, policy};
use futures_lite::FutureExt;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use varan_core::directory::Account;
use varan_core::queue::{BodyInfo, Notify, QueueId, Ret};
use varan_protocols::smtp::{Action, AuthVerdict, BodySink, ListenerKind, PeerInfo, Reply, Session, SessionConfig, SinkError, StoreOutcome, TlsInfo};
use varan_protocols::smtp::{BodyType, DsnNotify, DsnRet};
use varan_storage::journal::{Content, Delivery, JournalRecord, Outbound, OutboundRecipient};
use varan_storage::spool::Spool;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 << 10;
/// Unconsumed input kept at most. The session consumes every complete
/// command and streams DATA, so more than this means a defect; the
/// connection is then closed rather than grown.
const INPUT_PENDING_MAX: usize = 256 << 10;
/// A TLS handshake must finish within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// After shutdown began, how long a session may take to see its 421.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The reply when storing fails on our side (RFC 3463 4.3.0): the client
/// keeps the message and retries; the log has the cause.
const LOCAL_ERROR: StoreOutcome = StoreOutcome::TempFail(Reply::fixed(451, (4, 3, 0), "Local error in processing, try again later"));

/// Streams DATA into a [`Spool`] (memory first, then a spool file).
struct SpoolSink {
    dir: std::path::PathBuf,
    memory_max: usize,
    spool: Option<Spool>,
    failed: bool,
}

impl BodySink for SpoolSink {
    fn begin(&mut self) {
        if let Some(old) = self.spool.take() {
            old.discard();
        }
        self.failed = false;
        self.spool = Some(Spool::new(&self.dir, self.memory_max));
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let Some(spool) = self.spool.as_mut() else { return Err(SinkError::Io(std::io::Error::other("no message in progress"))) };
        spool.write(bytes).map_err(|e| {
            if !self.failed {
                tracing::error!(error = %e, "spool write failed");
            }
            self.failed = true;
            SinkError::Io(e)
        })
    }
}

/// Recipients accepted in the current transaction, with their mailboxes;
/// recipients in `relay` go to the outbound queue: remote ones, and with
/// `[lmtp] enabled` local ones too (their mailboxes in `lmtp`), for the
/// queue runner to hand to the LMTP server.
#[derive(Default)]
struct Txn {
    by_recipient: HashMap<String, Vec<Account>>,
    relay: std::collections::HashSet<String>,
    lmtp: HashMap<String, Vec<Account>>,
}

pub async fn serve(ctx: Rc<ShardCtx>, stream: glommio::net::TcpStream, kind: ListenerKind) {
    let (Ok(remote), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else { return };
    let live = ctx.live();
    let smtp = &live.config.smtp;
    let allow_listed = match ctx.counters.protect.admit(&live, remote.ip(), crate::protect::Service::Smtp) {
        Ok(allowed) => allowed,
        Err(refusal) => {
            tracing::info!(peer = %remote, ?refusal, "SMTP connection refused");
            let mut conn = Conn::Plain(stream);
            let _ = conn.write_all(refusal.smtp_reply(&live.config.server.hostname).as_bytes()).await;
            conn.close().await;
            return;
        }
    };
    let slot = match ctx.counters.smtp.admit(remote.ip(), smtp.connections_max, smtp.connections_per_ip_max) {
        Ok(g) => g,
        Err(why) => {
            let text = match why {
                crate::live::Refusal::ServerFull => "Too many connections, try again later",
                crate::live::Refusal::KeyFull => "Too many connections from your address",
            };
            let mut conn = Conn::Plain(stream);
            let _ = conn.write_all(format!("421 4.7.0 {} {text}\r\n", live.config.server.hostname).as_bytes()).await;
            conn.close().await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let id = ctx.next_connection_id();
    // One span per connection, entered only while this task runs.
    let span = tracing::info_span!("smtp", shard = ctx.shard, conn = id, peer = %remote);
    session(ctx, stream, kind, live, remote, local, (slot, allow_listed)).instrument(span).await;
}

async fn session(
    ctx: Rc<ShardCtx>,
    stream: glommio::net::TcpStream,
    kind: ListenerKind,
    live: Arc<crate::live::Live>,
    remote: std::net::SocketAddr,
    local: std::net::SocketAddr,
    (slot, allow_listed): (crate::live::ConnGuard<std::net::IpAddr>, bool),
) {
    let smtp = &live.config.smtp;
    if live.config.server.log_sessions {
        tracing::info!(listener = ?kind, "session start");
    }
    let mut conn = Conn::Plain(stream);
    let mut tls = None;
    if kind == ListenerKind::Smtps {
        let Some(cfg) = live.tls.clone() else { return };
        match glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async { Ok(conn.start_tls(cfg).await) }).await {
            Ok(Ok(p)) => tls = Some(TlsInfo { protocol: p.protocol, cipher: p.cipher }),
            _ => return,
        }
    }
    // Allow-listed (protection.lists.ip_allow) and full_allowed_ips clients
    // skip the DNS checks too.
    let exempt = allow_listed || smtp.full_allowed_ips.iter().any(|n| n.contains(remote.ip()));
    let checks = crate::checks::ConnChecks::start(Rc::clone(&ctx.resolver), &live.config.checks, remote.ip(), exempt);
    let mut config = SessionConfig::from_config(smtp, &live.config.server.hostname, kind, live.tls.is_some());
    let c = &live.config.checks;
    config.check_sender = !exempt && (c.spf || c.dmarc || c.helo_strict || (c.dnsbl && !c.dnsbl_zones.is_empty()));
    let config = Rc::new(config);
    let mut session = Session::new(config, PeerInfo { remote, local }, tls);
    session.set_allow_listed(allow_listed);
    session.set_sender_lists(live.protect.senders.clone());
    let mut driver = Driver {
        ctx: Rc::clone(&ctx),
        live: Arc::clone(&live),
        sink: SpoolSink { dir: ctx.spool_dir.clone(), memory_max: live.config.storage.spool_memory_max as usize, spool: None, failed: false },
        session,
        conn,
        txn: Txn::default(),
        remote,
        slot: Some(slot),
        checks,
    };
    let messages = driver.run().await;
    if live.config.server.log_sessions {
        tracing::info!(messages, "session end");
    }
}

struct Driver {
    ctx: Rc<ShardCtx>,
    live: Arc<crate::live::Live>,
    sink: SpoolSink,
    session: Session,
    conn: Conn,
    txn: Txn,
    remote: std::net::SocketAddr,
    /// The connection's place in the connection limits; given back before the
    /// socket closes, so a client that saw our close can reconnect at once.
    slot: Option<crate::live::ConnGuard<std::net::IpAddr>>,
    /// DNSBL/FCrDNS started at connect, SPF of the transaction.
    checks: crate::checks::ConnChecks,
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
        self.conn.close().await;
    }

    /// Runs the session to its end; returns the number of messages stored.
    async fn run(&mut self) -> u32 {
        let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut stored = 0u32;
        let mut shutdown_seen = false;
        loop {
            // Process everything we have; each action is carried out before
            // the session sees more input (it stops at a pending action,
            // and when 64 KiB of replies wait to be sent).
            let mut consumed_any = false;
            loop {
                let used = self.session.receive(&input, &mut self.sink);
                input.drain(..used);
                consumed_any |= used > 0;
                match self.session.poll_action() {
                    Some(Action::StartTls) => {
                        input.clear();
                        if !self.flush(&mut out).await || !self.upgrade().await {
                            return stored;
                        }
                    }
                    Some(Action::Close) => {
                        self.flush(&mut out).await;
                        self.close().await;
                        return stored;
                    }
                    Some(action) => stored += self.act(action).await,
                    None if used == 0 => break,
                    None => {}
                }
            }
            let flushed = self.session.has_output();
            if !self.flush(&mut out).await {
                return stored;
            }
            if self.session.is_closed() {
                self.close().await;
                return stored;
            }
            // Replies were holding input back: go on with what is buffered.
            if !input.is_empty() && (flushed || consumed_any) {
                continue;
            }
            if input.len() > INPUT_PENDING_MAX {
                tracing::error!(pending = input.len(), "session stopped consuming input; closing");
                return stored;
            }
            let timeout = if shutdown_seen { SHUTDOWN_FLUSH } else { self.session.timeout() };
            match self.read(&mut input, timeout, !shutdown_seen).await {
                Input::Data => {}
                Input::Closed => return stored,
                Input::TimedOut if shutdown_seen => return stored,
                Input::TimedOut => self.session.timed_out(),
                Input::Shutdown => {
                    shutdown_seen = true;
                    self.session.shutting_down();
                }
            }
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

    async fn flush(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.session.has_output() {
            return true;
        }
        out.clear();
        self.session.take_output(out);
        self.conn.write_all(out).await.is_ok()
    }

    async fn upgrade(&mut self) -> bool {
        let Some(cfg) = self.live.tls.clone() else {
            self.session.tls_failed();
            return false;
        };
        let conn = &mut self.conn;
        match glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async { Ok(conn.start_tls(cfg).await) }).await {
            Ok(Ok(p)) => {
                self.txn = Txn::default();
                self.session.tls_started(TlsInfo { protocol: p.protocol, cipher: p.cipher });
                true
            }
            _ => {
                self.session.tls_failed();
                false
            }
        }
    }

    /// Carries out one action; returns 1 when a message was stored.
    async fn act(&mut self, action: Action) -> u32 {
        match action {
            Action::CheckSender { sender } => {
                let helo = self.session.helo().unwrap_or_default().to_owned();
                let info = crate::checks::SenderInfo {
                    helo: &helo,
                    sender: sender.as_ref(),
                    authenticated: self.session.authenticated().is_some(),
                    hostname: &self.live.config.server.hostname,
                    local_ip: self.session.peer().local.ip(),
                };
                let verdict = self.checks.check_sender(&info).await;
                self.session.sender_checked(verdict);
                0
            }
            Action::CheckRecipient { address, index } => {
                if index == 0 {
                    self.txn = Txn::default();
                }
                let mut decision = policy::recipient(&self.live, &address, self.session.authenticated().is_some(), self.remote.ip());
                if let Ok(policy::Route::Local(accounts)) = &decision {
                    if let Err(full) = policy::quota(&self.ctx, &self.live, &address, accounts).await {
                        decision = Err(full);
                    }
                }
                if matches!(decision, Ok(policy::Route::Local(_))) && self.session.authenticated().is_none() {
                    let sender = self.session.envelope().mail_from.as_ref();
                    if let Some(later) = self.ctx.counters.protect.greylist(&self.live, self.remote.ip(), self.session.allow_listed(), sender, &address) {
                        decision = Err(later);
                    }
                }
                match decision {
                    Ok(policy::Route::Local(accounts)) if self.live.config.lmtp.enabled => {
                        self.txn.relay.insert(address.key());
                        self.txn.lmtp.insert(address.key(), accounts);
                        self.session.recipient_checked(varan_protocols::smtp::RcptVerdict::Accept);
                    }
                    Ok(policy::Route::Local(accounts)) => {
                        self.txn.by_recipient.insert(address.key(), accounts);
                        self.session.recipient_checked(varan_protocols::smtp::RcptVerdict::Accept);
                    }
                    Ok(policy::Route::Relay) => {
                        self.txn.relay.insert(address.key());
                        self.session.recipient_checked(varan_protocols::smtp::RcptVerdict::Accept);
                    }
                    Err(reply) => self.session.recipient_checked(varan_protocols::smtp::RcptVerdict::Reject(reply)),
                }
                0
            }
            Action::Authenticate { authzid, authcid, password, .. } => {
                let verdict = match self.ctx.counters.protect.login(&self.live, self.remote.ip(), &authzid, &authcid, password).await {
                    Ok(_) => AuthVerdict::Success,
                    Err(v) => v,
                };
                if verdict != AuthVerdict::Success {
                    tracing::info!(login = %authcid, "authentication failed");
                }
                self.session.auth_checked(verdict);
                0
            }
            Action::MessageComplete => self.store().await,
            Action::StartTls | Action::Close => 0,
        }
    }

    async fn store(&mut self) -> u32 {
        let Some(spool) = self.sink.spool.take() else {
            self.session.message_stored(LOCAL_ERROR);
            return 0;
        };
        if self.sink.failed {
            spool.discard();
            self.session.message_stored(LOCAL_ERROR);
            return 0;
        }
        // A spilled spool is fdatasync'ed by finish: do that off the shard.
        let finished = if spool.spilled_path().is_some() { glommio::executor().spawn_blocking(move || spool.finish()).await } else { spool.finish() };
        let content = match finished {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "spool finish failed");
                self.session.message_stored(LOCAL_ERROR);
                return 0;
            }
        };
        let (content, verdict) = match self.message_checks(content).await {
            Ok(v) => v,
            Err(reply) => {
                self.session.message_stored(StoreOutcome::PermFail(reply));
                return 0;
            }
        };
        if let Err(e) = self.ensure_mailboxes().await {
            tracing::error!(error = %e, "cannot create mailbox");
            self.session.message_stored(LOCAL_ERROR);
            return 0;
        }
        let id = self.ctx.storage.next_id();
        // A relayed message is named by its outbound queue id everywhere
        // (250 reply, Received lines, `varan queue list`); local-only mail
        // keeps the short form.
        let queue_id = match QueueId::from_journal(id, self.ctx.shard) {
            Some(q) if !self.txn.relay.is_empty() => q.to_string(),
            _ => format!("{:X}{:02X}", id, self.ctx.shard),
        };
        // Signed when anything leaves for another domain (not for mail that
        // only goes to the local LMTP server).
        let remote = self.txn.relay.iter().any(|k| !self.txn.lmtp.contains_key(k));
        let signature = if remote { self.dkim_signature(&content).await } else { None };
        let mut record = self.record(id, &queue_id, content, &verdict);
        if !self.txn.relay.is_empty() {
            match self.outbound(id, &verdict.headers) {
                Some(mut o) => {
                    if let Some(header) = signature {
                        o.body.size += header.len() as u64;
                        o.prefix.extend_from_slice(&header);
                    }
                    tracing::info!(queue_id = %o.queue_id, recipients = o.recipients.len(), "queued for outbound delivery");
                    record.outbound = Some(Box::new(o));
                }
                None => {
                    tracing::error!(record = id, "no queue id for this record");
                    self.session.message_stored(LOCAL_ERROR);
                    return 0;
                }
            }
        }
        let size = self.session.message_sizes().0;
        match self.ctx.storage.commit(record).await {
            Ok(()) => {
                let accounts: Vec<&Account> = self.txn.by_recipient.values().flatten().collect();
                self.ctx.quota_add(&accounts, size);
                self.session.message_stored(StoreOutcome::Accepted { queue_id });
                1
            }
            Err(e) => {
                tracing::error!(error = %e, "message not stored");
                self.session.message_stored(LOCAL_ERROR);
                0
            }
        }
    }

    /// The end-of-data checks (DKIM, ARC, DMARC; docs/design/auth-checks.md)
    /// of an unauthenticated message: the header fields for its copies and
    /// whether it goes to Junk, or the refusal (DMARC `p=reject`). Forged
    /// Authentication-Results fields naming us are renamed in `content`.
    /// Hashing and signature checks run on the blocking pool.
    async fn message_checks(&mut self, content: Content) -> Result<(Content, crate::checks::MessageVerdict), Reply> {
        use crate::checks::{message, MessageJob, MessageVerdict};
        let mut verdict = MessageVerdict::default();
        if !self.checks.applies(self.session.authenticated().is_some()) {
            return Ok((content, verdict));
        }
        let _ = self.checks.verified_name().await;
        let listed = self.checks.listed().await.to_vec();
        if !listed.is_empty() {
            // Seed §6.2.1.17: listed below the threshold, delivered marked.
            verdict.headers.extend_from_slice(format!("X-Blacklisted: {}\n", listed.join(", ")).as_bytes());
        }
        let config = self.checks.config().clone();
        if !(config.spf || config.dkim || config.dmarc || config.arc) {
            return Ok((content, verdict));
        }
        let job = MessageJob {
            authserv_id: self.live.config.server.hostname.clone(),
            remote: self.remote.ip(),
            helo: self.session.helo().unwrap_or_default().to_owned(),
            mail_from: self.session.envelope().mail_from.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            spf_domain: self.checks.spf_domain.clone(),
            spf: self.checks.spf.clone(),
            config,
        };
        let (dkim_max, arc, spf_domain) = (job.config.dkim_signatures_max, job.config.arc, job.spf_domain.clone());
        let source = content.clone();
        let prepared = glommio::executor()
            .spawn_blocking(move || -> std::io::Result<(Vec<u8>, message::Needed)> {
                let crlf = match &source {
                    Content::Inline(b) => crate::checks::to_crlf(b),
                    Content::Spooled(path) => crate::checks::to_crlf(&std::fs::read(path)?),
                };
                let needed = std::panic::catch_unwind(|| message::needed(&crlf, dkim_max, &spf_domain, arc)).unwrap_or_default();
                Ok((crlf, needed))
            })
            .await;
        let (crlf, needed) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the message for its checks");
                return Ok((content, verdict));
            }
        };
        let records = message::Prefetched::new(self.checks.fetch(&needed).await);
        let hostname = job.authserv_id.clone();
        let (content, (field, disposition, domain)) = glommio::executor()
            .spawn_blocking(move || {
                let result = job.run(&crlf, &records);
                let content = untrust_forged(content, &hostname);
                (content, result)
            })
            .await;
        match disposition {
            message::Disposition::Reject => {
                tracing::info!(%domain, "message refused: DMARC policy reject");
                if let Content::Spooled(path) = &content {
                    let _ = std::fs::remove_file(path);
                }
                return Err(Reply::new(550, (5, 7, 1), format!("Message rejected: DMARC policy of {domain} says reject")));
            }
            message::Disposition::Quarantine => {
                tracing::info!(%domain, "message quarantined: DMARC policy quarantine");
                verdict.quarantine = true;
            }
            message::Disposition::Deliver => {}
        }
        verdict.headers.extend_from_slice(&field);
        Ok((content, verdict))
    }

    /// Creates the mailbox tree (INBOX and special folders) of accounts
    /// receiving their first message, on the blocking pool.
    async fn ensure_mailboxes(&self) -> std::io::Result<()> {
        let missing: Vec<varan_core::EmailAddress> = {
            let ensured = self.ctx.ensured.borrow();
            self.txn.by_recipient.values().flatten().filter(|a| !ensured.contains(&a.address.key())).map(|a| a.address.clone()).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let live = Arc::clone(&self.live);
        let done = missing.clone();
        glommio::executor().spawn_blocking(move || missing.iter().try_for_each(|a| live.layout.ensure_user(a).map(drop))).await?;
        let mut ensured = self.ctx.ensured.borrow_mut();
        if ensured.len() > 100_000 {
            ensured.clear();
        }
        ensured.extend(done.iter().map(|a| a.key()));
        Ok(())
    }

    fn record(&self, id: u64, queue_id: &str, content: Content, verdict: &crate::checks::MessageVerdict) -> JournalRecord {
        let env = self.session.envelope();
        let (lf_size, crlf_size) = self.session.message_sizes();
        let now = std::time::SystemTime::now();
        let mut seen = std::collections::HashSet::new();
        let mut deliveries = Vec::new();
        for rcpt in &env.recipients {
            let Some(accounts) = self.txn.by_recipient.get(&rcpt.address.key()) else { continue };
            for account in accounts {
                if !seen.insert(account.address.key()) {
                    continue; // one copy per mailbox, however it was addressed
                }
                let prefix = headers::trace(&self.trace_info(queue_id, Some(&account.address), now, &verdict.headers));
                let lines = prefix.iter().filter(|&&b| b == b'\n').count() as u64;
                let name = self.live.layout.new_message_name(self.ctx.shard, id, lf_size + prefix.len() as u64, crlf_size + prefix.len() as u64 + lines, now);
                let user_dir = self.live.layout.user_dir(&account.address);
                // DMARC p=quarantine: the Junk folder (created with the
                // mailbox tree); INBOX if its name cannot be a folder.
                let junk = verdict.quarantine.then_some(self.live.config.storage.junk_folder.as_str());
                let path = self.live.layout.delivery_path(&user_dir, junk, &name).unwrap_or_else(|_| user_dir.join("new").join(&name));
                deliveries.push(Delivery { path, prefix });
            }
        }
        JournalRecord { id, deliveries, content, outbound: None }
    }

    /// What the trace headers (Received, Delivered-To) say of this session.
    fn trace_info<'a>(&'a self, queue_id: &'a str, recipient: Option<&'a varan_core::EmailAddress>, now: std::time::SystemTime, checks: &'a [u8]) -> headers::TraceInfo<'a> {
        headers::TraceInfo {
            hostname: &self.live.config.server.hostname,
            helo: self.session.helo(),
            remote: self.remote.ip(),
            remote_name: self.checks.known_name(),
            checks,
            tls: self.session.tls(),
            authenticated: self.session.authenticated().is_some(),
            esmtp: self.session.is_esmtp(),
            queue_id,
            sender: self.session.envelope().mail_from.as_ref(),
            recipient,
            now,
        }
    }

    /// A `DKIM-Signature` header (LF line endings) for relayed mail whose
    /// From domain, or else envelope sender domain, has a key. Signing
    /// (about a millisecond of CPU for RSA-2048, plus reading a spooled
    /// message) runs on the blocking pool. A failure is logged and the
    /// message goes unsigned rather than refused.
    async fn dkim_signature(&self, content: &Content) -> Option<Vec<u8>> {
        if self.live.dkim.is_empty() {
            return None;
        }
        let envelope_domain = self.session.envelope().mail_from.as_ref().map(|a| a.domain().to_ascii_lowercase());
        let live = Arc::clone(&self.live);
        let content = content.clone();
        let signed = glommio::executor()
            .spawn_blocking(move || {
                let bytes = match &content {
                    Content::Inline(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                    Content::Spooled(path) => std::borrow::Cow::Owned(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
                };
                let from = varan_storage::dkim::from_domain(&bytes);
                let Some(domain) = live.dkim.signing_domain(from.as_deref(), envelope_domain.as_deref()) else { return Ok(None) };
                let domain = domain.to_owned();
                live.dkim.sign(&domain, &bytes).transpose().map(|h| h.map(|h| (domain, h)))
            })
            .await;
        match signed {
            Ok(Some((domain, header))) => {
                tracing::debug!(%domain, "DKIM signed");
                Some(header.replace("\r\n", "\n").into_bytes())
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "DKIM signing failed; the message is sent unsigned");
                None
            }
        }
    }

    /// The outbound envelope of the relayed recipients (RFC 3461 DSN
    /// parameters decoded from xtext) with our Received line for the
    /// queue's copy. `None` only when the record id cannot form a queue id.
    fn outbound(&self, id: u64, checks: &[u8]) -> Option<Outbound> {
        let queue_id = QueueId::from_journal(id, self.ctx.shard)?;
        let env = self.session.envelope();
        let now = std::time::SystemTime::now();
        let xtext = |t: &str| varan_protocols::smtp::xtext_decode(t).map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut recipients = Vec::new();
        // RCPT addresses seen, and final LMTP mailboxes queued (one copy
        // each, however often they were addressed).
        let mut seen = std::collections::HashSet::new();
        let mut mailboxes = std::collections::HashSet::new();
        for rcpt in env.recipients.iter().filter(|r| self.txn.relay.contains(&r.address.key())) {
            if !seen.insert(rcpt.address.key()) {
                continue;
            }
            let notify = match &rcpt.notify {
                None => Notify::default(),
                Some(list) => Notify {
                    explicit: true,
                    never: list.contains(&DsnNotify::Never),
                    success: list.contains(&DsnNotify::Success),
                    failure: list.contains(&DsnNotify::Failure),
                    delay: list.contains(&DsnNotify::Delay),
                },
            };
            let orcpt = rcpt.orcpt.as_deref().and_then(xtext);
            match self.txn.lmtp.get(&rcpt.address.key()) {
                // LMTP: one recipient per final mailbox (an alias or group
                // expands here); ORCPT keeps the address the client used.
                Some(accounts) => {
                    for account in accounts {
                        if mailboxes.insert(account.address.key()) {
                            let orcpt = orcpt.clone().or_else(|| Some(format!("rfc822;{}", rcpt.address)));
                            recipients.push(OutboundRecipient { address: account.address.to_string(), orcpt, notify });
                        }
                    }
                }
                None => recipients.push(OutboundRecipient { address: rcpt.address.to_string(), orcpt, notify }),
            }
        }
        let single = match recipients.as_slice() {
            [one] => varan_core::EmailAddress::parse(&one.address).ok(),
            _ => None,
        };
        let queue_id_text = queue_id.to_string();
        // The checks' fields (only unauthenticated mail has them: local
        // recipients handed to LMTP) go above our Received, as locally.
        let mut received = checks.to_vec();
        received.extend_from_slice(&headers::received(&self.trace_info(&queue_id_text, single.as_ref(), now, b"")));
        let (lf_size, _) = self.session.message_sizes();
        Some(Outbound {
            queue_id,
            sender: env.mail_from.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            recipients,
            envid: env.envid.as_deref().and_then(xtext),
            ret: if env.ret == Some(DsnRet::Full) { Ret::Full } else { Ret::Headers },
            body: BodyInfo { eight_bit: env.body == BodyType::EightBitMime || self.session.message_8bit(), smtputf8: env.smtputf8, size: lf_size + received.len() as u64 },
            submitter: self.session.authenticated().map(str::to_owned),
            queued_at: now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            prefix: received,
        })
    }
}

/// RFC 8601 §5: an incoming Authentication-Results field claiming our
/// authserv-id is renamed (same length, in place) so nobody trusts it. A
/// spooled file is rewritten in place and synced again; on failure the
/// field stays and the error is logged (our own field is above it).
fn untrust_forged(content: Content, hostname: &str) -> Content {
    use std::os::unix::fs::FileExt;
    match content {
        Content::Inline(mut bytes) => {
            for at in crate::checks::forged_results(&bytes, hostname) {
                bytes[at..at + 22].copy_from_slice(crate::checks::UNTRUSTED_NAME);
            }
            Content::Inline(bytes)
        }
        Content::Spooled(path) => {
            let renamed = (|| -> std::io::Result<()> {
                let file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
                let mut head = vec![0u8; 256 << 10];
                let n = file.read_at(&mut head, 0)?;
                head.truncate(n);
                let found = crate::checks::forged_results(&head, hostname);
                for at in &found {
                    file.write_all_at(crate::checks::UNTRUSTED_NAME, *at as u64)?;
                }
                if !found.is_empty() {
                    file.sync_data()?;
                }
                Ok(())
            })();
            if let Err(e) = renamed {
                tracing::warn!(error = %e, "forged Authentication-Results not renamed");
            }
            Content::Spooled(path)
        }
    }
}
