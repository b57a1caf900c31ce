//! Feeds arbitrary bytes, split at arbitrary points, through the IMAP
//! framer and parses every command frame (`cargo fuzz run imap_parse`).
//! Checks: `feed`/`feed_line` never consume more than given, the driver
//! loop always terminates, frames respect the limits, the parser never
//! panics, a parse error carries the frame's tag when it had one, every
//! response line written is one CRLF-terminated line, and AST values that
//! render (sequence sets) parse back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varan_protocols::imap::{parse_command, CommandBody, Frame, Framer, FramerLimits, SequenceSet};

/// Bound on driver rounds per input; every round consumes input or ends.
const ROUNDS_MAX: usize = 100_000;

fn one_line(out: &[u8]) {
    assert!(out.ends_with(b"\r\n"), "{out:?}");
    assert!(!out[..out.len() - 2].contains(&b'\n') && !out[..out.len() - 2].contains(&b'\r'), "{out:?}");
}

fn check_set(set: &SequenceSet) {
    let text = set.to_string();
    let frame = format!("t UID EXPUNGE {text}");
    match parse_command(frame.as_bytes()).map(|c| c.body) {
        Ok(CommandBody::UidExpunge(back)) => assert_eq!(&back, set),
        other => panic!("{text}: {other:?}"),
    }
    let resolved: Vec<u32> = set.iter_resolved(50).collect();
    assert!(resolved.windows(2).all(|w| w[0] < w[1]));
    assert!(resolved.iter().all(|&n| (1..=50).contains(&n) && set.contains(n, 50)));
}

fuzz_target!(|data: &[u8]| {
    // First two bytes: limits (and raw-line mode) and the split size.
    let (head, body) = data.split_at(data.len().min(2));
    let flags = head.first().copied().unwrap_or(0);
    let split = usize::from(head.get(1).copied().unwrap_or(0)).max(1);
    let limits = if flags & 1 == 0 {
        FramerLimits::before_login()
    } else {
        FramerLimits { line_bytes_max: 64, literal_bytes_max: 16, append_literal_bytes_max: 32, literals_per_command_max: 3, command_bytes_max: 128 }
    };
    let raw_lines = flags & 2 != 0;
    let mut framer = Framer::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut dead = false;
    for _ in 0..ROUNDS_MAX {
        if fed < body.len() {
            let n = split.min(body.len() - fed);
            buf.extend_from_slice(&body[fed..fed + n]);
            fed += n;
        }
        let (n, frame) = if raw_lines && framer.is_idle() && buf.first() == Some(&b'+') {
            let (n, line) = framer.feed_line(&buf);
            if let Some(Ok(line)) = &line {
                assert!(line.len() < limits.line_bytes_max && !line.contains(&b'\n'));
            }
            (n, None)
        } else {
            framer.feed(&buf)
        };
        assert!(n <= buf.len());
        buf.drain(..n);
        match frame {
            Some(Frame::Command(c)) => {
                assert!(!dead);
                assert!(c.len() as u64 <= limits.command_bytes_max as u64 + limits.append_literal_bytes_max);
                let mut out = Vec::new();
                match parse_command(&c) {
                    Ok(cmd) => {
                        let _ = format!("{cmd:?}");
                        match &cmd.body {
                            CommandBody::Fetch(f) => check_set(&f.set),
                            CommandBody::UidExpunge(s) => check_set(s),
                            CommandBody::Append { messages, .. } => {
                                for m in messages {
                                    assert!(m.data.end <= c.len());
                                }
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        e.write(&mut out);
                        one_line(&out);
                    }
                }
            }
            Some(Frame::Rejected { tag, response }) => {
                let mut out = Vec::new();
                response.write(&mut out, tag.as_deref());
                one_line(&out);
            }
            Some(Frame::Fatal(_)) => dead = true,
            Some(Frame::Continue) => {}
            None if fed == body.len() => break,
            None => {}
        }
    }
});
