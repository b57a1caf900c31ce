//! Server replies as the client reads them (RFC 5321 §4.2): one or more
//! lines `ddd-text` ending with `ddd text` (or a bare `ddd`), all with the
//! same code. The parser is incremental: it takes whatever bytes arrived
//! and yields whole replies; an incomplete line is "need more", not an
//! error.
//!
//! Limits (a hostile or broken server must not make us buffer without
//! bound):
//! - [`REPLY_LINE_BYTES_MAX`]: RFC 5321 §4.5.3.1.5 says 512 octets; real
//!   servers exceed it with long EHLO or rejection texts, so we accept 4
//!   KiB per line and call anything longer garbage.
//! - [`REPLY_LINES_MAX`]: an EHLO reply has one line per extension; 64 is
//!   several times what any server sends.
//!
//! Garbage (no 3-digit code, a code outside 2xx–5xx, a continuation line
//! with another code, an over-long line) is a [`ReplyError`]; the client
//! treats it as a temporary failure of the connection.

/// Longest reply line we accept, including CRLF.
pub const REPLY_LINE_BYTES_MAX: usize = 4096;
/// Most lines in one multi-line reply.
pub const REPLY_LINES_MAX: usize = 64;

/// A complete reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// The enhanced status code of the first line (RFC 3463), when the
    /// server sent one whose class matches the reply code.
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text of each line, without code, separator and line ending.
    /// Non-UTF-8 bytes are replaced.
    pub lines: Vec<String>,
}

impl ServerReply {
    /// A reply we make up for a local decision (size, SMTPUTF8, timeouts),
    /// so every recipient outcome carries a reply in the same form.
    pub fn local(code: u16, enhanced: (u8, u16, u16), text: &str) -> Self {
        Self { code, enhanced: Some(enhanced), lines: vec![format!("{}.{}.{} {text}", enhanced.0, enhanced.1, enhanced.2)] }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The RFC 3463 status for a DSN: the server's enhanced code, or the
    /// generic one of its class (RFC 3463 §3.1: x.0.0).
    pub fn status(&self) -> String {
        match self.enhanced {
            Some((c, s, d)) => format!("{c}.{s}.{d}"),
            None => format!("{}.0.0", self.code / 100),
        }
    }

    /// One line for logs, queue listings and DSN `Diagnostic-Code: smtp;`:
    /// `550 5.1.1 text` with the lines joined by a space, capped at
    /// [`REPLY_LINE_BYTES_MAX`] octets.
    pub fn one_line(&self) -> String {
        let mut out = self.code.to_string();
        for line in &self.lines {
            out.push(' ');
            out.push_str(line);
        }
        if out.len() > REPLY_LINE_BYTES_MAX {
            let mut cut = REPLY_LINE_BYTES_MAX;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        out
    }
}

/// Why the bytes from the server are not a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    LineTooLong,
    TooManyLines,
    /// Not `ddd`, `ddd-` or `ddd ` with a code in 200–599, or a
    /// continuation line with a different code.
    Syntax,
}

/// Incremental reply reader.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Reads at most one reply from the start of `input`. Returns the bytes
    /// consumed and the reply if one completed; `(n, None)` with `n` the
    /// length of the whole lines taken so far means "need more".
    pub fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<ServerReply>), ReplyError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let Some(end) = memchr::memchr(b'\n', rest) else {
                if rest.len() >= REPLY_LINE_BYTES_MAX {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok((pos, None));
            };
            if end + 1 > REPLY_LINE_BYTES_MAX {
                return Err(ReplyError::LineTooLong);
            }
            let mut line = &rest[..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            pos += end + 1;
            let (code, last, text) = split_line(line)?;
            if self.code.is_some_and(|c| c != code) {
                return Err(ReplyError::Syntax);
            }
            if self.lines.len() >= REPLY_LINES_MAX {
                return Err(ReplyError::TooManyLines);
            }
            self.code = Some(code);
            self.lines.push(String::from_utf8_lossy(text).into_owned());
            if last {
                let lines = std::mem::take(&mut self.lines);
                self.code = None;
                let enhanced = lines.first().and_then(|l| parse_enhanced(l, code));
                return Ok((pos, Some(ServerReply { code, enhanced, lines })));
            }
        }
    }
}

fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let digits = line.get(..3).ok_or(ReplyError::Syntax)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::Syntax);
    }
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..600).contains(&code) {
        return Err(ReplyError::Syntax);
    }
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ReplyError::Syntax),
    }
}

/// `c.s.d` at the start of the text (RFC 3463 §2: class 2, 4 or 5 equal to
/// the reply's first digit, subject and detail up to 3 digits).
fn parse_enhanced(text: &str, code: u16) -> Option<(u8, u16, u16)> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let num = |p: Option<&str>| -> Option<u16> {
        let p = p?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let class = num(parts.next())?;
    let subject = num(parts.next())?;
    let detail = num(parts.next())?;
    if parts.next().is_some() || class != code / 100 {
        return None;
    }
    Some((u8::try_from(class).ok()?, subject, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<ServerReply>, ReplyError> {
        let mut p = ReplyParser::default();
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (n, reply) = p.parse(&input[pos..])?;
            pos += n;
            match reply {
                Some(r) => out.push(r),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse_all(b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 220);
        assert_eq!(r[1].lines, vec!["mx.example", "PIPELINING", "SIZE 1000"]);
    }

    #[test]
    fn enhanced_codes_and_bare_code() {
        let r = parse_all(b"550 5.1.1 no such user\r\n250\r\n451 5.1.1 class mismatch\n").unwrap();
        assert_eq!(r[0].enhanced, Some((5, 1, 1)));
        assert_eq!(r[0].status(), "5.1.1");
        assert_eq!(r[1].lines, vec![""]);
        assert_eq!(r[2].enhanced, None);
        assert_eq!(r[2].status(), "4.0.0");
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input = b"250-a\r\n250-b\r\n250 c\r\n354 go\r\n";
        let whole = parse_all(input).unwrap();
        let mut p = ReplyParser::default();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in input {
            buf.push(b);
            let (n, r) = p.parse(&buf).unwrap();
            buf.drain(..n);
            got.extend(r);
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(parse_all(b"hello\r\n"), Err(ReplyError::Syntax));
        assert_eq!(parse_all(b"250-a\r\n251 b\r\n"), Err(ReplyError::Syntax));
        assert_eq!(parse_all(b"199 x\r\n"), Err(ReplyError::Syntax));
        assert_eq!(parse_all(b"250x\r\n"), Err(ReplyError::Syntax));
        assert_eq!(parse_all(&vec![b'2'; REPLY_LINE_BYTES_MAX + 1]), Err(ReplyError::LineTooLong));
        let many: Vec<u8> = b"250-x\r\n".repeat(REPLY_LINES_MAX + 1);
        assert_eq!(parse_all(&many), Err(ReplyError::TooManyLines));
    }
}
