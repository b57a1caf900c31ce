//! SMTP session transcripts: scripted client/server exchanges, each run
//! whole, one byte at a time and in uneven chunks (see `common`).

mod common;

use common::{config, transcript, Transcript};
use varan_core::config::BareNewlines;
use varan_protocols::smtp::{BodyType, DsnNotify, DsnRet, ListenerKind};

const PRELUDE: &str = "
    S: 220 mx.test ESMTP Varan
    C: EHLO client.test
    S: 250*
    C: MAIL FROM:<sender@client.test>
    S: 250 2.1.0 Ok
    C: RCPT TO:<bob@mx.test>
    S: 250 2.1.5 Ok
";

fn with_prelude(rest: &str) -> String {
    format!("{PRELUDE}{rest}")
}

#[test]
fn full_transaction() {
    let o = transcript(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: Hello
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        C: QUIT
        S: 221 2.0.0 mx.test closing connection
        -- closed
        ",
    ));
    assert_eq!(o.messages.len(), 1);
    let m = &o.messages[0];
    assert_eq!(m.content, b"Subject: hi\n\nHello\n");
    assert_eq!(m.sizes, (19, 22));
    assert_eq!(m.envelope.mail_from.as_ref().unwrap().to_string(), "sender@client.test");
    assert_eq!(m.envelope.recipients[0].address.to_string(), "bob@mx.test");
    assert_eq!(o.actions, ["CheckRecipient { address: EmailAddress { local: \"bob\", domain: \"mx.test\" }, index: 0 }", "MessageComplete", "Close"]);
    assert!(o.closed);
    assert_eq!(o.helo.as_deref(), Some("client.test"));
}

#[test]
fn two_messages_in_one_session() {
    let o = transcript(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: one
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        C: MAIL FROM:<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<carol@mx.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as Q2
        ",
    ));
    assert_eq!(o.messages.len(), 2);
    assert_eq!(o.messages[1].content, b"", "'.' right after 354 is an empty message");
    assert_eq!(o.messages[1].envelope.mail_from, None);
    assert_eq!(o.messages[1].envelope.recipients.len(), 1, "the first transaction's recipients are gone");
}

#[test]
fn ehlo_and_helo() {
    let o = transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: MAIL FROM:<a@client.test>
        S: 503 5.5.1 Send HELO/EHLO first
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        C: HELO other.test
        S: 250 mx.test
        C: MAIL FROM:<a@client.test> SIZE=100
        S: 555 5.5.4 Unsupported parameter
        C: ehlo
        S: 501 Syntax: EHLO hostname
        C: helo
        S: 501 Syntax: HELO hostname
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: EhLo again.test
        S: 250*
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Need MAIL command
        ",
    );
    assert_eq!(o.helo.as_deref(), Some("again.test"));
}

#[test]
fn pipelined_group_in_one_write() {
    // RFC 2920 §3.1: MAIL, RCPTs and DATA in one packet; content follows
    // the 354. `C~` puts it all in one segment, fed whole in one run.
    let o = transcript(
        r"
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C~ MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.test>\r\nRCPT TO:<unknown@mx.test>\r\nRCPT TO:<c@mx.test>\r\nDATA\r\n
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 550 5.1.1 Recipient address rejected: user unknown
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C~ body\r\n.\r\nMAIL FROM:<d@client.test>\r\nRSET\r\nQUIT\r\n
        S: 250 2.0.0 Ok: queued as Q1
        S: 250 2.1.0 Ok
        S: 250 2.0.0 Ok
        S: 221 2.0.0 mx.test closing connection
        ",
    );
    assert_eq!(o.messages[0].envelope.recipients.len(), 2);
    assert!(o.actions.iter().any(|a| a.contains("unknown") && a.contains("index: 1")));
    assert!(o.actions.iter().any(|a| a.contains("\"c\"") && a.contains("index: 1")));
}

#[test]
fn data_without_recipients_leaves_content_as_commands() {
    let o = transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: DATA
        S: 503 5.5.1 Need MAIL command
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<unknown@mx.test>
        S: 550 5.1.1 Recipient address rejected: user unknown
        C: DATA
        S: 554 5.5.1 No valid recipients
        C: Subject: x
        S: 500 5.5.2 Command unrecognized
        C: .
        S: 500 5.5.2 Command unrecognized
        C: RSET
        S: 250 2.0.0 Ok
        ",
    );
    assert!(o.messages.is_empty());
    assert_eq!(o.sink_begins, 0);
}

