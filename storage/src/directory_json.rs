//! The JSON-file user database (seed 002 §6.2.4.1), one file per provider
//! and domain, loaded whole into memory, so lookups never block and run on
//! the shard ([`Directory::is_inline`] is true).
//!
//! ```json
//! { "users": [
//!     { "login": "u1", "password": "$argon2id$...", "name": "Full Name",
//!       "quota_mb": 1024, "enabled": true,
//!       "aliases": ["info", "sales"], "alt_addresses": ["u1@other.example"],
//!       "forward": ["ext@elsewhere.example"], "keep_copy": true } ],
//!   "groups": [
//!     { "name": "staff", "address": "staff", "members": ["u1", "u2"], "groups": ["teachers"] },
//!     { "name": "masters", "members": ["admin1"] } ] }
//! ```
//!
//! * `login` is the local part; the account's address is `login@<domain>`.
//!   Only `login` is required. `password` takes any form [`password::verify`]
//!   knows. `quota_mb` (MiB, 1 to [`QUOTA_MB_MAX`]) overrides the domain's
//!   default quota. A user with `"enabled": false` is unknown to lookups
//!   and logins (and skipped in groups).
//! * `aliases` are more local parts of this domain; `alt_addresses` are full
//!   addresses, possibly of other domains (they resolve only where this
//!   provider is also registered for that domain).
//! * `forward` sends the user's mail on to these addresses; with
//!   `"keep_copy": false` no copy stays in the mailbox.
//! * A group with an `address` (local part, or a full address) is a
//!   distribution list: its `members` (logins) and, recursively, the
//!   members of its nested `groups`, de-duplicated, at most
//!   [`GROUP_DEPTH_MAX`] levels deep and [`EXPANSION_TARGETS_MAX`] targets.
//!   A loop among groups makes the address fail with a data error.
//! * Members of the provider's master group (configuration `master_group`,
//!   default "masters", nested groups included) are master users.
//!
//! Unknown fields are refused, so a misspelt key ("alias") is an error, not
//! a silently ignored setting. Every address belongs to one owner: a
//! duplicate login, alias, alternative or group address is refused at load
//! with all the clashes named.

use crate::password;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use varan_core::config::DirectoryConfig;
use varan_core::directory::{Account, Directory, DirectoryError, Resolution, Verified, EXPANSION_TARGETS_MAX, GROUP_DEPTH_MAX};
use varan_core::EmailAddress;

/// Largest user database file read: bounds memory and load time (a file
/// of 100,000 users is about 30 MB).
pub const JSON_FILE_BYTES_MAX: u64 = 256 << 20;
/// Largest per-user quota, 16 TiB in MiB: far beyond any disk, and small
/// enough that the byte value cannot overflow.
pub const QUOTA_MB_MAX: u64 = 16 << 20;
/// Clashes listed in one load error; the rest are counted.
const ERRORS_LISTED_MAX: usize = 20;

/// One user in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub login: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_mb: Option<u64>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub keep_copy: bool,
}

/// One group in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DbFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    groups: Vec<GroupEntry>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A user as the CLI lists it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub login: String,
    pub address: EmailAddress,
    pub name: Option<String>,
    pub quota_mb: Option<u64>,
    pub enabled: bool,
    pub is_master: bool,
    pub aliases: Vec<String>,
    pub alt_addresses: Vec<String>,
    pub forward: Vec<String>,
}

/// Why a user database could not be loaded, changed or saved.
#[derive(Debug, thiserror::Error)]
pub enum JsonDbError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: larger than {max} bytes", .path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{}: line {line}, column {column}: {message}", .path.display())]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("user database: {0}")]
    Invalid(String),
    #[error("no user {0:?}")]
    UnknownUser(String),
}

/// The error of [`JsonDirectory::load`].
pub type LoadError = JsonDbError;

#[derive(Debug, Clone, Copy)]
enum Target {
    User(usize),
    Group(usize),
}

