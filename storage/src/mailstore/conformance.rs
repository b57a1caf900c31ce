//! The mail-store contract's test suite, run against every backend.
//!
//! Each case is a public function taking a fresh store. The factory must
//! give every user a byte quota of [`QUOTA_BYTES`] and accept messages of
//! at least 64 KiB. Use [`run_all`], or the macro
//! [`mailstore_conformance_tests!`](crate::mailstore_conformance_tests),
//! which generates one `#[test]` per case:
//!
//! ```ignore
//! varan_storage::mailstore_conformance_tests!(|| Box::new(MemoryStore::new(opts())) as Box<dyn MailStore>);
//! ```

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};
use varan_core::mailstore::{Flag, MailboxEntry};
use varan_core::mailstore::{FlagOp, MailStore, Mailbox, SpecialUse, StoreError, UserStore, KEYWORDS_MAX};
use varan_core::EmailAddress;

/// The byte quota the factory must configure for every user.
pub const QUOTA_BYTES: u64 = 1 << 20;

/// How long a case waits for a wake-up before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// One conformance case.
pub type Case = fn(&dyn MailStore);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("uids_ascend_and_are_never_reused", uids_ascend_and_are_never_reused),
    ("uidvalidity_is_stable_across_reopen", uidvalidity_is_stable_across_reopen),
    ("append_read_round_trip", append_read_round_trip),
    ("flags_add_remove_replace_and_keywords", flags_add_remove_replace_and_keywords),
    ("modseq_grows", modseq_grows),
    ("unchanged_since_refuses_modified", unchanged_since_refuses_modified),
    ("changes_since_reports_changes_and_expunges", changes_since_reports_changes_and_expunges),
    ("copy_and_move_report_copyuid_pairs", copy_and_move_report_copyuid_pairs),
    ("expunge_removes_only_deleted", expunge_removes_only_deleted),
    ("create_delete_rename_with_children", create_delete_rename_with_children),
    ("inbox_rules", inbox_rules),
    ("subscriptions", subscriptions),
    ("special_use", special_use),
    ("quota_is_enforced", quota_is_enforced),
    ("handles_are_shared", handles_are_shared),
    ("changed_wakes_waiters", changed_wakes_waiters),
];

/// Runs every case, each on a fresh store.
pub fn run_all(make: &dyn Fn() -> Box<dyn MailStore>) {
    for (name, case) in CASES {
        eprintln!("mailstore conformance: {name}");
        let store = make();
        case(&*store);
    }
}

/// One `#[test]` per conformance case, each with a fresh store from the
/// factory expression (a closure returning `Box<dyn MailStore>`).
#[macro_export]
macro_rules! mailstore_conformance_tests {
    ($make:expr) => {
        $crate::mailstore_conformance_tests!(@cases $make;
            uids_ascend_and_are_never_reused, uidvalidity_is_stable_across_reopen, append_read_round_trip,
            flags_add_remove_replace_and_keywords, modseq_grows, unchanged_since_refuses_modified,
            changes_since_reports_changes_and_expunges, copy_and_move_report_copyuid_pairs, expunge_removes_only_deleted,
            create_delete_rename_with_children, inbox_rules, subscriptions, special_use, quota_is_enforced,
            handles_are_shared, changed_wakes_waiters);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let make = $make;
                let store = make();
                $crate::mailstore::conformance::$case(&*store);
            }
        )*
    };
}

/// Polls `fut` on this thread until it is ready or `timeout` passes.
pub fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

fn user(store: &dyn MailStore) -> Arc<dyn UserStore> {
    store.user(&EmailAddress::parse("alice@example.org").expect("address")).expect("user")
}

fn msg(n: usize) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: b@example.org\r\nSubject: test {n}\r\nMessage-ID: <{n}@example.org>\r\n\r\nBody line one of {n}.\r\nLine two.\r\n").into_bytes()
}

fn kw(s: &str) -> Flag {
    Flag::Keyword(s.to_owned())
}

fn entry<'a>(list: &'a [MailboxEntry], name: &str) -> Option<&'a MailboxEntry> {
    list.iter().find(|e| e.name == name)
}

