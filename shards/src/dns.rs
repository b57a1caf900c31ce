//! DNS for outbound delivery: MX routing (RFC 5321 §5.1, RFC 7505) over a
//! small [`Resolver`] trait, implemented by one tokio sidecar thread that
//! runs hickory-resolver for every shard ([`DnsSidecar`]; hickory cannot
//! run on glommio, see shared/design/bridge.md), with a shard-local TTL
//! cache ([`CachedResolver`]) in front.
//!
//! Limits:
//! - [`MX_HOSTS_MAX`] exchanges and [`ADDRESSES_PER_HOST_MAX`] addresses
//!   per exchange are kept, so a domain publishing hundreds of MX records
//!   cannot make one delivery attempt connect for hours;
//! - the cache holds at most `dns.cache_entries_max` answers per shard;
//!   when full, expired entries are dropped, then the whole table (a
//!   simple bound; a refill costs one query per name);
//! - positive answers are cached for their TTL capped at
//!   [`POSITIVE_TTL_MAX`]; negative ones for `dns.negative_ttl_max`;
//!   temporary errors are not cached.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use varan_core::config::DnsConfig;

/// MX exchanges tried per domain.
pub const MX_HOSTS_MAX: usize = 10;
/// Addresses tried per exchange (IPv6 and IPv4 together).
pub const ADDRESSES_PER_HOST_MAX: usize = 4;
/// Longest a positive answer is cached, whatever its TTL says.
pub const POSITIVE_TTL_MAX: Duration = Duration::from_secs(3600);

/// The record types outbound delivery asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    Mx,
    A,
    Aaaa,
    /// SPF, DKIM, DMARC records (the inbound checks).
    Txt,
    /// Reverse names (`<reversed ip>.in-addr.arpa` / `ip6.arpa`).
    Ptr,
}

/// The records of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// (preference, exchange without the trailing dot; "" is the root,
    /// i.e. a null MX).
    Mx(Vec<(u16, String)>),
    Ips(Vec<IpAddr>),
    /// One entry per TXT record, its strings concatenated (RFC 7208 §3.3).
    Txt(Vec<Vec<u8>>),
    /// PTR targets, without the trailing dot, lower-cased.
    Names(Vec<String>),
}

