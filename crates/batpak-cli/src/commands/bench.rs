//! `batpak bench`: a quick throughput report measured on temporary stores
//! (appends in three durability modes, random reads, scans, reopen time),
//! next to the machine's raw `fdatasync` rate for reference.
//!
//! Single-threaded and in-process: it tells what one caller can expect on
//! this machine, not the store's ceiling under concurrency (the criterion
//! benches in `crates/batpak/benches` cover that).

use crate::output::{progress, stdout, Table};
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use serde_json::json;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `batpak bench`.
#[derive(clap::Args)]
#[command(after_help = "\
Durable phases stop after 10 s each, whatever --events says, so a slow disk
cannot stall the report; rates are over the events actually written.")]
pub struct Args {
    /// Events written (and read back) per phase.
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Create the temporary stores inside DIR, to measure that disk
    /// [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// Longest a durable phase may run.
const DURABLE_BUDGET: Duration = Duration::from_secs(10);
/// Scans repeat until they have run this long, so short ones still time well.
const SCAN_MIN: Duration = Duration::from_millis(200);
/// Entities the events are spread over.
const ENTITIES: u64 = 100;
const BATCH: usize = 256;
/// Bytes per write in the fdatasync reference: about one small event frame.
const SYNC_PROBE_BYTES: usize = 330;
/// Most syncs in the reference loop (which also stops after one second).
const SYNC_PROBE_MAX_OPS: u64 = 100_000;
const KIND: EventKind = EventKind::custom(1, 1);

/// One line of the report.
struct Figure {
    key: &'static str,
    label: &'static str,
    value: f64,
    unit: &'static str,
    note: String,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let n = args.events;
    let work = match &args.work_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("cannot create a temporary directory")?;
    let mut figures = Vec::new();

    let (rate, done) = durable_appends(&work.path().join("durable"), n)?;
    figures.push(Figure {
        key: "durable_appends_per_sec",
        label: "durable appends",
        value: rate,
        unit: "/s",
        note: format!("{done} events, each synced before its receipt"),
    });

    let (rate, done) = batch_appends(&work.path().join("batch"), n)?;
    figures.push(Figure {
        key: "durable_batch256_appends_per_sec",
        label: "durable batch appends",
        value: rate,
        unit: "/s",
        note: format!("{done} events in atomic batches of {BATCH}"),
    });

    let relaxed_dir = work.path().join("relaxed");
    let relaxed_config = || StoreConfig::new(&relaxed_dir).with_sync_every_n_events(1000);
    let store = Store::open(relaxed_config())?;
    let (rate, ids) = relaxed_appends(&store, n)?;
    figures.push(Figure {
        key: "relaxed_appends_per_sec",
        label: "relaxed appends",
        value: rate,
        unit: "/s",
        note: format!("{n} events, synced every 1000 events or 100 ms"),
    });
    figures.push(Figure {
        key: "random_gets_per_sec",
        label: "random get",
        value: random_gets(&store, &ids)?,
        unit: "/s",
        note: format!("{} gets by id, payload decoded", ids.len()),
    });
    figures.push(Figure {
        key: "stream_scan_entries_per_sec",
        label: "stream scan",
        value: stream_scan(&store),
        unit: "entries/s",
        note: format!("store.stream() over {ENTITIES} entities"),
    });
    figures.push(Figure {
        key: "cursor_scan_entries_per_sec",
        label: "cursor scan",
        value: cursor_scan(&store),
        unit: "entries/s",
        note: "guaranteed cursor over everything".to_string(),
    });
    store.close()?;

    let started = Instant::now();
    let store = Store::open(relaxed_config())?;
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    let open_path = format!("{:?}", store.diagnostics().recovery.open_path);
    store.close()?;
    figures.push(Figure {
        key: "open_ms",
        label: "reopen",
        value: open_ms,
        unit: "ms",
        note: format!("{n} events, index rebuilt via {open_path}"),
    });

    let (rate, ops) = fdatasync_reference(work.path(), n)?;
    figures.push(Figure {
        key: "fdatasync_per_sec",
        label: "fdatasync reference",
        value: rate,
        unit: "/s",
        note: format!("{ops} × write({SYNC_PROBE_BYTES} B) + fdatasync, preallocated file"),
    });

