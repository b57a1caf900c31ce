//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463,
//! advertised as ENHANCEDSTATUSCODES per RFC 2034).
//!
//! Every line we write goes through [`write_line`], which is the single place
//! that enforces the reply-line limit and keeps peer- or driver-supplied text
//! (queue ids, rejection texts, the configured host name) from injecting CR or
//! LF into the reply stream.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Longest reply line including CRLF (RFC 5321 §4.5.3.1.5: 512 octets).
/// Longer text is cut at a character boundary.
pub const REPLY_LINE_BYTES_MAX: usize = 512;

/// One single-line reply: code, enhanced status code and text.
/// `Display` writes the wire form `550 5.1.1 text\r\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 §4.2.2).
    pub code: u16,
    /// class.subject.detail (RFC 3463 §2), e.g. `(5, 1, 1)`.
    pub enhanced: (u8, u16, u16),
    /// Human-readable text; control characters are replaced on output.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with fixed text, usable in `const` items.
    pub const fn fixed(code: u16, enhanced: (u8, u16, u16), text: &'static str) -> Self {
        Self { code, enhanced, text: Cow::Borrowed(text) }
    }

    /// A reply with computed text.
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<Cow<'static, str>>) -> Self {
        Self { code, enhanced, text: text.into() }
    }

    /// 550 5.1.1: the usual answer for an unknown local recipient.
    pub fn user_unknown() -> Self {
        Self::fixed(550, (5, 1, 1), "Recipient address rejected: user unknown")
    }

    /// 554 5.7.1: relaying refused.
    pub fn relay_denied() -> Self {
        Self::fixed(554, (5, 7, 1), "Relay access denied")
    }

    /// 451 4.3.0: a local temporary failure.
    pub fn local_error() -> Self {
        Self::fixed(451, (4, 3, 0), "Local error in processing")
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: the client should retry later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: the client must not retry unchanged.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Appends the wire form to `out`.
    pub(crate) fn write_to(&self, out: &mut String) {
        write_line(out, self.code, false, Some(self.enhanced), &self.text);
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        self.write_to(&mut line);
        f.write_str(&line)
    }
}

