//! IMAP hot paths: framing + parsing of the commands real clients send most
//! (Thunderbird, Apple Mail, Outlook traces: UID FETCH with many items,
//! UID STORE, UID SEARCH, SELECT with QRESYNC, APPEND with a literal), and
//! FETCH ENVELOPE/BODYSTRUCTURE generation (`mime::summarize`) on
//! real-world shaped MIME: a plain message with encoded-word headers, a
//! multipart/alternative newsletter, and a multipart/mixed message with
//! inline image and a 256 KB base64 attachment. Inputs are generated here.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use varan_protocols::imap::{parse_command, Frame, Framer, FramerLimits};
use varan_protocols::mime;

/// Client command lines as they arrive on the wire (CRLF-terminated).
fn client_commands() -> Vec<(&'static str, Vec<u8>)> {
    let append_body = mime_mixed(4 << 10);
    let mut append = format!("a7 APPEND \"Sent\" (\\Seen) \"23-Nov-2026 10:00:00 +0000\" {{{}+}}\r\n", append_body.len()).into_bytes();
    append.extend_from_slice(&append_body);
    append.extend_from_slice(b"\r\n");
    vec![
        ("uid_fetch_headers", b"a1 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])\r\n".to_vec()),
        ("uid_fetch_changed", b"a2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n".to_vec()),
        ("uid_store", b"a3 UID STORE 4711,4713:4720,4722 +FLAGS.SILENT (\\Seen $Forwarded)\r\n".to_vec()),
        ("uid_search", b"a4 UID SEARCH RETURN (ALL COUNT) CHARSET UTF-8 OR SUBJECT \"report\" FROM \"anna@example.org\" SINCE 1-Nov-2026 NOT DELETED\r\n".to_vec()),
        ("select_qresync", b"a5 SELECT \"INBOX\" (QRESYNC (1700000000 98765 1:4800 (1,10,100,1000 101,110,300,4000)))\r\n".to_vec()),
        ("status", b"a6 STATUS \"&BB8EQAQ4BDIENQRC-\" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)\r\n".to_vec()),
        ("append_4KB", append),
    ]
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("imap/parse");
    g.sample_size(50).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let limits = FramerLimits::after_login(32 << 20);
    for (label, input) in client_commands() {
        // Sanity check outside the measurement: one frame, which parses.
        let mut framer = Framer::new(limits);
        let (_, frame) = framer.feed(&input);
        let Some(Frame::Command(line)) = frame else { panic!("{label}: not framed in one feed") };
        parse_command(&line).unwrap_or_else(|e| panic!("{label}: {e:?}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &input, |b, input| {
            b.iter(|| {
                let mut framer = Framer::new(limits);
                let mut at = 0;
                let mut parsed = 0;
                while at < input.len() {
                    let (used, frame) = framer.feed(&input[at..]);
                    at += used;
                    if let Some(Frame::Command(line)) = frame {
                        parsed += parse_command(black_box(&line)).is_ok() as usize;
                    }
                    if used == 0 {
                        break;
                    }
                }
                parsed
            });
        });
    }
    g.finish();
}

fn base64_lines(len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(len + len / 76 * 2);
    for i in 0..len {
        s.push(A[(i * 7 + i / 3) % 64] as char);
        if i % 76 == 75 {
            s.push_str("\r\n");
        }
    }
    s.push_str("\r\n");
    s
}

const HEADERS: &str = "Return-Path: <anna@example.org>\r\n\
Received: from mail.example.org ([192.0.2.10]) by mx.bench.test (Varan) with ESMTPS id 1A2B; Mon, 23 Nov 2026 10:00:01 +0000\r\n\
From: =?UTF-8?B?0JDQvdC90LAg0J/QtdGC0YDQvtCy0LA=?= <anna@example.org>\r\n\
To: \"Bob Smith\" <bob@bench.test>, =?UTF-8?Q?Ji=C5=99=C3=AD?= <jiri@bench.test>\r\n\
Cc: team@bench.test\r\n\
Subject: =?UTF-8?B?0J7RgtGH0ZHRgiDQt9CwINC90L7Rj9Cx0YDRjA==?= (Q4 report)\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0300\r\n\
Message-ID: <20261123100000.1234@example.org>\r\n\
In-Reply-To: <20261120090000.99@bench.test>\r\n\
References: <20261119080000.1@bench.test> <20261120090000.99@bench.test>\r\n\
MIME-Version: 1.0\r\n";

fn mime_plain() -> Vec<u8> {
    format!("{HEADERS}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}", "Привет! The quarterly numbers are attached.\r\n".repeat(40))
        .into_bytes()
}

fn mime_alternative() -> Vec<u8> {
    format!(
        "{HEADERS}Content-Type: multipart/alternative; boundary=\"alt-b1\"\r\n\r\n--alt-b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n--alt-b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n--alt-b1--\r\n",
        "Newsletter line =D0=9F=D1=80=D0=B8=D0=B2=D0=B5=D1=82\r\n".repeat(60),
        "<p style=3D\"margin:0\">Newsletter line</p>\r\n".repeat(120)
    )
    .into_bytes()
}

fn mime_mixed(attachment: usize) -> Vec<u8> {
    format!(
        "{HEADERS}Content-Type: multipart/mixed; boundary=\"mix-b1\"\r\n\r\n--mix-b1\r\nContent-Type: multipart/related; boundary=\"rel-b2\"\r\n\r\n--rel-b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>See the chart <img src=\"cid:chart@x\"></p>\r\n--rel-b2\r\nContent-Type: image/png\r\nContent-ID: <chart@x>\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: inline; filename=\"chart.png\"\r\n\r\n{}--rel-b2--\r\n--mix-b1\r\nContent-Type: application/pdf; name=\"=?UTF-8?B?0J7RgtGH0ZHRgi5wZGY=?=\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82.pdf\r\n\r\n{}--mix-b1--\r\n",
        base64_lines(8 << 10),
        base64_lines(attachment)
    )
    .into_bytes()
}

fn summarize(c: &mut Criterion) {
    let mut g = c.benchmark_group("imap/fetch_envelope_bodystructure");
    g.sample_size(50).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    for (label, msg) in [("plain_3KB", mime_plain()), ("alternative_10KB", mime_alternative()), ("mixed_attachment_256KB", mime_mixed(256 << 10))] {
        let s = mime::summarize(&msg);
        assert!(s.envelope.starts_with(b"(") && s.bodystructure.starts_with(b"("), "{label}: no summary");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &msg, |b, msg| b.iter(|| mime::summarize(black_box(msg))));
    }
    g.finish();
}

criterion_group!(benches, parse, summarize);
criterion_main!(benches);
