//! Message commands on the selected mailbox: FETCH (with BINARY, CONDSTORE
//! CHANGEDSINCE and QRESYNC VANISHED), STORE (UNCHANGEDSINCE), COPY and
//! MOVE (UIDPLUS COPYUID), EXPUNGE and UID EXPUNGE.

use std::sync::Arc;

use varan_core::mailstore::{Flag, FlagOp, MessageMeta, ModSeq, StoreError, Uid};

use super::cache::Key;
use super::view::{write_flag_list, write_flags_update};
use super::{uid_set_text, Pending, Session, State, Step, OUTPUT_CHUNK_BYTES};
use crate::imap::command::FetchAttr;
use crate::imap::response::{ResponseCode, Status};
use crate::imap::sequence::SequenceSet;
use crate::imap::{date, wire};
use crate::mime::{self, Section, SectionKind};

/// A FETCH in progress (it may span several [`Session::work`] calls).
pub struct FetchJob {
    tag: String,
    uid: bool,
    items: Vec<FetchAttr>,
    /// (sequence number, UID) of every message still to send.
    targets: Vec<(u32, Uid)>,
    next: usize,
    modseq: bool,
    expunged_seen: bool,
}

impl Session {
    /// (sequence number, UID) pairs a set names, ascending. UID sets name
    /// only messages that exist (RFC 9051 §6.4.8); `*` is the last one.
    pub(super) fn resolve(&self, uid: bool, set: &SequenceSet) -> Vec<(u32, Uid)> {
        let State::Selected(view) = &self.state else { return Vec::new() };
        if set.is_saved() {
            let mut out: Vec<(u32, Uid)> = self.saved.iter().filter_map(|u| view.seq_of(*u).map(|s| (s, *u))).collect();
            out.sort_unstable();
            return out;
        }
        if uid {
            let max = view.max_uid();
            view.messages.iter().enumerate().filter(|(_, m)| set.contains(m.uid, max)).map(|(i, m)| (i as u32 + 1, m.uid)).collect()
        } else {
            let exists = view.exists();
            set.iter_resolved(exists).filter_map(|seq| view.meta(seq).map(|m| (seq, m.uid))).collect()
        }
    }

    /// Sequence numbers out of range make a non-UID command a BAD
    /// (RFC 9051 §6.4.5: "invalid message sequence number").
    fn seq_set_valid(&self, uid: bool, set: &SequenceSet) -> bool {
        let State::Selected(view) = &self.state else { return false };
        uid || set.is_saved() || set.max_value().is_none_or(|m| m <= view.exists())
    }

    pub(super) fn fetch(&mut self, tag: &str, uid: bool, set: &SequenceSet, items: Vec<FetchAttr>, changed_since: Option<ModSeq>, vanished: bool) -> Step {
        if !self.seq_set_valid(uid, set) {
            self.tagged(Some(tag), Status::Bad, None, "Invalid message sequence number");
            return Step::Continue;
        }
        if vanished && (!uid || !self.qresync || changed_since.is_none()) {
            self.tagged(Some(tag), Status::Bad, None, "VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE");
            return Step::Continue;
        }
        let mut targets = self.resolve(uid, set);
        let mut modseq = changed_since.is_some() || items.iter().any(|i| matches!(i, FetchAttr::ModSeq));
        if changed_since.is_some() {
            self.condstore = true;
            modseq = true;
        }
        if let (Some(since), State::Selected(view)) = (changed_since, &self.state) {
            targets.retain(|(seq, _)| view.meta(*seq).is_some_and(|m| m.modseq > since));
            if vanished {
                if let Ok(changes) = view.mailbox.changes_since(since) {
                    let max = view.max_uid().max(changes.status.uidnext.saturating_sub(1));
                    let gone: Vec<Uid> = changes.expunged.into_iter().filter(|u| set.contains(*u, max)).collect();
                    if !gone.is_empty() {
                        self.out.extend_from_slice(format!("* VANISHED (EARLIER) {}\r\n", uid_set_text(&gone)).as_bytes());
                    }
                }
            }
        }
        // Non-peek body fetches set \Seen first (RFC 9051 §6.4.5), so the
        // FLAGS sent with them are current.
        let sets_seen = items.iter().any(|i| match i {
            FetchAttr::BodySection { peek, .. } | FetchAttr::Binary { peek, .. } => !peek,
            FetchAttr::Rfc822 | FetchAttr::Rfc822Text => true,
            _ => false,
        });
        let mut items = items;
        if sets_seen {
            if let State::Selected(view) = &mut self.state {
                if !view.read_only {
                    let unseen: Vec<Uid> = targets.iter().filter(|(s, _)| view.meta(*s).is_some_and(|m| !m.has(&Flag::Seen))).map(|(_, u)| *u).collect();
                    if !unseen.is_empty() {
                        if let Ok(update) = view.mailbox.store(&unseen, FlagOp::Add, &[Flag::Seen], None) {
                            view.updated_by_us(&update.updated);
                            if !items.iter().any(|i| matches!(i, FetchAttr::Flags)) {
                                items.push(FetchAttr::Flags);
                            }
                        }
                    }
                }
            }
        }
        if uid && !items.iter().any(|i| matches!(i, FetchAttr::Uid)) {
            items.insert(0, FetchAttr::Uid);
        }
        let job = FetchJob { tag: tag.to_owned(), uid, items, targets, next: 0, modseq, expunged_seen: false };
        self.fetch_continue(job)
    }