#[test]
fn dot_stuffing_is_undone() {
    let o = transcript(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: ..leading
        C: ...
        C: . not the end
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        ",
    ));
    assert_eq!(o.messages[0].content, b".leading\n..\n not the end\n");
}

#[test]
fn size_parameter_and_streaming_limit() {
    let mut cfg = config();
    cfg.message_size_max = 10;
    let o = Transcript::new(cfg).run(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<a@client.test> SIZE=11
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@client.test> SIZE=10
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        # 8 octets + CRLF = 10: exactly the limit
        C: 12345678
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: 123456789
        C: and more lines that are not written to the sink
        C: .
        S: 552 5.3.4 Message too big
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Need MAIL command
        ",
    );
    assert_eq!(o.messages.len(), 1);
    assert_eq!(o.messages[0].sizes, (9, 10));
}

#[test]
fn recipients_max() {
    let mut cfg = config();
    cfg.recipients_max = 2;
    let o = Transcript::new(cfg).run(&with_prelude(
        "
        C: RCPT TO:<unknown@mx.test>
        S: 550 5.1.1 Recipient address rejected: user unknown
        C: RCPT TO:<carol@mx.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<dave@mx.test>
        S: 452 4.5.3 Too many recipients
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        ",
    ));
    assert_eq!(o.messages[0].envelope.recipients.len(), 2);
    assert!(!o.actions.iter().any(|a| a.contains("dave")), "no lookup beyond the limit");
}

#[test]
fn bdat_chunks_with_crlf_split_across_chunks() {
    let o = transcript(&with_prelude(
        r"
        C~ BDAT 3\r\nab\r
        S: 250 2.0.0 3 octets received
        C~ BDAT 4\r\n\ncd\r
        S: 250 2.0.0 4 octets received
        C~ BDAT 16 LAST\r\n\nMAIL FROM:<x>\r\n
        S: 250 2.0.0 Ok: queued as Q1
        C: DATA
        S: 503 5.5.1 Need MAIL command
        ",
    ));
    assert_eq!(o.messages[0].content, b"ab\ncd\nMAIL FROM:<x>\n");
    assert_eq!(o.messages[0].sizes, (20, 23));
}

#[test]
fn bdat_sequencing() {
    let o = transcript(
        r"
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        # Without a transaction the chunk is still consumed, then refused.
        C~ BDAT 10\r\nNOOP\r\nXX\r\n
        S: 503 5.5.1 Need MAIL command
        C: BDAT
        S: 501 5.5.4 Syntax: BDAT size [LAST]
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C~ BDAT 2\r\nab
        S: 554 5.5.1 No valid recipients
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Ok
        C~ BDAT 2\r\nab
        S: 250 2.0.0 2 octets received
        C: RCPT TO:<c@mx.test>
        S: 503 5.5.1 RCPT not allowed after BDAT
        C: DATA
        S: 503 5.5.1 DATA not allowed after BDAT
        C: BDAT 0 LAST
        S: 250 2.0.0 Ok: queued as Q1
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Ok
        C: BDAT 0 LAST
        S: 250 2.0.0 Ok: queued as Q2
        ",
    );
    assert_eq!(o.messages[0].content, b"ab");
    assert_eq!(o.messages[1].content, b"");
}

#[test]
fn bdat_over_size_aborts_the_transaction() {
    let mut cfg = config();
    cfg.message_size_max = 10;
    let o = Transcript::new(cfg).run(&with_prelude(
        r"
        C~ BDAT 8\r\n12345678
        S: 250 2.0.0 8 octets received
        C~ BDAT 8\r\n12345678
        S: 552 5.3.4 Message too big
        C~ BDAT 2 LAST\r\nab
        S: 503 5.5.1 Need MAIL command
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        ",
    ));
    assert!(o.messages.is_empty());
}

#[test]
fn rset_aborts_bdat() {
    let o = transcript(&with_prelude(
        r"
        C~ BDAT 3\r\nabc
        S: 250 2.0.0 3 octets received
        C: RSET
        S: 250 2.0.0 Ok
        C~ BDAT 3 LAST\r\nabc
        S: 503 5.5.1 Need MAIL command
        ",
    ));
    assert!(o.messages.is_empty());
}

