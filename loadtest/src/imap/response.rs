//! Incremental parser for IMAP server responses (RFC 9051 §7): tagged,
//! untagged (`*`) and continuation (`+`) responses, with literals
//! (`{n}\r\n` followed by exactly n bytes) anywhere in a response.
//!
//! The parser only frames responses: it finds where one response ends
//! (which needs literal lengths), splits off the tag and keeps the literal
//! bytes separately. Anything that is not a well-formed response line is
//! garbage and reported as an error, which the load generator counts as a
//! protocol error.

use std::fmt;

/// Longest response line (excluding literals) accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest literal accepted.
pub const MAX_LITERAL: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Untagged,
    Continuation,
    Tagged(String),
}

/// One complete server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub kind: Kind,
    /// The response after the tag / `*` / `+` and one space; each literal
    /// appears as its `{n}` announcement, its bytes are in `literals`.
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

impl Response {
    /// The status word (`OK`, `NO`, `BAD`, `BYE`, `PREAUTH`), upper-cased,
    /// if the response starts with one.
    pub fn status(&self) -> Option<&'static str> {
        let word = self.text.split(' ').next().unwrap_or("");
        ["OK", "NO", "BAD", "BYE", "PREAUTH"].into_iter().find(|s| word.eq_ignore_ascii_case(s))
    }

    /// `* n WORD ...` → (n, WORD upper-cased), e.g. `(3, "EXISTS")`.
    pub fn numbered(&self) -> Option<(u32, String)> {
        if self.kind != Kind::Untagged {
            return None;
        }
        let mut words = self.text.split(' ');
        let n = words.next()?.parse().ok()?;
        Some((n, words.next()?.to_ascii_uppercase()))
    }

    /// The value of a bracketed response code such as
    /// `OK [APPENDUID 17 42] done` → for `APPENDUID`, `"17 42"`.
    pub fn code(&self, name: &str) -> Option<&str> {
        let open = self.text.find('[')?;
        let close = open + self.text[open..].find(']')?;
        let inner = &self.text[open + 1..close];
        let (word, rest) = inner.split_once(' ').unwrap_or((inner, ""));
        word.eq_ignore_ascii_case(name).then_some(rest)
    }

    /// Total literal bytes.
    pub fn literal_bytes(&self) -> usize {
        self.literals.iter().map(Vec::len).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    LineTooLong,
    LiteralTooLarge(u64),
    BareLf,
    Garbage(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::LineTooLong => write!(f, "response line longer than {MAX_LINE} bytes"),
            ParseError::LiteralTooLarge(n) => write!(f, "literal of {n} bytes exceeds {MAX_LITERAL}"),
            ParseError::BareLf => write!(f, "line ended by LF without CR"),
            ParseError::Garbage(s) => write!(f, "malformed response {s:?}"),
        }
    }
}

/// `{n}` or `{n+}` at the end of a line segment → n.
fn literal_len(segment: &[u8]) -> Result<Option<u64>, ParseError> {
    let Some(inner) = segment.strip_suffix(b"}") else { return Ok(None) };
    let Some(open) = inner.iter().rposition(|&b| b == b'{') else { return Ok(None) };
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    let n: u64 = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(|| ParseError::Garbage("literal length".into()))?;
    if n > MAX_LITERAL as u64 {
        return Err(ParseError::LiteralTooLarge(n));
    }
    Ok(Some(n))
}

fn is_tag_char(b: u8) -> bool {
    // astring chars minus '+' (RFC 9051 tag), which also excludes '*'.
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']' | b'+')
}

/// Parses one response from the start of `buf`. `Ok(None)`: incomplete,
/// read more. `Ok(Some((response, consumed)))` otherwise.
pub fn parse(buf: &[u8]) -> Result<Option<(Response, usize)>, ParseError> {
    let mut pos = 0;
    let mut line_bytes = 0usize;
    let mut text: Vec<u8> = Vec::new();
    let mut literals = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            if line_bytes + rest.len() > MAX_LINE {
                return Err(ParseError::LineTooLong);
            }
            return Ok(None);
        };
        if lf == 0 || rest[lf - 1] != b'\r' {
            return Err(ParseError::BareLf);
        }
        let segment = &rest[..lf - 1];
        line_bytes += segment.len();
        if line_bytes > MAX_LINE {
            return Err(ParseError::LineTooLong);
        }
        text.extend_from_slice(segment);
        let after = pos + lf + 1;
        match literal_len(segment)? {
            Some(n) => {
                let n = n as usize;
                if buf.len() < after + n {
                    return Ok(None);
                }
                literals.push(buf[after..after + n].to_vec());
                pos = after + n;
            }
            None => {
                pos = after;
                break;
            }
        }
    }
    let kind_and_text = classify(&text)?;
    Ok(Some((Response { kind: kind_and_text.0, text: kind_and_text.1, literals }, pos)))
}

