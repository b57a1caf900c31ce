//! The per-shard spool journal: the point where an accepted message becomes
//! durable.
//!
//! Per-message fsync is slow (≈ 470 create + write + fsync per second on
//! the reference disk) while appending many records and calling one
//! `fdatasync` reaches ≈ 29,000 records per second (ARCHITECTURE.md §4).
//! So the SMTP layer appends one [`JournalRecord`] per accepted message,
//! many sessions' records go to disk with one `fdatasync`
//! ([`Journal::append`], group commit), and only then are their `250`
//! replies sent. The Maildir files are written afterwards without fsync.
//!
//! Checkpoint, run by the shard every `storage.checkpoint_interval`:
//! 1. `let closed = journal.rotate()?` — every record appended so far is in
//!    a segment ≤ `closed`;
//! 2. wait until every record of those segments has been delivered;
//! 3. [`crate::maildir::FsSyncer::sync`] (one `syncfs(2)` for all Maildirs);
//! 4. `journal.retire(closed)` deletes those segments and their spool files.
//!
//! If step 3 fails, do not retire: the pages that failed writeback are now
//! marked clean, so re-read the records with [`Journal::reread`], rewrite
//! them with [`crate::recovery::redeliver`] in `Rewrite` mode, and sync
//! again.
//!
//! Startup: [`Journal::open`] returns every record of the segments left by
//! the previous run; [`crate::recovery::redeliver`] writes what is missing
//! or damaged (file names are deterministic, so replay is idempotent);
//! after a successful sync the caller retires [`Journal::recovered_upto`].
//!
//! Directory layout (`dir` is `<data_dir>/journal/shard-<n>/`):
//! `seg-<16 hex digits>.log` segments, `lock` (an `flock` held while the
//! journal is open, so two processes can never append to one journal),
//! and by default `spool/` for this journal's spilled message bodies.
//!
//! Every method is synchronous and may run on any thread; the type is
//! `Send`. Methods that fsync are meant for the runtime's blocking pool.

use crate::codec::{self, SegmentHeader, Stop};
use crate::sys;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use varan_core::queue::{BodyInfo, Notify, QueueEntry, QueueId, QueuedRecipient, RecipientState, Ret};

pub use crate::codec::{CONTENT_BYTES_MAX, DELIVERIES_MAX, PATH_BYTES_MAX, PREFIX_BYTES_MAX, RECORD_BYTES_MAX};

/// Buffer between record encoding and the segment file. Larger inline
/// bodies bypass it (`BufWriter` writes slices bigger than its buffer
/// directly), so it only batches the small heads of many records.
const WRITE_BUFFER_BYTES: usize = 256 << 10;
/// Read buffer used while replaying segments at startup.
const READ_BUFFER_BYTES: usize = 1 << 20;
/// File name of the journal lock.
const LOCK_FILE: &str = "lock";
/// Retired segments kept (renamed `spare-*.log`) for reuse as new ones.
const SPARES_MAX: usize = 1;
/// Zeros written per call while preallocating a segment.
const ZERO_CHUNK_BYTES: usize = 1 << 20;
/// The most a segment may be preallocated (and the config may ask for).
pub const SEGMENT_PREALLOCATION_MAX: u64 = 1 << 30;

/// How segments are laid out on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalOptions {
    /// Bytes each new segment is filled with zeros to before use (0: grow
    /// as records come). Appends into written space change no file-system
    /// metadata, so their `fdatasync` needs no file-system journal commit
    /// and does not wait for the data of every Maildir file written since
    /// the last one (ext4 `data=ordered`). Retired segments are recycled,
    /// so the zeros are written once.
    pub segment_bytes: u64,
}

