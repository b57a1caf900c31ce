//! SORT keys (RFC 5256 §3, RFC 5957 DISPLAYFROM/DISPLAYTO) and the base
//! subject (RFC 5256 §2.1).
//!
//! Keys are stored already folded ([`super::decode::fold`], our
//! approximation of `i;unicode-casemap`), so the session compares them as
//! plain strings.

use super::address::{self, Mailbox};
use super::decode::{fold, rfc2047};
use super::envelope::TopFields;
use super::header::unfold;
use super::search::{parse_date, SentDate};

/// What SORT compares, per message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortFields {
    /// DATE; `None` when there is no usable `Date:` (the session then uses
    /// the internal date, RFC 5256 §2.2). Also serves SENTBEFORE/ON/SINCE.
    pub sent_date: Option<SentDate>,
    /// SUBJECT: the base subject, folded.
    pub subject: String,
    /// FROM, TO, CC: the addr-mailbox (local part) of the first address,
    /// folded; empty when there is none.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// DISPLAYFROM, DISPLAYTO (RFC 5957 §3): the decoded display name of
    /// the first address, else `mailbox@host`, else the mailbox; folded.
    pub display_from: String,
    pub display_to: String,
}

impl SortFields {
    pub(crate) fn of(t: &TopFields<'_>) -> Self {
        let first = |v: Option<&[u8]>| -> Option<Mailbox> { v.and_then(|v| address::mailboxes(&address::parse(&unfold(v))).next().cloned()) };
        let from = first(t.from);
        let to = first(t.to);
        let cc = first(t.cc);
        let mailbox = |m: &Option<Mailbox>| m.as_ref().map(|m| fold(&String::from_utf8_lossy(&m.mailbox))).unwrap_or_default();
        let display = |m: &Option<Mailbox>| {
            let Some(m) = m else { return String::new() };
            let name = m.name.as_deref().map(|n| rfc2047(n).trim().to_string()).unwrap_or_default();
            if !name.is_empty() {
                return fold(&name);
            }
            let mut s = String::from_utf8_lossy(&m.mailbox).into_owned();
            if !m.host.is_empty() {
                s.push('@');
                s.push_str(&String::from_utf8_lossy(&m.host));
            }
            fold(&s)
        };
        SortFields {
            sent_date: t.date.and_then(parse_date),
            subject: fold(&base_subject(t.subject.map(unfold).unwrap_or_default())),
            from: mailbox(&from),
            to: mailbox(&to),
            cc: mailbox(&cc),
            display_from: display(&from),
            display_to: display(&to),
        }
    }

    pub fn heap_size(&self) -> usize {
        [&self.subject, &self.from, &self.to, &self.cc, &self.display_from, &self.display_to].iter().map(|s| s.capacity()).sum()
    }
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at the start of `s`: its length.
fn blob(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'[') {
        return None;
    }
    let close = s[1..].iter().position(|&b| b == b'[' || b == b']')? + 1;
    if s[close] != b']' {
        return None;
    }
    let mut n = close + 1;
    while s.get(n) == Some(&b' ') {
        n += 1;
    }
    Some(n)
}

