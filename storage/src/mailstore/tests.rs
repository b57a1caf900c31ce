//! Tests of both backends: the conformance suite, and Maildir specifics
//! (Dovecot-written fixtures, changes behind our back, crash safety).

use super::*;
use crate::maildir::{MaildirLayout, SpecialFolders};
use crate::testutil::TempDir;
use std::sync::Arc;
use varan_core::mailstore::{MailStore, UserStore};

/// A Maildir store in its own temporary directory (dropped after the store).
pub(crate) struct TempMaildirStore {
    pub store: MaildirStore,
    #[allow(dead_code)]
    pub dir: TempDir,
}

impl MailStore for TempMaildirStore {
    fn user(&self, account: &varan_core::EmailAddress) -> varan_core::mailstore::StoreResult<Arc<dyn UserStore>> {
        self.store.user(account)
    }
}

pub(crate) fn layout(root: &std::path::Path) -> MaildirLayout {
    let mut l = MaildirLayout::new(root.to_path_buf(), SpecialFolders::default());
    l.host = "test.example.org".into();
    l
}

pub(crate) fn maildir_options() -> MaildirStoreOptions {
    MaildirStoreOptions { quota_bytes: Some(conformance::QUOTA_BYTES), fsync: false, ..MaildirStoreOptions::default() }
}

pub(crate) fn temp_maildir_store() -> TempMaildirStore {
    let dir = TempDir::new();
    TempMaildirStore { store: MaildirStore::new(layout(dir.path()), maildir_options()), dir }
}

mod maildir_conformance {
    use super::*;
    crate::mailstore_conformance_tests!(|| Box::new(temp_maildir_store()) as Box<dyn MailStore>);
}

mod memory_conformance {
    use super::*;
    crate::mailstore_conformance_tests!(
        || Box::new(MemoryStore::new(MemoryStoreOptions { quota_bytes: Some(conformance::QUOTA_BYTES), ..MemoryStoreOptions::default() })) as Box<dyn MailStore>
    );
}

#[test]
fn run_all_runs_every_case_on_memory() {
    conformance::run_all(&|| Box::new(MemoryStore::new(MemoryStoreOptions { quota_bytes: Some(conformance::QUOTA_BYTES), ..MemoryStoreOptions::default() })));
}

mod maildir_specific {
    use super::*;
    use crate::mailstore::conformance::block_on_timeout;
    use proptest::prelude::*;
    use std::fs::{self, File};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use varan_core::mailstore::{Flag, FlagOp, Mailbox, StoreError};
    use varan_core::EmailAddress;

    fn alice() -> EmailAddress {
        EmailAddress::parse("alice@example.org").unwrap()
    }

    fn msg(n: usize) -> Vec<u8> {
        format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes()
    }

    fn write_file(path: &Path, content: &[u8], mtime: i64) {
        fs::write(path, content).unwrap();
        File::options().write(true).open(path).unwrap().set_modified(UNIX_EPOCH + Duration::from_secs(mtime as u64)).unwrap();
    }

