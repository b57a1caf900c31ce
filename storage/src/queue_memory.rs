//! An in-memory [`QueueStore`]: for tests of the queue runner and the CLI
//! that must not depend on the file-backed store's layout. Same contract,
//! nothing durable. A `Mutex` is fine here: it is never on a hot path.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use varan_core::queue::{ContentReader, QueueEntry, QueueError, QueueId, QueueState, QueueStore, QueueTotals};

#[derive(Debug, Default)]
pub struct MemoryQueue {
    inner: Mutex<BTreeMap<QueueId, (QueueEntry, Vec<u8>)>>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<QueueId, (QueueEntry, Vec<u8>)>> {
        // A panic in another test thread while holding the lock leaves the
        // map consistent (every method changes it in one step).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every entry, removed ones excluded (tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored content of an entry (tests).
    pub fn content_bytes(&self, id: QueueId) -> Option<Vec<u8>> {
        self.lock().get(&id).map(|(_, c)| c.clone())
    }
}

fn in_partition(id: QueueId, (k, n): (usize, usize)) -> bool {
    n == 0 || id.0 % n as u64 == k as u64
}

impl QueueStore for MemoryQueue {
    fn due(&self, partition: (usize, usize), now: u64, limit: usize) -> Result<Vec<QueueEntry>, QueueError> {
        let map = self.lock();
        let mut due: Vec<QueueEntry> = map.values().filter(|(e, _)| in_partition(e.id, partition) && e.next_attempt <= now && !e.finished()).map(|(e, _)| e.clone()).collect();
        due.sort_by_key(|e| (e.queued_at, e.id));
        due.truncate(limit);
        Ok(due)
    }

    fn next_due(&self, partition: (usize, usize)) -> Result<Option<u64>, QueueError> {
        Ok(self.lock().values().filter(|(e, _)| in_partition(e.id, partition) && !e.finished()).map(|(e, _)| e.next_attempt).min())
    }

    fn content(&self, id: QueueId) -> Result<ContentReader, QueueError> {
        let bytes = self.lock().get(&id).map(|(_, c)| c.clone()).ok_or(QueueError::NotFound(id))?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn update(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        let mut map = self.lock();
        let Some(slot) = map.get_mut(&entry.id) else {
            return Err(QueueError::NotFound(entry.id));
        };
        if entry.finished() {
            map.remove(&entry.id);
        } else {
            slot.0 = entry.clone();
        }
        Ok(())
    }

    fn enqueue(&self, entry: &QueueEntry, content: &[u8]) -> Result<(), QueueError> {
        let mut map = self.lock();
        if map.contains_key(&entry.id) {
            return Err(QueueError::Io(format!("queue id {} already in use", entry.id)));
        }
        map.insert(entry.id, (entry.clone(), content.to_vec()));
        Ok(())
    }

    fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        Ok(self.lock().values().map(|(e, _)| e.clone()).collect())
    }

    fn totals(&self) -> Result<QueueTotals, QueueError> {
        let mut t = QueueTotals::default();
        for (e, c) in self.lock().values() {
            match e.state() {
                QueueState::New => t.new += 1,
                QueueState::Deferred => t.deferred += 1,
            }
            t.bytes += c.len() as u64;
        }
        Ok(t)
    }

    fn get(&self, id: QueueId) -> Result<QueueEntry, QueueError> {
        self.lock().get(&id).map(|(e, _)| e.clone()).ok_or(QueueError::NotFound(id))
    }

    fn retry(&self, id: QueueId) -> Result<(), QueueError> {
        let mut map = self.lock();
        let (e, _) = map.get_mut(&id).ok_or(QueueError::NotFound(id))?;
        e.next_attempt = 0;
        Ok(())
    }

    fn retry_all(&self) -> Result<u64, QueueError> {
        let mut map = self.lock();
        for (e, _) in map.values_mut() {
            e.next_attempt = 0;
        }
        Ok(map.len() as u64)
    }

    fn delete(&self, id: QueueId) -> Result<(), QueueError> {
        self.lock().remove(&id).map(|_| ()).ok_or(QueueError::NotFound(id))
    }

    fn delete_deferred(&self) -> Result<u64, QueueError> {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, (e, _)| e.attempts == 0);
        Ok((before - map.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varan_core::queue::{BodyInfo, Notify, QueuedRecipient, RecipientState, Ret};

    fn entry(id: u64, next: u64) -> QueueEntry {
        QueueEntry {
            id: QueueId(id),
            sender: "s@a".into(),
            recipients: vec![QueuedRecipient { address: "r@b".into(), orcpt: None, notify: Notify::default(), state: RecipientState::Pending, last_error: None }],
            envid: None,
            ret: Ret::Headers,
            body: BodyInfo::default(),
            submitter: None,
            queued_at: id,
            next_attempt: next,
            attempts: 0,
            delay_warned: false,
        }
    }

    #[test]
    fn partitions_due_update_and_management() {
        let q = MemoryQueue::new();
        for id in 0..6 {
            q.enqueue(&entry(id, id * 10), b"x").unwrap();
        }
        assert!(q.enqueue(&entry(1, 0), b"y").is_err());
        let due: Vec<u64> = q.due((1, 2), 30, 10).unwrap().iter().map(|e| e.id.0).collect();
        assert_eq!(due, vec![1, 3]);
        assert_eq!(q.next_due((0, 2)).unwrap(), Some(0));
        assert_eq!(q.due((0, 1), 100, 2).unwrap().len(), 2);

        let mut e = q.get(QueueId(3)).unwrap();
        e.attempts = 1;
        e.next_attempt = 500;
        q.update(&e).unwrap();
        assert_eq!(q.totals().unwrap(), QueueTotals { new: 5, deferred: 1, bytes: 6 });
        e.recipients[0].state = RecipientState::Delivered { at: 1, reply: "250 ok".into() };
        q.update(&e).unwrap();
        assert!(matches!(q.get(QueueId(3)), Err(QueueError::NotFound(_))));
        assert!(matches!(q.update(&e), Err(QueueError::NotFound(_))));

        let mut e = q.get(QueueId(5)).unwrap();
        e.attempts = 2;
        q.update(&e).unwrap();
        assert_eq!(q.delete_deferred().unwrap(), 1);
        q.retry(QueueId(4)).unwrap();
        assert_eq!(q.get(QueueId(4)).unwrap().next_attempt, 0);
        q.delete(QueueId(4)).unwrap();
        assert_eq!(q.len(), 3);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut q.content(QueueId(0)).unwrap(), &mut s).unwrap();
        assert_eq!(s, "x");
    }
}