/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`: its length.
fn refwd(s: &[u8]) -> Option<usize> {
    let lower = |i: usize| s.get(i).map(u8::to_ascii_lowercase);
    let mut n = match (lower(0), lower(1), lower(2)) {
        (Some(b'r'), Some(b'e'), _) => 2,
        (Some(b'f'), Some(b'w'), Some(b'd')) => 3,
        (Some(b'f'), Some(b'w'), _) => 2,
        _ => return None,
    };
    while s.get(n) == Some(&b' ') {
        n += 1;
    }
    if let Some(b) = blob(&s[n..]) {
        n += b;
    }
    (s.get(n) == Some(&b':')).then_some(n + 1)
}

/// `subj-leader = (*subj-blob subj-refwd) / WSP`: its length, and whether
/// it was a reply/forward marker.
fn leader(s: &[u8]) -> Option<(usize, bool)> {
    if s.first() == Some(&b' ') {
        return Some((1, false));
    }
    let mut n = 0;
    while let Some(b) = blob(&s[n..]) {
        n += b;
    }
    refwd(&s[n..]).map(|r| (n + r, true))
}

/// The base subject (RFC 5256 §2.1) and whether the subject marked a reply
/// or forward (a `subj-refwd`, a `(fwd)` trailer or a `[fwd: …]` wrapper,
/// which THREAD=REFERENCES step 5 needs).
pub(crate) fn base_subject_and_reply(raw: &[u8]) -> (String, bool) {
    // (1) Decode encoded words; tabs and folds to spaces; runs of spaces to one.
    let decoded = rfc2047(&unfold(raw));
    let mut s = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') { ' ' } else { c };
        if !(c == ' ' && s.ends_with(' ')) {
            s.push(c);
        }
    }
    let mut reply = false;
    // Work on byte offsets: every pattern is ASCII, so cuts stay on char boundaries.
    let mut start = 0;
    let mut end = s.len();
    loop {
        // (2) Trailers: "(fwd)" or WSP, repeatedly.
        loop {
            let b = &s.as_bytes()[start..end];
            if b.ends_with(b" ") {
                end -= 1;
            } else if b.len() >= 5 && b[b.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                end -= 5;
                reply = true;
            } else {
                break;
            }
        }
        // (3)-(5) Leaders and blobs, until neither applies.
        loop {
            let b = &s.as_bytes()[start..end];
            if let Some((n, r)) = leader(b) {
                start += n;
                reply |= r;
                continue;
            }
            if let Some(n) = blob(b) {
                if b[n..].iter().any(|&c| c != b' ') {
                    start += n;
                    continue;
                }
            }
            break;
        }
        // (6) "[fwd:" … "]" wrapper: strip and start over from (2).
        let b = &s.as_bytes()[start..end];
        if b.len() >= 6 && b[..5].eq_ignore_ascii_case(b"[fwd:") && b.ends_with(b"]") {
            start += 5;
            end -= 1;
            reply = true;
            continue;
        }
        break;
    }
    (s[start..end].to_string(), reply)
}

/// The base subject of a raw `Subject:` value (RFC 5256 §2.1): encoded
/// words decoded, white space normalised, reply/forward markers, leading
/// `[blob]`s, `(fwd)` trailers and `[fwd: …]` wrappers removed. Not folded.
pub fn base_subject(raw_subject: impl AsRef<[u8]>) -> String {
    base_subject_and_reply(raw_subject.as_ref()).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        // RFC 5256 §2.1 rules, one by one, and their combinations.
        let cases = [
            ("Re: hello", "hello"),
            ("RE:hello", "hello"),
            ("Fwd: hello", "hello"),
            ("FW: hello", "hello"),
            ("fw : hello", "hello"),
            ("Re[2]: hello", "hello"),
            ("Re: Re: Fwd: hello", "hello"),
            ("[PATCH] hello", "hello"),
            ("[list] Re: hello", "hello"),
            ("Re: [list] Re: hello", "hello"),
            ("[list]", "[list]"),
            ("Re: [list]", "[list]"),
            ("hello (fwd)", "hello"),
            ("hello (FWD) (fwd)  ", "hello"),
            ("[Fwd: Re: hello]", "hello"),
            ("Re: [fwd: FW: hello (fwd)]", "hello"),
            ("  hello \t  world  ", "hello world"),
            ("Reply to this", "Reply to this"),
            ("Re:", ""),
            ("", ""),
            ("=?UTF-8?B?UmU6INCf0YDQuNCy0LXRgg==?=", "Привет"),
            ("Re: =?koi8-r?B?8NLJ18XU?= =?koi8-r?B?IMzAxMk=?=", "Привет люди"),
            ("[a][b] x", "x"),
            ("[a] [b]", "[b]"),
        ];
        for (raw, want) in cases {
            assert_eq!(base_subject(raw), want, "{raw:?}");
        }
        assert!(base_subject_and_reply(b"Re: x").1);
        assert!(base_subject_and_reply(b"x (fwd)").1);
        assert!(!base_subject_and_reply(b"[list] x").1);
    }
}
