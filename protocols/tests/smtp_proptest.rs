//! Property tests: no input makes the session panic or break its output
//! rules, and message content survives DATA transparency and BDAT chunking
//! in any split.

mod common;

use common::{config, Driver};
use proptest::prelude::*;
use varan_protocols::smtp::SessionConfig;

fn roomy_config() -> SessionConfig {
    let mut cfg = config();
    cfg.message_size_max = 10_000_000;
    cfg.auth_without_tls = true;
    cfg.errors_max = 1000;
    cfg
}

/// Where the random bytes start: plain, mid-transaction, inside DATA,
/// inside a BDAT chunk, inside an AUTH exchange.
fn prefix(which: u8) -> &'static [u8] {
    match which % 5 {
        0 => b"",
        1 => b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\n",
        2 => b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n",
        3 => b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nBDAT 100\r\n",
        _ => b"EHLO c.test\r\nAUTH LOGIN\r\n",
    }
}

fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop::sample::select(vec![
        "EHLO",
        "HELO",
        "MAIL FROM:",
        "RCPT TO:",
        "DATA",
        "BDAT",
        "RSET",
        "NOOP",
        "QUIT",
        "VRFY",
        "EXPN",
        "HELP",
        "STARTTLS",
        "AUTH PLAIN",
        "AUTH LOGIN",
        "mail from:<",
        "rcpt to:<@",
        "BDAT 3 LAST",
        ".",
        "",
    ]);
    let arg = prop::collection::vec(
        prop_oneof![
            Just(b'<'),
            Just(b'>'),
            Just(b'@'),
            Just(b'"'),
            Just(b'\\'),
            Just(b' '),
            Just(b'='),
            Just(b'.'),
            Just(b':'),
            Just(b','),
            Just(b'['),
            Just(b']'),
            Just(b'+'),
            Just(b'\r'),
            Just(0u8),
            Just(0xd0u8),
            b'a'..=b'z',
            b'0'..=b'9',
        ],
        0..40,
    );
    let end = prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r", b""]);
    (verb, arg, end).prop_map(|(v, a, e)| [v.as_bytes(), &a, e].concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(which in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..1500),
                                splits in prop::collection::vec(1usize..40, 0..8)) {
        let mut driver = Driver::new(roomy_config(), None);
        driver.send_split(prefix(which), &[]);
        driver.send_split(&bytes, &splits);
        // finish() checks every reply line is CRLF-terminated and ≤ 512 octets.
        driver.finish();
    }

    #[test]
    fn random_command_lines_never_panic(lines in prop::collection::vec(command_line(), 0..40),
                                        splits in prop::collection::vec(1usize..20, 0..8)) {
        let mut driver = Driver::new(roomy_config(), None);
        driver.send_split(b"EHLO c.test\r\n", &[]);
        driver.send_split(&lines.concat(), &splits);
        driver.finish();
    }

    #[test]
    fn dot_stuffing_round_trips(lines in prop::collection::vec(prop::collection::vec(
                                    prop_oneof![Just(b'.'), any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n')], 0..60), 0..30),
                                splits in prop::collection::vec(1usize..50, 0..8)) {
        let mut wire = b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n".to_vec();
        let mut expected = Vec::new();
        for line in &lines {
            // RFC 5321 §4.5.2: the client doubles a leading dot.
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
            expected.extend_from_slice(line);
            expected.push(b'\n');
        }
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        let mut driver = Driver::new(roomy_config(), None);
        driver.send_split(&wire, &splits);
        let o = driver.finish();
        prop_assert_eq!(o.messages.len(), 1, "{}", o.output);
        prop_assert_eq!(&o.messages[0].content, &expected);
        prop_assert_eq!(o.messages[0].sizes, (expected.len() as u64, (expected.len() + lines.len()) as u64));
    }

    #[test]
    fn bdat_round_trips(lines in prop::collection::vec(prop::collection::vec(
                            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..60), 0..30),
                        chunks in prop::collection::vec(1usize..64, 1..8),
                        splits in prop::collection::vec(1usize..50, 0..8)) {
        let body: Vec<u8> = lines.iter().flat_map(|l| [l.as_slice(), b"\r\n"].concat()).collect();
        let expected: Vec<u8> = lines.iter().flat_map(|l| [l.as_slice(), b"\n"].concat()).collect();
        let mut wire = b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n".to_vec();
        let mut pos = 0;
        let mut i = 0;
        loop {
            let n = chunks[i % chunks.len()].min(body.len() - pos);
            i += 1;
            let last = pos + n == body.len();
            wire.extend_from_slice(format!("BDAT {n}{}\r\n", if last { " LAST" } else { "" }).as_bytes());
            wire.extend_from_slice(&body[pos..pos + n]);
            pos += n;
            if last {
                break;
            }
        }
        let mut driver = Driver::new(roomy_config(), None);
        driver.send_split(&wire, &splits);
        let o = driver.finish();
        prop_assert_eq!(o.messages.len(), 1, "{}", o.output);
        prop_assert_eq!(&o.messages[0].content, &expected);
    }
}
