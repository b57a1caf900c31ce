//! Delivery status notifications (RFC 3464, RFC 3461 §6): builds the
//! `multipart/report; report-type=delivery-status` message a queue runner
//! sends back to the sender. Sans-IO: the caller passes the clock, the
//! host name, the original content and what happened to each recipient;
//! the result is the message text with LF line endings (as the queue
//! stores content).
//!
//! Rules applied here:
//! - never a DSN to the null reverse path (RFC 5321 §6.1, RFC 3461 §6.2):
//!   [`build`] returns `None`;
//! - each recipient's `NOTIFY` decides whether it appears (RFC 3461 §4.1);
//!   `None` when nobody is left;
//! - `RET=HDRS` (and delay/success reports) carry the headers as
//!   `text/rfc822-headers`, `RET=FULL` failures the message as
//!   `message/rfc822` (RFC 3461 §4.3) unless it is larger than
//!   [`RETURN_FULL_BYTES_MAX`], then the headers only;
//! - `From: MAILER-DAEMON@host`, `Auto-Submitted: auto-replied` (RFC 3834
//!   §5), so auto-responders stay quiet.
//!
//! Limits: every text taken from outside (addresses, remote replies) has
//! CR, LF and other controls replaced and is cut to [`FIELD_BYTES_MAX`],
//! so a remote server's reply cannot add header fields.
//!
//! Internationalized reports (RFC 6533): when the original transaction
//! used SMTPUTF8 or an address in the report is not ASCII, the status part
//! is `message/global-delivery-status` with addresses of type `utf-8`
//! (ASCII ones stay `rfc822`), and the original comes back as
//! `message/global` or `message/global-headers`; such a report itself
//! needs SMTPUTF8 ([`is_global`]). `report-type` stays `delivery-status`.

use std::fmt::Write as _;

use varan_core::datetime::rfc5322;
use varan_core::queue::{Notify, Ret};

/// A failed message larger than this is returned as headers only, so a
/// bounce of a 30 MB attachment does not send 30 MB back (RFC 3461 §4.3
/// lets the MTA return less than asked).
pub const RETURN_FULL_BYTES_MAX: usize = 10 << 20;
/// Longest address, diagnostic or remote-MTA text put into a field.
pub const FIELD_BYTES_MAX: usize = 900;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
    /// Handed to a server without DSN support although NOTIFY=SUCCESS was
    /// asked (RFC 3464 §2.3.3).
    Relayed,
    Delivered,
}

