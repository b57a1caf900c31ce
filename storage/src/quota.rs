//! Maildir++ quota: the `maildirsize` file in the user's Maildir root, as
//! Courier and Dovecot (`quota = maildir`) write it.
//!
//! ```text
//! 1073741824S,10000C      quota definition: bytes (S) and/or messages (C);
//!                         "0S" when there is no limit
//! 1234567 42              the usage when the file was (re)written
//! 4096 1                  one line appended per change, may be negative
//! -4096 -1
//! ```
//!
//! Appends are single `O_APPEND` writes, so concurrent writers (Dovecot
//! expunging, Varan delivering) never interleave inside a line. The file is
//! recalculated from the message files when it is missing, damaged, has
//! grown to [`MAILDIRSIZE_RECALC_BYTES`], or claims over-quota from stale
//! data — the same rules as Dovecot's `quota-maildir.c`, so both can share a
//! mailbox.

use crate::maildir::parse_sizes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// At this size the file is recalculated and rewritten (Maildir++ spec and
/// Dovecot: 5120 bytes), which keeps reading it one small `read`.
pub const MAILDIRSIZE_RECALC_BYTES: u64 = 5120;
/// An over-quota answer from a file older than this (or with more than one
/// usage line) is not trusted: Dovecot's `MAILDIRSIZE_STALE_SECS`.
pub const MAILDIRSIZE_STALE: Duration = Duration::from_secs(15 * 60);
const MAILDIRSIZE_FILE: &str = "maildirsize";

/// A quota definition; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimit {
    pub bytes: Option<u64>,
    pub messages: Option<u64>,
}

impl QuotaLimit {
    /// The Maildir++ definition line (Dovecot's formatting: `0S` when
    /// there is no limit at all).
    fn to_line(self) -> String {
        let mut parts = Vec::new();
        if self.bytes.is_some() || self.messages.is_none() {
            parts.push(format!("{}S", self.bytes.unwrap_or(0)));
        }
        if let Some(c) = self.messages {
            parts.push(format!("{c}C"));
        }
        parts.join(",")
    }

    /// Parses a definition line; unknown parts are ignored and 0 means
    /// "no limit", as in Dovecot's `maildir_parse_limit`.
    fn parse(line: &str) -> QuotaLimit {
        let mut limit = QuotaLimit::default();
        for part in line.split(',') {
            let part = part.trim();
            let Some(kind) = part.chars().last() else { continue };
            let Ok(n) = part[..part.len() - kind.len_utf8()].parse::<u64>() else { continue };
            let value = (n != 0).then_some(n);
            match kind {
                'S' => limit.bytes = value,
                'C' => limit.messages = value,
                _ => {}
            }
        }
        limit
    }

    fn exceeded_by(self, bytes: u64, messages: u64) -> bool {
        self.bytes.is_some_and(|b| bytes > b) || self.messages.is_some_and(|c| messages > c)
    }
}

/// What a readable `maildirsize` says.
struct Parsed {
    limit: QuotaLimit,
    bytes: u64,
    messages: u64,
    usage_lines: usize,
}

enum FileState {
    Missing,
    /// Damaged or too large; the definition is kept if it could be read.
    NeedsRecalc(Option<QuotaLimit>),
    Usable(Parsed),
}

/// Usage of the mailbox at `user_dir` as (bytes, messages), from
/// `maildirsize`, recalculating it when needed (see the module docs).
pub fn quota_usage(user_dir: &Path) -> io::Result<(u64, u64)> {
    let path = user_dir.join(MAILDIRSIZE_FILE);
    match read_maildirsize(&path)? {
        FileState::Usable(p) => Ok((p.bytes, p.messages)),
        FileState::NeedsRecalc(limit) => quota_recalculate(user_dir, limit.unwrap_or_default()),
        FileState::Missing => quota_recalculate(user_dir, QuotaLimit::default()),
    }
}

/// The quota definition recorded in `maildirsize`, if it can be read.
pub fn quota_limit(user_dir: &Path) -> io::Result<Option<QuotaLimit>> {
    Ok(match read_maildirsize(&user_dir.join(MAILDIRSIZE_FILE))? {
        FileState::Usable(p) => Some(p.limit),
        FileState::NeedsRecalc(l) => l,
        FileState::Missing => None,
    })
}

/// Records a change of `bytes` and `count` messages (negative for
/// removals) with one `O_APPEND` write. When the file does not exist
/// nothing is written: the next [`quota_usage`] recalculates from the
/// files, which already include this change.
pub fn quota_add(user_dir: &Path, bytes: i64, count: i64) -> io::Result<()> {
    let mut file = match OpenOptions::new().append(true).open(user_dir.join(MAILDIRSIZE_FILE)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let line = format!("{bytes} {count}\n");
    // One write(2) of < 64 bytes to a regular file in append mode is
    // atomic with respect to other appenders; a short write is an error.
    let n = file.write(line.as_bytes())?;
    if n != line.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to maildirsize"));
    }
    Ok(())
}

