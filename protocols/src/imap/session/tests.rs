//! Transcript tests of the IMAP session against the in-memory store: the
//! client's input goes through the real framer (whole, or one byte at a
//! time), every [`Step`] is carried out the way the driver does it, and
//! the server's output is checked line by line.

use std::sync::Arc;
use std::time::Duration;

use varan_core::mailstore::{MailStore, UserStore};
use varan_core::EmailAddress;
use varan_storage::mailstore::{MemoryStore, MemoryStoreOptions};

use super::{LoginOutcome, Session, SessionConfig, Step, SummaryCache};
use crate::imap::framer::{Frame, Framer};

const PASSWORD: &str = "secret";

struct Harness {
    session: Session,
    framer: Framer,
    store: Arc<MemoryStore>,
    /// Raw-line mode (AUTHENTICATE continuation, IDLE).
    line_mode: Option<Step>,
    out: Vec<u8>,
}

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mail.test".into(),
        tls_available: true,
        auth_without_tls: true,
        append_limit: 1 << 20,
        command_line_max: 64 << 10,
        auth_failures_max: 3,
        errors_max: 10,
        idle_timeout: Duration::from_secs(1800),
        login_timeout: Duration::from_secs(60),
        trash_folder: "Trash".into(),
    }
}

impl Harness {
    fn new() -> Harness {
        Self::with_store(Arc::new(MemoryStore::new(MemoryStoreOptions::default())))
    }

    fn with_store(store: Arc<MemoryStore>) -> Harness {
        let mut session = Session::new(Arc::new(config()), Arc::new(SummaryCache::new(1 << 20)), false);
        session.greeting();
        let framer = Framer::new(session.framer_limits());
        let mut h = Harness { session, framer, store, line_mode: None, out: Vec::new() };
        h.collect();
        let greeting = String::from_utf8(std::mem::take(&mut h.out)).unwrap();
        assert!(greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{greeting}");
        h
    }

    fn collect(&mut self) {
        let o = self.session.take_output();
        self.out.extend_from_slice(&o);
    }

    fn user(&self, name: &str) -> Arc<dyn UserStore> {
        self.store.user(&EmailAddress::parse(name).unwrap()).unwrap()
    }

    /// Carries out a step the way the driver does.
    fn run(&mut self, mut step: Step) {
        for _ in 0..10_000 {
            self.collect();
            step = match step {
                Step::Continue => return,
                Step::Work => self.session.work(),
                Step::Authenticate(c) => {
                    let outcome = if c.password == PASSWORD {
                        LoginOutcome::Ok { user: self.user(&c.authcid), username: c.authcid.clone(), quota_limit: Some(1 << 20), trash_extra: 64 << 10 }
                    } else {
                        LoginOutcome::Failed
                    };
                    self.session.login_result(outcome)
                }
                Step::SaslLine | Step::Idle => {
                    self.line_mode = Some(step);
                    return;
                }
                Step::StartTls => {
                    self.session.tls_started();
                    return;
                }
                Step::Close => return,
            };
            let limits = self.session.framer_limits();
            self.framer.set_limits(limits);
        }
        panic!("session looped");
    }

    /// Feeds client input in chunks of `chunk` bytes and returns all output.
    fn send_chunked(&mut self, input: &[u8], chunk: usize) -> String {
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                if let Some(mode) = self.line_mode.take() {
                    let (used, line) = self.framer.feed_line(&pending);
                    pending.drain(..used);
                    match line {
                        Some(line) => {
                            let step = match mode {
                                Step::SaslLine => self.session.sasl_line(line),
                                _ => self.session.idle_line(line),
                            };
                            self.run(step);
                        }
                        None => {
                            self.line_mode = Some(mode);
                            break;
                        }
                    }
                    continue;
                }
                let (used, frame) = self.framer.feed(&pending);
                pending.drain(..used);
                match frame {
                    Some(Frame::Continue) => {
                        self.session.continue_literal();
                        self.collect();
                    }
                    Some(f) => {
                        let step = self.session.frame(f);
                        self.run(step);
                    }
                    None => break,
                }
            }
        }
        self.collect();
        String::from_utf8_lossy(&std::mem::take(&mut self.out)).into_owned()
    }

    fn send(&mut self, input: &str) -> String {
        self.send_chunked(input.as_bytes(), usize::MAX)
    }

    fn login(&mut self) {
        let r = self.send("l1 LOGIN u1@test.org secret\r\n");
        assert!(r.contains("l1 OK [CAPABILITY"), "{r}");
    }

    fn idle_changed(&mut self) -> String {
        self.session.idle_changed();
        let step = self.session.work();
        self.run(step);
        String::from_utf8_lossy(&std::mem::take(&mut self.out)).into_owned()
    }
}