fn meta_of(mb: &dyn Mailbox, uid: u32) -> varan_core::mailstore::MessageMeta {
    mb.changes_since(0).expect("changes").changed.into_iter().find(|m| m.uid == uid).expect("message present")
}

fn same_handle(a: &Arc<dyn Mailbox>, b: &Arc<dyn Mailbox>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

pub fn uids_ascend_and_are_never_reused(store: &dyn MailStore) {
    let u = user(store);
    let inbox = u.open("INBOX").expect("open");
    let a = inbox.append(&msg(1), &[], None).expect("append");
    let b = inbox.append(&msg(2), &[], None).expect("append");
    let c = inbox.append(&msg(3), &[Flag::Deleted], None).expect("append");
    assert!(a < b && b < c, "{a} {b} {c}");
    assert_eq!(inbox.expunge(None).expect("expunge"), vec![c]);
    let d = inbox.append(&msg(4), &[], None).expect("append");
    assert!(d > c, "UID {d} reused after {c}");
    assert_eq!(inbox.uids().expect("uids"), vec![a, b, d]);
    assert_eq!(inbox.status().expect("status").uidnext, d + 1);
}

pub fn uidvalidity_is_stable_across_reopen(store: &dyn MailStore) {
    let (validity, uids) = {
        let inbox = user(store).open("INBOX").expect("open");
        inbox.append(&msg(1), &[Flag::Seen], None).expect("append");
        inbox.append(&msg(2), &[], None).expect("append");
        (inbox.status().expect("status").uidvalidity, inbox.uids().expect("uids"))
    };
    assert_ne!(validity, 0);
    let inbox = user(store).open("inbox").expect("reopen");
    assert_eq!(inbox.name(), "INBOX");
    assert_eq!(inbox.status().expect("status").uidvalidity, validity);
    assert_eq!(inbox.uids().expect("uids"), uids);
    assert!(meta_of(&*inbox, uids[0]).has(&Flag::Seen));
    let u = user(store);
    u.create("Other", None).expect("create");
    let other = u.open("Other").expect("open");
    assert_eq!(other.status().expect("status").messages, 0);
}

pub fn append_read_round_trip(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let body = msg(7);
    let uid = inbox.append(&body, &[], Some(1_600_000_000)).expect("append");
    let data = inbox.read(uid).expect("read");
    assert_eq!(&data[..], &body[..], "CRLF round trip");
    let meta = meta_of(&*inbox, uid);
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(meta.internal_date, 1_600_000_000);
    let big: Vec<u8> = (0..2000).flat_map(|i| format!("line {i} with some text\r\n").into_bytes()).collect();
    let uid2 = inbox.append(&big, &[], None).expect("append big");
    assert_eq!(&inbox.read(uid2).expect("read")[..], &big[..]);
    let status = inbox.status().expect("status");
    assert_eq!(status.size, (body.len() + big.len()) as u64);
    assert_eq!(status.messages, 2);
    assert_eq!(status.unseen, 2);
    assert!(matches!(inbox.read(9999), Err(StoreError::Expunged)));
}

pub fn flags_add_remove_replace_and_keywords(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let uid = inbox.append(&msg(1), &[Flag::Draft, kw("$Junk")], None).expect("append");
    let m = meta_of(&*inbox, uid);
    assert!(m.has(&Flag::Draft) && m.has(&kw("$junk")), "{m:?}");
    let up = inbox.store(&[uid], FlagOp::Add, &[Flag::Seen, kw("$Forwarded")], None).expect("store");
    assert_eq!(up.updated.len(), 1);
    let m = &up.updated[0];
    for f in [Flag::Seen, Flag::Draft, kw("$Forwarded"), kw("$Junk")] {
        assert!(m.has(&f), "{f:?} missing in {m:?}");
    }
    let up = inbox.store(&[uid], FlagOp::Remove, &[Flag::Draft, kw("$JUNK")], None).expect("store");
    let m = &up.updated[0];
    assert!(!m.has(&Flag::Draft) && !m.has(&kw("$Junk")) && m.has(&Flag::Seen), "{m:?}");
    let up = inbox.store(&[uid], FlagOp::Replace, &[Flag::Flagged, kw("Work")], None).expect("store");
    let m = &up.updated[0];
    assert_eq!(m.flags.len(), 2, "{m:?}");
    assert!(m.has(&Flag::Flagged) && m.has(&kw("work")));
    assert_eq!(meta_of(&*inbox, uid).flags.len(), 2);
    // A no-op changes nothing.
    assert!(inbox.store(&[uid], FlagOp::Add, &[Flag::Flagged], None).expect("store").updated.is_empty());
    // Missing UIDs are skipped.
    assert!(inbox.store(&[4242], FlagOp::Add, &[Flag::Seen], None).expect("store").updated.is_empty());
    // At most KEYWORDS_MAX keywords per mailbox.
    let many: Vec<Flag> = (0..KEYWORDS_MAX).map(|i| kw(&format!("k{i}"))).collect();
    assert!(matches!(inbox.store(&[uid], FlagOp::Add, &many, None), Err(StoreError::Limit(_))));
    let fits: Vec<Flag> = (0..KEYWORDS_MAX - 4).map(|i| kw(&format!("k{i}"))).collect();
    inbox.store(&[uid], FlagOp::Add, &fits, None).expect("store up to the limit");
    assert_eq!(meta_of(&*inbox, uid).flags.len(), 2 + fits.len());
}

pub fn modseq_grows(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let h0 = inbox.status().expect("status").highest_modseq;
    let uid = inbox.append(&msg(1), &[], None).expect("append");
    let h1 = inbox.status().expect("status").highest_modseq;
    assert!(h1 > h0);
    assert_eq!(meta_of(&*inbox, uid).modseq, h1);
    let up = inbox.store(&[uid], FlagOp::Add, &[Flag::Deleted], None).expect("store");
    assert!(up.updated[0].modseq > h1);
    let h2 = inbox.status().expect("status").highest_modseq;
    assert_eq!(h2, up.updated[0].modseq);
    inbox.expunge(None).expect("expunge");
    assert!(inbox.status().expect("status").highest_modseq > h2);
}

pub fn unchanged_since_refuses_modified(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let a = inbox.append(&msg(1), &[], None).expect("append");
    let b = inbox.append(&msg(2), &[], None).expect("append");
    let before = inbox.status().expect("status").highest_modseq;
    inbox.store(&[a], FlagOp::Add, &[Flag::Flagged], None).expect("store");
    let up = inbox.store(&[a, b], FlagOp::Add, &[Flag::Seen], Some(before)).expect("conditional store");
    assert_eq!(up.modified, vec![a]);
    assert_eq!(up.updated.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![b]);
    assert!(!meta_of(&*inbox, a).has(&Flag::Seen));
    let now = inbox.status().expect("status").highest_modseq;
    let up = inbox.store(&[a], FlagOp::Add, &[Flag::Seen], Some(now)).expect("conditional store");
    assert!(up.modified.is_empty() && up.updated.len() == 1);
}

pub fn changes_since_reports_changes_and_expunges(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let uids: Vec<u32> = (0..4).map(|i| inbox.append(&msg(i), &[], None).expect("append")).collect();
    let h = inbox.status().expect("status").highest_modseq;
    assert!(inbox.changes_since(h).expect("changes").changed.is_empty());
    inbox.store(&[uids[1]], FlagOp::Add, &[Flag::Seen], None).expect("store");
    inbox.store(&[uids[2]], FlagOp::Add, &[Flag::Deleted], None).expect("store");
    inbox.expunge(Some(&[uids[2]])).expect("expunge");
    let new = inbox.append(&msg(9), &[], None).expect("append");
    let c = inbox.changes_since(h).expect("changes");
    assert_eq!(c.changed.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![uids[1], new]);
    assert_eq!(c.expunged, vec![uids[2]]);
    assert!(!c.expunged_incomplete);
    assert_eq!(c.status.messages, 4);
    let all = inbox.changes_since(0).expect("changes");
    assert_eq!(all.changed.len(), 4);
    let hn = inbox.status().expect("status").highest_modseq;
    let none = inbox.changes_since(hn).expect("changes");
    assert!(none.changed.is_empty() && none.expunged.is_empty());
}

pub fn copy_and_move_report_copyuid_pairs(store: &dyn MailStore) {
    let u = user(store);
    u.create("Dest", None).expect("create");
    let inbox = u.open("INBOX").expect("open");
    let dest = u.open("Dest").expect("open");
    let a = inbox.append(&msg(1), &[Flag::Seen, kw("$Label1")], Some(1_500_000_000)).expect("append");
    let b = inbox.append(&msg(2), &[Flag::Flagged], None).expect("append");
    let c = inbox.append(&msg(3), &[], None).expect("append");
    let pairs = inbox.copy_to(&[a, b, 777], &*dest).expect("copy");
    assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), vec![a, b]);
    assert!(pairs[0].1 < pairs[1].1);
    let da = meta_of(&*dest, pairs[0].1);
    assert!(da.has(&Flag::Seen) && da.has(&kw("$label1")), "{da:?}");
    assert_eq!(da.internal_date, 1_500_000_000);
    assert_eq!(&dest.read(pairs[0].1).expect("read")[..], &msg(1)[..]);
    assert_eq!(inbox.uids().expect("uids"), vec![a, b, c]);
    let moved = inbox.move_to(&[c], &*dest).expect("move");
    assert_eq!(moved.len(), 1);
    assert!(moved[0].1 > pairs[1].1);
    assert_eq!(inbox.uids().expect("uids"), vec![a, b]);
    assert_eq!(&dest.read(moved[0].1).expect("read")[..], &msg(3)[..]);
    assert!(matches!(inbox.read(c), Err(StoreError::Expunged)));
    // Copy into the same mailbox.
    let same = inbox.copy_to(&[a], &*inbox).expect("copy to self");
    assert!(same[0].1 > b);
    assert_eq!(inbox.status().expect("status").messages, 3);
}

