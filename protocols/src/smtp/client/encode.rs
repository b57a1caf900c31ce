//! The DATA body on the wire (RFC 5321 §4.5.2, §2.3.8): content is stored
//! with LF line endings, the wire needs CRLF, and a line starting with `.`
//! gets a second one. The encoder is streaming: it keeps only the previous
//! byte between chunks, so content of any size passes through it.

/// LF → CRLF, dot-stuffing, and the `.` terminator.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    /// The next byte starts a line.
    line_start: bool,
    /// The previous byte was CR (a CRLF already in the content is kept).
    after_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self { line_start: true, after_cr: false }
    }
}

impl DataEncoder {
    /// Appends the wire form of `chunk` to `out` (at most twice its size).
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 16 + 2);
        for &b in chunk {
            if self.line_start && b == b'.' {
                out.push(b'.');
            }
            match b {
                b'\n' => {
                    if !self.after_cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.line_start = true;
                }
                _ => {
                    out.push(b);
                    self.line_start = false;
                }
            }
            self.after_cr = b == b'\r';
        }
    }

    /// Ends the content: a final CRLF if the last line lacked one, then
    /// `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.after_cr {
            // A lone CR at the very end: complete it to CRLF.
            out.push(b'\n');
        } else if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = DataEncoder::default();
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn crlf_and_dot_stuffing() {
        assert_eq!(encode(&[b"a\n.b\n..\n.\nend"]), b"a\r\n..b\r\n...\r\n..\r\nend\r\n.\r\n");
        assert_eq!(encode(&[b".first\n"]), b"..first\r\n.\r\n");
        assert_eq!(encode(&[b"keep\r\ncrlf\r\n"]), b"keep\r\ncrlf\r\n.\r\n");
        assert_eq!(encode(&[b""]), b".\r\n");
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let content = b"x\n.y\r\n\n.\nz.\n..w";
        let whole = encode(&[content]);
        let bytes: Vec<&[u8]> = content.chunks(1).collect();
        assert_eq!(encode(&bytes), whole);
        for split in 0..content.len() {
            assert_eq!(encode(&[&content[..split], &content[split..]]), whole);
        }
    }

    #[test]
    fn no_line_is_a_lone_dot() {
        let out = encode(&[b".\n.\r\n\n.\n"]);
        for line in out.split(|&b| b == b'\n').take_while(|l| *l != b".\r") {
            assert_ne!(line, b".\r");
        }
        assert!(out.ends_with(b"\r\n.\r\n"));
    }
}
