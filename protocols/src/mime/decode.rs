//! Decoders: Content-Transfer-Encoding (RFC 2045 §6.7, §6.8), charsets to
//! UTF-8 (through `mail-parser`'s tables), RFC 2047 encoded words, and the
//! case folding and HTML-to-text used for SEARCH.
//!
//! The transfer decoders are lenient, as readers must be (RFC 2045 §6.7
//! note 1, §6.8): octets outside the base64 alphabet are skipped, and a
//! quoted-printable `=` that starts no valid escape is kept as is. They
//! never fail, so BINARY and SEARCH always have something to work on.

use std::borrow::Cow;

use memchr::memmem;

/// Longest encoded word (RFC 2047 §2 says 75 octets; broken mailers write
/// longer ones). Bounds the look-ahead for `?=`, so a header made of
/// `=?=?=?…` stays linear.
pub const ENCODED_WORD_BYTES_MAX: usize = 2048;

const B64_INVALID: u8 = 0xff;

static BASE64_TABLE: [u8; 256] = {
    let mut t = [B64_INVALID; 256];
    let mut i = 0u8;
    while i < 64 {
        let c = match i {
            0..=25 => b'A' + i,
            26..=51 => b'a' + (i - 26),
            52..=61 => b'0' + (i - 52),
            62 => b'+',
            _ => b'/',
        };
        t[c as usize] = i;
        i += 1;
    }
    t
};

