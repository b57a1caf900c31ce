//! Splitting the client's byte stream into whole commands (RFC 9051 §2.2,
//! §4.3, §7.5): a command is a line, or several lines joined by literals
//! (`{n}` synchronizing, `{n+}` non-synchronizing per RFC 7888 LITERAL+ /
//! LITERAL-, `~{n}` literal8 per RFC 3516). The framer enforces every size
//! limit before buffering, answers nothing itself and never blocks: the
//! driver feeds whatever bytes it has and gets back at most one [`Frame`].
//!
//! # Line ends
//!
//! CRLF is the standard; a bare LF is accepted as a line end too (as
//! Dovecot and Cyrus do: hand-typed sessions and some scripts send it, and
//! an LF can never be part of a valid line anyway). A CR not followed by LF
//! stays in the line, where the parser refuses it. In a [`Frame::Command`]
//! the final line end is removed and every literal announcement is
//! followed by exactly `\r\n`, whichever end the client used, so the
//! parser sees one canonical form.
//!
//! # Refusals
//!
//! - A line over [`FramerLimits::line_bytes_max`] is discarded up to its
//!   end; then the command is [`Frame::Rejected`] with its tag if the tag
//!   was readable.
//! - A synchronizing literal over a limit is refused at once: no `+` is
//!   sent, and the client, seeing the tagged response, treats the command
//!   as done (RFC 9051 §7.5, RFC 7889 §4); the next octet starts a new
//!   command.
//! - A non-synchronizing literal over a limit is read and discarded (with
//!   the rest of its command) when it is at most the largest literal the
//!   connection accepts anywhere; beyond that, following it would mean
//!   reading arbitrarily much, so the framer gives up: [`Frame::Fatal`]
//!   (RFC 7888 §4 allows either).
//!
//! While discarding, only the last [`TAIL_BYTES`] octets of a line are
//! kept, to notice a literal announcement at its end.

use memchr::memchr;

use super::response::{write_status, ResponseCode, Status};
use super::wire::is_astring_char;

/// Longest command line before login, CRLF included. Every pre-login
/// command (LOGIN with two 255-octet credentials, AUTHENTICATE with a
/// SASL-IR, ID with 30 pairs) fits in far less; 8 KiB also follows
/// RFC 7162 §4, which asks clients to keep lines under 8192 octets.
pub const LINE_BYTES_MAX_BEFORE_LOGIN: usize = 8 << 10;
/// Longest non-APPEND literal before login: a user name or password.
pub const LITERAL_BYTES_MAX_BEFORE_LOGIN: usize = 8 << 10;
/// Literals in one command before login: LOGIN needs two; a few to spare.
pub const LITERALS_PER_COMMAND_MAX_BEFORE_LOGIN: usize = 4;
/// Lines plus literals of one command before login.
pub const COMMAND_BYTES_MAX_BEFORE_LOGIN: usize = 32 << 10;
/// Longest command line after login, CRLF included. UID sets of a large
/// mailbox (`UID FETCH 1,3,5,...`) and long SEARCH lines are what need
/// room; 64 KiB is Dovecot's `imap_max_line_length`, which clients are
/// known to live with.
pub const LINE_BYTES_MAX: usize = 64 << 10;
/// Longest literal after login outside APPEND messages: mailbox names,
/// search strings, passwords (LOGIN again after UNAUTHENTICATE).
pub const LITERAL_BYTES_MAX: usize = 64 << 10;
/// Literals in one command after login: a MULTIAPPEND batch or a SEARCH
/// with many string keys. Memory is bounded by the byte limits anyway;
/// this only stops pathological streams of tiny literals.
pub const LITERALS_PER_COMMAND_MAX: usize = 1000;
/// Lines plus non-message literals of one command after login. APPEND
/// message literals are bounded separately by the append limit.
pub const COMMAND_BYTES_MAX: usize = 1 << 20;
/// Octets of a line kept while discarding it, enough to find a literal
/// announcement `~{<digits>+}` with up to 60 digits at its end.
pub const TAIL_BYTES: usize = 64;
/// Longest tag echoed in a rejection (and accepted by the parser). RFC
/// 9051 sets no limit; clients use a few characters.
pub const TAG_BYTES_MAX: usize = 256;

