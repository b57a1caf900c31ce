//! Replaying journal records into the Maildirs.
//!
//! At startup every record of the segments left by the previous run is
//! replayed: each target file that is missing, or present with different
//! bytes (a write cut short by the crash), is (re)written; a file that is
//! present and intact is left alone, even if an IMAP or POP3 server has
//! moved it from `new/` to `cur/` and added flags (`<name>:2,S`). File
//! names are fixed in the record, so replaying twice is harmless and every
//! acknowledged message ends up in its mailbox exactly once.
//!
//! Known limit of the design: a message that the user deleted (or moved
//! to another folder) between its delivery and the next checkpoint, right
//! before a crash, comes back. The checkpoint interval (1 s by default)
//! keeps that window small.

use crate::journal::{Content, Delivery, JournalRecord};
use crate::maildir::{self, file_matches, is_same_message};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How to treat files that are already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Compare and rewrite only what is missing or different (startup).
    Check,
    /// Rewrite every file, even if it looks intact: after a failed
    /// `syncfs`, the page cache may hold the right bytes while the disk
    /// does not.
    Rewrite,
}

/// What a replay did, counted per target file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Written because no file was there.
    pub delivered: usize,
    /// Present with the right bytes, left alone.
    pub already_present: usize,
    /// Present with wrong bytes (or `Mode::Rewrite`), rewritten in place.
    pub repaired: usize,
    /// Could not be checked or written (logged); the journal segments must
    /// not be retired until a later replay succeeds.
    pub failed: usize,
}

impl RecoveryReport {
    /// True when every target is in place, so the segments may be retired
    /// after a successful filesystem sync.
    pub fn is_complete(&self) -> bool {
        self.failed == 0
    }
}

/// Brings every target of `records` into its mailbox. Never stops at the
/// first error: every failure is logged and counted.
pub fn redeliver(records: &[JournalRecord], mode: Mode) -> RecoveryReport {
    let mut report = RecoveryReport::default();
    let mut cur = CurIndex::new(records);
    for record in records {
        for target in &record.deliveries {
            match redeliver_one(target, &record.content, mode, &mut cur) {
                Ok(Outcome::Delivered) => report.delivered += 1,
                Ok(Outcome::Present) => report.already_present += 1,
                Ok(Outcome::Repaired) => report.repaired += 1,
                Err(e) => {
                    tracing::error!(record = record.id, target = %target.path.display(), error = %e, "journal replay could not deliver");
                    report.failed += 1;
                }
            }
        }
    }
    if report != RecoveryReport::default() {
        tracing::info!(?report, "journal replay finished");
    }
    report
}

enum Outcome {
    Delivered,
    Present,
    Repaired,
}

fn redeliver_one(target: &Delivery, content: &Content, mode: Mode, cur: &mut CurIndex) -> io::Result<Outcome> {
    let found = if fs::symlink_metadata(&target.path).is_ok() { Some(target.path.clone()) } else { cur.find(&target.path)? };
    match found {
        None => {
            maildir::deliver(target, content)?;
            Ok(Outcome::Delivered)
        }
        Some(path) => {
            if mode == Mode::Check && file_matches(&path, &target.prefix, content)? {
                return Ok(Outcome::Present);
            }
            maildir::write_via_tmp(target, content, &path)?;
            Ok(Outcome::Repaired)
        }
    }
}

/// Finds moved messages in `cur/` directories, listing each directory at
/// most once and remembering only the names the records ask for, so
/// memory is bounded by the records, not by the mailbox size.
struct CurIndex {
    wanted: HashMap<PathBuf, HashSet<OsString>>,
    listed: HashMap<PathBuf, HashMap<OsString, PathBuf>>,
}

impl CurIndex {
    fn new(records: &[JournalRecord]) -> Self {
        let mut wanted: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for d in records.iter().flat_map(|r| &r.deliveries) {
            if let Some((cur, name)) = cur_dir_and_name(&d.path) {
                wanted.entry(cur).or_default().insert(name);
            }
        }
        Self { wanted, listed: HashMap::new() }
    }

    fn find(&mut self, target: &Path) -> io::Result<Option<PathBuf>> {
        let Some((cur, name)) = cur_dir_and_name(target) else { return Ok(None) };
        if !self.listed.contains_key(&cur) {
            let found = self.list(&cur)?;
            self.listed.insert(cur.clone(), found);
        }
        Ok(self.listed.get(&cur).and_then(|m| m.get(&name)).cloned())
    }

    fn list(&self, cur: &Path) -> io::Result<HashMap<OsString, PathBuf>> {
        let mut found = HashMap::new();
        let Some(wanted) = self.wanted.get(cur) else { return Ok(found) };
        let entries = match fs::read_dir(cur) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            other => other?,
        };
        for entry in entries {
            let file = entry?.file_name();
            let bytes = file.as_bytes();
            let base_len = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
            let base = std::ffi::OsStr::from_bytes(&bytes[..base_len]);
            if wanted.contains(base) && is_same_message(base.as_bytes(), bytes) {
                found.insert(base.to_os_string(), cur.join(&file));
            }
        }
        Ok(found)
    }
}

