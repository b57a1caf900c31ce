//! Connection rate limit per client IP (`[protection.rate]`): a fixed
//! one-minute window per IP, counted at connect on every protocol and
//! shared by all shards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Stripes of the table: connects from different shards rarely meet.
const STRIPES: usize = 16;
/// Length of a window, seconds.
const WINDOW: u64 = 60;

#[derive(Clone, Copy)]
struct Window {
    start: u64,
    count: u32,
}

/// Connections per IP in the current minute.
pub struct RateTable {
    stripes: Vec<Mutex<HashMap<IpAddr, Window>>>,
    len: AtomicUsize,
}

impl Default for RateTable {
    fn default() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(), len: AtomicUsize::new(0) }
    }
}

/// What [`RateTable::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Within,
    Exceeded,
    /// The table is full of other IPs' windows: not counted, let in.
    Untracked,
}

impl RateTable {
    fn stripe(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) ^ (u128::from(*v6) >> 64)) as usize,
        };
        self.stripes[h % STRIPES].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one connection of `ip` at `now` (Unix seconds) against
    /// `per_minute`; refused connections count too, so a client hammering
    /// the port stays refused until it slows down for a whole window.
    pub fn admit(&self, ip: IpAddr, now: u64, per_minute: u32, records_max: usize) -> Rate {
        let mut map = self.stripe(&ip);
        match map.get_mut(&ip) {
            Some(w) if now.saturating_sub(w.start) < WINDOW => {
                w.count = w.count.saturating_add(1);
                if w.count > per_minute {
                    Rate::Exceeded
                } else {
                    Rate::Within
                }
            }
            Some(w) => {
                *w = Window { start: now, count: 1 };
                Rate::Within
            }
            None => {
                if self.len.load(Ordering::Acquire) >= records_max {
                    return Rate::Untracked;
                }
                map.insert(ip, Window { start: now, count: 1 });
                self.len.fetch_add(1, Ordering::AcqRel);
                if per_minute == 0 {
                    Rate::Exceeded
                } else {
                    Rate::Within
                }
            }
        }
    }

    /// Drops windows that ended; returns how many.
    pub fn cleanup(&self, now: u64) -> usize {
        let mut removed = 0;
        for stripe in &self.stripes {
            let mut map = stripe.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, w| now.saturating_sub(w.start) < WINDOW);
            removed += before - map.len();
        }
        self.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_ip_per_minute() {
        let t = RateTable::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.admit(a, 1000, 3, 100), Rate::Within);
        }
        assert_eq!(t.admit(a, 1059, 3, 100), Rate::Exceeded);
        assert_eq!(t.admit(b, 1059, 3, 100), Rate::Within, "other IPs are not affected");
        assert_eq!(t.admit(a, 1060, 3, 100), Rate::Within, "a new window");
    }

    #[test]
    fn bounded_and_cleaned() {
        let t = RateTable::default();
        assert_eq!(t.admit("192.0.2.1".parse().unwrap(), 0, 5, 1), Rate::Within);
        assert_eq!(t.admit("192.0.2.2".parse().unwrap(), 0, 5, 1), Rate::Untracked);
        assert_eq!(t.cleanup(59), 0);
        assert_eq!(t.cleanup(60), 1);
        assert!(t.is_empty());
    }
}
