//! Mailbox-level commands: SELECT/EXAMINE (with CONDSTORE/QRESYNC), CREATE,
//! DELETE, RENAME, (UN)SUBSCRIBE, LIST (RFC 5258/5819/6154), LSUB, STATUS,
//! APPEND (UIDPLUS, MULTIAPPEND), QUOTA (RFC 9208), CLOSE.

use std::sync::Arc;

use varan_core::mailstore::{Flag, Mailbox, MailboxEntry, MailboxStatus, SpecialUse, StoreError, Uid};

use super::view::{flag_list_text, View};
use super::{uid_set_text, Session, State};
use crate::imap::command::{AppendMessage, ListReturn, ListSelection, SelectParams, StatusItem};
use crate::imap::response::{ResponseCode, Status};
use crate::imap::sequence::SequenceSet;

/// Mailboxes a LIST may return (more than any sane account has; bounds
/// the response of a pattern like `*` on a pathological tree).
const LIST_RESULTS_MAX: usize = 100_000;
/// UIDs reported VANISHED when the expunge log is incomplete and the
/// client's known-UID set must be checked one by one.
const QRESYNC_VANISHED_MAX: usize = 1_000_000;

impl Session {
    pub(super) fn select(&mut self, tag: &str, raw: &[u8], params: SelectParams, read_only: bool) {
        // Any previously selected mailbox is closed first, without expunge
        // (RFC 9051 §6.3.2); RFC 7162 §3.2.11 announces that with [CLOSED].
        if matches!(self.state, State::Selected(_)) {
            self.state = State::Authenticated;
            self.tagged(None, Status::Ok, Some(&ResponseCode::Closed), "Previous mailbox closed");
        }
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        let mailbox = match self.user().open(&name) {
            Ok(m) => m,
            Err(e) => return self.store_error(tag, e),
        };
        let view = match View::open(mailbox, read_only) {
            Ok(v) => v,
            Err(e) => return self.store_error(tag, e),
        };
        if params.condstore {
            self.condstore = true;
        }
        let st = view.status;
        let mut keywords: Vec<Flag> = Vec::new();
        for m in &view.messages {
            for f in &m.flags {
                if matches!(f, Flag::Keyword(_)) && !keywords.iter().any(|k| k.same(f)) {
                    keywords.push(f.clone());
                }
            }
        }
        let mut flags = vec![Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft];
        flags.extend(keywords);
        let list = flag_list_text(&flags);
        self.out.extend_from_slice(format!("* {} EXISTS\r\n", view.exists()).as_bytes());
        if !self.rev2 {
            self.out.extend_from_slice(b"* 0 RECENT\r\n");
        }
        self.out.extend_from_slice(format!("* FLAGS {list}\r\n").as_bytes());
        if read_only {
            self.out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
        } else {
            let permanent = format!("{} \\*)", &list[..list.len() - 1]);
            self.out.extend_from_slice(format!("* OK [PERMANENTFLAGS {permanent}] Flags permitted\r\n").as_bytes());
        }
        if !self.rev2 {
            if let Some(seq) = view.messages.iter().position(|m| !m.has(&Flag::Seen)) {
                self.out.extend_from_slice(format!("* OK [UNSEEN {}] First unseen\r\n", seq + 1).as_bytes());
            }
        }
        self.out.extend_from_slice(format!("* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n", st.uidvalidity, st.uidnext).as_bytes());
        self.out.extend_from_slice(format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", st.highest_modseq.max(1)).as_bytes());
        if self.rev2 {
            self.out.extend_from_slice(b"* LIST () \"/\" ");
            let n = view.mailbox.name().to_owned();
            self.write_mailbox(&n);
            self.out.extend_from_slice(b"\r\n");
        }
        let mut view = view;
        if let Some(q) = params.qresync.filter(|_| self.qresync) {
            if q.uidvalidity == st.uidvalidity {
                self.qresync_replay(&mut view, q.modseq, q.known_uids.as_ref());
            }
        }
        self.state = State::Selected(view);
        let code = if read_only { ResponseCode::ReadOnly } else { ResponseCode::ReadWrite };
        let verb = if read_only { "EXAMINE completed" } else { "SELECT completed" };
        self.tagged(Some(tag), Status::Ok, Some(&code), verb);
    }

    /// RFC 7162 §3.2.5.2: what changed since the client's modseq, so it can
    /// resynchronise without fetching every flag.
    fn qresync_replay(&mut self, view: &mut View, since: u64, known: Option<&crate::imap::sequence::SequenceSet>) {
        let Ok(changes) = view.mailbox.changes_since(since) else { return };
        let max = view.max_uid().max(changes.status.uidnext.saturating_sub(1));
        let mut vanished: Vec<Uid> = if changes.expunged_incomplete {
            // Without a complete log, everything the client may know that
            // is gone: the known set (or 1:max) minus what exists.
            let live: Vec<Uid> = view.messages.iter().map(|m| m.uid).collect();
            match known {
                Some(k) => k.iter_resolved(max).filter(|u| live.binary_search(u).is_err()).take(QRESYNC_VANISHED_MAX).collect(),
                None => Vec::new(),
            }
        } else {
            changes.expunged.clone()
        };
        if let Some(k) = known {
            vanished.retain(|u| k.contains(*u, max));
        }
        vanished.sort_unstable();
        vanished.dedup();
        if !vanished.is_empty() {
            self.out.extend_from_slice(format!("* VANISHED (EARLIER) {}\r\n", uid_set_text(&vanished)).as_bytes());
        }
        for meta in &changes.changed {
            if let Some(seq) = view.seq_of(meta.uid) {
                super::view::write_flags_update(&mut self.out, seq, meta, true, true);
            }
        }
    }

    pub(super) fn create(&mut self, tag: &str, raw: &[u8], special_use: &[SpecialUse]) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        // A trailing separator means "a name under which others will be
        // created" (RFC 9051 §6.3.4); the mailbox itself is created anyway.
        let name = name.trim_end_matches('/').to_owned();
        if name == "INBOX" {
            return self.no(tag, Some(ResponseCode::AlreadyExists), "INBOX always exists");
        }
        if special_use.len() > 1 {
            return self.no(tag, Some(ResponseCode::UseAttr), "Only one special-use attribute per mailbox");
        }
        match self.user().create(&name, special_use.first().copied()) {
            Ok(()) => self.ok(tag, "CREATE completed"),
            Err(e) => self.store_error(tag, e),
        }
    }

