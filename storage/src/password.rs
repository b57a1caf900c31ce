//! Password hashing and verification.
//!
//! New hashes are Argon2id (RFC 9106) PHC strings with m = 19456 KiB,
//! t = 2, p = 1: the OWASP Password Storage Cheat Sheet's minimum for
//! Argon2id, about 20 ms and 19 MiB per check on a 2020s server core, so a
//! burst of logins cannot exhaust memory while guessing stays expensive.
//!
//! [`verify`] also accepts what imports from Dovecot, Postfix setups and
//! `/etc/shadow` bring (Dovecot's password scheme names, see its
//! "Password Schemes" documentation):
//!
//! | stored form | scheme |
//! |---|---|
//! | `$argon2id$…`, `$argon2i$…`, `{ARGON2ID}…`, `{ARGON2I}…` | Argon2 PHC string |
//! | `$2a$`, `$2b$`, `$2y$`, `{BLF-CRYPT}…` | bcrypt |
//! | `$6$…`, `{SHA512-CRYPT}…` | SHA-512-crypt (Drepper) |
//! | `$5$…`, `{SHA256-CRYPT}…` | SHA-256-crypt |
//! | `{CRYPT}…` | any of the crypt forms above |
//! | `{SSHA512}`, `{SHA512}`, `{SSHA256}`, `{SHA256}` (`.B64`/`.HEX` suffix) | salted / plain digest |
//! | `{PLAIN}`, `{CLEAR}`, `{CLEARTEXT}` | clear text (imports only) |
//!
//! Unknown schemes and malformed hashes never match and never panic. The
//! cost parameters inside a stored hash are capped, so a hostile or
//! mistyped entry cannot make one login take minutes or gigabytes.

