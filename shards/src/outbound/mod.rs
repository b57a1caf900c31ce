//! The outbound queue runner (docs/design/outbound.md): one per shard,
//! owning partition `(shard, shards)` of the [`QueueStore`]. It takes due
//! entries, groups their pending recipients by destination (the
//! recipient's domain, or the smarthost chosen by the sender's domain),
//! delivers over reused connections with per-destination and per-shard
//! connection limits, and writes the outcome back: delivered, failed (with
//! a DSN queued for the sender) or retried later with exponential backoff.
//!
//! Scheduling (`[queue]`): after a temporary failure an entry waits
//! `retry_initial · 2^(attempts−1)`, at most `retry_max`; once
//! `delay_warning` has passed since it was queued, one delay DSN goes to
//! the sender; once `lifetime` has passed, the remaining recipients fail
//! with 4.4.7 and a failure DSN.
//!
//! A batch is finished (every destination of it attempted and every
//! entry written back) before the next scan, so an entry is never in two
//! attempts at once; a slow destination delays the next batch by at most
//! the SMTP timeouts.
//!
//! Local recipients (a domain in `[[domain]]`, typically a DSN to a local
//! sender) are not delivered by SMTP to ourselves: they go through the
//! [`LocalDelivery`] hook; without one they are retried until it exists
//! or the entry expires (logged as an error).
//!
//! Store calls run on the blocking pool (the trait may block).

mod deliver;
pub mod local;
pub mod transport;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use varan_core::config::Config;
use varan_core::queue::{BodyInfo, Notify, QueueEntry, QueueId, QueueStore, QueuedRecipient, RecipientState, Ret};
use varan_protocols::dsn::{self, DsnAction, DsnInput, DsnRecipient};

use crate::dns::{LocalFuture, Resolver};
use crate::shard::Shutdown;
use deliver::{Destination, DestinationJob, Env};

/// Pause after a store error before the next scan.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(5);
/// Longest message content read into memory for a DSN with RET=FULL; a
/// larger message is returned as headers only (`dsn::RETURN_FULL_BYTES_MAX`).
const DSN_CONTENT_BYTES_MAX: u64 = dsn::RETURN_FULL_BYTES_MAX as u64;

/// Delivers to a mailbox on this server (wired by the server to its
/// delivery stage). `Err((permanent, text))` on failure.
pub trait LocalDelivery {
    fn deliver<'a>(&'a self, recipient: &'a str, sender: &'a str, content: Vec<u8>) -> LocalFuture<'a, Result<(), (bool, String)>>;
}

/// What a runner needs. `config` is called once per scan, so a reload
/// takes effect at the next batch.
pub struct RunnerContext {
    pub store: Arc<dyn QueueStore>,
    /// (this shard, number of shards).
    pub partition: (usize, usize),
    pub config: Rc<dyn Fn() -> Arc<Config>>,
    pub resolver: Rc<dyn Resolver>,
    pub local: Option<Rc<dyn LocalDelivery>>,
    pub shutdown: Rc<Shutdown>,
}

/// Starts the runner as a task on the current shard; it ends after
/// `shutdown` triggers (the current batch is finished first).
pub fn start(ctx: RunnerContext) -> glommio::task::JoinHandle<()> {
    glommio::spawn_local(run(ctx)).detach()
}

/// One recipient's result of an attempt.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Delivered { reply: String, relayed: bool, remote: String },
    Temp(String),
    Perm { status: String, diagnostic: String, remote: Option<String> },
}

impl Outcome {
    fn temp(text: &str) -> Self {
        Outcome::Temp(text.to_owned())
    }
    fn perm(status: &str, diagnostic: &str, remote: Option<String>) -> Self {
        Outcome::Perm { status: status.to_owned(), diagnostic: diagnostic.to_owned(), remote }
    }
}

/// Some recipients of one entry, for one destination.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub entry: Rc<QueueEntry>,
    /// Indexes into `entry.recipients`.
    pub recipients: Vec<usize>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(f).await
}

