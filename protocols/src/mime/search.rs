//! SEARCH text and date keys (RFC 9051 §6.4.4): substring matching after
//! decoding, case-insensitively.
//!
//! Headers are matched on their unfolded values with RFC 2047 encoded words
//! decoded; bodies on the text parts' content with the transfer encoding
//! removed and the charset converted to UTF-8 (HTML reduced to its text).
//! Both sides are folded with [`decode::fold`]. Non-text parts
//! (attachments, images) are not searched.

use memchr::memmem;

use super::decode::{self, fold, rfc2047};
use super::header::{self, header_len, unfold};
use super::structure::{self, Entity, Kind};

/// The sent date of a message, from its `Date:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SentDate {
    /// The instant, in seconds since the Unix epoch (UTC): what SORT DATE
    /// and THREAD compare (RFC 5256 §2.2).
    pub utc: i64,
    /// The calendar date as written, in the field's own time zone, as days
    /// since 1970-01-01: what SENTBEFORE, SENTON and SENTSINCE compare
    /// ("disregarding time and timezone", RFC 9051 §6.4.4). Compare it with
    /// the search date's day number.
    pub day: i64,
}

/// Parses an RFC 5322 date-time (obsolete forms and comments accepted).
pub(crate) fn parse_date(value: &[u8]) -> Option<SentDate> {
    let v = unfold(value);
    let dt = mail_parser::DateTime::parse_rfc822(&String::from_utf8_lossy(&v))?;
    dt.is_valid().then(|| SentDate { utc: dt.to_timestamp(), day: dt.to_timestamp_local().div_euclid(86_400) })
}

/// The message's sent date (first `Date:` field); `None` when absent or
/// unparsable (SORT then uses the internal date, RFC 5256 §2.2; SEARCH
/// SENT* then matches nothing, as Dovecot does).
pub fn sent_date(msg: &[u8]) -> Option<SentDate> {
    header::find(&msg[..header_len(msg)], "date").and_then(|f| parse_date(f.value))
}

fn contains(haystack: &str, folded_needle: &str) -> bool {
    memmem::find(fold(haystack).as_bytes(), folded_needle.as_bytes()).is_some()
}

/// `HEADER field string` (and FROM, TO, CC, BCC, SUBJECT, which are
/// `HEADER` on that field): some `field` of the top-level header contains
/// `needle`. An empty needle matches every message that has the field.
pub fn header_contains(msg: &[u8], field: &str, needle: &str) -> bool {
    let header = &msg[..header_len(msg)];
    let field = field.trim();
    let mut matching = header::fields(header).filter(|f| f.is(field));
    if needle.is_empty() {
        return matching.next().is_some();
    }
    let needle = fold(needle);
    matching.any(|f| contains(&rfc2047(&unfold(f.value)), &needle))
}

/// A header block as decoded text, one `name: value` line per field.
fn header_text(block: &[u8]) -> String {
    let mut s = String::new();
    for f in header::fields(block) {
        s.push_str(&String::from_utf8_lossy(f.name));
        s.push_str(": ");
        s.push_str(&rfc2047(&unfold(f.value)));
        s.push('\n');
    }
    s
}

/// The decoded text of a text leaf.
fn part_text(msg: &[u8], e: &Entity<'_>) -> String {
    let raw = &msg[e.body.clone()];
    let bytes = match e.encoding().as_str() {
        "base64" => decode::base64(raw).into(),
        "quoted-printable" => decode::quoted_printable(raw).into(),
        _ => std::borrow::Cow::Borrowed(raw),
    };
    let text = decode::to_utf8(&bytes, e.ctype.get("charset"));
    if e.sub == "html" {
        decode::html_text(&text)
    } else {
        text.into_owned()
    }
}

/// `BODY string`: some text part of the message (enclosed messages
/// included, with their headers) contains `needle`. The top-level header is
/// not searched.
pub fn body_contains(msg: &[u8], needle: &str) -> bool {
    let needle = fold(needle);
    let tree = structure::parse(msg);
    tree.entities.iter().any(|e| match e.kind {
        Kind::Leaf => e.is_text() && contains(&part_text(msg, e), &needle),
        Kind::Message(inner) => contains(&header_text(&msg[tree.entities[inner].header.clone()]), &needle),
        Kind::Multipart(_) => false,
    })
}

/// `TEXT string`: the top-level header or the body contains `needle`.
pub fn text_contains(msg: &[u8], needle: &str) -> bool {
    contains(&header_text(&msg[..header_len(msg)]), &fold(needle)) || body_contains(msg, needle)
}
