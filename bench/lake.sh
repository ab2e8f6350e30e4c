#!/usr/bin/env bash
# The lake benchmark (docs/BENCHMARKS.md): sink throughput on one core, Parquet size against
# the JSON lines, and `SELECT event, count(*) ... GROUP BY event` over the files with
# DataFusion (Strom) and DuckDB, on shop events from ../shared/workload/shop_events.py.
#
#   bench/lake.sh [EVENTS]        # default 10000000 (the generator needs about 1 min per million)
#
# The events are piped from the generator into the benchmark, never stored as a file: the
# benchmark appends them to a one-partition log in chunks, lands each chunk, and deletes old
# segments past 1 GiB, so ten million events need about 2 GB of disk (log and Parquet files).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-10000000}"
OUT="${STROM_LAKE_BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/strom-lake-bench.XXXXXX")}"
WORKLOAD="${WORKLOAD:-../shared/workload/shop_events.py}"
RESULTS="${CARGO_TARGET_DIR:-target}/lake-bench-results.txt"
mkdir -p "$(dirname "$RESULTS")"
{
  echo "== lake bench, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD), $EVENTS events"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS"
cargo bench -p strom-lake --bench sink --no-run 2>&1 | tail -1
# The sink on one core (taskset): the generator runs beside it on the other.
# The benchmark's progress and errors go to sink.err (shown when it fails).
if ! python3 "$WORKLOAD" --events "$EVENTS" --users 100000 --seed 7 \
  | STROM_LAKE_BENCH_OUT="$OUT/lake" taskset -c 0 cargo bench -p strom-lake --bench sink 2> "$OUT/sink.err" | tee -a "$RESULTS"; then
  tail -20 "$OUT/sink.err"
  exit 1
fi
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install -q duckdb
python3 bench/lake_duckdb.py "$OUT/lake" 5 | tee -a "$RESULTS"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS"
echo "lake kept in $OUT/lake; results in $RESULTS"
