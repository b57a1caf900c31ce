//! The run driver: hands out messages to worker connections (closed or
//! open loop), draws the progress line and merges per-worker measurements.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::MessageFactory;
use crate::report::{progress_line, Outcome, OutcomeCounts, Stats, StopReason};
use crate::smtp::{ClientSettings, Session};

/// Progress redraw interval (at most 4 times a second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Window over which the progress line's "current rate" is computed.
const RATE_WINDOW_TICKS: usize = 4;
/// Reconnect backoff after failed connection attempts in closed-loop mode.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// How the run is paced and bounded.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub messages: u64,
    pub concurrency: usize,
    pub per_connection: u64,
    /// Open-loop target in messages per second; `None` means closed loop.
    pub rate: Option<f64>,
    /// Stop starting new messages after this long.
    pub duration: Option<Duration>,
    /// Draw the progress line on stderr.
    pub progress: bool,
    /// Stop gracefully on the first Ctrl-C (off in tests).
    pub handle_interrupt: bool,
}

/// Measurements of a finished run.
pub struct RunOutcome {
    pub stats: Stats,
    pub elapsed: Duration,
    pub stop: StopReason,
}

/// A message slot: its number and, in open loop, when it is due.
struct Ticket {
    seq: u64,
    scheduled: Option<Instant>,
}

/// Hands out message numbers. In open loop message `i` is due at
/// `start + i / rate` whether or not earlier messages have finished, and
/// latency is measured from that instant; a slow server therefore shows up
/// as growing latency instead of silently lowering the offered load
/// (no coordinated omission).
struct Scheduler {
    next: AtomicU64,
    total: u64,
    start: Instant,
    rate: Option<f64>,
    deadline: Option<Instant>,
    interrupted: AtomicBool,
    duration_hit: AtomicBool,
}

impl Scheduler {
    fn new(plan: &RunPlan, start: Instant) -> Self {
        Scheduler {
            next: AtomicU64::new(0),
            total: plan.messages,
            start,
            rate: plan.rate,
            deadline: plan.duration.and_then(|d| start.checked_add(d)),
            interrupted: AtomicBool::new(false),
            duration_hit: AtomicBool::new(false),
        }
    }

    fn claim(&self) -> Option<Ticket> {
        if self.interrupted.load(Relaxed) {
            return None;
        }
        let seq = self.next.fetch_add(1, Relaxed);
        if seq >= self.total {
            return None;
        }
        let scheduled = match self.rate {
            None => None,
            Some(rate) => Some(self.start.checked_add(Duration::try_from_secs_f64(seq as f64 / rate).ok()?)?),
        };
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline || scheduled.is_some_and(|at| at >= deadline) {
                self.duration_hit.store(true, Relaxed);
                return None;
            }
        }
        Some(Ticket { seq, scheduled })
    }

    fn stop_reason(&self) -> StopReason {
        if self.interrupted.load(Relaxed) {
            StopReason::Interrupted
        } else if self.duration_hit.load(Relaxed) {
            StopReason::Duration
        } else {
            StopReason::Completed
        }
    }
}

/// Outcome counters shared by all workers, for the progress line only;
/// the authoritative numbers come from the merged per-worker [`Stats`].
#[derive(Default)]
struct Live([AtomicU64; 5]);

impl Live {
    fn record(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> OutcomeCounts {
        let get = |outcome: Outcome| self.0[outcome as usize].load(Relaxed);
        OutcomeCounts {
            accepted: get(Outcome::Accepted),
            tempfail: get(Outcome::TempFail),
            permfail: get(Outcome::PermFail),
            errors: get(Outcome::Error),
            timeouts: get(Outcome::Timeout),
        }
    }
}

struct Shared {
    sched: Scheduler,
    factory: MessageFactory,
    settings: ClientSettings,
    per_connection: u64,
    live: Live,
}

/// Runs the whole test and returns the merged measurements.
pub async fn run(plan: RunPlan, settings: ClientSettings, factory: MessageFactory) -> RunOutcome {
    let start = Instant::now();
    let shared = Arc::new(Shared { sched: Scheduler::new(&plan, start), factory, settings, per_connection: plan.per_connection, live: Live::default() });
    // More connections than messages would only idle.
    let workers = plan.concurrency.min(usize::try_from(plan.messages).unwrap_or(usize::MAX));
    let handles: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(Arc::clone(&shared)))).collect();
    let progress = plan.progress.then(|| tokio::spawn(show_progress(Arc::clone(&shared))));
    let interrupt = plan.handle_interrupt.then(|| tokio::spawn(watch_interrupt(Arc::clone(&shared))));

    let mut stats = Stats::default();
    for handle in handles {
        match handle.await {
            Ok(worker_stats) => stats.merge(worker_stats),
            // Unreachable unless a bug panics a worker; report what we have.
            Err(e) => eprintln!("varan-loadtest: worker failed: {e}"),
        }
    }
    let elapsed = start.elapsed();
    if let Some(task) = progress {
        task.abort();
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    if let Some(task) = interrupt {
        task.abort();
    }
    RunOutcome { stats, elapsed, stop: shared.sched.stop_reason() }
}

