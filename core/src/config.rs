//! The configuration file model (TOML), its defaults and its hard limits.
//!
//! Every setting an administrator can change is a field here with its
//! default in one place (the `Default` impls) and, where a peer can make us
//! spend memory or time, a hard cap checked by [`Config::validate`]. The
//! settings reference in `docs/configuration.md` documents each field; the
//! seed product's names (seed 002 §6.2.1) are noted beside them.
//!
//! Values with units are written as strings: durations `"300ms"`, `"30s"`,
//! `"5m"`, `"24h"`, `"30d"`; sizes `"512"`, `"64KiB"`, `"30MB"`, `"1GiB"`
//! (KB/MB/GB are decimal, KiB/MiB/GiB binary).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod checks;
mod outbound;
pub use checks::{caps as checks_caps, ChecksConfig};
pub use outbound::{caps as outbound_caps, DnsConfig, LmtpConfig, OutboundConfig, OutboundTls, QueueConfig, Smarthost, SmarthostTls};
pub mod protect;
pub use protect::ProtectionConfig;

/// Why a configuration was refused. The text names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration syntax: {0}")]
    Syntax(String),
    #[error("setting `{setting}`: {reason}")]
    Invalid { setting: &'static str, reason: String },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting, reason: reason.into() }
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub smtp: SmtpConfig,
    pub imap: ImapConfig,
    pub pop3: Pop3Config,
    pub storage: StorageConfig,
    pub admin: AdminConfig,
    pub dkim: DkimConfig,
    /// Outbound queue timing (retries, lifetime, delay warnings).
    pub queue: QueueConfig,
    /// Outbound SMTP transport.
    pub outbound: OutboundConfig,
    /// Resolver for outbound delivery.
    pub dns: DnsConfig,
    /// Local mail handed to an external LMTP server instead of the Maildir.
    pub lmtp: LmtpConfig,
    /// Lists, greylisting, bans and rate limits (docs/design/protection.md).
    pub protection: ProtectionConfig,
    /// DNS-based checks of inbound mail (SPF, DKIM, DMARC, ARC, DNSBL, FCrDNS).
    pub checks: ChecksConfig,
    /// Served mail domains (seed 002 §6.2.5.1.1).
    #[serde(rename = "domain")]
    pub domains: Vec<DomainConfig>,
    /// User database providers (seed 002 §6.2.4), in lookup order.
    #[serde(rename = "directory")]
    pub directories: Vec<DirectoryConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name in the SMTP banner and EHLO reply (seed §6.2.1.1).
    pub hostname: String,
    /// Working data: journal, spool, user databases (seed §6.2.1.17).
    pub data_dir: PathBuf,
    /// Executor threads, one per core; absent = the CPUs this process may
    /// run on (sched_getaffinity).
    pub shards: Option<usize>,
    /// Log each SMTP/IMAP session start and end (seed §6.2.1.26).
    pub log_sessions: bool,
    /// `error`, `warn`, `info`, `debug`, `trace` or a tracing filter.
    pub log_level: String,
    /// After SIGTERM, how long open sessions may finish before they are
    /// closed.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// io_uring locked memory per shard (glommio `io_memory`).
    #[serde(with = "size")]
    pub io_memory: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("/var/lib/varan"),
            shards: None,
            log_sessions: false,
            log_level: "info".into(),
            shutdown_grace: Duration::from_secs(30),
            io_memory: 2 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (seed §6.2.1.20). TLS listeners and STARTTLS
    /// are offered only when both files can be read.
    pub certificate: PathBuf,
    /// PEM private key (seed §6.2.1.21).
    pub private_key: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { certificate: "/etc/varan/tls/fullchain.pem".into(), private_key: "/etc/varan/tls/privkey.pem".into() }
    }
}

