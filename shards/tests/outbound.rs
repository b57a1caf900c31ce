//! The queue runner against real peers: dnsmasq for DNS (MX, A, null MX,
//! NXDOMAIN) and Postfix's smtp-sink as remote servers, plus a small
//! listener that advertises STARTTLS and drops the connection after
//! `220`. Needs `dnsmasq` (dnsmasq-base) and `/usr/sbin/smtp-sink`
//! (postfix), which scripts/test.sh installs; the test fails, not skips,
//! without them.
//!
//! Addresses: every remote is on its own 127.0.0.x with one shared port
//! (`outbound.mx_port`), so one config reaches them all.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use varan_core::config::Config;
use varan_core::queue::{BodyInfo, Notify, QueueEntry, QueueId, QueueStore, QueuedRecipient, RecipientState, Ret};
use varan_shards::dns::{CachedResolver, DnsSidecar, LocalFuture};
use varan_shards::outbound::{self, LocalDelivery, RunnerContext};
use varan_shards::shard::Shutdown;
use varan_storage::queue_memory::MemoryQueue;

const PORT_BASE: u16 = 30_000 + 470;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tmpdir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varan-outbound-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // smtp-sink drops to `nobody` before it writes its dumps.
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d
}

fn start_dnsmasq(dir: &Path, port: u16) -> Kill {
    let conf = format!(
        "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nlocal=/test/\n\
         host-record=mx.ok.test,127.0.0.2\nmx-host=ok.test,mx.ok.test,10\n\
         host-record=mx.temp.test,127.0.0.3\nmx-host=temp.test,mx.temp.test,10\n\
         host-record=mx.perm.test,127.0.0.4\nmx-host=perm.test,mx.perm.test,10\n\
         host-record=mx.refused.test,127.0.0.5\nmx-host=refused.test,mx.refused.test,10\n\
         host-record=mx.badtls.test,127.0.0.6\nmx-host=badtls.test,mx.badtls.test,10\n\
         host-record=mx.tlsok.test,127.0.0.10\n\
         host-record=mx.v6.test,::1\nmx-host=v6.test,mx.v6.test,10\nmx-host=tlsok.test,mx.tlsok.test,10\n\
         mx-host=nullmx.test,.,0\n"
    );
    std::fs::write(dir.join("dns.conf"), conf).unwrap();
    let child = Command::new("dnsmasq")
        .arg(format!("--conf-file={}", dir.join("dns.conf").display()))
        .arg("--keep-in-foreground")
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .spawn()
        .expect("dnsmasq (apt-get install dnsmasq-base)");
    std::thread::sleep(Duration::from_millis(300));
    Kill(child)
}

fn start_sink(ip: &str, port: u16, extra: &[&str], dump: &Path) -> Kill {
    let mut cmd = Command::new("/usr/sbin/smtp-sink");
    cmd.args(["-c", "-u", "nobody", "-D"]).arg(dump).args(extra).arg(format!("{ip}:{port}")).arg("16");
    let child = cmd.spawn().expect("/usr/sbin/smtp-sink (postfix)");
    Kill(child)
}

/// Advertises STARTTLS, answers it with 220 and closes; a session that does
/// not use STARTTLS is served normally. Counts delivered messages.
/// Returns the messages received, the STARTTLS attempts and the peers.
type Seen = (Arc<Mutex<Vec<String>>>, Arc<Mutex<u32>>, Arc<Mutex<Vec<std::net::IpAddr>>>);

