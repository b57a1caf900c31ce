use super::*;
use crate::testutil::TempDir;
use std::collections::HashSet;
use std::time::Duration;

fn layout(root: &Path) -> MaildirLayout {
    let mut l = MaildirLayout::new(root.to_path_buf(), SpecialFolders::default());
    l.host = "mx1.example.org".into();
    l
}

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

#[test]
fn names_are_unique_and_carry_sizes() {
    let l = layout(Path::new("/m"));
    let now = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let mut seen = HashSet::new();
    for seq in 0..1000 {
        for shard in 0..3 {
            let n = l.new_message_name(shard, seq, 1000 + seq, 1040 + seq, now);
            assert!(seen.insert(n.clone()), "duplicate {n}");
            assert_eq!(parse_sizes(&n), (Some(1000 + seq), Some(1040 + seq)));
            assert!(!n.contains('/') && !n.contains(':'));
        }
    }
    let n = l.new_message_name(2, 7, 10, 12, now);
    assert_eq!(n, format!("1700000000.M123456P{}Q2_7.mx1.example.org,S=10,W=12", std::process::id()));
    assert_eq!(parse_sizes(&format!("{n}:2,RS")), (Some(10), Some(12)));
    assert_eq!(parse_sizes("1.M2P3.host"), (None, None));
}

#[test]
fn host_is_escaped_as_the_maildir_spec_says() {
    let mut l = layout(Path::new("/m"));
    l.host = "we/ird:host,name".into();
    let n = l.new_message_name(0, 1, 5, 6, UNIX_EPOCH);
    assert!(n.contains(".we\\057ird\\072host\\054name,S=5,W=6"), "{n}");
    assert_eq!(parse_sizes(&n), (Some(5), Some(6)));
}

#[test]
fn user_dir_is_lower_cased_and_filesystem_safe() {
    let l = layout(Path::new("/m"));
    assert_eq!(l.user_dir(&addr("John.Doe@Example.ORG")), PathBuf::from("/m/example.org/john.doe"));
    assert_eq!(l.user_dir(&addr("a/b@x.org")), PathBuf::from("/m/x.org/a%2Fb"));
    assert_eq!(l.user_dir(&addr("100%@x.org")), PathBuf::from("/m/x.org/100%25"));
    let dotted = EmailAddress::new(".hidden", "x.org").unwrap();
    assert_eq!(l.user_dir(&dotted), PathBuf::from("/m/x.org/%2Ehidden"));
    let dots = EmailAddress::new("..", "x.org").unwrap();
    assert_eq!(l.user_dir(&dots), PathBuf::from("/m/x.org/%2E."));
    assert_eq!(l.user_dir(&addr("Пётр@почта.рф")), PathBuf::from("/m/почта.рф/пётр"));
    let ctl = EmailAddress::new("a\nb", "x.org").unwrap();
    assert_eq!(l.user_dir(&ctl), PathBuf::from("/m/x.org/a%0Ab"));
}

#[test]
fn ensure_user_creates_a_dovecot_tree_once() {
    let t = TempDir::new();
    let l = layout(t.path());
    let dir = l.ensure_user(&addr("U1@a.test")).unwrap();
    assert_eq!(dir, t.path().join("a.test/u1"));
    for sub in ["cur", "new", "tmp"] {
        assert!(dir.join(sub).is_dir());
        for f in [".Drafts", ".Sent", ".Junk", ".Trash", ".Archive"] {
            assert!(dir.join(f).join(sub).is_dir(), "{f}/{sub}");
            assert!(dir.join(f).join("maildirfolder").is_file());
        }
    }
    let subs = dir.join("subscriptions");
    assert_eq!(fs::read_to_string(&subs).unwrap(), "V\t2\n\nDrafts\nSent\nJunk\nTrash\nArchive\n");
    // The user's own changes survive a later call.
    fs::write(&subs, "V\t2\n\nSent\n").unwrap();
    l.ensure_user(&addr("u1@a.test")).unwrap();
    assert_eq!(fs::read_to_string(&subs).unwrap(), "V\t2\n\nSent\n");
    let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty());
}

