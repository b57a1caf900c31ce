//! SMTP reply parsing (RFC 5321 §4.2) with hard limits, and the EHLO
//! keywords the client acts on. Pure code, no I/O.

/// Longest reply line accepted, excluding CRLF. RFC 5321 allows 512; real
/// servers exceed that in EHLO and error texts, so allow generous slack.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Most lines accepted in one (multiline) reply.
pub const MAX_REPLY_LINES: usize = 64;
/// A complete SMTP reply: the code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    pub fn is_ok(&self) -> bool {
        self.class() == 2
    }

    /// First line, truncated, for failure reports.
    pub fn summary(&self) -> String {
        let text = self.lines.first().map_or("", String::as_str);
        let mut s = format!("{} {}", self.code, text.trim_end());
        if s.len() > 160 {
            let mut cut = 160;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply code changed inside a multiline reply ({0} then {1})")]
    CodeMismatch(u16, u16),
}

/// Incremental reply parser: feed it lines, get a [`Reply`] on the last one.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line with its line terminator already removed.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() > MAX_LINE_LEN {
            return Err(ReplyError::LineTooLong);
        }
        let malformed = || {
            let shown = &line[..line.len().min(64)];
            ReplyError::Malformed(String::from_utf8_lossy(shown).into_owned())
        };
        let code = match line {
            // RFC 5321 §4.2: the first digit is 2..5; 1yz is not used in SMTP.
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
            _ => return Err(malformed()),
        };
        let (last, text) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(malformed()),
        };
        if let Some(first) = self.code {
            if first != code {
                return Err(ReplyError::CodeMismatch(first, code));
            }
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(code);
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(Reply { code, lines: std::mem::take(&mut self.lines) }))
    }
}

/// Parses one complete reply from the start of `buf`. Returns the reply and
/// the number of bytes consumed, or `Ok(None)` if more input is needed.
/// Bare LF line ends are tolerated, as most clients do. The live client uses
/// the same [`ReplyParser`] incrementally; this is its whole-buffer form.
#[cfg(test)]
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut parser = ReplyParser::default();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().take(MAX_LINE_LEN + 2).position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE_LEN + 1 {
                return Err(ReplyError::LineTooLong);
            }
            return Ok(None);
        };
        pos += nl + 1;
        if let Some(reply) = parser.push_line(strip_cr(&rest[..nl]))? {
            return Ok(Some((reply, pos)));
        }
    }
}

#[cfg(test)]
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The EHLO keywords the load generator cares about.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub size: bool,
}

impl Capabilities {
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        // The first line is the server's greeting, not a keyword.
        for line in reply.lines.iter().skip(1) {
            let keyword = line.split_ascii_whitespace().next().unwrap_or("");
            let is = |k: &str| keyword.eq_ignore_ascii_case(k);
            caps.pipelining |= is("PIPELINING");
            caps.starttls |= is("STARTTLS");
            caps.size |= is("SIZE");
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<Option<(Reply, usize)>, ReplyError> {
        parse_reply(input.as_bytes())
    }

    #[test]
    fn single_line() {
        let (reply, used) = parse("250 OK\r\nextra").unwrap().unwrap();
        assert_eq!(reply, Reply { code: 250, lines: vec!["OK".into()] });
        assert_eq!(used, 8);
        assert!(reply.is_ok());
    }

    #[test]
    fn multiline_and_capabilities() {
        let input = "250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 STARTTLS\r\n";
        let (reply, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(reply.lines.len(), 5);
        let caps = Capabilities::from_ehlo(&reply);
        assert_eq!(caps, Capabilities { pipelining: true, starttls: true, size: true });
        // The greeting line is not a keyword.
        let (r, _) = parse("250-PIPELINING\r\n250 HELP\r\n").unwrap().unwrap();
        assert!(!Capabilities::from_ehlo(&r).pipelining);
    }

    #[test]
    fn bare_code_bare_lf_and_case() {
        let (reply, _) = parse("354\r\n").unwrap().unwrap();
        assert_eq!(reply.code, 354);
        assert_eq!(reply.lines, vec![String::new()]);
        let (reply, used) = parse("250-a\n250 b\n").unwrap().unwrap();
        assert_eq!((reply.lines.len(), used), (2, 12));
        let (r, _) = parse("250-x\r\n250 pipelining\r\n").unwrap().unwrap();
        assert!(Capabilities::from_ehlo(&r).pipelining);
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("25").unwrap(), None);
        assert_eq!(parse("250 OK").unwrap(), None);
        assert_eq!(parse("250-first\r\n250 sec").unwrap(), None);
    }

    #[test]
    fn malformed() {
        for bad in ["OK\r\n", "2x0 no\r\n", "250xno\r\n", "099 low\r\n", "150 x\r\n", "650 high\r\n", "\r\n", "25\r\n"] {
            assert!(matches!(parse(bad), Err(ReplyError::Malformed(_))), "{bad:?}");
        }
        assert_eq!(parse("250-a\r\n251 b\r\n"), Err(ReplyError::CodeMismatch(250, 251)));
        // Invalid UTF-8 is tolerated in the text.
        let (r, _) = parse_reply(b"550 \xff\xfe bad\r\n").unwrap().unwrap();
        assert_eq!(r.code, 550);
    }

    #[test]
    fn too_long_line_and_too_many_lines() {
        let long = format!("250 {}\r\n", "x".repeat(MAX_LINE_LEN));
        assert_eq!(parse(&long), Err(ReplyError::LineTooLong));
        let unterminated = "2".repeat(MAX_LINE_LEN + 2);
        assert_eq!(parse(&unterminated), Err(ReplyError::LineTooLong));
        let just_fits = format!("250 {}\r\n", "x".repeat(MAX_LINE_LEN - 4));
        assert!(parse(&just_fits).unwrap().is_some());
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 x\r\n";
        assert_eq!(parse(&many), Err(ReplyError::TooManyLines));
        let max = "250-x\r\n".repeat(MAX_REPLY_LINES - 1) + "250 x\r\n";
        assert_eq!(parse(&max).unwrap().unwrap().0.lines.len(), MAX_REPLY_LINES);
    }

    #[test]
    fn summary_is_bounded() {
        let r = Reply { code: 550, lines: vec!["é".repeat(200)] };
        let s = r.summary();
        assert!(s.len() <= 163 && s.starts_with("550 é") && s.ends_with("..."));
    }
}
