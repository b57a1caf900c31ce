//! `[checks]`: the DNS-based checks of inbound mail
//! (docs/design/auth-checks.md): SPF (RFC 7208), DKIM verification
//! (RFC 6376), DMARC (RFC 7489), ARC (RFC 8617), DNSBL and FCrDNS.
//! Names follow the seed product's settings (seed 002 §6.2.1.17 "DNSBL
//! listed at threshold", §6.2.1.22 "Block senders with SPF fail result",
//! §6.2.1.25 "Enable DNSBL checks"), with the seed's defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, invalid, ConfigError};

/// Hard caps of the check settings.
pub mod caps {
    use std::time::Duration;
    /// DNSBL zones queried per connection: each costs one query per
    /// connection (cached per shard), all in flight at once.
    pub const DNSBL_ZONES_MAX: usize = 32;
    /// DKIM signatures verified per message: each costs a key lookup and
    /// an RSA/Ed25519 verification (RFC 6376 §6.1 lets a verifier limit
    /// the signatures it checks).
    pub const DKIM_SIGNATURES_MAX: usize = 20;
    /// Longest a stage (connect, MAIL FROM, end of data) may wait for DNS.
    pub const TIMEOUT_MAX: Duration = Duration::from_secs(60);
}

/// Unauthenticated inbound mail only: authenticated sessions and
/// `smtp.full_allowed_ips` clients skip every check (submission).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// Evaluate SPF (RFC 7208) for MAIL FROM (the HELO identity when MAIL
    /// FROM is `<>`) when MAIL FROM arrives.
    pub spf: bool,
    /// "Block senders with SPF fail result" (seed §6.2.1.22): an SPF
    /// `fail` is refused at MAIL FROM with 550 5.7.23 (RFC 7372);
    /// otherwise the result is only recorded.
    pub spf_block_fail: bool,
    /// Verify DKIM signatures (RFC 6376) when the content is complete.
    pub dkim: bool,
    /// Signatures verified per message, the first ones in the header.
    pub dkim_signatures_max: usize,
    /// Evaluate DMARC (RFC 7489) and apply the sender domain's policy:
    /// `p=reject` refuses the message (550 5.7.1), `p=quarantine`
    /// delivers it into the recipient's `storage.junk_folder`.
    pub dmarc: bool,
    /// Verify ARC chains (RFC 8617); the result is only reported in
    /// Authentication-Results.
    pub arc: bool,
    /// Look up the client's reverse name and confirm it forward (FCrDNS);
    /// the confirmed name goes into the Received header.
    pub fcrdns: bool,
    /// Refuse (501 5.5.2) an EHLO/HELO argument that is not a valid
    /// domain or address literal, or that names this server. Off by
    /// default: many legitimate clients send odd names.
    pub helo_strict: bool,
    /// "Enable DNSBL checks" (seed §6.2.1.25).
    pub dnsbl: bool,
    /// DNSBL zones queried for the client address (e.g.
    /// `zen.spamhaus.org`); empty = no DNSBL lookups.
    pub dnsbl_zones: Vec<String>,
    /// "DNSBL listed at threshold" (seed §6.2.1.17): listed in at least
    /// this many zones, the client is refused at MAIL FROM (554 5.7.1);
    /// listed in fewer, the message gets an `X-Blacklisted:` header.
    pub dnsbl_threshold: usize,
    /// Longest the checks of one stage wait for DNS (lookups run in
    /// parallel; a lookup still unanswered then counts as a temporary
    /// error).
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        Self {
            spf: true,
            spf_block_fail: true,
            dkim: true,
            dkim_signatures_max: 5,
            dmarc: true,
            arc: true,
            fcrdns: true,
            helo_strict: false,
            dnsbl: true,
            dnsbl_zones: Vec::new(),
            dnsbl_threshold: 3,
            timeout: Duration::from_secs(20),
        }
    }
}

impl ChecksConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dkim_signatures_max == 0 || self.dkim_signatures_max > caps::DKIM_SIGNATURES_MAX {
            return Err(invalid("checks.dkim_signatures_max", format!("must be 1 to {}", caps::DKIM_SIGNATURES_MAX)));
        }
        if self.dnsbl_zones.len() > caps::DNSBL_ZONES_MAX {
            return Err(invalid("checks.dnsbl_zones", format!("at most {} zones", caps::DNSBL_ZONES_MAX)));
        }
        for zone in &self.dnsbl_zones {
            let ok = !zone.is_empty()
                && zone.len() <= 200
                && zone.trim_end_matches('.').split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            if !ok {
                return Err(invalid("checks.dnsbl_zones", format!("{zone:?} is not a DNS zone name")));
            }
        }
        if self.dnsbl_threshold == 0 || self.dnsbl_threshold > caps::DNSBL_ZONES_MAX {
            return Err(invalid("checks.dnsbl_threshold", format!("must be 1 to {}", caps::DNSBL_ZONES_MAX)));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > caps::TIMEOUT_MAX {
            return Err(invalid("checks.timeout", "must be 100ms to 60s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed_and_validate() {
        let c = ChecksConfig::default();
        assert!(c.spf_block_fail && c.dnsbl && !c.helo_strict);
        assert_eq!(c.dnsbl_threshold, 3);
        c.validate().unwrap();
    }

    #[test]
    fn limits_refused() {
        let bad = [
            ChecksConfig { dnsbl_zones: vec!["bad zone".into()], ..Default::default() },
            ChecksConfig { dnsbl_zones: (0..33).map(|i| format!("z{i}.example")).collect(), ..Default::default() },
            ChecksConfig { dnsbl_threshold: 0, ..Default::default() },
            ChecksConfig { dkim_signatures_max: 0, ..Default::default() },
            ChecksConfig { timeout: Duration::from_secs(600), ..Default::default() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
