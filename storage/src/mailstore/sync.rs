//! Noticing what changed on disk: new files (deliveries into `new/`,
//! other tools), files that vanished (expunged elsewhere), flag renames by
//! other programs, and Dovecot's own uidlist and keyword changes. The
//! first sync of a handle also loads `varan-index`.
//!
//! Cheap when nothing changed: `new/`, `cur/`, `dovecot-uidlist` and
//! `dovecot-keywords` are `stat`ed and compared (mtime with nanoseconds,
//! size, inode) with what the last scan saw; a directory mtime within two
//! seconds of the scan is not trusted (a later change may keep it). Like
//! Dovecot, a scan that finds new or vanished files takes the uidlist
//! dotlock and scans again before assigning UIDs or declaring files gone:
//! `readdir` may skip a file that another process renames meanwhile.

use super::filename;
use super::fsutil::{self, Stamp};
use super::index::{self, IndexData, IndexMsg};
use super::keywords;
use super::mailbox::{lock, MaildirMailbox, Msg, Writer};
use super::uidlist::{self, DotLock, Record, Uidlist};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use varan_core::mailstore::{ModSeq, StoreResult, Uid};

/// A message file found by a scan.
#[derive(Debug, Clone)]
struct Found {
    file: String,
    in_new: bool,
}

#[derive(Debug, Default)]
struct Plan {
    /// Known messages whose file name changed: (uid, new file, in_new).
    renamed: Vec<(Uid, Found)>,
    /// Files with a UID in the uidlist that we did not know yet.
    adopted: Vec<(Uid, Found, Vec<String>)>,
    /// Files without a UID.
    new_files: Vec<Found>,
    /// Known messages whose file is gone.
    missing: Vec<Uid>,
    /// Some file is still in `new/` (moved to `cur/` under the lock).
    in_new: bool,
}

impl Plan {
    fn needs_lock(&self) -> bool {
        !self.new_files.is_empty() || !self.missing.is_empty() || self.in_new
    }
}

/// What the initial load decided.
struct Load {
    index: Option<IndexData>,
}

