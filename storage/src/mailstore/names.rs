//! Mailbox names ↔ Maildir++ directories.
//!
//! `INBOX` (any case) is the user directory itself; `A/B` is the directory
//! `.A.B`, each level in modified UTF-7 (RFC 3501 §5.1.3) as Dovecot
//! stores it. Because `.` separates levels on disk, names containing `.`
//! cannot be represented and are refused, as are `\`, control characters,
//! IMAP wildcards (`*`, `%`), empty levels, and names longer or deeper than
//! the core limits.

use crate::maildir::encode_mutf7;
use varan_core::mailstore::{StoreError, StoreResult, HIERARCHY_SEPARATOR, MAILBOX_DEPTH_MAX, MAILBOX_NAME_BYTES_MAX};

/// Longest directory name written (below `NAME_MAX`, 255).
pub const DIR_NAME_BYTES_MAX: usize = 250;

/// A validated mailbox name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MailboxName {
    Inbox,
    /// Levels of a folder, UTF-8.
    Folder(Vec<String>),
}

impl MailboxName {
    pub fn parse(name: &str) -> StoreResult<MailboxName> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Ok(MailboxName::Inbox);
        }
        let bad = |why: &str| Err(StoreError::BadName(format!("mailbox name {name:?} {why}")));
        if name.is_empty() {
            return bad("is empty");
        }
        if name.len() > MAILBOX_NAME_BYTES_MAX {
            return bad("is too long");
        }
        let levels: Vec<&str> = name.split(HIERARCHY_SEPARATOR).collect();
        if levels.len() > MAILBOX_DEPTH_MAX {
            return bad("is too deep");
        }
        if levels[0].eq_ignore_ascii_case("INBOX") {
            return bad("is below INBOX, which cannot have children here");
        }
        for level in &levels {
            if level.is_empty() {
                return bad("has an empty hierarchy level");
            }
            if level.chars().any(|c| matches!(c, '.' | '\\' | '*' | '%') || c.is_control()) {
                return bad("contains a character that cannot be stored ('.', '\\', '*', '%' or a control character)");
            }
        }
        let folder = MailboxName::Folder(levels.iter().map(|l| (*l).to_owned()).collect());
        if folder.dir_name().is_some_and(|d| d.len() > DIR_NAME_BYTES_MAX) {
            return bad("is too long on disk");
        }
        Ok(folder)
    }

    /// The canonical name (`INBOX`, or the levels joined with `/`).
    pub fn canonical(&self) -> String {
        match self {
            MailboxName::Inbox => "INBOX".to_owned(),
            MailboxName::Folder(levels) => levels.join("/"),
        }
    }

    /// `.A.B` (`None` for INBOX).
    pub fn dir_name(&self) -> Option<String> {
        match self {
            MailboxName::Inbox => None,
            MailboxName::Folder(levels) => {
                let mut s = String::new();
                for l in levels {
                    s.push('.');
                    s.push_str(&encode_mutf7(l));
                }
                Some(s)
            }
        }
    }

    /// The parents of a folder, outermost first (`A`, `A/B` for `A/B/C`).
    pub fn parents(&self) -> Vec<MailboxName> {
        match self {
            MailboxName::Inbox => Vec::new(),
            MailboxName::Folder(levels) => (1..levels.len()).map(|n| MailboxName::Folder(levels[..n].to_vec())).collect(),
        }
    }

    /// `self` is `other` or below it.
    pub fn is_within(&self, other: &MailboxName) -> bool {
        match (self, other) {
            (MailboxName::Folder(a), MailboxName::Folder(b)) => a.len() >= b.len() && a[..b.len()] == b[..],
            (MailboxName::Inbox, MailboxName::Inbox) => true,
            _ => false,
        }
    }
}

/// The mailbox name of a folder directory (`.A.B` → `A/B`); `None` for
/// names that are not folders or do not decode.
pub fn name_of_dir(dir_name: &str) -> Option<String> {
    let rest = dir_name.strip_prefix('.')?;
    if rest.is_empty() || rest.starts_with('.') {
        return None;
    }
    let mut levels = Vec::new();
    for level in rest.split('.') {
        if level.is_empty() {
            return None;
        }
        levels.push(decode_mutf7(level)?);
    }
    Some(levels.join("/"))
}

/// RFC 3501 §5.1.3 modified UTF-7 → UTF-8; `None` when malformed.
pub fn decode_mutf7(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find('-')?;
        let encoded = &after[..end];
        rest = &after[end + 1..];
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut units = Vec::new();
        let mut bytes = Vec::new();
        for c in encoded.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b',' => 63,
                _ => return None,
            };
            bits = (bits << 6) | u32::from(v);
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                bytes.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        if bytes.len() % 2 != 0 {
            return None;
        }
        for pair in bytes.chunks(2) {
            units.push(u16::from_be_bytes([pair[0], pair[1]]));
        }
        out.push_str(&String::from_utf16(&units).ok()?);
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_dirs_and_back() {
        for name in ["Sent", "A/B/C", "Entwürfe", "日本語/テスト", "a&b", "x y"] {
            let n = MailboxName::parse(name).unwrap();
            let dir = n.dir_name().unwrap();
            assert!(dir.is_ascii(), "{dir}");
            assert_eq!(name_of_dir(&dir).as_deref(), Some(name));
        }
        assert_eq!(MailboxName::parse("inbox").unwrap(), MailboxName::Inbox);
        assert_eq!(MailboxName::parse("A/B").unwrap().dir_name().unwrap(), ".A.B");
        assert_eq!(MailboxName::parse("Entwürfe").unwrap().dir_name().unwrap(), ".Entw&APw-rfe");
        for bad in ["", "a.b", "a//b", "/a", "a/", "INBOX/x", "a\nb", "a*", "a%b", "a\\b"] {
            assert!(matches!(MailboxName::parse(bad), Err(StoreError::BadName(_))), "{bad:?}");
        }
        assert!(MailboxName::parse("x/".repeat(MAILBOX_DEPTH_MAX).trim_end_matches('/')).is_ok());
        assert!(MailboxName::parse("x/".repeat(MAILBOX_DEPTH_MAX + 1).trim_end_matches('/')).is_err());
        assert!(MailboxName::parse(&"é".repeat(200)).is_err());
        assert_eq!(name_of_dir("..Trash"), None);
        assert_eq!(name_of_dir(".a&Zm9v"), None);
        assert_eq!(decode_mutf7("&AOk-t&AOk-"), Some("été".to_owned()));
    }
}
