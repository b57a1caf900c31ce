//! IMAP load: `seed` (APPEND a deterministic set of messages into each
//! user's INBOX), the closed-loop mixed workload, and held IDLE sessions.

pub mod conn;
pub mod response;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, Semaphore};

use crate::message::MessageFactory;
use crate::ops::{OpError, OpStats};
use conn::{quote, Done, ImapConn, Target};

/// Fixed Date: header of seeded messages, so both servers get identical bytes.
pub const SEED_DATE: &str = "Tue, 01 Dec 2026 12:00:00 +0000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Login,
    Plain,
}

/// Who logs in and how.
#[derive(Clone)]
pub struct Accounts {
    pub user_prefix: String,
    /// Appended as `@domain` unless empty.
    pub domain: String,
    pub first_user: u64,
    pub users: u64,
    pub password: String,
    pub auth: AuthMode,
}

impl Accounts {
    pub fn login_name(&self, client: u64) -> String {
        let i = self.first_user + client % self.users;
        if self.domain.is_empty() {
            format!("{}{i}", self.user_prefix)
        } else {
            format!("{}{i}@{}", self.user_prefix, self.domain)
        }
    }
}

/// Connects and logs in as `login`; records CONNECT and LOGIN.
async fn open_session(t: &Target, acc: &Accounts, login: &str, stats: &mut OpStats) -> Result<ImapConn, OpError> {
    let t0 = Instant::now();
    let opened = ImapConn::open(t).await;
    stats.record("CONNECT", t0.elapsed(), &opened.as_ref().map(|_| ()).map_err(Clone::clone));
    let mut c = opened?;
    stats.connections += 1;
    let t0 = Instant::now();
    let r = match acc.auth {
        AuthMode::Login => c.command(&format!("LOGIN {} {}", quote(login), quote(&acc.password))).await,
        AuthMode::Plain => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{}", acc.password));
            c.authenticate_plain(&token).await
        }
    };
    stats.record("LOGIN", t0.elapsed(), &r.as_ref().map(|_| ()).map_err(Clone::clone));
    r?;
    Ok(c)
}

/// Runs one command, timing and recording it.
async fn timed(c: &mut ImapConn, stats: &mut OpStats, name: &'static str, cmd: &str) -> Result<Done, OpError> {
    let t0 = Instant::now();
    let r = c.command(cmd).await;
    stats.record(name, t0.elapsed(), &r.as_ref().map(|_| ()).map_err(Clone::clone));
    r
}

fn exists_of(done: &Done) -> Option<u32> {
    done.untagged.iter().filter_map(|r| r.numbered()).filter(|(_, w)| w == "EXISTS").map(|(n, _)| n).next_back()
}

