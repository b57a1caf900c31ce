//! Per-command statistics for the session protocols (IMAP, POP3): every
//! command is one operation with its own latency histogram; failures are
//! split into protocol errors (NO/BAD/BYE/-ERR/garbage), I/O errors and
//! timeouts.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::report::{merge_histogram, new_histogram, record_duration, round, FailureLog, Percentiles};

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The server answered NO/BAD/BYE (IMAP) or -ERR (POP3).
    Rejected(String),
    /// The server sent something that is not a valid response here.
    Protocol(String),
    /// Connection refused/reset/closed, TLS failure.
    Io(String),
    Timeout,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Rejected(s) => write!(f, "rejected: {s}"),
            OpError::Protocol(s) => write!(f, "protocol: {s}"),
            OpError::Io(s) => write!(f, "io: {s}"),
            OpError::Timeout => write!(f, "timeout"),
        }
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        OpError::Io(e.kind().to_string())
    }
}

/// Failure reasons are keyed without digits so that e.g. UIDs in server
/// texts do not make every reason distinct.
fn reason_key(command: &str, e: &OpError) -> String {
    let text: String = format!("{command}: {e}").chars().take(160).map(|c| if c.is_ascii_digit() { 'N' } else { c }).collect();
    text
}

#[derive(Debug)]
pub struct CommandStats {
    pub ok: u64,
    pub protocol_errors: u64,
    pub io_errors: u64,
    pub timeouts: u64,
    pub latency: Histogram<u64>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats { ok: 0, protocol_errors: 0, io_errors: 0, timeouts: 0, latency: new_histogram() }
    }
}

/// Everything one client measured; merged at the end.
#[derive(Debug, Default)]
pub struct OpStats {
    pub commands: BTreeMap<&'static str, CommandStats>,
    pub connections: u64,
    pub failures: FailureLog,
    pub bytes_fetched: u64,
}

impl OpStats {
    pub fn record(&mut self, command: &'static str, took: Duration, result: &Result<(), OpError>) {
        let c = self.commands.entry(command).or_default();
        match result {
            Ok(()) => {
                c.ok += 1;
                record_duration(&mut c.latency, took);
            }
            Err(e) => {
                match e {
                    OpError::Rejected(_) | OpError::Protocol(_) => c.protocol_errors += 1,
                    OpError::Io(_) => c.io_errors += 1,
                    OpError::Timeout => c.timeouts += 1,
                }
                self.failures.record(reason_key(command, e), 1);
            }
        }
    }

    pub fn merge(&mut self, other: OpStats) {
        for (name, o) in other.commands {
            let c = self.commands.entry(name).or_default();
            c.ok += o.ok;
            c.protocol_errors += o.protocol_errors;
            c.io_errors += o.io_errors;
            c.timeouts += o.timeouts;
            merge_histogram(&mut c.latency, &o.latency);
        }
        self.connections += other.connections;
        self.failures.merge(other.failures);
        self.bytes_fetched += other.bytes_fetched;
    }

    /// Successful protocol commands; connection setup is not an operation.
    pub fn ok(&self) -> u64 {
        self.commands.iter().filter(|(n, _)| **n != "CONNECT").map(|(_, c)| c.ok).sum()
    }

    pub fn protocol_errors(&self) -> u64 {
        self.commands.values().map(|c| c.protocol_errors).sum()
    }

    pub fn io_errors(&self) -> u64 {
        self.commands.values().map(|c| c.io_errors).sum()
    }

    pub fn timeouts(&self) -> u64 {
        self.commands.values().map(|c| c.timeouts).sum()
    }

    pub fn all_latency(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for (_, c) in self.commands.iter().filter(|(n, _)| **n != "CONNECT") {
            merge_histogram(&mut h, &c.latency);
        }
        h
    }

    /// True when something was done and nothing failed.
    pub fn clean(&self) -> bool {
        self.ok() > 0 && self.protocol_errors() == 0 && self.io_errors() == 0 && self.timeouts() == 0
    }

