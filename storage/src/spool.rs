//! Streaming message content while DATA/BDAT arrives.
//!
//! Small messages (the common case) stay in memory and travel inline in
//! the journal record; a message that grows past `memory_max` spills to a
//! file `<spool dir>/<unique>.msg` as it streams in, so memory per session
//! stays bounded whatever the client sends (ARCHITECTURE.md §3 step 4).
//! The spool directory must be the one of the journal the record will be
//! appended to ([`crate::journal::Journal::spool_dir`]): the journal owns
//! the file from the append on and deletes it on retire; orphans are
//! removed when the journal opens.

use crate::journal::{Content, CONTENT_BYTES_MAX};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Hard cap on `memory_max` (`varan_core::config::caps::SPOOL_MEMORY_MAX`):
/// with thousands of sessions in DATA at once, each may hold this much.
pub const SPOOL_MEMORY_MAX: usize = 16 << 20;
/// Write buffer of a spilled spool file: network reads arrive in pieces of
/// a few KiB; batching them saves system calls.
const FILE_BUFFER_BYTES: usize = 64 << 10;
/// Tries at finding an unused file name before giving up (names include
/// time, pid, a process counter and random bits, so one try is the norm).
const CREATE_ATTEMPTS_MAX: u32 = 8;

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A message body being received. Dropping it (or [`Spool::discard`])
/// deletes a spilled file.
pub struct Spool {
    dir: PathBuf,
    memory_max: usize,
    memory: Vec<u8>,
    file: Option<(PathBuf, BufWriter<File>)>,
    len: u64,
    newlines: u64,
}

impl Spool {
    /// A spool that keeps up to `memory_max` bytes (capped at
    /// [`SPOOL_MEMORY_MAX`]) in memory and spills into `dir` beyond that.
    /// Touches no file until it spills.
    pub fn new(dir: &Path, memory_max: usize) -> Spool {
        let memory_max = memory_max.min(SPOOL_MEMORY_MAX);
        Spool { dir: dir.to_path_buf(), memory_max, memory: Vec::new(), file: None, len: 0, newlines: 0 }
    }

    /// Appends bytes of the message (LF line endings). Fails with
    /// `InvalidInput` past [`CONTENT_BYTES_MAX`]; the SMTP layer enforces
    /// the configured (smaller) message size limit before that.
    pub fn write(&mut self, b: &[u8]) -> io::Result<()> {
        let new_len = self.len.saturating_add(b.len() as u64);
        if new_len > CONTENT_BYTES_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("message larger than {CONTENT_BYTES_MAX} bytes")));
        }
        if self.file.is_none() && self.memory.len() + b.len() > self.memory_max {
            self.spill()?;
        }
        match &mut self.file {
            Some((_, w)) => w.write_all(b)?,
            None => self.memory.extend_from_slice(b),
        }
        self.len = new_len;
        self.newlines += memchr::memchr_iter(b'\n', b).count() as u64;
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let (path, file) = create_unique(&self.dir)?;
        let mut w = BufWriter::with_capacity(FILE_BUFFER_BYTES, file);
        if let Err(e) = w.write_all(&self.memory) {
            drop(w);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.memory = Vec::new();
        self.file = Some((path, w));
        Ok(())
    }

    /// Ends the message. A spilled file is flushed and `fdatasync`ed (its
    /// directory entry is made durable by the journal append, once per
    /// batch). On error the file is deleted.
    pub fn finish(mut self) -> io::Result<Content> {
        match self.file.take() {
            None => Ok(Content::Inline(std::mem::take(&mut self.memory))),
            Some((path, w)) => {
                let done = w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_data());
                match done {
                    Ok(()) => Ok(Content::Spooled(path)),
                    Err(e) => {
                        let _ = fs::remove_file(&path);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Drops the message (RSET, rejected DATA, closed connection).
    pub fn discard(self) {}

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// LF characters written so far: the message's size with CRLF line
    /// endings (Maildir `W=`, IMAP RFC822.SIZE) is `len() + newlines()`.
    pub fn newlines(&self) -> u64 {
        self.newlines
    }

    /// The spill file, once the message went past `memory_max`.
    pub fn spilled_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some((path, w)) = self.file.take() {
            drop(w);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove discarded spool file");
            }
        }
    }
}

fn create_unique(dir: &Path) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..CREATE_ATTEMPTS_MAX {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let name =
            format!("{}.{:09}.P{}.N{}.{:08x}.msg", now.as_secs(), now.subsec_nanos(), std::process::id(), SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed), rand::random::<u32>());
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot create a spool file")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn small_message_stays_in_memory() {
        let t = TempDir::new();
        let mut s = Spool::new(t.path(), 100);
        s.write(b"Subject: hi\n\n").unwrap();
        s.write(b"body\n").unwrap();
        assert_eq!(s.len(), 18);
        assert_eq!(s.newlines(), 3);
        assert!(s.spilled_path().is_none());
        assert_eq!(s.finish().unwrap(), Content::Inline(b"Subject: hi\n\nbody\n".to_vec()));
        assert!(!t.path().exists() || fs::read_dir(t.path()).unwrap().next().is_none());
    }

    #[test]
    fn large_message_spills_and_is_complete() {
        let t = TempDir::new();
        let dir = t.path().join("spool");
        let mut s = Spool::new(&dir, 10);
        s.write(b"12345678").unwrap();
        assert!(s.spilled_path().is_none());
        s.write(b"abc\n").unwrap();
        let path = s.spilled_path().unwrap().to_path_buf();
        assert!(path.starts_with(&dir) && path.extension().unwrap() == "msg");
        let chunk = vec![b'x'; 100_000];
        s.write(&chunk).unwrap();
        match s.finish().unwrap() {
            Content::Spooled(p) => {
                assert_eq!(p, path);
                let data = fs::read(&p).unwrap();
                assert_eq!(data.len(), 12 + 100_000);
                assert_eq!(&data[..12], b"12345678abc\n");
            }
            other => panic!("not spooled: {other:?}"),
        }
    }

    #[test]
    fn discard_and_drop_remove_the_file() {
        let t = TempDir::new();
        let mut s = Spool::new(t.path(), 4);
        s.write(b"0123456789").unwrap();
        let p = s.spilled_path().unwrap().to_path_buf();
        assert!(p.exists());
        s.discard();
        assert!(!p.exists());
        let mut s = Spool::new(t.path(), 4);
        s.write(b"0123456789").unwrap();
        let p = s.spilled_path().unwrap().to_path_buf();
        drop(s);
        assert!(!p.exists());
    }

    #[test]
    fn memory_limit_is_capped() {
        let t = TempDir::new();
        let mut s = Spool::new(t.path(), usize::MAX);
        s.write(&vec![0u8; SPOOL_MEMORY_MAX + 1]).unwrap();
        assert!(s.spilled_path().is_some());
    }

    #[test]
    fn spill_failure_is_an_error_not_a_panic() {
        let t = TempDir::new();
        let blocker = t.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let mut s = Spool::new(&blocker.join("spool"), 1);
        assert!(s.write(b"too big").is_err());
    }
}
