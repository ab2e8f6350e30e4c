#!/usr/bin/env bash
# End to end: /v1/track events at a steady rate (default 1000/s for 30 s), a filter rule that
# fires a webhook for each, and the bench's own receiver timing send -> webhook received.
# Usage: bench/webhook.sh [RATE] [SECONDS] [STROM_BINARY]   (default: builds target/release/strom)
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-1000}"
seconds="${2:-30}"
bin="${3:-}"
if [ -z "$bin" ]; then
  cargo build -q --release -p strom
  bin=target/release/strom
fi
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="bench-webhook-key"
mkdir -p "$work/rules"
cat > "$work/rules/bench-ping.yaml" <<'RULE'
name: bench-ping
streams: [events]
filter: event.event == "BenchPing"
actions:
  - webhook: bench
    payload: '{"sent_us": event.properties.sent_us}'
RULE
cat > "$work/strom.toml" <<TOML
[rules]
dir = "$work/rules"
[[sources]]
name = "bench"
write_keys_sha256 = ["$(printf %s "$key" | sha256sum | cut -d' ' -f1)"]
[webhooks]
allow_private = ["127.0.0.1"]
[[webhooks.destinations]]
name = "bench"
url = "http://127.0.0.1:$port/hook"
secret = "$("$bin" webhooks new-secret)"
concurrency = 32
TOML
"$bin" serve --config "$work/strom.toml" --data-dir "$work/data" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 \
  > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening \(http:.*\)/\1/p' "$work/serve.out")
# The rule reads from the end of the stream when it first runs: let it start first.
curl -s -o /dev/null -X POST "$url/v1/streams" -H 'content-type: application/json' -d '{"name":"events","partitions":4}'
for _ in $(seq 100); do curl -s "$url/v1/rules/bench-ping" | grep -q '"state":"running"' && break; sleep 0.1; done
echo "# $(date -u +%FT%TZ) on $(nproc) cores; git $(git rev-parse --short HEAD); load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" --url "$url" bench webhook --receiver "127.0.0.1:$port" --rate "$rate" --seconds "$seconds" --write-key "$key"
echo "server RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status), peak $(awk '/VmHWM/{print $2, $3}' /proc/$pid/status)"
curl -s "$url/metrics" | grep -E '^strom_rules_(events|emits|deliveries)[a-z_]*_total|^strom_webhooks_(delivered_total|attempts_total)' | head -20