    pub(super) fn delete(&mut self, tag: &str, raw: &[u8]) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        if name == "INBOX" {
            return self.no(tag, Some(ResponseCode::Cannot), "INBOX cannot be deleted");
        }
        let selected_here = matches!(&self.state, State::Selected(v) if v.mailbox.name() == name);
        match self.user().delete(&name) {
            Ok(()) => {
                if selected_here {
                    self.state = State::Authenticated;
                }
                self.ok(tag, "DELETE completed")
            }
            Err(e) => self.store_error(tag, e),
        }
    }

    pub(super) fn rename(&mut self, tag: &str, from: &[u8], to: &[u8]) {
        let (from, to) = match (self.mailbox_name(from), self.mailbox_name(to)) {
            (Ok(f), Ok(t)) => (f, t.trim_end_matches('/').to_owned()),
            (Err(t), _) | (_, Err(t)) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        if to == "INBOX" {
            return self.no(tag, Some(ResponseCode::AlreadyExists), "INBOX always exists");
        }
        match self.user().rename(&from, &to) {
            Ok(()) => self.ok(tag, "RENAME completed"),
            Err(e) => self.store_error(tag, e),
        }
    }

    pub(super) fn subscribe(&mut self, tag: &str, raw: &[u8], on: bool) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        match self.user().set_subscribed(&name, on) {
            Ok(()) => self.ok(tag, if on { "SUBSCRIBE completed" } else { "UNSUBSCRIBE completed" }),
            Err(e) => self.store_error(tag, e),
        }
    }

    pub(super) fn list(&mut self, tag: &str, reference: &[u8], patterns: &[Vec<u8>], selection: &ListSelection, returns: &ListReturn) {
        let reference = match self.mailbox_name(reference) {
            Ok(r) => r,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        // LIST "" "": the hierarchy delimiter and root (RFC 9051 §6.3.9).
        if patterns.len() == 1 && patterns[0].is_empty() {
            self.out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            return self.ok(tag, "LIST completed");
        }
        let mut decoded = Vec::new();
        for p in patterns {
            match self.mailbox_name(p) {
                Ok(p) => decoded.push(format!("{reference}{p}")),
                Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
            }
        }
        let entries = match self.user().list() {
            Ok(e) => e,
            Err(e) => return self.store_error(tag, e),
        };
        let matching: Vec<&MailboxEntry> = entries
            .iter()
            .filter(|e| decoded.iter().any(|p| pattern_matches(p, &e.name)))
            .filter(|e| !selection.subscribed || e.subscribed || (selection.recursive_match && has_subscribed_child(&entries, &e.name)))
            .filter(|e| !selection.special_use || e.special_use.is_some())
            .take(LIST_RESULTS_MAX)
            .collect();
        let matching: Vec<MailboxEntry> = matching.into_iter().cloned().collect();
        for e in &matching {
            let mut attrs: Vec<&str> = Vec::new();
            if !e.selectable {
                attrs.push("\\Noselect");
            }
            attrs.push(if e.has_children { "\\HasChildren" } else { "\\HasNoChildren" });
            if (selection.subscribed || returns.subscribed) && e.subscribed {
                attrs.push("\\Subscribed");
            }
            if let Some(u) = e.special_use {
                attrs.push(u.as_imap());
            }
            self.out.extend_from_slice(format!("* LIST ({}) \"/\" ", attrs.join(" ")).as_bytes());
            self.write_mailbox(&e.name);
            if selection.recursive_match && selection.subscribed && !e.subscribed {
                self.out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            self.out.extend_from_slice(b"\r\n");
            if let Some(items) = &returns.status {
                if e.selectable {
                    if let Ok(mb) = self.user().open(&e.name) {
                        if mb.sync().is_ok() {
                            if let Ok(st) = mb.status() {
                                self.write_status_response(&e.name, &st, items);
                            }
                        }
                    }
                }
            }
        }
        self.ok(tag, "LIST completed");
    }

    pub(super) fn lsub(&mut self, tag: &str, reference: &[u8], pattern: &[u8]) {
        let (reference, pattern) = match (self.mailbox_name(reference), self.mailbox_name(pattern)) {
            (Ok(r), Ok(p)) => (r, p),
            (Err(t), _) | (_, Err(t)) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        let full = format!("{reference}{pattern}");
        let entries = match self.user().list() {
            Ok(e) => e,
            Err(e) => return self.store_error(tag, e),
        };
        for e in entries.iter().filter(|e| e.subscribed && pattern_matches(&full, &e.name)).take(LIST_RESULTS_MAX) {
            let attrs = if e.selectable { "" } else { "\\Noselect" };
            self.out.extend_from_slice(format!("* LSUB ({attrs}) \"/\" ").as_bytes());
            let name = e.name.clone();
            self.write_mailbox(&name);
            self.out.extend_from_slice(b"\r\n");
        }
        self.ok(tag, "LSUB completed");
    }

    pub(super) fn status(&mut self, tag: &str, raw: &[u8], items: &[StatusItem]) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        let mailbox = match self.user().open(&name) {
            Ok(m) => m,
            Err(e) => return self.store_error(tag, e),
        };
        let st = match mailbox.sync().and_then(|()| mailbox.status()) {
            Ok(s) => s,
            Err(e) => return self.store_error(tag, e),
        };
        self.write_status_response(mailbox.name(), &st, items);
        // A STATUS of the selected mailbox may reveal news: tell it the
        // usual way as well.
        self.catch_up(false, true);
        self.ok(tag, "STATUS completed");
    }

    fn write_status_response(&mut self, name: &str, st: &MailboxStatus, items: &[StatusItem]) {
        self.out.extend_from_slice(b"* STATUS ");
        self.write_mailbox(name);
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusItem::Messages => format!("MESSAGES {}", st.messages),
                StatusItem::UidNext => format!("UIDNEXT {}", st.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", st.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {}", st.unseen),
                StatusItem::Deleted => format!("DELETED {}", st.deleted),
                StatusItem::Size => format!("SIZE {}", st.size),
                StatusItem::Recent => "RECENT 0".to_owned(),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", st.highest_modseq.max(1)),
                StatusItem::AppendLimit => format!("APPENDLIMIT {}", self.config.append_limit),
            });
        }
        self.out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
    }

    pub(super) fn append(&mut self, tag: &str, raw: &[u8], messages: &[AppendMessage], frame: &[u8]) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        let mailbox = match self.user().open(&name) {
            Ok(m) => m,
            Err(StoreError::NoMailbox) => return self.no(tag, Some(ResponseCode::TryCreate), "No such mailbox; create it first"),
            Err(e) => return self.store_error(tag, e),
        };
        let total: u64 = messages.iter().map(|m| m.data(frame).len() as u64).sum();
        if let Err(e) = self.check_quota(total, mailbox.name()) {
            return self.store_error(tag, e);
        }
        let mut uids = Vec::with_capacity(messages.len());
        for m in messages {
            let data = m.data(frame);
            if data.len() as u64 > self.config.append_limit {
                return self.no(tag, Some(ResponseCode::TooBig), "Message too large");
            }
            if data.is_empty() {
                return self.no(tag, Some(ResponseCode::Cannot), "Empty message");
            }
            match mailbox.append(data, &m.flags, m.internal_date) {
                Ok(uid) => uids.push(uid),
                Err(e) => return self.store_error(tag, e),
            }
        }
        let uidvalidity = mailbox.status().map(|s| s.uidvalidity).unwrap_or(0);
        self.catch_up(false, true);
        let code = ResponseCode::AppendUid { uidvalidity, uids: SequenceSet::from_sorted(&uids) };
        self.tagged(Some(tag), Status::Ok, Some(&code), "APPEND completed");
    }

    /// Refuses work that would take the user over quota (RFC 9208 §5).
    /// Trash has extra room, so deleting (moving to Trash) works on a full
    /// mailbox (seed §6.2.5.1.10).
    pub(super) fn check_quota(&self, bytes: u64, dest: &str) -> Result<(), StoreError> {
        let Some(mut limit) = self.quota_limit else { return Ok(()) };
        if dest == self.config.trash_folder {
            limit = limit.saturating_add(self.trash_extra);
        }
        let usage = self.user().quota()?;
        if usage.used_bytes.saturating_add(bytes) > limit {
            return Err(StoreError::OverQuota);
        }
        Ok(())
    }

    pub(super) fn get_quota(&mut self, tag: &str, root: &[u8]) {
        if !root.is_empty() || self.quota_limit.is_none() {
            return self.no(tag, Some(ResponseCode::NonExistent), "No such quota root");
        }
        if let Err(e) = self.write_quota() {
            return self.store_error(tag, e);
        }
        self.ok(tag, "GETQUOTA completed");
    }

    pub(super) fn get_quota_root(&mut self, tag: &str, raw: &[u8]) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(t) => return self.no(tag, Some(ResponseCode::Cannot), &t),
        };
        if let Err(e) = self.user().open(&name) {
            return self.store_error(tag, e);
        }
        self.out.extend_from_slice(b"* QUOTAROOT ");
        self.write_mailbox(&name);
        if self.quota_limit.is_some() {
            self.out.extend_from_slice(b" \"\"\r\n");
            if let Err(e) = self.write_quota() {
                return self.store_error(tag, e);
            }
        } else {
            self.out.extend_from_slice(b"\r\n");
        }
        self.ok(tag, "GETQUOTAROOT completed");
    }

    /// `* QUOTA "" (STORAGE used limit)`, in KiB (RFC 9208 §5.1).
    fn write_quota(&mut self) -> Result<(), StoreError> {
        let usage = self.user().quota()?;
        let limit = self.quota_limit.unwrap_or(u64::MAX);
        self.out.extend_from_slice(format!("* QUOTA \"\" (STORAGE {} {})\r\n", usage.used_bytes.div_ceil(1024), limit / 1024).as_bytes());
        Ok(())
    }

    pub(super) fn close_mailbox(&mut self, tag: &str) {
        if let State::Selected(view) = &self.state {
            if !view.read_only {
                // CLOSE expunges silently (RFC 9051 §6.4.1).
                let mailbox: Arc<dyn Mailbox> = Arc::clone(&view.mailbox);
                if let Err(e) = mailbox.expunge(None) {
                    self.state = State::Authenticated;
                    return self.store_error(tag, e);
                }
            }
        }
        self.state = State::Authenticated;
        self.ok(tag, "CLOSE completed");
    }
}

