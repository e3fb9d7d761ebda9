#!/usr/bin/env bash
# The cluster's cost on one machine, in one run, same clips and client as
# bench/peers.sh (LibriSpeech + JFK, tiny.en int8 beam 5, batches of 4):
#   - serve: 2 replicas x 1 thread (the defaults);
#   - gateway + 1 worker (1 replica x 1 thread) over a local nats-server;
#   - gateway + 2 workers (1 x 1 each);
# at concurrency 1 and 16 (LEVELS), then the gateway's added latency for one
# jfk.wav request (serve with 1 replica vs gateway + 1 worker, REPS
# sequential requests each, median and p90).
# Needs nats-server (scripts/test.sh installs it). Writes bench/out/cluster-*.
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${LEVELS:-1,16}
PER_LEVEL=${PER_LEVEL:-64}
REPS=${REPS:-40}
OUT=${OUT:-bench/out}
BIN=target/release/whisper-serve
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"
audio=(../shared/speech/librispeech_*/*.wav ../shared/speech/librispeech_*/*.flac ../shared/speech/jfk_whisper_cpp/jfk.wav)
JFK=../shared/speech/jfk_whisper_cpp/jfk.wav
work=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop_all; rm -rf "$work"' EXIT

wait_health() {
  for _ in $(seq 300); do curl -sf "$1/health" >/dev/null && return 0; sleep 0.2; done
  echo "no healthy /health at $1" >&2; return 1
}

config() { # port replicas nats_port
  cat >"$work/c-$1.json" <<JSON
{"server": {"host": "127.0.0.1", "port": $1}, "model": {"size": "tiny.en", "model_dir": "models", "device": "cpu"},
 "deployment": {"num_replicas": $2, "cpu_per_replica": 1}, "engine": {"threads_per_replica": 1},
 "cluster": {"nats_url": "nats://127.0.0.1:$3", "worker_port": 0},
 "jobs": {"dir": "$work/jobs-$1"}, "logging": {"level": "WARNING", "file": null}}
JSON
  echo "$work/c-$1.json"
}

run() { # name url
  "$BIN" loadtest "$2" --audio "${audio[@]}" --levels "$LEVELS" --per-level "$PER_LEVEL" --out "$OUT" --name "cluster-$1"
}

# Sequential jfk.wav requests; prints "median p90" in ms.
latency() { # url
  for _ in $(seq "$REPS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -F audio_file=@"$JFK" "$1/transcribe"
  done | sort -n | awk '{a[NR]=$1*1000} END {printf "%.1f %.1f\n", a[int((NR+1)/2)], a[int(NR*0.9)]}'
}

NATS_PORT=14222
nats-server -js -a 127.0.0.1 -p $NATS_PORT -sd "$work/nats" >/dev/null 2>&1 & NATS_PID=$!
trap 'stop_all; kill $NATS_PID 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1

"$BIN" serve --config "$(config 8301 2 $NATS_PORT)" >/dev/null 2>&1 & pids+=($!)
wait_health http://127.0.0.1:8301 && run serve-2x1 http://127.0.0.1:8301; stop_all

w=$(config 8302 1 $NATS_PORT)
"$BIN" worker --config "$w" >/dev/null 2>&1 & pids+=($!)
"$BIN" gateway --config "$w" >/dev/null 2>&1 & pids+=($!)
wait_health http://127.0.0.1:8302 && run gateway-1-worker http://127.0.0.1:8302
"$BIN" worker --config "$w" >/dev/null 2>&1 & pids+=($!)
sleep 3
run gateway-2-workers http://127.0.0.1:8302
stop_all

# Added latency: the same single replica, in-process and behind the gateway.
"$BIN" serve --config "$(config 8303 1 $NATS_PORT)" >/dev/null 2>&1 & pids+=($!)
wait_health http://127.0.0.1:8303
latency http://127.0.0.1:8303 >/dev/null  # warm-up
read -r s_med s_p90 < <(latency http://127.0.0.1:8303); stop_all
"$BIN" worker --config "$w" >/dev/null 2>&1 & pids+=($!)
"$BIN" gateway --config "$w" >/dev/null 2>&1 & pids+=($!)
wait_health http://127.0.0.1:8302
latency http://127.0.0.1:8302 >/dev/null
read -r g_med g_p90 < <(latency http://127.0.0.1:8302); stop_all
{
  echo "| jfk.wav, $REPS sequential requests | median (ms) | p90 (ms) |"
  echo "|---|---|---|"
  echo "| serve, 1 replica x 1 thread | $s_med | $s_p90 |"
  echo "| gateway + 1 worker (1 x 1) | $g_med | $g_p90 |"
  awk -v a="$g_med" -v b="$s_med" 'BEGIN {printf "| added by the gateway | %.1f | |\n", a-b}'
} | tee "$OUT/cluster-latency.md"
