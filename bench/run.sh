#!/usr/bin/env bash
# The foundation's benchmark run, every figure taken in one go on this machine:
#   1. the disk's own figure (dd, 1 GiB, fdatasync)
#   2. the embedded log (cargo bench -p strom-log --bench log)
#   3. HTTP produce through `strom bench http`: durable batches of 100, and single events
#   4. Redis XADD with appendfsync always and 16-deep pipelining (the peer)
#   5. idle RSS and RSS under overload
# Usage: bench/run.sh [EVENTS]   (results in target/bench-results.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-300000}"
out=target/bench-results.txt
mkdir -p target
work=$(mktemp -d "$PWD/target/bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
: > "$out"
say() { echo "$*" | tee -a "$out"; }

say "# $(date -u +%FT%TZ) on $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; git $(git rev-parse --short HEAD)"

# The disk's figure swings widely on this kind of VM (the host's cache sometimes absorbs the
# whole GiB), so it is taken three times, before and after the log benchmark.
disk() {
  for _ in 1 2 3; do
    dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | tee -a "$out"
    rm -f "$work/dd"
  done
}
say "## disk: dd if=/dev/zero of=FILE bs=1M count=1024 conv=fdatasync (x3)"
disk

say "## log: cargo bench -p strom-log --bench log"
STROM_BENCH_DIR="$work" cargo bench -q -p strom-log --bench log 2>/dev/null | tee -a "$out"
say "## disk again (x3)"
disk

say "## HTTP: strom serve (release) + strom bench http"
cargo build -q --release -p strom
strom=target/release/strom
"$strom" serve --data-dir "$work/data" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.err" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening \(http:.*\)/\1/p' "$work/serve.out")
sleep 1
say "idle RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$server_pid/status)"
say "### batches of 100 events (~500 B), durable, 4 partitions, 32 connections"
"$strom" bench http --url "$url" --stream batched --partitions 4 --events "$events" --batch 100 --concurrency 32 --event-bytes 500 | tee -a "$out"
say "### single-event requests, durable, 64 connections"
"$strom" bench http --url "$url" --stream single --partitions 4 --events $((events / 5)) --batch 1 --concurrency 64 --event-bytes 500 | tee -a "$out"
say "RSS after the runs: $(awk '/VmRSS/{print $2, $3}' /proc/$server_pid/status)"
say "### overload: 512 connections of 100-event batches"
"$strom" bench http --url "$url" --stream overload --partitions 1 --events "$events" --batch 100 --concurrency 512 --event-bytes 500 | tee -a "$out"
say "RSS after overload: $(awk '/VmRSS/{print $2, $3}' /proc/$server_pid/status) (peak $(awk '/VmHWM/{print $2, $3}' /proc/$server_pid/status))"
curl -s "$url/metrics" | grep -E '^strom_log_records_per_fsync_(sum|count)' | tee -a "$out"
kill -TERM "$server_pid"; wait "$server_pid" || true

say "## peer: Redis XADD, appendonly yes, appendfsync always, pipeline 16, 500-byte values"
mkdir -p "$work/redis"
redis-server --port 6390 --bind 127.0.0.1 --dir "$work/redis" --appendonly yes --appendfsync always --save "" --daemonize no > "$work/redis.log" 2>&1 &
redis_pid=$!
sleep 1
value=$(head -c 500 /dev/zero | tr '\0' 'x')
redis-benchmark -p 6390 -P 16 -c 50 -n "$events" -q XADD bench '*' v "$value" 2>&1 | tr '\r' '\n' | grep -v '^$' | tail -1 \
  | sed 's/^XADD bench \* v x*:/XADD (500-byte value):/' | tee -a "$out"
kill "$redis_pid"; redis_pid=""
say "results in $out"
