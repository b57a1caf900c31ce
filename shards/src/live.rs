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
        Ok(Live { config, directories, tls, layout, watched })
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

/// Stripes of the per-IP connection table: connects and disconnects from
/// different shards rarely touch the same lock.
const IP_STRIPES: usize = 64;

/// Connection accounting across shards (seed §6.2.1.7, per-IP limit).
pub struct Counters {
    smtp: AtomicUsize,
    per_ip: Vec<Mutex<HashMap<IpAddr, u32>>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self { smtp: AtomicUsize::new(0), per_ip: (0..IP_STRIPES).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

/// Why a connection was refused at accept.
pub enum Refusal {
    ServerFull,
    IpFull,
}

impl Counters {
    fn stripe(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) as usize) ^ ((u128::from(*v6) >> 64) as usize),
        };
        &self.per_ip[h.wrapping_mul(0x9E37_79B9) % IP_STRIPES]
    }

    /// Counts a new SMTP connection, or says why it must be refused.
    pub fn admit_smtp(self: &Arc<Self>, ip: IpAddr, total_max: usize, per_ip_max: usize) -> Result<ConnGuard, Refusal> {
        if self.smtp.fetch_add(1, Ordering::AcqRel) >= total_max {
            self.smtp.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        let mut table = self.stripe(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = table.entry(ip).or_insert(0);
        if *n as usize >= per_ip_max {
            drop(table);
            self.smtp.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::IpFull);
        }
        *n += 1;
        Ok(ConnGuard { counters: Arc::clone(self), ip })
    }

    pub fn smtp_connections(&self) -> usize {
        self.smtp.load(Ordering::Acquire)
    }
}

/// Releases a counted connection when dropped.
pub struct ConnGuard {
    counters: Arc<Counters>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut table = self.counters.stripe(&self.ip).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = table.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.ip);
            }
        }
        drop(table);
        self.counters.smtp.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The process-wide verification cache (Dovecot-style auth cache).
/// Shared by all shards: a login verified on one shard is fast on all.
/// The lock is held for a hash-map operation only.
pub fn verify_cache() -> std::sync::MutexGuard<'static, VerifyCache> {
    static CACHE: std::sync::OnceLock<Mutex<VerifyCache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(VerifyCache::default())).lock().unwrap_or_else(|p| p.into_inner())
}
