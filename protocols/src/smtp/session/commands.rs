//! Command handlers (RFC 5321 §4.1.1 and the extensions' RFCs). Each one
//! checks sequence, then syntax, then policy, and queues exactly one reply
//! or sets one action.

use varan_core::address::DOMAIN_BYTES_MAX;
use varan_core::EmailAddress;

use super::super::command::{check_characters, parse_mail, parse_rcpt, split_verb, Verb};
use super::super::envelope::{Envelope, Recipient};
use super::super::path::Path;
use super::super::reply::{self, write_line, write_multiline, Reply};
use super::super::sasl::{self, Credentials, Mechanism, SaslError};
use super::super::{Action, BodySink};
use super::{LineRead, SaslStep, Session, State, Transaction};

impl Session {
    /// One complete command line (without its terminator).
    pub(super) fn command(&mut self, line: &[u8], sink: &mut dyn BodySink) {
        let (verb, args) = split_verb(line);
        if let Err(r) = check_characters(line, verb) {
            return self.error(r);
        }
        let Some(verb) = verb else {
            return self.error(reply::UNRECOGNIZED);
        };
        match verb {
            Verb::Ehlo => self.hello(args, true),
            Verb::Helo => self.hello(args, false),
            Verb::Mail => self.mail(args),
            Verb::Rcpt => self.rcpt(args),
            Verb::Data => self.data(args, sink),
            Verb::Bdat => self.bdat(args, sink),
            Verb::Rset => self.no_args(args, |s| {
                s.txn = Transaction::default();
                s.reply(reply::OK);
            }),
            // RFC 5321 §4.1.1.9: NOOP [SP String]; §4.1.1.8 HELP [SP String].
            Verb::Noop => self.reply(reply::OK),
            Verb::Help => self.reply(reply::HELP),
            Verb::Quit => self.no_args(args, Session::quit),
            // RFC 5321 §3.5.3 / §7.3: never confirm or deny a mailbox.
            Verb::Vrfy if args.is_empty() => self.error(reply::SYNTAX),
            Verb::Vrfy => self.reply(reply::VRFY),
            // RFC 5321 §3.5.2 / §7.3: list expansion is not offered.
            Verb::Expn => self.reply(reply::EXPN),
            Verb::StartTls => self.starttls(args),
            Verb::Auth => self.auth(args),
        }
    }

    fn no_args(&mut self, args: &[u8], then: impl FnOnce(&mut Session)) {
        if args.is_empty() {
            then(self);
        } else {
            self.error(reply::NO_PARAMETERS);
        }
    }

    /// EHLO/HELO (RFC 5321 §4.1.1.1). The argument is not verified
    /// (§4.1.4: a server MUST NOT refuse a session over it). The replies
    /// carry no enhanced code (RFC 2034 §3).
    fn hello(&mut self, args: &[u8], extended: bool) {
        let name = args.split(|&b| b == b' ' || b == b'\t').next().unwrap_or_default();
        if name.is_empty() || name.len() > DOMAIN_BYTES_MAX {
            if self.count_error() {
                let text = if extended { "Syntax: EHLO hostname" } else { "Syntax: HELO hostname" };
                write_line(&mut self.out, 501, false, None, text);
            }
            return;
        }
        // §4.1.4: EHLO/HELO resets the transaction like RSET.
        self.txn = Transaction::default();
        // ASCII: check_characters refused anything else.
        self.helo = Some(String::from_utf8_lossy(name).into_owned());
        self.extended = extended;
        let host = self.config.hostname.clone();
        if !extended {
            return write_line(&mut self.out, 250, false, None, &host);
        }
        let size = format!("SIZE {}", self.config.message_size_max);
        let mut lines = vec![host.as_str(), "PIPELINING", &size, "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"];
        if self.offers_starttls() {
            lines.push("STARTTLS");
        }
        if self.offers_auth() {
            lines.push("AUTH PLAIN LOGIN");
        }
        write_multiline(&mut self.out, 250, &lines);
    }

    /// RFC 3207 §4: only when a certificate is loaded and not yet in TLS.
    fn offers_starttls(&self) -> bool {
        self.config.tls_available && self.tls.is_none()
    }