/// Lookup tables built from the file, all keyed by lower-cased full
/// address ([`EmailAddress::key`]) or lower-cased group name.
#[derive(Debug, Default)]
struct Index {
    by_address: HashMap<String, Target>,
    by_login: HashMap<String, usize>,
    accounts: Vec<Account>,
    forwards: Vec<Vec<EmailAddress>>,
    members: Vec<Vec<usize>>,
    subgroups: Vec<Vec<usize>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct JsonDirectory {
    name: String,
    domain: String,
    master_group: String,
    db: DbFile,
    index: Index,
}

impl JsonDirectory {
    /// Loads `path` for `domain`. A missing file is an empty database (the
    /// first `add_user` creates it on save).
    pub fn load(path: &Path, domain: &str, master_group: &str) -> Result<Self, LoadError> {
        let io_err = |source| JsonDbError::Io { path: path.to_path_buf(), source };
        let file = match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::from_parts(DbFile::default(), domain, master_group, path),
            other => other.map_err(io_err)?,
        };
        let too_large = || JsonDbError::TooLarge { path: path.to_path_buf(), max: JSON_FILE_BYTES_MAX };
        if file.metadata().map_err(io_err)?.len() > JSON_FILE_BYTES_MAX {
            return Err(too_large());
        }
        let mut text = Vec::new();
        file.take(JSON_FILE_BYTES_MAX + 1).read_to_end(&mut text).map_err(io_err)?;
        if text.len() as u64 > JSON_FILE_BYTES_MAX {
            return Err(too_large());
        }
        Self::from_parts(parse_db(&text, path)?, domain, master_group, path)
    }

    /// Loads the provider described by a `[[directory]]` section.
    pub fn from_config(c: &DirectoryConfig) -> Result<Self, LoadError> {
        Ok(Self::load(&c.path, &c.domain, &c.master_group)?.with_name(&c.name))
    }

    /// Parses database text (tests, the admin API).
    pub fn from_json(text: &str, domain: &str, master_group: &str) -> Result<Self, JsonDbError> {
        let path = Path::new("<text>");
        Self::from_parts(parse_db(text.as_bytes(), path)?, domain, master_group, path)
    }

    fn from_parts(db: DbFile, domain: &str, master_group: &str, path: &Path) -> Result<Self, JsonDbError> {
        let domain = varan_core::address::normalize_domain(domain).map_err(|_| JsonDbError::Invalid(format!("{domain:?} is not a domain name")))?;
        let index = build_index(&db, &domain, master_group)?;
        Ok(Self { name: format!("json:{}", path.display()), domain, master_group: master_group.to_owned(), db, index })
    }

    /// Sets the administrator-given provider name.
    pub fn with_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn rebuild(&mut self, db: DbFile) -> Result<(), JsonDbError> {
        self.index = build_index(&db, &self.domain, &self.master_group)?;
        self.db = db;
        Ok(())
    }

    fn user_index(&self, login: &str) -> Option<usize> {
        let addr = EmailAddress::parse(&format!("{login}@{}", self.domain)).ok()?;
        self.index.by_login.get(&addr.key()).copied()
    }

    /// Adds a user; refuses a login or address already in use.
    pub fn add_user(&mut self, login: &str, password_hash: &str, quota_mb: Option<u64>) -> Result<(), JsonDbError> {
        let mut db = self.db.clone();
        db.users.push(UserEntry {
            login: login.to_owned(),
            password: password_hash.to_owned(),
            name: None,
            quota_mb,
            enabled: true,
            aliases: Vec::new(),
            alt_addresses: Vec::new(),
            forward: Vec::new(),
            keep_copy: true,
        });
        self.rebuild(db)
    }

    /// Removes a user and their group memberships.
    pub fn remove_user(&mut self, login: &str) -> Result<(), JsonDbError> {
        let i = self.user_index(login).ok_or_else(|| JsonDbError::UnknownUser(login.to_owned()))?;
        let mut db = self.db.clone();
        let removed = db.users.remove(i);
        for g in &mut db.groups {
            g.members.retain(|m| m.to_lowercase() != removed.login.to_lowercase());
        }
        self.rebuild(db)
    }

    /// Replaces a user's stored password hash.
    pub fn set_password(&mut self, login: &str, password_hash: &str) -> Result<(), JsonDbError> {
        let i = self.user_index(login).ok_or_else(|| JsonDbError::UnknownUser(login.to_owned()))?;
        password_hash.clone_into(&mut self.db.users[i].password);
        Ok(())
    }

