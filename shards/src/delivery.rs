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
//!
//! Records with remote recipients also carry an outbound envelope: their
//! delivery writes the queue entry into `queue/incoming/` (no fsync, like
//! the Maildir files), and once the checkpoint that synced it has retired
//! the record's segment, the entry moves to `queue/active/` where runners
//! see it (docs/design/outbound.md).

use futures_channel::oneshot;
use futures_lite::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use varan_core::queue::QueueId;
use varan_storage::journal::{Content, Journal, JournalRecord, SegmentId};
use varan_storage::maildir::FsSyncer;
use varan_storage::FileQueue;

/// Records waiting for the committer before senders are pushed back.
/// Bounds memory: each waiting record holds at most `spool_memory_max`.
const QUEUE_DEPTH: usize = 4096;
/// Records written per fdatasync at most; bounds the latency of one batch.
const BATCH_RECORDS_MAX: usize = 2048;
/// How long a checkpoint waits for deliveries before trying again later.
const CHECKPOINT_WAIT_MAX: Duration = Duration::from_secs(10);
/// Maildir writer threads per shard. They spend their time blocked in the
/// file system (create, write, rename), not on the CPU, and are kept apart
/// from glommio's blocking pool so a commit's fdatasync never queues
/// behind a backlog of deliveries.
const DELIVERY_THREADS: usize = 4;
/// Message bytes committed but not yet written to the Maildirs, per shard.
/// Above it the commit loop waits for deliveries before the next commit,
/// so a disk slower than the network pushes back on sessions instead of
/// growing memory.
const DELIVERY_BACKLOG_BYTES_MAX: u64 = 16 << 20;

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

/// Segment generations whose deliveries are still running, and the
/// message bytes they hold.
#[derive(Default)]
struct InFlight {
    by_generation: RefCell<BTreeMap<u64, usize>>,
    bytes: Cell<u64>,
    finished: event_listener::Event,
}

impl InFlight {
    fn start(&self, generation: u64, bytes: u64) {
        *self.by_generation.borrow_mut().entry(generation).or_insert(0) += 1;
        self.bytes.set(self.bytes.get() + bytes);
    }
    fn finish(&self, generation: u64, bytes: u64) {
        let mut map = self.by_generation.borrow_mut();
        if let Some(n) = map.get_mut(&generation) {
            *n -= 1;
            if *n == 0 {
                map.remove(&generation);
            }
        }
        self.bytes.set(self.bytes.get().saturating_sub(bytes));
        self.finished.notify(usize::MAX);
    }
    /// Waits until the delivery backlog is under its bound.
    async fn room(&self) {
        while self.bytes.get() > DELIVERY_BACKLOG_BYTES_MAX {
            let listener = self.finished.listen();
            if self.bytes.get() <= DELIVERY_BACKLOG_BYTES_MAX {
                return;
            }
            listener.await;
        }
    }
    fn busy_up_to(&self, generation: u64) -> bool {
        self.by_generation.borrow().range(..=generation).next().is_some()
    }
}

/// Starts the storage task of this shard. Returns the handle sessions use
/// and the task, which ends when every handle is dropped and its work is
/// done and checkpointed.
pub fn start(
    journal: Journal,
    maildir_root: &std::path::Path,
    queue: Arc<FileQueue>,
    checkpoint_interval: Duration,
    shard: usize,
    notify: Notify,
) -> std::io::Result<(Storage, glommio::Task<()>)> {
    // The queue lives under the data directory, which may be another file
    // system than the Maildirs: the checkpoint syncs both.
    let syncer = Arc::new(FsSyncer::open_all(&[maildir_root, queue.root()])?);
    let writers = start_writers(&format!("shard-{shard}"), notify, Arc::clone(&queue))?;
    let (tx, rx) = local_channel::new_bounded(QUEUE_DEPTH);
    let mut journal = journal;
    let next_id = Rc::new(Cell::new(journal.next_id()));
    let task = glommio::spawn_local(run(journal, rx, syncer, queue, writers, checkpoint_interval));
    Ok((Storage { tx: Rc::new(tx), next_id }, task))
}

enum Wake {
    Record(Option<Pending>),
    Tick,
}

