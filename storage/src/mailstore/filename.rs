//! Maildir file names: `<base>:2,<flags>[,<other fields>]`.
//!
//! The base name never changes; the info part after `:2,` holds the flags
//! as letters sorted by ASCII: `D` \Draft, `F` \Flagged, `P` (passed,
//! kept), `R` \Answered, `S` \Seen, `T` \Deleted, then `a`–`z` for the
//! keywords numbered 0–25 in `dovecot-keywords`. Letters we do not know
//! and anything after a `,` in the info part (Dovecot's non-standard
//! fields) are kept as they are when flags change.

use varan_core::mailstore::Flag;

pub const SEEN: u8 = 1;
pub const ANSWERED: u8 = 2;
pub const FLAGGED: u8 = 4;
pub const DELETED: u8 = 8;
pub const DRAFT: u8 = 16;

/// Flags as bits: system flags and keyword letters (bit i = letter `a`+i).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FlagBits {
    pub system: u8,
    pub keywords: u32,
}

impl FlagBits {
    pub fn has(self, bit: u8) -> bool {
        self.system & bit != 0
    }
}

/// The system flag bit of a flag (`None` for keywords).
pub fn system_bit(flag: &Flag) -> Option<u8> {
    match flag {
        Flag::Seen => Some(SEEN),
        Flag::Answered => Some(ANSWERED),
        Flag::Flagged => Some(FLAGGED),
        Flag::Deleted => Some(DELETED),
        Flag::Draft => Some(DRAFT),
        Flag::Keyword(_) => None,
    }
}

/// The flags of a file name's info part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    pub bits: FlagBits,
    /// Flag letters we do not interpret (e.g. `P`), kept on rename.
    pub other_letters: String,
    /// From the first `,` of the flags field on (Dovecot's extension), or
    /// the whole info of a non-`2,` info part; kept verbatim.
    pub tail: String,
    /// The name had a `:` info part at all.
    pub present: bool,
}

impl Info {
    /// The info part as written after the `:` (`2,` + sorted letters + tail).
    pub fn to_suffix(&self) -> String {
        if self.present && !self.tail.is_empty() && !self.tail.starts_with(',') {
            // An info part that is not `2,…`: leave it alone.
            return self.tail.clone();
        }
        let mut letters: Vec<u8> = self.other_letters.bytes().collect();
        for (bit, c) in [(DRAFT, b'D'), (FLAGGED, b'F'), (ANSWERED, b'R'), (SEEN, b'S'), (DELETED, b'T')] {
            if self.bits.has(bit) {
                letters.push(c);
            }
        }
        for i in 0..26u8 {
            if self.bits.keywords & (1 << i) != 0 {
                letters.push(b'a' + i);
            }
        }
        letters.sort_unstable();
        letters.dedup();
        let mut s = String::from("2,");
        s.extend(letters.into_iter().map(char::from));
        s.push_str(&self.tail);
        s
    }
}

/// Splits a file name into its base name and info part (after the first `:`).
pub fn split(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((base, info)) => (base, Some(info)),
        None => (name, None),
    }
}

/// The base name of a file name.
pub fn base(name: &str) -> &str {
    split(name).0
}

/// Parses the info part of a file name.
pub fn parse_info(info: Option<&str>) -> Info {
    let Some(info) = info else { return Info::default() };
    let Some(flags) = info.strip_prefix("2,") else {
        return Info { present: true, tail: info.to_owned(), ..Info::default() };
    };
    let (letters, tail) = match flags.find(',') {
        Some(i) => (&flags[..i], &flags[i..]),
        None => (flags, ""),
    };
    let mut out = Info { present: true, tail: tail.to_owned(), ..Info::default() };
    for c in letters.chars() {
        match c {
            'D' => out.bits.system |= DRAFT,
            'F' => out.bits.system |= FLAGGED,
            'R' => out.bits.system |= ANSWERED,
            'S' => out.bits.system |= SEEN,
            'T' => out.bits.system |= DELETED,
            'a'..='z' => out.bits.keywords |= 1 << (c as u32 - 'a' as u32),
            c => {
                if !out.other_letters.contains(c) {
                    out.other_letters.push(c)
                }
            }
        }
    }
    out
}

/// `base:2,flags` (what a file in `cur/` is called).
pub fn full_name(base: &str, info: &Info) -> String {
    format!("{base}:{}", info.to_suffix())
}

/// RFC822.SIZE of LF-ending content: every LF not preceded by CR counts two.
pub fn crlf_size_of(lf: &[u8]) -> u64 {
    let mut size = lf.len() as u64;
    let mut prev = 0u8;
    for &b in lf {
        if b == b'\n' && prev != b'\r' {
            size += 1;
        }
        prev = b;
    }
    size
}

/// The stored form of a message: CRLF → LF (as Dovecot stores mail).
pub fn to_lf(crlf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf.len());
    let mut i = 0;
    while i < crlf.len() {
        if crlf[i] == b'\r' && crlf.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(crlf[i]);
            i += 1;
        }
    }
    out
}

/// The IMAP form of a stored message: bare LF → CRLF, CRLF kept.
pub fn to_crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 32);
    let mut prev = 0u8;
    for &b in lf {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_and_sorts() {
        let i = parse_info(Some("2,TSbaF"));
        assert_eq!(i.bits.system, SEEN | DELETED | FLAGGED);
        assert_eq!(i.bits.keywords, 0b11);
        assert_eq!(i.to_suffix(), "2,FSTab");
        let i = parse_info(Some("2,SP,Xfoo"));
        assert_eq!(i.other_letters, "P");
        assert_eq!(i.to_suffix(), "2,PS,Xfoo");
        let i = parse_info(Some("1,weird"));
        assert_eq!(i.to_suffix(), "1,weird");
        assert_eq!(parse_info(None).to_suffix(), "2,");
        assert_eq!(split("a.b,S=1:2,S"), ("a.b,S=1", Some("2,S")));
    }

    #[test]
    fn line_endings() {
        assert_eq!(to_lf(b"a\r\nb\r\n\r\n"), b"a\nb\n\n");
        assert_eq!(to_crlf(b"a\nb\r\n\n"), b"a\r\nb\r\n\r\n");
        assert_eq!(crlf_size_of(b"a\nb\r\n\n"), 8);
        assert_eq!(to_crlf(b"a\nb\r\n\n").len() as u64, crlf_size_of(b"a\nb\r\n\n"));
    }
}