/// One accepted message: where it must end up and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Unique and increasing across restarts, from [`Journal::next_id`].
    pub id: u64,
    /// One target file per local recipient mailbox.
    pub deliveries: Vec<Delivery>,
    pub content: Content,
    /// The message's remote recipients, to be queued for outbound
    /// delivery after the commit (`None`: local mail only, stored in the
    /// version 1 record format that older builds read).
    pub outbound: Option<Box<Outbound>>,
}

/// The outbound envelope of a record (docs/design/outbound.md): what
/// becomes a [`varan_core::queue::QueueEntry`] in `queue/incoming/` after
/// the commit, and again on replay. Limits: `varan_core::queue::limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Fixed before the append, so replay rewrites the same entry.
    pub queue_id: QueueId,
    /// MAIL FROM; empty for the null reverse path.
    pub sender: String,
    pub recipients: Vec<OutboundRecipient>,
    /// `ENVID=`, decoded from xtext.
    pub envid: Option<String>,
    pub ret: Ret,
    pub body: BodyInfo,
    /// SASL identity of the submitter.
    pub submitter: Option<String>,
    /// Seconds since the Unix epoch.
    pub queued_at: u64,
    /// Trace header lines (Received) written before the content in the
    /// queue's copy of the message. At most [`PREFIX_BYTES_MAX`] bytes.
    pub prefix: Vec<u8>,
}

/// One remote recipient with its DSN parameters (RFC 3461 §4.1–4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecipient {
    pub address: String,
    /// `ORCPT=` decoded from xtext, e.g. `rfc822;bob@example.org`.
    pub orcpt: Option<String>,
    pub notify: Notify,
}

impl Outbound {
    /// The new queue entry: every recipient pending, never tried.
    pub fn entry(&self) -> QueueEntry {
        QueueEntry {
            id: self.queue_id,
            sender: self.sender.clone(),
            recipients: self
                .recipients
                .iter()
                .map(|r| QueuedRecipient { address: r.address.clone(), orcpt: r.orcpt.clone(), notify: r.notify, state: RecipientState::Pending, last_error: None })
                .collect(),
            envid: self.envid.clone(),
            ret: self.ret,
            body: self.body,
            submitter: self.submitter.clone(),
            queued_at: self.queued_at,
            next_attempt: 0,
            attempts: 0,
            delay_warned: false,
        }
    }
}

/// One target file of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Final absolute path `<maildir>/new/<name>`; the name comes from
    /// [`crate::maildir::MaildirLayout::new_message_name`] and is fixed
    /// before the append, which is what makes replay idempotent.
    pub path: PathBuf,
    /// Per-recipient header lines (Return-Path, Delivered-To, Received)
    /// with LF endings, written before the content. At most
    /// [`PREFIX_BYTES_MAX`] bytes.
    pub prefix: Vec<u8>,
}

/// The message body shared by all deliveries of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The message with LF line endings, kept in the record itself.
    Inline(Vec<u8>),
    /// A spool file already `fdatasync`ed by [`crate::spool::Spool::finish`];
    /// the journal stores its path and length, and deletes it on retire.
    Spooled(PathBuf),
}

/// Names a segment file (`seg-<16 hex digits>.log`). Ids only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl SegmentId {
    fn file_name(self) -> String {
        format!("seg-{self}.log")
    }

    fn parse(name: &str) -> Option<SegmentId> {
        let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(SegmentId)
    }
}

/// A cloneable handle that hands out record ids without borrowing the
/// journal, so a shard can number new messages while an append runs on
/// the blocking pool. Ids are unique and increasing within the process,
/// and every id ever appended is below every id handed out after a
/// restart (the base is persisted in each segment header and recovered
/// from the records).
#[derive(Debug, Clone)]
pub struct IdSource(Arc<AtomicU64>);

impl IdSource {
    /// The next id. Wrapping would take 584 years at 10⁹ ids per second.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Segment {
    id: SegmentId,
    file: File,
    /// Bytes of header and records written; the file may be longer
    /// (preallocated zeros, or a recycled segment's old contents).
    len: u64,
    spool_files: Vec<PathBuf>,
}

