//! Mailbox index lookups (issue 6) on a Maildir INBOX of 10,000 messages,
//! through the same store the IMAP and POP3 sessions use:
//! - `mailbox_index/open_cold`: a new store (nothing cached in memory)
//!   opens INBOX and answers STATUS — reads `varan-index` and
//!   `dovecot-uidlist` and lists `cur/` and `new/`, as the first SELECT
//!   after a restart does;
//! - `mailbox_index/status`, `uids`, `changes_since_10`: the lookups a
//!   SELECT, a `UID SEARCH ALL` and a CONDSTORE/QRESYNC resync make on an
//!   open mailbox;
//! - `mailbox_index/store_flag`: `+FLAGS (\Seen)` then `-FLAGS` on one
//!   message (index update, file renamed to its new info suffix);
//! - `mailbox_index/parse_index`, `parse_uidlist`: decoding the two files.
//!
//! The messages are appended once (without fsync) in a scratch directory
//! under cargo's target tmp dir (or VARAN_BENCH_TMPDIR), removed at exit.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use varan_benches::{message, ScratchDir};
use varan_core::mailstore::{Flag, FlagOp, MailStore, Mailbox};
use varan_core::EmailAddress;
use varan_storage::mailstore::{index, uidlist, MaildirMailbox, MaildirStore, MaildirStoreOptions};
use varan_storage::{MaildirLayout, SpecialFolders};

const MESSAGES: usize = 10_000;

fn store(root: &std::path::Path) -> MaildirStore {
    let mut layout = MaildirLayout::new(root.to_path_buf(), SpecialFolders::default());
    layout.host = "bench.example.org".into();
    MaildirStore::new(layout, MaildirStoreOptions { fsync: false, ..MaildirStoreOptions::default() })
}

fn inbox(store: &MaildirStore, account: &EmailAddress) -> Arc<dyn Mailbox> {
    store.user(account).expect("user").open("INBOX").expect("open INBOX")
}

fn mailbox_index(c: &mut Criterion) {
    let scratch = ScratchDir::new("mailbox-index");
    let account = EmailAddress::parse("u1@bench.test").expect("address");
    let seeded = store(scratch.path());
    let mbox = inbox(&seeded, &account);
    let msg = message(2048, 3).lf;
    for i in 0..MESSAGES {
        let flags: &[Flag] = if i % 3 == 0 { &[Flag::Seen] } else { &[] };
        mbox.append(&msg, flags, None).expect("append");
    }
    mbox.sync().expect("sync");
    let uids = mbox.uids().expect("uids");
    assert_eq!(uids.len(), MESSAGES);
    // The index on disk, as a restart finds it.
    mbox.as_any().downcast_ref::<MaildirMailbox>().expect("a Maildir mailbox").flush_index().expect("flush index");

    let mut g = c.benchmark_group("mailbox_index");
    g.throughput(Throughput::Elements(1));
    g.bench_function("open_cold", |b| {
        b.iter(|| {
            let fresh = store(scratch.path());
            let status = inbox(&fresh, &account).status().expect("status");
            assert_eq!(status.messages as usize, MESSAGES);
        })
    });
    g.bench_function("status", |b| b.iter(|| mbox.status().expect("status")));
    g.bench_function("uids", |b| b.iter(|| mbox.uids().expect("uids").len()));
    let high = mbox.status().expect("status").highest_modseq;
    g.bench_function("changes_since_10", |b| b.iter(|| mbox.changes_since(high.saturating_sub(10)).expect("changes")));
    let target = [uids[MESSAGES / 2]];
    g.bench_function("store_flag", |b| {
        b.iter(|| {
            mbox.store(&target, FlagOp::Add, &[Flag::Flagged], None).expect("store +");
            mbox.store(&target, FlagOp::Remove, &[Flag::Flagged], None).expect("store -");
        })
    });
    let dir = scratch.path().join("bench.test/u1");
    let index_bytes = std::fs::read(find(&dir, "varan-index")).expect("varan-index");
    let uidlist_bytes = std::fs::read(find(&dir, "dovecot-uidlist")).expect("dovecot-uidlist");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("parse_index", |b| b.iter(|| index::IndexData::parse(&index_bytes).expect("parse index")));
    g.bench_function("parse_uidlist", |b| b.iter(|| uidlist::Uidlist::parse(&uidlist_bytes).expect("parse uidlist")));
    g.finish();
}

/// The first file named `name` below `dir` (the INBOX's Maildir root).
fn find(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == name) {
                return p;
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    panic!("no {name} below {}", dir.display());
}

criterion_group!(benches, mailbox_index);
criterion_main!(benches);
