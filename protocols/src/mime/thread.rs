//! THREAD (RFC 5256 §3 and §4): ORDEREDSUBJECT and REFERENCES, and the
//! response syntax.
//!
//! Threads are an arena ([`Threads`]) rather than a recursive tree, and all
//! traversals use explicit stacks, so a reference chain thousands of
//! messages deep cannot overflow the stack (in building, rendering or
//! dropping).

use std::collections::HashMap;

use super::envelope::TopFields;
use super::header::unfold;
use super::search::parse_date;
use super::sort::base_subject_and_reply;

/// Message-IDs kept from one `References:` field: the first (the thread
/// root) and the last `REFERENCES_MAX - 1` (the nearest ancestors). Bounds
/// the linking work a hostile header can cause.
pub const REFERENCES_MAX: usize = 128;

/// Longest ancestor walk when checking that a link creates no loop; a walk
/// that goes further counts as a loop and the link is not made. Real
/// threads are far shallower; this bounds THREAD at O(links × limit).
pub const THREAD_ANCESTRY_MAX: usize = 1000;

/// What threading needs from one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadFields {
    /// Message-ID without angle brackets (compared case-sensitively).
    pub message_id: Option<String>,
    /// The first Message-ID in `In-Reply-To:`.
    pub in_reply_to: Option<String>,
    /// The Message-IDs in `References:`, in order (see [`REFERENCES_MAX`]).
    pub references: Vec<String>,
    /// Base subject (RFC 5256 §2.1), folded.
    pub base_subject: String,
    /// The subject marked a reply or forward (RFC 5256 §4 step 5).
    pub reply_or_forward: bool,
    /// Sent date, UTC seconds; `None`: use the internal date.
    pub sent_date: Option<i64>,
}

/// Message-IDs (`<…>`) in a field value, brackets and white space removed.
fn msg_ids(value: &[u8]) -> Vec<String> {
    let v = unfold(value);
    let mut ids = Vec::new();
    let mut i = 0;
    while let Some(open) = v[i..].iter().position(|&b| b == b'<') {
        let start = i + open + 1;
        let Some(close) = v[start..].iter().position(|&b| b == b'>') else { break };
        let id: Vec<u8> = v[start..start + close].iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        if !id.is_empty() {
            ids.push(String::from_utf8_lossy(&id).into_owned());
        }
        i = start + close + 1;
    }
    ids
}

impl ThreadFields {
    pub(crate) fn of(t: &TopFields<'_>) -> Self {
        let (subject, reply) = base_subject_and_reply(&t.subject.map(unfold).unwrap_or_default());
        let mut references = t.references.map(msg_ids).unwrap_or_default();
        if references.len() > REFERENCES_MAX {
            references.drain(1..references.len() - (REFERENCES_MAX - 1));
        }
        ThreadFields {
            message_id: t.message_id.and_then(|v| msg_ids(v).into_iter().next()),
            in_reply_to: t.in_reply_to.and_then(|v| msg_ids(v).into_iter().next()),
            references,
            base_subject: super::decode::fold(&subject),
            reply_or_forward: reply,
            sent_date: t.date.and_then(parse_date).map(|d| d.utc),
        }
    }

    pub fn heap_size(&self) -> usize {
        self.message_id.as_ref().map_or(0, String::capacity)
            + self.in_reply_to.as_ref().map_or(0, String::capacity)
            + self.references.capacity() * std::mem::size_of::<String>()
            + self.references.iter().map(String::capacity).sum::<usize>()
            + self.base_subject.capacity()
    }
}

/// One message to thread.
#[derive(Debug, Clone, Copy)]
pub struct ThreadInput<'a> {
    /// What the response shows: sequence number or UID. Also the tie-break
    /// for equal dates (ascending ids are in sequence order either way).
    pub id: u32,
    pub fields: &'a ThreadFields,
    /// INTERNALDATE, UTC seconds: the sent date when there is none.
    pub internal_date: i64,
}

/// A node: a message, or a dummy standing for a missing parent (only at
/// the top level once threading is done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNode {
    pub id: Option<u32>,
    /// Indexes into [`Threads::nodes`], in display order.
    pub children: Vec<usize>,
}

/// A forest of threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Threads {
    pub nodes: Vec<ThreadNode>,
    /// Top-level nodes, in display order.
    pub roots: Vec<usize>,
}

type Key = (i64, u32);

fn key_of(m: &ThreadInput<'_>) -> Key {
    (m.fields.sent_date.unwrap_or(m.internal_date), m.id)
}

