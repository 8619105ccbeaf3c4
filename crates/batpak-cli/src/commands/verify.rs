//! `batpak verify`: the full integrity check (every frame's checksum, every
//! entity's hash chain, footers and checkpoint against the frames), from a
//! read-only open, so it runs beside a live owner; for a PostgreSQL store
//! (`--url`), every entity's chain, hashes, clocks and stream row. Exits 5
//! when it finds damage, so scripts can act on it.

use crate::output::stdout;
use crate::store_access::{open_for_inspection, Inspected};
use crate::Global;
use anyhow::Context;
use batpak_postgres::PgStore;
use serde_json::json;
use std::fmt;
use std::io::Write;

/// Arguments of `batpak verify`.
#[derive(clap::Args)]
pub struct Args {}

/// The store is damaged: `count` problems (exit code 5).
#[derive(Debug)]
pub struct Damaged {
    pub count: usize,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verify found {} problem(s)", self.count)
    }
}

impl std::error::Error for Damaged {}

pub fn run(global: &Global, _args: &Args) -> anyhow::Result<()> {
    let (store, dir) = match open_for_inspection(global)? {
        Inspected::File { store, dir } => (store, dir),
        Inspected::Postgres { store, place } => return postgres(global, &store, &place),
    };
    let started = std::time::Instant::now();
    let report = store
        .verify()
        .with_context(|| format!("cannot verify the store at {}", dir.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let mut out = stdout();
    if global.json {
        let problems: Vec<_> = report
            .problems()
            .iter()
            .map(|p| {
                json!({
                    "file": p.file.display().to_string(),
                    "offset": p.offset,
                    "kind": format!("{:?}", p.kind),
                    "detail": p.detail,
                })
            })
            .collect();
        let v = json!({
            "clean": report.is_clean(),
            "segments_checked": report.segments_checked,
            "events_checked": report.events_checked,
            "bytes_checked": report.bytes_checked,
            "seconds": secs,
            "problems": problems,
        });
        writeln!(out, "{v}")?;
    } else {
        let s = global.style;
        for p in report.problems() {
            writeln!(
                out,
                "{} {}@{}: {}",
                s.yellow(&format!("{:?}", p.kind)),
                p.file.display(),
                p.offset,
                p.detail
            )?;
        }
        let mb = report.bytes_checked as f64 / 1e6;
        let verdict = verdict(s, report.problems().len());
        writeln!(
            out,
            "{} segments, {} events, {mb:.1} MB checked in {secs:.2} s ({:.0} MB/s): {verdict}",
            report.segments_checked,
            report.events_checked,
            if secs > 0.0 { mb / secs } else { 0.0 },
        )?;
    }
    out.flush()?;
    outcome(report.problems().len())
}

/// `verify` of a PostgreSQL store: every entity's chain.
fn postgres(global: &Global, store: &PgStore, place: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let report = store
        .verify()
        .with_context(|| format!("cannot verify the store at {place}"))?;
    let secs = started.elapsed().as_secs_f64();
    let mut out = stdout();
    if global.json {
        let problems: Vec<_> = report
            .problems()
            .iter()
            .map(|p| {
                json!({
                    "entity": p.entity,
                    "event_id": p.event_id.map(crate::output::hex_id),
                    "clock": p.clock,
                    "kind": format!("{:?}", p.kind),
                })
            })
            .collect();
        let v = json!({
            "clean": report.is_clean(),
            "entities_checked": report.entities_checked,
            "events_checked": report.events_checked,
            "seconds": secs,
            "problems": problems,
        });
        writeln!(out, "{v}")?;
    } else {
        let s = global.style;
        for p in report.problems() {
            writeln!(out, "{} {p}", s.yellow("problem"))?;
        }
        let verdict = verdict(s, report.problems().len());
        writeln!(
            out,
            "{} entities, {} events checked in {secs:.2} s: {verdict}",
            report.entities_checked, report.events_checked,
        )?;
    }
    out.flush()?;
    outcome(report.problems().len())
}

/// "clean", or how many problems, coloured.
fn verdict(s: crate::output::Style, problems: usize) -> String {
    if problems == 0 {
        s.green("clean")
    } else {
        s.yellow(&format!("{problems} problem(s)"))
    }
}

/// Success, or `Damaged` (exit code 5) when anything was found.
fn outcome(problems: usize) -> anyhow::Result<()> {
    if problems == 0 {
        Ok(())
    } else {
        Err(Damaged { count: problems }.into())
    }
}
