//! The selected mailbox as one session sees it: its own sequence numbers
//! (RFC 9051 §2.3.1.2), the flags it last reported, and the changes other
//! sessions made that it has not announced yet.
//!
//! Catching up happens only where the session may send untagged updates
//! (RFC 9051 §7.5.1): EXPUNGE responses are held back during FETCH, STORE
//! and SEARCH (but not their UID forms), because the client could not
//! tell which message a sequence number meant otherwise.

use std::sync::Arc;

use varan_core::mailstore::{Changes, Flag, Mailbox, MailboxStatus, MessageMeta, ModSeq, StoreResult, Uid};

pub struct View {
    pub mailbox: Arc<dyn Mailbox>,
    pub read_only: bool,
    /// Messages by sequence number - 1, as the client knows them.
    pub messages: Vec<MessageMeta>,
    /// UIDs the store expunged that the client has not been told about.
    /// Their entries stay in `messages` until announced.
    pending_expunge: Vec<Uid>,
    /// The store's highest modseq this view has caught up with.
    pub modseq: ModSeq,
    /// `version()` of the mailbox when last caught up (IDLE wake-ups).
    pub version: u64,
    pub status: MailboxStatus,
    /// UIDs of messages that arrived since this session selected the
    /// mailbox, for IMAP4rev1's `\Recent`.
    pub recent: Vec<Uid>,
}

/// How the session reports a catch-up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    /// EXPUNGE responses may be sent now.
    pub expunge_allowed: bool,
    /// QRESYNC enabled: `VANISHED` instead of EXPUNGE.
    pub vanished: bool,
    /// CONDSTORE enabled: FETCH updates carry MODSEQ.
    pub condstore: bool,
    /// IMAP4rev1 session: `RECENT` counts are sent.
    pub recent: bool,
}

impl View {
    /// Opens the view on a mailbox: everything in it as of now.
    pub fn open(mailbox: Arc<dyn Mailbox>, read_only: bool) -> StoreResult<View> {
        mailbox.sync()?;
        let version = mailbox.version();
        let changes = mailbox.changes_since(0)?;
        let modseq = changes.status.highest_modseq;
        Ok(View { mailbox, read_only, messages: changes.changed, pending_expunge: Vec::new(), modseq, version, status: changes.status, recent: Vec::new() })
    }

    pub fn exists(&self) -> u32 {
        self.messages.len() as u32
    }

