//! Shared formatting: ids, times, colours, event tables, the JSON form of an
//! index entry, buffered stdout and progress bars. Nothing here touches a store.

use batpak::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{BufWriter, StdoutLock, Write};

/// A short, readable form of a UUID-sized id: the last 12 hex digits.
pub fn short_id(id: u128) -> String {
    let hex = format!("{id:032x}");
    format!("…{}", &hex[20..])
}

/// The full id as 32 lowercase hex digits (what `get` and `graph` accept).
pub fn hex_id(id: u128) -> String {
    format!("{id:032x}")
}

/// Lowercase hex of a hash.
pub fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch as UTC ISO-8601 (`2024-05-01T12:34:56.789Z`).
pub fn iso_utc(wall_ms: u64) -> String {
    let secs = wall_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let (y, m, d) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        wall_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar: Howard Hinnant's `civil_from_days`, which works in 400-year eras
/// starting on March 1st so that leap days fall at the end of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // In range by construction (1..=12, 1..=31); the fallback is never taken.
    let m = u32::try_from(m).unwrap_or(1);
    let d = u32::try_from(d).unwrap_or(1);
    (y, m, d)
}

/// ANSI colours, enabled only when stdout is a terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    on: bool,
}

impl Style {
    pub fn for_stdout(on: bool) -> Self {
        Self { on }
    }

    fn paint(self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn cyan(self, s: &str) -> String {
        self.paint("36", s)
    }
    pub fn green(self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }
}

/// A text table: columns sized to their widest cell, colour applied after
/// padding so escape codes never disturb the alignment.
pub struct Table {
    headers: Vec<&'static str>,
    right_aligned: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `columns`: (header, right-aligned).
    pub fn new(columns: &[(&'static str, bool)]) -> Self {
        Self {
            headers: columns.iter().map(|c| c.0).collect(),
            right_aligned: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(slot) = w.get_mut(i) {
                    *slot = (*slot).max(cell.chars().count());
                }
            }
        }
        w
    }

    /// One line with the given widths; `paint` colours cell `i` after padding.
    pub fn line(
        &self,
        cells: &[String],
        widths: &[usize],
        paint: impl Fn(usize, &str) -> String,
    ) -> String {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let right = self.right_aligned.get(i).copied().unwrap_or(false);
            let padded = if right {
                format!("{cell:>w$}")
            } else if i == last {
                // No trailing spaces at the end of a line.
                cell.clone()
            } else {
                format!("{cell:<w$}")
            };
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(&paint(i, &padded));
        }
        // Empty trailing cells would leave trailing spaces.
        out.truncate(out.trim_end().len());
        out
    }

    pub fn header_line(&self, widths: &[usize], style: Style) -> String {
        let cells: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        self.line(&cells, widths, |_, s| style.bold(s))
    }

    /// Header, then every row; `paint` as in [`Table::line`].
    pub fn write(
        &self,
        out: &mut impl Write,
        style: Style,
        paint: impl Fn(usize, &str) -> String,
    ) -> std::io::Result<()> {
        let widths = self.widths();
        writeln!(out, "{}", self.header_line(&widths, style))?;
        for row in &self.rows {
            writeln!(out, "{}", self.line(row, &widths, &paint))?;
        }
        Ok(())
    }
}

/// Columns of an event listing.
pub const ENTRY_COLUMNS: [(&str, bool); 8] = [
    ("seq", true),
    ("entity", false),
    ("scope", false),
    ("kind", false),
    ("clock", true),
    ("time", false),
    ("id", false),
    ("caused by", false),
];

/// Widths used when rows are printed as they come (no look-ahead possible).
pub const ENTRY_MIN_WIDTHS: [usize; 8] = [5, 14, 14, 6, 5, 24, 13, 13];

/// The cells of one event row.
pub fn entry_cells(e: &IndexEntry, full_ids: bool) -> Vec<String> {
    let id = |i: u128| if full_ids { hex_id(i) } else { short_id(i) };
    vec![
        e.global_sequence.to_string(),
        e.coord.entity().to_string(),
        e.coord.scope().to_string(),
        e.kind.to_string(),
        e.clock.to_string(),
        iso_utc(e.wall_ms),
        id(e.event_id),
        e.causation_id.map_or_else(|| "-".to_string(), id),
    ]
}

/// Colours of an event row, by column.
pub fn paint_entry_cell(style: Style, column: usize, s: &str) -> String {
    match column {
        0 | 5 => style.dim(s),
        3 => style.cyan(s),
        6 => style.yellow(s),
        7 => style.dim(s),
        _ => s.to_string(),
    }
}

/// One index entry as a table row, at the streaming widths (no colour).
pub fn entry_row(e: &IndexEntry) -> String {
    let t = Table::new(&ENTRY_COLUMNS);
    t.line(&entry_cells(e, false), &ENTRY_MIN_WIDTHS, |_, s| {
        s.to_string()
    })
}

/// Header matching [`entry_row`].
pub fn entry_header() -> String {
    Table::new(&ENTRY_COLUMNS).header_line(&ENTRY_MIN_WIDTHS, Style::default())
}

/// An index entry as a JSON object (ids as full hex strings).
pub fn entry_json(e: &IndexEntry) -> serde_json::Value {
    json!({
        "global_sequence": e.global_sequence,
        "event_id": hex_id(e.event_id),
        "correlation_id": hex_id(e.correlation_id),
        "causation_id": e.causation_id.map(hex_id),
        "entity": e.coord.entity(),
        "scope": e.coord.scope(),
        "kind": e.kind.raw(),
        "kind_hex": e.kind.to_string(),
        "category": e.kind.category(),
        "clock": e.clock,
        "wall_ms": e.wall_ms,
        "time": iso_utc(e.wall_ms),
        "prev_hash": hex_bytes(&e.hash_chain.prev_hash),
        "event_hash": hex_bytes(&e.hash_chain.event_hash),
    })
}

/// Buffered, locked stdout; callers flush (or drop) when done.
pub fn stdout() -> BufWriter<StdoutLock<'static>> {
    BufWriter::new(std::io::stdout().lock())
}

/// A progress bar on stderr (drawn only when stderr is a terminal);
/// `len = None` gives a spinner with a counter.
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg:>10} [{bar:32}] {pos}/{len} ({per_sec}, eta {eta})",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg:>10} {spinner} {pos} ({per_sec})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(iso_utc(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(1_735_689_599_000), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn ids() {
        assert_eq!(hex_id(0xab).len(), 32);
        assert_eq!(short_id(0xab), "…0000000000ab");
    }
}
