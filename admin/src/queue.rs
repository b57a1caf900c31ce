//! `varan queue summary|list|show|retry|delete`: the outbound queue of a
//! node (seed 002 §6.2.6.2: totals new/deferred, the list with sender,
//! recipients, queued at, next attempt; flush, delete deferred, clear).
//!
//! Works while the server runs: it goes through the same files with the
//! same atomic renames as the runners (`varan_storage::queue`). Only
//! entries handed to the runners are shown; a message accepted less than
//! one `storage.checkpoint_interval` ago is not listed yet.

use crate::AdminError;
use std::fmt::Write as _;
use varan_core::config::Config;
use varan_core::queue::{QueueEntry, QueueError, QueueId, QueueState, QueueStore, RecipientState};
use varan_storage::FileQueue;

/// Opens the queue of the configured data directory.
pub fn open(config: &Config) -> Result<FileQueue, AdminError> {
    let root = varan_storage::queue_dir(&config.server.data_dir);
    FileQueue::open(&root).map_err(|e| AdminError::io(&root, e))
}

fn err(e: QueueError) -> AdminError {
    AdminError::Invalid(e.to_string())
}

/// Parses a queue id as listed (16 hex digits; shorter hex is accepted).
pub fn parse_id(text: &str) -> Result<QueueId, AdminError> {
    let t = text.trim();
    if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError::Invalid(format!("{text:?} is not a queue id (up to 16 hex digits)")));
    }
    u64::from_str_radix(t, 16).map(QueueId).map_err(|_| AdminError::Invalid(format!("{text:?} is not a queue id")))
}

