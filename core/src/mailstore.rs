//! The mail-store contract: the IMAP data model (RFC 9051 §2.3) that every
//! backend (in-memory, Maildir, later PostgreSQL) implements and that the
//! IMAP and POP3 sessions speak. One conformance suite
//! (`varan-storage`'s `mailstore::conformance`) runs against every backend.
//!
//! All calls are synchronous and may block on files or a database; the
//! shards call them on their blocking pool. Every type is `Send + Sync`:
//! one [`Mailbox`] handle is shared by all sessions that have that mailbox
//! open, on any shard, which is how they see each other's changes.
//!
//! Mailbox names here are UTF-8 with `/` as the hierarchy separator and
//! `INBOX` (any case) for the inbox; protocol encodings (modified UTF-7)
//! are the protocol's business, on-disk encodings the backend's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::EmailAddress;

/// RFC 9051 §2.3.1.1: 32-bit, strictly ascending within a mailbox, never reused
/// while UIDVALIDITY stays the same.
pub type Uid = u32;
/// RFC 7162: 63-bit positive, grows with every change to a mailbox.
pub type ModSeq = u64;

/// Hierarchy separator of mailbox names in this API and in IMAP.
pub const HIERARCHY_SEPARATOR: char = '/';
/// Longest mailbox name (UTF-8 bytes, whole path) accepted by any backend.
pub const MAILBOX_NAME_BYTES_MAX: usize = 512;
/// Deepest folder hierarchy accepted.
pub const MAILBOX_DEPTH_MAX: usize = 16;
/// Keywords (user flags) a mailbox may define; Dovecot's Maildir limit is 26
/// (letters a–z in file names).
pub const KEYWORDS_MAX: usize = 26;
/// Longest keyword (an IMAP atom).
pub const KEYWORD_BYTES_MAX: usize = 64;

/// A message flag (RFC 9051 §2.3.2). `\Recent` is not stored (IMAP4rev2
/// dropped it; IMAP4rev1 sessions derive it themselves).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    /// A keyword, e.g. `$Forwarded`, `$Junk`, `NonJunk`; compared
    /// case-insensitively (RFC 9051 §2.3.2), stored as first seen.
    Keyword(String),
}

impl Flag {
    /// The IMAP spelling.
    pub fn as_imap(&self) -> &str {
        match self {
            Flag::Seen => "\\Seen",
            Flag::Answered => "\\Answered",
            Flag::Flagged => "\\Flagged",
            Flag::Deleted => "\\Deleted",
            Flag::Draft => "\\Draft",
            Flag::Keyword(k) => k,
        }
    }

    /// Parses an IMAP flag (system flags case-insensitively); `None` for
    /// `\Recent`, other unknown `\` flags, and invalid keywords.
    pub fn from_imap(s: &str) -> Option<Flag> {
        if let Some(system) = s.strip_prefix('\\') {
            return match system.to_ascii_lowercase().as_str() {
                "seen" => Some(Flag::Seen),
                "answered" => Some(Flag::Answered),
                "flagged" => Some(Flag::Flagged),
                "deleted" => Some(Flag::Deleted),
                "draft" => Some(Flag::Draft),
                _ => None,
            };
        }
        let atom_ok = !s.is_empty() && s.len() <= KEYWORD_BYTES_MAX && s.bytes().all(|b| b > b' ' && b < 0x7f && !b"(){%*\"\\]".contains(&b));
        atom_ok.then(|| Flag::Keyword(s.to_owned()))
    }