/// Base64 (RFC 2045 §6.8), skipping every octet outside the alphabet
/// (line breaks, padding, garbage). A final group of 2 or 3 sextets gives
/// 1 or 2 octets; a lone sextet is dropped.
pub(crate) fn base64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 3);
    let mut acc = 0u32;
    let mut n = 0u8;
    for &b in data {
        let v = BASE64_TABLE[b as usize];
        if v == B64_INVALID {
            continue;
        }
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes (either case), soft line
/// breaks (`=` then optional white space then a line break), trailing white
/// space on a line dropped (rule 3). Line breaks are kept as they are.
pub(crate) fn quoted_printable(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match b {
            b'=' => {
                if let (Some(h), Some(l)) = (data.get(i + 1).and_then(|&c| hex(c)), data.get(i + 2).and_then(|&c| hex(c))) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                // Soft line break: "=" *WSP (CRLF / LF / end of data).
                let mut j = i + 1;
                while j < data.len() && (data[j] == b' ' || data[j] == b'\t') {
                    j += 1;
                }
                if data[j..].starts_with(b"\r\n") {
                    i = j + 2;
                } else if data[j..].starts_with(b"\n") {
                    i = j + 1;
                } else if j == data.len() {
                    i = j;
                } else {
                    out.push(b'=');
                    i += 1;
                }
            }
            b'\r' | b'\n' => {
                while matches!(out.last(), Some(b' ' | b'\t')) {
                    out.pop();
                }
                out.push(b);
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The charsets whose octets are taken as UTF-8 (with replacement of
/// invalid sequences): UTF-8 itself, and US-ASCII, because 8-bit octets in
/// text labelled US-ASCII are in practice UTF-8.
fn is_utf8_label(charset: &[u8]) -> bool {
    [&b"utf-8"[..], b"utf8", b"us-ascii", b"ascii", b"unicode-1-1-utf-8"].iter().any(|c| charset.eq_ignore_ascii_case(c))
}

/// Text in `charset` as UTF-8. Unknown or absent charsets are read as UTF-8
/// with invalid sequences replaced.
pub(crate) fn to_utf8<'a>(bytes: &'a [u8], charset: Option<&[u8]>) -> Cow<'a, str> {
    if let Some(cs) = charset.map(crate::mime::header::trim).filter(|c| !c.is_empty() && !is_utf8_label(c)) {
        if let Some(decoder) = mail_parser::decoders::charsets::map::charset_decoder(cs) {
            return Cow::Owned(decoder(bytes));
        }
    }
    String::from_utf8_lossy(bytes)
}

/// One encoded word `=?charset?B|Q?text?=` at the start of `data`: its
/// charset (without an RFC 2231 `*language` suffix), its decoded octets
/// and its length.
fn encoded_word(data: &[u8]) -> Option<(&[u8], Vec<u8>, usize)> {
    let data = &data[..data.len().min(ENCODED_WORD_BYTES_MAX)];
    let rest = data.strip_prefix(b"=?")?;
    let q1 = rest.iter().position(|&b| b == b'?' || b == b'\n' || b == b' ')?;
    if rest[q1] != b'?' || q1 == 0 {
        return None;
    }
    let charset = &rest[..q1];
    let charset = charset.split(|&b| b == b'*').next().unwrap_or(charset);
    let enc = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_len = memmem::find(&rest[text_start..], b"?=")?;
    let text = &rest[text_start..text_start + text_len];
    if text.contains(&b'\n') {
        return None;
    }
    let decoded = match enc {
        b'B' | b'b' => base64(text),
        b'Q' | b'q' => {
            let mut out = Vec::with_capacity(text.len());
            let mut i = 0;
            while i < text.len() {
                match text[i] {
                    b'_' => out.push(b' '),
                    b'=' => match (text.get(i + 1).and_then(|&c| hex(c)), text.get(i + 2).and_then(|&c| hex(c))) {
                        (Some(h), Some(l)) => {
                            out.push(h << 4 | l);
                            i += 2;
                        }
                        _ => out.push(b'='),
                    },
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    Some((charset, decoded, 2 + text_start + text_len + 2))
}

/// Decodes the RFC 2047 encoded words of a header value to UTF-8. White
/// space between two adjacent encoded words is dropped (§6.2), and adjacent
/// words in the same charset are joined before conversion, so a multi-octet
/// character split across two words (common in Cyrillic subjects) survives.
/// Words are recognised anywhere, even inside quoted strings and glued to
/// other text, as readers do. Octets outside encoded words are read as
/// UTF-8.
pub(crate) fn rfc2047(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending: Option<(&[u8], Vec<u8>)> = None;
    let flush = |out: &mut String, pending: &mut Option<(&[u8], Vec<u8>)>| {
        if let Some((cs, bytes)) = pending.take() {
            out.push_str(&to_utf8(&bytes, Some(cs)));
        }
    };
    let mut i = 0;
    let mut plain_start = 0;
    while i < value.len() {
        let Some(at) = memmem::find(&value[i..], b"=?") else { break };
        let at = i + at;
        let Some((cs, bytes, len)) = encoded_word(&value[at..]) else {
            i = at + 2;
            continue;
        };
        let gap = &value[plain_start..at];
        let adjacent = pending.is_some() && gap.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if !adjacent {
            flush(&mut out, &mut pending);
            out.push_str(&String::from_utf8_lossy(gap));
        }
        match &mut pending {
            Some((pcs, pbytes)) if pcs.eq_ignore_ascii_case(cs) => pbytes.extend_from_slice(&bytes),
            _ => {
                flush(&mut out, &mut pending);
                pending = Some((cs, bytes));
            }
        }
        i = at + len;
        plain_start = i;
    }
    flush(&mut out, &mut pending);
    out.push_str(&String::from_utf8_lossy(&value[plain_start..]));
    out
}

/// Case folding for SEARCH and the SORT/THREAD collation: Unicode lower
/// case, character by character (close to `i;unicode-casemap` for the
/// scripts our users write; no normalisation).
pub(crate) fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Visible text of an HTML document for SEARCH: tags dropped (block tags
/// become a space), `script` and `style` content dropped, the common
/// character references decoded. Linear, allocation of one output string.
pub(crate) fn html_text(html: &str) -> String {
    let b = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    let mut text_start = 0;
    while i < b.len() {
        match b[i] {
            b'<' => {
                out.push_str(&html[text_start..i]);
                let (end, tag_end) = memchr::memchr(b'>', &b[i..]).map_or((b.len(), b.len()), |e| (i + e + 1, i + e));
                let tag = &b[i + 1..tag_end.max(i + 1)];
                let name: Vec<u8> = tag.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'/' || **c == b'!').map(u8::to_ascii_lowercase).collect();
                i = end;
                if name == b"script" || name == b"style" {
                    let close = if name == b"script" { &b"script"[..] } else { &b"style"[..] };
                    let from = i;
                    i = memmem::find_iter(&b[from..], b"</")
                        .map(|p| from + p)
                        .find(|&p| b.get(p + 2..p + 2 + close.len()).is_some_and(|n| n.eq_ignore_ascii_case(close)))
                        .map_or(b.len(), |p| memchr::memchr(b'>', &b[p..]).map_or(b.len(), |e| p + e + 1));
                } else if name.starts_with(b"!--") {
                    // A comment runs to "-->", which may lie past the first '>'.
                    if !tag.ends_with(b"--") {
                        let from = i;
                        i = memmem::find(&b[from..], b"-->").map_or(b.len(), |p| from + p + 3);
                    }
                } else if matches!(
                    name.strip_prefix(b"/").unwrap_or(&name),
                    b"br" | b"p" | b"div" | b"tr" | b"td" | b"th" | b"li" | b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" | b"table" | b"blockquote"
                ) {
                    out.push(' ');
                }
                text_start = i;
            }
            b'&' => {
                out.push_str(&html[text_start..i]);
                let semi = b[i..].iter().take(12).position(|&c| c == b';');
                let decoded = semi.and_then(|s| entity(&html[i + 1..i + s]).map(|c| (c, s)));
                match decoded {
                    Some((c, s)) => {
                        out.push(c);
                        i += s + 1;
                    }
                    None => {
                        out.push('&');
                        i += 1;
                    }
                }
                text_start = i;
            }
            _ => i += 1,
        }
    }
    if text_start < b.len() {
        out.push_str(&html[text_start..]);
    }
    out
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lenient() {
        assert_eq!(base64(b"SGVsbG8sIHdvcmxkIQ==\r\n"), b"Hello, world!");
        assert_eq!(base64(b"SGVs\r\nbG8s IHdv*cmxk"), b"Hello, world");
        assert_eq!(base64(b"SGVsbG8"), b"Hello");
        assert_eq!(base64(b"S"), b"");
    }

    #[test]
    fn quoted_printable_lenient() {
        assert_eq!(quoted_printable(b"caf=C3=A9 =\r\nok  \r\nx=3d=ZZ="), "café ok\r\nx==ZZ".as_bytes());
        assert_eq!(quoted_printable(b"a=e2=82=ac"), "a€".as_bytes());
        assert_eq!(quoted_printable(b"soft= \nbreak"), b"softbreak");
    }

    #[test]
    fn encoded_words() {
        assert_eq!(rfc2047(b"=?UTF-8?B?0J/RgNC40LLQtdGC?="), "Привет");
        // Split inside a character; joined before conversion.
        assert_eq!(rfc2047(b"=?UTF-8?B?0J/RgNC4?= =?UTF-8?B?0LLQtdGC?= world"), "Привет world");
        assert_eq!(rfc2047(b"=?koi8-r?B?8NLJ18XU?="), "Привет");
        assert_eq!(rfc2047(b"=?windows-1251?Q?=CF=F0=E8=E2=E5=F2_=EC=E8=F0?="), "Привет мир");
        assert_eq!(rfc2047(b"Re: =?ISO-8859-1?Q?a?= b =?ISO-8859-1?Q?c?="), "Re: a b c");
        assert_eq!(rfc2047(b"=?bogus"), "=?bogus");
        assert_eq!(rfc2047(b"a =?utf-8*ru?q?x?=="), "a x=");
    }

    #[test]
    fn html() {
        assert_eq!(html_text("<html><head><style>p{}</style></head><body><p>Hello&nbsp;<b>W</b>orld</p>&#1046;&amp;<!-- x -->y</body>"), " Hello World Ж&y");
        assert_eq!(html_text("a <script>if (a<b) {}</script>b"), "a b");
        assert_eq!(html_text("broken <tag"), "broken ");
    }
}
