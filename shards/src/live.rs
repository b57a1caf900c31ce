//! State shared by every shard: the part rebuilt on reload ([`Live`]) and
//! the part that lives as long as the process ([`Counters`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use varan_core::config::{Config, DirectoryKind};
use varan_core::directory::Directories;
use varan_storage::directory_json::JsonDirectory;
use varan_storage::maildir::MaildirLayout;
use varan_storage::verify_cache::VerifyCache;

/// Everything a reload (SIGHUP, changed user database) replaces at once.
/// Sessions keep the `Arc<Live>` they started with.
pub struct Live {
    pub config: Config,
    pub directories: Directories,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub layout: MaildirLayout,
    /// User database files and their modification times at load.
    pub watched: Vec<(PathBuf, Option<SystemTime>)>,
    /// DKIM keys of the served domains (empty when `dkim.sign` is off).
    pub dkim: varan_storage::dkim::DkimSigners,
    /// `[protection]` lists, compiled.
    pub protect: crate::protect::Lists,
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Live {
    pub fn build(config: Config) -> Result<Live, String> {
        let mut directories = Directories::new();
        let mut watched = Vec::new();
        for d in &config.directories {
            match d.kind {
                DirectoryKind::Json => {
                    let stamp = mtime(&d.path);
                    let db = JsonDirectory::load(&d.path, &d.domain, &d.master_group).map_err(|e| format!("user database {}: {e}", d.path.display()))?;
                    directories.add(&d.domain, Arc::new(db));
                    watched.push((d.path.clone(), stamp));
                }
            }
        }
        let tls = crate::tls::load(&config.tls.certificate, &config.tls.private_key)?;
        let layout = MaildirLayout::from_config(&config.storage);
        let dkim = if config.dkim.sign {
            let (signers, warnings) = varan_storage::dkim::DkimSigners::load(&config.dkim.directory, &config.dkim.selector, config.domains.iter().map(|d| d.name.as_str()));
            for w in warnings {
                tracing::warn!("{w}");
            }
            signers
        } else {
            varan_storage::dkim::DkimSigners::default()
        };
        let protect = crate::protect::Lists::compile(&config.protection);
        Ok(Live { config, directories, tls, layout, watched, dkim, protect })
    }

    /// True when a watched user database changed since it was loaded.
    pub fn user_databases_changed(&self) -> bool {
        self.watched.iter().any(|(p, stamp)| mtime(p) != *stamp)
    }

    /// Quota of an account: its own, or its domain's default.
    pub fn quota_of(&self, account: &varan_core::directory::Account) -> u64 {
        account.quota_bytes.unwrap_or_else(|| self.config.domain(account.address.domain()).map_or(u64::MAX, |d| d.default_quota))
    }
}

/// Stripes of a per-key connection table: connects and disconnects from
/// different shards rarely touch the same lock.
const STRIPES: usize = 64;

/// Connection accounting of one service across shards: a total and a
/// count per key (client IP, or user for IMAP's per-user limit).
pub struct ConnTable<K> {
    total: AtomicUsize,
    per_key: Vec<Mutex<HashMap<K, u32>>>,
}

impl<K> Default for ConnTable<K> {
    fn default() -> Self {
        Self { total: AtomicUsize::new(0), per_key: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    KeyFull,
}

impl<K: std::hash::Hash + Eq + Clone> ConnTable<K> {
    fn stripe(&self, key: &K) -> &Mutex<HashMap<K, u32>> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key) as usize;
        &self.per_key[h % STRIPES]
    }

    /// Counts a new connection, or says why it must be refused.
    pub fn admit(self: &Arc<Self>, key: K, total_max: usize, per_key_max: usize) -> Result<ConnGuard<K>, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= total_max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        let mut table = self.stripe(&key).lock().unwrap_or_else(|p| p.into_inner());
        let n = table.entry(key.clone()).or_insert(0);
        if *n as usize >= per_key_max {
            drop(table);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::KeyFull);
        }
        *n += 1;
        Ok(ConnGuard { table: Arc::clone(self), key })
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Releases a counted connection when dropped.
pub struct ConnGuard<K: std::hash::Hash + Eq + Clone> {
    table: Arc<ConnTable<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> ConnGuard<K> {
    /// What the connection was counted under (the client IP for services).
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for ConnGuard<K> {
    fn drop(&mut self) {
        let mut table = self.table.stripe(&self.key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = table.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.key);
            }
        }
        drop(table);
        self.table.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connection accounting of every service (seed §6.2.1.7 and §6.2.1.14).
#[derive(Default)]
pub struct Counters {
    pub smtp: Arc<ConnTable<IpAddr>>,
    pub imap: Arc<ConnTable<IpAddr>>,
    /// IMAP sessions per logged-in user (key: the account's lower-case address).
    pub imap_users: Arc<ConnTable<String>>,
    pub pop3: Arc<ConnTable<IpAddr>>,
    /// Greylist, bans and rate windows (`crate::protect`).
    pub protect: Arc<crate::protect::Protect>,
}

/// The process-wide verification cache (Dovecot-style auth cache).
/// Shared by all shards: a login verified on one shard is fast on all.
/// The lock is held for a hash-map operation only.
pub fn verify_cache() -> std::sync::MutexGuard<'static, VerifyCache> {
    static CACHE: std::sync::OnceLock<Mutex<VerifyCache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(VerifyCache::default())).lock().unwrap_or_else(|p| p.into_inner())
}