impl Records {
    pub fn is_empty(&self) -> bool {
        match self {
            Records::Mx(v) => v.is_empty(),
            Records::Ips(v) => v.is_empty(),
            Records::Txt(v) => v.is_empty(),
            Records::Names(v) => v.is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub records: Records,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    NoDomain,
    /// The name exists but has no records of this type (NODATA).
    NoRecords,
    /// Timeout, SERVFAIL, network: try again later.
    Temporary(String),
}

pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// One DNS question, answered asynchronously on the calling shard.
pub trait Resolver {
    fn lookup<'a>(&'a self, name: &'a str, kind: QueryKind) -> LocalFuture<'a, Result<Answer, DnsError>>;
}

/// The hickory resolver on its own current_thread tokio runtime, shared by
/// every shard (it is `Send + Sync`; lookups hop threads through tokio's
/// JoinHandle, whose waker is glommio's foreign-wake path).
#[derive(Clone)]
pub struct DnsSidecar {
    handle: tokio::runtime::Handle,
    resolver: Arc<TokioResolver>,
    /// `[dns] servers`, `[dns] timeout`: for the loopback PTR path.
    servers: Arc<Vec<SocketAddr>>,
    timeout: Duration,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl DnsSidecar {
    /// Starts the thread `varan-dns`. `servers` empty: /etc/resolv.conf.
    /// The thread ends when the last clone is dropped.
    pub fn start(config: &DnsConfig) -> Result<Self, String> {
        let servers = config.servers.clone();
        let timeout = config.timeout;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("varan-dns".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("DNS runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match build_resolver(&servers, timeout) {
                        Ok(r) => {
                            let _ = ready_tx.send(Ok((tokio::runtime::Handle::current(), Arc::new(r))));
                            let _ = stop_rx.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| format!("DNS thread: {e}"))?;
        let (handle, resolver) = ready_rx.recv().map_err(|_| "DNS thread ended".to_owned())??;
        Ok(Self { handle, resolver, servers: Arc::new(config.servers.clone()), timeout: config.timeout, _stop: Arc::new(StopOnDrop(Some(stop_tx))) })
    }
}

fn build_resolver(servers: &[SocketAddr], timeout: Duration) -> Result<TokioResolver, String> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("/etc/resolv.conf: {e}"))?
    } else {
        let mut config = ResolverConfig::from_name_servers(Vec::new());
        for s in servers {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            config.add_name_server(ns);
        }
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 2;
    // Our own cache is in front, per shard; hickory's is shared and locked.
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

impl Resolver for DnsSidecar {
    fn lookup<'a>(&'a self, name: &'a str, kind: QueryKind) -> LocalFuture<'a, Result<Answer, DnsError>> {
        let resolver = Arc::clone(&self.resolver);
        let (servers, timeout) = (Arc::clone(&self.servers), self.timeout);
        // Absolute name: no search-list expansion.
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        let task = self.handle.spawn(async move {
            let rtype = match kind {
                QueryKind::Mx => RecordType::MX,
                QueryKind::A => RecordType::A,
                QueryKind::Aaaa => RecordType::AAAA,
                QueryKind::Txt => RecordType::TXT,
                QueryKind::Ptr => RecordType::PTR,
            };
            // hickory answers the loopback reverse zones itself (RFC 6761:
            // "localhost"), never asking the servers; with servers
            // configured (tests give clients 127.0.0.x names), ask them.
            if kind == QueryKind::Ptr && !servers.is_empty() && is_loopback_reverse(&fqdn) {
                return loopback_ptr(&servers, &fqdn, timeout).await;
            }
            match resolver.lookup(fqdn.as_str(), rtype).await {
                Ok(lookup) => {
                    let mut ttl = u32::MAX;
                    let mut mx = Vec::new();
                    let mut ips = Vec::new();
                    let mut txt = Vec::new();
                    let mut names = Vec::new();
                    for r in lookup.answers() {
                        match &r.data {
                            RData::MX(m) => {
                                let host = m.exchange.to_ascii();
                                mx.push((m.preference, host.trim_end_matches('.').to_ascii_lowercase()));
                            }
                            RData::A(a) if kind == QueryKind::A => ips.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) if kind == QueryKind::Aaaa => ips.push(IpAddr::V6(a.0)),
                            RData::TXT(t) if kind == QueryKind::Txt => txt.push(t.txt_data.iter().flat_map(|s| s.iter().copied()).collect()),
                            RData::PTR(p) if kind == QueryKind::Ptr => names.push(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                            _ => continue,
                        }
                        ttl = ttl.min(r.ttl);
                    }
                    let records = match kind {
                        QueryKind::Mx => Records::Mx(mx),
                        QueryKind::A | QueryKind::Aaaa => Records::Ips(ips),
                        QueryKind::Txt => Records::Txt(txt),
                        QueryKind::Ptr => Records::Names(names),
                    };
                    if records.is_empty() {
                        return Err(DnsError::NoRecords);
                    }
                    Ok(Answer { records, ttl: Duration::from_secs(u64::from(ttl)) })
                }
                Err(e) if e.is_nx_domain() => Err(DnsError::NoDomain),
                Err(e) if e.is_no_records_found() => Err(DnsError::NoRecords),
                Err(e) => Err(DnsError::Temporary(e.to_string())),
            }
        });
        Box::pin(async move { task.await.unwrap_or_else(|e| Err(DnsError::Temporary(format!("DNS task: {e}")))) })
    }
}

fn is_loopback_reverse(fqdn: &str) -> bool {
    let n = fqdn.to_ascii_lowercase();
    n.ends_with(".127.in-addr.arpa.") || n == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa."
}

/// A PTR question under 127.in-addr.arpa (or for ::1) sent straight to the
/// configured servers over UDP, first answer wins.
async fn loopback_ptr(servers: &[SocketAddr], fqdn: &str, timeout: Duration) -> Result<Answer, DnsError> {
    use hickory_resolver::net::client::{Client, ClientHandle};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::net::udp::UdpClientStream;
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::rr::{DNSClass, Name};
    let name = Name::from_ascii(fqdn).map_err(|e| DnsError::Temporary(e.to_string()))?;
    let mut last = DnsError::Temporary("no server answered".into());
    for server in servers {
        let stream = UdpClientStream::builder(*server, TokioRuntimeProvider::default()).with_timeout(Some(timeout)).build();
        let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        let bg = tokio::spawn(background);
        let response = client.query(name.clone(), DNSClass::IN, RecordType::PTR).await;
        bg.abort();
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                last = DnsError::Temporary(e.to_string());
                continue;
            }
        };
        match response.response_code {
            ResponseCode::NXDomain => return Err(DnsError::NoDomain),
            ResponseCode::NoError => {}
            code => {
                last = DnsError::Temporary(format!("{code}"));
                continue;
            }
        }
        let mut ttl = u32::MAX;
        let mut names = Vec::new();
        for r in response.answers.iter() {
            if let RData::PTR(p) = &r.data {
                names.push(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase());
                ttl = ttl.min(r.ttl);
            }
        }
        if names.is_empty() {
            return Err(DnsError::NoRecords);
        }
        return Ok(Answer { records: Records::Names(names), ttl: Duration::from_secs(u64::from(ttl)) });
    }
    Err(last)
}

/// Cached answers: (name, type) → (valid until, answer).
type CacheTable = HashMap<(String, QueryKind), (Instant, Result<Answer, DnsError>)>;

/// A shard-local cache in front of another resolver.
pub struct CachedResolver<R> {
    inner: R,
    entries_max: usize,
    negative_ttl_max: Duration,
    cache: RefCell<CacheTable>,
}

impl<R: Resolver> CachedResolver<R> {
    pub fn new(inner: R, config: &DnsConfig) -> Self {
        Self { inner, entries_max: config.cache_entries_max.max(1), negative_ttl_max: config.negative_ttl_max, cache: RefCell::new(HashMap::new()) }
    }

    fn insert(&self, key: (String, QueryKind), value: &Result<Answer, DnsError>) {
        let ttl = match value {
            Ok(a) => a.ttl.min(POSITIVE_TTL_MAX),
            Err(DnsError::NoDomain | DnsError::NoRecords) => self.negative_ttl_max,
            Err(DnsError::Temporary(_)) => return,
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= self.entries_max {
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= self.entries_max {
                cache.clear();
            }
        }
        cache.insert(key, (now + ttl, value.clone()));
    }
}

impl<R: Resolver> Resolver for CachedResolver<R> {
    fn lookup<'a>(&'a self, name: &'a str, kind: QueryKind) -> LocalFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move {
            let key = (name.to_ascii_lowercase(), kind);
            if let Some((until, value)) = self.cache.borrow().get(&key) {
                if *until > Instant::now() {
                    return value.clone();
                }
            }
            let value = self.inner.lookup(&key.0, kind).await;
            self.insert(key, &value);
            value
        })
    }
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Exchanges in preference order, each with its addresses (IPv6 first).
    Hosts(Vec<(String, Vec<IpAddr>)>),
    /// RFC 7505 null MX: the domain accepts no mail (5.1.10).
    NullMx,
    /// The domain does not exist, or has neither MX nor address (5.1.2).
    NoMailHost,
}