fn start_broken_tls(ip: &str, port: u16) -> Seen {
    let listener = TcpListener::bind((ip, port)).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let starttls = Arc::new(Mutex::new(0u32));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (seen, tried, peers2) = (Arc::clone(&got), Arc::clone(&starttls), Arc::clone(&peers));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            if let Ok(peer) = s.peer_addr() {
                peers2.lock().unwrap().push(peer.ip());
            }
            let mut r = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(b"220 broken ESMTP\r\n");
            let mut line = String::new();
            let mut in_data = false;
            let mut body = String::new();
            while {
                line.clear();
                r.read_line(&mut line).unwrap_or(0) > 0
            } {
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        seen.lock().unwrap().push(std::mem::take(&mut body));
                        let _ = s.write_all(b"250 2.0.0 ok\r\n");
                    } else {
                        body.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-broken\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                    "STAR" => {
                        *tried.lock().unwrap() += 1;
                        let _ = s.write_all(b"220 2.0.0 go ahead\r\n");
                        let _ = s.write_all(b"\x15\x03\x01\x00\x02\x02\x28");
                        break;
                    }
                    "DATA" => {
                        in_data = true;
                        b"354 go\r\n"
                    }
                    "QUIT" => {
                        let _ = s.write_all(b"221 bye\r\n");
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                let _ = s.write_all(reply);
            }
        }
    });
    (got, starttls, peers)
}

/// A server whose STARTTLS works (self-signed certificate, which
/// opportunistic TLS accepts). Records each message and whether it came
/// over TLS.
fn start_good_tls(ip: &str, port: u16) -> Arc<Mutex<Vec<(bool, String)>>> {
    let key = rcgen::generate_simple_self_signed(vec!["mx.tlsok.test".to_owned()]).unwrap();
    start_tls_server(ip, port, server_config(key.cert.der().clone(), &key.signing_key))
}

fn server_config(cert: rustls::pki_types::CertificateDer<'static>, key: &rcgen::KeyPair) -> Arc<rustls::ServerConfig> {
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_no_client_auth().with_single_cert(vec![cert], private).unwrap(),
    )
}

fn start_tls_server(ip: &str, port: u16, config: Arc<rustls::ServerConfig>) -> Arc<Mutex<Vec<(bool, String)>>> {
    let listener = TcpListener::bind((ip, port)).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let _ = serve(Box::new(tcp.try_clone().unwrap()), Some((tcp, Arc::clone(&config))), &seen, false);
        }
    });
    got
}

trait Io: std::io::Read + Write {}
impl<T: std::io::Read + Write> Io for T {}

/// A minimal SMTP server over `io`; on STARTTLS it switches to TLS over
/// `upgrade` and starts again.
fn serve(mut io: Box<dyn Io>, upgrade: Option<(std::net::TcpStream, Arc<rustls::ServerConfig>)>, seen: &Mutex<Vec<(bool, String)>>, tls: bool) -> std::io::Result<()> {
    if !tls {
        io.write_all(b"220 tlsok ESMTP\r\n")?;
    }
    let mut r = BufReader::new(io);
    let mut line = String::new();
    let mut body = String::new();
    let mut in_data = false;
    let mut upgrade = upgrade;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let w = r.get_mut();
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                seen.lock().unwrap().push((tls, std::mem::take(&mut body)));
                w.write_all(b"250 2.0.0 ok\r\n")?;
            } else {
                body.push_str(&line);
            }
            continue;
        }
        match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
            "EHLO" if tls => w.write_all(b"250-tlsok\r\n250-AUTH PLAIN\r\n250 PIPELINING\r\n")?,
            "AUTH" => w.write_all(b"235 2.7.0 ok\r\n")?,
            "EHLO" => w.write_all(b"250-tlsok\r\n250-PIPELINING\r\n250 STARTTLS\r\n")?,
            "STAR" => {
                let Some((tcp, config)) = upgrade.take() else { return Ok(()) };
                w.write_all(b"220 2.0.0 go ahead\r\n")?;
                let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
                let stream = rustls::StreamOwned::new(conn, tcp);
                return serve(Box::new(stream), None, seen, true);
            }
            "DATA" => {
                in_data = true;
                w.write_all(b"354 go\r\n")?;
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                w.flush()?;
                return Ok(());
            }
            _ => w.write_all(b"250 ok\r\n")?,
        }
        w.flush()?;
    }
}