/// A job for the Maildir writer threads: records to write, and where to
/// send back those that failed.
type DeliveryJob = (Vec<JournalRecord>, oneshot::Sender<Vec<JournalRecord>>);

/// Called with a mailbox directory after a message was renamed into its
/// `new/`: wakes IMAP sessions (IDLE) that have that mailbox open.
pub type Notify = Arc<dyn Fn(&std::path::Path) + Send + Sync>;

/// Starts the writer threads of one shard; they end when the sender drops.
fn start_writers(shard_name: &str, notify: Notify, queue: Arc<FileQueue>) -> std::io::Result<crossbeam::channel::Sender<DeliveryJob>> {
    let (tx, rx) = crossbeam::channel::unbounded::<DeliveryJob>();
    for i in 0..DELIVERY_THREADS {
        let rx = rx.clone();
        let notify = Arc::clone(&notify);
        let queue = Arc::clone(&queue);
        std::thread::Builder::new().name(format!("{shard_name}-mdw{i}")).spawn(move || {
            for (records, done) in rx {
                let _ = done.send(deliver_all(records, &*notify, &queue));
            }
        })?;
    }
    Ok(tx)
}

/// Checkpoint state shared by the commit loop, delivery tasks and the
/// sync task.
struct Checkpoints {
    /// Kept open from start-up so syncfs reports every writeback error.
    syncer: Arc<FsSyncer>,
    /// A sync task is running (at most one at a time).
    syncing: Cell<bool>,
    /// Segments up to this one are synced and may be deleted.
    retirable: Cell<Option<SegmentId>>,
    /// Records whose Maildir write failed; retried before each sync. While
    /// any remain, no segment is retired (retiring is cumulative).
    failed: RefCell<Vec<JournalRecord>>,
    /// A syncfs reported a writeback error: what the page cache holds may
    /// not be on disk, so nothing is retired until a restart replays the
    /// journal against the disk (recovery compares bytes).
    poisoned: Cell<bool>,
    queue: Arc<FileQueue>,
    /// Queue entries written in each segment generation, waiting for it
    /// to be retired before runners may see them.
    incoming: RefCell<BTreeMap<u64, Vec<QueueId>>>,
    /// Generations up to this one are synced with the segments in
    /// `retirable`: activate their entries once those are deleted.
    activatable: Cell<Option<u64>>,
    /// A sync finished: wakes the commit loop to retire at once, so queued
    /// mail reaches the runners without waiting for the next tick.
    synced: event_listener::Event,
}

async fn run(journal: Journal, rx: LocalReceiver<Pending>, syncer: Arc<FsSyncer>, queue: Arc<FileQueue>, writers: crossbeam::channel::Sender<DeliveryJob>, interval: Duration) {
    let mut journal = Some(journal);
    let inflight = Rc::new(InFlight::default());
    let checkpoints = Rc::new(Checkpoints {
        syncer,
        syncing: Cell::new(false),
        retirable: Cell::new(None),
        failed: RefCell::new(Vec::new()),
        poisoned: Cell::new(false),
        queue,
        incoming: RefCell::new(BTreeMap::new()),
        activatable: Cell::new(None),
        synced: event_listener::Event::new(),
    });
    let mut generation = 0u64;
    let mut dirty = false;
    let mut last_checkpoint = std::time::Instant::now();
    loop {
        let synced = checkpoints.synced.listen();
        let wake = async { Wake::Record(rx.recv().await) }
            .or(async {
                glommio::timer::sleep(interval).await;
                Wake::Tick
            })
            .or(async {
                synced.await;
                Wake::Tick
            });
        match wake.await {
            Wake::Record(None) => break,
            Wake::Record(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < BATCH_RECORDS_MAX {
                    match futures_lite::future::poll_once(rx.recv()).await {
                        Some(Some(p)) => batch.push(p),
                        _ => break,
                    }
                }
                inflight.room().await;
                commit_batch(&mut journal, batch, &inflight, &checkpoints, &writers, generation).await;
                dirty = true;
            }
            Wake::Tick => {}
        }
        retire_synced(&mut journal, &checkpoints);
        if dirty && last_checkpoint.elapsed() >= interval && !checkpoints.syncing.get() {
            if let Some(closed) = rotate(&mut journal).await {
                start_sync(closed, generation, &inflight, &checkpoints);
                generation += 1;
                dirty = false;
                last_checkpoint = std::time::Instant::now();
            }
        }
    }
    // Shutdown: wait for the running sync, then checkpoint what is left.
    finish(&mut journal, &inflight, &checkpoints, generation, dirty).await;
}