fn auth_config() -> common::Transcript {
    let mut cfg = config();
    cfg.kind = ListenerKind::Smtps;
    Transcript::new(cfg).implicit_tls()
}

#[test]
fn auth_plain_and_login() {
    let o = auth_config().run(
        r"
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 AUTH PLAIN LOGIN
        C: MAIL FROM:<alice@mx.test>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN AGFsaWNlAHdyb25n
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN
        S~ 334\x20
        C: *
        S: 501 5.0.0 Authentication cancelled
        C: AUTH PLAIN
        S~ 334\x20
        C: !!not-base64!!
        S: 501 5.5.2 Invalid base64 data
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Unrecognized authentication mechanism
        C: AUTH PLAIN AGFsaWNlAHRlbXBmYWls
        S: 454 4.7.0 Temporary authentication failure
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: YWxpY2U=
        S: 334 UGFzc3dvcmQ6
        C: c2VjcmV0
        S: 235 2.7.0 Authentication successful
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 Already authenticated
        C: MAIL FROM:<alice@mx.test>
        S: 250 2.1.0 Ok
        ",
    );
    assert_eq!(o.authenticated.as_deref(), Some("alice"));
    for a in &o.actions {
        assert!(!a.contains("secret") && !a.contains("wrong") && !a.contains("tempfail"), "password in Debug: {a}");
    }
    assert!(o.actions.iter().any(|a| a.contains("mechanism: Login") && a.contains("<redacted>")));
}

#[test]
fn auth_plain_challenge_and_login_initial_response() {
    let o = auth_config().run(
        r"
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: AUTH LOGIN YWxpY2U=
        S: 334 UGFzc3dvcmQ6
        C: d3Jvbmc=
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN
        S~ 334\x20
        C: AGFsaWNlAHNlY3JldA==
        S: 235 2.7.0 Authentication successful
        ",
    );
    assert_eq!(o.authenticated.as_deref(), Some("alice"));
}

#[test]
fn auth_failures_close_the_session() {
    let o = auth_config().run(
        r"
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: AUTH PLAIN AGFsaWNlAHdyb25n
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: YWxpY2U=
        S: 334 UGFzc3dvcmQ6
        C: d3Jvbmc=
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN AGFsaWNlAHdyb25n
        S: 421 4.7.0 mx.test Too many authentication failures
        -- closed
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        ",
    );
    assert!(o.closed);
    assert_eq!(o.authenticated, None);
}

#[test]
fn auth_sequence_rules() {
    let mut cfg = config();
    cfg.auth_without_tls = true;
    Transcript::new(cfg).run(
        "
        S: 220 mx.test ESMTP Varan
        C: HELO client.test
        S: 250 mx.test
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 Send EHLO first
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 AUTH not permitted during a mail transaction
        ",
    );
    transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        ",
    );
}

#[test]
fn long_sasl_line() {
    let long = "A".repeat(600);
    auth_config().run(&format!(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: AUTH PLAIN
        S~ 334\\x20
        C: {long}
        S: 500 5.5.6 Line too long
        C: NOOP
        S: 250 2.0.0 Ok
        "
    ));
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let o = transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: STARTTLS extra
        S: 501 5.5.4 No parameters allowed
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: STARTTLS
        C: MAIL FROM:<injected@evil.test>
        C: RCPT TO:<victim@mx.test>
        S: 220 2.0.0 Ready to start TLS
        -- tls
        C: MAIL FROM:<a@client.test>
        S: 503 5.5.1 Send HELO/EHLO first
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 AUTH PLAIN LOGIN
        C: STARTTLS
        S: 503 5.5.1 TLS already active
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Need MAIL command
        ",
    );
    assert!(!o.actions.iter().any(|a| a.contains("victim")), "{:?}", o.actions);
    assert_eq!(o.actions[0], "StartTls");
}

#[test]
fn starttls_not_available_without_certificate() {
    let mut cfg = config();
    cfg.tls_available = false;
    Transcript::new(cfg).run(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 DSN
        C: STARTTLS
        S: 502 5.5.1 STARTTLS not available
        ",
    );
}

