#!/usr/bin/env bash
# Models on demand: for each model in MODELS, on a fresh server whose default
# model is DEFAULT, measures
#   - the first request naming it (cold: load + decode of jfk.wav),
#   - a second request (warm), and its engine's load time (`load_s` of
#     GET /v1/models),
#   - the server's RSS before, with it loaded, and after it unloads
#     (models.ttl_s = TTL).
# Prints a Markdown table; run on an idle machine. The page cache is warm
# after the first run (model.bin read from memory), as on a serving host.
#   bench/models.sh
# Environment: DEFAULT (tiny.en), MODELS ("base"), TTL (3), MODEL_DIR (models),
# REPLICAS (2), CPU_PER_REPLICA (1).
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT=${DEFAULT:-tiny.en} MODELS=${MODELS:-base} TTL=${TTL:-3} MODEL_DIR=${MODEL_DIR:-models}
REPLICAS=${REPLICAS:-2} CPU_PER_REPLICA=${CPU_PER_REPLICA:-1}
BIN=target/release/whisper-serve
JFK=../shared/speech/jfk_whisper_cpp/jfk.wav
[ -x "$BIN" ] || cargo build --release
tmp=$(mktemp -d)
pid=""
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap stop EXIT

rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
ask() { # model -> seconds
  curl -s -o /dev/null -w '%{time_total}' -F "file=@$JFK" -F "model=$1" "$url/v1/audio/transcriptions"
}
state() { curl -s "$url/v1/models" | python3 -c "import json,sys; d=[m for m in json.load(sys.stdin)['data'] if m['id']=='$1'][0]; print(d['$2'])"; }

echo "| model | engine load (s) | cold first request (s) | warm request (s) | RSS default only (MB) | RSS loaded (MB) | RSS after unload (MB) |"
echo "|---|---|---|---|---|---|---|"
for m in $MODELS; do
  cat > "$tmp/config.json" <<EOF
{"server": {"host": "127.0.0.1", "port": 0},
 "model": {"size": "$DEFAULT", "device": "cpu", "model_dir": "$(realpath "$MODEL_DIR")"},
 "deployment": {"num_replicas": $REPLICAS, "cpu_per_replica": $CPU_PER_REPLICA},
 "logging": {"level": "WARNING", "file": null},
 "jobs": {"dir": "$tmp/jobs"},
 "models": {"ttl_s": $TTL, "max_loaded": 3}}
EOF
  "$BIN" serve --config "$tmp/config.json" > "$tmp/out" 2> "$tmp/err" & pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$tmp/out" 2>/dev/null && break; sleep 0.1; done
  url="http://$(sed -n 's/^listening on //p' "$tmp/out" | head -1)"
  for _ in $(seq 600); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] && break; sleep 0.2; done
  ask "$DEFAULT" > /dev/null  # the default model's first batch, so its scratch memory is counted before
  before=$(rss)
  cold=$(ask "$m"); warm=$(ask "$m"); loaded=$(rss); load_s=$(state "$m" load_s)
  for _ in $(seq 300); do [ "$(state "$m" state)" != loaded ] && break; sleep 0.2; done
  sleep 1; after=$(rss)
  printf '| %s | %.2f | %.2f | %.2f | %s | %s | %s |\n' "$m" "$load_s" "$cold" "$warm" "$before" "$loaded" "$after"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
