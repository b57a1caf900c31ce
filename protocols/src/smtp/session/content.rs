//! DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030) in the session: starting a
//! message, streaming its octets through the decoder into the sink, and
//! deciding at its end between `MessageComplete` and a refusal.

use varan_core::config::BareNewlines;

use super::super::command::parse_bdat;
use super::super::data::{Body, LineDecoder};
use super::super::reply::{self, write_line, Reply};
use super::super::{Action, BodySink};
use super::{Chunk, Session, State, Transaction};

impl Session {
    /// DATA: 354, then content until `<CRLF>.<CRLF>`.
    pub(super) fn data(&mut self, args: &[u8], sink: &mut dyn BodySink) {
        if !args.is_empty() {
            return self.error(reply::NO_PARAMETERS);
        }
        if !self.txn.active {
            return self.error(reply::NEED_MAIL);
        }
        if self.txn.bdat.is_some() {
            // RFC 3030 §3: DATA and BDAT do not mix in one transaction.
            return self.error(reply::DATA_AFTER_BDAT);
        }
        if self.txn.envelope.recipients.is_empty() {
            // RFC 5321 §3.3 / RFC 2920 §3.1: 554, not 354, so that content
            // pipelined by a client is not taken as a message.
            return self.reply(reply::NO_RECIPIENTS);
        }
        // 3xx replies carry no enhanced code (RFC 2034 §3).
        write_line(&mut self.out, 354, false, None, "End data with <CR><LF>.<CR><LF>");
        self.begin_body(sink);
        self.state = State::Data(LineDecoder::data());
    }

    /// BDAT size [LAST]. The chunk's octets are consumed even when the
    /// command is refused: they cannot be told apart from commands otherwise.
    pub(super) fn bdat(&mut self, args: &[u8], sink: &mut dyn BodySink) {
        let Some((size, last)) = parse_bdat(args) else {
            // Without a size the octets cannot be skipped; what follows is
            // read as commands, as RFC 3030 leaves no better choice.
            return self.error(reply::BDAT_SYNTAX);
        };
        let max = self.config.message_size_max;
        let refusal = if !self.txn.active {
            Some((reply::NEED_MAIL, true))
        } else if self.txn.envelope.recipients.is_empty() {
            Some((reply::NO_RECIPIENTS, false))
        } else if self.txn.bdat_octets.saturating_add(size) > max {
            Some((reply::TOO_BIG, false))
        } else {
            None
        };
        if refusal.is_none() {
            if self.txn.bdat.is_none() {
                self.begin_body(sink);
                self.txn.bdat = Some(LineDecoder::bdat());
            }
            self.txn.bdat_octets += size;
        }
        self.state = State::Bdat(Chunk { size, remaining: size, last, refusal });
        if size == 0 {
            self.end_of_chunk(sink);
        }
    }

    fn begin_body(&mut self, sink: &mut dyn BodySink) {
        sink.begin();
        let reject_bare = self.config.bare_newlines == BareNewlines::Reject;
        self.body = Body::new(self.config.message_size_max, reject_bare);
    }

    /// DATA content; returns the octets consumed (never 0 for non-empty input).
    pub(super) fn data_input(&mut self, rest: &[u8], sink: &mut dyn BodySink) -> usize {
        let State::Data(decoder) = &mut self.state else {
            return 0;
        };
        let (used, ended) = decoder.feed(rest, &mut self.body, sink);
        if ended {
            self.end_of_message();
        }
        used
    }

    /// BDAT chunk octets; returns the octets consumed.
    pub(super) fn bdat_input(&mut self, rest: &[u8], sink: &mut dyn BodySink) -> usize {
        let State::Bdat(chunk) = &mut self.state else {
            return 0;
        };
        let n = usize::try_from(chunk.remaining).unwrap_or(usize::MAX).min(rest.len());
        chunk.remaining -= n as u64;
        let done = chunk.remaining == 0;
        if chunk.refusal.is_none() {
            if let Some(decoder) = &mut self.txn.bdat {
                decoder.feed(&rest[..n], &mut self.body, sink);
            }
        }
        if done {
            self.end_of_chunk(sink);
        }
        n
    }

    /// All octets of a chunk are in: reply, or end the message on LAST.
    fn end_of_chunk(&mut self, sink: &mut dyn BodySink) {
        let State::Bdat(chunk) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        if let Some((r, counts_as_error)) = chunk.refusal {
            if r == reply::TOO_BIG {
                // RFC 3030 §2: after a failed chunk the transaction is
                // over; later chunks get 503 until a new MAIL.
                self.txn = Transaction::default();
            }
            return if counts_as_error { self.error(r) } else { self.reply(r) };
        }
        if chunk.last {
            if let Some(decoder) = &mut self.txn.bdat {
                decoder.finish(&mut self.body, sink);
            }
            return self.end_of_message();
        }
        if self.body.too_big {
            // Bare newlines normalised to CRLF grew the message past SIZE.
            self.txn = Transaction::default();
            return self.reply(reply::TOO_BIG);
        }
        self.reply(Reply::new(250, (2, 0, 0), format!("{} octets received", chunk.size)));
    }

    /// The whole content is in the sink: refuse it, or let the driver
    /// store it.
    fn end_of_message(&mut self) {
        let refusal = if self.body.too_big {
            Some(reply::TOO_BIG)
        } else if self.body.bare_newline && self.config.bare_newlines == BareNewlines::Reject {
            Some(reply::BARE_NEWLINE)
        } else if self.body.sink_error.is_some() {
            Some(reply::SPOOL_FAILED)
        } else {
            None
        };
        match refusal {
            Some(r) => {
                self.state = State::Command;
                self.txn = Transaction::default();
                self.reply(r);
            }
            None => {
                self.state = State::AwaitStore;
                self.pending = Some(Action::MessageComplete);
            }
        }
    }
}
