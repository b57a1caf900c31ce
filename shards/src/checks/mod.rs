//! The DNS-based checks of inbound mail (docs/design/auth-checks.md):
//! DNSBL and FCrDNS lookups started at connect, SPF and the DNSBL verdict
//! at MAIL FROM, DKIM/ARC/DMARC when the content is complete, and the
//! Authentication-Results header (RFC 8601) of the result.
//!
//! Every query goes through the shard's cached resolver ([`crate::dns`]);
//! each stage waits at most `checks.timeout`. Authenticated sessions and
//! `smtp.full_allowed_ips` clients are not checked (submission).

pub mod message;
pub mod spf;

use crate::dns::{Answer, DnsError, QueryKind, Records, Resolver};
use std::net::IpAddr;
use std::rc::Rc;
use varan_core::config::ChecksConfig;
use varan_core::EmailAddress;
use varan_protocols::smtp::Reply;

/// PTR names tried for FCrDNS.
pub const PTR_NAMES_MAX: usize = 10;
/// TXT names fetched for one message (DKIM and ARC keys, DMARC walks).
pub const MESSAGE_TXT_LOOKUPS_MAX: usize = 64;
/// The header field name that replaces a forged `Authentication-Results`
/// (RFC 8601 §5); as long as the original, so it is renamed in place.
pub const UNTRUSTED_NAME: &[u8; 22] = b"X-Untrusted-AuthResult";

type Task<T> = glommio::task::JoinHandle<T>;

/// The checks of one connection.
pub struct ConnChecks {
    resolver: Rc<dyn Resolver>,
    config: ChecksConfig,
    ip: IpAddr,
    /// `smtp.full_allowed_ips`: nothing is checked.
    exempt: bool,
    dnsbl: Option<Task<Vec<String>>>,
    listed: Option<Vec<String>>,
    fcrdns: Option<Task<Option<String>>>,
    name: Option<Option<String>>,
    /// SPF of the current transaction.
    pub spf: Option<mail_auth::SpfOutput>,
    pub spf_domain: String,
}

impl ConnChecks {
    /// Starts the connect-time lookups (DNSBL zones in parallel, FCrDNS).
    pub fn start(resolver: Rc<dyn Resolver>, config: &ChecksConfig, ip: IpAddr, exempt: bool) -> Self {
        let mut c = Self { resolver, config: config.clone(), ip, exempt, dnsbl: None, listed: None, fcrdns: None, name: None, spf: None, spf_domain: String::new() };
        if exempt {
            return c;
        }
        let timeout = config.timeout;
        if config.dnsbl && !config.dnsbl_zones.is_empty() {
            let zones: Vec<(String, Task<bool>)> = config
                .dnsbl_zones
                .iter()
                .map(|zone| {
                    let name = format!("{}.{}", spf::reversed_labels(ip), zone.trim_end_matches('.'));
                    let resolver = Rc::clone(&c.resolver);
                    let task =
                        glommio::spawn_local(async move { glommio::timer::timeout(timeout, async { Ok(listed(resolver.as_ref(), &name).await) }).await.unwrap_or(false) }).detach();
                    (zone.trim_end_matches('.').to_owned(), task)
                })
                .collect();
            c.dnsbl = Some(
                glommio::spawn_local(async move {
                    let mut out = Vec::new();
                    for (zone, task) in zones {
                        if task.await == Some(true) {
                            out.push(zone);
                        }
                    }
                    out
                })
                .detach(),
            );
        }
        if config.fcrdns {
            let resolver = Rc::clone(&c.resolver);
            c.fcrdns =
                Some(glommio::spawn_local(async move { glommio::timer::timeout(timeout, async { Ok(fcrdns(resolver.as_ref(), ip).await) }).await.unwrap_or(None) }).detach());
        }
        c
    }

