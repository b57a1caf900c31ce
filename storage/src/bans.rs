//! Authentication security (seed 002 §6.2.1.18–21, §6.2.3): failed logins
//! counted per client IP, bans, and the ban log that keeps bans across
//! restarts and lets `varan ban` edit them on a running server.
//!
//! [`BanTable`] is the in-memory state every shard (and later the admin
//! panel) uses: `record_failure` after a failed login, `banned_until` at
//! connect and before a login, `ban`/`unban` for manual edits. Time is
//! passed in as Unix seconds.
//!
//! [`BanLog`] is an append-only text file, one event a line:
//!
//! ```text
//! ban 192.0.2.7 1767225600 failures
//! unban 192.0.2.7
//! ```
//!
//! Writers (the server's main thread, the CLI) append whole lines under an
//! exclusive `flock` on the log itself, with one `write` and an fsync; the
//! server reads what others appended since its last offset every second
//! and applies it. Only the server compacts the log (rewrites it with the
//! active bans through a temporary file and a rename, under the same lock);
//! a reader that finds the file shorter than its offset, or replaced,
//! re-reads it from the start.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `<data_dir>/protect/bans.log`: the server's and `varan ban`'s log.
pub fn ban_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("protect").join("bans.log")
}

/// Stripes of the failure table (counted from every shard).
const STRIPES: usize = 16;
/// Longest line read from the log; longer ones are skipped (a valid line
/// is under 80 bytes).
const LINE_BYTES_MAX: usize = 256;
/// Bytes read from the log in one call; the rest is read on the next tick.
const READ_BYTES_MAX: u64 = 4 << 20;

/// Why an IP is banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// Too many failed logins.
    Failures,
    /// An administrator (CLI or admin panel).
    Manual,
}

impl BanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BanReason::Failures => "failures",
            BanReason::Manual => "manual",
        }
    }
}

/// An active ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    /// Unix seconds when the ban ends.
    pub until: u64,
    pub reason: BanReason,
}

/// A change of the ban list, as written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanEvent {
    Ban { ip: IpAddr, ban: Ban },
    Unban { ip: IpAddr },
}

impl BanEvent {
    fn line(&self) -> String {
        match self {
            BanEvent::Ban { ip, ban } => format!("ban {ip} {} {}\n", ban.until, ban.reason.as_str()),
            BanEvent::Unban { ip } => format!("unban {ip}\n"),
        }
    }

    /// Parses one line (without its LF); `None` for anything else.
    fn parse(line: &str) -> Option<BanEvent> {
        let mut words = line.split_ascii_whitespace();
        let event = match (words.next()?, words.next()?.parse::<IpAddr>().ok()?) {
            ("ban", ip) => {
                let until = words.next()?.parse().ok()?;
                let reason = match words.next() {
                    Some("manual") => BanReason::Manual,
                    _ => BanReason::Failures,
                };
                BanEvent::Ban { ip, ban: Ban { until, reason } }
            }
            ("unban", ip) => BanEvent::Unban { ip },
            _ => return None,
        };
        Some(event)
    }
}

/// Thresholds (from `[protection.auth]`), times in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    pub failures_max: u32,
    pub failure_lifetime: u64,
    pub ban_time: u64,
    /// Failure records kept at most, and bans kept at most.
    pub records_max: usize,
}

/// What a failed login led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted: this many failures in the current window.
    Counted(u32),
    /// This failure reached the threshold: banned until then.
    Banned { until: u64 },
    /// The failure table is full (an attack from very many addresses):
    /// not counted.
    NotCounted,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Unix seconds the window ends (first failure + failure_lifetime).
    window_end: u64,
}

/// Failed-login counters and bans, shared by every shard.
pub struct BanTable {
    failures: Vec<Mutex<HashMap<IpAddr, Failures>>>,
    failure_count: AtomicUsize,
    bans: Mutex<HashMap<IpAddr, Ban>>,
    /// Bans held (also expired ones not yet cleaned): 0 skips the lock at connect.
    ban_count: AtomicUsize,
    /// Changes not yet written to the log.
    pending: Mutex<Vec<BanEvent>>,
}

impl Default for BanTable {
    fn default() -> Self {
        Self {
            failures: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            failure_count: AtomicUsize::new(0),
            bans: Mutex::new(HashMap::new()),
            ban_count: AtomicUsize::new(0),
            pending: Mutex::new(Vec::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BanTable {
    fn stripe(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Failures>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) ^ (u128::from(*v6) >> 64)) as usize,
        };
        &self.failures[h % STRIPES]
    }

    /// When the ban of `ip` ends, if it is banned at `now`.
    pub fn banned_until(&self, ip: IpAddr, now: u64) -> Option<u64> {
        if self.ban_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.bans).get(&ip).filter(|b| b.until > now).map(|b| b.until)
    }

