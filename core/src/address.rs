//! E-mail addresses as Varan stores and compares them.
//!
//! The SMTP parser (`varan-protocols`) turns an RFC 5321 path into an
//! [`EmailAddress`]; the directory resolves it. Comparison rules follow
//! RFC 5321 §2.4: the domain is case-insensitive, the local part is
//! formally case-sensitive, but every mainstream server (and the seed
//! product) treats it case-insensitively, so lookups use
//! [`EmailAddress::key`], which folds both.

use std::fmt;

/// Longest address accepted anywhere (RFC 5321 §4.5.3.1.3: 256 octets for a
/// path including the angle brackets).
pub const ADDRESS_BYTES_MAX: usize = 254;
/// RFC 5321 §4.5.3.1.1.
pub const LOCAL_PART_BYTES_MAX: usize = 64;
/// RFC 5321 §4.5.3.1.2.
pub const DOMAIN_BYTES_MAX: usize = 255;

/// Why a string is not a usable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than {ADDRESS_BYTES_MAX} bytes")]
    TooLong,
    #[error("address has no '@domain' part")]
    NoDomain,
    #[error("local part is empty or longer than {LOCAL_PART_BYTES_MAX} bytes")]
    BadLocalPart,
    #[error("domain is not a valid host name or address literal")]
    BadDomain,
}

/// A mailbox `local@domain`. The local part is kept exactly as received
/// (without surrounding quotes if it was a quoted string that needs none);
/// the domain is stored lower-cased, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    local: String,
    domain: String,
}

impl EmailAddress {
    /// Builds an address from an already-validated local part and domain.
    /// Validates lengths and the domain syntax; the local part's syntax is
    /// the parser's job (it may be a quoted string with any printable text).
    pub fn new(local: &str, domain: &str) -> Result<Self, AddressError> {
        if local.is_empty() || local.len() > LOCAL_PART_BYTES_MAX {
            return Err(AddressError::BadLocalPart);
        }
        let domain = normalize_domain(domain)?;
        if local.len() + 1 + domain.len() > ADDRESS_BYTES_MAX {
            return Err(AddressError::TooLong);
        }
        Ok(Self { local: local.to_owned(), domain })
    }

    /// Parses the simple `local@domain` form used in configuration files,
    /// the user database and the CLI (no quoting, no source routes).
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > ADDRESS_BYTES_MAX {
            return Err(AddressError::TooLong);
        }
        let at = text.rfind('@').ok_or(AddressError::NoDomain)?;
        let (local, domain) = (&text[..at], &text[at + 1..]);
        if !local.chars().all(is_plain_local_char) || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddressError::BadLocalPart);
        }
        Self::new(local, domain)
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The case-folded form used as a lookup key in directories and stores.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }

    /// True when the local part (or domain) contains non-ASCII characters,
    /// so the message needs SMTPUTF8 (RFC 6531) to be relayed as is.
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.local.chars().all(is_plain_local_char) && !self.local.contains("..") && !self.local.starts_with('.') && !self.local.ends_with('.') {
            write!(f, "{}@{}", self.local, self.domain)
        } else {
            // RFC 5321 §4.1.2 Quoted-string: escape '"' and '\'.
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        }
    }
}

/// RFC 5322 `atext` plus '.', extended by RFC 6531 to any non-ASCII
/// character (UTF8-non-ascii).
pub fn is_plain_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || (!c.is_ascii() && !c.is_control())
}

/// Lower-cases a domain, strips one trailing dot, and checks it is either a
/// host name made of LDH labels (RFC 5321 §4.1.2 `Domain`, U-labels allowed
/// for SMTPUTF8) or an address literal `[1.2.3.4]` / `[IPv6:...]`.
pub fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.len() > DOMAIN_BYTES_MAX {
        return Err(AddressError::BadDomain);
    }
    if let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return parse_address_literal(inner).map(|_| domain.to_ascii_lowercase()).ok_or(AddressError::BadDomain);
    }
    let lower = domain.to_lowercase();
    for label in lower.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()));
        if !valid {
            return Err(AddressError::BadDomain);
        }
    }
    Ok(lower)
}

/// RFC 5321 §4.1.3 address literal body (without the brackets).
pub fn parse_address_literal(inner: &str) -> Option<std::net::IpAddr> {
    if let Some(v6) = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")) {
        return v6.parse::<std::net::Ipv6Addr>().ok().map(std::net::IpAddr::V6);
    }
    inner.parse::<std::net::Ipv4Addr>().ok().map(std::net::IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let a = EmailAddress::parse("John.Doe@Example.COM.").unwrap();
        assert_eq!(a.local_part(), "John.Doe");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.key(), "john.doe@example.com");
        assert_eq!(a.to_string(), "John.Doe@example.com");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "nodomain", "@x.org", "a@", "a..b@x.org", ".a@x.org", "a@-x.org", "a@x..org", "a b@x.org", "a@[1.2.3]"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn literals_and_utf8() {
        assert!(EmailAddress::parse("a@[127.0.0.1]").is_ok());
        assert!(EmailAddress::parse("a@[IPv6:::1]").is_ok());
        let u = EmailAddress::parse("пользователь@почта.рф").unwrap();
        assert!(u.needs_smtputf8());
    }

    #[test]
    fn quoted_display() {
        let a = EmailAddress::new("a b\"c", "x.org").unwrap();
        assert_eq!(a.to_string(), "\"a b\\\"c\"@x.org");
    }

    #[test]
    fn length_limits() {
        let long_local = "a".repeat(65);
        assert_eq!(EmailAddress::new(&long_local, "x.org"), Err(AddressError::BadLocalPart));
        let long_domain = format!("{}.org", "a".repeat(250));
        assert!(EmailAddress::new("a", &long_domain).is_err());
    }
}
