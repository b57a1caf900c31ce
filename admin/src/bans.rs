//! `varan ban list|add|del`: the banned client IPs (seed 002 §6.2.3).
//!
//! Works while the server runs, like `varan queue`: the command appends
//! to the ban log (`<data_dir>/protect/bans.log`) under the same `flock`
//! the server uses, and the server applies the line within a second
//! (`varan_storage::bans`). `list` replays the log, which the server
//! appends its own bans to within a second of making them.

use crate::AdminError;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use varan_core::config::protect::{IpLists, Listed};
use varan_core::config::Config;
use varan_storage::bans::{ban_log_path, Ban, BanEvent, BanLog, BanReason};

/// Longest manual ban (the same cap as the ban time setting).
pub const BAN_MINUTES_MAX: u64 = varan_core::config::protect::caps::LIFETIME_MAX.as_secs() / 60;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn parse_ip(text: &str) -> Result<IpAddr, AdminError> {
    text.trim().parse().map_err(|_| AdminError::Invalid(format!("{text:?} is not an IP address")))
}

/// One line per active ban: IP, end time, minutes left, reason.
pub fn list(config: &Config) -> Result<String, AdminError> {
    let path = ban_log_path(&config.server.data_dir);
    let now = now();
    let bans = BanLog::replay(&path, now).map_err(|e| AdminError::io(&path, e))?;
    let mut out = String::new();
    for (ip, ban) in bans {
        let left = ban.until.saturating_sub(now).div_ceil(60);
        let until = varan_core::datetime::rfc5322(i64::try_from(ban.until).unwrap_or(i64::MAX));
        let _ = writeln!(out, "{ip} until {until} ({left} min left) {}", ban.reason.as_str());
    }
    Ok(out)
}

/// Bans `ip` for `minutes` (default: `protection.auth.ban_time`).
/// Allow-listed IPs cannot be banned. Returns the ban's end (Unix seconds).
pub fn add(config: &Config, ip: IpAddr, minutes: Option<u64>) -> Result<u64, AdminError> {
    if IpLists::compile(&config.protection.lists).check(ip) == Listed::Allow {
        return Err(AdminError::Invalid(format!("{ip} is on protection.lists.ip_allow: allow-listed clients are never banned")));
    }
    let length = match minutes {
        Some(m) if m == 0 || m > BAN_MINUTES_MAX => return Err(AdminError::Invalid(format!("--minutes must be 1 to {BAN_MINUTES_MAX}"))),
        Some(m) => Duration::from_secs(m * 60),
        None => config.protection.auth.ban_time,
    };
    let until = now() + length.as_secs();
    let path = ban_log_path(&config.server.data_dir);
    BanLog::new(&path).append(&[BanEvent::Ban { ip, ban: Ban { until, reason: BanReason::Manual } }]).map_err(|e| AdminError::io(&path, e))?;
    Ok(until)
}

/// Lifts the ban of `ip` (and forgets its failed logins). Returns whether
/// it was banned.
pub fn del(config: &Config, ip: IpAddr) -> Result<bool, AdminError> {
    let path = ban_log_path(&config.server.data_dir);
    let was = BanLog::replay(&path, now()).map_err(|e| AdminError::io(&path, e))?.iter().any(|(i, _)| *i == ip);
    BanLog::new(&path).append(&[BanEvent::Unban { ip }]).map_err(|e| AdminError::io(&path, e))?;
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_path_buf();
        c.protection.lists.ip_allow = vec!["192.0.2.0/24".parse().unwrap()];
        c
    }

    #[test]
    fn add_list_del() {
        let dir = std::env::temp_dir().join(format!("varan-admin-bans-{}", std::process::id()));
        let c = config(&dir);
        assert_eq!(list(&c).unwrap(), "");
        let ip = parse_ip("198.51.100.7").unwrap();
        add(&c, ip, Some(5)).unwrap();
        let text = list(&c).unwrap();
        assert!(text.starts_with("198.51.100.7 until ") && text.contains("(5 min left) manual"), "{text}");
        assert!(add(&c, parse_ip("192.0.2.1").unwrap(), None).is_err(), "allow-listed");
        assert!(add(&c, ip, Some(0)).is_err());
        assert!(del(&c, ip).unwrap());
        assert!(!del(&c, ip).unwrap());
        assert_eq!(list(&c).unwrap(), "");
        assert!(parse_ip("nope").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
