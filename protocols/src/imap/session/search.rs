//! SEARCH (RFC 9051 §6.4.4, ESEARCH RFC 4731, SEARCHRES RFC 5182, WITHIN
//! RFC 5032, CONDSTORE MODSEQ), SORT and THREAD (RFC 5256, RFC 5957).

use std::cell::OnceCell;
use std::sync::Arc;

use varan_core::mailstore::{Flag, Mailbox, MessageMeta, ModSeq, Uid};

use super::cache::Key;
use super::{uid_set_text, Session, State};
use crate::imap::command::{SearchKey, SearchReturn, SortCriterion, SortKey, ThreadAlgorithm};
use crate::imap::date::SearchDate;
use crate::imap::response::Status;
use crate::mime::{self, Summary};

/// One message as a search sees it; content and structure load lazily.
struct Candidate<'a> {
    seq: u32,
    meta: &'a MessageMeta,
    mailbox: &'a Arc<dyn Mailbox>,
    content: OnceCell<Option<Arc<[u8]>>>,
}

impl Candidate<'_> {
    fn content(&self) -> Option<&[u8]> {
        self.content.get_or_init(|| self.mailbox.read(self.meta.uid).ok()).as_deref()
    }
}

struct Env<'a> {
    exists: u32,
    max_uid: Uid,
    saved: &'a [Uid],
    recent: &'a [Uid],
    now: i64,
}

fn day(secs: i64) -> SearchDate {
    SearchDate::from_unix(secs, 0)
}

fn matches(key: &SearchKey, c: &Candidate, env: &Env, depth: usize) -> bool {
    // The parser bounds nesting; this guards the evaluator independently.
    if depth > 256 {
        return false;
    }
    let m = c.meta;
    let header = |field: &str, needle: &str| c.content().is_some_and(|b| mime::header_contains(b, field, needle));
    // The sent date as written, in the header's own zone (RFC 9051 §6.4.4:
    // "disregarding time and timezone"), in days since the epoch.
    let sent = || c.content().and_then(mime::sent_date).map(|d| d.day);
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => keys.iter().all(|k| matches(k, c, env, depth + 1)),
        SearchKey::Or(a, b) => matches(a, c, env, depth + 1) || matches(b, c, env, depth + 1),
        SearchKey::Not(k) => !matches(k, c, env, depth + 1),
        SearchKey::SequenceSet(set) => {
            if set.is_saved() {
                env.saved.contains(&m.uid)
            } else {
                set.contains(c.seq, env.exists)
            }
        }
        SearchKey::Uid(set) => {
            if set.is_saved() {
                env.saved.contains(&m.uid)
            } else {
                set.contains(m.uid, env.max_uid)
            }
        }
        SearchKey::Answered => m.has(&Flag::Answered),
        SearchKey::Unanswered => !m.has(&Flag::Answered),
        SearchKey::Deleted => m.has(&Flag::Deleted),
        SearchKey::Undeleted => !m.has(&Flag::Deleted),
        SearchKey::Draft => m.has(&Flag::Draft),
        SearchKey::Undraft => !m.has(&Flag::Draft),
        SearchKey::Flagged => m.has(&Flag::Flagged),
        SearchKey::Unflagged => !m.has(&Flag::Flagged),
        SearchKey::Seen => m.has(&Flag::Seen),
        SearchKey::Unseen => !m.has(&Flag::Seen),
        SearchKey::Keyword(k) => m.has(&Flag::Keyword(k.clone())),
        SearchKey::Unkeyword(k) => !m.has(&Flag::Keyword(k.clone())),
        SearchKey::Recent => env.recent.binary_search(&m.uid).is_ok(),
        SearchKey::New => env.recent.binary_search(&m.uid).is_ok() && !m.has(&Flag::Seen),
        SearchKey::Old => env.recent.binary_search(&m.uid).is_err(),
        SearchKey::Larger(n) => m.size > *n,
        SearchKey::Smaller(n) => m.size < *n,
        SearchKey::Before(d) => day(m.internal_date) < *d,
        SearchKey::On(d) => day(m.internal_date) == *d,
        SearchKey::Since(d) => day(m.internal_date) >= *d,
        SearchKey::SentBefore(d) => sent().is_some_and(|s| s < d.days_since_epoch()),
        SearchKey::SentOn(d) => sent().is_some_and(|s| s == d.days_since_epoch()),
        SearchKey::SentSince(d) => sent().is_some_and(|s| s >= d.days_since_epoch()),
        SearchKey::Older(secs) => m.internal_date <= env.now - i64::from(*secs),
        SearchKey::Younger(secs) => m.internal_date >= env.now - i64::from(*secs),
        SearchKey::ModSeq { modseq, .. } => m.modseq >= *modseq,
        // SAVEDATE (RFC 8514) is not offered: no message has a save date.
        SearchKey::SavedBefore(_) | SearchKey::SavedOn(_) | SearchKey::SavedSince(_) | SearchKey::SaveDateSupported => false,
        SearchKey::From(s) => header("From", s),
        SearchKey::To(s) => header("To", s),
        SearchKey::Cc(s) => header("Cc", s),
        SearchKey::Bcc(s) => header("Bcc", s),
        SearchKey::Subject(s) => header("Subject", s),
        SearchKey::Header(field, s) => header(field, s),
        SearchKey::Body(s) => c.content().is_some_and(|b| mime::body_contains(b, s)),
        SearchKey::Text(s) => c.content().is_some_and(|b| mime::text_contains(b, s)),
    }
}

fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq { .. } => true,
        SearchKey::And(keys) => keys.iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

impl Session {
    /// (seq, meta) of every message matching `key`, ascending.
    fn matching(&self, key: &SearchKey) -> Vec<(u32, MessageMeta)> {
        let State::Selected(view) = &self.state else { return Vec::new() };
        let env = Env { exists: view.exists(), max_uid: view.max_uid(), saved: &self.saved, recent: &view.recent, now: self.now };
        let mut out = Vec::new();
        for (i, meta) in view.messages.iter().enumerate() {
            if view.is_expunged(meta.uid) {
                continue;
            }
            let c = Candidate { seq: i as u32 + 1, meta, mailbox: &view.mailbox, content: OnceCell::new() };
            if matches(key, &c, &env, 0) {
                out.push((i as u32 + 1, meta.clone()));
            }
        }
        out
    }

    pub(super) fn search(&mut self, tag: &str, uid: bool, returns: Option<SearchReturn>, key: &SearchKey) {
        let found = self.matching(key);
        let ids: Vec<u32> = found.iter().map(|(s, m)| if uid { m.uid } else { *s }).collect();
        let max_modseq: Option<ModSeq> = uses_modseq(key).then(|| found.iter().map(|(_, m)| m.modseq).max()).flatten();
        if uses_modseq(key) {
            self.condstore = true;
        }
        let returns = match returns {
            Some(r) if r.is_empty() => Some(SearchReturn { all: true, ..SearchReturn::default() }),
            Some(r) => Some(r),
            None if self.rev2 => Some(SearchReturn { all: true, ..SearchReturn::default() }),
            None => None,
        };
        match returns {
            None => {
                self.out.extend_from_slice(b"* SEARCH");
                for id in &ids {
                    self.out.extend_from_slice(format!(" {id}").as_bytes());
                }
                if let Some(ms) = max_modseq {
                    self.out.extend_from_slice(format!(" (MODSEQ {ms})").as_bytes());
                }
                self.out.extend_from_slice(b"\r\n");
            }
            Some(r) => {
                if r.save {
                    self.saved = found.iter().map(|(_, m)| m.uid).collect();
                }
                let only_save = r.save && !(r.min || r.max || r.all || r.count);
                if !only_save {
                    let mut line = format!("* ESEARCH (TAG \"{tag}\")");
                    if uid {
                        line.push_str(" UID");
                    }
                    if !ids.is_empty() {
                        if r.min {
                            line.push_str(&format!(" MIN {}", ids[0]));
                        }
                        if r.max {
                            line.push_str(&format!(" MAX {}", ids[ids.len() - 1]));
                        }
                        if r.all {
                            line.push_str(&format!(" ALL {}", uid_set_text(&ids)));
                        }
                    }
                    if r.count {
                        line.push_str(&format!(" COUNT {}", ids.len()));
                    }
                    if let Some(ms) = max_modseq.filter(|_| !ids.is_empty()) {
                        line.push_str(&format!(" MODSEQ {ms}"));
                    }
                    line.push_str("\r\n");
                    self.out.extend_from_slice(line.as_bytes());
                }
            }
        }
        self.catch_up(false, uid);
        self.tagged(Some(tag), Status::Ok, None, "SEARCH completed");
    }

