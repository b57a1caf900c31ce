//! The MIME tree of a message (RFC 2045, RFC 2046 §5) with exact octet
//! ranges, and its BODY / BODYSTRUCTURE rendering (RFC 9051 §7.5.2, §9
//! `body`).
//!
//! The tree is built top-down: a multipart scans its own body range for its
//! delimiter lines (`--boundary`, optional `--`, optional white space, line
//! end; the line break before the delimiter belongs to it, RFC 2046 §5.1.1),
//! and each child is parsed inside the range between two delimiters. A
//! missing close delimiter ends the last part at the end of the parent's
//! range. Nothing is decoded here.
//!
//! Hostile input is bounded by [`MIME_DEPTH_MAX`] and [`MIME_PARTS_MAX`]:
//! past them a part is an opaque leaf, so building and rendering stay linear
//! in the message size (times the depth limit) and recursion stays shallow.
//!
//! Presentation choices (consistent everywhere, close to Dovecot): media
//! type, subtype, transfer encoding, parameter names and disposition type
//! lower-case; parameter values as sent, except RFC 2231 extended values,
//! which are decoded and, when not ASCII, given as one RFC 2047 UTF-8
//! encoded word so that IMAP4rev1 clients (which all decode those in
//! filenames) and rev2 clients read them alike; text parts without a
//! charset get `("charset" "us-ascii")` (RFC 2045 §5.2).

use std::ops::Range;

use base64::Engine;
use memchr::memmem;

use super::envelope::write_envelope;
use super::header::{self, header_len, trim, unfold};
use super::params::{self, Params};
use crate::imap::wire::{write_nstring, write_string};

/// Deepest nesting of multiparts and message/rfc822 parts followed; deeper
/// containers are opaque leaves (rendered `application/octet-stream`). Real
/// mail nests a handful of levels; forwarded chains rarely pass ten.
pub const MIME_DEPTH_MAX: usize = 32;

/// Most parts built for one message; later parts of a multipart are left out
/// of the structure (as if epilogue) and further containers are opaque.
/// Bounds BODYSTRUCTURE size against a body of a million empty parts.
pub const MIME_PARTS_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Leaf,
    /// Children, in order.
    Multipart(Vec<usize>),
    /// message/rfc822 or message/global: the enclosed message's top entity.
    Message(usize),
}

/// The MIME fields of an entity (first occurrence of each, raw values).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MimeFields<'a> {
    pub content_type: Option<&'a [u8]>,
    pub encoding: Option<&'a [u8]>,
    pub id: Option<&'a [u8]>,
    pub description: Option<&'a [u8]>,
    pub md5: Option<&'a [u8]>,
    pub disposition: Option<&'a [u8]>,
    pub language: Option<&'a [u8]>,
    pub location: Option<&'a [u8]>,
}

impl<'a> MimeFields<'a> {
    fn of(header_block: &'a [u8]) -> Self {
        let mut m = MimeFields::default();
        for f in header::fields(header_block) {
            if f.name.len() < 10 || !f.name[..8].eq_ignore_ascii_case(b"content-") {
                continue;
            }
            let slot = match &f.name[8..] {
                n if n.eq_ignore_ascii_case(b"type") => &mut m.content_type,
                n if n.eq_ignore_ascii_case(b"transfer-encoding") => &mut m.encoding,
                n if n.eq_ignore_ascii_case(b"id") => &mut m.id,
                n if n.eq_ignore_ascii_case(b"description") => &mut m.description,
                n if n.eq_ignore_ascii_case(b"md5") => &mut m.md5,
                n if n.eq_ignore_ascii_case(b"disposition") => &mut m.disposition,
                n if n.eq_ignore_ascii_case(b"language") => &mut m.language,
                n if n.eq_ignore_ascii_case(b"location") => &mut m.location,
                _ => continue,
            };
            slot.get_or_insert(f.value);
        }
        m
    }
}

/// One entity: a part, or the top of a (possibly enclosed) message.
#[derive(Debug, Clone)]
pub(crate) struct Entity<'a> {
    /// The header (MIME header of a part; full header of a message top),
    /// including the blank line.
    pub header: Range<usize>,
    /// The body: for a part in a multipart, up to the line break before the
    /// next delimiter.
    pub body: Range<usize>,
    /// Presented media type and subtype, lower-case.
    pub ty: String,
    pub sub: String,
    pub ctype: Params,
    pub fields: MimeFields<'a>,
    pub kind: Kind,
}

impl Entity<'_> {
    /// The transfer encoding, lower-case, `7bit` when absent.
    pub fn encoding(&self) -> String {
        let v = self.fields.encoding.map(unfold).unwrap_or_default();
        let tok: Vec<u8> = v.iter().take_while(|&&b| !header::is_wsp(b) && b != b'(' && b != b';').map(u8::to_ascii_lowercase).collect();
        if tok.is_empty() {
            "7bit".into()
        } else {
            String::from_utf8_lossy(&tok).into_owned()
        }
    }

    pub fn is_text(&self) -> bool {
        self.ty == "text"
    }
}

