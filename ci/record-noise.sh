#!/usr/bin/env bash
# Records the evidence behind `compare`'s speed rule: two default sweeps of the same
# build, back to back on this machine, into reports/noise/first.json and second.json
# (harness/tests/speed_noise.rs checks that comparing them flags no speed regression).
# The first run also makes a good baseline: `qbench baseline update --from
# reports/noise/first.json`. Takes two full sweeps (about 20 minutes here); run it on a
# machine doing nothing else, after `qbench fetch minilm`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p qbench
qbench=${CARGO_TARGET_DIR:-target}/release/qbench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p reports/noise
for run in first second; do
  "$qbench" sweep --out "$tmp/$run"
done
# Both files land only when both runs finished.
for run in first second; do
  cp "$tmp/$run/results.json" "reports/noise/$run.json.tmp"
  mv "reports/noise/$run.json.tmp" "reports/noise/$run.json"
done
"$qbench" compare reports/noise/first.json reports/noise/second.json
