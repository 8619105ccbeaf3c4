//! `batpak compact`: pack the sealed segments into fewer files and, with
//! `--drop-*` filters, remove (`retention`) or redact (`tombstone`) the
//! events they match. Needs the store's lock (the owner can compact in-process instead).

use crate::filter::{parse_category, parse_kind};
use crate::output::{progress, stdout};
use crate::store_access::{open_writable, require_store, UsageError};
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use serde_json::json;
use std::io::Write;

/// What happens to events the `--drop-*` filters match.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Strategy {
    /// Merge only; every event stays.
    Merge,
    /// Remove matching events (their ids stay reserved).
    Retention,
    /// Redact matching events (kind TOMBSTONE, payload removed, chain intact).
    Tombstone,
}

/// Arguments of `batpak compact`.
#[derive(clap::Args)]
pub struct Args {
    /// What to do with the events the --drop filters match.
    #[arg(long, value_enum, default_value = "merge")]
    strategy: Strategy,
    /// Do nothing unless at least this many sealed segments exist.
    #[arg(long, default_value_t = 2)]
    min_segments: usize,
    /// Bytes of events one compacted segment holds at most (default: 16
    /// times the segment size, at most 1 GiB).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    target_segment_bytes: Option<u64>,
    /// Match events of this kind (hex like 0x1007, or decimal).
    #[arg(long, value_parser = parse_kind)]
    drop_kind: Vec<EventKind>,
    /// Match events of this kind category (0-15).
    #[arg(long, value_parser = parse_category)]
    drop_category: Vec<u8>,
    /// Match events whose entity starts with this prefix.
    #[arg(long)]
    drop_entity_prefix: Vec<String>,
    /// Match events in this scope.
    #[arg(long)]
    drop_scope: Vec<String>,
    /// Match events older than this many days.
    #[arg(long)]
    drop_older_than_days: Option<u64>,
}

impl Args {
    fn has_filters(&self) -> bool {
        !self.drop_kind.is_empty()
            || !self.drop_category.is_empty()
            || !self.drop_entity_prefix.is_empty()
            || !self.drop_scope.is_empty()
            || self.drop_older_than_days.is_some()
    }

    /// `true` keeps the event (the predicate compaction wants).
    fn keep(&self) -> impl Fn(&StoredEvent<serde_json::Value>) -> bool + Send + 'static {
        let kinds = self.drop_kind.clone();
        let categories = self.drop_category.clone();
        let prefixes = self.drop_entity_prefix.clone();
        let scopes = self.drop_scope.clone();
        let cutoff_us = self.drop_older_than_days.map(|d| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_micros() as i64);
            now - (d as i64) * 86_400_000_000
        });
        move |e| {
            let kind = e.event.header.event_kind;
            let matched = kinds.contains(&kind)
                || categories.contains(&kind.category())
                || prefixes
                    .iter()
                    .any(|p| e.coordinate.entity().starts_with(p.as_str()))
                || scopes.iter().any(|s| e.coordinate.scope() == s)
                || cutoff_us.is_some_and(|c| e.event.header.timestamp_us < c);
            !matched
        }
    }
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let strategy = match args.strategy {
        Strategy::Merge if args.has_filters() => {
            return Err(UsageError(
                "--drop-* filters need --strategy retention or tombstone".into(),
            )
            .into())
        }
        Strategy::Merge => CompactionStrategy::Merge,
        _ if !args.has_filters() => {
            return Err(UsageError(
                "--strategy retention/tombstone needs at least one --drop-* filter".into(),
            )
            .into())
        }
        Strategy::Retention => CompactionStrategy::Retention(Box::new(args.keep())),
        Strategy::Tombstone => CompactionStrategy::Tombstone(Box::new(args.keep())),
    };
    let dir = global.store_dir();
    require_store(&dir)?;
    let mut config = StoreConfig::new(&dir);
    config.compaction_target_bytes = args.target_segment_bytes;
    let store = open_writable(config)?;
    let before = store.diagnostics().segment_count;
    let spinner = (!global.json).then(|| progress(None, "compacting"));
    let result = store.compact(&CompactionConfig {
        strategy,
        min_segments: args.min_segments,
    });
    if let Some(p) = spinner {
        p.finish_and_clear();
    }
    let result = result.with_context(|| format!("compaction of {} failed", dir.display()))?;
    let after = store.diagnostics().segment_count;
    store
        .close()
        .context("closing the store after compaction")?;
    let mut out = stdout();
    if global.json {
        let v = json!({
            "segments_before": before,
            "segments_after": after,
            "segments_removed": result.segments_removed,
            "bytes_reclaimed": result.bytes_reclaimed,
            "events_removed": result.events_removed,
            "events_tombstoned": result.events_tombstoned,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "segments {before} -> {after} ({} removed), {} bytes reclaimed, {} events removed, {} redacted",
            result.segments_removed,
            result.bytes_reclaimed,
            result.events_removed,
            result.events_tombstoned
        )?;
    }
    out.flush()?;
    Ok(())
}
