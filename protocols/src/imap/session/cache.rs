//! Parsed message structure shared by every session: ENVELOPE,
//! BODYSTRUCTURE and the sort/thread keys of a message are computed once
//! (`mime::summarize`) and kept under a byte budget, so clients that
//! re-fetch headers and structure (all of them do, on every resync) do not
//! make the server reparse large files.
//!
//! Keyed by (user, mailbox, UIDVALIDITY, UID): a UID never names another
//! message while UIDVALIDITY stays, so entries never go stale, they only
//! age out. Eviction is first-in first-out, which is close to LRU for
//! this access pattern (a client fetches new messages' summaries once, then
//! mostly the recent ones again) at a fraction of the bookkeeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::mime::Summary;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// `user\0mailbox`, shared by all keys of one mailbox view.
    pub mailbox: Arc<str>,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// Fixed bookkeeping cost per entry, on top of the summary's own heap.
const ENTRY_OVERHEAD_BYTES: usize = 128;

pub struct SummaryCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Arc<Summary>>,
    order: VecDeque<Key>,
    bytes: usize,
}

impl SummaryCache {
    /// A cache holding at most `budget` bytes (0 disables caching).
    pub fn new(budget: u64) -> Self {
        Self { budget: usize::try_from(budget).unwrap_or(usize::MAX), inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Summary>> {
        self.lock().map.get(key).cloned()
    }

    /// Returns the cached summary, or computes it from `message` (outside
    /// the lock) and remembers it.
    pub fn get_or_insert(&self, key: Key, message: impl FnOnce() -> Option<Arc<[u8]>>) -> Option<Arc<Summary>> {
        if let Some(s) = self.get(&key) {
            return Some(s);
        }
        let summary = Arc::new(crate::mime::summarize(&message()?));
        self.insert(key, Arc::clone(&summary));
        Some(summary)
    }

    pub fn insert(&self, key: Key, summary: Arc<Summary>) {
        let cost = summary.approx_heap_size() + ENTRY_OVERHEAD_BYTES;
        if cost > self.budget {
            return;
        }
        let mut inner = self.lock();
        if inner.map.contains_key(&key) {
            return;
        }
        while inner.bytes + cost > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(s) = inner.map.remove(&old) {
                inner.bytes -= s.approx_heap_size() + ENTRY_OVERHEAD_BYTES;
            }
        }
        inner.bytes += cost;
        inner.order.push_back(key.clone());
        inner.map.insert(key, summary);
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}