    /// The DNSBL zones that list the client (waits for the lookups).
    pub async fn listed(&mut self) -> &[String] {
        if self.listed.is_none() {
            let v = match self.dnsbl.take() {
                Some(t) => t.await.unwrap_or_default(),
                None => Vec::new(),
            };
            self.listed = Some(v);
        }
        self.listed.as_deref().unwrap_or_default()
    }

    /// The forward-confirmed reverse name of the client, if any.
    pub async fn verified_name(&mut self) -> Option<&str> {
        if self.name.is_none() {
            let v = match self.fcrdns.take() {
                Some(t) => t.await.flatten(),
                None => None,
            };
            self.name = Some(v);
        }
        self.name.as_ref().and_then(|n| n.as_deref())
    }

    /// The verified name once [`Self::verified_name`] was awaited.
    pub fn known_name(&self) -> Option<&str> {
        self.name.as_ref().and_then(|n| n.as_deref())
    }

    /// Whether the current transaction is checked at all.
    pub fn applies(&self, authenticated: bool) -> bool {
        !self.exempt && !authenticated
    }

    /// The MAIL FROM stage: HELO sanity (when on), DNSBL threshold, SPF.
    /// `Some(reply)` refuses MAIL.
    pub async fn check_sender(&mut self, s: &SenderInfo<'_>) -> Option<Reply> {
        self.spf = None;
        self.spf_domain.clear();
        if !self.applies(s.authenticated) {
            return None;
        }
        if self.config.helo_strict && !helo_acceptable(s.helo, s.hostname, s.local_ip) {
            return Some(Reply::new(550, (5, 7, 1), format!("HELO {} rejected: not a valid host name of yours", clean(s.helo))));
        }
        let threshold = self.config.dnsbl_threshold;
        let ip = self.ip;
        let listed = self.listed().await;
        if !listed.is_empty() && listed.len() >= threshold {
            tracing::info!(zones = %listed.join(","), "client refused: listed by DNSBL");
            return Some(Reply::new(554, (5, 7, 1), format!("Service unavailable; client [{}] listed by {}", ip, listed.join(", "))));
        }
        if !self.config.spf && !self.config.dmarc {
            return None;
        }
        let helo = s.helo;
        let (sender, domain) = match s.sender {
            Some(a) => (a.to_string(), a.domain().to_ascii_lowercase()),
            None => (format!("postmaster@{helo}"), helo.to_ascii_lowercase()),
        };
        self.spf_domain = domain.clone();
        if !self.config.spf {
            return None;
        }
        let q = spf::Query { ip: self.ip, sender: &sender, domain: &domain, helo, hostname: s.hostname };
        let resolver = Rc::clone(&self.resolver);
        let out = match glommio::timer::timeout(self.config.timeout, async { Ok(spf::check_host(resolver.as_ref(), &q).await) }).await {
            Ok(o) => o,
            Err(_) => mail_auth::SpfOutput::new(domain.clone()).with_result(mail_auth::SpfResult::TempError),
        };
        let result = out.result();
        tracing::debug!(%domain, ?result, "SPF");
        self.spf = Some(out);
        if result == mail_auth::SpfResult::Fail && self.config.spf_block_fail {
            // RFC 7372 §3.2: 5.7.23 "SPF validation failed".
            return Some(Reply::new(550, (5, 7, 23), format!("SPF validation failed: {domain} does not allow [{}] to send its mail", self.ip)));
        }
        None
    }