/// How bare CR or LF inside DATA is treated (RFC 5321 §2.3.8). In both
/// modes only `<CRLF>.<CRLF>` ends a message, so SMTP smuggling
/// (`<LF>.<CRLF>` and friends) cannot split one message into two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewlines {
    /// Accept; a bare CR or LF is stored as a line break.
    Normalize,
    /// Refuse the message with 550 5.5.2 after its end.
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// MX listeners, port 25 (seed §6.2.1.4–5). Empty = none.
    pub listen: Vec<SocketAddr>,
    /// Submission listeners, port 587: STARTTLS, AUTH required (RFC 6409).
    pub submission_listen: Vec<SocketAddr>,
    /// Implicit-TLS submission, port 465 (RFC 8314, seed §6.2.1.6).
    pub smtps_listen: Vec<SocketAddr>,
    /// Simultaneous SMTP connections on the whole server (seed §6.2.1.7).
    pub connections_max: usize,
    /// Simultaneous SMTP connections from one client IP.
    pub connections_per_ip_max: usize,
    /// Largest message accepted, advertised in SIZE (seed §6.2.1.16).
    #[serde(with = "size")]
    pub message_size_max: u64,
    /// Recipients per message (RFC 5321 §4.5.3.1.8 requires ≥ 100).
    pub recipients_max: usize,
    /// Longest command line including CRLF (RFC 5321 §4.5.3.1.4: 512;
    /// extensions and SASL initial responses need more).
    #[serde(with = "size")]
    pub command_line_max: u64,
    /// Commands in one session before it is closed with 421.
    pub commands_max: u32,
    /// Syntax and sequence errors in one session before 421.
    pub errors_max: u32,
    /// Failed AUTH attempts in one session before 421.
    pub auth_failures_max: u32,
    /// Waiting for the next command (RFC 5321 §4.5.3.2.7: ≥ 5 minutes).
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// Waiting for the next chunk of DATA/BDAT (§4.5.3.2.5: 3 minutes).
    #[serde(with = "duration")]
    pub data_timeout: Duration,
    /// Client IPs or networks that may relay without AUTH (seed §6.2.1.2).
    /// Empty by default: not even loopback relays without authentication.
    pub full_allowed_ips: Vec<IpNet>,
    /// Those clients may also send with an empty MAIL FROM (seed §6.2.1.3).
    pub allow_empty_sender_for_full_allowed: bool,
    /// Allow AUTH before TLS (only for closed networks).
    pub auth_without_tls: bool,
    pub bare_newlines: BareNewlines,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:25".parse().expect("literal")],
            submission_listen: vec!["0.0.0.0:587".parse().expect("literal")],
            smtps_listen: vec!["0.0.0.0:465".parse().expect("literal")],
            connections_max: 100,
            connections_per_ip_max: 20,
            message_size_max: 30 * 1_000_000,
            recipients_max: 1000,
            command_line_max: 4096,
            commands_max: 10_000,
            errors_max: 10,
            auth_failures_max: 3,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            full_allowed_ips: Vec::new(),
            allow_empty_sender_for_full_allowed: false,
            auth_without_tls: false,
            bare_newlines: BareNewlines::Normalize,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapConfig {
    /// IMAP listeners with STARTTLS, port 143 (seed §6.2.1.11–12). Empty = none.
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS IMAP listeners, port 993 (RFC 8314, seed §6.2.1.13).
    pub imaps_listen: Vec<SocketAddr>,
    /// Simultaneous IMAP connections on the whole server (seed §6.2.1.14).
    pub connections_max: usize,
    /// Simultaneous IMAP connections from one client IP (a NAT'ed office
    /// with many clients each opening several connections needs room).
    pub connections_per_ip_max: usize,
    /// Simultaneous IMAP sessions of one user (every device keeps a few).
    pub connections_per_user_max: usize,
    /// Inactivity before an authenticated session is logged out; RFC 9051
    /// §5.4 requires at least 30 minutes. IDLE sessions are kept as long.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Inactivity before a session that has not logged in is closed.
    #[serde(with = "duration")]
    pub login_timeout: Duration,
    /// Largest message APPEND accepts (advertised as APPENDLIMIT, RFC 7889).
    #[serde(with = "size")]
    pub append_size_max: u64,
    /// Longest command line (without literals) after login.
    #[serde(with = "size")]
    pub command_line_max: u64,
    /// Failed logins in one session before it is closed.
    pub auth_failures_max: u32,
    /// Bad commands in one session before it is closed with BYE.
    pub errors_max: u32,
    /// Allow LOGIN/AUTHENTICATE before TLS (only for closed networks).
    pub auth_without_tls: bool,
    /// Memory for parsed message structure (ENVELOPE, BODYSTRUCTURE) kept
    /// so repeated FETCHes do not reparse files; shared by all sessions.
    #[serde(with = "size")]
    pub cache_size: u64,
}

