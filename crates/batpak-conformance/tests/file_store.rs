//! The conformance checks against the embedded file store, in temporary
//! directories.

mod support;

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
        Store::open(support::config(self.dir.path(), settings)).expect("open store")
    }
}

batpak_conformance::conformance_tests!(FileStore);