/// ORDEREDSUBJECT (RFC 5256 §3): messages grouped by base subject; in each
/// group the first message (by sent date) is the parent of all the others;
/// groups ordered by their first message's sent date.
pub fn thread_orderedsubject(msgs: &[ThreadInput<'_>]) -> Threads {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| msgs[a].fields.base_subject.cmp(&msgs[b].fields.base_subject).then(key_of(&msgs[a]).cmp(&key_of(&msgs[b]))));
    let mut threads = Threads::default();
    let mut groups: Vec<(Key, usize)> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let subject = &msgs[order[i]].fields.base_subject;
        let mut j = i + 1;
        while j < order.len() && msgs[order[j]].fields.base_subject == *subject {
            j += 1;
        }
        let root = threads.nodes.len();
        threads.nodes.push(ThreadNode { id: Some(msgs[order[i]].id), children: Vec::new() });
        for &m in &order[i + 1..j] {
            let n = threads.nodes.len();
            threads.nodes.push(ThreadNode { id: Some(msgs[m].id), children: Vec::new() });
            threads.nodes[root].children.push(n);
        }
        groups.push((key_of(&msgs[order[i]]), root));
        i = j;
    }
    groups.sort();
    threads.roots = groups.into_iter().map(|(_, r)| r).collect();
    threads
}

struct Container {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Refs<'m, 'a> {
    msgs: &'m [ThreadInput<'a>],
    c: Vec<Container>,
    by_id: HashMap<&'m str, usize>,
}

impl<'m> Refs<'m, '_> {
    fn container(&mut self, id: &'m str) -> usize {
        if let Some(&c) = self.by_id.get(id) {
            return c;
        }
        let c = self.new_container(None);
        self.by_id.insert(id, c);
        c
    }

    fn new_container(&mut self, msg: Option<usize>) -> usize {
        self.c.push(Container { msg, parent: None, children: Vec::new() });
        self.c.len() - 1
    }

    /// Linking `child` under `parent` would make a loop (or the walk is too
    /// long to tell).
    fn would_loop(&self, parent: usize, child: usize) -> bool {
        let mut cur = Some(parent);
        for _ in 0..=THREAD_ANCESTRY_MAX {
            match cur {
                None => return false,
                Some(c) if c == child => return true,
                Some(c) => cur = self.c[c].parent,
            }
        }
        true
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.c[child].parent = Some(parent);
        self.c[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.c[child].parent.take() {
            self.c[p].children.retain(|&x| x != child);
        }
    }

    fn key(&self, c: usize) -> Key {
        match self.c[c].msg {
            Some(m) => key_of(&self.msgs[m]),
            // A dummy sorts by its first child (children are sorted first).
            None => self.c[c].children.first().and_then(|&f| self.c[f].msg).map_or((i64::MIN, 0), |m| key_of(&self.msgs[m])),
        }
    }

    fn subject(&self, c: usize) -> &'m str {
        let m = self.c[c].msg.or_else(|| self.c[c].children.first().and_then(|&f| self.c[f].msg));
        m.map_or("", |m| self.msgs[m].fields.base_subject.as_str())
    }

    fn is_reply(&self, c: usize) -> bool {
        self.c[c].msg.is_some_and(|m| self.msgs[m].fields.reply_or_forward)
    }

    /// Containers reachable from `roots`, children after parents.
    fn preorder(&self, roots: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(c) = stack.pop() {
            out.push(c);
            stack.extend(self.c[c].children.iter().rev());
        }
        out
    }
}