pub async fn run(ctx: RunnerContext) {
    let shards = ctx.partition.1.max(1);
    let opportunistic = match transport::opportunistic_tls() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "queue runner cannot start: TLS client configuration");
            return;
        }
    };
    let mut verified_for: Option<(std::path::PathBuf, Option<Arc<rustls::ClientConfig>>)> = None;
    loop {
        let config = (ctx.config)();
        if verified_for.as_ref().is_none_or(|(p, _)| *p != config.outbound.ca_file) {
            let v = transport::verified_tls(&config.outbound.ca_file).map_err(|e| tracing::warn!(error = %e, "smarthost TLS verification unavailable")).ok();
            verified_for = Some((config.outbound.ca_file.clone(), v));
        }
        let q = config.queue.clone();
        let store = Arc::clone(&ctx.store);
        let (partition, batch) = (ctx.partition, q.batch);
        let due = blocking(move || store.due(partition, unix_now(), batch)).await;
        let pause = match due {
            Ok(entries) if !entries.is_empty() => {
                let env = Rc::new(Env {
                    connections: Rc::new(glommio::sync::Semaphore::new((config.outbound.connections_max / shards).max(1) as u64)),
                    config: Arc::clone(&config),
                    store: Arc::clone(&ctx.store),
                    resolver: Rc::clone(&ctx.resolver),
                    opportunistic: Arc::clone(&opportunistic),
                    verified: verified_for.as_ref().and_then(|(_, v)| v.clone()),
                });
                if attempt_batch(&ctx, &env, entries, shards).await {
                    Duration::ZERO
                } else {
                    // An entry not written back would be due again at once:
                    // do not hammer its destination in a loop.
                    STORE_ERROR_PAUSE
                }
            }
            Ok(_) => {
                let store = Arc::clone(&ctx.store);
                let next = blocking(move || store.next_due(partition)).await.ok().flatten();
                let wait = next.map_or(q.scan_interval, |t| Duration::from_secs(t.saturating_sub(unix_now())));
                wait.min(q.scan_interval)
            }
            Err(e) => {
                tracing::error!(error = %e, "queue runner: cannot list due entries");
                STORE_ERROR_PAUSE
            }
        };
        let stop = async {
            ctx.shutdown.wait().await;
            true
        };
        let sleep = async {
            if !pause.is_zero() {
                glommio::timer::sleep(pause).await;
            }
            false
        };
        if stop.or(sleep).await {
            return;
        }
    }
}

