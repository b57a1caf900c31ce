//! IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) server side.
//!
//! - [`wire`]: writing atoms, quoted strings and literals.
//! - [`framer`]: splitting the input stream into whole commands (literals, limits).
//! - [`command`]: the command AST, produced by [`parse_command`].
//! - [`parse`]: the command parser (RFC 9051 §9 grammar plus extensions).
//! - [`sequence`]: sequence sets (`1:3,5,*`, `$`), resolution and compact rendering.
//! - [`date`]: SEARCH dates and APPEND/INTERNALDATE date-times.
//! - [`mutf7`]: modified UTF-7 mailbox names (RFC 3501 §5.1.3).
//! - [`response`]: status responses and response codes.
//! - [`session`]: the server session executing commands against the mail store.
//!
//! See `docs/design/imap.md` for how the parser, the session and the
//! mail store fit together.

pub mod command;
pub mod date;
pub mod framer;
pub mod mutf7;
pub mod parse;
pub mod response;
pub mod sequence;
pub mod session;
pub mod wire;

#[cfg(test)]
mod tests;

pub use command::*;
pub use framer::{Frame, Framer, FramerLimits, Rejection};
pub use parse::{parse_command, ParseError, ParseErrorKind};
pub use response::{write_status, ResponseCode, Status};
pub use sequence::{SeqNumber, SeqRange, SequenceSet};
