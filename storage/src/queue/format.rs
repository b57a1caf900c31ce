//! The envelope file of a queue entry, version 1: UTF-8 text, one field
//! per line, readable with `cat` and checked by a CRC.
//!
//! ```text
//! varan-queue 1
//! id 0000000000120003
//! queued-at 1796310000
//! next-attempt 0
//! attempts 0
//! delay-warned 0
//! sender alice@example.org            (empty value: null reverse path)
//! ret hdrs                            (hdrs | full)
//! body-8bit 0
//! body-smtputf8 0
//! body-size 1234
//! envid QQ314159                      (optional)
//! submitter alice@example.org         (optional)
//! rcpt bob@remote.example             (one block per recipient, in order)
//! orcpt rfc822;bob@remote.example     (optional)
//! notify default                      (default | never | success,failure,delay subsets)
//! state pending                       (pending | delivered | failed)
//! state-at 1796310050                 (delivered/failed)
//! reply 250 2.0.0 Ok                  (delivered)
//! status 5.1.1                        (failed)
//! diagnostic 550 5.1.1 No such user   (failed)
//! last-error 451 4.7.1 Greylisted     (optional)
//! crc32 1a2b3c4d
//! ```
//!
//! A line is `key SP value LF`. In values, `%`, control characters and
//! DEL are written `%XX`; everything else (UTF-8 included) is literal.
//! Lines after `rcpt` up to the next `rcpt` (or `crc32`) belong to that
//! recipient. `crc32` (CRC-32/ISO-HDLC of every byte before that line, 8
//! lower-case hex digits) is last. The field order above is the only one
//! written and the only one read: a reader refuses unknown keys, missing
//! fields and every value over its limit (`varan_core::queue::limits`),
//! and the whole file is at most [`ENVELOPE_BYTES_MAX`]. A file that
//! fails any check is damaged; the caller reports it and sets it aside.

use std::fmt::Write as _;
use varan_core::queue::{limits, truncate_text, BodyInfo, Notify, QueueEntry, QueueId, QueuedRecipient, RecipientState, Ret};

/// First line of every envelope file.
pub const MAGIC_LINE: &str = "varan-queue 1";
/// Largest envelope file read or written: every recipient at its limits
/// (address, ORCPT, reply/diagnostic, last error ≈ 3.6 KiB encoded at
/// worst with `%XX`) would exceed any sane memory budget at 100,000
/// recipients, so the file as a whole is capped at 64 MiB; an entry that
/// would not fit is refused when written.
pub const ENVELOPE_BYTES_MAX: usize = 64 << 20;

fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        if c == '%' || c.is_ascii_control() {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
}

fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push(' ');
    push_escaped(out, value);
    out.push('\n');
}

fn notify_text(n: &Notify) -> String {
    if !n.explicit {
        return "default".into();
    }
    if n.never {
        return "never".into();
    }
    let parts: Vec<&str> = [(n.success, "success"), (n.failure, "failure"), (n.delay, "delay")].iter().filter(|(on, _)| *on).map(|&(_, name)| name).collect();
    parts.join(",")
}

/// Why an entry cannot be written (a bug in the caller, never peer input:
/// the SMTP layer enforces the same limits).
pub type EncodeError = String;

fn check_len(what: &str, value: &str, max: usize) -> Result<(), EncodeError> {
    if value.len() > max {
        return Err(format!("{what} is {} bytes; at most {max}", value.len()));
    }
    Ok(())
}

