//! Fixture messages built inline, with expected ENVELOPE / BODYSTRUCTURE
//! strings worked out by hand against RFC 9051 §7.5.2 (and Dovecot's style:
//! lower-case types, `"7bit"`, `("charset" "us-ascii")` for bare text),
//! sections, BINARY, SEARCH, SORT and THREAD, hostile inputs, and property
//! tests that nothing panics.

use std::time::{Duration, Instant};

use base64::Engine;
use proptest::prelude::*;

use super::*;

fn s(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn sec(part: &[u32], kind: SectionKind) -> Section {
    Section { part: part.to_vec(), kind }
}

fn get(msg: &[u8], part: &[u32], kind: SectionKind) -> String {
    s(&section(msg, &sec(part, kind)))
}

/// An IMAP literal as `write_string` renders 8-bit values.
fn lit(v: &str) -> String {
    format!("{{{}}}\r\n{v}", v.len())
}

const PLAIN: &[u8] = b"From: Ivan <ivan@example.ru>\r\n\
To: petr@example.ru\r\n\
Subject: Hello\r\n\
Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n\
Message-ID: <m1@example.ru>\r\n\
\r\n\
Line one\r\n\
Line two\r\n";

#[test]
fn plain_text() {
    let sum = summarize(PLAIN);
    // Body: "Line one\r\nLine two\r\n" = 20 octets, 2 lines; no Content-Type: text/plain; charset=us-ascii (RFC 2045 §5.2).
    assert_eq!(s(&sum.bodystructure), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2 NIL NIL NIL NIL)"#);
    assert_eq!(s(&sum.body), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2)"#);
    // Sender and Reply-To absent: both are From (RFC 9051 §7.5.2).
    assert_eq!(
        s(&sum.envelope),
        r#"("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "Hello" (("Ivan" NIL "ivan" "example.ru")) (("Ivan" NIL "ivan" "example.ru")) (("Ivan" NIL "ivan" "example.ru")) ((NIL NIL "petr" "example.ru")) NIL NIL NIL "<m1@example.ru>")"#
    );
    assert_eq!(sum.header_len, PLAIN.len() - 20);
    assert!(sum.approx_heap_size() >= sum.envelope.len() + sum.bodystructure.len());

    // Part 1 of a non-multipart message is its body (RFC 9051 §6.4.5); its MIME header is the message header.
    assert_eq!(get(PLAIN, &[1], SectionKind::Full), "Line one\r\nLine two\r\n");
    assert_eq!(get(PLAIN, &[], SectionKind::Text), "Line one\r\nLine two\r\n");
    assert_eq!(get(PLAIN, &[], SectionKind::Header), s(&PLAIN[..sum.header_len]));
    assert_eq!(get(PLAIN, &[1], SectionKind::Mime), s(&PLAIN[..sum.header_len]));
    assert_eq!(get(PLAIN, &[], SectionKind::Full), s(PLAIN));
    assert_eq!(get(PLAIN, &[2], SectionKind::Full), "");
    assert_eq!(get(PLAIN, &[1, 1], SectionKind::Full), "");
    assert_eq!(get(PLAIN, &[0], SectionKind::Full), "");
    assert_eq!(get(PLAIN, &[], SectionKind::Mime), "");
    assert_eq!(get(PLAIN, &[1], SectionKind::Header), "");
    // HEADER.FIELDS: matching case-insensitively, original order and text, then the blank line.
    assert_eq!(get(PLAIN, &[], SectionKind::HeaderFields(vec!["SUBJECT".into(), "from".into(), "X-Absent".into()])), "From: Ivan <ivan@example.ru>\r\nSubject: Hello\r\n\r\n");
    assert_eq!(get(PLAIN, &[], SectionKind::HeaderFields(vec!["X-Absent".into()])), "\r\n");
    assert_eq!(get(PLAIN, &[], SectionKind::HeaderFieldsNot(vec!["date".into(), "Message-Id".into(), "to".into()])), "From: Ivan <ivan@example.ru>\r\nSubject: Hello\r\n\r\n");

    assert_eq!(binary(PLAIN, &[1]).unwrap(), &b"Line one\r\nLine two\r\n"[..]);
    assert_eq!(binary(PLAIN, &[]).unwrap(), PLAIN);
    assert_eq!(binary(PLAIN, &[2]), Err(BinaryError::NoSuchPart));

    // 1994-02-07 is day 8803; 21:52:25 -0800 is 05:52:25 UTC the next day.
    assert_eq!(sent_date(PLAIN), Some(SentDate { utc: 8803 * 86_400 + 21 * 3600 + 52 * 60 + 25 + 8 * 3600, day: 8803 }));
    assert_eq!(sum.sort.sent_date, sent_date(PLAIN));
    assert_eq!(sum.thread.sent_date, sent_date(PLAIN).map(|d| d.utc));
    assert_eq!(sum.thread.message_id.as_deref(), Some("m1@example.ru"));
    assert_eq!((sum.sort.from.as_str(), sum.sort.to.as_str(), sum.sort.cc.as_str()), ("ivan", "petr", ""));
    assert_eq!((sum.sort.display_from.as_str(), sum.sort.display_to.as_str()), ("ivan", "petr@example.ru"));
    assert_eq!(sum.sort.subject, "hello");
}

#[test]
fn folded_header_fields() {
    let msg = b"Subject: a\r\n b\r\nFrom: x@y\r\nsubject: second\r\n\r\nbody";
    assert_eq!(get(msg, &[], SectionKind::HeaderFields(vec!["Subject".into()])), "Subject: a\r\n b\r\nsubject: second\r\n\r\n");
    assert_eq!(get(msg, &[], SectionKind::HeaderFieldsNot(vec!["subject".into()])), "From: x@y\r\n\r\n");
    // The first occurrence feeds ENVELOPE; folding is removed, white space kept.
    assert!(s(&summarize(msg).envelope).starts_with("(NIL \"a b\" "));
    assert!(header_contains(msg, "subject", "SECOND"));
    assert!(header_contains(msg, "SUBJECT", "a b"));
}

const ALTERNATIVE: &[u8] = b"From: a@b.c\r\n\
Subject: alt\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Caf=C3=A9 ok\r\n\
--XX\r\n\
Content-Type: text/html; charset=UTF-8\r\n\
\r\n\
<p>Hello <b>W</b>orld</p>\r\n\
--XX--\r\n\
epilogue\r\n";

#[test]
fn multipart_alternative() {
    let sum = summarize(ALTERNATIVE);
    // Each part's body stops before the CRLF that precedes the next delimiter (RFC 2046 §5.1.1):
    // "Caf=C3=A9 ok" is 12 octets, "<p>Hello <b>W</b>orld</p>" 25, one line each.
    assert_eq!(
        s(&sum.bodystructure),
        r#"(("text" "plain" ("charset" "UTF-8") NIL NIL "quoted-printable" 12 1 NIL NIL NIL NIL)("text" "html" ("charset" "UTF-8") NIL NIL "7bit" 25 1 NIL NIL NIL NIL) "alternative" ("boundary" "XX") NIL NIL NIL)"#
    );
    assert_eq!(s(&sum.body), r#"(("text" "plain" ("charset" "UTF-8") NIL NIL "quoted-printable" 12 1)("text" "html" ("charset" "UTF-8") NIL NIL "7bit" 25 1) "alternative")"#);
    assert_eq!(get(ALTERNATIVE, &[1], SectionKind::Full), "Caf=C3=A9 ok");
    assert_eq!(get(ALTERNATIVE, &[1], SectionKind::Mime), "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    assert_eq!(get(ALTERNATIVE, &[2], SectionKind::Full), "<p>Hello <b>W</b>orld</p>");
    assert_eq!(get(ALTERNATIVE, &[3], SectionKind::Full), "");
    assert!(get(ALTERNATIVE, &[], SectionKind::Text).starts_with("preamble\r\n--XX\r\n"));
    assert_eq!(binary(ALTERNATIVE, &[1]).unwrap(), "Café ok".as_bytes());
    assert_eq!(binary(ALTERNATIVE, &[2]).unwrap(), &b"<p>Hello <b>W</b>orld</p>"[..]);
    assert_eq!(binary(ALTERNATIVE, &[1, 1]), Err(BinaryError::NoSuchPart));
    assert!(body_contains(ALTERNATIVE, "CAFÉ"));
    assert!(body_contains(ALTERNATIVE, "hello world"), "HTML is searched as text");
    assert!(!body_contains(ALTERNATIVE, "<b>"), "not as markup");
    assert!(!body_contains(ALTERNATIVE, "preamble"));
    assert!(!body_contains(ALTERNATIVE, "alt"), "BODY does not search the header");
    assert!(text_contains(ALTERNATIVE, "ALT"));
    assert!(text_contains(ALTERNATIVE, "café"));
}

/// "Привет" in KOI8-R.
const KOI8_PRIVET: &[u8] = b"\xf0\xd2\xc9\xd7\xc5\xd4";

fn mixed() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice("From: \"Петров, Пётр\" <petr@example.ru>\r\n".as_bytes());
    m.extend_from_slice(b"To: =?KOI8-R?B?8NLJ18XU?= <x@example.ru>\r\n");
    m.extend_from_slice(b"Cc: undisclosed-recipients:;\r\n");
    m.extend_from_slice(b"Subject: =?windows-1251?B?zvL3uPI=?=\r\n");
    m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n");
    m.extend_from_slice(b"--=_b1\r\nContent-Type: text/plain; charset=\"koi8-r\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend_from_slice(KOI8_PRIVET);
    m.extend_from_slice(b"\r\n--=_b1\r\n");
    m.extend_from_slice(b"Content-Type: application/pdf; name=\"report.pdf\"\r\n");
    m.extend_from_slice(b"Content-Disposition: attachment;\r\n filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf\r\n");
    m.extend_from_slice(b"Content-Transfer-Encoding: BASE64\r\nContent-ID: <att1@example.ru>\r\nContent-Language: ru, en\r\n\r\n");
    m.extend_from_slice(b"JVBERi0xLjQK\r\n--=_b1--\r\n");
    m
}

#[test]
fn multipart_mixed_attachment_cyrillic() {
    let msg = mixed();
    let sum = summarize(&msg);
    // RFC 2231 filename decoded and, being non-ASCII, given as one UTF-8 encoded word.
    let fname = format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode("отчёт.pdf"));
    assert_eq!(
        s(&sum.bodystructure),
        format!(
            r#"(("text" "plain" ("charset" "koi8-r") NIL NIL "8bit" 6 1 NIL NIL NIL NIL)("application" "pdf" ("name" "report.pdf") "<att1@example.ru>" NIL "base64" 12 NIL ("attachment" ("filename" "{fname}")) ("ru" "en") NIL) "mixed" ("boundary" "=_b1") NIL NIL NIL)"#
        )
    );
    // Raw 8-bit display name goes out as a literal; encoded words stay encoded; the group is start/end markers.
    let from = format!(r#"(({} NIL "petr" "example.ru"))"#, lit("Петров, Пётр"));
    assert_eq!(
        s(&sum.envelope),
        format!(
            r#"(NIL "=?windows-1251?B?zvL3uPI=?=" {from} {from} {from} (("=?KOI8-R?B?8NLJ18XU?=" NIL "x" "example.ru")) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)"#
        )
    );
    assert_eq!(binary(&msg, &[2]).unwrap(), &b"%PDF-1.4\n"[..]);
    assert_eq!(binary(&msg, &[1]).unwrap(), KOI8_PRIVET);
    assert_eq!(binary(&msg, &[1]).unwrap(), section(&msg, &sec(&[1], SectionKind::Full)));

    assert!(header_contains(&msg, "To", "привет"), "KOI8-R encoded word decoded");
    assert!(header_contains(&msg, "subject", "ОТЧЁТ"), "windows-1251 encoded word decoded, case folded");
    assert!(header_contains(&msg, "from", "пётр"));
    assert!(header_contains(&msg, "Cc", ""));
    assert!(!header_contains(&msg, "Bcc", ""));
    assert!(body_contains(&msg, "ПРИВЕТ"), "8bit KOI8-R body converted");
    assert!(!body_contains(&msg, "PDF-1.4"), "attachments are not text");
    assert!(text_contains(&msg, "petr@example"));
    assert!(!text_contains(&msg, "nowhere"));

    assert_eq!(sum.sort.subject, "отчёт");
    assert_eq!((sum.sort.from.as_str(), sum.sort.display_from.as_str()), ("petr", "петров, пётр"));
    assert_eq!((sum.sort.to.as_str(), sum.sort.display_to.as_str()), ("x", "привет"));
    assert_eq!(sum.sort.cc, "", "a group with no members has no first address");
}

const INNER: &str = "From: inner@example.com\r\n\
Subject: inner\r\n\
Content-Type: multipart/alternative; boundary=\"i\"\r\n\
\r\n\
--i\r\n\
Content-Type: text/plain\r\n\
\r\n\
inner text\r\n\
--i\r\n\
Content-Type: text/html\r\n\
\r\n\
<b>inner</b>\r\n\
--i--";

fn nested() -> String {
    format!(
        "From: fwd@example.com\r\nSubject: Fwd: inner\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
         --o\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
         --o\r\nContent-Type: message/rfc822\r\n\r\n{INNER}\r\n--o--\r\n"
    )
}

#[test]
fn nested_message() {
    let msg = nested();
    let msg = msg.as_bytes();
    let sum = summarize(msg);
    let inner_env = r#"(NIL "inner" ((NIL NIL "inner" "example.com")) ((NIL NIL "inner" "example.com")) ((NIL NIL "inner" "example.com")) NIL NIL NIL NIL NIL)"#;
    let inner_bs = r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) "alternative" ("boundary" "i") NIL NIL NIL)"#;
    // message/rfc822: body fields, the enclosed ENVELOPE and BODYSTRUCTURE, then the line count (13 lines, the last without CRLF).
    assert_eq!(
        s(&sum.bodystructure),
        format!(
            r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" {} {inner_env} {inner_bs} 13 NIL NIL NIL NIL) "mixed" ("boundary" "o") NIL NIL NIL)"#,
            INNER.len()
        )
    );
    let inner_body = r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 1) "alternative")"#;
    assert_eq!(
        s(&sum.body),
        format!(r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1)("message" "rfc822" NIL NIL NIL "7bit" {} {inner_env} {inner_body} 13) "mixed")"#, INNER.len())
    );
    // Part numbers descend into the enclosed message; HEADER/TEXT of a message/rfc822 part are the enclosed message's.
    assert_eq!(get(msg, &[2], SectionKind::Full), INNER);
    assert_eq!(get(msg, &[2], SectionKind::Mime), "Content-Type: message/rfc822\r\n\r\n");
    let inner_header_len = INNER.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(get(msg, &[2], SectionKind::Header), INNER[..inner_header_len]);
    assert_eq!(get(msg, &[2], SectionKind::Text), INNER[inner_header_len..]);
    assert_eq!(get(msg, &[2], SectionKind::HeaderFields(vec!["subject".into()])), "Subject: inner\r\n\r\n");
    assert_eq!(get(msg, &[2, 1], SectionKind::Full), "inner text");
    assert_eq!(get(msg, &[2, 2], SectionKind::Full), "<b>inner</b>");
    assert_eq!(get(msg, &[2, 1], SectionKind::Mime), "Content-Type: text/plain\r\n\r\n");
    assert_eq!(get(msg, &[2, 3], SectionKind::Full), "");
    // Parsed once, same answers.
    let parsed = Parsed::new(msg);
    assert_eq!(parsed.section(&sec(&[2, 1], SectionKind::Full)), section(msg, &sec(&[2, 1], SectionKind::Full)));
    assert_eq!(parsed.section(&sec(&[], SectionKind::Full)), msg);
    assert_eq!(parsed.binary(&[2, 2]), binary(msg, &[2, 2]));
    assert_eq!(get(msg, &[1], SectionKind::Header), "", "HEADER of a part that is not a message");
    assert_eq!(get(msg, &[1], SectionKind::Text), "");
    assert_eq!(binary(msg, &[2]).unwrap(), INNER.as_bytes());
    assert_eq!(binary(msg, &[2, 1]).unwrap(), &b"inner text"[..]);
    assert_eq!(binary(msg, &[]).unwrap(), msg);
    assert!(body_contains(msg, "INNER TEXT"));
    assert!(body_contains(msg, "inner@example"), "the enclosed header is part of the body");
    assert!(!body_contains(msg, "fwd@example"));

    // A message whose top level is message/rfc822: part 1 is the enclosed message, 1.1 its body.
    let top = format!("Content-Type: message/rfc822\r\n\r\n{INNER}");
    assert_eq!(get(top.as_bytes(), &[1], SectionKind::Full), INNER);
    assert_eq!(get(top.as_bytes(), &[1, 2], SectionKind::Full), "<b>inner</b>");
    assert_eq!(get(top.as_bytes(), &[1], SectionKind::Header), INNER[..inner_header_len]);
}

