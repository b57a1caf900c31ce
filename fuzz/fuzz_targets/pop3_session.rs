//! Feeds arbitrary bytes, split at arbitrary points, into a POP3 session and
//! answers every action (`cargo fuzz run pop3_session`). Checks: the session
//! never consumes more than given, the loop terminates, and every byte of
//! output before a message transfer is a CRLF-terminated line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::rc::Rc;
use std::time::Duration;
use varan_protocols::pop3::{Action, AuthVerdict, Pop3Message, Session, SessionConfig};

const ROUNDS_MAX: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(1));
    let split = usize::from(head.first().copied().unwrap_or(0)).max(1);
    let config = Rc::new(SessionConfig {
        hostname: "mail.test".into(),
        tls_available: true,
        auth_without_tls: true,
        errors_max: 10,
        auth_failures_max: 3,
        command_timeout: Duration::from_secs(600),
    });
    let mut s = Session::new(config, false);
    let mut out = Vec::new();
    let message = b"Subject: x\r\n\r\n.dot line\r\nbody\r\n".to_vec();
    let mut rounds = 0;
    for chunk in body.chunks(split) {
        let mut input = chunk;
        loop {
            rounds += 1;
            assert!(rounds < ROUNDS_MAX, "session loops");
            let used = s.receive(input);
            assert!(used <= input.len());
            input = &input[used..];
            let acted = match s.poll_action() {
                Some(Action::Authenticate { password, .. }) => {
                    s.auth_checked(if password == "pw" { AuthVerdict::Success } else { AuthVerdict::Failure });
                    true
                }
                Some(Action::OpenMaildrop { .. }) => {
                    s.maildrop_opened(vec![Pop3Message { uid: 1, size: message.len() as u64 }, Pop3Message { uid: 7, size: 3 }], 42);
                    true
                }
                Some(Action::Retrieve { .. }) => {
                    s.message(&message);
                    true
                }
                Some(Action::Commit { .. }) => {
                    s.committed(true);
                    true
                }
                Some(Action::StartTls) => {
                    s.tls_started();
                    true
                }
                Some(Action::Close) => return,
                None => false,
            };
            s.take_output(&mut out);
            if !acted && used == 0 {
                break;
            }
        }
        if s.is_closed() {
            return;
        }
    }
    if !out.is_empty() {
        assert!(out.ends_with(b"\r\n"));
    }
});
