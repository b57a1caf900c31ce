//! End-to-end tests: the real CLI parsing, client and driver against a tiny
//! SMTP server running inside the test on an ephemeral loopback port.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{execute, prepare, Cli, Command};
use crate::message::{dot_unstuff, MessageFactory, MessageSpec};
use crate::report::{Report, Stage, StopReason};
use clap::Parser as _;

/// Upper bound for any single test; a hang fails instead of blocking CI.
const TEST_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct ServerOpts {
    pipelining: bool,
    /// Server certificate; enables STARTTLS (or implicit TLS).
    tls: Option<Arc<rustls::ServerConfig>>,
    implicit_tls: bool,
    banner: &'static str,
    /// Never send anything (to provoke timeouts).
    silent: bool,
    /// RCPT address answered with 550.
    reject_rcpt: Option<&'static str>,
    eod_reply: &'static str,
    /// Accepted AUTH PLAIN token, if AUTH is offered.
    auth_token: Option<String>,
    /// Send an unsolicited extra reply after the EHLO reply.
    chatty_ehlo: bool,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            pipelining: true,
            tls: None,
            implicit_tls: false,
            banner: "220 test.invalid ESMTP ready",
            silent: false,
            reject_rcpt: None,
            eod_reply: "250 2.0.0 queued",
            auth_token: None,
            chatty_ehlo: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Received {
    mail_from: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct ServerLog {
    messages: Vec<Received>,
    connections: usize,
    quits: usize,
    /// MAIL commands that arrived together with further commands.
    pipelined_mail: usize,
    tls_sessions: usize,
    auths: usize,
    resets: usize,
}

type Log = Arc<Mutex<ServerLog>>;

async fn spawn_server(opts: ServerOpts) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let log2 = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // Without this, Nagle delays the second of several pipelined
            // replies by the client's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            log2.lock().unwrap().connections += 1;
            tokio::spawn(handle(tcp, opts.clone(), Arc::clone(&log2)));
        }
    });
    (addr, log)
}

async fn handle(tcp: TcpStream, opts: ServerOpts, log: Log) {
    if opts.silent {
        tokio::time::sleep(TEST_LIMIT).await;
        return;
    }
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    if opts.implicit_tls {
        if let Ok(tls) = acceptor.unwrap().accept(tcp).await {
            log.lock().unwrap().tls_sessions += 1;
            serve(tls, &opts, &log, true, true).await;
        }
        return;
    }
    if let Some(tcp) = serve(tcp, &opts, &log, false, true).await {
        if let Ok(tls) = acceptor.unwrap().accept(tcp).await {
            log.lock().unwrap().tls_sessions += 1;
            serve(tls, &opts, &log, true, false).await;
        }
    }
}

/// Serves one SMTP dialogue; returns the stream if STARTTLS was accepted.
async fn serve<S>(stream: S, o: &ServerOpts, log: &Log, secure: bool, greet: bool) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = BufReader::new(stream);
    if greet {
        reply(&mut io, o.banner).await?;
    }
    let mut tx = Received::default();
    loop {
        let line = read_line(&mut io).await?;
        let pipelined = !io.buffer().is_empty();
        let upper = line.to_ascii_uppercase();
        let answer: String = if upper.starts_with("EHLO") {
            let reply = ehlo_reply(o, secure);
            if o.chatty_ehlo {
                reply + "\r\n250 unsolicited"
            } else {
                reply
            }
        } else if upper.starts_with("HELO") {
            "250 hello".into()
        } else if upper == "STARTTLS" && o.tls.is_some() && !secure {
            reply(&mut io, "220 go ahead").await?;
            return Some(io.into_inner());
        } else if let Some(token) = upper.strip_prefix("AUTH PLAIN ") {
            let ok = o.auth_token.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(token));
            log.lock().unwrap().auths += usize::from(ok);
            if ok { "235 2.7.0 ok" } else { "535 5.7.8 bad credentials" }.into()
        } else if upper.starts_with("MAIL FROM:") {
            log.lock().unwrap().pipelined_mail += usize::from(pipelined);
            tx = Received { mail_from: address(&line), ..Received::default() };
            "250 2.1.0 ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = address(&line);
            if o.reject_rcpt == Some(rcpt.as_str()) {
                "550 5.1.1 no such user".into()
            } else {
                tx.rcpts.push(rcpt);
                "250 2.1.5 ok".into()
            }
        } else if upper == "DATA" {
            if tx.rcpts.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                reply(&mut io, "354 go on").await?;
                tx.data = read_data(&mut io).await?;
                if o.eod_reply.starts_with('2') {
                    log.lock().unwrap().messages.push(std::mem::take(&mut tx));
                }
                o.eod_reply.into()
            }
        } else if upper == "RSET" {
            log.lock().unwrap().resets += 1;
            tx = Received::default();
            "250 2.0.0 reset".into()
        } else if upper == "QUIT" {
            log.lock().unwrap().quits += 1;
            reply(&mut io, "221 bye").await?;
            return None;
        } else {
            "500 5.5.2 unknown command".into()
        };
        reply(&mut io, &answer).await?;
    }
}

