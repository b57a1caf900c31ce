//! Dovecot-compatible Maildir++ delivery.
//!
//! Layout (ARCHITECTURE.md §4): `<root>/<domain>/<local part>/` holds the
//! INBOX (`cur/ new/ tmp/`) and one `.<Folder>/` per folder, each with
//! `cur/ new/ tmp/` and an empty `maildirfolder` file (Maildir++); flags
//! live in the file name after `:2,` (<https://cr.yp.to/proto/maildir.html>,
//! Dovecot "Maildir" format). Existing Dovecot mailboxes are used in place.
//!
//! Files are written to `tmp/` and renamed into `new/` *without* fsync:
//! the journal record written before the SMTP `250` is the durability
//! point, and a periodic `syncfs(2)` ([`FsSyncer`]) makes all delivered
//! files durable at once before the journal is trimmed.

use crate::journal::{Content, Delivery};
use crate::sys;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use varan_core::config::StorageConfig;
use varan_core::EmailAddress;

/// Mode of created mail directories and files: mail is private to the
/// server's user (Dovecot's default for new mailboxes is the same).
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Chunk used when comparing a file with the bytes it should hold.
const COMPARE_CHUNK_BYTES: usize = 64 << 10;
/// Longest folder name accepted for a special folder (on-disk form,
/// without the leading dot), well under `NAME_MAX` (255).
pub const FOLDER_NAME_BYTES_MAX: usize = 200;
/// The Dovecot subscription file, and the `maildirfolder` marker.
const SUBSCRIPTIONS_FILE: &str = "subscriptions";
const MAILDIRFOLDER_FILE: &str = "maildirfolder";

/// Names of the special folders created on first delivery
/// (seed 002 §6.2.5.1.3–7), as IMAP shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialFolders {
    pub archive: String,
    pub drafts: String,
    pub junk: String,
    pub sent: String,
    pub trash: String,
}

impl Default for SpecialFolders {
    fn default() -> Self {
        Self::from_config(&StorageConfig::default())
    }
}

impl SpecialFolders {
    pub fn from_config(c: &StorageConfig) -> Self {
        Self { archive: c.archive_folder.clone(), drafts: c.drafts_folder.clone(), junk: c.junk_folder.clone(), sent: c.sent_folder.clone(), trash: c.trash_folder.clone() }
    }

    /// In the order they are created and subscribed.
    pub fn names(&self) -> [&str; 5] {
        [&self.drafts, &self.sent, &self.junk, &self.trash, &self.archive]
    }
}

/// Where mailboxes live and how new files are named.
#[derive(Debug, Clone)]
pub struct MaildirLayout {
    pub root: PathBuf,
    pub folders: SpecialFolders,
    /// Host name written into new file names (escaped there); the system
    /// host name by default.
    pub host: String,
}

impl MaildirLayout {
    pub fn new(root: PathBuf, folders: SpecialFolders) -> Self {
        Self { root, folders, host: system_hostname().to_owned() }
    }

    pub fn from_config(c: &StorageConfig) -> Self {
        Self::new(c.maildir_root.clone(), SpecialFolders::from_config(c))
    }

    /// `<root>/<domain>/<local part lower-cased>/`, both made safe as a
    /// single path component (see [`fs_safe_component`]).
    pub fn user_dir(&self, account: &EmailAddress) -> PathBuf {
        self.root.join(fs_safe_component(account.domain())).join(fs_safe_component(&account.local_part().to_lowercase()))
    }

    /// The directory of a folder of a user (`None`: INBOX).
    pub fn folder_dir(&self, user_dir: &Path, folder: Option<&str>) -> io::Result<PathBuf> {
        match folder {
            None => Ok(user_dir.to_path_buf()),
            Some(name) => Ok(user_dir.join(folder_dir_name(name)?)),
        }
    }

