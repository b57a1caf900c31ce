//! The journal's on-disk format, record versions 1 and 2 (see
//! `storage/README.md`).
//!
//! A segment file starts with a fixed header, then holds records back to
//! back. All integers are little-endian.
//!
//! ```text
//! segment header (25 bytes)
//!   magic "VRNS" | version u8 = 1 | segment id u64 | id base u64 | crc32 u32
//! record frame (13 bytes + payload)
//!   magic "VRNJ" | version u8 = 1 or 2 | payload length u32 | crc32 u32 | payload
//! payload v1 (local deliveries only)
//!   record id u64 | delivery count u32
//!   per delivery: path length u16 | path | prefix length u32 | prefix
//!   content tag u8: 0 = inline, 1 = spooled
//!   inline:  the rest of the payload is the message
//!   spooled: path length u16 | path | spool file length u64
//! payload v2 (with an outbound envelope): as v1, with the outbound
//! section between the last delivery and the content tag:
//!   queue id u64 | queued-at u64 | flags u8 (1 = RET=FULL, 2 = 8-bit body,
//!   4 = SMTPUTF8) | body size u64
//!   sender str | envid opt | submitter opt | prefix length u32 | prefix
//!   recipient count u32
//!   per recipient: address str | orcpt opt | notify u8 (1 = never,
//!   2 = success, 4 = failure, 8 = delay, 16 = NOTIFY given)
//!   str = length u16 | UTF-8 bytes; opt = 0 u8 | 1 u8 str
//! ```
//!
//! Records without remote recipients are still written as version 1, so
//! a build from before the outbound queue reads them (and stops at the
//! first version 2 record as at a torn tail: downgrading with outbound
//! mail in the journal loses that mail's remote copies, never local ones
//! written before it). Every build reads both versions.
//!
//! The CRC (CRC-32/ISO-HDLC, `crc32fast`) covers the version and length
//! bytes as well as the payload, so a bit flip in the length field cannot
//! make a shorter or longer frame pass. A frame that is short, has a wrong
//! magic or CRC, or a length past the end of the file is where a crash cut
//! the segment (a torn tail): reading stops there. A frame whose CRC is good
//! but whose payload does not decode was written by a buggy or foreign
//! writer: that one record is skipped and reading goes on.

use crate::journal::{Content, Delivery, JournalRecord, Outbound, OutboundRecipient};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use varan_core::queue::{limits, BodyInfo, Notify, QueueId, Ret};

/// Format version written into segment headers and into the frames of
/// records without an outbound envelope.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Frame version of records that carry an outbound envelope.
pub(crate) const FORMAT_VERSION_OUTBOUND: u8 = 2;
pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"VRNS";
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"VRNJ";
pub(crate) const SEGMENT_HEADER_BYTES: usize = 25;
pub(crate) const FRAME_HEADER_BYTES: usize = 13;

/// Largest message body one record may carry: the 1 GiB hard cap on
/// `smtp.message_size_max` plus 64 KiB for the trace and
/// Authentication-Results headers the server adds.
pub const CONTENT_BYTES_MAX: u64 = (1 << 30) + (64 << 10);
/// Largest record payload. Equal to the content cap: a record is either
/// one large inline message or many deliveries of a spooled one, and a
/// reader must be able to refuse a garbage length before allocating.
pub const RECORD_BYTES_MAX: u64 = CONTENT_BYTES_MAX;
/// Most target files per record: the hard cap on `smtp.recipients_max`
/// (`varan_core::config::caps::RECIPIENTS_MAX`); group expansion may add
/// more targets than RCPT commands, but never past this.
pub const DELIVERIES_MAX: usize = 100_000;
/// Longest path stored in a record (Linux `PATH_MAX`).
pub const PATH_BYTES_MAX: usize = 4096;
/// Longest per-recipient header block (Return-Path, Delivered-To,
/// Received). A few hundred bytes in practice; the cap stops a bug from
/// multiplying a large prefix by 100,000 deliveries.
pub const PREFIX_BYTES_MAX: usize = 64 << 10;