/// `<maildir>/new/<name>` → (`<maildir>/cur`, `<name>`).
fn cur_dir_and_name(target: &Path) -> Option<(PathBuf, OsString)> {
    let name = target.file_name()?.to_os_string();
    let maildir = target.parent()?.parent()?;
    Some((maildir.join("cur"), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildir::create_maildir;
    use crate::testutil::TempDir;

    fn record(dir: &Path, id: u64, names: &[&str], body: &[u8]) -> JournalRecord {
        JournalRecord {
            id,
            deliveries: names.iter().map(|n| Delivery { path: dir.join("new").join(n), prefix: format!("Delivered-To: {n}\n").into_bytes() }).collect(),
            content: Content::Inline(body.to_vec()),
            outbound: None,
        }
    }

    fn file_count(dir: &Path) -> usize {
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn delivers_missing_keeps_moved_repairs_damaged() {
        let t = TempDir::new();
        let m = t.path().join("u");
        create_maildir(&m).unwrap();
        let rec = record(&m, 1, &["a,S=1", "b,S=1", "c,S=1", "d,S=1"], b"body\n");
        let expected = |n: &str| [format!("Delivered-To: {n}\n").as_bytes(), b"body\n"].concat();
        // a: never written. b: delivered and read (moved to cur with flags).
        // c: torn write. d: intact in new/.
        fs::write(m.join("cur/b,S=1:2,S"), expected("b,S=1")).unwrap();
        fs::write(m.join("new/c,S=1"), b"Delivered-To: c").unwrap();
        fs::write(m.join("new/d,S=1"), expected("d,S=1")).unwrap();
        let report = redeliver(std::slice::from_ref(&rec), Mode::Check);
        assert_eq!(report, RecoveryReport { delivered: 1, already_present: 2, repaired: 1, failed: 0 });
        assert_eq!(fs::read(m.join("new/a,S=1")).unwrap(), expected("a,S=1"));
        assert_eq!(fs::read(m.join("new/c,S=1")).unwrap(), expected("c,S=1"));
        assert!(!m.join("new/b,S=1").exists(), "moved message delivered twice");
        assert_eq!(file_count(&m.join("new")), 3);
        assert_eq!(file_count(&m.join("cur")), 1);
        assert_eq!(file_count(&m.join("tmp")), 0);
        // A second replay changes nothing.
        let again = redeliver(&[rec], Mode::Check);
        assert_eq!(again, RecoveryReport { delivered: 0, already_present: 4, repaired: 0, failed: 0 });
    }

    #[test]
    fn damaged_file_in_cur_is_repaired_in_place() {
        let t = TempDir::new();
        let m = t.path().join("u");
        create_maildir(&m).unwrap();
        let rec = record(&m, 1, &["x"], b"hello\n");
        fs::write(m.join("cur/x:2,FS"), b"garbage").unwrap();
        let report = redeliver(&[rec], Mode::Check);
        assert_eq!(report.repaired, 1);
        assert_eq!(fs::read(m.join("cur/x:2,FS")).unwrap(), b"Delivered-To: x\nhello\n");
        assert!(!m.join("new/x").exists());
    }

    #[test]
    fn rewrite_mode_rewrites_everything_and_missing_maildir_is_created() {
        let t = TempDir::new();
        let m = t.path().join("never-created");
        let rec = record(&m, 1, &["x"], b"hello\n");
        assert_eq!(redeliver(std::slice::from_ref(&rec), Mode::Check).delivered, 1);
        assert_eq!(redeliver(&[rec], Mode::Rewrite).repaired, 1);
        assert!(m.join("cur").is_dir() && m.join("tmp").is_dir());
    }

    #[test]
    fn failures_are_counted_not_fatal() {
        let t = TempDir::new();
        let blocker = t.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let bad = record(&blocker, 1, &["x"], b"m\n");
        let good = record(&t.path().join("ok"), 2, &["y"], b"m\n");
        let report = redeliver(&[bad, good], Mode::Check);
        assert_eq!((report.failed, report.delivered), (1, 1));
        assert!(!report.is_complete());
    }

    #[test]
    fn spooled_content_is_compared_and_copied() {
        let t = TempDir::new();
        let m = t.path().join("u");
        let spool = t.path().join("s.msg");
        fs::write(&spool, vec![b'z'; 200_000]).unwrap();
        let rec =
            JournalRecord { id: 1, deliveries: vec![Delivery { path: m.join("new/n"), prefix: b"P: 1\n".to_vec() }], content: Content::Spooled(spool.clone()), outbound: None };
        assert_eq!(redeliver(std::slice::from_ref(&rec), Mode::Check).delivered, 1);
        assert_eq!(redeliver(std::slice::from_ref(&rec), Mode::Check).already_present, 1);
        let mut data = fs::read(m.join("new/n")).unwrap();
        assert_eq!(data.len(), 200_005);
        data[100_000] = b'y';
        fs::write(m.join("new/n"), &data).unwrap();
        assert_eq!(redeliver(&[rec], Mode::Check).repaired, 1);
    }
}
