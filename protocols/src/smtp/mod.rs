//! SMTP server side (RFC 5321) as a sans-IO [`Session`], with the ESMTP
//! extensions Varan offers: PIPELINING (RFC 2920), SIZE (RFC 1870),
//! 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES
//! (RFC 2034/3463), CHUNKING (RFC 3030), DSN (RFC 3461), STARTTLS
//! (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954, RFC 4616).
//!
//! # Driving a session
//!
//! The driver (in `varan-shards`, the transcript tests, the fuzzer) owns the
//! socket, the TLS layer, the clock and the spool. Its loop:
//!
//! 1. Read into a buffer of at least [`SessionConfig::command_line_max`]
//!    octets and call [`Session::receive`] with all unconsumed bytes; drop
//!    the consumed prefix, keep the rest.
//! 2. Write out [`Session::take_output`].
//! 3. Handle [`Session::poll_action`]: answer `CheckRecipient`,
//!    `Authenticate` and `MessageComplete` with the matching completion
//!    method; for `StartTls` flush the output, hand every byte already read
//!    to `receive` (it discards them, RFC 3207 §4.2) and handshake, then call
//!    `tls_started` or `tls_failed`; for `Close` flush and close.
//! 4. While unconsumed bytes remain and no action is outstanding, go to 1
//!    without reading (a session also stops early when more than
//!    [`OUTPUT_BYTES_MAX`] reply octets are queued, so output is flushed
//!    before more pipelined commands are processed).
//! 5. Arm [`Session::timeout`] for the next read; on expiry call
//!    [`Session::timed_out`].
//!
//! Replies are queued in command order, so PIPELINING (RFC 2920) needs no
//! extra care from the driver beyond flushing whenever `receive` stops.
//!
//! DATA refused for lack of recipients (554 5.5.1): a client that pipelined
//! the message content after DATA (RFC 2920 §3.1 allows DATA as the last
//! command of a group, never the content) will see that content parsed as
//! commands, each refused; that is the standard behaviour and the error
//! limit closes the session if the content is long.

pub mod client;
mod command;
mod data;
mod envelope;
mod path;
mod reply;
mod sasl;
mod session;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use varan_core::config::{BareNewlines, SmtpConfig};
use varan_core::EmailAddress;

pub use command::{xtext_decode, ENVID_BYTES_MAX, ORCPT_BYTES_MAX, PARAMETERS_MAX};
pub use envelope::{BodyType, DsnNotify, DsnRet, Envelope, Recipient};
pub use path::PATH_BYTES_MAX;
pub use reply::{Reply, REPLY_LINE_BYTES_MAX};
pub use sasl::{Mechanism, SASL_FIELD_BYTES_MAX};
pub use session::Session;

/// Reply octets a session queues before `receive` stops and waits for the
/// driver to flush. Bounds the memory a client can make us spend by
/// pipelining many cheap commands with large replies (EHLO is ~25×).
pub const OUTPUT_BYTES_MAX: usize = 64 << 10;
/// Shortest command line `from_config` allows (RFC 5321 §4.5.3.1.4: 512).
pub const COMMAND_LINE_BYTES_MIN: usize = 512;
/// Longest command line `from_config` allows; it is also the driver's
/// minimum read-buffer size, so this caps per-connection memory.
pub const COMMAND_LINE_BYTES_CAP: usize = 64 << 10;

/// Which listener accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25: mail exchange. AUTH optional.
    Mx,
    /// Port 587 (RFC 6409): STARTTLS, AUTH required before MAIL.
    Submission,
    /// Port 465 (RFC 8314 §3.3): implicit TLS, AUTH required before MAIL.
    Smtps,
}

/// Per-listener settings, built once and shared by all its sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Name in the banner, EHLO reply and 221/421 replies.
    pub hostname: String,
    pub kind: ListenerKind,
    /// A certificate is loaded: advertise STARTTLS (when not already TLS).
    pub tls_available: bool,
    /// Advertise and allow AUTH on a cleartext connection.
    pub auth_without_tls: bool,
    /// SIZE limit on the CRLF form of the message (RFC 1870).
    pub message_size_max: u64,
    /// Accepted recipients per transaction (RFC 5321 §4.5.3.1.8, ≥ 100).
    pub recipients_max: usize,
    /// Longest command or SASL line including CRLF (RFC 5321 §4.5.3.1.4).
    pub command_line_max: usize,
    /// Commands per session, then 421.
    pub commands_max: u32,
    /// Syntax and sequence errors per session, then 421.
    pub errors_max: u32,
    /// Failed AUTH attempts per session; the last one answers 421.
    pub auth_failures_max: u32,
    /// Wait for a command (RFC 5321 §4.5.3.2.7).
    pub command_timeout: Duration,
    /// Wait for more DATA/BDAT octets (RFC 5321 §4.5.3.2.5–6).
    pub data_timeout: Duration,
    pub bare_newlines: BareNewlines,
    /// MAIL waits for the driver's verdict (`Action::CheckSender`) before
    /// it answers: SPF, DNSBL and HELO checks refuse at MAIL FROM.
    pub check_sender: bool,
}

