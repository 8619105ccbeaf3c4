#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with AFL++ through cargo-afl (works
# on stable Rust). Not part of CI; see docs/fuzzing.md.
#
#   fuzz/run-afl.sh <target> [seconds]     (default 600 s; `fuzz-run list`)
#
# Needs cargo-afl (`cargo install cargo-afl`, then `cargo afl config --build`
# once). Crashes land in fuzz/afl/out/<target>/default/crashes; replay one
# with `cargo run -p batpak-fuzz --bin fuzz-run -- replay <target> <file>`
# and, once fixed, copy it to fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:?usage: fuzz/run-afl.sh <target> [seconds]}"
seconds="${2:-600}"

targets="$(cargo run -q -p batpak-fuzz --bin fuzz-run -- list)"
grep -qx "$target" <<<"$targets" || {
  printf 'unknown target %s; one of:\n%s\n' "$target" "$targets" >&2
  exit 2
}
command -v cargo-afl >/dev/null || {
  echo "cargo-afl is missing: cargo install cargo-afl && cargo afl config --build" >&2
  exit 1
}

(cd fuzz/afl && cargo afl build --release)

in_dir="fuzz/afl/in/$target"
out_dir="fuzz/afl/out/$target"
mkdir -p "$in_dir" "$(dirname "$out_dir")"
cargo run -q -p batpak-fuzz --bin fuzz-run -- seeds "$in_dir"
if [ -d "fuzz/regressions/$target" ]; then
  find "fuzz/regressions/$target" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$in_dir/" \;
fi

# -V: stop after that many seconds. The environment lets AFL run without
# root tuning of the machine (CPU governor, core pattern).
BATPAK_FUZZ_TARGET="$target" \
AFL_SKIP_CPUFREQ=1 \
AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
AFL_NO_UI=1 \
  cargo afl fuzz -V "$seconds" -i "$in_dir" -o "$out_dir" fuzz/afl/target/release/batpak-fuzz-afl

crashes=$(find "$out_dir/default/crashes" -type f ! -name README.txt 2>/dev/null | wc -l)
echo "$target: $crashes crash(es) in $out_dir/default/crashes"
[ "$crashes" -eq 0 ]
