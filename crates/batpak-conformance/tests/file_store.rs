//! The conformance checks against the embedded file store, in temporary
//! directories.

use batpak::prelude::*;
use batpak_conformance::{Harness, Settings};

struct FileStore {
    dir: tempfile::TempDir,
}

impl Harness for FileStore {
    type Store = Store;
    const NAME: &'static str = "file store";
    const DENSE_SEQUENCES: bool = true;

    fn new() -> Option<Self> {
        Some(Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        })
    }

    fn open(&self, settings: &Settings) -> Store {
        let mut cfg = StoreConfig::new(self.dir.path()).with_clock(settings.clock.clone());
        if let Some(n) = settings.single_append_max_bytes {
            cfg = cfg.with_single_append_max_bytes(n);
        }
        if let Some(n) = settings.batch_max_size {
            cfg = cfg.with_batch_max_size(n);
        }
        if let Some(n) = settings.batch_max_bytes {
            cfg = cfg.with_batch_max_bytes(n);
        }
        if let Some(n) = settings.broadcast_capacity {
            cfg = cfg.with_broadcast_capacity(n);
        }
        Store::open(cfg).expect("open store")
    }
}

batpak_conformance::conformance_tests!(FileStore);
