//! Delivery to one destination (a domain's MX hosts or a smarthost): the
//! units of work for it share at most `per_destination` connections,
//! each reused for several messages.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use varan_core::config::{Config, OutboundTls, Smarthost, SmarthostTls};
use varan_core::queue::{QueueEntry, QueueStore, Ret};
use varan_protocols::smtp::client::{ClientAuth, ClientConfig, ClientRecipient, TlsPolicy, Transaction};

use super::transport::{ConnError, Connection, Dial};
use super::{Outcome, Unit};
use crate::dns::{self, QueryKind, Records, Resolver, Route};

/// Where a unit goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The recipients' domain, by MX.
    Mx(String),
    /// host, port; credentials and TLS come from the smarthost setting.
    Smarthost(String, u16),
    /// The LMTP server for local mailboxes (`[lmtp]`): host, port.
    Lmtp(String, u16),
}

/// Shared by the workers of one destination.
pub struct DestinationJob {
    pub destination: Destination,
    pub smarthost: Option<Smarthost>,
    pub units: RefCell<VecDeque<Unit>>,
    pub done: RefCell<Vec<(Unit, Vec<Outcome>)>>,
}

pub struct Env {
    pub config: Arc<Config>,
    pub store: Arc<dyn QueueStore>,
    pub resolver: Rc<dyn Resolver>,
    pub opportunistic: Arc<rustls::ClientConfig>,
    pub verified: Option<Arc<rustls::ClientConfig>>,
    /// Whole-shard outbound connection limit.
    pub connections: Rc<glommio::sync::Semaphore>,
}

/// Candidate hosts in order, or the outcome every unit gets.
async fn candidates(env: &Env, job: &DestinationJob) -> Result<Vec<(String, SocketAddr)>, Outcome> {
    match (&job.destination, &job.smarthost) {
        (Destination::Smarthost(host, port) | Destination::Lmtp(host, port), _) => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![(host.clone(), SocketAddr::new(ip, *port))]);
            }
            let mut out = Vec::new();
            let mut last = String::from("no address");
            for kind in [QueryKind::Aaaa, QueryKind::A] {
                match env.resolver.lookup(host, kind).await {
                    Ok(a) => {
                        if let Records::Ips(ips) = a.records {
                            out.extend(ips.into_iter().take(dns::ADDRESSES_PER_HOST_MAX).map(|ip| (host.clone(), SocketAddr::new(ip, *port))));
                        }
                    }
                    Err(e) => last = format!("{e:?}"),
                }
            }
            // A missing smarthost is a configuration problem: retry, never bounce.
            if out.is_empty() {
                return Err(Outcome::temp(&format!("smarthost {host}: DNS {last}")));
            }
            Ok(out)
        }
        (Destination::Mx(domain), _) => match dns::route(env.resolver.as_ref(), domain).await {
            Ok(Route::Hosts(hosts)) => {
                let port = env.config.outbound.mx_port;
                Ok(hosts.into_iter().flat_map(|(h, addrs)| addrs.into_iter().map(move |a| (h.clone(), SocketAddr::new(a, port)))).collect())
            }
            Ok(Route::NullMx) => Err(Outcome::perm("5.1.10", &format!("{domain} does not accept mail (null MX, RFC 7505)"), None)),
            Ok(Route::NoMailHost) => Err(Outcome::perm("5.1.2", &format!("{domain}: no mail exchanger (domain or address not found)"), None)),
            Err(e) => Err(Outcome::temp(&format!("DNS lookup for {domain} failed: {e:?}"))),
        },
    }
}

fn dial_for(env: &Env, job: &DestinationJob, host: &str, addr: SocketAddr, no_tls: bool) -> Dial {
    let o = &env.config.outbound;
    let source = match addr.ip() {
        IpAddr::V4(_) => o.source_ipv4.map(IpAddr::V4),
        IpAddr::V6(_) => o.source_ipv6.map(IpAddr::V6),
    };
    let mut client = ClientConfig { helo_name: env.config.helo_name().to_owned(), lmtp: false, tls: TlsPolicy::Opportunistic, auth: None, implicit_tls: false };
    let mut tls = Arc::clone(&env.opportunistic);
    if matches!(job.destination, Destination::Lmtp(..)) {
        // LMTP runs to a store on a trusted network (RFC 2033 §1), plaintext.
        client.lmtp = true;
        client.tls = TlsPolicy::Never;
        return Dial { host: host.to_owned(), addr, client, tls, source: None, connect_timeout: o.connect_timeout };
    }
    match &job.smarthost {
        Some(sh) => {
            client.auth = sh.credentials.as_ref().map(|(u, p)| ClientAuth { username: u.clone(), password: p.clone() });
            match o.smarthost_tls {
                SmarthostTls::None => client.tls = TlsPolicy::Never,
                SmarthostTls::Starttls => client.tls = TlsPolicy::Required,
                SmarthostTls::Implicit => {
                    client.tls = TlsPolicy::Never;
                    client.implicit_tls = true;
                }
            }
            if o.smarthost_tls != SmarthostTls::None {
                // Without a CA bundle, verification cannot succeed: keep the
                // verifying config's absence visible as a handshake error.
                tls = env.verified.clone().unwrap_or_else(|| Arc::clone(&env.opportunistic));
            }
        }
        None => {
            if o.tls == OutboundTls::None || no_tls {
                client.tls = TlsPolicy::Never;
            }
        }
    }
    Dial { host: host.to_owned(), addr, client, tls, source, connect_timeout: o.connect_timeout }
}

