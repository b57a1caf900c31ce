use super::*;
use proptest::prelude::*;

fn config() -> ClientConfig {
    ClientConfig { helo_name: "out.example".into(), lmtp: false, tls: TlsPolicy::Opportunistic, auth: None, implicit_tls: false }
}

fn rcpt(a: &str) -> ClientRecipient {
    ClientRecipient { address: a.into(), orcpt: None, notify: Notify::default() }
}

fn tx(rcpts: &[&str]) -> Transaction {
    Transaction {
        sender: "s@out.example".into(),
        recipients: rcpts.iter().map(|a| rcpt(a)).collect(),
        envid: None,
        ret: None,
        body: BodyInfo { eight_bit: false, smtputf8: false, size: 10 },
    }
}

/// Feeds server text (whole or byte at a time), returns events and the
/// client's output so far.
struct Harness {
    c: Client,
    pending: Vec<u8>,
    bytewise: bool,
}

impl Harness {
    fn new(config: ClientConfig, bytewise: bool) -> Self {
        Self { c: Client::new(config), pending: Vec::new(), bytewise }
    }
    fn server(&mut self, text: &str) -> Vec<ClientEvent> {
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = if self.bytewise { bytes.chunks(1).collect() } else { vec![bytes] };
        for chunk in chunks {
            self.pending.extend_from_slice(chunk);
            let n = self.c.receive(&self.pending);
            self.pending.drain(..n);
        }
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }
    fn out(&mut self) -> String {
        String::from_utf8(self.c.take_output()).unwrap()
    }
}

const EHLO_FULL: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n";

fn codes(r: &TransactionResult) -> Vec<u16> {
    r.recipients.iter().map(|o| o.reply.code).collect()
}

fn done(events: &[ClientEvent]) -> TransactionResult {
    events
        .iter()
        .find_map(|e| match e {
            ClientEvent::TransactionDone(r) => Some(r.clone()),
            _ => None,
        })
        .expect("transaction done")
}

fn pipelined_delivery(bytewise: bool) {
    let mut h = Harness::new(config(), bytewise);
    assert!(h.server("220 mx.example ESMTP\r\n").is_empty());
    assert_eq!(h.out(), "EHLO out.example\r\n");
    assert_eq!(h.server(EHLO_FULL), vec![ClientEvent::Ready]);
    let mut t = tx(&["a@x", "b@x", "c@x"]);
    t.body.eight_bit = true;
    t.envid = Some("id+1=".into());
    t.ret = Some(Ret::Full);
    t.recipients[1].notify = Notify { success: true, failure: true, explicit: true, ..Notify::default() };
    t.recipients[1].orcpt = Some("rfc822;b@x".into());
    h.c.send(t);
    assert_eq!(
        h.out(),
        "MAIL FROM:<s@out.example> SIZE=10 BODY=8BITMIME RET=FULL ENVID=id+2B1+3D\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x\r\nRCPT TO:<c@x>\r\nDATA\r\n"
    );
    let ev = h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n");
    assert_eq!(ev, vec![ClientEvent::SendContent]);
    h.c.content(b"Subject: x\n\n.dot\n");
    h.c.content_end();
    assert_eq!(h.out(), "Subject: x\r\n\r\n..dot\r\n.\r\n");
    let ev = h.server("250 2.0.0 queued\r\n");
    let r = done(&ev);
    assert_eq!(codes(&r), vec![250, 550, 250]);
    assert_eq!(r.recipients[1].reply.status(), "5.1.1");
    assert!(r.dsn_passed_on);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    h.c.quit();
    assert_eq!(h.out(), "QUIT\r\n");
    assert_eq!(h.server("221 bye\r\n"), vec![ClientEvent::Closed]);
}

#[test]
fn pipelined_delivery_whole() {
    pipelined_delivery(false);
}

#[test]
fn pipelined_delivery_byte_at_a_time() {
    pipelined_delivery(true);
}

