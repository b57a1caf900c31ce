//! # varan-core
//!
//! The vocabulary every other Varan crate speaks: e-mail addresses and
//! domains, the configuration model with its defaults and hard limits, and
//! the directory (user database) contract with address resolution.
//!
//! Boundary: this crate performs no I/O and knows no runtime. It never opens
//! a socket or a file (configuration text is parsed from a `&str` handed in
//! by the caller), never reads a clock, and never spawns a task.
#![forbid(unsafe_code)]

pub mod address;
pub mod config;
pub mod datetime;
pub mod directory;
pub mod mailstore;
pub mod queue;

pub use address::{AddressError, EmailAddress};
