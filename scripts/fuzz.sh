#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a while on the stable toolchain: libFuzzer with
# SanitizerCoverage (the same coverage flags cargo-fuzz passes, minus AddressSanitizer,
# which needs nightly and matters little for safe Rust). A crash stops the run and
# leaves its input in fuzz/artifacts/<target>/.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^switchyard-fuzz$')
fi
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}/fuzz
cargo build --release --target "$host" --target-dir "$target_dir" --bins
bin_dir="$target_dir/$host/release"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${secs}s"
  "$bin_dir/$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" "corpus/$t" 2>&1 | grep -E '^(#[0-9]+ +DONE|==|SUMMARY|thread)|panicked|Done' || true
  if compgen -G "artifacts/$t/crash-*" >/dev/null; then
    echo "$t: crash inputs in fuzz/artifacts/$t/"; exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a crash"
