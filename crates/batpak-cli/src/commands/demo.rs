//! `batpak demo [DIR]`: builds a sample store and shows the main features.
//!
//! Every demo event carries an idempotency key, so running the demo again on
//! the same directory appends nothing new: the retries return the original
//! receipts, which the output shows.

use crate::output::{entry_header, entry_row, short_id};
use crate::store_access::open_writable;
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `batpak demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory of the demo store (created if absent) [default: --dir, else ./batpak-demo]
    dir: Option<PathBuf>,
}

const ORDER_PLACED: EventKind = EventKind::custom(1, 1);
const ORDER_PAID: EventKind = EventKind::custom(1, 2);
const ORDER_SHIPPED: EventKind = EventKind::custom(1, 3);
const STOCK_RESERVED: EventKind = EventKind::custom(2, 1);

/// Fixed idempotency keys make the demo repeatable (scrambled so they look
/// like the random ids ordinary appends get).
fn key(n: u128) -> AppendOptions {
    AppendOptions::new().with_idempotency(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let mut out = crate::output::stdout();
    // The README runs `batpak demo` bare, so the demo keeps its own default
    // directory rather than sharing `./batpak-data` with real stores.
    let dir = args
        .dir
        .clone()
        .or_else(|| global.explicit_dir().cloned())
        .unwrap_or_else(|| PathBuf::from("./batpak-demo"));
    let store = open_writable(StoreConfig::new(&dir))?;
    let before = store.stats().event_count;
    writeln!(
        out,
        "batpak demo store: {} ({} events before this run)\n",
        dir.display(),
        before
    )?;

    let acme = "tenant:acme";
    let order = Coordinate::new("order:1001", acme)?;
    let order2 = Coordinate::new("order:1002", acme)?;
    let stock = Coordinate::new("stock:tea", acme)?;
    let other_tenant = Coordinate::new("order:1001", "tenant:globex")?;

    let placed = store.append_with_options(
        &order,
        ORDER_PLACED,
        &json!({"sku": "tea", "qty": 2}),
        key(1),
    )?;
    // A reaction: the stock reservation is caused by the order and joins its causal tree.
    let reserved = store.append_with_options(
        &stock,
        STOCK_RESERVED,
        &json!({"order": "order:1001", "qty": 2}),
        key(2)
            .with_correlation(placed.event_id)
            .with_causation(placed.event_id),
    )?;
    let paid = store.append_with_options(
        &order,
        ORDER_PAID,
        &json!({"amount_cents": 1198}),
        key(3)
            .with_correlation(placed.event_id)
            .with_causation(reserved.event_id)
            .with_cas(0),
    );
    let paid = match paid {
        Ok(r) => r,
        // Rerun: the key is found first and returns the original receipt.
        Err(e) => return Err(e).context("append with CAS"),
    };
    store.append_with_options(
        &order,
        ORDER_SHIPPED,
        &json!({"carrier": "post"}),
        key(4).with_causation(paid.event_id),
    )?;
    store.append_with_options(
        &order2,
        ORDER_PLACED,
        &json!({"sku": "coffee", "qty": 1}),
        key(5),
    )?;
    store.append_with_options(
        &other_tenant,
        ORDER_PLACED,
        &json!({"sku": "mate", "qty": 9}),
        key(6),
    )?;

    let stats = store.stats();
    if stats.event_count == before && before > 0 {
        writeln!(
            out,
            "(rerun: every append was an idempotent retry and returned its original receipt)\n"
        )?;
    }

    writeln!(out, "All events, in global order:")?;
    writeln!(out, "{}", entry_header())?;
    for e in store.query(&Region::all()) {
        writeln!(out, "{}", entry_row(&e))?;
    }

    writeln!(
        out,
        "\nStream of order:1001 (every scope, clock order), with payloads:"
    )?;
    for e in store.stream("order:1001") {
        let ev = store.get(e.event_id)?;
        writeln!(
            out,
            "  clock {}  {:<14} {}  {}",
            e.clock,
            e.coord.scope(),
            e.kind,
            ev.event.payload
        )?;
    }

    writeln!(
        out,
        "\nCausal tree of {} (correlation id):",
        short_id(placed.event_id)
    )?;
    for e in store.by_correlation(placed.event_id) {
        writeln!(
            out,
            "  {} {} caused by {}",
            short_id(e.event_id),
            e.coord,
            e.causation_id.map_or("-".into(), short_id)
        )?;
    }

    writeln!(
        out,
        "\nScope tenant:acme holds {} events; tenant:globex holds {}.",
        store.by_scope(acme).len(),
        store.by_scope("tenant:globex").len()
    )?;

    let d = store.diagnostics();
    writeln!(out, "\nStats:")?;
    writeln!(out, "  events            {}", stats.event_count)?;
    writeln!(out, "  next sequence     {}", stats.global_sequence)?;
    writeln!(out, "  entities          {}", d.entity_count)?;
    writeln!(out, "  segments          {}", d.segment_count)?;
    writeln!(out, "  index memory      {} KiB", d.index_heap_bytes / 1024)?;
    writeln!(out, "  durable receipts  {}", d.durable_receipts)?;
    writeln!(
        out,
        "  opened by         {:?} in {} µs",
        d.recovery.open_path, d.recovery.elapsed_us
    )?;

    store.close()?;
    writeln!(
        out,
        "\nClosed cleanly. Run the demo again: it reopens the store and appends nothing twice."
    )?;
    out.flush()?;
    Ok(())
}
