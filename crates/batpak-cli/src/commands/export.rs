//! `batpak export`: every event as one line of NDJSON, in global order, and
//! the line format itself ([`Line`]), which `import` reads back.
//!
//! # Line format, version 1
//!
//! One JSON object per line:
//!
//! ```text
//! {"v":1,"event_id":"<32 hex>","correlation_id":"<32 hex>","causation_id":"<32 hex>"|null,
//!  "entity":"order:1","scope":"tenant:a","kind":4097,"flags":0,
//!  "timestamp_us":1714567890123456,"clock":1,"global_sequence":0,"payload":<any JSON>}
//! ```
//!
//! `kind` is the raw u16, `flags` the user flag byte, `clock` the entity
//! clock. Readers must reject a `v` they do not know; fields may be added
//! within a version, so readers ignore fields they do not know.

use crate::output::{hex_id, progress};
use crate::store_access::open_read_only;
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
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
    pub payload: serde_json::Value,
}

impl Line {
    fn new(entry: &IndexEntry, ev: StoredEvent<serde_json::Value>) -> Self {
        let h = ev.event.header;
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
    let dir = global.store_dir();
    let store = open_read_only(&dir)?;
    let total = store.stats().event_count as u64;
    match &args.out {
        None => {
            let mut out = crate::output::stdout();
            export(&store, total, &mut out)?;
            out.flush()?;
            eprintln!("exported {total} events from {}", dir.display());
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
            export(&store, total, &mut w)?;
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
                eprintln!(
                    "exported {total} events from {} to {}",
                    dir.display(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Write every event visible at open, in global order.
fn export(store: &Store, total: u64, out: &mut impl Write) -> anyhow::Result<()> {
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
                .get(entry.event_id)
                .with_context(|| format!("cannot read event {}", hex_id(entry.event_id)))?;
            // Serialized apart from the write so an I/O error (a closed pipe)
            // stays an io::Error rather than disappearing into serde's error.
            let mut line = serde_json::to_vec(&Line::new(entry, ev))?;
            line.push(b'\n');
            out.write_all(&line)?;
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
