//! The IMAP command AST: what [`parse_command`](super::parse_command)
//! produces from one [`Frame::Command`](super::Frame::Command).
//!
//! Values are owned and already decoded (quoted strings unescaped,
//! literals extracted, base64 decoded, dates converted); only APPEND
//! message octets stay in the frame and are referenced by range, so a large
//! message is never copied. Keywords are matched case-insensitively by the
//! parser; the spelling the client used is kept where it matters (flags,
//! header names).

use std::fmt;
use std::ops::Range;

use varan_core::mailstore::{Flag, FlagOp, ModSeq, SpecialUse};

use super::date::SearchDate;
use super::sequence::SequenceSet;
use crate::mime::Section;

/// A mailbox name as the client sent it (the decoded astring octets:
/// modified UTF-7 for IMAP4rev1 clients, UTF-8 once UTF8=ACCEPT is
/// enabled). The session converts it with [`super::mutf7::decode`] or
/// checks it is UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct MailboxName(pub Vec<u8>);

impl MailboxName {
    /// `INBOX` in any case (RFC 9051 §5.1: the name is case-insensitive).
    pub fn is_inbox(&self) -> bool {
        self.0.eq_ignore_ascii_case(b"INBOX")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxName({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// A credential that `Debug` never prints (STYLE.md: no AUTH data in logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(pub T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    pub body: CommandBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    /// `AUTHENTICATE mech [initial-response]` (RFC 4959 SASL-IR): the
    /// response base64-decoded; `=` gives an empty one. Mechanism names are
    /// upper-cased.
    Authenticate {
        mechanism: String,
        initial_response: Option<Secret<Vec<u8>>>,
    },
    /// `LOGIN user password`; both must be UTF-8.
    Login {
        username: String,
        password: Secret<String>,
    },
    /// `ENABLE cap...` (RFC 5161), upper-cased.
    Enable(Vec<String>),
    Select {
        mailbox: MailboxName,
        params: SelectParams,
    },
    Examine {
        mailbox: MailboxName,
        params: SelectParams,
    },
    /// `CREATE name [(USE (attrs))]` (RFC 6154 §5.2).
    Create {
        mailbox: MailboxName,
        special_use: Vec<SpecialUse>,
        other_use: Vec<String>,
    },
    Delete(MailboxName),
    Rename {
        from: MailboxName,
        to: MailboxName,
    },
    Subscribe(MailboxName),
    Unsubscribe(MailboxName),
    List(ListCommand),
    /// `LSUB reference pattern` (IMAP4rev1 only).
    Lsub {
        reference: MailboxName,
        pattern: Vec<u8>,
    },
    Namespace,
    Status {
        mailbox: MailboxName,
        items: Vec<StatusItem>,
    },
    /// `APPEND mailbox message...`: several with MULTIAPPEND (RFC 3502).
    Append {
        mailbox: MailboxName,
        messages: Vec<AppendMessage>,
    },
    Idle,
    Check,
    Close,
    Unselect,
    Expunge,
    /// `UID EXPUNGE set` (RFC 4315).
    UidExpunge(SequenceSet),
    Search(SearchCommand),
    Fetch(FetchCommand),
    Store(StoreCommand),
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: MailboxName,
    },
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: MailboxName,
    },
    Sort(SortCommand),
    Thread(ThreadCommand),
    /// `ID NIL` (`None`) or `ID (k v ...)` (RFC 2971); field names as given.
    Id(Option<Vec<(String, Option<String>)>>),
    /// RFC 9208.
    GetQuota(Vec<u8>),
    GetQuotaRoot(MailboxName),
    /// `SETQUOTA root (RESOURCE limit ...)`: parsed so the session can
    /// refuse it properly. Resource names upper-cased.
    SetQuota {
        root: Vec<u8>,
        limits: Vec<(String, u64)>,
    },
    /// `COMPRESS mechanism` (RFC 4978), upper-cased.
    Compress(String),
}

impl CommandBody {
    /// The command name as the client's IMAP spelling, for logs and
    /// responses ("UID FETCH completed").
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Enable(_) => "ENABLE",
            CommandBody::Select { .. } => "SELECT",
            CommandBody::Examine { .. } => "EXAMINE",
            CommandBody::Create { .. } => "CREATE",
            CommandBody::Delete(_) => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe(_) => "SUBSCRIBE",
            CommandBody::Unsubscribe(_) => "UNSUBSCRIBE",
            CommandBody::List(_) => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Idle => "IDLE",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge(_) => "UID EXPUNGE",
            CommandBody::Search(c) if c.uid => "UID SEARCH",
            CommandBody::Search(_) => "SEARCH",
            CommandBody::Fetch(c) if c.uid => "UID FETCH",
            CommandBody::Fetch(_) => "FETCH",
            CommandBody::Store(c) if c.uid => "UID STORE",
            CommandBody::Store(_) => "STORE",
            CommandBody::Copy { uid: true, .. } => "UID COPY",
            CommandBody::Copy { .. } => "COPY",
            CommandBody::Move { uid: true, .. } => "UID MOVE",
            CommandBody::Move { .. } => "MOVE",
            CommandBody::Sort(c) if c.uid => "UID SORT",
            CommandBody::Sort(_) => "SORT",
            CommandBody::Thread(c) if c.uid => "UID THREAD",
            CommandBody::Thread(_) => "THREAD",
            CommandBody::Id(_) => "ID",
            CommandBody::GetQuota(_) => "GETQUOTA",
            CommandBody::GetQuotaRoot(_) => "GETQUOTAROOT",
            CommandBody::SetQuota { .. } => "SETQUOTA",
            CommandBody::Compress(_) => "COMPRESS",
        }
    }
}

