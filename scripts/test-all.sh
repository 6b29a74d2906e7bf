#!/usr/bin/env bash
# Runs every test of Switchyard on a fresh machine: installs what the tests
# need (ffmpeg for ffprobe checks, Node packages for the OWT signaling tests),
# then the Rust workspace tests, then the Node tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

node_suites=()
for d in tests/*-node; do
  [ -f "$d/package.json" ] || continue
  node_suites+=("$d")
  if [ -f "$d/package-lock.json" ]; then
    (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$d" && npm install --no-audit --no-fund --loglevel=error)
  fi
done

# Build first so the Node suites can start the server binary.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}

for d in "${node_suites[@]}"; do
  (cd "$d" && npm test) || status=1
done

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/test-output.txt | awk '{p+=$4; f+=$6} END {print p+0, f+0}')
echo "tests: $(echo "$passed" | awk '{print $1" passed, "$2" failed"}')"
exit "$status"
