//! `batpak import`: append the events of an export (line format in
//! `export.rs`) to the store in `--dir`, keeping their ids, causal links and
//! flags, and skipping those already present.
//!
//! Each event's id is its idempotency key, so the store itself recognises an
//! event it already holds and returns the original receipt: importing twice,
//! or re-running an interrupted import, writes nothing twice.

use super::export::{Line, FORMAT_VERSION};
use crate::filter::parse_id;
use crate::output::{hex_id, progress};
use crate::store_access::open_writable;
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

/// Arguments of `batpak import`.
#[derive(clap::Args)]
#[command(after_help = "\
Kept: event ids, correlation and causation ids, entity, scope, kind, flags and payload.
Assigned anew by the target store: global sequences, timestamps and entity clocks
(an entity's events keep their relative order when imported in export order).
Events already in the store (same id) are skipped, so importing twice is harmless;
an id already used for a different entity or kind is an error.
Appends are synced in groups and once more at the end: if the import is
interrupted, run it again.")]
pub struct Args {
    /// Read from FILE instead of stdin.
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
}

#[derive(Default)]
struct Counts {
    imported: u64,
    present: u64,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let dir = global.store_dir();
    let (reader, len): (Box<dyn Read>, Option<u64>) = match &args.input {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    // Relaxed syncing: the import is idempotent, so a crash costs a re-run,
    // not data, and one sync per event would make large imports crawl.
    let config = StoreConfig::new(&dir).with_sync_every_n_events(1024);
    let store = open_writable(config)?;
    let counts = import(&store, BufReader::new(reader), len)?;
    store
        .close()
        .with_context(|| format!("cannot close the store at {}", dir.display()))?;

    let mut out = crate::output::stdout();
    if global.json {
        writeln!(
            out,
            "{}",
            json!({
                "imported": counts.imported,
                "already_present": counts.present,
                "dir": dir.display().to_string(),
            })
        )?;
    } else {
        let s = global.style;
        writeln!(
            out,
            "{} {} events into {} ({} already present)",
            s.green("imported"),
            counts.imported,
            dir.display(),
            counts.present
        )?;
    }
    out.flush()?;
    Ok(())
}

fn import(store: &Store, mut reader: impl BufRead, len: Option<u64>) -> anyhow::Result<Counts> {
    // Progress in bytes when the size is known, in events otherwise.
    let bar = progress(len, "importing");
    let mut counts = Counts::default();
    let mut buf = String::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .context("cannot read the input")?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&buf)
            .with_context(|| format!("line {line_no} is not an exported event"))?;
        let is_new =
            import_line(store, &line).with_context(|| format!("cannot import line {line_no}"))?;
        if is_new {
            counts.imported += 1;
        } else {
            counts.present += 1;
        }
        bar.inc(if len.is_some() { n as u64 } else { 1 });
    }
    bar.finish_and_clear();
    Ok(counts)
}

/// Append one line's event; false if the store already held it.
fn import_line(store: &Store, line: &Line) -> anyhow::Result<bool> {
    anyhow::ensure!(
        line.v == FORMAT_VERSION,
        "format version {} is not supported (this batpak reads version {FORMAT_VERSION})",
        line.v
    );
    let id = |s: &str| parse_id(s).map_err(anyhow::Error::msg);
    let event_id = id(&line.event_id)?;
    let mut opts = AppendOptions::new()
        .with_idempotency(event_id)
        .with_correlation(id(&line.correlation_id)?)
        .with_flags(line.flags);
    if let Some(c) = &line.causation_id {
        opts = opts.with_causation(id(c)?);
    }
    let coord = Coordinate::new(&line.entity, &line.scope)?;
    // Only this process appends (it holds the lock), so a receipt below the
    // next free sequence can only be the original of an event already present.
    let next = store.stats().global_sequence;
    let receipt = store
        .append_with_options(&coord, EventKind::from_raw(line.kind), &line.payload, opts)
        .with_context(|| format!("event {}", hex_id(event_id)))?;
    Ok(receipt.sequence >= next)
}
