//! `varan-index`: what Maildir and Dovecot's files do not record — the
//! modseq of every message, the highest modseq, the expunge log for
//! QRESYNC — plus cached sizes and dates, so that opening a mailbox does
//! not `stat` every file.
//!
//! ```text
//! VARAN-INDEX 1
//! V<uidvalidity> H<highest modseq> L<log floor> [W<lo>-<hi> ...]
//! M <uid> <modseq> <rfc822 size> <internal date> [:<info>]
//! X <uid> <modseq>
//! C <crc32 of all bytes before this line, 8 hex digits>
//! ```
//!
//! `M` lines: one per message, UID ascending; `:<info>` is the file's flag
//! part when the index was written, so flag changes made while Varan was
//! not looking are noticed. `X` lines: the expunge log, oldest first, at
//! most [`super::EXPUNGE_LOG_MAX`]. `L`: expunges with a modseq up to
//! this are forgotten; `W`: windows of modseqs for which expunges may be
//! missing (a crash lost index updates). A file that does not verify or
//! has another UIDVALIDITY is rebuilt from the message files.
//!
//! The index is a cache written with rename (fsynced only when the
//! mailbox is closed). What makes modseqs safe across crashes is
//! `varan-index.open`: while a mailbox is open it holds a modseq ceiling,
//! written durably before any modseq above the previous ceiling is used.
//! Finding it at open means the last session did not close cleanly; the
//! mailbox then continues above the ceiling.

use super::fsutil::{self};
use super::INDEX_BYTES_MAX;
use std::io;
use std::path::Path;
use varan_core::mailstore::{ModSeq, Uid};

pub const INDEX_FILE: &str = "varan-index";
pub const OPEN_FILE: &str = "varan-index.open";
const MAGIC: &str = "VARAN-INDEX 1";
/// Modseqs reserved per write of `varan-index.open`.
pub const MODSEQ_RESERVE: u64 = 100_000;
/// Incomplete-expunge windows kept; older ones merge into the log floor.
pub const WINDOWS_MAX: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMsg {
    pub uid: Uid,
    pub modseq: ModSeq,
    pub size: u64,
    pub date: i64,
    pub info: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexData {
    pub uidvalidity: u32,
    pub highest: ModSeq,
    pub log_floor: ModSeq,
    pub windows: Vec<(ModSeq, ModSeq)>,
    pub msgs: Vec<IndexMsg>,
    pub expunged: Vec<(Uid, ModSeq)>,
}

impl IndexData {
    pub fn serialize(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut s = String::with_capacity(64 + self.msgs.len() * 48);
        let _ = writeln!(s, "{MAGIC}");
        let _ = write!(s, "V{} H{} L{}", self.uidvalidity, self.highest, self.log_floor);
        for (lo, hi) in &self.windows {
            let _ = write!(s, " W{lo}-{hi}");
        }
        s.push('\n');
        for m in &self.msgs {
            let _ = write!(s, "M {} {} {} {}", m.uid, m.modseq, m.size, m.date);
            if let Some(info) = &m.info {
                let _ = write!(s, " :{info}");
            }
            s.push('\n');
        }
        for (uid, modseq) in &self.expunged {
            let _ = writeln!(s, "X {uid} {modseq}");
        }
        let crc = crc32fast::hash(s.as_bytes());
        let _ = writeln!(s, "C {crc:08x}");
        s.into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Result<IndexData, String> {
        let body_end = bytes[..bytes.len().saturating_sub(1)].iter().rposition(|&b| b == b'\n').map(|i| i + 1).ok_or("truncated")?;
        let (body, trailer) = bytes.split_at(body_end);
        let trailer = std::str::from_utf8(trailer).map_err(|_| "bad trailer")?;
        let crc = trailer.strip_prefix("C ").and_then(|t| t.strip_suffix('\n')).and_then(|h| u32::from_str_radix(h, 16).ok()).ok_or("no checksum line")?;
        if crc32fast::hash(body) != crc {
            return Err("checksum mismatch".into());
        }
        let text = std::str::from_utf8(body).map_err(|_| "not UTF-8")?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err("unknown version".into());
        }
        let header = lines.next().ok_or("no header")?;
        let mut d = IndexData::default();
        for f in header.split(' ') {
            let (key, value) = f.split_at(f.len().min(1));
            match key {
                "V" => d.uidvalidity = value.parse().map_err(|_| "bad V")?,
                "H" => d.highest = value.parse().map_err(|_| "bad H")?,
                "L" => d.log_floor = value.parse().map_err(|_| "bad L")?,
                "W" => {
                    let (lo, hi) = value.split_once('-').ok_or("bad W")?;
                    d.windows.push((lo.parse().map_err(|_| "bad W")?, hi.parse().map_err(|_| "bad W")?));
                }
                _ => return Err(format!("unknown header field {f:?}")),
            }
        }
        let mut last_uid = 0;
        for line in lines {
            let bad = || format!("bad line {line:?}");
            let mut parts = line.splitn(6, ' ');
            match parts.next() {
                Some("M") => {
                    let mut num = || parts.next().ok_or_else(bad);
                    let uid: Uid = num()?.parse().map_err(|_| bad())?;
                    let modseq: ModSeq = num()?.parse().map_err(|_| bad())?;
                    let size: u64 = num()?.parse().map_err(|_| bad())?;
                    let date: i64 = num()?.parse().map_err(|_| bad())?;
                    let info = match parts.next() {
                        None => None,
                        Some(i) => Some(i.strip_prefix(':').ok_or_else(bad)?.to_owned()),
                    };
                    if uid <= last_uid || modseq > d.highest {
                        return Err(bad());
                    }
                    last_uid = uid;
                    d.msgs.push(IndexMsg { uid, modseq, size, date, info });
                }
                Some("X") => {
                    let uid: Uid = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                    let modseq: ModSeq = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                    d.expunged.push((uid, modseq));
                }
                _ => return Err(bad()),
            }
        }
        Ok(d)
    }
}

/// Reads the index; `None` when missing or unusable (logged).
pub fn read(dir: &Path) -> Option<IndexData> {
    match fsutil::read_capped(&dir.join(INDEX_FILE), INDEX_BYTES_MAX) {
        Ok(Some((bytes, _))) => match IndexData::parse(&bytes) {
            Ok(d) => Some(d),
            Err(why) => {
                tracing::warn!(dir = %dir.display(), why, "varan-index is damaged; rebuilding it");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "varan-index unreadable; rebuilding it");
            None
        }
    }
}

pub fn write(dir: &Path, data: &IndexData, durable: bool) -> io::Result<()> {
    fsutil::write_atomic(&dir.join(INDEX_FILE), &data.serialize(), durable)
}

/// What `varan-index.open` says: `None` missing, `Some(None)` unreadable.
pub fn read_open_marker(dir: &Path) -> io::Result<Option<Option<ModSeq>>> {
    match fsutil::read_capped(&dir.join(OPEN_FILE), 1024) {
        Ok(Some((bytes, _))) => Ok(Some(std::str::from_utf8(&bytes).ok().and_then(|t| t.trim().parse().ok()))),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Some(None)),
        Err(e) => Err(e),
    }
}

