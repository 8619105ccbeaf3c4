#![allow(dead_code)]
//! Helpers shared by the integration tests.

use batpak::prelude::*;
use std::path::Path;

pub fn coord(entity: &str, scope: &str) -> Coordinate {
    Coordinate::new(entity, scope).expect("valid coordinate")
}

pub const KIND_A: EventKind = EventKind::custom(1, 1);
pub const KIND_B: EventKind = EventKind::custom(2, 7);

pub fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store")
}

pub fn open_with(dir: &Path, f: impl FnOnce(StoreConfig) -> StoreConfig) -> Store {
    Store::open(f(StoreConfig::new(dir))).expect("open store")
}

/// Segment files of a store directory, sorted by name.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Names of every file in a directory.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
