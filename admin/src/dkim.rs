//! `varan dkim generate|show`: DKIM keys of the served domains and the DNS
//! records to publish for them (seed 002 §6.2.1.18–19). The running server
//! loads keys at start and on reload (SIGHUP).

use crate::AdminError;
use varan_core::config::Config;
use varan_storage::dkim::{self, Algorithm, PublishedKey};

fn served<'a>(config: &Config, domain: &'a str) -> Result<&'a str, AdminError> {
    if config.domains.iter().any(|d| d.name.eq_ignore_ascii_case(domain.trim_end_matches('.'))) {
        Ok(domain)
    } else {
        Err(AdminError::Invalid(format!("{domain:?} is not a served domain ([[domain]] in the configuration): mail from it is not signed")))
    }
}

/// Creates the key of `domain` (selector: `dkim.selector` unless given).
pub fn generate(config: &Config, domain: &str, selector: Option<&str>, algorithm: Algorithm, replace: bool) -> Result<PublishedKey, AdminError> {
    let domain = served(config, domain)?;
    let selector = selector.unwrap_or(&config.dkim.selector);
    dkim::generate(&config.dkim.directory, domain, selector, algorithm, replace).map_err(|e| AdminError::Invalid(e.to_string()))
}

/// The DNS record of an existing key.
pub fn show(config: &Config, domain: &str, selector: Option<&str>) -> Result<PublishedKey, AdminError> {
    let selector = selector.unwrap_or(&config.dkim.selector);
    dkim::published(&config.dkim.directory, domain, selector).map_err(|e| AdminError::Invalid(e.to_string()))
}

/// What to tell the operator after `generate`/`show`.
pub fn describe(key: &PublishedKey, config: &Config, selector: Option<&str>) -> String {
    let note = match selector {
        Some(s) if s != config.dkim.selector => {
            format!("\nThe server signs with selector {:?} (dkim.selector); set it to {s:?} and reload to use this key.\n", config.dkim.selector)
        }
        _ => String::new(),
    };
    format!(
        "Private key: {}\n\nPublish this TXT record, then reload the server (systemctl reload varan):\n\n{}\n\nName:  {}\nValue: {}\n{note}",
        key.key_path.display(),
        key.zone_line(),
        key.dns_name,
        key.dns_value
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_domains_get_keys() {
        let dir = std::env::temp_dir().join(format!("varan-admin-dkim-{}", std::process::id()));
        let mut config = Config::default();
        config.dkim.directory = dir.clone();
        config.domains = vec![varan_core::config::DomainConfig { name: "example.org".into(), ..Default::default() }];
        assert!(generate(&config, "other.test", None, Algorithm::Ed25519, false).is_err());
        let key = generate(&config, "example.org", None, Algorithm::Ed25519, false).expect("generate");
        assert_eq!(key.dns_name, "mail._domainkey.example.org");
        assert_eq!(show(&config, "example.org", None).expect("show").dns_value, key.dns_value);
        assert!(describe(&key, &config, Some("s2")).contains("dkim.selector"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
