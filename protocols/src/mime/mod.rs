//! What IMAP FETCH, SEARCH, SORT and THREAD need from a message: ENVELOPE,
//! BODYSTRUCTURE, body sections, decoded BINARY parts, text matching, base
//! subjects and threading (RFC 9051 §7.5.2, RFC 3516, RFC 5256). Pure
//! functions over the message octets (CRLF line endings), built on
//! `mail-parser`; no I/O.

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