fn status_messages(done: &Done) -> Option<u32> {
    let r = done.untagged.iter().find(|r| r.text.to_ascii_uppercase().starts_with("STATUS "))?;
    let upper = r.text.to_ascii_uppercase();
    let at = upper.find("MESSAGES ")? + "MESSAGES ".len();
    upper[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Message `seq` for seeding: the SMTP generator's message, every third
/// one wrapped into multipart/mixed with a small base64 attachment so
/// BODYSTRUCTURE has some structure to describe.
pub fn seed_message(factory: &MessageFactory, seq: u64) -> Vec<u8> {
    let raw = factory.raw_at(seq, SEED_DATE);
    if !seq.is_multiple_of(3) {
        return raw;
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 2);
    let (head, body) = raw.split_at(split);
    let body = body.strip_prefix(b"\r\n").unwrap_or(body);
    let boundary = format!("=_varan_loadtest_{seq}");
    let mut out = Vec::with_capacity(raw.len() + 1024);
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.starts_with(b"Content-Type:") || line.starts_with(b"Content-Transfer-Encoding:") {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n").as_bytes());
    out.extend_from_slice(body);
    if !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    let attachment: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seq as u32) >> 13) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(attachment);
    out.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/octet-stream; name=\"data-{seq}.bin\"\r\nContent-Disposition: attachment; filename=\"data-{seq}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes());
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// Seeding: each user's INBOX gets messages `0..messages` (only the missing
/// tail is appended, so seeding twice is harmless).
pub async fn seed(target: Target, acc: Accounts, messages: u64, concurrency: usize, factory: Arc<MessageFactory>) -> (OpStats, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let appended = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, appended, target, acc, factory) = (next.clone(), appended.clone(), target.clone(), acc.clone(), factory.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = OpStats::default();
            loop {
                let u = next.fetch_add(1, Ordering::Relaxed);
                if u >= acc.users {
                    break;
                }
                let login = acc.login_name(u);
                let Ok(mut c) = open_session(&target, &acc, &login, &mut stats).await else { continue };
                let Ok(st) = timed(&mut c, &mut stats, "STATUS", "STATUS INBOX (MESSAGES)").await else { continue };
                let have = u64::from(status_messages(&st).unwrap_or(0));
                for i in have..messages {
                    let msg = seed_message(&factory, (acc.first_user + u) * messages + i);
                    let t0 = Instant::now();
                    let r = c.command_with_literal("APPEND INBOX", &msg, "").await.map(|_| ());
                    stats.record("APPEND", t0.elapsed(), &r);
                    if r.is_err() {
                        break;
                    }
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                let _ = timed(&mut c, &mut stats, "LOGOUT", "LOGOUT").await;
                c.shutdown().await;
            }
            stats
        }));
    }
    let mut all = OpStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    (all, appended.load(Ordering::Relaxed))
}

/// The mixed workload's operations and their relative weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    List,
    Status,
    Select,
    FetchMeta,
    FetchBody,
    Store,
    Append,
    Expunge,
}

const MIX: [(Op, u32); 8] = [(Op::List, 5), (Op::Status, 10), (Op::Select, 10), (Op::FetchMeta, 20), (Op::FetchBody, 15), (Op::Store, 15), (Op::Append, 13), (Op::Expunge, 12)];

fn pick(rng: &mut StdRng) -> Op {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (op, w) in MIX {
        if x < w {
            return op;
        }
        x -= w;
    }
    Op::List
}

#[derive(Clone)]
pub struct MixPlan {
    pub clients: usize,
    pub duration: Duration,
    /// Stop after this many operations in total (None: duration only).
    pub max_ops: Option<u64>,
    /// Messages each user was seeded with; FETCH/STORE only touch these
    /// (sequence numbers 1..=seeded never move: only messages appended by
    /// the load itself are expunged).
    pub seeded: u32,
    /// Commands per session before LOGOUT and a fresh LOGIN.
    pub session_ops: (u32, u32),
    pub seed: u64,
}

struct Shared {
    deadline: Instant,
    started_ops: AtomicU64,
    max_ops: u64,
    stop: AtomicBool,
}

