//! Who may send what to whom: recipient resolution, relay control and
//! quota at RCPT time (seed 002 §6.7.1 "no open relay").

use crate::live::Live;
use std::net::IpAddr;
use varan_core::directory::{Account, DirectoryError, Resolution};
use varan_core::EmailAddress;
use varan_protocols::smtp::Reply;

/// Refuses a single mailbox that is over its quota (RFC 3463 4.2.2).
/// Group expansions are not refused for one full member: the others would
/// lose the message too.
pub async fn quota(ctx: &crate::shard::ShardCtx, live: &std::sync::Arc<Live>, address: &EmailAddress, accounts: &[Account]) -> Result<(), Reply> {
    if let [single] = accounts {
        if ctx.quota_used(live, single).await >= live.quota_of(single) {
            return Err(Reply::new(452, (4, 2, 2), format!("<{address}>: Mailbox full")));
        }
    }
    Ok(())
}

/// RFC 5321 §4.5.1: `RCPT TO:<Postmaster>` (which the session reads as
/// `postmaster@<server.hostname>`) MUST be accepted. When the host name is
/// not itself a served domain, it means the postmaster of the first
/// `[[domain]]`; that address must exist as a user or alias (docs).
fn local_postmaster(live: &Live, address: &EmailAddress) -> Option<EmailAddress> {
    let hostname = varan_core::address::normalize_domain(&live.config.server.hostname).ok()?;
    if !address.local_part().eq_ignore_ascii_case("postmaster") || address.domain() != hostname || live.directories.serves(&hostname) {
        return None;
    }
    EmailAddress::new("postmaster", &live.config.domains.first()?.name).ok()
}

/// Where an accepted recipient's copy goes.
#[derive(Debug)]
pub enum Route {
    /// These local mailboxes.
    Local(Vec<Account>),
    /// The outbound queue: a domain we do not serve, relayed for an
    /// authenticated client or a `smtp.full_allowed_ips` address.
    Relay,
}

/// Resolves a recipient to local mailboxes or the outbound queue, or the
/// reply refusing it. Relaying is for authenticated sessions and
/// `smtp.full_allowed_ips` only; anyone else gets 554 5.7.1 (no open relay).
pub fn recipient(live: &Live, address: &EmailAddress, authenticated: bool, ip: IpAddr) -> Result<Route, Reply> {
    let postmaster = local_postmaster(live, address);
    let address = postmaster.as_ref().unwrap_or(address);
    if !live.directories.serves(address.domain()) {
        let may_relay = authenticated || live.config.smtp.full_allowed_ips.iter().any(|n| n.contains(ip));
        return if may_relay { Ok(Route::Relay) } else { Err(Reply::new(554, (5, 7, 1), format!("<{address}>: Relay access denied"))) };
    }
    match live.directories.lookup(address) {
        Ok(Some(Resolution::Local(accounts))) => Ok(Route::Local(accounts)),
        Ok(Some(Resolution::Forward(_) | Resolution::Mixed { .. })) => {
            Err(Reply::new(550, (5, 3, 0), format!("<{address}>: Forwarding to external addresses is not enabled on this server")))
        }
        Ok(None) => Err(Reply::new(550, (5, 1, 1), format!("<{address}>: Recipient address rejected: User unknown"))),
        Err(DirectoryError::Unavailable(e)) => {
            tracing::warn!(error = %e, "directory unavailable");
            Err(Reply::new(451, (4, 3, 0), "Directory temporarily unavailable, try again later"))
        }
        Err(DirectoryError::Data(e)) => {
            tracing::warn!(error = %e, %address, "directory data error");
            Err(Reply::new(550, (5, 3, 0), format!("<{address}>: Recipient address cannot be resolved")))
        }
    }
}