impl Default for ImapConfig {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:143".parse().expect("literal")],
            imaps_listen: vec!["0.0.0.0:993".parse().expect("literal")],
            connections_max: 1000,
            connections_per_ip_max: 100,
            connections_per_user_max: 50,
            idle_timeout: Duration::from_secs(30 * 60),
            login_timeout: Duration::from_secs(60),
            append_size_max: 30 * 1_000_000,
            command_line_max: 64 << 10,
            auth_failures_max: 3,
            errors_max: 20,
            auth_without_tls: false,
            cache_size: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Config {
    /// POP3 listeners with STLS, port 110. Empty = none.
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS POP3 listeners, port 995 (RFC 8314).
    pub pop3s_listen: Vec<SocketAddr>,
    /// Simultaneous POP3 connections on the whole server.
    pub connections_max: usize,
    /// Simultaneous POP3 connections from one client IP.
    pub connections_per_ip_max: usize,
    /// Inactivity before a session is closed; RFC 1939 §3 requires at
    /// least 10 minutes.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Failed logins in one session before it is closed.
    pub auth_failures_max: u32,
    /// Allow USER/PASS and AUTH before TLS (only for closed networks).
    pub auth_without_tls: bool,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:110".parse().expect("literal")],
            pop3s_listen: vec!["0.0.0.0:995".parse().expect("literal")],
            connections_max: 1000,
            connections_per_ip_max: 50,
            idle_timeout: Duration::from_secs(10 * 60),
            auth_failures_max: 3,
            auth_without_tls: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of all Maildirs: `<root>/<domain>/<local>/` (seed §6.2.5.1.2).
    pub maildir_root: PathBuf,
    /// How often delivered files are made durable and the journal trimmed.
    #[serde(with = "duration")]
    pub checkpoint_interval: Duration,
    /// Journal segments are filled with zeros to this size before use
    /// (and recycled), so a commit's fdatasync changes no metadata; 0
    /// grows segments as needed. See docs/design/durability.md.
    #[serde(with = "size")]
    pub journal_segment_size: u64,
    /// A message up to this size is kept in memory while it arrives;
    /// larger ones are spooled to disk as they stream in.
    #[serde(with = "size")]
    pub spool_memory_max: u64,
    /// Special folders (seed §6.2.5.1.3–7), created on first delivery.
    pub archive_folder: String,
    pub drafts_folder: String,
    pub junk_folder: String,
    pub sent_folder: String,
    pub trash_folder: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            maildir_root: PathBuf::from("/var/lib/varan/mail"),
            checkpoint_interval: Duration::from_secs(1),
            journal_segment_size: 32 << 20,
            spool_memory_max: 256 << 10,
            archive_folder: "Archive".into(),
            drafts_folder: "Drafts".into(),
            junk_folder: "Junk".into(),
            sent_folder: "Sent".into(),
            trash_folder: "Trash".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin panel and API (seed §6.1: port 9999). Not served yet.
    pub listen: Vec<SocketAddr>,
    /// Initial password of the user `admin` (seed §6.2: adminPassword).
    pub password: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: vec!["127.0.0.1:9999".parse().expect("literal")], password: String::new() }
    }
}

/// DKIM signing of outgoing mail (RFC 6376; seed §6.2.1.18–19).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Key directory: `<directory>/<domain>/<selector>.key` (PKCS#8 PEM),
    /// made by `varan dkim generate`.
    pub directory: PathBuf,
    /// Selector signed with; the key is published at
    /// `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// Sign mail relayed for authenticated senders when its From domain
    /// (or else the envelope sender's domain) has a key.
    pub sign: bool,
}