/// The size limits in force; stricter before login ([`FramerLimits::before_login`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerLimits {
    /// One line, CRLF included, literal data excluded.
    pub line_bytes_max: usize,
    /// One literal outside APPEND messages.
    pub literal_bytes_max: usize,
    /// One APPEND message literal (RFC 7889 APPENDLIMIT), and also the sum
    /// of all message literals of a MULTIAPPEND (RFC 3502), since a command
    /// is delivered as one frame.
    pub append_literal_bytes_max: u64,
    pub literals_per_command_max: usize,
    /// All lines and non-message literals of one command.
    pub command_bytes_max: usize,
}

impl FramerLimits {
    /// Before authentication: nothing needs much room, and an
    /// unauthenticated client must not make us buffer or read much. APPEND
    /// is refused by the session anyway; its literals get the literal limit.
    pub fn before_login() -> Self {
        Self {
            line_bytes_max: LINE_BYTES_MAX_BEFORE_LOGIN,
            literal_bytes_max: LITERAL_BYTES_MAX_BEFORE_LOGIN,
            append_literal_bytes_max: LITERAL_BYTES_MAX_BEFORE_LOGIN as u64,
            literals_per_command_max: LITERALS_PER_COMMAND_MAX_BEFORE_LOGIN,
            command_bytes_max: COMMAND_BYTES_MAX_BEFORE_LOGIN,
        }
    }

    /// After authentication; `append_limit` is the APPENDLIMIT advertised
    /// (the largest message the user may store).
    pub fn after_login(append_limit: u64) -> Self {
        Self {
            line_bytes_max: LINE_BYTES_MAX,
            literal_bytes_max: LITERAL_BYTES_MAX,
            append_literal_bytes_max: append_limit,
            literals_per_command_max: LITERALS_PER_COMMAND_MAX,
            command_bytes_max: COMMAND_BYTES_MAX,
        }
    }

    /// The largest literal accepted anywhere: a non-synchronizing literal
    /// up to this size is skipped when refused; a larger one is fatal.
    fn skip_bound(&self) -> u64 {
        self.append_literal_bytes_max.max(self.literal_bytes_max as u64)
    }
}

/// What the framer has for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole command: the line(s) with literals inline, as received,
    /// except that the final line end is removed and each literal
    /// announcement ends in `\r\n` (see the module docs).
    Command(Vec<u8>),
    /// A synchronizing literal `{n}` was announced and accepted: send
    /// `+ Ready for literal data\r\n` now.
    Continue,
    /// The command is refused before it is complete; the framer has
    /// already skipped its octets. Reply with [`Rejection::write`].
    Rejected { tag: Option<String>, response: Rejection },
    /// The stream cannot be followed any more (a non-synchronizing literal
    /// beyond every limit): send `* BYE <text>` and close. The framer
    /// consumes and ignores everything after this.
    Fatal(&'static str),
}

/// Why a command was refused by the framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A line over `line_bytes_max`: `BAD`.
    LineTooLong,
    /// A literal over `literal_bytes_max`: `BAD [TOOBIG]`.
    LiteralTooLong,
    /// An APPEND message over the append limit: `NO [TOOBIG]` (RFC 7889).
    TooBig,
    /// More than `literals_per_command_max` literals: `BAD [LIMIT]`.
    TooManyLiterals,
    /// The command as a whole over `command_bytes_max`, or a MULTIAPPEND
    /// whose messages together exceed the append limit: `NO [LIMIT]`.
    CommandTooBig,
}

impl Rejection {
    pub fn status(self) -> Status {
        match self {
            Rejection::LineTooLong | Rejection::LiteralTooLong | Rejection::TooManyLiterals => Status::Bad,
            Rejection::TooBig | Rejection::CommandTooBig => Status::No,
        }
    }

    pub fn code(self) -> Option<ResponseCode> {
        match self {
            Rejection::LineTooLong => None,
            Rejection::LiteralTooLong | Rejection::TooBig => Some(ResponseCode::TooBig),
            Rejection::TooManyLiterals | Rejection::CommandTooBig => Some(ResponseCode::Limit),
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Rejection::LineTooLong => "Command line too long",
            Rejection::LiteralTooLong => "Literal too large",
            Rejection::TooBig => "Message too large",
            Rejection::TooManyLiterals => "Too many literals in one command",
            Rejection::CommandTooBig => "Command too large; send messages in separate APPEND commands",
        }
    }

