//! BODY[section] (RFC 9051 §6.4.5): part numbering, the octets of each
//! section specifier, and `<partial>`.

use std::borrow::Cow;
use std::collections::HashSet;

use super::header::{self, Field};
use super::structure::{Kind, Tree};
use super::{Section, SectionKind};

/// Resolves part numbers to an entity. Numbering (RFC 9051 §6.4.5): the
/// parts of a multipart are numbered from 1; a message that is not
/// multipart has one part, 1, its body; part numbers after a
/// message/rfc822 part descend into the enclosed message by the same rule.
/// `None` for a part that does not exist.
pub(crate) fn resolve(tree: &Tree<'_>, path: &[u32]) -> Option<usize> {
    let mut cur = 0usize;
    // True while `cur` is the top entity of a message whose parts we number.
    let mut at_message = true;
    for &n in path {
        if !at_message {
            if let Kind::Message(inner) = tree.entities[cur].kind {
                cur = inner;
                at_message = true;
            }
        }
        let n = usize::try_from(n).ok()?.checked_sub(1)?;
        cur = match &tree.entities[cur].kind {
            Kind::Multipart(children) => *children.get(n)?,
            _ if at_message && n == 0 => cur,
            _ => return None,
        };
        at_message = false;
    }
    Some(cur)
}

/// The header block that HEADER, HEADER.FIELDS and TEXT of `path` refer to:
/// the top-level message's for an empty path, the enclosed message's for a
/// message/rfc822 part, none otherwise. Returns (header range, body range).
fn message_at(tree: &Tree<'_>, path: &[u32]) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let top = if path.is_empty() {
        0
    } else {
        match tree.entities[resolve(tree, path)?].kind {
            Kind::Message(inner) => inner,
            _ => return None,
        }
    };
    let e = &tree.entities[top];
    Some((e.header.clone(), e.body.clone()))
}

/// Header fields whose name is (or, with `keep == false`, is not) in
/// `names`, as they appear (folding kept), then the blank line.
fn filter_fields(header_block: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let wanted: HashSet<Vec<u8>> = names.iter().map(|n| n.trim().as_bytes().to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    for f in header::fields(header_block) {
        let Field { name, raw, .. } = f;
        if wanted.contains(&name.to_ascii_lowercase()) == keep {
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// BODY[section] before `<partial>`: the octets a client gets. A part or
/// specifier that does not apply (no such part, HEADER of a part that is
/// not a message, MIME of the whole message) gives empty octets, which the
/// caller sends as `""` (RFC 9051 §6.4.5: a part that does not exist is not
/// an error).
pub fn section<'a>(msg: &'a [u8], section: &Section) -> Cow<'a, [u8]> {
    if section.part.is_empty() && section.kind == SectionKind::Full {
        return Cow::Borrowed(msg);
    }
    section_in(&super::structure::parse(msg), section)
}

/// [`section()`] on an already parsed message.
pub(crate) fn section_in<'a>(tree: &Tree<'a>, section: &Section) -> Cow<'a, [u8]> {
    let msg = tree.msg;
    let empty = Cow::Borrowed(&msg[..0]);
    match &section.kind {
        SectionKind::Full if section.part.is_empty() => Cow::Borrowed(msg),
        SectionKind::Full => match resolve(tree, &section.part) {
            Some(i) => Cow::Borrowed(&msg[tree.entities[i].body.clone()]),
            None => empty,
        },
        SectionKind::Mime => match (section.part.is_empty(), resolve(tree, &section.part)) {
            (false, Some(i)) => Cow::Borrowed(&msg[tree.entities[i].header.clone()]),
            _ => empty,
        },
        SectionKind::Header => message_at(tree, &section.part).map_or(empty, |(h, _)| Cow::Borrowed(&msg[h])),
        SectionKind::Text => message_at(tree, &section.part).map_or(Cow::Borrowed(&msg[..0]), |(_, b)| Cow::Borrowed(&msg[b])),
        SectionKind::HeaderFields(names) => message_at(tree, &section.part).map_or(Cow::Borrowed(&msg[..0]), |(h, _)| Cow::Owned(filter_fields(&msg[h], names, true))),
        SectionKind::HeaderFieldsNot(names) => message_at(tree, &section.part).map_or(Cow::Borrowed(&msg[..0]), |(h, _)| Cow::Owned(filter_fields(&msg[h], names, false))),
    }
}

/// `<offset.count>` (RFC 9051 §6.4.5): `count` octets from `offset`, fewer
/// at the end, empty when `offset` is past the end.
pub fn partial(data: &[u8], offset: u32, count: u32) -> &[u8] {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(count as usize).min(data.len());
    &data[start..end]
}
