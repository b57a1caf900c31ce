//! # varan-benches
//!
//! Shared helpers for the criterion benchmarks in `benches/benches/` and
//! the end-to-end comparison runner `benches/compare.sh` (see
//! `docs/performance.md`). Everything here builds benchmark inputs in code
//! (no fixture files): deterministic messages in SMTP wire form, a scratch
//! directory under the target directory, and a minimal sans-IO driver for
//! [`varan_protocols::smtp::Session`] that answers every action the way the
//! real driver in `varan-shards` would on the happy path.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use varan_core::config::BareNewlines;
use varan_protocols::smtp::{Action, ListenerKind, PeerInfo, RcptVerdict, Session, SessionConfig, StoreOutcome};

/// A small deterministic generator (SplitMix64), so inputs are identical
/// on every run without a `rand` dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A message as a mail client would send it, in both forms the server sees.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message with LF line endings, as Varan stores it (what the
    /// session writes into its `BodySink`).
    pub lf: Vec<u8>,
    /// The DATA payload on the wire: CRLF line endings, dot-stuffed, with
    /// the terminating `.\r\n` (the CRLF before the dot is the last line's).
    pub wire: Vec<u8>,
}

/// A realistic text message of about `size` bytes in CRLF form: RFC 5322
/// headers, then printable body lines of up to 76 characters, about one in
/// eight starting with a dot (so dot-unstuffing is exercised, as with the
/// load generator).
pub fn message(size: usize, seed: u64) -> Message {
    let mut rng = SplitMix::new(seed);
    let mut crlf = String::with_capacity(size + 128);
    crlf.push_str("Return-Path: <sender@example.org>\r\n");
    crlf.push_str("From: Sender <sender@example.org>\r\n");
    crlf.push_str("To: u42@bench.test\r\n");
    crlf.push_str(&format!("Subject: benchmark message {seed}\r\n"));
    crlf.push_str("Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n");
    crlf.push_str(&format!("Message-ID: <{seed}.bench@example.org>\r\n"));
    crlf.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ,;:-";
    while crlf.len() + 2 < size {
        let remaining = size - crlf.len() - 2;
        let len = (20 + rng.below(57) as usize).min(remaining);
        let mut line = String::with_capacity(len);
        for i in 0..len {
            if i == 0 && rng.below(8) == 0 {
                line.push('.');
            } else {
                line.push(ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char);
            }
        }
        crlf.push_str(&line);
        crlf.push_str("\r\n");
    }
    let lf = crlf.replace("\r\n", "\n").into_bytes();
    let mut wire = Vec::with_capacity(crlf.len() + crlf.len() / 64 + 8);
    for line in crlf.split_inclusive("\r\n") {
        if line.starts_with('.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line.as_bytes());
    }
    wire.extend_from_slice(b".\r\n");
    Message { lf, wire }
}

/// Session settings as `varan quickstart` writes them for the MX listener,
/// with room for the 1 MB benchmark message.
pub fn session_config() -> SessionConfig {
    SessionConfig {
        hostname: "mail.bench.test".into(),
        kind: ListenerKind::Mx,
        tls_available: true,
        auth_without_tls: false,
        message_size_max: 30_000_000,
        recipients_max: 1000,
        command_line_max: 4096,
        commands_max: 100_000,
        errors_max: 10,
        auth_failures_max: 3,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
        check_sender: false,
        bare_newlines: BareNewlines::Normalize,
    }
}

pub fn peer() -> PeerInfo {
    let remote: SocketAddr = "127.0.0.1:40000".parse().expect("literal address");
    let local: SocketAddr = "127.0.0.1:25".parse().expect("literal address");
    PeerInfo { remote, local }
}

/// One complete pipelined SMTP session as the client sends it: EHLO, then
/// MAIL/RCPT/DATA in one group (RFC 2920), the content, QUIT. Fed to the
/// session all at once or in reads of a fixed size, this is what the
/// driver sees from a PIPELINING client (the 354 wait costs no parsing).
pub fn pipelined_transaction(msg: &Message, recipients: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(msg.wire.len() + 256);
    t.extend_from_slice(b"EHLO client.example.org\r\n");
    t.extend_from_slice(format!("MAIL FROM:<sender@example.org> SIZE={} BODY=8BITMIME\r\n", msg.wire.len()).as_bytes());
    for r in 0..recipients {
        t.extend_from_slice(format!("RCPT TO:<u{r}@bench.test>\r\n").as_bytes());
    }
    t.extend_from_slice(b"DATA\r\n");
    t.extend_from_slice(&msg.wire);
    t.extend_from_slice(b"QUIT\r\n");
    t
}

/// Many commands and no content: EHLO, then `rounds` ×
/// (MAIL with parameters, `rcpts` × RCPT with DSN parameters, RSET), QUIT.
/// Returns the bytes and the number of commands.
pub fn pipelined_commands(rounds: usize, rcpts: usize) -> (Vec<u8>, usize) {
    let mut t = Vec::new();
    let mut n = 0;
    t.extend_from_slice(b"EHLO client.example.org\r\n");
    n += 1;
    for i in 0..rounds {
        t.extend_from_slice(format!("MAIL FROM:<bounce+{i}@lists.example.org> SIZE=4096 BODY=8BITMIME RET=HDRS ENVID=abc{i}\r\n").as_bytes());
        n += 1;
        for r in 0..rcpts {
            t.extend_from_slice(format!("RCPT TO:<User.{r}@Bench.Test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;User.{r}@Bench.Test\r\n").as_bytes());
            n += 1;
        }
        t.extend_from_slice(b"RSET\r\n");
        n += 1;
    }
    t.extend_from_slice(b"QUIT\r\n");
    n += 1;
    (t, n)
}

/// What one driven session produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriveStats {
    pub messages: usize,
    pub recipients: usize,
    pub output_bytes: usize,
    pub closed: bool,
}

