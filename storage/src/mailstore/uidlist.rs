//! `dovecot-uidlist`, version 3 (Dovecot ≥ 1.1), and its dotlock.
//!
//! ```text
//! 3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1
//! 25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,
//! 25017 W2481 :1276533073.M242911P3632.kurkku:2,F
//! ```
//!
//! Header: version, then `<key><value>` fields in any order: `V`
//! UIDVALIDITY, `N` next UID, `G` mailbox GUID (128-bit hex); unknown
//! fields are kept. Records: UID, optional `<key><value>` fields with keys
//! `A`–`Z` (`W` RFC822.SIZE, `S` file size, `G` GUID, `P`/`O` POP3 data;
//! kept as they are), then `:` and the last known file name. Records are
//! matched to files by base name (the part before `:`). UIDs ascend; lines
//! may be appended after the header's `N` was written, so the next UID is
//! the larger of `N` and the last UID + 1.
//!
//! Writers hold `dovecot-uidlist.lock`, a dotlock created with `O_EXCL`
//! holding `<pid>:<host>`, and either append whole lines or replace the
//! file with `rename(2)`. A lock older than [`DOTLOCK_STALE`] (Dovecot's
//! `MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT`, 2 minutes), or held by a process of
//! this host that no longer exists, is stale and overridden.

use super::fsutil::{self, Stamp, FILE_MODE};
use super::UIDLIST_BYTES_MAX;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub const UIDLIST_FILE: &str = "dovecot-uidlist";
pub const LOCK_FILE: &str = "dovecot-uidlist.lock";
/// A dotlock this old is stale (Dovecot refreshes its locks' mtime while
/// it holds them longer).
pub const DOTLOCK_STALE: Duration = Duration::from_secs(120);
/// How long we wait for a dotlock before failing: the stale timeout and a
/// little more, as Dovecot does.
pub const DOTLOCK_WAIT: Duration = Duration::from_secs(122);

/// One record line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub uid: u32,
    /// Extension fields (`W1234`), kept verbatim.
    pub ext: Vec<String>,
    /// The last known file name (maybe with `:2,` flags).
    pub name: String,
}

impl Record {
    /// The value of extension field `key`.
    pub fn ext_value(&self, key: char) -> Option<&str> {
        self.ext.iter().find_map(|e| e.strip_prefix(key))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uidlist {
    pub uidvalidity: u32,
    /// The next UID: at least the last record's UID + 1.
    pub next_uid: u32,
    /// Mailbox GUID, 32 hex digits.
    pub guid: String,
    /// Header fields other than V, N, G, kept verbatim.
    pub hdr_ext: Vec<String>,
    pub records: Vec<Record>,
}

impl Uidlist {
    pub fn new(uidvalidity: u32) -> Uidlist {
        Uidlist { uidvalidity, next_uid: 1, guid: format!("{:032x}", rand::random::<u128>()), hdr_ext: Vec::new(), records: Vec::new() }
    }

    /// Parses the file. A bad header is an error (the file cannot be used);
    /// bad or out-of-order record lines are skipped, and a last line
    /// without LF (an append in progress) is ignored.
    pub fn parse(bytes: &[u8]) -> Result<Uidlist, String> {
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&bytes[..complete]);
        let mut lines = text.lines();
        let header = lines.next().ok_or("empty file")?;
        let mut fields = header.split(' ').filter(|f| !f.is_empty());
        if fields.next() != Some("3") {
            return Err(format!("unsupported uidlist header {header:?}"));
        }
        let mut list = Uidlist::default();
        let (mut have_v, mut hdr_next) = (false, 1u32);
        for f in fields {
            let mut chars = f.chars();
            let key = chars.next().unwrap_or(' ');
            let value = chars.as_str();
            match key {
                'V' => {
                    list.uidvalidity = value.parse().map_err(|_| format!("bad UIDVALIDITY {value:?}"))?;
                    have_v = true;
                }
                'N' => hdr_next = value.parse().map_err(|_| format!("bad next UID {value:?}"))?,
                'G' => list.guid = value.to_owned(),
                _ => list.hdr_ext.push(f.to_owned()),
            }
        }
        if !have_v || list.uidvalidity == 0 {
            return Err("no UIDVALIDITY in header".into());
        }
        let mut last = 0u32;
        for line in lines {
            let Some(rec) = parse_record(line) else {
                tracing::warn!(line, "skipping a bad dovecot-uidlist line");
                continue;
            };
            if rec.uid <= last {
                tracing::warn!(uid = rec.uid, last, "skipping an out-of-order dovecot-uidlist line");
                continue;
            }
            last = rec.uid;
            list.records.push(rec);
        }
        list.next_uid = hdr_next.max(last.saturating_add(1)).max(1);
        Ok(list)
    }

    pub fn header_line(&self) -> String {
        let mut s = format!("3 V{} N{}", self.uidvalidity, self.next_uid);
        if !self.guid.is_empty() {
            s.push_str(" G");
            s.push_str(&self.guid);
        }
        for e in &self.hdr_ext {
            s.push(' ');
            s.push_str(e);
        }
        s.push('\n');
        s
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut s = self.header_line();
        for r in &self.records {
            s.push_str(&record_line(r));
        }
        s.into_bytes()
    }
}

fn parse_record(line: &str) -> Option<Record> {
    let (uid, rest) = line.split_once(' ')?;
    let uid: u32 = uid.parse().ok().filter(|&u| u != 0 && u != u32::MAX)?;
    let colon = rest.find(':')?;
    let ext = rest[..colon].split(' ').filter(|f| !f.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    if ext.iter().any(|e| !e.starts_with(|c: char| c.is_ascii_uppercase())) {
        return None;
    }
    let name = &rest[colon + 1..];
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return None;
    }
    Some(Record { uid, ext, name: name.to_owned() })
}

pub fn record_line(r: &Record) -> String {
    let mut s = r.uid.to_string();
    for e in &r.ext {
        s.push(' ');
        s.push_str(e);
    }
    s.push_str(" :");
    s.push_str(&r.name);
    s.push('\n');
    s
}

/// Reads `<dir>/dovecot-uidlist`. `Ok(None)` when missing; a damaged
/// header is `InvalidData`.
pub fn read(dir: &Path) -> io::Result<Option<(Uidlist, Stamp)>> {
    let Some((bytes, stamp)) = fsutil::read_capped(&dir.join(UIDLIST_FILE), UIDLIST_BYTES_MAX)? else { return Ok(None) };
    match Uidlist::parse(&bytes) {
        Ok(list) => Ok(Some((list, stamp))),
        Err(why) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", dir.join(UIDLIST_FILE).display()))),
    }
}

/// Replaces the file (temporary file + rename); with `durable`, fsynced.
pub fn write(dir: &Path, list: &Uidlist, durable: bool) -> io::Result<Stamp> {
    let path = dir.join(UIDLIST_FILE);
    fsutil::write_atomic(&path, &list.serialize(), durable)?;
    Ok(Stamp::of(&fs::metadata(&path)?))
}

/// Appends records with one write; with `durable`, fdatasync'ed.
pub fn append(dir: &Path, records: &[Record], durable: bool) -> io::Result<Stamp> {
    let path = dir.join(UIDLIST_FILE);
    let mut f = OpenOptions::new().append(true).open(&path)?;
    let mut text = String::new();
    for r in records {
        text.push_str(&record_line(r));
    }
    f.write_all(text.as_bytes())?;
    if durable {
        f.sync_data()?;
    }
    Ok(Stamp::of(&f.metadata()?))
}

/// A held `dovecot-uidlist.lock`; removed on drop.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
}

