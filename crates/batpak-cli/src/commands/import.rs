//! `batpak import`: the events of an export (line format in `export.rs`)
//! into the store in `--dir`, or in PostgreSQL with `--url` (created if
//! missing), skipping those already present.
//!
//! Lines that carry their hashes (every export of this version) are
//! imported as they are: ids, links, kind, flags, payload, entity clock,
//! timestamp, payload version and hashes are kept, and each event must
//! continue its entity's chain in the target
//! (`EventStore::import_versioned_events`); they go in groups of
//! up to 256, each group atomic. Older lines without hashes are appended
//! with their id as idempotency key (clock and time assigned anew). Either
//! way an event's id is its key, so importing twice, or re-running an
//! interrupted import, writes nothing twice.

use super::export::{Line, FORMAT_VERSION};
use crate::filter::parse_id;
use crate::output::{hex_id, progress};
use crate::store_access::{open_postgres_writable, open_writable, postgres_place};
use crate::Global;
use anyhow::Context;
use batpak::coordinate::DagPosition;
use batpak::event::{Event, EventHeader, HashChain};
use batpak::prelude::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

/// Events per atomic group.
const GROUP: usize = 256;
/// Payload bytes per group (as JSON text, larger than the stored encoding),
/// under the stores' default `batch.max_bytes` of 1 MiB.
const GROUP_BYTES: usize = 512 * 1024;

/// Arguments of `batpak import`.
#[derive(clap::Args)]
#[command(after_help = "\
Kept: event ids, correlation and causation ids, entity, scope, kind, flags, payload,
entity clocks, timestamps and hashes; each event must continue its entity's chain in
the target (import into an empty store, or one that holds the events before them).
Assigned anew: global sequences (positions in PostgreSQL).
Exports from before hashes were written are appended instead: clocks and timestamps
are then assigned anew (an entity's events keep their relative order).
Redacted (tombstoned) events cannot be imported: their original kind is not exported.
Events already in the store (same id) are skipped, so importing twice is harmless;
an id already used for a different entity or kind is an error.
Into a directory, appends are synced in groups and once more at the end: if the
import is interrupted, run it again.")]
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
    let (reader, len): (Box<dyn Read>, Option<u64>) = match &args.input {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    let (counts, place) = match global.postgres() {
        Some(config) => {
            let place = postgres_place(&config);
            let store = open_postgres_writable(config)?;
            let counts = import(&store, BufReader::new(reader), len)?;
            store.close()?;
            (counts, place)
        }
        None => {
            let dir = global.store_dir();
            // Relaxed syncing: the import is idempotent, so a crash costs a
            // re-run, not data, and one sync per event would make large
            // imports crawl.
            let config = StoreConfig::new(&dir).with_sync_every_n_events(1024);
            let store = open_writable(config)?;
            let counts = import(&store, BufReader::new(reader), len)?;
            store
                .close()
                .with_context(|| format!("cannot close the store at {}", dir.display()))?;
            (counts, dir.display().to_string())
        }
    };

    let mut out = crate::output::stdout();
    if global.json {
        writeln!(
            out,
            "{}",
            json!({
                "imported": counts.imported,
                "already_present": counts.present,
                "store": place,
            })
        )?;
    } else {
        let s = global.style;
        writeln!(
            out,
            "{} {} events into {} ({} already present)",
            s.green("imported"),
            counts.imported,
            place,
            counts.present
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Events waiting to be imported together, with the lines they came from.
#[derive(Default)]
struct Group {
    events: Vec<VersionedEvent>,
    lines: Vec<u64>,
    bytes: usize,
}

fn import<S: EventStore>(
    store: &S,
    mut reader: impl BufRead,
    len: Option<u64>,
) -> anyhow::Result<Counts> {
    // Progress in bytes when the size is known, in events otherwise.
    let bar = progress(len, "importing");
    let mut counts = Counts::default();
    let mut group = Group::default();
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
        anyhow::ensure!(
            line.v == FORMAT_VERSION,
            "line {line_no}: format version {} is not supported (this batpak reads version \
             {FORMAT_VERSION})",
            line.v
        );
        match stored_event(&line).with_context(|| format!("cannot import line {line_no}"))? {
            Some(ev) => {
                if group.events.len() == GROUP || group.bytes + buf.len() > GROUP_BYTES {
                    flush(store, &mut group, &mut counts)?;
                }
                group.bytes += buf.len();
                group.events.push(ev);
                group.lines.push(line_no);
            }
            None => {
                // An older line: everything before it goes first.
                flush(store, &mut group, &mut counts)?;
                let is_new = append_line(store, &line)
                    .with_context(|| format!("cannot import line {line_no}"))?;
                if is_new {
                    counts.imported += 1;
                } else {
                    counts.present += 1;
                }
            }
        }
        bar.inc(if len.is_some() { n as u64 } else { 1 });
    }
    flush(store, &mut group, &mut counts)?;
    bar.finish_and_clear();
    Ok(counts)
}

/// Import the waiting group, atomically; if only some of its events are
/// already present (an earlier import stopped inside it), one by one.
fn flush<S: EventStore>(store: &S, group: &mut Group, counts: &mut Counts) -> anyhow::Result<()> {
    if group.events.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(&mut group.events);
    let lines = std::mem::take(&mut group.lines);
    group.bytes = 0;
    // A new event gets a sequence above everything stored before the call;
    // one already present answers with its old one.
    let next = store.stats()?.global_sequence;
    let count = |receipts: &[AppendReceipt], counts: &mut Counts| {
        for r in receipts {
            if r.sequence >= next {
                counts.imported += 1;
            } else {
                counts.present += 1;
            }
        }
    };
    match store.import_versioned_events(events.clone()) {
        Ok(receipts) => {
            count(&receipts, counts);
            Ok(())
        }
        Err(StoreError::BatchFailed { source, .. })
            if matches!(*source, StoreError::InvalidBatch(_)) && events.len() > 1 =>
        {
            for (ev, line) in events.into_iter().zip(lines) {
                let receipts = store
                    .import_versioned_events(vec![ev])
                    .with_context(|| format!("cannot import line {line}"))?;
                count(&receipts, counts);
            }
            Ok(())
        }
        Err(StoreError::BatchFailed {
            item_index, source, ..
        }) => Err(anyhow::Error::new(*source).context(format!(
            "cannot import line {}",
            lines.get(item_index).copied().unwrap_or_default()
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot import line {}",
            lines.first().copied().unwrap_or_default()
        ))),
    }
}

fn parse_hash(s: &str) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(s.len() == 64, "a hash has 64 hex digits, not {}", s.len());
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| anyhow::anyhow!("{s:?} is not a hex hash"))?;
    }
    Ok(out)
}

