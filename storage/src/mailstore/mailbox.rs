//! The shared handle of one Maildir mailbox and its in-memory state.
//!
//! Two locks: `writer` serialises everything that changes the mailbox
//! (sync, append, store, expunge) and is held across their file I/O;
//! `state` guards the message table that readers (`status`,
//! `changes_since`, `uids`, `read`'s path lookup) consult, and is only held
//! for short in-memory sections. Order: `writer` before `state`. Message
//! files are read with neither held.

use super::filename::{self, Info, DELETED, SEEN};
use super::fsutil::Stamp;
use super::index::WINDOWS_MAX;
use super::index::{self, IndexData, IndexMsg};
use super::keywords::Keywords;
use super::notify::Notifier;
use super::store::Shared;
use super::EXPUNGE_LOG_MAX;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use varan_core::mailstore::{ChangeFuture, Changes, Flag, FlagOp, FlagUpdate, Mailbox, MailboxStatus, MessageMeta, ModSeq, StoreError, StoreResult, Uid};

/// One message as we know it.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// Current file name (in `cur/`, or in `new/` when `in_new`).
    pub file: String,
    pub in_new: bool,
    pub info: Info,
    pub modseq: ModSeq,
    /// RFC822.SIZE.
    pub size: u64,
    pub date: i64,
    /// `dovecot-uidlist` extension fields of the record, kept.
    pub ext: Vec<String>,
}

impl Msg {
    pub fn base(&self) -> &str {
        filename::base(&self.file)
    }

    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(if self.in_new { "new" } else { "cur" }).join(&self.file)
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub uidvalidity: u32,
    pub next_uid: Uid,
    pub msgs: BTreeMap<Uid, Msg>,
    pub keywords: Keywords,
    pub highest: ModSeq,
    /// Expunges, oldest first.
    pub expunged: VecDeque<(Uid, ModSeq)>,
    /// Expunges with a modseq up to this one are forgotten.
    pub log_floor: ModSeq,
    /// Modseq ranges `[lo, hi)` for which expunges may be missing.
    pub windows: Vec<(ModSeq, ModSeq)>,
}

impl State {
    pub fn flags_of(&self, info: &Info) -> Vec<Flag> {
        let mut flags = Vec::new();
        for (bit, flag) in [(SEEN, Flag::Seen), (filename::ANSWERED, Flag::Answered), (filename::FLAGGED, Flag::Flagged), (DELETED, Flag::Deleted), (filename::DRAFT, Flag::Draft)]
        {
            if info.bits.has(bit) {
                flags.push(flag);
            }
        }
        for i in 0..26 {
            if info.bits.keywords & (1 << i) != 0 {
                if let Some(name) = self.keywords.name(i) {
                    flags.push(Flag::Keyword(name.to_owned()));
                }
            }
        }
        flags
    }

    pub fn meta(&self, uid: Uid, m: &Msg) -> MessageMeta {
        MessageMeta { uid, flags: self.flags_of(&m.info), modseq: m.modseq, size: m.size, internal_date: m.date }
    }

    pub fn status(&self) -> MailboxStatus {
        let mut s = MailboxStatus { uidvalidity: self.uidvalidity, uidnext: self.next_uid, highest_modseq: self.highest, ..MailboxStatus::default() };
        for m in self.msgs.values() {
            s.messages += 1;
            s.unseen += u32::from(!m.info.bits.has(SEEN));
            s.deleted += u32::from(m.info.bits.has(DELETED));
            s.size += m.size;
        }
        s
    }

    pub fn log_expunge(&mut self, uid: Uid, modseq: ModSeq) {
        self.expunged.push_back((uid, modseq));
        while self.expunged.len() > EXPUNGE_LOG_MAX {
            if let Some((_, m)) = self.expunged.pop_front() {
                self.log_floor = self.log_floor.max(m);
            }
        }
    }

    pub fn add_window(&mut self, lo: ModSeq, hi: ModSeq) {
        if hi > lo {
            self.windows.push((lo, hi));
        }
        while self.windows.len() > WINDOWS_MAX {
            let (_, hi) = self.windows.remove(0);
            self.log_floor = self.log_floor.max(hi);
        }
    }

    fn expunges_incomplete(&self, since: ModSeq) -> bool {
        since < self.log_floor || self.windows.iter().any(|&(lo, hi)| since >= lo && since < hi)
    }

    pub fn to_index(&self) -> IndexData {
        IndexData {
            uidvalidity: self.uidvalidity,
            highest: self.highest,
            log_floor: self.log_floor,
            windows: self.windows.clone(),
            msgs: self.msgs.iter().map(|(&uid, m)| IndexMsg { uid, modseq: m.modseq, size: m.size, date: m.date, info: m.info.present.then(|| m.info.to_suffix()) }).collect(),
            expunged: self.expunged.iter().copied().collect(),
        }
    }
}