    pub fn same(&self, other: &Flag) -> bool {
        match (self, other) {
            (Flag::Keyword(a), Flag::Keyword(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// Special-use attributes (RFC 6154).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Archive,
    Drafts,
    Junk,
    Sent,
    Trash,
}

impl SpecialUse {
    pub fn as_imap(self) -> &'static str {
        match self {
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
        }
    }

    pub fn from_imap(s: &str) -> Option<SpecialUse> {
        match s.to_ascii_lowercase().as_str() {
            "\\archive" => Some(SpecialUse::Archive),
            "\\drafts" => Some(SpecialUse::Drafts),
            "\\junk" => Some(SpecialUse::Junk),
            "\\sent" => Some(SpecialUse::Sent),
            "\\trash" => Some(SpecialUse::Trash),
            _ => None,
        }
    }
}

/// One mailbox in a user's folder list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Full UTF-8 name, `/`-separated; the inbox is `INBOX`.
    pub name: String,
    pub special_use: Option<SpecialUse>,
    /// `false` for a hierarchy level that exists only because it has
    /// children (IMAP `\Noselect` / `\NonExistent`).
    pub selectable: bool,
    pub has_children: bool,
    pub subscribed: bool,
}

/// What a message looks like in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: Uid,
    /// No duplicates; order not significant.
    pub flags: Vec<Flag>,
    pub modseq: ModSeq,
    /// RFC822.SIZE: octets with CRLF line endings.
    pub size: u64,
    /// INTERNALDATE, seconds since the Unix epoch (UTC).
    pub internal_date: i64,
}

impl MessageMeta {
    pub fn has(&self, flag: &Flag) -> bool {
        self.flags.iter().any(|f| f.same(flag))
    }
}

/// Mailbox-wide numbers (STATUS, SELECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: ModSeq,
    pub messages: u32,
    pub unseen: u32,
    pub deleted: u32,
    /// Sum of RFC822.SIZE of all messages (STATUS SIZE, RFC 8438).
    pub size: u64,
}

/// What changed since a modseq: every message whose modseq is greater
/// (new ones and ones whose flags changed), in UID order, and the UIDs
/// expunged after it, ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub status: MailboxStatus,
    pub changed: Vec<MessageMeta>,
    pub expunged: Vec<Uid>,
    /// The backend no longer remembers expunges that old (its log is
    /// bounded): the caller must compare its whole UID list with
    /// [`Mailbox::uids`] instead of trusting `expunged`.
    pub expunged_incomplete: bool,
}

/// Result of a conditional flag change (RFC 7162 §3.1.3 UNCHANGEDSINCE).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlagUpdate {
    /// Messages whose flags (and modseq) changed, with their new state.
    pub updated: Vec<MessageMeta>,
    /// UIDs refused because their modseq was above `unchanged_since`.
    pub modified: Vec<Uid>,
}

/// Storage usage of one user (RFC 9208 STORAGE and MESSAGE resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    pub used_bytes: u64,
    pub messages: u64,
    /// `None`: unlimited.
    pub limit_bytes: Option<u64>,
}

