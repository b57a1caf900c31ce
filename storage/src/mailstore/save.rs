//! Saving messages: APPEND and COPY.
//!
//! A message is written into `tmp/` with LF line endings (as Dovecot
//! stores mail), fsynced, its mtime set to INTERNALDATE; a copy between two
//! Maildir mailboxes hard-links the source file into `tmp/` instead. Then,
//! holding the uidlist dotlock, each file is renamed into `cur/` with its
//! flags, `cur/` is fsynced, UIDs are assigned and appended to
//! `dovecot-uidlist` (fdatasync'ed), and `maildirsize` is updated. The
//! message is durable and its UID stable when `append` returns.

use super::filename::{self, Info};
use super::fsutil::{self, Stamp, FILE_MODE};
use super::keywords;
use super::mailbox::{lock, MaildirMailbox, Msg, Writer};
use super::uidlist::{self, DotLock, Record};
use crate::quota;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use varan_core::mailstore::{Flag, Mailbox, StoreError, StoreResult, Uid};

/// The `Q<n>` field of names Varan's IMAP side creates (SMTP delivery uses
/// its shard numbers, far below this).
const APPEND_QUEUE_TAG: usize = 65_535;

/// A message file in `tmp/`, ready to be committed.
#[derive(Debug)]
pub(crate) struct Prepared {
    tmp: PathBuf,
    base: String,
    lf_size: u64,
    size: u64,
    flags: Vec<Flag>,
    date: i64,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Committed files were renamed away; this removes leftovers.
        let _ = fs::remove_file(&self.tmp);
    }
}

fn next_seq() -> u64 {
    static SEQ: OnceLock<AtomicU64> = OnceLock::new();
    SEQ.get_or_init(|| AtomicU64::new(u64::from(rand::random::<u32>()) << 16)).fetch_add(1, Ordering::Relaxed)
}

fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    }
}

impl MaildirMailbox {
    fn new_base(&self, lf_size: u64, size: u64) -> String {
        self.shared.layout.new_message_name(APPEND_QUEUE_TAG, next_seq(), lf_size, size, SystemTime::now())
    }

