//! Measurements (latency histograms, outcome and per-stage reply counters)
//! and the human, JSON and CSV renderings of a finished run.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// Latencies are recorded in microseconds, 3 significant digits, up to an
/// hour; anything slower saturates at the top bucket instead of failing.
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Distinct failure reasons kept; further ones are lumped together so a
/// server that puts queue IDs into error texts cannot grow memory.
const MAX_FAILURE_REASONS: usize = 32;
/// Failure reasons shown in the human summary.
const SHOWN_FAILURE_REASONS: usize = 10;

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    TempFail,
    PermFail,
    Error,
    Timeout,
}

impl Outcome {
    /// Outcome of a message that failed on a reply with `code`: 4xx and 5xx
    /// are server decisions, anything else is a protocol error.
    pub fn from_code(code: u16) -> Self {
        match code / 100 {
            4 => Outcome::TempFail,
            5 => Outcome::PermFail,
            _ => Outcome::Error,
        }
    }
}

/// Protocol stage a reply, timeout or error is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Banner, EHLO/HELO, STARTTLS and AUTH.
    Connect,
    /// MAIL FROM (and an RSET before it).
    Mail,
    Rcpt,
    Data,
    /// The reply to the end-of-data dot.
    Eod,
}

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::Connect, Stage::Mail, Stage::Rcpt, Stage::Data, Stage::Eod];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Eod => "eod",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Replies by class plus timeouts and errors, for one stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    #[serde(rename = "2xx")]
    pub c2xx: u64,
    #[serde(rename = "3xx")]
    pub c3xx: u64,
    #[serde(rename = "4xx")]
    pub c4xx: u64,
    #[serde(rename = "5xx")]
    pub c5xx: u64,
    pub timeout: u64,
    pub error: u64,
}

impl ClassCounts {
    fn add(&mut self, o: &ClassCounts) {
        self.c2xx += o.c2xx;
        self.c3xx += o.c3xx;
        self.c4xx += o.c4xx;
        self.c5xx += o.c5xx;
        self.timeout += o.timeout;
        self.error += o.error;
    }

    fn values(&self) -> [u64; 6] {
        [self.c2xx, self.c3xx, self.c4xx, self.c5xx, self.timeout, self.error]
    }

    fn has_failures(&self) -> bool {
        self.c4xx + self.c5xx + self.timeout + self.error > 0
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StageCounts([ClassCounts; 5]);

impl StageCounts {
    pub fn get(&self, stage: Stage) -> &ClassCounts {
        &self.0[stage as usize]
    }

    fn get_mut(&mut self, stage: Stage) -> &mut ClassCounts {
        &mut self.0[stage as usize]
    }

    pub fn record_reply(&mut self, stage: Stage, code: u16) {
        let c = self.get_mut(stage);
        match code / 100 {
            2 => c.c2xx += 1,
            3 => c.c3xx += 1,
            4 => c.c4xx += 1,
            5 => c.c5xx += 1,
            _ => c.error += 1,
        }
    }

    pub fn record_timeout(&mut self, stage: Stage) {
        self.get_mut(stage).timeout += 1;
    }

    pub fn record_error(&mut self, stage: Stage) {
        self.get_mut(stage).error += 1;
    }

    fn merge(&mut self, other: &StageCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            mine.add(theirs);
        }
    }
}

impl Serialize for StageCounts {
    /// A map in protocol order (`connect`, `mail`, …) rather than sorted.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Stage::ALL.len()))?;
        for stage in Stage::ALL {
            map.serialize_entry(stage.name(), self.get(stage))?;
        }
        map.end()
    }
}

/// Message outcomes; they always add up to the number of messages attempted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub accepted: u64,
    pub tempfail: u64,
    pub permfail: u64,
    pub errors: u64,
    pub timeouts: u64,
}

impl OutcomeCounts {
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::TempFail => self.tempfail += 1,
            Outcome::PermFail => self.permfail += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.accepted + self.tempfail + self.permfail + self.errors + self.timeouts
    }

    fn merge(&mut self, o: &OutcomeCounts) {
        self.accepted += o.accepted;
        self.tempfail += o.tempfail;
        self.permfail += o.permfail;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
    }
}

