//! `[queue]`, `[outbound]` and `[dns]`: outbound delivery
//! (docs/design/outbound.md). Queue timing, the transport (HELO name,
//! source addresses, timeouts, TLS, smarthost, concurrency) and the
//! resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, invalid, ConfigError};

/// Hard caps of the outbound settings.
pub mod caps {
    use std::time::Duration;
    /// Longest a message may stay queued (a year is already absurd).
    pub const LIFETIME_MAX: Duration = Duration::from_secs(365 * 86_400);
    /// Outbound connections of the whole server.
    pub const CONNECTIONS_MAX: usize = 10_000;
    /// Entries a runner takes from the store per scan.
    pub const BATCH_MAX: usize = 10_000;
    /// DNS answers cached per shard.
    pub const DNS_CACHE_ENTRIES_MAX: usize = 1_000_000;
    /// DNS servers tried.
    pub const DNS_SERVERS_MAX: usize = 8;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Wait after the first temporary failure; doubled after each further
    /// one up to `retry_max`.
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// After this long in the queue a message fails for good (5.4.7) and
    /// the sender gets a failure DSN.
    #[serde(with = "duration")]
    pub lifetime: Duration,
    /// A message still undelivered this long after it was queued gets one
    /// delay DSN (RFC 3464 `Action: delayed`). Must be below `lifetime`.
    #[serde(with = "duration")]
    pub delay_warning: Duration,
    /// Longest a runner sleeps before looking for new entries (entries are
    /// handed over by the journal checkpoint without a wake-up).
    #[serde(with = "duration")]
    pub scan_interval: Duration,
    /// Entries a runner takes from the store per scan.
    pub batch: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_secs(5 * 60),
            retry_max: Duration::from_secs(60 * 60),
            lifetime: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::from_secs(4 * 3600),
            scan_interval: Duration::from_secs(1),
            batch: 100,
        }
    }
}

/// STARTTLS towards MX hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, certificate not checked (RFC 7435); a refusal
    /// or a failed handshake falls back to plaintext.
    Opportunistic,
}

/// TLS towards a smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    /// Plaintext (AUTH in the clear: closed networks only).
    None,
    /// STARTTLS required, certificate verified: no fallback.
    Starttls,
    /// Implicit TLS (port 465), certificate verified.
    Implicit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Name in EHLO; empty = `server.hostname`.
    pub helo_name: String,
    /// Source address for IPv4 / IPv6 connections; absent = the kernel's
    /// choice.
    pub source_ipv4: Option<Ipv4Addr>,
    pub source_ipv6: Option<Ipv6Addr>,
    /// Port of MX hosts (25; tests use another).
    pub mx_port: u16,
    /// TCP connect (and TLS handshake) timeout per address.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    pub tls: OutboundTls,
    /// Default smarthost for all remote mail: `host:port` or
    /// `user:pass@host:port`; empty = deliver to MX hosts. A domain's own
    /// `smarthost` takes precedence for senders of that domain.
    pub smarthost: String,
    pub smarthost_tls: SmarthostTls,
    /// CA bundle used to verify smarthost certificates (PEM).
    pub ca_file: PathBuf,
    /// Outbound SMTP connections of the whole server (split across shards).
    pub connections_max: usize,
    /// Simultaneous connections to one destination (domain or smarthost),
    /// split across shards, at least one per shard.
    pub connections_per_destination_max: usize,
    /// Messages sent over one connection before it is closed.
    pub messages_per_connection_max: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            helo_name: String::new(),
            source_ipv4: None,
            source_ipv6: None,
            mx_port: 25,
            connect_timeout: Duration::from_secs(30),
            tls: OutboundTls::Opportunistic,
            smarthost: String::new(),
            smarthost_tls: SmarthostTls::Starttls,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            connections_max: 100,
            connections_per_destination_max: 10,
            messages_per_connection_max: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (`ip:port`); empty = those of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// One attempt of a query; a query makes at most two attempts per
    /// server.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Answers cached per shard (least recently inserted evicted first).
    pub cache_entries_max: usize,
    /// Longest a negative answer (NXDOMAIN, no records) is cached.
    #[serde(with = "duration")]
    pub negative_ttl_max: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self { servers: Vec::new(), timeout: Duration::from_secs(10), cache_entries_max: 10_000, negative_ttl_max: Duration::from_secs(300) }
    }
}