    /// PLAIN and LOGIN send the password in clear: only under TLS unless
    /// the administrator allowed it (RFC 4954 §4, RFC 8314 §5).
    fn offers_auth(&self) -> bool {
        self.tls.is_some() || self.config.auth_without_tls
    }

    /// MAIL (RFC 5321 §4.1.1.2).
    fn mail(&mut self, args: &[u8]) {
        if self.helo.is_none() {
            return self.error(reply::NEED_HELO);
        }
        if self.txn.active {
            return self.error(reply::NESTED_MAIL);
        }
        if self.config.requires_auth() && self.authenticated.is_none() {
            return self.error(reply::AUTH_REQUIRED);
        }
        let cmd = match parse_mail(args, self.extended) {
            Ok(cmd) => cmd,
            Err(r) => return self.error(r),
        };
        if cmd.non_ascii && !cmd.smtputf8 {
            return self.error(reply::NEEDS_SMTPUTF8);
        }
        if cmd.size.is_some_and(|s| s > self.config.message_size_max) {
            // RFC 1870 §6.2: permanent, the message can never fit.
            return self.reply(reply::SIZE_EXCEEDED);
        }
        let mail_from = match cmd.path {
            Path::Mailbox(address) => Some(address),
            Path::Null | Path::Postmaster => None,
        };
        if let (Some(lists), Some(sender)) = (&self.sender_lists, &mail_from) {
            if lists.check(Some(sender)) == varan_core::config::protect::Listed::Deny {
                return self.reply(Reply::new(550, (5, 7, 1), format!("<{sender}>: Sender address rejected: Access denied")));
            }
        }
        let txn = Transaction {
            active: true,
            envelope: Envelope { mail_from, recipients: Vec::new(), body: cmd.body, smtputf8: cmd.smtputf8, size_hint: cmd.size, ret: cmd.ret, envid: cmd.envid },
            ..Transaction::default()
        };
        if self.config.check_sender {
            self.pending = Some(Action::CheckSender { sender: txn.envelope.mail_from.clone() });
            self.state = State::AwaitSender(Box::new(txn));
            return;
        }
        self.txn = txn;
        self.reply(reply::MAIL_OK);
    }

    /// RCPT (RFC 5321 §4.1.1.3): parsed here, decided by the driver.
    fn rcpt(&mut self, args: &[u8]) {
        if !self.txn.active {
            return self.error(reply::NEED_MAIL);
        }
        if self.txn.bdat.is_some() {
            return self.error(reply::RCPT_AFTER_BDAT);
        }
        let cmd = match parse_rcpt(args, self.extended) {
            Ok(cmd) => cmd,
            Err(r) => return self.error(r),
        };
        if cmd.non_ascii && !self.txn.envelope.smtputf8 {
            // RFC 6531 §3.5.
            return self.error(reply::NEEDS_SMTPUTF8);
        }
        if self.txn.envelope.recipients.len() >= self.config.recipients_max {
            // RFC 5321 §4.5.3.1.10: 452, the client retries the rest later.
            return self.reply(reply::TOO_MANY_RECIPIENTS);
        }
        let address = match cmd.path {
            Path::Mailbox(address) => address,
            // RFC 5321 §4.5.1: "<Postmaster>" is this server's postmaster.
            Path::Postmaster => match EmailAddress::new("postmaster", &self.config.hostname) {
                Ok(address) => address,
                Err(_) => return self.error(reply::BAD_ADDRESS),
            },
            Path::Null => return self.error(reply::BAD_ADDRESS),
        };
        let index = self.txn.envelope.recipients.len();
        self.pending = Some(Action::CheckRecipient { address: address.clone(), index });
        self.state = State::AwaitRecipient(Recipient { address, notify: cmd.notify, orcpt: cmd.orcpt });
    }

    /// QUIT (RFC 5321 §4.1.1.10).
    fn quit(&mut self) {
        let text = format!("{} closing connection", self.config.hostname);
        self.reply(Reply::new(221, (2, 0, 0), text));
        self.state = State::Closed;
        self.pending = Some(Action::Close);
    }

