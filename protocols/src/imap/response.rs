//! Status responses (RFC 9051 §7.1): `tag OK/NO/BAD [code] text` and the
//! untagged `* OK/NO/BAD/BYE/PREAUTH`, with the response codes of RFC 9051
//! §7.1 and the extensions Varan speaks.
//!
//! [`write_status`] is the one place that writes a status line, so text
//! from anywhere (a store error, a configured greeting) can never break
//! the line: CR, LF and NUL become spaces.

use std::fmt::Write as _;

use super::sequence::SequenceSet;

/// Longest text written in a status line, in octets; longer text is cut at
/// a character boundary. Keeps lines well under any client's line limit.
pub const STATUS_TEXT_BYTES_MAX: usize = 1000;

/// The status of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    /// Always untagged: the server is closing the connection.
    Bye,
    /// Always untagged: the greeting of a pre-authenticated connection.
    PreAuth,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Bye => "BYE",
            Status::PreAuth => "PREAUTH",
        }
    }
}

/// A response code (`resp-text-code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    Alert,
    /// Charsets we do support, e.g. `["UTF-8", "US-ASCII"]`.
    BadCharset(Vec<String>),
    /// The capability list (atoms, space-separated on the wire).
    Capability(Vec<String>),
    Parse,
    /// Flags and keywords the client can store permanently, with `\*`
    /// when new keywords can be created.
    PermanentFlags(Vec<String>),
    ReadOnly,
    ReadWrite,
    TryCreate,
    UidNext(u32),
    UidValidity(u32),
    Unseen(u32),
    /// RFC 4315 (UIDPLUS); a set for MULTIAPPEND.
    AppendUid {
        uidvalidity: u32,
        uids: SequenceSet,
    },
    /// RFC 4315: source and destination UIDs, in matching order.
    CopyUid {
        uidvalidity: u32,
        source: SequenceSet,
        destination: SequenceSet,
    },
    UidNotSticky,
    /// RFC 7162 §3.2.11 / RFC 9051: the previous mailbox is closed.
    Closed,
    /// RFC 7162.
    HighestModSeq(u64),
    NoModSeq,
    /// RFC 7162 §3.1.3: messages not stored because of UNCHANGEDSINCE.
    Modified(SequenceSet),
    /// RFC 9208.
    OverQuota,
    /// RFC 7889 (APPENDLIMIT).
    TooBig,
    AlreadyExists,
    NonExistent,
    Cannot,
    Limit,
    ServerBug,
    Unavailable,
    AuthenticationFailed,
    AuthorizationFailed,
    PrivacyRequired,
    ContactAdmin,
    NoPerm,
    InUse,
    ExpungeIssued,
    Corruption,
    ClientBug,
    Expired,
    HasChildren,
    /// RFC 3516.
    UnknownCte,
    /// RFC 4978.
    CompressionActive,
    /// RFC 6154 §5.3.
    UseAttr,
    /// RFC 5182: SAVE failed, `$` is now empty.
    NotSaved,
    /// RFC 9051 §7.1 (also RFC 5465): a code with an atom name and optional
    /// text, for anything not listed. The name must be an atom; invalid
    /// octets in either part are replaced.
    Other(String, Option<String>),
}

impl ResponseCode {
    /// The atom that names the code.
    pub fn name(&self) -> &str {
        match self {
            ResponseCode::Alert => "ALERT",
            ResponseCode::BadCharset(_) => "BADCHARSET",
            ResponseCode::Capability(_) => "CAPABILITY",
            ResponseCode::Parse => "PARSE",
            ResponseCode::PermanentFlags(_) => "PERMANENTFLAGS",
            ResponseCode::ReadOnly => "READ-ONLY",
            ResponseCode::ReadWrite => "READ-WRITE",
            ResponseCode::TryCreate => "TRYCREATE",
            ResponseCode::UidNext(_) => "UIDNEXT",
            ResponseCode::UidValidity(_) => "UIDVALIDITY",
            ResponseCode::Unseen(_) => "UNSEEN",
            ResponseCode::AppendUid { .. } => "APPENDUID",
            ResponseCode::CopyUid { .. } => "COPYUID",
            ResponseCode::UidNotSticky => "UIDNOTSTICKY",
            ResponseCode::Closed => "CLOSED",
            ResponseCode::HighestModSeq(_) => "HIGHESTMODSEQ",
            ResponseCode::NoModSeq => "NOMODSEQ",
            ResponseCode::Modified(_) => "MODIFIED",
            ResponseCode::OverQuota => "OVERQUOTA",
            ResponseCode::TooBig => "TOOBIG",
            ResponseCode::AlreadyExists => "ALREADYEXISTS",
            ResponseCode::NonExistent => "NONEXISTENT",
            ResponseCode::Cannot => "CANNOT",
            ResponseCode::Limit => "LIMIT",
            ResponseCode::ServerBug => "SERVERBUG",
            ResponseCode::Unavailable => "UNAVAILABLE",
            ResponseCode::AuthenticationFailed => "AUTHENTICATIONFAILED",
            ResponseCode::AuthorizationFailed => "AUTHORIZATIONFAILED",
            ResponseCode::PrivacyRequired => "PRIVACYREQUIRED",
            ResponseCode::ContactAdmin => "CONTACTADMIN",
            ResponseCode::NoPerm => "NOPERM",
            ResponseCode::InUse => "INUSE",
            ResponseCode::ExpungeIssued => "EXPUNGEISSUED",
            ResponseCode::Corruption => "CORRUPTION",
            ResponseCode::ClientBug => "CLIENTBUG",
            ResponseCode::Expired => "EXPIRED",
            ResponseCode::HasChildren => "HASCHILDREN",
            ResponseCode::UnknownCte => "UNKNOWN-CTE",
            ResponseCode::CompressionActive => "COMPRESSIONACTIVE",
            ResponseCode::UseAttr => "USEATTR",
            ResponseCode::NotSaved => "NOTSAVED",
            ResponseCode::Other(name, _) => name,
        }
    }