const TAG_INLINE: u8 = 0;
const TAG_SPOOLED: u8 = 1;

/// The fixed header at the start of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub segment: u64,
    /// Every record id handed out before this segment was created is
    /// smaller than this; persisted so ids stay monotonic after all older
    /// segments are retired.
    pub id_base: u64,
}

pub(crate) fn encode_segment_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[..4].copy_from_slice(&SEGMENT_MAGIC);
    out[4] = FORMAT_VERSION;
    out[5..13].copy_from_slice(&h.segment.to_le_bytes());
    out[13..21].copy_from_slice(&h.id_base.to_le_bytes());
    let crc = crc32fast::hash(&out[..21]);
    out[21..].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_segment_header(b: &[u8; SEGMENT_HEADER_BYTES]) -> Option<SegmentHeader> {
    if b[..4] != SEGMENT_MAGIC || b[4] != FORMAT_VERSION {
        return None;
    }
    let crc = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
    if crc32fast::hash(&b[..21]) != crc {
        return None;
    }
    Some(SegmentHeader { segment: le_u64(&b[5..13]), id_base: le_u64(&b[13..21]) })
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// One record ready to write: the frame header and the small part of the
/// payload in `head`, the inline message (if any) borrowed in `tail`, so a
/// large message is hashed once and written once, never copied.
pub(crate) struct Encoded<'a> {
    pub head: Vec<u8>,
    pub tail: &'a [u8],
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn push_path(out: &mut Vec<u8>, path: &Path, what: &str) -> io::Result<()> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() > PATH_BYTES_MAX || bytes.contains(&0) || !path.is_absolute() {
        return Err(invalid(format!("journal record: {what} path must be absolute, without NUL, at most {PATH_BYTES_MAX} bytes: {}", path.display())));
    }
    // Bounded by PATH_BYTES_MAX (4096) above, so it fits in u16.
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Checks that a delivery target is `<maildir>/new/<name>`, the only shape
/// `deliver` and recovery know how to write.
pub(crate) fn check_target(path: &Path) -> io::Result<()> {
    // Maildir readers ignore names starting with '.', and "." / ".." are
    // not files.
    let name_ok = path.file_name().is_some_and(|n| !n.is_empty() && !n.as_bytes().starts_with(b"."));
    let in_new = path.parent().and_then(Path::file_name) == Some(OsStr::new("new"));
    let plain = !path.as_os_str().as_bytes().ends_with(b"/");
    if name_ok && in_new && plain && path.parent().and_then(Path::parent).is_some() {
        Ok(())
    } else {
        Err(invalid(format!("delivery target must be <maildir>/new/<name>: {}", path.display())))
    }
}

/// Encodes one record. `spool_len` is the length of the spool file for
/// `Content::Spooled` (recorded so recovery can tell a damaged spool file).
/// Encodes one record for segment `segment`. The segment id is part of
/// the checksum, so a record left over from a recycled segment's previous
/// life can never be read as belonging to the new one.
pub(crate) fn encode(record: &JournalRecord, spool_len: u64, segment: u64) -> io::Result<Encoded<'_>> {
    if record.deliveries.len() > DELIVERIES_MAX {
        return Err(invalid(format!("journal record has {} deliveries; at most {DELIVERIES_MAX}", record.deliveries.len())));
    }
    let mut head = Vec::with_capacity(FRAME_HEADER_BYTES + 64 + record.deliveries.len() * 160);
    head.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    head.extend_from_slice(&record.id.to_le_bytes());
    head.extend_from_slice(&(record.deliveries.len() as u32).to_le_bytes());
    for d in &record.deliveries {
        check_target(&d.path)?;
        push_path(&mut head, &d.path, "delivery")?;
        if d.prefix.len() > PREFIX_BYTES_MAX {
            return Err(invalid(format!("delivery prefix is {} bytes; at most {PREFIX_BYTES_MAX}", d.prefix.len())));
        }
        head.extend_from_slice(&(d.prefix.len() as u32).to_le_bytes());
        head.extend_from_slice(&d.prefix);
    }
    let version = match &record.outbound {
        Some(o) => {
            encode_outbound(&mut head, o)?;
            FORMAT_VERSION_OUTBOUND
        }
        None => FORMAT_VERSION,
    };
    let tail: &[u8] = match &record.content {
        Content::Inline(bytes) => {
            head.push(TAG_INLINE);
            bytes
        }
        Content::Spooled(path) => {
            head.push(TAG_SPOOLED);
            push_path(&mut head, path, "spool")?;
            head.extend_from_slice(&spool_len.to_le_bytes());
            &[]
        }
    };
    let payload_len = (head.len() - FRAME_HEADER_BYTES) as u64 + tail.len() as u64;
    if payload_len > RECORD_BYTES_MAX {
        return Err(invalid(format!("journal record is {payload_len} bytes; at most {RECORD_BYTES_MAX}")));
    }
    // Fits: RECORD_BYTES_MAX < u32::MAX.
    let len_bytes = (payload_len as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&segment.to_le_bytes());
    crc.update(&[version]);
    crc.update(&len_bytes);
    crc.update(&head[FRAME_HEADER_BYTES..]);
    crc.update(tail);
    head[..4].copy_from_slice(&RECORD_MAGIC);
    head[4] = version;
    head[5..9].copy_from_slice(&len_bytes);
    head[9..13].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(Encoded { head, tail })
}

