//! The change counter and wake-ups behind `Mailbox::version`/`changed`.

use event_listener::Event;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use varan_core::mailstore::ChangeFuture;

#[derive(Debug, Default)]
pub(crate) struct Notifier {
    version: AtomicU64,
    event: Event,
}

impl Notifier {
    pub fn new() -> Arc<Notifier> {
        Arc::new(Notifier::default())
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Counts a change and wakes every waiter, on any thread.
    pub fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Resolves once the version differs from `seen`.
    pub fn changed(self: &Arc<Self>, seen: u64) -> ChangeFuture {
        let this = Arc::clone(self);
        Box::pin(async move {
            loop {
                if this.version() != seen {
                    return;
                }
                let listener = this.event.listen();
                // Checked again after registering: a bump in between
                // would otherwise be missed.
                if this.version() != seen {
                    return;
                }
                listener.await;
            }
        })
    }
}
