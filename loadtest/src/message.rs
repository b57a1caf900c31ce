//! Test message generator.
//!
//! Every message is a function of `(seed, sequence number)`: recipients and
//! body text are reproducible with `--seed` no matter which connection ends up
//! sending a given message. Only `Date` and the per-run token inside
//! `Message-ID` vary between runs, so servers that deduplicate on Message-ID
//! never drop messages from a repeated run.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};

/// Longest body line we generate (RFC 5322 recommends at most 78 characters
/// per line; 76 leaves room for quoted-printable style tooling downstream).
pub const MAX_BODY_LINE: usize = 76;
/// Bytes per line on the wire including CRLF.
const MAX_LINE_BYTES: usize = MAX_BODY_LINE + 2;
/// Number of distinct pre-generated body lines to draw from.
const POOL_LINES: usize = 512;

const WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "mail",
    "queue",
    "relay",
    "mailbox",
    "2025",
    "42",
    "x-ray",
    "a.b.c",
    "(note)",
    "50%",
    "#tag",
    "key=value",
    "[ok]",
    "user@example.test",
    "~tilde",
    "^caret",
    "semi;colon",
];

/// Lines that start with '.' and therefore must be dot-stuffed on the wire.
/// The lone "." is the case that truncates a message if stuffing is wrong.
const DOT_LINES: &[&str] =
    &[".", "..", "...", ". a line that starts with a dot and a space", ".hidden-file-style line", "..double dot at the start", ". .space and dot after a dot"];

/// What to generate; built from the command line.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    /// Target size of the message as stored (headers + body, CRLF line ends,
    /// before dot-stuffing).
    pub size: usize,
    pub from: String,
    pub users: u64,
    pub user_prefix: String,
    pub domain: String,
    pub rcpts_per_message: usize,
    pub seed: u64,
}

/// A message ready to be sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub rcpts: Vec<String>,
    /// Dot-stuffed message followed by the terminating `.\r\n`.
    pub wire: Vec<u8>,
    /// Size of the message before dot-stuffing (what a server stores).
    pub size: usize,
}

pub struct MessageFactory {
    spec: MessageSpec,
    run_token: String,
    msgid_domain: String,
    pool: Vec<String>,
}

impl MessageFactory {
    /// `run_token` must be unique per run; it goes into every Message-ID.
    pub fn new(spec: MessageSpec, run_token: String) -> Self {
        let msgid_domain = match spec.from.rsplit_once('@') {
            Some((_, d)) if !d.is_empty() => d.to_owned(),
            _ => "loadtest.invalid".to_owned(),
        };
        let pool = line_pool(spec.seed);
        MessageFactory { spec, run_token, msgid_domain, pool }
    }

    /// Builds message number `seq` dated now.
    pub fn build(&self, seq: u64) -> Outgoing {
        self.build_at(seq, &rfc5322_date(SystemTime::now()))
    }

    pub fn build_at(&self, seq: u64, date: &str) -> Outgoing {
        let mut rng = StdRng::seed_from_u64(mix(self.spec.seed, seq));
        let rcpts = self.recipients(&mut rng);
        let raw = self.render(seq, &rcpts, date, &mut rng);
        let wire = dot_stuff(&raw);
        Outgoing { rcpts, size: raw.len(), wire }
    }

    /// Message number `seq` as stored (CRLF line ends, not dot-stuffed),
    /// for IMAP APPEND; deterministic for a given spec, token and date.
    pub fn raw_at(&self, seq: u64, date: &str) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(mix(self.spec.seed, seq));
        let rcpts = self.recipients(&mut rng);
        self.render(seq, &rcpts, date, &mut rng)
    }

    /// Distinct random recipients `{prefix}{i}@{domain}`, `i` in `0..users`.
    fn recipients(&self, rng: &mut StdRng) -> Vec<String> {
        let s = &self.spec;
        let pick = |i: u64| format!("{}{}@{}", s.user_prefix, i, s.domain);
        if s.rcpts_per_message == 1 {
            return vec![pick(rng.gen_range(0..s.users))];
        }
        // `index::sample` works on usize; user counts beyond usize::MAX are
        // impossible on the 64-bit targets we support, and validated earlier.
        let users = usize::try_from(s.users).unwrap_or(usize::MAX);
        index::sample(rng, users, s.rcpts_per_message).into_iter().map(|i| pick(i as u64)).collect()
    }

    /// The message as stored: CRLF line ends, not dot-stuffed.
    fn render(&self, seq: u64, rcpts: &[String], date: &str, rng: &mut StdRng) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.spec.size + 64);
        push_line(&mut out, &format!("From: {}", self.spec.from));
        push_to_header(&mut out, rcpts);
        push_line(&mut out, &format!("Subject: varan-loadtest message {seq}"));
        push_line(&mut out, &format!("Date: {date}"));
        push_line(&mut out, &format!("Message-ID: <{}.{seq}@{}>", self.run_token, self.msgid_domain));
        push_line(&mut out, "MIME-Version: 1.0");
        push_line(&mut out, "Content-Type: text/plain; charset=us-ascii");
        push_line(&mut out, "Content-Transfer-Encoding: 7bit");
        push_line(&mut out, "");
        self.fill_body(&mut out, rng);
        out
    }

    /// Appends body lines until `out` is exactly `spec.size` bytes long
    /// (or one byte short in the degenerate case of a 1-byte gap, which a
    /// CRLF-terminated line cannot fill).
    fn fill_body(&self, out: &mut Vec<u8>, rng: &mut StdRng) {
        // Start every body with the classic dot-stuffing traps so each
        // message exercises the server's un-stuffing, size permitting.
        for line in &DOT_LINES[..3] {
            if self.spec.size.saturating_sub(out.len()) > 2 * MAX_LINE_BYTES {
                push_line(out, line);
            }
        }
        // Keep more than two full lines in reserve so the tail below can
        // always be split into lines of legal length.
        while self.spec.size.saturating_sub(out.len()) > 2 * MAX_LINE_BYTES {
            let line = &self.pool[rng.gen_range(0..self.pool.len())];
            push_line(out, line);
        }
        let remaining = self.spec.size.saturating_sub(out.len());
        if remaining > MAX_LINE_BYTES {
            let first = remaining / 2;
            push_filler(out, first - 2, rng);
            push_filler(out, remaining - first - 2, rng);
        } else if remaining >= 2 {
            push_filler(out, remaining - 2, rng);
        }
    }
}