fn entry(id: u64, rcpt: &str, queued_at: u64) -> QueueEntry {
    QueueEntry {
        id: QueueId(id),
        sender: "alice@local.test".into(),
        recipients: vec![QueuedRecipient {
            address: rcpt.into(),
            orcpt: Some(format!("rfc822;{rcpt}")),
            notify: Notify::default(),
            state: RecipientState::Pending,
            last_error: None,
        }],
        envid: Some(format!("env{id}")),
        ret: Ret::Headers,
        body: BodyInfo { eight_bit: false, smtputf8: false, size: 60 },
        submitter: Some("alice@local.test".into()),
        queued_at,
        next_attempt: 0,
        attempts: 0,
        delay_warned: false,
    }
}

/// Local deliveries (the DSNs back to alice@local.test).
#[derive(Default)]
struct LocalSink(RefCell<Vec<(String, Vec<u8>)>>);

impl LocalDelivery for LocalSink {
    fn deliver<'a>(&'a self, recipient: &'a str, _sender: &'a str, content: Vec<u8>) -> LocalFuture<'a, Result<(), (bool, String)>> {
        self.0.borrow_mut().push((recipient.to_owned(), content));
        Box::pin(async { Ok(()) })
    }
}

#[test]
fn runner_against_real_peers() {
    let dir = tmpdir("peers");
    let (dns_port, smtp_port) = (PORT_BASE, PORT_BASE + 1);
    let _dns = start_dnsmasq(&dir, dns_port);
    let _ok = start_sink("127.0.0.2", smtp_port, &[], &dir.join("ok.dump"));
    let _temp = start_sink("127.0.0.3", smtp_port, &["-r", "rcpt"], &dir.join("temp.dump"));
    let _perm = start_sink("127.0.0.4", smtp_port, &["-f", "rcpt"], &dir.join("perm.dump"));
    let (broken, starttls_tried, peers) = start_broken_tls("127.0.0.6", smtp_port);
    // Smarthost for senders of viarelay.test (smtp-sink announces AUTH and
    // takes any credentials).
    let tls_ok = start_good_tls("127.0.0.10", smtp_port);
    // An MX with only an AAAA record (outbound.source_ipv4 does not apply).
    let _v6 = start_sink("[::1]", smtp_port, &[], &dir.join("v6.dump"));
    let _relay = start_sink("127.0.0.7", smtp_port, &[], &dir.join("relay.dump"));
    std::thread::sleep(Duration::from_millis(300));

    let config: Config = Config::from_toml(&format!(
        "[server]\nhostname = \"mx.local.test\"\n\
         [queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\nlifetime = \"1h\"\ndelay_warning = \"30m\"\nscan_interval = \"50ms\"\n\
         [outbound]\nmx_port = {smtp_port}\nconnect_timeout = \"2s\"\nsmarthost_tls = \"none\"\nsource_ipv4 = \"127.0.0.8\"\nconnections_per_destination_max = 1\n\
         [dns]\nservers = [\"127.0.0.1:{dns_port}\"]\ntimeout = \"2s\"\n\
         [[domain]]\nname = \"local.test\"\n\
         [[domain]]\nname = \"viarelay.test\"\nsmarthost = \"user:p@ss@127.0.0.7:{smtp_port}\"\n"
    ))
    .unwrap();
    let config = Arc::new(config);
    let store = Arc::new(MemoryQueue::new());
    let now = outbound::unix_now();
    let content = b"From: alice@local.test\nSubject: test\n\n.leading dot\nbody\n";
    let cases = [
        (1, "bob@ok.test", now),
        (2, "carol@temp.test", now - 2700),
        (3, "dave@perm.test", now),
        (4, "erin@refused.test", now),
        (5, "frank@badtls.test", now),
        (6, "gina@nullmx.test", now),
        (7, "hank@ok.test", now - 2700),
        (8, "ivan@nxdomain.test", now),
    ];
    for (id, rcpt, at) in cases {
        store.enqueue(&entry(id, rcpt, at), content).unwrap();
    }
    // NOTIFY=SUCCESS: smtp-sink offers DSN, so the request is passed on
    // and no report comes from us; the STARTTLS-breaking listener does
    // not, so we send a "relayed" report.
    let success = Notify { success: true, failure: true, explicit: true, ..Notify::default() };
    let mut notify = entry(10, "kate@ok.test", now);
    notify.recipients[0].notify = success;
    store.enqueue(&notify, content).unwrap();
    let mut notify = entry(12, "lena@badtls.test", now);
    notify.recipients[0].notify = success;
    store.enqueue(&notify, content).unwrap();
    // Sender in viarelay.test: through its smarthost, although the
    // recipient's domain does not exist in DNS.
    let mut relayed = entry(11, "leo@nowhere-at-all.test", now);
    relayed.sender = "max@viarelay.test".into();
    store.enqueue(&relayed, content).unwrap();
    store.enqueue(&entry(13, "nina@tlsok.test", now), content).unwrap();
    store.enqueue(&entry(14, "otto@v6.test", now), content).unwrap();
    // Expired: queued longer ago than the lifetime.
    let mut old = entry(9, "judy@refused.test", now - 2 * 3600);
    old.attempts = 3;
    old.recipients[0].last_error = Some("connect: Connection refused".into());
    store.enqueue(&old, content).unwrap();

    let sidecar = DnsSidecar::start(&config.dns).unwrap();
    let store_dyn: Arc<dyn QueueStore> = store.clone();
    let cfg = Arc::clone(&config);
    let dns_config = config.dns.clone();
    let dsns = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let local = Rc::new(LocalSink::default());
            let shutdown = Rc::new(Shutdown::default());
            let runner = outbound::start(RunnerContext {
                store: store_dyn.clone(),
                partition: (0, 1),
                config: Rc::new(move || Arc::clone(&cfg)),
                resolver: Rc::new(CachedResolver::new(sidecar, &dns_config)),
                local: Some(Rc::clone(&local) as Rc<dyn LocalDelivery>),
                shutdown: Rc::clone(&shutdown),
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let temp_attempts = store_dyn.get(QueueId(2)).map(|e| e.attempts).unwrap_or(0);
                let refused_attempts = store_dyn.get(QueueId(4)).map(|e| e.attempts).unwrap_or(0);
                let finished = [1u64, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14].iter().all(|id| store_dyn.get(QueueId(*id)).is_err());
                if (finished && temp_attempts >= 2 && refused_attempts >= 2) || Instant::now() > deadline {
                    break;
                }
            }
            shutdown.trigger();
            runner.await;
            local.0.take()
        })
        .unwrap()
        .join()
        .unwrap();

    // Delivered: removed from the queue, content on the sink with the dot
    // unstuffed (smtp-sink's dump holds the message as received).
    assert!(store.get(QueueId(1)).is_err(), "ok.test delivered");
    // smtp-sink appends a unique suffix to the dump template.
    let dump: String = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("ok.dump"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(dump.contains("Subject: test"), "sink got the message: {dump:?}");
    // 4xx: still queued, retried, error recorded.
    let temp = store.get(QueueId(2)).unwrap();
    assert!(temp.attempts >= 2, "retried: {temp:?}");
    assert_eq!(temp.recipients[0].state, RecipientState::Pending);
    assert!(temp.recipients[0].last_error.as_deref().unwrap_or("").contains("4"), "{temp:?}");
    // Connection refused: retried.
    let refused = store.get(QueueId(4)).unwrap();
    assert!(refused.attempts >= 2);
    assert!(refused.recipients[0].last_error.as_deref().unwrap_or("").contains("connect"), "{refused:?}");
    // Broken STARTTLS: delivered in plaintext.
    assert!(store.get(QueueId(5)).is_err(), "badtls.test delivered after plaintext fallback");
    assert_eq!(broken.lock().unwrap().len(), 2);
    let peers = peers.lock().unwrap();
    assert!(peers.iter().all(|p| p.to_string() == "127.0.0.8"), "outbound.source_ipv4 used: {peers:?}");
    assert_eq!(peers.len(), 2, "the TLS attempt and one reused plaintext connection: {peers:?}");
    // One connection per destination: STARTTLS failed once, then both
    // messages went over one reused plaintext connection.
    assert_eq!(*starttls_tried.lock().unwrap(), 1, "STARTTLS tried once");
    assert!(store.get(QueueId(10)).is_err());
    assert!(store.get(QueueId(14)).is_err(), "delivered over IPv6: {:?}", store.get(QueueId(14)));
    let v6_dump: String = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("v6.dump"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(v6_dump.contains("Subject: test"), "{v6_dump:?}");
    // STARTTLS that works: the message went over TLS, dot-stuffing undone
    // by the server's reading of the DATA stream.
    assert!(store.get(QueueId(13)).is_err(), "{:?}", store.get(QueueId(13)));
    let over_tls = tls_ok.lock().unwrap();
    assert_eq!(over_tls.len(), 1);
    assert!(over_tls[0].0, "delivered over TLS");
    assert!(over_tls[0].1.contains("\r\n..leading dot\r\n"), "dot-stuffed, CRLF on the wire: {:?}", over_tls[0].1);
    assert!(store.get(QueueId(11)).is_err(), "delivered through the smarthost: {:?}", store.get(QueueId(11)));
    let relay_dump: String = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("relay.dump"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(relay_dump.contains("Subject: test"), "smarthost got the message: {relay_dump:?}");

    // DSNs: delivered locally to alice.
    let find = |needle: &str| dsns.iter().map(|(_, c)| String::from_utf8_lossy(c).into_owned()).find(|t| t.contains(needle));
    let perm = find("Final-Recipient: rfc822; dave@perm.test").expect("DSN for the 5xx");
    assert!(perm.contains("Action: failed") && perm.contains("Status: 5."), "{perm}");
    assert!(perm.contains("Diagnostic-Code: smtp; 5"), "{perm}");
    assert!(perm.contains("Remote-MTA: dns; mx.perm.test"), "{perm}");
    let null = find("gina@nullmx.test").expect("DSN for the null MX");
    assert!(null.contains("Status: 5.1.10"), "{null}");
    let nx = find("ivan@nxdomain.test").expect("DSN for NXDOMAIN");
    assert!(nx.contains("Status: 5.1.2"), "{nx}");
    assert!(find("kate@ok.test").is_none(), "NOTIFY passed on to a DSN-capable server");
    let relay_report = find("Final-Recipient: rfc822; lena@badtls.test").expect("relayed DSN");
    assert!(relay_report.contains("Action: relayed") && relay_report.contains("Remote-MTA: dns; mx.badtls.test"), "{relay_report}");
    assert!(find("bob@ok.test").is_none(), "no success report without NOTIFY=SUCCESS");
    let delayed = find("hank@ok.test");
    assert!(delayed.is_none(), "delivered at the first attempt: no delay DSN");
    let expired = find("judy@refused.test").expect("DSN for the expired entry");
    assert!(expired.contains("Action: failed") && expired.contains("4.4.7") && expired.contains("delivery time expired"), "{expired}");
    for (rcpt, _) in dsns.iter() {
        assert_eq!(rcpt, "alice@local.test");
    }
    // The 4xx entry is older than delay_warning: exactly one delay DSN,
    // although it was attempted several times.
    let delays: Vec<_> = dsns.iter().filter(|(_, c)| String::from_utf8_lossy(c).contains("Final-Recipient: rfc822; carol@temp.test")).collect();
    assert_eq!(delays.len(), 1, "one delay warning");
    let delay = String::from_utf8_lossy(&delays[0].1);
    assert!(delay.contains("Action: delayed") && delay.contains("Will-Retry-Until:"), "{delay}");
    assert!(store.get(QueueId(2)).unwrap().delay_warned);
    let _ = std::fs::remove_dir_all(&dir);
}

/// DNS from a fixed table (no dnsmasq needed for the smarthost test).
struct Fixed(Vec<(&'static str, std::net::IpAddr)>);

impl varan_shards::dns::Resolver for Fixed {
    fn lookup<'a>(&'a self, name: &'a str, kind: varan_shards::dns::QueryKind) -> LocalFuture<'a, Result<varan_shards::dns::Answer, varan_shards::dns::DnsError>> {
        use varan_shards::dns::{Answer, DnsError, QueryKind, Records};
        let ips: Vec<_> = self.0.iter().filter(|(n, ip)| *n == name && (kind == QueryKind::A) == ip.is_ipv4() && kind != QueryKind::Mx).map(|(_, ip)| *ip).collect();
        let answer = if ips.is_empty() { Err(DnsError::NoRecords) } else { Ok(Answer { records: Records::Ips(ips), ttl: Duration::from_secs(60) }) };
        Box::pin(async move { answer })
    }
}

/// `smarthost_tls = "starttls"`: a smarthost whose certificate chains to
/// `ca_file` gets the message over TLS with AUTH; one whose certificate
/// does not is never sent the message, not even in plaintext.
#[test]
fn smarthost_requires_verified_tls() {
    let dir = tmpdir("smarthost");
    let port = PORT_BASE + 2;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["relay.good.test".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let good = start_tls_server("127.0.0.11", port, server_config(leaf.der().clone(), &leaf_key));
    let rogue = rcgen::generate_simple_self_signed(vec!["relay.rogue.test".to_owned()]).unwrap();
    let bad = start_tls_server("127.0.0.12", port, server_config(rogue.cert.der().clone(), &rogue.signing_key));
    std::thread::sleep(Duration::from_millis(200));

    let config = Arc::new(
        Config::from_toml(&format!(
            "[server]\nhostname = \"mx.local.test\"\n\
             [queue]\nretry_initial = \"1s\"\nretry_max = \"1s\"\nscan_interval = \"50ms\"\n\
             [outbound]\nconnect_timeout = \"2s\"\nsmarthost_tls = \"starttls\"\nca_file = \"{}\"\n\
             [[domain]]\nname = \"good.test\"\nsmarthost = \"me:secret@relay.good.test:{port}\"\n\
             [[domain]]\nname = \"rogue.test\"\nsmarthost = \"me:secret@relay.rogue.test:{port}\"\n",
            dir.join("ca.pem").display()
        ))
        .unwrap(),
    );
    let store = Arc::new(MemoryQueue::new());
    let now = outbound::unix_now();
    let mut a = entry(1, "x@elsewhere.test", now);
    a.sender = "me@good.test".into();
    let mut b = entry(2, "y@elsewhere.test", now);
    b.sender = "me@rogue.test".into();
    store.enqueue(&a, b"Subject: a\n\nx\n").unwrap();
    store.enqueue(&b, b"Subject: b\n\ny\n").unwrap();
    let store_dyn: Arc<dyn QueueStore> = store.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let shutdown = Rc::new(Shutdown::default());
            let resolver = Fixed(vec![("relay.good.test", "127.0.0.11".parse().unwrap()), ("relay.rogue.test", "127.0.0.12".parse().unwrap())]);
            let runner = outbound::start(RunnerContext {
                store: store_dyn.clone(),
                partition: (0, 1),
                config: Rc::new(move || Arc::clone(&config)),
                resolver: Rc::new(resolver),
                local: None,
                shutdown: Rc::clone(&shutdown),
            });
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let rogue_tries = store_dyn.get(QueueId(2)).map(|e| e.attempts).unwrap_or(0);
                if store_dyn.get(QueueId(1)).is_err() && rogue_tries >= 2 {
                    break;
                }
            }
            shutdown.trigger();
            runner.await;
        })
        .unwrap()
        .join()
        .unwrap();

    assert!(store.get(QueueId(1)).is_err(), "delivered through the verified smarthost: {:?}", store.get(QueueId(1)));
    let good = good.lock().unwrap();
    assert_eq!(good.len(), 1);
    assert!(good[0].0, "over TLS");
    let rogue_entry = store.get(QueueId(2)).unwrap();
    assert!(rogue_entry.attempts >= 2);
    assert_eq!(rogue_entry.recipients[0].state, RecipientState::Pending, "a TLS failure to a smarthost is temporary");
    assert!(rogue_entry.recipients[0].last_error.as_deref().unwrap_or("").contains("TLS"), "{rogue_entry:?}");
    assert!(bad.lock().unwrap().is_empty(), "nothing sent to an unverified smarthost, not even in plaintext");
    let _ = std::fs::remove_dir_all(&dir);
}
