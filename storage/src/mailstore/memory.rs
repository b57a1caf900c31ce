//! [`MemoryStore`]: the contract's reference implementation, in memory.
//! Same name rules as the Maildir backend ([`super::names`]), no
//! persistence; for session transcript tests.

use super::names::MailboxName;
use super::notify::Notifier;
use super::MESSAGE_BYTES_DEFAULT_MAX;
use crate::maildir::SpecialFolders;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use varan_core::mailstore::{
    ChangeFuture, Changes, Flag, FlagOp, FlagUpdate, MailStore, Mailbox, MailboxEntry, MailboxStatus, MessageMeta, ModSeq, QuotaUsage, SpecialUse, StoreError, StoreResult, Uid,
    UserStore, KEYWORDS_MAX,
};
use varan_core::EmailAddress;

#[derive(Debug, Clone)]
pub struct MemoryStoreOptions {
    /// Byte quota of every user (`None`: unlimited).
    pub quota_bytes: Option<u64>,
    pub message_bytes_max: u64,
    /// Special folders created for every new user.
    pub folders: SpecialFolders,
}

impl Default for MemoryStoreOptions {
    fn default() -> Self {
        Self { quota_bytes: None, message_bytes_max: MESSAGE_BYTES_DEFAULT_MAX, folders: SpecialFolders::default() }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct MemoryStore {
    options: MemoryStoreOptions,
    users: Mutex<HashMap<String, Arc<MemoryUser>>>,
}

impl MemoryStore {
    pub fn new(options: MemoryStoreOptions) -> MemoryStore {
        MemoryStore { options, users: Mutex::new(HashMap::new()) }
    }
}

impl MailStore for MemoryStore {
    fn user(&self, account: &EmailAddress) -> StoreResult<Arc<dyn UserStore>> {
        let mut users = lock(&self.users);
        let user = users.entry(account.key()).or_insert_with(|| MemoryUser::new(&self.options)).clone();
        Ok(user)
    }
}

#[derive(Debug)]
struct Usage {
    bytes: AtomicU64,
    messages: AtomicU64,
    limit: Option<u64>,
    message_bytes_max: u64,
}

#[derive(Debug)]
struct MemoryUser {
    usage: Arc<Usage>,
    uidvalidity: AtomicU32,
    inner: Mutex<UserInner>,
}

#[derive(Debug, Default)]
struct UserInner {
    boxes: BTreeMap<String, Arc<MemoryMailbox>>,
    /// Non-selectable levels that exist (deleted parents).
    noselect: BTreeSet<String>,
    subscribed: BTreeSet<String>,
    special: HashMap<String, SpecialUse>,
}

impl MemoryUser {
    fn new(o: &MemoryStoreOptions) -> Arc<MemoryUser> {
        let user = MemoryUser {
            usage: Arc::new(Usage { bytes: AtomicU64::new(0), messages: AtomicU64::new(0), limit: o.quota_bytes, message_bytes_max: o.message_bytes_max }),
            uidvalidity: AtomicU32::new(1),
            inner: Mutex::new(UserInner::default()),
        };
        {
            let mut inner = lock(&user.inner);
            let inbox = user.new_box("INBOX");
            inner.boxes.insert("INBOX".into(), inbox);
            let f = &o.folders;
            for (name, u) in
                [(&f.drafts, SpecialUse::Drafts), (&f.sent, SpecialUse::Sent), (&f.junk, SpecialUse::Junk), (&f.trash, SpecialUse::Trash), (&f.archive, SpecialUse::Archive)]
            {
                if let Ok(n) = MailboxName::parse(name) {
                    let n = n.canonical();
                    inner.boxes.insert(n.clone(), user.new_box(&n));
                    inner.subscribed.insert(n.clone());
                    inner.special.insert(n, u);
                }
            }
        }
        Arc::new(user)
    }

    fn new_box(&self, name: &str) -> Arc<MemoryMailbox> {
        let uidvalidity = self.uidvalidity.fetch_add(1, Ordering::Relaxed);
        Arc::new(MemoryMailbox {
            name: name.to_owned(),
            usage: Arc::clone(&self.usage),
            state: Mutex::new(MemState { uidvalidity, next_uid: 1, highest: 1, ..MemState::default() }),
            notifier: Notifier::new(),
        })
    }
}

fn exists(inner: &UserInner, name: &str) -> bool {
    inner.boxes.contains_key(name) || inner.noselect.contains(name)
}

fn has_children(inner: &UserInner, name: &str) -> bool {
    let prefix = format!("{name}/");
    inner.boxes.keys().chain(inner.noselect.iter()).any(|n| n.starts_with(&prefix))
}

impl UserStore for MemoryUser {
    fn list(&self) -> StoreResult<Vec<MailboxEntry>> {
        let inner = lock(&self.inner);
        let mut all: BTreeMap<String, bool> = BTreeMap::new();
        for n in inner.boxes.keys().filter(|n| *n != "INBOX") {
            all.insert(n.clone(), true);
        }
        for n in &inner.noselect {
            all.insert(n.clone(), false);
        }
        let names: Vec<String> = all.keys().cloned().collect();
        for n in names {
            let mut level = n.as_str();
            while let Some((parent, _)) = level.rsplit_once('/') {
                all.entry(parent.to_owned()).or_insert(false);
                level = parent;
            }
        }
        let entry = |name: &str, selectable: bool| {
            let prefix = format!("{name}/");
            MailboxEntry {
                name: name.to_owned(),
                special_use: inner.special.get(name).copied(),
                selectable,
                has_children: name != "INBOX" && all.keys().any(|k| k.starts_with(&prefix)),
                subscribed: inner.subscribed.contains(name),
            }
        };
        let mut out = vec![entry("INBOX", true)];
        out.extend(all.iter().map(|(n, s)| entry(n, *s)));
        Ok(out)
    }

    fn create(&self, name: &str, special_use: Option<SpecialUse>) -> StoreResult<()> {
        let parsed = MailboxName::parse(name)?;
        let name = parsed.canonical();
        let mut inner = lock(&self.inner);
        if inner.boxes.contains_key(&name) {
            return Err(StoreError::AlreadyExists);
        }
        for p in parsed.parents() {
            let p = p.canonical();
            if !exists(&inner, &p) {
                let b = self.new_box(&p);
                inner.boxes.insert(p, b);
            }
        }
        inner.noselect.remove(&name);
        let b = self.new_box(&name);
        inner.boxes.insert(name.clone(), b);
        if let Some(u) = special_use {
            inner.special.insert(name, u);
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> StoreResult<()> {
        let parsed = MailboxName::parse(name)?;
        if parsed == MailboxName::Inbox {
            return Err(StoreError::Cannot("INBOX cannot be deleted".into()));
        }
        let name = parsed.canonical();
        let mut inner = lock(&self.inner);
        if !exists(&inner, &name) {
            return Err(StoreError::NoMailbox);
        }
        let children = has_children(&inner, &name);
        if inner.noselect.contains(&name) {
            if children {
                return Err(StoreError::Cannot(format!("{name} has child mailboxes and no messages")));
            }
            inner.noselect.remove(&name);
            return Ok(());
        }
        if let Some(b) = inner.boxes.remove(&name) {
            b.clear();
        }
        inner.special.remove(&name);
        if children {
            inner.noselect.insert(name);
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        let src = MailboxName::parse(from)?;
        let dst = MailboxName::parse(to)?;
        let (from, to) = (src.canonical(), dst.canonical());
        let mut inner = lock(&self.inner);
        if dst == MailboxName::Inbox || exists(&inner, &to) {
            return Err(StoreError::AlreadyExists);
        }
        if dst.is_within(&src) {
            return Err(StoreError::Cannot("a mailbox cannot be moved into itself".into()));
        }
        if !exists(&inner, &from) {
            return Err(StoreError::NoMailbox);
        }
        for p in dst.parents() {
            let p = p.canonical();
            if !exists(&inner, &p) {
                let b = self.new_box(&p);
                inner.boxes.insert(p, b);
            }
        }
        if src == MailboxName::Inbox {
            let target = self.new_box(&to);
            if let Some(inbox) = inner.boxes.get("INBOX") {
                target.take_from(inbox);
            }
            inner.boxes.insert(to, target);
            return Ok(());
        }
        let prefix = format!("{from}/");
        let moved = |n: &str| -> Option<String> {
            if n == from {
                Some(to.clone())
            } else {
                n.strip_prefix(&prefix).map(|r| format!("{to}/{r}"))
            }
        };
        let names: Vec<String> = inner.boxes.keys().filter(|n| moved(n).is_some()).cloned().collect();
        for n in names {
            if let (Some(old), Some(new_name)) = (inner.boxes.remove(&n), moved(&n)) {
                let b = self.new_box(&new_name);
                b.take_from(&old);
                inner.boxes.insert(new_name, b);
            }
        }
        let rename_set = |set: &BTreeSet<String>| -> BTreeSet<String> { set.iter().map(|n| moved(n).unwrap_or_else(|| n.clone())).collect() };
        inner.noselect = rename_set(&inner.noselect);
        inner.subscribed = rename_set(&inner.subscribed);
        inner.special = inner.special.iter().map(|(n, u)| (moved(n).unwrap_or_else(|| n.clone()), *u)).collect();
        Ok(())
    }

    fn set_subscribed(&self, name: &str, subscribed: bool) -> StoreResult<()> {
        let name = MailboxName::parse(name)?.canonical();
        let mut inner = lock(&self.inner);
        if subscribed {
            inner.subscribed.insert(name);
        } else {
            inner.subscribed.remove(&name);
        }
        Ok(())
    }

    fn open(&self, name: &str) -> StoreResult<Arc<dyn Mailbox>> {
        let name = MailboxName::parse(name)?.canonical();
        let inner = lock(&self.inner);
        inner.boxes.get(&name).map(|b| Arc::clone(b) as Arc<dyn Mailbox>).ok_or(StoreError::NoMailbox)
    }

    fn quota(&self) -> StoreResult<QuotaUsage> {
        Ok(QuotaUsage { used_bytes: self.usage.bytes.load(Ordering::SeqCst), messages: self.usage.messages.load(Ordering::SeqCst), limit_bytes: self.usage.limit })
    }
}

#[derive(Debug, Clone)]
struct MemMsg {
    data: Arc<[u8]>,
    flags: Vec<Flag>,
    modseq: ModSeq,
    date: i64,
}

#[derive(Debug, Default)]
struct MemState {
    uidvalidity: u32,
    next_uid: Uid,
    highest: ModSeq,
    msgs: BTreeMap<Uid, MemMsg>,
    expunged: Vec<(Uid, ModSeq)>,
    keywords: Vec<String>,
}

impl MemState {
    fn meta(uid: Uid, m: &MemMsg) -> MessageMeta {
        MessageMeta { uid, flags: m.flags.clone(), modseq: m.modseq, size: m.data.len() as u64, internal_date: m.date }
    }

    fn status(&self) -> MailboxStatus {
        let mut s = MailboxStatus { uidvalidity: self.uidvalidity, uidnext: self.next_uid, highest_modseq: self.highest, ..MailboxStatus::default() };
        for m in self.msgs.values() {
            s.messages += 1;
            s.unseen += u32::from(!m.flags.contains(&Flag::Seen));
            s.deleted += u32::from(m.flags.contains(&Flag::Deleted));
            s.size += m.data.len() as u64;
        }
        s
    }

    /// Registers the keywords of `flags`; `Limit` beyond [`KEYWORDS_MAX`].
    fn learn(&mut self, flags: &[Flag]) -> StoreResult<()> {
        let mut added = self.keywords.clone();
        for f in flags {
            if let Flag::Keyword(k) = f {
                if !added.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    added.push(k.clone());
                }
            }
        }
        if added.len() > KEYWORDS_MAX {
            return Err(StoreError::Limit(format!("a mailbox holds at most {KEYWORDS_MAX} keywords")));
        }
        self.keywords = added;
        Ok(())
    }
}

fn dedup(flags: &[Flag]) -> Vec<Flag> {
    let mut out: Vec<Flag> = Vec::new();
    for f in flags {
        if !out.iter().any(|o| o.same(f)) {
            out.push(f.clone());
        }
    }
    out
}

fn same_set(a: &[Flag], b: &[Flag]) -> bool {
    a.len() == b.len() && a.iter().all(|f| b.iter().any(|g| g.same(f)))
}

/// One in-memory mailbox.
#[derive(Debug)]
pub struct MemoryMailbox {
    name: String,
    usage: Arc<Usage>,
    state: Mutex<MemState>,
    notifier: Arc<Notifier>,
}

impl MemoryMailbox {
    /// Removes every message (expunged) and returns them.
    fn clear(&self) -> Vec<MemMsg> {
        let mut st = lock(&self.state);
        if st.msgs.is_empty() {
            return Vec::new();
        }
        st.highest += 1;
        let m = st.highest;
        let msgs = std::mem::take(&mut st.msgs);
        for &uid in msgs.keys() {
            st.expunged.push((uid, m));
        }
        for msg in msgs.values() {
            self.usage.bytes.fetch_sub(msg.data.len() as u64, Ordering::SeqCst);
            self.usage.messages.fetch_sub(1, Ordering::SeqCst);
        }
        drop(st);
        self.notifier.bump();
        msgs.into_values().collect()
    }

    /// Moves every message of `other` here (new UIDs).
    fn take_from(&self, other: &MemoryMailbox) {
        for m in other.clear() {
            let _ = self.append(&m.data, &m.flags, Some(m.date));
        }
    }
}

impl Mailbox for MemoryMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    fn status(&self) -> StoreResult<MailboxStatus> {
        Ok(lock(&self.state).status())
    }

    fn changes_since(&self, modseq: ModSeq) -> StoreResult<Changes> {
        let st = lock(&self.state);
        let changed = st.msgs.iter().filter(|(_, m)| m.modseq > modseq).map(|(&u, m)| MemState::meta(u, m)).collect();
        let mut expunged: Vec<Uid> = st.expunged.iter().filter(|(_, m)| *m > modseq).map(|(u, _)| *u).collect();
        expunged.sort_unstable();
        Ok(Changes { status: st.status(), changed, expunged, expunged_incomplete: false })
    }

    fn uids(&self) -> StoreResult<Vec<Uid>> {
        Ok(lock(&self.state).msgs.keys().copied().collect())
    }

    fn read(&self, uid: Uid) -> StoreResult<Arc<[u8]>> {
        lock(&self.state).msgs.get(&uid).map(|m| Arc::clone(&m.data)).ok_or(StoreError::Expunged)
    }

    fn append(&self, message: &[u8], flags: &[Flag], internal_date: Option<i64>) -> StoreResult<Uid> {
        let size = message.len() as u64;
        if size > self.usage.message_bytes_max {
            return Err(StoreError::Limit(format!("message is larger than {} bytes", self.usage.message_bytes_max)));
        }
        if self.usage.limit.is_some_and(|l| self.usage.bytes.load(Ordering::SeqCst) + size > l) {
            return Err(StoreError::OverQuota);
        }
        let mut st = lock(&self.state);
        let flags = dedup(flags);
        st.learn(&flags)?;
        st.highest += 1;
        let uid = st.next_uid;
        st.next_uid += 1;
        let modseq = st.highest;
        let date = internal_date.unwrap_or_else(super::fsutil::now_secs);
        st.msgs.insert(uid, MemMsg { data: message.into(), flags, modseq, date });
        drop(st);
        self.usage.bytes.fetch_add(size, Ordering::SeqCst);
        self.usage.messages.fetch_add(1, Ordering::SeqCst);
        self.notifier.bump();
        Ok(uid)
    }

    fn store(&self, uids: &[Uid], op: FlagOp, flags: &[Flag], unchanged_since: Option<ModSeq>) -> StoreResult<FlagUpdate> {
        let mut st = lock(&self.state);
        if op != FlagOp::Remove {
            st.learn(flags)?;
        }
        let m = st.highest + 1;
        let mut out = FlagUpdate::default();
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            let Some(msg) = st.msgs.get_mut(&uid) else { continue };
            if unchanged_since.is_some_and(|u| msg.modseq > u) {
                out.modified.push(uid);
                continue;
            }
            let new = match op {
                FlagOp::Add => dedup(&[msg.flags.clone(), flags.to_vec()].concat()),
                FlagOp::Remove => msg.flags.iter().filter(|f| !flags.iter().any(|g| g.same(f))).cloned().collect(),
                FlagOp::Replace => dedup(flags),
            };
            if same_set(&new, &msg.flags) {
                continue;
            }
            msg.flags = new;
            msg.modseq = m;
            out.updated.push(MemState::meta(uid, msg));
        }
        if !out.updated.is_empty() {
            st.highest = m;
            drop(st);
            self.notifier.bump();
        }
        Ok(out)
    }

    fn copy_to(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>> {
        let msgs: Vec<(Uid, MemMsg)> = {
            let st = lock(&self.state);
            uids.iter().filter_map(|u| st.msgs.get(u).map(|m| (*u, m.clone()))).collect()
        };
        let mut pairs = Vec::with_capacity(msgs.len());
        for (uid, m) in msgs {
            pairs.push((uid, dest.append(&m.data, &m.flags, Some(m.date))?));
        }
        Ok(pairs)
    }

    fn move_to(&self, uids: &[Uid], dest: &dyn Mailbox) -> StoreResult<Vec<(Uid, Uid)>> {
        let pairs = self.copy_to(uids, dest)?;
        let mut st = lock(&self.state);
        st.highest += 1;
        let m = st.highest;
        for (uid, _) in &pairs {
            if let Some(msg) = st.msgs.remove(uid) {
                st.expunged.push((*uid, m));
                self.usage.bytes.fetch_sub(msg.data.len() as u64, Ordering::SeqCst);
                self.usage.messages.fetch_sub(1, Ordering::SeqCst);
            }
        }
        drop(st);
        self.notifier.bump();
        Ok(pairs)
    }

    fn expunge(&self, uids: Option<&[Uid]>) -> StoreResult<Vec<Uid>> {
        let mut st = lock(&self.state);
        let mut gone: Vec<Uid> = st.msgs.iter().filter(|(u, m)| m.flags.contains(&Flag::Deleted) && uids.is_none_or(|l| l.contains(u))).map(|(u, _)| *u).collect();
        gone.sort_unstable();
        if gone.is_empty() {
            return Ok(gone);
        }
        st.highest += 1;
        let m = st.highest;
        for uid in &gone {
            if let Some(msg) = st.msgs.remove(uid) {
                st.expunged.push((*uid, m));
                self.usage.bytes.fetch_sub(msg.data.len() as u64, Ordering::SeqCst);
                self.usage.messages.fetch_sub(1, Ordering::SeqCst);
            }
        }
        drop(st);
        self.notifier.bump();
        Ok(gone)
    }

    fn version(&self) -> u64 {
        self.notifier.version()
    }

    fn changed(&self, seen: u64) -> ChangeFuture {
        self.notifier.changed(seen)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