    /// Fetches the TXT records the message needs, in parallel.
    pub async fn fetch(&self, needed: &message::Needed) -> Vec<(String, message::Fetched)> {
        let names: Vec<String> = needed.keys.iter().chain(needed.dmarc.iter()).take(MESSAGE_TXT_LOOKUPS_MAX).cloned().collect();
        let timeout = self.config.timeout;
        let tasks: Vec<(String, Task<message::Fetched>)> = names
            .into_iter()
            .map(|name| {
                let resolver = Rc::clone(&self.resolver);
                let n = name.clone();
                let task = glommio::spawn_local(async move {
                    let lookup = async {
                        Ok(match resolver.lookup(&n, QueryKind::Txt).await {
                            Ok(Answer { records: Records::Txt(t), .. }) => message::Fetched::Records(t),
                            Ok(_) => message::Fetched::Temporary,
                            Err(DnsError::NoDomain | DnsError::NoRecords) => message::Fetched::NotFound,
                            Err(DnsError::Temporary(_)) => message::Fetched::Temporary,
                        })
                    };
                    glommio::timer::timeout(timeout, lookup).await.unwrap_or(message::Fetched::Temporary)
                })
                .detach();
                (name, task)
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (name, task) in tasks {
            out.push((name, task.await.unwrap_or(message::Fetched::Temporary)));
        }
        out
    }

    pub fn config(&self) -> &ChecksConfig {
        &self.config
    }
}

/// What the MAIL FROM stage looks at.
pub struct SenderInfo<'a> {
    pub helo: &'a str,
    pub sender: Option<&'a EmailAddress>,
    pub authenticated: bool,
    pub hostname: &'a str,
    pub local_ip: IpAddr,
}

/// RFC 5782 §2.1: a listing is an A record in 127.0.0.0/8;
/// 127.255.255.0/24 are the lists' error codes (e.g. "query refused"),
/// not listings.
async fn listed(resolver: &dyn Resolver, name: &str) -> bool {
    match resolver.lookup(name, QueryKind::A).await {
        Ok(Answer { records: Records::Ips(ips), .. }) => ips.iter().any(|ip| match ip {
            IpAddr::V4(v4) => v4.octets()[0] == 127 && !(v4.octets()[1] == 255 && v4.octets()[2] == 255),
            IpAddr::V6(_) => false,
        }),
        _ => false,
    }
}

/// Forward-confirmed reverse DNS: the first PTR name whose addresses
/// include the client's.
pub async fn fcrdns(resolver: &dyn Resolver, ip: IpAddr) -> Option<String> {
    let names = match resolver.lookup(&spf::reverse_name(ip), QueryKind::Ptr).await {
        Ok(Answer { records: Records::Names(n), .. }) => n,
        _ => return None,
    };
    let kind = if ip.is_ipv4() { QueryKind::A } else { QueryKind::Aaaa };
    for name in names.into_iter().take(PTR_NAMES_MAX) {
        if let Ok(Answer { records: Records::Ips(ips), .. }) = resolver.lookup(&name, kind).await {
            if ips.contains(&ip) {
                return Some(name);
            }
        }
    }
    None
}

/// HELO sanity (RFC 5321 §4.1.1.1, §4.1.3): a domain with at least two
/// labels or an address literal, and neither our own name nor our own
/// address.
pub fn helo_acceptable(helo: &str, hostname: &str, local_ip: IpAddr) -> bool {
    if let Some(literal) = helo.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let literal = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return match literal.parse::<IpAddr>() {
            Ok(ip) => ip != local_ip,
            Err(_) => false,
        };
    }
    let h = helo.trim_end_matches('.');
    let syntax = h.len() <= 253
        && h.contains('.')
        && h.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    syntax && !h.eq_ignore_ascii_case(hostname.trim_end_matches('.')) && h.parse::<IpAddr>().is_err()
}

fn clean(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic()).take(100).collect()
}