fn msg(subject: &str) -> Vec<u8> {
    format!("From: A <a@example.org>\r\nTo: b@test.org\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0300\r\nMessage-ID: <{subject}@x>\r\n\r\nHello {subject}\r\n")
        .into_bytes()
}

fn append(h: &mut Harness, mailbox: &str, m: &[u8]) {
    let mb = h.user("u1@test.org").open(mailbox).unwrap();
    mb.append(m, &[], Some(1_790_000_000)).unwrap();
}

#[test]
fn greeting_and_capability_before_login() {
    let mut h = Harness::new();
    let r = h.send("a CAPABILITY\r\n");
    assert!(r.starts_with("* CAPABILITY IMAP4rev1 IMAP4rev2"), "{r}");
    assert!(r.contains("AUTH=PLAIN") && r.contains("STARTTLS"), "{r}");
    assert!(r.contains("a OK"), "{r}");
}

#[test]
fn login_failures_then_bye() {
    let mut h = Harness::new();
    for i in 1..=2 {
        let r = h.send(&format!("t{i} LOGIN u1@test.org wrong\r\n"));
        assert!(r.contains(&format!("t{i} NO [AUTHENTICATIONFAILED]")), "{r}");
    }
    let r = h.send("t3 LOGIN u1@test.org wrong\r\n");
    assert!(r.contains("* BYE"), "{r}");
    assert!(h.session.is_closed());
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let mut h = Harness::new();
    // "\0u1@test.org\0secret"
    let r = h.send("a AUTHENTICATE PLAIN AHUxQHRlc3Qub3JnAHNlY3JldA==\r\n");
    assert!(r.contains("a OK"), "{r}");
    let mut h = Harness::new();
    let r = h.send("b AUTHENTICATE PLAIN\r\n");
    assert_eq!(r, "+ \r\n");
    let r = h.send("AHUxQHRlc3Qub3JnAHNlY3JldA==\r\n");
    assert!(r.contains("b OK"), "{r}");
    let mut h = Harness::new();
    h.send("c AUTHENTICATE PLAIN\r\n");
    let r = h.send("*\r\n");
    assert!(r.contains("c BAD"), "{r}");
}

#[test]
fn append_with_flags_and_date_then_select_fetch() {
    let mut h = Harness::new();
    h.login();
    let m = msg("one");
    let r = h.send_chunked(format!("a APPEND INBOX (\\Seen $Work) \"23-Nov-2026 18:36:35 +0000\" {{{}}}\r\n", m.len()).as_bytes(), usize::MAX);
    assert_eq!(r, "+ Ready for literal data\r\n");
    let mut rest = m.clone();
    rest.extend_from_slice(b"\r\n");
    let r = h.send_chunked(&rest, usize::MAX);
    assert!(r.starts_with("a OK [APPENDUID "), "{r}");
    let r = h.send("s SELECT INBOX\r\n");
    assert!(r.contains("* 1 EXISTS") && r.contains("[UIDVALIDITY ") && r.contains("s OK [READ-WRITE]"), "{r}");
    assert!(r.contains("$Work"), "keyword listed in FLAGS: {r}");
    let r = h.send("f FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    assert!(r.contains("INTERNALDATE \"23-Nov-2026 18:36:35 +0000\""), "{r}");
    assert!(r.contains(&format!("RFC822.SIZE {}", m.len())), "{r}");
    assert!(r.contains("BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: one\r\n\r\n"), "{r}");
    assert!(r.contains("f OK"), "{r}");
}

#[test]
fn byte_at_a_time_gives_the_same_transcript() {
    let script = "a LOGIN u1@test.org secret\r\nb SELECT INBOX\r\nc FETCH 1:* (UID FLAGS ENVELOPE)\r\nd UID SEARCH SUBJECT two\r\ne LOGOUT\r\n";
    let run = |chunk: usize| {
        let store = Arc::new(MemoryStore::new(MemoryStoreOptions::default()));
        let mut h = Harness::with_store(Arc::clone(&store));
        for s in ["one", "two"] {
            append(&mut h, "INBOX", &msg(s));
        }
        let out = h.send_chunked(script.as_bytes(), chunk);
        // UIDVALIDITY differs between stores; compare the rest.
        out.lines().filter(|l| !l.contains("UIDVALIDITY")).collect::<Vec<_>>().join("\n")
    };
    let whole = run(usize::MAX);
    assert!(whole.contains("* SEARCH 2"), "{whole}");
    assert!(whole.contains("ENVELOPE (\"Mon, 23 Nov 2026 10:00:00 +0300\" \"one\""), "{whole}");
    assert_eq!(whole, run(1));
    assert_eq!(whole, run(7));
}