/// Deletes segments a finished sync task has made redundant.
fn retire_synced(journal: &mut Option<Journal>, checkpoints: &Checkpoints) {
    let (Some(j), Some(upto)) = (journal.as_mut(), checkpoints.retirable.get()) else { return };
    checkpoints.retirable.set(None);
    if let Err(e) = j.retire(upto) {
        tracing::warn!(error = %e, "could not delete retired journal segments");
        return;
    }
    // The journal can no longer replay these entries: runners may take them.
    let Some(generation) = checkpoints.activatable.take() else { return };
    let ids: Vec<QueueId> = {
        let mut incoming = checkpoints.incoming.borrow_mut();
        let later = incoming.split_off(&(generation + 1));
        std::mem::replace(&mut *incoming, later).into_values().flatten().collect()
    };
    if !ids.is_empty() {
        // Renames only (no fsync); a lost one is redone at the next start.
        if let Err(e) = checkpoints.queue.activate(&ids) {
            tracing::error!(error = %e, "cannot hand queue entries to the runners; they follow at the next start");
        }
    }
}

/// Starts a new segment (create, header, fdatasync, directory fsync) on
/// the blocking pool; returns the closed segment.
async fn rotate(journal: &mut Option<Journal>) -> Option<SegmentId> {
    let mut j = journal.take()?;
    let (j, rotated) = glommio::executor()
        .spawn_blocking(move || {
            let r = j.rotate();
            (j, r)
        })
        .await;
    *journal = Some(j);
    match rotated {
        Ok(closed) => Some(closed),
        Err(e) => {
            tracing::error!(error = %e, "journal rotation failed");
            None
        }
    }
}

/// In the background: wait for the deliveries of the closed segments,
/// syncfs once, then mark the segments retirable. Commits go on meanwhile
/// into the new segment.
fn start_sync(closed: SegmentId, generation: u64, inflight: &Rc<InFlight>, checkpoints: &Rc<Checkpoints>) {
    checkpoints.syncing.set(true);
    let (inflight, checkpoints) = (Rc::clone(inflight), Rc::clone(checkpoints));
    glommio::spawn_local(async move {
        if sync_segments(generation, &inflight, &checkpoints).await {
            checkpoints.retirable.set(Some(closed));
            checkpoints.activatable.set(Some(generation));
        }
        checkpoints.syncing.set(false);
        checkpoints.synced.notify(usize::MAX);
    })
    .detach();
}

async fn sync_segments(generation: u64, inflight: &InFlight, checkpoints: &Checkpoints) -> bool {
    if checkpoints.poisoned.get() {
        return false;
    }
    let deadline = std::time::Instant::now() + CHECKPOINT_WAIT_MAX;
    while inflight.busy_up_to(generation) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            tracing::warn!("checkpoint: deliveries still running; segment kept for the next checkpoint");
            return false;
        }
        // Woken by each finished delivery batch instead of polling.
        let finished = inflight.finished.listen();
        if inflight.busy_up_to(generation) {
            let _ = glommio::timer::timeout(left, async {
                finished.await;
                Ok(())
            })
            .await;
        }
    }
    let retry = std::mem::take(&mut *checkpoints.failed.borrow_mut());
    let retry = if retry.is_empty() {
        retry
    } else {
        let queue = Arc::clone(&checkpoints.queue);
        glommio::executor().spawn_blocking(move || retry_failed(retry, &queue)).await
    };
    let held = !retry.is_empty();
    checkpoints.failed.borrow_mut().extend(retry);
    let syncer = Arc::clone(&checkpoints.syncer);
    match glommio::executor().spawn_blocking(move || syncer.sync()).await {
        Ok(()) if held => {
            tracing::error!(records = checkpoints.failed.borrow().len(), "undelivered records remain; journal segments kept");
            false
        }
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "syncfs reported a writeback error; the journal is kept until restart, which re-checks every file");
            checkpoints.poisoned.set(true);
            false
        }
    }
}

