//! `varan-loadtest`: load generator for mail servers.
//!
//! `varan-loadtest smtp` sends N messages over C concurrent connections to
//! any SMTP server and reports throughput and latency percentiles. The
//! protocol is a subcommand so `imap` and `pop3` modes can be added beside it.
//!
//! Exit status: 0 when every attempted message was accepted, 1 when any was
//! not (or the run was interrupted), 2 on usage errors.

mod imap;
mod message;
mod ops;
mod pop3;
mod report;
mod run;
mod smtp;
mod tls;

#[cfg(test)]
mod e2e_tests;

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use clap::error::ErrorKind;
use clap::{value_parser, ArgGroup, Args, CommandFactory, Parser, Subcommand};
use serde_json::json;

use message::{MessageFactory, MessageSpec};
use report::{Report, RunInfo};
use run::RunPlan;
use smtp::{ClientSettings, Security};

/// Largest `--size`: every connection holds one message (twice, raw and
/// dot-stuffed) in memory.
const MAX_MESSAGE_SIZE: u64 = 256 << 20;

#[derive(Parser, Debug)]
#[command(name = "varan-loadtest", version, about = "Load generator for mail servers", long_about = None)]
struct Cli {
    /// Tokio worker threads driving the connections.
    #[arg(long, global = true, default_value_t = 2, value_parser = value_parser!(u16).range(1..=1024))]
    threads: u16,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send messages over SMTP and report throughput and latency.
    Smtp(Box<SmtpArgs>),
    /// Populate users' INBOXes over IMAP APPEND with deterministic MIME messages.
    Seed(Box<SeedArgs>),
    /// IMAP mixed closed-loop workload, or with --idle N hold N IDLE sessions.
    Imap(Box<ImapArgs>),
    /// POP3 retrieval workload: login, STAT, LIST, UIDL, RETR, QUIT.
    Pop3(Box<Pop3Args>),
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("tls_mode").args(["starttls", "tls"])))]
struct SmtpArgs {
    /// Server host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(long, default_value_t = 25)]
    port: u16,
    /// Total number of messages to send.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
    messages: u64,
    /// Approximate message size including headers, in bytes; suffixes k, M, G
    /// (powers of 1024) are accepted, e.g. 4k, 64K, 1M.
    #[arg(long, default_value = "4096", value_parser = parse_size, value_name = "BYTES")]
    size: u64,
    /// Number of concurrent connections.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(1..=1_000_000))]
    concurrency: u32,
    /// Messages sent on one connection before QUIT and reconnect.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..))]
    per_connection: u64,
    /// Open-loop target rate in messages/s across all connections; latency is
    /// then measured from each message's scheduled time. Default: closed loop.
    #[arg(long, value_parser = parse_rate, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// Recipients are chosen among this many users.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
    users: u64,
    /// Recipient local part prefix: recipients are {prefix}{i}@{domain}.
    #[arg(long, default_value = "u", value_parser = parse_user_prefix)]
    user_prefix: String,
    /// Recipient domain.
    #[arg(long, default_value = "bench.test", value_parser = parse_domain)]
    domain: String,
    /// Distinct recipients per message.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u32).range(1..=100_000))]
    rcpts_per_message: u32,
    /// Envelope sender and From: address.
    #[arg(long, default_value = "loadtest@loadtest.invalid", value_parser = parse_address, value_name = "ADDR")]
    from: String,
    /// Name sent in EHLO/HELO.
    #[arg(long, default_value = "loadtest.local", value_parser = parse_domain, value_name = "NAME")]
    ehlo: String,
    /// Issue STARTTLS after EHLO, then EHLO again.
    #[arg(long)]
    starttls: bool,
    /// Implicit TLS from the first byte (port 465 style).
    #[arg(long)]
    tls: bool,
    /// Verify the server certificate against the system trust store (and --tls-ca).
    #[arg(long, requires = "tls_mode")]
    tls_verify: bool,
    /// Extra PEM CA certificates to trust with --tls-verify.
    #[arg(long, requires = "tls_verify", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// AUTH PLAIN credentials, sent after EHLO (and after TLS if requested).
    #[arg(long, value_parser = parse_auth, value_name = "USER:PASS")]
    auth: Option<Credentials>,
    /// Pipeline MAIL, RCPT and DATA when the server advertises PIPELINING (default).
    #[arg(long, overrides_with = "no_pipelining")]
    pipelining: bool,
    /// Never pipeline; one round trip per command.
    #[arg(long, overrides_with = "pipelining")]
    no_pipelining: bool,
    /// Timeout for each connect, TLS handshake, write and reply, in seconds.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    timeout: Duration,
    /// Stop starting new messages after this many seconds.
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    duration: Option<Duration>,
    /// Seed for recipient choice and message bodies (random if not given; the
    /// seed used is printed in the JSON/CSV output).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Connection and account options of the session protocols (IMAP, POP3).
#[derive(Args, Debug, Clone)]
struct SessionArgs {
    /// Server host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port (default 143 for IMAP, 110 for POP3; 993/995 with --tls).
    #[arg(long)]
    port: Option<u16>,
    /// Implicit TLS from the first byte (IMAPS/POP3S).
    #[arg(long)]
    tls: bool,
    /// Verify the server certificate against the system trust store (and --tls-ca).
    #[arg(long, requires = "tls")]
    tls_verify: bool,
    /// Extra PEM CA certificates to trust with --tls-verify.
    #[arg(long, requires = "tls_verify", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Number of users; client i logs in as user first_user + i % users.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(1..))]
    users: u64,
    /// First user number.
    #[arg(long, default_value_t = 0)]
    first_user: u64,
    /// Login names are {prefix}{i}@{domain} ({prefix}{i} with --domain "").
    #[arg(long, default_value = "u", value_parser = parse_user_prefix)]
    user_prefix: String,
    #[arg(long, default_value = "bench.test", value_parser = parse_login_domain)]
    domain: String,
    /// Password of every user.
    #[arg(long, default_value = "pw", value_parser = parse_password)]
    password: String,
    /// IMAP: log in with AUTHENTICATE PLAIN instead of LOGIN.
    #[arg(long)]
    auth_plain: bool,
    /// Timeout for each connect, TLS handshake, write and response, in seconds.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    timeout: Duration,
    /// Seed for the clients' random choices (random if not given).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug, Clone)]
struct SeedArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Messages per user (only the missing ones are appended).
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u64).range(1..=1_000_000))]
    messages: u64,
    /// Approximate message size in bytes (suffixes k, M).
    #[arg(long, default_value = "4096", value_parser = parse_size, value_name = "BYTES")]
    size: u64,
    /// Users seeded in parallel.
    #[arg(long, default_value_t = 8, value_parser = value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
}