#[test]
fn store_copy_move_expunge_with_uidplus() {
    let mut h = Harness::new();
    h.login();
    for s in ["a", "b", "c"] {
        append(&mut h, "INBOX", &msg(s));
    }
    h.send("s SELECT INBOX\r\n");
    let r = h.send("t STORE 1 +FLAGS (\\Flagged)\r\n");
    assert!(r.contains("* 1 FETCH (FLAGS (\\Flagged))"), "{r}");
    let r = h.send("t2 STORE 2 +FLAGS.SILENT (\\Seen)\r\n");
    assert!(!r.contains("FETCH"), "{r}");
    let r = h.send("c UID COPY 1:2 Trash\r\n");
    assert!(r.contains("c OK [COPYUID ") && r.contains(" 1:2 1:2]"), "{r}");
    let r = h.send("m MOVE 3 Archive\r\n");
    assert!(r.contains("* OK [COPYUID "), "{r}");
    assert!(r.contains("* 3 EXPUNGE"), "{r}");
    assert!(r.contains("m OK"), "{r}");
    let r = h.send("x STORE 1 +FLAGS.SILENT (\\Deleted)\r\ny EXPUNGE\r\n");
    assert!(r.contains("* 1 EXPUNGE") && r.contains("y OK"), "{r}");
    let r = h.send("z UID SEARCH ALL\r\n");
    assert!(r.contains("* SEARCH 2\r\n"), "{r}");
    let r = h.send("n COPY 1 Nowhere\r\n");
    assert!(r.contains("n NO [TRYCREATE]"), "{r}");
    let r = h.send("b FETCH 5 FLAGS\r\n");
    assert!(r.contains("b BAD"), "{r}");
}

#[test]
fn condstore_and_qresync() {
    let mut h = Harness::new();
    h.login();
    for s in ["a", "b"] {
        append(&mut h, "INBOX", &msg(s));
    }
    let r = h.send("e ENABLE QRESYNC\r\n");
    assert!(r.contains("* ENABLED QRESYNC"), "{r}");
    let r = h.send("s SELECT INBOX\r\n");
    let hm: u64 = r.split("[HIGHESTMODSEQ ").nth(1).unwrap().split(']').next().unwrap().parse().unwrap();
    let uv: u32 = r.split("[UIDVALIDITY ").nth(1).unwrap().split(']').next().unwrap().parse().unwrap();
    let r = h.send(&format!("t STORE 1 (UNCHANGEDSINCE {hm}) +FLAGS (\\Seen)\r\n"));
    assert!(r.contains("MODSEQ ("), "{r}");
    let r = h.send(&format!("u STORE 1 (UNCHANGEDSINCE {hm}) +FLAGS (\\Flagged)\r\n"));
    assert!(r.contains("u OK [MODIFIED 1]"), "{r}");
    let r = h.send(&format!("f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hm})\r\n"));
    assert!(r.contains("UID 1") && !r.contains("UID 2"), "{r}");
    let r = h.send("x STORE 2 +FLAGS.SILENT (\\Deleted)\r\ny EXPUNGE\r\n");
    assert!(r.contains("* VANISHED 2"), "{r}");
    h.send("c CLOSE\r\n");
    let r = h.send(&format!("q SELECT INBOX (QRESYNC ({uv} {hm}))\r\n"));
    assert!(r.contains("* VANISHED (EARLIER) 2"), "{r}");
    assert!(r.contains("* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ"), "{r}");
}