#[test]
fn no_pipelining_one_command_at_a_time_and_helo_fallback() {
    let mut h = Harness::new(config(), false);
    h.server("220 old\r\n");
    h.out();
    assert!(h.server("502 5.5.1 EHLO not implemented\r\n").is_empty());
    assert_eq!(h.out(), "HELO out.example\r\n");
    assert_eq!(h.server("250 old\r\n"), vec![ClientEvent::Ready]);
    let mut t = tx(&["a@x", "b@x"]);
    t.body.eight_bit = true;
    t.recipients[0].notify = Notify { never: true, explicit: true, ..Notify::default() };
    h.c.send(t);
    // No extensions: no parameters at all.
    assert_eq!(h.out(), "MAIL FROM:<s@out.example>\r\n");
    h.server("250 ok\r\n");
    assert_eq!(h.out(), "RCPT TO:<a@x>\r\n");
    h.server("451 try later\r\n");
    assert_eq!(h.out(), "RCPT TO:<b@x>\r\n");
    h.server("250 ok\r\n");
    assert_eq!(h.out(), "DATA\r\n");
    assert_eq!(h.server("354 go\r\n"), vec![ClientEvent::SendContent]);
    h.c.content(b"\xe4\n");
    h.c.content_end();
    let r = done(&h.server("250 ok\r\n"));
    assert_eq!(codes(&r), vec![451, 250]);
    assert!(r.eight_bit_unannounced);
    assert!(!r.dsn_passed_on);
}

#[test]
fn mail_refused_pipelined_gives_every_recipient_the_mail_reply() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server(EHLO_FULL);
    h.out();
    h.c.send(tx(&["a@x", "b@x"]));
    h.out();
    let ev = h.server("553 5.7.1 sender rejected\r\n503 5.5.1 no mail\r\n503 5.5.1 no mail\r\n503 5.5.1 no valid recipients\r\n");
    let r = done(&ev);
    assert_eq!(codes(&r), vec![553, 553]);
    assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    // The next transaction starts with RSET.
    h.c.send(tx(&["c@x"]));
    assert!(h.out().starts_with("RSET\r\nMAIL FROM:"));
}

#[test]
fn data_refused_applies_to_accepted_recipients() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server(EHLO_FULL);
    h.c.send(tx(&["a@x", "b@x"]));
    let r = done(&h.server("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n451 4.3.0 later\r\n"));
    assert_eq!(codes(&r), vec![451, 550]);
}

#[test]
fn all_recipients_refused_and_broken_354() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server(EHLO_FULL);
    h.c.send(tx(&["a@x"]));
    h.out();
    // A broken server says 354 although no recipient was accepted: we end
    // the empty message and report the RCPT reply.
    assert!(h.server("250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n").is_empty());
    assert_eq!(h.out(), ".\r\n");
    let r = done(&h.server("250 ok\r\n"));
    assert_eq!(codes(&r), vec![550]);
}

#[test]
fn lmtp_one_reply_per_accepted_recipient() {
    let mut h = Harness::new(ClientConfig { lmtp: true, ..config() }, true);
    h.server("220 lmtp\r\n");
    assert_eq!(h.out(), "LHLO out.example\r\n");
    h.server("250-lmtp\r\n250 PIPELINING\r\n");
    h.c.send(tx(&["a@x", "b@x", "c@x"]));
    h.out();
    assert_eq!(h.server("250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n"), vec![ClientEvent::SendContent]);
    h.c.content(b"hi\n");
    h.c.content_end();
    assert!(h.server("250 2.0.0 a ok\r\n").is_empty());
    let r = done(&h.server("452 4.2.2 c over quota\r\n"));
    assert_eq!(codes(&r), vec![250, 550, 452]);
}

#[test]
fn lmtp_has_no_helo_fallback() {
    let mut h = Harness::new(ClientConfig { lmtp: true, ..config() }, false);
    h.server("220 lmtp\r\n");
    let ev = h.server("500 what\r\n");
    assert!(matches!(&ev[..], [ClientEvent::Failed(ClientError::Rejected { stage: "EHLO", .. })]));
}

#[test]
fn starttls_then_ehlo_again_and_injection_discarded() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server("250-x\r\n250 STARTTLS\r\n");
    assert_eq!(h.out(), "EHLO out.example\r\nSTARTTLS\r\n");
    // Bytes after the 220 (an injected reply) are dropped.
    let ev = h.server("220 go ahead\r\n250 injected\r\n");
    assert_eq!(ev, vec![ClientEvent::StartTls]);
    h.c.tls_started();
    assert_eq!(h.out(), "EHLO out.example\r\n");
    assert_eq!(h.server("250-x\r\n250 PIPELINING\r\n"), vec![ClientEvent::Ready]);
    assert!(h.c.tls_active());
    assert!(h.c.extensions().pipelining);
}