/// See the module documentation.
pub struct Journal {
    dir: PathBuf,
    spool_dir: PathBuf,
    _lock: File,
    /// `None` after a failed append abandoned the segment; the next append
    /// or rotate starts a new one.
    current: Option<Segment>,
    next_segment: u64,
    /// Closed segments and the spool files their records reference.
    closed: BTreeMap<SegmentId, Vec<PathBuf>>,
    recovered_upto: Option<SegmentId>,
    ids: IdSource,
    options: JournalOptions,
    /// Retired segment files waiting to be reused.
    spares: Vec<PathBuf>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn data_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// What the segments of a previous run held.
struct Replay {
    /// Segments in id order with their readable records.
    segments: Vec<(SegmentId, Vec<JournalRecord>)>,
    next_id: u64,
    max_segment: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, with spilled
    /// message bodies in `<dir>/spool/`. See [`Journal::open_with_spool`].
    pub fn open(dir: &Path) -> io::Result<(Journal, Vec<JournalRecord>)> {
        Self::open_with_spool(dir, &dir.join("spool"))
    }

    /// Opens the journal in `dir` and returns the records of the previous
    /// run that may still need (re)delivery, oldest first; then starts a
    /// fresh segment. `spool_dir` must belong to this journal alone: spool
    /// files there that no live record references are deleted here, which
    /// would destroy another journal's in-flight messages.
    ///
    /// Records whose spool file is missing or has the wrong length cannot
    /// be delivered; they are logged as lost and left out.
    pub fn open_with_spool(dir: &Path, spool_dir: &Path) -> io::Result<(Journal, Vec<JournalRecord>)> {
        Self::open_with_options(dir, spool_dir, JournalOptions::default())
    }

