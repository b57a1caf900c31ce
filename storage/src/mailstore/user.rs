//! [`MaildirUser`]: one user's folder list (Maildir++ layout).
//!
//! * A folder is selectable when its directory has `cur/`; a directory
//!   without it (left by deleting a folder that has children) or a missing
//!   parent level is a non-selectable hierarchy level.
//! * Subscriptions live in Dovecot's `subscriptions` file (version 2:
//!   `V\t2\n\n`, then one mailbox per line, levels in modified UTF-7
//!   separated by TAB); version 1 files (Maildir++ names, `.`-separated)
//!   are read too.
//! * Special-use: the configured special folder names, plus what a
//!   `CREATE … (USE (\X))` recorded in `varan-special-use` (lines
//!   `<\Use>\t<mailbox name in UTF-8>`).

use super::fsutil;
use super::mailbox::lock;
use super::names::{self, MailboxName};
use super::store::Shared;
use crate::maildir::{create_maildir, encode_mutf7};
use crate::quota;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use varan_core::mailstore::{Mailbox, MailboxEntry, QuotaUsage, SpecialUse, StoreError, StoreResult, UserStore};

const SUBSCRIPTIONS_FILE: &str = "subscriptions";
const SPECIAL_USE_FILE: &str = "varan-special-use";
const MAILDIRFOLDER_FILE: &str = "maildirfolder";
/// Files in a folder directory that belong to its messages (removed with them).
const CONTROL_FILES: [&str; 5] = ["dovecot-uidlist", "dovecot-keywords", "varan-index", "varan-index.open", "dovecot-uidlist.lock"];

/// One user's mailboxes in a Maildir++ tree.
#[derive(Debug)]
pub struct MaildirUser {
    dir: PathBuf,
    shared: Arc<Shared>,
}

impl MaildirUser {
    pub(crate) fn new(dir: PathBuf, shared: Arc<Shared>) -> MaildirUser {
        MaildirUser { dir, shared }
    }

    /// The user's Maildir (INBOX).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of a mailbox.
    pub fn mailbox_dir(&self, name: &MailboxName) -> PathBuf {
        match name.dir_name() {
            None => self.dir.clone(),
            Some(d) => self.dir.join(d),
        }
    }

    /// The typed handle of a mailbox (see [`UserStore::open`]).
    pub fn open_maildir(&self, name: &str) -> StoreResult<Arc<super::MaildirMailbox>> {
        let parsed = MailboxName::parse(name)?;
        let dir = self.mailbox_dir(&parsed);
        if !dir.join("cur").is_dir() {
            return Err(StoreError::NoMailbox);
        }
        self.shared.open_mailbox(parsed.canonical(), dir, self.dir.clone())
    }