fn push_str(out: &mut Vec<u8>, value: &str, max: usize, what: &str) -> io::Result<()> {
    if value.len() > max {
        return Err(invalid(format!("journal record: {what} is {} bytes; at most {max}", value.len())));
    }
    // Every max here is at most 1,024: fits in u16.
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn push_opt(out: &mut Vec<u8>, value: Option<&str>, max: usize, what: &str) -> io::Result<()> {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            push_str(out, v, max, what)?;
        }
    }
    Ok(())
}

const FLAG_RET_FULL: u8 = 1;
const FLAG_EIGHT_BIT: u8 = 2;
const FLAG_SMTPUTF8: u8 = 4;
const NOTIFY_NEVER: u8 = 1;
const NOTIFY_SUCCESS: u8 = 2;
const NOTIFY_FAILURE: u8 = 4;
const NOTIFY_DELAY: u8 = 8;
const NOTIFY_EXPLICIT: u8 = 16;

/// The OR of the flags whose condition holds.
fn bits(flags: &[(bool, u8)]) -> u8 {
    flags.iter().filter(|(on, _)| *on).fold(0, |acc, (_, bit)| acc | bit)
}

fn encode_outbound(out: &mut Vec<u8>, o: &Outbound) -> io::Result<()> {
    if o.recipients.len() > limits::RECIPIENTS_MAX {
        return Err(invalid(format!("journal record has {} remote recipients; at most {}", o.recipients.len(), limits::RECIPIENTS_MAX)));
    }
    if o.prefix.len() > PREFIX_BYTES_MAX {
        return Err(invalid(format!("outbound prefix is {} bytes; at most {PREFIX_BYTES_MAX}", o.prefix.len())));
    }
    out.extend_from_slice(&o.queue_id.0.to_le_bytes());
    out.extend_from_slice(&o.queued_at.to_le_bytes());
    let flags = bits(&[(o.ret == Ret::Full, FLAG_RET_FULL), (o.body.eight_bit, FLAG_EIGHT_BIT), (o.body.smtputf8, FLAG_SMTPUTF8)]);
    out.push(flags);
    out.extend_from_slice(&o.body.size.to_le_bytes());
    push_str(out, &o.sender, limits::ADDRESS_BYTES_MAX, "sender")?;
    push_opt(out, o.envid.as_deref(), limits::ENVID_BYTES_MAX, "ENVID")?;
    push_opt(out, o.submitter.as_deref(), limits::ADDRESS_BYTES_MAX, "submitter")?;
    out.extend_from_slice(&(o.prefix.len() as u32).to_le_bytes());
    out.extend_from_slice(&o.prefix);
    out.extend_from_slice(&(o.recipients.len() as u32).to_le_bytes());
    for r in &o.recipients {
        if r.address.is_empty() {
            return Err(invalid("journal record: empty remote recipient".into()));
        }
        push_str(out, &r.address, limits::ADDRESS_BYTES_MAX, "recipient")?;
        push_opt(out, r.orcpt.as_deref(), limits::ORCPT_BYTES_MAX, "ORCPT")?;
        let n = &r.notify;
        out.push(bits(&[(n.never, NOTIFY_NEVER), (n.success, NOTIFY_SUCCESS), (n.failure, NOTIFY_FAILURE), (n.delay, NOTIFY_DELAY), (n.explicit, NOTIFY_EXPLICIT)]));
    }
    Ok(())
}