impl Shared {
    /// Claims one operation; false when the run is over.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline || self.started_ops.fetch_add(1, Ordering::Relaxed) >= self.max_ops {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The closed-loop mixed workload; returns merged stats and elapsed time.
pub async fn mixed(target: Target, acc: Accounts, plan: MixPlan, factory: Arc<MessageFactory>) -> (OpStats, Duration) {
    let start = Instant::now();
    let shared = Arc::new(Shared { deadline: start + plan.duration, started_ops: AtomicU64::new(0), max_ops: plan.max_ops.unwrap_or(u64::MAX), stop: AtomicBool::new(false) });
    let mut tasks = Vec::with_capacity(plan.clients);
    for i in 0..plan.clients {
        let (target, acc, plan, factory, shared) = (target.clone(), acc.clone(), plan.clone(), factory.clone(), shared.clone());
        tasks.push(tokio::spawn(async move { client(i as u64, target, acc, plan, factory, shared).await }));
    }
    let mut all = OpStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    (all, start.elapsed())
}

async fn client(i: u64, target: Target, acc: Accounts, plan: MixPlan, factory: Arc<MessageFactory>, shared: Arc<Shared>) -> OpStats {
    let mut stats = OpStats::default();
    let mut rng = StdRng::seed_from_u64(plan.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let login = acc.login_name(i);
    let mut appends = 0u64;
    // Spread the first logins a little so 1,000 clients do not all SYN at once.
    tokio::time::sleep(Duration::from_micros(rng.gen_range(0..=(plan.clients as u64 * 200).min(500_000)))).await;
    while shared.claim() {
        let Ok(mut c) = open_session(&target, &acc, &login, &mut stats).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let result = session(&mut c, &mut stats, &mut rng, &plan, &factory, &shared, i, &mut appends).await;
        if result.is_ok() {
            c.shutdown().await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stats
}

#[allow(clippy::too_many_arguments)]
async fn session(
    c: &mut ImapConn,
    stats: &mut OpStats,
    rng: &mut StdRng,
    plan: &MixPlan,
    factory: &MessageFactory,
    shared: &Shared,
    client: u64,
    appends: &mut u64,
) -> Result<(), OpError> {
    let sel = timed(c, stats, "SELECT", "SELECT INBOX").await?;
    let mut exists = exists_of(&sel).unwrap_or(0);
    let n = rng.gen_range(plan.session_ops.0..=plan.session_ops.1);
    // UIDs this session appended and has not expunged yet.
    let mut pending: Vec<u32> = Vec::new();
    let fetchable = |exists: u32| exists.min(plan.seeded);
    for _ in 0..n {
        if !shared.claim() {
            break;
        }
        let mut op = pick(rng);
        if op == Op::Expunge && pending.is_empty() {
            op = Op::Append;
        }
        if matches!(op, Op::FetchMeta | Op::FetchBody | Op::Store) && fetchable(exists) == 0 {
            op = Op::Append;
        }
        match op {
            Op::List => {
                timed(c, stats, "LIST", "LIST \"\" \"*\"").await?;
            }
            Op::Status => {
                timed(c, stats, "STATUS", "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)").await?;
            }
            Op::Select => {
                let d = timed(c, stats, "SELECT", "SELECT INBOX").await?;
                exists = exists_of(&d).unwrap_or(exists);
            }
            Op::FetchMeta => {
                let max = fetchable(exists);
                let a = rng.gen_range(1..=max);
                let b = (a + 4).min(max);
                let d = timed(c, stats, "FETCH_META", &format!("FETCH {a}:{b} (UID FLAGS ENVELOPE BODYSTRUCTURE)")).await?;
                let got = d.untagged.iter().filter(|r| r.numbered().is_some_and(|(_, w)| w == "FETCH")).count();
                if got < (b - a + 1) as usize {
                    return Err(record_protocol(stats, "FETCH_META", format!("{got} of {} messages returned", b - a + 1)));
                }
            }
            Op::FetchBody => {
                let max = fetchable(exists);
                let a = rng.gen_range(1..=max);
                let b = (a + rng.gen_range(0..=2)).min(max);
                let d = timed(c, stats, "FETCH_BODY", &format!("FETCH {a}:{b} (UID BODY.PEEK[])")).await?;
                let bytes: usize = d.untagged.iter().map(|r| r.literal_bytes()).sum();
                let bodies = d.untagged.iter().filter(|r| !r.literals.is_empty()).count();
                if bodies < (b - a + 1) as usize {
                    return Err(record_protocol(stats, "FETCH_BODY", format!("{bodies} of {} bodies returned", b - a + 1)));
                }
                stats.bytes_fetched += bytes as u64;
            }
            Op::Store => {
                let a = rng.gen_range(1..=fetchable(exists));
                let sign = if rng.gen_bool(0.5) { '+' } else { '-' };
                let flag = if rng.gen_bool(0.5) { "\\Flagged" } else { "\\Seen" };
                timed(c, stats, "STORE", &format!("STORE {a} {sign}FLAGS ({flag})")).await?;
            }
            Op::Append => {
                *appends += 1;
                let msg = factory.raw_at(client.wrapping_mul(1_000_000_007).wrapping_add(*appends), SEED_DATE);
                let t0 = Instant::now();
                let r = c.command_with_literal("APPEND INBOX", &msg, "").await;
                stats.record("APPEND", t0.elapsed(), &r.as_ref().map(|_| ()).map_err(Clone::clone));
                let d = r?;
                // [APPENDUID validity uid] (RFC 4315); both peers support UIDPLUS.
                match d.tagged.code("APPENDUID").and_then(|v| v.split(' ').nth(1)).and_then(|u| u.parse().ok()) {
                    Some(uid) => pending.push(uid),
                    None => return Err(record_protocol(stats, "APPEND", "no APPENDUID in the tagged OK".into())),
                }
                exists = exists.max(plan.seeded);
            }
            Op::Expunge => {
                let set: Vec<String> = pending.drain(..).map(|u| u.to_string()).collect();
                timed(c, stats, "STORE", &format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", set.join(","))).await?;
                timed(c, stats, "EXPUNGE", "EXPUNGE").await?;
            }
        }
    }
    if !pending.is_empty() {
        let set: Vec<String> = pending.drain(..).map(|u| u.to_string()).collect();
        timed(c, stats, "STORE", &format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", set.join(","))).await?;
        timed(c, stats, "EXPUNGE", "EXPUNGE").await?;
    }
    if !shared.stop.load(Ordering::Relaxed) {
        timed(c, stats, "LOGOUT", "LOGOUT").await?;
    }
    Ok(())
}

/// A response that was OK but wrong in content: counted as a protocol error
/// (the command itself was already counted as successful; this adds a
/// separate failure entry under `<command>_CHECK`).
fn record_protocol(stats: &mut OpStats, command: &'static str, why: String) -> OpError {
    let e = OpError::Protocol(why);
    let name = match command {
        "FETCH_META" => "FETCH_META_CHECK",
        "FETCH_BODY" => "FETCH_BODY_CHECK",
        _ => "APPEND_CHECK",
    };
    stats.record(name, Duration::ZERO, &Err(e.clone()));
    e
}

/// Result of an IDLE hold.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IdleSummary {
    pub requested: u64,
    /// Sessions that reached IDLE (continuation received).
    pub established: u64,
    /// Sessions whose DONE got a tagged OK after the hold.
    pub held: u64,
    pub ramp_s: f64,
    pub hold_s: f64,
}

/// Opens `n` sessions (at most `parallel` logins in flight), puts each into
/// IDLE, holds them for `hold` once all are established (or `ramp_limit`
/// has passed), then ends every IDLE with DONE.
pub async fn idle(target: Target, acc: Accounts, n: u64, parallel: usize, hold: Duration, ramp_limit: Duration) -> (OpStats, IdleSummary) {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let established = Arc::new(AtomicU64::new(0));
    let finished_ramp = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let released = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (target, acc, gate, established, finished_ramp, release, released) =
            (target.clone(), acc.clone(), gate.clone(), established.clone(), finished_ramp.clone(), release.clone(), released.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = OpStats::default();
            let login = acc.login_name(i);
            let mut session = None;
            if let Ok(_permit) = gate.acquire().await {
                if let Ok(mut c) = open_session(&target, &acc, &login, &mut stats).await {
                    if timed(&mut c, &mut stats, "SELECT", "SELECT INBOX").await.is_ok() {
                        let t0 = Instant::now();
                        let r = c.idle_start().await;
                        stats.record("IDLE", t0.elapsed(), &r.as_ref().map(|_| ()).map_err(Clone::clone));
                        if let Ok(tag) = r {
                            established.fetch_add(1, Ordering::Relaxed);
                            session = Some((c, tag));
                        }
                    }
                }
            }
            finished_ramp.fetch_add(1, Ordering::Relaxed);
            let mut held = false;
            if let Some((mut c, tag)) = session {
                // Wait for the end of the hold (notify_waiters may fire before we wait).
                let notified = release.notified();
                if !released.load(Ordering::Acquire) {
                    notified.await;
                }
                c.set_timeout(Duration::from_secs(60));
                let t0 = Instant::now();
                let r = c.idle_done(&tag).await.map(|_| ());
                stats.record("DONE", t0.elapsed(), &r);
                held = r.is_ok();
                c.shutdown().await;
            }
            (stats, held)
        }));
    }
    // Ramp: until every task has either reached IDLE or failed.
    while finished_ramp.load(Ordering::Relaxed) < n && start.elapsed() < ramp_limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_s = start.elapsed().as_secs_f64();
    eprintln!("varan-loadtest: idle: {} of {n} sessions in IDLE after {ramp_s:.1} s; holding {:.0} s", established.load(Ordering::Relaxed), hold.as_secs_f64());
    let hold_start = Instant::now();
    tokio::time::sleep(hold).await;
    let hold_s = hold_start.elapsed().as_secs_f64();
    released.store(true, Ordering::Release);
    release.notify_waiters();
    let mut all = OpStats::default();
    let mut held = 0;
    for t in tasks {
        if let Ok((s, h)) = t.await {
            all.merge(s);
            held += u64::from(h);
        }
    }
    let summary =
        IdleSummary { requested: n, established: established.load(Ordering::Relaxed), held, ramp_s: crate::report::round(ramp_s, 3), hold_s: crate::report::round(hold_s, 3) };
    (all, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageSpec;

    fn factory() -> MessageFactory {
        let spec =
            MessageSpec { size: 2048, from: "loadtest@loadtest.invalid".into(), users: 10, user_prefix: "u".into(), domain: "bench.test".into(), rcpts_per_message: 1, seed: 1 };
        MessageFactory::new(spec, "seed".into())
    }

    #[test]
    fn seeded_messages_are_deterministic_mime() {
        let f = factory();
        let plain = seed_message(&f, 4);
        assert_eq!(plain, seed_message(&factory(), 4), "same bytes for both servers");
        assert!(plain.windows(10).any(|w| w == b"text/plain"));
        let multi = String::from_utf8(seed_message(&f, 3)).unwrap();
        assert!(multi.contains("Content-Type: multipart/mixed; boundary=\"=_varan_loadtest_3\""));
        assert_eq!(multi.matches("--=_varan_loadtest_3\r\n").count(), 2);
        assert!(multi.ends_with("--=_varan_loadtest_3--\r\n"));
        assert!(multi.contains("Date: Tue, 01 Dec 2026 12:00:00 +0000"));
        assert_eq!(multi.matches("Content-Type:").count(), 3, "the top-level text/plain header is replaced");
        assert!(!multi.contains("\n\n") && !multi.replace("\r\n", "").contains('\n'), "CRLF only");
    }

    #[test]
    fn login_names_and_mix() {
        let acc = Accounts { user_prefix: "u".into(), domain: "bench.test".into(), first_user: 5, users: 3, password: "pw".into(), auth: AuthMode::Login };
        assert_eq!(acc.login_name(0), "u5@bench.test");
        assert_eq!(acc.login_name(4), "u6@bench.test");
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            seen.insert(format!("{:?}", pick(&mut rng)));
        }
        assert_eq!(seen.len(), MIX.len());
    }

    #[test]
    fn status_and_exists_parsing() {
        let (r, _) = response::parse(b"* STATUS INBOX (MESSAGES 17 UIDNEXT 40)\r\n").unwrap().unwrap();
        let (t, _) = response::parse(b"A1 OK done\r\n").unwrap().unwrap();
        let d = Done { untagged: vec![r], tagged: t.clone() };
        assert_eq!(status_messages(&d), Some(17));
        let (e1, _) = response::parse(b"* 3 EXISTS\r\n").unwrap().unwrap();
        let (e2, _) = response::parse(b"* 4 EXISTS\r\n").unwrap().unwrap();
        assert_eq!(exists_of(&Done { untagged: vec![e1, e2], tagged: t }), Some(4));
    }
}
