//! The per-shard durability pipeline: group commit into the journal, then
//! Maildir delivery, then periodic checkpoints (docs/design/durability.md).
//!
//! Sessions hand a [`JournalRecord`] to [`Storage::commit`] and wait. One
//! task per shard takes every record waiting at that moment, appends them
//! all with one fdatasync (on the blocking pool, so the shard keeps
//! serving), answers every waiter, and starts writing the Maildir files
//! without fsync. Every `checkpoint_interval` it rotates the journal
//! segment, waits for the deliveries of the closed segments, calls
//! syncfs(2) once, and deletes those segments.

use futures_channel::oneshot;
use futures_lite::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use varan_storage::journal::{Journal, JournalRecord};

/// Records waiting for the committer before senders are pushed back.
/// Bounds memory: each waiting record holds at most `spool_memory_max`.
const QUEUE_DEPTH: usize = 4096;
/// Records written per fdatasync at most; bounds the latency of one batch.
const BATCH_RECORDS_MAX: usize = 2048;
/// How long a checkpoint waits for deliveries before trying again later.
const CHECKPOINT_WAIT_MAX: Duration = Duration::from_secs(10);

/// Why a record was not made durable.
pub type CommitError = String;

struct Pending {
    record: JournalRecord,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// A shard's handle to its storage task.
#[derive(Clone)]
pub struct Storage {
    tx: Rc<LocalSender<Pending>>,
    next_id: Rc<Cell<u64>>,
}

impl Storage {
    /// A fresh record id (unique across restarts: the journal seeds it).
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Makes a record durable; resolves once it is on disk.
    pub async fn commit(&self, record: JournalRecord) -> Result<(), CommitError> {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Pending { record, done }).await.is_err() {
            return Err("storage task stopped".into());
        }
        wait.await.unwrap_or_else(|_| Err("storage task stopped".into()))
    }
}

/// Segment generations whose deliveries are still running.
#[derive(Default)]
struct InFlight {
    by_generation: RefCell<BTreeMap<u64, usize>>,
}

impl InFlight {
    fn start(&self, generation: u64) {
        *self.by_generation.borrow_mut().entry(generation).or_insert(0) += 1;
    }
    fn finish(&self, generation: u64) {
        let mut map = self.by_generation.borrow_mut();
        if let Some(n) = map.get_mut(&generation) {
            *n -= 1;
            if *n == 0 {
                map.remove(&generation);
            }
        }
    }
    fn busy_up_to(&self, generation: u64) -> bool {
        self.by_generation.borrow().range(..=generation).next().is_some()
    }
}

/// Starts the storage task of this shard. Returns the handle sessions use
/// and the task, which ends when every handle is dropped and its work is
/// done and checkpointed.
pub fn start(journal: Journal, maildir_root: PathBuf, checkpoint_interval: Duration) -> (Storage, glommio::Task<()>) {
    let (tx, rx) = local_channel::new_bounded(QUEUE_DEPTH);
    let mut journal = journal;
    let next_id = Rc::new(Cell::new(journal.next_id()));
    let task = glommio::spawn_local(run(journal, rx, maildir_root, checkpoint_interval));
    (Storage { tx: Rc::new(tx), next_id }, task)
}

enum Wake {
    Record(Option<Pending>),
    Tick,
}