/// Pushes one line of exactly `len` (≤ 76) printable characters.
fn push_filler(out: &mut Vec<u8>, len: usize, rng: &mut StdRng) {
    debug_assert!(len <= MAX_BODY_LINE);
    let mut line = String::with_capacity(MAX_BODY_LINE + 16);
    while line.len() < len {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    line.truncate(len);
    push_line(out, &line);
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `To:` with one address per folded line once the line would exceed 76 chars.
fn push_to_header(out: &mut Vec<u8>, rcpts: &[String]) {
    let mut line = String::from("To: ");
    for (i, rcpt) in rcpts.iter().enumerate() {
        if i > 0 {
            line.push(',');
            if line.len() + 1 + rcpt.len() > MAX_BODY_LINE {
                push_line(out, &line);
                line.clear();
            }
            line.push(' ');
        }
        line.push_str(rcpt);
    }
    push_line(out, &line);
}

/// Deterministic pool of body lines, 1 in 8 of them starting with '.'.
fn line_pool(seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(mix(seed, u64::MAX));
    (0..POOL_LINES)
        .map(|i| {
            if i % 8 == 7 {
                return DOT_LINES[rng.gen_range(0..DOT_LINES.len())].to_owned();
            }
            let target = rng.gen_range(20..=MAX_BODY_LINE);
            let mut line = String::with_capacity(MAX_BODY_LINE);
            loop {
                let word = WORDS[rng.gen_range(0..WORDS.len())];
                let extra = usize::from(!line.is_empty()) + word.len();
                if line.len() + extra > target {
                    break line;
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
            }
        })
        .collect()
}

/// Dot-stuffs `raw` (RFC 5321 §4.5.2) and appends the end-of-data marker.
///
/// A missing final CRLF is added, because the terminator must start a line.
pub fn dot_stuff(raw: &[u8]) -> Vec<u8> {
    // Upper bound: one extra byte per line that starts with '.', which are
    // rare, so reserve a little slack rather than counting exactly.
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 64 + 8);
    let mut at_line_start = true;
    for &b in raw {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !raw.is_empty() && !raw.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// SplitMix64-based mixing so neighbouring sequence numbers get unrelated
/// RNG streams.
fn mix(seed: u64, seq: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix(seed ^ splitmix(seq))
}

/// RFC 5322 date in UTC, e.g. `Thu, 01 Jan 2026 00:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000", DAYS[(days % 7) as usize], day, MONTHS[(month - 1) as usize], year, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard
/// Hinnant's algorithm, restricted to dates after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Reverses [`dot_stuff`]; returns `None` if the terminator is missing.
/// Used by the tests' SMTP server and the round-trip unit tests.
#[cfg(test)]
pub fn dot_unstuff(wire: &[u8]) -> Option<Vec<u8>> {
    let body = wire.strip_suffix(b".\r\n")?;
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize) -> MessageSpec {
        MessageSpec { size, from: "loadtest@loadtest.invalid".into(), users: 1000, user_prefix: "u".into(), domain: "bench.test".into(), rcpts_per_message: 3, seed: 7 }
    }

    #[test]
    fn size_is_accurate() {
        for size in [512, 1000, 1024, 4096, 4097, 10_000, 65_536, 1 << 20] {
            let f = MessageFactory::new(spec(size), "tok".into());
            for seq in [0, 1, 99, 123_456] {
                let m = f.build(seq);
                let diff = m.size.abs_diff(size);
                assert!(diff <= 64.max(size / 100), "size {size} got {}", m.size);
                // Our generator is in fact exact for sizes above the headers.
                assert_eq!(m.size, size, "seq {seq}");
            }
        }
    }

    #[test]
    fn tiny_size_yields_headers_only() {
        let f = MessageFactory::new(spec(10), "tok".into());
        let m = f.build(1);
        assert!(m.size > 10 && m.size < 400);
        assert!(m.wire.ends_with(b"\r\n\r\n.\r\n"));
    }

    #[test]
    fn lines_are_short_printable_and_crlf() {
        let f = MessageFactory::new(spec(64 * 1024), "tok".into());
        let m = f.build(5);
        let raw = dot_unstuff(&m.wire).unwrap();
        assert!(raw.ends_with(b"\r\n"));
        let text = std::str::from_utf8(&raw).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        for line in body.split("\r\n") {
            assert!(line.len() <= MAX_BODY_LINE, "{line:?}");
            assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
        }
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']), "bare CR or LF");
    }

    #[test]
    fn headers_are_present() {
        let f = MessageFactory::new(spec(4096), "run42".into());
        let m = f.build_at(17, "Thu, 01 Jan 2026 00:00:00 +0000");
        let text = String::from_utf8(m.wire.clone()).unwrap();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("From: loadtest@loadtest.invalid\r\nTo: "));
        assert!(head.contains("\r\nSubject: varan-loadtest message 17\r\n"));
        assert!(head.contains("\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n"));
        assert!(head.contains("\r\nMessage-ID: <run42.17@loadtest.invalid>\r\n"));
        assert!(head.contains("\r\nMIME-Version: 1.0\r\n"));
        for rcpt in &m.rcpts {
            assert!(head.contains(rcpt.as_str()));
        }
    }

    #[test]
    fn recipients_are_distinct_reproducible_and_in_range() {
        let mut s = spec(1024);
        s.users = 5;
        s.rcpts_per_message = 5;
        let a = MessageFactory::new(s.clone(), "a".into());
        let b = MessageFactory::new(s, "b".into());
        for seq in 0..50 {
            let (ma, mb) = (a.build(seq), b.build(seq));
            assert_eq!(ma.rcpts, mb.rcpts);
            let mut sorted = ma.rcpts.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, ["u0@bench.test", "u1@bench.test", "u2@bench.test", "u3@bench.test", "u4@bench.test"]);
        }
    }

    #[test]
    fn bodies_are_reproducible_per_seed() {
        let date = "Thu, 01 Jan 2026 00:00:00 +0000";
        let a = MessageFactory::new(spec(8192), "t".into()).build_at(3, date);
        let b = MessageFactory::new(spec(8192), "t".into()).build_at(3, date);
        assert_eq!(a.wire, b.wire);
        let mut other = spec(8192);
        other.seed = 8;
        let c = MessageFactory::new(other, "t".into()).build_at(3, date);
        assert_ne!(a.wire, c.wire);
    }

    #[test]
    fn generated_bodies_contain_stuffed_dot_lines() {
        let m = MessageFactory::new(spec(32 * 1024), "t".into()).build(9);
        // The lone "." line must appear stuffed as ".." and never bare.
        assert!(m.wire.windows(6).any(|w| w == b"\r\n..\r\n"));
        let body = &m.wire[..m.wire.len() - 3];
        assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n"));
        assert_eq!(dot_unstuff(&m.wire).unwrap().len(), m.size);
    }

    #[test]
    fn dot_stuffing_round_trips() {
        let cases: &[&[u8]] = &[b"", b".\r\n", b"..\r\n", b"a\r\n.\r\nb\r\n", b".start\r\nmid.dle\r\n.\r\n", b"no final newline"];
        for raw in cases {
            let wire = dot_stuff(raw);
            assert!(wire.ends_with(b".\r\n"));
            let mut expected = raw.to_vec();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(dot_unstuff(&wire).unwrap(), expected, "{raw:?}");
        }
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
    }

    #[test]
    fn to_header_folds_long_lists() {
        let rcpts: Vec<String> = (0..20).map(|i| format!("user{i}@bench.test")).collect();
        let mut out = Vec::new();
        push_to_header(&mut out, &rcpts);
        let text = String::from_utf8(out).unwrap();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= MAX_BODY_LINE, "{line}");
        }
        let unfolded = text.replace("\r\n ", " ");
        assert_eq!(unfolded, format!("To: {}\r\n", rcpts.join(", ")));
    }

    #[test]
    fn date_format() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600); // 2026-01-01
        assert_eq!(rfc5322_date(t), "Thu, 01 Jan 2026 00:00:00 +0000");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400 + 3723); // 2000-02-29
        assert_eq!(rfc5322_date(t), "Tue, 29 Feb 2000 01:02:03 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}
