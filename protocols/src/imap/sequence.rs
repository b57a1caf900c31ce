//! Sequence sets (RFC 9051 §9 `sequence-set`): message sequence numbers or
//! UIDs, ranges, `*` (the largest number in use) and `$` (the saved search
//! result, RFC 5182).

use std::fmt;
use std::ops::RangeInclusive;

/// One end of a range: a number or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNumber {
    /// Non-zero.
    Value(u32),
    /// `*`: the largest number in use (the last message's sequence number
    /// or UID), whatever it is when the command runs.
    Last,
}

impl SeqNumber {
    fn resolve(self, max: u32) -> u32 {
        match self {
            SeqNumber::Value(n) => n,
            SeqNumber::Last => max,
        }
    }
}

/// `n`, `n:m`, `n:*`, `*`. `start` may be above `end` (`5:2` is `2:5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub start: SeqNumber,
    pub end: SeqNumber,
}

impl SeqRange {
    /// The range as `lo..=hi` with `*` = `max` and the ends ordered, clamped
    /// to `max`; `None` if nothing of it is at or below `max` (or `max` is 0).
    ///
    /// RFC 9051 §9 (`seq-range`): `*` is the largest number in use, so in a
    /// mailbox whose largest UID is 5, `UID 10:*` is `5:10`, i.e. `5`.
    pub fn resolve(&self, max: u32) -> Option<RangeInclusive<u32>> {
        if max == 0 {
            return None;
        }
        let (a, b) = (self.start.resolve(max), self.end.resolve(max));
        let (lo, hi) = (a.min(b), a.max(b).min(max));
        (lo <= hi).then_some(lo..=hi)
    }
}

/// A sequence set as parsed: a non-empty list of ranges in the order given
/// (overlaps and duplicates allowed), or `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceSet {
    Ranges(Vec<SeqRange>),
    /// `$` (RFC 5182 SEARCHRES): the result of the last `SEARCH RETURN
    /// (SAVE)`. The session substitutes its saved set (see
    /// [`SequenceSet::or_saved`]) before resolving; resolving `$` itself
    /// yields nothing.
    Saved,
}

impl SequenceSet {
    /// A set of one number.
    pub fn single(n: u32) -> Self {
        SequenceSet::Ranges(vec![SeqRange { start: SeqNumber::Value(n), end: SeqNumber::Value(n) }])
    }

    /// The compact set of `sorted` (ascending; duplicates are tolerated),
    /// e.g. `[1, 2, 3, 5, 7, 8, 9]` renders as `1:3,5,7:9`. For COPYUID,
    /// APPENDUID, VANISHED and ESEARCH ALL. Unsorted input still gives a set
    /// with the same members, only less compact. Empty input gives an empty
    /// set, which `Display` renders as nothing: callers must not send it.
    pub fn from_sorted(sorted: &[u32]) -> Self {
        let mut ranges: Vec<SeqRange> = Vec::new();
        for &n in sorted {
            if let Some(SeqRange { start: SeqNumber::Value(s), end: SeqNumber::Value(e) }) = ranges.last_mut() {
                if n >= *s && n <= *e {
                    continue;
                }
                if n > *s && n.checked_sub(1) == Some(*e) {
                    *e = n;
                    continue;
                }
            }
            ranges.push(SeqRange { start: SeqNumber::Value(n), end: SeqNumber::Value(n) });
        }
        SequenceSet::Ranges(ranges)
    }

    /// `saved` when this is `$`, else `self`.
    pub fn or_saved<'a>(&'a self, saved: &'a SequenceSet) -> &'a SequenceSet {
        match self {
            SequenceSet::Saved => saved,
            SequenceSet::Ranges(_) => self,
        }
    }

    pub fn is_saved(&self) -> bool {
        matches!(self, SequenceSet::Saved)
    }

    /// The ranges as given (empty for `$`).
    pub fn ranges(&self) -> &[SeqRange] {
        match self {
            SequenceSet::Ranges(r) => r,
            SequenceSet::Saved => &[],
        }
    }