#[test]
fn list_with_special_use_and_utf7_names() {
    let mut h = Harness::new();
    h.login();
    let r = h.send("c CREATE &BB4EQgRHBFEEQgRL-/2026\r\n");
    assert!(r.contains("c OK"), "{r}");
    let r = h.send("l LIST \"\" *\r\n");
    assert!(r.contains("* LIST (\\HasChildren) \"/\" &BB4EQgRHBFEEQgRL-\r\n"), "{r}");
    assert!(r.contains("* LIST (\\HasNoChildren) \"/\" &BB4EQgRHBFEEQgRL-/2026\r\n"), "{r}");
    let r = h.send("l2 LIST \"\" \"\"\r\n");
    assert!(r.contains("* LIST (\\Noselect) \"/\" \"\""), "{r}");
    let r = h.send("u CREATE Sent2 (USE (\\Sent))\r\nl3 LIST (SPECIAL-USE) \"\" *\r\n");
    assert!(r.contains("\\Sent) \"/\" Sent2"), "{r}");
    let r = h.send("e ENABLE UTF8=ACCEPT\r\nl4 LIST \"\" \"Отч*\"\r\n");
    assert!(r.contains("\"Отчёты\""), "{r}");
    let r = h.send("d DELETE INBOX\r\n");
    assert!(r.contains("d NO"), "{r}");
    let r = h.send("s STATUS \"Отчёты/2026\" (MESSAGES UIDNEXT UNSEEN SIZE)\r\n");
    assert!(r.contains("(MESSAGES 0 UIDNEXT 1 UNSEEN 0 SIZE 0)"), "{r}");
}

#[test]
fn idle_reports_changes_and_done_ends_it() {
    let mut h = Harness::new();
    h.login();
    h.send("s SELECT INBOX\r\n");
    let r = h.send("i IDLE\r\n");
    assert_eq!(r, "+ idling\r\n");
    append(&mut h, "INBOX", &msg("new"));
    let r = h.idle_changed();
    assert_eq!(r, "* 1 EXISTS\r\n* 1 RECENT\r\n");
    let r = h.send("DONE\r\n");
    assert_eq!(r, "i OK IDLE terminated\r\n");
}

#[test]
fn search_keys_and_esearch() {
    let mut h = Harness::new();
    h.login();
    for s in ["alpha", "beta", "gamma"] {
        append(&mut h, "INBOX", &msg(s));
    }
    h.send("s SELECT INBOX\r\nt STORE 2 +FLAGS (\\Seen)\r\n");
    let r = h.send("a SEARCH UNSEEN\r\n");
    assert!(r.contains("* SEARCH 1 3\r\n"), "{r}");
    let r = h.send("b SEARCH OR SUBJECT alpha BODY gamma\r\n");
    assert!(r.contains("* SEARCH 1 3\r\n"), "{r}");
    let r = h.send("c UID SEARCH RETURN (MIN MAX COUNT) NOT SEEN\r\n");
    assert!(r.contains("* ESEARCH (TAG \"c\") UID MIN 1 MAX 3 COUNT 2"), "{r}");
    let r = h.send("d SEARCH RETURN (SAVE) SUBJECT beta\r\ne FETCH $ (UID)\r\n");
    assert!(r.contains("* 2 FETCH (UID 2)"), "{r}");
    let r = h.send("f SEARCH CHARSET KOI8-R TEXT x\r\n");
    assert!(r.contains("f NO [BADCHARSET"), "{r}");
    let r = h.send("g SORT (REVERSE SUBJECT) UTF-8 ALL\r\n");
    assert!(r.contains("* SORT 3 2 1"), "{r}");
    let r = h.send("h THREAD REFERENCES UTF-8 ALL\r\n");
    assert!(r.contains("* THREAD (1)(2)(3)"), "{r}");
}

#[test]
fn fetch_of_many_messages_is_chunked() {
    let mut h = Harness::new();
    h.login();
    let big = {
        let mut m = msg("big");
        m.extend(std::iter::repeat_n(b'x', 300_000));
        m.extend_from_slice(b"\r\n");
        m
    };
    for _ in 0..8 {
        append(&mut h, "INBOX", &big);
    }
    h.send("s SELECT INBOX\r\n");
    let step = h.session.frame(Frame::Command(b"f FETCH 1:* BODY.PEEK[]".to_vec()));
    assert!(matches!(step, Step::Work));
    let mut works = 0;
    let mut step = h.session.work();
    while matches!(step, Step::Work) {
        assert!(h.session.output_len() < super::OUTPUT_CHUNK_BYTES + 400_000, "output not bounded");
        h.session.take_output();
        works += 1;
        step = h.session.work();
    }
    assert!(works >= 1, "a 2.4 MB FETCH must come out in several chunks");
}

mod soup {
    use super::*;
    use proptest::prelude::*;