    /// Sequence number (1-based) of a UID the client knows.
    pub fn seq_of(&self, uid: Uid) -> Option<u32> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok().map(|i| i as u32 + 1)
    }

    pub fn meta(&self, seq: u32) -> Option<&MessageMeta> {
        self.messages.get((seq as usize).checked_sub(1)?)
    }

    /// Highest UID the client knows, 0 when empty (for `*` in UID sets).
    pub fn max_uid(&self) -> Uid {
        self.messages.last().map_or(0, |m| m.uid)
    }

    pub fn is_expunged(&self, uid: Uid) -> bool {
        self.pending_expunge.binary_search(&uid).is_ok()
    }

    /// Picks up changes from the store (after `Mailbox::sync` if `rescan`)
    /// and writes the untagged responses the client must see.
    pub fn catch_up(&mut self, out: &mut Vec<u8>, report: Report, rescan: bool) -> StoreResult<()> {
        if rescan {
            self.mailbox.sync()?;
        }
        let version = self.mailbox.version();
        if version == self.version && (self.pending_expunge.is_empty() || !report.expunge_allowed) {
            return Ok(());
        }
        let changes = self.mailbox.changes_since(self.modseq)?;
        self.version = version;
        self.apply(changes, out, report)
    }

    fn apply(&mut self, changes: Changes, out: &mut Vec<u8>, report: Report) -> StoreResult<()> {
        let mut gone: Vec<Uid> = if changes.expunged_incomplete {
            let live = self.mailbox.uids()?;
            self.messages.iter().map(|m| m.uid).filter(|u| live.binary_search(u).is_err()).collect()
        } else {
            changes.expunged.into_iter().filter(|u| self.seq_of(*u).is_some()).collect()
        };
        gone.sort_unstable();
        gone.dedup();
        for uid in gone {
            if let Err(at) = self.pending_expunge.binary_search(&uid) {
                self.pending_expunge.insert(at, uid);
            }
        }
        if report.expunge_allowed && !self.pending_expunge.is_empty() {
            self.announce_expunges(out, report.vanished);
        }
        let known_max = self.max_uid();
        let mut arrived = false;
        for meta in changes.changed {
            if meta.uid > known_max {
                if !self.is_expunged(meta.uid) {
                    self.messages.push(meta);
                    arrived = true;
                }
                continue;
            }
            let Some(seq) = self.seq_of(meta.uid) else { continue };
            let slot = &mut self.messages[seq as usize - 1];
            if slot.flags != meta.flags || (report.condstore && slot.modseq != meta.modseq) {
                let flags_changed = !same_flags(&slot.flags, &meta.flags);
                *slot = meta;
                if flags_changed || report.condstore {
                    write_flags_update(out, seq, slot, report.condstore || report.vanished, report.vanished);
                }
            } else {
                *slot = meta;
            }
        }
        if arrived {
            let before = self.recent.len();
            let new_uids: Vec<Uid> = self.messages.iter().rev().take_while(|m| m.uid > known_max).map(|m| m.uid).collect();
            self.recent.extend(new_uids.into_iter().rev());
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.messages.len()).as_bytes());
            if report.recent && self.recent.len() != before {
                out.extend_from_slice(format!("* {} RECENT\r\n", self.recent.len()).as_bytes());
            }
        }
        self.status = changes.status;
        self.modseq = self.modseq.max(changes.status.highest_modseq);
        Ok(())
    }

    /// Sends the held-back expunges: `* n EXPUNGE` from the highest
    /// sequence number down (so earlier numbers stay valid while the client
    /// applies them), or one `* VANISHED` with QRESYNC (RFC 7162 §3.2.10).
    fn announce_expunges(&mut self, out: &mut Vec<u8>, vanished: bool) {
        let gone = std::mem::take(&mut self.pending_expunge);
        if vanished {
            out.extend_from_slice(b"* VANISHED ");
            out.extend_from_slice(crate::imap::session::uid_set_text(&gone).as_bytes());
            out.extend_from_slice(b"\r\n");
            self.messages.retain(|m| gone.binary_search(&m.uid).is_err());
        } else {
            for uid in gone.iter().rev() {
                if let Some(seq) = self.seq_of(*uid) {
                    out.extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes());
                    self.messages.remove(seq as usize - 1);
                }
            }
        }
        self.recent.retain(|u| gone.binary_search(u).is_err());
    }

    /// Our own EXPUNGE/MOVE removed these UIDs: announce them now.
    pub fn expunged_by_us(&mut self, uids: &[Uid], out: &mut Vec<u8>, vanished: bool) {
        for uid in uids {
            if self.seq_of(*uid).is_some() {
                if let Err(at) = self.pending_expunge.binary_search(uid) {
                    self.pending_expunge.insert(at, *uid);
                }
            }
        }
        if !self.pending_expunge.is_empty() {
            self.announce_expunges(out, vanished);
        }
    }

    /// Our own STORE changed these messages: keep the view current so the
    /// next catch-up does not announce them again.
    pub fn updated_by_us(&mut self, metas: &[MessageMeta]) {
        for meta in metas {
            if let Some(seq) = self.seq_of(meta.uid) {
                self.messages[seq as usize - 1] = meta.clone();
            }
        }
    }
}

fn same_flags(a: &[Flag], b: &[Flag]) -> bool {
    a.len() == b.len() && a.iter().all(|f| b.iter().any(|g| g.same(f)))
}

/// `* n FETCH (FLAGS (...) [UID n] [MODSEQ (m)])`.
pub fn write_flags_update(out: &mut Vec<u8>, seq: u32, meta: &MessageMeta, modseq: bool, uid: bool) {
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    if uid {
        out.extend_from_slice(format!("UID {} ", meta.uid).as_bytes());
    }
    write_flag_list(out, &meta.flags, false);
    if modseq {
        out.extend_from_slice(format!(" MODSEQ ({})", meta.modseq).as_bytes());
    }
    out.extend_from_slice(b")\r\n");
}

/// `FLAGS (\Seen $Label1)`, with `\Recent` when asked.
pub fn write_flag_list(out: &mut Vec<u8>, flags: &[Flag], recent: bool) {
    out.extend_from_slice(b"FLAGS (");
    let mut first = true;
    for f in flags {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(f.as_imap().as_bytes());
    }
    if recent {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(b"\\Recent");
    }
    out.push(b')');
}

/// A flag list without the `FLAGS ` label, e.g. for PERMANENTFLAGS.
pub fn flag_list_text(flags: &[Flag]) -> String {
    let mut v = Vec::new();
    write_flag_list(&mut v, flags, false);
    String::from_utf8_lossy(&v[6..]).into_owned()
}
