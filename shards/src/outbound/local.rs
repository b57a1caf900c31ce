//! [`LocalDelivery`] over this shard's durability pipeline: a queued
//! message for a served domain (a DSN to a local sender, in practice) is
//! resolved like an SMTP RCPT (directory lookup, aliases and groups, quota
//! of a single mailbox) and committed to the journal as a
//! `JournalRecord`, exactly as an SMTP delivery would be, so it is
//! durable when `deliver` returns and reaches the Maildirs by the usual
//! path. Never SMTP to ourselves.

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;

use varan_core::EmailAddress;
use varan_storage::journal::{Content, Delivery, JournalRecord};

use super::LocalDelivery;
use crate::dns::LocalFuture;
use crate::shard::ShardCtx;

pub struct ShardLocalDelivery {
    pub ctx: Rc<ShardCtx>,
}

impl LocalDelivery for ShardLocalDelivery {
    fn deliver<'a>(&'a self, recipient: &'a str, sender: &'a str, content: Vec<u8>) -> LocalFuture<'a, Result<(), (bool, String)>> {
        Box::pin(async move {
            let ctx = &self.ctx;
            let live = ctx.live();
            let address = EmailAddress::parse(recipient).map_err(|e| (true, format!("<{recipient}>: {e:?}")))?;
            // Resolved as an authenticated client on loopback would be:
            // the relay check does not apply to a served domain.
            let accounts = crate::policy::recipient(&live, &address, true, IpAddr::V4(Ipv4Addr::LOCALHOST)).map_err(|r| (r.is_permanent(), r.to_string().trim_end().to_owned()))?;
            crate::policy::quota(ctx, &live, &address, &accounts).await.map_err(|r| (false, r.to_string().trim_end().to_owned()))?;
            let missing: Vec<EmailAddress> = accounts.iter().map(|a| a.address.clone()).collect();
            let layout_live = Arc::clone(&live);
            glommio::executor()
                .spawn_blocking(move || missing.iter().try_for_each(|a| layout_live.layout.ensure_user(a).map(drop)))
                .await
                .map_err(|e| (false, format!("cannot create mailbox: {e}")))?;
            let id = ctx.storage.next_id();
            let queue_id = format!("{:X}{:02X}", id, ctx.shard);
            let sender_address = if sender.is_empty() { None } else { EmailAddress::parse(sender).ok() };
            let now = std::time::SystemTime::now();
            let lf_size = content.len() as u64;
            let crlf_size = lf_size + content.iter().filter(|&&b| b == b'\n').count() as u64;
            let mut deliveries = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for account in &accounts {
                if !seen.insert(account.address.key()) {
                    continue;
                }
                let prefix = crate::headers::trace(&crate::headers::TraceInfo {
                    hostname: &live.config.server.hostname,
                    helo: Some(&live.config.server.hostname),
                    remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    tls: None,
                    authenticated: false,
                    esmtp: true,
                    queue_id: &queue_id,
                    sender: sender_address.as_ref(),
                    recipient: &account.address,
                    now,
                });
                let lines = prefix.iter().filter(|&&b| b == b'\n').count() as u64;
                let name = live.layout.new_message_name(ctx.shard, id, lf_size + prefix.len() as u64, crlf_size + prefix.len() as u64 + lines, now);
                let path = live.layout.user_dir(&account.address).join("new").join(name);
                deliveries.push(Delivery { path, prefix });
            }
            let record = JournalRecord { id, deliveries, content: Content::Inline(content) };
            ctx.storage.commit(record).await.map_err(|e| (false, format!("local delivery not stored: {e}")))?;
            let refs: Vec<&varan_core::directory::Account> = accounts.iter().collect();
            ctx.quota_add(&refs, lf_size);
            Ok(())
        })
    }
}