    let mut out = stdout();
    if global.json {
        let mut v = json!({"events": n, "open_path": open_path});
        for f in &figures {
            v[f.key] = json!(f.value);
        }
        writeln!(out, "{v}")?;
    } else {
        let s = global.style;
        let mut t = Table::new(&[("figure", false), ("value", true), ("", false), ("", false)]);
        for f in &figures {
            t.push(vec![
                f.label.to_string(),
                group_digits(f.value),
                f.unit.to_string(),
                f.note.clone(),
            ]);
        }
        t.write(&mut out, s, |i, v| match i {
            1 => s.green(v),
            3 => s.dim(v),
            _ => v.to_string(),
        })?;
    }
    out.flush()?;
    Ok(())
}

fn coord(i: u64) -> anyhow::Result<Coordinate> {
    Ok(Coordinate::new(format!("bench:{}", i % ENTITIES), "bench")?)
}

fn payload(i: u64) -> serde_json::Value {
    json!({"n": i, "note": "the quick brown fox jumps over the lazy dog; ".repeat(4)})
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// One append at a time, each durable before it returns.
fn durable_appends(dir: &Path, n: u64) -> anyhow::Result<(f64, u64)> {
    let store = Store::open(StoreConfig::new(dir))?;
    let bar = progress(Some(n), "durable");
    let started = Instant::now();
    let mut done = 0;
    while done < n && started.elapsed() < DURABLE_BUDGET {
        store.append(&coord(done)?, KIND, &payload(done))?;
        done += 1;
        if done % 256 == 0 {
            bar.set_position(done);
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    store.close()?;
    Ok((per_sec(done, elapsed), done))
}

/// Atomic batches of [`BATCH`], each one sync.
fn batch_appends(dir: &Path, n: u64) -> anyhow::Result<(f64, u64)> {
    let store = Store::open(StoreConfig::new(dir))?;
    let bar = progress(Some(n), "batches");
    let started = Instant::now();
    let mut done = 0;
    while done < n && started.elapsed() < DURABLE_BUDGET {
        let size = (n - done).min(BATCH as u64);
        let items = (done..done + size)
            .map(|i| {
                Ok(BatchAppendItem::new(
                    coord(i)?,
                    KIND,
                    &payload(i),
                    AppendOptions::new(),
                    CausationRef::None,
                )?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        store.append_batch(items)?;
        done += size;
        bar.set_position(done);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    store.close()?;
    Ok((per_sec(done, elapsed), done))
}

/// Appends whose receipts do not wait for the sync; the final sync is timed too.
fn relaxed_appends(store: &Store, n: u64) -> anyhow::Result<(f64, Vec<u128>)> {
    let bar = progress(Some(n), "relaxed");
    let mut ids = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let started = Instant::now();
    for i in 0..n {
        ids.push(store.append(&coord(i)?, KIND, &payload(i))?.event_id);
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    store.sync()?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((per_sec(n, elapsed), ids))
}

fn random_gets(store: &Store, ids: &[u128]) -> anyhow::Result<f64> {
    // xorshift64*: a fixed, dependency-free sequence is all a benchmark needs.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let len = ids.len() as u64;
    let started = Instant::now();
    for _ in 0..len {
        let id = ids[(next() % len) as usize];
        std::hint::black_box(store.get(id)?);
    }
    Ok(per_sec(len, started.elapsed()))
}

fn stream_scan(store: &Store) -> f64 {
    let started = Instant::now();
    let mut entries = 0u64;
    while entries == 0 || started.elapsed() < SCAN_MIN {
        for e in 0..ENTITIES {
            entries += std::hint::black_box(store.stream(&format!("bench:{e}"))).len() as u64;
        }
    }
    per_sec(entries, started.elapsed())
}

fn cursor_scan(store: &Store) -> f64 {
    let started = Instant::now();
    let mut entries = 0u64;
    loop {
        let mut cursor = store.cursor_guaranteed(&Region::all());
        loop {
            let batch = cursor.poll_batch(4096);
            if batch.is_empty() {
                break;
            }
            entries += std::hint::black_box(batch).len() as u64;
        }
        if entries == 0 || started.elapsed() >= SCAN_MIN {
            break;
        }
    }
    per_sec(entries, started.elapsed())
}

/// The disk's own rate for the operation a durable append waits on. The
/// file is written full of zeros and synced first, as the store preallocates
/// its segments, so each timed sync carries data only, not a new file size.
fn fdatasync_reference(dir: &Path, n: u64) -> anyhow::Result<(f64, u64)> {
    let mut f = tempfile::tempfile_in(dir)?;
    let buf = [0x5au8; SYNC_PROBE_BYTES];
    let max_ops = n.min(SYNC_PROBE_MAX_OPS);
    let zeros = vec![0u8; 64 * 1024];
    let mut left = max_ops * SYNC_PROBE_BYTES as u64;
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    let started = Instant::now();
    let mut ops = 0;
    while ops < max_ops && started.elapsed() < Duration::from_secs(1) {
        f.write_all(&buf)?;
        f.sync_data()?;
        ops += 1;
    }
    Ok((per_sec(ops, started.elapsed()), ops))
}

/// `12345.6` as `12,346`; values under 100 keep one decimal.
fn group_digits(v: f64) -> String {
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::group_digits;

    #[test]
    fn digits() {
        assert_eq!(group_digits(1234567.4), "1,234,567");
        assert_eq!(group_digits(999.0), "999");
        assert_eq!(group_digits(12.34), "12.3");
    }
}