/// A parsed message: `entities[0]` is the top-level entity.
#[derive(Debug)]
pub(crate) struct Tree<'a> {
    pub msg: &'a [u8],
    pub entities: Vec<Entity<'a>>,
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| b > b' ' && b < 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// Transfer encodings under which a message/rfc822 body is a message
/// (RFC 2046 §5.2.1 allows only these).
fn identity_encoding(enc: &str) -> bool {
    matches!(enc, "7bit" | "8bit" | "binary")
}

/// Line count of a text body: line breaks, plus one for a last line
/// without one.
pub(crate) fn lines(body: &[u8]) -> usize {
    let n = memchr::memchr_iter(b'\n', body).count();
    n + usize::from(!body.is_empty() && body.last() != Some(&b'\n'))
}

struct Builder<'a> {
    msg: &'a [u8],
    entities: Vec<Entity<'a>>,
}

/// A delimiter line found in a multipart body.
struct Delimiter {
    /// End of the preceding part's content (its line break belongs here).
    content_end: usize,
    /// Start of the next part (after the delimiter line).
    next_start: usize,
    close: bool,
}

fn delimiters(msg: &[u8], range: Range<usize>, boundary: &[u8], max: usize) -> Vec<Delimiter> {
    let mut pat = Vec::with_capacity(boundary.len() + 2);
    pat.extend_from_slice(b"--");
    pat.extend_from_slice(boundary);
    let (start, end) = (range.start, range.end);
    let region = &msg[start..end];
    let mut out = Vec::new();
    for pos in memmem::find_iter(region, &pat) {
        let abs = start + pos;
        if abs != start && msg[abs - 1] != b'\n' {
            continue;
        }
        let mut j = abs + pat.len();
        let close = msg[j..end].starts_with(b"--");
        if close {
            j += 2;
        }
        while j < end && (msg[j] == b' ' || msg[j] == b'\t') {
            j += 1;
        }
        let next_start = if j == end {
            end
        } else if msg[j..end].starts_with(b"\r\n") {
            j + 2
        } else if msg[j] == b'\n' {
            j + 1
        } else {
            continue;
        };
        let content_end = if abs == start {
            start
        } else if abs >= start + 2 && msg[abs - 2] == b'\r' {
            abs - 2
        } else {
            abs - 1
        };
        out.push(Delimiter { content_end, next_start, close });
        if close || out.len() > max {
            break;
        }
    }
    out
}

impl<'a> Builder<'a> {
    fn entity(&mut self, range: Range<usize>, depth: usize, in_digest: bool) -> usize {
        let msg = self.msg;
        let hl = header_len(&msg[range.clone()]);
        let header = range.start..range.start + hl;
        let body = range.start + hl..range.end;
        let fields = MimeFields::of(&msg[header.clone()]);
        let (mut ty, mut sub, ctype) = match fields.content_type.map(|v| params::parse(&unfold(v))) {
            Some(p) => {
                let mut it = p.head.splitn(2, |&b| b == b'/');
                match (it.next().map(trim), it.next().map(trim)) {
                    (Some(t), Some(s)) if is_token(t) && is_token(s) => (String::from_utf8_lossy(t).into_owned(), String::from_utf8_lossy(s).into_owned(), p),
                    // RFC 2045 §5.2: an invalid Content-Type means text/plain; charset=us-ascii.
                    _ => ("text".into(), "plain".into(), Params::default()),
                }
            }
            None if in_digest => ("message".into(), "rfc822".into(), Params::default()),
            None => ("text".into(), "plain".into(), Params::default()),
        };
        let idx = self.entities.len();
        self.entities.push(Entity { header, body: body.clone(), ty: String::new(), sub: String::new(), ctype, fields, kind: Kind::Leaf });
        let room = self.entities.len() < MIME_PARTS_MAX && depth < MIME_DEPTH_MAX;
        let mut kind = Kind::Leaf;
        if ty == "multipart" {
            let boundary = self.entities[idx].ctype.get("boundary").filter(|b| !b.is_empty()).map(<[u8]>::to_vec);
            let delims = match (&boundary, room) {
                (Some(b), true) => delimiters(msg, body.clone(), b, MIME_PARTS_MAX - self.entities.len()),
                _ => Vec::new(),
            };
            let has_part = delims.first().is_some_and(|d| !d.close);
            if !room && boundary.is_some() {
                (ty, sub) = ("application".into(), "octet-stream".into());
            } else if !has_part {
                // No boundary, or no part: a text leaf (what the body is, for a reader).
                (ty, sub) = ("text".into(), "plain".into());
            } else {
                let digest = sub == "digest";
                let mut children = Vec::new();
                for (k, d) in delims.iter().enumerate() {
                    if d.close || self.entities.len() >= MIME_PARTS_MAX {
                        break;
                    }
                    let part_end = delims.get(k + 1).map_or(body.end, |n| n.content_end).max(d.next_start);
                    children.push(self.entity(d.next_start..part_end, depth + 1, digest));
                }
                kind = Kind::Multipart(children);
            }
        } else if ty == "message" && (sub == "rfc822" || sub == "global") {
            if room && identity_encoding(&self.entities[idx].encoding()) {
                kind = Kind::Message(self.entity(body, depth + 1, false));
            } else {
                (ty, sub) = ("application".into(), "octet-stream".into());
            }
        }
        let e = &mut self.entities[idx];
        e.ty = ty;
        e.sub = sub;
        e.kind = kind;
        idx
    }
}