pub fn expunge_removes_only_deleted(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let a = inbox.append(&msg(1), &[Flag::Deleted], None).expect("append");
    let b = inbox.append(&msg(2), &[], None).expect("append");
    let c = inbox.append(&msg(3), &[Flag::Deleted, Flag::Seen], None).expect("append");
    assert_eq!(inbox.expunge(Some(&[c, b])).expect("uid expunge"), vec![c]);
    assert_eq!(inbox.uids().expect("uids"), vec![a, b]);
    assert_eq!(inbox.expunge(None).expect("expunge"), vec![a]);
    assert_eq!(inbox.uids().expect("uids"), vec![b]);
    assert!(inbox.expunge(None).expect("expunge").is_empty());
    let s = inbox.status().expect("status");
    assert_eq!((s.messages, s.deleted), (1, 0));
}

pub fn create_delete_rename_with_children(store: &dyn MailStore) {
    let u = user(store);
    u.create("A/B/C", None).expect("create with parents");
    let list = u.list().expect("list");
    for n in ["A", "A/B", "A/B/C"] {
        assert!(entry(&list, n).is_some_and(|e| e.selectable), "{n} in {list:?}");
    }
    assert!(entry(&list, "A").expect("A").has_children);
    assert!(!entry(&list, "A/B/C").expect("C").has_children);
    assert!(matches!(u.create("A/B", None), Err(StoreError::AlreadyExists)));
    let ab = u.open("A/B").expect("open");
    ab.append(&msg(1), &[], None).expect("append");
    drop(ab);
    u.delete("A/B").expect("delete with children");
    let list = u.list().expect("list");
    let e = entry(&list, "A/B").expect("A/B remains as a hierarchy level");
    assert!(!e.selectable && e.has_children, "{e:?}");
    assert!(matches!(u.open("A/B"), Err(StoreError::NoMailbox)));
    assert!(u.open("A/B/C").is_ok());
    u.rename("A", "X/Y").expect("rename with children");
    let list = u.list().expect("list");
    assert!(entry(&list, "A").is_none() && entry(&list, "A/B/C").is_none(), "{list:?}");
    assert!(entry(&list, "X").is_some() && entry(&list, "X/Y").is_some_and(|e| e.selectable));
    assert!(entry(&list, "X/Y/B/C").is_some_and(|e| e.selectable));
    assert!(entry(&list, "X/Y/B").is_some_and(|e| !e.selectable));
    assert!(matches!(u.rename("X/Y", "X/Y/Z"), Err(StoreError::Cannot(_))));
    assert!(matches!(u.rename("Nope", "Other"), Err(StoreError::NoMailbox)));
    assert!(matches!(u.rename("X/Y/B/C", "X"), Err(StoreError::AlreadyExists)));
    u.create("Solo", None).expect("create");
    u.delete("Solo").expect("delete");
    assert!(entry(&u.list().expect("list"), "Solo").is_none());
    assert!(matches!(u.delete("Solo"), Err(StoreError::NoMailbox)));
    u.create("Solo", None).expect("create again");
    assert_eq!(u.open("Solo").expect("open").status().expect("status").messages, 0);
    for bad in ["a.b", "", "x//y", "INBOX/sub"] {
        assert!(matches!(u.create(bad, None), Err(StoreError::BadName(_))), "{bad:?}");
    }
    assert!(matches!(u.open("Missing"), Err(StoreError::NoMailbox)));
}

