//! Modified UTF-7 for mailbox names (RFC 3501 §5.1.3), spoken by IMAP4rev1
//! clients that did not enable UTF8=ACCEPT (RFC 6855). Printable US-ASCII
//! except `&` stands for itself, `&-` is `&`, and `&...-` holds UTF-16BE in
//! base64 with `,` for `/` and no padding.
//!
//! Decoding is strict: only the one encoding [`encode`] would produce is
//! accepted, so every name has one wire form and two spellings can never
//! reach the same mailbox (or dodge a check) by different bytes.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// RFC 3501 §5.1.3 base64: `,` instead of `/`, no padding, and (default
/// engine setting) non-zero trailing bits rejected.
const MUTF7: GeneralPurpose =
    GeneralPurpose::new(&alphabet::IMAP_MUTF7, GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::RequireNone));

fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c) && c != '&'
}

/// Encodes a UTF-8 name.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<u16>| {
        if !pending.is_empty() {
            let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&MUTF7.encode(bytes));
            out.push('-');
            pending.clear();
        }
    };
    for c in name.chars() {
        if is_direct(c) {
            flush(&mut out, &mut pending);
            out.push(c);
        } else if c == '&' {
            flush(&mut out, &mut pending);
            out.push_str("&-");
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// Decodes a modified UTF-7 name; `None` if it is not the canonical
/// encoding of some string: octets outside printable US-ASCII, a `&`
/// shift that is unterminated, empty-but-not-`&-`, not valid base64, not
/// whole UTF-16 code units, unpaired surrogates, an encoded character that
/// must appear directly (printable ASCII), or two shifts in a row (one
/// shift must hold the whole run).
pub fn decode(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    let mut after_shift = false;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..0x7f).contains(&b) {
            return None;
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            after_shift = false;
            continue;
        }
        let end = i + 1 + bytes[i + 1..].iter().position(|&c| c == b'-')?;
        let encoded = &bytes[i + 1..end];
        i = end + 1;
        if encoded.is_empty() {
            out.push('&');
            after_shift = false;
            continue;
        }
        if after_shift {
            return None;
        }
        after_shift = true;
        let raw = MUTF7.decode(encoded).ok()?;
        if raw.len() % 2 != 0 {
            return None;
        }
        let units = raw.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
        for c in char::decode_utf16(units) {
            let c = c.ok()?;
            if (' '..='~').contains(&c) {
                return None;
            }
            out.push(c);
        }
    }
    // The checks above leave one non-canonical form: base64 that decodes
    // but that the encoder would split differently. Cheap to rule out.
    (encode(&out) == name).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_forms() {
        // RFC 3501 §5.1.3 example.
        assert_eq!(encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(), Some("~peter/mail/台北/日本語"));
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode("Tom &- Jerry").as_deref(), Some("Tom & Jerry"));
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode("😀"), "&2D3eAA-");
        assert_eq!(decode("&2D3eAA-").as_deref(), Some("😀"));
        assert_eq!(decode("").as_deref(), Some(""));
    }

    #[test]
    fn rejects() {
        for bad in [
            "&",          // unterminated
            "&U,BTFw",    // unterminated
            "&U,BTF-",    // 18 bits: not whole UTF-16 units
            "&U,BTFx-",   // non-zero trailing bits
            "&AGE-",      // "a" encoded
            "&ACY-",      // "&" encoded instead of &-
            "&U,A-&BTF-", // two shifts in a row
            "&U,BTFw-&ZeVnLIqe-",
            "&2D0-",      // lone high surrogate
            "&3gA-",      // lone low surrogate
            "&U/BTFw-",   // '/' is not in the alphabet
            "&U,BTFw==-", // padding
            "caf\u{e9}",  // raw 8-bit
            "a\tb",       // control character
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,20}") {
            let e = encode(&s);
            prop_assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)));
            prop_assert_eq!(decode(&e), Some(s));
        }

        #[test]
        fn decode_is_canonical(s in "[ -~]{0,24}") {
            if let Some(d) = decode(&s) {
                prop_assert_eq!(encode(&d), s);
            }
        }
    }
}
