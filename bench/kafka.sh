#!/usr/bin/env bash
# Kafka listener benchmark: a release `strom serve` on a fresh data dir, loaded by the
# confluent-kafka client (a current librdkafka) and by kcat (librdkafka 2.0.2, C):
#   - produce, 1 KiB records, acks=all, linger.ms=5
#   - a catching-up consumer (confluent-kafka), and raw Fetch requests (no client decoding)
# Usage: bench/kafka.sh [RECORDS] [PARTITIONS]     (defaults 1000000, 4)
# Results are appended to target/bench-kafka.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
partitions="${2:-4}"
out=target/bench-kafka.txt
mkdir -p target
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
say() { echo "$*" | tee -a "$out"; }

say "## bench/kafka.sh $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $records records, $partitions partitions"
cargo build -q --release -p strom
target="${CARGO_TARGET_DIR:-target}"
"$target/release/strom" serve --data-dir "$work/data" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 \
  > "$work/serve.out" 2> "$work/serve.err" &
server_pid=$!
for _ in $(seq 100); do grep -q kafka "$work/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening \(http:.*\)/\1/p' "$work/serve.out")
kafka=$(sed -n 's/^listening kafka:\/\///p' "$work/serve.out")

for topic in bench kcat; do
  curl -sf -XPOST "$url/v1/streams" -d "{\"name\": \"$topic\", \"partitions\": $partitions}" > /dev/null
done
say "### produce: confluent-kafka, 1 KiB records, acks=all, linger.ms=5"
python3 bench/kafka_bench.py produce "$kafka" bench "$records" 1024 | tee -a "$out"
say "fsyncs: $(curl -s "$url/metrics" | awk '/^strom_log_fsyncs_total\{.*stream="bench"/ {s += $2} END {print s}')"
say "### produce: kcat -P (C), 1 KiB lines, acks=all, linger.ms=5"
python3 -c "import sys; sys.stdout.write(('y' * 1023 + '\n') * $records)" > "$work/lines"
start=$(date +%s.%N)
kcat -P -b "$kafka" -t kcat -X acks=all -X linger.ms=5 -X queue.buffering.max.messages=1000000 < "$work/lines"
end=$(date +%s.%N)
say "$(python3 -c "e = $end - $start; print(f'kcat produce: $records records in {e:.2f} s: {$records / e:,.0f} records/s, {$records * 1024 / e / 1e6:,.0f} MB/s')")"
say "### catching-up consumer"
python3 bench/kafka_bench.py consume "$kafka" bench "$partitions" | tee -a "$out"
python3 bench/kafka_bench.py fetch "$kafka" bench "$partitions" | tee -a "$out"
say "RSS after the runs: $(awk '/VmRSS/{print $2, $3}' /proc/$server_pid/status)"
