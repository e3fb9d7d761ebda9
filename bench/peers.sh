#!/usr/bin/env bash
# whisper-serve against the servers users would pick instead, side by side on
# this machine, same model (tiny.en), int8, beam 5, same client (our
# `whisper-serve loadtest`), same clips (LibriSpeech + JFK from ../shared):
#   - fw_server.py: FastAPI + faster-whisper, 2 workers x 1 thread and 1 x 2;
#   - ray_server.py: the original Ray Serve design, 4 replicas x 0.5 CPU x 1 thread;
#   - whisper-serve with its defaults (2 replicas x 1 thread, batches of 4).
# Needs the peers' Python packages in .venv:
#   .venv/bin/pip install "ray[serve]" faster-whisper fastapi uvicorn python-multipart
# Writes bench/out/peer-*.{md,json,svg}. LEVELS (default 1,16), PER_LEVEL (64).
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${LEVELS:-1,16}
PER_LEVEL=${PER_LEVEL:-64}
OUT=${OUT:-bench/out}
MODEL=models/tiny.en
PY=.venv/bin/python
BIN=target/release/whisper-serve
PEERS=../shared/peers
[ -x "$BIN" ] || cargo build --release
audio=(../shared/speech/librispeech_*/*.wav ../shared/speech/librispeech_*/*.flac ../shared/speech/jfk_whisper_cpp/jfk.wav)

pid=""
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; pkill -P "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=""; }
trap 'stop; ray stop --force >/dev/null 2>&1 || true' EXIT

wait_health() {
  for _ in $(seq 300); do curl -sf "$1/health" >/dev/null && return 0; sleep 1; done
  echo "no /health at $1" >&2; return 1
}

run() { # name url
  "$BIN" loadtest "$2" --audio "${audio[@]}" --levels "$LEVELS" --per-level "$PER_LEVEL" --out "$OUT" --name "peer-$1"
}

$PY $PEERS/fw_server.py $MODEL --port 8101 --workers 2 --threads 1 >/dev/null 2>&1 & pid=$!
wait_health http://127.0.0.1:8101 && run fw-2x1 http://127.0.0.1:8101; stop

$PY $PEERS/fw_server.py $MODEL --port 8102 --workers 1 --threads 2 >/dev/null 2>&1 & pid=$!
wait_health http://127.0.0.1:8102 && run fw-1x2 http://127.0.0.1:8102; stop

PATH="$(pwd)/.venv/bin:$PATH" $PY $PEERS/ray_server.py $MODEL --port 8200 --replicas 4 --cpu-per-replica 0.5 --threads 1 >/dev/null 2>&1 & pid=$!
wait_health http://127.0.0.1:8200 && run ray-4x0.5 http://127.0.0.1:8200; stop
PATH="$(pwd)/.venv/bin:$PATH" ray stop --force >/dev/null 2>&1 || true

cat > /tmp/ws-peers.json <<JSON
{"server": {"host": "127.0.0.1", "port": 8300}, "model": {"size": "tiny.en", "model_dir": "models", "device": "cpu"},
 "logging": {"level": "WARNING", "file": null}}
JSON
"$BIN" serve --config /tmp/ws-peers.json >/dev/null 2>&1 & pid=$!
wait_health http://127.0.0.1:8300 && run whisper-serve http://127.0.0.1:8300; stop
