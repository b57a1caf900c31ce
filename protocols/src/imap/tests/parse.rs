use varan_core::mailstore::{Flag, FlagOp, SpecialUse};

use crate::imap::command::*;
use crate::imap::date::SearchDate;
use crate::imap::framer::{Frame, Framer, FramerLimits};
use crate::imap::parse::{parse_command, ParseError, ParseErrorKind, NESTING_MAX};
use crate::imap::sequence::{SeqNumber, SeqRange, SequenceSet};
use crate::mime::{Section, SectionKind};

fn ok(input: &str) -> CommandBody {
    ok_bytes(input.as_bytes())
}

fn ok_bytes(input: &[u8]) -> CommandBody {
    match parse_command(input) {
        Ok(c) => c.body,
        Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(input)),
    }
}

fn err(input: &str) -> ParseError {
    match parse_command(input.as_bytes()) {
        Ok(c) => panic!("{input:?} parsed as {c:?}"),
        Err(e) => e,
    }
}

fn set(s: &[(u32, u32)]) -> SequenceSet {
    SequenceSet::Ranges(s.iter().map(|&(a, b)| SeqRange { start: SeqNumber::Value(a), end: SeqNumber::Value(b) }).collect())
}

fn mb(s: &str) -> MailboxName {
    MailboxName(s.as_bytes().to_vec())
}

fn date(y: u16, m: u8, d: u8) -> SearchDate {
    SearchDate::new(y, m, d).unwrap()
}

fn search_key(input: &str) -> SearchKey {
    match ok(&format!("t SEARCH {input}")) {
        CommandBody::Search(s) => s.key,
        other => panic!("{other:?}"),
    }
}