    /// Creates the mailbox tree of `account` if it does not exist yet:
    /// INBOX, the special folders with their `maildirfolder` markers, and a
    /// Dovecot subscriptions file subscribing them. The subscriptions file
    /// is written last, so its presence (one `stat`) means the tree is
    /// complete; callers may cache the answer. Safe to run concurrently.
    pub fn ensure_user(&self, account: &EmailAddress) -> io::Result<PathBuf> {
        let dir = self.user_dir(account);
        let subs = dir.join(SUBSCRIPTIONS_FILE);
        if fs::symlink_metadata(&subs).is_ok() {
            return Ok(dir);
        }
        create_maildir(&dir)?;
        let mut names = Vec::new();
        for folder in self.folders.names() {
            let on_disk = folder_dir_name(folder)?;
            let fdir = dir.join(&on_disk);
            create_maildir(&fdir)?;
            OpenOptions::new().write(true).create(true).truncate(false).mode(FILE_MODE).open(fdir.join(MAILDIRFOLDER_FILE))?;
            names.push(on_disk[1..].to_owned());
        }
        write_subscriptions(&dir, &names)?;
        Ok(dir)
    }

    /// A unique, deterministic file name for a new message:
    /// `<secs>.M<usecs>P<pid>Q<shard>_<seq>.<host>,S=<lf_size>,W=<crlf_size>`.
    /// The left part follows the Maildir spec (time, microseconds, process
    /// id, delivery counter); `S=` (file size) and `W=` (size with CRLF
    /// line endings, the IMAP RFC822.SIZE) are Dovecot's extensions that
    /// let it and our quota scan skip a `stat`. `/` and `:` in the host are
    /// written `\057` and `\072` as the spec says, and `,` as `\054` so the
    /// size fields stay parseable.
    pub fn new_message_name(&self, shard: usize, seq: u64, lf_size: u64, crlf_size: u64, now: SystemTime) -> String {
        let t = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = escape_host(&self.host);
        format!("{}.M{}P{}Q{}_{}.{},S={},W={}", t.as_secs(), t.subsec_micros(), process_id(), shard, seq, host, lf_size, crlf_size)
    }

    /// The target path of a new message in a folder (`None`: INBOX).
    pub fn delivery_path(&self, user_dir: &Path, folder: Option<&str>, name: &str) -> io::Result<PathBuf> {
        Ok(self.folder_dir(user_dir, folder)?.join("new").join(name))
    }
}

/// Reads the `,S=` and `,W=` fields of a Maildir file name (before any
/// `:2,` info part). Either may be absent.
pub fn parse_sizes(name: &str) -> (Option<u64>, Option<u64>) {
    let base = name.split(':').next().unwrap_or(name);
    let field = |key: &str| base.split(',').skip(1).find_map(|f| f.strip_prefix(key)).and_then(|v| v.parse::<u64>().ok());
    (field("S="), field("W="))
}

/// Size of content with CRLF line endings, given its LF size and number of
/// LFs (Maildir `W=`).
pub fn crlf_size(lf_size: u64, newlines: u64) -> u64 {
    lf_size.saturating_add(newlines)
}

/// Makes a name usable as one path component: `/`, `%`, `\`, control
/// bytes and a leading `.` (which would hide the directory, or make `..`)
/// are percent-encoded; everything else, UTF-8 included, is kept so that
/// ordinary mailboxes keep the names Dovecot gives them (`%d/%n`).
pub fn fs_safe_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.char_indices() {
        let unsafe_char = matches!(c, '/' | '%' | '\\') || c.is_control() || (i == 0 && c == '.');
        if unsafe_char {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The directory name of a Maildir++ folder: `.` + the name in modified
/// UTF-7 (RFC 3501 §5.1.3), which is how Dovecot stores folder names by
/// default. Names with `/`, `.` (the Maildir++ hierarchy separator),
/// control characters, or too long are refused.
pub fn folder_dir_name(name: &str) -> io::Result<String> {
    let bad = name.is_empty() || name.contains(['/', '.', '\\']) || name.chars().any(char::is_control) || name.eq_ignore_ascii_case("INBOX");
    let encoded = encode_mutf7(name);
    if bad || encoded.len() > FOLDER_NAME_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unusable folder name {name:?}")));
    }
    Ok(format!(".{encoded}"))
}

/// RFC 3501 §5.1.3: printable ASCII stands for itself (`&` as `&-`), runs
/// of other characters are UTF-16BE in base64 with `,` for `/`, between
/// `&` and `-`.
pub fn encode_mutf7(name: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    fn flush(out: &mut String, run: &mut Vec<u8>) {
        if run.is_empty() {
            return;
        }
        out.push('&');
        for chunk in run.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out.push('-');
        run.clear();
    }
    let mut out = String::with_capacity(name.len());
    let mut run = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut run);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                run.extend_from_slice(&unit.to_be_bytes());
            }
        }
    }
    flush(&mut out, &mut run);
    out
}

