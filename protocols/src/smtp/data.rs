//! Message content: DATA (RFC 5321 §4.1.1.4, §4.5.2 transparency) and
//! BDAT (RFC 3030) octets, converted to LF line endings as they stream into
//! the driver's [`BodySink`].
//!
//! Nothing is buffered here. The decoder keeps only its position in the
//! `<CRLF>.<CRLF>` end marker (a state, never bytes), so a message of any
//! length, fed in any split, costs a few words of memory.
//!
//! Smuggling (RFC 5321 §2.3.8, the 2023 "SMTP smuggling" class): the end
//! marker is recognised only as CR LF "." CR LF where the first CR LF is a
//! real line ending. Bare CR and bare LF become line breaks in the stored
//! content (`Normalize`) or make the message fail (`Reject`), but they never
//! take part in the end marker, so `<LF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>`
//! and `<CRLF>.<LF>` are content and cannot split one message into two.
//! Dot-unstuffing applies under the same rule: only to a line that follows
//! a real CRLF.

use memchr::memchr2;

use super::{BodySink, SinkError};

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// Counters and verdicts for the content of one message.
#[derive(Debug, Default)]
pub(crate) struct Body {
    /// Largest CRLF size accepted (SIZE, RFC 1870).
    limit: u64,
    /// `BareNewlines::Reject`: stop writing at the first bare CR/LF.
    reject_bare: bool,
    /// Octets written with LF endings (Maildir `S=`).
    pub lf_bytes: u64,
    /// Line terminators written; CRLF size = `lf_bytes + lines` (Maildir `W=`).
    pub lines: u64,
    /// An octet ≥ 0x80 was seen (notable with BODY=7BIT, RFC 6152 §3).
    pub eight_bit: bool,
    pub bare_newline: bool,
    pub too_big: bool,
    pub sink_error: Option<SinkError>,
}

impl Body {
    pub(crate) fn new(limit: u64, reject_bare: bool) -> Self {
        Self { limit, reject_bare, ..Self::default() }
    }

    /// Size on the wire with CRLF line endings (what SIZE limits).
    pub(crate) fn crlf_bytes(&self) -> u64 {
        self.lf_bytes.saturating_add(self.lines)
    }

    /// True once nothing more is written: the message will be refused.
    fn stopped(&self) -> bool {
        self.too_big || self.sink_error.is_some() || (self.reject_bare && self.bare_newline)
    }

    /// Text without line terminators.
    fn text(&mut self, sink: &mut dyn BodySink, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.eight_bit && !bytes.is_ascii() {
            self.eight_bit = true;
        }
        self.emit(sink, bytes, 0);
    }

    fn newline(&mut self, sink: &mut dyn BodySink) {
        self.emit(sink, b"\n", 1);
    }

    fn bare_newline(&mut self, sink: &mut dyn BodySink) {
        self.bare_newline = true;
        self.newline(sink);
    }

    fn emit(&mut self, sink: &mut dyn BodySink, bytes: &[u8], lines: u64) {
        self.lf_bytes = self.lf_bytes.saturating_add(bytes.len() as u64);
        self.lines = self.lines.saturating_add(lines);
        if self.stopped() {
            return;
        }
        if self.crlf_bytes() > self.limit {
            // Keep consuming to the end of the data, write nothing more,
            // answer 552 5.3.4 then (RFC 1870 §6.3).
            self.too_big = true;
            return;
        }
        if let Err(e) = sink.write(bytes) {
            self.sink_error = Some(e);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a real CRLF (or right after the 354): a dot here is special.
    LineStart,
    /// Inside a line, or at the start of one that followed a bare newline.
    Text,
    /// A CR was seen; the next octet decides CRLF or bare CR.
    Cr,
    /// CRLF "." seen.
    Dot,
    /// CRLF "." CR seen: one LF away from the end of the data.
    DotCr,
}

/// Streaming line-ending converter, with DATA transparency when `dots`.
#[derive(Debug, Clone)]
pub(crate) struct LineDecoder {
    state: State,
    dots: bool,
}

impl LineDecoder {
    /// For DATA: the content starts at the beginning of a line (the DATA
    /// command's CRLF precedes it), so `.<CRLF>` at once is an empty message.
    pub(crate) fn data() -> Self {
        Self { state: State::LineStart, dots: true }
    }

    /// For BDAT: raw octets, no transparency, no end marker (RFC 3030 §2).
    /// One decoder spans all chunks, so a CR ending one chunk pairs with an
    /// LF starting the next.
    pub(crate) fn bdat() -> Self {
        Self { state: State::Text, dots: false }
    }

    fn after_crlf(&self) -> State {
        if self.dots {
            State::LineStart
        } else {
            State::Text
        }
    }

    /// Consumes `input`, writing content to `sink`. Returns the octets
    /// consumed and whether the DATA end marker was reached (then the
    /// octets after it were not consumed).
    pub(crate) fn feed(&mut self, input: &[u8], body: &mut Body, sink: &mut dyn BodySink) -> (usize, bool) {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                State::Text => {
                    let rest = &input[i..];
                    let Some(p) = memchr2(CR, LF, rest) else {
                        body.text(sink, rest);
                        return (input.len(), false);
                    };
                    body.text(sink, &rest[..p]);
                    i += p + 1;
                    if rest[p] == CR {
                        self.state = State::Cr;
                    } else {
                        body.bare_newline(sink);
                    }
                }
                State::Cr if b == LF => {
                    i += 1;
                    body.newline(sink);
                    self.state = self.after_crlf();
                }
                State::Cr => {
                    // Bare CR; `b` is looked at again as text.
                    body.bare_newline(sink);
                    self.state = State::Text;
                }
                State::LineStart if b == b'.' => {
                    i += 1;
                    self.state = State::Dot;
                }
                State::LineStart => self.state = State::Text,
                State::Dot if b == CR => {
                    i += 1;
                    self.state = State::DotCr;
                }
                State::Dot if b == LF => {
                    // "." ended by a bare LF: content, not the end marker.
                    i += 1;
                    body.text(sink, b".");
                    body.bare_newline(sink);
                    self.state = State::Text;
                }
                // RFC 5321 §4.5.2: a leading dot followed by more text is
                // removed; `b` is looked at again as text.
                State::Dot => self.state = State::Text,
                State::DotCr if b == LF => return (i + 1, true),
                State::DotCr => {
                    // "." ended by a bare CR: content; `b` looked at again.
                    body.text(sink, b".");
                    body.bare_newline(sink);
                    self.state = State::Text;
                }
            }
        }
        (i, false)
    }