/// Offsets of the `Authentication-Results` fields in the header block of
/// `message` (LF line endings) whose authserv-id is `ours`: forged claims
/// of our own results (RFC 8601 §5), to be renamed before delivery.
pub fn forged_results(message: &[u8], ours: &str) -> Vec<usize> {
    const NAME: &[u8] = b"authentication-results";
    let end = memchr::memmem::find(message, b"\n\n").map_or(message.len(), |i| i + 1);
    let block = &message[..end];
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let line_end = memchr::memchr(b'\n', &block[pos..]).map_or(block.len(), |i| pos + i + 1);
        let line = &block[pos..line_end];
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            // The value, unfolded over continuation lines.
            let mut value = Vec::from(&line[NAME.len()..]);
            let mut next = line_end;
            while next < block.len() && matches!(block[next], b' ' | b'\t') {
                let e = memchr::memchr(b'\n', &block[next..]).map_or(block.len(), |i| next + i + 1);
                value.extend_from_slice(&block[next..e]);
                next = e;
            }
            let value = String::from_utf8_lossy(&value);
            if let Some(v) = value.trim_start().strip_prefix(':') {
                if authserv_id(v).eq_ignore_ascii_case(ours) {
                    out.push(pos);
                }
            }
        }
        pos = line_end;
    }
    out
}

/// The authserv-id of an Authentication-Results value: the first token,
/// after comments (RFC 8601 §2.2).
fn authserv_id(value: &str) -> &str {
    let mut v = value.trim_start();
    while let Some(rest) = v.strip_prefix('(') {
        v = rest.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    let end = v.find(|c: char| c == ';' || c == '(' || c.is_whitespace()).unwrap_or(v.len());
    &v[..end]
}

#[cfg(test)]
mod tests;

/// What the end-of-data checks decided for a message that is accepted.
#[derive(Debug, Default)]
pub struct MessageVerdict {
    /// Header fields for every local copy (LF line endings).
    pub headers: Vec<u8>,
    /// DMARC `p=quarantine`: deliver into the Junk folder.
    pub quarantine: bool,
}

/// The owned inputs of the blocking verification.
pub struct MessageJob {
    pub authserv_id: String,
    pub remote: IpAddr,
    pub helo: String,
    pub mail_from: String,
    pub spf_domain: String,
    pub spf: Option<mail_auth::SpfOutput>,
    pub config: ChecksConfig,
}

/// The message with CRLF line endings (as it was sent and signed; Varan
/// stores LF).
pub fn to_crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 32);
    for (i, &b) in lf.iter().enumerate() {
        if b == b'\n' && (i == 0 || lf[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

impl MessageJob {
    /// Verifies and builds the Received-SPF and Authentication-Results
    /// fields (LF endings).
    /// Runs on the blocking pool; a panic inside mail-auth is caught and
    /// reported as a temporary error instead of taking the shard down.
    pub fn run(&self, crlf: &[u8], records: &message::Prefetched) -> (Vec<u8>, message::Disposition, String) {
        let inputs = message::Inputs {
            authserv_id: &self.authserv_id,
            remote: self.remote,
            helo: &self.helo,
            mail_from: &self.mail_from,
            spf_domain: &self.spf_domain,
            spf: if self.config.spf { self.spf.as_ref() } else { None },
            dkim: self.config.dkim,
            dkim_max: self.config.dkim_signatures_max,
            dmarc: self.config.dmarc,
            arc: self.config.arc,
        };
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| message::verify(crlf, records, &inputs)));
        let (results, disposition, domain) = match verdict {
            Ok(v) => (v.results, v.disposition, v.dmarc_domain),
            Err(_) => {
                tracing::error!("message verification panicked; results reported as temporary errors");
                (";\r\n\tdkim=temperror;\r\n\tdmarc=temperror".to_owned(), message::Disposition::Deliver, String::new())
            }
        };
        let results = if results.trim().is_empty() { "; none".to_owned() } else { results };
        let mut field = String::new();
        // RFC 7208 §9.1: Received-SPF, prepended like a trace field.
        if let (true, Some(spf)) = (self.config.spf, &self.spf) {
            use mail_auth::common::headers::HeaderWriter;
            field.push_str(&mail_auth::ReceivedSpf::new(spf, self.remote, &self.helo, &self.mail_from, &self.authserv_id).to_header());
        }
        field.push_str(&format!("Authentication-Results: {}{}\r\n", self.authserv_id, results));
        let field = field.replace("\r\n", "\n");
        (field.into_bytes(), disposition, domain)
    }
}
