//! The outbound queue contract (docs/design/outbound.md).
//!
//! A message accepted for remote recipients becomes a [`QueueEntry`]: its
//! envelope (sender, recipients with their DSN parameters and per-recipient
//! state, scheduling) plus the message content, kept by a [`QueueStore`]
//! (files in the data directory for a single node; PostgreSQL for a cluster
//! later). The shards' queue runners take due entries, try to deliver them
//! and write the outcome back; the CLI and the admin panel list and manage
//! entries through the same trait.
//!
//! Durability: an entry enters the store through the SMTP journal (one
//! group-committed fdatasync before `250`, like local deliveries) and is
//! handed to runners only once the journal segment that carried it is
//! retired, so a crash can never replay an entry that was already
//! delivered. State written back after an attempt may be lost in a crash;
//! the worst outcome is a repeated delivery attempt, never a lost message.

use std::fmt;

/// Identifies an entry across shards and restarts. Displayed (and used in
/// file names) as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl QueueId {
    /// Bits of an id that name the shard whose journal numbered it
    /// (`server.shards` is at most 1,024, `config::caps::SHARDS_MAX`).
    pub const SHARD_BITS: u32 = 16;

    /// The id of the entry created from journal record `record` of shard
    /// `shard`: record ids are unique and increasing per shard journal
    /// across restarts, so (record, shard) is unique on this node. `None`
    /// when `record` needs more than 48 bits (300 years at 29,000 records
    /// per second) or `shard` more than 16.
    pub fn from_journal(record: u64, shard: usize) -> Option<QueueId> {
        let shard = u16::try_from(shard).ok()?;
        if record >> (64 - Self::SHARD_BITS) != 0 {
            return None;
        }
        Some(QueueId(record << Self::SHARD_BITS | u64::from(shard)))
    }

    /// Parses exactly 16 hex digits, as [`QueueId`] displays (file names).
    pub fn parse_strict(s: &str) -> Option<QueueId> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u64::from_str_radix(s, 16).ok().map(QueueId)).flatten()
    }
}

/// Bounds on one entry, shared by the journal record that carries an
/// outbound envelope and the queue's envelope files; a reader refuses
/// anything larger before allocating for it.
pub mod limits {
    /// Recipients of one entry: the hard cap on `smtp.recipients_max`.
    pub const RECIPIENTS_MAX: usize = 100_000;
    /// One address (sender, recipient, submitter). RFC 5321 §4.5.3.1.3
    /// allows 256 octets for a path; SMTPUTF8 addresses and generous
    /// peers get room, and a reader is still bounded.
    pub const ADDRESS_BYTES_MAX: usize = 1024;
    /// Decoded `ORCPT=` (RFC 3461 §4.2: at most 500 characters).
    pub const ORCPT_BYTES_MAX: usize = 500;
    /// Decoded `ENVID=` (RFC 3461 §4.4: at most 100 characters).
    pub const ENVID_BYTES_MAX: usize = 100;
    /// Remote replies, diagnostics and last errors kept per recipient;
    /// longer texts are cut (at a character boundary) when written, since
    /// they come from remote servers.
    pub const TEXT_BYTES_MAX: usize = 1024;
    /// RFC 3463 status codes (`5.1.1`, at most `5.999.999`).
    pub const STATUS_BYTES_MAX: usize = 16;
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn truncate_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl std::str::FromStr for QueueId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(QueueId)
    }
}

/// DSN `NOTIFY=` of one recipient (RFC 3461 §4.1). `None` everywhere means
/// the parameter was absent: failures and delays are reported, success not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `NOTIFY=NEVER`.
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    /// Whether a `NOTIFY=` parameter was given at all.
    pub explicit: bool,
}

impl Notify {
    pub fn on_failure(&self) -> bool {
        !self.never && (!self.explicit || self.failure)
    }
    pub fn on_delay(&self) -> bool {
        !self.never && (!self.explicit || self.delay)
    }
    pub fn on_success(&self) -> bool {
        !self.never && self.explicit && self.success
    }
}

/// DSN `RET=` (RFC 3461 §4.3): what a failure report carries of the
/// original message. Absent: the headers only (our choice, as most MTAs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ret {
    #[default]
    Headers,
    Full,
}

/// Where one recipient stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientState {
    /// Not delivered yet; tried again at the entry's `next_attempt`.
    Pending,
    /// Accepted by the next hop (`reply` is its answer, e.g. `250 2.0.0 Ok`).
    Delivered { at: u64, reply: String },
    /// Given up on: a 5xx, an expiry, or a routing failure. `status` is the
    /// RFC 3463 code reported in the DSN, `diagnostic` the remote reply or
    /// our own explanation.
    Failed { at: u64, status: String, diagnostic: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    /// The forward path as given in RCPT TO (without angle brackets).
    pub address: String,
    /// DSN `ORCPT=` as received, already decoded from xtext, e.g.
    /// `rfc822;user@example.com`.
    pub orcpt: Option<String>,
    pub notify: Notify,
    pub state: RecipientState,
    /// Last temporary failure of this recipient, shown in queue listings.
    pub last_error: Option<String>,
}

/// Body type and extensions the message needs from the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyInfo {
    /// Contains bytes above 127 (`BODY=8BITMIME` was given or content has them).
    pub eight_bit: bool,
    /// `SMTPUTF8` was requested (RFC 6531): addresses or headers in UTF-8.
    pub smtputf8: bool,
    /// Content length in bytes (LF line endings as stored).
    pub size: u64,
}

