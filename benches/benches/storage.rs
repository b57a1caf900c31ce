//! The storage hot path of an accepted message:
//! - `journal/append`: `Journal::append` of 1, 16 or 64 records of 4 KB
//!   (one write + one fdatasync per call: the group commit), so the
//!   per-record cost shows how much batching buys on this disk;
//! - `maildir/deliver`: `varan_storage::maildir::deliver` of 4 KB and
//!   64 KB (tmp/ file, write, rename into new/, no fsync — the journal
//!   covers it).
//!
//! Everything happens in a scratch directory under cargo's target tmp dir
//! (a real disk; set VARAN_BENCH_TMPDIR to measure another file system).
//! Files stay until the end (see `maildir`); the scratch directory is
//! removed when the benchmark exits.

use std::fs;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use varan_benches::{message, ScratchDir};
use varan_storage::maildir::create_maildir;
use varan_storage::{deliver, Content, Delivery, Journal, JournalRecord};

const PREFIX: &[u8] = b"Return-Path: <sender@example.org>\nDelivered-To: u42@bench.test\nReceived: from client.example.org (client.example.org [127.0.0.1])\n\tby mail.bench.test (Varan) with ESMTP id Q1\n\tfor <u42@bench.test>; Mon, 23 Nov 2026 12:00:00 +0000\n";

fn journal(c: &mut Criterion) {
    let scratch = ScratchDir::new("journal");
    let maildir = scratch.path().join("mail/bench.test/u42");
    let (mut journal, leftover) = Journal::open(&scratch.path().join("journal")).expect("open journal");
    assert!(leftover.is_empty());
    let content = message(4096, 9).lf;
    let mut seq = 0u64;
    let mut record = |journal: &mut Journal| {
        seq += 1;
        JournalRecord {
            id: journal.next_id(),
            deliveries: vec![Delivery { path: maildir.join(format!("new/1795000000.M{seq}P1Q0_{seq}.mail.bench.test,S=4096,W=4180")), prefix: PREFIX.to_vec() }],
            content: Content::Inline(content.clone()),
            outbound: None,
        }
    };
    let mut g = c.benchmark_group("journal/append_4KB");
    g.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for per_commit in [1usize, 16, 64] {
        g.throughput(Throughput::Elements(per_commit as u64));
        g.bench_function(BenchmarkId::new("records_per_fdatasync", per_commit), |b| {
            b.iter_custom(|iters| {
                let batches: Vec<Vec<JournalRecord>> = (0..iters).map(|_| (0..per_commit).map(|_| record(&mut journal)).collect()).collect();
                let start = Instant::now();
                for batch in &batches {
                    journal.append(batch).expect("journal append");
                }
                let took = start.elapsed();
                // Outside the measurement: drop the segment so the journal
                // does not grow without bound across samples.
                let closed = journal.rotate().expect("rotate");
                journal.retire(closed).expect("retire");
                took
            });
        });
    }
    g.finish();
}

fn maildir(c: &mut Criterion) {
    let scratch = ScratchDir::new("maildir");
    let mut g = c.benchmark_group("maildir/deliver");
    g.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let mut seq = 0u64;
    let mut sample = 0u64;
    for (label, size) in [("4KB", 4 << 10), ("64KB", 64 << 10)] {
        let content = Content::Inline(message(size, 11).lf);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                // A fresh mailbox per sample, and nothing deleted until the
                // end: on ext4 without a journal, inodes freed in the last
                // minutes make every new inode allocation scan past them
                // (fs/ext4/ialloc.c recently_deleted), and very large
                // directories are slow without dir_index. Both would
                // measure the file system's history, not `deliver`.
                sample += 1;
                let dir = scratch.path().join(format!("bench.test/u{sample}"));
                create_maildir(&dir).expect("create maildir");
                let targets: Vec<Delivery> = (0..iters)
                    .map(|_| {
                        seq += 1;
                        Delivery { path: dir.join(format!("new/1795000000.M{seq}P1Q0_{seq}.mail.bench.test,S={size}")), prefix: PREFIX.to_vec() }
                    })
                    .collect();
                let start = Instant::now();
                for t in &targets {
                    deliver(t, &content).expect("deliver");
                }
                let took = start.elapsed();
                let left = fs::read_dir(dir.join("tmp")).expect("tmp/").count();
                assert_eq!(left, 0, "deliver left files in tmp/");
                took
            });
        });
    }
    g.finish();
}

criterion_group!(benches, journal, maildir);
criterion_main!(benches);
