//! The outbound queue in files: [`FileQueue`] implements
//! [`varan_core::queue::QueueStore`] in `<data_dir>/queue/`
//! (docs/design/outbound.md).
//!
//! ```text
//! <data_dir>/queue/
//!     incoming/<id>    envelopes of journaled messages whose segment is not
//!                      retired yet: invisible to runners, CLI and listings
//!     active/<id>      envelopes the runners work on (format: `format.rs`)
//!     content/<id>     the message (LF line endings), written once, never changed
//!     tmp/             files being written; renamed into place when whole
//!                      (envelope updates, entries enqueued by `enqueue`)
//!     damaged/         envelopes that failed to decode, with their content,
//!                      set aside for the operator (`<id>-<unix time>[.msg]`)
//!     changed          a token rewritten after each management change
//! ```
//!
//! `<id>` is the [`QueueId`] in 16 lower-case hex digits. Every mutation
//! of a visible file (an envelope in `active/`, or its content) is a
//! rename of a complete file from `tmp/`, so a reader (a runner, the CLI
//! in another process) sees an old or a new envelope, never a partial
//! one. The files of an entry still in `incoming/` are written in place:
//! nobody reads them before activation.
//!
//! Who writes what, and the races between them:
//! - The delivery stage writes `content/` then `incoming/` without fsync
//!   (the journal record is the durable copy; replay rewrites both under
//!   the same name). After the checkpoint that syncs them retires the
//!   record's segment, [`FileQueue::activate`] renames `incoming/<id>` to
//!   `active/<id>`; at startup [`FileQueue::activate_all`] does it for all.
//! - A runner's [`QueueStore::update`] replaces the envelope with
//!   `renameat2(RENAME_EXCHANGE)`, which fails when the old name is gone:
//!   an entry deleted by the CLI meanwhile is not brought back (NotFound).
//! - The CLI's retry reads, changes `next_attempt`, exchanges, and then
//!   compares the envelope it displaced with the one it read. If a runner
//!   wrote in between, the change is applied again on top of the runner's
//!   version (bounded by [`MODIFY_TRIES`]), so the runner's results
//!   (delivered recipients, attempts) are never rolled back. A runner
//!   writing after the CLI wins: its attempt was running when the retry
//!   was asked for, which is what a retry asks for.
//! - Delete removes the envelope first (the entry is then gone for every
//!   reader), then the content. A runner still sending the content keeps
//!   its open file; its later `update` gets NotFound.
//!
//! On file systems without `RENAME_EXCHANGE` (rare: Linux ≥ 3.15 on ext4,
//! xfs, btrfs, tmpfs has it) replacing falls back to "rename if the old
//! file exists", which has a small window in which a delete can be undone.
//!
//! `due` lists `active/` (the partition's names and inode numbers) and
//! decodes only envelopes it has not seen in that version; it stats every
//! file only after a management change (the `changed` marker, see
//! [`FileQueue::refresh`]). A listing for the CLI stats every file.
//! Either way the cost grows with the queue: ≈ 0.3 µs per entry for a
//! listing, ≈ 2 µs with the stat, ≈ 10 µs to read and decode.

mod format;

pub use format::{ENVELOPE_BYTES_MAX, MAGIC_LINE};

use crate::journal::Content;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use varan_core::queue::{ContentReader, QueueEntry, QueueError, QueueId, QueueState, QueueStore, QueueTotals};

/// How often a CLI change is re-applied when runners keep rewriting the
/// entry under it before giving up with an error.
pub const MODIFY_TRIES: usize = 8;
/// Files in `tmp/` older than this at server start are leftovers of a
/// crash (a CLI writing right then is much younger) and are deleted.
pub const TMP_STALE_SECS: u64 = 3600;

const INCOMING: &str = "incoming";
const ACTIVE: &str = "active";
const CONTENT: &str = "content";
const TMP: &str = "tmp";
const DAMAGED: &str = "damaged";
/// Rewritten (a new random token) after every management change to an
/// active envelope, so runners know to check every file (`refresh`).
const CHANGED: &str = "changed";
/// Longest marker content read.
const MARKER_BYTES_MAX: usize = 64;