/// Drives a fresh session over `input`, presenting at most `read` new
/// octets at a time (like the shard driver's 16 KiB reads; `usize::MAX`
/// for everything at once). Accepts every recipient and stores every
/// message. `sink` receives the content (LF line endings).
pub fn drive(config: &Rc<SessionConfig>, input: &[u8], read: usize, sink: &mut Vec<u8>, out: &mut Vec<u8>) -> DriveStats {
    let mut s = Session::new(Rc::clone(config), peer(), None);
    let mut stats = DriveStats::default();
    let mut pos = 0;
    let mut end = read.min(input.len());
    let mut queue_id = 0u64;
    loop {
        let n = s.receive(&input[pos..end], sink);
        pos += n;
        out.clear();
        s.take_output(out);
        stats.output_bytes += out.len();
        match s.poll_action() {
            Some(Action::CheckRecipient { .. }) => {
                stats.recipients += 1;
                s.recipient_checked(RcptVerdict::Accept);
            }
            Some(Action::MessageComplete) => {
                stats.messages += 1;
                queue_id += 1;
                s.message_stored(StoreOutcome::Accepted { queue_id: format!("Q{queue_id}") });
            }
            Some(Action::Close) => {
                stats.closed = true;
                break;
            }
            Some(other) => panic!("unexpected action {other:?}"),
            None if s.is_closed() => {
                stats.closed = true;
                break;
            }
            None if n == 0 => {
                if end == input.len() {
                    break;
                }
                // Everything presented is consumed or waits for more: "read".
                end = end.saturating_add(read).min(input.len());
            }
            None => {}
        }
    }
    stats
}

static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// A directory removed on drop, under cargo's per-target scratch directory
/// (on the same file system as the build, i.e. a real disk, not tmpfs),
/// or under the system temp directory when run outside cargo.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let base =
            std::env::var_os("VARAN_BENCH_TMPDIR").map(PathBuf::from).unwrap_or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir));
        let n = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("varan-bench-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch directory");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_size_and_stuffing() {
        let m = message(4096, 1);
        let crlf_len = m.lf.len() + m.lf.iter().filter(|&&b| b == b'\n').count();
        assert!((4090..=4096).contains(&crlf_len), "{crlf_len}");
        assert!(m.wire.ends_with(b"\r\n.\r\n"));
        assert!(m.wire.windows(3).any(|w| w == b"\n.."), "no dot-stuffed line");
    }

    #[test]
    fn transaction_is_accepted_in_any_read_size() {
        let config = Rc::new(session_config());
        let m = message(100_000, 7);
        let input = pipelined_transaction(&m, 3);
        for read in [usize::MAX, 16 << 10, 1000, 7] {
            let (mut sink, mut out) = (Vec::new(), Vec::new());
            let st = drive(&config, &input, read, &mut sink, &mut out);
            assert_eq!(st, DriveStats { messages: 1, recipients: 3, output_bytes: st.output_bytes, closed: true }, "read {read}");
            assert_eq!(sink, m.lf, "read {read}");
        }
    }

    #[test]
    fn commands_are_all_answered() {
        let config = Rc::new(session_config());
        let (input, n) = pipelined_commands(10, 3);
        let (mut sink, mut out) = (Vec::new(), Vec::new());
        let st = drive(&config, &input, usize::MAX, &mut sink, &mut out);
        assert_eq!(n, 1 + 10 * 5 + 1);
        assert_eq!(st.recipients, 30);
        assert!(st.closed);
    }
}
