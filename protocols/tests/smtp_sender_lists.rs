//! `[protection.lists]` sender lists at MAIL (550 5.7.1) and the
//! allow-listed flag the driver sets for later checks.

mod common;

use std::rc::Rc;
use std::sync::Arc;

use common::{config, peer};
use varan_core::config::protect::{ListsConfig, SenderLists};
use varan_protocols::smtp::Session;

fn session(lists: Option<Arc<SenderLists>>) -> Session {
    let mut s = Session::new(Rc::new(config()), peer(), None);
    s.set_sender_lists(lists);
    s
}

fn run(s: &mut Session, input: &str) -> String {
    let mut sink = Vec::new();
    let n = s.receive(input.as_bytes(), &mut sink);
    assert_eq!(n, input.len());
    let mut out = Vec::new();
    s.take_output(&mut out);
    String::from_utf8(out).unwrap()
}

fn lists() -> Arc<SenderLists> {
    let c = ListsConfig { sender_deny: vec!["@evil.test".into(), "eve@c.test".into()], sender_allow: vec!["boss@evil.test".into()], ..Default::default() };
    Arc::new(SenderLists::compile(&c))
}

#[test]
fn denied_sender_gets_550_5_7_1_and_no_transaction() {
    let mut s = session(Some(lists()));
    run(&mut s, "EHLO c.test\r\n");
    let out = run(&mut s, "MAIL FROM:<x@EVIL.test>\r\n");
    assert_eq!(out, "550 5.7.1 <x@evil.test>: Sender address rejected: Access denied\r\n");
    assert!(!s.in_transaction());
    assert!(run(&mut s, "RCPT TO:<b@mx.test>\r\n").starts_with("503"), "no MAIL was accepted");
    assert!(run(&mut s, "MAIL FROM:<eve@c.test>\r\n").starts_with("550 5.7.1"));
    assert_eq!(s.error_count(), 1, "a policy refusal is not a protocol error; the 503 is");
}

#[test]
fn allow_list_wins_and_others_pass() {
    let mut s = session(Some(lists()));
    run(&mut s, "EHLO c.test\r\n");
    assert!(run(&mut s, "MAIL FROM:<boss@evil.test>\r\n").starts_with("250"));
    assert!(run(&mut s, "RSET\r\n").starts_with("250"));
    assert!(run(&mut s, "MAIL FROM:<adam@c.test>\r\n").starts_with("250"));
    assert!(run(&mut s, "RSET\r\n").starts_with("250"));
    assert!(run(&mut s, "MAIL FROM:<>\r\n").starts_with("250"), "the null sender is on no list");
}

#[test]
fn without_lists_everything_passes_and_allow_listed_flag_is_kept() {
    let mut s = session(None);
    assert!(!s.allow_listed());
    s.set_allow_listed(true);
    assert!(s.allow_listed());
    run(&mut s, "EHLO c.test\r\n");
    assert!(run(&mut s, "MAIL FROM:<x@evil.test>\r\n").starts_with("250"));
    assert!(s.allow_listed(), "EHLO/MAIL do not reset the client's flag");
}
