//! DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) of a received
//! message, by mail-auth's verifiers fed with TXT records that Varan's
//! resolver fetched first (docs/design/auth-checks.md).
//!
//! mail-auth looks every record up through a `ResolverCache` before it
//! would ask its own resolver. [`Prefetched`] answers every TXT question
//! itself: with the record fetched beforehand, or with a temporary error
//! for a name that was not fetched. mail-auth's own resolver (built with
//! no name servers) is therefore never asked, and the verification needs
//! no runtime: it runs to completion on the blocking pool.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::common::verify::{DomainKey, VerifySignature};
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DmarcResult, Error, MessageAuthenticator, Parameters, RecordSet, ResolverCache, SpfOutput, Txt};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

/// DMARC tree walk (RFC 7489 §6.6.3 as updated by DMARCbis): names asked
/// per domain, as mail-auth walks them (the name, then from 7 labels down
/// to the TLD).
const DMARC_WALK_MAX: usize = 8;
/// Domains whose DMARC records are fetched: the From domain, the DKIM
/// `d=` domains and the SPF domain (relaxed alignment needs their
/// organizational domains).
const DMARC_DOMAINS_MAX: usize = 8;

/// What the TXT names of a message are, read from its header block.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needed {
    /// DKIM and ARC key records (`<s>._domainkey.<d>.`), deduplicated.
    pub keys: Vec<String>,
    /// `_dmarc.` names of the tree walks.
    pub dmarc: Vec<String>,
}

/// The header block of `message` (CRLF), with an empty body.
fn header_block(message: &[u8]) -> &[u8] {
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(i) => &message[..i + 4],
        None => message,
    }
}

/// The names to fetch for `message` (CRLF line endings): parsing the
/// header block only, so large bodies are not hashed twice.
pub fn needed(message: &[u8], dkim_max: usize, spf_domain: &str, arc: bool) -> Needed {
    let mut n = Needed::default();
    let Some(parsed) = AuthenticatedMessage::parse(header_block(message)) else { return n };
    let mut domains: Vec<String> = parsed.from.iter().filter_map(|f| f.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase()).collect();
    for h in parsed.dkim_headers.iter().take(dkim_max) {
        n.keys.push(h.header.domain_key().to_fqdn().into_owned());
        domains.push(h.header.d.to_ascii_lowercase());
    }
    if arc {
        for h in parsed.as_headers.iter().take(mail_auth_arc_max()) {
            n.keys.push(h.header.domain_key().to_fqdn().into_owned());
        }
        for h in parsed.ams_headers.iter().take(mail_auth_arc_max()) {
            n.keys.push(h.header.domain_key().to_fqdn().into_owned());
        }
    }
    if !spf_domain.is_empty() {
        domains.push(spf_domain.to_ascii_lowercase());
    }
    n.keys.sort();
    n.keys.dedup();
    domains.dedup();
    for d in domains.iter().take(DMARC_DOMAINS_MAX) {
        n.dmarc.extend(dmarc_walk(d));
    }
    n.dmarc.sort();
    n.dmarc.dedup();
    n
}

/// ARC sets looked at (RFC 8617 §5.1.1.4: at most 50 instances; we fetch
/// keys for the first few, later sets then fail as a temporary error).
fn mail_auth_arc_max() -> usize {
    10
}

/// The `_dmarc.` names mail-auth's tree walk asks for `domain`.
pub fn dmarc_walk(domain: &str) -> Vec<String> {
    let domain = domain.trim_end_matches('.');
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let total = labels.len();
    let mut out = Vec::new();
    if total < 2 {
        return out;
    }
    let mut count = total;
    loop {
        out.push(format!("_dmarc.{}.", labels[total - count..].join(".")));
        if count == 1 || out.len() >= DMARC_WALK_MAX {
            break;
        }
        count = if count >= 8 { 7 } else { count - 1 };
    }
    out
}

/// A fetched TXT answer: the records, or whether the name had none.
#[derive(Debug, Clone)]
pub enum Fetched {
    Records(Vec<Vec<u8>>),
    NotFound,
    Temporary,
}

