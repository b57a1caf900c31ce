//! DKIM keys (RFC 6376, RFC 8463): generation, the DNS record to publish,
//! and signing of outgoing messages.
//!
//! Key directory (`dkim.directory`, seed 002 §6.2.1.18):
//! `<dir>/<domain>/<selector>.key` holds the private key as PKCS#8 PEM
//! (mode 0600), `<dir>/<domain>/<selector>.txt` the TXT record to publish
//! at `<selector>._domainkey.<domain>`. The selector used for signing is
//! `dkim.selector` (seed §6.2.1.19, default `mail`). RSA keys are published
//! as SubjectPublicKeyInfo (what OpenSSL-based verifiers expect), Ed25519
//! keys as the raw 32-byte public key (RFC 8463 §4.2).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest key file read; a 4096-bit RSA key in PEM is about 3.3 KB.
const KEY_FILE_BYTES_MAX: u64 = 16 << 10;

/// Headers signed when present (RFC 6376 §5.4.1 recommends the ones a
/// reader sees and the MIME structure).
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Key type for `varan dkim generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// rsa-sha256 with a 2048-bit key (RFC 8301: at least 1024, 2048
    /// recommended; larger keys need TXT records split in several strings,
    /// which some DNS panels handle badly).
    Rsa2048,
    /// rsa-sha256 with a 4096-bit key.
    Rsa4096,
    /// ed25519-sha256 (RFC 8463). Not every verifier supports it yet: sign
    /// with an RSA key as well when using it.
    Ed25519,
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa2048" | "rsa-2048" => Ok(Algorithm::Rsa2048),
            "rsa4096" | "rsa-4096" => Ok(Algorithm::Rsa4096),
            "ed25519" => Ok(Algorithm::Ed25519),
            _ => Err(format!("unknown DKIM key type {s:?} (rsa, rsa4096 or ed25519)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DkimError + '_ {
    move |source| DkimError::Io { path: path.to_path_buf(), source }
}

/// What `varan dkim generate` made, and what to publish.
#[derive(Debug, Clone)]
pub struct PublishedKey {
    pub key_path: PathBuf,
    /// `<selector>._domainkey.<domain>`.
    pub dns_name: String,
    /// The TXT record's value, e.g. `v=DKIM1; k=rsa; p=MIIB...`.
    pub dns_value: String,
}

impl PublishedKey {
    /// A zone-file line; values over 255 bytes are split into several
    /// strings (RFC 7208 §3.3 style, as DNS requires for TXT).
    pub fn zone_line(&self) -> String {
        let strings: Vec<String> = self.dns_value.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
        format!("{}. IN TXT ( {} )", self.dns_name, strings.join(" "))
    }
}

/// Checks a domain or selector before it becomes part of a file path.
fn check_label(what: &str, value: &str) -> Result<String, DkimError> {
    let v = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !v.is_empty() && v.len() <= 253 && v.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok {
        Ok(v)
    } else {
        Err(DkimError::Invalid(format!("invalid DKIM {what} {value:?}")))
    }
}

fn key_path(dir: &Path, domain: &str, selector: &str) -> PathBuf {
    dir.join(domain).join(format!("{selector}.key"))
}

/// Creates a key for `domain` under `selector` and writes the TXT record
/// beside it. Refuses to replace an existing key unless `replace` (a key
/// still published in DNS would stop verifying).
pub fn generate(dir: &Path, domain: &str, selector: &str, algorithm: Algorithm, replace: bool) -> Result<PublishedKey, DkimError> {
    let domain = check_label("domain", domain)?;
    let selector = check_label("selector", selector)?;
    let crypto = |what: &str| DkimError::Invalid(format!("cannot generate the {what} key"));
    let pkcs8: Vec<u8> = match algorithm {
        Algorithm::Rsa2048 | Algorithm::Rsa4096 => {
            let size = if algorithm == Algorithm::Rsa2048 { aws_lc_rs::rsa::KeySize::Rsa2048 } else { aws_lc_rs::rsa::KeySize::Rsa4096 };
            let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| crypto("RSA"))?;
            pair.as_der().map_err(|_| crypto("RSA"))?.as_ref().to_vec()
        }
        Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| crypto("Ed25519"))?.as_ref().to_vec(),
    };
    let domain_dir = dir.join(&domain);
    fs::create_dir_all(&domain_dir).map_err(io_err(&domain_dir))?;
    let path = key_path(dir, &domain, &selector);
    let pem = pem_encode("PRIVATE KEY", &pkcs8);
    write_file(&path, pem.as_bytes(), 0o600, replace)?;
    let published = publish(&domain, &selector, &pkcs8)?;
    let txt = domain_dir.join(format!("{selector}.txt"));
    write_file(&txt, format!("{}\n", published.zone_line()).as_bytes(), 0o644, true)?;
    Ok(PublishedKey { key_path: path, ..published })
}

/// The DNS record of an existing key (`varan dkim show`).
pub fn published(dir: &Path, domain: &str, selector: &str) -> Result<PublishedKey, DkimError> {
    let domain = check_label("domain", domain)?;
    let selector = check_label("selector", selector)?;
    let path = key_path(dir, &domain, &selector);
    let der = read_pkcs8(&path)?;
    Ok(PublishedKey { key_path: path, ..publish(&domain, &selector, &der)? })
}

fn publish(domain: &str, selector: &str, pkcs8: &[u8]) -> Result<PublishedKey, DkimError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (k, public) = if let Ok(pair) = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8) {
        let spki = pair.public_key().as_der().map_err(|_| DkimError::Invalid("cannot encode the RSA public key".into()))?;
        ("rsa", b64.encode(spki.as_ref()))
    } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
        ("ed25519", b64.encode(pair.public_key().as_ref()))
    } else {
        return Err(DkimError::Invalid("the key is neither an RSA nor an Ed25519 PKCS#8 key".into()));
    };
    Ok(PublishedKey { key_path: PathBuf::new(), dns_name: format!("{selector}._domainkey.{domain}"), dns_value: format!("v=DKIM1; k={k}; p={public}") })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<(), DkimError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(mode);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            DkimError::Invalid(format!("{} exists; pass --force to replace the key (update the DNS record too)", path.display()))
        } else {
            DkimError::Io { path: path.to_path_buf(), source: e }
        }
    })?;
    file.write_all(data).and_then(|_| file.sync_all()).map_err(io_err(path))
}

fn read_pkcs8(path: &Path) -> Result<Vec<u8>, DkimError> {
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    if len > KEY_FILE_BYTES_MAX {
        return Err(DkimError::Invalid(format!("{}: {len} bytes, more than a key file can be ({KEY_FILE_BYTES_MAX})", path.display())));
    }
    let text = fs::read(path).map_err(io_err(path))?;
    match PrivateKeyDer::from_pem_slice(&text) {
        Ok(PrivateKeyDer::Pkcs8(der)) => Ok(der.secret_pkcs8_der().to_vec()),
        Ok(_) => Err(DkimError::Invalid(format!("{}: not a PKCS#8 key (convert with `openssl pkcs8 -topk8 -nocrypt`)", path.display()))),
        Err(e) => Err(DkimError::Invalid(format!("{}: not a PEM private key ({e})", path.display()))),
    }
}

fn signing_key(pkcs8: &[u8]) -> Result<DkimKey, DkimError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    if let Ok(key) = RsaKey::<Sha256>::from_key_der(der) {
        return Ok(DkimKey::Rsa(key));
    }
    Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8).map(DkimKey::Ed25519).map_err(|e| DkimError::Invalid(format!("unusable DKIM key: {e}")))
}

/// The signing keys of the domains Varan sends for, loaded once per
/// configuration (re)load.
#[derive(Default)]
pub struct DkimSigners {
    selector: String,
    by_domain: HashMap<String, DkimKey>,
}

impl DkimSigners {
    /// Loads `<dir>/<domain>/<selector>.key` for each domain that has one.
    /// A domain without a key is not signed for; a damaged key is reported
    /// in the returned warnings and skipped.
    pub fn load<'a>(dir: &Path, selector: &str, domains: impl IntoIterator<Item = &'a str>) -> (Self, Vec<String>) {
        let mut signers = DkimSigners { selector: selector.to_string(), by_domain: HashMap::new() };
        let mut warnings = Vec::new();
        let Ok(selector) = check_label("selector", selector) else {
            warnings.push(format!("dkim.selector {selector:?} is not a valid DNS label: nothing is signed"));
            return (signers, warnings);
        };
        for domain in domains {
            let Ok(domain) = check_label("domain", domain) else { continue };
            let path = key_path(dir, &domain, &selector);
            if !path.exists() {
                continue;
            }
            match read_pkcs8(&path).and_then(|der| signing_key(&der)) {
                Ok(key) => {
                    signers.by_domain.insert(domain, key);
                }
                Err(e) => warnings.push(format!("DKIM key for {domain} not loaded: {e}")),
            }
        }
        (signers, warnings)
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    pub fn has(&self, domain: &str) -> bool {
        self.by_domain.contains_key(&domain.to_ascii_lowercase())
    }

    /// A `DKIM-Signature:` header field (CRLF-terminated, folded) for
    /// `message` signed as `domain`, relaxed/relaxed. `message` may use LF
    /// or CRLF line endings: relaxed canonicalization makes the signature
    /// verify on the CRLF form sent on the wire. `None` when no key is
    /// loaded for the domain.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Option<Result<String, String>> {
        let domain = domain.to_ascii_lowercase();
        let key = self.by_domain.get(&domain)?;
        let signer = DkimSigner::from_key(KeyRef(key))
            .domain(domain.as_str())
            .selector(self.selector.as_str())
            .headers(SIGNED_HEADERS.iter().copied())
            .header_canonicalization(mail_auth::dkim::Canonicalization::Relaxed)
            .body_canonicalization(mail_auth::dkim::Canonicalization::Relaxed);
        Some(signer.sign(message).map(|s| unfold_final_semicolon(s.to_header())).map_err(|e| e.to_string()))
    }

    /// The domain a message is signed as: the From header's domain when a
    /// key exists for it, otherwise the envelope sender's.
    pub fn signing_domain<'a>(&self, from_header_domain: Option<&'a str>, envelope_domain: Option<&'a str>) -> Option<&'a str> {
        [from_header_domain, envelope_domain].into_iter().flatten().find(|d| self.has(d))
    }
}

/// mail-auth 0.13 may fold the header between the `b=` value and the
/// closing `;`. That whitespace is not part of the value (RFC 6376 §3.2
/// tag-spec), so a verifier keeps it when it empties `b=`, while the
/// signature was computed without it: independent verifiers (OpenDKIM,
/// dkimpy) then fail the signature. Joining that last fold avoids it.
fn unfold_final_semicolon(header: String) -> String {
    let trimmed = header.trim_end_matches("\r\n");
    match trimmed.strip_suffix(';') {
        Some(body) if body.ends_with([' ', '\t', '\n', '\r']) => format!("{};\r\n", body.trim_end_matches([' ', '\t', '\n', '\r'])),
        _ => header,
    }
}

/// Borrowed key, so one loaded key serves every signature.
struct KeyRef<'a>(&'a DkimKey);

impl mail_auth::common::crypto::SigningKey for KeyRef<'_> {
    type Hasher = Sha256;
    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// The domain of the first address in the message's From header, read
/// from the header block only.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('>').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};
    use std::borrow::Borrow;
    use std::hash::Hash;
    use std::sync::{Arc, Mutex};

    const MESSAGE: &[u8] = b"From: Anna <anna@example.org>\nTo: bob@remote.test\nSubject: Hello\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <1@example.org>\n\nHi Bob,\n\n  two spaces  \n\n\n";

    /// A TXT cache answering from a map, so mail-auth never asks DNS.
    #[derive(Default)]
    struct Answers(Mutex<HashMap<Box<str>, Txt>>);

    impl ResolverCache<Box<str>, Txt> for Answers {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().expect("lock").get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().expect("lock").remove(name)
        }
        fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
            self.0.lock().expect("lock").insert(key, value);
        }
    }

    /// Verifies with mail-auth the message as sent on the wire (CRLF, the
    /// signature header prepended) against the published TXT record.
    fn verify(header: &str, message: &[u8], published: &PublishedKey) -> DkimResult {
        let mut wire = header.as_bytes().to_vec();
        wire.extend_from_slice(String::from_utf8_lossy(message).replace('\n', "\r\n").as_bytes());
        let answers = Answers::default();
        let key = DomainKey::parse(published.dns_value.as_bytes()).expect("published record parses");
        answers.insert(format!("{}.", published.dns_name).into(), Txt::DomainKey(Arc::new(key)), std::time::Instant::now());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let authenticator = MessageAuthenticator::new_system_conf().or_else(|_| MessageAuthenticator::new_cloudflare()).expect("authenticator");
            let parsed = AuthenticatedMessage::parse(&wire).expect("message parses");
            let outputs = authenticator.verify_dkim(Parameters::new(&parsed).with_txt_cache(&answers)).await;
            assert_eq!(outputs.len(), 1, "one signature");
            outputs[0].result().clone()
        })
    }

    #[test]
    fn generated_keys_sign_and_verify_rsa_and_ed25519() {
        for algorithm in [Algorithm::Rsa2048, Algorithm::Ed25519] {
            let tmp = crate::testutil::TempDir::new();
            let dir = tmp.path().to_path_buf();
            let published = generate(&dir, "Example.org", "mail", algorithm, false).expect("generate");
            assert_eq!(published.dns_name, "mail._domainkey.example.org");
            assert!(published.dns_value.starts_with(if algorithm == Algorithm::Ed25519 { "v=DKIM1; k=ed25519; p=" } else { "v=DKIM1; k=rsa; p=MII" }));
            assert_eq!(published.dns_value, super::published(&dir, "example.org", "mail").expect("show").dns_value);
            let (signers, warnings) = DkimSigners::load(&dir, "mail", ["example.org", "other.test"]);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert!(signers.has("EXAMPLE.org") && !signers.has("other.test"));
            let header = signers.sign("example.org", MESSAGE).expect("key").expect("signs");
            assert!(header.starts_with("DKIM-Signature:") && header.ends_with("\r\n"));
            assert!(!header.trim_end().trim_end_matches(';').ends_with([' ', '\t', '\n', '\r']), "no fold before the closing ';': {header:?}");
            assert_eq!(verify(&header, MESSAGE, &published), DkimResult::Pass, "{algorithm:?}");
            let mut tampered = MESSAGE.to_vec();
            tampered.extend_from_slice(b"P.S. added later\n");
            assert_ne!(verify(&header, &tampered, &published), DkimResult::Pass, "{algorithm:?} tampered body");
            assert!(signers.sign("other.test", MESSAGE).is_none());
        }
    }

    #[test]
    fn the_fold_before_the_closing_semicolon_is_joined() {
        assert_eq!(unfold_final_semicolon("DKIM-Signature: v=1; b=abc\r\n\t;\r\n".into()), "DKIM-Signature: v=1; b=abc;\r\n");
        assert_eq!(unfold_final_semicolon("DKIM-Signature: v=1; b=abc;\r\n".into()), "DKIM-Signature: v=1; b=abc;\r\n");
    }

    #[test]
    fn generate_refuses_to_replace_without_force() {
        let tmp = crate::testutil::TempDir::new();
        let dir = tmp.path().to_path_buf();
        let first = generate(&dir, "example.org", "s1", Algorithm::Ed25519, false).expect("first");
        let err = generate(&dir, "example.org", "s1", Algorithm::Ed25519, false).expect_err("second must refuse");
        assert!(err.to_string().contains("--force"), "{err}");
        let second = generate(&dir, "example.org", "s1", Algorithm::Ed25519, true).expect("forced");
        assert_ne!(first.dns_value, second.dns_value);
        let mode = fs::metadata(&second.key_path).expect("meta").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn bad_names_and_damaged_keys_are_reported() {
        let tmp = crate::testutil::TempDir::new();
        let dir = tmp.path().to_path_buf();
        assert!(generate(&dir, "../etc", "mail", Algorithm::Ed25519, false).is_err());
        assert!(generate(&dir, "example.org", "a/b", Algorithm::Ed25519, false).is_err());
        fs::create_dir_all(dir.join("example.org")).expect("mkdir");
        fs::write(dir.join("example.org/mail.key"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").expect("write");
        let (signers, warnings) = DkimSigners::load(&dir, "mail", ["example.org"]);
        assert!(signers.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        fs::write(dir.join("example.org/mail.key"), vec![b'A'; 20_000]).expect("write");
        assert!(super::published(&dir, "example.org", "mail").is_err());
    }

    #[test]
    fn signing_domain_prefers_the_from_header() {
        let tmp = crate::testutil::TempDir::new();
        let dir = tmp.path().to_path_buf();
        generate(&dir, "example.org", "mail", Algorithm::Ed25519, false).expect("gen");
        generate(&dir, "example.net", "mail", Algorithm::Ed25519, false).expect("gen");
        let (signers, _) = DkimSigners::load(&dir, "mail", ["example.org", "example.net"]);
        assert_eq!(from_domain(MESSAGE).as_deref(), Some("example.org"));
        assert_eq!(signers.signing_domain(Some("example.org"), Some("example.net")), Some("example.org"));
        assert_eq!(signers.signing_domain(Some("gmail.test"), Some("example.net")), Some("example.net"));
        assert_eq!(signers.signing_domain(Some("gmail.test"), None), None);
        assert_eq!(from_domain(b"Subject: no from\n\nbody\n"), None);
    }
}