impl MaildirMailbox {
    /// Brings the state up to date with the disk. `force`: scan even if
    /// the stamps look unchanged.
    pub(crate) fn sync_locked(&self, w: &mut Writer, force: bool) -> StoreResult<()> {
        let dirty = self.dirty.swap(false, Ordering::SeqCst);
        if w.loaded && !force && !dirty && self.looks_unchanged(w)? {
            return Ok(());
        }
        let mut dotlock: Option<DotLock> = None;
        loop {
            match self.scan(w, dotlock.as_ref()) {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    if !self.dir.join("cur").is_dir() {
                        // The mailbox was deleted or renamed away.
                        self.vanish(w)?;
                        return Ok(());
                    }
                    dotlock = Some(DotLock::acquire(&self.dir, &self.shared.layout.host, uidlist::DOTLOCK_WAIT)?);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn looks_unchanged(&self, w: &Writer) -> io::Result<bool> {
        let new = Stamp::read(&self.dir.join("new"))?;
        let cur = Stamp::read(&self.dir.join("cur"))?;
        let recent = new.is_some_and(|s| s.is_recent()) || cur.is_some_and(|s| s.is_recent());
        Ok(!recent
            && new == w.new_stamp
            && cur == w.cur_stamp
            && Stamp::read(&self.dir.join(uidlist::UIDLIST_FILE))? == w.uidlist_stamp
            && Stamp::read(&self.dir.join(keywords::KEYWORDS_FILE))? == w.keywords_stamp)
    }

    /// Every message is gone (directory removed): log them as expunged.
    fn vanish(&self, w: &mut Writer) -> StoreResult<()> {
        let mut st = lock(&self.state);
        if st.msgs.is_empty() {
            return Ok(());
        }
        st.highest += 1;
        let m = st.highest;
        let uids: Vec<Uid> = st.msgs.keys().copied().collect();
        for uid in uids {
            st.msgs.remove(&uid);
            st.log_expunge(uid, m);
        }
        w.by_base.clear();
        drop(st);
        self.notifier.bump();
        Ok(())
    }

    /// One scan. `Ok(false)`: the dotlock is needed (new or vanished files,
    /// or the uidlist must be written) and was not held.
    pub(crate) fn scan(&self, w: &mut Writer, dotlock: Option<&DotLock>) -> StoreResult<bool> {
        let dir = &self.dir;
        if !dir.join("cur").is_dir() {
            return if dotlock.is_some() || !w.loaded {
                self.vanish(w)?;
                Ok(true)
            } else {
                Ok(false)
            };
        }
        // Stamps first: a change after them makes the next sync look again.
        let new_stamp = Stamp::read(&dir.join("new"))?;
        let cur_stamp = Stamp::read(&dir.join("cur"))?;
        let kw_stamp = Stamp::read(&dir.join(keywords::KEYWORDS_FILE))?;
        if !w.loaded || kw_stamp != w.keywords_stamp {
            let (kw, stamp) = keywords::read(dir)?;
            lock(&self.state).keywords = kw;
            w.keywords_stamp = stamp;
        }
        let ul_stamp = Stamp::read(&dir.join(uidlist::UIDLIST_FILE))?;
        let mut fresh_uidlist: Option<Uidlist> = None;
        if !w.loaded || ul_stamp != w.uidlist_stamp || w.uidlist_broken {
            match uidlist::read(dir) {
                Ok(Some((list, stamp))) => {
                    let ours = lock(&self.state).uidvalidity;
                    if w.loaded && list.uidvalidity != ours {
                        tracing::warn!(dir = %dir.display(), theirs = list.uidvalidity, ours, "dovecot-uidlist has another UIDVALIDITY; rewriting ours");
                        w.uidlist_broken = true;
                    } else {
                        w.records = list.records.iter().map(|r| (filename::base(&r.name).to_owned(), (r.uid, r.ext.clone()))).collect();
                        w.guid.clone_from(&list.guid);
                        w.hdr_ext.clone_from(&list.hdr_ext);
                        w.uidlist_broken = false;
                        let mut st = lock(&self.state);
                        st.next_uid = st.next_uid.max(list.next_uid);
                        drop(st);
                        fresh_uidlist = Some(list);
                    }
                    w.uidlist_stamp = Some(stamp);
                }
                Ok(None) => {
                    w.records.clear();
                    w.uidlist_broken = true;
                    w.uidlist_stamp = None;
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!(dir = %dir.display(), error = %e, "dovecot-uidlist is damaged; recreating it");
                    w.records.clear();
                    w.uidlist_broken = true;
                    w.uidlist_stamp = ul_stamp;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let found = list_files(dir)?;
        let plan = self.plan(w, &found);
        let must_write_uidlist = w.uidlist_broken || plan.needs_lock();
        if must_write_uidlist && dotlock.is_none() {
            return Ok(false);
        }
        let load = if w.loaded { None } else { Some(self.begin_load(w, fresh_uidlist.as_ref())?) };
        self.execute(w, plan, load, dotlock.is_some())?;
        w.new_stamp = new_stamp;
        w.cur_stamp = cur_stamp;
        if dotlock.is_some() {
            // Our own renames changed the directories: what we saw is now
            // the state (we held the lock, Dovecot did not change them).
            w.new_stamp = Stamp::read(&dir.join("new"))?;
            w.cur_stamp = Stamp::read(&dir.join("cur"))?;
        }
        Ok(true)
    }

    fn plan(&self, w: &Writer, found: &[Found]) -> Plan {
        let st = lock(&self.state);
        let mut plan = Plan::default();
        let mut seen = HashSet::new();
        for f in found {
            plan.in_new |= f.in_new;
            let base = filename::base(&f.file);
            if !seen.insert(base.to_owned()) {
                tracing::warn!(dir = %self.dir.display(), file = %f.file, "duplicate message file ignored");
                continue;
            }
            if let Some(&uid) = w.by_base.get(base) {
                if let Some(m) = st.msgs.get(&uid) {
                    if m.file != f.file || m.in_new != f.in_new {
                        plan.renamed.push((uid, f.clone()));
                    }
                    continue;
                }
            }
            match w.records.get(base) {
                Some((uid, ext)) if !st.msgs.contains_key(uid) => plan.adopted.push((*uid, f.clone(), ext.clone())),
                _ => plan.new_files.push(f.clone()),
            }
        }
        for (uid, m) in &st.msgs {
            if !seen.contains(m.base()) {
                plan.missing.push(*uid);
            }
        }
        plan
    }

    /// First sync of this handle: UIDVALIDITY, `varan-index`, and where
    /// modseqs continue.
    fn begin_load(&self, w: &mut Writer, list: Option<&Uidlist>) -> StoreResult<Load> {
        let dir = &self.dir;
        let index = index::read(dir);
        let marker = index::read_open_marker(dir)?;
        let mut st = lock(&self.state);
        let fresh = list.is_none();
        st.uidvalidity = match list {
            Some(l) => l.uidvalidity,
            None => {
                let mut v = (fsutil::now_secs() as u32).max(1);
                if index.as_ref().is_some_and(|i| i.uidvalidity == v) {
                    v = v.wrapping_add(1).max(1);
                }
                w.guid = format!("{:032x}", rand::random::<u128>());
                v
            }
        };
        st.next_uid = st.next_uid.max(list.map_or(1, |l| l.next_uid));
        let index = index.filter(|i| i.uidvalidity == st.uidvalidity);
        let marker_ceiling = marker.flatten();
        match (&index, fresh) {
            (_, true) => {
                // A new UIDVALIDITY: nothing said before counts.
                st.highest = 1;
            }
            (Some(idx), false) => {
                st.highest = idx.highest.max(1);
                st.log_floor = idx.log_floor;
                st.windows.clone_from(&idx.windows);
                for &(u, m) in &idx.expunged {
                    st.log_expunge(u, m);
                }
                if marker.is_some() {
                    // The last session did not close cleanly: its index
                    // updates may be lost. Continue above its ceiling.
                    let start = marker_ceiling.unwrap_or_else(|| time_floor().max(idx.highest)).max(idx.highest);
                    st.add_window(idx.highest, start);
                    st.highest = start.max(1);
                }
            }
            (None, false) => {
                // Rebuild: modseqs were handed out before, unknown how high.
                let start = marker_ceiling.unwrap_or(0).max(time_floor());
                st.highest = start;
                st.log_floor = start;
            }
        }
        drop(st);
        w.ceiling = 0;
        self.reserve(w, 1)?;
        w.loaded = true;
        Ok(Load { index })
    }

    fn execute(&self, w: &mut Writer, mut plan: Plan, load: Option<Load>, locked: bool) -> StoreResult<()> {
        let dir = &self.dir;
        let index_msgs: HashMap<Uid, IndexMsg> = load.and_then(|l| l.index).map(|i| i.msgs.into_iter().map(|m| (m.uid, m)).collect()).unwrap_or_default();
        if locked {
            self.move_new_to_cur(&mut plan)?;
        }
        // UIDs for new files, in order of arrival.
        let mut assigned: Vec<(Uid, Found)> = Vec::new();
        if locked && !plan.new_files.is_empty() {
            plan.new_files.sort_by(|a, b| arrival_key(&a.file).cmp(&arrival_key(&b.file)));
            let mut st = lock(&self.state);
            let room = self.shared.options.messages_max.saturating_sub(st.msgs.len() + plan.adopted.len());
            if plan.new_files.len() > room {
                tracing::warn!(dir = %dir.display(), waiting = plan.new_files.len() - room, "mailbox is full; files left without UIDs");
            }
            for f in plan.new_files.drain(..).take(room) {
                if st.next_uid >= u32::MAX - 1 {
                    tracing::error!(dir = %dir.display(), "UIDs exhausted");
                    break;
                }
                let uid = st.next_uid;
                st.next_uid += 1;
                assigned.push((uid, f));
            }
        }
        // Sizes and dates (file I/O, outside the state lock).
        let mut adds: Vec<(Uid, Msg)> = Vec::new();
        for (uid, f, ext) in plan.adopted.iter().map(|(u, f, e)| (*u, f, e.clone())).chain(assigned.iter().map(|(u, f)| (*u, f, Vec::new()))) {
            let info = filename::parse_info(filename::split(&f.file).1);
            let known = index_msgs.get(&uid);
            let facts = match known {
                Some(k) => Some((k.size, k.date, ext)),
                None => file_facts(&dir.join(if f.in_new { "new" } else { "cur" }).join(&f.file), &f.file, ext)?,
            };
            let Some((size, date, ext)) = facts else { continue };
            // An index entry with the same flags keeps its modseq.
            let modseq = known.filter(|k| k.info.as_deref() == info.present.then(|| info.to_suffix()).as_deref()).map_or(0, |k| k.modseq);
            adds.push((uid, Msg { file: f.file.clone(), in_new: f.in_new, info, modseq, size, date, ext }));
        }
        // The uidlist is durable before anyone sees the new UIDs.
        if locked {
            let assigned_uids: Vec<Uid> = assigned.iter().map(|(u, _)| *u).collect();
            self.write_uidlist(w, &assigned_uids, &adds, &plan.missing)?;
        }
        let changed = !plan.renamed.is_empty() || !adds.is_empty() || !plan.missing.is_empty();
        let vanished_while_closed: Vec<Uid> = {
            let present: HashSet<Uid> = adds.iter().map(|(u, _)| *u).collect();
            index_msgs.keys().copied().filter(|u| !present.contains(u)).collect()
        };
        if !changed && vanished_while_closed.is_empty() {
            return Ok(());
        }
        self.reserve(w, 1)?;
        let mut st = lock(&self.state);
        let m = st.highest + 1;
        let mut bumped = false;
        for (uid, f) in plan.renamed {
            let info = filename::parse_info(filename::split(&f.file).1);
            if let Some(msg) = st.msgs.get_mut(&uid) {
                if msg.info.bits != info.bits {
                    msg.modseq = m;
                    bumped = true;
                }
                msg.file = f.file;
                msg.in_new = f.in_new;
                msg.info = info;
            }
        }
        for (uid, mut msg) in adds {
            if msg.modseq == 0 {
                msg.modseq = m;
                bumped = true;
            }
            w.by_base.insert(msg.base().to_owned(), uid);
            st.next_uid = st.next_uid.max(uid + 1);
            st.msgs.insert(uid, msg);
        }
        for uid in plan.missing.into_iter().chain(vanished_while_closed) {
            if let Some(msg) = st.msgs.remove(&uid) {
                w.by_base.remove(msg.base());
            }
            st.log_expunge(uid, m);
            bumped = true;
        }
        if bumped {
            st.highest = m;
        }
        drop(st);
        w.index_dirty = true;
        self.notifier.bump();
        Ok(())
    }

    /// Moves files in `new/` to `cur/` (with an empty `:2,` info).
    fn move_new_to_cur(&self, plan: &mut Plan) -> StoreResult<()> {
        let dir = &self.dir;
        let mv = |f: &mut Found| -> io::Result<bool> {
            if !f.in_new {
                return Ok(true);
            }
            let (base, info) = filename::split(&f.file);
            let target = filename::full_name(base, &filename::parse_info(info));
            match fs::rename(dir.join("new").join(&f.file), dir.join("cur").join(&target)) {
                Ok(()) => {
                    f.file = target;
                    f.in_new = false;
                    Ok(true)
                }
                Err(e) if fsutil::is_not_found(&e) => Ok(false),
                Err(e) => Err(e),
            }
        };
        let mut lost = false;
        for f in plan.new_files.iter_mut() {
            lost |= !mv(f)?;
        }
        for (_, f, _) in plan.adopted.iter_mut() {
            lost |= !mv(f)?;
        }
        for (_, f) in plan.renamed.iter_mut() {
            lost |= !mv(f)?;
        }
        // Known messages still in new/ that did not change name.
        let in_new: Vec<(Uid, String)> = lock(&self.state).msgs.iter().filter(|(_, m)| m.in_new).map(|(&u, m)| (u, m.file.clone())).collect();
        for (uid, file) in in_new {
            if plan.renamed.iter().any(|(u, _)| *u == uid) || plan.missing.contains(&uid) {
                continue;
            }
            let mut f = Found { file, in_new: true };
            if mv(&mut f)? {
                plan.renamed.push((uid, f));
            } else {
                lost = true;
            }
        }
        plan.new_files.retain(|f| !f.in_new);
        plan.adopted.retain(|(_, f, _)| !f.in_new);
        if lost {
            self.dirty.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Appends the new records, or rewrites the file when it is missing,
    /// damaged, or mostly records of expunged messages.
    pub(crate) fn write_uidlist(&self, w: &mut Writer, assigned: &[Uid], adds: &[(Uid, Msg)], missing: &[Uid]) -> StoreResult<()> {
        let durable = self.shared.options.fsync;
        let new_records: Vec<Record> = adds.iter().filter(|(u, _)| assigned.contains(u)).map(|(u, m)| Record { uid: *u, ext: w_ext(m), name: m.file.clone() }).collect();
        let dead = {
            let st = lock(&self.state);
            w.records.values().filter(|(u, _)| !st.msgs.contains_key(u) || missing.contains(u)).filter(|(u, _)| !adds.iter().any(|(a, _)| a == u)).count()
        };
        let rewrite = w.uidlist_broken || w.uidlist_stamp.is_none() || needs_compaction(dead, w.records.len() + new_records.len());
        let stamp = if rewrite {
            let st = lock(&self.state);
            let mut records: Vec<Record> = st.msgs.iter().filter(|(u, _)| !missing.contains(u)).map(|(&uid, m)| Record { uid, ext: m.ext.clone(), name: m.file.clone() }).collect();
            for (uid, m) in adds {
                records.push(Record { uid: *uid, ext: w_ext(m), name: m.file.clone() });
            }
            records.sort_by_key(|r| r.uid);
            let list = Uidlist { uidvalidity: st.uidvalidity, next_uid: st.next_uid, guid: w.guid.clone(), hdr_ext: w.hdr_ext.clone(), records };
            drop(st);
            let stamp = uidlist::write(&self.dir, &list, durable)?;
            w.records = list.records.iter().map(|r| (filename::base(&r.name).to_owned(), (r.uid, r.ext.clone()))).collect();
            w.uidlist_broken = false;
            stamp
        } else if !new_records.is_empty() {
            let stamp = uidlist::append(&self.dir, &new_records, durable)?;
            for r in &new_records {
                w.records.insert(filename::base(&r.name).to_owned(), (r.uid, r.ext.clone()));
            }
            stamp
        } else {
            return Ok(());
        };
        w.uidlist_stamp = Some(stamp);
        Ok(())
    }
}

/// Rewrite the uidlist when more than a quarter of its records are of
/// expunged messages (Dovecot's `UIDLIST_COMPRESS_PERCENTAGE` is 75).
pub(crate) fn needs_compaction(dead: usize, total: usize) -> bool {
    dead > 16 && dead * 4 > total
}

/// Extension fields for a uidlist record: `W<size>` unless the name has it.
fn w_ext(m: &Msg) -> Vec<String> {
    let mut ext = m.ext.clone();
    if crate::maildir::parse_sizes(&m.file).1.is_none() && !ext.iter().any(|e| e.starts_with('W')) {
        ext.push(format!("W{}", m.size));
    }
    ext
}

/// (RFC822.SIZE, INTERNALDATE, extension fields) of a file; `None` if it
/// vanished. The size comes from `,W=` in the name, a `W` uidlist field, or
/// reading the file once.
fn file_facts(path: &Path, name: &str, mut ext: Vec<String>) -> io::Result<Option<(u64, i64, Vec<String>)>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if fsutil::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let date = meta.mtime();
    let from_name = crate::maildir::parse_sizes(name).1;
    let from_ext = ext.iter().find_map(|e| e.strip_prefix('W')).and_then(|v| v.parse::<u64>().ok());
    let size = match from_name.or(from_ext) {
        Some(s) => s,
        None => match fs::read(path) {
            Ok(bytes) => {
                let s = filename::crlf_size_of(&bytes);
                ext.retain(|e| !e.starts_with('W'));
                ext.push(format!("W{s}"));
                s
            }
            Err(e) if fsutil::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    Ok(Some((size, date, ext)))
}

/// Message files of `new/` and `cur/` (names not starting with `.`, UTF-8).
fn list_files(dir: &Path) -> io::Result<Vec<Found>> {
    let mut out = Vec::new();
    // cur/ first: when a file is in both, the cur/ one wins.
    for (sub, in_new) in [("cur", false), ("new", true)] {
        let entries = match fs::read_dir(dir.join(sub)) {
            Ok(e) => e,
            Err(e) if fsutil::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(dir = %dir.display(), "skipping a message file whose name is not UTF-8");
                continue;
            };
            if name.starts_with('.') || name.is_empty() {
                continue;
            }
            out.push(Found { file: name.to_owned(), in_new });
        }
    }
    Ok(out)
}

/// Sort key of arrival order: the leading seconds, then `M<usecs>`, then
/// the name.
fn arrival_key(name: &str) -> (u64, u64, &str) {
    let secs_end = name.find(|c: char| !c.is_ascii_digit()).unwrap_or(name.len());
    let secs = name[..secs_end].parse().unwrap_or(u64::MAX);
    let usecs = name[secs_end..].strip_prefix(".M").map(|r| &r[..r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())]).and_then(|d| d.parse().ok()).unwrap_or(0);
    (secs, usecs, name)
}

/// A modseq above any handed out before, when that is not recorded:
/// microseconds since the epoch (changes come slower than one per µs).
fn time_floor() -> ModSeq {
    (fsutil::now_ns() / 1000).max(1) as ModSeq
}
