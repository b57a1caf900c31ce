//! Inbound protections that need no DNS (docs/design/protection.md): the
//! IP and sender allow/deny lists, greylisting at RCPT, bans after failed
//! logins on every protocol, and the per-IP connection rate limit.
//!
//! [`Lists`] is rebuilt with the configuration (it lives in `Live`, so a
//! SIGHUP reloads it); [`Protect`] is the state shared by all shards for
//! the life of the process (it lives in `Counters`): greylist records,
//! failure counters and bans, rate windows. Every check holds one stripe
//! lock for one hash-map operation and never across an await. The main
//! thread calls [`Protect::tick`] every second for persistence and cleanup.

pub mod rate;

use crate::live::Live;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use varan_core::config::protect::{IpLists, Listed, SenderLists};
use varan_core::config::{Config, ProtectionConfig};
use varan_core::EmailAddress;
use varan_protocols::smtp::{AuthVerdict, Reply};
use varan_storage::bans::{BanLog, BanPolicy, BanTable, FailureOutcome};
use varan_storage::greylist::{triplet_key, GreyVerdict, GreylistPolicy, GreylistStore, MemoryGreylist};

/// The ban log is compacted when it grows beyond this (about 15,000 lines).
const BAN_LOG_BYTES_MAX: u64 = 1 << 20;
/// At most one "table full" warning per this many seconds per table.
const FULL_WARNING_INTERVAL: u64 = 60;

/// Unix time in seconds (greylist and ban records outlive the process).
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The lists of `[protection.lists]` and the greylist exemptions, compiled.
#[derive(Debug, Default)]
pub struct Lists {
    pub ips: IpLists,
    /// `None` when nothing is listed (the session then skips the check).
    pub senders: Option<Arc<SenderLists>>,
    greylist_ignore: HashSet<String>,
}

impl Lists {
    pub fn compile(c: &ProtectionConfig) -> Lists {
        let senders = SenderLists::compile(&c.lists);
        let any = c.lists.enabled && !(c.lists.sender_allow.is_empty() && c.lists.sender_deny.is_empty());
        let greylist_ignore = c.greylist.ignore_sender_domains.iter().filter_map(|d| varan_core::address::normalize_domain(d.trim_start_matches('@')).ok()).collect();
        Lists { ips: IpLists::compile(&c.lists), senders: any.then(|| Arc::new(senders)), greylist_ignore }
    }
}

/// Why a connection is refused before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// On `ip_deny` (SMTP only).
    Denied,
    /// Banned after failed logins, or by an administrator.
    Banned,
    /// Over `rate.connections_per_minute`.
    RateLimited,
}

impl Refusal {
    /// The SMTP greeting that refuses (RFC 5321 §3.1: 554 instead of 220).
    pub fn smtp_reply(self, hostname: &str) -> String {
        match self {
            Refusal::Denied => format!("554 5.7.1 {hostname} Access denied\r\n"),
            Refusal::Banned => format!("554 5.7.1 {hostname} Access denied: too many failed logins from your address\r\n"),
            Refusal::RateLimited => format!("421 4.7.0 {hostname} Too many connections per minute from your address, try again later\r\n"),
        }
    }

    /// The IMAP greeting that refuses (RFC 9051 §7.1.5).
    pub fn imap_reply(self) -> &'static str {
        match self {
            Refusal::Denied | Refusal::Banned => "* BYE [AUTHORIZATIONFAILED] Access denied: too many failed logins from your address\r\n",
            Refusal::RateLimited => "* BYE [UNAVAILABLE] Too many connections per minute from your address\r\n",
        }
    }

    /// The POP3 greeting that refuses (RFC 2449 §8 response codes).
    pub fn pop3_reply(self) -> &'static str {
        match self {
            Refusal::Denied | Refusal::Banned => "-ERR [AUTH] Access denied: too many failed logins from your address\r\n",
            Refusal::RateLimited => "-ERR [SYS/TEMP] Too many connections per minute from your address\r\n",
        }
    }
}

/// Which protocol a connection speaks (the IP lists are SMTP's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Smtp,
    Imap,
    Pop3,
}

/// Where the state is kept on disk (none for tests and tools).
struct Files {
    greylist: PathBuf,
    bans: Mutex<BanLog>,
}

/// State shared by every shard for the life of the process.
#[derive(Default)]
pub struct Protect {
    pub greylist: MemoryGreylist,
    pub bans: BanTable,
    pub rate: rate::RateTable,
    files: Option<Files>,
    /// Unix seconds of the last cleanup pass.
    last_cleanup: AtomicU64,
    /// Unix seconds of the last "table full" warnings (greylist, bans, rate).
    warned: [AtomicU64; 3],
}