    /// Appends `[NAME args]`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut s = String::from("[");
        match self {
            ResponseCode::Other(name, _) => s.extend(name.chars().map(|c| if c.is_ascii() && super::wire::is_atom_char(c as u8) { c } else { '_' })),
            _ => s.push_str(self.name()),
        }
        let list = |s: &mut String, items: &[String], parens: bool| {
            s.push(' ');
            if parens {
                s.push('(');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                s.extend(item.chars().map(|c| if c.is_ascii_graphic() && !matches!(c, ']' | '(' | ')') { c } else { '_' }));
            }
            if parens {
                s.push(')');
            }
        };
        match self {
            ResponseCode::BadCharset(v) => list(&mut s, v, true),
            ResponseCode::Capability(v) => list(&mut s, v, false),
            ResponseCode::PermanentFlags(v) => list(&mut s, v, true),
            ResponseCode::UidNext(n) | ResponseCode::UidValidity(n) | ResponseCode::Unseen(n) => {
                let _ = write!(s, " {n}");
            }
            ResponseCode::HighestModSeq(n) => {
                let _ = write!(s, " {n}");
            }
            ResponseCode::AppendUid { uidvalidity, uids } => {
                let _ = write!(s, " {uidvalidity} {uids}");
            }
            ResponseCode::CopyUid { uidvalidity, source, destination } => {
                let _ = write!(s, " {uidvalidity} {source} {destination}");
            }
            ResponseCode::Modified(set) => {
                let _ = write!(s, " {set}");
            }
            ResponseCode::Other(_, Some(text)) => {
                s.push(' ');
                s.extend(text.chars().map(|c| if c.is_control() || c == ']' { ' ' } else { c }));
            }
            _ => {}
        }
        s.push(']');
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends `tag STATUS [code] text\r\n`; `tag: None` (and always for BYE
/// and PREAUTH) writes `*`. Text is cut to [`STATUS_TEXT_BYTES_MAX`]; CR,
/// LF and NUL become spaces; empty text becomes `completed` (RFC 3501
/// requires text).
pub fn write_status(out: &mut Vec<u8>, tag: Option<&str>, status: Status, code: Option<&ResponseCode>, text: &str) {
    let tag = match status {
        Status::Bye | Status::PreAuth => None,
        _ => tag.filter(|t| !t.is_empty()),
    };
    match tag {
        Some(t) => out.extend(t.bytes().map(|b| if super::wire::is_astring_char(b) && b != b'+' { b } else { b'_' })),
        None => out.push(b'*'),
    }
    out.push(b' ');
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    if let Some(code) = code {
        code.write(out);
        out.push(b' ');
    }
    let mut end = text.len().min(STATUS_TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = if text[..end].trim().is_empty() { "completed" } else { &text[..end] };
    out.extend(text.bytes().map(|b| if matches!(b, b'\r' | b'\n' | 0) { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(tag: Option<&str>, status: Status, code: Option<ResponseCode>, text: &str) -> String {
        let mut out = Vec::new();
        write_status(&mut out, tag, status, code.as_ref(), text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines() {
        assert_eq!(line(Some("a1"), Status::Ok, None, "LOGIN completed"), "a1 OK LOGIN completed\r\n");
        assert_eq!(line(None, Status::Bad, None, "bad\r\n* OK injected"), "* BAD bad  * OK injected\r\n");
        assert_eq!(line(Some("x"), Status::Bye, None, "bye"), "* BYE bye\r\n");
        assert_eq!(line(Some("x"), Status::No, Some(ResponseCode::TooBig), ""), "x NO [TOOBIG] completed\r\n");
        assert_eq!(
            line(Some("t"), Status::No, Some(ResponseCode::BadCharset(vec!["UTF-8".into(), "US-ASCII".into()])), "charset"),
            "t NO [BADCHARSET (UTF-8 US-ASCII)] charset\r\n"
        );
        assert_eq!(line(None, Status::Ok, Some(ResponseCode::PermanentFlags(vec!["\\Seen".into(), "\\*".into()])), "Flags"), "* OK [PERMANENTFLAGS (\\Seen \\*)] Flags\r\n");
        let copy = ResponseCode::CopyUid { uidvalidity: 9, source: SequenceSet::from_sorted(&[1, 2, 3]), destination: SequenceSet::from_sorted(&[7, 8, 9]) };
        assert_eq!(line(Some("c"), Status::Ok, Some(copy), "done"), "c OK [COPYUID 9 1:3 7:9] done\r\n");
        assert_eq!(line(None, Status::Ok, Some(ResponseCode::HighestModSeq(1 << 40)), "x"), "* OK [HIGHESTMODSEQ 1099511627776] x\r\n");
        assert_eq!(line(None, Status::Ok, Some(ResponseCode::Other("X-FOO]".into(), Some("a]b".into()))), "x"), "* OK [X-FOO_ a b] x\r\n");
        assert_eq!(line(Some("t"), Status::No, Some(ResponseCode::UnknownCte), "x"), "t NO [UNKNOWN-CTE] x\r\n");
        let long = "é".repeat(STATUS_TEXT_BYTES_MAX);
        assert!(line(None, Status::Ok, None, &long).len() <= STATUS_TEXT_BYTES_MAX + 7);
    }
}