/// Encodes `entry`. Remote texts (replies, diagnostics, last errors) are
/// cut to `TEXT_BYTES_MAX`; every other value over its limit is an error.
pub fn encode(entry: &QueueEntry) -> Result<Vec<u8>, EncodeError> {
    if entry.recipients.len() > limits::RECIPIENTS_MAX {
        return Err(format!("{} recipients; at most {}", entry.recipients.len(), limits::RECIPIENTS_MAX));
    }
    check_len("sender", &entry.sender, limits::ADDRESS_BYTES_MAX)?;
    let text = |t: &str| truncate_text(t, limits::TEXT_BYTES_MAX).to_owned();
    let mut out = String::with_capacity(256 + entry.recipients.len() * 96);
    out.push_str(MAGIC_LINE);
    out.push('\n');
    field(&mut out, "id", &entry.id.to_string());
    field(&mut out, "queued-at", &entry.queued_at.to_string());
    field(&mut out, "next-attempt", &entry.next_attempt.to_string());
    field(&mut out, "attempts", &entry.attempts.to_string());
    field(&mut out, "delay-warned", if entry.delay_warned { "1" } else { "0" });
    field(&mut out, "sender", &entry.sender);
    field(&mut out, "ret", if entry.ret == Ret::Full { "full" } else { "hdrs" });
    field(&mut out, "body-8bit", if entry.body.eight_bit { "1" } else { "0" });
    field(&mut out, "body-smtputf8", if entry.body.smtputf8 { "1" } else { "0" });
    field(&mut out, "body-size", &entry.body.size.to_string());
    if let Some(envid) = &entry.envid {
        check_len("ENVID", envid, limits::ENVID_BYTES_MAX)?;
        field(&mut out, "envid", envid);
    }
    if let Some(s) = &entry.submitter {
        check_len("submitter", s, limits::ADDRESS_BYTES_MAX)?;
        field(&mut out, "submitter", s);
    }
    for r in &entry.recipients {
        check_len("recipient", &r.address, limits::ADDRESS_BYTES_MAX)?;
        if r.address.is_empty() {
            return Err("empty recipient address".into());
        }
        field(&mut out, "rcpt", &r.address);
        if let Some(o) = &r.orcpt {
            check_len("ORCPT", o, limits::ORCPT_BYTES_MAX)?;
            field(&mut out, "orcpt", o);
        }
        field(&mut out, "notify", &notify_text(&r.notify));
        match &r.state {
            RecipientState::Pending => field(&mut out, "state", "pending"),
            RecipientState::Delivered { at, reply } => {
                field(&mut out, "state", "delivered");
                field(&mut out, "state-at", &at.to_string());
                field(&mut out, "reply", &text(reply));
            }
            RecipientState::Failed { at, status, diagnostic } => {
                check_len("status", status, limits::STATUS_BYTES_MAX)?;
                field(&mut out, "state", "failed");
                field(&mut out, "state-at", &at.to_string());
                field(&mut out, "status", status);
                field(&mut out, "diagnostic", &text(diagnostic));
            }
        }
        if let Some(e) = &r.last_error {
            field(&mut out, "last-error", &text(e));
        }
    }
    let crc = crc32fast::hash(out.as_bytes());
    let _ = writeln!(out, "crc32 {crc:08x}");
    if out.len() > ENVELOPE_BYTES_MAX {
        return Err(format!("envelope is {} bytes; at most {ENVELOPE_BYTES_MAX}", out.len()));
    }
    Ok(out.into_bytes())
}

/// Why a file is damaged (for the log; the file is set aside).
pub type DecodeError = String;

fn unescape(value: &str) -> Result<String, DecodeError> {
    if !value.contains('%') {
        return Ok(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).ok_or("truncated %XX escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %XX escape")?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escape makes invalid UTF-8".into())
}

/// Reads the lines of a file in order, one expected key at a time.
struct Lines<'a> {
    rest: std::iter::Peekable<std::str::Lines<'a>>,
}

impl<'a> Lines<'a> {
    fn peek_key(&mut self) -> Option<&'a str> {
        self.rest.peek().map(|l| l.split_once(' ').map_or(*l, |(k, _)| k))
    }
    fn take(&mut self, key: &str, max: usize) -> Result<String, DecodeError> {
        let line = self.rest.next().ok_or_else(|| format!("missing {key}"))?;
        let (k, v) = line.split_once(' ').ok_or_else(|| format!("malformed line for {key}"))?;
        if k != key {
            return Err(format!("expected {key}, found {k:?}"));
        }
        // Escapes only grow the text: the encoded length bounds the work.
        if v.len() > max.saturating_mul(3) {
            return Err(format!("{key} over its limit"));
        }
        let v = unescape(v)?;
        if v.len() > max {
            return Err(format!("{key} over its limit"));
        }
        Ok(v)
    }
    fn optional(&mut self, key: &str, max: usize) -> Result<Option<String>, DecodeError> {
        if self.peek_key() == Some(key) {
            self.take(key, max).map(Some)
        } else {
            Ok(None)
        }
    }
    fn number(&mut self, key: &str) -> Result<u64, DecodeError> {
        let v = self.take(key, 20)?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{key} is not a number"));
        }
        v.parse().map_err(|_| format!("{key} out of range"))
    }
    fn flag(&mut self, key: &str) -> Result<bool, DecodeError> {
        match self.take(key, 1)?.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("{key} is not 0 or 1")),
        }
    }
}

