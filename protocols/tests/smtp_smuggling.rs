//! SMTP smuggling probes (RFC 5321 §2.3.8, §4.1.1.4): only `<CRLF>.<CRLF>`
//! ends DATA. Each probe hides a second transaction behind a fake end
//! marker; it must stay content of the first message, in every feeding
//! pattern and in both bare-newline modes.

mod common;

use common::{config, Driver, FEEDS};
use varan_core::config::BareNewlines;

const PROBES: [(&str, &[u8]); 8] = [
    ("<LF>.<LF>", b"\n.\n"),
    ("<LF>.<CRLF>", b"\n.\r\n"),
    ("<CR>.<CR>", b"\r.\r"),
    ("<CRLF>.<LF>", b"\r\n.\n"),
    ("<CR>.<CRLF>", b"\r.\r\n"),
    ("<CRLF>.<CR>", b"\r\n.\r"),
    ("<CR><CRLF>.<CR><CR><LF>", b"\r\r\n.\r\r\n"),
    ("<LF><LF>.<LF><LF>", b"\n\n.\n\n"),
];

const INJECTED: &[u8] = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\nsmuggled\r\n";

fn session_bytes(probe: &[u8]) -> Vec<u8> {
    let mut input = b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\nSubject: t\r\n\r\nbody".to_vec();
    input.extend_from_slice(probe);
    input.extend_from_slice(INJECTED);
    input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    input
}

#[test]
fn fake_end_markers_stay_content_when_normalizing() {
    for (name, probe) in PROBES {
        for feed in FEEDS {
            let mut driver = Driver::new(config(), None);
            driver.send(&session_bytes(probe), feed);
            let o = driver.finish();
            assert_eq!(o.messages.len(), 1, "{name} {feed:?}: {}", o.output);
            assert_eq!(o.actions.iter().filter(|a| *a == "MessageComplete").count(), 1, "{name} {feed:?}");
            assert!(!o.actions.iter().any(|a| a.contains("victim")), "{name} {feed:?}: injected RCPT was processed");
            let content = &o.messages[0].content;
            let needle = b"MAIL FROM:<evil@attacker.test>\nRCPT TO:<victim@mx.test>\nDATA\nsmuggled\n";
            assert!(content.windows(needle.len()).any(|w| w == needle), "{name} {feed:?}: {:?}", String::from_utf8_lossy(content));
            assert_eq!(o.output.matches("queued as").count(), 1, "{name} {feed:?}");
            assert!(o.output.ends_with("221 2.0.0 mx.test closing connection\r\n"), "{name} {feed:?}: {}", o.output);
        }
    }
}

#[test]
fn fake_end_markers_are_refused_in_reject_mode() {
    let mut cfg = config();
    cfg.bare_newlines = BareNewlines::Reject;
    for (name, probe) in PROBES {
        for feed in FEEDS {
            let mut driver = Driver::new(cfg.clone(), None);
            driver.send(&session_bytes(probe), feed);
            let o = driver.finish();
            assert!(o.messages.is_empty(), "{name} {feed:?}");
            assert!(!o.actions.iter().any(|a| a.contains("victim")), "{name} {feed:?}");
            assert!(o.output.contains("550 5.5.2 Bare CR or LF not allowed"), "{name} {feed:?}: {}", o.output);
            assert!(o.output.ends_with("221 2.0.0 mx.test closing connection\r\n"), "{name} {feed:?}: {}", o.output);
        }
    }
}

#[test]
fn end_marker_inside_bdat_is_content() {
    let chunk = b"a\r\n.\r\nMAIL FROM:<evil@attacker.test>\r\n";
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<bob@mx.test>\r\n".to_vec();
    input.extend_from_slice(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    input.extend_from_slice(chunk);
    for feed in FEEDS {
        let mut driver = Driver::new(config(), None);
        driver.send(&input, feed);
        let o = driver.finish();
        assert_eq!(o.messages.len(), 1);
        assert_eq!(o.messages[0].content, b"a\n.\nMAIL FROM:<evil@attacker.test>\n");
    }
}

#[test]
fn bare_cr_in_data_is_a_line_break_not_a_terminator() {
    let input = b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\na\rb\r\r\n.\r\n";
    for feed in FEEDS {
        let mut driver = Driver::new(config(), None);
        driver.send(input, feed);
        let o = driver.finish();
        assert_eq!(o.messages.len(), 1);
        assert_eq!(o.messages[0].content, b"a\nb\n\n");
    }
}
