use super::format::tests::sample;
use super::*;
use crate::testutil::TempDir;
use std::sync::Arc;
use varan_core::queue::{QueueState, RecipientState};

fn queue(t: &TempDir) -> FileQueue {
    FileQueue::open(&queue_dir(t.path())).unwrap()
}

fn pending(id: u64) -> QueueEntry {
    let mut e = sample(id);
    e.attempts = 0;
    e.next_attempt = 0;
    for r in &mut e.recipients {
        r.state = RecipientState::Pending;
    }
    e
}

fn read_content(q: &FileQueue, id: QueueId) -> Vec<u8> {
    let mut out = Vec::new();
    q.content(id).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn incoming_is_invisible_until_activated() {
    let t = TempDir::new();
    let q = queue(&t);
    let e = pending(0x10_0000);
    q.write_incoming(&e, b"Received: x\n", &Content::Inline(b"body\n".to_vec())).unwrap();
    // Replay writes the same entry again: harmless.
    q.write_incoming(&e, b"Received: x\n", &Content::Inline(b"body\n".to_vec())).unwrap();
    assert!(q.list().unwrap().is_empty());
    assert_eq!(q.get(e.id), Err(QueueError::NotFound(e.id)));
    assert_eq!(q.activate(&[e.id, QueueId(99)]).unwrap(), 1);
    assert_eq!(q.list().unwrap(), vec![e.clone()]);
    assert_eq!(read_content(&q, e.id), b"Received: x\nbody\n");
    // A replay after activation must not create a second copy.
    q.write_incoming(&e, b"", &Content::Inline(b"other\n".to_vec())).unwrap();
    assert!(names(&q.root().join(INCOMING)).is_empty());
    assert_eq!(read_content(&q, e.id), b"Received: x\nbody\n");
    assert!(names(&q.root().join(TMP)).is_empty());
}

#[test]
fn spooled_content_is_linked_or_copied_and_survives_the_spool() {
    let t = TempDir::new();
    let q = queue(&t);
    let spool = t.path().join("s.msg");
    fs::write(&spool, b"big body\n").unwrap();
    q.write_incoming(&pending(1 << 16), b"", &Content::Spooled(spool.clone())).unwrap();
    q.write_incoming(&pending(2 << 16), b"Received: y\n", &Content::Spooled(spool.clone())).unwrap();
    fs::remove_file(&spool).unwrap(); // the journal retires its spool file
    q.activate_all().unwrap();
    assert_eq!(read_content(&q, QueueId(1 << 16)), b"big body\n");
    assert_eq!(read_content(&q, QueueId(2 << 16)), b"Received: y\nbig body\n");
}

#[test]
fn partitions_split_the_queue_without_overlap() {
    let t = TempDir::new();
    let q = queue(&t);
    for i in 0..20u64 {
        let mut e = pending(i);
        e.queued_at = 1000 - i; // newest id is oldest
        q.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    }
    q.activate_all().unwrap();
    let mut seen = Vec::new();
    for k in 0..3 {
        let part = q.due((k, 3), 10, 100).unwrap();
        assert!(part.iter().all(|e| e.id.0 % 3 == k as u64));
        assert!(part.windows(2).all(|w| w[0].queued_at <= w[1].queued_at), "not oldest first");
        seen.extend(part.into_iter().map(|e| e.id.0));
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    assert_eq!(q.due((0, 3), 10, 2).unwrap().len(), 2);
    assert!(q.due((3, 3), 10, 1).is_err());
    assert!(q.due((0, 0), 10, 1).is_err());
}

#[test]
fn scheduling_update_and_finish() {
    let t = TempDir::new();
    let q = queue(&t);
    let mut e = pending(5);
    q.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    q.activate_all().unwrap();
    e.attempts = 1;
    e.next_attempt = 500;
    e.recipients[0].last_error = Some("451 try later".into());
    q.update(&e).unwrap();
    assert!(q.due((0, 1), 499, 10).unwrap().is_empty());
    assert_eq!(q.due((0, 1), 500, 10).unwrap(), vec![e.clone()]);
    assert_eq!(q.next_due((0, 1)).unwrap(), Some(500));
    assert_eq!(q.get(e.id).unwrap().state(), QueueState::Deferred);
    assert_eq!(q.totals().unwrap(), QueueTotals { new: 0, deferred: 1, bytes: e.body.size });
    q.retry(e.id).unwrap();
    assert_eq!(q.get(e.id).unwrap().next_attempt, 0);
    for r in &mut e.recipients {
        r.state = RecipientState::Delivered { at: 9, reply: "250 ok".into() };
    }
    q.update(&e).unwrap();
    assert_eq!(q.get(e.id), Err(QueueError::NotFound(e.id)));
    assert!(names(&q.root().join(CONTENT)).is_empty());
    assert!(names(&q.root().join(ACTIVE)).is_empty());
}

#[test]
fn update_of_a_deleted_entry_does_not_resurrect_it() {
    let t = TempDir::new();
    let q = queue(&t);
    let mut e = pending(6);
    q.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    q.activate_all().unwrap();
    q.delete(e.id).unwrap();
    e.attempts = 1;
    assert_eq!(q.update(&e), Err(QueueError::NotFound(e.id)));
    assert_eq!(q.retry(e.id), Err(QueueError::NotFound(e.id)));
    assert_eq!(q.delete(e.id), Err(QueueError::NotFound(e.id)));
    assert!(names(&q.root().join(ACTIVE)).is_empty());
    assert!(names(&q.root().join(TMP)).is_empty());
}

#[test]
fn delete_racing_runner_updates_stays_deleted() {
    for round in 0..20u64 {
        let t = TempDir::new();
        let q = Arc::new(queue(&t));
        let e = pending(round);
        q.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
        q.activate_all().unwrap();
        let runner = {
            let (q, mut e) = (Arc::clone(&q), e.clone());
            std::thread::spawn(move || loop {
                e.attempts += 1;
                match q.update(&e) {
                    Ok(()) => continue,
                    Err(QueueError::NotFound(_)) => return e.attempts,
                    Err(err) => panic!("{err}"),
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_micros(200));
        q.delete(e.id).unwrap();
        assert!(runner.join().unwrap() > 0);
        assert_eq!(q.get(e.id), Err(QueueError::NotFound(e.id)));
        assert!(names(&q.root().join(ACTIVE)).is_empty(), "round {round}: deleted entry came back");
    }
}

#[test]
fn retry_racing_runner_updates_never_rolls_back_results() {
    let t = TempDir::new();
    let q = Arc::new(queue(&t));
    let e = pending(7);
    q.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    q.activate_all().unwrap();
    const UPDATES: u32 = 300;
    let runner = {
        let (q, mut e) = (Arc::clone(&q), e.clone());
        std::thread::spawn(move || {
            for i in 1..=UPDATES {
                e.attempts = i;
                e.next_attempt = 1_000_000;
                q.update(&e).unwrap();
            }
        })
    };
    let cli = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || {
            let mut ok = 0;
            for _ in 0..UPDATES {
                match q.retry(QueueId(7)) {
                    Ok(()) => ok += 1,
                    Err(QueueError::Io(_)) => {} // gave up: runner too busy
                    Err(e) => panic!("{e}"),
                }
            }
            ok
        })
    };
    runner.join().unwrap();
    assert!(cli.join().unwrap() > 0);
    // The runner's last write (attempts = UPDATES) is never undone by a
    // retry that read an older version.
    assert_eq!(q.get(QueueId(7)).unwrap().attempts, UPDATES);
}

#[test]
fn damaged_envelopes_are_reported_skipped_and_kept() {
    let t = TempDir::new();
    let q = queue(&t);
    for i in 1..=3u64 {
        q.write_incoming(&pending(i), b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    }
    q.activate_all().unwrap();
    let active = q.root().join(ACTIVE);
    let mut torn = fs::read(active.join(QueueId(2).to_string())).unwrap();
    torn.truncate(torn.len() / 2);
    fs::write(active.join(QueueId(2).to_string()), torn).unwrap();
    fs::write(active.join(QueueId(3).to_string()), fs::read(active.join(QueueId(1).to_string())).unwrap()).unwrap();
    fs::write(active.join("README"), b"not an entry").unwrap();
    let listed: Vec<u64> = q.list().unwrap().iter().map(|e| e.id.0).collect();
    assert_eq!(listed, vec![1]);
    let damaged = names(&q.root().join(DAMAGED));
    assert_eq!(damaged.len(), 4, "{damaged:?}"); // two envelopes, two contents
    assert!(damaged.iter().any(|n| n.starts_with("0000000000000002-")));
    assert_eq!(q.get(QueueId(2)), Err(QueueError::NotFound(QueueId(2))));
    // Garbage of every size never panics and is never listed.
    for len in [0usize, 1, 13, 4096] {
        fs::write(active.join(QueueId(9).to_string()), vec![0xffu8; len]).unwrap();
        assert!(matches!(q.get(QueueId(9)), Err(QueueError::Corrupt(_))));
    }
}

#[test]
fn startup_cleans_leftovers_only() {
    let t = TempDir::new();
    let q = queue(&t);
    q.write_incoming(&pending(1), b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    fs::write(q.content_path(QueueId(44)), b"orphan").unwrap();
    let stale = q.root().join(TMP).join("0000000000000001.1.1");
    let fresh = q.root().join(TMP).join("0000000000000001.1.2");
    fs::write(&stale, b"x").unwrap();
    fs::write(&fresh, b"x").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(TMP_STALE_SECS + 10);
    File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
    assert_eq!(q.activate_all().unwrap(), 1);
    assert_eq!(names(&q.root().join(CONTENT)), vec![QueueId(1).to_string()]);
    assert_eq!(names(&q.root().join(TMP)), vec!["0000000000000001.1.2".to_string()]);
}

#[test]
fn enqueue_is_visible_at_once_and_never_replaces() {
    let t = TempDir::new();
    let q = queue(&t);
    let e = pending(0xabc);
    q.enqueue(&e, b"dsn\n").unwrap();
    assert_eq!(q.get(e.id).unwrap(), e);
    assert_eq!(read_content(&q, e.id), b"dsn\n");
    assert!(q.enqueue(&e, b"again\n").is_err());
    assert_eq!(read_content(&q, e.id), b"dsn\n");
}

#[test]
fn management_counts() {
    let t = TempDir::new();
    let q = queue(&t);
    for i in 0..4u64 {
        let mut e = pending(i);
        e.attempts = u32::from(i >= 2);
        e.next_attempt = if i >= 2 { 900 } else { 0 };
        q.enqueue(&e, b"m\n").unwrap();
    }
    let t0 = q.totals().unwrap();
    assert_eq!((t0.new, t0.deferred), (2, 2));
    assert_eq!(q.retry_all().unwrap(), 4);
    assert!(q.list().unwrap().iter().all(|e| e.next_attempt == 0));
    assert_eq!(q.delete_deferred().unwrap(), 2);
    assert_eq!(q.list().unwrap().len(), 2);
    assert!(q.list().unwrap().iter().all(|e| e.state() == QueueState::New));
}

#[test]
fn management_changes_from_another_process_reach_the_runner_scan() {
    let t = TempDir::new();
    let server = queue(&t);
    let cli = queue(&t); // another FileQueue on the same directory, as `varan queue` is
    let mut entries = Vec::new();
    for id in 1..=50u64 {
        let mut e = pending(id);
        e.next_attempt = 10_000;
        server.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
        entries.push(e);
    }
    server.activate_all().unwrap();
    assert!(server.due((0, 1), 100, 100).unwrap().is_empty());
    // The runner's own writes are seen (from its cache) without a re-read.
    let mut e7 = entries[6].clone();
    e7.attempts = 3;
    e7.next_attempt = 50;
    server.update(&e7).unwrap();
    assert_eq!(server.due((0, 1), 100, 100).unwrap(), vec![e7.clone()]);
    // A retry from the CLI is seen by the next scan of every partition.
    for _ in 0..5 {
        cli.retry(QueueId(20)).unwrap();
        let due: Vec<u64> = server.due((0, 1), 100, 100).unwrap().iter().map(|e| e.id.0).collect();
        assert_eq!(due, vec![7, 20]);
        // Back to later, also by the CLI (a second change before any scan).
        cli.modify(QueueId(20), |e| e.next_attempt = 10_000).unwrap();
        cli.modify(QueueId(20), |e| e.next_attempt = 20_000).unwrap();
        assert_eq!(server.get(QueueId(20)).unwrap().next_attempt, 20_000);
        assert_eq!(server.due((0, 1), 100, 100).unwrap(), vec![e7.clone()]);
        assert_eq!(server.next_due((0, 1)).unwrap(), Some(50));
    }
    // Deleted by the CLI: gone from the scan.
    cli.delete(QueueId(7)).unwrap();
    assert!(server.due((0, 1), 100, 100).unwrap().is_empty());
    assert_eq!(server.next_due((0, 1)).unwrap(), Some(10_000));
}

#[test]
fn due_takes_the_oldest_within_the_limit() {
    let t = TempDir::new();
    let q = queue(&t);
    for id in 1..=30u64 {
        let mut e = pending(id);
        e.queued_at = 1_000 - id; // higher id = older
        e.next_attempt = if id % 3 == 0 { 5_000 } else { 0 };
        q.write_incoming(&e, b"", &Content::Inline(b"m\n".to_vec())).unwrap();
    }
    q.activate_all().unwrap();
    let ids: Vec<u64> = q.due((0, 1), 100, 5).unwrap().iter().map(|e| e.id.0).collect();
    assert_eq!(ids, vec![29, 28, 26, 25, 23]);
    assert!(q.due((0, 1), 100, 0).unwrap().is_empty());
    assert_eq!(q.due((0, 1), 100, 100).unwrap().len(), 20);
}