impl DsnAction {
    fn name(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Relayed => "relayed",
            DsnAction::Delivered => "delivered",
        }
    }

    /// Whether a recipient with `notify` wants this report.
    pub fn wanted_by(self, notify: &Notify) -> bool {
        match self {
            DsnAction::Failed => notify.on_failure(),
            DsnAction::Delayed => notify.on_delay(),
            DsnAction::Relayed | DsnAction::Delivered => notify.on_success(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DsnRecipient {
    /// ORCPT as stored, `rfc822;user@example.com`.
    pub original: Option<String>,
    /// The address we tried.
    pub address: String,
    pub notify: Notify,
    pub action: DsnAction,
    /// RFC 3463 status, `5.1.1`.
    pub status: String,
    /// The host we talked to (`dns;mx.example.com`'s name part).
    pub remote_mta: Option<String>,
    /// The remote reply (`550 5.1.1 ...`) or our own explanation; a text
    /// starting with a 3-digit code is reported as `smtp;`, anything else
    /// as `X-Varan;`.
    pub diagnostic: Option<String>,
    pub last_attempt: u64,
    /// For delays: when we give up (Will-Retry-Until).
    pub retry_until: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// Our host name: Reporting-MTA and MAILER-DAEMON's domain.
    pub reporting_mta: &'a str,
    /// The original sender, who gets the report. Empty: no report.
    pub sender: &'a str,
    pub envid: Option<&'a str>,
    pub ret: Ret,
    pub arrival: u64,
    pub now: u64,
    /// Unique per report (queue id and attempt): Message-ID and boundary.
    pub token: &'a str,
    pub recipients: &'a [DsnRecipient],
    /// The original message, LF line endings.
    pub original: &'a [u8],
    /// The original transaction used SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// Whether the report for `input` is an internationalized one (RFC 6533),
/// which must be sent with SMTPUTF8.
pub fn is_global(input: &DsnInput<'_>) -> bool {
    input.smtputf8 || !input.sender.is_ascii() || input.recipients.iter().any(|r| !r.address.is_ascii() || r.original.as_deref().is_some_and(|o| !o.is_ascii()))
}

/// An address field value: `rfc822; a@b` or, in a global report for a
/// non-ASCII address, `utf-8; …` (RFC 6533 §3).
fn typed_address(address: &str, global: bool) -> String {
    let kind = if global && !address.is_ascii() { "utf-8" } else { "rfc822" };
    format!("{kind}; {}", clean(address))
}

/// The report, or `None` when none is due (null sender, nobody asked).
pub fn build(input: &DsnInput<'_>) -> Option<Vec<u8>> {
    if input.sender.is_empty() {
        return None;
    }
    let wanted: Vec<&DsnRecipient> = input.recipients.iter().filter(|r| r.action.wanted_by(&r.notify)).collect();
    let first = wanted.first()?;
    let kind = first.action;
    let global = is_global(input);
    let host = clean(input.reporting_mta);
    let headers_only = kind != DsnAction::Failed || input.ret == Ret::Headers || input.original.len() > RETURN_FULL_BYTES_MAX;
    let returned: &[u8] = if headers_only { header_block(input.original) } else { input.original };
    let mut boundary = format!("=_varan_{}", clean(input.token));
    while memchr::memmem::find(returned, boundary.as_bytes()).is_some() {
        boundary.push('_');
    }

    let subject = match kind {
        DsnAction::Failed => "Undelivered Mail Returned to Sender",
        DsnAction::Delayed => "Delayed Mail (still being retried)",
        DsnAction::Relayed | DsnAction::Delivered => "Successful Mail Delivery Report",
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\nTo: <{to}>\nSubject: {subject}\nDate: {date}\nMessage-ID: <{token}.dsn@{host}>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n\nThis is a MIME-encapsulated message.\n\n",
        to = clean(input.sender),
        date = rfc5322(secs(input.now)),
        token = clean(input.token),
    );

    // Part 1: for people.
    let _ = write!(out, "--{boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
    out.push_str(&human_text(kind, &host, &wanted));

    // Part 2: for programs (RFC 3464 §2.2, §2.3).
    let status_type = if global { "message/global-delivery-status" } else { "message/delivery-status" };
    let _ = write!(out, "\n--{boundary}\nContent-Type: {status_type}\n\nReporting-MTA: dns; {host}\n");
    if let Some(envid) = input.envid {
        let _ = writeln!(out, "Original-Envelope-Id: {}", clean(envid));
    }
    let _ = writeln!(out, "Arrival-Date: {}", rfc5322(secs(input.arrival)));
    for r in &wanted {
        out.push('\n');
        if let Some(orcpt) = &r.original {
            let _ = writeln!(out, "Original-Recipient: {}", original_recipient(orcpt, global));
        }
        let _ = writeln!(out, "Final-Recipient: {}", typed_address(&r.address, global));
        let _ = writeln!(out, "Action: {}", r.action.name());
        let _ = writeln!(out, "Status: {}", status_or_default(&r.status, r.action));
        if let Some(mta) = &r.remote_mta {
            let _ = writeln!(out, "Remote-MTA: dns; {}", clean(mta));
        }
        if let Some(d) = &r.diagnostic {
            let kind = if is_smtp_reply(d) { "smtp" } else { "X-Varan" };
            let _ = writeln!(out, "Diagnostic-Code: {kind}; {}", clean(d));
        }
        let _ = writeln!(out, "Last-Attempt-Date: {}", rfc5322(secs(r.last_attempt)));
        if let (DsnAction::Delayed, Some(until)) = (r.action, r.retry_until) {
            let _ = writeln!(out, "Will-Retry-Until: {}", rfc5322(secs(until)));
        }
    }

    // Part 3: the original (RFC 3462 §2 / RFC 3461 §4.3).
    let ctype = match (global, headers_only) {
        (false, true) => "text/rfc822-headers",
        (false, false) => "message/rfc822",
        (true, true) => "message/global-headers",
        (true, false) => "message/global",
    };
    let _ = write!(out, "\n--{boundary}\nContent-Type: {ctype}\nContent-Transfer-Encoding: 8bit\n\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(returned);
    if !returned.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    Some(bytes)
}

/// ORCPT as stored (`type;address`, RFC 3461 §4.2), as a field value; a
/// non-ASCII `rfc822` address becomes `utf-8` in a global report.
fn original_recipient(orcpt: &str, global: bool) -> String {
    if !global {
        return clean(orcpt);
    }
    match orcpt.split_once(';') {
        Some((kind, address)) if kind.trim().eq_ignore_ascii_case("rfc822") => typed_address(address.trim(), global),
        Some((kind, address)) => format!("{}; {}", clean(kind.trim()), clean(address.trim())),
        None => typed_address(orcpt.trim(), global),
    }
}

fn human_text(kind: DsnAction, host: &str, rcpts: &[&DsnRecipient]) -> String {
    let mut t = match kind {
        DsnAction::Failed => format!("This is the mail system at {host}.\n\nYour message could not be delivered to one or more recipients.\nIt is attached below.\n\n"),
        DsnAction::Delayed => format!(
            "This is the mail system at {host}.\n\nYour message has not been delivered yet to the recipients below.\nThe mail system will keep trying; you do not need to resend it.\n\n"
        ),
        _ => format!("This is the mail system at {host}.\n\nYour message was delivered or relayed to the recipients below.\n\n"),
    };
    for r in rcpts {
        let _ = write!(t, "<{}>", clean(&r.address));
        if let Some(d) = &r.diagnostic {
            let _ = write!(t, ": {}", clean(d));
        }
        t.push('\n');
    }
    t
}

fn status_or_default(status: &str, action: DsnAction) -> String {
    let ok = {
        let parts: Vec<&str> = status.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if ok {
        return status.to_owned();
    }
    match action {
        DsnAction::Failed => "5.0.0",
        DsnAction::Delayed => "4.0.0",
        _ => "2.0.0",
    }
    .to_owned()
}

fn is_smtp_reply(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[0], b'2'..=b'5') && b.get(3).is_none_or(|&c| c == b' ')
}

/// The header section of a message: up to and including the first empty
/// line (or all of it if there is none).
fn header_block(msg: &[u8]) -> &[u8] {
    if msg.starts_with(b"\n") {
        return &[];
    }
    match memchr::memmem::find(msg, b"\n\n") {
        Some(i) => &msg[..i + 1],
        None => msg,
    }
}

/// Controls replaced by spaces, cut to [`FIELD_BYTES_MAX`].
fn clean(text: &str) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > FIELD_BYTES_MAX {
        let mut cut = FIELD_BYTES_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    const ORIGINAL: &[u8] = b"From: a@here.example\nTo: b@there.example\nSubject: hi\n\nbody line\n";

    fn rcpt(action: DsnAction, notify: Notify) -> DsnRecipient {
        DsnRecipient {
            original: Some("rfc822;B@there.example".into()),
            address: "b@there.example".into(),
            notify,
            action,
            status: "5.1.1".into(),
            remote_mta: Some("mx.there.example".into()),
            diagnostic: Some("550 5.1.1 <b@there.example>: no such user\r\nInjected: yes".into()),
            last_attempt: 1_795_446_245,
            retry_until: Some(1_795_446_245 + 86_400),
        }
    }

    fn input<'a>(rcpts: &'a [DsnRecipient], ret: Ret) -> DsnInput<'a> {
        DsnInput {
            reporting_mta: "mx.here.example",
            sender: "a@here.example",
            envid: Some("ENV-1"),
            ret,
            arrival: 1_795_440_000,
            now: 1_795_446_245,
            token: "00000000000000ab.1",
            recipients: rcpts,
            original: ORIGINAL,
            smtputf8: false,
        }
    }

    #[test]
    fn failure_report_parses_and_has_the_fields() {
        let rcpts = [rcpt(DsnAction::Failed, Notify::default())];
        let dsn = build(&input(&rcpts, Ret::Headers)).unwrap();
        let msg = MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(msg.from().unwrap().first().unwrap().address().unwrap(), "MAILER-DAEMON@mx.here.example");
        assert_eq!(msg.to().unwrap().first().unwrap().address().unwrap(), "a@here.example");
        assert_eq!(msg.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"));
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(msg.parts.len(), 4, "root + three parts");
        let status = msg.parts[2].contents();
        let status = std::str::from_utf8(status).unwrap();
        assert_eq!(msg.parts[2].content_type().unwrap().subtype(), Some("delivery-status"));
        for field in [
            "Reporting-MTA: dns; mx.here.example",
            "Original-Envelope-Id: ENV-1",
            "Arrival-Date: ",
            "Original-Recipient: rfc822;B@there.example",
            "Final-Recipient: rfc822; b@there.example",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.there.example",
            "Diagnostic-Code: smtp; 550 5.1.1 <b@there.example>: no such user  Injected: yes",
            "Last-Attempt-Date: Mon, 23 Nov 2026 15:04:05 +0000",
        ] {
            assert!(status.contains(field), "missing {field:?} in\n{status}");
        }
        assert!(!status.contains("Will-Retry-Until"));
        assert!(!status.contains("\nInjected"));
        assert_eq!(msg.parts[3].content_type().unwrap().ctype(), "text");
        assert_eq!(msg.parts[3].content_type().unwrap().subtype(), Some("rfc822-headers"));
        let returned = std::str::from_utf8(msg.parts[3].contents()).unwrap();
        assert!(returned.contains("Subject: hi") && !returned.contains("body line"));
    }

    #[test]
    fn ret_full_returns_the_message() {
        let rcpts = [rcpt(DsnAction::Failed, Notify::default())];
        let dsn = build(&input(&rcpts, Ret::Full)).unwrap();
        let msg = MessageParser::default().parse(&dsn).unwrap();
        let inner = msg.parts[3].message().expect("message/rfc822");
        assert_eq!(inner.subject(), Some("hi"));
        assert!(inner.body_text(0).unwrap().contains("body line"));
    }

    #[test]
    fn delay_report_has_will_retry_until_and_headers_only() {
        let rcpts = [rcpt(DsnAction::Delayed, Notify::default())];
        let dsn = build(&input(&rcpts, Ret::Full)).unwrap();
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Action: delayed"));
        assert!(text.contains("Will-Retry-Until: Tue, 24 Nov 2026"));
        assert!(text.contains("text/rfc822-headers"));
        assert!(text.contains("Subject: Delayed Mail"));
    }

    #[test]
    fn notify_and_null_sender() {
        let never = Notify { never: true, explicit: true, ..Notify::default() };
        let failure_only = Notify { failure: true, explicit: true, ..Notify::default() };
        let success = Notify { success: true, explicit: true, ..Notify::default() };
        assert!(build(&input(&[rcpt(DsnAction::Failed, never)], Ret::Headers)).is_none());
        assert!(build(&input(&[rcpt(DsnAction::Delayed, failure_only)], Ret::Headers)).is_none());
        assert!(build(&input(&[rcpt(DsnAction::Relayed, Notify::default())], Ret::Headers)).is_none());
        let relayed = build(&input(&[rcpt(DsnAction::Relayed, success)], Ret::Headers)).unwrap();
        assert!(String::from_utf8(relayed).unwrap().contains("Action: relayed"));
        let rcpts = [rcpt(DsnAction::Failed, Notify::default())];
        let mut i = input(&rcpts, Ret::Headers);
        i.sender = "";
        assert!(build(&i).is_none());
        // Only the recipients who asked are listed.
        let mut quiet = rcpt(DsnAction::Failed, never);
        quiet.address = "quiet@there.example".into();
        let both = [rcpt(DsnAction::Failed, Notify::default()), quiet];
        let text = String::from_utf8(build(&input(&both, Ret::Headers)).unwrap()).unwrap();
        assert!(!text.contains("quiet@"));
    }

    #[test]
    fn local_diagnostic_and_bad_status() {
        let mut r = rcpt(DsnAction::Failed, Notify::default());
        r.diagnostic = Some("message expired after 5 days in the queue".into());
        r.status = "garbage".into();
        let text = String::from_utf8(build(&input(&[r], Ret::Headers)).unwrap()).unwrap();
        assert!(text.contains("Diagnostic-Code: X-Varan; message expired"));
        assert!(text.contains("Status: 5.0.0"));
    }

    #[test]
    fn boundary_not_in_returned_content() {
        let rcpts = [rcpt(DsnAction::Failed, Notify::default())];
        let original = b"Subject: x\n\n--=_varan_00000000000000ab.1\nnot a boundary\n";
        let mut i = input(&rcpts, Ret::Full);
        i.original = original;
        let dsn = build(&i).unwrap();
        let msg = MessageParser::default().parse(&dsn).unwrap();
        let inner = msg.parts[3].message().expect("message/rfc822 part intact");
        assert!(inner.body_text(0).unwrap().contains("not a boundary"));
        let status = std::str::from_utf8(msg.parts[2].contents()).unwrap();
        assert!(status.contains("Action: failed"));
    }

    #[test]
    fn internationalized_report_uses_the_global_types() {
        let mut r = rcpt(DsnAction::Failed, Notify::default());
        r.address = "пользователь@пример.рф".into();
        r.original = Some("rfc822;пользователь@пример.рф".into());
        let original = "From: a@here.example\nTo: пользователь@пример.рф\nSubject: привет\n\nтело\n".as_bytes();
        let rcpts = [r];
        let mut inp = input(&rcpts, Ret::Full);
        inp.original = original;
        assert!(is_global(&inp));
        let text = String::from_utf8(build(&inp).unwrap()).unwrap();
        assert!(text.contains("report-type=delivery-status"), "{text}");
        assert!(text.contains("Content-Type: message/global-delivery-status\n"), "{text}");
        assert!(text.contains("Final-Recipient: utf-8; пользователь@пример.рф\n"), "{text}");
        assert!(text.contains("Original-Recipient: utf-8; пользователь@пример.рф\n"), "{text}");
        assert!(text.contains("Content-Type: message/global\n"), "{text}");
        assert!(text.contains("Subject: привет"), "{text}");
        // Headers only: message/global-headers. An SMTPUTF8 original with ASCII
        // addresses is global too, its addresses stay rfc822.
        let ascii = [rcpt(DsnAction::Failed, Notify::default())];
        let mut inp = input(&ascii, Ret::Headers);
        inp.smtputf8 = true;
        let text = String::from_utf8(build(&inp).unwrap()).unwrap();
        assert!(text.contains("Content-Type: message/global-headers\n"), "{text}");
        assert!(text.contains("Final-Recipient: rfc822; b@there.example\n"), "{text}");
        // Not internationalized: the RFC 3464 types.
        let plain = input(&ascii, Ret::Headers);
        assert!(!is_global(&plain));
        let text = String::from_utf8(build(&plain).unwrap()).unwrap();
        assert!(text.contains("Content-Type: message/delivery-status\n") && text.contains("text/rfc822-headers"), "{text}");
    }
}
