//! Run fuzz targets from the command line with the seeded random driver.
//!
//! ```text
//! fuzz-run <target|all> [seconds] [seed]   run each target (default 10 s)
//! fuzz-run replay <target> <file>...       run a target on saved inputs
//! fuzz-run seeds <dir>                      write starting inputs for AFL
//! fuzz-run list                             the target names
//! ```

use batpak_fuzz::driver::{self, Budget, Rng};
use batpak_fuzz::{target, TARGETS};
use std::io::Write;
use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: fuzz-run <target|all> [seconds] [seed] | replay <target> <file>... | seeds <dir> | list");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => usage(),
        Some("list") => {
            // A closed pipe (`| grep -q`) is not an error here.
            let mut out = std::io::stdout().lock();
            for (name, _) in TARGETS {
                let _ = writeln!(out, "{name}");
            }
        }
        Some("replay") => {
            let name = args.get(1).unwrap_or_else(|| usage());
            let t = target(name).unwrap_or_else(|| usage());
            for file in &args[2..] {
                let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
                t(&data);
                println!("{name}: {file} passes");
            }
        }
        Some("seeds") => {
            // A few random inputs; AFL needs a non-empty starting corpus.
            let dir = std::path::PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            std::fs::create_dir_all(&dir).expect("create seed dir");
            let mut rng = Rng::new(7);
            for i in 0..16u8 {
                let mut data = driver::input(&mut rng);
                data.insert(0, i); // both modes of every target
                std::fs::write(dir.join(format!("seed{i:02}")), data).expect("write seed");
            }
        }
        Some(which) => {
            let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
            let seed = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(driver::seed_from_env);
            let names: Vec<&str> = if which == "all" {
                TARGETS.iter().map(|(n, _)| *n).collect()
            } else {
                vec![which]
            };
            for name in names {
                let t = target(name).unwrap_or_else(|| usage());
                let replayed = driver::replay_regressions(name, t);
                let budget = Budget {
                    iterations: u64::MAX,
                    time: Duration::from_secs(secs),
                };
                let n = driver::run(name, t, seed, budget);
                println!("{name}: seed {seed}: {replayed} regressions, {n} inputs in {secs} s, no failure");
            }
        }
    }
}
