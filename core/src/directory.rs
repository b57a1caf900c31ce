//! The directory contract: who exists, where their mail goes, and who may
//! log in.
//!
//! A domain has one or more providers (seed 002 §6.2.4: JSON file user DB,
//! LDAP/Active Directory); the first provider that knows an address wins.
//! Providers are `Send + Sync` and their methods are synchronous: a provider
//! whose answer needs the network (LDAP) or much CPU (password hashing) is
//! called by the runtime on its blocking pool; a provider whose lookups are
//! in-memory says so with [`Directory::is_inline`], and the runtime then
//! calls `lookup` directly on the shard. See `docs/design/directory.md`.

use crate::address::EmailAddress;

/// Most mailboxes one address may expand to (a group, alias list or
/// nested groups). Bounds the work and the recipient list one RCPT can
/// cause; RFC 5321 §4.5.3.1.8 asks for at least 100 recipients per message.
pub const EXPANSION_TARGETS_MAX: usize = 1000;
/// Deepest nesting of groups inside groups followed while expanding.
pub const GROUP_DEPTH_MAX: usize = 8;

/// A mailbox that can receive and store mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The canonical primary address (`login@domain`).
    pub address: EmailAddress,
    /// Storage quota in bytes; `None` means the domain default applies.
    pub quota_bytes: Option<u64>,
    /// Member of the master-users group (seed 002 §6.2.1.22).
    pub is_master: bool,
}

/// What an address resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver into these local mailboxes (one for a user, alias or
    /// alternative address; several for a group or alias list).
    Local(Vec<Account>),
    /// Forward to these external addresses (an alias pointing outside the
    /// server's domains). Delivered by the outbound queue.
    Forward(Vec<EmailAddress>),
    /// Local mailboxes and external forwards together.
    Mixed { local: Vec<Account>, forward: Vec<EmailAddress> },
}

/// Failures of a provider itself (not "user unknown", which is `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The backend is unreachable or answered garbage: a temporary
    /// condition (SMTP 451 4.3.0, IMAP NO [UNAVAILABLE]).
    #[error("directory temporarily unavailable: {0}")]
    Unavailable(String),
    /// The data is inconsistent (e.g. a group loop or expansion over the
    /// limit): a permanent condition for this address (SMTP 550 5.3.0).
    #[error("directory data error: {0}")]
    Data(String),
}

/// Outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Credentials are right; the account is this one.
    Yes(Account),
    /// The login is known to this provider but the password is wrong.
    WrongPassword,
    /// This provider does not know the login; ask the next one.
    UnknownLogin,
}

/// One user database.
pub trait Directory: Send + Sync {
    /// A short administrator-given name (seed 002 §6.2.4.1.1).
    fn name(&self) -> &str;

    /// True when `lookup` only touches memory and may run on a shard.
    fn is_inline(&self) -> bool;

    /// Resolves an address of a domain this provider serves. `Ok(None)`:
    /// unknown here (the next provider is asked; 550 5.1.1 when none knows).
    fn lookup(&self, address: &EmailAddress) -> Result<Option<Resolution>, DirectoryError>;

    /// Checks a login (full address) and password. May be CPU-heavy.
    fn verify(&self, login: &EmailAddress, password: &str) -> Result<Verified, DirectoryError>;

    /// Finds an account by its login without a password (master-user
    /// logins and administrative tools).
    fn account(&self, login: &EmailAddress) -> Result<Option<Account>, DirectoryError>;
}

/// The providers of every served domain, in the administrator's order.
#[derive(Default)]
pub struct Directories {
    providers: Vec<(String, std::sync::Arc<dyn Directory>)>,
}

impl Directories {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `provider` for `domain` (lower-case). Order matters: the
    /// first provider that knows an address answers for it.
    pub fn add(&mut self, domain: &str, provider: std::sync::Arc<dyn Directory>) {
        self.providers.push((domain.to_ascii_lowercase(), provider));
    }

    /// True when `domain` is one of ours (mail to it is local delivery).
    pub fn serves(&self, domain: &str) -> bool {
        self.providers.iter().any(|(d, _)| d == domain)
    }

    /// The providers of one domain, in order.
    pub fn for_domain<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a std::sync::Arc<dyn Directory>> + 'a {
        self.providers.iter().filter(move |(d, _)| d == domain).map(|(_, p)| p)
    }

    /// Every served domain, once each, in first-seen order.
    pub fn domains(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (d, _) in &self.providers {
            if !out.contains(&d.as_str()) {
                out.push(d);
            }
        }
        out
    }

    /// Resolves through the domain's providers; the first that knows wins.
    pub fn lookup(&self, address: &EmailAddress) -> Result<Option<Resolution>, DirectoryError> {
        for provider in self.for_domain(address.domain()) {
            if let Some(found) = provider.lookup(address)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Verifies a password through the domain's providers.
    pub fn verify(&self, login: &EmailAddress, password: &str) -> Result<Verified, DirectoryError> {
        let mut verdict = Verified::UnknownLogin;
        for provider in self.for_domain(login.domain()) {
            match provider.verify(login, password)? {
                Verified::UnknownLogin => continue,
                other => {
                    verdict = other;
                    break;
                }
            }
        }
        Ok(verdict)
    }

    /// Finds an account without a password.
    pub fn account(&self, login: &EmailAddress) -> Result<Option<Account>, DirectoryError> {
        for provider in self.for_domain(login.domain()) {
            if let Some(a) = provider.account(login)? {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// True when every provider answers lookups from memory.
    pub fn all_inline(&self) -> bool {
        self.providers.iter().all(|(_, p)| p.is_inline())
    }
}
