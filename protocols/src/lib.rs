//! # varan-protocols
//!
//! Boundary: sans-IO protocol state machines and parsers. A session takes
//! bytes in and gives replies and actions (check this recipient, verify
//! these credentials, store this message, start TLS) out. This crate never
//! opens a socket or a file, never reads a clock (the driver passes
//! timeouts in), never touches a database, and never buffers a message:
//! content streams through a sink the driver provides. The same sessions
//! are driven by the network glue in `varan-shards`, by the transcript
//! tests in `tests/`, and by the fuzz targets in `fuzz/`.
//!
//! Protocols: [`smtp`] (RFC 5321 server side with PIPELINING, SIZE,
//! 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN, STARTTLS, AUTH).
#![forbid(unsafe_code)]

pub mod dsn;
pub mod imap;
pub mod mime;
pub mod pop3;
pub mod smtp;