    /// As [`Journal::open_with_spool`], with segment preallocation.
    pub fn open_with_options(dir: &Path, spool_dir: &Path, options: JournalOptions) -> io::Result<(Journal, Vec<JournalRecord>)> {
        if options.segment_bytes > SEGMENT_PREALLOCATION_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("journal segment preallocation over {SEGMENT_PREALLOCATION_MAX} bytes")));
        }
        fs::create_dir_all(dir)?;
        fs::create_dir_all(spool_dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(dir.join(LOCK_FILE))?;
        sys::try_lock_exclusive(&lock).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::WouldBlock, format!("journal {} is in use by another process", dir.display()))
            } else {
                e
            }
        })?;
        let replay = replay_segments(dir)?;
        let first = replay.max_segment.checked_add(1).ok_or_else(|| data_error("journal segment ids exhausted".into()))?;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            spool_dir: spool_dir.to_path_buf(),
            _lock: lock,
            current: None,
            next_segment: first,
            closed: BTreeMap::new(),
            recovered_upto: None,
            ids: IdSource(Arc::new(AtomicU64::new(replay.next_id))),
            options,
            spares: Vec::new(),
        };
        journal.adopt_spares()?;
        journal.start_segment()?;
        let records = journal.adopt_replay(replay)?;
        journal.remove_orphan_spool_files(&records)?;
        if !records.is_empty() {
            tracing::info!(journal = %dir.display(), records = records.len(), "journal holds records from the previous run");
        }
        Ok((journal, records))
    }

    /// Takes over the old segments: empty ones are deleted now (the new
    /// segment, already durable, carries the id base), the others are
    /// closed segments the caller retires after redelivery.
    fn adopt_replay(&mut self, replay: Replay) -> io::Result<Vec<JournalRecord>> {
        let mut records = Vec::new();
        let mut removed_any = false;
        for (id, recs) in replay.segments {
            if recs.is_empty() {
                remove_if_exists(&self.dir.join(id.file_name()))?;
                removed_any = true;
                continue;
            }
            let spools = recs.iter().filter_map(|r| spool_path(&r.content).map(Path::to_path_buf)).collect();
            self.closed.insert(id, spools);
            self.recovered_upto = Some(id);
            records.extend(recs);
        }
        if removed_any {
            sync_dir(&self.dir)?;
        }
        Ok(records)
    }

    /// Deletes `*.msg` files in the spool directory that no live record
    /// references (bodies of sessions that died before their append, or of
    /// segments whose deletion was durable before the crash). Compared by
    /// device and inode, so differently spelled paths cannot fool it.
    fn remove_orphan_spool_files(&self, records: &[JournalRecord]) -> io::Result<()> {
        let mut live = HashSet::new();
        for path in records.iter().filter_map(|r| spool_path(&r.content)) {
            if let Ok(m) = fs::metadata(path) {
                live.insert((m.dev(), m.ino()));
            }
        }
        for entry in fs::read_dir(&self.spool_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".msg") {
                continue;
            }
            let m = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if m.is_file() && !live.contains(&(m.dev(), m.ino())) {
                tracing::info!(file = %entry.path().display(), "removing orphan spool file");
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Finds `spare-*.log` files of a previous run: reused when
    /// preallocation is on, deleted otherwise.
    fn adopt_spares(&mut self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_spare = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("spare-") && n.ends_with(".log"));
            if !is_spare {
                continue;
            }
            if self.options.segment_bytes > 0 && self.spares.len() < SPARES_MAX {
                self.spares.push(path);
            } else {
                remove_if_exists(&path)?;
            }
        }
        Ok(())
    }

    /// Creates the next segment (reusing a spare when there is one) and
    /// makes it durable (header, fdatasync, directory fsync) before any
    /// record goes in.
    fn start_segment(&mut self) -> io::Result<()> {
        let id = SegmentId(self.next_segment);
        let path = self.dir.join(id.file_name());
        let header = codec::encode_segment_header(SegmentHeader { segment: id.0, id_base: self.ids.peek() });
        let made = match self.spares.pop() {
            Some(spare) => fs::rename(&spare, &path).and_then(|()| OpenOptions::new().write(true).open(&path)),
            None => OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).and_then(|f| {
                zero_fill(&f, self.options.segment_bytes)?;
                Ok(f)
            }),
        }
        .and_then(|file| {
            file.write_all_at(&header, 0)?;
            (&file).seek(SeekFrom::Start(header.len() as u64))?;
            file.sync_data()?;
            sync_dir(&self.dir)?;
            Ok(file)
        });
        let file = match made {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        self.next_segment = self.next_segment.checked_add(1).ok_or_else(|| data_error("journal segment ids exhausted".into()))?;
        self.current = Some(Segment { id, file, len: header.len() as u64, spool_files: Vec::new() });
        Ok(())
    }

    /// Writes all `records`, then one `fdatasync` (group commit). When this
    /// returns `Ok`, every record is durable and the caller may acknowledge
    /// them. On error none may be acknowledged: the partial tail is cut off
    /// (best effort) and the segment is abandoned, since after a failed
    /// fsync the kernel may have dropped the dirty pages and a retry could
    /// falsely succeed. Invalid records are refused before anything is
    /// written.
    pub fn append(&mut self, records: &[JournalRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            self.start_segment()?;
        }
        let segment = self.current.as_ref().map_or(0, |s| s.id.0);
        let mut encoded = Vec::with_capacity(records.len());
        let mut spool_dirs: Vec<&Path> = Vec::new();
        let mut spool_files = Vec::new();
        for r in records {
            let mut spool_len = 0;
            if let Content::Spooled(path) = &r.content {
                spool_len = fs::metadata(path)?.len();
                spool_files.push(path.clone());
                if let Some(parent) = path.parent() {
                    if !spool_dirs.contains(&parent) {
                        spool_dirs.push(parent);
                    }
                }
            }
            encoded.push((r, spool_len));
        }
        // The spool files' data was fdatasync'ed by Spool::finish; their
        // directory entries become durable here, once per batch.
        let encoded = encoded.into_iter().map(|(r, spool_len)| codec::encode(r, spool_len, segment)).collect::<io::Result<Vec<_>>>()?;
        for dir in spool_dirs {
            sync_dir(dir)?;
        }
        let Some(seg) = self.current.as_mut() else {
            return Err(io::Error::other("journal has no open segment"));
        };
        let start = seg.len;
        let written = write_all_records(&seg.file, &encoded).and_then(|n| seg.file.sync_data().map(|()| n));
        match written {
            Ok(n) => {
                seg.len += n;
                seg.spool_files.extend(spool_files);
                Ok(())
            }
            Err(e) => {
                tracing::error!(segment = %seg.id, error = %e, "journal append failed; abandoning segment");
                let _ = seg.file.set_len(start).and_then(|()| seg.file.sync_data());
                self.close_current();
                Err(e)
            }
        }
    }

    fn close_current(&mut self) {
        if let Some(seg) = self.current.take() {
            self.closed.insert(seg.id, seg.spool_files);
        }
    }

    /// The next record id; see [`IdSource`].
    pub fn next_id(&mut self) -> u64 {
        self.ids.next()
    }

    /// A handle for numbering records without borrowing the journal.
    pub fn ids(&self) -> IdSource {
        self.ids.clone()
    }

    /// Closes the current segment and starts a new one. Returns an id such
    /// that every record appended before this call is in a segment ≤ it.
    pub fn rotate(&mut self) -> io::Result<SegmentId> {
        let closing = SegmentId(self.next_segment - 1);
        let previous = self.current.take();
        match self.start_segment() {
            Ok(()) => {
                if let Some(seg) = previous {
                    self.closed.insert(seg.id, seg.spool_files);
                }
                Ok(closing)
            }
            Err(e) => {
                self.current = previous;
                Err(e)
            }
        }
    }

    /// Deletes the closed segments with id ≤ `upto` and then the spool
    /// files their records reference. The caller guarantees that all those
    /// records were delivered and synced. The current segment is never
    /// deleted. The directory is fsynced between the two steps so a crash
    /// can never leave a segment whose spool files are gone.
    pub fn retire(&mut self, upto: SegmentId) -> io::Result<()> {
        let victims: Vec<SegmentId> = self.closed.range(..=upto).map(|(id, _)| *id).collect();
        if victims.is_empty() {
            return Ok(());
        }
        let mut spools = Vec::new();
        let mut result = Ok(());
        for id in victims {
            let path = self.dir.join(id.file_name());
            let recycle = self.options.segment_bytes > 0 && self.spares.len() < SPARES_MAX && fs::metadata(&path).is_ok_and(|m| m.len() >= self.options.segment_bytes);
            let gone = if recycle {
                let spare = self.dir.join(format!("spare-{id}.log"));
                fs::rename(&path, &spare).map(|()| self.spares.push(spare))
            } else {
                remove_if_exists(&path)
            };
            if let Err(e) = gone {
                result = Err(e);
                break;
            }
            if let Some(files) = self.closed.remove(&id) {
                spools.extend(files);
            }
        }
        if self.recovered_upto.is_some_and(|r| r <= upto) {
            self.recovered_upto = None;
        }
        sync_dir(&self.dir)?;
        for path in spools {
            remove_if_exists(&path)?;
        }
        result
    }

    /// Re-reads the records of the closed segments ≤ `upto` (after a failed
    /// filesystem sync, to rewrite them). Oldest first.
    pub fn reread(&self, upto: SegmentId) -> io::Result<Vec<JournalRecord>> {
        let mut out = Vec::new();
        for id in self.closed.range(..=upto).map(|(id, _)| *id) {
            let (contents, _) = read_segment_file(&self.dir.join(id.file_name()), id)?;
            out.extend(contents.records.into_iter().map(|(r, _)| r));
        }
        Ok(out)
    }

    /// The newest segment left by the previous run that still holds
    /// records; retire it once the records from `open` are delivered and
    /// synced. `None` when there is nothing to recover.
    pub fn recovered_upto(&self) -> Option<SegmentId> {
        self.recovered_upto
    }

    /// The segment appends currently go to (`None` after a failed append,
    /// until the next one).
    pub fn current_segment(&self) -> Option<SegmentId> {
        self.current.as_ref().map(|s| s.id)
    }

    /// Closed segments not yet retired, oldest first.
    pub fn closed_segments(&self) -> Vec<SegmentId> {
        self.closed.keys().copied().collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where this journal's [`crate::spool::Spool`]s should spill.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }
}