/// LMTP delivery of local mail to an external store (seed 002
/// §6.2.1.8–10), e.g. an existing Dovecot: mail for the served domains goes
/// through the queue to `host:port` over LMTP (RFC 2033) instead of into
/// Varan's own Maildir. Recipients are still resolved (aliases, groups)
/// and checked by Varan at RCPT time; the LMTP server gets the final
/// mailbox addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpConfig {
    pub enabled: bool,
    /// Host name or IP address of the LMTP server.
    pub host: String,
    pub port: u16,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        Self { enabled: false, host: "127.0.0.1".into(), port: 24 }
    }
}

/// A parsed smarthost setting (seed 002 §6.2.5.1.8).
#[derive(Clone, PartialEq, Eq)]
pub struct Smarthost {
    pub host: String,
    pub port: u16,
    /// `user:pass` for AUTH.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Smarthost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smarthost").field("host", &self.host).field("port", &self.port).field("user", &self.credentials.as_ref().map(|c| &c.0)).finish()
    }
}

impl Smarthost {
    /// `host:port`, `[v6]:port` or `user:pass@host:port`. The password may
    /// contain `@` and `:` (the last `@` ends the credentials, the first
    /// `:` ends the user name).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (creds, hostport) = match text.rsplit_once('@') {
            Some((c, h)) => {
                let (user, pass) = c.split_once(':').ok_or("credentials must be user:pass")?;
                if user.is_empty() {
                    return Err("empty user name".into());
                }
                (Some((user.to_owned(), pass.to_owned())), h)
            }
            None => (None, text),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or("missing :port")?;
        let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
        if port == 0 {
            return Err("port 0".into());
        }
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let valid_name = !host.is_empty() && host.len() <= 253 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !valid_name && host.parse::<IpAddr>().is_err() {
            return Err(format!("bad host {host:?}"));
        }
        Ok(Self { host: host.to_owned(), port, credentials: creds })
    }
}

impl super::Config {
    pub(super) fn validate_outbound(&self) -> Result<(), ConfigError> {
        if self.lmtp.enabled {
            Smarthost::parse(&format!("{}:{}", self.lmtp.host, self.lmtp.port)).map_err(|e| invalid("lmtp.host", e))?;
        }
        let q = &self.queue;
        if q.retry_initial < Duration::from_secs(1) || q.retry_max < q.retry_initial {
            return Err(invalid("queue.retry_initial", "must be at least 1s and at most queue.retry_max"));
        }
        if q.lifetime < q.retry_initial || q.lifetime > caps::LIFETIME_MAX {
            return Err(invalid("queue.lifetime", "must be between queue.retry_initial and 365d"));
        }
        if q.delay_warning >= q.lifetime {
            return Err(invalid("queue.delay_warning", "must be less than queue.lifetime"));
        }
        if q.scan_interval < Duration::from_millis(10) || q.scan_interval > Duration::from_secs(3600) {
            return Err(invalid("queue.scan_interval", "must be 10ms to 1h"));
        }
        if q.batch == 0 || q.batch > caps::BATCH_MAX {
            return Err(invalid("queue.batch", format!("must be 1 to {}", caps::BATCH_MAX)));
        }
        let o = &self.outbound;
        if o.connections_max == 0 || o.connections_max > caps::CONNECTIONS_MAX {
            return Err(invalid("outbound.connections_max", format!("must be 1 to {}", caps::CONNECTIONS_MAX)));
        }
        if o.connections_per_destination_max == 0 || o.messages_per_connection_max == 0 {
            return Err(invalid("outbound.connections_per_destination_max", "connection and message limits must be at least 1"));
        }
        if o.connect_timeout < Duration::from_millis(100) || o.connect_timeout > Duration::from_secs(600) {
            return Err(invalid("outbound.connect_timeout", "must be 100ms to 10m"));
        }
        if o.mx_port == 0 {
            return Err(invalid("outbound.mx_port", "must not be 0"));
        }
        if !o.smarthost.is_empty() {
            Smarthost::parse(&o.smarthost).map_err(|e| invalid("outbound.smarthost", e))?;
        }
        for d in &self.domains {
            if !d.smarthost.is_empty() {
                Smarthost::parse(&d.smarthost).map_err(|e| invalid("domain.smarthost", format!("{}: {e}", d.name)))?;
            }
        }
        let dns = &self.dns;
        if dns.servers.len() > caps::DNS_SERVERS_MAX {
            return Err(invalid("dns.servers", format!("at most {}", caps::DNS_SERVERS_MAX)));
        }
        if dns.timeout < Duration::from_millis(100) || dns.timeout > Duration::from_secs(120) {
            return Err(invalid("dns.timeout", "must be 100ms to 2m"));
        }
        if dns.cache_entries_max == 0 || dns.cache_entries_max > caps::DNS_CACHE_ENTRIES_MAX {
            return Err(invalid("dns.cache_entries_max", format!("must be 1 to {}", caps::DNS_CACHE_ENTRIES_MAX)));
        }
        Ok(())
    }

