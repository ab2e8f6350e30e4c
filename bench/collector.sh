#!/usr/bin/env bash
# The tracking collector under load, with the example catalog (catalog/) loaded:
#   /v1/batch with 100 valid ~500-byte AddToCart events per request (validated, deduplicated,
#   enriched, durably appended), three times; then single /v1/track calls; RSS before and after.
# Usage: bench/collector.sh [STROM_BINARY]   (default: builds target/release/strom)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [ -z "$bin" ]; then
  cargo build -q --release -p strom
  bin=target/release/strom
fi
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" serve --data-dir "$work/data" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening \(http:.*\)/\1/p' "$work/serve.out")
key=$("$bin" --url "$url" sources create bench 2>/dev/null)
sleep 1
echo "# $(date -u +%FT%TZ) on $(nproc) cores; git $(git rev-parse --short HEAD); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "idle RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status)"
echo "## /v1/batch, 100 events of ~500 B per request, 32 connections (x3)"
for _ in 1 2 3; do
  "$bin" --url "$url" bench http --write-key "$key" --batch 100 --events 300000 --concurrency 32 --event-bytes 500 2>/dev/null \
    | grep -E "events/s|latency|errors" | tr -s ' ' | tr '\n' ' '; echo
done
echo "## /v1/track, one event per request, 64 connections"
"$bin" --url "$url" bench http --write-key "$key" --batch 1 --events 60000 --concurrency 64 --event-bytes 500 2>/dev/null \
  | grep -E "events/s|latency|errors|acknowledged" | tr -s ' ' | tr '\n' ' '; echo
echo "RSS after: $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status), peak $(awk '/VmHWM/{print $2, $3}' /proc/$pid/status)"
curl -s "$url/metrics" | grep -E '^strom_ingest_(events_total|dedup_ids|dedup_memory_bytes)|^strom_ingest_validation_seconds_(sum|count)'
