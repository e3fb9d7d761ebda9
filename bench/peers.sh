#!/usr/bin/env bash
# whisper-serve against the servers users would pick instead, side by side on
# this machine, same model (tiny.en), int8, beam 5, same client (our
# `whisper-serve loadtest`), same clips (LibriSpeech + JFK from ../shared):
#   - fw_server.py: FastAPI + faster-whisper, 2 workers x 1 thread and 1 x 2;
#   - the same 2 x 1 with glibc's allocator tuned (the strongest CPU peer we
#     know: GLIBC_TUNABLES below, the settings whisper-serve applies itself);
#   - ray_server.py: the original Ray Serve design, 4 replicas x 0.5 CPU x 1 thread;
#   - whisper-serve with its defaults (2 replicas x 1 thread, batches of 4),
#     and again with batching.pack_short_clips on.
# Needs the peers' Python packages in .venv:
#   .venv/bin/pip install "ray[serve]" faster-whisper fastapi uvicorn python-multipart
# Writes bench/out/peer-*.{md,json,svg} and bench/out/peers-summary.md (each
# server at each level: audio-s/s, p95, and whisper-serve's ratios to the
# tuned peer). LEVELS (default 16,64), PER_LEVEL (64).
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${LEVELS:-16,64}
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

TUNED="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=268435456:glibc.malloc.arena_max=1"
GLIBC_TUNABLES=$TUNED $PY $PEERS/fw_server.py $MODEL --port 8103 --workers 2 --threads 1 >/dev/null 2>&1 & pid=$!
wait_health http://127.0.0.1:8103 && run fw-2x1-tuned http://127.0.0.1:8103; stop

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

cat > /tmp/ws-peers-packed.json <<JSON
{"server": {"host": "127.0.0.1", "port": 8301}, "model": {"size": "tiny.en", "model_dir": "models", "device": "cpu"},
 "batching": {"pack_short_clips": true}, "logging": {"level": "WARNING", "file": null}}
JSON
"$BIN" serve --config /tmp/ws-peers-packed.json >/dev/null 2>&1 & pid=$!
wait_health http://127.0.0.1:8301 && run whisper-serve-packed http://127.0.0.1:8301; stop

$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
names = ["fw-2x1", "fw-2x1-tuned", "fw-1x2", "ray-4x0.5", "whisper-serve", "whisper-serve-packed"]
runs = {n: json.loads((out / f"peer-{n}.json").read_text()) for n in names if (out / f"peer-{n}.json").exists()}
lines = ["| server | concurrency | audio-s/s | p95 (s) | errors | x tuned peer (audio-s/s) | p95 / tuned peer's |", "|---|---|---|---|---|---|---|"]
tuned = {l["concurrency"]: l for l in runs.get("fw-2x1-tuned", {}).get("levels", [])}
for n, d in runs.items():
    for l in d["levels"]:
        t = tuned.get(l["concurrency"])
        ratio = f'{l["audio_s_per_s"] / t["audio_s_per_s"]:.2f}x' if t else "-"
        p95 = f'{l["p95_latency_s"] / t["p95_latency_s"]:.2f}' if t else "-"
        lines.append(f'| {n} | {l["concurrency"]} | {l["audio_s_per_s"]:.1f} | {l["p95_latency_s"]:.2f} | {l["errors"]} | {ratio} | {p95} |')
(out / "peers-summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