fn fetch(input: &str) -> FetchCommand {
    match ok(input) {
        CommandBody::Fetch(f) => f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn simple_commands() {
    let table: &[(&str, CommandBody)] = &[
        ("a CAPABILITY", CommandBody::Capability),
        ("a capability", CommandBody::Capability),
        ("a NOOP", CommandBody::Noop),
        ("a LOGOUT", CommandBody::Logout),
        ("a STARTTLS", CommandBody::StartTls),
        ("a NAMESPACE", CommandBody::Namespace),
        ("a IDLE", CommandBody::Idle),
        ("a CHECK", CommandBody::Check),
        ("a CLOSE", CommandBody::Close),
        ("a UNSELECT", CommandBody::Unselect),
        ("a EXPUNGE", CommandBody::Expunge),
        ("a UID EXPUNGE 1:3,7", CommandBody::UidExpunge(set(&[(1, 3), (7, 7)]))),
        ("a ENABLE CONDSTORE utf8=accept", CommandBody::Enable(vec!["CONDSTORE".into(), "UTF8=ACCEPT".into()])),
        ("a SELECT INBOX", CommandBody::Select { mailbox: mb("INBOX"), params: SelectParams::default() }),
        ("a EXAMINE \"a b\"", CommandBody::Examine { mailbox: mb("a b"), params: SelectParams::default() }),
        ("a SELECT x (CONDSTORE)", CommandBody::Select { mailbox: mb("x"), params: SelectParams { condstore: true, qresync: None } }),
        ("a DELETE {3}\r\na\"b", CommandBody::Delete(mb("a\"b"))),
        ("a RENAME old new", CommandBody::Rename { from: mb("old"), to: mb("new") }),
        ("a SUBSCRIBE x]", CommandBody::Subscribe(mb("x]"))),
        ("a UNSUBSCRIBE \"\"", CommandBody::Unsubscribe(mb(""))),
        ("a LSUB \"\" %", CommandBody::Lsub { reference: mb(""), pattern: b"%".to_vec() }),
        ("a STATUS INBOX (MESSAGES uidnext UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT)", {
            use StatusItem::*;
            CommandBody::Status { mailbox: mb("INBOX"), items: vec![Messages, UidNext, UidValidity, Unseen, Deleted, Size, Recent, HighestModSeq, AppendLimit] }
        }),
        ("a COPY 1:* Trash", CommandBody::Copy { uid: false, set: SequenceSet::Ranges(vec![SeqRange { start: SeqNumber::Value(1), end: SeqNumber::Last }]), mailbox: mb("Trash") }),
        ("a UID MOVE $ Archive", CommandBody::Move { uid: true, set: SequenceSet::Saved, mailbox: mb("Archive") }),
        ("a uid copy 5 x", CommandBody::Copy { uid: true, set: set(&[(5, 5)]), mailbox: mb("x") }),
        ("a ID NIL", CommandBody::Id(None)),
        ("a ID (\"name\" \"Thunderbird\" \"version\" NIL)", CommandBody::Id(Some(vec![("name".into(), Some("Thunderbird".into())), ("version".into(), None)]))),
        ("a GETQUOTA \"\"", CommandBody::GetQuota(Vec::new())),
        ("a GETQUOTAROOT INBOX", CommandBody::GetQuotaRoot(mb("INBOX"))),
        ("a SETQUOTA \"\" (storage 512 MESSAGE 10)", CommandBody::SetQuota { root: Vec::new(), limits: vec![("STORAGE".into(), 512), ("MESSAGE".into(), 10)] }),
        ("a COMPRESS deflate", CommandBody::Compress("DEFLATE".into())),
        ("a CREATE Sent (USE (\\Sent \\Flagged))", CommandBody::Create { mailbox: mb("Sent"), special_use: vec![SpecialUse::Sent], other_use: vec!["\\Flagged".into()] }),
        ("a CREATE x/y", CommandBody::Create { mailbox: mb("x/y"), special_use: vec![], other_use: vec![] }),
    ];
    for (input, expected) in table {
        assert_eq!(&ok(input), expected, "{input:?}");
    }
    assert_eq!(parse_command(b"tag.1 NOOP").unwrap().tag, "tag.1");
}

#[test]
fn login_and_authenticate() {
    let CommandBody::Login { username, password } = ok("a LOGIN alice \"p a\\\"ss\"") else { panic!() };
    assert_eq!((username.as_str(), password.0.as_str()), ("alice", "p a\"ss"));
    let CommandBody::Login { password, .. } = ok("a LOGIN {5}\r\nalice {3+}\r\nxyz") else { panic!() };
    assert_eq!(password.0, "xyz");
    assert!(!format!("{:?}", ok("a LOGIN alice secret")).contains("secret"));
    assert_eq!(ok("a AUTHENTICATE plain"), CommandBody::Authenticate { mechanism: "PLAIN".into(), initial_response: None });
    assert_eq!(ok("a AUTHENTICATE PLAIN ="), CommandBody::Authenticate { mechanism: "PLAIN".into(), initial_response: Some(Secret(vec![])) });
    assert_eq!(ok("a AUTHENTICATE PLAIN AGFsaWNlAHB3"), CommandBody::Authenticate { mechanism: "PLAIN".into(), initial_response: Some(Secret(b"\0alice\0pw".to_vec())) });
    assert!(matches!(err("a AUTHENTICATE PLAIN @@@").kind, ParseErrorKind::Bad(_)));
    assert!(matches!(err("a LOGIN {1}\r\n\u{ff} x").kind, ParseErrorKind::Bad(_)));
}

#[test]
fn select_qresync() {
    let CommandBody::Select { params, .. } = ok("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541) CONDSTORE)") else { panic!() };
    assert!(params.condstore);
    let q = params.qresync.unwrap();
    assert_eq!((q.uidvalidity, q.modseq), (67890007, 20050715194045000));
    assert_eq!(q.known_uids.unwrap().to_string(), "41,43:211,214:541");
    let CommandBody::Examine { params, .. } = ok("a EXAMINE x (QRESYNC (1 2 1:* (1:3 5:7)))") else { panic!() };
    assert_eq!(params.qresync.unwrap().seq_match.map(|(a, b)| (a.to_string(), b.to_string())), Some(("1:3".into(), "5:7".into())));
    let CommandBody::Select { params, .. } = ok("a SELECT x (QRESYNC (1 2 (1 5)))") else { panic!() };
    assert!(params.qresync.unwrap().seq_match.is_some());
    for bad in ["a SELECT x (QRESYNC (0 2))", "a SELECT x (QRESYNC (1 0))", "a SELECT x (FOO)", "a SELECT x ()", "a SELECT x (QRESYNC (1 9223372036854775808))"] {
        assert!(matches!(err(bad).kind, ParseErrorKind::Bad(_)), "{bad}");
    }
}

#[test]
fn list_forms() {
    let CommandBody::List(l) = ok("a LIST \"\" *") else { panic!() };
    assert_eq!((l.reference, l.patterns, l.extended), (mb(""), vec![b"*".to_vec()], false));
    let CommandBody::List(l) = ok("a LIST \"\" Foo/%]") else { panic!() };
    assert_eq!(l.patterns, vec![b"Foo/%]".to_vec()]);
    let CommandBody::List(l) = ok("a LIST (SUBSCRIBED RECURSIVEMATCH REMOTE) \"\" (\"INBOX\" Sent/*) RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN) SUBSCRIBED)") else {
        panic!()
    };
    assert!(l.extended && l.selection.subscribed && l.selection.recursive_match && l.selection.remote && !l.selection.special_use);
    assert_eq!(l.patterns, vec![b"INBOX".to_vec(), b"Sent/*".to_vec()]);
    assert!(l.returns.children && l.returns.special_use && l.returns.subscribed);
    assert_eq!(l.returns.status, Some(vec![StatusItem::Messages, StatusItem::Unseen]));
    let CommandBody::List(l) = ok("a LIST () \"\" % RETURN ()") else { panic!() };
    assert!(l.extended);
    let CommandBody::List(l) = ok("a list (special-use) \"\" *") else { panic!() };
    assert!(l.selection.special_use);
    for bad in ["a LIST (RECURSIVEMATCH) \"\" *", "a LIST (FOO) \"\" *", "a LIST \"\" * RETURN (FOO)", "a LIST \"\"", "a LIST \"\" ()"] {
        assert!(matches!(err(bad).kind, ParseErrorKind::Bad(_)), "{bad}");
    }
}

#[test]
fn append_forms() {
    let frame = b"a APPEND INBOX (\\Seen \\Recent $Forwarded) \" 7-Feb-1994 21:52:25 -0800\" {5}\r\nhello".to_vec();
    let CommandBody::Append { mailbox, messages } = ok_bytes(&frame) else { panic!() };
    assert_eq!(mailbox, mb("INBOX"));
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.flags, vec![Flag::Seen, Flag::Keyword("$Forwarded".into())]);
    assert_eq!(m.internal_date, Some(760_686_745));
    assert_eq!(m.data(&frame), b"hello");
    assert!(!m.binary && !m.utf8);
    // MULTIAPPEND with literal8 and UTF8, and NUL allowed in a literal8.
    let frame = b"a APPEND Drafts {2+}\r\nab ~{3}\r\n\0\x01\x02 () UTF8 (~{1}\r\nx) (\\Draft) {0}\r\n".to_vec();
    let CommandBody::Append { messages, .. } = ok_bytes(&frame) else { panic!() };
    let got: Vec<(&[u8], bool, bool, usize)> = messages.iter().map(|m| (m.data(&frame), m.binary, m.utf8, m.flags.len())).collect();
    assert_eq!(got, vec![(&b"ab"[..], false, false, 0), (&b"\0\x01\x02"[..], true, false, 0), (&b"x"[..], true, true, 0), (&b""[..], false, false, 1)]);
    for bad in [
        "a APPEND INBOX",
        "a APPEND INBOX (\\Seen)",
        "a APPEND INBOX \"7-Feb-1994 21:52:25 -0800\" {5}\r\nhello",
        "a APPEND INBOX {6}\r\nhello",
        "a APPEND INBOX UTF8 ({1}\r\nx)",
        "a APPEND INBOX (\\Foo) {1}\r\nx",
        "a APPEND INBOX {1}\r\nx junk",
    ] {
        assert!(matches!(err(bad).kind, ParseErrorKind::Bad(_)), "{bad:?}");
    }
}

#[test]
fn fetch_forms() {
    use FetchAttr::*;
    assert_eq!(fetch("a FETCH 1 ALL").attrs, vec![Flags, InternalDate, Rfc822Size, Envelope]);
    assert_eq!(fetch("a FETCH 1 fast").attrs, vec![Flags, InternalDate, Rfc822Size]);
    assert_eq!(fetch("a FETCH 1 FULL").attrs, vec![Flags, InternalDate, Rfc822Size, Envelope, Body]);
    assert_eq!(fetch("a FETCH 1 BODY").attrs, vec![Body]);
    let f = fetch("a FETCH 2:4 (ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE BODY BODYSTRUCTURE UID MODSEQ SAVEDATE PREVIEW)");
    assert_eq!(f.attrs, vec![Envelope, Flags, InternalDate, Rfc822, Rfc822Header, Rfc822Text, Rfc822Size, Body, BodyStructure, Uid, ModSeq, SaveDate, Preview { lazy: false }]);
    let section = |part: &[u32], kind| Section { part: part.to_vec(), kind };
    let f = fetch("a UID FETCH 1:* (BODY[] BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.1024> BODY[1.2.MIME] body[2.text] BODY[3] BODY[HEADER.FIELDS.NOT (X-A)] BODY.PEEK[1.HEADER])");
    assert!(f.uid);
    assert_eq!(
        f.attrs,
        vec![
            BodySection { peek: false, section: Section::default(), partial: None },
            BodySection { peek: true, section: section(&[], SectionKind::HeaderFields(vec!["From".into(), "To".into()])), partial: Some(Partial { offset: 0, length: 1024 }) },
            BodySection { peek: false, section: section(&[1, 2], SectionKind::Mime), partial: None },
            BodySection { peek: false, section: section(&[2], SectionKind::Text), partial: None },
            BodySection { peek: false, section: section(&[3], SectionKind::Full), partial: None },
            BodySection { peek: false, section: section(&[], SectionKind::HeaderFieldsNot(vec!["X-A".into()])), partial: None },
            BodySection { peek: true, section: section(&[1], SectionKind::Header), partial: None },
        ]
    );
    let f = fetch("a FETCH 1 (BINARY[1.2]<5.10> BINARY.PEEK[] BINARY.SIZE[3] PREVIEW (LAZY))");
    assert_eq!(
        f.attrs,
        vec![
            Binary { peek: false, part: vec![1, 2], partial: Some(Partial { offset: 5, length: 10 }) },
            Binary { peek: true, part: vec![], partial: None },
            BinarySize { part: vec![3] },
            Preview { lazy: true }
        ]
    );
    let f = fetch("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)");
    assert_eq!((f.changed_since, f.vanished), (Some(12345), true));
    let f = fetch("a FETCH 1 PREVIEW (CHANGEDSINCE 5)");
    assert_eq!((f.attrs.clone(), f.changed_since), (vec![Preview { lazy: false }], Some(5)));
    for bad in [
        "a FETCH 1 (VANISHED)",
        "a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)",
        "a UID FETCH 1 FLAGS (VANISHED)",
        "a FETCH 1 BODY[MIME]",
        "a FETCH 1 BODY[0]",
        "a FETCH 1 BODY[1.]",
        "a FETCH 1 BODY[01]",
        "a FETCH 1 BODY[HEADER.FIELDS ()]",
        "a FETCH 1 BODY[]<0.0>",
        "a FETCH 1 BODY.PEEK",
        "a FETCH 1 BODY[",
        "a FETCH 1 ()",
        "a FETCH 0 FLAGS",
        "a FETCH 1:x FLAGS",
        "a FETCH 1 FOO",
        "a FETCH 1 FLAGS (CHANGEDSINCE 0)",
        "a FETCH 99999999999 FLAGS",
        "a FETCH 1,$ FLAGS",
    ] {
        assert!(matches!(err(bad).kind, ParseErrorKind::Bad(_)), "{bad}");
    }
}

#[test]
fn store_forms() {
    let s = |input: &str| match ok(input) {
        CommandBody::Store(s) => s,
        other => panic!("{other:?}"),
    };
    let st = s("a STORE 1:3 +FLAGS (\\Deleted \\Recent)");
    assert_eq!((st.op, st.silent, st.flags, st.uid), (FlagOp::Add, false, vec![Flag::Deleted], false));
    let st = s("a UID STORE 7 -FLAGS.SILENT \\Seen $Junk");
    assert_eq!((st.op, st.silent, st.flags), (FlagOp::Remove, true, vec![Flag::Seen, Flag::Keyword("$Junk".into())]));
    let st = s("a STORE 1 (UNCHANGEDSINCE 0) FLAGS ()");
    assert_eq!((st.op, st.unchanged_since, st.flags), (FlagOp::Replace, Some(0), vec![]));
    for bad in ["a STORE 1 +FLAGS", "a STORE 1 FLAG (\\Seen)", "a STORE 1 +FLAGS (\\Foo)", "a STORE 1 +FLAGS \\*", "a STORE 1 (FOO 1) FLAGS ()", "a STORE 1 +FLAGS (\\Seen"] {
        assert!(matches!(err(bad).kind, ParseErrorKind::Bad(_)), "{bad}");
    }
}

#[test]
fn search_keys() {
    use SearchKey::*;
    let table: Vec<(&str, SearchKey)> = vec![
        ("ALL", All),
        ("answered", Answered),
        ("BCC bob", Bcc("bob".into())),
        ("BEFORE 1-Feb-2024", Before(date(2024, 2, 1))),
        ("BODY \"two words\"", Body("two words".into())),
        ("CC {4}\r\nc@d.", Cc("c@d.".into())),
        ("DELETED", Deleted),
        ("DRAFT", Draft),
        ("FLAGGED", Flagged),
        ("FROM \"Smith\"", From("Smith".into())),
        ("HEADER Message-ID \"\"", Header("Message-ID".into(), "".into())),
        ("KEYWORD $Forwarded", Keyword("$Forwarded".into())),
        ("LARGER 10000000000", Larger(10_000_000_000)),
        ("NEW", New),
        ("NOT SEEN", Not(Box::new(Seen))),
        ("OLD", Old),
        ("ON \"29-Feb-2024\"", On(date(2024, 2, 29))),
        ("OR SEEN FLAGGED", Or(Box::new(Seen), Box::new(Flagged))),
        ("RECENT", Recent),
        ("SEEN", Seen),
        ("SENTBEFORE 1-Jan-2000", SentBefore(date(2000, 1, 1))),
        ("SENTON 1-Jan-2000", SentOn(date(2000, 1, 1))),
        ("SENTSINCE 1-Jan-2000", SentSince(date(2000, 1, 1))),
        ("SINCE 01-jan-2000", Since(date(2000, 1, 1))),
        ("SMALLER 5", Smaller(5)),
        ("SUBJECT \"Привет\"", Subject("Привет".into())),
        ("TEXT x", Text("x".into())),
        ("TO y", To("y".into())),
        ("UID 1:*", Uid(crate::imap::SequenceSet::Ranges(vec![SeqRange { start: SeqNumber::Value(1), end: SeqNumber::Last }]))),
        ("UID $", Uid(crate::imap::SequenceSet::Saved)),
        ("UNANSWERED", Unanswered),
        ("UNDELETED", Undeleted),
        ("UNDRAFT", Undraft),
        ("UNFLAGGED", Unflagged),
        ("UNKEYWORD Junk", Unkeyword("Junk".into())),
        ("UNSEEN", Unseen),
        ("2:4,*", SequenceSet(set(&[(2, 4)]).clone_with_last())),
        ("$", SequenceSet(crate::imap::SequenceSet::Saved)),
        ("MODSEQ 0", ModSeq { entry: None, modseq: 0 }),
        ("MODSEQ \"/flags/\\\\draft\" all 620162338", ModSeq { entry: Some(("\\draft".into(), EntryType::All)), modseq: 620162338 }),
        ("YOUNGER 3600", Younger(3600)),
        ("OLDER 60", Older(60)),
        ("SAVEDBEFORE 1-Jan-2020", SavedBefore(date(2020, 1, 1))),
        ("SAVEDON 1-Jan-2020", SavedOn(date(2020, 1, 1))),
        ("SAVEDSINCE 1-Jan-2020", SavedSince(date(2020, 1, 1))),
        ("SAVEDATESUPPORTED", SaveDateSupported),
        ("(SEEN)", Seen),
        ("(SEEN FLAGGED) DELETED", And(vec![And(vec![Seen, Flagged]), Deleted])),
        ("OR (FROM a TO b) NOT (SUBJECT c)", Or(Box::new(And(vec![From("a".into()), To("b".into())])), Box::new(Not(Box::new(Subject("c".into())))))),
    ];
    for (input, expected) in table {
        assert_eq!(search_key(input), expected, "{input:?}");
    }
    let CommandBody::Search(s) = ok("a UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) CHARSET utf-8 UNSEEN") else { panic!() };
    assert!(s.uid);
    assert_eq!(s.ret, Some(SearchReturn { min: true, max: true, all: true, count: true, save: true }));
    assert_eq!(s.charset.as_deref(), Some("UTF-8"));
    let CommandBody::Search(s) = ok("a SEARCH RETURN () ALL") else { panic!() };
    assert!(s.ret.unwrap().is_empty());
    let CommandBody::Search(s) = ok("a SEARCH CHARSET \"US-ASCII\" ALL") else { panic!() };
    assert_eq!((s.ret, s.charset.as_deref()), (None, Some("US-ASCII")));
    for bad in [
        "a SEARCH",
        "a SEARCH FOO",
        "a SEARCH SINCE 30-Feb-2024",
        "a SEARCH SINCE",
        "a SEARCH OR SEEN",
        "a SEARCH NOT",
        "a SEARCH ()",
        "a SEARCH (SEEN",
        "a SEARCH SEEN)",
        "a SEARCH SEEN  FLAGGED",
        "a SEARCH YOUNGER 0",
        "a SEARCH KEYWORD \\Seen",
        "a SEARCH RETURN (FOO) ALL",
        "a SEARCH MODSEQ \"/x\" all 1",
        "a SEARCH MODSEQ \"/flags/\\\\Seen\" mine 1",
        "a SEARCH SUBJECT {2}\r\n\u{ff}x",
        "a SEARCH CHARSET UTF-8",
        // Atoms are US-ASCII (RFC 9051 §9); UTF-8 must be quoted or a literal.
        "a SEARCH SUBJECT Привет",
    ] {
        let e = err(bad);
        assert_eq!(e.tag.as_deref(), Some("a"), "{bad}");
        assert!(matches!(e.kind, ParseErrorKind::Bad(_)), "{bad}: {e:?}");
    }
    assert_eq!(err("a SEARCH CHARSET ISO-8859-1 SUBJECT x").kind, ParseErrorKind::BadCharset);
    let mut out = Vec::new();
    err("t1 SEARCH CHARSET KOI8-R ALL").write(&mut out);
    assert_eq!(out, b"t1 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n");
}

trait CloneWithLast {
    fn clone_with_last(&self) -> SequenceSet;
}

impl CloneWithLast for SequenceSet {
    fn clone_with_last(&self) -> SequenceSet {
        let mut r = self.ranges().to_vec();
        r.push(SeqRange { start: SeqNumber::Last, end: SeqNumber::Last });
        SequenceSet::Ranges(r)
    }
}

#[test]
fn sort_and_thread() {
    let CommandBody::Sort(s) = ok("a UID SORT (REVERSE ARRIVAL subject DISPLAYFROM) UTF-8 SINCE 1-Feb-1994 NOT FROM Smith") else { panic!() };
    assert!(s.uid && s.ret.is_none());
    assert_eq!(
        s.criteria,
        vec![
            SortCriterion { reverse: true, key: SortKey::Arrival },
            SortCriterion { reverse: false, key: SortKey::Subject },
            SortCriterion { reverse: false, key: SortKey::DisplayFrom }
        ]
    );
    assert_eq!(s.key, SearchKey::And(vec![SearchKey::Since(date(1994, 2, 1)), SearchKey::Not(Box::new(SearchKey::From("Smith".into())))]));
    let CommandBody::Sort(s) = ok("a SORT RETURN (COUNT) (DATE) US-ASCII ALL") else { panic!() };
    assert_eq!(s.ret, Some(SearchReturn { count: true, ..Default::default() }));
    let CommandBody::Thread(t) = ok("a THREAD REFERENCES UTF-8 ALL") else { panic!() };
    assert_eq!((t.algorithm, t.uid), (ThreadAlgorithm::References, false));
    let CommandBody::Thread(t) = ok("a UID THREAD orderedsubject utf-8 SEEN") else { panic!() };
    assert_eq!((t.algorithm, t.uid), (ThreadAlgorithm::OrderedSubject, true));
    assert_eq!(err("a SORT (DATE) KOI8-R ALL").kind, ParseErrorKind::BadCharset);
    // The charset is not optional: the first key is taken for one.
    assert_eq!(err("a SORT (DATE) ALL").kind, ParseErrorKind::BadCharset);
    for bad in ["a SORT () UTF-8 ALL", "a SORT (REVERSE) UTF-8 ALL", "a SORT (FOO) UTF-8 ALL", "a THREAD FOO UTF-8 ALL", "a THREAD REFERENCES UTF-8"] {
        assert!(matches!(err(bad).kind, ParseErrorKind::Bad(_)), "{bad}");
    }
}

#[test]
fn error_classes() {
    let table: &[(&str, Option<&str>, &str)] = &[
        ("", None, "bad"),
        ("NOOP", None, "bad"),
        ("+a NOOP", None, "bad"),
        ("a{ NOOP", None, "bad"),
        ("a", None, "bad"),
        ("a ", Some("a"), "bad"),
        ("a FOO", Some("a"), "unknown"),
        ("a UID FOO 1", Some("a"), "unknown"),
        ("a UID NOOP", Some("a"), "unknown"),
        ("a NOOP x", Some("a"), "bad"),
        ("a NOOP ", Some("a"), "bad"),
        ("a  NOOP", Some("a"), "bad"),
        ("a LOGIN alice", Some("a"), "bad"),
        ("a LOGIN \"alice pw", Some("a"), "bad"),
        ("a LOGIN \"a\\lice\" pw", Some("a"), "bad"),
        ("a LOGIN \"a\rb\" pw", Some("a"), "bad"),
        ("a LOGIN {10}\r\nabc pw", Some("a"), "bad"),
        ("a LOGIN {1}\r\n\0 pw", Some("a"), "bad"),
        ("a LOGIN ~{1}\r\nx pw", Some("a"), "bad"),
        ("a LOGIN {1} x", Some("a"), "bad"),
        ("a ID (\"k\")", Some("a"), "bad"),
        ("a ENABLE", Some("a"), "bad"),
        ("a STATUS INBOX ()", Some("a"), "bad"),
        ("a STATUS INBOX (FOO)", Some("a"), "bad"),
        ("a CREATE x (FOO (\\Sent))", Some("a"), "bad"),
        ("a COMPRESS", Some("a"), "bad"),
    ];
    for &(input, tag, class) in table {
        let e = err(input);
        assert_eq!(e.tag.as_deref(), tag, "{input:?}");
        let got = match e.kind {
            ParseErrorKind::Bad(_) => "bad",
            ParseErrorKind::UnknownCommand => "unknown",
            ParseErrorKind::BadCharset => "charset",
        };
        assert_eq!(got, class, "{input:?}");
    }
    let long_tag = format!("{} NOOP", "t".repeat(300));
    assert_eq!(err(&long_tag).tag, None);
    let mut out = Vec::new();
    err("x1 BLURDYBLOOP").write(&mut out);
    err("*").write(&mut out);
    assert_eq!(out, b"x1 BAD Unknown command\r\n* BAD Invalid tag\r\n");
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| format!("a SEARCH {}ALL{}", "(".repeat(n), ")".repeat(n));
    assert!(parse_command(deep(NESTING_MAX - 1).as_bytes()).is_ok());
    assert!(matches!(err(&deep(NESTING_MAX + 1)).kind, ParseErrorKind::Bad(_)));
    // Far beyond: must fail fast, not overflow the stack.
    for input in [deep(100_000), format!("a SEARCH {}ALL", "NOT ".repeat(100_000)), format!("a SEARCH {}ALL ALL", "OR ".repeat(100_000))] {
        assert!(matches!(err(&input).kind, ParseErrorKind::Bad(_)));
    }
    let not = format!("a SEARCH {}ALL", "NOT ".repeat(NESTING_MAX - 1));
    assert!(parse_command(not.as_bytes()).is_ok());
}

#[test]
fn framer_then_parser() {
    // A client session as bytes, framed then parsed, whole and byte by byte.
    let input: &[u8] =
        b"a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na2 SELECT INBOX\r\na3 APPEND INBOX (\\Seen) {12}\r\nSubject: x\r\n\r\na4 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])\r\n";
    let frames = |chunk: usize| {
        let mut f = Framer::new(FramerLimits::after_login(1 << 20));
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for c in input.chunks(chunk) {
            pending.extend_from_slice(c);
            loop {
                let (n, frame) = f.feed(&pending);
                pending.drain(..n);
                match frame {
                    Some(Frame::Command(c)) => out.push(parse_command(&c).map(|p| (p.tag, p.body.name(), c))),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        out
    };
    let whole = frames(input.len());
    assert_eq!(whole, frames(1));
    let names: Vec<&str> = whole.iter().map(|r| r.as_ref().unwrap().1).collect();
    assert_eq!(names, ["LOGIN", "SELECT", "APPEND", "UID FETCH"]);
    let (_, _, frame) = whole[2].as_ref().unwrap();
    let CommandBody::Append { messages, .. } = ok_bytes(frame) else { panic!() };
    assert_eq!(messages[0].data(frame), b"Subject: x\r\n");
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes and arbitrary command-like text never panic.
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_command(&bytes);
        }

        /// Token soup through framer and parser, split anywhere: no panic,
        /// and every frame parses or fails with a one-line response.
        #[test]
        fn framed_token_soup(tokens in proptest::collection::vec(prop_oneof![
            Just(&b"a "[..]), Just(&b"UID "[..]), Just(&b"FETCH "[..]), Just(&b"APPEND x "[..]), Just(&b"SEARCH "[..]), Just(&b"{3}\r\n"[..]),
            Just(&b"{2+}\r\n"[..]), Just(&b"~{1}\r\n"[..]), Just(&b"\r\n"[..]), Just(&b"("[..]), Just(&b")"[..]), Just(&b"1:*"[..]), Just(&b"BODY[1.HEADER]<0.5>"[..]),
            Just(&b"\"q\\\"\""[..]), Just(&b" "[..]), Just(&b"NOT "[..]), Just(&b"\0"[..]), Just(&b"\xff"[..]), Just(&b"$"[..]),
        ], 0..60), split in 1usize..9) {
            let input: Vec<u8> = tokens.concat();
            let mut f = Framer::new(FramerLimits { line_bytes_max: 40, literal_bytes_max: 8, append_literal_bytes_max: 16, literals_per_command_max: 4, command_bytes_max: 100 });
            let mut pending = Vec::new();
            for c in input.chunks(split) {
                pending.extend_from_slice(c);
                loop {
                    let (n, frame) = f.feed(&pending);
                    prop_assert!(n <= pending.len());
                    pending.drain(..n);
                    match frame {
                        Some(Frame::Command(c)) => {
                            if let Err(e) = parse_command(&c) {
                                let mut out = Vec::new();
                                e.write(&mut out);
                                prop_assert!(out.ends_with(b"\r\n") && !out[..out.len() - 2].contains(&b'\n'));
                            }
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
        }

        #[test]
        fn commandish_never_panics(s in "a (UID )?(FETCH|SEARCH|STORE|APPEND|LIST|SELECT|SORT|THREAD|STATUS|ID|LOGIN|CREATE) [ -~]{0,80}") {
            if let Err(e) = parse_command(s.as_bytes()) {
                prop_assert_eq!(e.tag.as_deref(), Some("a"));
                let mut out = Vec::new();
                e.write(&mut out);
                prop_assert!(out.ends_with(b"\r\n") && !out[..out.len() - 2].contains(&b'\n'));
            }
        }
    }
}