#[derive(Args, Debug, Clone)]
struct ImapArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Concurrent clients (closed loop).
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(1..=1_000_000))]
    clients: u32,
    /// Run length in seconds (IDLE: hold time after all sessions are in IDLE).
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    duration: Duration,
    /// Also stop after this many operations.
    #[arg(long, value_parser = value_parser!(u64).range(1..))]
    max_ops: Option<u64>,
    /// Messages each user was seeded with (FETCH/STORE touch only these).
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(1..))]
    seeded: u32,
    /// Fewest commands per session before LOGOUT and re-login.
    #[arg(long, default_value_t = 50, value_parser = value_parser!(u32).range(1..))]
    session_min: u32,
    /// Most commands per session before LOGOUT and re-login.
    #[arg(long, default_value_t = 150, value_parser = value_parser!(u32).range(1..))]
    session_max: u32,
    /// Size of APPENDed messages in bytes.
    #[arg(long, default_value = "4096", value_parser = parse_size, value_name = "BYTES")]
    size: u64,
    /// Instead of the mixed workload: open N sessions, put each into IDLE,
    /// hold them for --duration seconds, then DONE.
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..=1_000_000))]
    idle: Option<u64>,
    /// IDLE: logins in flight at once while ramping up.
    #[arg(long, default_value_t = 64, value_parser = value_parser!(u32).range(1..=100_000))]
    idle_parallel: u32,
    /// IDLE: give up ramping after this many seconds and hold what is open.
    #[arg(long, default_value = "600", value_parser = parse_secs, value_name = "SECS")]
    idle_ramp_limit: Duration,
}

