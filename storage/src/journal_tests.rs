//! Tests of the journal: persistence, torn tails, ids, rotation and
//! retirement, spool file ownership, and crash recovery end to end.

use super::*;
use crate::maildir::{self, create_maildir};
use crate::recovery::{redeliver, Mode, RecoveryReport};
use crate::spool::Spool;
use crate::testutil::TempDir;

fn inline(id: u64, maildir: &Path, names: &[&str], body: &str) -> JournalRecord {
    JournalRecord {
        id,
        deliveries: names.iter().map(|n| Delivery { path: maildir.join("new").join(n), prefix: format!("Delivered-To: {n}@a.test\n").into_bytes() }).collect(),
        content: Content::Inline(body.as_bytes().to_vec()),
        outbound: None,
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("seg-")).collect();
    v.sort();
    v
}

fn spooled(dir: &Path, body: &[u8]) -> Content {
    let mut s = Spool::new(dir, 0);
    s.write(body).unwrap();
    s.finish().unwrap()
}

#[test]
fn append_then_reopen_returns_records_oldest_first() {
    let t = TempDir::new();
    let jdir = t.path().join("journal/shard-0");
    let m = t.path().join("mail/u");
    let (mut j, old) = Journal::open(&jdir).unwrap();
    assert!(old.is_empty());
    let body = spooled(j.spool_dir(), b"spooled body\n");
    let a = inline(j.next_id(), &m, &["a"], "one\n");
    let b = JournalRecord { id: j.next_id(), deliveries: vec![Delivery { path: m.join("new/b"), prefix: vec![] }], content: body, outbound: None };
    let c = inline(j.next_id(), &m, &["c1", "c2"], "three\n");
    j.append(&[a.clone(), b.clone()]).unwrap();
    j.append(std::slice::from_ref(&c)).unwrap();
    j.append(&[]).unwrap();
    drop(j); // crash: no rotate, so only the records carry the last ids
    let (mut j, got) = Journal::open(&jdir).unwrap();
    assert!(j.next_id() > c.id, "record id reused after restart");
    assert_eq!(got, vec![a, b, c]);
    assert!(j.recovered_upto().is_some());
    assert_eq!(segments(&jdir).len(), 2, "old segment kept until retired, plus a fresh one");
}

#[test]
fn ids_are_monotonic_across_reopen_and_retire() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open(&jdir).unwrap();
    let ids = j.ids();
    let first = j.next_id();
    assert!(ids.next() > first, "handle shares the counter");
    let last = j.next_id();
    j.append(&[inline(last, &m, &["x"], "x\n")]).unwrap();
    // Ids handed out but never appended need not survive; appended ones
    // must never be reused.
    let closed = j.rotate().unwrap();
    j.retire(closed).unwrap();
    drop(j);
    let (mut j, recs) = Journal::open(&jdir).unwrap();
    assert!(recs.is_empty());
    let after = j.next_id();
    assert!(after > last, "id {after} not above {last} after every segment with records was retired");
    drop(j);
    // Reopening without appending keeps ids increasing, too.
    let (mut j, _) = Journal::open(&jdir).unwrap();
    assert!(j.next_id() >= after);
    assert_eq!(segments(&jdir).len(), 1, "empty old segments are removed at open");
}