#[test]
fn submission_requires_tls_then_auth() {
    let mut cfg = config();
    cfg.kind = ListenerKind::Submission;
    let o = Transcript::new(cfg).run(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<alice@mx.test>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        -- tls
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<alice@mx.test>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 235 2.7.0 Authentication successful
        C: MAIL FROM:<alice@mx.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<someone@elsewhere.test>
        S: 250 2.1.5 Ok
        ",
    );
    assert_eq!(o.authenticated.as_deref(), Some("alice"));
}

#[test]
fn long_command_lines() {
    // 512 octets including CRLF is the limit (RFC 5321 §4.5.3.1.4).
    let fits = format!("NOOP {}", "x".repeat(505));
    let too_long = format!("NOOP {}", "x".repeat(506));
    let huge = format!("NOOP {}", "x".repeat(5000));
    transcript(&format!(
        "
        S: 220 mx.test ESMTP Varan
        C: {fits}
        S: 250 2.0.0 Ok
        C: {too_long}
        S: 500 5.5.6 Line too long
        C: {huge}
        S: 500 5.5.6 Line too long
        C: NOOP
        S: 250 2.0.0 Ok
        "
    ));
}

#[test]
fn errors_max_closes_with_421() {
    let o = transcript(
        r"
        S: 220 mx.test ESMTP Varan
        C: FOO
        S: 500 5.5.2 Command unrecognized
        C:
        S: 500 5.5.2 Command unrecognized
        C~ NOOP a\0b\r\n
        S: 500 5.5.2 Invalid character in command
        C: NOOP é
        S: 500 5.5.2 Invalid character in command
        C: RCPT TO:<a@b.test>
        S: 503 5.5.1 Need MAIL command
        C: XYZZY
        S: 421 4.7.0 mx.test Too many errors
        -- closed
        C: NOOP
        ",
    );
    assert!(o.closed);
    assert_eq!(o.actions, ["Close"]);
}

#[test]
fn commands_max_closes_with_421() {
    let mut cfg = config();
    cfg.commands_max = 3;
    Transcript::new(cfg).run(
        "
        S: 220 mx.test ESMTP Varan
        C: NOOP
        S: 250 2.0.0 Ok
        C: NOOP
        S: 250 2.0.0 Ok
        C: NOOP
        S: 250 2.0.0 Ok
        C: NOOP
        S: 421 4.7.0 mx.test Too many commands
        -- closed
        ",
    );
}

#[test]
fn timeout_closes_with_421() {
    transcript(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: partial
        -- timeout
        S: 421 4.4.2 mx.test Timeout
        -- closed
        C: .
        ",
    ));
}

#[test]
fn shutdown_waits_for_the_command_boundary() {
    transcript(
        "
        S: 220 mx.test ESMTP Varan
        -- shutdown
        S: 421 4.3.2 mx.test Service shutting down
        -- closed
        ",
    );
    let o = transcript(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: part one
        -- shutdown
        C: part two
        C: .
        C: NOOP
        S: 250 2.0.0 Ok: queued as Q1
        S: 421 4.3.2 mx.test Service shutting down
        -- closed
        ",
    ));
    assert_eq!(o.messages[0].content, b"part one\npart two\n");
}

#[test]
fn smtputf8_addresses() {
    let o = transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<отправитель@client.test>
        S: 553 5.6.7 Non-ASCII address requires SMTPUTF8
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<пользователь@mx.test>
        S: 553 5.6.7 Non-ASCII address requires SMTPUTF8
        C: RSET
        S: 250 2.0.0 Ok
        C: MAIL FROM:<отправитель@client.test> SMTPUTF8
        S: 250 2.1.0 Ok
        C: RCPT TO:<пользователь@почта.рф>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Тема: привет
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        ",
    );
    let m = &o.messages[0];
    assert!(m.envelope.smtputf8);
    assert_eq!(m.envelope.recipients[0].address.to_string(), "пользователь@почта.рф");
    assert!(m.eight_bit);
}

