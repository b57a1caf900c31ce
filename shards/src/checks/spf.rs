//! SPF `check_host()` (RFC 7208 §4) on Varan's resolver: every query goes
//! through the shard's DNS cache. Records and macros are parsed by
//! mail-auth (`Spf`, `Macro`); the evaluation and its limits are here,
//! because mail-auth's evaluator calls its own resolver and has no void
//! lookup limit.

use crate::dns::{Answer, DnsError, QueryKind, Records, Resolver};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf, Variables};
use mail_auth::{SpfOutput, SpfResult};
use std::net::IpAddr;

/// RFC 7208 §4.6.4: terms that cause DNS queries (include, a, mx, ptr,
/// exists, redirect), per evaluation including nested records.
pub const DNS_MECHANISMS_MAX: u32 = 10;
/// RFC 7208 §4.6.4: lookups answering NXDOMAIN or no records.
pub const VOID_LOOKUPS_MAX: u32 = 2;
/// RFC 7208 §4.6.4: MX records looked at by one `mx` mechanism, and
/// PTR names by one `ptr` mechanism (§5.5).
pub const NAMES_PER_MECHANISM_MAX: usize = 10;
/// RFC 7208 §4.3 / RFC 1035: longest domain name.
const DOMAIN_MAX: usize = 253;

/// The identity being checked (RFC 7208 §2.4: MAIL FROM, or HELO when the
/// reverse path is null).
pub struct Query<'a> {
    pub ip: IpAddr,
    /// `local@domain` of MAIL FROM, or `postmaster@<helo>`.
    pub sender: &'a str,
    /// The domain checked first.
    pub domain: &'a str,
    pub helo: &'a str,
    /// Our own name (macro `%{r}`).
    pub hostname: &'a str,
}

struct Eval<'r> {
    resolver: &'r dyn Resolver,
    ip: IpAddr,
    lookups: u32,
    voids: u32,
    /// Validated names of `ip` for `ptr`, looked up once.
    ptr_names: Option<Vec<String>>,
}

enum Abort {
    Temp,
    Perm,
}

/// `check_host(ip, domain, sender)`: the result and the domain it is for.
pub async fn check_host(resolver: &dyn Resolver, q: &Query<'_>) -> SpfOutput {
    let domain = q.domain.trim_end_matches('.').to_ascii_lowercase();
    let output = SpfOutput::new(domain.clone());
    if !valid_domain(&domain) {
        // §4.3: a malformed domain is "none".
        return output.with_result(SpfResult::None);
    }
    let mut vars = Variables::new();
    vars.set_ip(&q.ip);
    vars.set_sender(q.sender.as_bytes().to_vec());
    vars.set_helo_domain(q.helo.as_bytes().to_vec());
    vars.set_host_domain(q.hostname.as_bytes().to_vec());
    let mut eval = Eval { resolver, ip: q.ip, lookups: 0, voids: 0, ptr_names: None };
    let result = match eval.record(&domain).await {
        Ok(None) => SpfResult::None,
        Ok(Some(spf)) => match eval.evaluate(&spf, &domain, &mut vars, 0).await {
            Ok(r) => r,
            Err(Abort::Temp) => SpfResult::TempError,
            Err(Abort::Perm) => SpfResult::PermError,
        },
        Err(Abort::Temp) => SpfResult::TempError,
        Err(Abort::Perm) => SpfResult::PermError,
    };
    output.with_result(result)
}