#[test]
fn torn_tail_at_every_offset_keeps_earlier_records() {
    let t = TempDir::new();
    let src = t.path().join("src");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open(&src).unwrap();
    let a = inline(j.next_id(), &m, &["a"], "first message\n");
    let b = inline(j.next_id(), &m, &["b1", "b2"], "second message, cut somewhere\n");
    j.append(std::slice::from_ref(&a)).unwrap();
    let seg = src.join(j.current_segment().unwrap().file_name());
    let a_end = fs::metadata(&seg).unwrap().len();
    j.append(std::slice::from_ref(&b)).unwrap();
    drop(j);
    let bytes = fs::read(&seg).unwrap();
    assert!(bytes.len() as u64 > a_end);
    for cut in a_end..bytes.len() as u64 {
        let dir = t.path().join(format!("cut-{cut}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(seg.file_name().unwrap()), &bytes[..cut as usize]).unwrap();
        let (_j, got) = Journal::open(&dir).unwrap();
        assert_eq!(got, vec![a.clone()], "cut at {cut}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn corrupted_checksum_stops_reading_that_segment() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open(&jdir).unwrap();
    let recs: Vec<_> = (0..3).map(|i| inline(j.next_id(), &m, &["n"], &format!("message {i}\n"))).collect();
    let mut ends = Vec::new();
    let seg = jdir.join(j.current_segment().unwrap().file_name());
    for r in &recs {
        j.append(std::slice::from_ref(r)).unwrap();
        ends.push(fs::metadata(&seg).unwrap().len());
    }
    drop(j);
    let mut bytes = fs::read(&seg).unwrap();
    // Flip a byte inside the second record's payload.
    bytes[ends[0] as usize + 20] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let (_j, got) = Journal::open(&jdir).unwrap();
    assert_eq!(got, vec![recs[0].clone()]);
}

#[test]
fn rotate_and_retire_delete_only_what_they_should() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open(&jdir).unwrap();
    let first_segment = j.current_segment().unwrap();
    let s1 = spooled(j.spool_dir(), b"body one\n");
    let r1 = JournalRecord { id: j.next_id(), deliveries: vec![Delivery { path: m.join("new/1"), prefix: vec![] }], content: s1.clone(), outbound: None };
    j.append(&[r1]).unwrap();
    let c1 = j.rotate().unwrap();
    assert_eq!(c1, first_segment);
    let s2 = spooled(j.spool_dir(), b"body two\n");
    let r2 = JournalRecord { id: j.next_id(), deliveries: vec![Delivery { path: m.join("new/2"), prefix: vec![] }], content: s2.clone(), outbound: None };
    j.append(std::slice::from_ref(&r2)).unwrap();
    let c2 = j.rotate().unwrap();
    assert!(c2 > c1);
    assert_eq!(j.closed_segments(), vec![c1, c2]);
    assert_eq!(segments(&jdir).len(), 3);

    j.retire(c1).unwrap();
    let path = |c: &Content| match c {
        Content::Spooled(p) => p.clone(),
        Content::Inline(_) => unreachable!(),
    };
    assert!(!path(&s1).exists(), "spool file of a retired record kept");
    assert!(path(&s2).exists(), "spool file of a live record deleted");
    assert_eq!(segments(&jdir), vec![c2.file_name(), j.current_segment().unwrap().file_name()]);
    assert_eq!(j.reread(c2).unwrap(), vec![r2]);

    // Retiring past the current segment never deletes it.
    let current = j.current_segment().unwrap();
    j.retire(SegmentId(u64::MAX)).unwrap();
    assert_eq!(segments(&jdir), vec![current.file_name()]);
    assert!(!path(&s2).exists());
    // Retiring again is a no-op.
    j.retire(SegmentId(u64::MAX)).unwrap();
    let m2 = t.path().join("m2");
    let z = inline(j.next_id(), &m2, &["z"], "z\n");
    j.append(&[z]).unwrap();
    drop(j);
    assert_eq!(Journal::open(&jdir).unwrap().1.len(), 1);
}

#[test]
fn orphan_spool_files_are_removed_at_open_and_lost_ones_reported() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open(&jdir).unwrap();
    let live = spooled(j.spool_dir(), b"live\n");
    let lost = spooled(j.spool_dir(), b"lost\n");
    let orphan = spooled(j.spool_dir(), b"orphan, its session died before the append\n");
    let keep_other = j.spool_dir().join("README.txt");
    fs::write(&keep_other, b"not ours").unwrap();
    let rec = |id, c: &Content| JournalRecord { id, deliveries: vec![Delivery { path: m.join("new/x"), prefix: vec![] }], content: c.clone(), outbound: None };
    let r_live = rec(j.next_id(), &live);
    let r_lost = rec(j.next_id(), &lost);
    j.append(&[r_live.clone(), r_lost]).unwrap();
    drop(j);
    let Content::Spooled(lost_path) = lost else { unreachable!() };
    fs::write(&lost_path, b"damaged").unwrap();
    let (_j, got) = Journal::open(&jdir).unwrap();
    assert_eq!(got, vec![r_live.clone()], "record with a damaged spool file returned");
    let Content::Spooled(orphan_path) = orphan else { unreachable!() };
    let Content::Spooled(live_path) = live else { unreachable!() };
    assert!(!orphan_path.exists());
    assert!(live_path.exists());
    assert!(keep_other.exists(), "a file that is not a spool file was deleted");
}

#[test]
fn second_open_of_the_same_journal_is_refused() {
    let t = TempDir::new();
    let (_j, _) = Journal::open(t.path()).unwrap();
    let err = Journal::open(t.path()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn invalid_record_is_refused_before_anything_is_written() {
    let t = TempDir::new();
    let m = t.path().join("m");
    let (mut j, _) = Journal::open(&t.path().join("j")).unwrap();
    let seg = j.current_segment().unwrap();
    let good = inline(j.next_id(), &m, &["a"], "a\n");
    let mut bad = inline(j.next_id(), &m, &["b"], "b\n");
    bad.deliveries[0].path = PathBuf::from("relative/new/b");
    assert_eq!(j.append(&[good.clone(), bad]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    let missing = JournalRecord { id: j.next_id(), deliveries: vec![], content: Content::Spooled(t.path().join("nope.msg")), outbound: None };
    assert!(j.append(&[missing]).is_err());
    assert_eq!(j.current_segment(), Some(seg), "segment abandoned for a validation error");
    j.append(std::slice::from_ref(&good)).unwrap();
    drop(j);
    assert_eq!(Journal::open(&t.path().join("j")).unwrap().1, vec![good]);
}

#[test]
fn foreign_files_in_the_journal_dir_are_ignored() {
    let t = TempDir::new();
    fs::write(t.path().join("seg-xyz.log"), b"junk").unwrap();
    fs::write(t.path().join("seg-00000000000000ff.log"), b"garbage that is not a segment at all").unwrap();
    let (mut j, recs) = Journal::open(t.path()).unwrap();
    assert!(recs.is_empty());
    assert!(j.current_segment().unwrap() > SegmentId(0xff), "new segment id not above existing ones");
    assert!(j.next_id() >= 1);
}

/// The whole story: messages acknowledged, the process dies with only some
/// of them delivered, one of them already read by the user (moved to cur/
/// with a flag) and one half-written; after restart, replay puts every
/// message in place exactly once.
#[test]
fn crash_recovery_delivers_the_rest_exactly_once() {
    let t = TempDir::new();
    let jdir = t.path().join("journal/shard-0");
    let root = t.path().join("mail");
    let (u1, u2) = (root.join("a.test/u1"), root.join("a.test/u2"));
    create_maildir(&u1).unwrap();
    create_maildir(&u2).unwrap();
    let (mut j, _) = Journal::open(&jdir).unwrap();
    let big = spooled(j.spool_dir(), &vec![b'q'; 300_000]);
    let r1 = inline(j.next_id(), &root.join("a.test/u1"), &["m1,S=30"], "first\n");
    let mut r2 = inline(j.next_id(), &root.join("a.test/u1"), &["m2,S=30"], "second\n");
    r2.deliveries.push(Delivery { path: u2.join("new/m2,S=30"), prefix: b"Delivered-To: u2@a.test\n".to_vec() });
    let r3 = JournalRecord { id: j.next_id(), deliveries: vec![Delivery { path: u2.join("new/m3"), prefix: b"X: 1\n".to_vec() }], content: big, outbound: None };
    j.append(&[r1.clone(), r2.clone()]).unwrap();
    j.append(std::slice::from_ref(&r3)).unwrap();
    // Delivered before the crash: r1 fully (then read by the user: moved to
    // cur/ with \Seen), r2 only for u2 and torn.
    maildir::deliver(&r1.deliveries[0], &r1.content).unwrap();
    fs::rename(u1.join("new/m1,S=30"), u1.join("cur/m1,S=30:2,S")).unwrap();
    fs::write(u2.join("new/m2,S=30"), b"Delivered-To: u2@a.te").unwrap();
    drop(j); // crash

    let (mut j, recs) = Journal::open(&jdir).unwrap();
    assert_eq!(recs, vec![r1.clone(), r2.clone(), r3.clone()]);
    let report = redeliver(&recs, Mode::Check);
    assert_eq!(report, RecoveryReport { delivered: 2, already_present: 1, repaired: 1, failed: 0 });
    let listing = |d: &Path| {
        let mut v: Vec<String> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(listing(&u1.join("new")), vec!["m2,S=30"]);
    assert_eq!(listing(&u1.join("cur")), vec!["m1,S=30:2,S"]);
    assert_eq!(listing(&u2.join("new")), vec!["m2,S=30", "m3"]);
    assert!(listing(&u1.join("tmp")).is_empty() && listing(&u2.join("tmp")).is_empty());
    for (r, d) in [(&r1, 0), (&r2, 0), (&r2, 1), (&r3, 0)] {
        assert!(maildir::is_delivered(&r.deliveries[d], &r.content).unwrap(), "{:?}", r.deliveries[d].path);
    }
    // Sync, retire what was recovered: nothing is replayed again.
    crate::maildir::FsSyncer::open(&root).unwrap().sync().unwrap();
    let upto = j.recovered_upto().unwrap();
    j.retire(upto).unwrap();
    assert!(j.recovered_upto().is_none());
    drop(j);
    let (_j, again) = Journal::open(&jdir).unwrap();
    assert!(again.is_empty());
    assert!(fs::read_dir(jdir.join("spool")).unwrap().next().is_none(), "spool file outlived its record");
}

#[test]
fn stateful_types_are_send() {
    fn send<T: Send>() {}
    send::<Journal>();
    send::<IdSource>();
    send::<Spool>();
}

fn spares(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("spare-")).collect();
    v.sort();
    v
}

const PREALLOC: JournalOptions = JournalOptions { segment_bytes: 1 << 20 };

#[test]
fn preallocated_segments_are_zero_filled_and_read_back() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open_with_options(&jdir, &jdir.join("spool"), PREALLOC).unwrap();
    let a = inline(j.next_id(), &m, &["a"], "one\n");
    let b = inline(j.next_id(), &m, &["b"], "two\n");
    j.append(std::slice::from_ref(&a)).unwrap();
    j.append(std::slice::from_ref(&b)).unwrap();
    let seg = jdir.join(&segments(&jdir)[0]);
    assert_eq!(fs::metadata(&seg).unwrap().len(), 1 << 20, "appends must stay inside the preallocated space");
    drop(j);
    let (_, got) = Journal::open_with_options(&jdir, &jdir.join("spool"), PREALLOC).unwrap();
    assert_eq!(got, vec![a, b]);
}

#[test]
fn retired_segments_are_recycled_without_resurrecting_old_records() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let m = t.path().join("m");
    let (mut j, _) = Journal::open_with_options(&jdir, &jdir.join("spool"), PREALLOC).unwrap();
    // Fill the first segment with many records, then retire it.
    let old: Vec<JournalRecord> = (0..50).map(|i| inline(j.next_id(), &m, &[&format!("old{i}")], "an old message body\n")).collect();
    j.append(&old).unwrap();
    let closed = j.rotate().unwrap();
    j.retire(closed).unwrap();
    assert_eq!(spares(&jdir).len(), 1, "the retired segment is kept as a spare");
    // The second rotation reuses the spare: its stale records must not
    // come back, only the one record written into it.
    let closed = j.rotate().unwrap();
    assert!(spares(&jdir).is_empty(), "spare reused");
    let fresh = inline(j.next_id(), &m, &["new"], "x\n");
    j.append(std::slice::from_ref(&fresh)).unwrap();
    j.retire(closed).unwrap();
    drop(j);
    let (_, got) = Journal::open_with_options(&jdir, &jdir.join("spool"), PREALLOC).unwrap();
    assert_eq!(got, vec![fresh]);
}

#[test]
fn spares_of_a_previous_run_are_reused_or_removed() {
    let t = TempDir::new();
    let jdir = t.path().join("j");
    let (mut j, _) = Journal::open_with_options(&jdir, &jdir.join("spool"), PREALLOC).unwrap();
    let closed = j.rotate().unwrap();
    j.retire(closed).unwrap();
    drop(j);
    assert_eq!(spares(&jdir).len(), 1);
    let (j, _) = Journal::open_with_options(&jdir, &jdir.join("spool"), PREALLOC).unwrap();
    assert!(spares(&jdir).is_empty(), "the spare became the new segment");
    drop(j);
    let (mut j, _) = Journal::open(&jdir).unwrap();
    let closed = j.rotate().unwrap();
    j.retire(closed).unwrap();
    assert!(spares(&jdir).is_empty(), "without preallocation nothing is kept");
}