fn ehlo_reply(o: &ServerOpts, secure: bool) -> String {
    let mut lines = vec!["test.invalid hello", "SIZE 100000000", "8BITMIME"];
    if o.pipelining {
        lines.push("PIPELINING");
    }
    if o.tls.is_some() && !secure && !o.implicit_tls {
        lines.push("STARTTLS");
    }
    if o.auth_token.is_some() {
        lines.push("AUTH PLAIN");
    }
    let last = lines.len() - 1;
    let text: Vec<String> = lines.iter().enumerate().map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' })).collect();
    text.join("\r\n")
}

fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line.find('>').unwrap_or(line.len());
    line[start..end].to_owned()
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(io: &mut BufReader<S>, text: &str) -> Option<()> {
    io.get_mut().write_all(format!("{text}\r\n").as_bytes()).await.ok()?;
    io.get_mut().flush().await.ok()
}

async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(io: &mut BufReader<S>) -> Option<String> {
    let mut buf = Vec::new();
    if io.read_until(b'\n', &mut buf).await.ok()? == 0 {
        return None;
    }
    let text = String::from_utf8(buf).ok()?;
    Some(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads message content up to and including the lone dot; unstuffs it.
async fn read_data<S: AsyncRead + AsyncWrite + Unpin>(io: &mut BufReader<S>) -> Option<Vec<u8>> {
    let mut wire = Vec::new();
    loop {
        let start = wire.len();
        if io.read_until(b'\n', &mut wire).await.ok()? == 0 {
            return None;
        }
        if &wire[start..] == b".\r\n" {
            return dot_unstuff(&wire);
        }
    }
}

fn parse_args(addr: SocketAddr, extra: &[&str]) -> super::SmtpArgs {
    let port = addr.port().to_string();
    let base = ["varan-loadtest", "smtp", "--host", "127.0.0.1", "--port", &port, "--quiet", "--seed", "42"];
    let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
    match cli.command {
        Command::Smtp(args) => *args,
        other => panic!("expected the smtp subcommand, got {other:?}"),
    }
}

async fn run_client(addr: SocketAddr, extra: &[&str]) -> Report {
    let args = parse_args(addr, extra);
    let mut prepared = prepare(&args, 2).unwrap();
    prepared.plan.handle_interrupt = false;
    let (report, _, _) = tokio::time::timeout(TEST_LIMIT, execute(prepared)).await.expect("run finished in time");
    report
}

/// What the generator produces for `seq` with the test seed.
fn expected(seq: u64, users: u64, rcpts: usize, size: usize) -> (Vec<String>, Vec<u8>) {
    let spec = MessageSpec { size, from: "loadtest@loadtest.invalid".into(), users, user_prefix: "u".into(), domain: "bench.test".into(), rcpts_per_message: rcpts, seed: 42 };
    // Same token length as a real run, so headers and body lengths match.
    let msg = MessageFactory::new(spec, "0123456789abcdef".into()).build(seq);
    (msg.rcpts, dot_unstuff(&msg.wire).unwrap())
}

fn split_message(data: &[u8]) -> (String, &[u8]) {
    let at = data.windows(4).position(|w| w == b"\r\n\r\n").expect("header/body separator");
    (String::from_utf8(data[..at].to_vec()).unwrap(), &data[at + 4..])
}

fn subject_seq(head: &str) -> u64 {
    let line = head.lines().find(|l| l.starts_with("Subject: ")).unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Checks that exactly `n` distinct messages arrived with the envelope,
/// headers and (unstuffed) bodies the generator intended.
fn assert_delivered(log: &ServerLog, n: u64, users: u64, rcpts: usize, size: usize) {
    assert_eq!(log.messages.len() as u64, n);
    let mut seen = BTreeSet::new();
    for m in &log.messages {
        assert_eq!(m.mail_from, "loadtest@loadtest.invalid");
        let (head, body) = split_message(&m.data);
        let seq = subject_seq(&head);
        assert!(seen.insert(seq), "message {seq} delivered twice");
        let (want_rcpts, want) = expected(seq, users, rcpts, size);
        assert_eq!(m.rcpts, want_rcpts, "envelope recipients of {seq}");
        assert!(body == split_message(&want).1, "body of {seq} differs");
        assert_eq!(m.data.len(), size, "size of {seq}");
        assert!(head.contains(&format!("To: {}", want_rcpts[0])));
        assert!(head.contains(&format!(".{seq}@loadtest.invalid>")));
    }
    assert_eq!(seen, (0..n).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_all_messages_pipelined() {
    let (addr, log) = spawn_server(ServerOpts::default()).await;
    let args = ["--messages", "60", "--concurrency", "4", "--users", "20", "--rcpts-per-message", "3", "--size", "3k"];
    let report = run_client(addr, &args).await;
    assert!(report.all_accepted(), "{}", report.human());
    assert_eq!(report.stats.outcomes.accepted, 60);
    assert_eq!(report.stats.latency.len(), 60);
    assert_eq!(report.stats.stages.get(Stage::Rcpt).c2xx, 180);
    assert_eq!(report.stats.stages.get(Stage::Data).c3xx, 60);
    let log = log.lock().unwrap();
    assert_delivered(&log, 60, 20, 3, 3072);
    assert_eq!(log.pipelined_mail, 60, "MAIL, RCPT and DATA sent in one write");
    assert!(log.connections >= 60 && log.connections == log.quits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_all_messages_without_pipelining() {
    let (addr, log) = spawn_server(ServerOpts::default()).await;
    let args = ["--messages", "40", "--concurrency", "3", "--rcpts-per-message", "2", "--no-pipelining"];
    let report = run_client(addr, &args).await;
    assert!(report.all_accepted(), "{}", report.human());
    let log = log.lock().unwrap();
    assert_delivered(&log, 40, 1000, 2, 4096);
    assert_eq!(log.pipelined_mail, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn does_not_pipeline_unless_advertised() {
    let (addr, log) = spawn_server(ServerOpts { pipelining: false, ..ServerOpts::default() }).await;
    let report = run_client(addr, &["--messages", "10", "--pipelining"]).await;
    assert!(report.all_accepted(), "{}", report.human());
    assert_eq!(log.lock().unwrap().pipelined_mail, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_reuses_connections() {
    let (addr, log) = spawn_server(ServerOpts::default()).await;
    for extra in [&[][..], &["--no-pipelining"][..]] {
        let args = [&["--messages", "30", "--concurrency", "3", "--per-connection", "5", "--size", "1k"][..], extra].concat();
        let report = run_client(addr, &args).await;
        assert!(report.all_accepted(), "{}", report.human());
        // 30 / 5 connections, plus at most one per worker racing the last
        // message (it finds nothing to send and just QUITs).
        assert!((6..=9).contains(&report.stats.connections), "{}", report.stats.connections);
        assert_eq!(report.stats.connect_latency.len(), report.stats.connections);
    }
    let log = log.lock().unwrap();
    assert_eq!(log.connections, log.quits);
    assert_eq!(log.resets, 0);
    assert_eq!(log.messages.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_recipients_are_counted_and_reset() {
    let opts = ServerOpts { reject_rcpt: Some("u1@bench.test"), ..ServerOpts::default() };
    let (addr, log) = spawn_server(opts).await;
    for pipelining in ["--pipelining", "--no-pipelining"] {
        let args = ["--messages", "40", "--concurrency", "2", "--per-connection", "10", "--users", "2", pipelining];
        let report = run_client(addr, &args).await;
        let o = report.stats.outcomes;
        assert!(o.permfail > 0 && o.accepted > 0, "{}", report.human());
        assert_eq!(o.accepted + o.permfail, 40);
        assert_eq!(report.stats.stages.get(Stage::Rcpt).c5xx, o.permfail);
        assert!(!report.all_accepted());
        assert!(report.human().contains("rcpt: 550 5.1.1 no such user"));
        assert_eq!(report.json()["permfail"], o.permfail);
        // Connections survive rejections (RSET, not reconnect).
        assert!((4..=6).contains(&report.stats.connections), "{}", report.stats.connections);
    }
    let log = log.lock().unwrap();
    assert!(log.resets > 0);
    assert!(log.messages.iter().all(|m| m.rcpts == ["u0@bench.test"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_at_end_of_data() {
    let (addr, _) = spawn_server(ServerOpts { eod_reply: "451 4.3.0 try later", ..ServerOpts::default() }).await;
    let report = run_client(addr, &["--messages", "8", "--per-connection", "4", "--concurrency", "2"]).await;
    assert_eq!(report.stats.outcomes.tempfail, 8);
    assert_eq!(report.stats.stages.get(Stage::Eod).c4xx, 8);
    assert_eq!(report.stats.latency.len(), 0);
    assert!(report.human().contains("eod: 451 4.3.0 try later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_banner_is_a_tempfail() {
    let (addr, _) = spawn_server(ServerOpts { banner: "421 4.7.0 too busy", ..ServerOpts::default() }).await;
    let report = run_client(addr, &["--messages", "5", "--concurrency", "2"]).await;
    assert_eq!(report.stats.outcomes.tempfail, 5);
    assert_eq!(report.stats.stages.get(Stage::Connect).c4xx, 5);
    assert_eq!(report.stats.connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    let (addr, _) = spawn_server(ServerOpts { silent: true, ..ServerOpts::default() }).await;
    let started = std::time::Instant::now();
    let report = run_client(addr, &["--messages", "3", "--concurrency", "3", "--timeout", "0.3"]).await;
    assert_eq!(report.stats.outcomes.timeouts, 3, "{}", report.human());
    assert_eq!(report.stats.stages.get(Stage::Connect).timeout, 3);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_errors() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let report = run_client(addr, &["--messages", "6", "--concurrency", "2"]).await;
    assert_eq!(report.stats.outcomes.errors, 6);
    assert_eq!(report.attempted(), 6);
    assert!(report.stats.failures.entries()[0].reason.starts_with("connect: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_banner_is_an_error() {
    let (addr, _) = spawn_server(ServerOpts { banner: "hello, not smtp", ..ServerOpts::default() }).await;
    let report = run_client(addr, &["--messages", "2", "--concurrency", "1"]).await;
    assert_eq!(report.stats.outcomes.errors, 2);
    assert!(report.stats.failures.entries()[0].reason.contains("malformed reply"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_follows_the_schedule() {
    let (addr, log) = spawn_server(ServerOpts::default()).await;
    let report = run_client(addr, &["--messages", "20", "--rate", "100", "--concurrency", "4"]).await;
    assert!(report.all_accepted(), "{}", report.human());
    // The last message is due at 190 ms.
    assert!(report.elapsed >= Duration::from_millis(190), "{:?}", report.elapsed);
    assert!(report.elapsed < Duration::from_secs(5));
    assert_eq!(log.lock().unwrap().messages.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_stops_starting_messages() {
    let (addr, _) = spawn_server(ServerOpts::default()).await;
    let args = ["--messages", "1000000", "--rate", "100", "--duration", "0.3", "--concurrency", "2"];
    let report = run_client(addr, &args).await;
    assert_eq!(report.stop, StopReason::Duration);
    let attempted = report.attempted();
    // Due at 0, 10, …, 290 ms; a heavily loaded machine may start fewer in time.
    assert!((10..=30).contains(&attempted), "{attempted}");
    assert!(report.all_accepted(), "{}", report.human());
}

fn tls_server_config(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    crate::tls::install_provider();
    let key = rcgen::generate_simple_self_signed(names.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config =
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_no_client_auth().with_single_cert(vec![cert], private).unwrap();
    (Arc::new(config), key.cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_auth() {
    let (tls, _) = tls_server_config(&["localhost"]);
    // base64("\0bob\0secret")
    let opts = ServerOpts { tls: Some(tls), auth_token: Some("AGJvYgBzZWNyZXQ=".into()), ..ServerOpts::default() };
    let (addr, log) = spawn_server(opts).await;
    let report = run_client(addr, &["--messages", "12", "--concurrency", "3", "--per-connection", "2", "--starttls", "--auth", "bob:secret"]).await;
    assert!(report.all_accepted(), "{}", report.human());
    {
        let log = log.lock().unwrap();
        assert_eq!(log.messages.len(), 12);
        // 12 / 2 per connection, or more if the last messages were split.
        let connections = report.stats.connections as usize;
        assert!((6..=8).contains(&connections), "{connections}");
        assert_eq!((log.tls_sessions, log.auths), (connections, connections));
    }

    let bad = run_client(addr, &["--messages", "2", "--concurrency", "1", "--starttls", "--auth", "bob:wrong"]).await;
    assert_eq!(bad.stats.outcomes.permfail, 2);
    assert!(bad.human().contains("connect: AUTH rejected: 535"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_verification() {
    let (tls, pem) = tls_server_config(&["127.0.0.1"]);
    let opts = ServerOpts { tls: Some(tls), implicit_tls: true, ..ServerOpts::default() };
    let (addr, log) = spawn_server(opts).await;
    let report = run_client(addr, &["--messages", "5", "--concurrency", "2", "--tls"]).await;
    assert!(report.all_accepted(), "{}", report.human());
    assert_eq!(log.lock().unwrap().tls_sessions, 5);
    assert_eq!(report.stats.connections, 5);

    // Self-signed: verification fails unless the certificate is trusted.
    let report = run_client(addr, &["--messages", "2", "--concurrency", "1", "--tls", "--tls-verify"]).await;
    assert_eq!(report.stats.outcomes.errors, 2);
    assert!(report.human().contains("TLS handshake failed"), "{}", report.human());

    let ca = std::env::temp_dir().join(format!("varan-loadtest-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, pem).unwrap();
    let ca_arg = ca.to_str().unwrap();
    let report = run_client(addr, &["--messages", "2", "--tls", "--tls-verify", "--tls-ca", ca_arg]).await;
    let _ = std::fs::remove_file(&ca);
    assert!(report.all_accepted(), "{}", report.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_refused_when_not_offered() {
    let (addr, _) = spawn_server(ServerOpts::default()).await;
    let report = run_client(addr, &["--messages", "2", "--concurrency", "1", "--starttls"]).await;
    assert_eq!(report.stats.outcomes.errors, 2);
    assert!(report.human().contains("server does not advertise STARTTLS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_replies_are_detected() {
    let opts = ServerOpts { chatty_ehlo: true, ..ServerOpts::default() };
    let (addr, log) = spawn_server(opts).await;
    let report = run_client(addr, &["--messages", "3", "--concurrency", "1"]).await;
    assert_eq!(report.stats.outcomes.errors, 3, "{}", report.human());
    assert!(report.human().contains("mail: server sent data nobody asked for"));
    assert!(log.lock().unwrap().messages.is_empty());
}