/// Appends one reply line: `code` + (`-` if `more` else SP) + optional
/// enhanced code + text + CRLF. Control characters in `text` become spaces
/// (no reply splitting), and the line is cut to [`REPLY_LINE_BYTES_MAX`].
pub(crate) fn write_line(out: &mut String, code: u16, more: bool, enhanced: Option<(u8, u16, u16)>, text: &str) {
    let start = out.len();
    let sep = if more { '-' } else { ' ' };
    // Writing to a String cannot fail. A code is three digits on the wire
    // (RFC 5321 §4.2); `refusal` keeps driver-supplied codes in class.
    let _ = write!(out, "{:03}{sep}", code.min(999));
    if let Some((class, subject, detail)) = enhanced {
        let _ = write!(out, "{class}.{subject}.{detail} ");
    }
    // Room left for text, keeping 2 octets for CRLF.
    let limit = start + REPLY_LINE_BYTES_MAX - 2;
    for c in text.chars() {
        if out.len() + c.len_utf8() > limit {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.push_str("\r\n");
}

/// Appends a multi-line reply (RFC 5321 §4.2.1): all lines but the last use
/// `code-`. Used for EHLO, which carries no enhanced code (RFC 2034 §3).
pub(crate) fn write_multiline(out: &mut String, code: u16, lines: &[&str]) {
    for (i, line) in lines.iter().enumerate() {
        write_line(out, code, i + 1 < lines.len(), None, line);
    }
}

/// Forces a driver-supplied reply into the code class the protocol step
/// needs (`4xx`/`5xx` for a refusal), substituting 451 4.3.0 otherwise, so
/// a driver bug cannot turn a rejection into an acceptance on the wire.
pub(crate) fn refusal(reply: Reply, allowed: std::ops::Range<u16>) -> Reply {
    if allowed.contains(&reply.code) {
        reply
    } else {
        Reply::local_error()
    }
}

// Fixed replies used by the session. Texts are short and standard; detail
// belongs in the driver's log, not on the wire (STYLE.md §5).
pub(crate) const OK: Reply = Reply::fixed(250, (2, 0, 0), "Ok");
pub(crate) const MAIL_OK: Reply = Reply::fixed(250, (2, 1, 0), "Ok");
pub(crate) const RCPT_OK: Reply = Reply::fixed(250, (2, 1, 5), "Ok");
pub(crate) const UNRECOGNIZED: Reply = Reply::fixed(500, (5, 5, 2), "Command unrecognized");
pub(crate) const BAD_CHARACTER: Reply = Reply::fixed(500, (5, 5, 2), "Invalid character in command");
pub(crate) const LINE_TOO_LONG: Reply = Reply::fixed(500, (5, 5, 6), "Line too long");
pub(crate) const SYNTAX: Reply = Reply::fixed(501, (5, 5, 4), "Syntax error in parameters or arguments");
pub(crate) const NO_PARAMETERS: Reply = Reply::fixed(501, (5, 5, 4), "No parameters allowed");
pub(crate) const MAIL_SYNTAX: Reply = Reply::fixed(501, (5, 5, 4), "Syntax: MAIL FROM:<address> [parameters]");
pub(crate) const RCPT_SYNTAX: Reply = Reply::fixed(501, (5, 5, 4), "Syntax: RCPT TO:<address> [parameters]");
pub(crate) const BDAT_SYNTAX: Reply = Reply::fixed(501, (5, 5, 4), "Syntax: BDAT size [LAST]");
pub(crate) const STARTTLS_UNAVAILABLE: Reply = Reply::fixed(502, (5, 5, 1), "STARTTLS not available");
pub(crate) const NEED_HELO: Reply = Reply::fixed(503, (5, 5, 1), "Send HELO/EHLO first");
pub(crate) const NEED_EHLO: Reply = Reply::fixed(503, (5, 5, 1), "Send EHLO first");
pub(crate) const NESTED_MAIL: Reply = Reply::fixed(503, (5, 5, 1), "Sender already specified");
pub(crate) const NEED_MAIL: Reply = Reply::fixed(503, (5, 5, 1), "Need MAIL command");
pub(crate) const DATA_AFTER_BDAT: Reply = Reply::fixed(503, (5, 5, 1), "DATA not allowed after BDAT");
pub(crate) const RCPT_AFTER_BDAT: Reply = Reply::fixed(503, (5, 5, 1), "RCPT not allowed after BDAT");
pub(crate) const ALREADY_TLS: Reply = Reply::fixed(503, (5, 5, 1), "TLS already active");
pub(crate) const ALREADY_AUTHENTICATED: Reply = Reply::fixed(503, (5, 5, 1), "Already authenticated");
pub(crate) const AUTH_IN_TRANSACTION: Reply = Reply::fixed(503, (5, 5, 1), "AUTH not permitted during a mail transaction");
pub(crate) const UNKNOWN_MECHANISM: Reply = Reply::fixed(504, (5, 5, 4), "Unrecognized authentication mechanism");
pub(crate) const NO_RECIPIENTS: Reply = Reply::fixed(554, (5, 5, 1), "No valid recipients");
pub(crate) const BAD_ADDRESS: Reply = Reply::fixed(553, (5, 1, 3), "Bad address syntax");
pub(crate) const NEEDS_SMTPUTF8: Reply = Reply::fixed(553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8");
pub(crate) const UNSUPPORTED_PARAMETER: Reply = Reply::fixed(555, (5, 5, 4), "Unsupported parameter");
pub(crate) const SIZE_EXCEEDED: Reply = Reply::fixed(552, (5, 3, 4), "Message size exceeds fixed maximum message size");
pub(crate) const TOO_BIG: Reply = Reply::fixed(552, (5, 3, 4), "Message too big");
pub(crate) const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, (4, 5, 3), "Too many recipients");
pub(crate) const BARE_NEWLINE: Reply = Reply::fixed(550, (5, 5, 2), "Bare CR or LF not allowed (RFC 5321 §2.3.8)");
pub(crate) const SPOOL_FAILED: Reply = Reply::fixed(451, (4, 3, 0), "Local error in processing");
pub(crate) const AUTH_REQUIRED: Reply = Reply::fixed(530, (5, 7, 0), "Authentication required");
pub(crate) const AUTH_OK: Reply = Reply::fixed(235, (2, 7, 0), "Authentication successful");
pub(crate) const AUTH_FAILED: Reply = Reply::fixed(535, (5, 7, 8), "Authentication credentials invalid");
pub(crate) const AUTH_TEMPORARY: Reply = Reply::fixed(454, (4, 7, 0), "Temporary authentication failure");
pub(crate) const AUTH_CANCELLED: Reply = Reply::fixed(501, (5, 0, 0), "Authentication cancelled");
pub(crate) const AUTH_BAD_BASE64: Reply = Reply::fixed(501, (5, 5, 2), "Invalid base64 data");
pub(crate) const AUTH_NEEDS_TLS: Reply = Reply::fixed(538, (5, 7, 11), "Encryption required for requested authentication mechanism");
pub(crate) const TLS_READY: Reply = Reply::fixed(220, (2, 0, 0), "Ready to start TLS");
pub(crate) const VRFY: Reply = Reply::fixed(252, (2, 5, 0), "Cannot VRFY user, but will accept message and attempt delivery");
pub(crate) const EXPN: Reply = Reply::fixed(502, (5, 5, 1), "EXPN not available");
pub(crate) const HELP: Reply = Reply::fixed(214, (2, 0, 0), "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_code_enhanced_and_crlf() {
        assert_eq!(Reply::user_unknown().to_string(), "550 5.1.1 Recipient address rejected: user unknown\r\n");
        assert_eq!(OK.to_string(), "250 2.0.0 Ok\r\n");
    }

    #[test]
    fn control_characters_cannot_split_a_reply() {
        let r = Reply::new(550, (5, 7, 1), "no\r\n250 2.0.0 smuggled");
        assert_eq!(r.to_string(), "550 5.7.1 no  250 2.0.0 smuggled\r\n");
    }

    #[test]
    fn long_text_is_cut_to_512_octets_at_a_char_boundary() {
        let r = Reply::new(550, (5, 7, 1), "é".repeat(600));
        let s = r.to_string();
        assert!(s.len() <= REPLY_LINE_BYTES_MAX, "{}", s.len());
        assert!(s.ends_with("é\r\n"));
    }

    #[test]
    fn multiline_uses_dash_on_all_but_last() {
        let mut out = String::new();
        write_multiline(&mut out, 250, &["mx.test", "PIPELINING", "8BITMIME"]);
        assert_eq!(out, "250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    }

    #[test]
    fn refusal_keeps_the_class() {
        assert_eq!(refusal(Reply::user_unknown(), 400..600).code, 550);
        assert_eq!(refusal(OK, 400..600).code, 451);
    }
}