/// mail-auth's view of the fetched records.
pub struct Prefetched {
    txt: HashMap<Box<str>, Txt>,
}

impl Prefetched {
    pub fn new(answers: Vec<(String, Fetched)>) -> Self {
        let mut txt = HashMap::new();
        for (name, answer) in answers {
            let value = match answer {
                Fetched::Records(records) if name.starts_with("_dmarc.") => parse_first::<Dmarc>(&records),
                Fetched::Records(records) => parse_first::<DomainKey>(&records),
                Fetched::NotFound => Txt::Error(Error::Dns(mail_auth::DnsError::RecordNotFound(mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain))),
                Fetched::Temporary => temporary(),
            };
            txt.insert(name.into_boxed_str(), value);
        }
        Self { txt }
    }
}

fn temporary() -> Txt {
    Txt::Error(Error::Dns(mail_auth::DnsError::Resolver("not available".into())))
}

/// As mail-auth's own lookup: the first record that parses as `T`.
fn parse_first<T: TxtRecordParser + Into<Txt>>(records: &[Vec<u8>]) -> Txt {
    let mut result = Err(Error::Dns(mail_auth::DnsError::InvalidRecordType));
    for r in records {
        result = T::parse(r);
        if result.is_ok() {
            break;
        }
    }
    match result {
        Ok(v) => v.into(),
        Err(e) => Txt::Error(e),
    }
}

impl ResolverCache<Box<str>, Txt> for Prefetched {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Never None: that would send mail-auth to its own resolver.
        Some(self.txt.get(name).cloned().unwrap_or_else(temporary))
    }
    fn remove<Q>(&self, _name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _key: Box<str>, _value: Txt, _valid_until: Instant) {}
}

/// Asked only for DMARCbis' `np` (does the From domain exist): always
/// "exists", so `sp` applies (documented in auth-checks.md).
pub struct AssumeExists;

impl ResolverCache<Box<str>, RecordSet<Ipv4Addr>> for AssumeExists {
    fn get<Q>(&self, _name: &Q) -> Option<RecordSet<Ipv4Addr>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Some(RecordSet { rrset: Arc::from(Vec::new()), dnssec_status: mail_auth::DnssecStatus::Indeterminate })
    }
    fn remove<Q>(&self, _name: &Q) -> Option<RecordSet<Ipv4Addr>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _key: Box<str>, _value: RecordSet<Ipv4Addr>, _valid_until: Instant) {}
}

/// What DMARC asks of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Deliver,
    Quarantine,
    Reject,
}

/// The results of one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The result clauses for Authentication-Results (each starting with
    /// `;`, folded with CRLF TAB), without the authserv-id.
    pub results: String,
    pub disposition: Disposition,
    /// The DMARC domain, for the log and the refusal text.
    pub dmarc_domain: String,
}

pub struct Inputs<'a> {
    pub authserv_id: &'a str,
    pub remote: IpAddr,
    pub helo: &'a str,
    /// MAIL FROM (empty for `<>`).
    pub mail_from: &'a str,
    /// The SPF domain (MAIL FROM's, or HELO's for `<>`).
    pub spf_domain: &'a str,
    pub spf: Option<&'a SpfOutput>,
    pub dkim: bool,
    pub dkim_max: usize,
    pub dmarc: bool,
    pub arc: bool,
}

type NoCache<K, V> = mail_auth::common::cache::NoCache<K, V>;

/// mail-auth's parameters with our TXT answers; the MX, AAAA and PTR hooks
/// are never asked by DKIM, ARC or DMARC.
#[allow(clippy::type_complexity)]
fn with_records<'x, P>(
    params: P,
    records: &'x Prefetched,
) -> Parameters<'x, P, Prefetched, NoCache<Box<str>, RecordSet<mail_auth::MX>>, AssumeExists, NoCache<Box<str>, RecordSet<std::net::Ipv6Addr>>, NoCache<IpAddr, RecordSet<Box<str>>>>
{
    Parameters { params, cache_txt: Some(records), cache_mx: None, cache_ptr: None, cache_ipv4: Some(&AssumeExists), cache_ipv6: None }
}