    /// Writes a message (CRLF) into `tmp/` as LF.
    pub(crate) fn prepare_bytes(&self, message: &[u8], flags: &[Flag], date: Option<i64>) -> StoreResult<Prepared> {
        let lf = filename::to_lf(message);
        let size = filename::crlf_size_of(&lf);
        if size > self.shared.options.message_bytes_max {
            return Err(StoreError::Limit(format!("message is larger than {} bytes", self.shared.options.message_bytes_max)));
        }
        let base = self.new_base(lf.len() as u64, size);
        let tmp = self.dir.join("tmp").join(&base);
        let date = date.unwrap_or_else(fsutil::now_secs);
        let prepared = Prepared { tmp, base, lf_size: lf.len() as u64, size, flags: flags.to_vec(), date };
        let open = || OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&prepared.tmp);
        let mut file = match open() {
            Err(e) if fsutil::is_not_found(&e) => {
                if !self.dir.join("cur").is_dir() {
                    return Err(StoreError::NoMailbox);
                }
                crate::maildir::create_maildir(&self.dir)?;
                open()?
            }
            other => other?,
        };
        file.write_all(&lf)?;
        file.set_modified(system_time(date))?;
        if self.shared.options.fsync {
            file.sync_all()?;
        }
        Ok(prepared)
    }

    /// Hard-links a message file of another (Maildir) mailbox into `tmp/`.
    fn prepare_link(&self, src: &std::path::Path, size: u64, flags: Vec<Flag>, date: i64) -> io::Result<Prepared> {
        let lf_size = match crate::maildir::parse_sizes(&src.file_name().unwrap_or_default().to_string_lossy()).0 {
            Some(s) => s,
            None => fs::metadata(src)?.len(),
        };
        let base = self.new_base(lf_size, size);
        let tmp = self.dir.join("tmp").join(&base);
        fs::hard_link(src, &tmp)?;
        Ok(Prepared { tmp, base, lf_size, size, flags, date })
    }

    pub(crate) fn append_one(&self, message: &[u8], flags: &[Flag], date: Option<i64>) -> StoreResult<Uid> {
        let prepared = self.prepare_bytes(message, flags, date)?;
        let uids = self.commit(vec![prepared])?;
        uids.first().copied().ok_or_else(|| StoreError::Io(io::Error::other("append committed nothing")))
    }

    /// Makes sure every keyword of `flags` has a letter, writing
    /// `dovecot-keywords` if one is added (the dotlock must be held).
    /// `Limit` when more than 26 would be needed.
    pub(crate) fn ensure_keywords(&self, w: &mut Writer, flags: &[Flag], _dotlock: &DotLock) -> StoreResult<()> {
        let (mut kw, _) = keywords::read(&self.dir)?;
        let before = kw.clone();
        // Keep the ones we know even if the file lost them.
        for (i, n) in lock(&self.state).keywords.names.iter().enumerate() {
            if let Some(n) = n {
                if kw.index_of(n).is_none() && kw.name(i).is_none() {
                    if kw.names.len() <= i {
                        kw.names.resize(i + 1, None);
                    }
                    kw.names[i] = Some(n.clone());
                }
            }
        }
        for f in flags {
            if let Flag::Keyword(name) = f {
                if kw.add(name).is_none() {
                    return Err(StoreError::Limit(format!("no room for keyword {name}: a mailbox holds at most {} keywords", varan_core::mailstore::KEYWORDS_MAX)));
                }
            }
        }
        if kw != before {
            w.keywords_stamp = keywords::write(&self.dir, &kw)?;
        }
        lock(&self.state).keywords = kw;
        Ok(())
    }

    /// Flag bits of `flags` with the current keywords (unknown ones dropped).
    pub(crate) fn info_of(&self, flags: &[Flag]) -> Info {
        let st = lock(&self.state);
        let mut info = Info { present: true, ..Info::default() };
        for f in flags {
            match filename::system_bit(f) {
                Some(bit) => info.bits.system |= bit,
                None => {
                    if let Some(i) = st.keywords.index_of(f.as_imap()) {
                        info.bits.keywords |= 1 << i;
                    }
                }
            }
        }
        info
    }

    fn needs_new_keywords(&self, flags: &[Flag]) -> bool {
        let st = lock(&self.state);
        flags.iter().any(|f| matches!(f, Flag::Keyword(k) if st.keywords.index_of(k).is_none()))
    }

    /// Renames prepared files into `cur/` and gives them UIDs.
    pub(crate) fn commit(&self, items: Vec<Prepared>) -> StoreResult<Vec<Uid>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = lock(&self.writer);
        if !w.loaded {
            self.sync_locked(&mut w, false)?;
        }
        let dotlock = DotLock::acquire(&self.dir, &self.shared.layout.host, uidlist::DOTLOCK_WAIT)?;
        if w.uidlist_broken || Stamp::read(&self.dir.join(uidlist::UIDLIST_FILE))? != w.uidlist_stamp {
            // Someone else wrote the uidlist: learn their UIDs first.
            self.scan(&mut w, Some(&dotlock))?;
        }
        if lock(&self.state).msgs.len() + items.len() > self.shared.options.messages_max {
            return Err(StoreError::Limit(format!("a mailbox holds at most {} messages", self.shared.options.messages_max)));
        }
        self.check_quota(items.iter().map(|p| p.lf_size).sum(), items.len() as u64)?;
        let all_flags: Vec<Flag> = items.iter().flat_map(|p| p.flags.iter().cloned()).collect();
        if self.needs_new_keywords(&all_flags) {
            self.ensure_keywords(&mut w, &all_flags, &dotlock)?;
        }
        // Into cur/, with flags.
        let mut done: Vec<(Msg, u64)> = Vec::with_capacity(items.len());
        let mut result = Ok(());
        for p in &items {
            let info = self.info_of(&p.flags);
            let name = filename::full_name(&p.base, &info);
            let target = self.dir.join("cur").join(&name);
            if fs::symlink_metadata(&target).is_ok() {
                result = Err(StoreError::Io(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", target.display()))));
                break;
            }
            if let Err(e) = fs::rename(&p.tmp, &target) {
                result = Err(e.into());
                break;
            }
            done.push((Msg { file: name, in_new: false, info, modseq: 0, size: p.size, date: p.date, ext: Vec::new() }, p.lf_size));
        }
        if done.is_empty() {
            return result.map(|()| Vec::new());
        }
        if self.shared.options.fsync {
            fsutil::sync_dir(&self.dir.join("cur"))?;
        }
        // UIDs, durable in the uidlist before they are reported.
        let first = lock(&self.state).next_uid;
        if first.checked_add(done.len() as u32).is_none_or(|n| n == u32::MAX) {
            return Err(StoreError::Limit("UIDs of this mailbox are exhausted".into()));
        }
        let records: Vec<Record> = done.iter().enumerate().map(|(i, (m, _))| Record { uid: first + i as u32, ext: Vec::new(), name: m.file.clone() }).collect();
        lock(&self.state).next_uid = first + done.len() as u32;
        if w.uidlist_broken || w.uidlist_stamp.is_none() {
            let adds: Vec<(Uid, Msg)> = done.iter().enumerate().map(|(i, (m, _))| (first + i as u32, m.clone())).collect();
            // A rewrite: the file is missing or unusable.
            self.write_uidlist(&mut w, &[], &adds, &[])?;
        } else {
            w.uidlist_stamp = Some(uidlist::append(&self.dir, &records, self.shared.options.fsync)?);
        }
        for r in &records {
            w.records.insert(filename::base(&r.name).to_owned(), (r.uid, r.ext.clone()));
        }
        drop(dotlock);
        self.reserve(&mut w, 1)?;
        let (bytes, count) = done.iter().fold((0u64, 0u64), |(b, c), (_, lf)| (b + lf, c + 1));
        let mut uids = Vec::with_capacity(done.len());
        {
            let mut st = lock(&self.state);
            st.highest += 1;
            let m = st.highest;
            for (i, (mut msg, _)) in done.into_iter().enumerate() {
                let uid = first + i as u32;
                msg.modseq = m;
                w.by_base.insert(msg.base().to_owned(), uid);
                st.msgs.insert(uid, msg);
                uids.push(uid);
            }
        }
        if let Err(e) = quota::quota_add(&self.user_dir, bytes as i64, count as i64) {
            tracing::warn!(dir = %self.user_dir.display(), error = %e, "could not update maildirsize");
        }
        w.index_dirty = true;
        self.maybe_write_index(&mut w);
        drop(w);
        self.notifier.bump();
        result.map(|()| uids)
    }

    /// `OverQuota` when adding `bytes`/`count` would exceed `maildirsize`'s limit.
    fn check_quota(&self, bytes: u64, count: u64) -> StoreResult<()> {
        let Some(limit) = quota::quota_limit(&self.user_dir)? else { return Ok(()) };
        if limit.bytes.is_none() && limit.messages.is_none() {
            return Ok(());
        }
        let (used, messages) = quota::quota_usage(&self.user_dir)?;
        if limit.bytes.is_some_and(|l| used.saturating_add(bytes) > l) || limit.messages.is_some_and(|l| messages.saturating_add(count) > l) {
            return Err(StoreError::OverQuota);
        }
        Ok(())
    }

    pub(crate) fn copy_messages(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>> {
        // What to copy, as of now.
        let sources: Vec<(Uid, PathBuf, u64, i64, Vec<Flag>)> = {
            let st = lock(&self.state);
            uids.iter().filter_map(|u| st.msgs.get(u).map(|m| (*u, m.path(&self.dir), m.size, m.date, st.flags_of(&m.info)))).collect()
        };
        let mut pairs = Vec::with_capacity(sources.len());
        if let Some(d) = dest.as_any().downcast_ref::<MaildirMailbox>() {
            let mut prepared = Vec::with_capacity(sources.len());
            let mut from = Vec::with_capacity(sources.len());
            for (uid, path, size, date, flags) in sources {
                let p = match d.prepare_link(&path, size, flags.clone(), date) {
                    Ok(p) => p,
                    // Renamed meanwhile, another file system, or links not
                    // allowed: copy the bytes.
                    Err(_) => match self.read(uid) {
                        Ok(data) => d.prepare_bytes(&data, &flags, Some(date))?,
                        Err(StoreError::Expunged) => continue,
                        Err(e) => return Err(e),
                    },
                };
                prepared.push(p);
                from.push(uid);
            }
            let new = d.commit(prepared)?;
            pairs.extend(from.into_iter().zip(new));
        } else {
            for (uid, _, _, date, flags) in sources {
                let data = match self.read(uid) {
                    Ok(d) => d,
                    Err(StoreError::Expunged) => continue,
                    Err(e) => return Err(e),
                };
                pairs.push((uid, dest.append(&data, &flags, Some(date))?));
            }
        }
        Ok(pairs)
    }
}
