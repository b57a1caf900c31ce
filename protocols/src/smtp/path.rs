//! Reverse-path and forward-path parsing (RFC 5321 §4.1.2, extended for
//! UTF-8 by RFC 6531 §3.3).
//!
//! ```text
//! Path       = "<" [ A-d-l ":" ] Mailbox ">"
//! A-d-l      = At-domain *( "," At-domain )        ; source route, ignored (§4.1.1.3, App. C)
//! Mailbox    = Local-part "@" ( Domain / address-literal )
//! Local-part = Dot-string / Quoted-string
//! ```
//!
//! Structural faults (no angle brackets, unterminated quote) are syntax
//! errors (501); a well-framed path whose mailbox is invalid (bad characters,
//! bad domain, over-long) is a bad address (553 5.1.3).

use memchr::memchr;
use varan_core::address::{normalize_domain, DOMAIN_BYTES_MAX, LOCAL_PART_BYTES_MAX};
use varan_core::EmailAddress;

/// Longest path including the angle brackets (RFC 5321 §4.5.3.1.3).
pub const PATH_BYTES_MAX: usize = 256;

/// What a path named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Path {
    /// `<>`: the null reverse-path.
    Null,
    /// `<postmaster>` without a domain (RFC 5321 §4.5.1), any case.
    Postmaster,
    Mailbox(EmailAddress),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not framed as a path at all: 501 5.5.4.
    Syntax,
    /// Framed, but not a valid mailbox: 553 5.1.3.
    BadAddress,
}

/// A parsed path and what followed it on the line.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub path: Path,
    /// The mailbox contains non-ASCII octets (needs SMTPUTF8, RFC 6531 §3.5).
    pub non_ascii: bool,
    pub rest: &'a [u8],
}

/// Parses a path at the start of `input`.
pub(crate) fn parse_path(input: &[u8]) -> Result<Parsed<'_>, PathError> {
    let inner = input.strip_prefix(b"<").ok_or(PathError::Syntax)?;
    if let Some(rest) = inner.strip_prefix(b">") {
        return Ok(Parsed { path: Path::Null, non_ascii: false, rest });
    }
    let inner = skip_source_route(inner)?;
    let (local, quoted, after_local) = local_part(inner)?;
    let (domain, after_domain) = match after_local.first() {
        Some(b'>') => {
            let rest = &after_local[1..];
            check_length(input, rest)?;
            if !quoted && local.eq_ignore_ascii_case(b"postmaster") {
                return Ok(Parsed { path: Path::Postmaster, non_ascii: false, rest });
            }
            return Err(PathError::BadAddress);
        }
        Some(b'@') => domain(&after_local[1..])?,
        _ => return Err(PathError::BadAddress),
    };
    let rest = after_domain.strip_prefix(b">").ok_or(PathError::Syntax)?;
    check_length(input, rest)?;
    let non_ascii = !local.is_ascii() || !domain.is_ascii();
    let local = String::from_utf8(local).map_err(|_| PathError::BadAddress)?;
    let domain = std::str::from_utf8(domain).map_err(|_| PathError::BadAddress)?;
    if !quoted && !valid_dot_string(&local) {
        return Err(PathError::BadAddress);
    }
    let address = EmailAddress::new(&local, domain).map_err(|_| PathError::BadAddress)?;
    Ok(Parsed { path: Path::Mailbox(address), non_ascii, rest })
}

/// RFC 5321 §4.5.3.1.3 bounds the whole path, brackets included.
fn check_length(input: &[u8], rest: &[u8]) -> Result<(), PathError> {
    if input.len() - rest.len() > PATH_BYTES_MAX {
        return Err(PathError::BadAddress);
    }
    Ok(())
}

/// Skips `@a.example,@b.example:` (RFC 5321 §4.1.1.3: MUST accept, SHOULD
/// ignore). Each hop must still be a valid domain.
fn skip_source_route(inner: &[u8]) -> Result<&[u8], PathError> {
    if inner.first() != Some(&b'@') {
        return Ok(inner);
    }
    let colon = memchr(b':', inner).ok_or(PathError::BadAddress)?;
    let route = &inner[..colon];
    if memchr(b'>', route).is_some() {
        return Err(PathError::BadAddress);
    }
    for hop in route.split(|&b| b == b',') {
        let name = hop.strip_prefix(b"@").ok_or(PathError::BadAddress)?;
        let name = std::str::from_utf8(name).map_err(|_| PathError::BadAddress)?;
        normalize_domain(name).map_err(|_| PathError::BadAddress)?;
    }
    Ok(&inner[colon + 1..])
}

/// Returns the local part (unquoted, escapes removed), whether it was
/// quoted, and the input after it.
fn local_part(input: &[u8]) -> Result<(Vec<u8>, bool, &[u8]), PathError> {
    if let Some(body) = input.strip_prefix(b"\"") {
        return quoted_string(body).map(|(local, rest)| (local, true, rest));
    }
    // Dot-string: atext and dots; UTF8-non-ascii octets are collected here
    // and validated as UTF-8 by the caller.
    let end = input.iter().position(|&b| !(is_atext(b) || b == b'.' || b >= 0x80)).unwrap_or(input.len());
    if end > LOCAL_PART_BYTES_MAX {
        return Err(PathError::BadAddress);
    }
    Ok((input[..end].to_vec(), false, &input[end..]))
}

