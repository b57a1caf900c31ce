//! Feeds arbitrary bytes, split at arbitrary points, into an SMTP server
//! session driven by an auto-accepting driver loop (`cargo fuzz run
//! smtp_session`). Checks the driver-facing invariants: `receive` never
//! consumes more than it was given, every reply line is CRLF-terminated
//! and at most 512 octets, the loop always terminates.
#![no_main]

use std::rc::Rc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use varan_core::config::BareNewlines;
use varan_protocols::smtp::{Action, AuthVerdict, ListenerKind, PeerInfo, RcptVerdict, Reply, Session, SessionConfig, StoreOutcome, TlsInfo, REPLY_LINE_BYTES_MAX};

/// Bound on driver rounds per input: every round consumes input, answers
/// an action or flushes output, so this is far above what any input needs.
const ROUNDS_MAX: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    // First two bytes pick the configuration and the split pattern.
    let (head, body) = data.split_at(data.len().min(2));
    let flags = head.first().copied().unwrap_or(0);
    let split = usize::from(head.get(1).copied().unwrap_or(0)).max(1);
    let config = SessionConfig {
        hostname: "mx.fuzz".into(),
        kind: [ListenerKind::Mx, ListenerKind::Submission, ListenerKind::Smtps][usize::from(flags % 3)],
        tls_available: flags & 4 != 0,
        auth_without_tls: flags & 8 != 0,
        message_size_max: if flags & 16 != 0 { 64 } else { 1 << 20 },
        recipients_max: 3,
        command_line_max: 512,
        commands_max: 200,
        errors_max: 20,
        auth_failures_max: 3,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
        bare_newlines: if flags & 32 != 0 { BareNewlines::Reject } else { BareNewlines::Normalize },
    };
    let peer = PeerInfo { remote: "192.0.2.1:1000".parse().unwrap(), local: "192.0.2.2:25".parse().unwrap() };
    let tls = || TlsInfo { protocol: "TLSv1.3".into(), cipher: "X".into() };
    let initial_tls = (config.kind == ListenerKind::Smtps).then(tls);
    let mut session = Session::new(Rc::new(config), peer, initial_tls);
    let mut sink = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for _ in 0..ROUNDS_MAX {
        if fed < body.len() && (buf.len() < 4096) {
            let n = split.min(body.len() - fed);
            buf.extend_from_slice(&body[fed..fed + n]);
            fed += n;
        }
        let n = session.receive(&buf, &mut sink);
        assert!(n <= buf.len());
        buf.drain(..n);
        session.take_output(&mut out);
        let mut acted = false;
        while let Some(action) = session.poll_action() {
            acted = true;
            let _ = format!("{action:?}");
            match action {
                Action::CheckRecipient { index, .. } => session.recipient_checked(if index % 2 == 0 { RcptVerdict::Accept } else { RcptVerdict::Reject(Reply::user_unknown()) }),
                Action::Authenticate { password, .. } => session.auth_checked(if password.len() % 2 == 0 { AuthVerdict::Success } else { AuthVerdict::Failure }),
                Action::MessageComplete => session.message_stored(StoreOutcome::Accepted { queue_id: "Q".into() }),
                Action::StartTls => {
                    let _ = session.receive(&buf, &mut sink);
                    buf.clear();
                    session.tls_started(tls());
                }
                Action::Close => {}
            }
        }
        if session.is_closed() || (fed == body.len() && n == 0 && !acted && !session.has_output()) {
            break;
        }
    }
    session.take_output(&mut out);
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= REPLY_LINE_BYTES_MAX && line.ends_with(b"\r\n"), "{line:?}");
    }
});