impl Default for DkimConfig {
    fn default() -> Self {
        Self { directory: PathBuf::from("/var/lib/varan/dkim"), selector: "mail".into(), sign: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainConfig {
    pub name: String,
    /// Quota for users without their own (seed §6.2.5.1.9).
    #[serde(with = "size")]
    pub default_quota: u64,
    /// Extra room for the Trash folder (seed §6.2.5.1.10).
    #[serde(with = "size")]
    pub trash_extra_quota: u64,
    /// Smarthost for mail whose sender is in this domain (seed
    /// §6.2.5.1.8): `host:port` or `user:pass@host:port`; empty = the
    /// global `outbound.smarthost`.
    pub smarthost: String,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self { name: String::new(), default_quota: 1 << 30, trash_extra_quota: 0, smarthost: String::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    /// JSON file user database (seed §6.2.4.1).
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    #[serde(rename = "type")]
    pub kind: DirectoryKind,
    /// Provider name (seed §6.2.4.1.1).
    pub name: String,
    /// Domain it serves (seed §6.2.4.1.2).
    pub domain: String,
    /// The JSON file (seed §6.2.4.1.3).
    pub path: PathBuf,
    /// Group whose members are master users (seed §6.2.4.1.4).
    #[serde(default = "default_master_group")]
    pub master_group: String,
    /// Separator in `user*master` logins (seed §6.2.1.22).
    #[serde(default = "default_master_separator")]
    pub master_separator: String,
}

fn default_master_group() -> String {
    "masters".into()
}

fn default_master_separator() -> String {
    "*".into()
}

/// Hard caps: values above them are refused at load time, so a typo cannot
/// make a peer able to exhaust memory.
pub mod caps {
    pub const MESSAGE_SIZE_MAX: u64 = 1 << 30;
    pub const RECIPIENTS_MAX: usize = 100_000;
    pub const COMMAND_LINE_MAX: u64 = 64 << 10;
    pub const CONNECTIONS_MAX: usize = 1_000_000;
    pub const SPOOL_MEMORY_MAX: u64 = 16 << 20;
    pub const SHARDS_MAX: usize = 1024;
    pub const JOURNAL_SEGMENT_MAX: u64 = 1 << 30;
    pub const IMAP_COMMAND_LINE_MAX: u64 = 1 << 20;
    pub const IMAP_CACHE_MAX: u64 = 16 << 30;
}

impl Config {
    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Serializes back to TOML (used by quickstart and `varan dump`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }

    /// The same with secrets replaced by `********`.
    pub fn to_toml_masked(&self) -> String {
        let mut masked = self.clone();
        if !masked.admin.password.is_empty() {
            masked.admin.password = "********".into();
        }
        let mask = |s: &mut String| {
            if let Some((creds, host)) = s.rsplit_once('@') {
                let user = creds.split_once(':').map_or(creds, |(u, _)| u);
                *s = format!("{user}:********@{host}");
            }
        };
        mask(&mut masked.outbound.smarthost);
        for d in &mut masked.domains {
            mask(&mut d.smarthost);
        }
        masked.to_toml()
    }

    /// Checks ranges and cross-references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.smtp;
        if s.message_size_max == 0 || s.message_size_max > caps::MESSAGE_SIZE_MAX {
            return Err(invalid("smtp.message_size_max", format!("must be 1 byte to {} bytes", caps::MESSAGE_SIZE_MAX)));
        }
        if !(100..=caps::RECIPIENTS_MAX).contains(&s.recipients_max) {
            return Err(invalid("smtp.recipients_max", format!("must be 100 to {} (RFC 5321 §4.5.3.1.8)", caps::RECIPIENTS_MAX)));
        }
        if !(512..=caps::COMMAND_LINE_MAX).contains(&s.command_line_max) {
            return Err(invalid("smtp.command_line_max", format!("must be 512 to {} bytes", caps::COMMAND_LINE_MAX)));
        }
        if s.connections_max == 0 || s.connections_max > caps::CONNECTIONS_MAX {
            return Err(invalid("smtp.connections_max", format!("must be 1 to {}", caps::CONNECTIONS_MAX)));
        }
        if s.connections_per_ip_max == 0 {
            return Err(invalid("smtp.connections_per_ip_max", "must be at least 1"));
        }
        if s.commands_max == 0 || s.errors_max == 0 || s.auth_failures_max == 0 {
            return Err(invalid("smtp.commands_max", "commands_max, errors_max and auth_failures_max must be at least 1"));
        }
        if s.command_timeout < Duration::from_secs(1) || s.data_timeout < Duration::from_secs(1) {
            return Err(invalid("smtp.command_timeout", "timeouts must be at least 1s"));
        }
        let i = &self.imap;
        if i.append_size_max == 0 || i.append_size_max > caps::MESSAGE_SIZE_MAX {
            return Err(invalid("imap.append_size_max", format!("must be 1 byte to {} bytes", caps::MESSAGE_SIZE_MAX)));
        }
        if !(8192..=caps::IMAP_COMMAND_LINE_MAX).contains(&i.command_line_max) {
            return Err(invalid("imap.command_line_max", format!("must be 8192 to {} bytes (RFC 7162 §4 asks for at least 8192)", caps::IMAP_COMMAND_LINE_MAX)));
        }
        for (name, n) in [("imap.connections_max", i.connections_max), ("pop3.connections_max", self.pop3.connections_max)] {
            if n == 0 || n > caps::CONNECTIONS_MAX {
                return Err(invalid(name, format!("must be 1 to {}", caps::CONNECTIONS_MAX)));
            }
        }
        if i.connections_per_ip_max == 0 || i.connections_per_user_max == 0 || self.pop3.connections_per_ip_max == 0 {
            return Err(invalid("imap.connections_per_ip_max", "per-IP and per-user connection limits must be at least 1"));
        }
        if i.idle_timeout < Duration::from_secs(30 * 60) {
            return Err(invalid("imap.idle_timeout", "must be at least 30m (RFC 9051 §5.4)"));
        }
        let sel = &self.dkim.selector;
        if sel.is_empty() || sel.len() > 63 || !sel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return Err(invalid("dkim.selector", "must be a DNS label (letters, digits, '-', '_', '.')"));
        }
        if self.pop3.idle_timeout < Duration::from_secs(10 * 60) {
            return Err(invalid("pop3.idle_timeout", "must be at least 10m (RFC 1939 §3)"));
        }
        if i.login_timeout < Duration::from_secs(1) {
            return Err(invalid("imap.login_timeout", "must be at least 1s"));
        }
        if i.auth_failures_max == 0 || i.errors_max == 0 || self.pop3.auth_failures_max == 0 {
            return Err(invalid("imap.auth_failures_max", "failure limits must be at least 1"));
        }
        if i.cache_size > caps::IMAP_CACHE_MAX {
            return Err(invalid("imap.cache_size", format!("must be at most {} bytes", caps::IMAP_CACHE_MAX)));
        }
        if self.storage.spool_memory_max > caps::SPOOL_MEMORY_MAX {
            return Err(invalid("storage.spool_memory_max", format!("must be at most {} bytes", caps::SPOOL_MEMORY_MAX)));
        }
        if self.storage.journal_segment_size > caps::JOURNAL_SEGMENT_MAX {
            return Err(invalid("storage.journal_segment_size", format!("must be at most {} bytes", caps::JOURNAL_SEGMENT_MAX)));
        }
        if self.storage.checkpoint_interval < Duration::from_millis(10) || self.storage.checkpoint_interval > Duration::from_secs(60) {
            return Err(invalid("storage.checkpoint_interval", "must be 10ms to 60s"));
        }
        if let Some(n) = self.server.shards {
            if n == 0 || n > caps::SHARDS_MAX {
                return Err(invalid("server.shards", format!("must be 1 to {} (omit it for one per CPU)", caps::SHARDS_MAX)));
            }
        }
        if self.server.hostname.is_empty() {
            return Err(invalid("server.hostname", "must not be empty"));
        }
        for d in &self.domains {
            crate::address::normalize_domain(&d.name).map_err(|_| invalid("domain.name", format!("{:?} is not a domain name", d.name)))?;
        }
        for p in &self.directories {
            if !self.domains.iter().any(|d| d.name.eq_ignore_ascii_case(&p.domain)) {
                return Err(invalid("directory.domain", format!("provider {:?} serves {:?}, which is not a [[domain]]", p.name, p.domain)));
            }
        }
        self.protection.validate()?;
        self.checks.validate()?;
        self.validate_outbound()
    }

    /// The `[[domain]]` entry of a served domain.
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }
}

/// An IP network in CIDR form (`192.0.2.0/24`, `2001:db8::/32`) or a
/// single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => self.prefix >= 96 && IpNet { addr: IpAddr::V6(net), prefix: self.prefix }.contains(IpAddr::V6(ip.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => bits,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `"30s"`-style durations; see the module docs.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 24h"))?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
    let d = match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" | "" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    };
    d.ok_or_else(|| format!("{text:?} is not a duration like 30s, 5m, 24h"))
}

