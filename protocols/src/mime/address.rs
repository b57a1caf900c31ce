//! Address lists (RFC 5322 §3.4, with the obsolete forms of §4.4) parsed
//! into what an IMAP ENVELOPE carries (RFC 9051 §7.5.2): for each mailbox
//! its display name, source route, local part and domain; group syntax as
//! start and end markers. Best effort on anything malformed: whatever is
//! left becomes a mailbox, never an error.

/// Addresses kept per header field; more are dropped. Bounds ENVELOPE size
/// against a hostile `To:` with millions of entries, far above real lists.
pub const ADDRESSES_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mailbox {
    /// Display name: the phrase with quoted strings unquoted, encoded words
    /// left encoded; or the comment when there is no phrase.
    pub name: Option<Vec<u8>>,
    /// Obsolete source route (`@a,@b`).
    pub adl: Option<Vec<u8>>,
    /// Local part; quoted again when it needs quoting (`"john doe"`).
    pub mailbox: Vec<u8>,
    /// Domain; empty when missing (never NIL, which would read as a group).
    pub host: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Mailbox(Mailbox),
    GroupStart(Vec<u8>),
    GroupEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Atom(&'a [u8]),
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    Literal(&'a [u8]),
    Special(u8),
}

fn is_special(b: u8) -> bool {
    matches!(b, b'(' | b')' | b'<' | b'>' | b'@' | b',' | b':' | b';' | b'"' | b'[' | b']' | b'\\')
}

fn tokenize(v: &[u8]) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'"' => {
                let mut out = Vec::new();
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' && i + 1 < v.len() {
                        i += 1;
                    }
                    if v[i] != b'\r' && v[i] != b'\n' {
                        out.push(v[i]);
                    }
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Quoted(out));
            }
            b'(' => {
                let mut depth = 0usize;
                let mut out = Vec::new();
                while i < v.len() {
                    match v[i] {
                        b'\\' if i + 1 < v.len() => {
                            i += 1;
                            out.push(v[i]);
                        }
                        b'(' => {
                            if depth > 0 {
                                out.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            out.push(b')');
                        }
                        b'\r' | b'\n' => {}
                        c => out.push(c),
                    }
                    i += 1;
                }
                toks.push(Tok::Comment(out));
            }
            b'[' => {
                let start = i;
                while i < v.len() && v[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(v.len());
                toks.push(Tok::Literal(&v[start..i]));
            }
            b if is_special(b) => {
                toks.push(Tok::Special(b));
                i += 1;
            }
            _ => {
                let start = i;
                while i < v.len() && !is_special(v[i]) && !matches!(v[i], b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
                toks.push(Tok::Atom(&v[start..i]));
            }
        }
    }
    toks
}

/// Words of a phrase joined by single spaces.
fn phrase(toks: &[Tok<'_>]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for t in toks {
        let word: &[u8] = match t {
            Tok::Atom(a) | Tok::Literal(a) => a,
            Tok::Quoted(q) => q,
            Tok::Special(s) => std::slice::from_ref(s),
            Tok::Comment(_) => continue,
        };
        if !out.is_empty() && !word.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    (!out.is_empty()).then_some(out)
}

/// Octets allowed unquoted in a dot-atom local part (RFC 5322 `atext` and `.`; 8-bit for RFC 6532).
fn local_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
}

/// Tokens concatenated without spaces (a local part or a domain); a local
/// part that needs quoting is quoted again.
fn concat(toks: &[Tok<'_>], local: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut had_quoted = false;
    for t in toks {
        match t {
            Tok::Atom(a) | Tok::Literal(a) => out.extend_from_slice(a),
            Tok::Quoted(q) => {
                had_quoted = true;
                out.extend_from_slice(q);
            }
            Tok::Special(s) => out.push(*s),
            Tok::Comment(_) => {}
        }
    }
    if local && had_quoted && (out.is_empty() || !out.iter().all(|&b| local_ok(b))) {
        let mut q = Vec::with_capacity(out.len() + 2);
        q.push(b'"');
        for b in out {
            if b == b'"' || b == b'\\' {
                q.push(b'\\');
            }
            q.push(b);
        }
        q.push(b'"');
        return q;
    }
    out
}

/// `local@domain` from loose tokens: split at the last `@`.
fn addr_spec(toks: &[Tok<'_>]) -> (Vec<u8>, Vec<u8>) {
    let toks: Vec<Tok<'_>> = toks.iter().filter(|t| !matches!(t, Tok::Comment(_))).cloned().collect();
    match toks.iter().rposition(|t| *t == Tok::Special(b'@')) {
        Some(at) => (concat(&toks[..at], true), concat(&toks[at + 1..], false)),
        None => (phrase(&toks).unwrap_or_default(), Vec::new()),
    }
}

struct Parser<'a> {
    items: Vec<Item>,
    pending: Vec<Tok<'a>>,
    comment: Option<Vec<u8>>,
    /// An angle address was taken; later words up to the next `,` are noise.
    done: bool,
    in_group: bool,
    mailboxes: usize,
}

impl Parser<'_> {
    fn push_mailbox(&mut self, m: Mailbox) {
        if self.mailboxes < ADDRESSES_MAX {
            self.mailboxes += 1;
            self.items.push(Item::Mailbox(m));
        }
    }

    /// Ends one address (at `,`, `;` or the end).
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let comment = self.comment.take().filter(|c| !c.is_empty());
        if self.done {
            // `<a@b> (Name)`: a trailing comment names a nameless mailbox.
            if let (Some(c), Some(Item::Mailbox(m))) = (comment, self.items.last_mut()) {
                m.name.get_or_insert(c);
            }
        } else if !pending.is_empty() {
            let (mailbox, host) = addr_spec(&pending);
            self.push_mailbox(Mailbox { name: comment, adl: None, mailbox, host });
        }
        self.done = false;
    }
}

