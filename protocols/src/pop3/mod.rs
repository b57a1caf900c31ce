//! POP3 server side (RFC 1939) as a sans-IO [`Session`], with CAPA and
//! response codes (RFC 2449: TOP, USER, UIDL, RESP-CODES, AUTH-RESP-CODE,
//! PIPELINING, SASL, IMPLEMENTATION), AUTH PLAIN (RFC 5034, RFC 4616) and
//! STLS (RFC 2595).
//!
//! # Driving a session
//!
//! Like the SMTP session: the driver owns the socket, TLS, the clock and
//! the mail store.
//!
//! 1. Call [`Session::receive`] with all unconsumed input; drop the
//!    consumed prefix, keep the rest.
//! 2. Write out [`Session::take_output`].
//! 3. Handle [`Session::poll_action`]:
//!    - `Authenticate`: check the credentials, answer `auth_checked`.
//!    - `OpenMaildrop`: lock and list the user's INBOX, answer
//!      `maildrop_opened` (messages in order; message numbers are their
//!      1-based positions) or `maildrop_failed`.
//!    - `Retrieve`: read the message (CRLF line endings), answer `message`
//!      with its octets or `message_failed`; the session cuts TOP itself.
//!    - `Commit`: at QUIT in the TRANSACTION state (the UPDATE state, RFC
//!      1939 §6), expunge `deleted_uids` (possibly none), release the lock,
//!      answer `committed`.
//!    - `StartTls`: flush the output, hand every byte already read to
//!      `receive` (it discards them: RFC 2595 §4 / RFC 3207 §4.2 reasoning
//!      against injected plaintext), handshake, then `tls_started` or
//!      `tls_failed`.
//!    - `Close`: flush and close. A connection closed any other way (EOF,
//!      timeout, shutdown) never commits deletions (RFC 1939 §6).
//! 4. While unconsumed input remains and no action is outstanding, go to 1
//!    (the session stops early with more than [`OUTPUT_BYTES_MAX`] octets
//!    queued, so output is flushed between pipelined commands).
//! 5. Arm [`Session::timeout`]; on expiry call [`Session::timed_out`].
//!
//! PIPELINING (RFC 2449 §6.6) needs nothing more: responses are queued in
//! command order.

mod session;

use std::fmt;
use std::time::Duration;

pub use session::Session;

/// Longest command line accepted, CRLF included. RFC 2449 §4 limits
/// clients to 255 octets; we take up to 512 so that `PASS` with a
/// 255-octet password (the RFC 4616 field limit) still fits.
pub const COMMAND_LINE_BYTES_MAX: usize = 512;
/// Longest SASL response line (after `+ `), CRLF included: an AUTH PLAIN
/// message of three 255-octet fields is 1024 octets of base64.
pub const SASL_LINE_BYTES_MAX: usize = 2048;
/// Longest authzid, authcid or password (RFC 4616 §2: 255 octets), also
/// for USER and PASS.
pub const CREDENTIAL_BYTES_MAX: usize = 255;
/// Output octets queued before `receive` stops and waits for a flush
/// (a LIST or UIDL of a big maildrop, or a pipelined burst).
pub const OUTPUT_BYTES_MAX: usize = 64 << 10;
/// Shortest autologout timer RFC 1939 §3 allows.
pub const TIMEOUT_MIN: Duration = Duration::from_secs(600);

/// Per-listener settings shared by its sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Name in the greeting.
    pub hostname: String,
    /// A certificate is loaded: offer STLS (on a cleartext connection).
    pub tls_available: bool,
    /// Allow USER/PASS and AUTH on a cleartext connection.
    pub auth_without_tls: bool,
    /// Protocol errors (unknown commands, bad syntax, wrong state) before
    /// the session is closed.
    pub errors_max: u32,
    /// Failed authentications before the session is closed.
    pub auth_failures_max: u32,
    /// Autologout timer; the session uses at least [`TIMEOUT_MIN`].
    pub command_timeout: Duration,
}

/// One message of the maildrop, as the driver lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pop3Message {
    pub uid: u32,
    /// Octets with CRLF line endings (RFC 1939 §11: the size as sent).
    pub size: u64,
}

/// What the session needs the driver to do; at most one is outstanding and
/// `receive` processes no input until it is answered.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// Check credentials (USER/PASS gives an empty `authzid`); answer with
    /// `auth_checked`.
    Authenticate { authzid: String, authcid: String, password: String },
    /// Authentication succeeded: open (and lock) the maildrop of `user`
    /// (the authzid if one was given, else the authcid); answer with
    /// `maildrop_opened` or `maildrop_failed`.
    OpenMaildrop { user: String },
    /// Read message number `index` (1-based) with this UID; answer with
    /// `message` (the whole message: the session cuts TOP) or
    /// `message_failed`.
    Retrieve { index: u32, uid: u32, top_lines: Option<u32> },
    /// QUIT in TRANSACTION: remove these messages (ascending UIDs, maybe
    /// none), release the maildrop, answer with `committed`.
    Commit { deleted_uids: Vec<u32> },
    /// `+OK Begin TLS negotiation` is queued: flush it, then handshake.
    StartTls,
    /// Flush the output and close the connection.
    Close,
}

/// Never prints the password.
impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Authenticate { authzid, authcid, password: _ } => {
                f.debug_struct("Authenticate").field("authzid", authzid).field("authcid", authcid).field("password", &"<redacted>").finish()
            }
            Action::OpenMaildrop { user } => f.debug_struct("OpenMaildrop").field("user", user).finish(),
            Action::Retrieve { index, uid, top_lines } => f.debug_struct("Retrieve").field("index", index).field("uid", uid).field("top_lines", top_lines).finish(),
            Action::Commit { deleted_uids } => f.debug_struct("Commit").field("deleted_uids", deleted_uids).finish(),
            Action::StartTls => f.write_str("StartTls"),
            Action::Close => f.write_str("Close"),
        }
    }
}

/// The driver's answer to `Action::Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    Success,
    /// `-ERR [AUTH]`, counted towards `auth_failures_max`.
    Failure,
    /// `-ERR [SYS/TEMP]` (directory unreachable).
    TempFailure,
}

/// Why the maildrop could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaildropFailure {
    /// Another session holds the lock: `-ERR [IN-USE]` (RFC 2449 §8.1.1).
    InUse,
    /// `-ERR [SYS/TEMP]` (RFC 3206).
    Temporary,
    /// `-ERR [SYS/PERM]` (RFC 3206).
    Permanent,
}

/// The UIDL of a message: Dovecot's default `pop3_uidl_format`
/// `%08Xu%08Xv`, whose `X` modifier prints lower-case hex (`%llx`), so
/// mailboxes migrated from Dovecot keep their UIDLs and clients do not
/// download everything again.
pub fn uidl(uid: u32, uidvalidity: u32) -> String {
    format!("{uid:08x}{uidvalidity:08x}")
}
