//! `batpak ls` (alias `query`): the events matching filters, as a table or
//! NDJSON, from a read-only open of a directory or a PostgreSQL store.

use crate::filter::Filters;
use crate::output::{entry_cells, entry_json, paint_entry_cell, stdout, Table, ENTRY_COLUMNS};
use crate::store_access::{open_for_inspection, Inspected};
use crate::Global;
use batpak::prelude::EventStore;
use std::io::Write;

/// Arguments of `batpak ls`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filters: Filters,
    /// Show at most N events (the first N, or the newest N with --newest-first).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Newest events first.
    #[arg(long)]
    newest_first: bool,
    /// Show whole 32-digit ids instead of their last 12 digits.
    #[arg(long)]
    full_ids: bool,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    match open_for_inspection(global)? {
        Inspected::File { store, .. } => list(global, args, &store),
        Inspected::Postgres { store, .. } => list(global, args, &*store),
    }
}

fn list<S: EventStore>(global: &Global, args: &Args, store: &S) -> anyhow::Result<()> {
    let mut entries = args.filters.existing(store)?;
    let matching = entries.len();
    if args.newest_first {
        entries.reverse();
    }
    if let Some(n) = args.limit {
        entries.truncate(n);
    }

    let mut out = stdout();
    if global.json {
        for e in &entries {
            writeln!(out, "{}", entry_json(e))?;
        }
    } else {
        let style = global.style;
        let mut table = Table::new(&ENTRY_COLUMNS);
        for e in &entries {
            table.push(entry_cells(e, args.full_ids));
        }
        table.write(&mut out, style, |i, s| paint_entry_cell(style, i, s))?;
        let summary = if entries.len() == matching {
            format!("{matching} events")
        } else {
            format!("{} of {matching} matching events", entries.len())
        };
        writeln!(out, "{}", style.dim(&summary))?;
    }
    out.flush()?;
    Ok(())
}