/// Parses an unfolded address-list (or mailbox-list) header value.
pub(crate) fn parse(value: &[u8]) -> Vec<Item> {
    let toks = tokenize(value);
    let mut p = Parser { items: Vec::new(), pending: Vec::new(), comment: None, done: false, in_group: false, mailboxes: 0 };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Special(b'<') if !p.done => {
                let close = toks[i + 1..].iter().position(|t| *t == Tok::Special(b'>')).map_or(toks.len(), |c| i + 1 + c);
                let inner = &toks[i + 1..close];
                // Obsolete route: "@a,@b:" before the addr-spec.
                let (adl, spec) = match inner.iter().position(|t| *t == Tok::Special(b':')) {
                    Some(colon) if inner.first() == Some(&Tok::Special(b'@')) => (Some(concat(&inner[..colon], false)), &inner[colon + 1..]),
                    _ => (None, inner),
                };
                let (mailbox, host) = addr_spec(spec);
                let name = phrase(&p.pending).or_else(|| p.comment.take().filter(|c| !c.is_empty()));
                p.pending.clear();
                p.comment = None;
                p.push_mailbox(Mailbox { name, adl, mailbox, host });
                p.done = true;
                i = close + 1;
                continue;
            }
            Tok::Special(b':') if !p.in_group && !p.done => {
                let name = phrase(&p.pending).unwrap_or_default();
                p.pending.clear();
                p.comment = None;
                p.items.push(Item::GroupStart(name));
                p.in_group = true;
            }
            Tok::Special(b';') if p.in_group => {
                p.flush();
                p.items.push(Item::GroupEnd);
                p.in_group = false;
            }
            Tok::Special(b',') => p.flush(),
            Tok::Comment(c) => p.comment = Some(c.clone()),
            t if !p.done => p.pending.push(t.clone()),
            _ => {}
        }
        i += 1;
    }
    p.flush();
    if p.in_group {
        p.items.push(Item::GroupEnd);
    }
    p.items
}

/// The mailboxes of a parsed list, group markers skipped.
pub(crate) fn mailboxes(items: &[Item]) -> impl Iterator<Item = &Mailbox> {
    items.iter().filter_map(|i| match i {
        Item::Mailbox(m) => Some(m),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(name: Option<&str>, mailbox: &str, host: &str) -> Item {
        Item::Mailbox(Mailbox { name: name.map(|n| n.as_bytes().to_vec()), adl: None, mailbox: mailbox.into(), host: host.into() })
    }

    #[test]
    fn forms() {
        assert_eq!(parse(b"John Doe <jdoe@example.com>"), vec![mb(Some("John Doe"), "jdoe", "example.com")]);
        assert_eq!(parse(b"\"Doe, John\" <jdoe@example.com>, x@y.z"), vec![mb(Some("Doe, John"), "jdoe", "example.com"), mb(None, "x", "y.z")]);
        assert_eq!(parse(b"jdoe@example.com (John Doe)"), vec![mb(Some("John Doe"), "jdoe", "example.com")]);
        assert_eq!(parse(b"<jdoe@example.com> (John Doe)"), vec![mb(Some("John Doe"), "jdoe", "example.com")]);
        assert_eq!(parse(b"\"john doe\"@example.com"), vec![mb(None, "\"john doe\"", "example.com")]);
        assert_eq!(parse(b"\"jdoe\"@example.com"), vec![mb(None, "jdoe", "example.com")]);
        assert_eq!(parse(b"=?UTF-8?B?0JjQstCw0L0=?= <ivan@example.ru>"), vec![mb(Some("=?UTF-8?B?0JjQstCw0L0=?="), "ivan", "example.ru")]);
        assert_eq!(parse(b"John Q. Public <jqp@[192.0.2.1]>"), vec![mb(Some("John Q. Public"), "jqp", "[192.0.2.1]")]);
        assert_eq!(parse(b"foo"), vec![mb(None, "foo", "")]);
        assert_eq!(parse(b"<>"), vec![mb(None, "", "")]);
        assert_eq!(parse(b""), vec![]);
        assert_eq!(parse(b" , ,"), vec![]);
    }

    #[test]
    fn route_and_groups() {
        assert_eq!(
            parse(b"<@a.example,@b.example:joe@c.example>"),
            vec![Item::Mailbox(Mailbox { name: None, adl: Some(b"@a.example,@b.example".to_vec()), mailbox: b"joe".to_vec(), host: b"c.example".to_vec() })]
        );
        assert_eq!(parse(b"undisclosed-recipients:;"), vec![Item::GroupStart(b"undisclosed-recipients".to_vec()), Item::GroupEnd]);
        assert_eq!(
            parse(b"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>; Mary <mary@x.test>"),
            vec![
                Item::GroupStart(b"A Group".to_vec()),
                mb(Some("Ed Jones"), "c", "a.test"),
                mb(None, "joe", "where.test"),
                mb(Some("John"), "jdoe", "one.test"),
                Item::GroupEnd,
                mb(Some("Mary"), "mary", "x.test"),
            ]
        );
        // Unterminated group is closed.
        assert_eq!(parse(b"g: a@b"), vec![Item::GroupStart(b"g".to_vec()), mb(None, "a", "b"), Item::GroupEnd]);
    }
}
