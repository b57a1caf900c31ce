//! # varan-admin
//!
//! Administrative operations shared by the `varan` command line and (later)
//! the HTTP admin panel: first-run configuration, `quickstart`, user
//! management in the JSON user database, the outbound queue, and `dump`.
//!
//! Boundary: this crate edits configuration and user-database files on
//! request of an administrator. It never serves mail and never runs on the
//! hot path; queue commands change entries only through the same atomic
//! renames the server's runners use.
#![forbid(unsafe_code)]

pub mod bans;
pub mod dkim;
pub mod firstrun;
pub mod queue;
pub mod quickstart;
pub mod users;

/// An administrative operation failed; the text is meant for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Config(#[from] varan_core::config::ConfigError),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

impl AdminError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AdminError::Io { path: path.to_path_buf(), source }
    }
}

/// A random password of `len` characters from an alphabet without
/// look-alike characters, for generated admin passwords.
pub fn generate_password(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Reads and validates a configuration file.
pub fn load_config(path: &std::path::Path) -> Result<varan_core::config::Config, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|e| AdminError::io(path, e))?;
    varan_core::config::Config::from_toml(&text).map_err(|e| AdminError::Invalid(format!("{}: {e}", path.display())))
}

/// Writes a file atomically (temporary file, fsync, rename) with `mode`.
pub fn write_file_atomic(path: &std::path::Path, contents: &[u8], mode: u32) -> Result<(), AdminError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp~");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(|e| AdminError::io(&tmp, e))?;
    f.write_all(contents).and_then(|_| f.sync_all()).map_err(|e| AdminError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AdminError::io(path, e))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