/// SELECT/EXAMINE parameters (RFC 7162 §3.1.8, §3.2.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectParams {
    /// `(CONDSTORE)`.
    pub condstore: bool,
    pub qresync: Option<QResync>,
}

/// `QRESYNC (uidvalidity modseq [known-uids [(seq-match)]])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QResync {
    pub uidvalidity: u32,
    pub modseq: ModSeq,
    pub known_uids: Option<SequenceSet>,
    /// `(known-sequence-set known-uid-set)`.
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

/// LIST, basic or extended (RFC 5258, RFC 6154, RFC 5819).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListCommand {
    pub reference: MailboxName,
    /// One or more `list-mailbox` patterns (`%` and `*` wildcards), as given.
    pub patterns: Vec<Vec<u8>>,
    pub selection: ListSelection,
    pub returns: ListReturn,
    /// Selection options, several patterns or RETURN were used: answer in
    /// the RFC 5258 form (e.g. `\NonExistent` instead of `\Noselect`).
    pub extended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListSelection {
    pub subscribed: bool,
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// `RETURN (STATUS (items))` (RFC 5819).
    pub status: Option<Vec<StatusItem>>,
}

/// STATUS data items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusItem {
    Messages,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    /// RFC 8438.
    Size,
    /// IMAP4rev1.
    Recent,
    /// RFC 7162.
    HighestModSeq,
    /// RFC 7889.
    AppendLimit,
}

impl StatusItem {
    pub fn as_imap(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::Deleted => "DELETED",
            StatusItem::Size => "SIZE",
            StatusItem::Recent => "RECENT",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::AppendLimit => "APPENDLIMIT",
        }
    }
}

/// One message of an APPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    /// `\Recent` is dropped (RFC 3501 §2.3.2: clients cannot set it;
    /// clients copying FETCH FLAGS verbatim send it anyway).
    pub flags: Vec<Flag>,
    /// The date-time in Unix seconds (UTC).
    pub internal_date: Option<i64>,
    /// Where the message octets are in the frame given to `parse_command`:
    /// `&frame[data.clone()]`. Not copied, as messages may be large.
    pub data: Range<usize>,
    /// Sent as a literal8 `~{n}` (RFC 3516): may contain NUL and needs no
    /// content-transfer-encoding.
    pub binary: bool,
    /// Sent as `UTF8 (~{n})` (RFC 6855 §4): headers may be UTF-8.
    pub utf8: bool,
}

impl AppendMessage {
    pub fn data<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(self.data.clone()).unwrap_or_default()
    }
}

/// `RETURN (...)` options of SEARCH (RFC 4731 ESEARCH, RFC 5182 SEARCHRES)
/// and SORT (RFC 5267 ESORT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    pub save: bool,
}

impl SearchReturn {
    /// `RETURN ()` means `RETURN (ALL)` (RFC 4731 §3.1).
    pub fn is_empty(&self) -> bool {
        !(self.min || self.max || self.all || self.count || self.save)
    }
}

/// `[UID] SEARCH [RETURN (...)] [CHARSET x] keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCommand {
    pub uid: bool,
    /// `None`: no RETURN, answer with `* SEARCH`; `Some`: answer with
    /// `* ESEARCH` (an empty option set means ALL).
    pub ret: Option<SearchReturn>,
    /// `CHARSET` as given (only UTF-8 and US-ASCII pass the parser).
    pub charset: Option<String>,
    /// Several top-level keys are an [`SearchKey::And`].
    pub key: SearchKey,
}

