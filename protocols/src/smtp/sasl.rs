//! SASL for SMTP AUTH (RFC 4954): the PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login) mechanisms, which carry a password and are
//! therefore offered only under TLS unless configured otherwise.
//!
//! This module only decodes; checking credentials is the driver's job
//! (`Action::Authenticate`). Decoded passwords live in the `Action` and are
//! never formatted by `Debug`.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Longest authzid, authcid or password accepted (RFC 4616 §2: 255 octets).
pub const SASL_FIELD_BYTES_MAX: usize = 255;

/// Base64 as clients send it: standard alphabet, padding optional (some
/// clients omit it; RFC 4954 §4 does not say either way).
const BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// Mechanisms offered in `AUTH PLAIN LOGIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub(crate) fn from_name(name: &[u8]) -> Option<Self> {
        if name.eq_ignore_ascii_case(b"PLAIN") {
            Some(Self::Plain)
        } else if name.eq_ignore_ascii_case(b"LOGIN") {
            Some(Self::Login)
        } else {
            None
        }
    }
}

/// LOGIN challenges (base64 of "Username:" and "Password:").
pub(crate) const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
pub(crate) const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Why a client response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// `*` (RFC 4954 §4): 501 5.0.0.
    Cancelled,
    /// Not base64: 501 5.5.2.
    BadBase64,
    /// Base64, but not a valid PLAIN message or not UTF-8: counted as a
    /// failed authentication (535 5.7.8).
    Malformed,
}

/// Decoded PLAIN credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub authzid: String,
    pub authcid: String,
    pub password: String,
}

/// Never prints the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("authzid", &self.authzid).field("authcid", &self.authcid).finish_non_exhaustive()
    }
}

/// Decodes one client response line (RFC 4954 §4): `*` cancels, `=` is an
/// empty initial response, anything else must be base64.
pub(crate) fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    match line {
        b"*" => Err(SaslError::Cancelled),
        b"=" => Ok(Vec::new()),
        _ => BASE64.decode(line).map_err(|_| SaslError::BadBase64),
    }
}

/// `message = [authzid] UTF8NUL authcid UTF8NUL passwd` (RFC 4616 §2).
pub(crate) fn decode_plain(line: &[u8]) -> Result<Credentials, SaslError> {
    let raw = decode_response(line)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials { authzid: field(authzid)?, authcid: field(authcid)?, password: field(password)? })
}

/// A LOGIN username or password: base64 of non-empty UTF-8 text.
pub(crate) fn decode_login_field(line: &[u8]) -> Result<String, SaslError> {
    let raw = decode_response(line)?;
    if raw.is_empty() {
        return Err(SaslError::Malformed);
    }
    field(&raw)
}

fn field(raw: &[u8]) -> Result<String, SaslError> {
    if raw.len() > SASL_FIELD_BYTES_MAX || raw.contains(&0) {
        return Err(SaslError::Malformed);
    }
    String::from_utf8(raw.to_vec()).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.encode(s).into_bytes()
    }

    #[test]
    fn plain() {
        let c = decode_plain(&b64(b"\0alice\0secret")).unwrap();
        assert_eq!((c.authzid.as_str(), c.authcid.as_str(), c.password.as_str()), ("", "alice", "secret"));
        let c = decode_plain(&b64(b"admin\0alice\0pw")).unwrap();
        assert_eq!(c.authzid, "admin");
        assert_eq!(decode_plain(b"*"), Err(SaslError::Cancelled));
        assert_eq!(decode_plain(b"!!!"), Err(SaslError::BadBase64));
        assert_eq!(decode_plain(b"="), Err(SaslError::Malformed));
        assert_eq!(decode_plain(&b64(b"alice\0secret")), Err(SaslError::Malformed));
        assert_eq!(decode_plain(&b64(b"\0alice\0")), Err(SaslError::Malformed));
        assert_eq!(decode_plain(&b64(b"\0a\0b\0c")), Err(SaslError::Malformed));
        assert_eq!(decode_plain(&b64(b"\0\xff\0b")), Err(SaslError::Malformed));
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        assert_eq!(decode_login_field(b"YWxpY2U").unwrap(), "alice");
        assert_eq!(decode_login_field(b"YWxpY2U=").unwrap(), "alice");
    }
}