pub fn inbox_rules(store: &dyn MailStore) {
    let u = user(store);
    let list = u.list().expect("list");
    assert_eq!(list[0].name, "INBOX");
    assert!(list[0].selectable);
    let names: Vec<&str> = list[1..].iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted after INBOX");
    assert!(matches!(u.delete("INBOX"), Err(StoreError::Cannot(_))));
    assert!(matches!(u.create("inbox", None), Err(StoreError::AlreadyExists)));
    let inbox = u.open("INBOX").expect("open");
    let a = inbox.append(&msg(1), &[Flag::Seen], None).expect("append");
    inbox.append(&msg(2), &[], None).expect("append");
    let _ = a;
    u.rename("INBOX", "Old Mail").expect("rename INBOX");
    inbox.sync().expect("sync");
    assert_eq!(inbox.status().expect("status").messages, 0, "INBOX is left empty");
    assert!(inbox.uids().expect("uids").is_empty());
    let old = u.open("Old Mail").expect("open");
    assert_eq!(old.status().expect("status").messages, 2);
    let uids = old.uids().expect("uids");
    assert_eq!(&old.read(uids[0]).expect("read")[..], &msg(1)[..]);
    assert!(meta_of(&*old, uids[0]).has(&Flag::Seen));
    assert!(matches!(u.rename("Old Mail", "INBOX"), Err(StoreError::AlreadyExists)));
    // INBOX keeps working.
    inbox.append(&msg(3), &[], None).expect("append after rename");
    assert_eq!(inbox.status().expect("status").messages, 1);
}

