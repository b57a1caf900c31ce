//! `varan quickstart DIR`: a ready single-node installation in one folder.
//!
//! Writes `DIR/varan.toml` with Maildir storage under `DIR/mail`, working
//! data under `DIR/data`, a JSON user database for the domain, and a
//! self-signed certificate, with every listener on `port_base + standard
//! port` (or the standard ports when no base is given). Used for trials,
//! benchmarks and the end-to-end tests; production installs start from it
//! and replace the certificate (docs/install.md).

use crate::{generate_password, write_file_atomic, AdminError};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use varan_core::config::{Config, DirectoryConfig, DirectoryKind, DomainConfig};

pub struct QuickstartOptions {
    pub dir: PathBuf,
    pub domain: String,
    /// Added to each standard port; `None` = standard ports.
    pub port_base: Option<u16>,
    /// Address every listener binds to.
    pub listen_ip: IpAddr,
}

/// What quickstart produced, for the operator message.
pub struct QuickstartReport {
    pub config_path: PathBuf,
    pub config: Config,
}

/// Standard ports of the services a quickstart installation listens on.
pub const SMTP_PORT: u16 = 25;
pub const SUBMISSION_PORT: u16 = 587;
pub const SMTPS_PORT: u16 = 465;
pub const IMAP_PORT: u16 = 143;
pub const IMAPS_PORT: u16 = 993;
pub const POP3_PORT: u16 = 110;
pub const POP3S_PORT: u16 = 995;
pub const ADMIN_PORT: u16 = 9999;
/// Connection limits of a quickstart installation (total and per IP).
pub const QUICKSTART_CONNECTIONS_MAX: usize = 1000;

/// `base + standard`; refuses bases that would overflow the port range.
pub fn port(base: Option<u16>, standard: u16) -> Result<u16, AdminError> {
    match base {
        None => Ok(standard),
        Some(b) => b.checked_add(standard).ok_or_else(|| AdminError::Invalid(format!("--port-base {b} + {standard} is above 65535"))),
    }
}

pub fn quickstart(opts: &QuickstartOptions) -> Result<QuickstartReport, AdminError> {
    let domain = varan_core::address::normalize_domain(&opts.domain).map_err(|_| AdminError::Invalid(format!("{:?} is not a domain name", opts.domain)))?;
    let dir = absolute(&opts.dir)?;
    let config_path = dir.join("varan.toml");
    if config_path.exists() {
        return Err(AdminError::Invalid(format!("{} already exists; remove it or choose another folder", config_path.display())));
    }
    for sub in ["data", "mail", "tls", "users"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| AdminError::io(&p, e))?;
    }
    let hostname = format!("mail.{domain}");
    let (cert, key) = self_signed(&hostname)?;
    write_file_atomic(&dir.join("tls/cert.pem"), cert.as_bytes(), 0o644)?;
    write_file_atomic(&dir.join("tls/key.pem"), key.as_bytes(), 0o600)?;
    let users_path = dir.join("users").join(format!("{domain}.json"));
    if !users_path.exists() {
        write_file_atomic(&users_path, b"{\n  \"users\": [],\n  \"groups\": []\n}\n", 0o600)?;
    }

    let at = |standard| port(opts.port_base, standard).map(|p| SocketAddr::new(opts.listen_ip, p));
    let mut config = Config::default();
    config.server.hostname = hostname;
    config.server.data_dir = dir.join("data");
    config.tls.certificate = dir.join("tls/cert.pem");
    config.tls.private_key = dir.join("tls/key.pem");
    config.smtp.listen = vec![at(SMTP_PORT)?];
    config.smtp.submission_listen = vec![at(SUBMISSION_PORT)?];
    config.smtp.smtps_listen = vec![at(SMTPS_PORT)?];
    // A trial or benchmark node sees its load from few addresses (often
    // one load generator on loopback); the production defaults (100 in
    // all, 20 per IP) would refuse it. docs/install.md says to lower these
    // when the node faces the Internet.
    config.smtp.connections_max = QUICKSTART_CONNECTIONS_MAX;
    config.smtp.connections_per_ip_max = QUICKSTART_CONNECTIONS_MAX;
    config.imap.listen = vec![at(IMAP_PORT)?];
    config.imap.imaps_listen = vec![at(IMAPS_PORT)?];
    config.imap.connections_max = QUICKSTART_CONNECTIONS_MAX;
    config.imap.connections_per_ip_max = QUICKSTART_CONNECTIONS_MAX;
    config.imap.connections_per_user_max = QUICKSTART_CONNECTIONS_MAX;
    config.pop3.listen = vec![at(POP3_PORT)?];
    config.pop3.pop3s_listen = vec![at(POP3S_PORT)?];
    config.pop3.connections_max = QUICKSTART_CONNECTIONS_MAX;
    config.pop3.connections_per_ip_max = QUICKSTART_CONNECTIONS_MAX;
    config.storage.maildir_root = dir.join("mail");
    config.dkim.directory = dir.join("dkim");
    config.admin.listen = vec![at(ADMIN_PORT)?];
    config.admin.password = generate_password(16);
    config.domains = vec![DomainConfig { name: domain.clone(), ..DomainConfig::default() }];
    config.directories =
        vec![DirectoryConfig { kind: DirectoryKind::Json, name: "local".into(), domain, path: users_path, master_group: "masters".into(), master_separator: "*".into() }];
    config.validate()?;
    let text = format!(
        "# Varan configuration written by `varan quickstart`.\n\
         # Every setting and its default: docs/configuration.md.\n\n{}",
        config.to_toml()
    );
    write_file_atomic(&config_path, text.as_bytes(), 0o600)?;
    Ok(QuickstartReport { config_path, config })
}

