#!/usr/bin/env bash
# Nightly fuzzing (issue 18): `ci/fuzz.sh [N] [qbench-fuzz flags...]` runs N cases per
# format (default 100000) of qbench-fuzz in release, on a seed that changes every night
# (the date, or QBENCH_FUZZ_SEED) so each night tries new inputs; the seed is printed,
# and `--seed S --cases N` replays a night exactly. Findings land in fuzz/corpus/
# (crash-<hash> and a .txt reason each); copy the ones worth keeping to
# fuzz/regressions/<format>/. Exits non-zero on any finding not in
# fuzz/regressions/known-failing.txt. The fixed-seed CI run is in ci/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-100000}"
shift || true
seed="${QBENCH_FUZZ_SEED:-$(date -u +%Y%m%d)}"

cargo build --release --locked -p qbench-fuzz
echo "qbench-fuzz nightly: seed $seed, $n cases per format"
./target/release/qbench-fuzz --seed "$seed" --cases "$n" --format all "$@"
