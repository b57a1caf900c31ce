//! One shard: a glommio executor pinned to a core that binds every
//! listener (SO_REUSEPORT) and owns its connections end to end.

use crate::delivery::{self, Storage};
use crate::live::{Counters, Live};
use futures_lite::{FutureExt, StreamExt};
use glommio::net::TcpListener;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use varan_core::directory::Account;
use varan_protocols::smtp::ListenerKind;
use varan_storage::journal::{Journal, JournalOptions};

/// Messages from the main thread to a shard.
pub enum Control {
    Reload(Arc<Live>),
    Shutdown,
}

/// How long a cached mailbox size is trusted.
const QUOTA_CACHE_TTL: Duration = Duration::from_secs(30);
/// Mailbox sizes cached per shard at most; the table is cleared when full.
const QUOTA_CACHE_ENTRIES_MAX: usize = 100_000;
/// Back-off after a failed accept (EMFILE and the like).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// A level-triggered stop signal for the tasks of one shard.
#[derive(Default)]
pub struct Shutdown {
    flag: Cell<bool>,
    event: event_listener::Event,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.set(true);
        self.event.notify(usize::MAX);
    }

    pub async fn wait(&self) {
        while !self.flag.get() {
            let listener = self.event.listen();
            if self.flag.get() {
                return;
            }
            listener.await;
        }
    }
}

pub struct ShardCtx {
    pub shard: usize,
    live: RefCell<Arc<Live>>,
    pub counters: Arc<Counters>,
    pub storage: Storage,
    /// Where this shard's large messages are spooled (the journal's own
    /// spool directory, so recovery and cleanup find them).
    pub spool_dir: std::path::PathBuf,
    pub shutdown: Rc<Shutdown>,
    /// The mail store shared by every shard (IMAP, POP3, delivery wake-ups).
    pub mailstore: Arc<varan_storage::mailstore::MaildirStore>,
    /// Parsed message structure shared by every IMAP session.
    pub imap_cache: Arc<varan_protocols::imap::session::SummaryCache>,
    /// The outbound queue (`<data_dir>/queue`, `varan_storage::queue`).
    pub queue: Arc<varan_storage::FileQueue>,
    pub quota_cache: RefCell<HashMap<String, (u64, Instant)>>,
    /// This shard's DNS cache in front of the sidecar: outbound delivery
    /// and the inbound checks share it.
    pub resolver: Rc<dyn crate::dns::Resolver>,
    /// Accounts whose mailbox tree is known to exist (created on first
    /// delivery); cleared when it reaches the quota cache's size bound.
    pub ensured: RefCell<std::collections::HashSet<String>>,
    connection_seq: Cell<u64>,
    active: Cell<usize>,
}

impl ShardCtx {
    /// The context of shard `shard` around its running storage task
    /// (`main`; tests of code that needs a shard).
    pub fn new(shard: usize, live: Arc<Live>, shared: Shared, storage: Storage, spool_dir: std::path::PathBuf) -> Self {
        let Shared { counters, mailstore, imap_cache, queue, dns } = shared;
        let resolver: Rc<dyn crate::dns::Resolver> = Rc::new(crate::dns::CachedResolver::new(dns, &live.config.dns));
        Self {
            shard,
            live: RefCell::new(live),
            counters,
            storage,
            spool_dir,
            shutdown: Rc::new(Shutdown::default()),
            mailstore,
            imap_cache,
            queue,
            quota_cache: RefCell::new(HashMap::new()),
            resolver,
            ensured: RefCell::new(std::collections::HashSet::new()),
            connection_seq: Cell::new(0),
            active: Cell::new(0),
        }
    }

    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.borrow())
    }

    pub fn next_connection_id(&self) -> u64 {
        let n = self.connection_seq.get() + 1;
        self.connection_seq.set(n);
        (n << 8) | (self.shard as u64 & 0xff)
    }

    /// Bytes stored in an account's mailbox, from a short-lived cache. A
    /// miss reads `maildirsize` (or rescans the mailbox) on the blocking
    /// pool, never on the shard.
    pub async fn quota_used(&self, live: &Arc<Live>, account: &Account) -> u64 {
        let key = account.address.key();
        if let Some((bytes, at)) = self.quota_cache.borrow().get(&key) {
            if at.elapsed() < QUOTA_CACHE_TTL {
                return *bytes;
            }
        }
        let dir = live.layout.user_dir(&account.address);
        let probe = dir.clone();
        let usage = glommio::executor().spawn_blocking(move || varan_storage::quota::quota_usage(&probe)).await;
        let bytes = match usage {
            Ok((bytes, _)) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot read mailbox size");
                0
            }
        };
        let mut cache = self.quota_cache.borrow_mut();
        if cache.len() >= QUOTA_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(key, (bytes, Instant::now()));
        bytes
    }

    /// Adds a stored message to the cached sizes of its mailboxes.
    pub fn quota_add(&self, accounts: &[&Account], bytes: u64) {
        let mut cache = self.quota_cache.borrow_mut();
        for a in accounts {
            if let Some(entry) = cache.get_mut(&a.address.key()) {
                entry.0 += bytes;
            }
        }
    }
}

