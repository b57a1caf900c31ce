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
            let route = crate::policy::recipient(&live, &address, true, IpAddr::V4(Ipv4Addr::LOCALHOST)).map_err(|r| (r.is_permanent(), r.to_string().trim_end().to_owned()))?;
            let crate::policy::Route::Local(accounts) = route else {
                // Only entries for served domains come here; a domain
                // removed from the configuration since is a routing error.
                return Err((false, format!("<{recipient}>: domain no longer served here")));
            };
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
                    remote_name: None,
                    tls: None,
                    authenticated: false,
                    esmtp: true,
                    queue_id: &queue_id,
                    sender: sender_address.as_ref(),
                    recipient: Some(&account.address),
                    now,
                    checks: b"",
                });
                let lines = prefix.iter().filter(|&&b| b == b'\n').count() as u64;
                let name = live.layout.new_message_name(ctx.shard, id, lf_size + prefix.len() as u64, crlf_size + prefix.len() as u64 + lines, now);
                let path = live.layout.user_dir(&account.address).join("new").join(name);
                deliveries.push(Delivery { path, prefix });
            }
            let record = JournalRecord { id, deliveries, content: Content::Inline(content), outbound: None };
            ctx.storage.commit(record).await.map_err(|e| (false, format!("local delivery not stored: {e}")))?;
            let refs: Vec<&varan_core::directory::Account> = accounts.iter().collect();
            ctx.quota_add(&refs, lf_size);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{Counters, Live};
    use crate::shard::Shared;

    /// A DSN for a local user lands in the Maildir through the journal,
    /// with trace headers; an unknown user is a permanent failure; a
    /// mailbox over quota a temporary one.
    #[test]
    fn delivers_through_the_journal() {
        let dir = std::env::temp_dir().join(format!("varan-local-delivery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("users.json"),
            r#"{ "users": [ { "login": "alice", "password": "{PLAIN}x" }, { "login": "full", "password": "{PLAIN}x", "quota_mb": 1 } ], "groups": [] }"#,
        )
        .unwrap();
        let config = varan_core::config::Config::from_toml(&format!(
            "[server]\nhostname = \"mx.local.test\"\ndata_dir = \"{d}\"\n[storage]\nmaildir_root = \"{d}/mail\"\ncheckpoint_interval = \"20ms\"\njournal_segment_size = 0\n\
             [[domain]]\nname = \"local.test\"\n[[directory]]\ntype = \"json\"\nname = \"local\"\ndomain = \"local.test\"\npath = \"{d}/users.json\"\n",
            d = dir.display()
        ))
        .unwrap();
        let root = dir.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let live = Arc::new(Live::build(config).unwrap());
                let jdir = root.join("journal");
                std::fs::create_dir_all(jdir.join("spool")).unwrap();
                std::fs::create_dir_all(root.join("mail")).unwrap();
                let (journal, _) =
                    varan_storage::journal::Journal::open_with_options(&jdir, &jdir.join("spool"), varan_storage::journal::JournalOptions { segment_bytes: 0 }).unwrap();
                let notify: crate::delivery::Notify = Arc::new(|_: &std::path::Path| {});
                let queue = Arc::new(varan_storage::FileQueue::open(&varan_storage::queue_dir(&root)).unwrap());
                let (storage, task) = crate::delivery::start(journal, &root.join("mail"), Arc::clone(&queue), std::time::Duration::from_millis(20), 0, notify).unwrap();
                let mailstore = Arc::new(varan_storage::mailstore::MaildirStore::new(live.layout.clone(), Default::default()));
                let imap_cache = Arc::new(varan_protocols::imap::session::SummaryCache::new(1 << 20));
                let dns = crate::dns::DnsSidecar::start(&live.config.dns).unwrap();
                let shared = Shared { counters: Arc::new(Counters::default()), mailstore, imap_cache, queue, dns };
                let ctx = Rc::new(ShardCtx::new(0, Arc::clone(&live), shared, storage, jdir.join("spool")));
                let local = ShardLocalDelivery { ctx: Rc::clone(&ctx) };
                local.deliver("alice@local.test", "", b"Subject: report\n\nbody\n".to_vec()).await.unwrap();
                let unknown = local.deliver("nobody@local.test", "", b"x\n".to_vec()).await;
                assert!(matches!(&unknown, Err((true, t)) if t.contains("5.1.1")), "{unknown:?}");
                // Fill `full` past its 1 MB quota, then it is refused for now.
                local.deliver("full@local.test", "", vec![b'x'; 1 << 20]).await.unwrap();
                let over = local.deliver("full@local.test", "", b"x\n".to_vec()).await;
                assert!(matches!(&over, Err((false, t)) if t.contains("4.2.2")), "{over:?}");
                let new_dir = live.layout.user_dir(&EmailAddress::parse("alice@local.test").unwrap()).join("new");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                let text = loop {
                    let files: Vec<_> = std::fs::read_dir(&new_dir).map(|d| d.filter_map(Result::ok).collect()).unwrap_or_default();
                    if let Some(f) = files.first() {
                        break std::fs::read_to_string(f.path()).unwrap();
                    }
                    assert!(std::time::Instant::now() < deadline, "no file in {}", new_dir.display());
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                };
                assert!(text.contains("Subject: report\n\nbody\n"), "{text}");
                assert!(text.contains("Delivered-To:") || text.contains("Received:"), "trace headers: {text}");
                drop(local);
                drop(ctx);
                let _ = glommio::timer::timeout(std::time::Duration::from_secs(5), async {
                    task.await;
                    Ok(())
                })
                .await;
            })
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