impl Protect {
    /// The state of `<data_dir>/protect`: the greylist snapshot and the ban
    /// log. A damaged greylist snapshot is logged and replaced by an empty
    /// greylist (its state is soft: a sender is at worst greylisted again).
    pub fn open(config: &Config) -> Result<Protect, String> {
        let dir = config.server.data_dir.join("protect");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let greylist_path = dir.join("greylist.snapshot");
        let now = now();
        let greylist = match MemoryGreylist::load(&greylist_path, now, config.protection.greylist.records_max) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "greylist snapshot unreadable; starting with an empty greylist");
                MemoryGreylist::default()
            }
        };
        let bans = BanTable::default();
        let mut log = BanLog::new(&varan_storage::bans::ban_log_path(&config.server.data_dir));
        let (events, _) = log.read_new().map_err(|e| format!("{}: {e}", log.path().display()))?;
        for e in events {
            bans.apply(e, config.protection.auth.records_max);
        }
        bans.cleanup(now);
        tracing::info!(greylist = greylist.len(), bans = bans.list(now).len(), "protection state loaded");
        Ok(Protect { greylist, bans, files: Some(Files { greylist: greylist_path, bans: Mutex::new(log) }), last_cleanup: AtomicU64::new(now), ..Protect::default() })
    }

    /// Decides on a new connection from `ip`: `Ok(true)` when the client
    /// is allow-listed (no greylisting, never banned, no rate limit).
    pub fn admit(&self, live: &Live, ip: IpAddr, service: Service) -> Result<bool, Refusal> {
        let listed = live.protect.ips.check(ip);
        if listed == Listed::Allow {
            return Ok(true);
        }
        if self.bans.banned_until(ip, now()).is_some() {
            return Err(Refusal::Banned);
        }
        if service == Service::Smtp && listed == Listed::Deny {
            return Err(Refusal::Denied);
        }
        let r = &live.config.protection.rate;
        if let Some(per_minute) = r.connections_per_minute {
            match self.rate.admit(ip, now(), per_minute, r.records_max) {
                rate::Rate::Within => {}
                rate::Rate::Exceeded => return Err(Refusal::RateLimited),
                rate::Rate::Untracked => self.warn_full(2, "connection rate table full: new client IPs are not rate limited"),
            }
        }
        Ok(false)
    }

    fn warn_full(&self, which: usize, what: &str) {
        let now = now();
        let last = self.warned[which].load(Ordering::Relaxed);
        if now >= last + FULL_WARNING_INTERVAL && self.warned[which].compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!("{what}");
        }
    }

    /// Greylisting of one recipient (RFC 6647) for an unauthenticated
    /// client; `None` lets the recipient through. Exempt: allow-listed
    /// clients and senders, `smtp.full_allowed_ips`, the sender domains of
    /// `greylist.ignore_sender_domains`.
    pub fn greylist(&self, live: &Live, ip: IpAddr, allow_listed: bool, sender: Option<&EmailAddress>, recipient: &EmailAddress) -> Option<Reply> {
        let g = &live.config.protection.greylist;
        if !g.enabled || allow_listed || live.config.smtp.full_allowed_ips.iter().any(|n| n.contains(ip)) {
            return None;
        }
        if let Some(s) = sender {
            if live.protect.senders.as_ref().is_some_and(|l| l.check(Some(s)) == Listed::Allow) {
                return None;
            }
            let domain = s.domain();
            if live.protect.greylist_ignore.contains(domain.strip_suffix('.').unwrap_or(domain)) {
                return None;
            }
        }
        let policy =
            GreylistPolicy { delay: g.delay.as_secs(), record_lifetime: g.record_lifetime.as_secs(), allow_lifetime: g.allow_lifetime.as_secs(), records_max: g.records_max };
        let sender_key = sender.map(EmailAddress::key).unwrap_or_default();
        let key = triplet_key(ip, &sender_key, &recipient.key());
        match self.greylist.check(&key, now(), &policy) {
            GreyVerdict::Pass => None,
            GreyVerdict::Passed => {
                tracing::info!(sender = %sender_key, %recipient, "greylist: retry accepted, triplet allowed");
                None
            }
            GreyVerdict::Full => {
                self.warn_full(0, "greylist full (protection.greylist.records_max): new triplets are accepted without greylisting");
                None
            }
            GreyVerdict::Defer { retry_in } => {
                tracing::info!(sender = %sender_key, %recipient, retry_in, "greylisted");
                Some(Reply::new(451, (4, 7, 1), format!("<{recipient}>: Greylisted: this server delays mail from new senders, please retry in {retry_in} seconds")))
            }
        }
    }

    /// A password login from `ip` on any protocol, with authentication
    /// security: a banned client fails without its password being checked,
    /// and a failure is counted towards a ban (never for allow-listed IPs).
    pub async fn login(&self, live: &Arc<Live>, ip: IpAddr, authzid: &str, authcid: &str, password: String) -> Result<EmailAddress, AuthVerdict> {
        let allow_listed = live.protect.ips.check(ip) == Listed::Allow;
        if !allow_listed && self.bans.banned_until(ip, now()).is_some() {
            tracing::info!(login = %authcid, "login refused: the client is banned");
            return Err(AuthVerdict::Failure);
        }
        let result = crate::auth::login_as(live, authzid, authcid, password).await;
        if result == Err(AuthVerdict::Failure) && !allow_listed {
            self.login_failed(live, ip);
        }
        result
    }

    /// Counts a failed login (for callers that check credentials
    /// themselves, such as the admin panel later).
    pub fn login_failed(&self, live: &Live, ip: IpAddr) {
        let a = &live.config.protection.auth;
        if !a.enabled || live.protect.ips.check(ip) == Listed::Allow {
            return;
        }
        let policy = BanPolicy { failures_max: a.failures_max, failure_lifetime: a.failure_lifetime.as_secs(), ban_time: a.ban_time.as_secs(), records_max: a.records_max };
        match self.bans.record_failure(ip, now(), &policy) {
            FailureOutcome::Banned { until } => tracing::warn!(client = %ip, until, failures = a.failures_max, "client banned after failed logins"),
            FailureOutcome::NotCounted => self.warn_full(1, "failed-login table full (protection.auth.records_max): failures from new IPs are not counted"),
            FailureOutcome::Counted(_) => {}
        }
    }

    /// Housekeeping on the main thread, once a second: writes new bans to
    /// the log and applies what `varan ban` appended; at the cleanup
    /// interval drops expired records, compacts the ban log and writes the
    /// greylist snapshot if it changed.
    pub fn tick(&self, config: &Config) {
        let Some(files) = &self.files else { return };
        let now = now();
        {
            let mut log = files.bans.lock().unwrap_or_else(|p| p.into_inner());
            let pending = self.bans.take_pending();
            if let Err(e) = log.append(&pending) {
                tracing::error!(error = %e, path = %log.path().display(), "cannot write the ban log");
            }
            match log.read_new() {
                Ok((events, _)) => events.into_iter().for_each(|e| self.bans.apply(e, config.protection.auth.records_max)),
                Err(e) => tracing::error!(error = %e, path = %log.path().display(), "cannot read the ban log"),
            }
        }
        let interval = config.protection.greylist.cleanup_interval.as_secs().max(1);
        let last = self.last_cleanup.load(Ordering::Relaxed);
        if now < last + interval {
            return;
        }
        self.last_cleanup.store(now, Ordering::Relaxed);
        let expired = self.greylist.cleanup(now);
        self.bans.cleanup(now);
        self.rate.cleanup(now);
        if expired > 0 {
            tracing::debug!(expired, "greylist cleanup");
        }
        self.persist(files, now);
    }

    fn persist(&self, files: &Files, now: u64) {
        if self.greylist.is_dirty() {
            if let Err(e) = self.greylist.save(&files.greylist, now) {
                tracing::error!(error = %e, path = %files.greylist.display(), "cannot write the greylist snapshot");
            }
        }
        let mut log = files.bans.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.compact(&self.bans, now, BAN_LOG_BYTES_MAX) {
            tracing::error!(error = %e, path = %log.path().display(), "cannot compact the ban log");
        }
    }

    /// Writes everything out at shutdown.
    pub fn flush(&self) {
        let Some(files) = &self.files else { return };
        let pending = self.bans.take_pending();
        let log = files.bans.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.append(&pending) {
            tracing::error!(error = %e, "cannot write the ban log");
        }
        drop(log);
        self.persist(files, now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(edit: impl FnOnce(&mut Config)) -> Live {
        let mut c = Config::default();
        c.dkim.sign = false;
        c.tls.certificate = "/nonexistent/cert.pem".into();
        c.tls.private_key = "/nonexistent/key.pem".into();
        c.protection.lists.ip_allow = vec!["192.0.2.1".parse().unwrap()];
        c.protection.lists.ip_deny = vec!["198.51.100.0/24".parse().unwrap()];
        c.protection.lists.sender_allow = vec!["@friend.test".into()];
        c.protection.greylist.ignore_sender_domains = vec!["ignored.test".into()];
        c.smtp.full_allowed_ips = vec!["203.0.113.9".parse().unwrap()];
        edit(&mut c);
        Live::build(c).expect("live")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    #[test]
    fn admission_order_allow_ban_deny_rate() {
        let live = live(|c| c.protection.rate.connections_per_minute = Some(2));
        let p = Protect::default();
        assert_eq!(p.admit(&live, ip("192.0.2.1"), Service::Smtp), Ok(true));
        assert_eq!(p.admit(&live, ip("198.51.100.7"), Service::Smtp), Err(Refusal::Denied));
        assert_eq!(p.admit(&live, ip("198.51.100.7"), Service::Imap), Ok(false), "the IP lists are SMTP's");
        let banned = varan_storage::bans::Ban { until: now() + 60, reason: varan_storage::bans::BanReason::Manual };
        p.bans.ban(ip("192.0.2.1"), banned, 10);
        p.bans.ban(ip("192.0.2.50"), banned, 10);
        assert_eq!(p.admit(&live, ip("192.0.2.1"), Service::Pop3), Ok(true), "allow-listed wins over a ban");
        assert_eq!(p.admit(&live, ip("192.0.2.50"), Service::Imap), Err(Refusal::Banned));
        let other = ip("192.0.2.60");
        assert_eq!(p.admit(&live, other, Service::Smtp), Ok(false));
        assert_eq!(p.admit(&live, other, Service::Imap), Ok(false));
        assert_eq!(p.admit(&live, other, Service::Pop3), Err(Refusal::RateLimited), "counted across protocols");
        for _ in 0..5 {
            assert_eq!(p.admit(&live, ip("192.0.2.1"), Service::Smtp), Ok(true), "allow-listed clients are not rate limited");
        }
    }

    #[test]
    fn greylisting_exemptions() {
        let live = live(|_| {});
        let p = Protect::default();
        let rcpt = addr("u1@bench.test");
        let stranger = ip("192.0.2.99");
        let r = p.greylist(&live, stranger, false, Some(&addr("a@example.org")), &rcpt).expect("greylisted");
        assert_eq!((r.code, r.enhanced), (451, (4, 7, 1)));
        assert!(p.greylist(&live, stranger, false, None, &rcpt).is_some(), "the null sender is greylisted too");
        assert!(p.greylist(&live, stranger, true, Some(&addr("b@example.org")), &rcpt).is_none(), "allow-listed client");
        assert!(p.greylist(&live, ip("203.0.113.9"), false, Some(&addr("c@example.org")), &rcpt).is_none(), "full_allowed_ips");
        assert!(p.greylist(&live, stranger, false, Some(&addr("d@friend.test")), &rcpt).is_none(), "allow-listed sender");
        assert!(p.greylist(&live, stranger, false, Some(&addr("e@Ignored.test")), &rcpt).is_none(), "ignored sender domain");
        let off = self::tests::live(|c| c.protection.greylist.enabled = false);
        assert!(p.greylist(&off, stranger, false, Some(&addr("f@example.org")), &rcpt).is_none());
    }

    #[test]
    fn failed_logins_ban_except_allow_listed_or_disabled() {
        let live = live(|_| {});
        let p = Protect::default();
        for _ in 0..3 {
            p.login_failed(&live, ip("192.0.2.1"));
            p.login_failed(&live, ip("192.0.2.77"));
        }
        assert!(p.bans.banned_until(ip("192.0.2.77"), now()).is_some());
        assert!(p.bans.banned_until(ip("192.0.2.1"), now()).is_none(), "allow-listed IPs are never banned");
        let off = self::tests::live(|c| c.protection.auth.enabled = false);
        for _ in 0..5 {
            p.login_failed(&off, ip("192.0.2.78"));
        }
        assert!(p.bans.banned_until(ip("192.0.2.78"), now()).is_none());
    }

    #[test]
    fn sender_lists_are_handed_to_sessions_only_when_used() {
        assert!(live(|_| {}).protect.senders.is_some());
        assert!(live(|c| c.protection.lists.sender_allow.clear()).protect.senders.is_none());
        assert!(live(|c| c.protection.lists.enabled = false).protect.senders.is_none());
    }
}