/// The event a line describes completely, or `None` for an older line
/// without its hashes.
fn stored_event(line: &Line) -> anyhow::Result<Option<VersionedEvent>> {
    let (Some(hlc), Some(content), Some(prev), Some(hash)) = (
        line.hlc_counter,
        &line.content_hash,
        &line.prev_hash,
        &line.event_hash,
    ) else {
        return Ok(None);
    };
    let id = |s: &str| parse_id(s).map_err(anyhow::Error::msg);
    let wall_ms = u64::try_from(line.timestamp_us).unwrap_or(0) / 1000;
    let payload_size = batpak::store::codec::encode_payload(&line.payload)?.len();
    let mut header = EventHeader::new(
        id(&line.event_id)?,
        id(&line.correlation_id)?,
        line.causation_id.as_deref().map(id).transpose()?,
        line.timestamp_us,
        DagPosition::child_at(line.clock, wall_ms, hlc),
        u32::try_from(payload_size).context("payload too large")?,
        EventKind::from_raw(line.kind),
    )
    .with_flags(line.flags);
    header.content_hash = parse_hash(content)?;
    let event = StoredEvent {
        coordinate: Coordinate::new(&line.entity, &line.scope)?,
        event: Event::new(header, line.payload.clone()).with_hash_chain(HashChain {
            prev_hash: parse_hash(prev)?,
            event_hash: parse_hash(hash)?,
        }),
    };
    Ok(Some(VersionedEvent {
        event,
        payload_version: line.payload_version.unwrap_or(1),
    }))
}

/// Append an older line's event with its id as idempotency key; false if
/// the store already held it.
fn append_line<S: EventStore>(store: &S, line: &Line) -> anyhow::Result<bool> {
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
    let next = store.stats()?.global_sequence;
    let receipt = store
        .append_versioned(
            &coord,
            EventKind::from_raw(line.kind),
            &line.payload,
            line.payload_version.unwrap_or(1),
            opts,
        )
        .with_context(|| format!("event {}", hex_id(event_id)))?;
    Ok(receipt.sequence >= next)
}
