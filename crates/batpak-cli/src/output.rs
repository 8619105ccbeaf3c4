//! Shared formatting for human-readable output.

use batpak::prelude::*;

/// A short, readable form of a UUID-sized id: the last 12 hex digits.
pub fn short_id(id: u128) -> String {
    let hex = format!("{id:032x}");
    format!("…{}", &hex[20..])
}

/// One index entry as a table row.
pub fn entry_row(e: &IndexEntry) -> String {
    format!(
        "{:>5}  {:<14} {:<14} {:<8} {:>5}  {:<13} {}",
        e.global_sequence,
        e.coord.entity(),
        e.coord.scope(),
        e.kind.to_string(),
        e.clock,
        short_id(e.event_id),
        e.causation_id.map_or_else(|| "-".to_string(), short_id),
    )
}

/// Header matching [`entry_row`].
pub fn entry_header() -> String {
    format!(
        "{:>5}  {:<14} {:<14} {:<8} {:>5}  {:<13} {}",
        "seq", "entity", "scope", "kind", "clock", "id", "caused by"
    )
}