    /// End of BDAT LAST: a CR still waiting for its LF was a bare CR.
    pub(crate) fn finish(&mut self, body: &mut Body, sink: &mut dyn BodySink) {
        if self.state == State::Cr {
            body.bare_newline(sink);
        }
        self.state = State::Text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<usize>, Body) {
        let mut sink = Vec::new();
        let mut body = Body::new(u64::MAX, false);
        let mut dec = LineDecoder::data();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let (used, ended) = dec.feed(&input[pos..end], &mut body, &mut sink);
            pos += used;
            if ended {
                return (sink, Some(pos), body);
            }
        }
        (sink, None, body)
    }

    fn check(input: &[u8], content: &[u8], end: Option<usize>) {
        for step in [1, 2, 3, 7, input.len().max(1)] {
            let (got, got_end, _) = run(input, step);
            assert_eq!((String::from_utf8_lossy(&got), got_end), (String::from_utf8_lossy(content), end), "input {input:?} step {step}");
        }
    }

    #[test]
    fn plain_message_and_unstuffing() {
        check(b"a\r\n..b\r\n.\r\nMAIL", b"a\n.b\n", Some(11));
        check(b".\r\n", b"", Some(3));
        check(b"..\r\n.\r\n", b".\n", Some(7));
        check(b"x\r\n.y\r\n.\r\n", b"x\ny\n", Some(10));
    }

    #[test]
    fn smuggling_sequences_are_content() {
        check(b"a\n.\nMAIL FROM:<x@y>\r\n", b"a\n.\nMAIL FROM:<x@y>\n", None);
        check(b"a\n.\r\nb\r\n", b"a\n.\nb\n", None);
        check(b"a\r.\rb", b"a\n.\nb", None);
        check(b"a\r\n.\nb\r\n", b"a\n.\nb\n", None);
        check(b"a\r\n.\rb\r\n", b"a\n.\nb\n", None);
        check(b"a\r\n.\r\r\n", b"a\n.\n\n", None);
    }

    #[test]
    fn counts_sizes_and_8bit() {
        let (_, _, body) = run("ab\r\né\r\n.\r\n".as_bytes(), 1);
        assert_eq!((body.lf_bytes, body.lines, body.crlf_bytes()), (6, 2, 8));
        assert!(body.eight_bit && !body.bare_newline);
    }

    #[test]
    fn limit_stops_writing_but_not_consuming() {
        let mut sink = Vec::new();
        let mut body = Body::new(5, false);
        let mut dec = LineDecoder::data();
        let (used, ended) = dec.feed(b"abc\r\ndef\r\n.\r\n", &mut body, &mut sink);
        assert_eq!((used, ended, body.too_big), (13, true, true));
        assert_eq!(sink, b"abc\n");
    }

    #[test]
    fn bdat_pairs_cr_lf_across_chunks() {
        let mut sink = Vec::new();
        let mut body = Body::new(u64::MAX, false);
        let mut dec = LineDecoder::bdat();
        for chunk in [&b"a\r"[..], b"\n.b\r", b"\rc\r"] {
            assert_eq!(dec.feed(chunk, &mut body, &mut sink), (chunk.len(), false));
        }
        dec.finish(&mut body, &mut sink);
        assert_eq!(sink, b"a\n.b\n\nc\n");
        assert!(body.bare_newline);
    }
}
