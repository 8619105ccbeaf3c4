//! `batpak tail`: print the matching events, then follow the ones appended
//! afterwards, until Ctrl-C, `--max` or `--timeout`.
//!
//! A directory: it opens the store read-only and, when idle, calls
//! `refresh()` every interval to index what the owner appended; a
//! guaranteed cursor started right after the last existing event delivers
//! each new one exactly once.
//!
//! PostgreSQL (`--url`): one guaranteed cursor lists the existing events
//! (everything stable when it starts) and then follows new ones from any
//! writer, woken by their notifications; listing and following through the
//! same cursor leaves no gap between them. A lost connection is reported
//! and retried; the cursor keeps its place.
//!
//! Ctrl-C simply ends the process (default SIGINT handling): output is
//! flushed after every batch and nothing is held that needs cleaning up.

use crate::filter::Filters;
use crate::output::{
    entry_cells, entry_json, paint_entry_cell, stdout, Table, ENTRY_COLUMNS, ENTRY_MIN_WIDTHS,
};
use crate::store_access::{open_for_inspection, open_read_only, Inspected};
use crate::Global;
use batpak::prelude::*;
use batpak_postgres::PgStore;
use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

/// Arguments of `batpak tail`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filters: Filters,
    /// Skip the existing events; print only those appended from now on.
    #[arg(long)]
    new_only: bool,
    /// Of the existing events, print only the last N.
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "new_only")]
    last: Option<usize>,
    /// Stop after printing N events in all (existing ones included).
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Stop after SECS seconds (fractions allowed).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// How often to look for new events, in milliseconds (with --url: how
    /// long to wait before retrying after a lost connection).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    interval_ms: u64,
    /// Show whole 32-digit ids instead of their last 12 digits.
    #[arg(long)]
    full_ids: bool,
}

/// Prints events one by one, counting them against `--max`.
struct Printer<'a> {
    global: &'a Global,
    args: &'a Args,
    table: Table,
    printed: u64,
}

impl Printer<'_> {
    fn done(&self) -> bool {
        self.args.max.is_some_and(|m| self.printed >= m)
    }

    fn print(&mut self, out: &mut impl Write, e: &IndexEntry) -> std::io::Result<()> {
        if self.done() {
            return Ok(());
        }
        let style = self.global.style;
        if self.global.json {
            writeln!(out, "{}", entry_json(e))?;
        } else {
            let cells = entry_cells(e, self.args.full_ids);
            let line = self.table.line(&cells, &ENTRY_MIN_WIDTHS, |i, s| {
                paint_entry_cell(style, i, s)
            });
            writeln!(out, "{line}")?;
        }
        self.printed += 1;
        Ok(())
    }
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let deadline = match args.timeout {
        // A timeout too long to be a point in time means "no time limit".
        Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| Instant::now().checked_add(d)),
        Some(secs) => anyhow::bail!("--timeout {secs} is not a number of seconds"),
        None => None,
    };
    if global.postgres().is_some() {
        let Inspected::Postgres { store, place } = open_for_inspection(global)? else {
            anyhow::bail!("--url did not open a PostgreSQL store");
        };
        return follow_postgres(global, args, &store, &place, deadline);
    }
    let dir = global.store_dir();
    let store = open_read_only(&dir)?;
    let region = args.filters.region();
    // The cursor starts after the newest event indexed at open, which is
    // exactly where the listing of existing events ends.
    let after = store.stats().global_sequence.checked_sub(1);

    let mut out = stdout();
    let mut printer = Printer {
        global,
        args,
        table: Table::new(&ENTRY_COLUMNS),
        printed: 0,
    };
    if !global.json {
        let header = printer.table.header_line(&ENTRY_MIN_WIDTHS, global.style);
        writeln!(out, "{header}")?;
    }
    if !args.new_only {
        let existing = args.filters.existing(&store)?;
        let skip = args.last.map_or(0, |n| existing.len().saturating_sub(n));
        for e in &existing[skip..] {
            printer.print(&mut out, e)?;
        }
    }
    out.flush()?;
    if printer.done() {
        return Ok(());
    }

    eprintln!("following new events in {} (Ctrl-C to stop)", dir.display());
    let mut cursor = store.cursor_from(&region, after);
    let interval = Duration::from_millis(args.interval_ms.max(1));
    loop {
        let batch = cursor.poll_batch(1024);
        if batch.is_empty() {
            let now = Instant::now();
            let nap = match deadline {
                Some(d) if now >= d => return Ok(()),
                Some(d) => interval.min(d - now),
                None => interval,
            };
            std::thread::sleep(nap);
            store.refresh()?;
            continue;
        }
        for e in batch.iter().filter(|e| args.filters.matches(&region, e)) {
            printer.print(&mut out, e)?;
        }
        out.flush()?;
        if printer.done() {
            return Ok(());
        }
    }
}

/// `tail --url`: list and follow through one guaranteed cursor.
fn follow_postgres(
    global: &Global,
    args: &Args,
    store: &PgStore,
    place: &str,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let region = args.filters.region();
    let mut out = stdout();
    let mut printer = Printer {
        global,
        args,
        table: Table::new(&ENTRY_COLUMNS),
        printed: 0,
    };
    if !global.json {
        let header = printer.table.header_line(&ENTRY_MIN_WIDTHS, global.style);
        writeln!(out, "{header}")?;
    }
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let mut cursor = if args.new_only {
        // Everything below the stable bound is "existing"; every event that
        // can still commit will be above it.
        let bound = store.stable_position()?;
        store.cursor_from(&region, bound.checked_sub(1))
    } else {
        // The existing events are what the cursor finds stable now; the
        // same cursor then follows, so nothing falls between the two.
        let mut cursor = store.cursor_guaranteed(&region);
        let mut last: VecDeque<IndexEntry> = VecDeque::new();
        loop {
            let batch = cursor.poll_batch(1024)?;
            if batch.is_empty() {
                break;
            }
            for e in batch
                .into_iter()
                .filter(|e| args.filters.matches(&region, e))
            {
                match args.last {
                    Some(0) => {}
                    Some(n) => {
                        if last.len() == n {
                            last.pop_front();
                        }
                        last.push_back(e);
                    }
                    None => printer.print(&mut out, &e)?,
                }
            }
            if printer.done() {
                out.flush()?;
                return Ok(());
            }
        }
        for e in &last {
            printer.print(&mut out, e)?;
        }
        cursor
    };
    out.flush()?;
    if printer.done() {
        return Ok(());
    }
    eprintln!("following new events in {place} (Ctrl-C to stop)");
    loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return Ok(()),
            },
            None => Duration::MAX,
        };
        match cursor.wait_next(wait) {
            Ok(Some(first)) => {
                let mut batch = vec![first];
                batch.extend(cursor.poll_batch(1023).unwrap_or_default());
                for e in batch.iter().filter(|e| args.filters.matches(&region, e)) {
                    printer.print(&mut out, e)?;
                }
                out.flush()?;
                if printer.done() {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) if e.is_retryable() => {
                eprintln!("batpak: {e}; retrying in {} ms", interval.as_millis());
                std::thread::sleep(interval);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
