//! `varan user add|del|passwd|list`: the JSON user database of a domain.
//!
//! The running server notices the changed file and reloads it within a
//! second or two (see `shards::reload`), so no restart is needed.

use crate::AdminError;
use varan_core::config::{Config, DirectoryConfig, DirectoryKind};
use varan_core::EmailAddress;
use varan_storage::directory_json::JsonDirectory;

/// Largest quota accepted on the command line (1 PiB), to catch typos.
pub const QUOTA_MB_MAX: u64 = 1 << 30;

fn provider_for<'a>(config: &'a Config, address: &EmailAddress) -> Result<&'a DirectoryConfig, AdminError> {
    config
        .directories
        .iter()
        .find(|d| d.kind == DirectoryKind::Json && d.domain.eq_ignore_ascii_case(address.domain()))
        .ok_or_else(|| AdminError::Invalid(format!("no JSON user database serves the domain {:?}; add a [[directory]] for it", address.domain())))
}

fn open(config: &Config, address: &EmailAddress) -> Result<(JsonDirectory, std::path::PathBuf), AdminError> {
    let p = provider_for(config, address)?;
    let db = JsonDirectory::load(&p.path, &p.domain, &p.master_group).map_err(|e| AdminError::Invalid(format!("{}: {e}", p.path.display())))?;
    Ok((db, p.path.clone()))
}

fn parse(email: &str) -> Result<EmailAddress, AdminError> {
    EmailAddress::parse(email).map_err(|e| AdminError::Invalid(format!("{email:?}: {e}")))
}

fn save(db: &JsonDirectory, path: &std::path::Path) -> Result<(), AdminError> {
    db.save(path).map_err(|e| AdminError::Invalid(format!("{}: {e}", path.display())))
}

pub fn add(config: &Config, email: &str, password: &str, quota_mb: Option<u64>) -> Result<(), AdminError> {
    let address = parse(email)?;
    if password.is_empty() {
        return Err(AdminError::Invalid("the password must not be empty".into()));
    }
    if quota_mb.is_some_and(|q| q == 0 || q > QUOTA_MB_MAX) {
        return Err(AdminError::Invalid(format!("--quota must be 1 to {QUOTA_MB_MAX} MB")));
    }
    let (mut db, path) = open(config, &address)?;
    let hash = varan_storage::password::hash(password).map_err(|e| AdminError::Invalid(e.to_string()))?;
    db.add_user(address.local_part(), &hash, quota_mb).map_err(|e| AdminError::Invalid(e.to_string()))?;
    save(&db, &path)
}

pub fn delete(config: &Config, email: &str) -> Result<(), AdminError> {
    let address = parse(email)?;
    let (mut db, path) = open(config, &address)?;
    db.remove_user(address.local_part()).map_err(|e| AdminError::Invalid(e.to_string()))?;
    save(&db, &path)
}

pub fn set_password(config: &Config, email: &str, password: &str) -> Result<(), AdminError> {
    let address = parse(email)?;
    if password.is_empty() {
        return Err(AdminError::Invalid("the password must not be empty".into()));
    }
    let (mut db, path) = open(config, &address)?;
    let hash = varan_storage::password::hash(password).map_err(|e| AdminError::Invalid(e.to_string()))?;
    db.set_password(address.local_part(), &hash).map_err(|e| AdminError::Invalid(e.to_string()))?;
    save(&db, &path)
}

/// Every user of every JSON database, as full addresses, sorted.
pub fn list(config: &Config) -> Result<Vec<String>, AdminError> {
    let mut out = Vec::new();
    for p in config.directories.iter().filter(|d| d.kind == DirectoryKind::Json) {
        let db = JsonDirectory::load(&p.path, &p.domain, &p.master_group).map_err(|e| AdminError::Invalid(format!("{}: {e}", p.path.display())))?;
        out.extend(db.list_users().into_iter().map(|u| u.address.to_string()));
    }
    out.sort();
    Ok(out)
}
