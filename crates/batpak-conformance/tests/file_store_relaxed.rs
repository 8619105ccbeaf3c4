//! The conformance checks against the file store in relaxed mode
//! (`sync.every_n_events > 1`), where events are visible once written,
//! before they are synced: every promise of the contract (batches seen
//! whole, CAS, keys, order) must hold there too.

mod support;

use batpak::prelude::*;
use batpak_conformance::{Harness, Settings};

struct RelaxedFileStore {
    dir: tempfile::TempDir,
}

impl Harness for RelaxedFileStore {
    type Store = Store;
    const NAME: &'static str = "file store, relaxed";
    const DENSE_SEQUENCES: bool = true;

    fn new() -> Option<Self> {
        Some(Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        })
    }

    fn open(&self, settings: &Settings) -> Store {
        Store::open(support::config(self.dir.path(), settings).with_sync_every_n_events(100))
            .expect("open store")
    }
}

batpak_conformance::conformance_tests!(RelaxedFileStore);