/// Counts of distinct failure reasons, bounded in size.
#[derive(Debug, Default, Clone)]
pub struct FailureLog {
    reasons: HashMap<String, u64>,
    other: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureEntry {
    pub reason: String,
    pub count: u64,
}

impl FailureLog {
    pub fn record(&mut self, reason: String, count: u64) {
        if let Some(n) = self.reasons.get_mut(&reason) {
            *n += count;
        } else if self.reasons.len() < MAX_FAILURE_REASONS {
            self.reasons.insert(reason, count);
        } else {
            self.other += count;
        }
    }

    pub(crate) fn merge(&mut self, other: FailureLog) {
        for (reason, count) in other.reasons {
            self.record(reason, count);
        }
        self.other += other.other;
    }

    /// Most frequent first; ties broken by text for stable output.
    pub fn entries(&self) -> Vec<FailureEntry> {
        let mut list: Vec<FailureEntry> = self.reasons.iter().map(|(reason, &count)| FailureEntry { reason: reason.clone(), count }).collect();
        list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        if self.other > 0 {
            list.push(FailureEntry { reason: "(other reasons)".to_owned(), count: self.other });
        }
        list
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

pub(crate) fn record_duration(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, LATENCY_MAX_US));
}

pub(crate) fn merge_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Identical bounds make add() infallible; copy bucket by bucket anyway
    // rather than silently losing samples should that ever change.
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Everything measured by one worker; merged at the end of the run so the
/// hot path never contends on shared histograms.
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub connect_latency: Histogram<u64>,
    pub stages: StageCounts,
    pub outcomes: OutcomeCounts,
    pub failures: FailureLog,
    pub accepted_bytes: u64,
    pub connections: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: new_histogram(),
            connect_latency: new_histogram(),
            stages: StageCounts::default(),
            outcomes: OutcomeCounts::default(),
            failures: FailureLog::default(),
            accepted_bytes: 0,
            connections: 0,
        }
    }
}

impl Stats {
    /// Records a message outcome; latency only counts for accepted messages.
    pub fn record_message(&mut self, outcome: Outcome, reason: Option<String>, latency: Duration, bytes: usize) {
        self.outcomes.record(outcome);
        if outcome == Outcome::Accepted {
            record_duration(&mut self.latency, latency);
            self.accepted_bytes += bytes as u64;
        }
        if let Some(reason) = reason {
            self.failures.record(reason, 1);
        }
    }

    pub fn record_connect(&mut self, latency: Duration) {
        self.connections += 1;
        record_duration(&mut self.connect_latency, latency);
    }

    pub fn merge(&mut self, other: Stats) {
        merge_histogram(&mut self.latency, &other.latency);
        merge_histogram(&mut self.connect_latency, &other.connect_latency);
        self.stages.merge(&other.stages);
        self.outcomes.merge(&other.outcomes);
        self.failures.merge(other.failures);
        self.accepted_bytes += other.accepted_bytes;
        self.connections += other.connections;
    }
}

/// Latency summary in milliseconds; `None` when nothing was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let present = !h.is_empty();
        let q = |quantile: f64| present.then(|| us_to_ms(h.value_at_quantile(quantile)));
        Percentiles {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: present.then(|| us_to_ms(h.max())),
            mean: present.then(|| round(h.mean() / 1000.0, 3)),
        }
    }

    fn human(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        format!("p50 {} p90 {} p99 {} p99.9 {} max {} mean {}", f(self.p50), f(self.p90), f(self.p99), f(self.p999), f(self.max), f(self.mean))
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All requested messages were attempted.
    Completed,
    /// `--duration` elapsed before all messages were started.
    Duration,
    /// Interrupted (Ctrl-C) before all messages were started.
    Interrupted,
}