#[test]
fn folder_names_use_modified_utf7() {
    // RFC 3501 §5.1.3 examples.
    assert_eq!(encode_mutf7("台北"), "&U,BTFw-");
    assert_eq!(encode_mutf7("日本語"), "&ZeVnLIqe-");
    assert_eq!(encode_mutf7("A&B"), "A&-B");
    assert_eq!(encode_mutf7("Sent"), "Sent");
    assert_eq!(folder_dir_name("Отправленные").unwrap(), ".&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-");
    for bad in ["", "a.b", "a/b", "..", "INBOX", "tab\there"] {
        assert!(folder_dir_name(bad).is_err(), "{bad:?}");
    }
    let t = TempDir::new();
    let mut l = layout(t.path());
    l.folders.sent = "Отправленные".into();
    let dir = l.ensure_user(&addr("u@a.test")).unwrap();
    assert!(dir.join(".&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-/cur").is_dir());
    l.folders.junk = "bad/name".into();
    assert!(l.ensure_user(&addr("v@a.test")).is_err());
}

#[test]
fn deliver_writes_new_file_without_leftovers() {
    let t = TempDir::new();
    let l = layout(t.path());
    let dir = l.ensure_user(&addr("u@a.test")).unwrap();
    let name = l.new_message_name(0, 1, 20, 22, SystemTime::now());
    let target = Delivery { path: l.delivery_path(&dir, None, &name).unwrap(), prefix: b"Delivered-To: u@a.test\n".to_vec() };
    let content = Content::Inline(b"Subject: x\n\nhi\n".to_vec());
    assert!(!is_delivered(&target, &content).unwrap());
    deliver(&target, &content).unwrap();
    assert_eq!(fs::read(&target.path).unwrap(), b"Delivered-To: u@a.test\nSubject: x\n\nhi\n");
    assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    assert!(is_delivered(&target, &content).unwrap());
    assert!(!is_delivered(&target, &Content::Inline(b"Subject: y\n\nhi\n".to_vec())).unwrap());
    // Read by an IMAP client: moved to cur/ with flags.
    let cur = dir.join("cur").join(format!("{name}:2,FS"));
    fs::rename(&target.path, &cur).unwrap();
    assert!(is_delivered(&target, &content).unwrap());
    assert_eq!(find_delivered(&target).unwrap(), Some(cur.clone()));
    // A different message whose name merely starts the same is not it.
    fs::rename(&cur, dir.join("cur").join(format!("{name}0:2,S"))).unwrap();
    assert!(!is_delivered(&target, &content).unwrap());
}

#[test]
fn deliver_into_folder_and_from_spool() {
    let t = TempDir::new();
    let l = layout(t.path());
    let dir = l.ensure_user(&addr("u@a.test")).unwrap();
    let spool = t.path().join("s.msg");
    fs::write(&spool, vec![b'b'; 150_000]).unwrap();
    let target = Delivery { path: l.delivery_path(&dir, Some("Junk"), "n1").unwrap(), prefix: b"X-Spam: yes\n".to_vec() };
    let content = Content::Spooled(spool);
    deliver(&target, &content).unwrap();
    assert!(dir.join(".Junk/new/n1").is_file());
    assert_eq!(fs::metadata(dir.join(".Junk/new/n1")).unwrap().len(), 150_012);
    assert!(is_delivered(&target, &content).unwrap());
}

#[test]
fn deliver_refuses_targets_outside_new() {
    let t = TempDir::new();
    let content = Content::Inline(b"x".to_vec());
    for p in ["/", "x", "cur/x"] {
        let target = Delivery { path: t.path().join(p), prefix: vec![] };
        assert_eq!(deliver(&target, &content).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{p}");
    }
}

#[test]
fn syncfs_on_the_mail_filesystem() {
    let t = TempDir::new();
    let s = FsSyncer::open(t.path()).unwrap();
    s.sync().unwrap();
    s.sync().unwrap();
    sync_filesystem(t.path()).unwrap();
    assert!(sync_filesystem(&t.path().join("missing")).is_err());
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FsSyncer>();
}

#[test]
fn sizes_helpers() {
    assert_eq!(crlf_size(10, 3), 13);
    assert_eq!(fs_safe_component(""), "%00");
}
