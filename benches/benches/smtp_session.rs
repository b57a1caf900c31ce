//! SMTP command parsing and DATA streaming through the sans-IO
//! `varan_protocols::smtp::Session`, driven the way the shard driver does
//! (answer every action, present input in 16 KiB reads or all at once).
//! Throughput is in bytes of client input.

use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use varan_benches::{drive, message, pipelined_commands, pipelined_transaction, session_config};

/// The shard driver's read size (`shards/src/smtp.rs`, `READ_CHUNK`).
const DRIVER_READ: usize = 16 << 10;

fn transaction(c: &mut Criterion) {
    let config = Rc::new(session_config());
    let mut g = c.benchmark_group("smtp_session/transaction");
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (label, size) in [("4KB", 4 << 10), ("1MB", 1 << 20)] {
        let msg = message(size, 1);
        let input = pipelined_transaction(&msg, 1);
        // Sanity check once, outside the measurement: one message stored
        // with exactly the LF content.
        let (mut sink, mut out) = (Vec::with_capacity(size), Vec::with_capacity(4096));
        let st = drive(&config, &input, DRIVER_READ, &mut sink, &mut out);
        assert!(st.messages == 1 && st.closed && sink == msg.lf, "transaction not accepted: {st:?}");
        g.throughput(Throughput::Bytes(input.len() as u64));
        // A 4 KB transaction fits one 16 KiB read, so "whole" only differs
        // for the 1 MB message.
        let reads: &[(&str, usize)] = if input.len() > DRIVER_READ { &[("reads_16KiB", DRIVER_READ), ("whole", usize::MAX)] } else { &[("reads_16KiB", DRIVER_READ)] };
        for &(read_label, read) in reads {
            g.bench_with_input(BenchmarkId::new(label, read_label), &input, |b, input| {
                b.iter(|| drive(&config, black_box(input), read, &mut sink, &mut out));
            });
        }
    }
    g.finish();
}

fn commands(c: &mut Criterion) {
    let config = Rc::new(session_config());
    let mut g = c.benchmark_group("smtp_session/commands");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    // 100 envelopes of MAIL (SIZE, BODY, RET, ENVID) + 5 RCPT (NOTIFY,
    // ORCPT) + RSET: the command parser, path parser and reply writer.
    let (input, n) = pipelined_commands(100, 5);
    let (mut sink, mut out) = (Vec::new(), Vec::new());
    let st = drive(&config, &input, DRIVER_READ, &mut sink, &mut out);
    assert!(st.recipients == 500 && st.closed, "commands not accepted: {st:?}");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function(BenchmarkId::new("pipelined", format!("{n}_commands")), |b| {
        b.iter(|| drive(&config, black_box(&input), DRIVER_READ, &mut sink, &mut out));
    });
    g.finish();
}

criterion_group!(benches, transaction, commands);
criterion_main!(benches);