    /// Counts a failed login from `ip`; at `failures_max` failures within
    /// `failure_lifetime` the IP is banned for `ban_time`. The caller
    /// decides who may never be banned (allow-listed IPs).
    pub fn record_failure(&self, ip: IpAddr, now: u64, p: &BanPolicy) -> FailureOutcome {
        let count = {
            let mut map = lock(self.stripe(&ip));
            match map.get_mut(&ip) {
                Some(f) if f.window_end > now => {
                    f.count = f.count.saturating_add(1);
                    f.count
                }
                Some(f) => {
                    *f = Failures { count: 1, window_end: now.saturating_add(p.failure_lifetime) };
                    1
                }
                None => {
                    if self.failure_count.load(Ordering::Acquire) >= p.records_max {
                        return FailureOutcome::NotCounted;
                    }
                    map.insert(ip, Failures { count: 1, window_end: now.saturating_add(p.failure_lifetime) });
                    self.failure_count.fetch_add(1, Ordering::AcqRel);
                    1
                }
            }
        };
        if count < p.failures_max {
            return FailureOutcome::Counted(count);
        }
        let until = now.saturating_add(p.ban_time);
        if !self.ban(ip, Ban { until, reason: BanReason::Failures }, p.records_max) {
            return FailureOutcome::Counted(count);
        }
        FailureOutcome::Banned { until }
    }

    /// Bans `ip` (replacing an earlier ban) and forgets its failures.
    /// False when `records_max` bans are held already.
    pub fn ban(&self, ip: IpAddr, ban: Ban, records_max: usize) -> bool {
        {
            let mut bans = lock(&self.bans);
            if bans.len() >= records_max && !bans.contains_key(&ip) {
                return false;
            }
            bans.insert(ip, ban);
            self.ban_count.store(bans.len(), Ordering::Release);
        }
        self.forget_failures(ip);
        lock(&self.pending).push(BanEvent::Ban { ip, ban });
        true
    }