/// Attempts the entries; false if any could not be written back.
async fn attempt_batch(ctx: &RunnerContext, env: &Rc<Env>, entries: Vec<QueueEntry>, shards: usize) -> bool {
    let now = unix_now();
    let config = &env.config;
    let lifetime = config.queue.lifetime.as_secs();
    let mut results: Vec<(QueueEntry, Vec<(usize, Outcome)>)> = Vec::new();
    let mut jobs: HashMap<Destination, Rc<DestinationJob>> = HashMap::new();
    let mut local_units: Vec<(usize, Unit)> = Vec::new();
    for entry in entries {
        let slot = results.len();
        if now.saturating_sub(entry.queued_at) >= lifetime {
            let expired: Vec<(usize, Outcome)> = pending_indexes(&entry)
                .map(|i| {
                    let why = entry.recipients[i].last_error.clone().unwrap_or_else(|| "no attempt succeeded".into());
                    (i, Outcome::perm("4.4.7", &format!("delivery time expired: {why}"), None))
                })
                .collect();
            results.push((entry, expired));
            continue;
        }
        let shared = Rc::new(entry.clone());
        let sender_domain = domain_of(&entry.sender);
        let smarthost = config.smarthost_for(sender_domain);
        let mut by_dest: HashMap<Destination, Vec<usize>> = HashMap::new();
        let mut local = Vec::new();
        for i in pending_indexes(&entry) {
            let rcpt_domain = domain_of(&entry.recipients[i].address).to_ascii_lowercase();
            if config.domain(&rcpt_domain).is_some() {
                if config.lmtp.enabled {
                    by_dest.entry(Destination::Lmtp(config.lmtp.host.clone(), config.lmtp.port)).or_default().push(i);
                } else {
                    local.push(i);
                }
            } else if let Some(sh) = &smarthost {
                by_dest.entry(Destination::Smarthost(sh.host.clone(), sh.port)).or_default().push(i);
            } else {
                by_dest.entry(Destination::Mx(rcpt_domain)).or_default().push(i);
            }
        }
        if !local.is_empty() {
            local_units.push((slot, Unit { entry: Rc::clone(&shared), recipients: local }));
        }
        for (dest, recipients) in by_dest {
            let job = jobs.entry(dest.clone()).or_insert_with(|| {
                let smarthost = if matches!(dest, Destination::Lmtp(..)) { None } else { smarthost.clone() };
                Rc::new(DestinationJob { destination: dest, smarthost, units: RefCell::new(VecDeque::new()), done: RefCell::new(Vec::new()) })
            });
            // RFC 5321 §4.5.3.1.8: at most 100 recipients per transaction.
            for chunk in recipients.chunks(varan_protocols::smtp::client::RECIPIENTS_PER_TRANSACTION_MAX) {
                job.units.borrow_mut().push_back(Unit { entry: Rc::clone(&shared), recipients: chunk.to_vec() });
            }
        }
        results.push((entry, Vec::new()));
    }

    let per_destination = (config.outbound.connections_per_destination_max / shards).max(1);
    let tasks: Vec<_> = jobs.values().map(|job| glommio::spawn_local(deliver::run_job(Rc::clone(env), Rc::clone(job), per_destination))).collect();
    for (slot, unit) in local_units {
        let outcomes = deliver_local(ctx, env, &unit).await;
        results[slot].1.extend(unit.recipients.iter().copied().zip(outcomes));
    }
    for t in tasks {
        t.await;
    }
    let by_id: HashMap<QueueId, usize> = results.iter().enumerate().map(|(i, (e, _))| (e.id, i)).collect();
    for job in jobs.values() {
        for (unit, outcomes) in job.done.borrow_mut().drain(..) {
            if let Some(&slot) = by_id.get(&unit.entry.id) {
                results[slot].1.extend(unit.recipients.iter().copied().zip(outcomes));
            }
        }
    }
    let mut finished = Vec::with_capacity(results.len());
    for (entry, outcomes) in results {
        finished.push(finish_entry(env, entry, outcomes, now).await);
    }
    write_back(env, finished).await
}

/// Writes the batch's entries back in one trip to the blocking pool;
/// false if any could not be written (a store error other than
/// `NotFound`: an entry deleted meanwhile by the CLI stays deleted).
async fn write_back(env: &Env, entries: Vec<QueueEntry>) -> bool {
    let store = Arc::clone(&env.store);
    let failed = blocking(move || {
        entries
            .iter()
            .filter_map(|e| match store.update(e) {
                Ok(()) | Err(varan_core::queue::QueueError::NotFound(_)) => None,
                Err(err) => Some((e.id, err)),
            })
            .collect::<Vec<_>>()
    })
    .await;
    for (id, e) in &failed {
        tracing::error!(queue_id = %id, error = %e, "queue entry not written back");
    }
    failed.is_empty()
}

async fn deliver_local(ctx: &RunnerContext, env: &Env, unit: &Unit) -> Vec<Outcome> {
    let Some(local) = &ctx.local else {
        tracing::error!(queue_id = %unit.entry.id, "queued mail for a local domain, but no local delivery is wired to the queue runner");
        return vec![Outcome::temp("local delivery unavailable"); unit.recipients.len()];
    };
    let content = match read_content(env, unit.entry.id, u64::MAX).await {
        Ok(c) => c,
        Err(e) => return vec![Outcome::temp(&e); unit.recipients.len()],
    };
    let mut out = Vec::new();
    for &i in &unit.recipients {
        let rcpt = &unit.entry.recipients[i].address;
        out.push(match local.deliver(rcpt, &unit.entry.sender, content.clone()).await {
            Ok(()) => Outcome::Delivered { reply: "250 2.0.0 delivered locally".into(), relayed: false, remote: String::new() },
            Err((true, e)) => Outcome::perm("5.1.1", &e, None),
            Err((false, e)) => Outcome::temp(&e),
        });
    }
    out
}

