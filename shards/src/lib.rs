//! # varan-shards
//!
//! The runtime: one glommio executor per core (a *shard*), each binding
//! every listener with SO_REUSEPORT and owning its connections end to end;
//! TLS; the connection drivers that feed bytes to the sans-IO protocol
//! sessions of `varan-protocols` and carry out their actions; the per-shard
//! durability pipeline; signals, reload and graceful shutdown.
//!
//! Boundary: no protocol logic lives here (that is `varan-protocols`) and
//! no on-disk format (that is `varan-storage`). `unsafe` only in `sys`.
#![deny(unsafe_code)]

pub mod auth;
pub mod checks;
pub mod conn;
pub mod delivery;
pub mod dns;
pub mod headers;
pub mod imap;
pub mod live;
pub mod outbound;
pub mod policy;
pub mod pop3;
pub mod probe;
pub mod protect;
pub mod server;
pub mod shard;
pub mod smtp;
pub mod sys;
pub mod tls;
