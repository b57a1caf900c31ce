//! The command parser: one [`Frame::Command`](super::Frame::Command) in,
//! one [`Command`] or a [`ParseError`] out (RFC 9051 §9 grammar, RFC 3501
//! where IMAP4rev1 differs, and the extensions in [`super::command`]).
//!
//! A recursive-descent parser over the frame octets. It never panics: all
//! indexing is checked, numbers use checked arithmetic, and recursion
//! (search keys, which nest through `NOT`, `OR` and parentheses) is
//! bounded by [`NESTING_MAX`]. Keywords are case-insensitive; exactly one
//! SP separates tokens, as the grammar says (no tolerance for doubled
//! spaces, which no client sends and which would hide real errors).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use varan_core::mailstore::{Flag, FlagOp, SpecialUse};

use super::command::*;
use super::date::{parse_date_text, parse_date_time, SearchDate};
use super::framer::{tag_of, TAG_BYTES_MAX};
use super::response::{write_status, ResponseCode, Status};
use super::sequence::{SeqNumber, SeqRange, SequenceSet};
use super::wire::{is_astring_char, is_atom_char};
use crate::mime::{Section, SectionKind};

/// Deepest nesting of search keys (`NOT`, `OR`, parentheses) and of any
/// other recursive construct: real clients stay below 10; the bound keeps
/// a line of `((((...` from exhausting the stack.
pub const NESTING_MAX: usize = 64;
/// ID parameter pairs (RFC 2971 §3.3: at most 30).
pub const ID_FIELDS_MAX: usize = 30;
/// ID field name length (RFC 2971 §3.3: at most 30 octets).
pub const ID_FIELD_BYTES_MAX: usize = 30;
/// ID value length (RFC 2971 §3.3: at most 1024 octets).
pub const ID_VALUE_BYTES_MAX: usize = 1024;
/// Charsets SEARCH, SORT and THREAD accept; strings are matched as UTF-8.
pub const SUPPORTED_CHARSETS: [&str; 2] = ["UTF-8", "US-ASCII"];

/// Base64 for SASL initial responses: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// `None` when no valid tag could be read: answer untagged (`*`).
    pub tag: Option<String>,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// A syntax error: `tag BAD <text>`.
    Bad(String),
    /// An unsupported CHARSET: `tag NO [BADCHARSET (UTF-8 US-ASCII)]`.
    BadCharset,
    /// The command name is not known: `tag BAD`.
    UnknownCommand,
}

impl ParseError {
    /// Appends the response line.
    pub fn write(&self, out: &mut Vec<u8>) {
        let tag = self.tag.as_deref();
        match &self.kind {
            ParseErrorKind::Bad(text) => write_status(out, tag, Status::Bad, None, text),
            ParseErrorKind::BadCharset => {
                let code = ResponseCode::BadCharset(SUPPORTED_CHARSETS.iter().map(|s| (*s).to_owned()).collect());
                write_status(out, tag, Status::No, Some(&code), "Unsupported charset")
            }
            ParseErrorKind::UnknownCommand => write_status(out, tag, Status::Bad, None, "Unknown command"),
        }
    }
}

type R<T> = Result<T, ParseErrorKind>;

fn bad<T>(text: impl Into<String>) -> R<T> {
    Err(ParseErrorKind::Bad(text.into()))
}

