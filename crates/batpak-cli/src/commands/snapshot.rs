//! `batpak snapshot DEST`: a consistent copy of the store that opens as a
//! store. Takes the lock when it is free; when another process owns the
//! store, copies what a read-only open sees (everything that process had
//! committed when the copy began).

use crate::output::stdout;
use crate::store_access::{open_read_only, require_store};
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `batpak snapshot`.
#[derive(clap::Args)]
pub struct Args {
    /// Destination: must not exist, or be an empty directory (not a symlink).
    dest: PathBuf,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let dir = global.store_dir();
    require_store(&dir)?;
    let started = std::time::Instant::now();
    let (store, live_owner) = match Store::open(StoreConfig::new(&dir)) {
        Ok(s) => (s, false),
        Err(StoreError::Locked(_)) => (open_read_only(&dir)?, true),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the store at {}", dir.display()))
        }
    };
    store
        .snapshot(&args.dest)
        .with_context(|| format!("cannot snapshot into {}", args.dest.display()))?;
    let events = store.stats().event_count;
    drop(store);
    let secs = started.elapsed().as_secs_f64();
    let mut out = stdout();
    if global.json {
        let v = json!({
            "dest": args.dest.display().to_string(),
            "events": events,
            "seconds": secs,
            "owner_running": live_owner,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "snapshot of {events} events written to {} in {secs:.2} s{}",
            args.dest.display(),
            if live_owner {
                " (store in use: copied what it had committed)"
            } else {
                ""
            }
        )?;
    }
    out.flush()?;
    Ok(())
}
