//! The SMTP envelope of the transaction in progress (RFC 5321 §3.3) with
//! the DSN (RFC 3461), BODY (RFC 6152), SIZE (RFC 1870) and SMTPUTF8
//! (RFC 6531) parameters it was given.

use varan_core::EmailAddress;

/// BODY parameter of MAIL (RFC 6152 §2). BINARYMIME (RFC 3030) is not
/// offered, so it is refused with 555.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// `BODY=7BIT`, or no BODY parameter (RFC 6152 §3: the default).
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// RET parameter of MAIL (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnRet {
    Full,
    Hdrs,
}

/// One NOTIFY keyword of RCPT (RFC 3461 §4.1). `NEVER` excludes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnNotify {
    Never,
    Success,
    Failure,
    Delay,
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: EmailAddress,
    /// `NOTIFY=`; `None` when absent (RFC 3461 §4.1: then FAILURE,DELAY
    /// semantics apply at the MTA's discretion).
    pub notify: Option<Vec<DsnNotify>>,
    /// `ORCPT=addr-type;xtext`, kept exactly as received (still
    /// xtext-encoded; RFC 3461 §4.2 requires relaying it unchanged). Decode
    /// with [`xtext_decode`](super::xtext_decode) for a DSN.
    pub orcpt: Option<String>,
}

/// The current mail transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Reverse path; `None` is the null path `<>` (bounces, RFC 5321 §4.5.5)
    /// or "no MAIL yet" — see [`Session::in_transaction`](super::Session::in_transaction).
    pub mail_from: Option<EmailAddress>,
    /// Recipients the driver accepted, in RCPT order.
    pub recipients: Vec<Recipient>,
    pub body: BodyType,
    /// `SMTPUTF8` was given on MAIL (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// `SIZE=` declared on MAIL (RFC 1870 §6), already checked against the limit.
    pub size_hint: Option<u64>,
    pub ret: Option<DsnRet>,
    /// `ENVID=`, kept xtext-encoded exactly as received (RFC 3461 §4.4).
    pub envid: Option<String>,
}