    fn only_file(dir: &Path) -> String {
        let names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| !n.starts_with('.')).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        names[0].clone()
    }

    /// A Maildir as Dovecot 2.3 leaves it: files in cur/ (flags + keyword
    /// letters) and new/, a version 3 uidlist with extension fields, a
    /// keywords file, a V2 subscriptions file and a nested folder.
    fn dovecot_fixture(root: &Path) -> PathBuf {
        let user = root.join("example.org/alice");
        for d in ["cur", "new", "tmp", ".Archive.2023/cur", ".Archive.2023/new", ".Archive.2023/tmp"] {
            fs::create_dir_all(user.join(d)).unwrap();
        }
        fs::write(user.join(".Archive.2023/maildirfolder"), b"").unwrap();
        write_file(&user.join("cur/1700000000.M1P100.mail,S=20,W=22:2,S"), b"Subject: a\n\nbody a\n", 1_700_000_000);
        write_file(&user.join("cur/1700000001.M2P100.mail,S=30:2,FRa"), b"Subject: b\n\nbody b\nmore bb\n", 1_700_000_001);
        write_file(&user.join("cur/1700000002.M3P100.mail:2,Tb"), b"Subject: c\r\n\r\nbody c\r\n", 1_700_000_002);
        write_file(&user.join("new/1700000003.M4P100.mail"), b"Subject: d\n\nd\n", 1_700_000_003);
        fs::write(
            user.join("dovecot-uidlist"),
            "3 V1234567 N20 G0123456789abcdef0123456789abcdef\n\
             5 :1700000000.M1P100.mail,S=20,W=22:2,S\n\
             7 W31 :1700000001.M2P100.mail,S=30:2,FR\n\
             9 :1700000002.M3P100.mail:2,T\n\
             12 :1700000003.M4P100.mail\n",
        )
        .unwrap();
        fs::write(user.join("dovecot-keywords"), "0 $Junk\n1 NonJunk\n").unwrap();
        fs::write(user.join("subscriptions"), "V\t2\n\nArchive\t2023\n").unwrap();
        user
    }

    fn flags(mb: &dyn Mailbox, uid: u32) -> Vec<Flag> {
        let mut f = mb.changes_since(0).unwrap().changed.into_iter().find(|m| m.uid == uid).unwrap().flags;
        f.sort();
        f
    }

    #[test]
    fn warm_mailboxes_stay_loaded_and_deleting_lets_go() {
        let t = TempDir::new();
        let store = MaildirStore::new(layout(t.path()), MaildirStoreOptions { fsync: false, warm_mailboxes: 2, ..Default::default() });
        let user = store.user(&EmailAddress::parse("w@example.org").unwrap()).unwrap();
        user.create("A", None).unwrap();
        let first = user.open("A").unwrap();
        first.append(b"Subject: x\r\n\r\nbody\r\n", &[], None).unwrap();
        let addr = Arc::as_ptr(&first) as *const u8;
        drop(first);
        assert_eq!(store.open_mailboxes(), 1, "kept warm after the last session let go");
        let again = user.open("A").unwrap();
        assert_eq!(Arc::as_ptr(&again) as *const u8, addr, "the same loaded handle");
        drop(again);
        // Two more mailboxes push A out (limit 2): its index is written.
        for name in ["INBOX", "Sent"] {
            drop(user.open(name).unwrap());
        }
        assert_eq!(store.open_mailboxes(), 2);
        assert!(t.path().join("example.org/w/.A/varan-index").is_file());
        // Deleting a warm mailbox lets go of it; a new one at the path starts fresh.
        let sent = user.open("Sent").unwrap();
        let uv = sent.status().unwrap().uidvalidity;
        drop(sent);
        user.delete("Sent").unwrap();
        assert_eq!(store.open_mailboxes(), 1);
        user.create("Sent", None).unwrap();
        let fresh = user.open("Sent").unwrap();
        assert_eq!(fresh.status().unwrap().messages, 0);
        assert!(fresh.status().unwrap().uidvalidity >= uv);
        drop(fresh);
        store.release_warm();
        assert_eq!(store.open_mailboxes(), 0);
        for dir in ["example.org/w", "example.org/w/.Sent", "example.org/w/.A"] {
            assert!(!t.path().join(dir).join("varan-index.open").exists(), "{dir}: open marker left after release");
        }
    }

    #[test]
    fn dovecot_maildir_opens_in_place_and_stays_readable() {
        let t = TempDir::new();
        let user_dir = dovecot_fixture(t.path());
        let store = MaildirStore::new(layout(t.path()), MaildirStoreOptions { fsync: false, ..Default::default() });
        let user = store.user(&alice()).unwrap();
        let inbox = user.open("INBOX").unwrap();
        let s = inbox.status().unwrap();
        assert_eq!((s.uidvalidity, s.uidnext, s.messages, s.unseen, s.deleted), (1234567, 20, 4, 3, 1));
        assert_eq!(inbox.uids().unwrap(), vec![5, 7, 9, 12]);
        assert_eq!(flags(&*inbox, 5), vec![Flag::Seen]);
        assert_eq!(flags(&*inbox, 7), vec![Flag::Answered, Flag::Flagged, Flag::Keyword("$Junk".into())]);
        assert_eq!(flags(&*inbox, 9), vec![Flag::Deleted, Flag::Keyword("NonJunk".into())]);
        assert!(flags(&*inbox, 12).is_empty());
        assert_eq!(&inbox.read(5).unwrap()[..], b"Subject: a\r\n\r\nbody a\r\n");
        assert_eq!(&inbox.read(9).unwrap()[..], b"Subject: c\r\n\r\nbody c\r\n");
        let all = inbox.changes_since(0).unwrap().changed;
        for m in &all {
            assert_eq!(m.size, inbox.read(m.uid).unwrap().len() as u64, "uid {}", m.uid);
        }
        assert_eq!(all[0].internal_date, 1_700_000_000);
        assert_eq!(all[3].internal_date, 1_700_000_003);
        // The new/ file moved to cur/ with an empty info part.
        assert!(user_dir.join("cur/1700000003.M4P100.mail:2,").exists());
        // Folder list: the nested folder, its implicit parent, Dovecot's subscription.
        let list = user.list().unwrap();
        let archive2023 = list.iter().find(|e| e.name == "Archive/2023").unwrap();
        assert!(archive2023.selectable && archive2023.subscribed);
        assert!(list.iter().any(|e| e.name == "Archive" && !e.selectable && e.has_children));
        // Varan writes in Dovecot's formats.
        let uid = inbox.append(b"Subject: new\r\n\r\nx\r\n", &[Flag::Seen, Flag::Keyword("NonJunk".into()), Flag::Keyword("Work".into())], Some(1_700_000_100)).unwrap();
        assert_eq!(uid, 20);
        inbox.store(&[5], FlagOp::Add, &[Flag::Flagged, Flag::Keyword("$junk".into())], None).unwrap();
        let text = fs::read_to_string(user_dir.join("dovecot-uidlist")).unwrap();
        let list = uidlist::Uidlist::parse(text.as_bytes()).unwrap();
        assert_eq!(list.uidvalidity, 1234567);
        assert_eq!(list.guid, "0123456789abcdef0123456789abcdef");
        let rec = list.records.iter().find(|r| r.uid == 20).unwrap();
        let file =
            fs::read_dir(user_dir.join("cur")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).find(|n| filename::base(n) == filename::base(&rec.name)).unwrap();
        assert!(file.ends_with(":2,Sbc"), "{file}");
        assert_eq!(fs::read(user_dir.join("cur").join(&file)).unwrap(), b"Subject: new\n\nx\n", "stored with LF, as Dovecot does");
        let mtime = fs::metadata(user_dir.join("cur").join(&file)).unwrap().modified().unwrap();
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(1_700_000_100));
        assert!(user_dir.join("cur/1700000000.M1P100.mail,S=20,W=22:2,FSa").exists());
        assert_eq!(fs::read_to_string(user_dir.join("dovecot-keywords")).unwrap(), "0 $Junk\n1 NonJunk\n2 Work\n");
        assert!(!user_dir.join("dovecot-uidlist.lock").exists());
        // Reopened (index from disk), everything is the same.
        let before = inbox.changes_since(0).unwrap();
        drop(inbox);
        assert_eq!(store.open_mailboxes(), 0);
        let again = store.user(&alice()).unwrap().open("INBOX").unwrap();
        assert_eq!(again.changes_since(0).unwrap(), before);
    }

    #[test]
    fn files_dropped_into_new_get_uids_after_sync() {
        let t = temp_maildir_store();
        let user = t.store.maildir_user(&alice()).unwrap();
        let inbox = user.open("INBOX").unwrap();
        let first = inbox.append(&msg(1), &[], None).unwrap();
        let dir = user.dir().to_path_buf();
        let v = inbox.version();
        write_file(&dir.join("new/1800000001.M5P7.other,S=12"), b"Subject: x\n\n", 1_800_000_001);
        write_file(&dir.join("new/1800000000.M9P7.other"), b"Subject: y\n\n", 1_800_000_000);
        t.store.notify_delivered(&dir);
        assert!(block_on_timeout(inbox.changed(v), Duration::from_secs(5)).is_some(), "notify_delivered wakes waiters");
        inbox.sync().unwrap();
        let uids = inbox.uids().unwrap();
        assert_eq!(uids, vec![first, first + 1, first + 2]);
        // Arrival order: the older file gets the lower UID.
        assert_eq!(&inbox.read(first + 1).unwrap()[..], b"Subject: y\r\n\r\n");
        assert_eq!(&inbox.read(first + 2).unwrap()[..], b"Subject: x\r\n\r\n");
        assert!(fs::read_dir(dir.join("new")).unwrap().next().is_none(), "moved to cur/");
        // Without notify_delivered, a plain sync notices too.
        write_file(&dir.join("new/1800000002.M1P7.other"), b"Subject: z\n\n", 1_800_000_002);
        inbox.sync().unwrap();
        assert_eq!(inbox.uids().unwrap().len(), 4);
        // UIDs are in the uidlist on disk as soon as they are visible.
        let list = uidlist::Uidlist::parse(&fs::read(dir.join("dovecot-uidlist")).unwrap()).unwrap();
        assert_eq!(list.records.iter().map(|r| r.uid).collect::<Vec<_>>(), inbox.uids().unwrap());
        // notify_delivered for a mailbox nobody has open is a no-op.
        t.store.notify_delivered(&dir.join(".Sent"));
    }

    #[test]
    fn file_deleted_behind_our_back_is_expunged() {
        let t = temp_maildir_store();
        let user = t.store.maildir_user(&alice()).unwrap();
        let inbox = user.open("INBOX").unwrap();
        let a = inbox.append(&msg(1), &[], None).unwrap();
        let b = inbox.append(&msg(2), &[], None).unwrap();
        let h = inbox.status().unwrap().highest_modseq;
        let cur = user.dir().join("cur");
        let victim = fs::read_dir(&cur).unwrap().map(|e| e.unwrap().path()).find(|p| fs::read(p).unwrap() == filename::to_lf(&msg(1))).unwrap();
        fs::remove_file(victim).unwrap();
        inbox.sync().unwrap();
        assert_eq!(inbox.uids().unwrap(), vec![b]);
        let c = inbox.changes_since(h).unwrap();
        assert_eq!(c.expunged, vec![a]);
        assert!(c.status.highest_modseq > h);
        assert!(matches!(inbox.read(a), Err(StoreError::Expunged)));
    }

    #[test]
    fn flag_rename_by_another_tool_bumps_modseq_and_read_finds_renamed_files() {
        let t = temp_maildir_store();
        let user = t.store.maildir_user(&alice()).unwrap();
        let inbox = user.open("INBOX").unwrap();
        let uid = inbox.append(&msg(1), &[], None).unwrap();
        let h = inbox.status().unwrap().highest_modseq;
        let cur = user.dir().join("cur");
        let name = only_file(&cur);
        let renamed = format!("{}:2,ST", filename::base(&name));
        fs::rename(cur.join(&name), cur.join(&renamed)).unwrap();
        // read() finds the file again without an explicit sync.
        assert_eq!(&inbox.read(uid).unwrap()[..], &msg(1)[..]);
        inbox.sync().unwrap();
        let c = inbox.changes_since(h).unwrap();
        assert_eq!(c.changed.len(), 1);
        assert!(c.changed[0].modseq > h);
        assert!(c.changed[0].has(&Flag::Seen) && c.changed[0].has(&Flag::Deleted));
        // Our own store after that works on the new name.
        inbox.store(&[uid], FlagOp::Remove, &[Flag::Deleted], None).unwrap();
        assert_eq!(only_file(&cur), format!("{}:2,S", filename::base(&name)));
    }

    #[test]
    fn damaged_index_is_rebuilt_and_modseqs_never_go_backwards() {
        let t = temp_maildir_store();
        let user = t.store.maildir_user(&alice()).unwrap();
        let dir = user.dir().to_path_buf();
        let (uids, highest, validity) = {
            let inbox = user.open("INBOX").unwrap();
            for i in 0..5 {
                inbox.append(&msg(i), &[Flag::Seen], None).unwrap();
            }
            inbox.store(&[1, 2], FlagOp::Add, &[Flag::Flagged], None).unwrap();
            let s = inbox.status().unwrap();
            (inbox.uids().unwrap(), s.highest_modseq, s.uidvalidity)
        };
        assert!(!dir.join(index::OPEN_FILE).exists(), "clean close removes the marker");
        for garbage in [&b""[..], b"VARAN-INDEX 1\nV1 H2 L0\nC 00000000\n", b"\xff\xfe garbage \x00\n", b"VARAN-INDEX 1\n"] {
            fs::write(dir.join(index::INDEX_FILE), garbage).unwrap();
            let inbox = user.open("INBOX").unwrap();
            let s = inbox.status().unwrap();
            assert_eq!(inbox.uids().unwrap(), uids);
            assert_eq!(s.uidvalidity, validity);
            assert!(s.highest_modseq > highest, "rebuilt modseq {} must exceed {highest}", s.highest_modseq);
            let c = inbox.changes_since(highest).unwrap();
            assert_eq!(c.changed.len(), uids.len(), "every message reported as changed");
            assert!(c.expunged_incomplete);
            assert!(flags(&*inbox, 1).contains(&Flag::Flagged));
        }
        // A garbage uidlist: a new UIDVALIDITY, no panic.
        fs::write(dir.join("dovecot-uidlist"), b"\x00\x01garbage\n").unwrap();
        let inbox = user.open("INBOX").unwrap();
        assert_ne!(inbox.status().unwrap().uidvalidity, validity);
        assert_eq!(inbox.uids().unwrap().len(), uids.len());
    }

    #[test]
    fn unclean_shutdown_continues_above_the_reserved_ceiling() {
        let t = temp_maildir_store();
        let user = t.store.maildir_user(&alice()).unwrap();
        let dir = user.dir().to_path_buf();
        let inbox = user.open("INBOX").unwrap();
        inbox.append(&msg(1), &[], None).unwrap();
        let h = inbox.status().unwrap().highest_modseq;
        assert!(dir.join(index::OPEN_FILE).exists(), "the ceiling is reserved while open");
        let ceiling: u64 = fs::read_to_string(dir.join(index::OPEN_FILE)).unwrap().trim().parse().unwrap();
        assert!(ceiling > h);
        // Simulate a crash: the handle's state is lost, the files stay.
        std::mem::forget(inbox);
        let store2 = MaildirStore::new(layout(t.dir.path()), maildir_options());
        let inbox = store2.user(&alice()).unwrap().open("INBOX").unwrap();
        let s = inbox.status().unwrap();
        assert!(s.highest_modseq >= ceiling, "{} < {ceiling}", s.highest_modseq);
        assert!(inbox.changes_since(h).unwrap().expunged_incomplete);
        assert!(!inbox.changes_since(s.highest_modseq).unwrap().expunged_incomplete);
    }

    #[test]
    fn stale_dotlock_is_overridden_and_limits_hold() {
        let t = TempDir::new();
        let store = MaildirStore::new(layout(t.path()), MaildirStoreOptions { fsync: false, message_bytes_max: 100, ..Default::default() });
        let user = store.maildir_user(&alice()).unwrap();
        let inbox = user.open("INBOX").unwrap();
        let lock = user.dir().join(uidlist::LOCK_FILE);
        fs::write(&lock, "1:elsewhere").unwrap();
        File::options().write(true).open(&lock).unwrap().set_modified(SystemTime::now() - Duration::from_secs(600)).unwrap();
        inbox.append(&msg(1), &[], None).unwrap();
        assert!(!lock.exists());
        // A lock of a process of this host that is gone is stale at once.
        fs::write(&lock, format!("{}:test.example.org", u32::MAX - 7)).unwrap();
        inbox.append(&msg(2), &[], None).unwrap();
        let big = vec![b'x'; 200];
        assert!(matches!(inbox.append(&big, &[], None), Err(StoreError::Limit(_))));
        assert!(fs::read_dir(user.dir().join("tmp")).unwrap().next().is_none(), "no tmp leftovers");
        user.create("Entwürfe", None).unwrap();
        assert!(user.dir().join(".Entw&APw-rfe/cur").is_dir());
        assert!(user.dir().join(".Entw&APw-rfe/maildirfolder").is_file());
    }

    #[test]
    fn copy_between_maildirs_hard_links() {
        use std::os::unix::fs::MetadataExt;
        let t = temp_maildir_store();
        let user = t.store.maildir_user(&alice()).unwrap();
        let inbox = user.open("INBOX").unwrap();
        let sent = user.open("Sent").unwrap();
        let uid = inbox.append(&msg(1), &[Flag::Answered], Some(1_650_000_000)).unwrap();
        let pairs = inbox.copy_to(&[uid], &*sent).unwrap();
        let a = user.dir().join("cur").join(only_file(&user.dir().join("cur")));
        let b = user.dir().join(".Sent/cur").join(only_file(&user.dir().join(".Sent/cur")));
        assert_eq!(fs::metadata(&a).unwrap().ino(), fs::metadata(&b).unwrap().ino());
        assert!(b.to_string_lossy().ends_with(":2,R"));
        assert_eq!(flags(&*sent, pairs[0].1), vec![Flag::Answered]);
        assert_eq!(user.quota().unwrap().messages, 2);
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        Flag(usize, bool),
        Expunge(usize),
        ExternalAdd,
        ExternalDelete(usize),
        ExternalRename(usize),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Append),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::Flag(i, b)),
            1 => any::<usize>().prop_map(Op::Expunge),
            1 => Just(Op::ExternalAdd),
            1 => any::<usize>().prop_map(Op::ExternalDelete),
            1 => any::<usize>().prop_map(Op::ExternalRename),
            1 => Just(Op::Reopen),
        ]
    }

    fn snapshot(mb: &dyn Mailbox) -> Vec<(u32, Vec<Flag>, u64, i64)> {
        mb.changes_since(0)
            .unwrap()
            .changed
            .into_iter()
            .map(|m| {
                let mut f = m.flags;
                f.sort();
                (m.uid, f, m.size, m.internal_date)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn random_histories_keep_uids_ascending_and_the_index_consistent(ops in proptest::collection::vec(op(), 1..40)) {
            let t = temp_maildir_store();
            let user = t.store.maildir_user(&alice()).unwrap();
            let dir = user.dir().to_path_buf();
            let mut inbox = user.open("INBOX").unwrap();
            let mut max_uid = 0u32;
            let mut seen = std::collections::BTreeSet::new();
            let mut last_highest = 0u64;
            let mut n = 0u64;
            for op in ops {
                match op {
                    Op::Append(b) => {
                        let uid = inbox.append(&msg(b as usize), &[], None).unwrap();
                        prop_assert!(uid > max_uid);
                        max_uid = uid;
                        seen.insert(uid);
                    }
                    Op::Flag(i, add) => {
                        let uids = inbox.uids().unwrap();
                        if !uids.is_empty() {
                            let op = if add { FlagOp::Add } else { FlagOp::Remove };
                            inbox.store(&[uids[i % uids.len()]], op, &[Flag::Deleted, Flag::Keyword("$K".into())], None).unwrap();
                        }
                    }
                    Op::Expunge(i) => {
                        let uids = inbox.uids().unwrap();
                        if !uids.is_empty() {
                            inbox.expunge(Some(&[uids[i % uids.len()]])).unwrap();
                        }
                    }
                    Op::ExternalAdd => {
                        n += 1;
                        write_file(&dir.join(format!("new/1900000000.M{n}P1.tool")), b"Subject: ext\n\nx\n", 1_900_000_000);
                    }
                    Op::ExternalDelete(i) | Op::ExternalRename(i) => {
                        let files: Vec<PathBuf> = fs::read_dir(dir.join("cur")).unwrap().map(|e| e.unwrap().path()).collect();
                        if !files.is_empty() {
                            let f = &files[i % files.len()];
                            if matches!(op, Op::ExternalDelete(_)) {
                                fs::remove_file(f).unwrap();
                            } else {
                                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                                fs::rename(f, dir.join("cur").join(format!("{}:2,F", filename::base(&name)))).unwrap();
                            }
                        }
                    }
                    Op::Reopen => {
                        drop(inbox);
                        inbox = user.open("INBOX").unwrap();
                    }
                }
                inbox.sync().unwrap();
                let uids = inbox.uids().unwrap();
                prop_assert!(uids.windows(2).all(|w| w[0] < w[1]));
                // A UID not seen before is above every UID ever seen.
                for &u in &uids {
                    if !seen.contains(&u) {
                        prop_assert!(u > max_uid, "UID {} reused or out of order (max {})", u, max_uid);
                    }
                }
                seen = uids.iter().copied().collect();
                max_uid = max_uid.max(uids.last().copied().unwrap_or(0));
                let s = inbox.status().unwrap();
                prop_assert!(s.highest_modseq >= last_highest);
                prop_assert!(s.uidnext > max_uid);
                last_highest = s.highest_modseq;
            }
            // The index agrees with a rebuild from the files.
            let with_index = snapshot(&*inbox);
            drop(inbox);
            let reopened = user.open("INBOX").unwrap();
            prop_assert_eq!(snapshot(&*reopened), with_index.clone());
            prop_assert!(reopened.status().unwrap().highest_modseq >= last_highest);
            drop(reopened);
            fs::remove_file(dir.join(index::INDEX_FILE)).unwrap();
            let rebuilt = user.open("INBOX").unwrap();
            prop_assert_eq!(snapshot(&*rebuilt), with_index);
            prop_assert!(rebuilt.status().unwrap().highest_modseq > last_highest);
            // Every uidlist record of a live message names its file.
            let list = uidlist::Uidlist::parse(&fs::read(dir.join("dovecot-uidlist")).unwrap()).unwrap();
            for uid in rebuilt.uids().unwrap() {
                prop_assert!(list.records.iter().any(|r| r.uid == uid));
            }
        }
    }
}
