//! Address handling on the RCPT path: parsing `local@domain`
//! (`varan_core::EmailAddress::parse`) and resolving a recipient in a JSON
//! user database of 1,000 users (`JsonDirectory` behind the `Directory`
//! trait), as the shard does for every RCPT TO.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use varan_benches::SplitMix;
use varan_core::directory::Directory;
use varan_core::EmailAddress;
use varan_storage::JsonDirectory;

fn addresses() -> Vec<String> {
    let mut rng = SplitMix::new(3);
    let domains = ["bench.test", "Bench.Test", "mail.example.org", "sub.domain.example.co.uk", "xn--bcher-kva.example"];
    (0..1000)
        .map(|i| {
            let d = domains[rng.below(domains.len() as u64) as usize];
            match i % 4 {
                0 => format!("u{}@{d}", rng.below(1000)),
                1 => format!("first.last+tag{i}@{d}"),
                2 => format!("  Some_User-{i}@{d} "),
                _ => format!("a{i}.b.c.d!#$%&'*+-/=?^_`{{|}}~@{d}"),
            }
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let input = addresses();
    for a in &input {
        EmailAddress::parse(a).unwrap_or_else(|e| panic!("{a}: {e}"));
    }
    let mut g = c.benchmark_group("address");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("parse_1000", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for a in &input {
                ok += EmailAddress::parse(black_box(a)).is_ok() as usize;
            }
            ok
        })
    });

    let users: Vec<String> = (0..1000).map(|i| format!(r#"{{"login":"u{i}","password":"{{PLAIN}}pw"}}"#)).collect();
    let json = format!(r#"{{"users":[{}],"groups":[]}}"#, users.join(","));
    let dir = JsonDirectory::from_json(&json, "bench.test", "masters").expect("user database");
    let mut rng = SplitMix::new(5);
    // Four in five recipients exist, one in five is unknown.
    let rcpts: Vec<EmailAddress> = (0..1000)
        .map(|i| {
            let local = if i % 5 == 4 { format!("nobody{i}") } else { format!("U{}", rng.below(1000)) };
            EmailAddress::new(&local, "Bench.Test").expect("address")
        })
        .collect();
    let found = rcpts.iter().filter(|a| matches!(dir.lookup(a), Ok(Some(_)))).count();
    assert_eq!(found, 800, "lookup results changed");
    g.bench_function("lookup_1000_in_1000_users", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for a in &rcpts {
                hits += matches!(dir.lookup(black_box(a)), Ok(Some(_))) as usize;
            }
            hits
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