    /// STARTTLS (RFC 3207 §4).
    fn starttls(&mut self, args: &[u8]) {
        if self.tls.is_some() {
            return self.error(reply::ALREADY_TLS);
        }
        if !self.config.tls_available {
            return self.error(reply::STARTTLS_UNAVAILABLE);
        }
        if !args.is_empty() {
            return self.error(reply::NO_PARAMETERS);
        }
        self.reply(reply::TLS_READY);
        self.state = State::TlsHandshake;
        self.pending = Some(Action::StartTls);
    }

    /// AUTH mechanism [initial-response] (RFC 4954 §4).
    fn auth(&mut self, args: &[u8]) {
        if self.authenticated.is_some() {
            return self.error(reply::ALREADY_AUTHENTICATED);
        }
        if !self.extended {
            return self.error(reply::NEED_EHLO);
        }
        if self.txn.active {
            return self.error(reply::AUTH_IN_TRANSACTION);
        }
        if !self.offers_auth() {
            return self.error(reply::AUTH_NEEDS_TLS);
        }
        let end = args.iter().position(|&b| b == b' ').unwrap_or(args.len());
        let (name, initial) = args.split_at(end);
        let initial = initial.trim_ascii();
        let Some(mechanism) = Mechanism::from_name(name) else {
            return self.error(reply::UNKNOWN_MECHANISM);
        };
        match (mechanism, initial.is_empty()) {
            (Mechanism::Plain, true) => self.challenge("", SaslStep::PlainResponse),
            (Mechanism::Plain, false) => self.plain_response(initial),
            (Mechanism::Login, true) => self.challenge(sasl::LOGIN_USERNAME_CHALLENGE, SaslStep::LoginUsername),
            (Mechanism::Login, false) => self.login_username(initial),
        }
    }

    /// "334 <base64 challenge>" and wait for the response line.
    fn challenge(&mut self, text: &str, step: SaslStep) {
        write_line(&mut self.out, 334, false, None, text);
        self.state = State::Sasl(step);
    }

    /// A SASL response line arrived (same length limit as commands).
    pub(super) fn sasl_input(&mut self, rest: &[u8]) -> Option<usize> {
        match self.read_line(rest) {
            LineRead::NeedMore => None,
            LineRead::Discarded(n) => Some(n),
            LineRead::TooLong(n) => {
                self.state = State::Command;
                self.error(reply::LINE_TOO_LONG);
                Some(n)
            }
            LineRead::Line(line, n) => {
                let State::Sasl(step) = std::mem::replace(&mut self.state, State::Command) else {
                    return Some(n);
                };
                match step {
                    SaslStep::PlainResponse => self.plain_response(line),
                    SaslStep::LoginUsername => self.login_username(line),
                    SaslStep::LoginPassword { username } => self.login_password(username, line),
                }
                Some(n)
            }
        }
    }

    fn plain_response(&mut self, line: &[u8]) {
        match sasl::decode_plain(line) {
            Ok(credentials) => self.authenticate(Mechanism::Plain, credentials),
            Err(e) => self.sasl_error(e),
        }
    }

    fn login_username(&mut self, line: &[u8]) {
        match sasl::decode_login_field(line) {
            Ok(username) => self.challenge(sasl::LOGIN_PASSWORD_CHALLENGE, SaslStep::LoginPassword { username }),
            Err(e) => self.sasl_error(e),
        }
    }

    fn login_password(&mut self, username: String, line: &[u8]) {
        match sasl::decode_login_field(line) {
            Ok(password) => self.authenticate(Mechanism::Login, Credentials { authzid: String::new(), authcid: username, password }),
            Err(e) => self.sasl_error(e),
        }
    }

    fn sasl_error(&mut self, e: SaslError) {
        self.state = State::Command;
        match e {
            SaslError::Cancelled => self.reply(reply::AUTH_CANCELLED),
            SaslError::BadBase64 => self.error(reply::AUTH_BAD_BASE64),
            SaslError::Malformed => self.auth_failed(),
        }
    }

    fn authenticate(&mut self, mechanism: Mechanism, c: Credentials) {
        self.state = State::AwaitAuth { authcid: c.authcid.clone() };
        self.pending = Some(Action::Authenticate { mechanism, authzid: c.authzid, authcid: c.authcid, password: c.password });
    }
}