/// Drives a mail-auth future that never waits: every DNS question is
/// answered from [`Prefetched`].
fn run<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

/// mail-auth's verifier with a resolver that has no name servers: every
/// question is answered by [`Prefetched`] before it could be asked.
fn authenticator() -> Option<MessageAuthenticator> {
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    MessageAuthenticator::new(ResolverConfig::from_name_servers(Vec::new()), ResolverOpts::default()).ok()
}

/// Verifies `message` (CRLF line endings) with the fetched records. CPU
/// bound (body hashes, signatures): run it on the blocking pool.
pub fn verify(message: &[u8], records: &Prefetched, i: &Inputs<'_>) -> Verdict {
    let mut results = String::new();
    let mut disposition = Disposition::Deliver;
    let mut dmarc_domain = String::new();
    let Some(auth) = authenticator() else {
        tracing::error!("cannot build mail-auth's verifier");
        return Verdict { results: ";\r\n\tdkim=temperror;\r\n\tdmarc=temperror".into(), disposition, dmarc_domain };
    };
    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        // Not a parseable message: report what SPF said; nothing else applies.
        if let Some(spf) = i.spf {
            results = AuthenticationResults::new(i.authserv_id).with_spf_mailfrom_result(spf, i.remote, i.mail_from, i.helo).to_string();
        }
        return Verdict { results: strip_id(&results, i.authserv_id), disposition, dmarc_domain };
    };
    let mut ar = AuthenticationResults::new(i.authserv_id);
    if let Some(spf) = i.spf {
        ar = ar.with_spf_mailfrom_result(spf, i.remote, i.mail_from, i.helo);
    }
    // RFC 6376 §6.1: the verifier may limit the signatures it checks.
    let mut limited = parsed.clone();
    limited.dkim_headers.truncate(i.dkim_max);
    let dkim_out = if i.dkim || i.dmarc {
        let params = with_records(&limited, records);
        run(auth.verify_dkim(params))
    } else {
        Vec::new()
    };
    if i.dkim {
        if dkim_out.is_empty() {
            results.push_str(";\r\n\tdkim=none");
        }
        ar = ar.with_dkim_results(&dkim_out, parsed.from());
    }
    if i.arc && !parsed.as_headers.is_empty() {
        let params = with_records(&parsed, records);
        let arc = run(auth.verify_arc(params));
        ar = ar.with_arc_result(&arc, i.remote);
    }
    if i.dmarc {
        let none_spf;
        let spf = match i.spf {
            Some(s) => s,
            None => {
                none_spf = SpfOutput::new(i.spf_domain.to_owned());
                &none_spf
            }
        };
        let params = mail_auth::dmarc::verify::DmarcParameters::new(&limited, &dkim_out, i.spf_domain, spf);
        let params = with_records(params, records);
        let dmarc = run(auth.verify_dmarc(params));
        dmarc_domain = dmarc.domain().to_owned();
        // RFC 7489 §6.6.2: the policy applies when neither SPF nor DKIM
        // gives an aligned pass; a temporary error on either side is not
        // a fail (mail-auth ranks pass, then temperror, above fail).
        let failed = matches!(dmarc.result(), DmarcResult::Fail(_));
        if !dmarc_domain.is_empty() {
            ar = ar.with_dmarc_result(&dmarc);
        }
        if failed {
            disposition = match dmarc.policy() {
                Policy::Reject => Disposition::Reject,
                Policy::Quarantine => Disposition::Quarantine,
                Policy::None | Policy::Unspecified => Disposition::Deliver,
            };
        }
    }
    let mut text = ar.to_string();
    text.push_str(&results);
    Verdict { results: strip_id(&text, i.authserv_id), disposition, dmarc_domain }
}

/// mail-auth's `Display` starts with the authserv-id; the caller writes it.
fn strip_id(text: &str, id: &str) -> String {
    text.strip_prefix(id).unwrap_or(text).to_owned()
}