fn decode_outbound(c: &mut Cursor<'_>) -> Option<Outbound> {
    let queue_id = QueueId(c.u64()?);
    let queued_at = c.u64()?;
    let flags = c.u8()?;
    let size = c.u64()?;
    let sender = c.str(limits::ADDRESS_BYTES_MAX)?;
    let envid = c.opt(limits::ENVID_BYTES_MAX)?;
    let submitter = c.opt(limits::ADDRESS_BYTES_MAX)?;
    let plen = c.u32()? as usize;
    if plen > PREFIX_BYTES_MAX {
        return None;
    }
    let prefix = c.take(plen)?.to_vec();
    let count = c.u32()? as usize;
    if count > limits::RECIPIENTS_MAX {
        return None;
    }
    // At least 4 bytes per recipient: a garbage count reserves nothing big.
    let mut recipients = Vec::with_capacity(count.min(c.rest.len() / 4));
    for _ in 0..count {
        let address = c.str(limits::ADDRESS_BYTES_MAX)?;
        let orcpt = c.opt(limits::ORCPT_BYTES_MAX)?;
        let bits = c.u8()?;
        if address.is_empty() || bits >= 32 {
            return None;
        }
        let on = |b: u8| bits & b != 0;
        let notify = Notify { never: on(NOTIFY_NEVER), success: on(NOTIFY_SUCCESS), failure: on(NOTIFY_FAILURE), delay: on(NOTIFY_DELAY), explicit: on(NOTIFY_EXPLICIT) };
        recipients.push(OutboundRecipient { address, orcpt, notify });
    }
    if flags >= 8 {
        return None;
    }
    let ret = if flags & FLAG_RET_FULL != 0 { Ret::Full } else { Ret::Headers };
    let body = BodyInfo { eight_bit: flags & FLAG_EIGHT_BIT != 0, smtputf8: flags & FLAG_SMTPUTF8 != 0, size };
    Some(Outbound { queue_id, sender, recipients, envid, ret, body, submitter, queued_at, prefix })
}

/// A bounds-checked reader over a payload: every read either succeeds or
/// reports the payload malformed; nothing indexes past the end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(le_u64)
    }
    fn str(&mut self, max: usize) -> Option<String> {
        let n = usize::from(self.u16()?);
        if n > max {
            return None;
        }
        std::str::from_utf8(self.take(n)?).ok().map(str::to_owned)
    }
    /// `None`: malformed; `Some(None)`: absent.
    fn opt(&mut self, max: usize) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str(max).map(Some),
            _ => None,
        }
    }
    fn path(&mut self) -> Option<PathBuf> {
        let n = usize::from(self.u16()?);
        let bytes = self.take(n)?;
        let path = Path::new(OsStr::from_bytes(bytes));
        (n > 0 && n <= PATH_BYTES_MAX && !bytes.contains(&0) && path.is_absolute()).then(|| path.to_path_buf())
    }
}

/// A decoded record and, for spooled content, the spool file's length.
pub(crate) type Decoded = (JournalRecord, Option<u64>);