#[test]
fn dsn_and_mail_parameters_reach_the_envelope() {
    let o = transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<a@client.test> RET=HDRS ENVID=abc+2Bdef BODY=8BITMIME SIZE=100 AUTH=<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@mx.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40mx.test
        S: 250 2.1.5 Ok
        C: RCPT TO:<c@mx.test> NOTIFY=NEVER
        S: 250 2.1.5 Ok
        C: RCPT TO:<d@mx.test> NOTIFY=NEVER,DELAY
        S: 501 5.5.4 Syntax error in parameters or arguments
        C: RCPT TO:<d@mx.test> XFOO=1
        S: 555 5.5.4 Unsupported parameter
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        ",
    );
    let e = &o.messages[0].envelope;
    assert_eq!(e.ret, Some(DsnRet::Hdrs));
    assert_eq!(e.envid.as_deref(), Some("abc+2Bdef"));
    assert_eq!(e.body, BodyType::EightBitMime);
    assert_eq!(e.size_hint, Some(100));
    assert_eq!(e.recipients[0].notify, Some(vec![DsnNotify::Success, DsnNotify::Failure]));
    assert_eq!(e.recipients[0].orcpt.as_deref(), Some("rfc822;b+40mx.test"));
    assert_eq!(e.recipients[1].notify, Some(vec![DsnNotify::Never]));
    assert_eq!(e.recipients[1].orcpt, None);
}

#[test]
fn paths_source_routes_postmaster_and_syntax() {
    let o = transcript(
        r#"
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:a@client.test
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [parameters]
        C: MAIL FROM:<a b@client.test>
        S: 553 5.1.3 Bad address syntax
        C: MAIL FROM: <@hop1.test,@hop2.test:sender@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<Postmaster>
        S: 250 2.1.5 Ok
        C: RCPT TO:<@relay.test:user@c.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<"john doe"@mx.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<>
        S: 553 5.1.3 Bad address syntax
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        "#,
    );
    let e = &o.messages[0].envelope;
    assert_eq!(e.mail_from.as_ref().unwrap().to_string(), "sender@client.test");
    let rcpts: Vec<String> = e.recipients.iter().map(|r| r.address.to_string()).collect();
    assert_eq!(rcpts, ["postmaster@mx.test", "user@c.test", "\"john doe\"@mx.test"]);
}

#[test]
fn informational_commands() {
    let o = transcript(
        r"
        S: 220 mx.test ESMTP Varan
        C: VRFY bob
        S: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax error in parameters or arguments
        C: EXPN staff
        S: 502 5.5.1 EXPN not available
        C: HELP
        S: 214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH
        C: noop whatever
        S: 250 2.0.0 Ok
        C: RSET now
        S: 501 5.5.4 No parameters allowed
        C: QUIT now
        S: 501 5.5.4 No parameters allowed
        C~ quit\n
        S: 221 2.0.0 mx.test closing connection
        ",
    );
    assert!(o.closed);
}

#[test]
fn store_outcomes() {
    transcript(
        "
        S: 220 mx.test ESMTP Varan
        C: EHLO client.test
        S: 250*
        C: MAIL FROM:<tempfail@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 451 4.3.0 Try again later
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Need MAIL command
        C: MAIL FROM:<permfail@client.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Ok
        C: BDAT 1 LAST
        C: x
        S: 554 5.6.0 Content rejected
        S: 500 5.5.2 Command unrecognized
        ",
    );
}

#[test]
fn bare_newlines_rejected_when_configured() {
    let mut cfg = config();
    cfg.bare_newlines = BareNewlines::Reject;
    let o = Transcript::new(cfg).run(&with_prelude(
        r"
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C~ line one\nline two\r\n.\r\n
        S: 550 5.5.2 Bare CR or LF not allowed (RFC 5321 §2.3.8)
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Need MAIL command
        ",
    ));
    assert!(o.messages.is_empty());
}

#[test]
fn bare_newlines_normalized_by_default() {
    let o = transcript(&with_prelude(
        r"
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C~ line one\nline two\rthree\r\n.\r\n
        S: 250 2.0.0 Ok: queued as Q1
        ",
    ));
    assert_eq!(o.messages[0].content, b"line one\nline two\nthree\n");
}

#[test]
fn sink_failure_answers_451() {
    let o = Transcript::new(config()).failing_sink().run(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: text
        C: .
        S: 451 4.3.0 Local error in processing
        C: NOOP
        S: 250 2.0.0 Ok
        ",
    ));
    assert!(o.messages.is_empty());
}

#[test]
fn eight_bit_content_with_body_7bit_is_noted() {
    let o = transcript(&with_prelude(
        "
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: café
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        ",
    ));
    assert_eq!(o.messages[0].envelope.body, BodyType::SevenBit);
    assert!(o.messages[0].eight_bit);
}
