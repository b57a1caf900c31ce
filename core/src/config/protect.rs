//! `[protection]`: the inbound protections that need no DNS (seed 002
//! §6.2.1.23–24 and .18–21, §6.2.2, §6.2.3; docs/design/protection.md):
//! IP and sender allow/deny lists, greylisting, authentication security
//! (bans after failed logins) and a per-IP connection rate limit.
//!
//! Besides the settings, this module holds the compiled list matchers
//! ([`IpLists`], [`SenderLists`]) so the protocol crate and the shards
//! share one definition of "listed".

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, invalid, ConfigError, IpNet};
use crate::EmailAddress;

/// Hard caps of the protection settings.
pub mod caps {
    use std::time::Duration;
    /// Entries in each allow/deny list. IP networks are matched by a
    /// linear scan at connect (about 2 ns each), so 10,000 networks cost
    /// ~20 µs per connection; addresses and domains are hash lookups.
    pub const LIST_ENTRIES_MAX: usize = 10_000;
    /// Greylist records (about 80 bytes each in memory: 1 M ≈ 80 MB).
    pub const GREYLIST_RECORDS_MAX: usize = 10_000_000;
    /// Failed-login and ban records (about 64 bytes each).
    pub const AUTH_RECORDS_MAX: usize = 1_000_000;
    /// IPs tracked by the connection rate limit (about 48 bytes each).
    pub const RATE_RECORDS_MAX: usize = 1_000_000;
    /// Longest greylist delay: beyond a day no sender retries in time.
    pub const GREYLIST_DELAY_MAX: Duration = Duration::from_secs(86_400);
    /// Longest record lifetime, allow-list lifetime or ban time (a year).
    pub const LIFETIME_MAX: Duration = Duration::from_secs(365 * 86_400);
    /// Shortest cleanup interval (a pass walks every record).
    pub const CLEANUP_INTERVAL_MIN: Duration = Duration::from_secs(1);
    /// Most connections per minute a rate limit may allow.
    pub const CONNECTIONS_PER_MINUTE_MAX: u32 = 1_000_000;
}

/// The whole `[protection]` section.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectionConfig {
    /// `[protection.lists]`: IP and sender allow/deny lists (§6.2.2).
    pub lists: ListsConfig,
    /// `[protection.greylist]` (§6.2.1.23–24, appendix 1).
    pub greylist: GreylistConfig,
    /// `[protection.auth]`: "authentication security" (§6.2.1.18–21, §6.2.3).
    pub auth: AuthSecurityConfig,
    /// `[protection.rate]`: connections per minute per client IP.
    pub rate: RateConfig,
}

/// "Enable SMTP ip/sender whitelist/blacklist" and the four lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListsConfig {
    /// Seed "Enable SMTP ip/sender whitelist/blacklist" (default on).
    pub enabled: bool,
    /// Sending servers' IPs/networks always let in: no greylisting, never
    /// banned, no rate limit (and, later, no DNSBL). Not a relay right:
    /// that is `smtp.full_allowed_ips`.
    pub ip_allow: Vec<IpNet>,
    /// Refused at connect with 554 5.7.1 (unless also in `ip_allow`).
    pub ip_deny: Vec<IpNet>,
    /// Envelope senders (`user@example.org`, or `@example.org` for the
    /// whole domain) that skip greylisting.
    pub sender_allow: Vec<String>,
    /// Envelope senders refused at MAIL FROM with 550 5.7.1 (unless also
    /// in `sender_allow`).
    pub sender_deny: Vec<String>,
}