/// REFERENCES (RFC 5256 §4): threads from Message-ID, References and
/// In-Reply-To, dummies for missing parents, then top-level threads with
/// the same base subject merged.
pub fn thread_references(msgs: &[ThreadInput<'_>]) -> Threads {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&m| msgs[m].id);
    let mut r = Refs { msgs, c: Vec::new(), by_id: HashMap::new() };
    // Step 1.
    for &m in &order {
        let f = msgs[m].fields;
        let own = match f.message_id.as_deref() {
            Some(id) => {
                let c = r.container(id);
                if r.c[c].msg.is_none() {
                    r.c[c].msg = Some(m);
                    c
                } else {
                    // Duplicate Message-ID: this one gets a unique id.
                    r.new_container(Some(m))
                }
            }
            None => r.new_container(Some(m)),
        };
        let refs: Vec<&str> = if f.references.is_empty() { f.in_reply_to.iter().map(String::as_str).collect() } else { f.references.iter().map(String::as_str).collect() };
        // 1.A: link the references in order, never re-parenting, never looping.
        let ids: Vec<usize> = refs.iter().map(|id| r.container(id)).collect();
        for w in ids.windows(2) {
            let (p, c) = (w[0], w[1]);
            if p != c && r.c[c].parent.is_none() && !r.would_loop(p, c) {
                r.link(p, c);
            }
        }
        // 1.B: the last reference is the parent.
        r.unlink(own);
        if let Some(&p) = ids.last() {
            if p != own && !r.would_loop(p, own) {
                r.link(p, own);
            }
        }
    }
    // Step 2: the roots.
    let roots: Vec<usize> = (0..r.c.len()).filter(|&c| r.c[c].parent.is_none()).collect();
    // Step 3: prune dummies, children before parents.
    let pre = r.preorder(&roots);
    for &c in pre.iter().rev() {
        let kids = std::mem::take(&mut r.c[c].children);
        let mut new = Vec::with_capacity(kids.len());
        for k in kids {
            if r.c[k].msg.is_none() {
                new.append(&mut r.c[k].children);
            } else {
                new.push(k);
            }
        }
        r.c[c].children = new;
    }
    let mut top = Vec::new();
    for c in roots {
        if r.c[c].msg.is_some() {
            top.push(c);
        } else if r.c[c].children.len() == 1 {
            top.push(r.c[c].children[0]);
        } else if !r.c[c].children.is_empty() {
            top.push(c);
        }
    }
    // Step 4: sort the top level by sent date (dummies by their first child).
    for &c in &top {
        if r.c[c].msg.is_none() {
            let mut kids = std::mem::take(&mut r.c[c].children);
            kids.sort_by_key(|&k| r.key(k));
            r.c[c].children = kids;
        }
    }
    top.sort_by_key(|&c| r.key(c));
    // Step 5: merge threads with the same base subject.
    let mut table: HashMap<&str, usize> = HashMap::new();
    for &c in &top {
        let s = r.subject(c);
        if s.is_empty() {
            continue;
        }
        match table.get(s) {
            None => {
                table.insert(s, c);
            }
            Some(&t) => {
                if r.c[t].msg.is_some() && (r.c[c].msg.is_none() || (r.is_reply(t) && !r.is_reply(c))) {
                    table.insert(s, c);
                }
            }
        }
    }
    let mut slot: HashMap<usize, usize> = top.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let mut merged: Vec<Option<usize>> = top.iter().map(|&c| Some(c)).collect();
    for i in 0..merged.len() {
        // The current occupant: a thread merged away is gone, and a slot a dummy took over is the dummy.
        let Some(c) = merged[i] else { continue };
        let s = r.subject(c);
        if s.is_empty() {
            continue;
        }
        let Some(&t) = table.get(s) else { continue };
        if t == c {
            continue;
        }
        let (t_dummy, c_dummy) = (r.c[t].msg.is_none(), r.c[c].msg.is_none());
        if t_dummy && c_dummy {
            let mut kids = std::mem::take(&mut r.c[c].children);
            r.c[t].children.append(&mut kids);
            merged[i] = None;
        } else if t_dummy || (r.is_reply(c) && !r.is_reply(t)) {
            r.c[t].children.push(c);
            merged[i] = None;
        } else {
            let d = r.new_container(None);
            r.c[d].children = vec![t, c];
            merged[i] = None;
            if let Some(&ti) = slot.get(&t) {
                merged[ti] = Some(d);
                slot.insert(d, ti);
            }
            table.insert(s, d);
        }
    }
    let top: Vec<usize> = merged.into_iter().flatten().collect();
    // Step 6: sort every set of siblings, deepest first.
    let pre = r.preorder(&top);
    for &c in pre.iter().rev() {
        let mut kids = std::mem::take(&mut r.c[c].children);
        kids.sort_by_key(|&k| r.key(k));
        r.c[c].children = kids;
    }
    let mut top = top;
    top.sort_by_key(|&c| r.key(c));
    // Into the public arena, reachable nodes only.
    let mut threads = Threads::default();
    let mut index = HashMap::new();
    for &c in &r.preorder(&top) {
        index.insert(c, threads.nodes.len());
        threads.nodes.push(ThreadNode { id: r.c[c].msg.map(|m| msgs[m].id), children: Vec::new() });
    }
    for (&c, &n) in &index {
        threads.nodes[n].children = r.c[c].children.iter().map(|k| index[k]).collect();
    }
    threads.roots = top.iter().map(|c| index[c]).collect();
    threads
}

/// Appends the threads in RFC 5256 `thread-list` syntax:
/// `(1 2)(3 6 (4 23)(44 7 96))`. A node with one child continues the
/// member list; with several, each child is a nested list. A dummy is a
/// list of its children's lists. Nothing is written for an empty forest.
pub fn write_threads(out: &mut Vec<u8>, threads: &Threads) {
    enum Step {
        Open,
        Close,
        Members(usize),
    }
    let nodes = &threads.nodes;
    let mut stack: Vec<Step> = Vec::new();
    for &root in threads.roots.iter().rev() {
        stack.extend([Step::Close, Step::Members(root), Step::Open]);
    }
    let push_lists = |stack: &mut Vec<Step>, children: &[usize]| {
        for &c in children.iter().rev() {
            stack.extend([Step::Close, Step::Members(c), Step::Open]);
        }
    };
    while let Some(step) = stack.pop() {
        match step {
            Step::Open => out.push(b'('),
            Step::Close => out.push(b')'),
            Step::Members(n) => {
                let Some(mut cur) = nodes.get(n) else { continue };
                if cur.id.is_none() {
                    match cur.children.as_slice() {
                        [only] => stack.push(Step::Members(*only)),
                        kids => push_lists(&mut stack, kids),
                    }
                    continue;
                }
                let mut first = true;
                loop {
                    if let Some(id) = cur.id {
                        if !first {
                            out.push(b' ');
                        }
                        out.extend_from_slice(id.to_string().as_bytes());
                        first = false;
                    }
                    match cur.children.as_slice() {
                        [] => break,
                        [only] if nodes.get(*only).is_some_and(|o| o.id.is_some()) => cur = &nodes[*only],
                        kids => {
                            out.push(b' ');
                            push_lists(&mut stack, kids);
                            break;
                        }
                    }
                }
            }
        }
    }
}