async fn read_content(env: &Env, id: QueueId, max: u64) -> Result<Vec<u8>, String> {
    let store = Arc::clone(&env.store);
    blocking(move || {
        let reader = store.content(id).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(reader, max), &mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    })
    .await
}

fn pending_indexes(entry: &QueueEntry) -> impl Iterator<Item = usize> + '_ {
    entry.recipients.iter().enumerate().filter(|(_, r)| r.state == RecipientState::Pending).map(|(i, _)| i)
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Applies the outcomes, schedules the next attempt and queues DSNs;
/// returns the entry to write back.
async fn finish_entry(env: &Env, mut entry: QueueEntry, outcomes: Vec<(usize, Outcome)>, now: u64) -> QueueEntry {
    let q = &env.config.queue;
    let mut failed_now = Vec::new();
    let mut relayed_now = Vec::new();
    let mut remote_of: HashMap<usize, String> = HashMap::new();
    for (i, outcome) in outcomes {
        let Some(r) = entry.recipients.get_mut(i) else { continue };
        match outcome {
            Outcome::Delivered { reply, relayed, remote } => {
                tracing::info!(queue_id = %entry.id, rcpt = %r.address, remote = %remote, reply = %reply, "delivered");
                r.state = RecipientState::Delivered { at: now, reply };
                if relayed && r.notify.on_success() {
                    relayed_now.push(i);
                }
                remote_of.insert(i, remote);
            }
            Outcome::Temp(text) => {
                tracing::info!(queue_id = %entry.id, rcpt = %r.address, error = %text, "deferred");
                r.last_error = Some(text);
            }
            Outcome::Perm { status, diagnostic, remote } => {
                tracing::info!(queue_id = %entry.id, rcpt = %r.address, status = %status, error = %diagnostic, "failed");
                r.state = RecipientState::Failed { at: now, status, diagnostic };
                failed_now.push(i);
                if let Some(m) = remote {
                    remote_of.insert(i, m);
                }
            }
        }
    }
    entry.attempts = entry.attempts.saturating_add(1);
    let pending = !entry.finished();
    let mut dsns = Vec::new();
    if !failed_now.is_empty() {
        dsns.push((DsnAction::Failed, failed_now));
    }
    if !relayed_now.is_empty() {
        dsns.push((DsnAction::Relayed, relayed_now));
    }
    if pending && !entry.delay_warned && now.saturating_sub(entry.queued_at) >= q.delay_warning.as_secs() {
        entry.delay_warned = true;
        dsns.push((DsnAction::Delayed, pending_indexes(&entry).collect()));
    }
    if pending {
        entry.next_attempt = next_attempt(q, entry.attempts, entry.queued_at, now);
    }
    for (action, indexes) in dsns {
        queue_dsn(env, &entry, action, &indexes, &remote_of, now).await;
    }
    entry
}

/// When to try again after `attempts` attempts: `retry_initial ·
/// 2^(attempts−1)` capped at `retry_max`, never before `now + 1 s`, and
/// never after the expiry (the final failure is due then).
fn next_attempt(q: &varan_core::config::QueueConfig, attempts: u32, queued_at: u64, now: u64) -> u64 {
    let shift = attempts.saturating_sub(1).min(30);
    let wait = q.retry_initial.saturating_mul(1u32 << shift).min(q.retry_max);
    let expiry = queued_at.saturating_add(q.lifetime.as_secs());
    now.saturating_add(wait.as_secs().max(1)).min(expiry.max(now + 1))
}

