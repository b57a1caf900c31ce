//! The main thread: start-up checks, journal recovery, shard start, then
//! signals (SIGTERM/SIGINT stop, SIGHUP reloads) and user-database
//! changes until shutdown.

use crate::live::{Counters, Live};
use crate::shard::Control;
use crate::{probe, sys};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use varan_core::config::Config;
use varan_storage::journal::{Journal, JournalOptions};

/// Shards must report their listeners bound within this time.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the main thread looks at the user database files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Blocking-pool threads per shard (fsync, rename, password hashing).
const BLOCKING_THREADS: usize = 4;
/// Control messages queued per shard.
const CONTROL_DEPTH: usize = 16;

pub fn run(config_path: &Path, config: Config) -> Result<(), String> {
    let cpus = sys::allowed_cpus();
    let shards = config.server.shards.unwrap_or(cpus.len().max(1));
    probe::check_runtime(config.server.io_memory, shards)?;
    sys::block_signals().map_err(|e| format!("cannot block signals: {e}"))?;
    for dir in [config.server.data_dir.join("journal"), config.storage.maildir_root.clone()] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let queue_root = varan_storage::queue_dir(&config.server.data_dir);
    let queue = Arc::new(varan_storage::FileQueue::open(&queue_root).map_err(|e| format!("{}: {e}", queue_root.display()))?);
    recover(&config, &queue)?;
    // Every journal is retired now: what the previous run queued is
    // durable, and the runners may have it.
    queue.activate_all().map_err(|e| format!("{}: {e}", queue_root.display()))?;
    let mut live = Arc::new(Live::build(config)?);
    if live.tls.is_none() {
        let t = &live.config.tls;
        tracing::warn!(certificate = %t.certificate.display(), private_key = %t.private_key.display(),
            "no TLS certificate: STARTTLS and the SMTPS listener are off, and AUTH is refused on cleartext; set [tls] and reload");
    }
    let counters = Arc::new(Counters { protect: Arc::new(crate::protect::Protect::open(&live.config)?), ..Counters::default() });
    let store_options = varan_storage::mailstore::MaildirStoreOptions {
        // COPY/MOVE of a delivered message must pass: its trace headers
        // make it a little larger than the SMTP limit.
        message_bytes_max: live.config.imap.append_size_max.max(live.config.smtp.message_size_max) + (1 << 20),
        warm_mailboxes: varan_storage::mailstore::store::WARM_MAILBOXES_MAX,
        ..Default::default()
    };
    let mailstore = Arc::new(varan_storage::mailstore::MaildirStore::new(live.layout.clone(), store_options));
    let imap_cache = Arc::new(varan_protocols::imap::session::SummaryCache::new(live.config.imap.cache_size));
    let dns = crate::dns::DnsSidecar::start(&live.config.dns)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut controls = Vec::new();
    let mut handles = Vec::new();
    for shard in 0..shards {
        let (tx, rx) = futures_channel::mpsc::channel(CONTROL_DEPTH);
        controls.push(tx);
        let placement = if shards <= cpus.len() { Placement::Fixed(cpus[shard]) } else { Placement::Unbound };
        let (live, counters, ready) = (Arc::clone(&live), Arc::clone(&counters), ready_tx.clone());
        let (mailstore, imap_cache, queue, dns) = (Arc::clone(&mailstore), Arc::clone(&imap_cache), Arc::clone(&queue), dns.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{shard}"))
            .io_memory(live.config.server.io_memory as usize)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS))
            .spawn(move || crate::shard::main((shard, shards), live, crate::shard::Shared { counters, mailstore, imap_cache, queue, dns }, rx, ready))
            .map_err(|e| format!("cannot start shard {shard}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop(&mut controls, handles);
                return Err(e);
            }
            Err(_) => {
                stop(&mut controls, handles);
                return Err("shards did not start in time".into());
            }
        }
    }
    let names: Vec<String> = crate::shard::listeners(&live).iter().map(|(a, k)| format!("{k} {a}")).collect();
    tracing::info!(shards, listeners = %names.join(", "), "Varan ready");
    loop {
        match sys::wait_signal(WATCH_INTERVAL) {
            Some(libc::SIGTERM) | Some(libc::SIGINT) => {
                tracing::info!("stopping");
                break;
            }
            Some(libc::SIGHUP) => reload(config_path, &mut live, &mut controls, true),
            _ if live.user_databases_changed() => reload(config_path, &mut live, &mut controls, false),
            _ => {}
        }
        counters.protect.tick(&live.config);
    }
    stop(&mut controls, handles);
    counters.protect.flush();
    // Sessions are gone: write the indexes of the mailboxes kept loaded,
    // so the next start trusts them (no crash recovery, no full resyncs).
    mailstore.release_warm();
    tracing::info!("stopped");
    Ok(())
}

fn stop(controls: &mut [futures_channel::mpsc::Sender<Control>], handles: Vec<glommio::ExecutorJoinHandle<()>>) {
    for c in controls.iter_mut() {
        let _ = c.try_send(Control::Shutdown);
        c.close_channel();
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Re-reads the configuration (SIGHUP) or only the user databases, and
/// hands the new state to every shard. A bad file keeps the old state.
/// Listener addresses and the shard count need a restart.
fn reload(config_path: &Path, live: &mut Arc<Live>, controls: &mut [futures_channel::mpsc::Sender<Control>], full: bool) {
    let config = if full {
        match std::fs::read_to_string(config_path).map_err(|e| e.to_string()).and_then(|t| Config::from_toml(&t).map_err(|e| e.to_string())) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: configuration invalid; keeping the running one");
                return;
            }
        }
    } else {
        live.config.clone()
    };
    match Live::build(config) {
        Ok(new) => {
            *live = Arc::new(new);
            // Cached verifications carry the account as it was (quota,
            // master-group membership, disabled users): drop them all.
            crate::live::verify_cache().clear();
            for c in controls.iter_mut() {
                if c.try_send(Control::Reload(Arc::clone(live))).is_err() {
                    tracing::warn!("a shard did not take the reload");
                }
            }
            tracing::info!(full, "configuration reloaded");
        }
        Err(e) => tracing::error!(error = %e, "reload refused; keeping the running configuration"),
    }
}

/// Delivers what every shard journal (also of shards that no longer
/// exist after a change of `shards`) still holds, then trims them.
fn recover(config: &Config, queue: &varan_storage::FileQueue) -> Result<(), String> {
    let root = config.server.data_dir.join("journal");
    let entries = std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    for dir in dirs {
        let options = JournalOptions { segment_bytes: config.storage.journal_segment_size };
        let (mut journal, records) = Journal::open_with_options(&dir, &dir.join("spool"), options).map_err(|e| format!("{}: {e}", dir.display()))?;
        if records.is_empty() {
            continue;
        }
        let (redelivered, failed) = crate::delivery::redeliver(&records, queue);
        if failed > 0 {
            return Err(format!("{}: {failed} journaled deliveries could not be written; fix the cause (disk full? permissions?) and start again", dir.display()));
        }
        varan_storage::FsSyncer::open_all(&[&config.storage.maildir_root, queue.root()]).and_then(|s| s.sync()).map_err(|e| format!("syncfs: {e}"))?;
        let closed = journal.rotate().map_err(|e| format!("{}: {e}", dir.display()))?;
        journal.retire(closed).map_err(|e| format!("{}: {e}", dir.display()))?;
        tracing::info!(journal = %dir.display(), records = records.len(), redelivered, "journal recovered");
    }
    Ok(())
}
