//! Plays an arbitrary server against the SMTP/LMTP client
//! (`cargo fuzz run smtp_client`). The first byte picks LMTP, the TLS
//! policy, AUTH and whether STARTTLS "succeeds"; the second the split
//! size. Checks: `receive` never consumes more than given, unconsumed
//! input stays below the reply-line limit, every command the client
//! writes is CRLF-terminated lines, the loop terminates, and a finished
//! transaction has one outcome per recipient, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varan_core::queue::{BodyInfo, Notify, Ret};
use varan_protocols::smtp::client::{Client, ClientAuth, ClientConfig, ClientEvent, ClientRecipient, TlsPolicy, Transaction, REPLY_LINE_BYTES_MAX};

fn tx() -> Transaction {
    let rcpt = |a: &str| ClientRecipient { address: a.into(), orcpt: Some(format!("rfc822;{a}")), notify: Notify { success: true, explicit: true, ..Notify::default() } };
    Transaction {
        sender: "s@x.example".into(),
        recipients: vec![rcpt("a@y.example"), rcpt("b@y.example"), rcpt("c@y.example")],
        envid: Some("e+1".into()),
        ret: Some(Ret::Full),
        body: BodyInfo { eight_bit: true, smtputf8: false, size: 10 },
    }
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(2));
    let flags = head.first().copied().unwrap_or(0);
    let split = usize::from(head.get(1).copied().unwrap_or(0)).max(1);
    let tls = match flags & 3 {
        0 => TlsPolicy::Never,
        1 => TlsPolicy::Opportunistic,
        _ => TlsPolicy::Required,
    };
    let auth = (flags & 4 != 0).then(|| ClientAuth { username: "u".into(), password: "p".into() });
    let mut c = Client::new(ClientConfig { helo_name: "h.example".into(), lmtp: flags & 8 != 0, tls, auth, implicit_tls: false });
    let tls_ok = flags & 16 != 0;
    let mut pending = Vec::new();
    let mut sent = false;
    for chunk in body.chunks(split) {
        pending.extend_from_slice(chunk);
        let n = c.receive(&pending);
        assert!(n <= pending.len());
        pending.drain(..n);
        assert!(pending.len() < REPLY_LINE_BYTES_MAX);
        while let Some(ev) = c.poll_event() {
            match ev {
                ClientEvent::StartTls if tls_ok => c.tls_started(),
                ClientEvent::StartTls => c.tls_failed(),
                ClientEvent::Ready if !sent => {
                    sent = true;
                    c.send(tx());
                }
                ClientEvent::Ready => c.quit(),
                ClientEvent::SendContent => {
                    c.content(b"Subject: x\n\n.\n..\nend");
                    c.content_end();
                }
                ClientEvent::TransactionDone(r) => {
                    let idx: Vec<usize> = r.recipients.iter().map(|o| o.index).collect();
                    assert_eq!(idx, vec![0, 1, 2]);
                }
                ClientEvent::Failed(e) => {
                    assert!(e.as_reply().is_transient());
                }
                ClientEvent::Closed => {}
            }
        }
        let out = c.take_output();
        if !out.is_empty() {
            assert!(out.ends_with(b"\r\n"));
        }
    }
    c.eof();
});
