//! Trace header fields added to every delivered copy: Return-Path
//! (RFC 5321 §4.4), Delivered-To (loop detection, as Postfix and Dovecot
//! write it) and Received (RFC 5321 §4.4 with RFC 3848 protocol types).
//! Lines end in LF: Maildir files use LF line endings.

use std::net::IpAddr;
use std::time::SystemTime;
use varan_core::EmailAddress;
use varan_protocols::smtp::TlsInfo;

pub struct TraceInfo<'a> {
    pub hostname: &'a str,
    pub helo: Option<&'a str>,
    pub remote: IpAddr,
    /// The client's forward-confirmed reverse name (FCrDNS), if any.
    pub remote_name: Option<&'a str>,
    pub tls: Option<&'a TlsInfo>,
    pub authenticated: bool,
    pub esmtp: bool,
    pub queue_id: &'a str,
    pub sender: Option<&'a EmailAddress>,
    /// The mailbox of a local copy (Delivered-To and `for`); for the
    /// queue's copy, the one relayed recipient if there is only one
    /// (RFC 5321 §4.4: `for` names a single recipient, never a list).
    pub recipient: Option<&'a EmailAddress>,
    pub now: SystemTime,
    /// Header fields of the inbound checks (Authentication-Results,
    /// X-Blacklisted; LF line endings), written above Received.
    pub checks: &'a [u8],
}

/// Keeps peer-supplied text inside a header: printable ASCII without
/// parentheses or backslashes (which would end or escape a comment).
fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() && !"()\\;".contains(*c)).take(max).collect()
}

fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// Return-Path, Delivered-To and Received, for a local copy.
pub fn trace(t: &TraceInfo<'_>) -> Vec<u8> {
    let sender = t.sender.map(|s| s.to_string()).unwrap_or_default();
    let mut out = format!("Return-Path: <{sender}>\n").into_bytes();
    if let Some(r) = t.recipient {
        out.extend_from_slice(format!("Delivered-To: {r}\n").as_bytes());
    }
    out.extend_from_slice(t.checks);
    out.extend_from_slice(&received(t));
    out
}

/// The Received field alone (the queue's copy of a relayed message: the
/// final hop adds Return-Path, RFC 5321 §4.4).
pub fn received(t: &TraceInfo<'_>) -> Vec<u8> {
    let protocol = match (t.esmtp, t.tls.is_some(), t.authenticated) {
        (false, false, _) => "SMTP",
        (false, true, _) => "SMTPS",
        (true, false, false) => "ESMTP",
        (true, false, true) => "ESMTPA",
        (true, true, false) => "ESMTPS",
        (true, true, true) => "ESMTPSA",
    };
    let secs = t.now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let helo = t.helo.map(|h| clean(h, 255)).filter(|h| !h.is_empty()).unwrap_or_else(|| "unknown".into());
    let mut out = String::with_capacity(400);
    // RFC 5321 §4.4 TCP-info: the verified name, then the address.
    match t.remote_name.map(|n| clean(n, 255)).filter(|n| !n.is_empty()) {
        Some(name) => out.push_str(&format!("Received: from {helo} ({name} {})\n", address_literal(t.remote))),
        None => out.push_str(&format!("Received: from {helo} ({})\n", address_literal(t.remote))),
    }
    if let Some(tls) = t.tls {
        out.push_str(&format!("\t(using {} with cipher {})\n", clean(&tls.protocol, 32), clean(&tls.cipher, 64)));
    }
    let date = varan_core::datetime::rfc5322(secs);
    match t.recipient {
        Some(r) => {
            out.push_str(&format!("\tby {} (Varan) with {protocol} id {}\n", t.hostname, t.queue_id));
            out.push_str(&format!("\tfor <{r}>; {date}\n"));
        }
        None => out.push_str(&format!("\tby {} (Varan) with {protocol} id {}; {date}\n", t.hostname, t.queue_id)),
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_fields() {
        let rcpt = EmailAddress::parse("u1@bench.test").unwrap();
        let from = EmailAddress::parse("a@b.example").unwrap();
        let tls = TlsInfo { protocol: "TLSv1.3".into(), cipher: "TLS13_AES_256_GCM_SHA384".into() };
        let text = String::from_utf8(trace(&TraceInfo {
            hostname: "mx.bench.test",
            helo: Some("client (evil)\r\nX-Injected: 1"),
            remote: "127.0.0.2".parse().unwrap(),
            remote_name: None,
            checks: b"",
            tls: Some(&tls),
            authenticated: true,
            esmtp: true,
            queue_id: "1A00",
            sender: Some(&from),
            recipient: Some(&rcpt),
            now: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_446_245),
        }))
        .unwrap();
        assert!(text.starts_with("Return-Path: <a@b.example>\nDelivered-To: u1@bench.test\nReceived: from clientevilX-Injected:1 ([127.0.0.2])\n"), "{text}");
        assert!(text.contains("with ESMTPSA id 1A00\n"));
        assert!(text.ends_with("for <u1@bench.test>; Mon, 23 Nov 2026 15:04:05 +0000\n"));
        assert_eq!(text.matches('\n').count(), 6);
    }

    #[test]
    fn received_alone_for_the_queue() {
        let from = EmailAddress::parse("a@b.example").unwrap();
        let info = |recipient| TraceInfo {
            hostname: "mx.bench.test",
            helo: Some("client"),
            remote: "127.0.0.2".parse().unwrap(),
            remote_name: None,
            checks: b"",
            tls: None,
            authenticated: true,
            esmtp: true,
            queue_id: "0000000000010000",
            sender: Some(&from),
            recipient,
            now: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_446_245),
        };
        let text = String::from_utf8(received(&info(None))).unwrap();
        assert_eq!(text, "Received: from client ([127.0.0.2])\n\tby mx.bench.test (Varan) with ESMTPA id 0000000000010000; Mon, 23 Nov 2026 15:04:05 +0000\n");
        let one = EmailAddress::parse("r@remote.example").unwrap();
        let text = String::from_utf8(received(&info(Some(&one)))).unwrap();
        assert!(text.ends_with("\tfor <r@remote.example>; Mon, 23 Nov 2026 15:04:05 +0000\n"), "{text}");
        assert!(!text.contains("Return-Path") && !text.contains("Delivered-To"));
    }
}
