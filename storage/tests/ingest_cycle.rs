//! The ingest cycle as the shard runtime drives it, through the public API
//! only: receive into a spool, group-commit a batch to the journal, deliver
//! without fsync, checkpoint (rotate, syncfs, retire), crash, recover.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use varan_core::config::StorageConfig;
use varan_core::directory::{Directory, Resolution};
use varan_core::EmailAddress;
use varan_storage::maildir::crlf_size;
use varan_storage::recovery::Mode;
use varan_storage::{deliver, is_delivered, quota_usage, redeliver, Content, Delivery, FsSyncer, Journal, JournalRecord, JsonDirectory, MaildirLayout, Spool};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("varan-storage-it-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds the record for one accepted message, as the SMTP layer would.
fn accept(layout: &MaildirLayout, journal: &mut Journal, dir: &JsonDirectory, rcpt: &str, body: &[u8], memory_max: usize) -> JournalRecord {
    let mut spool = Spool::new(journal.spool_dir(), memory_max);
    for chunk in body.chunks(1000) {
        spool.write(chunk).unwrap();
    }
    let (len, newlines) = (spool.len(), spool.newlines());
    let content = spool.finish().unwrap();
    let id = journal.next_id();
    let Some(Resolution::Local(accounts)) = dir.lookup(&EmailAddress::parse(rcpt).unwrap()).unwrap() else { panic!("{rcpt} not local") };
    let deliveries = accounts
        .iter()
        .map(|a| {
            let user_dir = layout.ensure_user(&a.address).unwrap();
            let prefix = format!("Delivered-To: {}\n", a.address).into_bytes();
            let lf = prefix.len() as u64 + len;
            let name = layout.new_message_name(0, id, lf, crlf_size(lf, newlines + 1), SystemTime::now());
            Delivery { path: layout.delivery_path(&user_dir, None, &name).unwrap(), prefix }
        })
        .collect();
    JournalRecord { id, deliveries, content, outbound: None }
}

fn files_in(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn accept_commit_deliver_checkpoint_crash_recover() {
    let t = TempDir::new("cycle");
    let config = StorageConfig { maildir_root: t.0.join("mail"), ..StorageConfig::default() };
    fs::create_dir_all(&config.maildir_root).unwrap();
    let layout = MaildirLayout::from_config(&config);
    let syncer = FsSyncer::open(&config.maildir_root).unwrap();
    let users =
        JsonDirectory::from_json(r#"{"users":[{"login":"u1"},{"login":"u2"}],"groups":[{"name":"all","address":"all","members":["u1","u2"]}]}"#, "a.test", "masters").unwrap();
    let jdir = t.0.join("journal/shard-0");
    let (mut journal, old) = Journal::open(&jdir).unwrap();
    assert!(old.is_empty());

    // Batch 1: two messages, one group commit, then delivery.
    let small = accept(&layout, &mut journal, &users, "u1@a.test", b"Subject: one\n\nhi\n", 1 << 10);
    let large = accept(&layout, &mut journal, &users, "all@a.test", &vec![b'x'; 50_000], 1 << 10);
    assert!(matches!(large.content, Content::Spooled(_)));
    journal.append(&[small.clone(), large.clone()]).unwrap();
    for r in [&small, &large] {
        for d in &r.deliveries {
            deliver(d, &r.content).unwrap();
        }
    }
    // Checkpoint.
    let closed = journal.rotate().unwrap();
    syncer.sync().unwrap();
    journal.retire(closed).unwrap();
    assert_eq!(files_in(journal.spool_dir()), 0, "spool file of a retired record kept");

    // Batch 2 is committed, then the process dies before delivering it.
    let lost = accept(&layout, &mut journal, &users, "u2@a.test", b"Subject: two\n\nafter the checkpoint\n", 1 << 10);
    journal.append(std::slice::from_ref(&lost)).unwrap();
    drop(journal);

    let (mut journal, pending) = Journal::open(&jdir).unwrap();
    assert_eq!(pending, vec![lost.clone()], "only the undelivered batch is replayed");
    let report = redeliver(&pending, Mode::Check);
    assert!(report.is_complete());
    assert_eq!(report.delivered, 1);
    assert!(is_delivered(&lost.deliveries[0], &lost.content).unwrap());
    syncer.sync().unwrap();
    journal.retire(journal.recovered_upto().unwrap()).unwrap();

    let u1 = layout.user_dir(&EmailAddress::parse("u1@a.test").unwrap());
    let u2 = layout.user_dir(&EmailAddress::parse("u2@a.test").unwrap());
    assert_eq!(files_in(&u1.join("new")), 2);
    assert_eq!(files_in(&u2.join("new")), 2);
    // The quota scan reads the S= sizes from the names written above.
    let (bytes, count) = quota_usage(&u2).unwrap();
    assert_eq!(count, 2);
    let on_disk: u64 = fs::read_dir(u2.join("new")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(bytes, on_disk);
}