fn valid_domain(d: &str) -> bool {
    d.len() <= DOMAIN_MAX && d.contains('.') && d.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

/// Longest `include` / `redirect` chain followed; the lookup limit ends
/// any chain first, this only keeps the recursion bounded on its own.
const DEPTH_MAX: u32 = DNS_MECHANISMS_MAX + 1;

impl Eval<'_> {
    /// The SPF record of `domain` (§4.5): `None` if there is none, a
    /// permerror if there are several or it does not parse.
    async fn record(&mut self, domain: &str) -> Result<Option<Spf>, Abort> {
        let records = match self.resolver.lookup(domain, QueryKind::Txt).await {
            Ok(Answer { records: Records::Txt(t), .. }) => t,
            Ok(_) => return Err(Abort::Temp),
            Err(DnsError::NoDomain | DnsError::NoRecords) => return Ok(None),
            Err(DnsError::Temporary(_)) => return Err(Abort::Temp),
        };
        let mut spf = records.iter().filter(|r| {
            let r = r.as_slice();
            r.len() >= 6 && r[..6].eq_ignore_ascii_case(b"v=spf1") && (r.len() == 6 || r[6] == b' ')
        });
        let (Some(one), None) = (spf.next(), spf.next()) else {
            return if records.iter().any(|r| r.len() >= 6 && r[..6].eq_ignore_ascii_case(b"v=spf1")) { Err(Abort::Perm) } else { Ok(None) };
        };
        if !terms_valid(one) {
            return Err(Abort::Perm);
        }
        Spf::parse(one).map(Some).map_err(|_| Abort::Perm)
    }

    fn count_lookup(&mut self) -> Result<(), Abort> {
        self.lookups += 1;
        if self.lookups > DNS_MECHANISMS_MAX {
            return Err(Abort::Perm);
        }
        Ok(())
    }

    fn void(&mut self) -> Result<(), Abort> {
        self.voids += 1;
        if self.voids > VOID_LOOKUPS_MAX {
            return Err(Abort::Perm);
        }
        Ok(())
    }

    /// A target name from a macro string (§4.8: the current domain when
    /// absent). A name that is not a domain after expansion is a permerror
    /// (§4.8, §7.3).
    fn target(m: &Macro, vars: &Variables<'_>, domain: &str) -> Result<String, Abort> {
        let name = match m {
            Macro::None => domain.to_owned(),
            m => m.eval(vars, domain, false).trim_end_matches('.').to_ascii_lowercase(),
        };
        // §7.3: long expansions are shortened from the left.
        let name = shorten(&name);
        if !valid_domain(&name) {
            return Err(Abort::Perm);
        }
        Ok(name)
    }

    /// Addresses of `name` of the client's family; a void answer counts.
    async fn addresses(&mut self, name: &str, count_void: bool) -> Result<Vec<IpAddr>, Abort> {
        let kind = if self.ip.is_ipv4() || matches!(self.ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) { QueryKind::A } else { QueryKind::Aaaa };
        match self.resolver.lookup(name, kind).await {
            Ok(Answer { records: Records::Ips(ips), .. }) => Ok(ips),
            Ok(_) => Err(Abort::Temp),
            Err(DnsError::NoDomain | DnsError::NoRecords) => {
                if count_void {
                    self.void()?;
                }
                Ok(Vec::new())
            }
            Err(DnsError::Temporary(_)) => Err(Abort::Temp),
        }
    }

    fn evaluate<'a>(&'a mut self, spf: &'a Spf, domain: &'a str, vars: &'a mut Variables<'static>, depth: u32) -> crate::dns::LocalFuture<'a, Result<SpfResult, Abort>> {
        Box::pin(async move {
            if depth > DEPTH_MAX {
                return Err(Abort::Perm);
            }
            vars.set_domain(domain.as_bytes().to_vec());
            for directive in spf.directives.iter() {
                if self.matches(&directive.mechanism, domain, vars, depth).await? {
                    return Ok(match directive.qualifier {
                        Qualifier::Pass => SpfResult::Pass,
                        Qualifier::Fail => SpfResult::Fail,
                        Qualifier::SoftFail => SpfResult::SoftFail,
                        Qualifier::Neutral => SpfResult::Neutral,
                    });
                }
                // An include may have changed the domain variable.
                vars.set_domain(domain.as_bytes().to_vec());
            }
            // §6.1: redirect only when no mechanism matched (and no "all").
            if let Some(redirect) = &spf.redirect {
                self.count_lookup()?;
                let target = Self::target(redirect, vars, domain)?;
                let Some(next) = self.record(&target).await? else {
                    // §6.1: a redirect to a domain without a record.
                    self.void()?;
                    return Err(Abort::Perm);
                };
                return self.evaluate(&next, &target, vars, depth + 1).await;
            }
            Ok(SpfResult::Neutral)
        })
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str, vars: &mut Variables<'static>, depth: u32) -> Result<bool, Abort> {
        let ip = self.ip;
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4 { addr, mask } => Ok(match v4_of(ip) {
                Some(v4) => u32::from(v4) & mask == u32::from(*addr) & mask,
                None => false,
            }),
            Mechanism::Ip6 { addr, mask } => Ok(match ip {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => u128::from(v6) & mask == u128::from(*addr) & mask,
                _ => false,
            }),
            Mechanism::A { macro_string, ip4_mask, ip6_mask } => {
                self.count_lookup()?;
                let target = Self::target(macro_string, vars, domain)?;
                let addrs = self.addresses(&target, true).await?;
                Ok(addrs.iter().any(|a| masked_eq(ip, *a, *ip4_mask, *ip6_mask)))
            }
            Mechanism::Mx { macro_string, ip4_mask, ip6_mask } => {
                self.count_lookup()?;
                let target = Self::target(macro_string, vars, domain)?;
                let hosts = match self.resolver.lookup(&target, QueryKind::Mx).await {
                    Ok(Answer { records: Records::Mx(mx), .. }) => mx,
                    Ok(_) => return Err(Abort::Temp),
                    Err(DnsError::NoDomain | DnsError::NoRecords) => {
                        self.void()?;
                        return Ok(false);
                    }
                    Err(DnsError::Temporary(_)) => return Err(Abort::Temp),
                };
                // §4.6.4: more than 10 MX records is a permerror.
                if hosts.len() > NAMES_PER_MECHANISM_MAX {
                    return Err(Abort::Perm);
                }
                for (_, host) in hosts.iter().filter(|(_, h)| !h.is_empty()) {
                    let addrs = self.addresses(host, false).await?;
                    if addrs.iter().any(|a| masked_eq(ip, *a, *ip4_mask, *ip6_mask)) {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr { macro_string } => {
                self.count_lookup()?;
                let target = Self::target(macro_string, vars, domain)?;
                let names = self.validated_names().await?;
                Ok(names.iter().any(|n| n == &target || n.ends_with(&format!(".{target}"))))
            }
            Mechanism::Exists { macro_string } => {
                self.count_lookup()?;
                let target = Self::target(macro_string, vars, domain)?;
                // §5.7: an A query whatever the client's family.
                match self.resolver.lookup(&target, QueryKind::A).await {
                    Ok(Answer { records: Records::Ips(ips), .. }) => Ok(!ips.is_empty()),
                    Ok(_) => Err(Abort::Temp),
                    Err(DnsError::NoDomain | DnsError::NoRecords) => {
                        self.void()?;
                        Ok(false)
                    }
                    Err(DnsError::Temporary(_)) => Err(Abort::Temp),
                }
            }
            Mechanism::Include { macro_string } => {
                self.count_lookup()?;
                let target = Self::target(macro_string, vars, domain)?;
                let Some(inner) = self.record(&target).await? else {
                    // §5.2: an include of a domain without a record.
                    self.void()?;
                    return Err(Abort::Perm);
                };
                match self.evaluate(&inner, &target, vars, depth + 1).await? {
                    SpfResult::Pass => Ok(true),
                    SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => Ok(false),
                    SpfResult::TempError => Err(Abort::Temp),
                    SpfResult::PermError | SpfResult::None => Err(Abort::Perm),
                }
            }
        }
    }

    /// §5.5: the client's reverse names that resolve back to it (at most
    /// ten names are tried).
    async fn validated_names(&mut self) -> Result<Vec<String>, Abort> {
        if let Some(n) = &self.ptr_names {
            return Ok(n.clone());
        }
        let names = match self.resolver.lookup(&reverse_name(self.ip), QueryKind::Ptr).await {
            Ok(Answer { records: Records::Names(n), .. }) => n,
            Ok(_) => Vec::new(),
            // §5.5: a PTR lookup error just means no match.
            Err(_) => Vec::new(),
        };
        let mut valid = Vec::new();
        for name in names.into_iter().take(NAMES_PER_MECHANISM_MAX) {
            if let Ok(addrs) = self.addresses(&name, false).await {
                if addrs.iter().any(|a| same_ip(*a, self.ip)) {
                    valid.push(name);
                }
            }
        }
        self.ptr_names = Some(valid.clone());
        Ok(valid)
    }
}