#[test]
fn multipart_digest_defaults_to_message() {
    let msg = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nbody one\r\n--d--\r\n";
    let sum = summarize(msg);
    // RFC 2046 §5.1.5: a part without Content-Type in a digest is message/rfc822
    // (its body: "Subject: one\r\n\r\nbody one", 24 octets, 3 lines).
    assert_eq!(
        s(&sum.bodystructure),
        r#"(("message" "rfc822" NIL NIL NIL "7bit" 24 (NIL "one" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL) "digest" ("boundary" "d") NIL NIL NIL)"#
    );
}

#[test]
fn malformed_structures() {
    // Multipart without a boundary: a text leaf.
    let m = b"Content-Type: multipart/mixed\r\n\r\nhello\r\n";
    assert_eq!(s(&summarize(m).bodystructure), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL)"#);
    // Boundary given but never used: a text leaf, with the parameters as sent.
    let m = b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nhello";
    assert_eq!(s(&summarize(m).bodystructure), r#"("text" "plain" ("charset" "us-ascii" "boundary" "zz") NIL NIL "7bit" 5 1 NIL NIL NIL NIL)"#);
    // Invalid Content-Type: text/plain; charset=us-ascii (RFC 2045 §5.2).
    let m = b"Content-Type: garbage\r\n\r\nx";
    assert_eq!(s(&summarize(m).bodystructure), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 1 NIL NIL NIL NIL)"#);
    // Missing close delimiter: the last part runs to the end.
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nabc\r\n";
    assert_eq!(get(m, &[1], SectionKind::Full), "abc\r\n");
    // Boundary text inside a line is not a delimiter, nor is a longer boundary.
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx --b y\r\n--bb\r\nz\r\n--b--";
    assert_eq!(get(m, &[1], SectionKind::Full), "x --b y\r\n--bb\r\nz");
    // A base64 message/rfc822 is opaque, and rendered so that the grammar still holds.
    let m = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5\r\n";
    assert_eq!(s(&summarize(m).bodystructure), r#"("application" "octet-stream" NIL NIL NIL "base64" 22 NIL NIL NIL NIL)"#);
    assert_eq!(binary(m, &[1]).unwrap(), &b"Subject: x\r\n\r\ny"[..]);
    // Unknown transfer encoding.
    let m = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n";
    assert_eq!(binary(m, &[1]), Err(BinaryError::UnknownCte("x-uuencode".into())));
    assert_eq!(binary(ALTERNATIVE, &[]).map(|b| b.len()), Ok(ALTERNATIVE.len()));
    assert_eq!(binary(&mixed(), &[]).map(|b| b.len()), Ok(mixed().len()));
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--b--";
    assert_eq!(binary(m, &[1]), Err(BinaryError::NotLeaf));
    assert_eq!(binary(m, &[1, 1]).unwrap(), &b"x"[..]);
}

#[test]
fn lf_only_and_missing_separator() {
    let m = b"From: a@b\nSubject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b--\n";
    let sum = summarize(m);
    assert_eq!(s(&sum.bodystructure), r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 2 1 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)"#);
    assert_eq!(get(m, &[1], SectionKind::Full), "hi");
    assert!(s(&sum.envelope).starts_with(r#"(NIL "x" ((NIL NIL "a" "b"))"#));

    // No blank line: all header, empty body.
    let m = b"From: a@b\r\nSubject: x\r\n";
    let sum = summarize(m);
    assert_eq!(sum.header_len, m.len());
    assert_eq!(s(&sum.bodystructure), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)"#);
    assert_eq!(get(m, &[], SectionKind::Text), "");
    assert_eq!(get(m, &[], SectionKind::HeaderFields(vec!["subject".into()])), "Subject: x\r\n\r\n");

    // No header at all.
    let m = b"\r\njust a body";
    let sum = summarize(m);
    assert_eq!(sum.header_len, 2);
    assert_eq!(s(&sum.envelope), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    // Nothing at all.
    let sum = summarize(b"");
    assert_eq!(s(&sum.bodystructure), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)"#);
    assert_eq!(get(b"", &[1], SectionKind::Full), "");
    // Garbage header lines.
    let m = b"\x00\xff garbage\r\n: no name\r\nFrom\r\n\r\n";
    let sum = summarize(m);
    assert_eq!(s(&sum.envelope), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
}

#[test]
fn dispositions_languages_locations() {
    let m = b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n\
Content-Disposition: INLINE\r\n\
Content-Language: (comment) en-GB\r\n\
Content-Location: http://example.com/\r\n a.txt\r\n\
Content-Description: =?UTF-8?Q?caf=C3=A9?=\r\n\
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\nx";
    assert_eq!(
        s(&summarize(m).bodystructure),
        r#"("text" "plain" ("charset" "utf-8" "format" "flowed") NIL "=?UTF-8?Q?caf=C3=A9?=" "7bit" 1 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" NIL) ("en-GB") "http://example.com/a.txt")"#
    );
    // RFC 2231 continuations, ASCII: plain value.
    let m = b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*0=\"long\"; filename*1=\"name.bin\"\r\n\r\n";
    assert_eq!(s(&summarize(m).bodystructure), r#"("application" "octet-stream" NIL NIL NIL "7bit" 0 NIL ("attachment" ("filename" "longname.bin")) NIL NIL)"#);
}

#[test]
fn sent_dates() {
    let m = |d: &str| format!("Date: {d}\r\n\r\n");
    // The calendar day is the header's own, not UTC's (RFC 9051 §6.4.4 "disregarding time and timezone").
    let d = sent_date(m("Sat, 31 Dec 2000 23:30:00 -0800").as_bytes()).unwrap();
    assert_eq!(d.day, 11322, "2000-12-31");
    assert_eq!(d.utc, 11323 * 86_400 + 7 * 3600 + 30 * 60);
    assert_eq!(sent_date(m("31 Dec 2000 16:01:33 +0000").as_bytes()).map(|d| d.utc), Some(11322 * 86_400 + 16 * 3600 + 60 + 33));
    assert_eq!(sent_date(m("garbage").as_bytes()), None);
    // Folded, one-digit day, no weekday.
    assert_eq!(sent_date(b"Date: 1 Jul 2003\r\n 10:52:37 +0200\r\n\r\n").map(|d| d.day), Some(12234));
    // Obsolete two-digit year and named zone (RFC 5322 §4.3).
    let d = sent_date(m("Thu, 13 Feb 69 23:32:54 EST").as_bytes());
    assert_eq!(d.map(|d| d.day), Some(-322), "1969-02-13");
    assert_eq!(sent_date(b"Subject: x\r\n\r\n"), None);
}

#[test]
fn deep_nesting_bombs() {
    const LEVELS: usize = 10_000;
    let mut multi = Vec::new();
    for i in 0..LEVELS {
        multi.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes());
    }
    multi.extend_from_slice(b"\r\nleaf\r\n");
    let mut rfc822 = Vec::new();
    for _ in 0..LEVELS {
        rfc822.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    rfc822.extend_from_slice(b"Subject: deep\r\n\r\nleaf\r\n");
    for msg in [&multi, &rfc822] {
        let start = Instant::now();
        let sum = summarize(msg);
        // Structure stops at the depth limit with an opaque leaf.
        assert!(s(&sum.bodystructure).contains(r#"("application" "octet-stream""#));
        let depth = sum.bodystructure.iter().take_while(|&&b| b == b'(').count();
        assert!(depth <= MIME_DEPTH_MAX + 2, "{depth}");
        let deep = vec![1u32; LEVELS];
        let _ = section(msg, &sec(&deep, SectionKind::Full));
        let _ = section(msg, &sec(&deep, SectionKind::Header));
        let _ = binary(msg, &deep);
        let _ = body_contains(msg, "leaf");
        let _ = text_contains(msg, "nothing");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    }
}

#[test]
fn many_parts_are_capped() {
    let mut m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    for _ in 0..(MIME_PARTS_MAX + 500) {
        m.extend_from_slice(b"--b\r\n\r\nx\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    let sum = summarize(&m);
    let parts = memchr::memmem::find_iter(&sum.body, b"(\"text\"").count();
    assert_eq!(parts, MIME_PARTS_MAX - 1);
    assert_eq!(get(&m, &[1], SectionKind::Full), "x");
    assert_eq!(get(&m, &[MIME_PARTS_MAX as u32 + 100], SectionKind::Full), "");
}

#[test]
fn huge_header() {
    let mut m = Vec::new();
    for i in 0..200_000 {
        m.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    m.extend_from_slice(b"Subject: needle\r\nTo: =?utf-8?q?a?= <a@b>, ");
    for _ in 0..20_000 {
        m.extend_from_slice(b"x@y, ");
    }
    m.extend_from_slice(b"\r\n\r\nbody\r\n");
    let start = Instant::now();
    let sum = summarize(&m);
    assert!(s(&sum.envelope).contains("\"needle\""));
    assert!(header_contains(&m, "subject", "NEEDLE"));
    assert!(!header_contains(&m, "x-h5", "w"));
    assert_eq!(get(&m, &[], SectionKind::HeaderFields(vec!["subject".into()])), "Subject: needle\r\n\r\n");
    // One huge encoded-word-looking header does not go quadratic.
    let mut q = b"Subject: ".to_vec();
    q.extend(std::iter::repeat_n(&b"=?a?"[..], 200_000).flatten());
    q.extend_from_slice(b"\r\n\r\n");
    assert!(!header_contains(&q, "subject", "zzz"));
    let _ = summarize(&q);
    assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
}

#[test]
fn large_base64_body() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
    let mut m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    for line in encoded.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    assert_eq!(binary(&m, &[1]).unwrap(), &data[..]);
    assert!(!body_contains(&m, "x"));
}

#[test]
fn partials() {
    assert_eq!(partial(b"hello", 1, 3), b"ell");
    assert_eq!(partial(b"hello", 0, 0), b"");
    assert_eq!(partial(b"hello", 10, 5), b"");
    assert_eq!(partial(b"hello", 3, u32::MAX), b"lo");
    assert_eq!(partial(b"hello", u32::MAX, u32::MAX), b"");
}

// ---- THREAD ----

fn tf(id: Option<&str>, refs: &[&str], irt: Option<&str>, subject: &str, date: i64) -> ThreadFields {
    let (base, reply) = super::sort::base_subject_and_reply(subject.as_bytes());
    ThreadFields {
        message_id: id.map(Into::into),
        in_reply_to: irt.map(Into::into),
        references: refs.iter().map(|r| r.to_string()).collect(),
        base_subject: super::decode::fold(&base),
        reply_or_forward: reply,
        sent_date: Some(date),
    }
}

fn render(t: &Threads) -> String {
    let mut out = Vec::new();
    write_threads(&mut out, t);
    s(&out)
}

fn refs_of(fields: &[ThreadFields]) -> String {
    let inputs: Vec<ThreadInput<'_>> = fields.iter().enumerate().map(|(i, f)| ThreadInput { id: i as u32 + 1, fields: f, internal_date: 0 }).collect();
    render(&thread_references(&inputs))
}

#[test]
fn write_threads_syntax() {
    // RFC 5256 §4 example: (2)(3 6 (4 23)(44 7 96))
    let n = |id: u32, children: Vec<usize>| ThreadNode { id: Some(id), children };
    let t = Threads { nodes: vec![n(2, vec![]), n(3, vec![2]), n(6, vec![3, 5]), n(4, vec![4]), n(23, vec![]), n(44, vec![6]), n(7, vec![7]), n(96, vec![])], roots: vec![0, 1] };
    assert_eq!(render(&t), "(2)(3 6 (4 23)(44 7 96))");
    let dummy = Threads { nodes: vec![ThreadNode { id: None, children: vec![1, 2] }, n(1, vec![]), n(2, vec![])], roots: vec![0] };
    assert_eq!(render(&dummy), "((1)(2))");
    assert_eq!(render(&Threads::default()), "");
}

#[test]
fn references_threading() {
    // 1 <- 2 <- 3, and 4 answers 1 through In-Reply-To only.
    let f = [
        tf(Some("1@x"), &[], None, "topic", 10),
        tf(Some("2@x"), &["1@x"], None, "Re: topic", 20),
        tf(Some("3@x"), &["1@x", "2@x"], Some("2@x"), "Re: topic", 30),
        tf(Some("4@x"), &[], Some("1@x"), "Re: topic", 40),
    ];
    assert_eq!(refs_of(&f), "(1 (2 3)(4))");

    // Missing parent: a dummy holds the siblings; with one child, the dummy disappears.
    let f = [tf(Some("a"), &["gone"], None, "s1", 10), tf(Some("b"), &["gone"], None, "s2", 20)];
    assert_eq!(refs_of(&f), "((1)(2))");
    let f = [tf(Some("a"), &["gone", "also-gone"], None, "s1", 10)];
    assert_eq!(refs_of(&f), "(1)");

    // Cycles are never created: 1 says its parent is 2, 2 says its parent is 1.
    let f = [tf(Some("a"), &["b"], None, "x", 10), tf(Some("b"), &["a"], None, "y", 20)];
    assert_eq!(refs_of(&f), "(2 1)");
    // A message referencing itself; a longer cycle through references.
    let f = [tf(Some("a"), &["a"], None, "x", 10)];
    assert_eq!(refs_of(&f), "(1)");
    let f = [tf(Some("a"), &["c", "b"], None, "x", 10), tf(Some("b"), &["a", "c"], None, "y", 20), tf(Some("c"), &["b", "a"], None, "z", 30)];
    let out = refs_of(&f);
    for id in ["1", "2", "3"] {
        assert_eq!(out.matches(id).count(), 1, "{out}");
    }

    // Duplicate Message-ID: only the first message owns it.
    let f = [tf(Some("a"), &[], None, "p", 10), tf(Some("a"), &[], None, "q", 20), tf(Some("c"), &["a"], None, "r", 30)];
    assert_eq!(refs_of(&f), "(1 3)(2)");

    // Top-level threads ordered by sent date, not by id.
    let f = [tf(Some("a"), &[], None, "p", 50), tf(Some("b"), &[], None, "q", 20)];
    assert_eq!(refs_of(&f), "(2)(1)");

    // Subject merging (step 5): a reply joins the original; two originals get a dummy.
    let f = [tf(Some("a"), &[], None, "hello", 10), tf(Some("b"), &[], None, "Re: hello", 20)];
    assert_eq!(refs_of(&f), "(1 2)");
    let f = [tf(Some("a"), &[], None, "Re: hello", 10), tf(Some("b"), &[], None, "hello", 20)];
    assert_eq!(refs_of(&f), "(2 1)");
    let f = [tf(Some("a"), &[], None, "hello", 10), tf(Some("b"), &[], None, "hello", 20), tf(None, &[], None, "hello", 30)];
    assert_eq!(refs_of(&f), "((1)(2)(3))");
    let f = [tf(Some("a"), &[], None, "", 10), tf(Some("b"), &[], None, "", 20)];
    assert_eq!(refs_of(&f), "(1)(2)", "empty subjects are never merged");
}

#[test]
fn orderedsubject_threading() {
    let f = [tf(None, &[], None, "a", 3), tf(None, &[], None, "Re: b", 1), tf(None, &[], None, "b", 2), tf(None, &[], None, "Re: a", 4), tf(None, &[], None, "A", 5)];
    let inputs: Vec<ThreadInput<'_>> = f.iter().enumerate().map(|(i, f)| ThreadInput { id: i as u32 + 1, fields: f, internal_date: 0 }).collect();
    assert_eq!(render(&thread_orderedsubject(&inputs)), "(2 3)(1 (4)(5))");
    assert_eq!(render(&thread_orderedsubject(&[])), "");
}

#[test]
fn deep_reference_chain() {
    // A 20,000-message chain: no recursion anywhere, bounded ancestor walks.
    let ids: Vec<String> = (0..20_000).map(|i| format!("m{i}")).collect();
    let f: Vec<ThreadFields> = (0..ids.len())
        .map(|i| {
            let parent: Vec<&str> = if i == 0 { Vec::new() } else { vec![ids[i - 1].as_str()] };
            tf(Some(&ids[i]), &parent, None, "s", i as i64)
        })
        .collect();
    let start = Instant::now();
    let out = refs_of(&f);
    // Links deeper than THREAD_ANCESTRY_MAX are refused, so the chain is cut into pieces, which
    // step 5 then gathers under one dummy (same subject).
    assert!(out.starts_with("((1 2 3 "), "{}", &out[..50]);
    assert!(out.contains(&format!(" {} ", THREAD_ANCESTRY_MAX)));
    assert_eq!(out.split(|c: char| !c.is_ascii_digit()).filter(|t| !t.is_empty()).count(), ids.len());
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn thread_fields_from_headers() {
    let m = b"Message-ID: <a@b>\r\nIn-Reply-To: <p@b> (comment)\r\nReferences: <r1@b>\r\n <r2@b> <p@b>\r\nSubject: Re: [list] Topic (fwd)\r\n\r\n";
    let t = summarize(m).thread;
    assert_eq!(t.message_id.as_deref(), Some("a@b"));
    assert_eq!(t.in_reply_to.as_deref(), Some("p@b"));
    assert_eq!(t.references, vec!["r1@b", "r2@b", "p@b"]);
    assert_eq!(t.base_subject, "topic");
    assert!(t.reply_or_forward);
    assert_eq!(t.sent_date, None);
    // Long References keep the first and the last ones.
    let mut m = b"References:".to_vec();
    for i in 0..1000 {
        m.extend_from_slice(format!(" <{i}@x>").as_bytes());
    }
    m.extend_from_slice(b"\r\n\r\n");
    let t = summarize(&m).thread;
    assert_eq!(t.references.len(), REFERENCES_MAX);
    assert_eq!((t.references[0].as_str(), t.references[1].as_str(), t.references[REFERENCES_MAX - 1].as_str()), ("0@x", "873@x", "999@x"));
}

// ---- never panic ----

fn fragments() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"Content-Type: multipart/mixed; boundary=b\r\n"[..],
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain; charset=koi8-r\r\n",
        b"Content-Type: multipart/digest; boundary=\"b\"\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%D0; filename*1=x\r\n",
        b"From: \"a\\\" (b\" <@r,@s:c@d>, g: h@i;, (c\r\n",
        b"Subject: =?utf-8?b?0J/RgNC4?= =?koi8-r?q?=F0?= Re: [x] (fwd)\r\n",
        b"\r\n",
        b"\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"--b",
        b"=?",
        b"=\r\n",
        b"<a>",
        b" ",
        b"\x00\xff",
        b"(",
        b"\"",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

fn any_section() -> impl Strategy<Value = Section> {
    let kind = prop_oneof![
        Just(SectionKind::Full),
        Just(SectionKind::Header),
        Just(SectionKind::Text),
        Just(SectionKind::Mime),
        Just(SectionKind::HeaderFields(vec!["content-type".into(), "FROM".into()])),
        Just(SectionKind::HeaderFieldsNot(vec!["subject".into()])),
    ];
    (prop::collection::vec(0u32..4, 0..5), kind).prop_map(|(part, kind)| Section { part, kind })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(msg in prop::collection::vec(any::<u8>(), 0..600), section_ in any_section(), needle in "\\PC{0,4}") {
        check(&msg, &section_, &needle);
    }

    #[test]
    fn mime_like_bytes_never_panic(msg in fragments(), section_ in any_section(), needle in "[a-zа-я]{0,3}") {
        check(&msg, &section_, &needle);
    }

    #[test]
    fn threading_never_loses_messages(specs in prop::collection::vec((0u8..6, prop::collection::vec(0u8..6, 0..4), 0u8..3, 0i64..5), 0..20)) {
        let fields: Vec<ThreadFields> = specs
            .iter()
            .map(|(id, refs, subj, date)| {
                let refs: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
                let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                tf(Some(&id.to_string()), &refs, None, ["a", "Re: a", ""][*subj as usize], *date)
            })
            .collect();
        let inputs: Vec<ThreadInput<'_>> = fields.iter().enumerate().map(|(i, f)| ThreadInput { id: i as u32 + 1, fields: f, internal_date: 0 }).collect();
        for t in [thread_references(&inputs), thread_orderedsubject(&inputs)] {
            let mut ids: Vec<u32> = t.nodes.iter().filter_map(|n| n.id).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (1..=inputs.len() as u32).collect::<Vec<_>>());
            let out = render(&t);
            prop_assert_eq!(out.matches('(').count(), out.matches(')').count());
        }
    }
}

fn check(msg: &[u8], section_: &Section, needle: &str) {
    let sum = summarize(msg);
    assert!(sum.header_len <= msg.len());
    // Rendered structures are balanced outside literals and quoted strings.
    assert_balanced(&sum.bodystructure);
    assert_balanced(&sum.body);
    assert_balanced(&sum.envelope);
    let got = section(msg, section_);
    let parsed = Parsed::new(msg);
    assert_eq!(parsed.section(section_), got);
    assert_eq!(parsed.binary(&section_.part), binary(msg, &section_.part));
    if matches!(section_.kind, SectionKind::Full | SectionKind::Header | SectionKind::Text | SectionKind::Mime) {
        assert!(got.len() <= msg.len());
    }
    let _ = binary(msg, &section_.part);
    let _ = header_contains(msg, "from", needle);
    let _ = body_contains(msg, needle);
    let _ = text_contains(msg, needle);
    let _ = sent_date(msg);
    let _ = base_subject(msg);
}

/// Parentheses balance, skipping quoted strings and literals.
fn assert_balanced(v: &[u8]) {
    let mut depth = 0i64;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'"' => {
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => {
                let close = v[i..].iter().position(|&b| b == b'}').unwrap() + i;
                let n: usize = std::str::from_utf8(&v[i + 1..close]).unwrap().parse().unwrap();
                i = close + 3 + n - 1;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                assert!(depth >= 0, "{}", s(v));
            }
            _ => {}
        }
        i += 1;
    }
    assert_eq!(depth, 0, "{}", s(v));
}

/// `cargo test -p varan-protocols --release -- --ignored mime_100mb`: timing of the largest message.
#[test]
#[ignore]
fn mime_100mb() {
    let line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n";
    let mut m = b"Subject: big\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    while m.len() < 50 << 20 {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    while m.len() < 100 << 20 {
        m.extend_from_slice(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    let t = Instant::now();
    let sum = summarize(&m);
    eprintln!("summarize: {:?} {}", t.elapsed(), s(&sum.bodystructure));
    let t = Instant::now();
    assert_eq!((section(&m, &sec(&[2], SectionKind::Full)).len() + 2) % 78, 0);
    eprintln!("section: {:?}", t.elapsed());
    let t = Instant::now();
    assert!(binary(&m, &[2]).unwrap().len() > 30 << 20);
    eprintln!("binary: {:?}", t.elapsed());
    let t = Instant::now();
    assert!(!body_contains(&m, "zebra"));
    eprintln!("body_contains miss: {:?}", t.elapsed());
}