    /// Folder directory names (`.A.B`) on disk, excluding ones being deleted.
    fn folder_dirs(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with('.') && !name.starts_with("..") && name.len() > 1 && entry.file_type()?.is_dir() {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Mailbox name → selectable, for every folder directory that decodes.
    fn folders(&self) -> io::Result<BTreeMap<String, bool>> {
        let mut map = BTreeMap::new();
        for d in self.folder_dirs()? {
            match names::name_of_dir(&d) {
                Some(name) if MailboxName::parse(&name).is_ok() => {
                    map.insert(name, self.dir.join(&d).join("cur").is_dir());
                }
                _ => tracing::debug!(dir = %self.dir.display(), folder = d, "skipping a folder directory whose name does not decode"),
            }
        }
        Ok(map)
    }

    fn special_uses(&self) -> io::Result<Vec<(String, SpecialUse)>> {
        let f = &self.shared.layout.folders;
        let mut out: Vec<(String, SpecialUse)> = vec![
            (f.archive.clone(), SpecialUse::Archive),
            (f.drafts.clone(), SpecialUse::Drafts),
            (f.junk.clone(), SpecialUse::Junk),
            (f.sent.clone(), SpecialUse::Sent),
            (f.trash.clone(), SpecialUse::Trash),
        ];
        out.extend(read_special_use(&self.dir)?);
        Ok(out)
    }

    fn count_check(&self) -> StoreResult<()> {
        if self.folder_dirs()?.len() >= self.shared.options.folders_max {
            return Err(StoreError::Limit(format!("a user has at most {} folders", self.shared.options.folders_max)));
        }
        Ok(())
    }

    /// Wakes the handle of a mailbox directory (if open) so it rescans.
    fn touch_handle(&self, dir: &Path) {
        if let Some(m) = self.shared.lookup(dir) {
            m.mark_dirty();
        }
    }

    fn make_folder(&self, dir: &Path) -> io::Result<()> {
        create_maildir(dir)?;
        OpenOptions::new().write(true).create(true).truncate(false).mode(fsutil::FILE_MODE).open(dir.join(MAILDIRFOLDER_FILE))?;
        Ok(())
    }

    /// (bytes, count) of the message files of a folder, for `maildirsize`.
    fn usage_of(dir: &Path) -> (u64, u64) {
        let (mut bytes, mut count) = (0, 0);
        for sub in ["cur", "new"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                bytes += crate::maildir::parse_sizes(&name).0.or_else(|| e.metadata().ok().map(|m| m.len())).unwrap_or(0);
                count += 1;
            }
        }
        (bytes, count)
    }

    fn remove_messages(dir: &Path) -> io::Result<()> {
        for sub in ["cur", "new", "tmp"] {
            match fs::remove_dir_all(dir.join(sub)) {
                Err(e) if !fsutil::is_not_found(&e) => return Err(e),
                _ => {}
            }
        }
        for f in CONTROL_FILES {
            let _ = fs::remove_file(dir.join(f));
        }
        Ok(())
    }

    fn has_children(&self, dir_name: &str) -> io::Result<bool> {
        let prefix = format!("{dir_name}.");
        Ok(self.folder_dirs()?.iter().any(|d| d.starts_with(&prefix)))
    }
}

impl UserStore for MaildirUser {
    fn list(&self) -> StoreResult<Vec<MailboxEntry>> {
        let folders = self.folders()?;
        let mut all: BTreeMap<String, bool> = BTreeMap::new();
        for (name, selectable) in &folders {
            all.insert(name.clone(), *selectable);
            let mut level = name.as_str();
            while let Some((parent, _)) = level.rsplit_once('/') {
                all.entry(parent.to_owned()).or_insert(false);
                level = parent;
            }
        }
        let subscribed: BTreeSet<String> = read_subscriptions(&self.dir)?.into_iter().collect();
        let uses = self.special_uses()?;
        let entry = |name: &str, selectable: bool| {
            let prefix = format!("{name}/");
            MailboxEntry {
                name: name.to_owned(),
                special_use: uses.iter().rev().find(|(n, _)| n == name).map(|(_, u)| *u),
                selectable,
                has_children: name != "INBOX" && all.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix)),
                subscribed: subscribed.contains(name),
            }
        };
        let mut out = vec![entry("INBOX", true)];
        for (name, selectable) in &all {
            out.push(entry(name, *selectable));
        }
        Ok(out)
    }

    fn create(&self, name: &str, special_use: Option<SpecialUse>) -> StoreResult<()> {
        let parsed = MailboxName::parse(name)?;
        if parsed == MailboxName::Inbox {
            return Err(StoreError::AlreadyExists);
        }
        let _ops = lock(&self.shared.folder_ops);
        let dir = self.mailbox_dir(&parsed);
        if dir.join("cur").is_dir() {
            return Err(StoreError::AlreadyExists);
        }
        self.count_check()?;
        for parent in parsed.parents() {
            let pdir = self.mailbox_dir(&parent);
            if !pdir.exists() {
                self.make_folder(&pdir)?;
            }
        }
        self.make_folder(&dir)?;
        if let Some(u) = special_use {
            let mut uses = read_special_use(&self.dir)?;
            uses.retain(|(n, _)| *n != parsed.canonical());
            uses.push((parsed.canonical(), u));
            write_special_use(&self.dir, &uses)?;
        }
        self.touch_handle(&dir);
        Ok(())
    }

    fn delete(&self, name: &str) -> StoreResult<()> {
        let parsed = MailboxName::parse(name)?;
        let Some(dir_name) = parsed.dir_name() else { return Err(StoreError::Cannot("INBOX cannot be deleted".into())) };
        let _ops = lock(&self.shared.folder_ops);
        let dir = self.dir.join(&dir_name);
        if !dir.is_dir() {
            return Err(StoreError::NoMailbox);
        }
        self.shared.forget_warm(&dir);
        let selectable = dir.join("cur").is_dir();
        let children = self.has_children(&dir_name)?;
        if !selectable && children {
            return Err(StoreError::Cannot(format!("{name} has child mailboxes and no messages")));
        }
        let (bytes, count) = Self::usage_of(&dir);
        if children {
            Self::remove_messages(&dir)?;
        } else {
            // Renamed out of the folder namespace first (quota scans and
            // listings skip `..` names), then removed.
            let trash = self.dir.join(format!("..varan-deleted-{:016x}", rand::random::<u64>()));
            fs::rename(&dir, &trash)?;
            fs::remove_dir_all(&trash)?;
        }
        if count > 0 {
            if let Err(e) = quota::quota_add(&self.dir, -(bytes as i64), -(count as i64)) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not update maildirsize");
            }
        }
        let mut uses = read_special_use(&self.dir)?;
        let before = uses.len();
        uses.retain(|(n, _)| *n != parsed.canonical());
        if uses.len() != before {
            write_special_use(&self.dir, &uses)?;
        }
        self.touch_handle(&dir);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        let src = MailboxName::parse(from)?;
        let dst = MailboxName::parse(to)?;
        let Some(dst_dir_name) = dst.dir_name() else { return Err(StoreError::AlreadyExists) };
        let _ops = lock(&self.shared.folder_ops);
        let dst_dir = self.dir.join(&dst_dir_name);
        if dst_dir.exists() {
            return Err(StoreError::AlreadyExists);
        }
        if dst.is_within(&src) {
            return Err(StoreError::Cannot("a mailbox cannot be moved into itself".into()));
        }
        self.count_check()?;
        let src_dir = match src.dir_name() {
            Some(n) => self.dir.join(n),
            None => self.dir.clone(),
        };
        self.shared.forget_warm(&src_dir);
        self.shared.forget_warm(&dst_dir);
        for parent in dst.parents() {
            let pdir = self.mailbox_dir(&parent);
            if !pdir.exists() {
                self.make_folder(&pdir)?;
            }
        }
        match src.dir_name() {
            None => {
                // RFC 9051 §6.3.6: INBOX's messages move, INBOX stays (empty).
                self.make_folder(&dst_dir)?;
                if let Ok(kw) = fs::read(self.dir.join(super::keywords::KEYWORDS_FILE)) {
                    fsutil::write_atomic(&dst_dir.join(super::keywords::KEYWORDS_FILE), &kw, false)?;
                }
                for sub in ["cur", "new"] {
                    let Ok(entries) = fs::read_dir(self.dir.join(sub)) else { continue };
                    for e in entries {
                        let e = e?;
                        let Ok(file) = e.file_name().into_string() else { continue };
                        if file.starts_with('.') {
                            continue;
                        }
                        let target = if sub == "new" { super::filename::full_name(super::filename::base(&file), &super::filename::parse_info(None)) } else { file.clone() };
                        match fs::rename(e.path(), dst_dir.join("cur").join(target)) {
                            Err(e) if !fsutil::is_not_found(&e) => return Err(e.into()),
                            _ => {}
                        }
                    }
                }
                if self.shared.options.fsync {
                    fsutil::sync_dir(&dst_dir.join("cur"))?;
                }
                self.touch_handle(&self.dir);
            }
            Some(src_dir_name) => {
                let src_dir = self.dir.join(&src_dir_name);
                if !src_dir.is_dir() {
                    return Err(StoreError::NoMailbox);
                }
                let prefix = format!("{src_dir_name}.");
                let mut moves: Vec<(String, String)> = vec![(src_dir_name.clone(), dst_dir_name.clone())];
                for d in self.folder_dirs()? {
                    if let Some(rest) = d.strip_prefix(&prefix) {
                        moves.push((d.clone(), format!("{dst_dir_name}.{rest}")));
                    }
                }
                for (old, new) in &moves {
                    if new.len() > names::DIR_NAME_BYTES_MAX || self.dir.join(new).exists() {
                        return Err(StoreError::BadName(format!("cannot rename {old} to {new}")));
                    }
                }
                for (old, new) in &moves {
                    fs::rename(self.dir.join(old), self.dir.join(new))?;
                    self.touch_handle(&self.dir.join(old));
                }
                let (src_name, dst_name) = (src.canonical(), dst.canonical());
                let renamed = |n: &str| -> Option<String> {
                    if n == src_name {
                        Some(dst_name.clone())
                    } else {
                        n.strip_prefix(&format!("{src_name}/")).map(|rest| format!("{dst_name}/{rest}"))
                    }
                };
                let subs = read_subscriptions(&self.dir)?;
                if subs.iter().any(|s| renamed(s).is_some()) {
                    let subs: Vec<String> = subs.iter().map(|s| renamed(s).unwrap_or_else(|| s.clone())).collect();
                    write_subscriptions(&self.dir, &subs)?;
                }
                let uses = read_special_use(&self.dir)?;
                if uses.iter().any(|(n, _)| renamed(n).is_some()) {
                    let uses: Vec<(String, SpecialUse)> = uses.iter().map(|(n, u)| (renamed(n).unwrap_or_else(|| n.clone()), *u)).collect();
                    write_special_use(&self.dir, &uses)?;
                }
            }
        }
        Ok(())
    }

    fn set_subscribed(&self, name: &str, subscribed: bool) -> StoreResult<()> {
        let canonical = MailboxName::parse(name)?.canonical();
        let _ops = lock(&self.shared.folder_ops);
        let mut subs = read_subscriptions(&self.dir)?;
        let present = subs.contains(&canonical);
        if present == subscribed {
            return Ok(());
        }
        if subscribed {
            subs.push(canonical);
        } else {
            subs.retain(|s| *s != canonical);
        }
        write_subscriptions(&self.dir, &subs)?;
        Ok(())
    }

    fn open(&self, name: &str) -> StoreResult<Arc<dyn Mailbox>> {
        Ok(self.open_maildir(name)?)
    }

    fn quota(&self) -> StoreResult<QuotaUsage> {
        let (used_bytes, messages) = quota::quota_usage(&self.dir)?;
        let limit_bytes = quota::quota_limit(&self.dir)?.and_then(|l| l.bytes);
        Ok(QuotaUsage { used_bytes, messages, limit_bytes })
    }
}