fn spool_path(c: &Content) -> Option<&Path> {
    match c {
        Content::Spooled(p) => Some(p),
        Content::Inline(_) => None,
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes the records at the file position (the end of the written part)
/// and returns the number of bytes written.
fn write_all_records(file: &File, encoded: &[codec::Encoded<'_>]) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut n = 0u64;
    for e in encoded {
        w.write_all(&e.head)?;
        w.write_all(e.tail)?;
        n += (e.head.len() + e.tail.len()) as u64;
    }
    w.flush()?;
    Ok(n)
}

/// Writes `bytes` of zeros from the start of a new file (the header is
/// written over the first ones).
fn zero_fill(file: &File, bytes: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = 0u64;
    while at < bytes {
        let n = (bytes - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn read_segment_file(path: &Path, id: SegmentId) -> io::Result<(codec::SegmentContents, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    Ok((codec::read_segment(&mut r, len, id.0)?, len))
}

/// Reads every segment in `dir`, in id order, checking spool files.
fn replay_segments(dir: &Path) -> io::Result<Replay> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(SegmentId::parse) {
            ids.push(id);
        }
    }
    ids.sort();
    let mut replay = Replay { segments: Vec::new(), next_id: 1, max_segment: 0 };
    for id in ids {
        replay.max_segment = replay.max_segment.max(id.0);
        let path = dir.join(id.file_name());
        let (contents, len) = read_segment_file(&path, id)?;
        if let Some(Stop { offset, reason }) = &contents.stop {
            if *reason == codec::STOP_ZERO_FILL {
                // The normal end of a preallocated segment.
            } else if contents.header.is_some_and(|h| h.segment == id.0) && len >= ZERO_CHUNK_BYTES as u64 {
                // A preallocated or recycled segment: what follows the last
                // record is old space; a torn last record looks the same.
                tracing::debug!(segment = %path.display(), offset, reason, "journal segment: end of records");
            } else {
                tracing::warn!(segment = %path.display(), offset, ignored_bytes = len - offset, reason, "journal segment ends in a torn or damaged record; later bytes ignored");
            }
        }
        if contents.skipped > 0 {
            tracing::error!(segment = %path.display(), skipped = contents.skipped, "journal records with a valid checksum did not decode and were skipped");
        }
        match contents.header {
            Some(h) => replay.next_id = replay.next_id.max(h.id_base),
            None if len > 0 => tracing::warn!(segment = %path.display(), "journal segment header damaged"),
            None => {}
        }
        let mut records = Vec::with_capacity(contents.records.len());
        for (record, spool_len) in contents.records {
            replay.next_id = replay.next_id.max(record.id.saturating_add(1));
            if let (Content::Spooled(p), Some(want)) = (&record.content, spool_len) {
                let have = fs::metadata(p).map(|m| m.len());
                if have.as_ref().ok() != Some(&want) {
                    tracing::error!(record = record.id, spool = %p.display(), want, have = ?have.ok(), "spool file of a journal record is missing or damaged; message lost");
                    continue;
                }
            }
            records.push(record);
        }
        replay.segments.push((id, records));
    }
    Ok(replay)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