    /// Appends the response line; `tag: None` writes `*`.
    pub fn write(self, out: &mut Vec<u8>, tag: Option<&str>) {
        write_status(out, tag, self.status(), self.code().as_ref(), self.text());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading (or discarding) a line.
    Line,
    /// Reading (or discarding) literal octets.
    Literal { remaining: u64 },
    /// After `Frame::Fatal`.
    Dead,
}

/// A literal announcement at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announce {
    /// Saturates at `u64::MAX` for absurd digit strings.
    size: u64,
    sync: bool,
    /// Offset of `{` (or `~`) in the line.
    start: usize,
}

/// `[~]{digits[+]}` at the end of `line` (which has no line end).
fn announce_at_end(line: &[u8]) -> Option<Announce> {
    let body = line.strip_suffix(b"}")?;
    let (body, sync) = match body.strip_suffix(b"+") {
        Some(b) => (b, false),
        None => (body, true),
    };
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let open = body.len().checked_sub(digits + 1)?;
    if body.get(open) != Some(&b'{') {
        return None;
    }
    let size = body[open + 1..].iter().fold(0u64, |acc, &b| acc.saturating_mul(10).saturating_add(u64::from(b - b'0')));
    let start = if open > 0 && body[open - 1] == b'~' { open - 1 } else { open };
    Some(Announce { size, sync, start })
}

/// The tag at the start of a command line, if it is a valid one followed by SP.
pub(crate) fn tag_of(line: &[u8]) -> Option<String> {
    let end = line.iter().position(|&b| b == b' ')?;
    let tag = &line[..end];
    let ok = !tag.is_empty() && tag.len() <= TAG_BYTES_MAX && tag.iter().all(|&b| is_astring_char(b) && b != b'+');
    ok.then(|| String::from_utf8_lossy(tag).into_owned())
}

