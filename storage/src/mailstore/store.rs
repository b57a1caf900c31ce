//! [`MaildirStore`]: users, and the registry that makes every `open()` of a
//! mailbox return the same shared handle.

use super::mailbox::{lock, MaildirMailbox};
use super::user::MaildirUser;
use super::MaildirStoreOptions;
use crate::maildir::MaildirLayout;
use crate::quota::{self, QuotaLimit};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use varan_core::mailstore::{MailStore, Mailbox, StoreResult, UserStore};
use varan_core::EmailAddress;

/// Prune dead registry entries every this many inserts.
const REGISTRY_PRUNE_EVERY: usize = 64;
/// Mailboxes kept open after their last session closed them, most recently
/// used last. A client that logs in, selects and logs out again (webmail,
/// mobile clients, POP3 pollers) then finds its mailbox loaded: no index
/// read, no directory scan, no `varan-index.open` fsync, and no index
/// write + fsync at every close. Costs the in-memory index of each
/// (about 100 bytes per message).
pub const WARM_MAILBOXES_MAX: usize = 256;

pub(crate) struct Shared {
    pub layout: MaildirLayout,
    pub options: MaildirStoreOptions,
    /// Mailbox directory → its handle while anyone holds it.
    pub registry: Mutex<HashMap<PathBuf, Weak<MaildirMailbox>>>,
    inserts: Mutex<usize>,
    /// Strong references to recently used mailboxes (see [`WARM_MAILBOXES_MAX`]).
    warm: Mutex<std::collections::VecDeque<Arc<MaildirMailbox>>>,
    /// Serialises folder operations (create, delete, rename, subscribe).
    pub folder_ops: Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("root", &self.layout.root).finish_non_exhaustive()
    }
}

impl Shared {
    /// Marks `mailbox` most recently used; the least recently used one
    /// beyond the limit is let go (its index is written when the last
    /// session holding it closes it, or here).
    fn keep_warm(&self, mailbox: &Arc<MaildirMailbox>) {
        let evicted = {
            let mut warm = lock(&self.warm);
            if let Some(i) = warm.iter().rposition(|m| Arc::ptr_eq(m, mailbox)) {
                if i + 1 == warm.len() {
                    return;
                }
                warm.remove(i);
            }
            warm.push_back(Arc::clone(mailbox));
            if warm.len() > self.options.warm_mailboxes.min(WARM_MAILBOXES_MAX) {
                warm.pop_front()
            } else {
                None
            }
        };
        // Dropped outside the lock: a last reference writes the index.
        drop(evicted);
    }

    /// Lets go of the warm handles of `dir` and the folders below it
    /// (Maildir++ children are `<dir>.<child>`), before it is deleted or
    /// renamed, so a mailbox created later at that path starts fresh.
    pub fn forget_warm(&self, dir: &Path) {
        let prefix = dir.as_os_str().to_string_lossy().into_owned();
        let gone: Vec<Arc<MaildirMailbox>> = {
            let mut warm = lock(&self.warm);
            let (keep, gone): (Vec<_>, Vec<_>) = warm.drain(..).partition(|m| {
                let d = m.dir().as_os_str().to_string_lossy();
                !(d == prefix || d.starts_with(&format!("{prefix}.")))
            });
            warm.extend(keep);
            gone
        };
        drop(gone);
    }

    /// The live handle of a mailbox directory, if any. Never drop the
    /// returned `Arc` while holding the registry lock (its `Drop` takes it).
    pub fn lookup(&self, dir: &Path) -> Option<Arc<MaildirMailbox>> {
        let reg = lock(&self.registry);
        let found = reg.get(dir).and_then(Weak::upgrade);
        drop(reg);
        found
    }

