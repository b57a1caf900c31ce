//! Writing IMAP strings (RFC 9051 §4.3): atoms, quoted strings and literals.
//! Every function picks the shortest form the value allows and never
//! produces a string a client could misparse (CR, LF and NUL never appear
//! quoted; 8-bit octets are quoted only when the client enabled UTF-8).

/// `ATOM-CHAR`: any CHAR except atom-specials (RFC 9051 §9).
pub fn is_atom_char(b: u8) -> bool {
    b > b' ' && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// `ASTRING-CHAR`: an atom char or `]`.
pub fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// Longest value written as a quoted string; longer ones become literals,
/// which clients handle with less copying.
const QUOTED_BYTES_MAX: usize = 1024;

fn quotable(s: &[u8], utf8: bool) -> bool {
    s.len() <= QUOTED_BYTES_MAX && s.iter().all(|&b| b != 0 && b != b'\r' && b != b'\n' && (b < 0x80 || utf8)) && (!utf8 || std::str::from_utf8(s).is_ok())
}

/// A `string`: quoted when possible, else a literal. `utf8`: the session
/// enabled UTF8=ACCEPT or IMAP4rev2, so UTF-8 may appear in quoted strings.
pub fn write_string(out: &mut Vec<u8>, s: &[u8], utf8: bool) {
    if quotable(s, utf8) {
        write_quoted(out, s);
    } else {
        write_literal(out, s);
    }
}

/// An `nstring`: `NIL` or a string.
pub fn write_nstring(out: &mut Vec<u8>, s: Option<&[u8]>, utf8: bool) {
    match s {
        Some(s) => write_string(out, s, utf8),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// An `astring`: a bare atom when every octet allows it (and it is not
/// `NIL`, which would read as nil), else a string.
pub fn write_astring(out: &mut Vec<u8>, s: &[u8], utf8: bool) {
    if !s.is_empty() && s.iter().all(|&b| is_astring_char(b)) && !s.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(s);
    } else {
        write_string(out, s, utf8);
    }
}

/// A quoted string; the caller has checked the octets are quotable.
pub fn write_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A synchronizing literal `{n}\r\n` followed by the octets.
pub fn write_literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'{');
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// A literal8 `~{n}\r\n` (RFC 3516 BINARY) followed by the octets.
pub fn write_literal8(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'~');
    write_literal(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn forms() {
        assert_eq!(s(|o| write_astring(o, b"INBOX", false)), "INBOX");
        assert_eq!(s(|o| write_astring(o, b"nil", false)), "\"nil\"");
        assert_eq!(s(|o| write_astring(o, b"", false)), "\"\"");
        assert_eq!(s(|o| write_astring(o, b"a b", false)), "\"a b\"");
        assert_eq!(s(|o| write_string(o, b"say \"hi\" \\", false)), "\"say \\\"hi\\\" \\\\\"");
        assert_eq!(s(|o| write_string(o, b"a\r\nb", true)), "{4}\r\na\r\nb");
        assert_eq!(s(|o| write_string(o, "Привет".as_bytes(), false)), "{12}\r\nПривет");
        assert_eq!(s(|o| write_string(o, "Привет".as_bytes(), true)), "\"Привет\"");
        let mut v = Vec::new();
        write_string(&mut v, b"\xff", true);
        assert_eq!(v, b"{1}\r\n\xff");
        assert_eq!(s(|o| write_nstring(o, None, false)), "NIL");
        assert_eq!(s(|o| write_literal8(o, b"\0")), "~{1}\r\n\0");
    }
}
