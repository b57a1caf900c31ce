//! `Content-Type` and `Content-Disposition` values (RFC 2045 §5.1, RFC 2183):
//! a head (`type/subtype`, `attachment`) and `;`-separated parameters, with
//! RFC 2231 continuations and charset/language extended values.

use super::decode::to_utf8;
use super::header::{is_wsp, trim};

/// Parameters kept per header value; the rest are ignored. Real mail uses a
/// handful; a long RFC 2231 filename may take a few dozen continuations.
pub const PARAMS_MAX: usize = 256;

/// A parameter as presented to clients: lower-case name, value with
/// RFC 2231 continuations joined and extended values decoded to UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param {
    pub name: String,
    pub value: Vec<u8>,
    /// The value came from an RFC 2231 extended (`name*`) form and is UTF-8.
    pub extended: bool,
}

/// A parsed header value: the head (before the first `;`, comments and
/// white space removed, lower-cased) and the parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params {
    pub head: Vec<u8>,
    pub params: Vec<Param>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.params.iter().find(|p| p.name == name).map(|p| p.value.as_slice())
    }
}

/// Skips white space and (nested) comments from `i`.
fn skip_cfws(v: &[u8], mut i: usize) -> usize {
    loop {
        while i < v.len() && is_wsp(v[i]) {
            i += 1;
        }
        if i < v.len() && v[i] == b'(' {
            let mut depth = 0usize;
            while i < v.len() {
                match v[i] {
                    b'\\' => i += 1,
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            continue;
        }
        return i.min(v.len());
    }
}

/// A quoted string starting at `v[i] == '"'`: its unescaped content and the
/// index after the closing quote (or the end, when unterminated).
fn quoted(v: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    i += 1;
    while i < v.len() {
        match v[i] {
            b'"' => return (out, i + 1),
            b'\\' if i + 1 < v.len() => {
                out.push(v[i + 1]);
                i += 2;
            }
            b'\r' | b'\n' => i += 1,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (out, i)
}

/// Pieces of one parameter name: `name`, `name*`, `name*N`, `name*N*`.
struct RawParam {
    base: String,
    section: Option<u32>,
    encoded: bool,
    value: Vec<u8>,
}

fn split_name(name: &[u8]) -> (String, Option<u32>, bool) {
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let (rest, encoded) = match lower.strip_suffix('*') {
        Some(r) => (r.to_string(), true),
        None => (lower.clone(), false),
    };
    if let Some((base, n)) = rest.rsplit_once('*') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = n.parse::<u32>() {
                return (base.to_string(), Some(n), encoded);
            }
        }
    }
    if encoded {
        (rest, None, true)
    } else {
        (lower, None, false)
    }
}

/// `%XX` decoding of an RFC 2231 extended value (invalid escapes kept).
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            let h = (v[i + 1] as char).to_digit(16);
            let l = (v[i + 2] as char).to_digit(16);
            if let (Some(h), Some(l)) = (h, l) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// Splits `charset'language'value` (RFC 2231 §4); without two quotes the
/// whole is the value.
fn split_extended(v: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let mut it = v.splitn(3, |&b| b == b'\'');
    match (it.next(), it.next(), it.next()) {
        (Some(cs), Some(_lang), Some(rest)) => (Some(cs), rest),
        _ => (None, v),
    }
}

/// Parses a `Content-Type`-like value.
pub(crate) fn parse(v: &[u8]) -> Params {
    // Head: up to the first ';' outside quotes and comments.
    let mut head = Vec::new();
    let mut i = 0;
    while i < v.len() && v[i] != b';' {
        match v[i] {
            b'(' => i = skip_cfws(v, i),
            b'"' => {
                let (q, n) = quoted(v, i);
                head.extend_from_slice(&q);
                i = n;
            }
            b if is_wsp(b) => i += 1,
            b => {
                head.push(b.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    let mut raw = Vec::new();
    while i < v.len() && raw.len() < PARAMS_MAX {
        // v[i] == ';'
        i = skip_cfws(v, i + 1);
        let name_start = i;
        while i < v.len() && !matches!(v[i], b'=' | b';') {
            i += 1;
        }
        let name = trim(&v[name_start..i]);
        if i >= v.len() || v[i] == b';' {
            continue;
        }
        i = skip_cfws(v, i + 1);
        let value = if i < v.len() && v[i] == b'"' {
            let (q, n) = quoted(v, i);
            i = n;
            while i < v.len() && v[i] != b';' {
                i += 1;
            }
            q
        } else {
            let start = i;
            while i < v.len() && v[i] != b';' {
                i += 1;
            }
            trim(&v[start..i]).to_vec()
        };
        if name.is_empty() {
            continue;
        }
        let (base, section, encoded) = split_name(name);
        raw.push(RawParam { base, section, encoded, value });
    }
    while i < v.len() && v[i] != b';' {
        i += 1;
    }
    Params { head, params: assemble(raw) }
}

/// Joins RFC 2231 continuations and decodes extended values; keeps the
/// order of first appearance. An extended or continued value wins over a
/// plain one of the same name (senders add the plain one for old readers).
fn assemble(raw: Vec<RawParam>) -> Vec<Param> {
    let mut order: Vec<String> = Vec::new();
    for p in &raw {
        if !order.contains(&p.base) {
            order.push(p.base.clone());
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for base in order {
        let of_base: Vec<&RawParam> = raw.iter().filter(|p| p.base == base).collect();
        let mut sections: Vec<&RawParam> = of_base.iter().copied().filter(|p| p.section.is_some()).collect();
        sections.sort_by_key(|p| p.section);
        sections.dedup_by_key(|p| p.section);
        let extended = of_base.iter().copied().find(|p| p.section.is_none() && p.encoded);
        let plain = of_base.iter().copied().find(|p| p.section.is_none() && !p.encoded);
        let param = if !sections.is_empty() {
            let mut bytes = Vec::new();
            let mut charset = None;
            for (k, s) in sections.iter().enumerate() {
                if s.encoded {
                    let data = if k == 0 {
                        let (cs, data) = split_extended(&s.value);
                        charset = cs;
                        data
                    } else {
                        &s.value
                    };
                    bytes.extend_from_slice(&percent_decode(data));
                } else {
                    bytes.extend_from_slice(&s.value);
                }
            }
            if sections[0].encoded {
                Param { name: base, value: to_utf8(&bytes, charset).into_owned().into_bytes(), extended: true }
            } else {
                Param { name: base, value: bytes, extended: false }
            }
        } else if let Some(e) = extended {
            let (cs, data) = split_extended(&e.value);
            Param { name: base, value: to_utf8(&percent_decode(data), cs).into_owned().into_bytes(), extended: true }
        } else if let Some(p) = plain {
            Param { name: base, value: p.value.clone(), extended: false }
        } else {
            continue;
        };
        out.push(param);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Params {
        parse(v.as_bytes())
    }

    #[test]
    fn simple() {
        let c = p("Text/Plain; Charset=\"UTF-8\"; format=flowed");
        assert_eq!(c.head, b"text/plain");
        assert_eq!(c.get("charset"), Some(&b"UTF-8"[..]));
        assert_eq!(c.get("format"), Some(&b"flowed"[..]));
        let c = p("multipart/mixed (comment); boundary=\"a;b \\\"c\\\"\" ; x");
        assert_eq!(c.head, b"multipart/mixed");
        assert_eq!(c.get("boundary"), Some(&b"a;b \"c\""[..]));
        assert_eq!(c.params.len(), 1);
        let c = p("");
        assert_eq!(c.head, b"");
    }

    #[test]
    fn rfc2231() {
        // RFC 2231 §3 and §4 examples.
        let c = p("message/external-body; access-type=URL;\r\n URL*0=\"ftp://\";\r\n URL*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\"");
        assert_eq!(c.get("url"), Some(&b"ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"[..]));
        let c = p("application/x-stuff; title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A");
        assert_eq!(c.get("title"), Some(&b"This is ***fun***"[..]));
        let c = p("application/x-stuff; title*0*=us-ascii'en'This%20is%20even%20more%20; title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*2=\"isn't it!\"");
        assert_eq!(c.get("title"), Some(&b"This is even more ***fun*** isn't it!"[..]));
        // Cyrillic filename, UTF-8 and KOI8-R, extended wins over plain.
        let c = p("attachment; filename=\"report.pdf\"; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf");
        assert_eq!(c.get("filename"), Some("отчёт.pdf".as_bytes()));
        assert!(c.params[0].extended);
        let c = p("attachment; filename*0*=koi8-r''%CF%D4%DE; filename*1*=%A3%D4.txt");
        assert_eq!(c.get("filename"), Some("отчёт.txt".as_bytes()));
        // Out of order sections are sorted.
        let c = p("a/b; n*1=\"b\"; n*0=\"a\"");
        assert_eq!(c.get("n"), Some(&b"ab"[..]));
    }
}