/// One connection slot: claim a message, connect, send it and up to
/// `per_connection - 1` more, QUIT, repeat until the scheduler runs dry.
/// Claiming before connecting means no connection is opened in vain at the
/// end of the run, and a failed connection is charged to that message, so a
/// dead server ends the run instead of being retried forever.
async fn worker(shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::default();
    let mut failures_in_row = 0u32;
    while let Some(ticket) = shared.sched.claim() {
        let started = Instant::now();
        match Session::connect(&shared.settings, &mut stats.stages).await {
            Ok(session) => {
                stats.record_connect(started.elapsed());
                failures_in_row = 0;
                if let Some(session) = send_batch(session, ticket, &shared, &mut stats).await {
                    session.quit().await;
                }
            }
            Err(e) => {
                // Keep open-loop pacing: the failure counts at the due time.
                wait_until(ticket.scheduled).await;
                let outcome = e.outcome();
                stats.record_message(outcome, Some(format!("connect: {e}")), Duration::ZERO, 0);
                shared.live.record(outcome);
                // Open loop is already paced by its schedule.
                if shared.sched.rate.is_none() {
                    failures_in_row = failures_in_row.saturating_add(1);
                    tokio::time::sleep(backoff(failures_in_row)).await;
                }
            }
        }
    }
    stats
}

/// Sends `first` and then up to `per_connection - 1` further messages back
/// to back (no RSET between successful transactions). Returns the session
/// if it is still usable.
async fn send_batch(mut session: Session, first: Ticket, shared: &Shared, stats: &mut Stats) -> Option<Session> {
    let mut ticket = first;
    let mut sent = 0;
    loop {
        // Generated before the scheduled instant so it is not timed.
        let msg = shared.factory.build(ticket.seq);
        wait_until(ticket.scheduled).await;
        let done = session.send(&shared.settings, &msg, ticket.scheduled, &mut stats.stages).await;
        stats.record_message(done.outcome, done.reason, done.latency, msg.size);
        shared.live.record(done.outcome);
        sent += 1;
        if !done.keep {
            return None;
        }
        if sent == shared.per_connection {
            return Some(session);
        }
        match shared.sched.claim() {
            Some(next) => ticket = next,
            None => return Some(session),
        }
    }
}

async fn wait_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

fn backoff(failures_in_row: u32) -> Duration {
    let factor = 1u32 << failures_in_row.saturating_sub(1).min(10);
    (BACKOFF_BASE * factor).min(BACKOFF_MAX)
}

/// Redraws a single status line on stderr until aborted.
async fn show_progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut window: VecDeque<(Instant, u64)> = VecDeque::with_capacity(RATE_WINDOW_TICKS + 1);
    loop {
        tick.tick().await;
        let counts = shared.live.snapshot();
        let done = counts.total();
        let now = Instant::now();
        window.push_back((now, done));
        if window.len() > RATE_WINDOW_TICKS + 1 {
            window.pop_front();
        }
        let rate = match window.front() {
            Some(&(then, before)) if now > then => (done - before) as f64 / (now - then).as_secs_f64(),
            _ => 0.0,
        };
        let line = progress_line(done, shared.sched.total, rate, &counts);
        // Progress is cosmetic: a closed stderr must not abort the run.
        let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
    }
}

/// First Ctrl-C: stop starting messages and report; second: exit at once.
async fn watch_interrupt(shared: Arc<Shared>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    shared.sched.interrupted.store(true, Relaxed);
    let _ = writeln!(std::io::stderr(), "\nvaran-loadtest: interrupted, finishing in-flight messages (Ctrl-C again to abort)");
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(messages: u64, rate: Option<f64>, duration: Option<Duration>) -> RunPlan {
        RunPlan { messages, concurrency: 1, per_connection: 1, rate, duration, progress: false, handle_interrupt: false }
    }

    #[test]
    fn closed_loop_hands_out_each_message_once() {
        let s = Scheduler::new(&plan(3, None, None), Instant::now());
        let seqs: Vec<u64> = std::iter::from_fn(|| s.claim()).map(|t| t.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert!(s.claim().is_none());
        assert_eq!(s.stop_reason(), StopReason::Completed);
    }

    #[test]
    fn open_loop_schedule() {
        let start = Instant::now();
        let s = Scheduler::new(&plan(10, Some(4.0), None), start);
        let t: Vec<Ticket> = std::iter::from_fn(|| s.claim()).collect();
        assert_eq!(t.len(), 10);
        assert_eq!(t[0].scheduled, Some(start));
        assert_eq!(t[6].scheduled, Some(start + Duration::from_millis(1500)));
    }

    #[test]
    fn duration_caps_open_loop_schedule() {
        let s = Scheduler::new(&plan(100, Some(10.0), Some(Duration::from_millis(450))), Instant::now());
        let n = std::iter::from_fn(|| s.claim()).count();
        assert_eq!(n, 5, "messages due at 0, 100, 200, 300, 400 ms");
        assert_eq!(s.stop_reason(), StopReason::Duration);
    }

    #[test]
    fn interrupt_stops_claims() {
        let s = Scheduler::new(&plan(100, None, None), Instant::now());
        assert!(s.claim().is_some());
        s.interrupted.store(true, Relaxed);
        assert!(s.claim().is_none());
        assert_eq!(s.stop_reason(), StopReason::Interrupted);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