/// LIST wildcard matching (RFC 9051 §6.3.9): `*` matches anything, `%`
/// anything but the hierarchy separator. INBOX matches case-insensitively.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = match pattern.get(..5) {
        Some(head) if name == "INBOX" && head.eq_ignore_ascii_case("INBOX") => head.chars().collect(),
        _ => name.chars().collect(),
    };
    // Iterative matcher with backtracking over the last star; `%` handled
    // by a bounded recursion-free DP (names are short: 512 bytes max).
    let nl = n.len();
    let mut dp = vec![false; nl + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; nl + 1];
        match pc {
            '*' => {
                let mut any = false;
                for ni in 0..=nl {
                    any |= dp[ni];
                    next[ni] = any;
                }
            }
            '%' => {
                for ni in 0..=nl {
                    if dp[ni] {
                        next[ni] = true;
                        let mut k = ni;
                        while k < nl && n[k] != '/' {
                            k += 1;
                            next[k] = true;
                        }
                    }
                }
            }
            c => {
                for ni in 0..nl {
                    if dp[ni] && n[ni] == c {
                        next[ni + 1] = true;
                    }
                }
            }
        }
        dp = next;
    }
    dp[nl]
}

fn has_subscribed_child(entries: &[MailboxEntry], name: &str) -> bool {
    let prefix = format!("{name}/");
    entries.iter().any(|e| e.subscribed && e.name.starts_with(&prefix))
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("*", "INBOX"));
        assert!(pattern_matches("*", "a/b/c"));
        assert!(pattern_matches("%", "Sent"));
        assert!(!pattern_matches("%", "a/b"));
        assert!(pattern_matches("a/%", "a/b"));
        assert!(!pattern_matches("a/%", "a/b/c"));
        assert!(pattern_matches("a/*", "a/b/c"));
        assert!(pattern_matches("inbox", "INBOX"));
        assert!(!pattern_matches("Sent", "Sent2"));
        assert!(pattern_matches("S%t", "Sent"));
    }
}