/// A search key (RFC 9051 §6.4.4 and extensions). Strings are UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Answered,
    Bcc(String),
    Before(SearchDate),
    Body(String),
    Cc(String),
    Deleted,
    Draft,
    Flagged,
    From(String),
    /// Field name, value (an empty value matches any message with the field).
    Header(String, String),
    Keyword(String),
    Larger(u64),
    /// IMAP4rev1: `\Recent` and not `\Seen`.
    New,
    Not(Box<SearchKey>),
    /// IMAP4rev1: not `\Recent`.
    Old,
    On(SearchDate),
    Or(Box<SearchKey>, Box<SearchKey>),
    /// IMAP4rev1 `\Recent`.
    Recent,
    Seen,
    SentBefore(SearchDate),
    SentOn(SearchDate),
    SentSince(SearchDate),
    Since(SearchDate),
    Smaller(u64),
    Subject(String),
    Text(String),
    To(String),
    Uid(SequenceSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(String),
    Unseen,
    /// A bare sequence set (message sequence numbers).
    SequenceSet(SequenceSet),
    /// A parenthesised list, or several keys in a row: all must match.
    And(Vec<SearchKey>),
    /// RFC 7162 `MODSEQ ["/flags/<flag>" priv|shared|all] n`: the entry is
    /// parsed but, as Varan has no per-flag modseqs, usually ignored.
    ModSeq {
        entry: Option<(String, EntryType)>,
        modseq: ModSeq,
    },
    /// RFC 5032: INTERNALDATE within the last n seconds.
    Younger(u32),
    /// RFC 5032: INTERNALDATE more than n seconds ago.
    Older(u32),
    /// RFC 8514 SAVEDATE keys.
    SavedBefore(SearchDate),
    SavedOn(SearchDate),
    SavedSince(SearchDate),
    SaveDateSupported,
}

/// RFC 7162 `entry-type-req`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Private,
    Shared,
    All,
}

/// `[UID] FETCH set items [(CHANGEDSINCE n [VANISHED])]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchCommand {
    pub uid: bool,
    pub set: SequenceSet,
    /// Macros (ALL, FAST, FULL) expanded; in the order given, duplicates kept.
    pub attrs: Vec<FetchAttr>,
    /// RFC 7162 §3.1.4.
    pub changed_since: Option<ModSeq>,
    /// RFC 7162 §3.2.6 (UID FETCH with CHANGEDSINCE only; checked).
    pub vanished: bool,
}

/// A FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttr {
    Envelope,
    Flags,
    InternalDate,
    /// `RFC822` (= `BODY[]`, sets `\Seen`).
    Rfc822,
    /// `RFC822.HEADER` (= `BODY.PEEK[HEADER]`).
    Rfc822Header,
    /// `RFC822.TEXT` (= `BODY[TEXT]`, sets `\Seen`).
    Rfc822Text,
    Rfc822Size,
    /// `BODY` without a section: the non-extensible BODYSTRUCTURE.
    Body,
    BodyStructure,
    Uid,
    /// RFC 7162.
    ModSeq,
    /// `BODY[section]<partial>` or `BODY.PEEK[...]`.
    BodySection {
        peek: bool,
        section: Section,
        partial: Option<Partial>,
    },
    /// `BINARY[part]<partial>` / `BINARY.PEEK` (RFC 3516).
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<Partial>,
    },
    /// `BINARY.SIZE[part]`.
    BinarySize {
        part: Vec<u32>,
    },
    /// RFC 8970 `PREVIEW` / `PREVIEW (LAZY)`.
    Preview {
        lazy: bool,
    },
    /// RFC 8514.
    SaveDate,
}

/// `<offset.length>`; the length is non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    pub offset: u32,
    pub length: u32,
}

/// `[UID] STORE set [(UNCHANGEDSINCE n)] (+|-)FLAGS[.SILENT] flags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCommand {
    pub uid: bool,
    pub set: SequenceSet,
    /// RFC 7162 §3.1.3.
    pub unchanged_since: Option<ModSeq>,
    pub op: FlagOp,
    pub silent: bool,
    /// `\Recent` is dropped (see [`AppendMessage::flags`]).
    pub flags: Vec<Flag>,
}

/// A SORT criterion (RFC 5256, RFC 5957).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortCriterion {
    pub reverse: bool,
    pub key: SortKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

/// `[UID] SORT [RETURN (...)] (criteria) charset keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortCommand {
    pub uid: bool,
    /// RFC 5267 ESORT.
    pub ret: Option<SearchReturn>,
    pub criteria: Vec<SortCriterion>,
    pub charset: String,
    pub key: SearchKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

/// `[UID] THREAD algorithm charset keys` (RFC 5256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCommand {
    pub uid: bool,
    pub algorithm: ThreadAlgorithm,
    pub charset: String,
    pub key: SearchKey,
}