/// Decodes a payload of frame version `version` whose CRC already
/// matched. `None`: malformed.
pub(crate) fn decode_payload(payload: &[u8], version: u8) -> Option<Decoded> {
    let mut c = Cursor { rest: payload };
    let id = c.u64()?;
    let count = c.u32()? as usize;
    if count > DELIVERIES_MAX {
        return None;
    }
    // Each delivery needs at least 7 bytes, so a garbage count cannot make
    // us reserve more than the payload could describe.
    let mut deliveries = Vec::with_capacity(count.min(c.rest.len() / 7));
    for _ in 0..count {
        let path = c.path()?;
        check_target(&path).ok()?;
        let plen = c.u32()? as usize;
        if plen > PREFIX_BYTES_MAX {
            return None;
        }
        let prefix = c.take(plen)?.to_vec();
        deliveries.push(Delivery { path, prefix });
    }
    let outbound = match version {
        FORMAT_VERSION => None,
        FORMAT_VERSION_OUTBOUND => Some(Box::new(decode_outbound(&mut c)?)),
        _ => return None,
    };
    let (content, spool_len) = match c.u8()? {
        TAG_INLINE => (Content::Inline(std::mem::take(&mut c.rest).to_vec()), None),
        TAG_SPOOLED => {
            let path = c.path()?;
            let len = c.u64()?;
            if !c.rest.is_empty() {
                return None;
            }
            (Content::Spooled(path), Some(len))
        }
        _ => return None,
    };
    Some((JournalRecord { id, deliveries, content, outbound }, spool_len))
}

/// Where and why reading a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    pub offset: u64,
    pub reason: &'static str,
}

/// Everything readable in one segment.
#[derive(Debug, Default)]
pub(crate) struct SegmentContents {
    /// `None` when the header is missing or damaged.
    pub header: Option<SegmentHeader>,
    pub records: Vec<Decoded>,
    /// Records whose frame was sound but whose payload did not decode.
    pub skipped: usize,
    pub stop: Option<Stop>,
}

/// The reason given when reading meets never-written (zeroed) space of a
/// preallocated segment: the normal end, not damage.
pub(crate) const STOP_ZERO_FILL: &str = "end of written records (preallocated space)";