/// Dovecot's TAB escaping of a hierarchy level (`\x01` + letter).
fn tab_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x01' {
            match chars.next() {
                Some('1') => out.push('\x01'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Subscribed mailbox names (UTF-8, `/`-separated).
fn read_subscriptions(user_dir: &Path) -> io::Result<Vec<String>> {
    let bytes = match fsutil::read_capped(&user_dir.join(SUBSCRIPTIONS_FILE), super::CONTROL_FILE_BYTES_MAX) {
        Ok(Some((b, _))) => b,
        Ok(None) => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    let (v2, body) = match text.strip_prefix("V\t2\n") {
        Some(rest) => (true, rest),
        None => (false, &text[..]),
    };
    for line in body.lines().filter(|l| !l.is_empty()) {
        let levels: Option<Vec<String>> =
            if v2 { line.split('\t').map(|l| names::decode_mutf7(&tab_unescape(l))).collect() } else { line.split('.').map(names::decode_mutf7).collect() };
        let Some(levels) = levels else { continue };
        let name = levels.join("/");
        let name = if name.eq_ignore_ascii_case("INBOX") { "INBOX".to_owned() } else { name };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn write_subscriptions(user_dir: &Path, names: &[String]) -> io::Result<()> {
    let mut text = String::from("V\t2\n\n");
    for n in names {
        let line: Vec<String> = n.split('/').map(encode_mutf7).collect();
        text.push_str(&line.join("\t"));
        text.push('\n');
    }
    fsutil::write_atomic(&user_dir.join(SUBSCRIPTIONS_FILE), text.as_bytes(), false)
}

fn read_special_use(user_dir: &Path) -> io::Result<Vec<(String, SpecialUse)>> {
    let bytes = match fsutil::read_capped(&user_dir.join(SPECIAL_USE_FILE), super::CONTROL_FILE_BYTES_MAX) {
        Ok(Some((b, _))) => b,
        Ok(None) => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8_lossy(&bytes).lines().filter_map(|l| l.split_once('\t')).filter_map(|(u, n)| Some((n.to_owned(), SpecialUse::from_imap(u)?))).collect())
}

fn write_special_use(user_dir: &Path, uses: &[(String, SpecialUse)]) -> io::Result<()> {
    let mut text = String::new();
    for (n, u) in uses {
        text.push_str(&format!("{}\t{n}\n", u.as_imap()));
    }
    fsutil::write_atomic(&user_dir.join(SPECIAL_USE_FILE), text.as_bytes(), false)
}