    /// Enables or disables a user.
    pub fn set_enabled(&mut self, login: &str, enabled: bool) -> Result<(), JsonDbError> {
        let i = self.user_index(login).ok_or_else(|| JsonDbError::UnknownUser(login.to_owned()))?;
        self.db.users[i].enabled = enabled;
        Ok(())
    }

    /// Every user, in file order.
    pub fn list_users(&self) -> Vec<UserInfo> {
        self.db
            .users
            .iter()
            .zip(&self.index.accounts)
            .map(|(u, a)| UserInfo {
                login: u.login.clone(),
                address: a.address.clone(),
                name: u.name.clone(),
                quota_mb: u.quota_mb,
                enabled: u.enabled,
                is_master: a.is_master,
                aliases: u.aliases.clone(),
                alt_addresses: u.alt_addresses.clone(),
                forward: u.forward.clone(),
            })
            .collect()
    }

    /// Writes the database atomically: temporary file, fsync, rename over
    /// `path`, fsync of the directory. Mode 0600 (it holds hashes).
    pub fn save(&self, path: &Path) -> Result<(), JsonDbError> {
        let io_err = |source| JsonDbError::Io { path: path.to_path_buf(), source };
        let mut text = serde_json::to_vec_pretty(&self.db).map_err(|e| JsonDbError::Invalid(e.to_string()))?;
        text.push(b'\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| JsonDbError::Invalid(format!("{} is not a file path", path.display())))?;
        let tmp = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io_err)
    }

    fn account_of(&self, login: &EmailAddress) -> Option<(usize, &Account)> {
        let i = *self.index.by_login.get(&login.key())?;
        self.db.users[i].enabled.then(|| (i, &self.index.accounts[i]))
    }
}

impl Directory for JsonDirectory {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_inline(&self) -> bool {
        true
    }

    fn lookup(&self, address: &EmailAddress) -> Result<Option<Resolution>, DirectoryError> {
        let mut x = Expansion::new(self);
        match self.index.by_address.get(&address.key()) {
            None => return Ok(None),
            Some(Target::User(u)) => {
                if !self.db.users[*u].enabled {
                    return Ok(None);
                }
                x.add_user(*u)?;
            }
            Some(Target::Group(g)) => {
                x.add_group(*g, 1)?;
                if x.local.is_empty() && x.forward.is_empty() {
                    return Err(DirectoryError::Data(format!("group {:?} has no enabled members", self.db.groups[*g].name)));
                }
            }
        }
        Ok(Some(x.into_resolution()))
    }

    fn verify(&self, login: &EmailAddress, password: &str) -> Result<Verified, DirectoryError> {
        Ok(match self.account_of(login) {
            None => Verified::UnknownLogin,
            Some((i, account)) if password::verify(&self.db.users[i].password, password) => Verified::Yes(account.clone()),
            Some(_) => Verified::WrongPassword,
        })
    }

    fn account(&self, login: &EmailAddress) -> Result<Option<Account>, DirectoryError> {
        Ok(self.account_of(login).map(|(_, a)| a.clone()))
    }
}

/// Parses the file. The top level must be an object: serde would also
/// take a JSON array as the struct's fields by position, which is never
/// what an administrator meant.
fn parse_db(text: &[u8], path: &Path) -> Result<DbFile, JsonDbError> {
    let syntax = |line, column, message| JsonDbError::Syntax { path: path.to_path_buf(), line, column, message };
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(syntax(1, 1, "the file must contain one JSON object".to_owned()));
    }
    serde_json::from_slice(text).map_err(|e| syntax(e.line(), e.column(), e.to_string()))
}

/// Collects the targets of one lookup: accounts and forwards, each once.
struct Expansion<'a> {
    dir: &'a JsonDirectory,
    local: Vec<Account>,
    forward: Vec<EmailAddress>,
    seen_users: HashSet<usize>,
    seen_forwards: HashSet<String>,
    /// Groups fully expanded (a diamond is walked once).
    done: HashSet<usize>,
    /// Groups on the current path (a repeat is a loop).
    path: Vec<usize>,
}

impl<'a> Expansion<'a> {
    fn new(dir: &'a JsonDirectory) -> Self {
        Self { dir, local: Vec::new(), forward: Vec::new(), seen_users: HashSet::new(), seen_forwards: HashSet::new(), done: HashSet::new(), path: Vec::new() }
    }

