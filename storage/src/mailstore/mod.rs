//! Backends of the mail-store contract ([`varan_core::mailstore`]).
//!
//! * [`MaildirStore`]: the Dovecot-compatible Maildir++ backend. A Maildir
//!   written by Dovecot 2.3 opens in place with its UIDs, UIDVALIDITY,
//!   flags and keywords, and Dovecot can still read it after Varan wrote to
//!   it. The split follows Dovecot's lib-storage maildir backend:
//!   [`filename`] (flags in file names), [`uidlist`] (`dovecot-uidlist`
//!   and its dotlock), [`keywords`] (`dovecot-keywords`), [`index`]
//!   (Varan's own `varan-index`: modseqs and the expunge log), `sync`
//!   (noticing what changed on disk), `save` (append and copy), `update`
//!   (flags and expunge), `user` (the folder list) and `store` (the shared
//!   handle registry).
//! * [`MemoryStore`]: the in-memory reference implementation, for session
//!   transcript tests.
//! * `conformance` (tests, or the `conformance` feature): the contract's
//!   test suite, run against both.
//!
//! ## Files of a Maildir mailbox
//!
//! | file | owner | format |
//! | --- | --- | --- |
//! | `cur/<base>:2,<flags>` | shared | a message, LF line endings, mtime = INTERNALDATE |
//! | `dovecot-uidlist` | shared (dotlock `dovecot-uidlist.lock`) | version 3, see [`uidlist`] |
//! | `dovecot-keywords` | shared | `<index> <name>` lines, see [`keywords`] |
//! | `varan-index` | Varan | modseqs, sizes, dates, expunge log, see [`index`] |
//! | `varan-index.open` | Varan | the reserved modseq ceiling while the mailbox is open |
//!
//! Per user: `subscriptions` (Dovecot's V2 format), `maildirsize` (quota),
//! `varan-special-use` (special-use attributes given at CREATE).

pub mod filename;
mod fsutil;
pub mod index;
pub mod keywords;
mod mailbox;
mod memory;
pub mod names;
mod notify;
mod save;
pub mod store;
mod sync;
pub mod uidlist;
mod update;
mod user;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;

pub use fsutil::Stamp;
pub use mailbox::MaildirMailbox;
pub use memory::{MemoryStore, MemoryStoreOptions};
pub use store::MaildirStore;
pub use user::MaildirUser;

/// Messages one mailbox may hold (index entries); beyond it appends fail
/// with `Limit` and a sync leaves further files without UIDs.
pub const MESSAGES_PER_MAILBOX_MAX: usize = 1_000_000;
/// Folders one user may have (directories, including non-selectable ones).
pub const FOLDERS_PER_USER_MAX: usize = 10_000;
/// Expunges remembered per mailbox for `changes_since` (QRESYNC); older
/// ones make `expunged_incomplete` true.
pub const EXPUNGE_LOG_MAX: usize = 10_000;
/// Largest `dovecot-uidlist` read (about 100 bytes per message).
pub const UIDLIST_BYTES_MAX: u64 = 256 << 20;
/// Largest `varan-index` read.
pub const INDEX_BYTES_MAX: u64 = 256 << 20;
/// Largest small control file read (`dovecot-keywords`, `subscriptions`,
/// `varan-special-use`, `varan-index.open`).
pub const CONTROL_FILE_BYTES_MAX: u64 = 1 << 20;
/// Default largest message accepted by `append` (bytes with CRLF).
pub const MESSAGE_BYTES_DEFAULT_MAX: u64 = 64 << 20;

/// Settings of a [`MaildirStore`].
#[derive(Debug, Clone)]
pub struct MaildirStoreOptions {
    /// Largest message `append`/`copy_to` accept (RFC822.SIZE), `Limit` beyond.
    pub message_bytes_max: u64,
    /// Byte quota written into a user's `maildirsize` when it has none (or
    /// a different one). `None`: leave `maildirsize` as it is (a missing
    /// file means unlimited).
    pub quota_bytes: Option<u64>,
    /// Messages per mailbox ([`MESSAGES_PER_MAILBOX_MAX`] by default).
    pub messages_max: usize,
    /// Folders per user ([`FOLDERS_PER_USER_MAX`] by default).
    pub folders_max: usize,
    /// fsync message files, `cur/` and `dovecot-uidlist` before an append
    /// or a new UID is reported (on by default; tests may turn it off).
    pub fsync: bool,
    /// Mailboxes kept loaded after their last session let go of them
    /// (at most [`store::WARM_MAILBOXES_MAX`]; 0 by default, the server
    /// uses the maximum). The handles keep the store alive, so a store
    /// with warm mailboxes is meant to live as long as the process.
    pub warm_mailboxes: usize,
}

impl Default for MaildirStoreOptions {
    fn default() -> Self {
        Self {
            message_bytes_max: MESSAGE_BYTES_DEFAULT_MAX,
            quota_bytes: None,
            messages_max: MESSAGES_PER_MAILBOX_MAX,
            folders_max: FOLDERS_PER_USER_MAX,
            fsync: true,
            warm_mailboxes: 0,
        }
    }
}