/// Dovecot 2.3 subscription file, version 2: the header `V\t2\n\n`, then
/// one mailbox per line, hierarchy levels separated by TAB and each level
/// tab-escaped (our special folders are single-level and contain no
/// control characters, so the escape never applies). Dovecot reads the
/// storage name (modified UTF-7), as in `lib-storage/list/subscription-file.c`.
fn write_subscriptions(user_dir: &Path, names: &[String]) -> io::Result<()> {
    let mut text = String::from("V\t2\n\n");
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    let tmp = user_dir.join(format!("{SUBSCRIPTIONS_FILE}.{}.{:08x}.tmp", std::process::id(), rand::random::<u32>()));
    let mut f = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp)?;
    let written = f.write_all(text.as_bytes());
    drop(f);
    // A hard link never replaces an existing file, so a subscriptions file
    // that Dovecot (or a concurrent delivery) created meanwhile is kept.
    let linked = written.and_then(|()| match fs::hard_link(&tmp, user_dir.join(SUBSCRIPTIONS_FILE)) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&tmp);
    linked
}

fn create_dirs(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)
}

/// `cur/ new/ tmp/` under `dir` (and `dir` itself).
pub fn create_maildir(dir: &Path) -> io::Result<()> {
    for sub in ["cur", "new", "tmp"] {
        create_dirs(&dir.join(sub))?;
    }
    Ok(())
}