    fn add_user(&mut self, u: usize) -> Result<(), DirectoryError> {
        let entry = &self.dir.db.users[u];
        if !entry.enabled || !self.seen_users.insert(u) {
            return Ok(());
        }
        let forwards = &self.dir.index.forwards[u];
        if entry.keep_copy || forwards.is_empty() {
            self.local.push(self.dir.index.accounts[u].clone());
        }
        for f in forwards {
            if self.seen_forwards.insert(f.key()) {
                self.forward.push(f.clone());
            }
        }
        if self.local.len() + self.forward.len() > EXPANSION_TARGETS_MAX {
            return Err(DirectoryError::Data(format!("address expands to more than {EXPANSION_TARGETS_MAX} targets")));
        }
        Ok(())
    }

    /// `depth` 1 is the group that was looked up.
    fn add_group(&mut self, g: usize, depth: usize) -> Result<(), DirectoryError> {
        let name = |g: usize| self.dir.db.groups[g].name.as_str();
        if let Some(at) = self.path.iter().position(|&p| p == g) {
            let cycle: Vec<&str> = self.path[at..].iter().map(|&p| name(p)).chain([name(g)]).collect();
            return Err(DirectoryError::Data(format!("group loop: {}", cycle.join(" -> "))));
        }
        if self.done.contains(&g) {
            return Ok(());
        }
        if depth > GROUP_DEPTH_MAX {
            return Err(DirectoryError::Data(format!("groups nested deeper than {GROUP_DEPTH_MAX} levels at {:?}", name(g))));
        }
        self.path.push(g);
        let index = &self.dir.index;
        for &u in &index.members[g] {
            self.add_user(u)?;
        }
        for &sub in &index.subgroups[g] {
            self.add_group(sub, depth + 1)?;
        }
        self.path.pop();
        self.done.insert(g);
        Ok(())
    }

    fn into_resolution(self) -> Resolution {
        match (self.local.is_empty(), self.forward.is_empty()) {
            (_, true) => Resolution::Local(self.local),
            (true, false) => Resolution::Forward(self.forward),
            (false, false) => Resolution::Mixed { local: self.local, forward: self.forward },
        }
    }
}

/// Validates the file and builds the lookup tables. All problems are
/// collected so the administrator sees every clash at once.
fn build_index(db: &DbFile, domain: &str, master_group: &str) -> Result<Index, JsonDbError> {
    let mut b = Builder { domain, index: Index::default(), owners: HashMap::new(), errors: Vec::new() };
    for (i, u) in db.users.iter().enumerate() {
        b.add_user(i, u);
    }
    let mut group_by_name: HashMap<String, usize> = HashMap::new();
    for (g, grp) in db.groups.iter().enumerate() {
        b.add_group(g, grp, &mut group_by_name);
    }
    for grp in &db.groups {
        let members = grp.members.iter().filter_map(|m| b.login_index(m).or_else(|| b.error(format!("group {:?}: unknown member {m:?}", grp.name)))).collect();
        let subgroups = grp
            .groups
            .iter()
            .filter_map(|s| group_by_name.get(&s.to_lowercase()).copied().or_else(|| b.error(format!("group {:?}: unknown nested group {s:?}", grp.name))))
            .collect();
        b.index.members.push(members);
        b.index.subgroups.push(subgroups);
    }
    if !b.errors.is_empty() {
        let total = b.errors.len();
        let mut text = b.errors.into_iter().take(ERRORS_LISTED_MAX).collect::<Vec<_>>().join("; ");
        if total > ERRORS_LISTED_MAX {
            text.push_str(&format!("; and {} more", total - ERRORS_LISTED_MAX));
        }
        return Err(JsonDbError::Invalid(text));
    }
    let mut index = b.index;
    if let Some(&g) = group_by_name.get(&master_group.to_lowercase()) {
        mark_masters(db, &mut index, g);
    }
    Ok(index)
}

