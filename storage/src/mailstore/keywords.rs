//! `dovecot-keywords`: the names of keyword letters in file names.
//!
//! ```text
//! 0 $Junk
//! 1 $NonJunk
//! ```
//!
//! Index 0 is the letter `a`, 25 is `z`. Read without locking; written
//! (temporary file + rename) only while holding the uidlist dotlock.

use super::fsutil::{self, Stamp};
use super::CONTROL_FILE_BYTES_MAX;
use std::io;
use std::path::Path;
use varan_core::mailstore::{Flag, KEYWORDS_MAX};

pub const KEYWORDS_FILE: &str = "dovecot-keywords";

/// Keyword names by index (`None`: unused index).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keywords {
    pub names: Vec<Option<String>>,
}

impl Keywords {
    /// Parses the file; bad lines, indexes ≥ 26 and duplicate names are skipped.
    pub fn parse(bytes: &[u8]) -> Keywords {
        let mut kw = Keywords::default();
        for line in String::from_utf8_lossy(bytes).lines() {
            let Some((idx, name)) = line.split_once(' ') else { continue };
            let Ok(idx) = idx.parse::<usize>() else { continue };
            let valid = matches!(Flag::from_imap(name), Some(Flag::Keyword(_)));
            if idx >= KEYWORDS_MAX || !valid || kw.index_of(name).is_some() {
                continue;
            }
            if kw.names.len() <= idx {
                kw.names.resize(idx + 1, None);
            }
            kw.names[idx] = Some(name.to_owned());
        }
        kw
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut s = String::new();
        for (i, n) in self.names.iter().enumerate() {
            if let Some(n) = n {
                s.push_str(&format!("{i} {n}\n"));
            }
        }
        s.into_bytes()
    }

    /// Index of a keyword, compared case-insensitively.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    pub fn name(&self, idx: usize) -> Option<&str> {
        self.names.get(idx).and_then(|n| n.as_deref())
    }

    /// Adds a keyword, returning its index; `None` when all 26 are used.
    pub fn add(&mut self, name: &str) -> Option<usize> {
        if let Some(i) = self.index_of(name) {
            return Some(i);
        }
        let free = self.names.iter().position(Option::is_none).or((self.names.len() < KEYWORDS_MAX).then_some(self.names.len()))?;
        if free == self.names.len() {
            self.names.push(None);
        }
        self.names[free] = Some(name.to_owned());
        Some(free)
    }
}

pub fn read(dir: &Path) -> io::Result<(Keywords, Option<Stamp>)> {
    match fsutil::read_capped(&dir.join(KEYWORDS_FILE), CONTROL_FILE_BYTES_MAX) {
        Ok(Some((bytes, stamp))) => Ok((Keywords::parse(&bytes), Some(stamp))),
        Ok(None) => Ok((Keywords::default(), None)),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(dir = %dir.display(), "dovecot-keywords too large; ignored");
            Ok((Keywords::default(), None))
        }
        Err(e) => Err(e),
    }
}

pub fn write(dir: &Path, kw: &Keywords) -> io::Result<Option<Stamp>> {
    let path = dir.join(KEYWORDS_FILE);
    fsutil::write_atomic(&path, &kw.serialize(), false)?;
    Stamp::read(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_add_serialize() {
        let mut kw = Keywords::parse(b"0 $Junk\n2 NonJunk\nbad\n30 x\n3 $junk\n");
        assert_eq!(kw.names, vec![Some("$Junk".into()), None, Some("NonJunk".into())]);
        assert_eq!(kw.index_of("$JUNK"), Some(0));
        assert_eq!(kw.add("Work"), Some(1));
        assert_eq!(kw.serialize(), b"0 $Junk\n1 Work\n2 NonJunk\n");
        for i in 0..23 {
            assert!(kw.add(&format!("k{i}")).is_some());
        }
        assert_eq!(kw.add("one-too-many"), None);
        assert_eq!(kw.add("k3"), Some(6));
    }
}