    /// The members at or below `max` (`*` = `max`) as ascending, disjoint,
    /// non-adjacent ranges. Costs one allocation of at most one range per
    /// range given, whatever the numbers.
    pub fn resolve(&self, max: u32) -> Vec<RangeInclusive<u32>> {
        let mut ranges: Vec<RangeInclusive<u32>> = self.ranges().iter().filter_map(|r| r.resolve(max)).collect();
        ranges.sort_unstable_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u32>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if let Some(last) = merged.last_mut() {
                if *r.start() <= last.end().saturating_add(1) {
                    if r.end() > last.end() {
                        *last = *last.start()..=*r.end();
                    }
                    continue;
                }
            }
            merged.push(r);
        }
        merged
    }

    /// The members at or below `max`, ascending, each once.
    pub fn iter_resolved(&self, max: u32) -> impl Iterator<Item = u32> {
        self.resolve(max).into_iter().flatten()
    }

    /// Whether `n` is a member when the largest number in use is `max`.
    pub fn contains(&self, n: u32, max: u32) -> bool {
        self.ranges().iter().any(|r| r.resolve(max).is_some_and(|r| r.contains(&n)))
    }

    /// The largest number the set names explicitly, ignoring `*` (for
    /// "is this UID above UIDNEXT" checks). `None` for `$` or only `*`.
    pub fn max_value(&self) -> Option<u32> {
        self.ranges()
            .iter()
            .flat_map(|r| [r.start, r.end])
            .filter_map(|n| match n {
                SeqNumber::Value(v) => Some(v),
                SeqNumber::Last => None,
            })
            .max()
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqNumber::Value(n) => write!(f, "{n}"),
            SeqNumber::Last => f.write_str("*"),
        }
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}:{}", self.start, self.end)
        }
    }
}

/// The wire form: `1:3,5,7:*` or `$`.
impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceSet::Saved => f.write_str("$"),
            SequenceSet::Ranges(ranges) => {
                for (i, r) in ranges.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(Option<u32>, Option<u32>)]) -> SequenceSet {
        let n = |v: Option<u32>| v.map_or(SeqNumber::Last, SeqNumber::Value);
        SequenceSet::Ranges(ranges.iter().map(|&(a, b)| SeqRange { start: n(a), end: n(b) }).collect())
    }

    #[test]
    fn resolution() {
        let s = set(&[(Some(5), Some(2)), (Some(9), None), (Some(3), Some(3)), (Some(7), Some(7))]);
        assert_eq!(s.resolve(10), vec![2..=5, 7..=7, 9..=10]);
        assert_eq!(s.iter_resolved(8).collect::<Vec<_>>(), vec![2, 3, 4, 5, 7, 8]);
        // 9:* with max 4 is 4:9, clamped to 4.
        assert_eq!(s.resolve(4), vec![2..=4]);
        assert_eq!(set(&[(Some(10), None)]).resolve(5), vec![5..=5]);
        assert_eq!(set(&[(None, None)]).resolve(7), vec![7..=7]);
        assert!(s.resolve(0).is_empty());
        assert!(s.contains(4, 10) && !s.contains(6, 10) && s.contains(10, 10) && !s.contains(11, 10));
        assert!(set(&[(Some(10), None)]).contains(5, 5));
        assert_eq!(set(&[(Some(1), Some(u32::MAX)), (Some(u32::MAX), Some(u32::MAX))]).resolve(u32::MAX), vec![1..=u32::MAX]);
        assert!(SequenceSet::Saved.resolve(10).is_empty());
        assert_eq!(s.max_value(), Some(9));
    }

    #[test]
    fn compact_rendering() {
        assert_eq!(SequenceSet::from_sorted(&[1, 2, 3, 5, 7, 8, 9]).to_string(), "1:3,5,7:9");
        assert_eq!(SequenceSet::from_sorted(&[4, 4, 5]).to_string(), "4:5");
        assert_eq!(SequenceSet::from_sorted(&[u32::MAX - 1, u32::MAX]).to_string(), "4294967294:4294967295");
        assert_eq!(SequenceSet::from_sorted(&[3, 1]).to_string(), "3,1");
        assert_eq!(SequenceSet::from_sorted(&[]).to_string(), "");
        assert_eq!(set(&[(Some(1), None), (None, None)]).to_string(), "1:*,*");
        assert_eq!(SequenceSet::Saved.to_string(), "$");
        assert_eq!(SequenceSet::single(7).to_string(), "7");
    }
}
