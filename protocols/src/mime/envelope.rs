//! ENVELOPE (RFC 9051 §7.5.2, §9 `envelope`): date, subject, from, sender,
//! reply-to, to, cc, bcc, in-reply-to, message-id, from the header as sent.
//!
//! Strings are the unfolded raw header values, trimmed: encoded words stay
//! encoded (clients decode them, as they do for every other server), and
//! 8-bit octets go out in literals. An absent field is NIL; a present but
//! empty one is `""` (address fields: NIL when no address is in it).
//! Sender and Reply-To default to From when absent or empty (RFC 9051
//! §7.5.2). When a field occurs more than once the first one counts.

use super::address::{self, Item};
use super::header::{self, unfold};
use crate::imap::wire::{write_nstring, write_string};

/// The header fields ENVELOPE and the sort/thread keys read, first
/// occurrence of each, found in one pass.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TopFields<'a> {
    pub date: Option<&'a [u8]>,
    pub subject: Option<&'a [u8]>,
    pub from: Option<&'a [u8]>,
    pub sender: Option<&'a [u8]>,
    pub reply_to: Option<&'a [u8]>,
    pub to: Option<&'a [u8]>,
    pub cc: Option<&'a [u8]>,
    pub bcc: Option<&'a [u8]>,
    pub in_reply_to: Option<&'a [u8]>,
    pub message_id: Option<&'a [u8]>,
    pub references: Option<&'a [u8]>,
}

impl<'a> TopFields<'a> {
    pub fn of(header_block: &'a [u8]) -> Self {
        let mut t = TopFields::default();
        for f in header::fields(header_block) {
            let slot = match f.name.len() {
                2 if f.is("to") => &mut t.to,
                2 if f.is("cc") => &mut t.cc,
                3 if f.is("bcc") => &mut t.bcc,
                4 if f.is("date") => &mut t.date,
                4 if f.is("from") => &mut t.from,
                6 if f.is("sender") => &mut t.sender,
                7 if f.is("subject") => &mut t.subject,
                8 if f.is("reply-to") => &mut t.reply_to,
                10 if f.is("message-id") => &mut t.message_id,
                10 if f.is("references") => &mut t.references,
                11 if f.is("in-reply-to") => &mut t.in_reply_to,
                _ => continue,
            };
            slot.get_or_insert(f.value);
        }
        t
    }
}

fn write_text(out: &mut Vec<u8>, value: Option<&[u8]>) {
    write_nstring(out, value.map(unfold).as_deref(), false);
}

/// An address list, or NIL when it holds nothing.
fn write_addresses(out: &mut Vec<u8>, items: &[Item]) {
    if items.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for item in items {
        match item {
            Item::Mailbox(m) => {
                out.push(b'(');
                write_nstring(out, m.name.as_deref(), false);
                out.push(b' ');
                write_nstring(out, m.adl.as_deref(), false);
                out.push(b' ');
                write_string(out, &m.mailbox, false);
                out.push(b' ');
                write_string(out, &m.host, false);
                out.push(b')');
            }
            Item::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                write_string(out, name, false);
                out.extend_from_slice(b" NIL)");
            }
            Item::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

fn parse_list(value: Option<&[u8]>) -> Vec<Item> {
    value.map(|v| address::parse(&unfold(v))).unwrap_or_default()
}

/// Appends the ENVELOPE of the header block `header`.
pub(crate) fn write_envelope(out: &mut Vec<u8>, header: &[u8]) {
    let t = TopFields::of(header);
    let from = parse_list(t.from);
    let sender = parse_list(t.sender);
    let reply_to = parse_list(t.reply_to);
    out.push(b'(');
    write_text(out, t.date);
    out.push(b' ');
    write_text(out, t.subject);
    out.push(b' ');
    write_addresses(out, &from);
    out.push(b' ');
    write_addresses(out, if sender.is_empty() { &from } else { &sender });
    out.push(b' ');
    write_addresses(out, if reply_to.is_empty() { &from } else { &reply_to });
    out.push(b' ');
    write_addresses(out, &parse_list(t.to));
    out.push(b' ');
    write_addresses(out, &parse_list(t.cc));
    out.push(b' ');
    write_addresses(out, &parse_list(t.bcc));
    out.push(b' ');
    write_text(out, t.in_reply_to);
    out.push(b' ');
    write_text(out, t.message_id);
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(h: &str) -> String {
        let mut out = Vec::new();
        write_envelope(&mut out, h.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc_example_shape() {
        // Modelled on RFC 9051 §7.5.2's example (and on what Dovecot answers).
        let h = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
                 From: Terry Gray <gray@cac.washington.edu>\r\n\
                 Subject: IMAP4rev2 WG mtg summary and minutes\r\n\
                 To: imap@cac.washington.edu\r\n\
                 cc: minutes@CNRI.Reston.VA.US,\r\n \"John Klensin\" <KLENSIN@MIT.EDU>\r\n\
                 Message-Id: <B27397-0100000@cac.washington.edu>\r\n\r\n";
        assert_eq!(
            env(h),
            "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev2 WG mtg summary and minutes\" \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) \
             ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \
             \"<B27397-0100000@cac.washington.edu>\")"
        );
    }

    #[test]
    fn missing_and_groups() {
        assert_eq!(env(""), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        assert_eq!(
            env("Subject:\r\nTo: undisclosed-recipients:;\r\nReply-To: \r\nFrom: a@b\r\nSender: s@b\r\n\r\n"),
            "(NIL \"\" ((NIL NIL \"a\" \"b\")) ((NIL NIL \"s\" \"b\")) ((NIL NIL \"a\" \"b\")) \
             ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)"
        );
    }
}