/// Reads segment `segment` of `file_len` bytes from `r`. Never panics and
/// never allocates more than the bytes that are actually left in the file.
/// Errors are I/O errors of `r` only; damage ends the read with `stop`.
pub(crate) fn read_segment(r: &mut impl Read, file_len: u64, segment: u64) -> io::Result<SegmentContents> {
    let mut out = SegmentContents::default();
    if file_len < SEGMENT_HEADER_BYTES as u64 {
        if file_len > 0 {
            out.stop = Some(Stop { offset: 0, reason: "segment shorter than its header" });
        }
        return Ok(out);
    }
    let mut hb = [0u8; SEGMENT_HEADER_BYTES];
    r.read_exact(&mut hb)?;
    // A damaged header loses only the id base: records are self-framed,
    // so reading goes on.
    out.header = decode_segment_header(&hb);
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    loop {
        let left = file_len - offset;
        if left == 0 {
            return Ok(out);
        }
        let stop = |reason| Some(Stop { offset, reason });
        if left < FRAME_HEADER_BYTES as u64 {
            out.stop = stop("short frame header");
            return Ok(out);
        }
        let mut fh = [0u8; FRAME_HEADER_BYTES];
        r.read_exact(&mut fh)?;
        let len = u64::from(u32::from_le_bytes([fh[5], fh[6], fh[7], fh[8]]));
        let crc = u32::from_le_bytes([fh[9], fh[10], fh[11], fh[12]]);
        if fh.iter().all(|&b| b == 0) {
            out.stop = stop(STOP_ZERO_FILL);
            return Ok(out);
        }
        if fh[..4] != RECORD_MAGIC {
            out.stop = stop("bad record magic");
            return Ok(out);
        }
        if fh[4] != FORMAT_VERSION && fh[4] != FORMAT_VERSION_OUTBOUND {
            out.stop = stop("unknown record version");
            return Ok(out);
        }
        if len > RECORD_BYTES_MAX {
            out.stop = stop("record length over the limit");
            return Ok(out);
        }
        if len > left - FRAME_HEADER_BYTES as u64 {
            out.stop = stop("record runs past the end of the segment");
            return Ok(out);
        }
        // Bounded by the file's remaining length and RECORD_BYTES_MAX.
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&segment.to_le_bytes());
        h.update(&fh[4..9]);
        h.update(&payload);
        if h.finalize() != crc {
            out.stop = stop("record checksum mismatch");
            return Ok(out);
        }
        match decode_payload(&payload, fh[4]) {
            Some(rec) => out.records.push(rec),
            None => out.skipped += 1,
        }
        offset += FRAME_HEADER_BYTES as u64 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(id: u64, content: Content) -> JournalRecord {
        JournalRecord {
            id,
            deliveries: vec![
                Delivery { path: "/m/a.test/u1/new/1.M1P1Q0_1.h,S=10,W=11".into(), prefix: b"Delivered-To: u1@a.test\n".to_vec() },
                Delivery { path: "/m/a.test/u2/.Junk/new/x".into(), prefix: Vec::new() },
            ],
            content,
            outbound: None,
        }
    }

    fn segment(records: &[(JournalRecord, u64)]) -> Vec<u8> {
        let mut out = encode_segment_header(SegmentHeader { segment: 7, id_base: 100 }).to_vec();
        for (r, len) in records {
            let e = encode(r, *len, 7).unwrap();
            out.extend_from_slice(&e.head);
            out.extend_from_slice(e.tail);
        }
        out
    }

    fn read(bytes: &[u8]) -> SegmentContents {
        read_segment(&mut &bytes[..], bytes.len() as u64, 7).unwrap()
    }

    #[test]
    fn round_trip_inline_and_spooled() {
        let a = sample(1, Content::Inline(b"Subject: x\n\nbody\n".to_vec()));
        let b = sample(2, Content::Spooled("/spool/1.msg".into()));
        let seg = segment(&[(a.clone(), 0), (b.clone(), 4242)]);
        let got = read(&seg);
        assert_eq!(got.header, Some(SegmentHeader { segment: 7, id_base: 100 }));
        assert_eq!(got.records, vec![(a, None), (b, Some(4242))]);
        assert_eq!(got.stop, None);
    }

    #[test]
    fn refuses_bad_records_before_writing() {
        let mut r = sample(1, Content::Inline(Vec::new()));
        r.deliveries[0].path = "relative/new/x".into();
        assert!(encode(&r, 0, 7).is_err());
        r.deliveries[0].path = "/m/u/cur/x".into();
        assert!(encode(&r, 0, 7).is_err(), "target outside new/ accepted");
        r.deliveries[0].path = "/m/u/new/x".into();
        r.deliveries[0].prefix = vec![b'a'; PREFIX_BYTES_MAX + 1];
        assert!(encode(&r, 0, 7).is_err());
        let too_many =
            JournalRecord { id: 1, deliveries: vec![Delivery { path: "/m/u/new/x".into(), prefix: vec![] }; DELIVERIES_MAX + 1], content: Content::Inline(vec![]), outbound: None };
        assert!(encode(&too_many, 0, 7).is_err());
    }

    #[test]
    fn every_truncation_keeps_earlier_records() {
        let a = sample(1, Content::Inline(b"first\n".to_vec()));
        let b = sample(2, Content::Inline(b"second message\n".to_vec()));
        let seg = segment(&[(a.clone(), 0), (b.clone(), 0)]);
        let first_end = segment(&[(a.clone(), 0)]).len();
        for cut in 0..seg.len() {
            let got = read(&seg[..cut]);
            let want: Vec<_> = if cut >= first_end { vec![(a.clone(), None)] } else { vec![] };
            assert_eq!(got.records, want, "cut at {cut}");
            if cut > 0 && cut != SEGMENT_HEADER_BYTES && cut != first_end {
                assert!(got.stop.is_some(), "cut at {cut} not reported");
            }
        }
        assert_eq!(read(&seg).records.len(), 2);
    }

    #[test]
    fn flipped_bit_stops_at_that_record() {
        let a = sample(1, Content::Inline(b"first\n".to_vec()));
        let b = sample(2, Content::Inline(b"second\n".to_vec()));
        let seg = segment(&[(a.clone(), 0), (b, 0)]);
        let first_end = segment(&[(a.clone(), 0)]).len();
        for i in first_end..seg.len() {
            let mut bad = seg.clone();
            bad[i] ^= 0x10;
            let got = read(&bad);
            assert_eq!(got.records, vec![(a.clone(), None)], "flip at {i}");
            assert!(got.stop.is_some());
        }
    }

    #[test]
    fn zero_fill_is_a_clean_end_and_other_segments_records_are_refused() {
        let a = sample(1, Content::Inline(b"x\n".to_vec()));
        let mut seg = segment(&[(a.clone(), 0)]);
        seg.extend_from_slice(&[0u8; 4096]);
        let got = read(&seg);
        assert_eq!(got.records, vec![(a.clone(), None)]);
        assert_eq!(got.stop.map(|s| s.reason), Some(STOP_ZERO_FILL));
        // The same bytes read as another segment (a recycled file's stale
        // tail) fail the checksum.
        let other = read_segment(&mut &seg[..], seg.len() as u64, 8).unwrap();
        assert!(other.records.is_empty());
        assert_eq!(other.stop.map(|s| s.reason), Some("record checksum mismatch"));
    }

    #[test]
    fn damaged_header_keeps_records() {
        let a = sample(1, Content::Inline(b"x\n".to_vec()));
        let mut seg = segment(&[(a.clone(), 0)]);
        seg[6] ^= 1;
        let got = read(&seg);
        assert_eq!(got.header, None);
        assert_eq!(got.records, vec![(a, None)]);
    }

    fn outbound(n: usize) -> Outbound {
        Outbound {
            queue_id: QueueId(0x12_0003),
            sender: "alice@example.org".into(),
            recipients: (0..n)
                .map(|i| OutboundRecipient {
                    address: format!("r{i}@remote.example"),
                    orcpt: (i % 2 == 0).then(|| format!("rfc822;r{i}@remote.example")),
                    notify: Notify { explicit: i % 3 == 0, success: i % 3 == 0, delay: true, ..Notify::default() },
                })
                .collect(),
            envid: Some("QQ314159".into()),
            ret: Ret::Full,
            body: BodyInfo { eight_bit: true, smtputf8: false, size: 42 },
            submitter: Some("alice@example.org".into()),
            queued_at: 1_796_310_000,
            prefix: b"Received: from x\n".to_vec(),
        }
    }

    #[test]
    fn version_1_records_are_written_and_read_as_before() {
        // A frame built by hand from the documented v1 layout, as every
        // build before the outbound queue wrote it.
        let mut payload = Vec::new();
        payload.extend_from_slice(&9u64.to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(&10u16.to_le_bytes());
        payload.extend_from_slice(b"/m/u/new/x");
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.extend_from_slice(b"P\n");
        payload.push(TAG_INLINE);
        payload.extend_from_slice(b"body\n");
        let len = (payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&7u64.to_le_bytes());
        crc.update(&[1]);
        crc.update(&len);
        crc.update(&payload);
        let mut frame = b"VRNJ\x01".to_vec();
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&crc.finalize().to_le_bytes());
        frame.extend_from_slice(&payload);
        let rec = JournalRecord {
            id: 9,
            deliveries: vec![Delivery { path: "/m/u/new/x".into(), prefix: b"P\n".to_vec() }],
            content: Content::Inline(b"body\n".to_vec()),
            outbound: None,
        };
        let e = encode(&rec, 0, 7).unwrap();
        assert_eq!([e.head.as_slice(), e.tail].concat(), frame, "local-only records must stay version 1");
        let mut seg = encode_segment_header(SegmentHeader { segment: 7, id_base: 1 }).to_vec();
        seg.extend_from_slice(&frame);
        assert_eq!(read(&seg).records, vec![(rec, None)]);
    }

    #[test]
    fn outbound_envelope_round_trips_as_version_2() {
        let mut a = sample(1, Content::Inline(b"x\n".to_vec()));
        a.outbound = Some(Box::new(outbound(5)));
        let mut b = sample(2, Content::Spooled("/spool/2.msg".into()));
        b.deliveries.clear();
        b.outbound = Some(Box::new(Outbound { envid: None, submitter: None, sender: String::new(), ..outbound(1) }));
        let c = sample(3, Content::Inline(b"local\n".to_vec()));
        let seg = segment(&[(a.clone(), 0), (b.clone(), 77), (c.clone(), 0)]);
        let e = encode(&a, 0, 7).unwrap();
        assert_eq!(e.head[4], FORMAT_VERSION_OUTBOUND);
        let got = read(&seg);
        assert_eq!(got.records, vec![(a, None), (b, Some(77)), (c, None)]);
        assert_eq!(got.stop, None);
    }

    #[test]
    fn outbound_limits_are_enforced_on_write() {
        let mut r = sample(1, Content::Inline(vec![]));
        r.outbound = Some(Box::new(Outbound { envid: Some("e".repeat(limits::ENVID_BYTES_MAX + 1)), ..outbound(1) }));
        assert!(encode(&r, 0, 7).is_err());
        let mut o = outbound(1);
        o.recipients[0].orcpt = Some("o".repeat(limits::ORCPT_BYTES_MAX + 1));
        r.outbound = Some(Box::new(o));
        assert!(encode(&r, 0, 7).is_err());
        let mut o = outbound(1);
        o.recipients[0].address.clear();
        r.outbound = Some(Box::new(o));
        assert!(encode(&r, 0, 7).is_err());
    }

    fn arb_record() -> impl Strategy<Value = JournalRecord> {
        let delivery = ("[a-z0-9][a-z0-9.,=_:]{0,40}", proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(name, prefix)| Delivery { path: PathBuf::from(format!("/mail/d/u/new/{name}")), prefix });
        let content = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512).prop_map(Content::Inline),
            "[a-z0-9]{1,20}".prop_map(|n| Content::Spooled(PathBuf::from(format!("/spool/{n}.msg")))),
        ];
        let out = prop_oneof![Just(None), (0usize..6).prop_map(|n| Some(Box::new(outbound(n))))];
        (any::<u64>(), proptest::collection::vec(delivery, 0..8), content, out).prop_map(|(id, deliveries, content, outbound)| JournalRecord { id, deliveries, content, outbound })
    }

    proptest! {
        #[test]
        fn prop_round_trip(records in proptest::collection::vec((arb_record(), any::<u64>()), 0..6)) {
            let seg = segment(&records);
            let got = read(&seg);
            let want: Vec<Decoded> = records.into_iter().map(|(r, len)| {
                let spool = matches!(r.content, Content::Spooled(_)).then_some(len);
                (r, spool)
            }).collect();
            prop_assert_eq!(got.records, want);
            prop_assert_eq!(got.stop, None);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read(&bytes);
            // Also behind a valid header, where frames are actually parsed.
            let mut seg = encode_segment_header(SegmentHeader { segment: 1, id_base: 1 }).to_vec();
            seg.extend_from_slice(&bytes);
            let _ = read(&seg);
            let _ = decode_payload(&bytes, FORMAT_VERSION);
            let _ = decode_payload(&bytes, FORMAT_VERSION_OUTBOUND);
        }

        #[test]
        fn prop_mutated_segment_never_panics(rec in arb_record(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut seg = segment(&[(rec, 9)]);
            let i = at.index(seg.len());
            seg[i] = byte;
            let got = read(&seg);
            prop_assert!(got.records.len() <= 1);
        }
    }
}
