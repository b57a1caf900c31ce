//! The driver-facing contract of `Session`: what `receive` consumes, when
//! it stops, timeouts, output back-pressure, configuration.

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::{config, peer, tls_info};
use varan_core::config::SmtpConfig;
use varan_protocols::smtp::{Action, ListenerKind, Mechanism, RcptVerdict, Reply, Session, SessionConfig, StoreOutcome, OUTPUT_BYTES_MAX};

fn session() -> Session {
    Session::new(Rc::new(config()), peer(), None)
}

fn output(s: &mut Session) -> String {
    let mut out = Vec::new();
    s.take_output(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn banner_is_queued_at_creation() {
    let mut s = session();
    assert!(s.has_output());
    assert_eq!(output(&mut s), "220 mx.test ESMTP Varan\r\n");
    assert!(!s.has_output());
}

#[test]
fn receive_stops_at_a_pending_action_and_resumes_after_the_answer() {
    let mut s = session();
    let mut sink = Vec::new();
    let input = b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nNOOP\r\n";
    let n = s.receive(input, &mut sink);
    assert_eq!(&input[n..], b"NOOP\r\n");
    assert_eq!(s.receive(&input[n..], &mut sink), 0, "nothing is processed while the check is outstanding");
    match s.poll_action() {
        Some(Action::CheckRecipient { address, index }) => {
            assert_eq!(address.to_string(), "b@mx.test");
            assert_eq!(index, 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.poll_action(), None, "one action at a time");
    assert_eq!(s.receive(&input[n..], &mut sink), 0, "still outstanding after poll");
    s.recipient_checked(RcptVerdict::Reject(Reply::user_unknown()));
    assert_eq!(s.receive(&input[n..], &mut sink), 6);
    let out = output(&mut s);
    assert!(out.ends_with("250 2.1.0 Ok\r\n550 5.1.1 Recipient address rejected: user unknown\r\n250 2.0.0 Ok\r\n"), "{out}");
    assert!(s.envelope().recipients.is_empty());
}

#[test]
fn incomplete_lines_are_left_to_the_driver() {
    let mut s = session();
    let mut sink = Vec::new();
    assert_eq!(s.receive(b"NOO", &mut sink), 0);
    assert_eq!(s.receive(b"NOOP\r", &mut sink), 0);
    assert_eq!(s.receive(b"NOOP\r\nRS", &mut sink), 6);
}

#[test]
fn starttls_swallows_everything_after_it() {
    let mut s = session();
    let mut sink = Vec::new();
    let input = b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<x@evil.test>\r\n";
    assert_eq!(s.receive(input, &mut sink), input.len());
    assert_eq!(s.poll_action(), Some(Action::StartTls));
    assert!(output(&mut s).ends_with("220 2.0.0 Ready to start TLS\r\n"));
    assert_eq!(s.receive(b"more plaintext\r\n", &mut sink), 16);
    assert!(!s.has_output());
    s.tls_started(tls_info());
    assert_eq!(s.tls(), Some(&tls_info()));
    assert_eq!(s.helo(), None, "RFC 3207 §4.2: EHLO is forgotten");
    assert!(!s.in_transaction());
    s.receive(b"NOOP\r\n", &mut sink);
    assert_eq!(output(&mut s), "250 2.0.0 Ok\r\n");
}

#[test]
fn tls_failure_closes() {
    let mut s = session();
    let mut sink = Vec::new();
    s.receive(b"STARTTLS\r\n", &mut sink);
    assert_eq!(s.poll_action(), Some(Action::StartTls));
    s.tls_failed();
    assert!(s.is_closed());
    assert_eq!(s.poll_action(), Some(Action::Close));
}

#[test]
fn timeouts_follow_the_state() {
    let mut s = session();
    let mut sink = Vec::new();
    assert_eq!(s.timeout(), Duration::from_secs(300));
    s.receive(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n", &mut sink);
    s.poll_action();
    s.recipient_checked(RcptVerdict::Accept);
    s.receive(b"DATA\r\nabc", &mut sink);
    assert_eq!(s.timeout(), Duration::from_secs(180), "RFC 5321 §4.5.3.2.5: data block");
    s.receive(b"\r\n.\r\n", &mut sink);
    assert_eq!(s.poll_action(), Some(Action::MessageComplete));
    assert_eq!(sink, b"abc\n");
    assert_eq!(s.message_sizes(), (4, 5));
    s.message_stored(StoreOutcome::Accepted { queue_id: "Q9".into() });
    assert_eq!(s.timeout(), Duration::from_secs(300));
    s.receive(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n", &mut sink);
    s.poll_action();
    s.recipient_checked(RcptVerdict::Accept);
    s.receive(b"BDAT 10\r\nabc", &mut sink);
    assert_eq!(s.timeout(), Duration::from_secs(180), "inside a BDAT chunk");
    s.timed_out();
    assert!(s.is_closed());
    assert!(output(&mut s).ends_with("421 4.4.2 mx.test Timeout\r\n"));
    assert_eq!(s.receive(b"defg", &mut sink), 0, "nothing after close");
}

#[test]
fn late_answers_after_a_close_are_ignored() {
    let mut s = session();
    let mut sink = Vec::new();
    s.receive(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n", &mut sink);
    assert!(matches!(s.poll_action(), Some(Action::CheckRecipient { .. })));
    s.timed_out();
    s.recipient_checked(RcptVerdict::Accept);
    assert!(s.envelope().recipients.is_empty());
    assert_eq!(s.poll_action(), Some(Action::Close));
}

#[test]
fn output_is_bounded_by_back_pressure() {
    let mut cfg = config();
    cfg.commands_max = 100_000;
    let mut s = Session::new(Rc::new(cfg), peer(), None);
    output(&mut s);
    let mut sink = Vec::new();
    let input = b"EHLO c.test\r\n".repeat(5000);
    let mut pos = 0;
    let mut rounds = 0;
    let mut total = 0;
    while pos < input.len() {
        let n = s.receive(&input[pos..], &mut sink);
        let mut out = Vec::new();
        s.take_output(&mut out);
        assert!(out.len() < OUTPUT_BYTES_MAX + 512, "queued {} octets", out.len());
        assert!(n > 0 || !out.is_empty(), "stalled");
        total += out.len();
        pos += n;
        rounds += 1;
    }
    assert!(rounds > 1, "back-pressure never engaged");
    assert_eq!(total % 5000, 0, "every EHLO answered in full");
}

#[test]
fn action_debug_never_shows_the_password() {
    let a = Action::Authenticate { mechanism: Mechanism::Plain, authzid: String::new(), authcid: "alice".into(), password: "hunter2".into() };
    let text = format!("{a:?}");
    assert!(text.contains("alice") && !text.contains("hunter2"), "{text}");
}

#[test]
fn config_from_smtp_settings() {
    let mut smtp = SmtpConfig { command_line_max: 10, auth_without_tls: true, ..SmtpConfig::default() };
    let c = SessionConfig::from_config(&smtp, "mail.example", ListenerKind::Submission, true);
    assert_eq!(c.command_line_max, 512, "clamped to RFC 5321 §4.5.3.1.4");
    assert_eq!(c.message_size_max, 30_000_000);
    assert_eq!(c.recipients_max, 1000);
    assert!(c.auth_without_tls && c.tls_available && c.requires_auth());
    assert_eq!(c.hostname, "mail.example");
    smtp.command_line_max = 1 << 40;
    assert_eq!(SessionConfig::from_config(&smtp, "m", ListenerKind::Mx, false).command_line_max, 64 << 10);
}

#[test]
fn driver_replies_cannot_break_the_protocol() {
    let mut s = session();
    let mut sink = Vec::new();
    s.receive(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n", &mut sink);
    s.poll_action();
    // A "rejection" with a 2xx code would read as acceptance.
    s.recipient_checked(RcptVerdict::Reject(Reply::new(250, (2, 0, 0), "oops\r\n250 injected")));
    assert!(output(&mut s).ends_with("451 4.3.0 Local error in processing\r\n"));
    s.receive(b"RCPT TO:<c@mx.test>\r\n", &mut sink);
    s.poll_action();
    s.recipient_checked(RcptVerdict::Reject(Reply::new(550, (5, 7, 1), "no\r\n250 injected")));
    assert!(output(&mut s).ends_with("550 5.7.1 no  250 injected\r\n"));
}

/// With `check_sender`, MAIL waits for the driver: a refusal leaves no
/// transaction open (RCPT then needs MAIL), an acceptance opens one.
#[test]
fn mail_waits_for_the_sender_check_when_asked() {
    let mut s = Session::new(Rc::new(SessionConfig { check_sender: true, ..config() }), peer(), None);
    let mut sink = Vec::new();
    let input = b"EHLO c.test\r\nMAIL FROM:<bad@c.test>\r\nRCPT TO:<b@mx.test>\r\n";
    let n = s.receive(input, &mut sink);
    assert_eq!(&input[n..], b"RCPT TO:<b@mx.test>\r\n", "stops at the outstanding check");
    match s.poll_action() {
        Some(Action::CheckSender { sender }) => assert_eq!(sender.unwrap().to_string(), "bad@c.test"),
        other => panic!("{other:?}"),
    }
    s.sender_checked(Some(Reply::fixed(550, (5, 7, 23), "SPF validation failed")));
    assert!(!s.in_transaction());
    assert_eq!(s.receive(&input[n..], &mut sink), input.len() - n);
    let out = output(&mut s);
    assert!(out.ends_with("550 5.7.23 SPF validation failed\r\n503 5.5.1 Need MAIL command\r\n") || out.contains("550 5.7.23 SPF validation failed\r\n503"), "{out}");
    let n = s.receive(b"MAIL FROM:<>\r\n", &mut sink);
    assert_eq!(n, 14);
    assert!(matches!(s.poll_action(), Some(Action::CheckSender { sender: None })));
    s.sender_checked(None);
    assert!(s.in_transaction());
    assert!(output(&mut s).ends_with("250 2.1.0 Ok\r\n"));
}