/// Splits `<maildir>/new/<name>` into the maildir and the name.
fn split_target(path: &Path) -> io::Result<(&Path, &OsStr)> {
    crate::codec::check_target(path)?;
    match (path.parent().and_then(Path::parent), path.file_name()) {
        (Some(maildir), Some(name)) => Ok((maildir, name)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad delivery target {}", path.display()))),
    }
}

/// Writes prefix + content to `<maildir>/tmp/<name>` and renames it to
/// `<maildir>/new/<name>`, without fsync (the journal covers it). Creates
/// the maildir's `cur/ new/ tmp/` if they are missing, which happens when a
/// journal replay reaches a mailbox whose first delivery never ran.
pub fn deliver(target: &Delivery, content: &Content) -> io::Result<()> {
    write_via_tmp(target, content, &target.path)
}

/// Writes the message into `<maildir>/tmp/<name>` and renames it over
/// `final_path` (the `new/` target, or the `cur/` file a replay repairs).
pub(crate) fn write_via_tmp(target: &Delivery, content: &Content, final_path: &Path) -> io::Result<()> {
    let (maildir, name) = split_target(&target.path)?;
    let tmp = maildir.join("tmp").join(name);
    let file = match open_new_file(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_maildir(maildir)?;
            open_new_file(&tmp)?
        }
        other => other?,
    };
    let result = write_message(file, &target.prefix, content).and_then(|()| fs::rename(&tmp, final_path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn open_new_file(path: &Path) -> io::Result<File> {
    // Truncate, not create_new: a replay may find its own half-written file
    // from before the crash.
    OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

fn write_message(mut file: File, prefix: &[u8], content: &Content) -> io::Result<()> {
    file.write_all(prefix)?;
    match content {
        Content::Inline(bytes) => file.write_all(bytes),
        // std's copy uses copy_file_range(2) between regular files.
        Content::Spooled(path) => io::copy(&mut File::open(path)?, &mut file).map(drop),
    }
}

/// True when the message is in the mailbox with exactly these bytes: at
/// `new/<name>`, or moved by an IMAP/POP3 server to `cur/<name>` or
/// `cur/<name>:2,<flags>`.
pub fn is_delivered(target: &Delivery, content: &Content) -> io::Result<bool> {
    match find_delivered(target)? {
        Some(path) => file_matches(&path, &target.prefix, content),
        None => Ok(false),
    }
}

/// Where the file of `target` is now, if anywhere (see [`is_delivered`]).
/// Lists `cur/` when the file is not in `new/`.
pub fn find_delivered(target: &Delivery) -> io::Result<Option<PathBuf>> {
    let (maildir, name) = split_target(&target.path)?;
    if exists(&target.path)? {
        return Ok(Some(target.path.clone()));
    }
    let cur = maildir.join("cur");
    let entries = match fs::read_dir(&cur) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        if is_same_message(name.as_bytes(), entry.file_name().as_bytes()) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// `candidate` is `base` itself or `base` followed by a Maildir info part
/// (`:2,<flags>`), i.e. the same message after a move from new/ to cur/.
pub(crate) fn is_same_message(base: &[u8], candidate: &[u8]) -> bool {
    candidate.strip_prefix(base).is_some_and(|rest| rest.is_empty() || rest.starts_with(b":2,"))
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Compares the file at `path` with `prefix` + `content`, size first.
pub fn file_matches(path: &Path, prefix: &[u8], content: &Content) -> io::Result<bool> {
    let content_len = match content {
        Content::Inline(b) => b.len() as u64,
        Content::Spooled(p) => fs::metadata(p)?.len(),
    };
    let mut file = File::open(path)?;
    if file.metadata()?.len() != prefix.len() as u64 + content_len {
        return Ok(false);
    }
    if !reader_equals(&mut file, &mut &prefix[..], prefix.len() as u64)? {
        return Ok(false);
    }
    match content {
        Content::Inline(b) => reader_equals(&mut file, &mut &b[..], content_len),
        Content::Spooled(p) => reader_equals(&mut file, &mut File::open(p)?, content_len),
    }
}

/// Reads `len` bytes from both readers in chunks and compares them. A
/// reader that ends early makes the answer false.
fn reader_equals(a: &mut impl Read, b: &mut impl Read, len: u64) -> io::Result<bool> {
    let mut left = len;
    let chunk = (len.min(COMPARE_CHUNK_BYTES as u64)) as usize;
    let (mut ba, mut bb) = (vec![0u8; chunk], vec![0u8; chunk]);
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        if !fill(a, &mut ba[..n])? || !fill(b, &mut bb[..n])? {
            return Ok(false);
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// `syncfs(2)` on the filesystem that holds `path`, through a descriptor
/// opened now. The kernel reports a writeback error to a descriptor only
/// if it happened after the descriptor was opened, so the checkpoint must
/// use a long-lived [`FsSyncer`]; this one-shot form is for tools.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    FsSyncer::open(path)?.sync()
}

/// A descriptor on the Maildir filesystem kept open from startup, so that
/// each [`FsSyncer::sync`] reports every writeback error since the
/// previous one (Linux ≥ 5.8, `errseq` on the superblock). `Send + Sync`.
///
/// It may cover several directories (the Maildirs and the outbound queue
/// under the data directory): one descriptor per distinct file system,
/// each synced once.
#[derive(Debug)]
pub struct FsSyncer {
    files: Vec<File>,
}

impl FsSyncer {
    /// Opens `path` (a directory on the Maildir filesystem, e.g. the root).
    /// Open it before the first delivery.
    pub fn open(path: &Path) -> io::Result<FsSyncer> {
        Self::open_all(&[path])
    }

    /// As [`FsSyncer::open`] for every file system holding one of `paths`.
    pub fn open_all(paths: &[&Path]) -> io::Result<FsSyncer> {
        use std::os::unix::fs::MetadataExt;
        let mut files: Vec<File> = Vec::new();
        let mut devices = Vec::new();
        for p in paths {
            let file = File::open(p)?;
            let dev = file.metadata()?.dev();
            if !devices.contains(&dev) {
                devices.push(dev);
                files.push(file);
            }
        }
        Ok(FsSyncer { files })
    }

    /// Flushes the whole filesystem(s); an error means some file written
    /// since the previous call may not be on disk.
    pub fn sync(&self) -> io::Result<()> {
        self.files.iter().try_for_each(sys::syncfs)
    }
}

/// This process's id, read once (`getpid` per delivery adds up).
fn process_id() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The host name for Maildir file names, read once. `/proc` avoids an
/// unsafe `gethostname(2)`; "localhost" if it cannot be read.
fn system_hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).unwrap_or_else(|| "localhost".to_owned()))
}

fn escape_host(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "maildir_tests.rs"]
mod tests;