/// The queue directory of a data directory; the server and the CLI both
/// use this, so they always agree.
pub fn queue_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("queue")
}

/// See the module documentation.
#[derive(Debug)]
pub struct FileQueue {
    root: PathBuf,
    /// Decoded active envelopes by id, with the file identity they were
    /// read from. Runners scan their partition for every batch; without
    /// this each scan read and decoded the whole queue. Holds one entry
    /// per active envelope (a few hundred bytes each). How a scan decides
    /// what to re-read: [`FileQueue::refresh`].
    decoded: std::sync::Mutex<std::collections::HashMap<QueueId, (FileStamp, QueueEntry)>>,
    /// Per partition, the content of the `changed` marker when its last
    /// scan started (see [`FileQueue::refresh`]).
    marker_seen: std::sync::Mutex<std::collections::HashMap<(usize, usize), Vec<u8>>>,
}

/// What identifies one version of an envelope file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp { ino: meta.ino(), len: meta.len(), mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec() }
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(e: io::Error) -> QueueError {
    QueueError::Io(e.to_string())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a file of at most `max` bytes; `Ok(None)` if it does not exist.
fn read_bounded(path: &Path, max: usize) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut out)?;
    Ok(Some(out))
}

impl FileQueue {
    /// Opens the queue in `root` (see [`queue_dir`]), creating its
    /// directories. Safe while another process uses the same queue.
    pub fn open(root: &Path) -> io::Result<FileQueue> {
        for sub in [INCOMING, ACTIVE, CONTENT, TMP, DAMAGED] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(FileQueue { root: root.to_path_buf(), decoded: Default::default(), marker_seen: Default::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn envelope_path(&self, dir: &str, id: QueueId) -> PathBuf {
        self.root.join(dir).join(id.to_string())
    }

    fn content_path(&self, id: QueueId) -> PathBuf {
        self.root.join(CONTENT).join(id.to_string())
    }

    fn tmp_path(&self, id: QueueId) -> PathBuf {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.root.join(TMP).join(format!("{id}.{}.{seq}", std::process::id()))
    }

    /// Writes `bytes` to a new file in `tmp/` (fsynced when `durable`).
    fn write_tmp(&self, id: QueueId, parts: &[&[u8]], durable: bool) -> io::Result<PathBuf> {
        let tmp = self.tmp_path(id);
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            for p in parts {
                f.write_all(p)?;
            }
            if durable {
                f.sync_data()?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Writes the content file of `id` in place: `prefix` then the journal
    /// content. A spooled body without prefix is hard-linked (the journal
    /// deletes its own name on retire; the queue's stays). Not fsynced and
    /// not renamed from `tmp/`: nobody reads the content of an entry that
    /// is still in `incoming/`, and replay rewrites it whole (a rename
    /// between directories takes the file system's rename lock, which the
    /// shards' delivery workers then queue on).
    fn write_content(&self, id: QueueId, prefix: &[u8], content: &Content) -> io::Result<()> {
        let target = self.content_path(id);
        let body: &[u8] = match content {
            Content::Inline(body) => body,
            Content::Spooled(spool) => {
                if prefix.is_empty() {
                    remove_if_exists(&target)?;
                    if fs::hard_link(spool, &target).is_ok() {
                        return Ok(());
                    }
                }
                let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&target)?;
                out.write_all(prefix)?;
                io::copy(&mut File::open(spool)?, &mut out)?;
                return Ok(());
            }
        };
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&target)?;
        out.write_all(prefix)?;
        out.write_all(body)
    }

    /// The delivery stage's write (after the journal commit, and again on
    /// replay): content, then `incoming/<id>`, both written in place
    /// without fsync, replacing what a previous attempt left. An entry
    /// already active (its segment was retired) is left alone.
    pub fn write_incoming(&self, entry: &QueueEntry, prefix: &[u8], content: &Content) -> io::Result<()> {
        if self.envelope_path(ACTIVE, entry.id).exists() {
            return Ok(());
        }
        let bytes = format::encode(entry).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.write_content(entry.id, prefix, content)?;
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(self.envelope_path(INCOMING, entry.id))?;
        out.write_all(&bytes)
    }

    /// Hands entries to the runners (after their journal segment was
    /// retired). Ids with nothing in `incoming/` are skipped. Returns how
    /// many moved. Not fsynced: a lost rename leaves the entry in
    /// `incoming/`, which the next start activates.
    pub fn activate(&self, ids: &[QueueId]) -> io::Result<usize> {
        let mut moved = 0;
        for &id in ids {
            match fs::rename(self.envelope_path(INCOMING, id), self.envelope_path(ACTIVE, id)) {
                Ok(()) => moved += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// At server start, after journal recovery retired every segment:
    /// everything in `incoming/` is durable and goes to `active/`. Then
    /// leftovers of crashes are cleaned: stale `tmp/` files, and content
    /// files without an envelope (a delete cut short). Call before any
    /// shard runs (a concurrent write could look like a leftover).
    pub fn activate_all(&self) -> io::Result<usize> {
        let ids = self.ids_in(INCOMING)?;
        let moved = self.activate(&ids)?;
        let now = std::time::SystemTime::now();
        for entry in fs::read_dir(self.root.join(TMP))? {
            let entry = entry?;
            let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age.as_secs() > TMP_STALE_SECS);
            if old {
                remove_if_exists(&entry.path())?;
            }
        }
        let live: std::collections::HashSet<QueueId> = self.ids_in(ACTIVE)?.into_iter().collect();
        for id in self.ids_in(CONTENT)? {
            if !live.contains(&id) {
                tracing::info!(%id, "removing queue content without an envelope");
                remove_if_exists(&self.content_path(id))?;
            }
        }
        if moved > 0 {
            tracing::info!(entries = moved, "queue: journaled entries handed to the runners");
        }
        Ok(moved)
    }

    /// Ids named by the files of `dir` (other names are ignored).
    fn ids_in(&self, dir: &str) -> io::Result<Vec<QueueId>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join(dir))? {
            let name = entry?.file_name();
            if let Some(id) = name.to_str().and_then(QueueId::parse_strict) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Ids and inode numbers of the files of `dir`, from the directory
    /// listing alone (no stat; other names are ignored).
    fn listing(&self, dir: &str, keep: impl Fn(QueueId) -> bool) -> io::Result<Vec<(QueueId, u64)>> {
        use std::os::unix::fs::DirEntryExt;
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join(dir))? {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(QueueId::parse_strict) {
                if keep(id) {
                    out.push((id, entry.ino()));
                }
            }
        }
        Ok(out)
    }

    fn read_marker(&self) -> Vec<u8> {
        read_bounded(&self.root.join(CHANGED), MARKER_BYTES_MAX).ok().flatten().unwrap_or_default()
    }

    /// Tells runners (in this or the server's process) that an active
    /// envelope was changed by someone else than its runner: the marker
    /// gets a new unique token, written whole and renamed into place.
    fn note_change(&self) -> io::Result<()> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let token = format!("{nanos}.{}.{}\n", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed));
        let tmp = self.write_tmp(QueueId(0), &[token.as_bytes()], false)?;
        fs::rename(&tmp, self.root.join(CHANGED)).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Moves a damaged envelope and its content to `damaged/`, keeping
    /// them for the operator, and reports it.
    fn set_aside(&self, id: QueueId, why: &str) {
        let stamp = now_secs();
        let dest = self.root.join(DAMAGED).join(format!("{id}-{stamp}"));
        tracing::error!(%id, reason = why, kept = %dest.display(), "damaged queue entry set aside");
        if let Err(e) = fs::rename(self.envelope_path(ACTIVE, id), &dest) {
            tracing::error!(%id, error = %e, "cannot set the damaged queue entry aside");
            return;
        }
        let _ = fs::rename(self.content_path(id), dest.with_extension("msg"));
    }

    /// Reads one active envelope: raw bytes and the entry. A damaged file
    /// is set aside and reported as `Corrupt`.
    fn read_active(&self, id: QueueId) -> Result<(Vec<u8>, QueueEntry), QueueError> {
        let bytes = read_bounded(&self.envelope_path(ACTIVE, id), ENVELOPE_BYTES_MAX).map_err(io_err)?.ok_or(QueueError::NotFound(id))?;
        let entry = format::decode(&bytes).and_then(|e| if e.id == id { Ok(e) } else { Err(format!("file {id} holds entry {}", e.id)) });
        match entry {
            Ok(e) => Ok((bytes, e)),
            Err(why) => {
                self.set_aside(id, &why);
                Err(QueueError::Corrupt(format!("{id}: {why}")))
            }
        }
    }

    /// Brings the cache up to date for `partition` (all entries: `None`)
    /// and returns the ids present, sorted. Damaged envelopes are set
    /// aside and skipped, vanished ones (deleted meanwhile) skipped.
    ///
    /// Every change to an active envelope is a new file (a new inode)
    /// renamed into place, made either by the partition's runner, which
    /// puts what it wrote into the cache itself ([`QueueStore::update`]),
    /// or by management ([`FileQueue::modify`]), which then rewrites the
    /// `changed` marker. So a scan of a partition normally compares the
    /// inode numbers of the directory listing with the cache (no stat, no
    /// read); when the marker differs from the one its last scan saw, or
    /// for a listing of everything, it stats every file and re-reads those
    /// whose inode, length, mtime or ctime differ. (Comparing the inode
    /// alone would miss a management change whose new file reused the
    /// inode number of the cached one.) A marker rewritten while a scan
    /// runs makes the next scan a full one.
    fn refresh(&self, partition: Option<(usize, usize)>) -> Result<Vec<QueueId>, QueueError> {
        let keep = |id: QueueId| partition.is_none_or(|p| in_partition(id, p));
        let marker = self.read_marker();
        let full = partition.is_none_or(|p| lock(&self.marker_seen).get(&p) != Some(&marker));
        let mut present = Vec::new();
        for (id, ino) in self.listing(ACTIVE, keep).map_err(io_err)? {
            if !full && lock(&self.decoded).get(&id).is_some_and(|(stamp, _)| stamp.ino == ino) {
                present.push(id);
                continue;
            }
            // Stat before reading: if the file changes in between, the
            // stamp is the older one and the next full scan reads it again.
            let stamp = match fs::metadata(self.envelope_path(ACTIVE, id)) {
                Ok(meta) => FileStamp::of(&meta),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            };
            if lock(&self.decoded).get(&id).is_some_and(|(cached, _)| *cached == stamp) {
                present.push(id);
                continue;
            }
            match self.read_active(id) {
                Ok((_, e)) => {
                    lock(&self.decoded).insert(id, (stamp, e));
                    present.push(id);
                }
                Err(QueueError::NotFound(_) | QueueError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
        }
        present.sort_unstable();
        lock(&self.decoded).retain(|id, _| !keep(*id) || present.binary_search(id).is_ok());
        if let Some(p) = partition {
            lock(&self.marker_seen).insert(p, marker);
        }
        Ok(present)
    }

    /// Every readable active entry, oldest first.
    fn scan_all(&self) -> Result<Vec<QueueEntry>, QueueError> {
        let present = self.refresh(None)?;
        let cache = lock(&self.decoded);
        let mut out: Vec<QueueEntry> = present.iter().filter_map(|id| cache.get(id).map(|(_, e)| e.clone())).collect();
        out.sort_by_key(|e| (e.queued_at, e.id));
        Ok(out)
    }

    /// Replaces `active/<id>` with `bytes` only if it still exists.
    /// Returns the envelope it displaced.
    ///
    /// The new file's data is fdatasync'ed before the exchange: ext4 only
    /// forces out the data of a file renamed over another by plain
    /// `rename` (`auto_da_alloc`), not by `RENAME_EXCHANGE`, so without it a
    /// crash could leave an empty envelope in place of a good one, and the
    /// entry would end up in `damaged/` instead of being retried. One
    /// fdatasync per delivery attempt is small next to the attempt's network
    /// round trips. The rename itself is not synced: losing it repeats an
    /// attempt (docs/design/outbound.md).
    fn replace(&self, id: QueueId, bytes: &[u8]) -> Result<(Vec<u8>, FileStamp), QueueError> {
        let target = self.envelope_path(ACTIVE, id);
        let tmp = self.write_tmp(id, &[bytes], true).map_err(io_err)?;
        // The new file's identity (its inode stays with it through the
        // exchange; the rename changes its ctime).
        let stamp = match fs::metadata(&tmp) {
            Ok(meta) => FileStamp::of(&meta),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(e));
            }
        };
        let swapped = match crate::sys::rename_exchange(&tmp, &target) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                // No RENAME_EXCHANGE here: check, then rename (racy, see
                // the module documentation).
                let old = read_bounded(&target, ENVELOPE_BYTES_MAX);
                match old {
                    Ok(Some(old)) => {
                        let r = fs::rename(&tmp, &target).map_err(io_err).map(|()| (old, stamp));
                        let _ = fs::remove_file(&tmp);
                        return r;
                    }
                    Ok(None) => Err(io::Error::from(io::ErrorKind::NotFound)),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        let result = match swapped {
            Ok(()) => read_bounded(&tmp, ENVELOPE_BYTES_MAX).map_err(io_err).map(|old| (old.unwrap_or_default(), stamp)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(QueueError::NotFound(id)),
            Err(e) => Err(io_err(e)),
        };
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Applies `change` to an entry without undoing a concurrent writer's
    /// results (see the module documentation).
    fn modify(&self, id: QueueId, change: impl Fn(&mut QueueEntry)) -> Result<(), QueueError> {
        let (read, _) = self.read_active(id)?;
        // `base`: the newest state seen, to apply the change to;
        // `expected`: what should be in the file when we replace it.
        let (mut base, mut expected) = (read.clone(), read);
        for _ in 0..MODIFY_TRIES {
            let mut entry = format::decode(&base).map_err(QueueError::Corrupt)?;
            change(&mut entry);
            let bytes = format::encode(&entry).map_err(QueueError::Corrupt)?;
            let (displaced, _) = self.replace(id, &bytes)?;
            if displaced == expected {
                return self.note_change().map_err(io_err);
            }
            // Someone wrote in between and we just replaced their version:
            // apply the change to theirs and put that in place of ours.
            base = displaced;
            expected = bytes;
        }
        // Out of tries, with our change (made on an older version) in the
        // file: put back the newest version we displaced, and again if a
        // runner wrote meanwhile, so its results are never rolled back.
        let mut restore = base;
        for _ in 0..MODIFY_TRIES {
            let (displaced, _) = self.replace(id, &restore)?;
            if displaced == expected {
                break;
            }
            expected = std::mem::replace(&mut restore, displaced);
        }
        self.note_change().map_err(io_err)?;
        Err(QueueError::Io(format!("queue entry {id} kept changing; try again")))
    }

    /// Removes an entry: envelope first, then content.
    fn remove(&self, id: QueueId) -> Result<(), QueueError> {
        lock(&self.decoded).remove(&id);
        if !remove_if_exists(&self.envelope_path(ACTIVE, id)).map_err(io_err)? {
            return Err(QueueError::NotFound(id));
        }
        remove_if_exists(&self.content_path(id)).map_err(io_err)?;
        Ok(())
    }
}

fn check_partition((k, n): (usize, usize)) -> Result<(), QueueError> {
    if n == 0 || k >= n {
        return Err(QueueError::Io(format!("invalid partition {k} of {n}")));
    }
    Ok(())
}

fn in_partition(id: QueueId, (k, n): (usize, usize)) -> bool {
    id.0 % n as u64 == k as u64
}

impl QueueStore for FileQueue {
    fn due(&self, partition: (usize, usize), now: u64, limit: usize) -> Result<Vec<QueueEntry>, QueueError> {
        check_partition(partition)?;
        let present = self.refresh(Some(partition))?;
        let cache = lock(&self.decoded);
        // The `limit` oldest due entries; only those are cloned.
        let mut due: Vec<(u64, QueueId)> = present.iter().filter_map(|id| cache.get(id)).filter(|(_, e)| e.next_attempt <= now).map(|(_, e)| (e.queued_at, e.id)).collect();
        if limit == 0 {
            return Ok(Vec::new());
        }
        if due.len() > limit {
            due.select_nth_unstable(limit);
            due.truncate(limit);
        }
        due.sort_unstable();
        Ok(due.iter().filter_map(|(_, id)| cache.get(id).map(|(_, e)| e.clone())).collect())
    }

    fn next_due(&self, partition: (usize, usize)) -> Result<Option<u64>, QueueError> {
        check_partition(partition)?;
        let present = self.refresh(Some(partition))?;
        let cache = lock(&self.decoded);
        Ok(present.iter().filter_map(|id| cache.get(id)).map(|(_, e)| e.next_attempt).min())
    }

    fn content(&self, id: QueueId) -> Result<ContentReader, QueueError> {
        match File::open(self.content_path(id)) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(QueueError::NotFound(id)),
            Err(e) => Err(io_err(e)),
        }
    }

    fn update(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        if entry.finished() {
            return self.remove(entry.id);
        }
        let bytes = format::encode(entry).map_err(QueueError::Corrupt)?;
        let (_, stamp) = self.replace(entry.id, &bytes)?;
        // The runner's own write: later scans know it by its inode.
        lock(&self.decoded).insert(entry.id, (stamp, entry.clone()));
        Ok(())
    }

    fn enqueue(&self, entry: &QueueEntry, content: &[u8]) -> Result<(), QueueError> {
        let bytes = format::encode(entry).map_err(QueueError::Corrupt)?;
        let (active, content_dir) = (self.envelope_path(ACTIVE, entry.id), self.root.join(CONTENT));
        if active.exists() || self.envelope_path(INCOMING, entry.id).exists() {
            return Err(QueueError::Io(format!("queue entry {} exists already", entry.id)));
        }
        let body = self.write_tmp(entry.id, &[content], true).map_err(io_err)?;
        fs::rename(&body, self.content_path(entry.id)).map_err(io_err)?;
        let env = self.write_tmp(entry.id, &[&bytes], true).map_err(io_err)?;
        // link(2) never replaces: two writers of one id cannot both win.
        let linked = fs::hard_link(&env, &active);
        let _ = fs::remove_file(&env);
        linked.map_err(io_err)?;
        sync_dir(&content_dir).and_then(|()| sync_dir(&self.root.join(ACTIVE))).map_err(io_err)
    }

    fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        self.scan_all()
    }

    fn totals(&self) -> Result<QueueTotals, QueueError> {
        let mut t = QueueTotals::default();
        for e in self.list()? {
            match e.state() {
                QueueState::New => t.new += 1,
                QueueState::Deferred => t.deferred += 1,
            }
            t.bytes += e.body.size;
        }
        Ok(t)
    }

    fn get(&self, id: QueueId) -> Result<QueueEntry, QueueError> {
        self.read_active(id).map(|(_, e)| e)
    }

    fn retry(&self, id: QueueId) -> Result<(), QueueError> {
        self.modify(id, |e| e.next_attempt = 0)
    }

    fn retry_all(&self) -> Result<u64, QueueError> {
        let mut n = 0;
        for e in self.list()? {
            match self.retry(e.id) {
                Ok(()) => n += 1,
                Err(QueueError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn delete(&self, id: QueueId) -> Result<(), QueueError> {
        self.remove(id)
    }

    fn delete_deferred(&self) -> Result<u64, QueueError> {
        let mut n = 0;
        for e in self.list()?.into_iter().filter(|e| e.state() == QueueState::Deferred) {
            match self.remove(e.id) {
                Ok(()) => n += 1,
                Err(QueueError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
