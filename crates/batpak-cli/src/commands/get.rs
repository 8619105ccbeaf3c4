//! `batpak get ID`: one event in full (header, position on disk or in
//! PostgreSQL, hash chain, payload), from a read-only open.

use crate::filter::parse_id;
use crate::output::{hex_bytes, hex_id, iso_utc, stdout};
use crate::store_access::{get_event, open_for_inspection, Inspected};
use crate::Global;
use batpak::event::{FLAG_REPLAY, FLAG_REQUIRES_ACK, FLAG_TRANSACTIONAL};
use batpak::prelude::EventStore;
use serde_json::json;
use std::io::Write;

/// Arguments of `batpak get`.
#[derive(clap::Args)]
pub struct Args {
    /// Event id: 32 hex digits, optionally `event:`-prefixed or with UUID dashes.
    #[arg(value_parser = parse_id)]
    id: u128,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let inspected = open_for_inspection(global)?;
    let place = inspected.place();
    match inspected {
        Inspected::File { store, .. } => show(global, args, &store, &place, true),
        Inspected::Postgres { store, .. } => show(global, args, &*store, &place, false),
    }
}

fn show<S: EventStore>(
    global: &Global,
    args: &Args,
    store: &S,
    place: &str,
    on_disk: bool,
) -> anyhow::Result<()> {
    let ev = get_event(store, place, args.id, "event")?;
    let h = &ev.event.header;
    // The store has no lookup from id to index entry; the event's own
    // correlation tree holds it and is usually small.
    let entry = store
        .by_correlation(h.correlation_id)?
        .into_iter()
        .find(|e| e.event_id == args.id);
    let chain = ev.event.hash_chain.unwrap_or_default();
    let wall_ms = u64::try_from(h.timestamp_us / 1000).unwrap_or(0);
    let flag_names: Vec<&str> = [
        (FLAG_REQUIRES_ACK, "requires-ack"),
        (FLAG_TRANSACTIONAL, "transactional"),
        (FLAG_REPLAY, "replay"),
    ]
    .iter()
    .filter(|(bit, _)| h.flags & bit != 0)
    .map(|&(_, name)| name)
    .collect();

    let mut out = stdout();
    if global.json {
        let v = json!({
            "event_id": hex_id(h.event_id),
            "correlation_id": hex_id(h.correlation_id),
            "causation_id": h.causation_id.map(hex_id),
            "entity": ev.coordinate.entity(),
            "scope": ev.coordinate.scope(),
            "kind": h.event_kind.raw(),
            "kind_hex": h.event_kind.to_string(),
            "category": h.event_kind.category(),
            "flags": h.flags,
            "timestamp_us": h.timestamp_us,
            "time": iso_utc(wall_ms),
            "clock": h.position.sequence,
            "hlc_counter": h.position.counter,
            "global_sequence": entry.as_ref().map(|e| e.global_sequence),
            "segment_id": entry.as_ref().filter(|_| on_disk).map(|e| e.disk_pos.segment_id),
            "offset": entry.as_ref().filter(|_| on_disk).map(|e| e.disk_pos.offset),
            "frame_bytes": entry.as_ref().filter(|_| on_disk).map(|e| e.disk_pos.length),
            "payload_size": h.payload_size,
            "content_hash": hex_bytes(&h.content_hash),
            "prev_hash": hex_bytes(&chain.prev_hash),
            "event_hash": hex_bytes(&chain.event_hash),
            "payload": ev.event.payload,
        });
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(());
    }

    let s = global.style;
    let mut field = |k: &str, v: String| writeln!(out, "{} {v}", s.bold(&format!("{k:<13}")));
    field("event", s.yellow(&hex_id(h.event_id)))?;
    field("entity", ev.coordinate.entity().to_string())?;
    field("scope", ev.coordinate.scope().to_string())?;
    field(
        "kind",
        format!(
            "{} {}",
            s.cyan(&h.event_kind.to_string()),
            s.dim(&format!(
                "(category {}, type {})",
                h.event_kind.category(),
                h.event_kind.type_id()
            ))
        ),
    )?;
    field(
        "clock",
        format!(
            "{} (hlc counter {})",
            h.position.sequence, h.position.counter
        ),
    )?;
    field(
        "time",
        format!("{} ({} µs)", iso_utc(wall_ms), h.timestamp_us),
    )?;
    if let Some(e) = &entry {
        if on_disk {
            field(
                "sequence",
                format!(
                    "{} (segment {}, offset {}, {} bytes)",
                    e.global_sequence, e.disk_pos.segment_id, e.disk_pos.offset, e.disk_pos.length
                ),
            )?;
        } else {
            field("position", e.global_sequence.to_string())?;
        }
    }
    let root = if h.correlation_id == h.event_id {
        " (this event is the root)"
    } else {
        ""
    };
    field("correlation", format!("{}{root}", hex_id(h.correlation_id)))?;
    field(
        "caused by",
        h.causation_id.map_or_else(|| "-".to_string(), hex_id),
    )?;
    field(
        "flags",
        if flag_names.is_empty() {
            format!("{:#04x}", h.flags)
        } else {
            format!("{:#04x} ({})", h.flags, flag_names.join(", "))
        },
    )?;
    field("payload size", format!("{} bytes", h.payload_size))?;
    field("content hash", s.dim(&hex_bytes(&h.content_hash)))?;
    field("prev hash", s.dim(&hex_bytes(&chain.prev_hash)))?;
    field("event hash", s.dim(&hex_bytes(&chain.event_hash)))?;
    writeln!(out, "{}", s.bold("payload"))?;
    writeln!(out, "{}", serde_json::to_string_pretty(&ev.event.payload)?)?;
    out.flush()?;
    Ok(())
}
