//! Tests across the IMAP modules: the parser's command table, error
//! classes, and framer + parser together.

mod parse;
