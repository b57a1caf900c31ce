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

#[derive(Debug)]
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
    fn content(&self, id: QueueId) -> Result<ContentReader, QueueError>;
    /// Writes back an entry after an attempt. An entry that is
    /// [`QueueEntry::finished`] is removed with its content. An entry deleted
    /// meanwhile (CLI) stays deleted: `NotFound`.
    fn update(&self, entry: &QueueEntry) -> Result<(), QueueError>;
    /// Adds a message generated here (a DSN to a local sender's remote
    /// address, say), durably before returning.
    fn enqueue(&self, entry: &QueueEntry, content: &[u8]) -> Result<(), QueueError>;

    // Management (CLI, admin panel).
    fn list(&self) -> Result<Vec<QueueEntry>, QueueError>;
    fn totals(&self) -> Result<QueueTotals, QueueError>;
    fn get(&self, id: QueueId) -> Result<QueueEntry, QueueError>;
    /// Makes an entry due now.
    fn retry(&self, id: QueueId) -> Result<(), QueueError>;
    /// Makes every entry due now (flush).
    fn retry_all(&self) -> Result<u64, QueueError>;
    /// Deletes one entry without a DSN.
    fn delete(&self, id: QueueId) -> Result<(), QueueError>;
    /// Deletes every entry that has been tried at least once.
    fn delete_deferred(&self) -> Result<u64, QueueError>;
}
