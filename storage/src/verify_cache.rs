//! A short-lived cache of successful password checks, like Dovecot's auth
//! cache: mail clients log in again every few seconds (each IMAP
//! connection, each POP3 poll), and one Argon2id check costs ~20 ms of CPU
//! and 19 MiB, so repeating it for the same credentials is pure waste.
//!
//! The key is SHA-256 over a per-process random salt, the login and the
//! password (length-prefixed, so no two inputs share a key); the password
//! itself is never stored, and the salt makes the keys useless outside this
//! process. Entries expire after a fixed TTL counted from the check, not
//! from the last use, so a changed or revoked password stops working within
//! the TTL even if the client keeps logging in. Failed checks are never
//! cached. Nothing is written to disk.
//!
//! The cache is a plain value (`Send`, not shared): keep one per shard and
//! pass `now` in, so it needs no lock and no clock of its own.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use varan_core::directory::Account;

/// Default number of entries: comfortably more than the users active
/// within one TTL on a single-node server; ~200 bytes each.
pub const VERIFY_CACHE_CAPACITY_DEFAULT: usize = 10_000;
/// Hard cap on the capacity (≈ 200 MB of entries).
pub const VERIFY_CACHE_CAPACITY_MAX: usize = 1_000_000;
/// Default lifetime of an entry (Dovecot's `auth_cache_ttl` is 1 hour;
/// we keep password changes effective much sooner).
pub const VERIFY_CACHE_TTL_DEFAULT: Duration = Duration::from_secs(60);
/// Longest lifetime allowed.
pub const VERIFY_CACHE_TTL_MAX: Duration = Duration::from_secs(3600);

type Key = [u8; 32];

struct Entry {
    expires: Instant,
    login: String,
    account: Account,
    /// Position stamp in `order`; older stamps there are stale.
    stamp: u64,
}

/// See the module documentation.
pub struct VerifyCache {
    salt: [u8; 32],
    /// False when the OS gave no randomness for the salt: a predictable
    /// salt would make keys guessable, so the cache then stores nothing.
    usable: bool,
    ttl: Duration,
    capacity: usize,
    map: HashMap<Key, Entry>,
    /// Use order, oldest first, as (stamp, key); entries whose stamp no
    /// longer matches the map are skipped (lazy deletion).
    order: VecDeque<(u64, Key)>,
    next_stamp: u64,
}

impl Default for VerifyCache {
    fn default() -> Self {
        Self::new(VERIFY_CACHE_CAPACITY_DEFAULT, VERIFY_CACHE_TTL_DEFAULT)
    }
}

impl VerifyCache {
    /// A cache of at most `capacity` entries (capped at
    /// [`VERIFY_CACHE_CAPACITY_MAX`]) living `ttl` (capped at
    /// [`VERIFY_CACHE_TTL_MAX`]). Capacity 0 or TTL 0 disables it.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let mut salt = [0u8; 32];
        let usable = match rand::rngs::OsRng.try_fill_bytes(&mut salt) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "no OS randomness; password verification cache disabled");
                false
            }
        };
        Self { salt, usable, ttl: ttl.min(VERIFY_CACHE_TTL_MAX), capacity: capacity.min(VERIFY_CACHE_CAPACITY_MAX), map: HashMap::new(), order: VecDeque::new(), next_stamp: 0 }
    }

    fn key(&self, login: &str, password: &str) -> Key {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((login.len() as u64).to_le_bytes());
        h.update(login.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The account of a still-valid earlier success with exactly this
    /// login and password.
    pub fn get(&mut self, login: &str, password: &str, now: Instant) -> Option<Account> {
        if !self.usable || self.capacity == 0 {
            return None;
        }
        let key = self.key(login, password);
        let entry = self.map.get_mut(&key)?;
        if now >= entry.expires {
            self.map.remove(&key);
            return None;
        }
        entry.stamp = self.next_stamp;
        let account = entry.account.clone();
        self.order.push_back((self.next_stamp, key));
        self.next_stamp += 1;
        self.compact();
        Some(account)
    }

    /// Remembers a successful check, evicting the least recently used
    /// entry when full.
    pub fn insert(&mut self, login: &str, password: &str, account: Account, now: Instant) {
        if !self.usable || self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        let key = self.key(login, password);
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.capacity {
                if !self.evict_one() {
                    break;
                }
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.map.insert(key, Entry { expires: now + self.ttl, login: login.to_owned(), account, stamp });
        self.order.push_back((stamp, key));
        self.compact();
    }

    /// Forgets every entry of `login` (after a password change or when an
    /// account is disabled).
    pub fn invalidate_login(&mut self, login: &str) {
        self.map.retain(|_, e| e.login != login);
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes the least recently used live entry. False when none is left.
    fn evict_one(&mut self) -> bool {
        while let Some((stamp, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.map.remove(&key);
                return true;
            }
        }
        false
    }

    /// Keeps `order` within twice the live entries, dropping stale stamps,
    /// so repeated hits on one entry cannot grow it without bound.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.map.len().max(16) {
            return;
        }
        let map = &self.map;
        self.order.retain(|(stamp, key)| map.get(key).is_some_and(|e| e.stamp == *stamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varan_core::EmailAddress;

    fn account(name: &str) -> Account {
        Account { address: EmailAddress::parse(&format!("{name}@a.test")).unwrap(), quota_bytes: None, is_master: false }
    }

    #[test]
    fn hit_miss_and_expiry() {
        let mut c = VerifyCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(c.get("u1@a.test", "pw", t0), None);
        c.insert("u1@a.test", "pw", account("u1"), t0);
        assert_eq!(c.get("u1@a.test", "pw", t0 + Duration::from_secs(59)), Some(account("u1")));
        assert_eq!(c.get("u1@a.test", "other", t0), None, "wrong password hit");
        assert_eq!(c.get("u2@a.test", "pw", t0), None);
        // Hits do not extend the lifetime.
        assert_eq!(c.get("u1@a.test", "pw", t0 + Duration::from_secs(60)), None);
        assert!(c.is_empty());
    }

    #[test]
    fn keys_are_unambiguous() {
        let mut c = VerifyCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        c.insert("ab", "c", account("u1"), t0);
        assert_eq!(c.get("a", "bc", t0), None);
        assert_eq!(c.get("a\0b", "c", t0), None);
    }

    #[test]
    fn bounded_with_lru_eviction() {
        let mut c = VerifyCache::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            c.insert(&format!("u{i}"), "pw", account(&format!("u{i}")), t0);
        }
        assert!(c.get("u0", "pw", t0).is_some()); // u0 is now the most recent
        c.insert("u3", "pw", account("u3"), t0);
        assert_eq!(c.len(), 3);
        assert!(c.get("u1", "pw", t0).is_none(), "least recently used not evicted");
        assert!(c.get("u0", "pw", t0).is_some());
        for _ in 0..10_000 {
            c.get("u0", "pw", t0);
        }
        assert!(c.order.len() <= 2 * 16 + 1, "order grew to {}", c.order.len());
    }

    #[test]
    fn invalidate_and_disable() {
        let mut c = VerifyCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        c.insert("u1", "pw", account("u1"), t0);
        c.insert("u2", "pw", account("u2"), t0);
        c.invalidate_login("u1");
        assert!(c.get("u1", "pw", t0).is_none());
        assert!(c.get("u2", "pw", t0).is_some());
        let mut off = VerifyCache::new(0, Duration::from_secs(60));
        off.insert("u1", "pw", account("u1"), t0);
        assert!(off.get("u1", "pw", t0).is_none());
    }
}