    /// Lifts the ban of `ip` and forgets its failures; true if it was banned.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let was = {
            let mut bans = lock(&self.bans);
            let was = bans.remove(&ip).is_some();
            self.ban_count.store(bans.len(), Ordering::Release);
            was
        };
        self.forget_failures(ip);
        lock(&self.pending).push(BanEvent::Unban { ip });
        was
    }

    fn forget_failures(&self, ip: IpAddr) {
        if lock(self.stripe(&ip)).remove(&ip).is_some() {
            self.failure_count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Active bans at `now`, by IP.
    pub fn list(&self, now: u64) -> Vec<(IpAddr, Ban)> {
        let mut v: Vec<(IpAddr, Ban)> = lock(&self.bans).iter().filter(|(_, b)| b.until > now).map(|(ip, b)| (*ip, *b)).collect();
        v.sort_by_key(|(ip, _)| *ip);
        v
    }

    /// Failures counted for `ip` in its current window.
    pub fn failures(&self, ip: IpAddr, now: u64) -> u32 {
        lock(self.stripe(&ip)).get(&ip).filter(|f| f.window_end > now).map_or(0, |f| f.count)
    }

    /// Applies an event read from the log (another writer's, or our own
    /// read back): no new log entry is made.
    pub fn apply(&self, event: BanEvent, records_max: usize) {
        let mut bans = lock(&self.bans);
        match event {
            BanEvent::Ban { ip, ban } => {
                if bans.len() < records_max || bans.contains_key(&ip) {
                    bans.insert(ip, ban);
                }
            }
            BanEvent::Unban { ip } => {
                bans.remove(&ip);
            }
        }
        self.ban_count.store(bans.len(), Ordering::Release);
        drop(bans);
        if let BanEvent::Unban { ip } = event {
            self.forget_failures(ip);
        }
    }

    /// Drops expired bans and failure windows; returns how many bans ended.
    pub fn cleanup(&self, now: u64) -> usize {
        let ended = {
            let mut bans = lock(&self.bans);
            let before = bans.len();
            bans.retain(|_, b| b.until > now);
            self.ban_count.store(bans.len(), Ordering::Release);
            before - bans.len()
        };
        for stripe in &self.failures {
            let mut map = lock(stripe);
            let before = map.len();
            map.retain(|_, f| f.window_end > now);
            self.failure_count.fetch_sub(before - map.len(), Ordering::AcqRel);
        }
        ended
    }

    /// Changes made since the last call, for the log.
    pub fn take_pending(&self) -> Vec<BanEvent> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

/// The ban log file (see the module docs).
pub struct BanLog {
    path: PathBuf,
    /// Bytes of the log already applied, and the inode they belong to.
    offset: u64,
    inode: u64,
}

impl BanLog {
    /// The log at `path` (created on first write); nothing read yet.
    pub fn new(path: &Path) -> BanLog {
        BanLog { path: path.to_path_buf(), offset: 0, inode: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_locked(&self) -> io::Result<File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().read(true).append(true).create(true).open(&self.path)?;
        f.lock()?;
        // A compaction may have replaced the file between open and lock:
        // then lock the new one.
        let same = std::fs::metadata(&self.path).map(|m| m.ino() == f.metadata().map(|n| n.ino()).unwrap_or(0)).unwrap_or(false);
        if same {
            Ok(f)
        } else {
            drop(f);
            let f = OpenOptions::new().read(true).append(true).create(true).open(&self.path)?;
            f.lock()?;
            Ok(f)
        }
    }

    /// Appends events (one write, then fsync) under the lock.
    pub fn append(&self, events: &[BanEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let text: String = events.iter().map(BanEvent::line).collect();
        let mut f = self.open_locked()?;
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// Reads the events appended since the last call (all of them the
    /// first time, or after the file was replaced or truncated). `true`
    /// in the result: the whole file was read from its start, so the
    /// caller should replace its bans with the result rather than add.
    pub fn read_new(&mut self) -> io::Result<(Vec<BanEvent>, bool)> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        let restart = meta.ino() != self.inode || meta.len() < self.offset;
        if restart {
            self.offset = 0;
            self.inode = meta.ino();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(READ_BYTES_MAX).read_to_end(&mut buf)?;
        // Only whole lines: a line being appended is read next time.
        let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let events = buf[..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty() && l.len() <= LINE_BYTES_MAX)
            .filter_map(|l| std::str::from_utf8(l).ok())
            .filter_map(BanEvent::parse)
            .collect();
        self.offset += end as u64;
        Ok((events, restart))
    }

    /// Rewrites the log with the active bans only (under the lock, through
    /// a temporary file and a rename), when it holds more than `lines_max`
    /// lines' worth of bytes. Returns true when it was compacted.
    pub fn compact(&mut self, table: &BanTable, now: u64, bytes_max: u64) -> io::Result<bool> {
        let f = self.open_locked()?;
        let len = f.metadata()?.len();
        if len <= bytes_max {
            return Ok(false);
        }
        // Apply what others appended before rewriting, so nothing is lost.
        let (events, _) = self.read_new()?;
        for e in events {
            table.apply(e, usize::MAX);
        }
        let mut text = String::new();
        for (ip, ban) in table.list(now) {
            let _ = write!(text, "{}", BanEvent::Ban { ip, ban }.line());
        }
        crate::greylist::write_atomic(&self.path, text.as_bytes())?;
        drop(f);
        let meta = std::fs::metadata(&self.path)?;
        self.inode = meta.ino();
        self.offset = meta.len();
        Ok(true)
    }

    /// The active bans the log describes at `now` (for `varan ban list`).
    pub fn replay(path: &Path, now: u64) -> io::Result<Vec<(IpAddr, Ban)>> {
        let table = BanTable::default();
        let mut log = BanLog::new(path);
        loop {
            let before = log.offset;
            let (events, _) = log.read_new()?;
            for e in events {
                table.apply(e, usize::MAX);
            }
            if log.offset == before {
                break;
            }
        }
        Ok(table.list(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BanPolicy = BanPolicy { failures_max: 3, failure_lifetime: 3600, ban_time: 3600, records_max: 100 };
    const T0: u64 = 1_700_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn third_failure_within_the_window_bans_for_the_ban_time() {
        let t = BanTable::default();
        let a = ip("192.0.2.1");
        assert_eq!(t.record_failure(a, T0, &P), FailureOutcome::Counted(1));
        assert_eq!(t.record_failure(a, T0 + 10, &P), FailureOutcome::Counted(2));
        assert_eq!(t.banned_until(a, T0 + 10), None);
        assert_eq!(t.record_failure(a, T0 + 20, &P), FailureOutcome::Banned { until: T0 + 20 + 3600 });
        assert_eq!(t.banned_until(a, T0 + 21), Some(T0 + 3620));
        assert_eq!(t.banned_until(ip("192.0.2.2"), T0 + 21), None, "per IP");
        assert_eq!(t.banned_until(a, T0 + 3620), None, "the ban ends");
        assert_eq!(t.failures(a, T0 + 21), 0, "the ban reset the count");
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = BanTable::default();
        let a = ip("2001:db8::1");
        t.record_failure(a, T0, &P);
        t.record_failure(a, T0 + 100, &P);
        assert_eq!(t.record_failure(a, T0 + 3600, &P), FailureOutcome::Counted(1), "a new window");
        assert_eq!(t.record_failure(a, T0 + 3601, &P), FailureOutcome::Counted(2));
        assert!(matches!(t.record_failure(a, T0 + 3602, &P), FailureOutcome::Banned { .. }));
    }

    #[test]
    fn manual_unban_and_cleanup() {
        let t = BanTable::default();
        let a = ip("192.0.2.9");
        assert!(t.ban(a, Ban { until: T0 + 60, reason: BanReason::Manual }, 100));
        assert_eq!(t.list(T0).len(), 1);
        assert!(t.unban(a));
        assert!(!t.unban(a));
        assert_eq!(t.banned_until(a, T0), None);
        t.ban(a, Ban { until: T0 + 60, reason: BanReason::Manual }, 100);
        assert_eq!(t.cleanup(T0 + 59), 0);
        assert_eq!(t.cleanup(T0 + 60), 1);
        assert!(t.list(T0).is_empty());
        let pending = t.take_pending();
        assert_eq!(pending.len(), 4, "ban, unban, unban, ban");
        assert!(t.take_pending().is_empty());
    }

    #[test]
    fn tables_are_bounded() {
        let p = BanPolicy { records_max: 2, failures_max: 1, ..P };
        let t = BanTable::default();
        assert!(matches!(t.record_failure(ip("192.0.2.1"), T0, &p), FailureOutcome::Banned { .. }));
        assert!(matches!(t.record_failure(ip("192.0.2.2"), T0, &p), FailureOutcome::Banned { .. }));
        assert_eq!(t.record_failure(ip("192.0.2.3"), T0, &p), FailureOutcome::Counted(1), "ban table full");
        let q = BanPolicy { records_max: 1, ..P };
        let u = BanTable::default();
        u.record_failure(ip("192.0.2.1"), T0, &q);
        assert_eq!(u.record_failure(ip("192.0.2.2"), T0, &q), FailureOutcome::NotCounted);
    }

    #[test]
    fn log_round_trip_other_writers_and_compaction() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.path().join("protect").join("bans.log");
        let server = BanTable::default();
        let mut log = BanLog::new(&path);
        // The server bans after failures and writes its pending events.
        for _ in 0..3 {
            server.record_failure(ip("192.0.2.1"), T0, &P);
        }
        log.append(&server.take_pending()).unwrap();
        // The CLI adds one ban and lifts another through its own handle.
        let cli = BanLog::new(&path);
        cli.append(&[BanEvent::Ban { ip: ip("192.0.2.2"), ban: Ban { until: T0 + 600, reason: BanReason::Manual } }]).unwrap();
        cli.append(&[BanEvent::Unban { ip: ip("192.0.2.1") }]).unwrap();
        let (events, restart) = log.read_new().unwrap();
        assert!(restart, "first read starts at the beginning");
        for e in events {
            server.apply(e, 100);
        }
        assert_eq!(server.list(T0).iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![ip("192.0.2.2")]);
        assert_eq!(log.read_new().unwrap().0, vec![], "nothing new");
        assert_eq!(BanLog::replay(&path, T0).unwrap().len(), 1);
        // A partial line (a writer mid-append) waits for its LF.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"unban 192.0").unwrap();
        assert_eq!(log.read_new().unwrap().0, vec![]);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b".2.2\n").unwrap();
        let (events, _) = log.read_new().unwrap();
        assert_eq!(events, vec![BanEvent::Unban { ip: ip("192.0.2.2") }]);
        server.apply(events[0], 100);
        // Compaction keeps only the active bans; later appends are read.
        server.apply(BanEvent::Ban { ip: ip("192.0.2.3"), ban: Ban { until: T0 + 60, reason: BanReason::Manual } }, 100);
        assert!(log.compact(&server, T0, 0).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("ban 192.0.2.3 {} manual\n", T0 + 60));
        cli.append(&[BanEvent::Unban { ip: ip("192.0.2.3") }]).unwrap();
        assert_eq!(log.read_new().unwrap(), (vec![BanEvent::Unban { ip: ip("192.0.2.3") }], false));
        // Restart: a fresh table replays the file.
        assert!(BanLog::replay(&path, T0).unwrap().is_empty());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert_eq!(BanEvent::parse("ban 192.0.2.1 99 manual"), Some(BanEvent::Ban { ip: ip("192.0.2.1"), ban: Ban { until: 99, reason: BanReason::Manual } }));
        assert_eq!(BanEvent::parse("ban 192.0.2.1"), None);
        assert_eq!(BanEvent::parse("ban nonsense 5"), None);
        assert_eq!(BanEvent::parse("drop 192.0.2.1"), None);
        assert_eq!(BanEvent::parse(""), None);
    }
}