/// Counts a connection task while it lives.
struct Active(Rc<ShardCtx>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Smtp(ListenerKind),
    /// IMAP; `true`: implicit TLS (port 993).
    Imap(bool),
    /// POP3; `true`: implicit TLS (port 995).
    Pop3(bool),
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Service::Smtp(k) => write!(f, "{k:?}"),
            Service::Imap(false) => f.write_str("Imap"),
            Service::Imap(true) => f.write_str("Imaps"),
            Service::Pop3(false) => f.write_str("Pop3"),
            Service::Pop3(true) => f.write_str("Pop3s"),
        }
    }
}

/// The listeners every shard binds. Implicit-TLS ones only with a certificate.
pub fn listeners(live: &Live) -> Vec<(SocketAddr, Service)> {
    let c = &live.config;
    let tls = live.tls.is_some();
    let mut out: Vec<_> = c.smtp.listen.iter().map(|a| (*a, Service::Smtp(ListenerKind::Mx))).collect();
    out.extend(c.smtp.submission_listen.iter().map(|a| (*a, Service::Smtp(ListenerKind::Submission))));
    out.extend(c.imap.listen.iter().map(|a| (*a, Service::Imap(false))));
    out.extend(c.pop3.listen.iter().map(|a| (*a, Service::Pop3(false))));
    if tls {
        out.extend(c.smtp.smtps_listen.iter().map(|a| (*a, Service::Smtp(ListenerKind::Smtps))));
        out.extend(c.imap.imaps_listen.iter().map(|a| (*a, Service::Imap(true))));
        out.extend(c.pop3.pop3s_listen.iter().map(|a| (*a, Service::Pop3(true))));
    }
    out
}

/// Process-lifetime state every shard gets a handle to (survives reloads).
pub struct Shared {
    pub counters: Arc<Counters>,
    pub mailstore: Arc<varan_storage::mailstore::MaildirStore>,
    pub imap_cache: Arc<varan_protocols::imap::session::SummaryCache>,
    /// The outbound queue (`<data_dir>/queue`), shared by every shard.
    pub queue: Arc<varan_storage::FileQueue>,
    /// The resolver thread for outbound routing, shared by every shard.
    pub dns: crate::dns::DnsSidecar,
}

