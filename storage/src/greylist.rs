//! Greylisting state (RFC 6647; seed 002 appendix 1): one record per
//! triplet (client network, envelope sender, recipient), shared by every
//! shard, kept in memory and written to disk as an atomic snapshot.
//!
//! The decision is a pure function of the record and `now` (seconds since
//! the Unix epoch, passed in: tests use a fake clock). A record is
//! *pending* from the first attempt until a retry comes at least `delay`
//! later and within `record_lifetime`; it is then *allowed* until
//! `allow_lifetime` after its last use. Expired records are as good as
//! absent and are removed by [`GreylistStore::cleanup`].
//!
//! Keys are the first 128 bits of SHA-256 over the normalized triplet:
//! fixed-size records (memory is bounded by `records_max`), no addresses
//! in the snapshot, and collisions (2^-64 at a billion records) harmless.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A greylisting triplet, hashed.
pub type GreyKey = [u8; 16];

/// Stripes of the record map: shards hold one stripe's lock for one hash
/// map operation, so concurrent RCPTs rarely wait on each other.
const STRIPES: usize = 64;
/// Snapshot file header (format version 1).
const MAGIC: &[u8; 8] = b"VGREY001";
/// Bytes of one record in the snapshot: key, first seen, expiry, state.
const RECORD_BYTES: usize = 16 + 8 + 8 + 1;

/// The key of a triplet. The client network is the /24 (IPv4) or /64
/// (IPv6) of `ip`, because large senders retry from another address of
/// the same pool (RFC 6647 §4.1); sender and recipient are case-folded.
/// The null sender is the empty string.
pub fn triplet_key(ip: IpAddr, sender: &str, recipient: &str) -> GreyKey {
    let mut h = Sha256::new();
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            h.update([4, o[0], o[1], o[2]]);
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                let o = v4.octets();
                h.update([4, o[0], o[1], o[2]]);
            }
            None => {
                h.update([6]);
                h.update(&v6.octets()[..8]);
            }
        },
    }
    h.update(sender.to_lowercase().as_bytes());
    h.update([0]);
    h.update(recipient.to_lowercase().as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Timing and size of the greylist (from `[protection.greylist]`), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreylistPolicy {
    pub delay: u64,
    pub record_lifetime: u64,
    pub allow_lifetime: u64,
    pub records_max: usize,
}

/// What to answer a RCPT for a triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreyVerdict {
    /// Known and allowed (its allow-list lifetime renewed).
    Pass,
    /// A retry after the delay: accepted, and the triplet is allowed from now on.
    Passed,
    /// First attempt, or a retry too early: 451; retry in this many seconds.
    Defer { retry_in: u64 },
    /// The table is full: accepted without greylisting.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    first_seen: u64,
    /// Pending: first_seen + record_lifetime; allowed: last use + allow_lifetime.
    expires: u64,
    allowed: bool,
}

/// Where greylisting state lives: in memory for one node (this module),
/// later a PostgreSQL table shared by a cluster (one `INSERT … ON
/// CONFLICT … RETURNING` per check), behind the same three operations.
pub trait GreylistStore: Send + Sync {
    /// Looks up the triplet, updates its record and says what to answer.
    fn check(&self, key: &GreyKey, now: u64, policy: &GreylistPolicy) -> GreyVerdict;
    /// Removes expired records; returns how many.
    fn cleanup(&self, now: u64) -> usize;
    /// Records held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The single-node store: striped hash maps.
pub struct MemoryGreylist {
    stripes: Vec<Mutex<HashMap<GreyKey, Record>>>,
    count: AtomicUsize,
    /// Changed since the last snapshot.
    dirty: AtomicBool,
}

impl Default for MemoryGreylist {
    fn default() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(), count: AtomicUsize::new(0), dirty: AtomicBool::new(false) }
    }
}