/// Quoted-string body after the opening quote (RFC 5321 §4.1.2:
/// qtextSMTP = %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP = "\" %d32-126).
fn quoted_string(input: &[u8]) -> Result<(Vec<u8>, &[u8]), PathError> {
    let mut local = Vec::new();
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'"' => return Ok((local, &input[i + 1..])),
            b'\\' => {
                let escaped = *input.get(i + 1).ok_or(PathError::Syntax)?;
                if !(32..=126).contains(&escaped) {
                    return Err(PathError::BadAddress);
                }
                local.push(escaped);
                i += 2;
            }
            32..=126 | 0x80..=0xff => {
                local.push(b);
                i += 1;
            }
            _ => return Err(PathError::BadAddress),
        }
        if local.len() > LOCAL_PART_BYTES_MAX {
            return Err(PathError::BadAddress);
        }
    }
    Err(PathError::Syntax)
}

/// Domain or address literal up to the closing `>`.
fn domain(input: &[u8]) -> Result<(&[u8], &[u8]), PathError> {
    let end = if input.first() == Some(&b'[') {
        memchr(b']', input).map(|i| i + 1).ok_or(PathError::BadAddress)?
    } else {
        input.iter().position(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80)).unwrap_or(input.len())
    };
    if end == 0 || end > DOMAIN_BYTES_MAX {
        return Err(PathError::BadAddress);
    }
    Ok(input.split_at(end))
}

/// RFC 5322 atext (RFC 5321 §4.1.2 Atom).
pub(crate) fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Dot-string = Atom *("." Atom): no empty atoms.
fn valid_dot_string(local: &str) -> bool {
    !local.is_empty() && local.split('.').all(|atom| !atom.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(input: &str) -> Result<(String, String, String), PathError> {
        let parsed = parse_path(input.as_bytes())?;
        match parsed.path {
            Path::Mailbox(a) => Ok((a.local_part().to_owned(), a.domain().to_owned(), String::from_utf8_lossy(parsed.rest).into_owned())),
            other => panic!("not a mailbox: {other:?}"),
        }
    }

    #[test]
    fn plain_and_null_paths() {
        assert_eq!(mailbox("<John.Doe@Example.ORG>").unwrap(), ("John.Doe".into(), "example.org".into(), "".into()));
        assert_eq!(mailbox("<a@b.c> SIZE=1").unwrap().2, " SIZE=1");
        assert_eq!(parse_path(b"<>").unwrap().path, Path::Null);
        assert_eq!(parse_path(b"<Postmaster>").unwrap().path, Path::Postmaster);
    }

    #[test]
    fn source_routes_are_ignored() {
        assert_eq!(mailbox("<@relay.example,@b.example:user@c.example>").unwrap().0, "user");
        assert_eq!(parse_path(b"<@bad_domain:user@c.example>").unwrap_err(), PathError::BadAddress);
        assert_eq!(parse_path(b"<@a.example user@c.example>").unwrap_err(), PathError::BadAddress);
    }

    #[test]
    fn quoted_local_parts_unescape() {
        assert_eq!(mailbox(r#"<"john \"jd\" doe"@x.org>"#).unwrap().0, r#"john "jd" doe"#);
        assert_eq!(mailbox(r#"<"a>b"@x.org>"#).unwrap().0, "a>b");
        assert_eq!(parse_path(b"<\"unterminated@x.org>").unwrap_err(), PathError::Syntax);
        assert_eq!(parse_path(b"<\"\"@x.org>").unwrap_err(), PathError::BadAddress);
    }

    #[test]
    fn address_literals() {
        assert_eq!(mailbox("<a@[192.0.2.1]>").unwrap().1, "[192.0.2.1]");
        assert_eq!(mailbox("<a@[IPv6:2001:db8::1]>").unwrap().1, "[ipv6:2001:db8::1]");
        assert_eq!(parse_path(b"<a@[300.1.1.1]>").unwrap_err(), PathError::BadAddress);
    }

    #[test]
    fn malformed() {
        for bad in ["a@b.c", "<a@b.c", "a@b.c>"] {
            assert_eq!(parse_path(bad.as_bytes()).unwrap_err(), PathError::Syntax, "{bad}");
        }
        for bad in ["<a..b@x.org>", "<.a@x.org>", "<a@>", "<a@-x.org>", "<a b@x.org>", "<user>", "<\"postmaster\">", "<a@b.c d>"] {
            assert!(parse_path(bad.as_bytes()).is_err(), "{bad} accepted");
        }
        let long = format!("<{}@x.org>", "a".repeat(65));
        assert_eq!(parse_path(long.as_bytes()).unwrap_err(), PathError::BadAddress);
        let long_domain = format!("<a@{}.org>", "b.".repeat(130));
        assert_eq!(parse_path(long_domain.as_bytes()).unwrap_err(), PathError::BadAddress);
    }

    #[test]
    fn utf8_is_flagged() {
        let p = parse_path("<пользователь@почта.рф>".as_bytes()).unwrap();
        assert!(p.non_ascii);
        assert!(!parse_path(b"<a@b.c>").unwrap().non_ascii);
        assert_eq!(parse_path(b"<\xff@x.org>").unwrap_err(), PathError::BadAddress);
    }
}