/// The body of one shard's executor. Reports bind results on `ready`.
pub async fn main(
    (shard, shards): (usize, usize),
    live: Arc<Live>,
    shared: Shared,
    mut control: futures_channel::mpsc::Receiver<Control>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let data = &live.config.server.data_dir;
    let dir = data.join("journal").join(format!("shard-{shard}"));
    let options = JournalOptions { segment_bytes: live.config.storage.journal_segment_size };
    let journal = match Journal::open_with_options(&dir, &dir.join("spool"), options) {
        Ok((j, leftover)) => {
            if !leftover.is_empty() {
                let (rewritten, failed) = delivery::redeliver(&leftover, &shared.queue);
                tracing::warn!(records = leftover.len(), rewritten, failed, "shard journal had undelivered records");
            }
            j
        }
        Err(e) => {
            let _ = ready.send(Err(format!("shard {shard}: journal: {e}")));
            return;
        }
    };
    let spool_dir = journal.spool_dir().to_path_buf();
    let Shared { counters, mailstore, imap_cache, queue, dns } = shared;
    let store = Arc::clone(&mailstore);
    let notify: delivery::Notify = Arc::new(move |dir: &std::path::Path| store.notify_delivered(dir));
    let (storage, storage_task) = match delivery::start(journal, &live.config.storage.maildir_root, Arc::clone(&queue), live.config.storage.checkpoint_interval, shard, notify) {
        Ok(started) => started,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {shard}: {}: {e}", live.config.storage.maildir_root.display())));
            return;
        }
    };
    let store: Arc<dyn varan_core::queue::QueueStore> = queue.clone();
    let ctx = Rc::new(ShardCtx::new(shard, Arc::clone(&live), Shared { counters, mailstore, imap_cache, queue, dns }, storage, spool_dir));
    let mut acceptors = Vec::new();
    for (addr, kind) in listeners(&live) {
        match TcpListener::bind(addr) {
            Ok(l) => acceptors.push(glommio::spawn_local(accept_loop(Rc::clone(&ctx), l, kind))),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on {addr} ({kind}): {e}")));
                ctx.shutdown.trigger();
                return;
            }
        }
    }
    let runner = crate::outbound::start(crate::outbound::RunnerContext {
        store,
        partition: (shard, shards),
        config: Rc::new({
            let ctx = Rc::clone(&ctx);
            move || Arc::new(ctx.live().config.clone())
        }),
        resolver: Rc::clone(&ctx.resolver),
        local: Some(Rc::new(crate::outbound::local::ShardLocalDelivery { ctx: Rc::clone(&ctx) })),
        shutdown: Rc::clone(&ctx.shutdown),
    });
    let _ = ready.send(Ok(()));
    drop(ready);
    while let Some(msg) = control.next().await {
        match msg {
            Control::Reload(new) => *ctx.live.borrow_mut() = new,
            Control::Shutdown => break,
        }
    }
    ctx.shutdown.trigger();
    for a in acceptors {
        a.await;
    }
    let grace = ctx.live().config.server.shutdown_grace;
    let deadline = Instant::now() + grace;
    while ctx.active.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if ctx.active.get() > 0 {
        tracing::warn!(shard, sessions = ctx.active.get(), "closing sessions still open after the shutdown grace period");
    }
    // The runner finishes the batch it is sending; what it does not finish
    // stays queued for the next start.
    let mut runner = runner;
    let stopped = glommio::timer::timeout(grace.max(Duration::from_secs(1)), async {
        (&mut runner).await;
        Ok(())
    })
    .await;
    if stopped.is_err() {
        // Cancelled mid-attempt: the entry's state was not written back,
        // so the next start simply tries it again (at-least-once).
        tracing::warn!(shard, "outbound deliveries still running after the shutdown grace period are cancelled; they are retried after restart");
        runner.cancel();
    }
    drop(ctx);
    // The storage task ends once every sender is gone; connection tasks
    // still alive hold one, so give it a bounded time.
    let _ = glommio::timer::timeout(Duration::from_secs(30), async {
        storage_task.await;
        Ok(())
    })
    .await;
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener, kind: Service) {
    loop {
        let next = async { Some(listener.accept().await) }.or(async {
            ctx.shutdown.wait().await;
            None
        });
        match next.await {
            None => return,
            Some(Ok(stream)) => {
                ctx.active.set(ctx.active.get() + 1);
                let guard = Active(Rc::clone(&ctx));
                let c = Rc::clone(&ctx);
                glommio::spawn_local(async move {
                    match kind {
                        Service::Smtp(k) => crate::smtp::serve(c, stream, k).await,
                        Service::Imap(tls) => crate::imap::serve(c, stream, tls).await,
                        Service::Pop3(tls) => crate::pop3::serve(c, stream, tls).await,
                    }
                    drop(guard);
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
