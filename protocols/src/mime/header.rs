//! Header blocks (RFC 5322 §2.2): where a header ends, its fields, and
//! unfolding. Everything here is a single forward pass over the octets.

use std::borrow::Cow;

use memchr::memchr;

/// Octets of the header at the start of `data`, including the blank line
/// that ends it. Bare LF line endings are accepted as well as CRLF. Without
/// a blank line the whole of `data` is header and the body is empty (what
/// RFC 9051 §6.4.5 `TEXT` then returns).
pub(crate) fn header_len(data: &[u8]) -> usize {
    if data.starts_with(b"\r\n") {
        return 2;
    }
    if data.starts_with(b"\n") {
        return 1;
    }
    for pos in memchr::memchr_iter(b'\n', data) {
        let rest = &data[pos + 1..];
        if rest.starts_with(b"\r\n") {
            return pos + 3;
        }
        if rest.starts_with(b"\n") {
            return pos + 2;
        }
    }
    data.len()
}

/// One header field: its name (trimmed), its raw value (after the colon,
/// folding kept, line terminator dropped) and the whole field as it appears
/// (with folding and the final line terminator, when there is one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The fields of a header block (the blank line, if included, ends it).
/// A line without a colon becomes a field whose name is the whole line and
/// whose value is empty: it matches no real field name, and `HEADER.FIELDS.NOT`
/// keeps it, as it is part of the header.
pub(crate) fn fields(header: &[u8]) -> Fields<'_> {
    Fields { data: header, pos: 0 }
}

pub(crate) struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let data = self.data;
        let start = self.pos;
        if start >= data.len() || data[start] == b'\n' || data[start..].starts_with(b"\r\n") {
            return None;
        }
        // The first line, then every continuation line (starting with WSP).
        let mut end = start;
        let mut first_line_end = None;
        loop {
            match memchr(b'\n', &data[end..]) {
                Some(i) => {
                    end += i + 1;
                    first_line_end.get_or_insert(end);
                    if end < data.len() && (data[end] == b' ' || data[end] == b'\t') {
                        continue;
                    }
                }
                None => end = data.len(),
            }
            break;
        }
        self.pos = end;
        let raw = &data[start..end];
        let first_line = &data[start..first_line_end.unwrap_or(end)];
        let body = trim_line_end(raw);
        Some(match memchr(b':', first_line) {
            Some(colon) => Field { name: trim(&raw[..colon]), value: &body[(colon + 1).min(body.len())..], raw },
            None => Field { name: trim(body), value: b"", raw },
        })
    }
}

/// The first field named `name` (ASCII case-insensitive).
pub(crate) fn find<'a>(header: &'a [u8], name: &str) -> Option<Field<'a>> {
    fields(header).find(|f| f.is(name))
}

/// `value` without its line terminator.
fn trim_line_end(value: &[u8]) -> &[u8] {
    let v = value.strip_suffix(b"\n").unwrap_or(value);
    v.strip_suffix(b"\r").unwrap_or(v)
}

pub(crate) fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `value` without leading and trailing white space (and line breaks).
pub(crate) fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| !is_wsp(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|&b| !is_wsp(b)).map_or(start, |e| e + 1);
    &value[start..end]
}

/// Unfolds a field value (RFC 5322 §2.2.3: drop the CRLF of each fold, keep
/// the white space) and trims it. Borrowed when there is nothing to drop.
pub(crate) fn unfold(value: &[u8]) -> Cow<'_, [u8]> {
    let value = trim(value);
    if memchr::memchr2(b'\r', b'\n', value).is_none() {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end() {
        assert_eq!(header_len(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(header_len(b"\r\nbody"), 2);
        assert_eq!(header_len(b"A: b\n\nbody"), 6);
        assert_eq!(header_len(b"A: b\r\nC: d\r\n"), 12);
        assert_eq!(header_len(b""), 0);
    }

    #[test]
    fn field_iteration() {
        let h = b"Subject: hello\r\n  world\r\nX-Odd\r\nTo:a@b\r\n\r\nbody";
        let f: Vec<_> = fields(h).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, b"Subject");
        assert_eq!(f[0].value, b" hello\r\n  world");
        assert_eq!(f[0].raw, b"Subject: hello\r\n  world\r\n");
        assert_eq!(&*unfold(f[0].value), b"hello  world");
        assert_eq!(f[1].name, b"X-Odd");
        assert_eq!(f[2].value, b"a@b");
        assert_eq!(find(h, "to").map(|f| f.value), Some(&b"a@b"[..]));
        // No terminator at the end.
        let f: Vec<_> = fields(b"A: b").collect();
        assert_eq!((f[0].name, f[0].value, f[0].raw), (&b"A"[..], &b" b"[..], &b"A: b"[..]));
        // A colon only on a continuation line does not make a name.
        let f: Vec<_> = fields(b"odd\r\n x: y\r\n").collect();
        assert_eq!(f[0].name, b"odd\r\n x: y");
        assert_eq!(f[0].value, b"");
    }
}