/// The checks mail-auth's lenient parser leaves out: an unknown mechanism
/// (§5, §4.6.1), an address literal that is not one (§5.6), and a
/// `redirect`/`exp` modifier given twice (§6) are permerrors.
fn terms_valid(record: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(record) else { return false };
    let (mut redirects, mut exps) = (0, 0);
    for term in text.split_ascii_whitespace().skip(1) {
        let eq = term.find('=');
        let sep = term.find([':', '/']);
        if let Some(eq) = eq.filter(|&e| sep.is_none_or(|s| e < s)) {
            let name = &term[..eq];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return false;
            }
            redirects += usize::from(name.eq_ignore_ascii_case("redirect"));
            exps += usize::from(name.eq_ignore_ascii_case("exp"));
            continue;
        }
        let body = term.trim_start_matches(['+', '-', '~', '?']);
        let (name, arg) = match body.find([':', '/']) {
            Some(i) => (&body[..i], &body[i..]),
            None => (body, ""),
        };
        let name = name.to_ascii_lowercase();
        let ok = match name.as_str() {
            "all" => arg.is_empty(),
            "include" | "exists" => arg.len() > 1 && arg.starts_with(':'),
            "a" | "mx" | "ptr" => true,
            "ip4" => ip_literal::<std::net::Ipv4Addr>(arg, 32),
            "ip6" => ip_literal::<std::net::Ipv6Addr>(arg, 128),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    redirects <= 1 && exps <= 1
}

/// `:<address>[/<prefix length>]` of ip4/ip6 (RFC 7208 §5.6).
fn ip_literal<T: std::str::FromStr>(arg: &str, bits: u32) -> bool {
    let Some(rest) = arg.strip_prefix(':') else { return false };
    let (addr, len) = match rest.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (rest, None),
    };
    addr.parse::<T>().is_ok() && len.is_none_or(|l| !l.starts_with('0') && l.parse::<u32>().is_ok_and(|n| n <= bits) || l == "0")
}