/// What only writers touch.
#[derive(Debug)]
pub(crate) struct Writer {
    pub loaded: bool,
    pub uidlist_stamp: Option<Stamp>,
    pub guid: String,
    pub hdr_ext: Vec<String>,
    /// Records of the uidlist file by base name: UID and extension fields.
    pub records: HashMap<String, (Uid, Vec<String>)>,
    /// The uidlist file is unusable (or missing) and must be rewritten.
    pub uidlist_broken: bool,
    pub keywords_stamp: Option<Stamp>,
    pub new_stamp: Option<Stamp>,
    pub cur_stamp: Option<Stamp>,
    /// Base name → UID of every message in the state.
    pub by_base: HashMap<String, Uid>,
    /// Modseqs up to this are reserved in `varan-index.open`.
    pub ceiling: ModSeq,
    pub index_dirty: bool,
    pub last_index_write: Instant,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            loaded: false,
            uidlist_stamp: None,
            guid: String::new(),
            hdr_ext: Vec::new(),
            records: HashMap::new(),
            uidlist_broken: false,
            keywords_stamp: None,
            new_stamp: None,
            cur_stamp: None,
            by_base: HashMap::new(),
            ceiling: 0,
            index_dirty: false,
            last_index_write: Instant::now(),
        }
    }
}

/// One Maildir mailbox, shared by every session that has it open (see
/// [`super::MaildirStore`]).
pub struct MaildirMailbox {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) user_dir: PathBuf,
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Mutex<State>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) notifier: Arc<Notifier>,
    /// Set by `notify_delivered` and by folder operations: the next sync
    /// rescans even if the directory stamps look unchanged.
    pub(crate) dirty: AtomicBool,
}

/// How often a changed index is rewritten while the mailbox is in use.
pub(crate) const INDEX_WRITE_INTERVAL_SMALL: std::time::Duration = std::time::Duration::from_secs(2);
pub(crate) const INDEX_WRITE_INTERVAL_LARGE: std::time::Duration = std::time::Duration::from_secs(10);
/// Above this many messages a mailbox counts as large (its index is
/// megabytes, so it is rewritten less often).
pub(crate) const INDEX_LARGE_MESSAGES: usize = 10_000;

/// Locks a mutex, recovering from poisoning (a panic elsewhere must not
/// make the mailbox unusable; the state is consistent between operations).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MaildirMailbox {
    pub(crate) fn new(name: String, dir: PathBuf, user_dir: PathBuf, shared: Arc<Shared>) -> MaildirMailbox {
        MaildirMailbox {
            name,
            dir,
            user_dir,
            shared,
            state: Mutex::new(State::default()),
            writer: Mutex::new(Writer::default()),
            notifier: Notifier::new(),
            dirty: AtomicBool::new(false),
        }
    }

    /// The mailbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the next `sync` rescan and wakes `changed` waiters.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.notifier.bump();
    }

    /// Writes `varan-index` now (it is otherwise written lazily and when the
    /// last handle is dropped).
    pub fn flush_index(&self) -> StoreResult<()> {
        let mut w = lock(&self.writer);
        self.write_index(&mut w, false)
    }

    pub(crate) fn write_index(&self, w: &mut Writer, durable: bool) -> StoreResult<()> {
        if !w.loaded {
            return Ok(());
        }
        let data = lock(&self.state).to_index();
        if self.dir.join("cur").is_dir() {
            index::write(&self.dir, &data, durable)?;
        }
        w.index_dirty = false;
        w.last_index_write = Instant::now();
        Ok(())
    }

    /// Writes the index at most every [`INDEX_WRITE_INTERVAL_SMALL`] (or
    /// [`INDEX_WRITE_INTERVAL_LARGE`] above [`INDEX_LARGE_MESSAGES`]
    /// messages), not after every change: the index is a cache. Between
    /// writes `varan-index.open` marks it possibly stale, and a crash makes
    /// the next open resync it from the files (flags from the names, UIDs
    /// from `dovecot-uidlist`, modseqs above the reserved ceiling), so no
    /// change is lost. Rewriting it after every APPEND/STORE/EXPUNGE cost a
    /// file create and rename per command (a fifth of the IMAP CPU time
    /// under load, docs/performance.md). The last handle's drop and
    /// shutdown write it in any case.
    pub(crate) fn maybe_write_index(&self, w: &mut Writer) {
        if !w.index_dirty {
            return;
        }
        let large = lock(&self.state).msgs.len() > INDEX_LARGE_MESSAGES;
        let interval = if large { INDEX_WRITE_INTERVAL_LARGE } else { INDEX_WRITE_INTERVAL_SMALL };
        if w.last_index_write.elapsed() >= interval {
            if let Err(e) = self.write_index(w, false) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not write varan-index");
            }
        }
    }

    /// Makes sure modseqs up to `highest + needed` are reserved durably.
    pub(crate) fn reserve(&self, w: &mut Writer, needed: u64) -> StoreResult<()> {
        let highest = lock(&self.state).highest;
        if highest.saturating_add(needed) > w.ceiling {
            let ceiling = highest.saturating_add(needed).saturating_add(index::MODSEQ_RESERVE);
            index::write_open_marker(&self.dir, ceiling, self.shared.options.fsync)?;
            w.ceiling = ceiling;
        }
        Ok(())
    }

    /// The current path of a message (`None`: not in the mailbox).
    fn path_of(&self, uid: Uid) -> Option<(PathBuf, u64)> {
        let st = lock(&self.state);
        st.msgs.get(&uid).map(|m| (m.path(&self.dir), m.size))
    }

    fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