fn time(secs: u64) -> String {
    varan_core::datetime::rfc5322(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn state_name(e: &QueueEntry) -> &'static str {
    match e.state() {
        QueueState::New => "new",
        QueueState::Deferred => "deferred",
    }
}

fn sender(e: &QueueEntry) -> &str {
    if e.sender.is_empty() {
        "<>"
    } else {
        &e.sender
    }
}

/// `Total`, `New`, `Deferred` and the bytes they hold.
pub fn summary(q: &dyn QueueStore) -> Result<String, AdminError> {
    let t = q.totals().map_err(err)?;
    Ok(format!("total: {}\nnew: {}\ndeferred: {}\nbytes: {}\n", t.new + t.deferred, t.new, t.deferred, t.bytes))
}

/// One block per entry, oldest first: id, state, size, sender, queued
/// at, next attempt, then each pending recipient with its last error.
pub fn list(q: &dyn QueueStore) -> Result<String, AdminError> {
    let mut out = String::new();
    for e in q.list().map_err(err)? {
        let next = if e.next_attempt == 0 { "now".to_owned() } else { time(e.next_attempt) };
        let _ = writeln!(out, "{} {} {} bytes from {} queued {} next {} attempts {}", e.id, state_name(&e), e.body.size, sender(&e), time(e.queued_at), next, e.attempts);
        for r in e.pending() {
            match &r.last_error {
                Some(why) => {
                    let _ = writeln!(out, "    {} ({why})", r.address);
                }
                None => {
                    let _ = writeln!(out, "    {}", r.address);
                }
            }
        }
    }
    Ok(out)
}

/// Everything known about one entry.
pub fn show(q: &dyn QueueStore, id: QueueId) -> Result<String, AdminError> {
    let e = q.get(id).map_err(err)?;
    let mut out = String::new();
    let _ = writeln!(out, "id: {}\nstate: {}\nsender: {}\nsize: {}", e.id, state_name(&e), sender(&e), e.body.size);
    let _ = writeln!(out, "queued: {}\nnext attempt: {}\nattempts: {}", time(e.queued_at), if e.next_attempt == 0 { "now".into() } else { time(e.next_attempt) }, e.attempts);
    if let Some(s) = &e.submitter {
        let _ = writeln!(out, "submitter: {s}");
    }
    if let Some(envid) = &e.envid {
        let _ = writeln!(out, "envid: {envid}");
    }
    let _ = writeln!(out, "ret: {:?}\n8bit: {}\nsmtputf8: {}", e.ret, e.body.eight_bit, e.body.smtputf8);
    for r in &e.recipients {
        let state = match &r.state {
            RecipientState::Pending => "pending".to_owned(),
            RecipientState::Delivered { at, reply } => format!("delivered {} ({reply})", time(*at)),
            RecipientState::Failed { at, status, diagnostic } => format!("failed {} {status} ({diagnostic})", time(*at)),
        };
        let _ = writeln!(out, "recipient: {} {state}", r.address);
        if let Some(o) = &r.orcpt {
            let _ = writeln!(out, "    orcpt: {o}");
        }
        if let Some(why) = &r.last_error {
            let _ = writeln!(out, "    last error: {why}");
        }
    }
    Ok(out)
}

pub fn retry(q: &dyn QueueStore, id: QueueId) -> Result<(), AdminError> {
    q.retry(id).map_err(err)
}

pub fn retry_all(q: &dyn QueueStore) -> Result<u64, AdminError> {
    q.retry_all().map_err(err)
}

pub fn delete(q: &dyn QueueStore, id: QueueId) -> Result<(), AdminError> {
    q.delete(id).map_err(err)
}

pub fn delete_deferred(q: &dyn QueueStore) -> Result<u64, AdminError> {
    q.delete_deferred().map_err(err)
}

/// Clears the queue (every entry, without DSNs).
pub fn delete_all(q: &dyn QueueStore) -> Result<u64, AdminError> {
    let mut n = 0;
    for e in q.list().map_err(err)? {
        match q.delete(e.id) {
            Ok(()) => n += 1,
            Err(QueueError::NotFound(_)) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use varan_core::queue::{BodyInfo, Notify, QueuedRecipient, Ret};

    fn entry(id: u64, attempts: u32) -> QueueEntry {
        QueueEntry {
            id: QueueId(id),
            sender: String::new(),
            recipients: vec![QueuedRecipient {
                address: "bob@remote.example".into(),
                orcpt: None,
                notify: Notify::default(),
                state: RecipientState::Pending,
                last_error: (attempts > 0).then(|| "451 4.7.1 later".into()),
            }],
            envid: None,
            ret: Ret::Headers,
            body: BodyInfo { eight_bit: false, smtputf8: false, size: 10 },
            submitter: Some("alice@example.org".into()),
            queued_at: 1_795_446_245,
            next_attempt: if attempts > 0 { 1_795_446_845 } else { 0 },
            attempts,
            delay_warned: false,
        }
    }

    #[test]
    fn commands_against_a_queue() {
        let dir = std::env::temp_dir().join(format!("varan-admin-queue-{}", std::process::id()));
        let q = FileQueue::open(&dir).unwrap();
        q.enqueue(&entry(1, 0), b"a\n").unwrap();
        q.enqueue(&entry(2, 3), b"b\n").unwrap();
        assert_eq!(summary(&q).unwrap(), "total: 2\nnew: 1\ndeferred: 1\nbytes: 20\n");
        let text = list(&q).unwrap();
        assert!(text.contains("0000000000000001 new 10 bytes from <> queued Mon, 23 Nov 2026 15:04:05 +0000 next now attempts 0\n    bob@remote.example\n"), "{text}");
        assert!(text.contains("0000000000000002 deferred"), "{text}");
        assert!(text.contains("    bob@remote.example (451 4.7.1 later)\n"), "{text}");
        assert!(show(&q, QueueId(2)).unwrap().contains("submitter: alice@example.org\n"));
        assert_eq!(parse_id("2").unwrap(), QueueId(2));
        assert!(parse_id("xyz").is_err() && parse_id("").is_err() && parse_id("00000000000000001").is_err());
        retry(&q, QueueId(2)).unwrap();
        assert_eq!(q.get(QueueId(2)).unwrap().next_attempt, 0);
        assert_eq!(delete_deferred(&q).unwrap(), 1);
        assert!(delete(&q, QueueId(2)).is_err());
        assert_eq!(delete_all(&q).unwrap(), 1);
        assert_eq!(summary(&q).unwrap(), "total: 0\nnew: 0\ndeferred: 0\nbytes: 0\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