fn parse_notify(v: &str) -> Result<Notify, DecodeError> {
    let mut n = Notify { explicit: true, ..Notify::default() };
    match v {
        "default" => return Ok(Notify::default()),
        "never" => n.never = true,
        "" => {}
        list => {
            for part in list.split(',') {
                let slot = match part {
                    "success" => &mut n.success,
                    "failure" => &mut n.failure,
                    "delay" => &mut n.delay,
                    _ => return Err(format!("unknown notify keyword {part:?}")),
                };
                *slot = true;
            }
        }
    }
    Ok(n)
}

/// Decodes an envelope file. Never panics; every limit is checked before
/// anything is kept.
pub fn decode(bytes: &[u8]) -> Result<QueueEntry, DecodeError> {
    if bytes.len() > ENVELOPE_BYTES_MAX {
        return Err("file over the size limit".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    let body = text.strip_suffix('\n').ok_or("no final newline (truncated?)")?;
    let (signed, crc_line) = match body.rfind('\n') {
        Some(p) => (&text[..p + 1], &body[p + 1..]),
        None => return Err("no checksum line".into()),
    };
    let crc_hex = crc_line.strip_prefix("crc32 ").ok_or("last line is not crc32")?;
    let crc = u32::from_str_radix(crc_hex, 16).map_err(|_| "bad crc32 value")?;
    if crc_hex.len() != 8 || crc32fast::hash(signed.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    let mut lines = Lines { rest: signed.lines().peekable() };
    if lines.rest.next() != Some(MAGIC_LINE) {
        return Err("not a version 1 queue envelope".into());
    }
    let id = QueueId::parse_strict(&lines.take("id", 16)?).ok_or("bad id")?;
    let queued_at = lines.number("queued-at")?;
    let next_attempt = lines.number("next-attempt")?;
    let attempts = u32::try_from(lines.number("attempts")?).map_err(|_| "attempts out of range")?;
    let delay_warned = lines.flag("delay-warned")?;
    let sender = lines.take("sender", limits::ADDRESS_BYTES_MAX)?;
    let ret = match lines.take("ret", 4)?.as_str() {
        "hdrs" => Ret::Headers,
        "full" => Ret::Full,
        _ => return Err("bad ret".into()),
    };
    let body = BodyInfo { eight_bit: lines.flag("body-8bit")?, smtputf8: lines.flag("body-smtputf8")?, size: lines.number("body-size")? };
    let envid = lines.optional("envid", limits::ENVID_BYTES_MAX)?;
    let submitter = lines.optional("submitter", limits::ADDRESS_BYTES_MAX)?;
    let mut recipients = Vec::new();
    while lines.peek_key().is_some() {
        if recipients.len() == limits::RECIPIENTS_MAX {
            return Err("too many recipients".into());
        }
        recipients.push(decode_recipient(&mut lines)?);
    }
    Ok(QueueEntry { id, sender, recipients, envid, ret, body, submitter, queued_at, next_attempt, attempts, delay_warned })
}

fn decode_recipient(lines: &mut Lines<'_>) -> Result<QueuedRecipient, DecodeError> {
    let address = lines.take("rcpt", limits::ADDRESS_BYTES_MAX)?;
    if address.is_empty() {
        return Err("empty recipient".into());
    }
    let orcpt = lines.optional("orcpt", limits::ORCPT_BYTES_MAX)?;
    let notify = parse_notify(&lines.take("notify", 32)?)?;
    let state = match lines.take("state", 16)?.as_str() {
        "pending" => RecipientState::Pending,
        "delivered" => {
            let at = lines.number("state-at")?;
            RecipientState::Delivered { at, reply: lines.take("reply", limits::TEXT_BYTES_MAX)? }
        }
        "failed" => {
            let at = lines.number("state-at")?;
            let status = lines.take("status", limits::STATUS_BYTES_MAX)?;
            RecipientState::Failed { at, status, diagnostic: lines.take("diagnostic", limits::TEXT_BYTES_MAX)? }
        }
        other => return Err(format!("unknown state {other:?}")),
    };
    let last_error = lines.optional("last-error", limits::TEXT_BYTES_MAX)?;
    Ok(QueuedRecipient { address, orcpt, notify, state, last_error })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(id: u64) -> QueueEntry {
        QueueEntry {
            id: QueueId(id),
            sender: "alice@example.org".into(),
            recipients: vec![
                QueuedRecipient {
                    address: "bob@remote.example".into(),
                    orcpt: Some("rfc822;bob@remote.example".into()),
                    notify: Notify::default(),
                    state: RecipientState::Pending,
                    last_error: Some("451 4.7.1 Greylisted, try\r\nlater 100%".into()),
                },
                QueuedRecipient {
                    address: "carol@remote.example".into(),
                    orcpt: None,
                    notify: Notify { explicit: true, success: true, delay: true, ..Notify::default() },
                    state: RecipientState::Delivered { at: 5, reply: "250 2.0.0 Ok".into() },
                    last_error: None,
                },
                QueuedRecipient {
                    address: "dan@élan.example".into(),
                    orcpt: None,
                    notify: Notify { explicit: true, never: true, ..Notify::default() },
                    state: RecipientState::Failed { at: 6, status: "5.1.1".into(), diagnostic: "550 5.1.1 unknown".into() },
                    last_error: None,
                },
            ],
            envid: Some("QQ314159".into()),
            ret: Ret::Full,
            body: BodyInfo { eight_bit: true, smtputf8: false, size: 1234 },
            submitter: Some("alice@example.org".into()),
            queued_at: 1_796_310_000,
            next_attempt: 1_796_310_600,
            attempts: 2,
            delay_warned: true,
        }
    }

    #[test]
    fn round_trip_and_readable() {
        let e = sample(0x12_0003);
        let bytes = encode(&e).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("varan-queue 1\nid 0000000000120003\n"), "{text}");
        assert!(text.contains("last-error 451 4.7.1 Greylisted, try%0D%0Alater 100%25\n"), "{text}");
        assert!(text.contains("notify success,delay\n"));
        assert_eq!(decode(&bytes).unwrap(), e);
        let mut null_sender = sample(1);
        null_sender.sender.clear();
        null_sender.envid = None;
        null_sender.submitter = None;
        assert_eq!(decode(&encode(&null_sender).unwrap()).unwrap(), null_sender);
    }

    #[test]
    fn long_remote_texts_are_cut_other_values_refused() {
        let mut e = sample(1);
        e.recipients[0].last_error = Some("x".repeat(5000));
        let got = decode(&encode(&e).unwrap()).unwrap();
        assert_eq!(got.recipients[0].last_error.as_ref().map(String::len), Some(limits::TEXT_BYTES_MAX));
        let mut e = sample(1);
        e.envid = Some("e".repeat(limits::ENVID_BYTES_MAX + 1));
        assert!(encode(&e).is_err());
        let mut e = sample(1);
        e.recipients[0].address = "a".repeat(limits::ADDRESS_BYTES_MAX + 1);
        assert!(encode(&e).is_err());
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&sample(7)).unwrap();
        assert!(decode(&[]).is_err());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncation at {cut} accepted");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
        // A well-signed file with an unknown field is refused too.
        let mut forged = String::from_utf8(bytes).unwrap();
        let at = forged.find("crc32 ").unwrap();
        forged.truncate(at);
        forged.push_str("colour blue\n");
        let crc = crc32fast::hash(forged.as_bytes());
        forged.push_str(&format!("crc32 {crc:08x}\n"));
        assert!(decode(forged.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn prop_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn prop_round_trip_texts(sender in "\\PC{0,60}", err in "\\PC{0,200}", envid in "[ -~]{0,100}") {
            let mut e = sample(3);
            e.sender = sender;
            e.recipients[0].last_error = Some(err);
            e.envid = Some(envid);
            prop_assert_eq!(decode(&encode(&e).unwrap()).unwrap(), e);
        }
    }
}