#[test]
fn starttls_refused_opportunistic_continues_required_fails() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server("250-x\r\n250 STARTTLS\r\n");
    assert_eq!(h.server("454 4.7.0 TLS not available\r\n"), vec![ClientEvent::Ready]);

    let mut h = Harness::new(ClientConfig { tls: TlsPolicy::Required, ..config() }, false);
    h.server("220 x\r\n");
    let ev = h.server("250-x\r\n250 STARTTLS\r\n454 4.7.0 no\r\n");
    assert!(matches!(&ev[..], [ClientEvent::Failed(ClientError::Rejected { stage: "STARTTLS", .. })]));

    let mut h = Harness::new(ClientConfig { tls: TlsPolicy::Required, ..config() }, false);
    h.server("220 x\r\n");
    assert_eq!(h.server("250 x\r\n"), vec![ClientEvent::Failed(ClientError::TlsUnavailable)]);
}

#[test]
fn auth_plain_and_login() {
    let auth = Some(ClientAuth { username: "u".into(), password: "p".into() });
    let mut h = Harness::new(ClientConfig { auth: auth.clone(), tls: TlsPolicy::Never, ..config() }, false);
    h.server("220 x\r\n");
    h.out();
    h.server("250-x\r\n250 AUTH LOGIN PLAIN\r\n");
    assert_eq!(h.out(), "AUTH PLAIN AHUAcA==\r\n");
    assert_eq!(h.server("235 2.7.0 ok\r\n"), vec![ClientEvent::Ready]);

    let mut h = Harness::new(ClientConfig { auth: auth.clone(), tls: TlsPolicy::Never, ..config() }, true);
    h.server("220 x\r\n");
    h.out();
    h.server("250-x\r\n250-AUTH=LOGIN\r\n250 8BITMIME\r\n");
    assert_eq!(h.out(), "AUTH LOGIN\r\n");
    h.server("334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.out(), "dQ==\r\n");
    h.server("334 UGFzc3dvcmQ6\r\n");
    assert_eq!(h.out(), "cA==\r\n");
    let ev = h.server("535 5.7.8 bad\r\n");
    assert!(matches!(&ev[..], [ClientEvent::Failed(ClientError::Rejected { stage: "AUTH", .. })]));
    assert!(!format!("{:?}", auth).contains("\"p\""));
}

#[test]
fn smtputf8_and_size_refused_locally() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server("250-x\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
    h.out();
    let mut t = tx(&["a@x"]);
    t.body.smtputf8 = true;
    h.c.send(t);
    let r = done(&h.server(""));
    assert_eq!(r.recipients[0].reply.code, 550);
    assert_eq!(r.recipients[0].reply.status(), "5.6.7");
    let mut t = tx(&["a@x"]);
    t.body.size = 101;
    h.c.send(t);
    let r = done(&h.server(""));
    assert_eq!(r.recipients[0].reply.status(), "5.3.4");
    assert_eq!(h.out(), "", "nothing was sent");
}

#[test]
fn too_many_recipients_are_deferred() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server(EHLO_FULL);
    h.out();
    let names: Vec<String> = (0..RECIPIENTS_PER_TRANSACTION_MAX + 2).map(|i| format!("r{i}@x")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    h.c.send(tx(&refs));
    assert_eq!(h.out().matches("RCPT TO").count(), RECIPIENTS_PER_TRANSACTION_MAX);
    let mut replies = String::from("250 ok\r\n");
    replies.push_str(&"250 ok\r\n".repeat(RECIPIENTS_PER_TRANSACTION_MAX));
    replies.push_str("354 go\r\n");
    h.server(&replies);
    h.c.content_end();
    let r = done(&h.server("250 ok\r\n"));
    assert_eq!(r.recipients.len(), RECIPIENTS_PER_TRANSACTION_MAX + 2);
    assert_eq!(r.recipients.last().unwrap().reply.code, 452);
}

#[test]
fn failures_greeting_garbage_eof_timeout() {
    let mut h = Harness::new(config(), false);
    let ev = h.server("554 5.7.1 go away\r\n");
    let ClientEvent::Failed(e) = &ev[0] else { panic!("{ev:?}") };
    assert!(e.as_reply().is_transient(), "connection-level refusals are retried");

    let mut h = Harness::new(config(), false);
    assert!(matches!(&h.server("HTTP/1.1 400\r\n")[..], [ClientEvent::Failed(ClientError::Garbage(_))]));

    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.c.eof();
    assert!(matches!(h.c.poll_event(), Some(ClientEvent::Failed(ClientError::Unexpected(_)))));

    let mut h = Harness::new(config(), false);
    assert_eq!(h.c.timeout(), Some(timeouts::GREETING));
    h.c.timed_out();
    assert_eq!(h.c.poll_event(), Some(ClientEvent::Failed(ClientError::TimedOut { stage: "greeting" })));
    assert_eq!(h.c.timeout(), None);
}

#[test]
fn xtext() {
    assert_eq!(xtext_encode(b"a+b=c d\xc3"), "a+2Bb+3Dc+20d+C3");
    assert_eq!(crate::smtp::xtext_decode(&xtext_encode(b"x+=\x01y")).unwrap(), b"x+=\x01y");
}

proptest! {
    /// Any server bytes, in any chunking: no panic, the consumed count is
    /// in range, and the client ends in a defined state.
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), split in 1usize..64, pipelining in any::<bool>()) {
        let mut c = Client::new(config());
        let _ = c.receive(b"220 x\r\n");
        let ehlo = if pipelining { "250-x\r\n250-PIPELINING\r\n250 DSN\r\n" } else { "250 x\r\n" };
        let _ = c.receive(ehlo.as_bytes());
        while c.poll_event().is_some() {}
        c.send(tx(&["a@x", "b@x"]));
        let mut pending = Vec::new();
        for chunk in data.chunks(split) {
            pending.extend_from_slice(chunk);
            let n = c.receive(&pending);
            prop_assert!(n <= pending.len());
            pending.drain(..n);
            while let Some(ev) = c.poll_event() {
                match ev {
                    ClientEvent::SendContent => { c.content(b"x\n"); c.content_end(); }
                    ClientEvent::Ready => c.quit(),
                    _ => {}
                }
            }
            prop_assert!(pending.len() < REPLY_LINE_BYTES_MAX);
        }
        c.eof();
    }

    /// Valid replies with random codes: every recipient gets an outcome.
    #[test]
    fn every_recipient_gets_an_outcome(codes in proptest::collection::vec(prop_oneof![Just(250u16), Just(451), Just(550)], 4), data_ok in any::<bool>()) {
        let mut h = Harness::new(config(), false);
        h.server("220 x\r\n");
        h.server(EHLO_FULL);
        h.c.send(tx(&["a@x", "b@x", "c@x"]));
        let mut text = format!("{} mail\r\n", codes[0]);
        for c in &codes[1..] { text.push_str(&format!("{c} rcpt\r\n")); }
        let any_ok = codes[0] == 250 && codes[1..].contains(&250);
        text.push_str(if any_ok && data_ok { "354 go\r\n" } else { "554 no\r\n" });
        let mut ev = h.server(&text);
        if ev.contains(&ClientEvent::SendContent) {
            h.c.content_end();
            ev = h.server("250 ok\r\n");
        }
        let r = done(&ev);
        prop_assert_eq!(r.recipients.iter().map(|o| o.index).collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}

#[test]
fn rset_waits_for_its_reply_without_pipelining() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server("250 x\r\n");
    h.out();
    h.c.send(tx(&["a@x"]));
    h.out();
    // MAIL accepted, RCPT accepted, DATA refused: the transaction is open.
    h.server("250 ok\r\n");
    h.server("250 ok\r\n");
    let r = done(&h.server("451 4.3.0 not now\r\n"));
    assert_eq!(codes(&r), vec![451]);
    assert_eq!(h.out(), "RCPT TO:<a@x>\r\nDATA\r\n");
    h.c.send(tx(&["b@x"]));
    assert_eq!(h.out(), "RSET\r\n", "MAIL waits for the RSET reply");
    h.server("250 reset\r\n");
    assert_eq!(h.out(), "MAIL FROM:<s@out.example>\r\n");
}

#[test]
fn empty_transaction_is_done_at_once() {
    let mut h = Harness::new(config(), false);
    h.server("220 x\r\n");
    h.server(EHLO_FULL);
    h.out();
    h.c.send(tx(&[]));
    let ev = h.server("");
    assert_eq!(done(&ev).recipients.len(), 0);
    assert_eq!(h.out(), "");
}