impl Drop for MaildirMailbox {
    fn drop(&mut self) {
        let w = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        if !w.loaded {
            return;
        }
        let data = self.state.get_mut().unwrap_or_else(|p| p.into_inner()).to_index();
        // Under the registry lock: a new handle of this mailbox opened
        // meanwhile must not lose its `varan-index.open` to our cleanup.
        let mut reg = lock(&self.shared.registry);
        let successor = reg.get(&self.dir).is_some_and(|w| w.strong_count() > 0);
        if !successor {
            reg.remove(&self.dir);
        }
        if !self.dir.join("cur").is_dir() {
            return;
        }
        // Durable, then the marker goes: the next open trusts the index.
        match index::write(&self.dir, &data, self.shared.options.fsync) {
            Ok(()) if !successor => {
                if let Err(e) = index::remove_open_marker(&self.dir) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove varan-index.open");
                }
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "could not write varan-index at close"),
        }
    }
}

impl Mailbox for MaildirMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&self) -> StoreResult<()> {
        let mut w = lock(&self.writer);
        self.sync_locked(&mut w, false)?;
        self.maybe_write_index(&mut w);
        Ok(())
    }

    fn status(&self) -> StoreResult<MailboxStatus> {
        Ok(lock(&self.state).status())
    }

    fn changes_since(&self, modseq: ModSeq) -> StoreResult<Changes> {
        let st = lock(&self.state);
        let changed = st.msgs.iter().filter(|(_, m)| m.modseq > modseq).map(|(&uid, m)| st.meta(uid, m)).collect();
        let mut expunged: Vec<Uid> = st.expunged.iter().filter(|&&(_, m)| m > modseq).map(|&(u, _)| u).collect();
        expunged.sort_unstable();
        expunged.dedup();
        Ok(Changes { status: st.status(), changed, expunged, expunged_incomplete: modseq > 0 && st.expunges_incomplete(modseq) })
    }

    fn uids(&self) -> StoreResult<Vec<Uid>> {
        Ok(lock(&self.state).msgs.keys().copied().collect())
    }

    fn read(&self, uid: Uid) -> StoreResult<Arc<[u8]>> {
        for attempt in 0..2 {
            let Some((path, size)) = self.path_of(uid) else { return Err(StoreError::Expunged) };
            match Self::read_file(&path) {
                Ok(lf) => {
                    let data = filename::to_crlf(&lf);
                    if data.len() as u64 != size {
                        // The size in the name or uidlist was wrong: the
                        // content wins, and the index learns it.
                        tracing::warn!(path = %path.display(), recorded = size, actual = data.len(), "message size differs from its recorded size");
                        let mut st = lock(&self.state);
                        if let Some(m) = st.msgs.get_mut(&uid) {
                            m.size = data.len() as u64;
                        }
                    }
                    return Ok(data.into());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt == 0 => {
                    // Renamed by a concurrent flag change, or expunged.
                    self.dirty.store(true, Ordering::SeqCst);
                    let mut w = lock(&self.writer);
                    self.sync_locked(&mut w, true)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::Expunged),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Expunged)
    }

    fn append(&self, message: &[u8], flags: &[Flag], internal_date: Option<i64>) -> StoreResult<Uid> {
        self.append_one(message, flags, internal_date)
    }

    fn store(&self, uids: &[Uid], op: FlagOp, flags: &[Flag], unchanged_since: Option<ModSeq>) -> StoreResult<FlagUpdate> {
        self.store_flags(uids, op, flags, unchanged_since)
    }

    fn copy_to(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>> {
        self.copy_messages(uids, dest)
    }

    fn move_to(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>> {
        let pairs = self.copy_messages(uids, dest)?;
        let moved: Vec<Uid> = pairs.iter().map(|&(s, _)| s).collect();
        self.remove_uids(&moved, false)?;
        Ok(pairs)
    }

    fn expunge(&self, uids: Option<&[Uid]>) -> StoreResult<Vec<Uid>> {
        let candidates: Vec<Uid> = {
            let st = lock(&self.state);
            let deleted = |u: &Uid| st.msgs.get(u).is_some_and(|m| m.info.bits.has(DELETED));
            match uids {
                Some(list) => list.iter().copied().filter(deleted).collect(),
                None => st.msgs.keys().copied().filter(deleted).collect(),
            }
        };
        self.remove_uids(&candidates, true)
    }

    fn version(&self) -> u64 {
        self.notifier.version()
    }

    fn changed(&self, seen: u64) -> ChangeFuture {
        self.notifier.changed(seen)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