use argon2::password_hash::{PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

/// Argon2id memory cost of new hashes, in KiB (OWASP minimum).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// Argon2id passes of new hashes (OWASP minimum with the memory above).
pub const ARGON2_PASSES: u32 = 2;
/// Argon2id lanes of new hashes.
pub const ARGON2_LANES: u32 = 1;
/// Longest password checked or hashed. SHA-crypt costs O(length²) per
/// check and Argon2/bcrypt would hash megabytes; RFC 4616 asks servers
/// to accept 255-byte passwords, so 1 KiB is generous.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Caps on the cost parameters read from a stored hash. Each is far above
/// what any real deployment uses (Argon2 256 MiB / 16 passes / 16 lanes,
/// bcrypt cost 15 ≈ 3 s, SHA-crypt 2,000,000 rounds ≈ 1 s) and bounds
/// the work of one login.
pub const ARGON2_MEMORY_KIB_MAX: u32 = 256 << 10;
pub const ARGON2_PASSES_MAX: u32 = 16;
pub const ARGON2_LANES_MAX: u32 = 16;
pub const BCRYPT_COST_MAX: u32 = 15;
pub const SHA_CRYPT_ROUNDS_MAX: usize = 2_000_000;
/// Longest `{SCHEME}` prefix looked at.
const SCHEME_BYTES_MAX: usize = 32;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password longer than {PASSWORD_BYTES_MAX} bytes")]
    TooLong,
    #[error("no randomness for a salt: {0}")]
    Random(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

fn argon2id() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a new password: an Argon2id PHC string with a random 16-byte
/// salt from the operating system.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hashed = argon2id()?.hash_password(password.as_bytes(), &salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hashed.to_string())
}

/// Checks `password` against a stored hash in any supported form.
pub fn verify(stored: &str, password: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    let stored = stored.trim();
    match split_scheme(stored) {
        Some((scheme, rest)) => verify_scheme(&scheme, rest, password),
        None => verify_crypt(stored, password),
    }
}

/// `{SCHEME}rest` → (upper-cased scheme, rest).
fn split_scheme(stored: &str) -> Option<(String, &str)> {
    let inner = stored.strip_prefix('{')?;
    let end = inner.find('}')?;
    (end <= SCHEME_BYTES_MAX).then(|| (inner[..end].to_ascii_uppercase(), &inner[end + 1..]))
}

fn verify_scheme(scheme: &str, rest: &str, password: &str) -> bool {
    match scheme {
        "ARGON2ID" | "ARGON2I" => verify_argon2(rest, password),
        "BLF-CRYPT" => verify_bcrypt(rest, password),
        "SHA512-CRYPT" => rest.starts_with("$6$") && verify_sha_crypt(rest, password),
        "SHA256-CRYPT" => rest.starts_with("$5$") && verify_sha_crypt(rest, password),
        "CRYPT" => verify_crypt(rest, password),
        "PLAIN" | "CLEAR" | "CLEARTEXT" => constant_time_eq(&Sha256::digest(rest.as_bytes()), &Sha256::digest(password.as_bytes())),
        _ => verify_digest(scheme, rest, password),
    }
}

/// The crypt(3)-style forms, told apart by their `$id$` prefix. DES and
/// MD5 crypt are not supported (too weak to keep; such users must reset).
fn verify_crypt(stored: &str, password: &str) -> bool {
    if stored.starts_with("$argon2id$") || stored.starts_with("$argon2i$") {
        verify_argon2(stored, password)
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| stored.starts_with(p)) {
        verify_bcrypt(stored, password)
    } else if stored.starts_with("$6$") || stored.starts_with("$5$") {
        verify_sha_crypt(stored, password)
    } else {
        false
    }
}

fn verify_argon2(stored: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    if !matches!(parsed.algorithm.as_str(), "argon2id" | "argon2i") {
        return false;
    }
    let param = |name: &str| parsed.params.get_decimal(name);
    let within = |v: Option<u32>, max: u32| v.is_some_and(|v| v <= max);
    if !within(param("m"), ARGON2_MEMORY_KIB_MAX) || !within(param("t"), ARGON2_PASSES_MAX) || !within(param("p"), ARGON2_LANES_MAX) {
        tracing::warn!("stored Argon2 hash has cost parameters over the limits; refused");
        return false;
    }
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

fn verify_bcrypt(stored: &str, password: &str) -> bool {
    // `$2y$NN$` + 53 characters; the cost is checked before any work.
    let cost = stored.get(4..6).and_then(|c| c.parse::<u32>().ok());
    if stored.len() != 60 || stored.as_bytes().get(6) != Some(&b'$') || cost.is_none_or(|c| c > BCRYPT_COST_MAX) {
        return false;
    }
    // Truncating verify: crypt(3) and Dovecot use only the first 72 bytes.
    bcrypt::verify(password, stored).unwrap_or(false)
}

/// SHA-crypt (`$5$`/`$6$`, <https://www.akkadia.org/drepper/SHA-crypt.txt>)
/// parsed here and compared on the encoded form: sha-crypt 0.5's own
/// `sha256_check` unwraps a decode and would panic on a malformed hash.
fn verify_sha_crypt(stored: &str, password: &str) -> bool {
    let mut fields = stored.split('$');
    let (Some(""), Some(id), Some(mut next)) = (fields.next(), fields.next(), fields.next()) else { return false };
    let mut rounds = sha_crypt::ROUNDS_DEFAULT;
    if let Some(r) = next.strip_prefix("rounds=") {
        let Ok(r) = r.parse::<usize>() else { return false };
        // The spec clamps to [1000, 999999999]; we refuse above our cap.
        if r > SHA_CRYPT_ROUNDS_MAX {
            tracing::warn!("stored SHA-crypt hash has more rounds than allowed; refused");
            return false;
        }
        rounds = r.max(sha_crypt::ROUNDS_MIN);
        let Some(n) = fields.next() else { return false };
        next = n;
    }
    let (salt, Some(expected), None) = (next, fields.next(), fields.next()) else { return false };
    let computed = match id {
        "6" => sha_crypt::Sha512Params::new(rounds).ok().and_then(|p| sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &p).ok()),
        "5" => sha_crypt::Sha256Params::new(rounds).ok().and_then(|p| sha_crypt::sha256_crypt_b64(password.as_bytes(), salt.as_bytes(), &p).ok()),
        _ => None,
    };
    computed.is_some_and(|c| constant_time_eq(c.as_bytes(), expected.as_bytes()))
}

/// `{SHA512}`, `{SSHA512}`, `{SHA256}`, `{SSHA256}`, optionally with a
/// `.B64` (default) or `.HEX` encoding suffix as in Dovecot. Salted forms
/// are `digest(password + salt) + salt`.
fn verify_digest(scheme: &str, rest: &str, password: &str) -> bool {
    let (name, hex) = match scheme.rsplit_once('.') {
        Some((n, "HEX")) => (n, true),
        Some((n, "B64")) => (n, false),
        Some(_) => return false,
        None => (scheme, false),
    };
    let raw = if hex { decode_hex(rest) } else { base64::engine::general_purpose::STANDARD.decode(rest.as_bytes()).ok() };
    let Some(raw) = raw else { return false };
    let (digest_len, salted, sha512) = match name {
        "SHA512" => (64, false, true),
        "SSHA512" => (64, true, true),
        "SHA256" => (32, false, false),
        "SSHA256" => (32, true, false),
        _ => return false,
    };
    if raw.len() < digest_len || (!salted && raw.len() != digest_len) {
        return false;
    }
    let (expected, salt) = raw.split_at(digest_len);
    let computed: Vec<u8> = if sha512 {
        Sha512::new().chain_update(password.as_bytes()).chain_update(salt).finalize().to_vec()
    } else {
        Sha256::new().chain_update(password.as_bytes()).chain_update(salt).finalize().to_vec()
    };
    constant_time_eq(&computed, expected)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// Compares without an early exit, so the time does not depend on where
/// the first difference is (lengths here are public digest sizes).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors for "hunter2": SHA-crypt and bcrypt from glibc/libxcrypt
    // crypt(3) (Python's crypt module; openssl passwd -5/-6 agrees),
    // Argon2 from the reference C library libargon2 via ctypes
    // (argon2id_hash_encoded / argon2i_hash_encoded), digests from hashlib.
    const SHA512_CRYPT: &str = "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";
    const SHA512_CRYPT_ROUNDS: &str = "$6$rounds=10000$saltsalt$ZTNXXHFyLAi.0f6IV4I1ziqTD4etecjPY.wSj7UV9ctRg0t3APls5/5wgDKKPAKtz42rw3DeefzFnFyha0DdM.";
    const SHA256_CRYPT: &str = "$5$saltsalt$OIdfjX.u4Y3SJ4I2bX8w5BMf1VAUhHABNUirScDzZi3";
    const SHA256_CRYPT_ROUNDS: &str = "$5$rounds=12000$abcdefgh$jnsPBeeWHtBbklHdyLclLegIKXW1J1jg5Fyz2aTV1g1";
    const BCRYPT_2B: &str = "$2b$05$abcdefghijklmnopqrstuuoXuKqgZXLiJqzfmMXDDhSFPIvxV7t8.";
    const BCRYPT_2Y: &str = "$2y$05$abcdefghijklmnopqrstuuoXuKqgZXLiJqzfmMXDDhSFPIvxV7t8.";
    const BCRYPT_2A: &str = "$2a$05$abcdefghijklmnopqrstuuoXuKqgZXLiJqzfmMXDDhSFPIvxV7t8.";
    const ARGON2ID: &str = "$argon2id$v=19$m=19456,t=2,p=1$dmFyYW5zYWx0dmFyYW4xNg$lT4YMXvY7n7yTfF0TArhpI13X5sXg9FbPu7tHHE2qg0";
    const ARGON2I: &str = "$argon2i$v=19$m=4096,t=3,p=1$YW5vdGhlcnNhbHQxMjM0NQ$V7CG2vMWegRZqSRyX/Uw08TlcRKikrus9gRX0i4Mrw8";
    const SSHA512: &str = "{SSHA512}Sxh+sIEc7kjuH59+OcLq8om951okG/LWNWndX/jvya21aiO3xZ1M9fPW7FUJJalY6y+Aalf2wxFVEvFCEvhIQwECAwQFBgcI";
    const SHA512: &str = "{SHA512}a5ftaNFOs/GqlZzl1Jx9xhLh6x2v1zsecFhHSD/WpsgJ8s606N9v+ZhMYpj/AoXKzmYUv42qnwBwEBtsiYmeIg==";
    const SHA512_HEX: &str = "{SHA512.HEX}6b97ed68d14eb3f1aa959ce5d49c7dc612e1eb1dafd73b1e705847483fd6a6c809f2ceb4e8df6ff9984c6298ff0285cace6614bf8daa9f0070101b6c89899e22";
    const SSHA256: &str = "{SSHA256}3+ZN2WbFPKu16M6jnnTUpPi8PWqCp6OoI0F9cH6+EJwBAgMEBQYHCA==";
    const SHA256: &str = "{SHA256}9S+9MrKzuG/4jvbEkGKChfSCrxXdyylUH5S89Saj9sc=";

    fn check(stored: &str) {
        assert!(verify(stored, "hunter2"), "right password refused for {stored}");
        assert!(!verify(stored, "hunter3"), "wrong password accepted for {stored}");
        assert!(!verify(stored, ""), "empty password accepted for {stored}");
    }

    #[test]
    fn known_vectors_every_scheme() {
        for v in
            [SHA512_CRYPT, SHA512_CRYPT_ROUNDS, SHA256_CRYPT, SHA256_CRYPT_ROUNDS, BCRYPT_2A, BCRYPT_2B, BCRYPT_2Y, ARGON2ID, ARGON2I, SSHA512, SHA512, SHA512_HEX, SSHA256, SHA256]
        {
            check(v);
        }
    }

    #[test]
    fn dovecot_scheme_prefixes() {
        for v in [
            format!("{{ARGON2ID}}{ARGON2ID}"),
            format!("{{ARGON2I}}{ARGON2I}"),
            format!("{{BLF-CRYPT}}{BCRYPT_2Y}"),
            format!("{{SHA512-CRYPT}}{SHA512_CRYPT}"),
            format!("{{sha256-crypt}}{SHA256_CRYPT}"),
            format!("{{CRYPT}}{SHA512_CRYPT}"),
            format!("{{CRYPT}}{BCRYPT_2B}"),
            format!("{{CRYPT}}{SHA256_CRYPT_ROUNDS}"),
            "{PLAIN}hunter2".to_owned(),
            "{CLEARTEXT}hunter2".to_owned(),
        ] {
            check(&v);
        }
        assert!(!verify(&format!("{{SHA256-CRYPT}}{SHA512_CRYPT}"), "hunter2"), "scheme/format mismatch accepted");
        assert!(!verify("{PLAIN}hunter2", "hunter"));
        assert!(!verify("{PLAIN}hunter2", "hunter22"));
    }

    #[test]
    fn hash_round_trip_uses_owasp_parameters() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert_ne!(hash("correct horse").unwrap(), h, "salt not random");
        assert!(matches!(hash(&"x".repeat(PASSWORD_BYTES_MAX + 1)), Err(PasswordError::TooLong)));
    }

    #[test]
    fn unknown_and_malformed_never_match() {
        let malformed = [
            "",
            "{",
            "{}",
            "{UNKNOWN}hunter2",
            "{MD5}abc",
            "$1$saltsalt$abc",
            "hunter2",
            "$6$",
            "$6$salt",
            "$6$rounds=x$s$h",
            "$5$saltsalt$!!!!",
            "$5$saltsalt$OIdfjX.u4Y3SJ4I2bX8w5BMf1VAUhHABNUirScDzZi",
            "$5$saltsalt$OIdfjX.u4Y3SJ4I2bX8w5BMf1VAUhHABNUirScDzZi3$x",
            "$2b$05$short",
            "$2b$xx$abcdefghijklmnopqrstuuoXuKqgZXLiJqzfmMXDDhSFPIvxV7t8.",
            "$argon2id$v=19$m=19456",
            "$argon2d$v=19$m=19456,t=2,p=1$dmFyYW5zYWx0dmFyYW4xNg$lT4YMXvY7n7yTfF0TArhpI13X5sXg9FbPu7tHHE2qg0",
            "{SSHA512}!!",
            "{SSHA512}AAAA",
            "{SHA512.HEX}zz",
            "{SHA512.XYZ}abc",
            "{SHA512}",
        ];
        for m in malformed {
            assert!(!verify(m, "hunter2"), "{m:?} matched");
        }
    }

    #[test]
    fn costs_over_the_caps_are_refused_quickly() {
        let start = std::time::Instant::now();
        assert!(!verify("$6$rounds=999999999$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.", "hunter2"));
        assert!(!verify("$2b$31$abcdefghijklmnopqrstuuoXuKqgZXLiJqzfmMXDDhSFPIvxV7t8.", "hunter2"));
        assert!(!verify("$argon2id$v=19$m=4194304,t=2,p=1$dmFyYW5zYWx0dmFyYW4xNg$lT4YMXvY7n7yTfF0TArhpI13X5sXg9FbPu7tHHE2qg0", "hunter2"));
        assert!(!verify("$argon2id$v=19$m=19456,t=1000,p=1$dmFyYW5zYWx0dmFyYW4xNg$lT4YMXvY7n7yTfF0TArhpI13X5sXg9FbPu7tHHE2qg0", "hunter2"));
        assert!(!verify(SHA512_CRYPT, &"h".repeat(PASSWORD_BYTES_MAX + 1)));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn bcrypt_uses_the_first_72_bytes_like_crypt3() {
        let long = "a".repeat(80);
        let h = bcrypt::hash(&long, 4).unwrap();
        assert!(verify(&h, &long));
        assert!(verify(&h, &"a".repeat(72)));
    }

    proptest::proptest! {
        #[test]
        fn prop_garbage_never_panics(stored in ".{0,120}", password in ".{0,40}") {
            let _ = verify(&stored, &password);
            let _ = verify(&format!("$5$saltsalt${stored}"), &password);
            let _ = verify(&format!("{{SSHA512}}{stored}"), &password);
        }
    }
}