impl SessionConfig {
    /// Takes the `[smtp]` settings; `tls_available` says whether a
    /// certificate is loaded. The command-line limit is clamped to
    /// [`COMMAND_LINE_BYTES_MIN`]..=[`COMMAND_LINE_BYTES_CAP`].
    pub fn from_config(c: &SmtpConfig, hostname: &str, kind: ListenerKind, tls_available: bool) -> Self {
        let line_max = usize::try_from(c.command_line_max).unwrap_or(usize::MAX);
        Self {
            hostname: hostname.to_owned(),
            kind,
            tls_available,
            auth_without_tls: c.auth_without_tls,
            message_size_max: c.message_size_max,
            recipients_max: c.recipients_max,
            command_line_max: line_max.clamp(COMMAND_LINE_BYTES_MIN, COMMAND_LINE_BYTES_CAP),
            commands_max: c.commands_max,
            errors_max: c.errors_max,
            auth_failures_max: c.auth_failures_max,
            command_timeout: c.command_timeout,
            data_timeout: c.data_timeout,
            bare_newlines: c.bare_newlines,
            check_sender: false,
        }
    }

    /// Submission listeners require AUTH before MAIL (RFC 6409 §4.3).
    pub fn requires_auth(&self) -> bool {
        matches!(self.kind, ListenerKind::Submission | ListenerKind::Smtps)
    }
}

/// The two ends of the connection (for the driver's logs and policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// The negotiated TLS parameters, for Received headers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub protocol: String,
    pub cipher: String,
}

/// Why the sink could not take content.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool full")]
    Full,
}

/// Where message content goes as it is parsed: the driver's spool.
pub trait BodySink {
    /// A new message's content starts (after 354, or with the first BDAT).
    fn begin(&mut self);
    /// Content with LF line endings. An error is remembered; nothing more
    /// is written and the message is answered 451 4.3.0 at its end.
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError>;
}

/// An in-memory sink (tests, fuzzing): `begin` clears it.
impl BodySink for Vec<u8> {
    fn begin(&mut self) {
        self.clear();
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// What the session needs the driver to do. At most one is outstanding;
/// `receive` processes no further input until it is answered.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// Decide on the reverse path of MAIL (`None`: `<>`) when
    /// `SessionConfig::check_sender` is set; answer with `sender_checked`.
    CheckSender { sender: Option<EmailAddress> },
    /// Decide on a recipient; answer with `recipient_checked`. `index` is
    /// the position it will have in `Envelope::recipients` if accepted.
    CheckRecipient { address: EmailAddress, index: usize },
    /// Check credentials; answer with `auth_checked`.
    Authenticate { mechanism: Mechanism, authzid: String, authcid: String, password: String },
    /// "220 2.0.0 Ready to start TLS" is queued: flush it, then handshake.
    /// Input received until `tls_started` is discarded (RFC 3207 §4.2).
    StartTls,
    /// The content is complete in the sink and within limits; store it
    /// for `envelope()` and answer with `message_stored`.
    MessageComplete,
    /// Flush the output and close the connection.
    Close,
}

/// Never prints the password (STYLE.md: no AUTH data in logs).
impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CheckSender { sender } => f.debug_struct("CheckSender").field("sender", sender).finish(),
            Action::CheckRecipient { address, index } => f.debug_struct("CheckRecipient").field("address", address).field("index", index).finish(),
            Action::Authenticate { mechanism, authzid, authcid, password: _ } => {
                f.debug_struct("Authenticate").field("mechanism", mechanism).field("authzid", authzid).field("authcid", authcid).field("password", &"<redacted>").finish()
            }
            Action::StartTls => f.write_str("StartTls"),
            Action::MessageComplete => f.write_str("MessageComplete"),
            Action::Close => f.write_str("Close"),
        }
    }
}

/// The driver's answer to `CheckRecipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    Accept,
    /// Refuse with this 4xx/5xx reply (e.g. [`Reply::user_unknown`]).
    Reject(Reply),
}

/// The driver's answer to `Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    /// 235 2.7.0.
    Success,
    /// 535 5.7.8, counted towards `auth_failures_max`.
    Failure,
    /// 454 4.7.0 (directory unreachable).
    TempFailure,
}

/// The driver's answer to `MessageComplete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Durable: `250 2.0.0 Ok: queued as <queue_id>`.
    Accepted { queue_id: String },
    /// A 4xx reply (anything else becomes 451 4.3.0).
    TempFail(Reply),
    /// A 5xx reply (anything else becomes 451 4.3.0).
    PermFail(Reply),
}
