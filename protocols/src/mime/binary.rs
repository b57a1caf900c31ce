//! BINARY[part] (RFC 3516): a part's content with its
//! Content-Transfer-Encoding removed.

use std::borrow::Cow;

use super::decode;
use super::section::resolve;
use super::structure::{self, Kind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// The part's transfer encoding is not one we decode: `NO [UNKNOWN-CTE]`
    /// (RFC 3516 §4.3).
    #[error("unknown Content-Transfer-Encoding {0:?}")]
    UnknownCte(String),
    /// No part with these numbers.
    #[error("no such part")]
    NoSuchPart,
    /// A multipart: it has no content of its own to decode.
    #[error("not a leaf part")]
    NotLeaf,
}

/// The decoded content of `part`. An empty part path is the whole message,
/// sent as is (its top-level header is never transfer-encoded). 7bit, 8bit
/// and binary are returned as they are (borrowed); base64 and
/// quoted-printable are decoded leniently: octets outside the base64
/// alphabet are skipped, a `=` that starts no valid escape is kept.
pub fn binary<'a>(msg: &'a [u8], part: &[u32]) -> Result<Cow<'a, [u8]>, BinaryError> {
    if part.is_empty() {
        return Ok(Cow::Borrowed(msg));
    }
    binary_in(&structure::parse(msg), part)
}

/// [`binary()`] on an already parsed message.
pub(crate) fn binary_in<'a>(tree: &structure::Tree<'a>, part: &[u32]) -> Result<Cow<'a, [u8]>, BinaryError> {
    let msg = tree.msg;
    if part.is_empty() {
        return Ok(Cow::Borrowed(msg));
    }
    let idx = resolve(tree, part).ok_or(BinaryError::NoSuchPart)?;
    let e = &tree.entities[idx];
    if matches!(e.kind, Kind::Multipart(_)) {
        return Err(BinaryError::NotLeaf);
    }
    let body = &msg[e.body.clone()];
    match e.encoding().as_str() {
        "7bit" | "8bit" | "binary" => Ok(Cow::Borrowed(body)),
        "base64" => Ok(Cow::Owned(decode::base64(body))),
        "quoted-printable" => Ok(Cow::Owned(decode::quoted_printable(body))),
        other => Err(BinaryError::UnknownCte(other.to_string())),
    }
}
