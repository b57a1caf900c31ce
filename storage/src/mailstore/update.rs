//! Changing messages: flags (rename of the file, one new modseq per
//! operation, RFC 7162 UNCHANGEDSINCE) and expunge (unlink, expunge log,
//! `maildirsize`).

use super::filename::{self, Info};
use super::mailbox::{lock, MaildirMailbox, Writer};
use super::sync::needs_compaction;
use super::uidlist::{self, DotLock};
use crate::quota;
use std::fs;
use std::io;
use varan_core::mailstore::{Flag, FlagOp, FlagUpdate, ModSeq, StoreResult, Uid};

impl MaildirMailbox {
    fn ensure_loaded(&self, w: &mut Writer) -> StoreResult<()> {
        if !w.loaded {
            self.sync_locked(w, false)?;
        }
        Ok(())
    }

    pub(crate) fn store_flags(&self, uids: &[Uid], op: FlagOp, flags: &[Flag], unchanged_since: Option<ModSeq>) -> StoreResult<FlagUpdate> {
        let mut w = lock(&self.writer);
        self.ensure_loaded(&mut w)?;
        if op != FlagOp::Remove && self.needs_keyword(flags) {
            let dotlock = DotLock::acquire(&self.dir, &self.shared.layout.host, uidlist::DOTLOCK_WAIT)?;
            self.ensure_keywords(&mut w, flags, &dotlock)?;
        }
        let wanted = self.info_of(flags);
        let mut result = FlagUpdate::default();
        let mut renamed: Vec<(Uid, String, Info)> = Vec::new();
        let mut rescanned = false;
        let mut i = 0;
        let mut uids: Vec<Uid> = uids.to_vec();
        uids.dedup();
        while i < uids.len() {
            let uid = uids[i];
            let (old_path, base, old, modseq) = {
                let st = lock(&self.state);
                let Some(m) = st.msgs.get(&uid) else {
                    i += 1;
                    continue;
                };
                (m.path(&self.dir), m.base().to_owned(), m.info.clone(), m.modseq)
            };
            if unchanged_since.is_some_and(|u| modseq > u) {
                result.modified.push(uid);
                i += 1;
                continue;
            }
            let mut new = old.clone();
            new.present = true;
            match op {
                FlagOp::Add => {
                    new.bits.system |= wanted.bits.system;
                    new.bits.keywords |= wanted.bits.keywords;
                }
                FlagOp::Remove => {
                    new.bits.system &= !wanted.bits.system;
                    new.bits.keywords &= !wanted.bits.keywords;
                }
                FlagOp::Replace => new.bits = wanted.bits,
            }
            if new.bits == old.bits {
                i += 1;
                continue;
            }
            let name = filename::full_name(&base, &new);
            match fs::rename(&old_path, self.dir.join("cur").join(&name)) {
                Ok(()) => {
                    renamed.push((uid, name, new));
                    i += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !rescanned => {
                    // Renamed by another program: find it again, retry.
                    rescanned = true;
                    self.apply_renames(&mut w, std::mem::take(&mut renamed), &mut result)?;
                    self.sync_locked(&mut w, true)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => i += 1,
                Err(e) => {
                    self.apply_renames(&mut w, renamed, &mut result)?;
                    return Err(e.into());
                }
            }
        }
        self.apply_renames(&mut w, renamed, &mut result)?;
        result.updated.sort_by_key(|m| m.uid);
        result.modified.sort_unstable();
        self.maybe_write_index(&mut w);
        Ok(result)
    }

    fn needs_keyword(&self, flags: &[Flag]) -> bool {
        let st = lock(&self.state);
        flags.iter().any(|f| matches!(f, Flag::Keyword(k) if st.keywords.index_of(k).is_none()))
    }

    /// Records renamed files in the state under one new modseq.
    fn apply_renames(&self, w: &mut Writer, renamed: Vec<(Uid, String, Info)>, result: &mut FlagUpdate) -> StoreResult<()> {
        if renamed.is_empty() {
            return Ok(());
        }
        self.reserve(w, 1)?;
        let mut st = lock(&self.state);
        st.highest += 1;
        let m = st.highest;
        for (uid, name, info) in renamed {
            if let Some(msg) = st.msgs.get_mut(&uid) {
                msg.file = name;
                msg.in_new = false;
                msg.info = info;
                msg.modseq = m;
            }
            if let Some(msg) = st.msgs.get(&uid) {
                let meta = st.meta(uid, msg);
                result.updated.push(meta);
            }
        }
        drop(st);
        w.index_dirty = true;
        self.notifier.bump();
        Ok(())
    }

    /// Removes messages (with `\Deleted` only, if `require_deleted`).
    /// Returns the removed UIDs, ascending.
    pub(crate) fn remove_uids(&self, uids: &[Uid], require_deleted: bool) -> StoreResult<Vec<Uid>> {
        let mut w = lock(&self.writer);
        self.ensure_loaded(&mut w)?;
        let mut removed: Vec<Uid> = Vec::new();
        let (mut bytes, mut rescanned) = (0u64, false);
        let mut i = 0;
        while i < uids.len() {
            let uid = uids[i];
            let (path, file) = {
                let st = lock(&self.state);
                match st.msgs.get(&uid) {
                    Some(m) if !require_deleted || m.info.bits.has(filename::DELETED) => (m.path(&self.dir), m.file.clone()),
                    _ => {
                        i += 1;
                        continue;
                    }
                }
            };
            let lf_size = crate::maildir::parse_sizes(&file).0.or_else(|| fs::metadata(&path).ok().map(|m| m.len())).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    removed.push(uid);
                    bytes += lf_size;
                    i += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !rescanned => {
                    // Renamed (flags) or expunged by another program.
                    rescanned = true;
                    self.forget(&mut w, &removed)?;
                    self.sync_locked(&mut w, true)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => i += 1,
                Err(e) => {
                    self.forget(&mut w, &removed)?;
                    return Err(e.into());
                }
            }
        }
        self.forget(&mut w, &removed)?;
        if !removed.is_empty() {
            if let Err(e) = quota::quota_add(&self.user_dir, -(bytes as i64), -(removed.len() as i64)) {
                tracing::warn!(dir = %self.user_dir.display(), error = %e, "could not update maildirsize");
            }
            self.compact_uidlist(&mut w)?;
        }
        self.maybe_write_index(&mut w);
        removed.sort_unstable();
        removed.dedup();
        Ok(removed)
    }

    /// Drops removed messages from the state and logs their expunge.
    fn forget(&self, w: &mut Writer, removed: &[Uid]) -> StoreResult<()> {
        let gone: Vec<Uid> = {
            let st = lock(&self.state);
            removed.iter().copied().filter(|u| st.msgs.contains_key(u)).collect()
        };
        if gone.is_empty() {
            return Ok(());
        }
        self.reserve(w, 1)?;
        let mut st = lock(&self.state);
        st.highest += 1;
        let m = st.highest;
        for uid in gone {
            if let Some(msg) = st.msgs.remove(&uid) {
                w.by_base.remove(msg.base());
            }
            st.log_expunge(uid, m);
        }
        drop(st);
        w.index_dirty = true;
        self.notifier.bump();
        Ok(())
    }

    /// Rewrites the uidlist when most of its records are expunged ones.
    fn compact_uidlist(&self, w: &mut Writer) -> StoreResult<()> {
        let dead = {
            let st = lock(&self.state);
            w.records.values().filter(|(u, _)| !st.msgs.contains_key(u)).count()
        };
        if !needs_compaction(dead, w.records.len()) {
            return Ok(());
        }
        let _dotlock = DotLock::acquire(&self.dir, &self.shared.layout.host, uidlist::DOTLOCK_WAIT)?;
        if super::fsutil::Stamp::read(&self.dir.join(uidlist::UIDLIST_FILE))? != w.uidlist_stamp {
            // Changed by someone else: leave compaction for a later time.
            return Ok(());
        }
        w.uidlist_broken = true;
        self.write_uidlist(w, &[], &[], &[])
    }
}