/// `tag APPEND ...`: the command name is the second word.
fn is_append(first_line: &[u8]) -> bool {
    let mut words = first_line.splitn(3, |&b| b == b' ');
    words.next();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// The splitter; one per connection.
#[derive(Debug)]
pub struct Framer {
    limits: FramerLimits,
    state: State,
    /// The command so far (empty while discarding).
    buf: Vec<u8>,
    /// Where the current line begins in `buf` (after the last literal).
    line_start: usize,
    literals: usize,
    /// APPEND message literal octets in `buf`.
    message_bytes: u64,
    /// The command is an APPEND (known at its first literal).
    append: bool,
    /// Discarding the rest of a refused command; the tag and why.
    reject: Option<(Option<String>, Rejection)>,
    /// While discarding a line: its last `TAIL_BYTES` octets.
    tail: Vec<u8>,
    /// The command was refused as too big in the middle of a line: that
    /// line's length so far. If the line turns out too long as well, the
    /// refusal becomes `LineTooLong`, so the verdict does not depend on
    /// how the input was split.
    refused_line_len: Option<usize>,
    /// The first line was refused before its tag could be read in full:
    /// its first octets, collected up to `TAG_BYTES_MAX + 1` while it is
    /// discarded, and read at its end (again so that the split of the
    /// input does not matter).
    tag_head: Option<Vec<u8>>,
}

/// A buffer grown by a large command is given back afterwards; idle
/// connections are many.
const IDLE_CAPACITY_MAX: usize = 16 << 10;

impl Framer {
    pub fn new(limits: FramerLimits) -> Self {
        Self {
            limits,
            state: State::Line,
            buf: Vec::new(),
            line_start: 0,
            literals: 0,
            message_bytes: 0,
            append: false,
            reject: None,
            tail: Vec::new(),
            refused_line_len: None,
            tag_head: None,
        }
    }

    /// New limits, in force from the next octet (normally called between
    /// commands, after a successful login).
    pub fn set_limits(&mut self, limits: FramerLimits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> &FramerLimits {
        &self.limits
    }

    /// No part of a command is buffered or being skipped (e.g. to check that
    /// nothing was pipelined after STARTTLS or COMPRESS).
    pub fn is_idle(&self) -> bool {
        self.state == State::Line && self.buf.is_empty() && self.reject.is_none()
    }

    /// Consumes from `input` as far as it can; returns how many octets were
    /// used and at most one frame. Stops right after a frame, so the driver
    /// can act on it (e.g. answer a `Continue`) before feeding the rest.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        let mut pos = 0;
        while pos < input.len() {
            let avail = &input[pos..];
            match self.state {
                State::Dead => return (input.len(), None),
                State::Literal { remaining } => {
                    let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(avail.len());
                    if self.reject.is_none() {
                        self.buf.extend_from_slice(&avail[..n]);
                    }
                    pos += n;
                    let remaining = remaining - n as u64;
                    self.state = State::Literal { remaining };
                    if remaining == 0 {
                        self.start_line();
                    }
                }
                State::Line => match memchr(b'\n', avail) {
                    None => {
                        self.line_bytes(avail);
                        pos = input.len();
                    }
                    Some(i) => {
                        self.line_bytes(&avail[..i]);
                        pos += i + 1;
                        if let Some(frame) = self.line_end() {
                            return (pos, Some(frame));
                        }
                    }
                },
            }
        }
        (pos, None)
    }

    /// Raw-line mode, for AUTHENTICATE continuation responses and IDLE's
    /// `DONE`: the next line without its line end, at most
    /// `line_bytes_max` octets with it (a longer one is discarded to its
    /// end, then refused). Call only between commands.
    pub fn feed_line(&mut self, input: &[u8]) -> (usize, Option<Result<Vec<u8>, Rejection>>) {
        let (chunk, done) = match memchr(b'\n', input) {
            Some(i) => (&input[..i], Some(i + 1)),
            None => (input, None),
        };
        if self.reject.is_none() {
            if self.buf.len() + chunk.len() >= self.limits.line_bytes_max {
                self.reject = Some((None, Rejection::LineTooLong));
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(chunk);
            }
        }
        let Some(used) = done else {
            return (input.len(), None);
        };
        let result = match self.reject.take() {
            Some(_) => Err(Rejection::LineTooLong),
            None => {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(line)
            }
        };
        self.reset();
        (used, Some(result))
    }

    fn start_line(&mut self) {
        self.state = State::Line;
        self.line_start = self.buf.len();
    }

    fn reset(&mut self) {
        if self.buf.capacity() > IDLE_CAPACITY_MAX {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.state = State::Line;
        self.line_start = 0;
        self.literals = 0;
        self.message_bytes = 0;
        self.append = false;
        self.reject = None;
        self.tail.clear();
        self.refused_line_len = None;
        self.tag_head = None;
    }

    /// Octets of the command outside APPEND messages.
    fn command_bytes(&self) -> usize {
        self.buf.len().saturating_sub(usize::try_from(self.message_bytes).unwrap_or(usize::MAX))
    }

    /// The first octets of the command, enough to read its tag.
    fn tag(&self, more: &[u8]) -> Option<String> {
        let want = TAG_BYTES_MAX + 1;
        let mut head = self.buf[..self.buf.len().min(want)].to_vec();
        head.extend_from_slice(&more[..more.len().min(want - head.len())]);
        tag_of(&head)
    }

    /// Starts discarding the rest of the command.
    fn refuse(&mut self, tag: Option<String>, why: Rejection) {
        self.reject = Some((tag, why));
        self.buf.clear();
    }

    fn push_tail(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
        let excess = (self.tail.len() + keep.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..excess);
        self.tail.extend_from_slice(keep);
    }

    /// Part of a line (no LF in `bytes`).
    fn line_bytes(&mut self, bytes: &[u8]) {
        if self.reject.is_some() {
            if let Some(n) = &mut self.refused_line_len {
                *n = n.saturating_add(bytes.len());
            }
            if let Some(head) = &mut self.tag_head {
                head.extend_from_slice(&bytes[..bytes.len().min((TAG_BYTES_MAX + 1).saturating_sub(head.len()))]);
            }
            return self.push_tail(bytes);
        }
        let line = self.buf.len() - self.line_start + bytes.len();
        // +1: the LF is still to come.
        let why = if line + 1 > self.limits.line_bytes_max {
            Rejection::LineTooLong
        } else if self.command_bytes() + bytes.len() > self.limits.command_bytes_max {
            Rejection::CommandTooBig
        } else {
            self.buf.extend_from_slice(bytes);
            return;
        };
        if self.literals == 0 {
            let mut head = self.buf[..self.buf.len().min(TAG_BYTES_MAX + 1)].to_vec();
            head.extend_from_slice(&bytes[..bytes.len().min((TAG_BYTES_MAX + 1).saturating_sub(head.len()))]);
            self.tag_head = Some(head);
        }
        let tag = self.tag(bytes);
        self.tail = self.buf[self.buf.len().saturating_sub(TAIL_BYTES).max(self.line_start)..].to_vec();
        self.refused_line_len = (why == Rejection::CommandTooBig).then_some(line);
        self.refuse(tag, why);
        self.push_tail(bytes);
    }

    /// The LF of a line was consumed.
    fn line_end(&mut self) -> Option<Frame> {
        if let Some(head) = self.tag_head.take() {
            if let Some((tag, _)) = &mut self.reject {
                *tag = tag_of(&head);
            }
        }
        if let Some(n) = self.refused_line_len.take() {
            if n + 1 > self.limits.line_bytes_max {
                if let Some((_, why)) = &mut self.reject {
                    *why = Rejection::LineTooLong;
                }
            }
        }
        if self.reject.is_some() {
            if self.tail.last() == Some(&b'\r') {
                self.tail.pop();
            }
            let announce = announce_at_end(&self.tail);
            self.tail.clear();
            return match announce {
                Some(a) if !a.sync => self.skip_literal(a.size),
                _ => {
                    let (tag, response) = self.reject.take()?;
                    self.reset();
                    Some(Frame::Rejected { tag, response })
                }
            };
        }
        if self.buf.len() > self.line_start && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        match announce_at_end(&self.buf[self.line_start..]) {
            None => {
                let frame = std::mem::take(&mut self.buf);
                self.reset();
                Some(Frame::Command(frame))
            }
            Some(a) => self.literal(a),
        }
    }

    /// A non-synchronizing literal of a refused command: skip it if it is
    /// within reach, else give up on the stream.
    fn skip_literal(&mut self, size: u64) -> Option<Frame> {
        if size > self.limits.skip_bound() {
            self.reset();
            self.state = State::Dead;
            return Some(Frame::Fatal("Literal too large"));
        }
        self.state = State::Literal { remaining: size };
        if size == 0 {
            self.start_line();
        }
        None
    }

    /// A literal announced at the end of the current line.
    fn literal(&mut self, a: Announce) -> Option<Frame> {
        let first = self.literals == 0;
        if first {
            self.append = is_append(&self.buf);
        }
        self.literals += 1;
        // The mailbox name of `tag APPEND {n}` is the one literal of an
        // APPEND that is not a message.
        let mailbox = first && self.append && self.buf[..a.start].splitn(3, |&b| b == b' ').nth(2).is_some_and(<[u8]>::is_empty);
        let message = self.append && !mailbox;
        let why = if self.literals > self.limits.literals_per_command_max {
            Some(Rejection::TooManyLiterals)
        } else if message && a.size > self.limits.append_literal_bytes_max {
            Some(Rejection::TooBig)
        } else if message && self.message_bytes.saturating_add(a.size) > self.limits.append_literal_bytes_max {
            Some(Rejection::CommandTooBig)
        } else if !message && a.size > self.limits.literal_bytes_max as u64 {
            Some(Rejection::LiteralTooLong)
        } else if !message && (self.command_bytes() as u64).saturating_add(a.size) > self.limits.command_bytes_max as u64 {
            Some(Rejection::CommandTooBig)
        } else {
            None
        };
        if let Some(why) = why {
            let tag = self.tag(&[]);
            if a.sync {
                self.reset();
                return Some(Frame::Rejected { tag, response: why });
            }
            self.refuse(tag, why);
            return self.skip_literal(a.size);
        }
        self.buf.extend_from_slice(b"\r\n");
        if message {
            self.message_bytes += a.size;
        }
        self.state = State::Literal { remaining: a.size };
        if a.size == 0 {
            self.start_line();
        }
        a.sync.then_some(Frame::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` one after another like a driver: keep unconsumed
    /// octets, call again after every frame.
    fn run(framer: &mut Framer, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            loop {
                let (n, frame) = framer.feed(&pending);
                assert!(n <= pending.len());
                pending.drain(..n);
                match frame {
                    Some(f) => frames.push(f),
                    None => {
                        assert!(pending.is_empty(), "no frame but {} octets left", pending.len());
                        break;
                    }
                }
            }
        }
        frames
    }

    fn whole(limits: FramerLimits, input: &[u8]) -> Vec<Frame> {
        run(&mut Framer::new(limits), &[input])
    }

    fn bytewise(limits: FramerLimits, input: &[u8]) -> Vec<Frame> {
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        run(&mut Framer::new(limits), &chunks)
    }

    fn cmd(s: &[u8]) -> Frame {
        Frame::Command(s.to_vec())
    }

    fn rejected(tag: &str, response: Rejection) -> Frame {
        Frame::Rejected { tag: Some(tag.into()), response }
    }

    fn both(limits: FramerLimits, input: &[u8]) -> Vec<Frame> {
        let a = whole(limits, input);
        assert_eq!(a, bytewise(limits, input));
        a
    }

    fn small() -> FramerLimits {
        FramerLimits { line_bytes_max: 32, literal_bytes_max: 10, append_literal_bytes_max: 20, literals_per_command_max: 3, command_bytes_max: 60 }
    }

    #[test]
    fn lines_and_literals() {
        let l = FramerLimits::after_login(1 << 20);
        assert_eq!(both(l, b"a NOOP\r\nb CAPABILITY\nc LOGOUT\r\n"), vec![cmd(b"a NOOP"), cmd(b"b CAPABILITY"), cmd(b"c LOGOUT")]);
        assert_eq!(both(l, b"a LOGIN {5}\r\nalice {6+}\nsecret\r\n"), vec![Frame::Continue, cmd(b"a LOGIN {5}\r\nalice {6+}\r\nsecret")]);
        // Literal data may contain anything, including line ends and `{1}`.
        assert_eq!(both(l, b"a X {7+}\r\n\r\n{1}\r\n\r\n"), vec![cmd(b"a X {7+}\r\n\r\n{1}\r\n")]);
        // Zero-length literals, both kinds; literal8.
        assert_eq!(both(l, b"a X {0}\r\n {0+}\r\n\r\n"), vec![Frame::Continue, cmd(b"a X {0}\r\n {0+}\r\n")]);
        assert_eq!(both(l, b"a APPEND x ~{3}\r\n\0\x01\x02\r\n"), vec![Frame::Continue, cmd(b"a APPEND x ~{3}\r\n\0\x01\x02")]);
        // Empty line and a CR in the middle stay for the parser.
        assert_eq!(both(l, b"\r\na\rb\r\n"), vec![cmd(b""), cmd(b"a\rb")]);
        // Not literals: no digits, no brace.
        assert_eq!(both(l, b"a X {}\r\na X {+}\r\na X 5}\r\n5}\r\n5+}\r\n"), vec![cmd(b"a X {}"), cmd(b"a X {+}"), cmd(b"a X 5}"), cmd(b"5}"), cmd(b"5+}")]);
    }

    #[test]
    fn incomplete_input_waits() {
        let mut f = Framer::new(FramerLimits::before_login());
        assert_eq!(f.feed(b"a NOOP"), (6, None));
        assert!(!f.is_idle());
        assert_eq!(f.feed(b"\r"), (1, None));
        assert_eq!(f.feed(b"\n"), (1, Some(cmd(b"a NOOP"))));
        assert!(f.is_idle());
        assert_eq!(f.feed(b"a LOGIN {3}\r\nab"), (13, Some(Frame::Continue)));
        assert_eq!(f.feed(b"ab"), (2, None));
        assert_eq!(f.feed(b"c x\r\nb NOOP\r\n"), (5, Some(cmd(b"a LOGIN {3}\r\nabc x"))));
    }

    #[test]
    fn long_lines() {
        let l = small();
        let mut input = b"t1 ".to_vec();
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\r\nt2 NOOP\r\n");
        assert_eq!(both(l, &input), vec![rejected("t1", Rejection::LineTooLong), cmd(b"t2 NOOP")]);
        // Exactly at the limit (32 with CRLF) is fine; one more is not.
        let ok = format!("a {}\r\n", "y".repeat(28));
        assert_eq!(both(l, ok.as_bytes()), vec![cmd(&ok.as_bytes()[..30])]);
        let bad = format!("a {}\r\n", "y".repeat(29));
        assert_eq!(both(l, bad.as_bytes()), vec![rejected("a", Rejection::LineTooLong)]);
        // Bare LF counts one octet.
        let ok = format!("a {}\n", "y".repeat(29));
        assert_eq!(both(l, ok.as_bytes()), vec![cmd(&ok.as_bytes()[..31])]);
        // A tag longer than the line limit is still read.
        let bad = format!("{} NOOP\r\n", "t".repeat(40));
        assert_eq!(both(l, bad.as_bytes()), vec![rejected(&"t".repeat(40), Rejection::LineTooLong)]);
        // No readable tag.
        let bad = format!("{}\r\nb NOOP\r\n", "(".repeat(40));
        assert_eq!(both(l, bad.as_bytes()), vec![Frame::Rejected { tag: None, response: Rejection::LineTooLong }, cmd(b"b NOOP")]);
        // An over-long line ending in a non-synchronizing literal: the
        // literal is skipped with the command, not taken for commands.
        let bad = format!("a {} {{9+}}\r\nb NOOP\r\n\r\nc NOOP\r\n", "y".repeat(40));
        assert_eq!(both(l, bad.as_bytes()), vec![rejected("a", Rejection::LineTooLong), cmd(b"c NOOP")]);
        // ... and with a synchronizing one, the client waits: refuse now.
        let bad = format!("a {} {{9}}\r\nc NOOP\r\n", "y".repeat(40));
        assert_eq!(both(l, bad.as_bytes()), vec![rejected("a", Rejection::LineTooLong), cmd(b"c NOOP")]);
        // A long second line (after a literal).
        let bad = format!("a X {{1+}}\r\nx{}\r\nb NOOP\r\n", "y".repeat(40));
        assert_eq!(both(l, bad.as_bytes()), vec![rejected("a", Rejection::LineTooLong), cmd(b"b NOOP")]);
    }

    #[test]
    fn literal_limits() {
        let l = small();
        // Synchronizing over the limit: refused at once; the client sends no data.
        assert_eq!(both(l, b"a LOGIN {11}\r\nb NOOP\r\n"), vec![rejected("a", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        // Non-synchronizing over the limit but within reach: skipped.
        assert_eq!(both(l, b"a LOGIN {11+}\r\nhello world x\r\nb NOOP\r\n"), vec![rejected("a", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        // ... with more literals behind it.
        assert_eq!(both(l, b"a X {11+}\r\nhello world {2+}\r\nxx y\r\nb NOOP\r\n"), vec![rejected("a", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        // Beyond every limit: fatal; nothing after it is looked at.
        let mut f = Framer::new(l);
        assert_eq!(run(&mut f, &[b"a LOGIN {21+}\r\n", b"b NOOP\r\n"]), vec![Frame::Fatal("Literal too large")]);
        assert_eq!(both(l, b"a X {999999999999999999999+}\r\n"), vec![Frame::Fatal("Literal too large")]);
        assert_eq!(both(l, b"a X {999999999999999999999}\r\nb NOOP\r\n"), vec![rejected("a", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        // Too many literals.
        assert_eq!(both(l, b"a X {1}\r\n1 {1}\r\n2 {1}\r\n3 {1}\r\nb NOOP\r\n").last(), Some(&cmd(b"b NOOP")));
        assert_eq!(both(l, b"a X {1}\r\n1 {1}\r\n2 {1}\r\n3 {1}\r\nb NOOP\r\n")[3], rejected("a", Rejection::TooManyLiterals));
        // Command total: 3 × 10-octet literals + lines > 60.
        let frames = both(l, b"a X {10}\r\n0123456789 yyyyyyyyyyyyyyyyyyyy {10}\r\n0123456789 {10}\r\nb NOOP\r\n");
        assert_eq!(frames, vec![Frame::Continue, Frame::Continue, rejected("a", Rejection::CommandTooBig), cmd(b"b NOOP")]);
    }

    #[test]
    fn append_limits() {
        let l = small();
        // The message literal gets the append limit (20), not the literal limit (10).
        let a = b"a APPEND INBOX (\\Seen) {15}\r\n0123456789abcde\r\n";
        assert_eq!(both(l, a), vec![Frame::Continue, cmd(&a[..a.len() - 2])]);
        assert_eq!(both(l, b"a append INBOX {21}\r\nb NOOP\r\n"), vec![rejected("a", Rejection::TooBig), cmd(b"b NOOP")]);
        // The mailbox-name literal of APPEND is not a message.
        assert_eq!(both(l, b"a APPEND {11}\r\nb NOOP\r\n"), vec![rejected("a", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        let a = b"a APPEND {5}\r\nINBOX {15}\r\n0123456789abcde\r\n";
        assert_eq!(both(l, a), vec![Frame::Continue, Frame::Continue, cmd(&a[..a.len() - 2])]);
        // UID and other commands naming APPEND later are not APPEND.
        assert_eq!(both(l, b"a UID APPEND {15}\r\nb NOOP\r\n"), vec![rejected("a", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        assert_eq!(both(l, b"APPEND x {15}\r\nb NOOP\r\n"), vec![rejected("APPEND", Rejection::LiteralTooLong), cmd(b"b NOOP")]);
        // MULTIAPPEND: the sum of the messages is bounded too.
        let a = b"a APPEND INBOX {12}\r\n0123456789ab {9}\r\nb NOOP\r\n";
        assert_eq!(both(l, a), vec![Frame::Continue, rejected("a", Rejection::CommandTooBig), cmd(b"b NOOP")]);
        // Binary: UTF8 (~{n}).
        let a = b"a APPEND INBOX UTF8 (~{3+}\r\n\0\0\0)\r\n";
        assert_eq!(both(l, a), vec![cmd(&a[..a.len() - 2])]);
    }

    #[test]
    fn raw_lines() {
        let mut f = Framer::new(small());
        assert_eq!(f.feed_line(b"DON"), (3, None));
        assert_eq!(f.feed_line(b"E\r\na NOOP\r\n"), (3, Some(Ok(b"DONE".to_vec()))));
        assert_eq!(f.feed(b"a NOOP\r\n"), (8, Some(cmd(b"a NOOP"))));
        assert_eq!(f.feed_line(b"*\n"), (2, Some(Ok(b"*".to_vec()))));
        let long = [b'A'; 40];
        assert_eq!(f.feed_line(&long), (40, None));
        assert_eq!(f.feed_line(b"AA\r\n"), (4, Some(Err(Rejection::LineTooLong))));
        assert!(f.is_idle());
        assert_eq!(f.feed_line(b"\r\n"), (2, Some(Ok(Vec::new()))));
    }

    #[test]
    fn rejection_lines() {
        let mut out = Vec::new();
        Rejection::TooBig.write(&mut out, Some("a1"));
        Rejection::LineTooLong.write(&mut out, None);
        assert_eq!(out, b"a1 NO [TOOBIG] Message too large\r\n* BAD Command line too long\r\n");
    }

    fn script() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            "[a-zA-Z0-9 ()\\[\\]*%\"\\\\]{0,40}".prop_map(String::into_bytes),
            (0usize..30, any::<bool>(), any::<bool>()).prop_map(|(n, sync, binary)| {
                let mut v = format!("{}{{{n}{}}}\r\n", if binary { "~" } else { "" }, if sync { "" } else { "+" }).into_bytes();
                v.extend((0..n).map(|i| [b'\n', b'\r', b'{', b'}', 0, b'x'][i % 6]));
                v
            }),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"a APPEND INBOX ".to_vec()),
            Just(b"tag UID FETCH 1:* BODY[]\r\n".to_vec()),
        ];
        proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn splits_do_not_matter(input in script(), cuts in proptest::collection::vec(any::<usize>(), 0..20), tight in any::<bool>()) {
            let limits = if tight { small() } else { FramerLimits::before_login() };
            let expected = whole(limits, &input);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&input[last..p]);
                last = p;
            }
            chunks.push(&input[last..]);
            prop_assert_eq!(&run(&mut Framer::new(limits), &chunks), &expected);
            prop_assert_eq!(&bytewise(limits, &input), &expected);
            for f in &expected {
                if let Frame::Command(c) = f {
                    prop_assert!(c.len() <= limits.command_bytes_max + limits.append_literal_bytes_max as usize);
                }
            }
        }
    }
}