    /// JSON report: `ops_per_s` counts successful commands (tagged OK /
    /// +OK) per second of wall time.
    pub fn json(&self, mode: &str, config: Value, elapsed: Duration, extra: Value) -> Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let commands: serde_json::Map<String, Value> = self
            .commands
            .iter()
            .map(|(name, c)| {
                (
                    (*name).to_owned(),
                    json!({
                        "ok": c.ok,
                        "protocol_errors": c.protocol_errors,
                        "io_errors": c.io_errors,
                        "timeouts": c.timeouts,
                        "ops_per_s": round(c.ok as f64 / secs, 3),
                        "latency_ms": Percentiles::of(&c.latency),
                    }),
                )
            })
            .collect();
        json!({
            "tool": "varan-loadtest",
            "version": env!("CARGO_PKG_VERSION"),
            "mode": mode,
            "config": config,
            "elapsed_s": round(secs, 6),
            "ops": self.ok(),
            "ops_per_s": round(self.ok() as f64 / secs, 3),
            "protocol_errors": self.protocol_errors(),
            "io_errors": self.io_errors(),
            "timeouts": self.timeouts(),
            "connections": self.connections,
            "bytes_fetched": self.bytes_fetched,
            "latency_ms": Percentiles::of(&self.all_latency()),
            "commands": commands,
            "failures": self.failures.entries(),
            "extra": extra,
        })
    }

    pub fn human(&self, headline: &str, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let _ = writeln!(out, "{headline}");
        let _ = writeln!(
            out,
            "ops {}  {:.1} ops/s  protocol errors {}  io errors {}  timeouts {}  connections {}  elapsed {:.3} s",
            self.ok(),
            self.ok() as f64 / secs,
            self.protocol_errors(),
            self.io_errors(),
            self.timeouts(),
            self.connections,
            secs
        );
        let _ = writeln!(out, "{:<10} {:>9} {:>7} {:>9} {:>9} {:>9}", "command", "ok", "errors", "p50 ms", "p99 ms", "max ms");
        for (name, c) in &self.commands {
            let p = Percentiles::of(&c.latency);
            let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
            let _ = writeln!(out, "{:<10} {:>9} {:>7} {:>9} {:>9} {:>9}", name, c.ok, c.protocol_errors + c.io_errors + c.timeouts, f(p.p50), f(p.p99), f(p.max));
        }
        let entries = self.failures.entries();
        if !entries.is_empty() {
            let _ = writeln!(out, "failure reasons (most frequent first):");
            for e in entries.iter().take(10) {
                let _ = writeln!(out, "  {:>8}  {}", e.count, e.reason);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges() {
        let mut a = OpStats::default();
        a.record("FETCH", Duration::from_micros(500), &Ok(()));
        a.record("FETCH", Duration::from_micros(1500), &Ok(()));
        a.record("STORE", Duration::from_micros(5), &Err(OpError::Rejected("NO [UID 12] x".into())));
        let mut b = OpStats::default();
        b.record("STORE", Duration::from_micros(5), &Err(OpError::Rejected("NO [UID 13] x".into())));
        b.record("LOGIN", Duration::from_micros(5), &Err(OpError::Timeout));
        b.record("LOGIN", Duration::from_micros(5), &Err(OpError::Io("reset".into())));
        b.connections = 3;
        a.merge(b);
        assert_eq!((a.ok(), a.protocol_errors(), a.timeouts(), a.io_errors(), a.connections), (2, 2, 1, 1, 3));
        assert!(!a.clean());
        // Digits are masked so both STORE failures share one reason.
        assert_eq!(a.failures.entries()[0].count, 2);
        let j = a.json("imap", json!({}), Duration::from_secs(2), Value::Null);
        assert_eq!(j["ops"], 2);
        assert_eq!(j["ops_per_s"], 1.0);
        assert_eq!(j["commands"]["FETCH"]["latency_ms"]["max"], 1.5);
        assert_eq!(j["commands"]["STORE"]["protocol_errors"], 2);
        assert!(a.human("h", Duration::from_secs(2)).contains("protocol errors 2"));
        let mut clean = OpStats::default();
        assert!(!clean.clean(), "nothing done is not a clean run");
        clean.record("NOOP", Duration::from_micros(1), &Ok(()));
        assert!(clean.clean());
    }
}