/// Sets `is_master` on every member of the master group, nested groups
/// included. A loop or an over-deep nesting there only logs a warning: it
/// must not stop the whole database from loading.
fn mark_masters(db: &DbFile, index: &mut Index, g: usize) {
    let mut stack = vec![(g, 1usize)];
    let mut seen = HashSet::new();
    while let Some((g, depth)) = stack.pop() {
        if !seen.insert(g) {
            continue;
        }
        if depth > GROUP_DEPTH_MAX {
            tracing::warn!(group = %db.groups[g].name, "master group nesting too deep; deeper members are not masters");
            continue;
        }
        for &u in &index.members[g] {
            index.accounts[u].is_master = true;
        }
        stack.extend(index.subgroups[g].iter().map(|&s| (s, depth + 1)));
    }
}

struct Builder<'a> {
    domain: &'a str,
    index: Index,
    /// Address key → who uses it, for duplicate messages.
    owners: HashMap<String, String>,
    errors: Vec<String>,
}

impl Builder<'_> {
    fn error<T>(&mut self, e: String) -> Option<T> {
        self.errors.push(e);
        None
    }

    fn parse_local(&mut self, local: &str, what: &str) -> Option<EmailAddress> {
        let parsed = if local.contains('@') { None } else { EmailAddress::parse(&format!("{local}@{}", self.domain)).ok() };
        parsed.or_else(|| self.error(format!("{what} {local:?} is not a valid local part")))
    }

    fn parse_full(&mut self, addr: &str, what: &str) -> Option<EmailAddress> {
        EmailAddress::parse(addr).ok().or_else(|| self.error(format!("{what} {addr:?} is not a valid address")))
    }

    fn claim(&mut self, addr: &EmailAddress, owner: String, target: Target) {
        let key = addr.key();
        if let Some(prev) = self.owners.get(&key) {
            self.errors.push(format!("duplicate address {key}: {prev} and {owner}"));
            return;
        }
        self.owners.insert(key.clone(), owner);
        self.index.by_address.insert(key, target);
    }

    fn login_index(&self, login: &str) -> Option<usize> {
        let addr = EmailAddress::parse(&format!("{login}@{}", self.domain)).ok()?;
        self.index.by_login.get(&addr.key()).copied()
    }

    fn add_user(&mut self, i: usize, u: &UserEntry) {
        // On a bad login the tables lose alignment with `users`, but the
        // load fails anyway and they are dropped.
        let Some(address) = self.parse_local(&u.login, "user login") else { return };
        if u.quota_mb.is_some_and(|q| q == 0 || q > QUOTA_MB_MAX) {
            self.errors.push(format!("user {:?}: quota_mb must be 1 to {QUOTA_MB_MAX}", u.login));
        }
        self.index.by_login.entry(address.key()).or_insert(i);
        self.claim(&address, format!("user {:?}", u.login), Target::User(i));
        for a in &u.aliases {
            if let Some(addr) = self.parse_local(a, &format!("alias of user {:?}", u.login)) {
                self.claim(&addr, format!("alias {a:?} of user {:?}", u.login), Target::User(i));
            }
        }
        for a in &u.alt_addresses {
            if let Some(addr) = self.parse_full(a, &format!("alt_address of user {:?}", u.login)) {
                self.claim(&addr, format!("alt_address {a:?} of user {:?}", u.login), Target::User(i));
            }
        }
        let forwards = u.forward.iter().filter_map(|f| self.parse_full(f, &format!("forward of user {:?}", u.login))).collect();
        self.index.forwards.push(forwards);
        let quota_bytes = u.quota_mb.filter(|q| *q <= QUOTA_MB_MAX).map(|q| q << 20);
        self.index.accounts.push(Account { address, quota_bytes, is_master: false });
    }

    fn add_group(&mut self, g: usize, grp: &GroupEntry, by_name: &mut HashMap<String, usize>) {
        let lower = grp.name.to_lowercase();
        if grp.name.trim().is_empty() {
            self.errors.push("a group has an empty name".to_owned());
        } else if by_name.insert(lower, g).is_some() {
            self.errors.push(format!("duplicate group name {:?}", grp.name));
        }
        if let Some(a) = &grp.address {
            let what = format!("address of group {:?}", grp.name);
            let addr = if a.contains('@') { self.parse_full(a, &what) } else { self.parse_local(a, &what) };
            if let Some(addr) = addr {
                self.claim(&addr, format!("group {:?}", grp.name), Target::Group(g));
            }
        }
    }
}

#[cfg(test)]
#[path = "directory_json_tests.rs"]
mod tests;
