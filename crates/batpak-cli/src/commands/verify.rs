//! `batpak verify`: the full integrity check (every frame's checksum, every
//! entity's hash chain, footers and checkpoint against the frames), from a
//! read-only open, so it runs beside a live owner. Exits 5 when it finds
//! damage, so scripts can act on it.

use crate::output::stdout;
use crate::store_access::open_read_only;
use crate::Global;
use anyhow::Context;
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
    let dir = global.store_dir();
    let store = open_read_only(&dir)?;
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
        let verdict = if report.is_clean() {
            s.green("clean")
        } else {
            s.yellow(&format!("{} problem(s)", report.problems().len()))
        };
        writeln!(
            out,
            "{} segments, {} events, {mb:.1} MB checked in {secs:.2} s ({:.0} MB/s): {verdict}",
            report.segments_checked,
            report.events_checked,
            if secs > 0.0 { mb / secs } else { 0.0 },
        )?;
    }
    out.flush()?;
    if report.is_clean() {
        Ok(())
    } else {
        Err(Damaged {
            count: report.problems().len(),
        }
        .into())
    }
}