/// One queued message: envelope, DSN parameters and scheduling. Times are
/// seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: QueueId,
    /// MAIL FROM; empty for the null reverse path `<>` (never bounced to).
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
    /// DSN `ENVID=` decoded from xtext.
    pub envid: Option<String>,
    pub ret: Ret,
    pub body: BodyInfo,
    /// Authenticated submitter (SASL identity), if any: the DKIM signing
    /// domain is chosen from the From header, falling back to this.
    pub submitter: Option<String>,
    pub queued_at: u64,
    /// When the runner may try again; 0 = as soon as possible.
    pub next_attempt: u64,
    /// Delivery attempts so far (whole entry).
    pub attempts: u32,
    /// Whether a delay warning DSN has been sent.
    pub delay_warned: bool,
}

impl QueueEntry {
    pub fn pending(&self) -> impl Iterator<Item = &QueuedRecipient> {
        self.recipients.iter().filter(|r| r.state == RecipientState::Pending)
    }
    /// Every recipient is delivered or failed: the entry can be removed
    /// (after any DSN is queued).
    pub fn finished(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// State shown by listings: `new` = never tried, `deferred` = tried and
/// waiting for a retry (seed 002 §6.2.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    New,
    Deferred,
}

impl QueueEntry {
    pub fn state(&self) -> QueueState {
        if self.attempts == 0 {
            QueueState::New
        } else {
            QueueState::Deferred
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueTotals {
    pub new: u64,
    pub deferred: u64,
    pub bytes: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    NotFound(QueueId),
    Io(String),
    Corrupt(String),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::NotFound(id) => write!(f, "queue entry {id} not found"),
            QueueError::Io(e) => write!(f, "queue I/O error: {e}"),
            QueueError::Corrupt(e) => write!(f, "queue entry damaged: {e}"),
        }
    }
}

impl std::error::Error for QueueError {}

/// The content of a queued message, read from the start (LF line endings;
/// the SMTP client converts to CRLF and dot-stuffs on the wire).
pub type ContentReader = Box<dyn std::io::Read + Send>;

/// Where queue entries live. Every method is synchronous and may block on
/// the file system or a database: shards call it from their blocking pool.
///
/// Runners partition the work: runner `k` of `n` only ever sees entries
/// with `id.0 % n == k`, so two runners never attempt one entry at once.
pub trait QueueStore: Send + Sync {
    /// Entries of partition `k` of `n` due at `now` (next_attempt ≤ now),
    /// oldest first, at most `limit`.
    fn due(&self, partition: (usize, usize), now: u64, limit: usize) -> Result<Vec<QueueEntry>, QueueError>;
    /// The earliest `next_attempt` in partition `k` of `n`, to sleep until.
    fn next_due(&self, partition: (usize, usize)) -> Result<Option<u64>, QueueError>;
    /// `NotFound` when the entry was deleted meanwhile (drop it).
    fn content(&self, id: QueueId) -> Result<ContentReader, QueueError>;
    /// Writes back an entry after an attempt. An entry that is
    /// [`QueueEntry::finished`] is removed with its content. An entry deleted
    /// meanwhile (CLI) stays deleted: `NotFound`.
    fn update(&self, entry: &QueueEntry) -> Result<(), QueueError>;
    /// Adds a message generated here (a DSN to a local sender's remote
    /// address, say), durably before returning. Its id must be new: take
    /// a record id from the shard's journal id source and use
    /// [`QueueId::from_journal`]. Fails if the id exists.
    fn enqueue(&self, entry: &QueueEntry, content: &[u8]) -> Result<(), QueueError>;

    // Management (CLI, admin panel).
    fn list(&self) -> Result<Vec<QueueEntry>, QueueError>;
    fn totals(&self) -> Result<QueueTotals, QueueError>;
    fn get(&self, id: QueueId) -> Result<QueueEntry, QueueError>;
    /// Makes an entry due now. Never undoes a runner's concurrent
    /// `update`; if the runner's write lands last, the attempt it reports
    /// (running at the time of the request) counts as the retry.
    fn retry(&self, id: QueueId) -> Result<(), QueueError>;
    /// Makes every entry due now (flush).
    fn retry_all(&self) -> Result<u64, QueueError>;
    /// Deletes one entry without a DSN.
    fn delete(&self, id: QueueId) -> Result<(), QueueError>;
    /// Deletes every entry that has been tried at least once.
    fn delete_deferred(&self) -> Result<u64, QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_journal_are_unique_per_shard_and_bounded() {
        assert_eq!(QueueId::from_journal(1, 0), Some(QueueId(0x1_0000)));
        assert_eq!(QueueId::from_journal(0x12, 3).map(|i| i.to_string()).as_deref(), Some("0000000000120003"));
        assert_ne!(QueueId::from_journal(5, 1), QueueId::from_journal(5, 2));
        assert_eq!(QueueId::from_journal(1 << 48, 0), None);
        assert_eq!(QueueId::from_journal(1, 70_000), None);
        assert_eq!(QueueId::parse_strict("0000000000120003"), Some(QueueId(0x12_0003)));
        assert_eq!(QueueId::parse_strict("120003"), None);
        assert_eq!(QueueId::parse_strict("+000000000120003"), None);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_text("abc", 5), "abc");
        assert_eq!(truncate_text("aé", 2), "a");
        assert_eq!(truncate_text("aéb", 3), "aé");
    }
}