/// Parses the MIME structure of `msg`.
pub(crate) fn parse(msg: &[u8]) -> Tree<'_> {
    let mut b = Builder { msg, entities: Vec::new() };
    b.entity(0..msg.len(), 0, false);
    Tree { msg, entities: b.entities }
}

impl Tree<'_> {
    /// Appends BODY (`extended == false`) or BODYSTRUCTURE of entity `idx`.
    pub fn write_body(&self, out: &mut Vec<u8>, idx: usize, extended: bool) {
        let e = &self.entities[idx];
        out.push(b'(');
        match &e.kind {
            Kind::Multipart(children) => {
                for &c in children {
                    self.write_body(out, c, extended);
                }
                out.push(b' ');
                write_string(out, e.sub.as_bytes(), false);
                if extended {
                    out.push(b' ');
                    write_params(out, &e.ctype, false);
                    self.write_ext_common(out, e);
                }
            }
            kind => {
                write_string(out, e.ty.as_bytes(), false);
                out.push(b' ');
                write_string(out, e.sub.as_bytes(), false);
                out.push(b' ');
                write_params(out, &e.ctype, e.is_text());
                out.push(b' ');
                write_nstring(out, e.fields.id.map(unfold).as_deref(), false);
                out.push(b' ');
                write_nstring(out, e.fields.description.map(unfold).as_deref(), false);
                out.push(b' ');
                write_string(out, e.encoding().as_bytes(), false);
                out.push(b' ');
                out.extend_from_slice(e.body.len().to_string().as_bytes());
                if let Kind::Message(child) = kind {
                    let c = &self.entities[*child];
                    out.push(b' ');
                    write_envelope(out, &self.msg[c.header.clone()]);
                    out.push(b' ');
                    self.write_body(out, *child, extended);
                    out.push(b' ');
                    out.extend_from_slice(lines(&self.msg[e.body.clone()]).to_string().as_bytes());
                } else if e.is_text() {
                    out.push(b' ');
                    out.extend_from_slice(lines(&self.msg[e.body.clone()]).to_string().as_bytes());
                }
                if extended {
                    out.push(b' ');
                    write_nstring(out, e.fields.md5.map(unfold).as_deref(), false);
                    self.write_ext_common(out, e);
                }
            }
        }
        out.push(b')');
    }

    /// ` disposition language location`, shared by both body kinds.
    fn write_ext_common(&self, out: &mut Vec<u8>, e: &Entity<'_>) {
        out.push(b' ');
        match e.fields.disposition.map(|d| params::parse(&unfold(d))).filter(|d| is_token(&d.head)) {
            Some(d) => {
                out.push(b'(');
                write_string(out, &d.head, false);
                out.push(b' ');
                write_params(out, &d, false);
                out.push(b')');
            }
            None => out.extend_from_slice(b"NIL"),
        }
        out.push(b' ');
        let langs: Vec<Vec<u8>> =
            e.fields.language.map(|l| unfold(l).split(|&b| b == b',' || header::is_wsp(b)).map(trim).filter(|t| is_token(t)).map(<[u8]>::to_vec).collect()).unwrap_or_default();
        if langs.is_empty() {
            out.extend_from_slice(b"NIL");
        } else {
            out.push(b'(');
            for (i, l) in langs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                write_string(out, l, false);
            }
            out.push(b')');
        }
        out.push(b' ');
        let loc: Option<Vec<u8>> = e.fields.location.map(|l| l.iter().copied().filter(|&b| !header::is_wsp(b)).collect());
        write_nstring(out, loc.as_deref(), false);
    }
}

/// `body-fld-param`: NIL when empty; text gets the default charset.
fn write_params(out: &mut Vec<u8>, p: &Params, text: bool) {
    let add_charset = text && p.get("charset").is_none();
    if p.params.is_empty() && !add_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut first = true;
    if add_charset {
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
        first = false;
    }
    for param in &p.params {
        if !first {
            out.push(b' ');
        }
        first = false;
        write_string(out, param.name.as_bytes(), false);
        out.push(b' ');
        if param.extended && !param.value.is_ascii() {
            let mut word = b"=?UTF-8?B?".to_vec();
            word.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&param.value).as_bytes());
            word.extend_from_slice(b"?=");
            write_string(out, &word, false);
        } else {
            write_string(out, &param.value, false);
        }
    }
    out.push(b')');
}
