//! `batpak export`: every event as one line of NDJSON, in global order, and
//! the line format itself ([`Line`]), which `import` reads back. Works on a
//! directory (`--dir`) or a PostgreSQL store (`--url`).
//!
//! # Line format, version 1
//!
//! One JSON object per line:
//!
//! ```text
//! {"v":1,"event_id":"<32 hex>","correlation_id":"<32 hex>","causation_id":"<32 hex>"|null,
//!  "entity":"order:1","scope":"tenant:a","kind":4097,"flags":0,
//!  "timestamp_us":1714567890123456,"clock":1,"global_sequence":0,
//!  "hlc_counter":0,"content_hash":"<64 hex>","prev_hash":"<64 hex>","event_hash":"<64 hex>",
//!  "payload_version":2,"payload":<any JSON>}
//! ```
//!
//! `kind` is the raw u16, `flags` the user flag byte, `clock` the entity
//! clock, `global_sequence` the source store's (a PostgreSQL position there).
//! `hlc_counter` and the three hashes were added within version 1: with them
//! `import` keeps every clock, time and hash and checks the chain; exports
//! without them import as plain appends. `payload_version` (the version the
//! payload was written at, which the event hash covers) was added within
//! version 1 too, and is written only when it is not 1: a line without it is
//! version 1. Readers must reject a `v` they do
//! not know; fields may be added within a version, so readers ignore fields
//! they do not know.

use crate::output::{hex_bytes, hex_id, progress};
use crate::store_access::{open_for_inspection, Inspected};
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use batpak_postgres::PgStore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// The line format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One exported event (see the module documentation).
#[derive(Serialize, Deserialize)]
pub struct Line {
    pub v: u32,
    pub event_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub entity: String,
    pub scope: String,
    pub kind: u16,
    pub flags: u8,
    pub timestamp_us: i64,
    pub clock: u32,
    pub global_sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc_counter: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<u16>,
    pub payload: serde_json::Value,
}

impl Line {
    fn new(entry: &IndexEntry, versioned: VersionedEvent) -> Self {
        let ev = versioned.event;
        let h = ev.event.header;
        let chain = ev.event.hash_chain.unwrap_or_default();
        Self {
            v: FORMAT_VERSION,
            event_id: hex_id(h.event_id),
            correlation_id: hex_id(h.correlation_id),
            causation_id: h.causation_id.map(hex_id),
            entity: ev.coordinate.entity().to_string(),
            scope: ev.coordinate.scope().to_string(),
            kind: h.event_kind.raw(),
            flags: h.flags,
            timestamp_us: h.timestamp_us,
            clock: h.position.sequence,
            global_sequence: entry.global_sequence,
            hlc_counter: Some(h.position.counter),
            content_hash: Some(hex_bytes(&h.content_hash)),
            prev_hash: Some(hex_bytes(&chain.prev_hash)),
            event_hash: Some(hex_bytes(&chain.event_hash)),
            payload_version: (versioned.payload_version != 1).then_some(versioned.payload_version),
            payload: ev.event.payload,
        }
    }
}

/// Arguments of `batpak export`.
#[derive(clap::Args)]
pub struct Args {
    /// Write to FILE (replaced only once the export is complete) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let inspected = open_for_inspection(global)?;
    let place = inspected.place();
    let write = |out: &mut dyn Write| -> anyhow::Result<u64> {
        match &inspected {
            Inspected::File { store, .. } => {
                let total = store.stats().event_count as u64;
                export(store, total, out)?;
                Ok(total)
            }
            Inspected::Postgres { store, .. } => export_postgres(store, out),
        }
    };
    match &args.out {
        None => {
            let mut out = crate::output::stdout();
            let total = write(&mut out)?;
            out.flush()?;
            eprintln!("exported {total} events from {place}");
        }
        Some(path) => {
            // A temporary file beside the target, renamed at the end, so an
            // interrupted export never leaves a truncated file under FILE.
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(&parent)
                .with_context(|| format!("cannot create a file in {}", parent.display()))?;
            let mut w = BufWriter::new(tmp);
            let total = write(&mut w)?;
            let tmp = w.into_inner().map_err(|e| e.into_error())?;
            tmp.as_file().sync_all()?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            if global.json {
                let mut out = crate::output::stdout();
                writeln!(
                    out,
                    "{}",
                    json!({"exported": total, "out": path.display().to_string()})
                )?;
                out.flush()?;
            } else {
                eprintln!("exported {total} events from {place} to {}", path.display());
            }
        }
    }
    Ok(())
}

fn write_line(out: &mut dyn Write, entry: &IndexEntry, ev: VersionedEvent) -> anyhow::Result<()> {
    // Serialized apart from the write so an I/O error (a closed pipe)
    // stays an io::Error rather than disappearing into serde's error.
    let mut line = serde_json::to_vec(&Line::new(entry, ev))?;
    line.push(b'\n');
    out.write_all(&line)?;
    Ok(())
}

/// Every event of a PostgreSQL store that committed before the export
/// began (everything below the stable bound then), in position order.
/// Appends may continue meanwhile; they are not in the export.
fn export_postgres(store: &PgStore, out: &mut dyn Write) -> anyhow::Result<u64> {
    let end = store.stable_position()?;
    let bar = progress(Some(store.describe()?.event_count), "exporting");
    let mut after = None;
    let mut written = 0u64;
    loop {
        let page = store.read_stable(&Region::all(), after, 1024)?;
        let entries: Vec<IndexEntry> = page
            .entries
            .into_iter()
            .take_while(|e| e.global_sequence < end)
            .collect();
        let Some(last) = entries.last() else {
            break;
        };
        after = Some(last.global_sequence);
        for entry in &entries {
            let ev = store
                .get_versioned(entry.event_id)
                .with_context(|| format!("cannot read event {}", hex_id(entry.event_id)))?;
            write_line(out, entry, ev)?;
        }
        written += entries.len() as u64;
        bar.set_position(written);
    }
    bar.finish_and_clear();
    Ok(written)
}

/// Write every event visible at open, in global order.
fn export(store: &Store, total: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    let bar = progress(Some(total), "exporting");
    let mut cursor = store.cursor_guaranteed(&Region::all());
    let mut written = 0u64;
    loop {
        let batch = cursor.poll_batch(1024);
        if batch.is_empty() {
            break;
        }
        for entry in &batch {
            let ev = store
                .get_versioned(entry.event_id)
                .with_context(|| format!("cannot read event {}", hex_id(entry.event_id)))?;
            write_line(out, entry, ev)?;
        }
        written += batch.len() as u64;
        bar.set_position(written);
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        written == total,
        "exported {written} events but the store reported {total}"
    );
    Ok(())
}