    pub(super) fn fetch_continue(&mut self, mut job: FetchJob) -> Step {
        while job.next < job.targets.len() {
            if self.out.len() >= OUTPUT_CHUNK_BYTES {
                self.pending = Some(Pending::Fetch(job));
                return Step::Work;
            }
            let (seq, uid) = job.targets[job.next];
            job.next += 1;
            match self.fetch_one(seq, uid, &job.items, job.modseq) {
                Ok(()) => {}
                Err(StoreError::Expunged) => job.expunged_seen = true,
                Err(e) => {
                    self.store_error(&job.tag, e);
                    return Step::Continue;
                }
            }
        }
        self.catch_up(false, job.uid);
        if job.expunged_seen && !job.uid {
            self.tagged(Some(&job.tag), Status::No, Some(&ResponseCode::ExpungeIssued), "Some messages were expunged meanwhile");
        } else {
            self.tagged(Some(&job.tag), Status::Ok, None, "FETCH completed");
        }
        Step::Continue
    }

    fn fetch_one(&mut self, seq: u32, uid: Uid, items: &[FetchAttr], modseq: bool) -> Result<(), StoreError> {
        let State::Selected(view) = &self.state else { return Ok(()) };
        let Some(meta) = view.meta(seq).cloned() else { return Ok(()) };
        if view.is_expunged(uid) {
            return Err(StoreError::Expunged);
        }
        let mailbox = Arc::clone(&view.mailbox);
        let key = Key { mailbox: Arc::from(format!("{}\0{}", self.username, mailbox.name())), uidvalidity: view.status.uidvalidity, uid };
        let recent = !self.rev2 && view.recent.binary_search(&uid).is_ok();
        let needs_content = items.iter().any(|i| {
            matches!(
                i,
                FetchAttr::BodySection { .. } | FetchAttr::Binary { .. } | FetchAttr::BinarySize { .. } | FetchAttr::Rfc822 | FetchAttr::Rfc822Header | FetchAttr::Rfc822Text
            )
        });
        let needs_summary = items.iter().any(|i| matches!(i, FetchAttr::Envelope | FetchAttr::Body | FetchAttr::BodyStructure));
        let content: Option<Arc<[u8]>> = if needs_content { Some(mailbox.read(uid)?) } else { None };
        let summary = if needs_summary {
            let mut failure = None;
            let s = self.cache.get_or_insert(key, || match &content {
                Some(c) => Some(Arc::clone(c)),
                None => match mailbox.read(uid) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                },
            });
            if let Some(e) = failure {
                return Err(e);
            }
            s
        } else {
            None
        };
        let out = &mut self.out;
        out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
        let mut first = true;
        for item in items {
            if !first {
                out.push(b' ');
            }
            first = false;
            match item {
                FetchAttr::Uid => out.extend_from_slice(format!("UID {uid}").as_bytes()),
                FetchAttr::Flags => write_flag_list(out, &meta.flags, recent),
                FetchAttr::InternalDate => {
                    out.extend_from_slice(b"INTERNALDATE ");
                    date::write_date_time(out, meta.internal_date);
                }
                FetchAttr::Rfc822Size => out.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes()),
                FetchAttr::ModSeq => out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes()),
                FetchAttr::Envelope => {
                    out.extend_from_slice(b"ENVELOPE ");
                    out.extend_from_slice(summary.as_ref().map_or(&b"NIL"[..], |s| &s.envelope));
                }
                FetchAttr::Body => {
                    out.extend_from_slice(b"BODY ");
                    out.extend_from_slice(summary.as_ref().map_or(&b"NIL"[..], |s| &s.body));
                }
                FetchAttr::BodyStructure => {
                    out.extend_from_slice(b"BODYSTRUCTURE ");
                    out.extend_from_slice(summary.as_ref().map_or(&b"NIL"[..], |s| &s.bodystructure));
                }
                FetchAttr::Rfc822 => {
                    out.extend_from_slice(b"RFC822 ");
                    wire::write_literal(out, content.as_deref().unwrap_or_default());
                }
                FetchAttr::Rfc822Header => {
                    let c = content.as_deref().unwrap_or_default();
                    out.extend_from_slice(b"RFC822.HEADER ");
                    wire::write_literal(out, &mime::section(c, &Section { part: Vec::new(), kind: SectionKind::Header }));
                }
                FetchAttr::Rfc822Text => {
                    let c = content.as_deref().unwrap_or_default();
                    out.extend_from_slice(b"RFC822.TEXT ");
                    wire::write_literal(out, &mime::section(c, &Section { part: Vec::new(), kind: SectionKind::Text }));
                }
                FetchAttr::BodySection { section, partial, .. } => {
                    let c = content.as_deref().unwrap_or_default();
                    let data = mime::section(c, section);
                    out.extend_from_slice(b"BODY[");
                    write_section_spec(out, section);
                    out.push(b']');
                    let slice = match partial {
                        Some(p) => {
                            out.extend_from_slice(format!("<{}>", p.offset).as_bytes());
                            mime::partial(&data, p.offset, p.length)
                        }
                        None => &data[..],
                    };
                    out.push(b' ');
                    wire::write_literal(out, slice);
                }
                FetchAttr::Binary { part, partial, .. } => {
                    let c = content.as_deref().unwrap_or_default();
                    out.extend_from_slice(b"BINARY[");
                    out.extend_from_slice(part_text(part).as_bytes());
                    out.push(b']');
                    match mime::binary(c, part) {
                        Ok(data) => {
                            let slice = match partial {
                                Some(p) => {
                                    out.extend_from_slice(format!("<{}>", p.offset).as_bytes());
                                    mime::partial(&data, p.offset, p.length)
                                }
                                None => &data[..],
                            };
                            out.push(b' ');
                            if slice.contains(&0) {
                                wire::write_literal8(out, slice);
                            } else {
                                wire::write_literal(out, slice);
                            }
                        }
                        Err(_) => out.extend_from_slice(b" NIL"),
                    }
                }
                // PREVIEW is not advertised; a client asking anyway gets NIL,
                // which RFC 8970 §4 allows when no preview can be generated.
                FetchAttr::Preview { .. } => out.extend_from_slice(b"PREVIEW NIL"),
                FetchAttr::SaveDate => out.extend_from_slice(b"SAVEDATE NIL"),
                FetchAttr::BinarySize { part } => {
                    let c = content.as_deref().unwrap_or_default();
                    let size = mime::binary(c, part).map(|d| d.len()).unwrap_or(0);
                    out.extend_from_slice(format!("BINARY.SIZE[{}] {size}", part_text(part)).as_bytes());
                }
            }
        }
        if modseq && !items.iter().any(|i| matches!(i, FetchAttr::ModSeq)) {
            out.extend_from_slice(format!(" MODSEQ ({})", meta.modseq).as_bytes());
        }
        out.extend_from_slice(b")\r\n");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(&mut self, tag: &str, uid: bool, set: &SequenceSet, unchanged_since: Option<ModSeq>, op: FlagOp, silent: bool, flags: &[Flag]) {
        if !self.seq_set_valid(uid, set) {
            self.tagged(Some(tag), Status::Bad, None, "Invalid message sequence number");
            return;
        }
        let targets = self.resolve(uid, set);
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let State::Selected(view) = &mut self.state else { return };
        if view.read_only {
            return self.no(tag, Some(ResponseCode::Cannot), "Mailbox is read-only");
        }
        let uids: Vec<Uid> = targets.iter().map(|(_, u)| *u).filter(|u| !view.is_expunged(*u)).collect();
        let update = match view.mailbox.store(&uids, op, flags, unchanged_since) {
            Ok(u) => u,
            Err(e) => return self.store_error(tag, e),
        };
        view.updated_by_us(&update.updated);
        let mut lines = Vec::new();
        for (seq, u) in &targets {
            if update.modified.contains(u) {
                continue;
            }
            let changed = update.updated.iter().any(|m| m.uid == *u);
            let Some(meta) = view.meta(*seq) else { continue };
            if !silent {
                write_flags_update(&mut lines, *seq, meta, condstore, uid);
            } else if condstore && changed {
                // RFC 7162 §3.1.3: with CONDSTORE the new MODSEQ is sent even for .SILENT.
                lines.extend_from_slice(format!("* {seq} FETCH ({}MODSEQ ({}))\r\n", if uid { format!("UID {u} ") } else { String::new() }, meta.modseq).as_bytes());
            }
        }
        let modified: Vec<u32> = if uid { update.modified.clone() } else { targets.iter().filter(|(_, u)| update.modified.contains(u)).map(|(s, _)| *s).collect() };
        self.out.extend_from_slice(&lines);
        self.catch_up(false, uid);
        if modified.is_empty() {
            self.ok(tag, "STORE completed");
        } else {
            let mut modified = modified;
            modified.sort_unstable();
            let code = ResponseCode::Modified(SequenceSet::from_sorted(&modified));
            self.tagged(Some(tag), Status::Ok, Some(&code), "Conditional STORE failed for some messages");
        }
    }

    pub(super) fn copy(&mut self, tag: &str, uid: bool, set: &SequenceSet, raw: &[u8], is_move: bool) {
        if !self.seq_set_valid(uid, set) {
            self.tagged(Some(tag), Status::Bad, None, "Invalid message sequence number");
            return;
        }
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        let dest = match self.user().open(&name) {
            Ok(m) => m,
            Err(StoreError::NoMailbox) => return self.no(tag, Some(ResponseCode::TryCreate), "No such mailbox; create it first"),
            Err(e) => return self.store_error(tag, e),
        };
        let targets = self.resolve(uid, set);
        let State::Selected(view) = &self.state else { return };
        if is_move && view.read_only {
            return self.no(tag, Some(ResponseCode::Cannot), "Mailbox is read-only");
        }
        let uids: Vec<Uid> = targets.iter().map(|(_, u)| *u).filter(|u| !view.is_expunged(*u)).collect();
        let bytes: u64 = targets.iter().filter_map(|(s, _)| view.meta(*s)).map(|m: &MessageMeta| m.size).sum();
        let source = Arc::clone(&view.mailbox);
        let same = Arc::ptr_eq(&source, &dest);
        if !(is_move && same) {
            if let Err(e) = self.check_quota(bytes, dest.name()) {
                return self.store_error(tag, e);
            }
        }
        if uids.is_empty() {
            return self.ok(tag, if is_move { "MOVE completed" } else { "COPY completed" });
        }
        let result = if is_move { source.move_to(&uids, dest.as_ref()) } else { source.copy_to(&uids, dest.as_ref()) };
        let pairs = match result {
            Ok(p) => p,
            Err(e) => return self.store_error(tag, e),
        };
        let uidvalidity = dest.status().map(|s| s.uidvalidity).unwrap_or(0);
        let src: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
        let dst: Vec<Uid> = pairs.iter().map(|p| p.1).collect();
        let code = ResponseCode::CopyUid { uidvalidity, source: SequenceSet::from_sorted(&src), destination: SequenceSet::from_sorted(&dst) };
        if is_move {
            // RFC 6851 §4.3: COPYUID goes in an untagged OK before the expunges.
            self.tagged(None, Status::Ok, Some(&code), "Moved");
            let qresync = self.qresync;
            if let State::Selected(view) = &mut self.state {
                view.expunged_by_us(&src, &mut self.out, qresync);
            }
            self.catch_up(false, true);
            self.ok(tag, "MOVE completed");
        } else {
            self.catch_up(false, true);
            self.tagged(Some(tag), Status::Ok, Some(&code), "COPY completed");
        }
    }

    pub(super) fn expunge(&mut self, tag: &str, set: Option<SequenceSet>) {
        let only: Option<Vec<Uid>> = set.map(|s| self.resolve(true, &s).into_iter().map(|(_, u)| u).collect());
        let qresync = self.qresync;
        let State::Selected(view) = &mut self.state else { return };
        if view.read_only {
            return self.no(tag, Some(ResponseCode::Cannot), "Mailbox is read-only");
        }
        let removed = match view.mailbox.expunge(only.as_deref()) {
            Ok(r) => r,
            Err(e) => return self.store_error(tag, e),
        };
        view.expunged_by_us(&removed, &mut self.out, qresync);
        self.catch_up(false, true);
        self.ok(tag, "EXPUNGE completed");
    }
}

/// `1.2.HEADER.FIELDS (A B)` as echoed in a FETCH response.
fn write_section_spec(out: &mut Vec<u8>, section: &Section) {
    let part = part_text(&section.part);
    out.extend_from_slice(part.as_bytes());
    let kind = match &section.kind {
        SectionKind::Full => return,
        SectionKind::Header => "HEADER".to_owned(),
        SectionKind::Text => "TEXT".to_owned(),
        SectionKind::Mime => "MIME".to_owned(),
        SectionKind::HeaderFields(names) => format!("HEADER.FIELDS ({})", names.join(" ")),
        SectionKind::HeaderFieldsNot(names) => format!("HEADER.FIELDS.NOT ({})", names.join(" ")),
    };
    if !part.is_empty() {
        out.push(b'.');
    }
    out.extend_from_slice(kind.as_bytes());
}

fn part_text(part: &[u32]) -> String {
    part.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(".")
}
