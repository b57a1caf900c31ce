//! Password logins for every protocol: `user@domain` or `user` (when the
//! server has one domain), master-user logins `user*master` (seed 002
//! §6.2.1.22), a short-lived cache of successful verifications, and the
//! hashing itself on the blocking pool so a shard never stalls on argon2.

use crate::live::{verify_cache, Live};
use std::sync::Arc;
use varan_core::directory::Verified;
use varan_core::EmailAddress;
use varan_protocols::smtp::AuthVerdict;

/// Longest login or password considered; longer ones fail at once.
const CREDENTIAL_BYTES_MAX: usize = 1024;

fn qualify(live: &Live, login: &str) -> Option<EmailAddress> {
    if login.contains('@') {
        return EmailAddress::parse(login).ok();
    }
    match live.directories.domains().as_slice() {
        [only] => EmailAddress::parse(&format!("{login}@{only}")).ok(),
        _ => None,
    }
}

/// Verifies credentials; `authzid` (RFC 4616) may name another user only
/// when the authenticating user is a master user.
pub async fn login(live: &Arc<Live>, authzid: &str, authcid: &str, password: String) -> AuthVerdict {
    match login_as(live, authzid, authcid, password).await {
        Ok(_) => AuthVerdict::Success,
        Err(v) => v,
    }
}

/// Like [`login`], and says whose mailbox the login opens: the user's
/// own, or with a master login the target user's.
pub async fn login_as(live: &Arc<Live>, authzid: &str, authcid: &str, password: String) -> Result<EmailAddress, AuthVerdict> {
    if authcid.len() > CREDENTIAL_BYTES_MAX || password.len() > CREDENTIAL_BYTES_MAX || password.is_empty() {
        return Err(AuthVerdict::Failure);
    }
    let separators: Vec<String> = live.config.directories.iter().map(|d| d.master_separator.clone()).collect();
    let (target, master) = match separators.iter().find_map(|s| authcid.split_once(s.as_str())) {
        Some((user, master)) => (user.to_owned(), Some(master.to_owned())),
        None if !authzid.is_empty() && authzid != authcid => (authzid.to_owned(), Some(authcid.to_owned())),
        None => (authcid.to_owned(), None),
    };
    let Some(target) = qualify(live, &target) else { return Err(AuthVerdict::Failure) };
    let checking = match &master {
        Some(m) => match qualify(live, m) {
            Some(m) => m,
            None => return Err(AuthVerdict::Failure),
        },
        None => target.clone(),
    };
    let key = checking.key();
    let cached = verify_cache().get(&key, &password, std::time::Instant::now());
    let account = match cached {
        Some(a) => Some(a),
        None => {
            let live2 = Arc::clone(live);
            let login = checking.clone();
            let pw = password.clone();
            let verdict = glommio::executor().spawn_blocking(move || live2.directories.verify(&login, &pw)).await;
            match verdict {
                Ok(Verified::Yes(account)) => {
                    verify_cache().insert(&key, &password, account.clone(), std::time::Instant::now());
                    Some(account)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "directory unavailable during login");
                    return Err(AuthVerdict::TempFailure);
                }
            }
        }
    };
    let Some(account) = account else { return Err(AuthVerdict::Failure) };
    if master.is_none() {
        return Ok(account.address);
    }
    if !account.is_master {
        return Err(AuthVerdict::Failure);
    }
    match live.directories.account(&target) {
        Ok(Some(a)) => Ok(a.address),
        Ok(None) => Err(AuthVerdict::Failure),
        Err(_) => Err(AuthVerdict::TempFailure),
    }
}
