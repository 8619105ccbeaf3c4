//! `batpak stats`: the store's counters, index memory, disk use and what the
//! read-only open found (recovery report), as a table or one JSON object;
//! for a PostgreSQL store (`--url`), its counters, positions and table size.

use crate::output::{stdout, Table};
use crate::store_access::{open_for_inspection, Inspected};
use crate::Global;
use batpak_postgres::PgStore;
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// Arguments of `batpak stats`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(global: &Global, _args: &Args) -> anyhow::Result<()> {
    let (store, dir) = match open_for_inspection(global)? {
        Inspected::File { store, dir } => (store, dir),
        Inspected::Postgres { store, place } => return postgres(global, &store, &place),
    };
    let d = store.diagnostics();
    let r = &d.recovery;
    let disk_bytes = dir_bytes(&dir)?;
    let open_path = format!("{:?}", r.open_path);
    let damaged: Vec<_> = r
        .damaged
        .iter()
        .map(|x| {
            json!({"segment_id": x.segment_id, "offset": x.offset, "length": x.length, "detail": x.detail})
        })
        .collect();
    let tail = r
        .truncated_tail
        .as_ref()
        .map(|t| json!({"segment_id": t.segment_id, "offset": t.offset, "length": t.length}));

    let mut out = stdout();
    if global.json {
        let v = json!({
            "dir": dir.display().to_string(),
            "event_count": d.event_count,
            "next_global_sequence": d.global_sequence,
            "entity_count": d.entity_count,
            "segment_count": d.segment_count,
            "disk_bytes": disk_bytes,
            "index_heap_bytes": d.index_heap_bytes,
            "index_bytes_per_event": d.index_bytes_per_event,
            "recovery": {
                "open_path": open_path,
                "elapsed_us": r.elapsed_us,
                "events_recovered": r.events_recovered,
                "events_from_checkpoint": r.events_from_checkpoint,
                "checkpoint_rejected": r.checkpoint_rejected,
                "segments_from_footers": r.segments_from_footers,
                "footers_rejected": r.footers_rejected,
                "segments_scanned": r.segments_scanned,
                "damaged": damaged,
                "truncated_tail": tail,
                "discarded_batch_events": r.discarded_batch_events,
                "chain_breaks": r.chain_breaks,
                "removed_events": r.removed_events,
            },
        });
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(());
    }

    let s = global.style;
    let mut t = Table::new(&[("", false), ("", false)]);
    let mut row = |k: &str, v: String| t.push(vec![k.to_string(), v]);
    row("store", dir.display().to_string());
    row("events", d.event_count.to_string());
    row("next sequence", d.global_sequence.to_string());
    row("entities", d.entity_count.to_string());
    row("segments", d.segment_count.to_string());
    row("files on disk", human_bytes(disk_bytes));
    row(
        "index memory",
        format!(
            "{} ({:.1} bytes/event)",
            human_bytes(d.index_heap_bytes as u64),
            d.index_bytes_per_event
        ),
    );
    row(
        "opened via",
        format!("{open_path} in {:.1} ms", r.elapsed_us as f64 / 1000.0),
    );
    row(
        "index rebuilt",
        format!(
            "{} events from the checkpoint + {} from segments ({} read via footers, {} scanned)",
            r.events_from_checkpoint,
            r.events_recovered,
            r.segments_from_footers,
            r.segments_scanned
        ),
    );
    if let Some(why) = &r.checkpoint_rejected {
        row("checkpoint", format!("rejected: {why}"));
    }
    let problems = [
        ("footers rejected", r.footers_rejected as u64),
        ("damaged regions", r.damaged.len() as u64),
        ("discarded batch", r.discarded_batch_events),
        ("chain breaks", r.chain_breaks),
        ("removed events", r.removed_events),
    ];
    for (k, n) in problems {
        if n > 0 {
            row(k, n.to_string());
        }
    }
    if let Some(tail) = &r.truncated_tail {
        row(
            "torn tail",
            format!(
                "segment {} at {} ({} bytes, ignored)",
                tail.segment_id, tail.offset, tail.length
            ),
        );
    }
    print_rows(&mut out, &t, s)
}

/// `stats` of a PostgreSQL store.
fn postgres(global: &Global, store: &PgStore, place: &str) -> anyhow::Result<()> {
    let i = store.describe()?;
    let mut out = stdout();
    if global.json {
        let v = json!({
            "store": place,
            "schema": i.schema,
            "schema_version": i.schema_version,
            "event_count": i.event_count,
            "next_position": i.next_position,
            "stable_position": i.stable_position,
            "entity_count": i.entity_count,
            "table_bytes": i.table_bytes,
        });
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(());
    }
    let s = global.style;
    let mut t = Table::new(&[("", false), ("", false)]);
    let mut row = |k: &str, v: String| t.push(vec![k.to_string(), v]);
    row("store", place.to_owned());
    row("schema version", i.schema_version.to_string());
    row("events", i.event_count.to_string());
    row("entities", i.entity_count.to_string());
    row("next position", i.next_position.to_string());
    row(
        "stable below",
        format!(
            "{} (no event can still commit below this position)",
            i.stable_position
        ),
    );
    row("tables and indexes", human_bytes(i.table_bytes));
    print_rows(&mut out, &t, s)
}

/// A two-column key/value table: its rows only (a header would say
/// nothing), keys in bold.
fn print_rows(out: &mut impl Write, t: &Table, s: crate::output::Style) -> anyhow::Result<()> {
    let widths = t.widths();
    for cells in t.rows() {
        writeln!(
            out,
            "{}",
            t.line(cells, &widths, |i, v| if i == 0 {
                s.bold(v)
            } else {
                v.into()
            })
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Bytes of the files directly in `dir` (segments, checkpoint, records).
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