/// Parses one command frame (as produced by the framer: no final line
/// end; literals as `{n}\r\n` + octets).
pub fn parse_command(frame: &[u8]) -> Result<Command, ParseError> {
    if frame.is_empty() {
        return Err(ParseError { tag: None, kind: ParseErrorKind::Bad("Empty command line".into()) });
    }
    let Some(tag) = tag_of(frame) else {
        let kind = ParseErrorKind::Bad(if frame.iter().position(|&b| b == b' ').is_some_and(|p| p > TAG_BYTES_MAX) { "Tag too long" } else { "Invalid tag" }.into());
        return Err(ParseError { tag: None, kind });
    };
    let mut p = Parser { s: frame, i: tag.len() + 1, depth: 0 };
    match p.command() {
        Ok(body) => Ok(Command { tag, body }),
        Err(kind) => Err(ParseError { tag: Some(tag), kind }),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

fn upper(w: &[u8]) -> String {
    String::from_utf8_lossy(w).to_ascii_uppercase()
}

fn utf8(b: Vec<u8>, what: &str) -> R<String> {
    String::from_utf8(b).or_else(|_| bad(format!("{what} is not UTF-8")))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> R<()> {
        if self.eat(b) {
            Ok(())
        } else {
            bad(format!("Expected {what}"))
        }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b' ', "SP")
    }

    fn end(&self) -> R<()> {
        if self.at_end() {
            Ok(())
        } else {
            bad("Unexpected characters at end of command")
        }
    }

    /// Enters a nested construct; `leave` when done.
    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > NESTING_MAX {
            return bad("Nested too deeply");
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A keyword or item name: atom characters up to `[` or `<`.
    fn word(&mut self) -> &'a [u8] {
        self.take_while(|b| is_atom_char(b) && b != b'[' && b != b'<')
    }

    /// Consumes `SP KEYWORD` if it comes next (case-insensitive, followed by
    /// SP, `(` or the end); true if it did.
    fn sp_keyword(&mut self, kw: &str) -> bool {
        let save = self.i;
        if self.eat(b' ') && self.word().eq_ignore_ascii_case(kw.as_bytes()) {
            return true;
        }
        self.i = save;
        false
    }

    fn atom(&mut self, what: &str) -> R<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return bad(format!("Expected {what}"));
        }
        Ok(a)
    }

    fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() {
            return bad("Expected number");
        }
        d.iter().try_fold(0u64, |acc, &b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))).ok_or(()).or_else(|()| bad("Number too large"))
    }

    fn number(&mut self) -> R<u32> {
        u32::try_from(self.number64()?).or_else(|_| bad("Number too large"))
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            0 => bad("Zero is not allowed here"),
            n => Ok(n),
        }
    }

    /// `mod-sequence-value` (1..2^63) or, with `zero`, `mod-sequence-valzer`.
    fn modseq(&mut self, zero: bool) -> R<u64> {
        let n = self.number64()?;
        if n > i64::MAX as u64 || (n == 0 && !zero) {
            return bad("Invalid mod-sequence");
        }
        Ok(n)
    }

    /// A quoted string, unescaped.
    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"', "quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return bad("Unterminated quoted string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c),
                        _ => return bad("Invalid escape in quoted string"),
                    }
                }
                Some(b'\r' | b'\n' | 0) => return bad("Invalid character in quoted string"),
                Some(c) => out.push(c),
            }
            self.i += 1;
        }
    }

    /// `{n}` / `{n+}` / with `binary`, also `~{n}`; CRLF; the octets.
    /// Returns their range and whether it was a literal8. NUL is refused
    /// in a plain literal unless `nul_ok`.
    fn literal(&mut self, binary: bool, nul_ok: bool) -> R<(std::ops::Range<usize>, bool)> {
        let is8 = self.eat(b'~');
        if is8 && !binary {
            return bad("literal8 not allowed here");
        }
        self.expect(b'{', "literal")?;
        let n = self.number64()?;
        self.eat(b'+');
        self.expect(b'}', "}")?;
        if !(self.eat(b'\r') && self.eat(b'\n')) {
            return bad("Expected CRLF after literal size");
        }
        let end = usize::try_from(n).ok().and_then(|n| self.i.checked_add(n)).filter(|&e| e <= self.s.len());
        let Some(end) = end else {
            return bad("Literal is truncated");
        };
        let range = self.i..end;
        if !is8 && !nul_ok && self.s[range.clone()].contains(&0) {
            return bad("NUL in literal");
        }
        self.i = end;
        Ok((range, is8))
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => {
                let (r, _) = self.literal(false, false)?;
                Ok(self.s[r].to_vec())
            }
            _ => bad("Expected string"),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    return bad("Expected string or atom");
                }
                Ok(a.to_vec())
            }
        }
    }

    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        if matches!(self.peek(), Some(b'"' | b'{')) {
            return self.string().map(Some);
        }
        if self.word().eq_ignore_ascii_case(b"NIL") {
            Ok(None)
        } else {
            bad("Expected string or NIL")
        }
    }

    fn astring_utf8(&mut self, what: &str) -> R<String> {
        let s = self.astring()?;
        utf8(s, what)
    }

    fn mailbox(&mut self) -> R<MailboxName> {
        Ok(MailboxName(self.astring()?))
    }

    /// `list-mailbox`: list characters (atom chars, `%`, `*`, `]`) or a string.
    fn list_mailbox(&mut self) -> R<Vec<u8>> {
        if matches!(self.peek(), Some(b'"' | b'{')) {
            return self.string();
        }
        let a = self.take_while(|b| is_astring_char(b) || b == b'%' || b == b'*');
        if a.is_empty() {
            return bad("Expected mailbox pattern");
        }
        Ok(a.to_vec())
    }

    /// A parenthesised, space-separated list of at least `min` items.
    fn paren_list<T>(&mut self, min: usize, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        self.expect(b'(', "(")?;
        let mut v = Vec::new();
        if !self.eat(b')') {
            loop {
                v.push(item(self)?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        if v.len() < min {
            return bad("Empty list");
        }
        Ok(v)
    }

    fn sequence_set(&mut self) -> R<SequenceSet> {
        if self.eat(b'$') {
            return Ok(SequenceSet::Saved);
        }
        let mut ranges = Vec::new();
        loop {
            let start = self.seq_number()?;
            let end = if self.eat(b':') { self.seq_number()? } else { start };
            ranges.push(SeqRange { start, end });
            if !self.eat(b',') {
                break;
            }
        }
        Ok(SequenceSet::Ranges(ranges))
    }

    fn seq_number(&mut self) -> R<SeqNumber> {
        if self.eat(b'*') {
            return Ok(SeqNumber::Last);
        }
        match self.peek() {
            Some(b) if b.is_ascii_digit() => Ok(SeqNumber::Value(self.nz_number()?)),
            _ => bad("Expected sequence set"),
        }
    }

    /// One flag for STORE/APPEND; `None` for `\Recent` (dropped).
    fn flag(&mut self) -> R<Option<Flag>> {
        let start = self.i;
        self.eat(b'\\');
        self.atom("flag")?;
        let text = std::str::from_utf8(&self.s[start..self.i]).or_else(|_| bad("Invalid flag"))?;
        if text.eq_ignore_ascii_case("\\Recent") {
            return Ok(None);
        }
        match Flag::from_imap(text) {
            Some(f) => Ok(Some(f)),
            None if text.starts_with('\\') => bad(format!("Unknown system flag {text}")),
            None => bad("Invalid keyword"),
        }
    }

    fn flag_list(&mut self) -> R<Vec<Flag>> {
        Ok(self.paren_list(0, Self::flag)?.into_iter().flatten().collect())
    }

    fn date(&mut self) -> R<SearchDate> {
        let quoted = self.eat(b'"');
        let text = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
        if quoted {
            self.expect(b'"', "closing quote")?;
        }
        parse_date_text(text).map_or_else(|| bad("Invalid date"), Ok)
    }

    fn charset(&mut self) -> R<String> {
        let c = self.astring()?;
        match SUPPORTED_CHARSETS.iter().find(|s| s.as_bytes().eq_ignore_ascii_case(&c)) {
            Some(s) => Ok((*s).to_owned()),
            None => Err(ParseErrorKind::BadCharset),
        }
    }

    // ---- commands ----

    fn command(&mut self) -> R<CommandBody> {
        let name = self.word();
        if name.is_empty() {
            return bad("Expected command name");
        }
        let n = upper(name);
        let body = match n.as_str() {
            "CAPABILITY" => CommandBody::Capability,
            "NOOP" => CommandBody::Noop,
            "LOGOUT" => CommandBody::Logout,
            "STARTTLS" => CommandBody::StartTls,
            "NAMESPACE" => CommandBody::Namespace,
            "IDLE" => CommandBody::Idle,
            "CHECK" => CommandBody::Check,
            "CLOSE" => CommandBody::Close,
            "UNSELECT" => CommandBody::Unselect,
            "EXPUNGE" => CommandBody::Expunge,
            "AUTHENTICATE" => self.authenticate()?,
            "LOGIN" => {
                self.sp()?;
                let username = self.astring_utf8("User name")?;
                self.sp()?;
                let password = Secret(self.astring_utf8("Password")?);
                CommandBody::Login { username, password }
            }
            "ENABLE" => {
                let mut caps = Vec::new();
                while self.eat(b' ') {
                    caps.push(upper(self.atom("capability")?));
                }
                if caps.is_empty() {
                    return bad("ENABLE needs a capability");
                }
                CommandBody::Enable(caps)
            }
            "SELECT" | "EXAMINE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                let params = self.select_params()?;
                if n == "SELECT" {
                    CommandBody::Select { mailbox, params }
                } else {
                    CommandBody::Examine { mailbox, params }
                }
            }
            "CREATE" => self.create()?,
            "DELETE" => CommandBody::Delete(self.sp_mailbox()?),
            "SUBSCRIBE" => CommandBody::Subscribe(self.sp_mailbox()?),
            "UNSUBSCRIBE" => CommandBody::Unsubscribe(self.sp_mailbox()?),
            "RENAME" => {
                let from = self.sp_mailbox()?;
                let to = self.sp_mailbox()?;
                CommandBody::Rename { from, to }
            }
            "LIST" => CommandBody::List(self.list()?),
            "LSUB" => {
                let reference = self.sp_mailbox()?;
                self.sp()?;
                CommandBody::Lsub { reference, pattern: self.list_mailbox()? }
            }
            "STATUS" => {
                let mailbox = self.sp_mailbox()?;
                self.sp()?;
                CommandBody::Status { mailbox, items: self.paren_list(1, Self::status_item)? }
            }
            "APPEND" => self.append()?,
            "SEARCH" => CommandBody::Search(self.search(false)?),
            "FETCH" => CommandBody::Fetch(self.fetch(false)?),
            "STORE" => CommandBody::Store(self.store(false)?),
            "COPY" | "MOVE" => self.copy_move(false, &n)?,
            "SORT" => CommandBody::Sort(self.sort(false)?),
            "THREAD" => CommandBody::Thread(self.thread(false)?),
            "UID" => self.uid()?,
            "ID" => self.id()?,
            "GETQUOTA" => {
                self.sp()?;
                CommandBody::GetQuota(self.astring()?)
            }
            "GETQUOTAROOT" => CommandBody::GetQuotaRoot(self.sp_mailbox()?),
            "SETQUOTA" => {
                self.sp()?;
                let root = self.astring()?;
                self.sp()?;
                let limits = self.paren_list(0, |p| {
                    let name = upper(p.atom("resource name")?);
                    p.sp()?;
                    Ok((name, p.number64()?))
                })?;
                CommandBody::SetQuota { root, limits }
            }
            "COMPRESS" => {
                self.sp()?;
                CommandBody::Compress(upper(self.atom("compression mechanism")?))
            }
            _ => return Err(ParseErrorKind::UnknownCommand),
        };
        self.end()?;
        Ok(body)
    }

    fn sp_mailbox(&mut self) -> R<MailboxName> {
        self.sp()?;
        self.mailbox()
    }

    fn uid(&mut self) -> R<CommandBody> {
        self.sp()?;
        let n = upper(self.word());
        Ok(match n.as_str() {
            "FETCH" => CommandBody::Fetch(self.fetch(true)?),
            "STORE" => CommandBody::Store(self.store(true)?),
            "SEARCH" => CommandBody::Search(self.search(true)?),
            "COPY" | "MOVE" => self.copy_move(true, &n)?,
            "SORT" => CommandBody::Sort(self.sort(true)?),
            "THREAD" => CommandBody::Thread(self.thread(true)?),
            "EXPUNGE" => {
                self.sp()?;
                CommandBody::UidExpunge(self.sequence_set()?)
            }
            _ => return Err(ParseErrorKind::UnknownCommand),
        })
    }

    /// `AUTHENTICATE mech [SP (base64 / "=")]`.
    fn authenticate(&mut self) -> R<CommandBody> {
        self.sp()?;
        let mechanism = upper(self.atom("mechanism")?);
        let initial_response = if self.eat(b' ') {
            let raw = self.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            if raw.is_empty() {
                return bad("Expected initial response");
            }
            if raw == b"=" {
                Some(Secret(Vec::new()))
            } else {
                Some(Secret(BASE64.decode(raw).or_else(|_| bad("Invalid base64"))?))
            }
        } else {
            None
        };
        Ok(CommandBody::Authenticate { mechanism, initial_response })
    }

    /// `[SP "(" select-param *(SP select-param) ")"]`.
    fn select_params(&mut self) -> R<SelectParams> {
        let mut params = SelectParams::default();
        if !self.eat(b' ') {
            return Ok(params);
        }
        self.paren_list(1, |p| {
            let w = upper(p.word());
            match w.as_str() {
                "CONDSTORE" => params.condstore = true,
                "QRESYNC" => {
                    p.sp()?;
                    p.expect(b'(', "(")?;
                    let uidvalidity = p.nz_number()?;
                    p.sp()?;
                    let modseq = p.modseq(false)?;
                    let mut q = QResync { uidvalidity, modseq, known_uids: None, seq_match: None };
                    if p.eat(b' ') {
                        if p.peek() != Some(b'(') {
                            q.known_uids = Some(p.sequence_set()?);
                            if p.eat(b' ') {
                                q.seq_match = Some(p.seq_match()?);
                            }
                        } else {
                            q.seq_match = Some(p.seq_match()?);
                        }
                    }
                    p.expect(b')', ")")?;
                    params.qresync = Some(q);
                }
                _ => return bad(format!("Unknown SELECT parameter {w}")),
            }
            Ok(())
        })?;
        Ok(params)
    }

    fn seq_match(&mut self) -> R<(SequenceSet, SequenceSet)> {
        self.expect(b'(', "(")?;
        let seqs = self.sequence_set()?;
        self.sp()?;
        let uids = self.sequence_set()?;
        self.expect(b')', ")")?;
        Ok((seqs, uids))
    }

    /// `CREATE mailbox [SP "(" "USE" SP "(" [use-attr *(SP use-attr)] ")" ")"]`.
    fn create(&mut self) -> R<CommandBody> {
        let mailbox = self.sp_mailbox()?;
        let (mut special_use, mut other_use) = (Vec::new(), Vec::new());
        if self.eat(b' ') {
            self.paren_list(1, |p| {
                let w = upper(p.word());
                if w != "USE" {
                    return bad(format!("Unknown CREATE parameter {w}"));
                }
                p.sp()?;
                for attr in p.paren_list(0, |p| {
                    let start = p.i;
                    p.expect(b'\\', "use attribute")?;
                    p.atom("use attribute")?;
                    Ok(String::from_utf8_lossy(&p.s[start..p.i]).into_owned())
                })? {
                    match SpecialUse::from_imap(&attr) {
                        Some(u) => special_use.push(u),
                        None => other_use.push(attr),
                    }
                }
                Ok(())
            })?;
        }
        Ok(CommandBody::Create { mailbox, special_use, other_use })
    }

    /// LIST in both forms (RFC 9051 §6.3.9 / RFC 5258).
    fn list(&mut self) -> R<ListCommand> {
        let mut cmd = ListCommand::default();
        self.sp()?;
        if self.peek() == Some(b'(') {
            cmd.extended = true;
            let s = &mut cmd.selection;
            self.paren_list(0, |p| {
                let w = upper(p.word());
                match w.as_str() {
                    "SUBSCRIBED" => s.subscribed = true,
                    "REMOTE" => s.remote = true,
                    "RECURSIVEMATCH" => s.recursive_match = true,
                    "SPECIAL-USE" => s.special_use = true,
                    _ => return bad(format!("Unknown LIST selection option {w}")),
                }
                Ok(())
            })?;
            // RFC 5258 §3: RECURSIVEMATCH needs a base option to modify.
            if s.recursive_match && !(s.subscribed || s.special_use) {
                return bad("RECURSIVEMATCH needs another selection option");
            }
            self.sp()?;
        }
        cmd.reference = self.mailbox()?;
        self.sp()?;
        if self.peek() == Some(b'(') {
            cmd.extended = true;
            cmd.patterns = self.paren_list(1, Self::list_mailbox)?;
        } else {
            cmd.patterns.push(self.list_mailbox()?);
        }
        if self.sp_keyword("RETURN") {
            cmd.extended = true;
            self.sp()?;
            let r = &mut cmd.returns;
            self.paren_list(0, |p| {
                let w = upper(p.word());
                match w.as_str() {
                    "SUBSCRIBED" => r.subscribed = true,
                    "CHILDREN" => r.children = true,
                    "SPECIAL-USE" => r.special_use = true,
                    "STATUS" => {
                        p.sp()?;
                        r.status = Some(p.paren_list(1, Self::status_item)?);
                    }
                    _ => return bad(format!("Unknown LIST return option {w}")),
                }
                Ok(())
            })?;
        }
        Ok(cmd)
    }

    fn status_item(&mut self) -> R<StatusItem> {
        let w = upper(self.word());
        Ok(match w.as_str() {
            "MESSAGES" => StatusItem::Messages,
            "UIDNEXT" => StatusItem::UidNext,
            "UIDVALIDITY" => StatusItem::UidValidity,
            "UNSEEN" => StatusItem::Unseen,
            "DELETED" => StatusItem::Deleted,
            "SIZE" => StatusItem::Size,
            "RECENT" => StatusItem::Recent,
            "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
            "APPENDLIMIT" => StatusItem::AppendLimit,
            _ => return bad(format!("Unknown STATUS item {w}")),
        })
    }

    /// `APPEND mailbox 1*([SP flag-list] [SP date-time] SP append-data)`.
    fn append(&mut self) -> R<CommandBody> {
        let mailbox = self.sp_mailbox()?;
        let mut messages = Vec::new();
        while !self.at_end() {
            self.sp()?;
            let mut flags = Vec::new();
            if self.peek() == Some(b'(') {
                flags = self.flag_list()?;
                self.sp()?;
            }
            let mut internal_date = None;
            if self.peek() == Some(b'"') {
                let text = self.quoted()?;
                internal_date = Some(parse_date_time(&text).map_or_else(|| bad("Invalid date-time"), Ok)?);
                self.sp()?;
            }
            let utf8 = matches!(self.peek(), Some(b'U' | b'u'));
            if utf8 {
                if !self.word().eq_ignore_ascii_case(b"UTF8") {
                    return bad("Expected message literal");
                }
                self.sp()?;
                self.expect(b'(', "(")?;
                if self.peek() != Some(b'~') {
                    return bad("UTF8 needs a literal8");
                }
            }
            let (data, binary) = self.literal(true, true)?;
            if utf8 {
                self.expect(b')', ")")?;
            }
            messages.push(AppendMessage { flags, internal_date, data, binary, utf8 });
        }
        if messages.is_empty() {
            return bad("APPEND needs a message");
        }
        Ok(CommandBody::Append { mailbox, messages })
    }

    fn copy_move(&mut self, uid: bool, name: &str) -> R<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        let mailbox = self.sp_mailbox()?;
        Ok(if name == "COPY" { CommandBody::Copy { uid, set, mailbox } } else { CommandBody::Move { uid, set, mailbox } })
    }

    /// `[SP "RETURN" SP "(" [opt *(SP opt)] ")"]`.
    fn search_return(&mut self) -> R<Option<SearchReturn>> {
        if !self.sp_keyword("RETURN") {
            return Ok(None);
        }
        self.sp()?;
        let mut r = SearchReturn::default();
        self.paren_list(0, |p| {
            let w = upper(p.word());
            match w.as_str() {
                "MIN" => r.min = true,
                "MAX" => r.max = true,
                "ALL" => r.all = true,
                "COUNT" => r.count = true,
                "SAVE" => r.save = true,
                _ => return bad(format!("Unknown RETURN option {w}")),
            }
            Ok(())
        })?;
        Ok(Some(r))
    }

    fn search(&mut self, uid: bool) -> R<SearchCommand> {
        let ret = self.search_return()?;
        let charset = if self.sp_keyword("CHARSET") {
            self.sp()?;
            Some(self.charset()?)
        } else {
            None
        };
        Ok(SearchCommand { uid, ret, charset, key: self.search_program()? })
    }

    /// `1*(SP search-key)`: one key, or an `And` of several.
    fn search_program(&mut self) -> R<SearchKey> {
        let mut keys = Vec::new();
        while !self.at_end() {
            self.sp()?;
            keys.push(self.search_key()?);
        }
        match keys.len() {
            0 => bad("Missing search criteria"),
            1 => Ok(keys.pop().unwrap_or(SearchKey::All)),
            _ => Ok(SearchKey::And(keys)),
        }
    }

    fn search_key(&mut self) -> R<SearchKey> {
        self.enter()?;
        let k = self.search_key_inner();
        self.leave();
        k
    }

    fn search_key_inner(&mut self) -> R<SearchKey> {
        match self.peek() {
            Some(b'(') => {
                let mut keys = self.paren_list(1, Self::search_key)?;
                return Ok(if keys.len() == 1 { keys.pop().unwrap_or(SearchKey::All) } else { SearchKey::And(keys) });
            }
            Some(b'*' | b'$' | b'0'..=b'9') => return Ok(SearchKey::SequenceSet(self.sequence_set()?)),
            _ => {}
        }
        let w = upper(self.word());
        let text = |p: &mut Self| -> R<String> {
            p.sp()?;
            p.astring_utf8("Search string")
        };
        let date = |p: &mut Self| -> R<SearchDate> {
            p.sp()?;
            p.date()
        };
        let keyword = |p: &mut Self| -> R<String> {
            p.sp()?;
            let a = p.atom("keyword")?;
            Ok(String::from_utf8_lossy(a).into_owned())
        };
        Ok(match w.as_str() {
            "ALL" => SearchKey::All,
            "ANSWERED" => SearchKey::Answered,
            "BCC" => SearchKey::Bcc(text(self)?),
            "BEFORE" => SearchKey::Before(date(self)?),
            "BODY" => SearchKey::Body(text(self)?),
            "CC" => SearchKey::Cc(text(self)?),
            "DELETED" => SearchKey::Deleted,
            "DRAFT" => SearchKey::Draft,
            "FLAGGED" => SearchKey::Flagged,
            "FROM" => SearchKey::From(text(self)?),
            "HEADER" => {
                let name = text(self)?;
                SearchKey::Header(name, text(self)?)
            }
            "KEYWORD" => SearchKey::Keyword(keyword(self)?),
            "LARGER" => {
                self.sp()?;
                SearchKey::Larger(self.number64()?)
            }
            "NEW" => SearchKey::New,
            "NOT" => {
                self.sp()?;
                SearchKey::Not(Box::new(self.search_key()?))
            }
            "OLD" => SearchKey::Old,
            "ON" => SearchKey::On(date(self)?),
            "OR" => {
                self.sp()?;
                let a = self.search_key()?;
                self.sp()?;
                SearchKey::Or(Box::new(a), Box::new(self.search_key()?))
            }
            "RECENT" => SearchKey::Recent,
            "SEEN" => SearchKey::Seen,
            "SENTBEFORE" => SearchKey::SentBefore(date(self)?),
            "SENTON" => SearchKey::SentOn(date(self)?),
            "SENTSINCE" => SearchKey::SentSince(date(self)?),
            "SINCE" => SearchKey::Since(date(self)?),
            "SMALLER" => {
                self.sp()?;
                SearchKey::Smaller(self.number64()?)
            }
            "SUBJECT" => SearchKey::Subject(text(self)?),
            "TEXT" => SearchKey::Text(text(self)?),
            "TO" => SearchKey::To(text(self)?),
            "UID" => {
                self.sp()?;
                SearchKey::Uid(self.sequence_set()?)
            }
            "UNANSWERED" => SearchKey::Unanswered,
            "UNDELETED" => SearchKey::Undeleted,
            "UNDRAFT" => SearchKey::Undraft,
            "UNFLAGGED" => SearchKey::Unflagged,
            "UNKEYWORD" => SearchKey::Unkeyword(keyword(self)?),
            "UNSEEN" => SearchKey::Unseen,
            "MODSEQ" => {
                self.sp()?;
                let mut entry = None;
                if self.peek() == Some(b'"') {
                    let name = utf8(self.quoted()?, "Entry name")?;
                    let Some(flag) = name.strip_prefix("/flags/") else {
                        return bad("Invalid MODSEQ entry name");
                    };
                    let flag = flag.to_owned();
                    self.sp()?;
                    let t = upper(self.word());
                    let t = match t.as_str() {
                        "PRIV" => EntryType::Private,
                        "SHARED" => EntryType::Shared,
                        "ALL" => EntryType::All,
                        _ => return bad("Invalid MODSEQ entry type"),
                    };
                    entry = Some((flag, t));
                    self.sp()?;
                }
                SearchKey::ModSeq { entry, modseq: self.modseq(true)? }
            }
            "YOUNGER" => {
                self.sp()?;
                SearchKey::Younger(self.nz_number()?)
            }
            "OLDER" => {
                self.sp()?;
                SearchKey::Older(self.nz_number()?)
            }
            "SAVEDBEFORE" => SearchKey::SavedBefore(date(self)?),
            "SAVEDON" => SearchKey::SavedOn(date(self)?),
            "SAVEDSINCE" => SearchKey::SavedSince(date(self)?),
            "SAVEDATESUPPORTED" => SearchKey::SaveDateSupported,
            "" => return bad("Expected search key"),
            _ => return bad(format!("Unknown search key {w}")),
        })
    }

    /// `[UID] FETCH set (items | macro) [SP "(" modifiers ")"]`.
    fn fetch(&mut self, uid: bool) -> R<FetchCommand> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let attrs = if self.peek() == Some(b'(') {
            self.paren_list(1, Self::fetch_att)?
        } else {
            let save = self.i;
            match upper(self.word()).as_str() {
                "ALL" => vec![FetchAttr::Flags, FetchAttr::InternalDate, FetchAttr::Rfc822Size, FetchAttr::Envelope],
                "FAST" => vec![FetchAttr::Flags, FetchAttr::InternalDate, FetchAttr::Rfc822Size],
                "FULL" => vec![FetchAttr::Flags, FetchAttr::InternalDate, FetchAttr::Rfc822Size, FetchAttr::Envelope, FetchAttr::Body],
                _ => {
                    self.i = save;
                    vec![self.fetch_att()?]
                }
            }
        };
        let mut cmd = FetchCommand { uid, set, attrs, changed_since: None, vanished: false };
        if self.eat(b' ') {
            self.paren_list(1, |p| {
                let w = upper(p.word());
                match w.as_str() {
                    "CHANGEDSINCE" => {
                        p.sp()?;
                        cmd.changed_since = Some(p.modseq(false)?);
                    }
                    "VANISHED" => cmd.vanished = true,
                    _ => return bad(format!("Unknown FETCH modifier {w}")),
                }
                Ok(())
            })?;
            // RFC 7162 §3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
            if cmd.vanished && !(uid && cmd.changed_since.is_some()) {
                return bad("VANISHED needs UID FETCH with CHANGEDSINCE");
            }
        }
        Ok(cmd)
    }

    fn fetch_att(&mut self) -> R<FetchAttr> {
        let w = upper(self.word());
        Ok(match w.as_str() {
            "ENVELOPE" => FetchAttr::Envelope,
            "FLAGS" => FetchAttr::Flags,
            "INTERNALDATE" => FetchAttr::InternalDate,
            "RFC822" => FetchAttr::Rfc822,
            "RFC822.HEADER" => FetchAttr::Rfc822Header,
            "RFC822.TEXT" => FetchAttr::Rfc822Text,
            "RFC822.SIZE" => FetchAttr::Rfc822Size,
            "BODYSTRUCTURE" => FetchAttr::BodyStructure,
            "UID" => FetchAttr::Uid,
            "MODSEQ" => FetchAttr::ModSeq,
            "SAVEDATE" => FetchAttr::SaveDate,
            "BODY" if self.peek() != Some(b'[') => FetchAttr::Body,
            "BODY" | "BODY.PEEK" => {
                let section = self.section()?;
                FetchAttr::BodySection { peek: w == "BODY.PEEK", section, partial: self.partial()? }
            }
            "BINARY" | "BINARY.PEEK" => {
                let part = self.section_binary()?;
                FetchAttr::Binary { peek: w == "BINARY.PEEK", part, partial: self.partial()? }
            }
            "BINARY.SIZE" => FetchAttr::BinarySize { part: self.section_binary()? },
            "PREVIEW" => {
                // `PREVIEW (LAZY)`; a `(` not followed by a modifier is the
                // FETCH modifier list of a single-item FETCH.
                let rest = &self.s[self.i..];
                let lazy = rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b" (LAZY)");
                if lazy {
                    self.i += 7;
                }
                FetchAttr::Preview { lazy }
            }
            "" => return bad("Expected FETCH item"),
            _ => return bad(format!("Unknown FETCH item {w}")),
        })
    }

    /// `"[" [section-spec] "]"`.
    fn section(&mut self) -> R<Section> {
        self.expect(b'[', "[")?;
        let spec = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.');
        let mut comps = spec.split(|&b| b == b'.').peekable();
        let mut part = Vec::new();
        if !spec.is_empty() {
            while let Some(c) = comps.peek() {
                if c.is_empty() || !c.iter().all(u8::is_ascii_digit) {
                    break;
                }
                part.push(section_number(c)?);
                comps.next();
            }
        }
        let rest: Vec<&[u8]> = if spec.is_empty() { Vec::new() } else { comps.collect() };
        let text = upper(&rest.join(&b'.'));
        let kind = match text.as_str() {
            "" if rest.is_empty() => SectionKind::Full,
            "HEADER" => SectionKind::Header,
            "TEXT" => SectionKind::Text,
            "MIME" if !part.is_empty() => SectionKind::Mime,
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                self.sp()?;
                let names = self.paren_list(1, |p| p.astring_utf8("Header field name"))?;
                if text == "HEADER.FIELDS" {
                    SectionKind::HeaderFields(names)
                } else {
                    SectionKind::HeaderFieldsNot(names)
                }
            }
            _ => return bad("Invalid section"),
        };
        self.expect(b']', "]")?;
        Ok(Section { part, kind })
    }

    /// `"[" [section-part] "]"` of BINARY.
    fn section_binary(&mut self) -> R<Vec<u32>> {
        self.expect(b'[', "[")?;
        let spec = self.take_while(|b| b.is_ascii_digit() || b == b'.');
        let part = if spec.is_empty() { Vec::new() } else { spec.split(|&b| b == b'.').map(section_number).collect::<R<Vec<u32>>>()? };
        self.expect(b']', "]")?;
        Ok(part)
    }

    /// `["<" number "." nz-number ">"]`.
    fn partial(&mut self) -> R<Option<Partial>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let offset = self.number()?;
        self.expect(b'.', ".")?;
        let length = self.nz_number()?;
        self.expect(b'>', ">")?;
        Ok(Some(Partial { offset, length }))
    }

    /// `[UID] STORE set [SP "(" UNCHANGEDSINCE n ")"] SP (+|-)FLAGS[.SILENT] SP flags`.
    fn store(&mut self, uid: bool) -> R<StoreCommand> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.peek() == Some(b'(') {
            self.paren_list(1, |p| {
                let w = upper(p.word());
                if w != "UNCHANGEDSINCE" {
                    return bad(format!("Unknown STORE modifier {w}"));
                }
                p.sp()?;
                unchanged_since = Some(p.modseq(true)?);
                Ok(())
            })?;
            self.sp()?;
        }
        let op = if self.eat(b'+') {
            FlagOp::Add
        } else if self.eat(b'-') {
            FlagOp::Remove
        } else {
            FlagOp::Replace
        };
        let silent = match upper(self.word()).as_str() {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return bad("Expected FLAGS or FLAGS.SILENT"),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut flags = Vec::new();
            loop {
                flags.extend(self.flag()?);
                if !self.eat(b' ') {
                    break;
                }
            }
            flags
        };
        Ok(StoreCommand { uid, set, unchanged_since, op, silent, flags })
    }

    /// `[UID] SORT [RETURN (...)] (criteria) charset keys`.
    fn sort(&mut self, uid: bool) -> R<SortCommand> {
        let ret = self.search_return()?;
        self.sp()?;
        let criteria = self.paren_list(1, |p| {
            let mut w = upper(p.word());
            let reverse = w == "REVERSE";
            if reverse {
                p.sp()?;
                w = upper(p.word());
            }
            let key = match w.as_str() {
                "ARRIVAL" => SortKey::Arrival,
                "CC" => SortKey::Cc,
                "DATE" => SortKey::Date,
                "FROM" => SortKey::From,
                "SIZE" => SortKey::Size,
                "SUBJECT" => SortKey::Subject,
                "TO" => SortKey::To,
                "DISPLAYFROM" => SortKey::DisplayFrom,
                "DISPLAYTO" => SortKey::DisplayTo,
                _ => return bad(format!("Unknown sort key {w}")),
            };
            Ok(SortCriterion { reverse, key })
        })?;
        self.sp()?;
        let charset = self.charset()?;
        Ok(SortCommand { uid, ret, criteria, charset, key: self.search_program()? })
    }

    /// `[UID] THREAD algorithm charset keys`.
    fn thread(&mut self, uid: bool) -> R<ThreadCommand> {
        self.sp()?;
        let w = upper(self.word());
        let algorithm = match w.as_str() {
            "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
            "REFERENCES" => ThreadAlgorithm::References,
            _ => return bad(format!("Unknown threading algorithm {w}")),
        };
        self.sp()?;
        let charset = self.charset()?;
        Ok(ThreadCommand { uid, algorithm, charset, key: self.search_program()? })
    }

    /// `ID SP ("(" string SP nstring *(SP string SP nstring) ")" / NIL)`.
    fn id(&mut self) -> R<CommandBody> {
        self.sp()?;
        if self.peek() != Some(b'(') {
            return if self.word().eq_ignore_ascii_case(b"NIL") { Ok(CommandBody::Id(None)) } else { bad("Expected ID list or NIL") };
        }
        let pairs = self.paren_list(0, |p| {
            let k = p.string()?;
            p.sp()?;
            let v = p.nstring()?;
            if k.len() > ID_FIELD_BYTES_MAX || v.as_ref().is_some_and(|v| v.len() > ID_VALUE_BYTES_MAX) {
                return bad("ID field too long");
            }
            Ok((String::from_utf8_lossy(&k).into_owned(), v.map(|v| String::from_utf8_lossy(&v).into_owned())))
        })?;
        if pairs.len() > ID_FIELDS_MAX {
            return bad("Too many ID fields");
        }
        Ok(CommandBody::Id(Some(pairs)))
    }
}

/// A section part number: non-zero, no leading zero.
fn section_number(c: &[u8]) -> R<u32> {
    if c.is_empty() || c[0] == b'0' || c.len() > 10 {
        return bad("Invalid section part");
    }
    std::str::from_utf8(c).ok().and_then(|s| s.parse().ok()).map_or_else(|| bad("Invalid section part"), Ok)
}