/// Durably records the modseq ceiling of an open mailbox.
pub fn write_open_marker(dir: &Path, ceiling: ModSeq, durable: bool) -> io::Result<()> {
    fsutil::write_atomic(&dir.join(OPEN_FILE), format!("{ceiling}\n").as_bytes(), durable)
}

pub fn remove_open_marker(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(OPEN_FILE)) {
        Err(e) if !fsutil::is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexData {
        IndexData {
            uidvalidity: 7,
            highest: 40,
            log_floor: 3,
            windows: vec![(10, 20)],
            msgs: vec![IndexMsg { uid: 1, modseq: 5, size: 100, date: 1_700_000_000, info: Some("2,S".into()) }, IndexMsg { uid: 4, modseq: 40, size: 3, date: -5, info: None }],
            expunged: vec![(2, 9), (3, 12)],
        }
    }

    #[test]
    fn round_trip() {
        let d = sample();
        assert_eq!(IndexData::parse(&d.serialize()).unwrap(), d);
        assert_eq!(IndexData::parse(&IndexData::default().serialize()).unwrap(), IndexData::default());
    }

    #[test]
    fn damage_is_detected_not_panicking() {
        let bytes = sample().serialize();
        let body_end = bytes.windows(3).rposition(|w| w == b"\nC ").unwrap() + 1;
        for cut in 0..bytes.len() {
            let _ = IndexData::parse(&bytes[..cut]);
            let mut flipped = bytes.clone();
            flipped[cut] ^= 0x20;
            // Case flips of the checksum's hex digits still parse.
            assert!(IndexData::parse(&flipped).is_err() || cut >= body_end, "flip at {cut}");
        }
        assert!(IndexData::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(IndexData::parse(b"").is_err());
        assert!(IndexData::parse(b"\n").is_err());
    }
}