impl StopReason {
    fn name(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::Duration => "duration",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Description of the run for the report header.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Protocol, e.g. `smtp`.
    pub mode: &'static str,
    /// First line of the human summary.
    pub headline: String,
    /// Effective configuration, echoed into JSON/CSV.
    pub config: Value,
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub info: RunInfo,
    pub stats: Stats,
    pub elapsed: Duration,
    pub requested: u64,
    pub stop: StopReason,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    tool: &'static str,
    version: &'static str,
    mode: &'static str,
    config: &'a Value,
    requested: u64,
    attempted: u64,
    #[serde(flatten)]
    outcomes: OutcomeCounts,
    stopped: &'static str,
    connections: u64,
    accepted_bytes: u64,
    elapsed_s: f64,
    throughput_msgs_per_s: f64,
    throughput_mb_per_s: f64,
    latency_ms: Percentiles,
    connect_latency_ms: Percentiles,
    stages: &'a StageCounts,
    failures: Vec<FailureEntry>,
}

impl Report {
    pub fn attempted(&self) -> u64 {
        self.stats.outcomes.total()
    }

    /// True when every attempted message was accepted and the run was not
    /// cut short by anything but `--duration`.
    pub fn all_accepted(&self) -> bool {
        let o = &self.stats.outcomes;
        let attempted = self.attempted();
        let finished = match self.stop {
            StopReason::Completed => attempted == self.requested,
            StopReason::Duration => true,
            StopReason::Interrupted => false,
        };
        finished && attempted > 0 && o.accepted == attempted
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn throughput(&self) -> f64 {
        self.stats.outcomes.accepted as f64 / self.secs()
    }

    /// Accepted message bytes (before dot-stuffing) per second, in 10^6 B/s.
    pub fn megabytes_per_sec(&self) -> f64 {
        self.stats.accepted_bytes as f64 / self.secs() / 1e6
    }

    pub fn human(&self) -> String {
        let o = &self.stats.outcomes;
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.info.headline);
        let _ = writeln!(out, "accepted {}  tempfail {}  permfail {}  errors {}  timeouts {}", o.accepted, o.tempfail, o.permfail, o.errors, o.timeouts);
        match self.stop {
            StopReason::Completed => {}
            StopReason::Duration => {
                let _ = writeln!(out, "stopped by --duration after {} of {} messages", self.attempted(), self.requested);
            }
            StopReason::Interrupted => {
                let _ = writeln!(out, "interrupted after {} of {} messages", self.attempted(), self.requested);
            }
        }
        let _ = writeln!(out, "elapsed {:.3} s  throughput {:.1} msg/s  ({:.1} MB/s)", self.elapsed.as_secs_f64(), self.throughput(), self.megabytes_per_sec());
        let _ = writeln!(out, "transaction latency ms: {}", Percentiles::of(&self.stats.latency).human());
        let _ = writeln!(out, "connect latency ms: {}", Percentiles::of(&self.stats.connect_latency).human());
        self.human_failures(&mut out);
        out
    }

    /// Stage table and top failure reasons, only when something failed.
    fn human_failures(&self, out: &mut String) {
        let stages = &self.stats.stages;
        if !Stage::ALL.iter().any(|&s| stages.get(s).has_failures()) {
            return;
        }
        let _ = writeln!(out, "replies by stage      2xx      3xx      4xx      5xx  timeout    error");
        for stage in Stage::ALL {
            let _ = write!(out, "  {:<14}", stage.name());
            for v in stages.get(stage).values() {
                let _ = write!(out, " {v:>8}");
            }
            out.push('\n');
        }
        let entries = self.stats.failures.entries();
        if !entries.is_empty() {
            let _ = writeln!(out, "failure reasons (most frequent first):");
            for e in entries.iter().take(SHOWN_FAILURE_REASONS) {
                let _ = writeln!(out, "  {:>8}  {}", e.count, e.reason);
            }
        }
    }

    pub fn json(&self) -> Value {
        let report = JsonReport {
            tool: "varan-loadtest",
            version: env!("CARGO_PKG_VERSION"),
            mode: self.info.mode,
            config: &self.info.config,
            requested: self.requested,
            attempted: self.attempted(),
            outcomes: self.stats.outcomes,
            stopped: self.stop.name(),
            connections: self.stats.connections,
            accepted_bytes: self.stats.accepted_bytes,
            elapsed_s: round(self.elapsed.as_secs_f64(), 6),
            throughput_msgs_per_s: round(self.throughput(), 3),
            throughput_mb_per_s: round(self.megabytes_per_sec(), 3),
            latency_ms: Percentiles::of(&self.stats.latency),
            connect_latency_ms: Percentiles::of(&self.stats.connect_latency),
            stages: &self.stats.stages,
            failures: self.stats.failures.entries(),
        };
        // Serialising plain structs and maps with string keys cannot fail.
        serde_json::to_value(report).unwrap_or(Value::Null)
    }