/// §7.3: a domain longer than 253 characters loses labels from the left.
fn shorten(name: &str) -> String {
    let mut n = name;
    while n.len() > DOMAIN_MAX {
        match n.split_once('.') {
            Some((_, rest)) => n = rest,
            None => break,
        }
    }
    n.to_owned()
}

fn v4_of(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    match (v4_of(a), v4_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn masked_eq(client: IpAddr, record: IpAddr, v4_mask: u32, v6_mask: u128) -> bool {
    match (v4_of(client), record) {
        (Some(c), IpAddr::V4(r)) => u32::from(c) & v4_mask == u32::from(r) & v4_mask,
        (None, IpAddr::V6(r)) => match client {
            IpAddr::V6(c) => u128::from(c) & v6_mask == u128::from(r) & v6_mask,
            IpAddr::V4(_) => false,
        },
        _ => false,
    }
}

/// `d.c.b.a.in-addr.arpa` or the 32 nibbles under `ip6.arpa` (RFC 1035
/// §3.5, RFC 3596 §2.5); also the DNSBL query prefix without the suffix.
pub fn reverse_name(ip: IpAddr) -> String {
    match v4_of(ip) {
        Some(v4) => format!("{}.in-addr.arpa", reversed_labels(IpAddr::V4(v4))),
        None => format!("{}.ip6.arpa", reversed_labels(ip)),
    }
}

/// The address as reversed labels: octets for IPv4, nibbles for IPv6.
pub fn reversed_labels(ip: IpAddr) -> String {
    match v4_of(ip) {
        Some(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        None => {
            let IpAddr::V6(v6) = ip else { return String::new() };
            let mut out = String::with_capacity(64);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0xf, byte >> 4] {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                }
            }
            out
        }
    }
}
