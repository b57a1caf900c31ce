//! Password verification on AUTH: a full Argon2id check with Varan's
//! parameters (`varan_storage::password::verify`, ~20 ms of CPU by design)
//! against a hit in the per-shard `VerifyCache` that lets repeated logins
//! skip it, plus the cost of remembering a success.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use varan_core::directory::Account;
use varan_core::EmailAddress;
use varan_storage::password;
use varan_storage::VerifyCache;

fn verify(c: &mut Criterion) {
    let stored = password::hash("correct horse battery staple").expect("hash");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(password::verify(&stored, "correct horse battery staple"));
    assert!(!password::verify(&stored, "wrong"));

    let mut g = c.benchmark_group("password");
    g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    g.bench_function("argon2id_verify", |b| b.iter(|| password::verify(black_box(&stored), black_box("correct horse battery staple"))));
    g.finish();

    let account = Account { address: EmailAddress::parse("u42@bench.test").expect("address"), quota_bytes: None, is_master: false };
    let mut cache = VerifyCache::new(10_000, Duration::from_secs(60));
    let now = Instant::now();
    // A warm cache of 1,000 users, as after a busy minute.
    for i in 0..1000 {
        cache.insert(&format!("u{i}@bench.test"), "pw", account.clone(), now);
    }
    cache.insert("u42@bench.test", "correct horse battery staple", account.clone(), now);
    assert!(cache.get("u42@bench.test", "correct horse battery staple", now).is_some(), "cache does not hit");
    assert!(cache.get("u42@bench.test", "wrong", now).is_none());

    let mut g = c.benchmark_group("verify_cache");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.bench_function("hit", |b| b.iter(|| cache.get(black_box("u42@bench.test"), black_box("correct horse battery staple"), now)));
    g.bench_function("miss", |b| b.iter(|| cache.get(black_box("u42@bench.test"), black_box("not the password"), now)));
    let mut i = 0u64;
    g.bench_function("insert", |b| {
        b.iter(|| {
            i += 1;
            cache.insert(&format!("v{}@bench.test", i % 5000), "pw", account.clone(), now)
        })
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