    fn summaries(&self, found: &[(u32, MessageMeta)]) -> Vec<Option<Arc<Summary>>> {
        let State::Selected(view) = &self.state else { return Vec::new() };
        let mailbox_key: Arc<str> = Arc::from(format!("{}\0{}", self.username, view.mailbox.name()));
        found
            .iter()
            .map(|(_, m)| {
                let key = Key { mailbox: Arc::clone(&mailbox_key), uidvalidity: view.status.uidvalidity, uid: m.uid };
                self.cache.get_or_insert(key, || view.mailbox.read(m.uid).ok())
            })
            .collect()
    }

    pub(super) fn sort(&mut self, tag: &str, uid: bool, criteria: &[SortCriterion], key: &SearchKey) {
        let found = self.matching(key);
        let summaries = self.summaries(&found);
        let mut order: Vec<usize> = (0..found.len()).collect();
        order.sort_by(|&a, &b| {
            for c in criteria {
                let (ma, mb) = (&found[a].1, &found[b].1);
                let (sa, sb) = (summaries[a].as_deref(), summaries[b].as_deref());
                let ord = match c.key {
                    SortKey::Arrival => ma.internal_date.cmp(&mb.internal_date),
                    SortKey::Size => ma.size.cmp(&mb.size),
                    SortKey::Date => {
                        let da = sa.and_then(|s| s.sort.sent_date.as_ref()).map_or(ma.internal_date, |d| d.utc);
                        let db = sb.and_then(|s| s.sort.sent_date.as_ref()).map_or(mb.internal_date, |d| d.utc);
                        da.cmp(&db)
                    }
                    SortKey::Subject => field(sa, |s| &s.sort.subject).cmp(field(sb, |s| &s.sort.subject)),
                    SortKey::From => field(sa, |s| &s.sort.from).cmp(field(sb, |s| &s.sort.from)),
                    SortKey::To => field(sa, |s| &s.sort.to).cmp(field(sb, |s| &s.sort.to)),
                    SortKey::Cc => field(sa, |s| &s.sort.cc).cmp(field(sb, |s| &s.sort.cc)),
                    SortKey::DisplayFrom => field(sa, |s| &s.sort.display_from).cmp(field(sb, |s| &s.sort.display_from)),
                    SortKey::DisplayTo => field(sa, |s| &s.sort.display_to).cmp(field(sb, |s| &s.sort.display_to)),
                };
                let ord = if c.reverse { ord.reverse() } else { ord };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            found[a].0.cmp(&found[b].0)
        });
        self.out.extend_from_slice(b"* SORT");
        for i in order {
            let id = if uid { found[i].1.uid } else { found[i].0 };
            self.out.extend_from_slice(format!(" {id}").as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
        self.catch_up(false, uid);
        self.tagged(Some(tag), Status::Ok, None, "SORT completed");
    }

    pub(super) fn thread(&mut self, tag: &str, uid: bool, algorithm: ThreadAlgorithm, key: &SearchKey) {
        let found = self.matching(key);
        let summaries = self.summaries(&found);
        let empty = mime::ThreadFields::default();
        let inputs: Vec<mime::ThreadInput> = found
            .iter()
            .zip(&summaries)
            .map(|((seq, m), s)| mime::ThreadInput { id: if uid { m.uid } else { *seq }, fields: s.as_deref().map_or(&empty, |s| &s.thread), internal_date: m.internal_date })
            .collect();
        let threads = match algorithm {
            ThreadAlgorithm::OrderedSubject => mime::thread_orderedsubject(&inputs),
            ThreadAlgorithm::References => mime::thread_references(&inputs),
        };
        self.out.extend_from_slice(b"* THREAD ");
        mime::write_threads(&mut self.out, &threads);
        self.out.extend_from_slice(b"\r\n");
        self.catch_up(false, uid);
        self.tagged(Some(tag), Status::Ok, None, "THREAD completed");
    }
}

fn field<'a>(s: Option<&'a Summary>, f: impl Fn(&'a Summary) -> &'a String) -> &'a str {
    s.map_or("", |s| f(s).as_str())
}
