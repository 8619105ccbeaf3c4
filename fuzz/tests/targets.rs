//! CI's fuzzing: every target replays its recorded regressions, then runs
//! on seeded random inputs for a short time (`BATPAK_FUZZ_SECONDS`, default
//! 3 per target; `BATPAK_FUZZ_SEED` fixes the seed, printed either way).
//! A failure names the seed and saves the input for `fuzz-run replay`.

use batpak_fuzz::driver::{self, Budget};
use batpak_fuzz::target;
use std::time::Duration;

fn brief(name: &str) {
    let t = target(name).expect("a target of that name");
    let replayed = driver::replay_regressions(name, t);
    let secs: u64 = std::env::var("BATPAK_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = driver::seed_from_env();
    eprintln!("{name}: seed {seed} (BATPAK_FUZZ_SEED={seed} repeats this run)");
    let budget = Budget {
        iterations: u64::MAX,
        time: Duration::from_secs(secs),
    };
    let n = driver::run(name, t, seed, budget);
    eprintln!("{name}: {replayed} regressions, {n} random inputs");
    // Even a slow machine gets through more than a handful.
    assert!(n >= 5, "{name}: only {n} inputs in {secs} s");
}

#[test]
fn frame() {
    brief("frame");
}

#[test]
fn event() {
    brief("event");
}

#[test]
fn segment_header() {
    brief("segment_header");
}

#[test]
fn footer() {
    brief("footer");
}

#[test]
fn checkpoint() {
    brief("checkpoint");
}

#[test]
fn removed() {
    brief("removed");
}

#[test]
fn intent() {
    brief("intent");
}

#[test]
fn payload() {
    brief("payload");
}

#[test]
fn native_cache() {
    brief("native_cache");
}

#[test]
fn model() {
    brief("model");
}

#[test]
fn every_target_has_a_test() {
    let src = include_str!("targets.rs");
    for (name, _) in batpak_fuzz::TARGETS {
        assert!(
            src.contains(&format!("brief(\"{name}\")")),
            "target {name} is not run by CI"
        );
    }
}

/// Mutation cases replay in another process only if the samples are the
/// same bytes there: a store with a fixed clock and explicit ids.
#[test]
fn samples_are_the_same_in_every_process() {
    let here = batpak_fuzz::decoders::sample_digest();
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "print_sample_digest", "--nocapture", "--ignored"])
        .output()
        .expect("run the test binary again");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("sample digest {here:016x}")),
        "another process built different samples: {text}"
    );
}

#[test]
#[ignore = "run by samples_are_the_same_in_every_process"]
fn print_sample_digest() {
    println!(
        "sample digest {:016x}",
        batpak_fuzz::decoders::sample_digest()
    );
}
