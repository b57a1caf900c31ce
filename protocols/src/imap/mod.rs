//! IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) server side.
//!
//! - [`wire`]: writing atoms, quoted strings and literals.
//!
//! See `docs/design/imap.md` for how the parser, the session and the
//! mail store fit together.

pub mod wire;
