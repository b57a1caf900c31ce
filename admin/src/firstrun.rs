//! Finding the configuration file, and writing one on first run.
//!
//! As the seed product does with its conf file (seed 002 §6.3.1): without
//! `--config`, look for `/etc/varan/varan.toml`, then `~/varan.toml`; when
//! neither exists, write `~/varan.toml` with a generated admin password and
//! the default data directory, and tell the operator where it is.

use crate::{generate_password, write_file_atomic, AdminError};
use std::path::{Path, PathBuf};
use varan_core::config::Config;

pub const SYSTEM_CONFIG: &str = "/etc/varan/varan.toml";

/// Where the configuration came from.
pub enum Found {
    Existing(PathBuf),
    Created(PathBuf),
}

/// Locates the configuration, creating `~/varan.toml` if there is none.
pub fn locate_or_create(home: Option<&Path>) -> Result<Found, AdminError> {
    let system = Path::new(SYSTEM_CONFIG);
    if system.exists() {
        return Ok(Found::Existing(system.to_path_buf()));
    }
    let home = home.ok_or_else(|| AdminError::Invalid(format!("no {SYSTEM_CONFIG} and HOME is not set; pass --config FILE")))?;
    let user = home.join("varan.toml");
    if user.exists() {
        return Ok(Found::Existing(user));
    }
    let mut config = Config::default();
    config.admin.password = generate_password(16);
    config.server.hostname = local_hostname();
    write_file_atomic(&user, first_run_text(&config).as_bytes(), 0o600)?;
    Ok(Found::Created(user))
}

fn first_run_text(config: &Config) -> String {
    format!(
        "# Varan configuration, written on first run.\n\
         # Every setting and its default: docs/configuration.md (`varan dump` shows the effective values).\n\
         # The admin password below is the initial password of the user `admin`.\n\n{}",
        config.to_toml()
    )
}

/// The machine's host name, for the SMTP banner; `localhost` if unknown.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_finds() {
        if Path::new(SYSTEM_CONFIG).exists() {
            return; // a real installation on this machine takes precedence
        }
        let dir = std::env::temp_dir().join(format!("varan-firstrun-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let created = match locate_or_create(Some(&dir)).unwrap() {
            Found::Created(p) => p,
            Found::Existing(p) => panic!("unexpected existing {p:?}"),
        };
        let config = crate::load_config(&created).unwrap();
        assert_eq!(config.admin.password.len(), 16);
        assert!(matches!(locate_or_create(Some(&dir)).unwrap(), Found::Existing(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