/// MX lookup with the implicit-MX fallback (RFC 5321 §5.1). `Err` is a
/// temporary failure.
pub async fn route(resolver: &dyn Resolver, domain: &str) -> Result<Route, DnsError> {
    let exchanges = match resolver.lookup(domain, QueryKind::Mx).await {
        Ok(Answer { records: Records::Mx(mut mx), .. }) => {
            // RFC 7505 §3: a single MX whose exchange is the root.
            if mx.len() == 1 && mx[0].1.is_empty() {
                return Ok(Route::NullMx);
            }
            mx.retain(|(_, host)| !host.is_empty());
            mx.sort_by_key(|(pref, _)| *pref);
            mx.dedup_by(|a, b| a.1 == b.1);
            mx.truncate(MX_HOSTS_MAX);
            mx.into_iter().map(|(_, h)| h).collect::<Vec<_>>()
        }
        Ok(_) => return Err(DnsError::Temporary("MX answer of the wrong type".into())),
        Err(DnsError::NoDomain) => return Ok(Route::NoMailHost),
        // §5.1: no MX: the domain itself is the exchange.
        Err(DnsError::NoRecords) => vec![domain.to_ascii_lowercase()],
        Err(e) => return Err(e),
    };
    let mut hosts = Vec::new();
    let mut temporary = None;
    for host in exchanges {
        let mut addrs = Vec::new();
        for kind in [QueryKind::Aaaa, QueryKind::A] {
            match resolver.lookup(&host, kind).await {
                Ok(Answer { records: Records::Ips(ips), .. }) => addrs.extend(ips),
                Ok(_) | Err(DnsError::NoDomain | DnsError::NoRecords) => {}
                Err(e) => temporary = Some(e),
            }
        }
        addrs.truncate(ADDRESSES_PER_HOST_MAX);
        if !addrs.is_empty() {
            hosts.push((host, addrs));
        }
    }
    match (hosts.is_empty(), temporary) {
        (false, _) => Ok(Route::Hosts(hosts)),
        (true, Some(e)) => Err(e),
        (true, None) => Ok(Route::NoMailHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A fixed table; counts queries.
    struct Table(HashMap<(String, QueryKind), Result<Answer, DnsError>>, Cell<usize>);

    impl Resolver for Table {
        fn lookup<'a>(&'a self, name: &'a str, kind: QueryKind) -> LocalFuture<'a, Result<Answer, DnsError>> {
            self.1.set(self.1.get() + 1);
            let v = self.0.get(&(name.to_owned(), kind)).cloned().unwrap_or(Err(DnsError::NoRecords));
            Box::pin(async move { v })
        }
    }

    fn mx(v: &[(u16, &str)]) -> Result<Answer, DnsError> {
        Ok(Answer { records: Records::Mx(v.iter().map(|(p, h)| (*p, h.to_string())).collect()), ttl: Duration::from_secs(60) })
    }
    fn ips(v: &[&str]) -> Result<Answer, DnsError> {
        Ok(Answer { records: Records::Ips(v.iter().map(|s| s.parse().unwrap()).collect()), ttl: Duration::from_secs(60) })
    }

    fn table(entries: Vec<(&str, QueryKind, Result<Answer, DnsError>)>) -> Table {
        Table(entries.into_iter().map(|(n, k, v)| ((n.to_owned(), k), v)).collect(), Cell::new(0))
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn mx_sorted_with_addresses_ipv6_first() {
        let t = table(vec![
            ("a.example", QueryKind::Mx, mx(&[(20, "mx2.a.example"), (10, "mx1.a.example"), (30, "gone.a.example")])),
            ("mx1.a.example", QueryKind::A, ips(&["192.0.2.1"])),
            ("mx1.a.example", QueryKind::Aaaa, ips(&["2001:db8::1"])),
            ("mx2.a.example", QueryKind::A, ips(&["192.0.2.2"])),
        ]);
        let r = run(route(&t, "a.example")).unwrap();
        let Route::Hosts(h) = r else { panic!("{r:?}") };
        assert_eq!(h.len(), 2, "a host without addresses is skipped");
        assert_eq!(h[0].0, "mx1.a.example");
        assert_eq!(h[0].1, vec!["2001:db8::1".parse::<IpAddr>().unwrap(), "192.0.2.1".parse().unwrap()]);
        assert_eq!(h[1].0, "mx2.a.example");
    }

    #[test]
    fn null_mx_no_domain_implicit_mx_and_temporary() {
        let t = table(vec![
            ("null.example", QueryKind::Mx, mx(&[(0, "")])),
            ("nx.example", QueryKind::Mx, Err(DnsError::NoDomain)),
            ("plain.example", QueryKind::A, ips(&["192.0.2.9"])),
            ("fail.example", QueryKind::Mx, Err(DnsError::Temporary("SERVFAIL".into()))),
            ("tmp.example", QueryKind::Mx, mx(&[(10, "mx.tmp.example")])),
            ("mx.tmp.example", QueryKind::A, Err(DnsError::Temporary("timeout".into()))),
        ]);
        assert_eq!(run(route(&t, "null.example")).unwrap(), Route::NullMx);
        assert_eq!(run(route(&t, "nx.example")).unwrap(), Route::NoMailHost);
        assert_eq!(run(route(&t, "empty.example")).unwrap(), Route::NoMailHost);
        assert_eq!(run(route(&t, "plain.example")).unwrap(), Route::Hosts(vec![("plain.example".into(), vec!["192.0.2.9".parse().unwrap()])]));
        assert!(run(route(&t, "fail.example")).is_err());
        assert!(run(route(&t, "tmp.example")).is_err());
    }

    #[test]
    fn cache_positive_negative_not_temporary() {
        let t = table(vec![("a.example", QueryKind::A, ips(&["192.0.2.1"])), ("t.example", QueryKind::A, Err(DnsError::Temporary("x".into())))]);
        let c = CachedResolver::new(t, &DnsConfig { cache_entries_max: 2, ..DnsConfig::default() });
        for _ in 0..3 {
            run(c.lookup("A.example", QueryKind::A)).unwrap();
            assert_eq!(run(c.lookup("n.example", QueryKind::A)), Err(DnsError::NoRecords));
        }
        assert_eq!(c.inner.1.get(), 2);
        for _ in 0..2 {
            let _ = run(c.lookup("t.example", QueryKind::A));
        }
        assert_eq!(c.inner.1.get(), 4, "temporary errors are asked again");
        // Bound: a third name empties the full table.
        let _ = run(c.lookup("z.example", QueryKind::A));
        assert!(c.cache.borrow().len() <= 2);
    }
}