#[derive(Debug)]
pub enum StoreError {
    /// No such mailbox (IMAP `NO [NONEXISTENT]`).
    NoMailbox,
    /// The mailbox exists already (`NO [ALREADYEXISTS]`).
    AlreadyExists,
    /// The name cannot be used: bad characters, too long, too deep
    /// (`NO [CANNOT]` with the text).
    BadName(String),
    /// The operation is not allowed on this mailbox, e.g. deleting INBOX
    /// (`NO [CANNOT]` with the text).
    Cannot(String),
    /// Quota exceeded (`NO [OVERQUOTA]`).
    OverQuota,
    /// A limit of the backend (message too large, too many keywords):
    /// `NO [LIMIT]` with the text.
    Limit(String),
    /// The message is gone (expunged by another session meanwhile).
    Expunged,
    /// Storage failure; logged, the client gets `NO [SERVERBUG]`/`[UNAVAILABLE]`.
    Io(std::io::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoMailbox => f.write_str("no such mailbox"),
            StoreError::AlreadyExists => f.write_str("mailbox already exists"),
            StoreError::BadName(s) | StoreError::Cannot(s) | StoreError::Limit(s) => f.write_str(s),
            StoreError::OverQuota => f.write_str("quota exceeded"),
            StoreError::Expunged => f.write_str("message was expunged"),
            StoreError::Io(e) => write!(f, "storage error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A future that resolves when a mailbox changed (see [`Mailbox::changed`]).
pub type ChangeFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A backend: hands out the stores of users.
pub trait MailStore: Send + Sync {
    /// The mailboxes of `account`, creating its INBOX and special folders
    /// on first use.
    fn user(&self, account: &EmailAddress) -> StoreResult<Arc<dyn UserStore>>;
}

/// One user's mailboxes.
pub trait UserStore: Send + Sync {
    /// Every mailbox, INBOX first, then by name; includes non-selectable
    /// parents of nested mailboxes.
    fn list(&self) -> StoreResult<Vec<MailboxEntry>>;
    /// Creates `name` and any missing parents (RFC 9051 §6.3.4).
    fn create(&self, name: &str, special_use: Option<SpecialUse>) -> StoreResult<()>;
    /// Deletes a mailbox with its messages; INBOX cannot be deleted. A
    /// mailbox with children loses only its messages and becomes
    /// non-selectable (RFC 9051 §6.3.5).
    fn delete(&self, name: &str) -> StoreResult<()>;
    /// Renames a mailbox and its children; renaming INBOX moves its
    /// messages to the new mailbox and leaves INBOX empty (RFC 9051 §6.3.6).
    fn rename(&self, from: &str, to: &str) -> StoreResult<()>;
    fn set_subscribed(&self, name: &str, subscribed: bool) -> StoreResult<()>;
    /// The shared handle of a mailbox: every caller gets the same object
    /// while any holds it.
    fn open(&self, name: &str) -> StoreResult<Arc<dyn Mailbox>>;
    fn quota(&self) -> StoreResult<QuotaUsage>;
}

/// One mailbox, shared by every session that has it open.
pub trait Mailbox: Send + Sync {
    /// The canonical name (`INBOX` for the inbox).
    fn name(&self) -> &str;
    /// Picks up changes made behind our back (deliveries, other tools,
    /// other processes): assigns UIDs to new messages, notices removed
    /// files and changed flags. Cheap when nothing changed.
    fn sync(&self) -> StoreResult<()>;
    fn status(&self) -> StoreResult<MailboxStatus>;
    /// Changes since `modseq` (0: everything), as of the last `sync`.
    fn changes_since(&self, modseq: ModSeq) -> StoreResult<Changes>;
    /// All UIDs, ascending.
    fn uids(&self) -> StoreResult<Vec<Uid>>;
    /// The message with CRLF line endings, exactly RFC822.SIZE octets.
    fn read(&self, uid: Uid) -> StoreResult<Arc<[u8]>>;
    /// Stores a message (CRLF line endings); durable when this returns.
    /// Returns its UID. `internal_date`: `None` means now.
    fn append(&self, message: &[u8], flags: &[Flag], internal_date: Option<i64>) -> StoreResult<Uid>;
    /// Changes flags of the given UIDs (missing ones are skipped). With
    /// `unchanged_since`, messages modified after it are left alone and
    /// reported in [`FlagUpdate::modified`].
    fn store(&self, uids: &[Uid], op: FlagOp, flags: &[Flag], unchanged_since: Option<ModSeq>) -> StoreResult<FlagUpdate>;
    /// Copies messages (flags included) into `dest`; returns (source UID,
    /// destination UID) pairs in source order, for COPYUID (RFC 4315).
    fn copy_to(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>>;
    /// Like `copy_to`, then expunges the sources (RFC 6851).
    fn move_to(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>>;
    /// Removes messages that have `\Deleted`; only among `uids` if given
    /// (UID EXPUNGE). Returns the removed UIDs, ascending.
    fn expunge(&self, uids: Option<&[Uid]>) -> StoreResult<Vec<Uid>>;
    /// A counter that grows with every change; cheap.
    fn version(&self) -> u64;
    /// Resolves as soon as `version()` differs from `seen` (at once if it
    /// already does). Wakes every waiter on every shard.
    fn changed(&self, seen: u64) -> ChangeFuture;
    /// Backend-specific downcast hook (a Maildir copy between two Maildir
    /// mailboxes can hard-link instead of reading and writing).
    fn as_any(&self) -> &dyn std::any::Any;
}