    /// Header line plus one row: the JSON report flattened with `_` joining
    /// nested keys (columns sorted by name; list fields are omitted).
    pub fn csv(&self) -> String {
        let mut fields = Vec::new();
        flatten("", &self.json(), &mut fields);
        let header: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        let row: Vec<String> = fields.iter().map(|(_, v)| csv_value(v)).collect();
        format!("{}\n{}\n", header.join(","), row.join(","))
    }
}

pub(crate) fn flatten_pub(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    flatten(prefix, value, out)
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}_{k}") };
                flatten(&key, v, out);
            }
        }
        Value::Array(_) => {}
        scalar => out.push((prefix.to_owned(), scalar.clone())),
    }
}

pub(crate) fn csv_value_pub(v: &Value) -> String {
    csv_value(v)
}

fn csv_value(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.contains([',', '"', '\n', '\r']) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One-line live status for the progress display.
pub fn progress_line(done: u64, total: u64, rate: f64, o: &OutcomeCounts) -> String {
    format!("{done}/{total} msgs  {rate:.1} msg/s  tempfail {}  permfail {}  errors {}  timeouts {}", o.tempfail, o.permfail, o.errors, o.timeouts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(latencies_us: &[u64], outcomes: &[Outcome]) -> Report {
        let mut stats = Stats::default();
        for &us in latencies_us {
            stats.record_message(Outcome::Accepted, None, Duration::from_micros(us), 1000);
        }
        for &o in outcomes {
            stats.record_message(o, Some("rcpt: 550 5.1.1 no such user".into()), Duration::ZERO, 1000);
        }
        stats.record_connect(Duration::from_micros(250));
        stats.stages.record_reply(Stage::Rcpt, 550);
        Report {
            info: RunInfo { mode: "smtp", headline: "varan-loadtest smtp: test".into(), config: serde_json::json!({"host": "127.0.0.1", "from": "a,\"b\"@x"}) },
            stats,
            elapsed: Duration::from_millis(2000),
            requested: (latencies_us.len() + outcomes.len()) as u64,
            stop: StopReason::Completed,
        }
    }

    #[test]
    fn percentiles_in_ms() {
        let mut h = new_histogram();
        // Values below 2048 µs are exact with 3 significant digits.
        for us in 1..=2000 {
            record_duration(&mut h, Duration::from_micros(us));
        }
        record_duration(&mut h, Duration::from_micros(2001));
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 2001);
        assert_eq!(p.p50, Some(1.001));
        assert_eq!(p.p90, Some(1.801));
        assert_eq!(p.p99, Some(1.981));
        assert_eq!(p.p999, Some(1.999));
        assert_eq!(p.max, Some(2.001));
        assert_eq!(p.mean, Some(1.001));
        assert_eq!(p.human(), "p50 1.001 p90 1.801 p99 1.981 p99.9 1.999 max 2.001 mean 1.001");
        let empty = Percentiles::of(&new_histogram());
        assert_eq!(empty.p50, None);
        assert_eq!(empty.human(), "p50 - p90 - p99 - p99.9 - max - mean -");
    }

    #[test]
    fn extreme_latencies_saturate() {
        let mut h = new_histogram();
        record_duration(&mut h, Duration::ZERO);
        record_duration(&mut h, Duration::from_secs(10 * 3600));
        assert_eq!(h.len(), 2);
        assert!(h.max() >= LATENCY_MAX_US);
    }

    #[test]
    fn human_summary() {
        let r = report_with(&[1000, 1500, 2000], &[]);
        let text = r.human();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "varan-loadtest smtp: test");
        assert_eq!(lines[1], "accepted 3  tempfail 0  permfail 0  errors 0  timeouts 0");
        assert_eq!(lines[2], "elapsed 2.000 s  throughput 1.5 msg/s  (0.0 MB/s)");
        assert_eq!(lines[3], "transaction latency ms: p50 1.500 p90 2.000 p99 2.000 p99.9 2.000 max 2.000 mean 1.500");
        assert!(lines[4].starts_with("connect latency ms: p50 0.250 "));
        // The stage table appears because of the recorded 550.
        assert!(text.contains("  rcpt                  0        0        0        1        0        0"));
        assert!(r.all_accepted());
    }

    #[test]
    fn failures_affect_exit_status_and_summary() {
        let r = report_with(&[1000], &[Outcome::PermFail, Outcome::Timeout]);
        assert!(!r.all_accepted());
        let text = r.human();
        assert!(text.contains("accepted 1  tempfail 0  permfail 1  errors 0  timeouts 1"));
        assert!(text.contains("       2  rcpt: 550 5.1.1 no such user"));
        let mut r = report_with(&[1000], &[]);
        r.requested = 5;
        assert!(!r.all_accepted(), "unsent messages without --duration");
        r.stop = StopReason::Duration;
        assert!(r.all_accepted());
        r.stop = StopReason::Interrupted;
        assert!(!r.all_accepted());
    }

    #[test]
    fn json_fields_are_stable() {
        let r = report_with(&[1000, 2000], &[Outcome::TempFail]);
        let j = r.json();
        for key in ["accepted", "tempfail", "permfail", "errors", "timeouts", "elapsed_s", "throughput_msgs_per_s"] {
            assert!(j[key].is_number(), "{key}");
        }
        assert_eq!(j["accepted"], 2);
        assert_eq!(j["tempfail"], 1);
        assert_eq!(j["attempted"], 3);
        assert_eq!(j["elapsed_s"], 2.0);
        assert_eq!(j["throughput_msgs_per_s"], 1.0);
        assert_eq!(j["latency_ms"]["p50"], 1.0);
        assert_eq!(j["latency_ms"]["p999"], 2.0);
        assert_eq!(j["connect_latency_ms"]["max"], 0.25);
        assert_eq!(j["stages"]["rcpt"]["5xx"], 1);
        assert_eq!(j["config"]["host"], "127.0.0.1");
        assert_eq!(j["failures"][0]["count"], 1);
        let keys: Vec<&String> = j["stages"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5);
    }

    #[test]
    fn csv_is_flat_and_quoted() {
        let r = report_with(&[1000], &[]);
        let csv = r.csv();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let row = lines.next().unwrap();
        assert!(lines.next().is_none());
        for col in ["accepted", "latency_ms_p50", "connect_latency_ms_p999", "stages_eod_2xx", "config_host"] {
            assert!(header.contains(&col), "{col}");
        }
        assert!(!header.iter().any(|h| h.starts_with("failures")));
        assert!(row.contains("\"a,\"\"b\"\"@x\""));
        let idx = header.iter().position(|h| *h == "accepted").unwrap();
        // Count data columns ignoring the quoted comma.
        let unquoted = row.replace("\"a,\"\"b\"\"@x\"", "X");
        assert_eq!(unquoted.split(',').count(), header.len());
        assert_eq!(unquoted.split(',').nth(idx), Some("1"));
    }

    #[test]
    fn failure_log_is_bounded() {
        let mut log = FailureLog::default();
        for i in 0..100 {
            log.record(format!("eod: 451 queue id {i}"), 1);
        }
        log.record("eod: 451 queue id 0".into(), 5);
        let entries = log.entries();
        assert_eq!(entries.len(), MAX_FAILURE_REASONS + 1);
        assert_eq!(entries[0], FailureEntry { reason: "eod: 451 queue id 0".into(), count: 6 });
        assert_eq!(entries.last().unwrap().count, 100 - MAX_FAILURE_REASONS as u64);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = report_with(&[1000], &[Outcome::Error]).stats;
        let b = report_with(&[2000], &[Outcome::Timeout]).stats;
        a.merge(b);
        assert_eq!(a.outcomes.total(), 4);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.connections, 2);
        assert_eq!(a.stages.get(Stage::Rcpt).c5xx, 2);
        assert_eq!(a.failures.entries()[0].count, 2);
    }
}
