//! The seeded random driver: feeds a target pseudo-random inputs derived
//! from a seed, for a number of iterations or seconds, after replaying the
//! target's recorded regressions (`fuzz/regressions/<target>/`). A failing
//! input is saved to a file and the panic names the seed and the file, so
//! the case replays exactly (`fuzz-run replay <target> <file>`).
//!
//! No coverage feedback: the inputs are random lengths (mostly short, some
//! up to 4 KiB) of random bytes with a random share of zeros. The targets
//! give them structure (magic numbers, mutations of valid samples).

use crate::Target;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// xorshift64*: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        self.0 = s;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One input: mostly short, sometimes up to 4 KiB; a random share of zeros.
pub fn input(rng: &mut Rng) -> Vec<u8> {
    let max = [64u64, 512, 4096][rng.below(3) as usize];
    let len = rng.below(max + 1) as usize;
    let zeros = rng.below(256) as u8;
    (0..len)
        .map(|_| {
            let r = rng.next_u64();
            if ((r >> 8) as u8) < zeros {
                0
            } else {
                (r >> 56) as u8
            }
        })
        .collect()
}

/// The seed of iteration `i` of a run seeded `seed`.
pub fn case_seed(seed: u64, i: u64) -> u64 {
    seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// How long to run a target.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Stop after this many iterations.
    pub iterations: u64,
    /// ... or after this long, whichever comes first.
    pub time: Duration,
}

/// Where regressions of `target` are kept.
pub fn regression_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target)
}

/// The regression inputs of `target` (every file not starting with '.').
pub fn regressions(target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(regression_dir(target)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

/// Run `target` on `data`; on a panic, save the input and panic again
/// with how to replay it.
fn run_one(name: &str, target: Target, data: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| target(data))).is_err() {
        let dir = std::env::temp_dir().join("batpak-fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{name}-{}.bin", what.replace([' ', '/'], "_")));
        let saved = std::fs::write(&file, data).is_ok();
        panic!(
            "fuzz target {name} failed on {what}; input ({} bytes) {}; replay: \
             cargo run -p batpak-fuzz --bin fuzz-run -- replay {name} <file>",
            data.len(),
            if saved {
                format!("saved to {}", file.display())
            } else {
                "could not be saved".to_owned()
            }
        );
    }
}

/// Replay every regression of `target`; returns how many.
pub fn replay_regressions(name: &str, target: Target) -> usize {
    let files = regressions(name);
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        run_one(name, target, &data, &format!("regression {}", f.display()));
    }
    files.len()
}

/// Run `target` from `seed` within `budget`; returns the iterations run.
pub fn run(name: &str, target: Target, seed: u64, budget: Budget) -> u64 {
    let start = Instant::now();
    let mut i = 0;
    while i < budget.iterations && start.elapsed() < budget.time {
        let case = case_seed(seed, i);
        let data = input(&mut Rng::new(case));
        run_one(name, target, &data, &format!("seed {seed} iteration {i}"));
        i += 1;
    }
    i
}

/// The seed from `BATPAK_FUZZ_SEED`, or one from the clock.
pub fn seed_from_env() -> u64 {
    std::env::var("BATPAK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}