async fn finish(journal: &mut Option<Journal>, inflight: &Rc<InFlight>, checkpoints: &Rc<Checkpoints>, generation: u64, dirty: bool) {
    while checkpoints.syncing.get() {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    retire_synced(journal, checkpoints);
    if !dirty {
        return;
    }
    if let Some(closed) = rotate(journal).await {
        if sync_segments(generation, inflight, checkpoints).await {
            checkpoints.retirable.set(Some(closed));
            checkpoints.activatable.set(Some(generation));
            retire_synced(journal, checkpoints);
        }
    }
}

async fn commit_batch(
    journal: &mut Option<Journal>,
    batch: Vec<Pending>,
    inflight: &Rc<InFlight>,
    checkpoints: &Rc<Checkpoints>,
    writers: &crossbeam::channel::Sender<DeliveryJob>,
    generation: u64,
) {
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
            let queued: Vec<QueueId> = records.iter().filter_map(|r| r.outbound.as_ref().map(|o| o.queue_id)).collect();
            if !queued.is_empty() {
                checkpoints.incoming.borrow_mut().entry(generation).or_default().extend(queued);
            }
            let bytes: u64 = records.iter().map(|r| if let Content::Inline(b) = &r.content { b.len() as u64 } else { 0 }).sum();
            inflight.start(generation, bytes);
            let (done, wait) = oneshot::channel();
            let (inflight, checkpoints) = (Rc::clone(inflight), Rc::clone(checkpoints));
            if let Err(crossbeam::channel::SendError((records, _))) = writers.send((records, done)) {
                // Writer threads gone (cannot happen while the shard runs):
                // keep the records for the checkpoint's retry.
                checkpoints.failed.borrow_mut().extend(records);
                inflight.finish(generation, bytes);
                return;
            }
            glommio::spawn_local(async move {
                let failed = wait.await.unwrap_or_default();
                checkpoints.failed.borrow_mut().extend(failed);
                inflight.finish(generation, bytes);
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
/// them until the next checkpoint). Returns the records with a failed
/// target; the checkpoint retries them and keeps the journal meanwhile.
pub fn deliver_all(records: Vec<JournalRecord>, notify: &dyn Fn(&std::path::Path), queue: &FileQueue) -> Vec<JournalRecord> {
    let mut failed = Vec::new();
    // maildirsize is appended once per mailbox per batch, not per message.
    let mut sizes: std::collections::HashMap<std::path::PathBuf, (i64, i64)> = std::collections::HashMap::new();
    for r in records {
        let mut ok = queue_incoming(&r, queue);
        for d in &r.deliveries {
            match varan_storage::maildir::deliver(d, &r.content) {
                Ok(()) => {
                    if let Some(mailbox) = d.path.parent().and_then(|new| new.parent()) {
                        notify(mailbox);
                    }
                    if let Some(user_dir) = mailbox_root(&d.path) {
                        let name = d.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        let size = varan_storage::maildir::parse_sizes(name).0.unwrap_or(0) as i64;
                        let entry = sizes.entry(user_dir.to_path_buf()).or_default();
                        *entry = (entry.0 + size, entry.1 + 1);
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::error!(path = %d.path.display(), error = %e, "maildir delivery failed; kept in the journal and retried");
                }
            }
        }
        if !ok {
            failed.push(r);
        }
    }
    for (user_dir, (bytes, count)) in sizes {
        if let Err(e) = varan_storage::quota::quota_add(&user_dir, bytes, count) {
            tracing::warn!(error = %e, dir = %user_dir.display(), "cannot update maildirsize");
        }
    }
    failed
}

/// Writes the queue entry of a record with remote recipients into
/// `queue/incoming/` (no fsync; replay writes it again). False on failure.
fn queue_incoming(record: &JournalRecord, queue: &FileQueue) -> bool {
    let Some(o) = &record.outbound else { return true };
    match queue.write_incoming(&o.entry(), &o.prefix, &record.content) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(queue_id = %o.queue_id, error = %e, "queueing for outbound delivery failed; kept in the journal and retried");
            false
        }
    }
}

/// Retries records that failed before, writing only what is missing.
fn retry_failed(records: Vec<JournalRecord>, queue: &FileQueue) -> Vec<JournalRecord> {
    records.into_iter().filter(|r| redeliver(std::slice::from_ref(r), queue).1 > 0).collect()
}

/// The user's Maildir root (where `maildirsize` lives) of a target
/// `<maildir>/new/<name>`: the maildir itself for INBOX, its parent for a
/// Maildir++ folder (`.Name`, marked by a `maildirfolder` file).
fn mailbox_root(target: &std::path::Path) -> Option<&std::path::Path> {
    let maildir = target.parent()?.parent()?;
    let is_folder = maildir.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b".")) && maildir.join("maildirfolder").exists();
    if is_folder {
        maildir.parent()
    } else {
        Some(maildir)
    }
}

/// Recovery of records left in a journal: writes only Maildir targets
/// that are missing or damaged (see `varan_storage::recovery`), and every
/// queue entry again into `queue/incoming/` (entries there are not yet
/// visible to anyone, so rewriting is always safe). Returns
/// (written, failed).
pub fn redeliver(records: &[JournalRecord], queue: &FileQueue) -> (usize, usize) {
    let report = varan_storage::recovery::redeliver(records, varan_storage::recovery::Mode::Check);
    let (mut written, mut failed) = (report.delivered + report.repaired, report.failed);
    for r in records.iter().filter(|r| r.outbound.is_some()) {
        if queue_incoming(r, queue) {
            written += 1;
        } else {
            failed += 1;
        }
    }
    (written, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varan_core::queue::{BodyInfo, Notify, QueueStore, Ret};
    use varan_storage::journal::{Delivery, Outbound, OutboundRecipient};

    fn record(root: &std::path::Path, id: u64) -> JournalRecord {
        JournalRecord {
            id,
            deliveries: vec![Delivery { path: root.join(format!("mail/u/new/{id}")), prefix: b"Delivered-To: u@local.test\n".to_vec() }],
            content: Content::Inline(b"Subject: s\n\nbody\n".to_vec()),
            outbound: Some(Box::new(Outbound {
                queue_id: QueueId::from_journal(id, 1).unwrap_or(QueueId(0)),
                sender: "a@local.test".into(),
                recipients: vec![OutboundRecipient { address: "r@remote.example".into(), orcpt: None, notify: Notify::default() }],
                envid: None,
                ret: Ret::Headers,
                body: BodyInfo { eight_bit: false, smtputf8: false, size: 30 },
                submitter: Some("a@local.test".into()),
                queued_at: 1_796_310_000,
                prefix: b"Received: x\n".to_vec(),
            })),
        }
    }

    #[test]
    fn delivery_and_replay_queue_remote_copies_but_hide_them_until_activated() {
        let root = std::env::temp_dir().join(format!("varan-delivery-test-{}", std::process::id()));
        let queue = FileQueue::open(&root.join("queue")).unwrap();
        let rec = record(&root, 7);
        let id = rec.outbound.as_ref().map(|o| o.queue_id).unwrap();
        assert!(deliver_all(vec![rec.clone()], &|_| {}, &queue).is_empty());
        assert_eq!(std::fs::read(root.join("mail/u/new/7")).unwrap(), b"Delivered-To: u@local.test\nSubject: s\n\nbody\n");
        assert!(queue.list().unwrap().is_empty(), "visible before its segment was retired");
        // A crash before the checkpoint: replay rewrites the same entry.
        assert_eq!(redeliver(std::slice::from_ref(&rec), &queue), (1, 0));
        assert_eq!(queue.activate(&[id]).unwrap(), 1);
        let listed = queue.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0], rec.outbound.as_ref().unwrap().entry());
        let mut content = String::new();
        std::io::Read::read_to_string(&mut queue.content(id).unwrap(), &mut content).unwrap();
        assert_eq!(content, "Received: x\nSubject: s\n\nbody\n");
        // Replay after activation (cannot happen once retired) adds nothing.
        assert_eq!(redeliver(&[rec], &queue).1, 0);
        assert_eq!(queue.list().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