async fn run(journal: Journal, rx: LocalReceiver<Pending>, maildir_root: PathBuf, interval: Duration) {
    let mut journal = Some(journal);
    let inflight = Rc::new(InFlight::default());
    let mut generation = 0u64;
    let mut dirty = false;
    let mut last_checkpoint = std::time::Instant::now();
    loop {
        let wake = async { Wake::Record(rx.recv().await) }.or(async {
            glommio::timer::sleep(interval).await;
            Wake::Tick
        });
        let first = match wake.await {
            Wake::Record(Some(p)) => Some(p),
            Wake::Record(None) => None,
            Wake::Tick => {
                if dirty {
                    checkpoint(&mut journal, &inflight, &mut generation, &maildir_root).await;
                    dirty = false;
                    last_checkpoint = std::time::Instant::now();
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH_RECORDS_MAX {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(p)) => batch.push(p),
                _ => break,
            }
        }
        commit_batch(&mut journal, batch, &inflight, generation).await;
        dirty = true;
        if last_checkpoint.elapsed() >= interval {
            checkpoint(&mut journal, &inflight, &mut generation, &maildir_root).await;
            dirty = false;
            last_checkpoint = std::time::Instant::now();
        }
    }
    if dirty {
        checkpoint(&mut journal, &inflight, &mut generation, &maildir_root).await;
    }
}

async fn commit_batch(journal: &mut Option<Journal>, batch: Vec<Pending>, inflight: &Rc<InFlight>, generation: u64) {
    let (records, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.record, p.done)).unzip();
    let Some(mut j) = journal.take() else {
        for w in waiters {
            let _ = w.send(Err("journal unavailable".into()));
        }
        return;
    };
    let (j, result, records) = glommio::executor()
        .spawn_blocking(move || {
            let r = j.append(&records);
            (j, r, records)
        })
        .await;
    *journal = Some(j);
    match result {
        Ok(()) => {
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            inflight.start(generation);
            let inflight = Rc::clone(inflight);
            glommio::spawn_local(async move {
                glommio::executor().spawn_blocking(move || deliver_all(&records)).await;
                inflight.finish(generation);
            })
            .detach();
        }
        Err(e) => {
            tracing::error!(error = %e, records = waiters.len(), "journal append failed; messages refused with 451");
            for w in waiters {
                let _ = w.send(Err(format!("journal write failed: {e}")));
            }
        }
    }
}

/// Writes every delivery of every record (no fsync: the journal holds
/// them until the next checkpoint). Failures are logged; the record stays
/// in the journal and is retried by recovery at the next start.
pub fn deliver_all(records: &[JournalRecord]) -> usize {
    let mut failed = 0;
    for r in records {
        for d in &r.deliveries {
            if let Err(e) = deliver_one(d, &r.content) {
                failed += 1;
                tracing::error!(path = %d.path.display(), error = %e, "maildir delivery failed; will retry from the journal at next start");
            }
        }
    }
    failed
}

/// Recovery of records left in a journal: writes only targets that are
/// missing or damaged (see `varan_storage::recovery`). Returns
/// (written, failed).
pub fn redeliver(records: &[JournalRecord]) -> (usize, usize) {
    let report = varan_storage::recovery::redeliver(records, varan_storage::recovery::Mode::Check);
    (report.delivered + report.repaired, report.failed)
}

fn deliver_one(d: &varan_storage::journal::Delivery, content: &varan_storage::journal::Content) -> std::io::Result<()> {
    varan_storage::maildir::deliver(d, content)?;
    if let Some(user_dir) = d.path.parent().and_then(|new| new.parent()) {
        let name = d.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let size = varan_storage::maildir::parse_sizes(name).0.unwrap_or(0) as i64;
        if let Err(e) = varan_storage::quota::quota_add(user_dir, size, 1) {
            tracing::warn!(error = %e, dir = %user_dir.display(), "cannot update maildirsize");
        }
    }
    Ok(())
}

async fn checkpoint(journal: &mut Option<Journal>, inflight: &InFlight, generation: &mut u64, root: &std::path::Path) {
    let Some(j) = journal.as_mut() else { return };
    let closed = match j.rotate() {
        Ok(seg) => seg,
        Err(e) => {
            tracing::error!(error = %e, "journal rotation failed");
            return;
        }
    };
    let closed_generation = *generation;
    *generation += 1;
    let deadline = std::time::Instant::now() + CHECKPOINT_WAIT_MAX;
    while inflight.busy_up_to(closed_generation) {
        if std::time::Instant::now() > deadline {
            tracing::warn!("checkpoint: deliveries still running; segment kept for the next checkpoint");
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let root = root.to_path_buf();
    let synced = glommio::executor().spawn_blocking(move || varan_storage::maildir::sync_filesystem(&root)).await;
    if let Err(e) = synced {
        tracing::error!(error = %e, "syncfs failed; journal kept");
        return;
    }
    if let Err(e) = j.retire(closed) {
        tracing::warn!(error = %e, "could not delete retired journal segments");
    }
}