/// Opens a connection to the first candidate that answers. For MX
/// delivery a failed TLS handshake is retried once in plaintext.
async fn open(env: &Env, job: &DestinationJob, hosts: &[(String, SocketAddr)]) -> Result<Connection, String> {
    let mut last = String::from("no host to try");
    for (host, addr) in hosts {
        let opportunistic = job.smarthost.is_none();
        match Connection::open(dial_for(env, job, host, *addr, false)).await {
            Ok(c) => return Ok(c),
            Err(e @ (ConnError::Handshake(_) | ConnError::Protocol(varan_protocols::smtp::client::ClientError::TlsUnavailable))) if opportunistic => {
                tracing::info!(host = %host, %addr, error = %e.text(), "STARTTLS failed; retrying in plaintext");
                match Connection::open(dial_for(env, job, host, *addr, true)).await {
                    Ok(c) => return Ok(c),
                    Err(e) => last = format!("{host} [{addr}]: {}", e.text()),
                }
            }
            Err(e) => last = format!("{host} [{addr}]: {}", e.text()),
        }
        tracing::debug!(host = %host, %addr, error = %last, "outbound connection failed");
    }
    Err(last)
}

/// One worker: takes units until none are left.
pub async fn worker(env: Rc<Env>, job: Rc<DestinationJob>, hosts: Rc<Result<Vec<(String, SocketAddr)>, Outcome>>) {
    let mut conn: Option<Connection> = None;
    // Held while `conn` is open: the shard-wide connection limit.
    let mut permit: Option<glommio::sync::StaticPermit> = None;
    let mut sent_on_conn = 0usize;
    let mut dead: Option<String> = None;
    loop {
        let Some(unit) = job.units.borrow_mut().pop_front() else { break };
        let outcomes = match hosts.as_ref() {
            Err(o) => vec![o.clone(); unit.recipients.len()],
            Ok(_) if dead.is_some() => vec![Outcome::temp(dead.as_deref().unwrap_or("")); unit.recipients.len()],
            Ok(list) => {
                if conn.is_none() || sent_on_conn >= env.config.outbound.messages_per_connection_max {
                    if let Some(old) = conn.take() {
                        old.quit().await;
                    }
                    permit = None;
                    let Ok(p) = env.connections.acquire_static_permit(1).await else { break };
                    match open(&env, &job, list).await {
                        Ok(c) => {
                            conn = Some(c);
                            permit = Some(p);
                            sent_on_conn = 0;
                        }
                        Err(e) => dead = Some(e),
                    }
                }
                match conn.as_mut() {
                    None => vec![Outcome::temp(dead.as_deref().unwrap_or("")); unit.recipients.len()],
                    Some(c) => {
                        sent_on_conn += 1;
                        match send_unit(&env, c, &unit).await {
                            Ok(o) => o,
                            Err(e) => {
                                conn = None;
                                permit = None;
                                vec![Outcome::temp(&e); unit.recipients.len()]
                            }
                        }
                    }
                }
            }
        };
        job.done.borrow_mut().push((unit, outcomes));
    }
    if let Some(c) = conn.take() {
        c.quit().await;
    }
    drop(permit);
}

async fn send_unit(env: &Env, conn: &mut Connection, unit: &Unit) -> Result<Vec<Outcome>, String> {
    let entry: &QueueEntry = &unit.entry;
    let store = Arc::clone(&env.store);
    let id = entry.id;
    let (content, first) = glommio::executor()
        .spawn_blocking(move || {
            let mut reader = store.content(id).map_err(|e| format!("queue: {e}"))?;
            let first = super::transport::read_full_chunk(&mut reader).map_err(|e| format!("queue content: {e}"))?;
            Ok::<_, String>((reader, first))
        })
        .await?;
    let tx = Transaction {
        sender: entry.sender.clone(),
        recipients: unit
            .recipients
            .iter()
            .filter_map(|&i| entry.recipients.get(i))
            .map(|r| ClientRecipient { address: r.address.clone(), orcpt: r.orcpt.clone(), notify: r.notify })
            .collect(),
        envid: entry.envid.clone(),
        ret: (entry.ret == Ret::Full).then_some(Ret::Full),
        body: entry.body,
    };
    let host = conn.host().to_owned();
    let result = conn.send(tx, content, first).await.map_err(|e| format!("{host}: {}", e.text()))?;
    if result.eight_bit_unannounced {
        tracing::info!(queue_id = %entry.id, host = %host, "8-bit message sent to a server without 8BITMIME (RFC 6152 §3: sent unchanged)");
    }
    let mut out = vec![Outcome::temp("no reply"); unit.recipients.len()];
    for o in result.recipients {
        let Some(slot) = out.get_mut(o.index) else { continue };
        let line = o.reply.one_line();
        *slot = if o.reply.is_positive() {
            Outcome::Delivered { reply: line, relayed: !result.dsn_passed_on, remote: host.clone() }
        } else if o.reply.is_permanent() {
            Outcome::perm(&o.reply.status(), &line, Some(host.clone()))
        } else {
            Outcome::temp(&format!("{host}: {line}"))
        };
    }
    Ok(out)
}

pub async fn run_job(env: Rc<Env>, job: Rc<DestinationJob>, workers: usize) {
    let hosts = Rc::new(candidates(&env, &job).await);
    let n = workers.clamp(1, job.units.borrow().len().max(1));
    let tasks: Vec<_> = (0..n).map(|_| glommio::spawn_local(worker(Rc::clone(&env), Rc::clone(&job), Rc::clone(&hosts)))).collect();
    for t in tasks {
        t.await;
    }
}