impl Default for ListsConfig {
    fn default() -> Self {
        Self { enabled: true, ip_allow: Vec::new(), ip_deny: Vec::new(), sender_allow: Vec::new(), sender_deny: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// Seed "Enable Greylist" (default on).
    pub enabled: bool,
    /// A retry is accepted only this long after the first attempt. Not a
    /// seed setting; 5 minutes is the usual practice (postgrey, RFC 6647 §6).
    #[serde(with = "duration")]
    pub delay: Duration,
    /// Seed "Server/sender greylist record lifetime": how long a first
    /// attempt is remembered while waiting for the retry (24 h).
    #[serde(with = "duration")]
    pub record_lifetime: Duration,
    /// Seed "Server/sender whitelist record lifetime": how long a triplet
    /// stays accepted after a successful retry, renewed by each use (720 h).
    #[serde(with = "duration")]
    pub allow_lifetime: Duration,
    /// Seed "Clean expired greylist records interval" (300 s); the state is
    /// also written to disk at this interval.
    #[serde(with = "duration")]
    pub cleanup_interval: Duration,
    /// Seed "Sender domains greylist ignore": envelope sender domains that
    /// are never greylisted.
    pub ignore_sender_domains: Vec<String>,
    /// Records kept at most; when full, new triplets are accepted without
    /// greylisting (logged) rather than refused.
    pub records_max: usize,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            delay: Duration::from_secs(300),
            record_lifetime: Duration::from_secs(24 * 3600),
            allow_lifetime: Duration::from_secs(720 * 3600),
            cleanup_interval: Duration::from_secs(300),
            ignore_sender_domains: Vec::new(),
            records_max: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSecurityConfig {
    /// Seed "Enable authentication security" (default on).
    pub enabled: bool,
    /// Seed "Failed auth record lifetime": failures are counted in a window
    /// of this length from the first one (60 min).
    #[serde(with = "duration")]
    pub failure_lifetime: Duration,
    /// Seed "Ban time" (60 min).
    #[serde(with = "duration")]
    pub ban_time: Duration,
    /// Seed "Max failed authentication attempts": the IP is banned at this
    /// many failures within `failure_lifetime` (3).
    pub failures_max: u32,
    /// Failure records and bans kept at most (each).
    pub records_max: usize,
}

impl Default for AuthSecurityConfig {
    fn default() -> Self {
        Self { enabled: true, failure_lifetime: Duration::from_secs(3600), ban_time: Duration::from_secs(3600), failures_max: 3, records_max: 100_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// New connections (SMTP, IMAP and POP3 together) one client IP may
    /// open per minute; absent = no rate limit (the default).
    pub connections_per_minute: Option<u32>,
    /// Client IPs tracked at most; when full, untracked IPs are not limited.
    pub records_max: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self { connections_per_minute: None, records_max: 100_000 }
    }
}

impl ProtectionConfig {
    /// Range checks; called by `Config::validate`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.lists;
        for (name, n) in [
            ("protection.lists.ip_allow", l.ip_allow.len()),
            ("protection.lists.ip_deny", l.ip_deny.len()),
            ("protection.lists.sender_allow", l.sender_allow.len()),
            ("protection.lists.sender_deny", l.sender_deny.len()),
        ] {
            if n > caps::LIST_ENTRIES_MAX {
                return Err(invalid(name, format!("at most {} entries", caps::LIST_ENTRIES_MAX)));
            }
        }
        for entry in l.sender_allow.iter() {
            SenderEntry::parse(entry).map_err(|e| invalid("protection.lists.sender_allow", e))?;
        }
        for entry in l.sender_deny.iter() {
            SenderEntry::parse(entry).map_err(|e| invalid("protection.lists.sender_deny", e))?;
        }
        let g = &self.greylist;
        if g.delay > caps::GREYLIST_DELAY_MAX {
            return Err(invalid("protection.greylist.delay", "at most 24h"));
        }
        for (name, d) in [("protection.greylist.record_lifetime", g.record_lifetime), ("protection.greylist.allow_lifetime", g.allow_lifetime)] {
            if d.is_zero() || d > caps::LIFETIME_MAX {
                return Err(invalid(name, "must be 1s to 365d"));
            }
        }
        if g.record_lifetime <= g.delay {
            return Err(invalid("protection.greylist.record_lifetime", "must be longer than protection.greylist.delay, or no retry could ever pass"));
        }
        if g.cleanup_interval < caps::CLEANUP_INTERVAL_MIN || g.cleanup_interval > caps::LIFETIME_MAX {
            return Err(invalid("protection.greylist.cleanup_interval", "must be 1s to 365d"));
        }
        if g.ignore_sender_domains.len() > caps::LIST_ENTRIES_MAX {
            return Err(invalid("protection.greylist.ignore_sender_domains", format!("at most {} entries", caps::LIST_ENTRIES_MAX)));
        }
        for d in &g.ignore_sender_domains {
            crate::address::normalize_domain(d.trim_start_matches('@')).map_err(|_| invalid("protection.greylist.ignore_sender_domains", format!("{d:?} is not a domain")))?;
        }
        if g.records_max == 0 || g.records_max > caps::GREYLIST_RECORDS_MAX {
            return Err(invalid("protection.greylist.records_max", format!("must be 1 to {}", caps::GREYLIST_RECORDS_MAX)));
        }
        let a = &self.auth;
        for (name, d) in [("protection.auth.failure_lifetime", a.failure_lifetime), ("protection.auth.ban_time", a.ban_time)] {
            if d.is_zero() || d > caps::LIFETIME_MAX {
                return Err(invalid(name, "must be 1s to 365d"));
            }
        }
        if a.failures_max == 0 || a.failures_max > 1000 {
            return Err(invalid("protection.auth.failures_max", "must be 1 to 1000"));
        }
        if a.records_max == 0 || a.records_max > caps::AUTH_RECORDS_MAX {
            return Err(invalid("protection.auth.records_max", format!("must be 1 to {}", caps::AUTH_RECORDS_MAX)));
        }
        let r = &self.rate;
        if r.connections_per_minute.is_some_and(|n| n == 0 || n > caps::CONNECTIONS_PER_MINUTE_MAX) {
            return Err(invalid("protection.rate.connections_per_minute", format!("must be 1 to {} (leave it out for no limit)", caps::CONNECTIONS_PER_MINUTE_MAX)));
        }
        if r.records_max == 0 || r.records_max > caps::RATE_RECORDS_MAX {
            return Err(invalid("protection.rate.records_max", format!("must be 1 to {}", caps::RATE_RECORDS_MAX)));
        }
        Ok(())
    }
}

/// One sender list entry: a full address or a whole domain (`@domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEntry {
    /// Case-folded `local@domain` ([`EmailAddress::key`]).
    Address(String),
    /// Lower-case domain.
    Domain(String),
}

impl SenderEntry {
    pub fn parse(text: &str) -> Result<SenderEntry, String> {
        let t = text.trim();
        if let Some(domain) = t.strip_prefix('@') {
            return crate::address::normalize_domain(domain).map(SenderEntry::Domain).map_err(|_| format!("{text:?} is not @domain"));
        }
        EmailAddress::parse(t).map(|a| SenderEntry::Address(a.key())).map_err(|_| format!("{text:?} is neither an address nor @domain"))
    }
}

/// A compiled sender list: hash lookups of the address and its domain.
#[derive(Debug, Clone, Default)]
pub struct SenderList {
    addresses: HashSet<String>,
    domains: HashSet<String>,
}

impl SenderList {
    /// Compiles a validated list; entries that do not parse are skipped
    /// (validation refused them already).
    pub fn compile(entries: &[String]) -> SenderList {
        let mut list = SenderList::default();
        for e in entries {
            match SenderEntry::parse(e) {
                Ok(SenderEntry::Address(a)) => {
                    list.addresses.insert(a);
                }
                Ok(SenderEntry::Domain(d)) => {
                    list.domains.insert(d);
                }
                Err(_) => {}
            }
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }

    /// The address, or its whole domain, is listed.
    pub fn contains(&self, address: &EmailAddress) -> bool {
        if self.is_empty() {
            return false;
        }
        let domain = address.domain();
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.domains.contains(domain) || self.addresses.contains(&address.key())
    }
}

/// What a list says about a client or a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// On the allow list (wins over the deny list).
    Allow,
    Deny,
    /// On neither.
    No,
}

/// The compiled IP lists.
#[derive(Debug, Clone, Default)]
pub struct IpLists {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpLists {
    /// Empty lists when `enabled` is off.
    pub fn compile(c: &ListsConfig) -> IpLists {
        if !c.enabled {
            return IpLists::default();
        }
        IpLists { allow: c.ip_allow.clone(), deny: c.ip_deny.clone() }
    }

    pub fn check(&self, ip: IpAddr) -> Listed {
        if self.allow.iter().any(|n| n.contains(ip)) {
            Listed::Allow
        } else if self.deny.iter().any(|n| n.contains(ip)) {
            Listed::Deny
        } else {
            Listed::No
        }
    }
}

/// The compiled sender lists.
#[derive(Debug, Clone, Default)]
pub struct SenderLists {
    allow: SenderList,
    deny: SenderList,
}

impl SenderLists {
    /// Empty lists when `enabled` is off.
    pub fn compile(c: &ListsConfig) -> SenderLists {
        if !c.enabled {
            return SenderLists::default();
        }
        SenderLists { allow: SenderList::compile(&c.sender_allow), deny: SenderList::compile(&c.sender_deny) }
    }

    /// The null sender (`MAIL FROM:<>`) is on no list.
    pub fn check(&self, sender: Option<&EmailAddress>) -> Listed {
        let Some(sender) = sender else { return Listed::No };
        if self.allow.contains(sender) {
            Listed::Allow
        } else if self.deny.contains(sender) {
            Listed::Deny
        } else {
            Listed::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    #[test]
    fn sender_entries_match_address_or_domain_case_insensitively() {
        let c = ListsConfig { sender_allow: vec!["Boss@Example.org".into()], sender_deny: vec!["@Spam.Test".into(), "eve@example.org".into()], ..Default::default() };
        let s = SenderLists::compile(&c);
        assert_eq!(s.check(Some(&addr("boss@example.org"))), Listed::Allow);
        assert_eq!(s.check(Some(&addr("BOSS@EXAMPLE.ORG"))), Listed::Allow);
        assert_eq!(s.check(Some(&addr("anyone@spam.test"))), Listed::Deny);
        assert_eq!(s.check(Some(&addr("Eve@example.org"))), Listed::Deny);
        assert_eq!(s.check(Some(&addr("bob@example.org"))), Listed::No);
        // A subdomain is not the domain.
        assert_eq!(s.check(Some(&addr("a@sub.spam.test"))), Listed::No);
        assert_eq!(s.check(None), Listed::No);
    }

    #[test]
    fn allow_wins_over_deny() {
        let c = ListsConfig {
            sender_allow: vec!["ok@spam.test".into()],
            sender_deny: vec!["@spam.test".into()],
            ip_allow: vec!["10.0.0.5".parse().unwrap()],
            ip_deny: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(SenderLists::compile(&c).check(Some(&addr("ok@spam.test"))), Listed::Allow);
        let ips = IpLists::compile(&c);
        assert_eq!(ips.check("10.0.0.5".parse().unwrap()), Listed::Allow);
        assert_eq!(ips.check("10.200.0.1".parse().unwrap()), Listed::Deny);
        assert_eq!(ips.check("11.0.0.1".parse().unwrap()), Listed::No);
    }

    #[test]
    fn ip_lists_match_cidr_v4_and_v6_and_mapped() {
        let c = ListsConfig { ip_deny: vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()], ..Default::default() };
        let ips = IpLists::compile(&c);
        assert_eq!(ips.check("192.0.2.77".parse().unwrap()), Listed::Deny);
        assert_eq!(ips.check("192.0.3.1".parse().unwrap()), Listed::No);
        assert_eq!(ips.check("2001:db8:1::9".parse().unwrap()), Listed::Deny);
        assert_eq!(ips.check("2001:db9::1".parse().unwrap()), Listed::No);
        assert_eq!(ips.check("::ffff:192.0.2.1".parse().unwrap()), Listed::Deny);
    }

    #[test]
    fn disabled_lists_match_nothing() {
        let c = ListsConfig { enabled: false, ip_deny: vec!["0.0.0.0/0".parse().unwrap()], sender_deny: vec!["@example.org".into()], ..Default::default() };
        assert_eq!(IpLists::compile(&c).check("192.0.2.1".parse().unwrap()), Listed::No);
        assert_eq!(SenderLists::compile(&c).check(Some(&addr("a@example.org"))), Listed::No);
    }

    #[test]
    fn validation_refuses_bad_entries_and_ranges() {
        let mut p = ProtectionConfig::default();
        assert!(p.validate().is_ok());
        p.lists.sender_deny = vec!["not an address".into()];
        assert!(p.validate().is_err());
        p = ProtectionConfig::default();
        p.greylist.delay = Duration::from_secs(48 * 3600);
        assert!(p.validate().is_err());
        p = ProtectionConfig::default();
        p.greylist.record_lifetime = Duration::from_secs(60);
        assert!(p.validate().is_err(), "lifetime below the delay");
        p = ProtectionConfig::default();
        p.auth.failures_max = 0;
        assert!(p.validate().is_err());
        p = ProtectionConfig::default();
        p.rate.connections_per_minute = Some(0);
        assert!(p.validate().is_err());
    }

    #[test]
    fn defaults_follow_the_seed() {
        let p = ProtectionConfig::default();
        assert!(p.lists.enabled && p.greylist.enabled && p.auth.enabled);
        assert_eq!(p.greylist.record_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(p.greylist.allow_lifetime, Duration::from_secs(720 * 3600));
        assert_eq!(p.greylist.cleanup_interval, Duration::from_secs(300));
        assert_eq!((p.auth.failure_lifetime, p.auth.ban_time, p.auth.failures_max), (Duration::from_secs(3600), Duration::from_secs(3600), 3));
        assert_eq!(p.rate.connections_per_minute, None);
    }
}