/// Formats a duration in the largest unit that divides it exactly.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s != 0 && s.is_multiple_of(len) {
            return format!("{}{unit}", s / len);
        }
    }
    format!("{s}s")
}

/// Parses `"64KiB"`-style sizes; see the module docs.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 512, 64KiB, 30MB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size like 512, 64KiB, 30MB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))
}

/// Formats a size in the largest unit that divides it exactly.
pub fn format_size(n: u64) -> String {
    for (unit, len) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000)] {
        if n != 0 && n.is_multiple_of(len) {
            return format!("{}{unit}", n / len);
        }
    }
    n.to_string()
}

mod duration {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod size {
    use super::*;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*n))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(n),
            Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let text = c.to_toml();
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.smtp.message_size_max, 30_000_000);
        assert_eq!(back.smtp.command_timeout, Duration::from_secs(300));
        assert_eq!(back.smtp.connections_max, 100);
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 weeks").is_err());
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("30MB").unwrap(), 30_000_000);
        assert!(parse_size("-1").is_err());
        assert_eq!(format_size(30_000_000), "30MB");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn refuses_out_of_range_and_unknown() {
        assert!(Config::from_toml("[smtp]\nrecipients_max = 5\n").is_err());
        assert!(Config::from_toml("[smtp]\nmessage_size_max = \"5GiB\"\n").is_err());
        assert!(Config::from_toml("[smtp]\nno_such_setting = 1\n").is_err());
        assert!(Config::from_toml("[[directory]]\ntype=\"json\"\nname=\"x\"\ndomain=\"a.test\"\npath=\"/x\"\n").is_err());
    }

    #[test]
    fn networks() {
        let n: IpNet = "192.0.2.0/24".parse().unwrap();
        assert!(n.contains("192.0.2.77".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }
}