    /// The shared handle of the mailbox at `dir`, loaded and synced.
    pub fn open_mailbox(self: &Arc<Self>, name: String, dir: PathBuf, user_dir: PathBuf) -> StoreResult<Arc<MaildirMailbox>> {
        let mut reg = lock(&self.registry);
        let (mailbox, created) = match reg.get(&dir).and_then(Weak::upgrade) {
            Some(m) => (m, false),
            None => {
                let m = Arc::new(MaildirMailbox::new(name, dir.clone(), user_dir, Arc::clone(self)));
                reg.insert(dir, Arc::downgrade(&m));
                let mut n = lock(&self.inserts);
                *n += 1;
                if n.is_multiple_of(REGISTRY_PRUNE_EVERY) {
                    reg.retain(|_, w| w.strong_count() > 0);
                }
                (m, true)
            }
        };
        drop(reg);
        self.keep_warm(&mailbox);
        // A handle another thread is still loading: this waits for its
        // writer lock, so nobody sees an unloaded mailbox.
        match mailbox.sync() {
            Ok(()) => Ok(mailbox),
            Err(e) => {
                if created {
                    tracing::warn!(dir = %mailbox.dir().display(), error = %e, "could not open mailbox");
                }
                Err(e)
            }
        }
    }
}

/// The Maildir++ backend. Cheap to share (`Arc` inside); one per process
/// so that the handle registry is shared by all sessions.
#[derive(Debug, Clone)]
pub struct MaildirStore {
    shared: Arc<Shared>,
}

impl MaildirStore {
    pub fn new(layout: MaildirLayout, options: MaildirStoreOptions) -> MaildirStore {
        MaildirStore {
            shared: Arc::new(Shared {
                layout,
                options,
                registry: Mutex::new(HashMap::new()),
                inserts: Mutex::new(0),
                warm: Mutex::new(Default::default()),
                folder_ops: Mutex::new(()),
            }),
        }
    }

    pub fn layout(&self) -> &MaildirLayout {
        &self.shared.layout
    }

    pub fn options(&self) -> &MaildirStoreOptions {
        &self.shared.options
    }

    /// Called by SMTP delivery after renaming a new file into
    /// `<mailbox_dir>/new/`: if that mailbox is open, its next `sync`
    /// rescans and its `changed` waiters wake now. One hash lookup when it
    /// is not open. `mailbox_dir` is the path [`MaildirLayout::folder_dir`]
    /// returns (the user directory for INBOX).
    pub fn notify_delivered(&self, mailbox_dir: &Path) {
        if let Some(mailbox) = self.shared.lookup(mailbox_dir) {
            mailbox.mark_dirty();
        }
    }

    /// Lets go of every mailbox kept loaded (at shutdown): each one no
    /// session holds writes its index and removes `varan-index.open`.
    pub fn release_warm(&self) {
        let all: Vec<Arc<MaildirMailbox>> = lock(&self.shared.warm).drain(..).collect();
        drop(all);
    }

    /// Number of mailboxes with a live handle (for tests and metrics).
    pub fn open_mailboxes(&self) -> usize {
        lock(&self.shared.registry).values().filter(|w| w.strong_count() > 0).count()
    }

    /// The typed user store (see [`MailStore::user`]).
    pub fn maildir_user(&self, account: &EmailAddress) -> StoreResult<Arc<MaildirUser>> {
        let dir = self.shared.layout.ensure_user(account)?;
        if let Some(bytes) = self.shared.options.quota_bytes {
            let current = quota::quota_limit(&dir)?;
            if current.map(|l| l.bytes) != Some(Some(bytes)) {
                let limit = QuotaLimit { bytes: Some(bytes), messages: current.and_then(|l| l.messages) };
                quota::quota_recalculate(&dir, limit)?;
            }
        }
        Ok(Arc::new(MaildirUser::new(dir, Arc::clone(&self.shared))))
    }
}

impl MailStore for MaildirStore {
    fn user(&self, account: &EmailAddress) -> StoreResult<Arc<dyn UserStore>> {
        Ok(self.maildir_user(account)?)
    }
}