async fn queue_dsn(env: &Env, entry: &QueueEntry, action: DsnAction, indexes: &[usize], remote_of: &HashMap<usize, String>, now: u64) {
    if entry.sender.is_empty() {
        return;
    }
    let until = entry.queued_at + env.config.queue.lifetime.as_secs();
    let recipients: Vec<DsnRecipient> = indexes
        .iter()
        .filter_map(|&i| entry.recipients.get(i).map(|r| (i, r)))
        .map(|(i, r)| {
            let (status, diagnostic) = match &r.state {
                RecipientState::Failed { status, diagnostic, .. } => (status.clone(), Some(diagnostic.clone())),
                RecipientState::Delivered { reply, .. } => ("2.0.0".into(), Some(reply.clone())),
                RecipientState::Pending => ("4.0.0".into(), r.last_error.clone()),
            };
            DsnRecipient {
                original: r.orcpt.clone(),
                address: r.address.clone(),
                notify: r.notify,
                action,
                status,
                remote_mta: remote_of.get(&i).filter(|m| !m.is_empty()).cloned(),
                diagnostic,
                last_attempt: now,
                retry_until: Some(until),
            }
        })
        .collect();
    let want_full = action == DsnAction::Failed && entry.ret == Ret::Full;
    let original = match read_content(env, entry.id, if want_full { DSN_CONTENT_BYTES_MAX } else { 64 << 10 }).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(queue_id = %entry.id, error = %e, "DSN without the original message");
            Vec::new()
        }
    };
    let token = format!("{}.{}", entry.id, entry.attempts);
    let input = DsnInput {
        reporting_mta: &env.config.server.hostname,
        sender: &entry.sender,
        envid: entry.envid.as_deref(),
        ret: entry.ret,
        arrival: entry.queued_at,
        now,
        token: &token,
        recipients: &recipients,
        original: &original,
        smtputf8: entry.body.smtputf8,
    };
    let global = dsn::is_global(&input);
    let Some(content) = dsn::build(&input) else { return };
    let dsn_entry = QueueEntry {
        id: new_queue_id(entry.id),
        sender: String::new(),
        recipients: vec![QueuedRecipient { address: entry.sender.clone(), orcpt: None, notify: Notify::default(), state: RecipientState::Pending, last_error: None }],
        envid: None,
        ret: Ret::Headers,
        // An internationalized report (RFC 6533) carries UTF-8 headers: SMTPUTF8.
        body: BodyInfo { eight_bit: content.iter().any(|b| *b > 127), smtputf8: global, size: content.len() as u64 },
        submitter: None,
        queued_at: now,
        next_attempt: 0,
        attempts: 0,
        delay_warned: false,
    };
    let store = Arc::clone(&env.store);
    let id = dsn_entry.id;
    match blocking(move || store.enqueue(&dsn_entry, &content)).await {
        Ok(()) => tracing::info!(queue_id = %entry.id, dsn_id = %id, action = ?action, "DSN queued"),
        Err(e) => tracing::error!(queue_id = %entry.id, error = %e, "DSN could not be queued"),
    }
}

/// A fresh id for a generated message: time, a per-thread counter and
/// the original id mixed (splitmix64), so two shards never pick the same.
fn new_queue_id(origin: QueueId) -> QueueId {
    thread_local!(static SEQ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let seq = SEQ.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ origin.0.rotate_left(17) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    QueueId(z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;
    use varan_core::config::QueueConfig;

    #[test]
    fn backoff_doubles_caps_and_stops_at_expiry() {
        let q = QueueConfig::default(); // 5 min, 1 h, 5 days
        let t0 = 1_000_000;
        let waits: Vec<u64> = (1..=6).map(|a| next_attempt(&q, a, t0, t0) - t0).collect();
        assert_eq!(waits, vec![300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(next_attempt(&q, u32::MAX, t0, t0) - t0, 3600, "no overflow");
        // Ten minutes before expiry: wake up at the expiry, not an hour later.
        let now = t0 + 5 * 86_400 - 600;
        assert_eq!(next_attempt(&q, 20, t0, now), t0 + 5 * 86_400);
        // Past expiry: the next scan (1 s) fails it.
        assert_eq!(next_attempt(&q, 20, t0, t0 + 6 * 86_400), t0 + 6 * 86_400 + 1);
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| new_queue_id(QueueId(7)).0).collect();
        assert_eq!(ids.len(), 1000);
    }
}