    /// Commands (valid, invalid, out of state, with literals) a hostile or
    /// confused client might send, in any order.
    const COMMANDS: &[&str] = &[
        "LOGIN u1@test.org secret",
        "LOGIN u1@test.org wrong",
        "AUTHENTICATE PLAIN AHUxQHRlc3Qub3JnAHNlY3JldA==",
        "SELECT INBOX",
        "EXAMINE Trash",
        "SELECT Nope",
        "FETCH 1:* (FLAGS UID ENVELOPE BODYSTRUCTURE)",
        "FETCH * BODY[1.2.HEADER]<0.10>",
        "UID FETCH 1:* (BINARY.PEEK[1] BINARY.SIZE[1]) (CHANGEDSINCE 1)",
        "FETCH 999 FLAGS",
        "STORE 1:* +FLAGS (\\Deleted $x)",
        "STORE 2 -FLAGS.SILENT (\\Seen)",
        "UID STORE 1:* (UNCHANGEDSINCE 1) FLAGS (\\Flagged)",
        "COPY 1:2 Archive",
        "UID MOVE 1 Junk",
        "EXPUNGE",
        "UID EXPUNGE 1:3",
        "SEARCH OR UNSEEN TEXT hello NOT DELETED",
        "UID SEARCH RETURN (ALL SAVE) ALL",
        "FETCH $ UID",
        "SORT (DATE REVERSE SIZE) UTF-8 ALL",
        "THREAD ORDEREDSUBJECT UTF-8 ALL",
        "LIST \"\" *",
        "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" * RETURN (CHILDREN STATUS (MESSAGES))",
        "LSUB \"\" *",
        "CREATE a/b/c",
        "RENAME a b",
        "DELETE b",
        "SUBSCRIBE Sent",
        "STATUS INBOX (MESSAGES UIDNEXT UNSEEN SIZE HIGHESTMODSEQ)",
        "APPEND INBOX (\\Seen) {12}\r\nSubject: x\r\n",
        "APPEND INBOX {5+}\r\nhello",
        "ENABLE QRESYNC UTF8=ACCEPT IMAP4rev2",
        "NAMESPACE",
        "GETQUOTAROOT INBOX",
        "CHECK",
        "UNSELECT",
        "CLOSE",
        "NOOP",
        "ID NIL",
        "IDLE",
        "DONE",
        "FROB",
        "",
        "\u{1}\u{2}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn random_command_sequences_never_panic(picks in proptest::collection::vec(0..COMMANDS.len(), 1..40), chunk in 1usize..64) {
            let store = Arc::new(MemoryStore::new(MemoryStoreOptions::default()));
            let mut h = Harness::with_store(Arc::clone(&store));
            for s in ["a", "b", "c"] {
                append(&mut h, "INBOX", &msg(s));
            }
            let mut script = Vec::new();
            for (i, p) in picks.iter().enumerate() {
                let c = COMMANDS[*p];
                if c == "DONE" || c.is_empty() {
                    script.extend_from_slice(c.as_bytes());
                } else {
                    script.extend_from_slice(format!("t{i} {c}").as_bytes());
                }
                script.extend_from_slice(b"\r\n");
            }
            let out = h.send_chunked(&script, chunk);
            if !out.is_empty() {
                prop_assert!(out.ends_with("\r\n"), "output ends mid-line: {out}");
            }
            for line in out.split("\r\n") {
                prop_assert!(!line.contains('\n') && !line.contains('\r'), "bare CR/LF in {line:?}");
            }
        }
    }
}

#[test]
fn quota_refuses_append_but_trash_has_extra_room() {
    let mut h = Harness::new();
    h.login();
    // The harness grants 1 MiB plus 64 KiB for Trash.
    let mut big = msg("big");
    // 100 bytes short of the limit: the next small message goes over it.
    let fill = (1 << 20) - big.len() - 2 - 100;
    big.extend(std::iter::repeat_n(b'y', fill));
    big.extend_from_slice(b"\r\n");
    append(&mut h, "INBOX", &big);
    let small = msg("small");
    let r = h.send(&format!("a APPEND INBOX {{{}+}}\r\n{}\r\n", small.len(), String::from_utf8_lossy(&small)));
    assert!(r.contains("a NO [OVERQUOTA]"), "{r}");
    let r = h.send(&format!("b APPEND Trash {{{}+}}\r\n{}\r\n", small.len(), String::from_utf8_lossy(&small)));
    assert!(r.contains("b OK [APPENDUID"), "{r}");
    let r = h.send("q GETQUOTAROOT INBOX\r\n");
    assert!(r.contains("* QUOTAROOT INBOX \"\"") && r.contains("* QUOTA \"\" (STORAGE "), "{r}");
}