/// A human summary: where things are and how to run the server.
pub fn describe(report: &QuickstartReport, exe: &str) -> String {
    let c = &report.config;
    let join = |v: &[SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    format!(
        "Wrote {cfg}\n\
         \n  domain      {domain}\n  mail        {mail}\n  data        {data}\n  users       {users}\n  certificate {cert} (self-signed)\n\
         \n  SMTP (MX)   {smtp}\n  submission  {sub} (STARTTLS, AUTH)\n  SMTPS       {smtps} (implicit TLS, AUTH)\n\
         \n  IMAP        {imap} (STARTTLS)\n  IMAPS       {imaps} (implicit TLS)\n  POP3        {pop3} (STLS)\n  POP3S       {pop3s} (implicit TLS)\n\
         \nAdd a user:\n  {exe} user add alice@{domain} --password 'secret' --config {cfg}\n\
         Run the server:\n  {exe} --config {cfg}\n",
        cfg = report.config_path.display(),
        domain = c.domains.first().map(|d| d.name.as_str()).unwrap_or(""),
        mail = c.storage.maildir_root.display(),
        data = c.server.data_dir.display(),
        users = c.directories.first().map(|d| d.path.display().to_string()).unwrap_or_default(),
        cert = c.tls.certificate.display(),
        smtp = join(&c.smtp.listen),
        sub = join(&c.smtp.submission_listen),
        smtps = join(&c.smtp.smtps_listen),
        imap = join(&c.imap.listen),
        imaps = join(&c.imap.imaps_listen),
        pop3 = join(&c.pop3.listen),
        pop3s = join(&c.pop3.pop3s_listen),
    )
}

fn self_signed(hostname: &str) -> Result<(String, String), AdminError> {
    let names = vec![hostname.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| AdminError::Invalid(format!("cannot create a certificate: {e}")))?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

fn absolute(dir: &Path) -> Result<PathBuf, AdminError> {
    std::fs::create_dir_all(dir).map_err(|e| AdminError::io(dir, e))?;
    dir.canonicalize().map_err(|e| AdminError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_valid_installation() {
        let dir = std::env::temp_dir().join(format!("varan-qs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = QuickstartOptions { dir: dir.clone(), domain: "Bench.Test".into(), port_base: Some(20000), listen_ip: "127.0.0.1".parse().unwrap() };
        let report = quickstart(&opts).unwrap();
        let again = crate::load_config(&report.config_path).unwrap();
        assert_eq!(again.smtp.listen[0].port(), 20025);
        assert_eq!(again.imap.listen[0].port(), 20143);
        assert_eq!(again.imap.imaps_listen[0].port(), 20993);
        assert_eq!(again.pop3.listen[0].port(), 20110);
        assert_eq!(again.pop3.pop3s_listen[0].port(), 20995);
        assert_eq!(again.smtp.submission_listen[0].port(), 20587);
        assert_eq!(again.smtp.smtps_listen[0].port(), 20465);
        assert_eq!(again.domains[0].name, "bench.test");
        assert!(again.tls.certificate.exists() && again.tls.private_key.exists());
        assert!(describe(&report, "varan").contains("--config"));
        assert!(quickstart(&opts).is_err(), "must not overwrite an installation");
        assert!(port(Some(65000), 9999).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