impl MemoryGreylist {
    fn stripe(&self, key: &GreyKey) -> std::sync::MutexGuard<'_, HashMap<GreyKey, Record>> {
        // The key is a hash already: its first byte spreads evenly.
        self.stripes[key[0] as usize % STRIPES].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changed since the last [`save`](Self::save).
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Writes every live record to `path` atomically: a temporary file,
    /// fsync, rename, fsync of the directory. A crash leaves the old or the
    /// new snapshot, never a mix. Stripes are copied one at a time, so
    /// checks go on meanwhile.
    pub fn save(&self, path: &Path, now: u64) -> io::Result<usize> {
        self.dirty.store(false, Ordering::Release);
        let mut body = Vec::with_capacity(self.len().saturating_mul(RECORD_BYTES).min(1 << 30));
        let mut n = 0u64;
        for stripe in &self.stripes {
            let map = stripe.lock().unwrap_or_else(|p| p.into_inner());
            for (key, r) in map.iter().filter(|(_, r)| r.expires > now) {
                body.extend_from_slice(key);
                body.extend_from_slice(&r.first_seen.to_le_bytes());
                body.extend_from_slice(&r.expires.to_le_bytes());
                body.push(u8::from(r.allowed));
                n += 1;
            }
        }
        let mut file = Vec::with_capacity(body.len() + 24);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&n.to_le_bytes());
        file.extend_from_slice(&body);
        file.extend_from_slice(&crc32fast::hash(&file).to_le_bytes());
        write_atomic(path, &file)?;
        Ok(n as usize)
    }

    /// Loads a snapshot written by [`save`](Self::save), skipping records
    /// expired by `now` and keeping at most `records_max`. A missing file
    /// is an empty greylist; a damaged one is an error (the caller logs it
    /// and starts empty: greylisting state is soft).
    pub fn load(path: &Path, now: u64, records_max: usize) -> io::Result<MemoryGreylist> {
        let g = MemoryGreylist::default();
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(g),
            Err(e) => return Err(e),
        }
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        if bytes.len() < MAGIC.len() + 8 + 4 || &bytes[..8] != MAGIC {
            return Err(bad("not a greylist snapshot"));
        }
        let (content, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(content).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        let n = u64::from_le_bytes(content[8..16].try_into().map_err(|_| bad("short header"))?);
        let records = &content[16..];
        if records.len() % RECORD_BYTES != 0 || (records.len() / RECORD_BYTES) as u64 != n {
            return Err(bad("record count mismatch"));
        }
        for rec in records.chunks_exact(RECORD_BYTES) {
            if g.count.load(Ordering::Relaxed) >= records_max {
                break;
            }
            let mut key = [0u8; 16];
            key.copy_from_slice(&rec[..16]);
            let first_seen = u64::from_le_bytes(rec[16..24].try_into().map_err(|_| bad("record"))?);
            let expires = u64::from_le_bytes(rec[24..32].try_into().map_err(|_| bad("record"))?);
            if expires <= now {
                continue;
            }
            if g.stripe(&key).insert(key, Record { first_seen, expires, allowed: rec[32] != 0 }).is_none() {
                g.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(g)
    }
}

impl GreylistStore for MemoryGreylist {
    fn check(&self, key: &GreyKey, now: u64, p: &GreylistPolicy) -> GreyVerdict {
        let mut map = self.stripe(key);
        let verdict = match map.get_mut(key) {
            Some(r) if r.expires > now && r.allowed => {
                r.expires = now.saturating_add(p.allow_lifetime);
                GreyVerdict::Pass
            }
            Some(r) if r.expires > now => {
                let waited = now.saturating_sub(r.first_seen);
                if waited >= p.delay {
                    *r = Record { first_seen: r.first_seen, expires: now.saturating_add(p.allow_lifetime), allowed: true };
                    GreyVerdict::Passed
                } else {
                    // Early retries do not restart the clock (RFC 6647 §4.2:
                    // that would punish senders that retry quickly).
                    GreyVerdict::Defer { retry_in: p.delay - waited }
                }
            }
            Some(r) => {
                // Expired: start over, as for a new triplet.
                *r = Record { first_seen: now, expires: now.saturating_add(p.record_lifetime), allowed: false };
                GreyVerdict::Defer { retry_in: p.delay }
            }
            None => {
                if self.count.load(Ordering::Acquire) >= p.records_max {
                    return GreyVerdict::Full;
                }
                map.insert(*key, Record { first_seen: now, expires: now.saturating_add(p.record_lifetime), allowed: false });
                self.count.fetch_add(1, Ordering::AcqRel);
                GreyVerdict::Defer { retry_in: p.delay }
            }
        };
        drop(map);
        self.dirty.store(true, Ordering::Release);
        verdict
    }

    fn cleanup(&self, now: u64) -> usize {
        let mut removed = 0;
        for stripe in &self.stripes {
            let mut map = stripe.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, r| r.expires > now);
            removed += before - map.len();
        }
        if removed > 0 {
            self.count.fetch_sub(removed, Ordering::AcqRel);
            self.dirty.store(true, Ordering::Release);
        }
        removed
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// Writes `bytes` to `path` through a temporary file with fsync and
/// rename, then fsyncs the directory so the rename is durable.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp~");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: GreylistPolicy = GreylistPolicy { delay: 300, record_lifetime: 86_400, allow_lifetime: 720 * 3600, records_max: 1000 };
    const T0: u64 = 1_700_000_000;

    fn key(ip: &str, from: &str, to: &str) -> GreyKey {
        triplet_key(ip.parse().unwrap(), from, to)
    }

    #[test]
    fn first_attempt_defers_early_retry_defers_late_retry_passes() {
        let g = MemoryGreylist::default();
        let k = key("192.0.2.1", "a@example.org", "u@bench.test");
        assert_eq!(g.check(&k, T0, &POLICY), GreyVerdict::Defer { retry_in: 300 });
        assert_eq!(g.check(&k, T0 + 100, &POLICY), GreyVerdict::Defer { retry_in: 200 }, "the clock is not restarted");
        assert_eq!(g.check(&k, T0 + 300, &POLICY), GreyVerdict::Passed);
        assert_eq!(g.check(&k, T0 + 301, &POLICY), GreyVerdict::Pass);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn retry_after_the_record_lifetime_starts_over() {
        let g = MemoryGreylist::default();
        let k = key("192.0.2.1", "a@example.org", "u@bench.test");
        g.check(&k, T0, &POLICY);
        assert_eq!(g.check(&k, T0 + 86_400, &POLICY), GreyVerdict::Defer { retry_in: 300 });
        assert_eq!(g.check(&k, T0 + 86_400 + 300, &POLICY), GreyVerdict::Passed);
    }

    #[test]
    fn allowed_triplets_are_renewed_by_use_and_expire_without_it() {
        let g = MemoryGreylist::default();
        let k = key("192.0.2.1", "a@example.org", "u@bench.test");
        g.check(&k, T0, &POLICY);
        g.check(&k, T0 + 300, &POLICY);
        let later = T0 + 300 + 700 * 3600;
        assert_eq!(g.check(&k, later, &POLICY), GreyVerdict::Pass);
        assert_eq!(g.check(&k, later + 719 * 3600, &POLICY), GreyVerdict::Pass, "renewed at the last use");
        assert_eq!(g.check(&k, later + 719 * 3600 + 720 * 3600, &POLICY), GreyVerdict::Defer { retry_in: 300 });
    }

    #[test]
    fn key_uses_the_network_and_folds_case() {
        assert_eq!(key("192.0.2.1", "A@Example.org", "U@bench.test"), key("192.0.2.200", "a@example.org", "u@bench.test"));
        assert_ne!(key("192.0.2.1", "a@example.org", "u@bench.test"), key("192.0.3.1", "a@example.org", "u@bench.test"));
        assert_eq!(key("2001:db8:1:2::1", "a@x.test", "u@y.test"), key("2001:db8:1:2:ffff::9", "a@x.test", "u@y.test"));
        assert_ne!(key("2001:db8:1:2::1", "a@x.test", "u@y.test"), key("2001:db8:1:3::1", "a@x.test", "u@y.test"));
        assert_eq!(key("::ffff:192.0.2.1", "", "u@y.test"), key("192.0.2.9", "", "u@y.test"));
        assert_ne!(key("192.0.2.1", "a@x.test", "u@y.test"), key("192.0.2.1", "a@x.test", "v@y.test"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(key("192.0.2.1", "ab", "c"), key("192.0.2.1", "a", "bc"));
    }

    #[test]
    fn full_table_accepts_without_recording_and_cleanup_frees_room() {
        let p = GreylistPolicy { records_max: 2, ..POLICY };
        let g = MemoryGreylist::default();
        g.check(&key("192.0.2.1", "a@x.test", "u@y.test"), T0, &p);
        g.check(&key("192.0.2.1", "b@x.test", "u@y.test"), T0, &p);
        assert_eq!(g.check(&key("192.0.2.1", "c@x.test", "u@y.test"), T0, &p), GreyVerdict::Full);
        assert_eq!(g.len(), 2);
        assert_eq!(g.cleanup(T0 + 86_399), 0);
        assert_eq!(g.cleanup(T0 + 86_400), 2);
        assert!(g.is_empty());
        assert_eq!(g.check(&key("192.0.2.1", "c@x.test", "u@y.test"), T0 + 86_400, &p), GreyVerdict::Defer { retry_in: 300 });
    }

    #[test]
    fn snapshot_round_trip_keeps_live_records_and_drops_expired() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.path().join("greylist.snapshot");
        let g = MemoryGreylist::default();
        let allowed = key("192.0.2.1", "a@x.test", "u@y.test");
        let pending = key("192.0.2.1", "b@x.test", "u@y.test");
        let short = GreylistPolicy { record_lifetime: 400, ..POLICY };
        g.check(&allowed, T0, &POLICY);
        g.check(&allowed, T0 + 300, &POLICY);
        g.check(&pending, T0 + 10, &short);
        assert!(g.is_dirty());
        assert_eq!(g.save(&path, T0 + 20).unwrap(), 2);
        assert!(!g.is_dirty());
        let back = MemoryGreylist::load(&path, T0 + 20, 1000).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.check(&allowed, T0 + 30, &POLICY), GreyVerdict::Pass);
        assert_eq!(back.check(&pending, T0 + 320, &POLICY), GreyVerdict::Passed, "the first-seen time survived");
        // Loaded after the pending record expired: only the allowed one.
        assert_eq!(MemoryGreylist::load(&path, T0 + 500, 1000).unwrap().len(), 1);
        // records_max bounds what is loaded.
        assert_eq!(MemoryGreylist::load(&path, T0 + 20, 1).unwrap().len(), 1);
    }

    #[test]
    fn damaged_or_missing_snapshots() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.path().join("greylist.snapshot");
        assert!(MemoryGreylist::load(&path, T0, 10).unwrap().is_empty(), "missing = empty");
        let g = MemoryGreylist::default();
        g.check(&key("192.0.2.1", "a@x.test", "u@y.test"), T0, &POLICY);
        g.save(&path, T0).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(MemoryGreylist::load(&path, T0, 10).is_err());
        std::fs::write(&path, b"VGREY001").unwrap();
        assert!(MemoryGreylist::load(&path, T0, 10).is_err());
    }
}
