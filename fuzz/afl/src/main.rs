//! AFL++ harness: runs the fuzz target named by `BATPAK_FUZZ_TARGET` (see
//! `fuzz-run list`) on the inputs AFL feeds it. Build and run it with
//! `fuzz/run-afl.sh`; the target bodies are the ones `cargo test` runs.

fn main() {
    let name = std::env::var("BATPAK_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = batpak_fuzz::target(&name) else {
        eprintln!("set BATPAK_FUZZ_TARGET to one of:");
        for (n, _) in batpak_fuzz::TARGETS {
            eprintln!("  {n}");
        }
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
