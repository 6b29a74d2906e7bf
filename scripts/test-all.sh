#!/usr/bin/env bash
# Runs every test of Switchyard on a fresh machine: installs what the tests
# need (ffmpeg for ffprobe checks, Node packages for the OWT signaling tests),
# then the Rust workspace tests, then the Node tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
# The browser tests drive Debian's Chromium with playwright-core.
if [ -f tests/browser/package.json ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

node_suites=()
for d in tests/*; do
  [ -f "$d/package.json" ] || continue
  node_suites+=("$d")
  if [ -f "$d/package-lock.json" ]; then
    (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$d" && npm install --no-audit --no-fund --loglevel=error)
  fi
done

# A one-off build gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# Build first so the Node suites can start the server binary.
cargo build --workspace --all-targets
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
log="$target_dir/test-output.txt"
# The Node suites start the server binary this build made.
export SWITCHYARD_BIN="$(cd "$target_dir" && pwd)/debug/switchyard"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
for d in "${node_suites[@]}"; do
  (cd "$d" && npm test) 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
set -e

# One closing line over every runner: cargo's "test result" lines and node's "# pass/# fail".
summary=$(awk '
  /test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
  /^# pass [0-9]+$/ { p += $3 }
  /^# fail [0-9]+$/ { f += $3 }
  END { printf "%d passed, %d failed", p, f }' "$log")
echo "tests: $summary"
exit "$status"
