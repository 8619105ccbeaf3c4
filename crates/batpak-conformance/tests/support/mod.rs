//! What the file-store harnesses share: a store's config from a check's
//! settings.

use batpak::prelude::*;
use batpak_conformance::Settings;
use std::path::Path;

/// The config of a file store in `dir` with the check's `settings`, in
/// 64 KiB segments, so that checks writing more than that (the cursor under
/// concurrent writers writes ~110 KiB) also run across a segment rotation
/// and read from sealed segments.
pub fn config(dir: &Path, settings: &Settings) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir)
        .with_clock(settings.clock.clone())
        .with_segment_max_bytes(64 * 1024);
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
    cfg
}