fn classify(line: &[u8]) -> Result<(Kind, String), ParseError> {
    let garbage = || ParseError::Garbage(String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match line {
        [b'*', b' ', rest @ ..] if !rest.is_empty() => Ok((Kind::Untagged, text(rest))),
        [b'+'] => Ok((Kind::Continuation, String::new())),
        [b'+', b' ', rest @ ..] => Ok((Kind::Continuation, text(rest))),
        _ => {
            let space = line.iter().position(|&b| b == b' ').ok_or_else(garbage)?;
            let (tag, rest) = (&line[..space], &line[space + 1..]);
            if tag.is_empty() || !tag.iter().all(|&b| is_tag_char(b)) {
                return Err(garbage());
            }
            let rest = text(rest);
            let word = rest.split(' ').next().unwrap_or("");
            if !["OK", "NO", "BAD"].iter().any(|s| word.eq_ignore_ascii_case(s)) {
                return Err(garbage());
            }
            Ok((Kind::Tagged(text(tag)), rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Response {
        let (r, n) = parse(input).unwrap().unwrap();
        assert_eq!(n, input.len(), "consumed all of {input:?}");
        r
    }

    #[test]
    fn tagged_untagged_continuation() {
        let r = one(b"A12 OK [READ-WRITE] SELECT completed\r\n");
        assert_eq!(r.kind, Kind::Tagged("A12".into()));
        assert_eq!(r.status(), Some("OK"));
        assert_eq!(r.code("READ-WRITE"), Some(""));
        let r = one(b"* 172 EXISTS\r\n");
        assert_eq!(r.kind, Kind::Untagged);
        assert_eq!(r.numbered(), Some((172, "EXISTS".into())));
        assert_eq!(r.status(), None);
        let r = one(b"* BYE shutting down\r\n");
        assert_eq!(r.status(), Some("BYE"));
        assert_eq!(one(b"+ Ready for literal data\r\n").kind, Kind::Continuation);
        assert_eq!(one(b"+\r\n").kind, Kind::Continuation);
        let r = one(b"a1 no [AUTHENTICATIONFAILED] bad\r\n");
        assert_eq!(r.status(), Some("NO"));
        let r = one(b"T3 OK [APPENDUID 38505 3955] APPEND completed\r\n");
        assert_eq!(r.code("APPENDUID"), Some("38505 3955"));
        assert_eq!(r.code("COPYUID"), None);
    }

    #[test]
    fn literals_are_framed_by_length() {
        // The literal contains CRLFs, a fake tagged line and a '}' at a line end.
        let body = b"Subject: x\r\nA1 OK fake\r\n{5}\r\n";
        let mut input = format!("* 1 FETCH (UID 7 BODY[] {{{}}}\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b" FLAGS (\\Seen))\r\n");
        let r = one(&input);
        assert_eq!(r.kind, Kind::Untagged);
        assert_eq!(r.literals, vec![body.to_vec()]);
        assert_eq!(r.text, format!("1 FETCH (UID 7 BODY[] {{{}}} FLAGS (\\Seen))", body.len()));
        assert_eq!(r.literal_bytes(), body.len());
        // Two literals and a non-synchronising one.
        let r = one(b"* 2 FETCH (BODY[1] {2}\r\nab BODY[2] {3+}\r\ncde)\r\n");
        assert_eq!(r.literals, vec![b"ab".to_vec(), b"cde".to_vec()]);
        // Zero-length literal.
        assert_eq!(one(b"* 3 FETCH (BODY[] {0}\r\n)\r\n").literals, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let full = b"* 1 FETCH (BODY[] {10}\r\n0123456789)\r\nA1 OK done\r\n";
        for cut in 0..37 {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let (r, n) = parse(full).unwrap().unwrap();
        assert_eq!(r.literals[0], b"0123456789");
        let (t, m) = parse(&full[n..]).unwrap().unwrap();
        assert_eq!(t.kind, Kind::Tagged("A1".into()));
        assert_eq!(n + m, full.len());
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [&b"hello\r\n"[..], b"A1 MAYBE later\r\n", b"* \r\n", b"\r\n", b"(x OK\r\n", b"*A OK\r\n", b"A1 OK\n"] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"* OK x\n"), Err(ParseError::BareLf));
        assert_eq!(parse(&vec![b'a'; MAX_LINE + 1]), Err(ParseError::LineTooLong));
        assert!(matches!(parse(b"* 1 FETCH (BODY[] {99999999999}\r\n"), Err(ParseError::LiteralTooLarge(_))));
        // Braces that are not a literal announcement are just text.
        assert_eq!(one(b"* OK {not a literal}\r\n").literals.len(), 0);
    }
}