#[derive(Args, Debug, Clone)]
struct Pop3Args {
    #[command(flatten)]
    session: SessionArgs,
    /// Concurrent clients (closed loop).
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(1..=1_000_000))]
    clients: u32,
    /// Run length in seconds.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    duration: Duration,
    /// Also stop after this many operations.
    #[arg(long, value_parser = value_parser!(u64).range(1..))]
    max_ops: Option<u64>,
    /// Messages retrieved (RETR) per session.
    #[arg(long, default_value_t = 3, value_parser = value_parser!(u32).range(0..=10_000))]
    retr: u32,
}

/// Output options shared by all protocol modes.
#[derive(Args, Debug, Clone)]
struct OutputArgs {
    /// Write the full report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the report as CSV (header + one row) to FILE.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Do not draw the progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone)]
struct Credentials {
    user: String,
    pass: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.user)
    }
}

impl Credentials {
    /// AUTH PLAIN initial response (RFC 4616): base64("\0user\0pass").
    fn plain_token(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", self.user, self.pass))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let invalid = || format!("invalid size {s:?} (expected e.g. 4096, 4k, 64K or 1M)");
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let unit: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    match n.checked_mul(unit) {
        Some(bytes @ 1..=MAX_MESSAGE_SIZE) => Ok(bytes),
        _ => Err(format!("size must be between 1 byte and {}M", MAX_MESSAGE_SIZE >> 20)),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("invalid number of seconds {s:?}"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("must be a positive number of seconds".to_owned());
    }
    Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..=1e9).contains(&v) => Ok(v),
        _ => Err(format!("invalid rate {s:?} (messages per second, 0.001 to 1e9)")),
    }
}

/// Characters allowed in names we put on the wire: printable ASCII without
/// space or angle brackets, which rules out command and header injection.
fn is_wire_safe(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

fn parse_domain(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 253 || !is_wire_safe(s) || s.contains('@') {
        return Err(format!("invalid domain name {s:?}"));
    }
    Ok(s.to_owned())
}

fn parse_user_prefix(s: &str) -> Result<String, String> {
    if s.len() > 40 || !is_wire_safe(s) || s.contains('@') {
        return Err(format!("invalid user prefix {s:?}"));
    }
    Ok(s.to_owned())
}

fn parse_address(s: &str) -> Result<String, String> {
    match s.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && s.len() <= 254 && is_wire_safe(s) => Ok(s.to_owned()),
        _ => Err(format!("invalid address {s:?} (expected local@domain)")),
    }
}

fn parse_auth(s: &str) -> Result<Credentials, String> {
    match s.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !s.contains('\0') => Ok(Credentials { user: user.to_owned(), pass: pass.to_owned() }),
        _ => Err("expected USER:PASS".to_owned()),
    }
}

fn parse_login_domain(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        parse_domain(s)
    }
}

fn parse_password(s: &str) -> Result<String, String> {
    if s.bytes().any(|b| b.is_ascii_control()) || s.len() > 256 {
        return Err("password must be printable and at most 256 bytes".to_owned());
    }
    Ok(s.to_owned())
}