    /// The smarthost for mail from `sender_domain`: the domain's own, else
    /// the global one, else `None` (MX delivery). Validated at load time,
    /// so parse errors cannot happen here; they yield `None`.
    pub fn smarthost_for(&self, sender_domain: &str) -> Option<Smarthost> {
        let own = self.domain(sender_domain).map(|d| d.smarthost.as_str()).filter(|s| !s.is_empty());
        let text = own.or(Some(self.outbound.smarthost.as_str()).filter(|s| !s.is_empty()))?;
        Smarthost::parse(text).ok()
    }

    /// The EHLO name for outbound connections.
    pub fn helo_name(&self) -> &str {
        if self.outbound.helo_name.is_empty() {
            &self.server.hostname
        } else {
            &self.outbound.helo_name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn smarthost_forms() {
        let s = Smarthost::parse("relay.example:587").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.credentials), ("relay.example", 587, None));
        let s = Smarthost::parse("me:p@ss:w@relay.example:25").unwrap();
        assert_eq!(s.credentials, Some(("me".into(), "p@ss:w".into())));
        assert_eq!(Smarthost::parse("[::1]:2525").unwrap().host, "::1");
        assert!(!format!("{s:?}").contains("p@ss"));
        for bad in ["relay.example", "relay.example:0", "relay.example:x", ":25", "nocolon@h:25", "bad host:25"] {
            assert!(Smarthost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let c = Config::from_toml(
            "[server]\nhostname = \"mx.example\"\n[queue]\nretry_initial = \"2s\"\nretry_max = \"4s\"\nlifetime = \"30s\"\ndelay_warning = \"10s\"\n[outbound]\nsmarthost = \"relay:25\"\n[dns]\nservers = [\"127.0.0.1:5353\"]\n[[domain]]\nname = \"a.example\"\nsmarthost = \"u:p@ra:587\"\n",
        )
        .unwrap();
        assert_eq!(c.queue.retry_initial, Duration::from_secs(2));
        assert_eq!(c.helo_name(), "mx.example");
        assert_eq!(c.smarthost_for("A.example").unwrap().host, "ra");
        assert_eq!(c.smarthost_for("b.example").unwrap().host, "relay");
        assert!(Config::from_toml("[queue]\ndelay_warning = \"6d\"\n").is_err());
        assert!(Config::from_toml("[outbound]\nsmarthost = \"nope\"\n").is_err());
        assert!(Config::from_toml("[[domain]]\nname = \"a.example\"\nsmarthost = \"x@y\"\n").is_err());
        let d = Config::default();
        assert!(d.smarthost_for("a.example").is_none());
        assert_eq!(d.queue.lifetime, Duration::from_secs(5 * 86_400));
    }
}
