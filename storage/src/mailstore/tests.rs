//! Tests of both backends: the conformance suite, and Maildir specifics
//! (Dovecot-written fixtures, changes behind our back, crash safety).

use super::*;
use crate::maildir::{MaildirLayout, SpecialFolders};
use crate::testutil::TempDir;
use std::sync::Arc;
use varan_core::mailstore::{MailStore, UserStore};

/// A Maildir store in its own temporary directory (dropped after the store).
pub(crate) struct TempMaildirStore {
    pub store: MaildirStore,
    pub dir: TempDir,
}

impl MailStore for TempMaildirStore {
    fn user(&self, account: &varan_core::EmailAddress) -> varan_core::mailstore::StoreResult<Arc<dyn UserStore>> {
        self.store.user(account)
    }
}

pub(crate) fn layout(root: &std::path::Path) -> MaildirLayout {
    let mut l = MaildirLayout::new(root.to_path_buf(), SpecialFolders::default());
    l.host = "test.example.org".into();
    l
}

pub(crate) fn maildir_options() -> MaildirStoreOptions {
    MaildirStoreOptions { quota_bytes: Some(conformance::QUOTA_BYTES), fsync: false, ..MaildirStoreOptions::default() }
}

pub(crate) fn temp_maildir_store() -> TempMaildirStore {
    let dir = TempDir::new();
    TempMaildirStore { store: MaildirStore::new(layout(dir.path()), maildir_options()), dir }
}

mod maildir_conformance {
    use super::*;
    crate::mailstore_conformance_tests!(|| Box::new(temp_maildir_store()) as Box<dyn MailStore>);
}

mod memory_conformance {
    use super::*;
    crate::mailstore_conformance_tests!(|| Box::new(MemoryStore::new(MemoryStoreOptions { quota_bytes: Some(conformance::QUOTA_BYTES), ..MemoryStoreOptions::default() }))
        as Box<dyn MailStore>);
}

#[test]
fn run_all_runs_every_case_on_memory() {
    conformance::run_all(&|| Box::new(MemoryStore::new(MemoryStoreOptions { quota_bytes: Some(conformance::QUOTA_BYTES), ..MemoryStoreOptions::default() })));
}