pub fn subscriptions(store: &dyn MailStore) {
    let u = user(store);
    u.create("Lists/Rust", None).expect("create");
    u.set_subscribed("Lists/Rust", true).expect("subscribe");
    u.set_subscribed("INBOX", true).expect("subscribe");
    u.set_subscribed("Ünïcödé", true).expect("subscribe to a name that does not exist");
    let list = u.list().expect("list");
    assert!(entry(&list, "Lists/Rust").expect("entry").subscribed);
    assert!(!entry(&list, "Lists").expect("entry").subscribed);
    assert!(list[0].subscribed);
    u.set_subscribed("Lists/Rust", false).expect("unsubscribe");
    assert!(!entry(&u.list().expect("list"), "Lists/Rust").expect("entry").subscribed);
    u.rename("Lists", "Groups").expect("rename");
    u.set_subscribed("Groups/Rust", true).expect("subscribe");
    assert!(entry(&user(store).list().expect("list"), "Groups/Rust").expect("entry").subscribed);
    assert!(matches!(u.set_subscribed("bad.name", true), Err(StoreError::BadName(_))));
}

pub fn special_use(store: &dyn MailStore) {
    let u = user(store);
    let list = u.list().expect("list");
    for use_ in [SpecialUse::Sent, SpecialUse::Trash, SpecialUse::Drafts, SpecialUse::Junk] {
        let e = list.iter().find(|e| e.special_use == Some(use_)).unwrap_or_else(|| panic!("{use_:?} in {list:?}"));
        assert!(e.selectable && e.subscribed, "{e:?}");
    }
    u.create("Old Stuff", Some(SpecialUse::Archive)).expect("create special");
    let list = u.list().expect("list");
    assert_eq!(entry(&list, "Old Stuff").expect("entry").special_use, Some(SpecialUse::Archive));
    assert_eq!(entry(&list, "INBOX").expect("entry").special_use, None);
    u.rename("Old Stuff", "Older").expect("rename");
    assert_eq!(entry(&u.list().expect("list"), "Older").expect("entry").special_use, Some(SpecialUse::Archive));
}