/// Scans every folder's `new/` and `cur/`, sums the `S=` sizes (or file
/// sizes where a name has none) and rewrites `maildirsize` with `limit`
/// atomically (temporary file + rename). If a folder changed during the
/// scan, the file is not written (a concurrent append could be lost) and
/// the computed numbers are returned; the next call tries again.
pub fn quota_recalculate(user_dir: &Path, limit: QuotaLimit) -> io::Result<(u64, u64)> {
    let dirs = message_dirs(user_dir)?;
    let mut stamps = Vec::with_capacity(dirs.len());
    let (mut bytes, mut messages) = (0u64, 0u64);
    for dir in &dirs {
        stamps.push(mtime(dir)?);
        let (b, m) = sum_dir(dir)?;
        bytes = bytes.saturating_add(b);
        messages = messages.saturating_add(m);
    }
    for (dir, before) in dirs.iter().zip(&stamps) {
        if mtime(dir)? != *before {
            tracing::debug!(dir = %dir.display(), "mailbox changed during quota scan; maildirsize not rewritten");
            return Ok((bytes, messages));
        }
    }
    let text = format!("{}\n{bytes} {messages}\n", limit.to_line());
    let path = user_dir.join(MAILDIRSIZE_FILE);
    let tmp = user_dir.join(format!("{MAILDIRSIZE_FILE}.{}.{:08x}.tmp", std::process::id(), rand::random::<u32>()));
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let done = f.write_all(text.as_bytes()).and_then(|()| fs::rename(&tmp, &path));
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done.map(|()| (bytes, messages))
}