enum Mode<'a> {
    Seed(&'a SeedArgs),
    Imap(&'a ImapArgs),
    Pop3(&'a Pop3Args),
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (IDLE and 1,000-client
/// runs need one descriptor per connection); returns the new soft limit.
fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

fn session_target(s: &SessionArgs, default_port: u16, tls_port: u16) -> Result<imap::conn::Target, String> {
    let port = s.port.unwrap_or(if s.tls { tls_port } else { default_port });
    let addr = resolve(&s.host, port)?;
    let tls = if s.tls {
        let bare = s.host.trim_start_matches('[').trim_end_matches(']');
        let name = if s.tls_verify { tls::server_name(bare) } else { tls::server_name(bare).or_else(|_| tls::server_name("localhost")) }.map_err(|e| e.to_string())?;
        Some((tls::connector(s.tls_verify, s.tls_ca.as_deref()).map_err(|e| e.to_string())?, name))
    } else {
        None
    };
    Ok(imap::conn::Target { addr, tls, timeout: s.timeout })
}

fn accounts(s: &SessionArgs) -> imap::Accounts {
    imap::Accounts {
        user_prefix: s.user_prefix.clone(),
        domain: s.domain.clone(),
        first_user: s.first_user,
        users: s.users,
        password: s.password.clone(),
        auth: if s.auth_plain { imap::AuthMode::Plain } else { imap::AuthMode::Login },
    }
}

fn session_config(s: &SessionArgs, port: u16, threads: u16, seed: u64) -> serde_json::Value {
    json!({
        "host": s.host, "port": port, "tls": s.tls, "tls_verify": s.tls_verify, "users": s.users,
        "first_user": s.first_user, "user_prefix": s.user_prefix, "domain": s.domain,
        "auth": if s.auth_plain { "authenticate-plain" } else { "login" },
        "timeout_s": s.timeout.as_secs_f64(), "threads": threads, "seed": seed,
    })
}

fn seed_factory(size: u64, s: &SessionArgs, seed: u64, token: &str) -> Result<message::MessageFactory, String> {
    let spec = MessageSpec {
        size: usize::try_from(size).map_err(|e| e.to_string())?,
        from: "loadtest@loadtest.invalid".to_owned(),
        users: s.users,
        user_prefix: s.user_prefix.clone(),
        domain: if s.domain.is_empty() { "bench.test".to_owned() } else { s.domain.clone() },
        rcpts_per_message: 1,
        seed,
    };
    Ok(MessageFactory::new(spec, token.to_owned()))
}

/// `seed`, `imap` and `pop3`: run, print, write JSON/CSV. Exit status 0
/// only when something was done and nothing failed.
fn session_main(mode: Mode<'_>, threads: u16) -> ExitCode {
    let (s, default_port, tls_port) = match &mode {
        Mode::Seed(a) => (&a.session, 143, 993),
        Mode::Imap(a) => (&a.session, 143, 993),
        Mode::Pop3(a) => (&a.session, 110, 995),
    };
    if let Mode::Imap(a) = &mode {
        if a.session_min > a.session_max {
            usage_error("--session-min must not exceed --session-max");
        }
    }
    let target = session_target(s, default_port, tls_port).unwrap_or_else(|e| usage_error(&e));
    let json_out = create_output(s.output.json.as_ref()).unwrap_or_else(|e| usage_error(&e));
    let csv_out = create_output(s.output.csv.as_ref()).unwrap_or_else(|e| usage_error(&e));
    let nofile = raise_open_files_limit();
    let seed = s.seed.unwrap_or_else(rand::random);
    let mut config = session_config(s, target.addr.port(), threads, seed);
    config["open_files_limit"] = json!(nofile);
    let acc = accounts(s);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(threads)).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("varan-loadtest: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (name, headline, stats, elapsed, extra, ok) = match mode {
        Mode::Seed(a) => {
            // Fixed generator seed and token: identical messages on every server.
            let factory = std::sync::Arc::new(seed_factory(a.size, s, 1, "varan-loadtest-seed").unwrap_or_else(|e| usage_error(&e)));
            config["messages"] = json!(a.messages);
            config["size"] = json!(a.size);
            config["concurrency"] = json!(a.concurrency);
            let t0 = std::time::Instant::now();
            let (stats, appended) = runtime.block_on(imap::seed(target, acc, a.messages, a.concurrency as usize, factory));
            let headline = format!("varan-loadtest seed: {} users x {} messages of ~{} B, {appended} appended", s.users, a.messages, a.size);
            let ok = stats.protocol_errors() + stats.io_errors() + stats.timeouts() == 0 && stats.ok() > 0;
            ("seed", headline, stats, t0.elapsed(), json!({ "appended": appended }), ok)
        }
        Mode::Imap(a) => {
            if let Some(n) = a.idle {
                config["idle"] = json!(n);
                config["hold_s"] = json!(a.duration.as_secs_f64());
                config["idle_parallel"] = json!(a.idle_parallel);
                if n + 64 > nofile {
                    eprintln!("varan-loadtest: warning: --idle {n} needs more than the open files limit {nofile}");
                }
                let t0 = std::time::Instant::now();
                let (stats, summary) = runtime.block_on(imap::idle(target, acc, n, a.idle_parallel as usize, a.duration, a.idle_ramp_limit));
                let headline =
                    format!("varan-loadtest imap --idle {n}: {} in IDLE after {:.1} s, {} held for {:.1} s", summary.established, summary.ramp_s, summary.held, summary.hold_s);
                let ok = summary.held == n && stats.protocol_errors() + stats.io_errors() + stats.timeouts() == 0;
                ("imap-idle", headline, stats, t0.elapsed(), json!({ "idle": summary }), ok)
            } else {
                let factory = std::sync::Arc::new(seed_factory(a.size, s, seed, &format!("{:016x}", rand::random::<u64>())).unwrap_or_else(|e| usage_error(&e)));
                let plan =
                    imap::MixPlan { clients: a.clients as usize, duration: a.duration, max_ops: a.max_ops, seeded: a.seeded, session_ops: (a.session_min, a.session_max), seed };
                config["clients"] = json!(a.clients);
                config["duration_s"] = json!(a.duration.as_secs_f64());
                config["max_ops"] = json!(a.max_ops);
                config["seeded"] = json!(a.seeded);
                config["session_ops"] = json!([a.session_min, a.session_max]);
                config["append_size"] = json!(a.size);
                let (stats, elapsed) = runtime.block_on(imap::mixed(target, acc, plan, factory));
                let headline = format!("varan-loadtest imap: {} clients, mixed workload, {:.0} s", a.clients, a.duration.as_secs_f64());
                let ok = stats.clean();
                ("imap", headline, stats, elapsed, serde_json::Value::Null, ok)
            }
        }
        Mode::Pop3(a) => {
            let plan = pop3::Pop3Plan { clients: a.clients as usize, duration: a.duration, max_ops: a.max_ops, retr: a.retr, seed };
            config["clients"] = json!(a.clients);
            config["duration_s"] = json!(a.duration.as_secs_f64());
            config["max_ops"] = json!(a.max_ops);
            config["retr"] = json!(a.retr);
            let (stats, elapsed) = runtime.block_on(pop3::run(target, acc, plan));
            let headline = format!("varan-loadtest pop3: {} clients, {:.0} s", a.clients, a.duration.as_secs_f64());
            let ok = stats.clean();
            ("pop3", headline, stats, elapsed, serde_json::Value::Null, ok)
        }
    };
    print!("{}", stats.human(&headline, elapsed));
    let report = stats.json(name, config, elapsed, extra);
    let json = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
    let csv = {
        let mut flat = Vec::new();
        report::flatten_pub("", &report, &mut flat);
        let header: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        let row: Vec<String> = flat.iter().map(|(_, v)| report::csv_value_pub(v)).collect();
        format!("{}\n{}\n", header.join(","), row.join(","))
    };
    let written = write_output(json_out, &json) & write_output(csv_out, &csv);
    if ok && written {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Everything needed to run, after validation.
struct Prepared {
    plan: RunPlan,
    settings: ClientSettings,
    factory: MessageFactory,
    info: RunInfo,
    json: Option<(PathBuf, File)>,
    csv: Option<(PathBuf, File)>,
}

/// Validates arguments that clap cannot check on its own, resolves the
/// server and opens output files up front so a long run never ends in an
/// unwritable report. Errors are usage errors.
fn prepare(args: &SmtpArgs, threads: u16) -> Result<Prepared, String> {
    if u64::from(args.rcpts_per_message) > args.users {
        return Err(format!("--rcpts-per-message {} exceeds --users {}: recipients must be distinct", args.rcpts_per_message, args.users));
    }
    warn_if_few_file_descriptors(u64::from(args.concurrency));
    let addr = resolve(&args.host, args.port)?;
    let settings = client_settings(args, addr)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let spec = MessageSpec {
        // parse_size caps the value well below usize::MAX on any platform.
        size: usize::try_from(args.size).map_err(|e| e.to_string())?,
        from: args.from.clone(),
        users: args.users,
        user_prefix: args.user_prefix.clone(),
        domain: args.domain.clone(),
        rcpts_per_message: args.rcpts_per_message as usize,
        seed,
    };
    let factory = MessageFactory::new(spec, format!("{:016x}", rand::random::<u64>()));
    let plan = RunPlan {
        messages: args.messages,
        concurrency: args.concurrency as usize,
        per_connection: args.per_connection,
        rate: args.rate,
        duration: args.duration,
        progress: !args.output.quiet && std::io::stderr().is_terminal(),
        handle_interrupt: true,
    };
    let info = RunInfo { mode: "smtp", headline: headline(args), config: config_echo(args, threads, seed) };
    Ok(Prepared { plan, settings, factory, info, json: create_output(args.output.json.as_ref())?, csv: create_output(args.output.csv.as_ref())? })
}

/// Each connection needs a file descriptor; a too-low `ulimit -n` would
/// otherwise surface as a flood of "Too many open files" errors.
fn warn_if_few_file_descriptors(concurrency: u64) {
    // Reserve for stdio, output files, the runtime's own descriptors.
    const SPARE: u64 = 32;
    if let Some(limit) = open_files_soft_limit() {
        if concurrency + SPARE > limit {
            eprintln!(
                "varan-loadtest: warning: --concurrency {concurrency} is close to the open files \
                 limit {limit}; raise it with `ulimit -n`"
            );
        }
    }
}

/// Soft RLIMIT_NOFILE from /proc (Linux); `None` elsewhere or if unlimited.
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    // Resolved once: per-connection DNS lookups would distort connect latency.
    (bare, port).to_socket_addrs().map_err(|e| format!("cannot resolve --host {host:?}: {e}"))?.next().ok_or_else(|| format!("--host {host:?} has no addresses"))
}

fn client_settings(args: &SmtpArgs, addr: SocketAddr) -> Result<ClientSettings, String> {
    let bare_host = args.host.trim_start_matches('[').trim_end_matches(']');
    let server_name = tls::server_name(bare_host).or_else(|_| tls::server_name("localhost")).map_err(|e| e.to_string())?;
    let security = if args.tls || args.starttls {
        let connector = tls::connector(args.tls_verify, args.tls_ca.as_deref()).map_err(|e| e.to_string())?;
        if args.tls_verify {
            // Verification needs the real name; don't fall back silently.
            tls::server_name(bare_host).map_err(|e| e.to_string())?;
        }
        if args.tls {
            Security::Implicit(connector)
        } else {
            Security::StartTls(connector)
        }
    } else {
        Security::Plain
    };
    Ok(ClientSettings {
        addr,
        server_name,
        ehlo: args.ehlo.clone(),
        from: args.from.clone(),
        security,
        auth_plain: args.auth.as_ref().map(Credentials::plain_token),
        pipelining: !args.no_pipelining,
        timeout: args.timeout,
    })
}

fn create_output(path: Option<&PathBuf>) -> Result<Option<(PathBuf, File)>, String> {
    path.map(|p| File::create(p).map(|f| (p.clone(), f)).map_err(|e| format!("cannot create {}: {e}", p.display()))).transpose()
}

fn headline(args: &SmtpArgs) -> String {
    let mode = match args.rate {
        Some(rate) => format!("open loop {rate} msg/s"),
        None => "closed loop".to_owned(),
    };
    format!("varan-loadtest smtp: {} messages, {} B, {} connections, {mode}", args.messages, args.size, args.concurrency)
}

/// The effective configuration for JSON/CSV. The password is never echoed.
fn config_echo(args: &SmtpArgs, threads: u16, seed: u64) -> serde_json::Value {
    let tls = match (args.tls, args.starttls) {
        (true, _) => "implicit",
        (false, true) => "starttls",
        _ => "none",
    };
    json!({
        "host": args.host,
        "port": args.port,
        "messages": args.messages,
        "size": args.size,
        "concurrency": args.concurrency,
        "per_connection": args.per_connection,
        "rate": args.rate,
        "users": args.users,
        "user_prefix": args.user_prefix,
        "domain": args.domain,
        "rcpts_per_message": args.rcpts_per_message,
        "from": args.from,
        "ehlo": args.ehlo,
        "tls": tls,
        "tls_verify": args.tls_verify,
        "auth_user": args.auth.as_ref().map(|c| c.user.as_str()),
        "pipelining": !args.no_pipelining,
        "timeout_s": args.timeout.as_secs_f64(),
        "duration_s": args.duration.map(|d| d.as_secs_f64()),
        "threads": threads,
        "seed": seed,
    })
}

/// Runs a prepared test on the current runtime.
async fn execute(p: Prepared) -> (Report, Option<(PathBuf, File)>, Option<(PathBuf, File)>) {
    let requested = p.plan.messages;
    let outcome = run::run(p.plan, p.settings, p.factory).await;
    let report = Report { info: p.info, stats: outcome.stats, elapsed: outcome.elapsed, requested, stop: outcome.stop };
    (report, p.json, p.csv)
}

fn write_output(target: Option<(PathBuf, File)>, contents: &str) -> bool {
    let Some((path, mut file)) = target else {
        return true;
    };
    match file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("varan-loadtest: cannot write {}: {e}", path.display());
            false
        }
    }
}

fn usage_error(message: &str) -> ! {
    Cli::command().error(ErrorKind::ValueValidation, message).exit()
}

fn smtp_main(args: &SmtpArgs, threads: u16) -> ExitCode {
    let prepared = prepare(args, threads).unwrap_or_else(|e| usage_error(&e));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(threads)).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("varan-loadtest: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (report, json_out, csv_out) = runtime.block_on(execute(prepared));
    print!("{}", report.human());
    let json = serde_json::to_string_pretty(&report.json()).unwrap_or_default() + "\n";
    let written = write_output(json_out, &json) & write_output(csv_out, &report.csv());
    if report.all_accepted() && written {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_provider();
    match &cli.command {
        Command::Smtp(args) => smtp_main(args, cli.threads),
        Command::Seed(args) => session_main(Mode::Seed(args), cli.threads),
        Command::Imap(args) => session_main(Mode::Imap(args), cli.threads),
        Command::Pop3(args) => session_main(Mode::Pop3(args), cli.threads),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("varan-loadtest").chain(args.iter().copied()))
    }

    fn smtp(args: &[&str]) -> SmtpArgs {
        match parse(&[&["smtp"], args].concat()).unwrap().command {
            Command::Smtp(a) => *a,
            _ => unreachable!("smtp subcommand"),
        }
    }

    #[test]
    fn defaults() {
        let cli = parse(&["smtp"]).unwrap();
        assert_eq!(cli.threads, 2);
        let a = smtp(&[]);
        assert_eq!((a.host.as_str(), a.port, a.messages, a.size), ("127.0.0.1", 25, 1000, 4096));
        assert_eq!((a.concurrency, a.per_connection, a.users, a.rcpts_per_message), (10, 1, 1000, 1));
        assert_eq!((a.user_prefix.as_str(), a.domain.as_str()), ("u", "bench.test"));
        assert_eq!((a.from.as_str(), a.ehlo.as_str()), ("loadtest@loadtest.invalid", "loadtest.local"));
        assert_eq!(a.timeout, Duration::from_secs(30));
        assert!(a.rate.is_none() && a.duration.is_none() && a.seed.is_none() && a.auth.is_none());
        assert!(!a.no_pipelining && !a.tls && !a.starttls && !a.output.quiet);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        for bad in ["", "0", "k", "4x", "-1", "1.5k", "1G", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn option_values() {
        let a = smtp(&["--rate", "250.5", "--timeout", "0.5", "--duration", "60", "--threads", "4"]);
        assert_eq!(a.rate, Some(250.5));
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.duration, Some(Duration::from_secs(60)));
        assert_eq!(parse(&["smtp", "--threads", "4"]).unwrap().threads, 4);
        let a = smtp(&["--auth", "bob:pa:ss", "--no-pipelining"]);
        let c = a.auth.unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("bob", "pa:ss"));
        assert_eq!(c.plain_token(), "AGJvYgBwYTpzcw==");
        assert!(!format!("{c:?}").contains("pa:ss"));
        assert!(a.no_pipelining);
        assert!(!smtp(&["--no-pipelining", "--pipelining"]).no_pipelining);
    }

    #[test]
    fn usage_errors() {
        let bad: &[&[&str]] = &[
            &["smtp", "--tls", "--starttls"],
            &["smtp", "--tls-verify"],
            &["smtp", "--messages", "0"],
            &["smtp", "--concurrency", "0"],
            &["smtp", "--rate", "0"],
            &["smtp", "--rate", "nan"],
            &["smtp", "--timeout", "-1"],
            &["smtp", "--from", "no-at-sign"],
            &["smtp", "--from", "a@b\r\nRCPT TO:<x@y>"],
            &["smtp", "--ehlo", "two words"],
            &["smtp", "--domain", "a@b"],
            &["smtp", "--auth", "nopassword"],
            &["smtp", "--size", "1T"],
            &["smtp", "--bogus"],
            &[],
        ];
        for args in bad {
            let err = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn prepare_checks_combinations() {
        let a = smtp(&["--users", "2", "--rcpts-per-message", "3"]);
        assert!(prepare(&a, 2).err().unwrap().contains("distinct"));
        let a = smtp(&["--host", "no such host.invalid"]);
        assert!(prepare(&a, 2).is_err());
        let a = smtp(&["--json", "/nonexistent-dir/x.json"]);
        assert!(prepare(&a, 2).err().unwrap().contains("cannot create"));
    }

    #[test]
    fn reads_open_files_limit() {
        if cfg!(target_os = "linux") {
            assert!(open_files_soft_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn session_subcommands() {
        let Command::Imap(a) = parse(&["imap", "--idle", "10000", "--tls", "--domain", ""]).unwrap().command else { panic!("imap") };
        assert_eq!((a.clients, a.seeded, a.idle, a.session_min, a.session_max), (10, 20, Some(10000), 50, 150));
        assert!(a.session.tls && a.session.domain.is_empty());
        let t = session_target(&a.session, 143, 993).unwrap();
        assert_eq!(t.addr.port(), 993);
        assert_eq!(accounts(&a.session).login_name(3), "u3");
        let Command::Pop3(p) = parse(&["pop3", "--port", "1110"]).unwrap().command else { panic!("pop3") };
        assert_eq!((p.retr, p.session.port), (3, Some(1110)));
        assert_eq!(accounts(&p.session).login_name(101), "u1@bench.test");
        let Command::Seed(s) = parse(&["seed", "--messages", "5", "--size", "8k"]).unwrap().command else { panic!("seed") };
        assert_eq!((s.messages, s.size, s.concurrency), (5, 8192, 8));
        for bad in [&["imap", "--clients", "0"][..], &["imap", "--tls-verify"], &["seed", "--messages", "0"], &["pop3", "--password", "a\rb"], &["imap", "--domain", "a@b"]] {
            assert_eq!(parse(bad).expect_err(&format!("{bad:?}")).exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn headline_and_config() {
        let a = smtp(&["--messages", "10000", "--concurrency", "100", "--auth", "u:secret"]);
        assert_eq!(headline(&a), "varan-loadtest smtp: 10000 messages, 4096 B, 100 connections, closed loop");
        let c = config_echo(&a, 2, 7);
        assert_eq!(c["auth_user"], "u");
        assert!(!c.to_string().contains("secret"));
        let a = smtp(&["--rate", "500"]);
        assert!(headline(&a).ends_with("open loop 500 msg/s"));
    }
}
