//! What IMAP FETCH, SEARCH, SORT and THREAD need from a message: ENVELOPE,
//! BODYSTRUCTURE, body sections, decoded BINARY parts, text matching, base
//! subjects and threading (RFC 9051 §7.5.2, RFC 3516, RFC 5256). Pure
//! functions over the message octets (CRLF line endings; bare LF is
//! tolerated), no I/O.
//!
//! - [`summarize`]: everything cacheable in one parse ([`Summary`]).
//! - [`section()`], [`partial`], [`binary()`]: FETCH BODY[…] and BINARY[…].
//! - [`header_contains`], [`body_contains`], [`text_contains`],
//!   [`sent_date`]: SEARCH.
//! - [`SortFields`], [`base_subject`]: SORT; [`ThreadFields`],
//!   [`thread_orderedsubject`], [`thread_references`], [`write_threads`]:
//!   THREAD.
//!
//! The MIME structure is parsed here (not by `mail-parser`, whose tree
//! decodes every body eagerly and nests enclosed messages recursively):
//! exact IMAP octet ranges, nothing decoded until asked, and hard limits
//! ([`MIME_DEPTH_MAX`], [`MIME_PARTS_MAX`], [`PARAMS_MAX`],
//! [`ADDRESSES_MAX`], [`ENCODED_WORD_BYTES_MAX`], [`REFERENCES_MAX`],
//! [`THREAD_ANCESTRY_MAX`]) so that no input, however hostile, makes work
//! more than linear in its size or recursion deeper than a constant.
//! `mail-parser` supplies the charset tables and the RFC 5322 date parser.
//! No function here panics on any input.

mod address;
mod binary;
mod decode;
mod envelope;
mod header;
mod params;
mod search;
mod section;
mod sort;
mod structure;
mod thread;

#[cfg(test)]
mod tests;

pub use address::ADDRESSES_MAX;
pub use binary::{binary, BinaryError};
pub use decode::ENCODED_WORD_BYTES_MAX;
pub use params::PARAMS_MAX;
pub use search::{body_contains, header_contains, sent_date, text_contains, SentDate};
pub use section::{partial, section};
pub use sort::{base_subject, SortFields};
pub use structure::{MIME_DEPTH_MAX, MIME_PARTS_MAX};
pub use thread::{thread_orderedsubject, thread_references, write_threads, ThreadFields, ThreadInput, ThreadNode, Threads, REFERENCES_MAX, THREAD_ANCESTRY_MAX};

/// Everything cacheable about a message, computed in one parse; the IMAP
/// session caches it per (mailbox, uid). Rendered strings use IMAP4rev1
/// syntax (8-bit values as literals), valid for rev2 clients too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// ENVELOPE, rendered: `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
    pub envelope: Vec<u8>,
    /// BODY (BODYSTRUCTURE without extension data), rendered.
    pub body: Vec<u8>,
    /// BODYSTRUCTURE with extension data, rendered.
    pub bodystructure: Vec<u8>,
    /// Octets of the top-level header including the blank line
    /// (`RFC822.HEADER` / `BODY[HEADER]` size; the rest is `RFC822.TEXT`).
    pub header_len: usize,
    pub sort: SortFields,
    pub thread: ThreadFields,
}

impl Summary {
    /// Heap bytes held, for the cache's byte budget.
    pub fn approx_heap_size(&self) -> usize {
        self.envelope.capacity() + self.body.capacity() + self.bodystructure.capacity() + self.sort.heap_size() + self.thread.heap_size()
    }
}

/// A message whose MIME structure is parsed once, for a FETCH that asks
/// for several sections or BINARY parts of it.
#[derive(Debug)]
pub struct Parsed<'a> {
    tree: structure::Tree<'a>,
}

impl<'a> Parsed<'a> {
    pub fn new(msg: &'a [u8]) -> Self {
        Parsed { tree: structure::parse(msg) }
    }

    /// As [`section()`].
    pub fn section(&self, section: &Section) -> std::borrow::Cow<'a, [u8]> {
        section::section_in(&self.tree, section)
    }

    /// As [`binary()`].
    pub fn binary(&self, part: &[u32]) -> Result<std::borrow::Cow<'a, [u8]>, BinaryError> {
        binary::binary_in(&self.tree, part)
    }
}

/// Parses `msg` once and renders everything FETCH, SORT and THREAD need.
pub fn summarize(msg: &[u8]) -> Summary {
    let tree = structure::parse(msg);
    let root = &tree.entities[0];
    let header = &msg[root.header.clone()];
    let mut envelope = Vec::with_capacity(256);
    envelope::write_envelope(&mut envelope, header);
    let mut body = Vec::with_capacity(128);
    tree.write_body(&mut body, 0, false);
    let mut bodystructure = Vec::with_capacity(192);
    tree.write_body(&mut bodystructure, 0, true);
    let fields = envelope::TopFields::of(header);
    let mut s = Summary { envelope, body, bodystructure, header_len: root.header.len(), sort: SortFields::of(&fields), thread: ThreadFields::of(&fields) };
    s.envelope.shrink_to_fit();
    s.body.shrink_to_fit();
    s.bodystructure.shrink_to_fit();
    s
}

/// A body section specifier (RFC 9051 §6.4.5 `section`): which part, and
/// which piece of it. Shared by the IMAP parser and the renderers here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Part numbers, 1-based (`1.2.3`); empty: the whole message.
    pub part: Vec<u32>,
    pub kind: SectionKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SectionKind {
    /// `BODY[1.2]` or `BODY[]`: the whole part (or message).
    #[default]
    Full,
    /// `HEADER`: the header of the message (or of a message/rfc822 part).
    Header,
    /// `HEADER.FIELDS (A B)`: only these fields (names as given).
    HeaderFields(Vec<String>),
    /// `HEADER.FIELDS.NOT (A B)`: every field but these.
    HeaderFieldsNot(Vec<String>),
    /// `TEXT`: the body without the header.
    Text,
    /// `MIME`: the MIME header of a part (only with a part number).
    Mime,
}