impl DotLock {
    /// Takes the lock of the uidlist in `dir`, waiting up to `wait`.
    pub fn acquire(dir: &Path, host: &str, wait: Duration) -> io::Result<DotLock> {
        let path = dir.join(LOCK_FILE);
        let content = format!("{}:{}", std::process::id(), host);
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&path) {
                Ok(mut f) => {
                    let written = f.write_all(content.as_bytes());
                    if let Err(e) = written {
                        let _ = fs::remove_file(&path);
                        return Err(e);
                    }
                    return Ok(DotLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_stale(&path, host) {
                        tracing::warn!(lock = %path.display(), "overriding a stale dotlock");
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("timed out waiting for {}", path.display())));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(lock = %self.path.display(), error = %e, "could not remove dotlock");
        }
    }
}

fn is_stale(path: &Path, host: &str) -> bool {
    let Ok(meta) = fs::metadata(path) else { return false };
    if meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).is_some_and(|age| age > DOTLOCK_STALE) {
        return true;
    }
    // `<pid>:<host>` of a process on this host that is gone.
    let Ok(Some((bytes, _))) = fsutil::read_capped(path, 1024) else { return false };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().split_once(':') {
        Some((pid, lock_host)) if lock_host == host => match pid.parse::<u32>() {
            Ok(pid) if pid != std::process::id() => !Path::new(&format!("/proc/{pid}")).exists(),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dovecot_example_and_round_trips() {
        let text = "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1 Xfoo\n\
                    25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n\
                    25017 W2481 :1276533073.M242911P3632.kurkku:2,F\n";
        let l = Uidlist::parse(text.as_bytes()).unwrap();
        assert_eq!((l.uidvalidity, l.next_uid, l.guid.as_str()), (1275660208, 25022, "3085f01b7f11094c501100008c4a11c1"));
        assert_eq!(l.hdr_ext, vec!["Xfoo".to_owned()]);
        assert_eq!(l.records[1], Record { uid: 25017, ext: vec!["W2481".into()], name: "1276533073.M242911P3632.kurkku:2,F".into() });
        assert_eq!(l.records[1].ext_value('W'), Some("2481"));
        assert_eq!(String::from_utf8(l.serialize()).unwrap(), text);
    }

    #[test]
    fn tolerates_damage() {
        assert!(Uidlist::parse(b"").is_err());
        assert!(Uidlist::parse(b"1 2 3\n").is_err());
        assert!(Uidlist::parse(b"3 Vx N1\n").is_err());
        let l = Uidlist::parse(b"3 V5 N2\n7 :a\nzz\n3 :b\n9 x :c\n10 :d/e\n12 :f\n13 :partial").unwrap();
        assert_eq!(l.records.iter().map(|r| r.uid).collect::<Vec<_>>(), vec![7, 12]);
        assert_eq!(l.next_uid, 13);
    }
}