fn mtime(dir: &Path) -> io::Result<Option<SystemTime>> {
    match fs::metadata(dir) {
        Ok(m) => Ok(m.modified().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `new/` and `cur/` of INBOX and of every `.Folder`, skipping folders
/// being deleted (Dovecot renames them to `..Name` first).
fn message_dirs(user_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut folders = vec![user_dir.to_path_buf()];
    for entry in fs::read_dir(user_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if name.len() > 1 && name[0] == b'.' && name[1] != b'.' && entry.file_type()?.is_dir() {
            folders.push(entry.path());
        }
    }
    Ok(folders.into_iter().flat_map(|f| [f.join("new"), f.join("cur")]).collect())
}

/// Sums one directory like Dovecot's `maildir_sum_dir`: `,S=<n>` followed
/// by `:`, `,` or the end gives the size; otherwise `stat`.
fn sum_dir(dir: &Path) -> io::Result<(u64, u64)> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        other => other?,
    };
    let (mut bytes, mut count) = (0u64, 0u64);
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let size = match parse_sizes(name).0 {
            Some(s) => s,
            None => match entry.metadata() {
                Ok(m) => m.len(),
                // Expunged between readdir and stat.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        bytes = bytes.saturating_add(size);
        count += 1;
    }
    Ok((bytes, count))
}

fn read_maildirsize(path: &Path) -> io::Result<FileState> {
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileState::Missing),
        other => other?,
    };
    let modified = file.metadata()?.modified().ok();
    let mut buf = Vec::with_capacity(MAILDIRSIZE_RECALC_BYTES as usize);
    file.take(MAILDIRSIZE_RECALC_BYTES).read_to_end(&mut buf)?;
    let too_big = buf.len() as u64 >= MAILDIRSIZE_RECALC_BYTES;
    // A last line without LF is an append in progress (or torn): ignore it.
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = match std::str::from_utf8(&buf[..complete]) {
        Ok(t) if !t.contains('\0') => t,
        _ => return Ok(FileState::NeedsRecalc(None)),
    };
    let mut lines = text.lines();
    let Some(first) = lines.next() else { return Ok(FileState::NeedsRecalc(None)) };
    let limit = QuotaLimit::parse(first);
    if too_big {
        return Ok(FileState::NeedsRecalc(Some(limit)));
    }
    let (mut bytes, mut messages, mut usage_lines) = (0i64, 0i64, 0usize);
    for line in lines {
        let mut f = line.split_ascii_whitespace();
        let (Some(Ok(b)), Some(Ok(c)), None) = (f.next().map(str::parse::<i64>), f.next().map(str::parse::<i64>), f.next()) else {
            return Ok(FileState::NeedsRecalc(Some(limit)));
        };
        bytes = bytes.saturating_add(b);
        messages = messages.saturating_add(c);
        usage_lines += 1;
    }
    if usage_lines == 0 || bytes < 0 || messages < 0 {
        return Ok(FileState::NeedsRecalc(Some(limit)));
    }
    let parsed = Parsed { limit, bytes: bytes as u64, messages: messages as u64, usage_lines };
    if parsed.limit.exceeded_by(parsed.bytes, parsed.messages) {
        let stale = modified.and_then(|m| m.elapsed().ok()).is_none_or(|age| age > MAILDIRSIZE_STALE);
        if parsed.usage_lines > 1 || stale {
            return Ok(FileState::NeedsRecalc(Some(limit)));
        }
    }
    Ok(FileState::Usable(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildir::create_maildir;
    use crate::testutil::TempDir;

    fn mailbox() -> TempDir {
        let t = TempDir::new();
        create_maildir(t.path()).unwrap();
        create_maildir(&t.path().join(".Sent")).unwrap();
        fs::write(t.path().join("new/1.M1P1.h,S=100,W=104"), b"x").unwrap();
        fs::write(t.path().join("cur/2.M1P1.h,S=50,W=52:2,S"), b"x").unwrap();
        fs::write(t.path().join(".Sent/cur/3.M1P1.h:2,"), b"12345").unwrap();
        t
    }

    #[test]
    fn recalculates_when_missing() {
        let t = mailbox();
        assert_eq!(quota_usage(t.path()).unwrap(), (155, 3));
        let text = fs::read_to_string(t.path().join("maildirsize")).unwrap();
        assert_eq!(text, "0S\n155 3\n");
    }

    #[test]
    fn reads_appended_lines_and_ignores_partial_last_line() {
        let t = mailbox();
        fs::write(t.path().join("maildirsize"), "1000000S,100C\n155 3\n").unwrap();
        quota_add(t.path(), 4096, 1).unwrap();
        quota_add(t.path(), -50, -1).unwrap();
        assert_eq!(quota_usage(t.path()).unwrap(), (4201, 3));
        let mut f = OpenOptions::new().append(true).open(t.path().join("maildirsize")).unwrap();
        f.write_all(b"999").unwrap();
        assert_eq!(quota_usage(t.path()).unwrap(), (4201, 3));
        assert_eq!(quota_limit(t.path()).unwrap(), Some(QuotaLimit { bytes: Some(1_000_000), messages: Some(100) }));
    }

    #[test]
    fn add_without_file_writes_nothing() {
        let t = mailbox();
        quota_add(t.path(), 10, 1).unwrap();
        assert!(!t.path().join("maildirsize").exists());
    }

    #[test]
    fn recalculates_when_too_big_or_broken_keeping_the_limit() {
        let t = mailbox();
        let mut text = String::from("2048S\n");
        while text.len() < MAILDIRSIZE_RECALC_BYTES as usize {
            text.push_str("10 1\n");
        }
        fs::write(t.path().join("maildirsize"), &text).unwrap();
        assert_eq!(quota_usage(t.path()).unwrap(), (155, 3));
        assert_eq!(fs::read_to_string(t.path().join("maildirsize")).unwrap(), "2048S\n155 3\n");
        for broken in ["2048S\nabc def\n", "2048S\n-500 -1\n", "2048S\n1\0 2\n", "2048S\n"] {
            fs::write(t.path().join("maildirsize"), broken).unwrap();
            assert_eq!(quota_usage(t.path()).unwrap(), (155, 3), "{broken:?}");
        }
    }

    #[test]
    fn over_quota_with_several_lines_is_rechecked() {
        let t = mailbox();
        fs::write(t.path().join("maildirsize"), "100S\n90 1\n90 1\n").unwrap();
        assert_eq!(quota_usage(t.path()).unwrap(), (155, 3));
        fs::write(t.path().join("maildirsize"), "100S\n180 2\n").unwrap();
        assert_eq!(quota_usage(t.path()).unwrap(), (180, 2), "fresh single line trusted");
    }

    #[test]
    fn limit_lines() {
        assert_eq!(QuotaLimit::default().to_line(), "0S");
        assert_eq!(QuotaLimit { bytes: Some(5), messages: None }.to_line(), "5S");
        assert_eq!(QuotaLimit { bytes: None, messages: Some(7) }.to_line(), "7C");
        assert_eq!(QuotaLimit { bytes: Some(5), messages: Some(7) }.to_line(), "5S,7C");
        assert_eq!(QuotaLimit::parse("0S"), QuotaLimit::default());
        assert_eq!(QuotaLimit::parse("x,12C,,S"), QuotaLimit { bytes: None, messages: Some(12) });
        assert_eq!(QuotaLimit::parse("é"), QuotaLimit::default());
    }
}