pub fn quota_is_enforced(store: &dyn MailStore) {
    let u = user(store);
    let inbox = u.open("INBOX").expect("open");
    let q0 = u.quota().expect("quota");
    assert_eq!(q0.limit_bytes, Some(QUOTA_BYTES), "the factory must configure the quota");
    let chunk: Vec<u8> = (0..1500).flat_map(|i| format!("quota filler line {i:06}\r\n").into_bytes()).collect();
    inbox.append(&chunk, &[], None).expect("append under quota");
    let q1 = u.quota().expect("quota");
    assert!(q1.used_bytes > q0.used_bytes && q1.messages == q0.messages + 1, "{q0:?} {q1:?}");
    let mut refused = false;
    for _ in 0..(QUOTA_BYTES as usize / chunk.len() + 2) {
        match inbox.append(&chunk, &[], None) {
            Ok(_) => {}
            Err(StoreError::OverQuota) => {
                refused = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(refused, "quota never enforced");
    assert!(u.quota().expect("quota").used_bytes <= QUOTA_BYTES);
    // Expunging makes room again.
    let uids = inbox.uids().expect("uids");
    inbox.store(&uids, FlagOp::Add, &[Flag::Deleted], None).expect("store");
    inbox.expunge(None).expect("expunge");
    inbox.append(&chunk, &[], None).expect("append after expunge");
    assert_eq!(u.quota().expect("quota").messages, q0.messages + 1);
}

pub fn handles_are_shared(store: &dyn MailStore) {
    let u1 = user(store);
    let u2 = user(store);
    let a = u1.open("INBOX").expect("open");
    let b = u2.open("inbox").expect("open");
    assert!(same_handle(&a, &b), "two opens of one mailbox give one handle");
    let from_thread = thread::scope(|s| s.spawn(|| user(store).open("INBOX").expect("open")).join().expect("thread"));
    assert!(same_handle(&a, &from_thread));
    let v = b.version();
    let uid = a.append(&msg(1), &[], None).expect("append");
    assert_ne!(b.version(), v);
    assert_eq!(b.uids().expect("uids"), vec![uid]);
    a.store(&[uid], FlagOp::Add, &[Flag::Answered], None).expect("store");
    assert!(meta_of(&*b, uid).has(&Flag::Answered));
    u1.create("Second", None).expect("create");
    let c = u1.open("Second").expect("open");
    assert!(!same_handle(&a, &c));
}

pub fn changed_wakes_waiters(store: &dyn MailStore) {
    let inbox = user(store).open("INBOX").expect("open");
    let v = inbox.version();
    // Already changed: resolves at once.
    inbox.append(&msg(1), &[], None).expect("append");
    assert!(block_on_timeout(inbox.changed(v), Duration::from_millis(100)).is_some());
    let v = inbox.version();
    assert!(block_on_timeout(inbox.changed(v), Duration::from_millis(50)).is_none(), "no change, no wake-up");
    let writer = Arc::clone(&inbox);
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        writer.append(&msg(2), &[], None).expect("append");
    });
    let started = Instant::now();
    assert!(block_on_timeout(inbox.changed(v), WAIT).is_some(), "not woken");
    assert!(started.elapsed() < WAIT);
    t.join().expect("thread");
    // Many waiters on several threads all wake.
    let v = inbox.version();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let f = inbox.changed(v);
            thread::spawn(move || block_on_timeout(f, WAIT).is_some())
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    inbox.append(&msg(3), &[], None).expect("append");
    for w in waiters {
        assert!(w.join().expect("waiter"));
    }
}
