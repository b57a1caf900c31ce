//! # varan-storage
//!
//! Everything Varan keeps in files: the per-shard spool journal that makes
//! an accepted message durable before the SMTP `250` ([`journal`],
//! [`spool`], [`recovery`]), the outbound queue in files ([`queue`]), the
//! Dovecot-compatible Maildir++ mailboxes
//! and their quota files ([`maildir`], [`quota`]), password hashes
//! ([`password`]) and the JSON-file user database ([`directory_json`],
//! with [`verify_cache`] in front of it).
//!
//! Boundary: this crate owns files on disk and the user database. It never
//! parses a protocol (SMTP, IMAP, MIME are `varan-protocols`' job; message
//! bytes pass through here opaque), never opens a socket, and knows no
//! async runtime. All of it is synchronous `std::fs` code: the glommio
//! shards in `varan-shards` call the slow parts (anything that fsyncs,
//! password checks) on their blocking pool, so every function may run on
//! any thread and every stateful type is `Send`. Time is passed in where
//! it matters (`now` parameters), which keeps the code testable.
//!
//! Every file on disk is treated as untrusted input: torn journal tails,
//! damaged quota files, malformed password hashes and hand-edited user
//! databases produce errors or warnings, never panics. `unsafe` is
//! confined to the two system calls in the private `sys` module.
//!
//! The on-disk formats are described in `storage/README.md`.
#![deny(unsafe_code)]

pub mod bans;
mod codec;
pub mod directory_json;
pub mod dkim;
pub mod greylist;
pub mod journal;
pub mod maildir;
pub mod mailstore;
pub mod password;
pub mod queue;
pub mod queue_memory;
pub mod quota;
pub mod recovery;
pub mod spool;
#[allow(unsafe_code)]
mod sys;
pub mod verify_cache;

#[cfg(test)]
mod testutil;

pub use directory_json::{JsonDbError, JsonDirectory, LoadError};
pub use journal::{Content, Delivery, IdSource, Journal, JournalRecord, SegmentId};
pub use maildir::{deliver, is_delivered, sync_filesystem, FsSyncer, MaildirLayout, SpecialFolders};
pub use queue::{queue_dir, FileQueue};
pub use quota::{quota_add, quota_usage, QuotaLimit};
pub use recovery::{redeliver, RecoveryReport};
pub use spool::Spool;
pub use verify_cache::VerifyCache;
