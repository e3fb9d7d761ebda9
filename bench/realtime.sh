#!/usr/bin/env bash
# Realtime transcription at real time, the standard set (bench/realtime.py):
# starts whisper-serve (tiny.en on CPU, 2 cores: 2 replicas x 1 thread, the
# fastest set-up measured on 2 cores), then
#   1. every shared/speech clip once in one stream (full corpus, N=1):
#      commit latency p50/p90 (a) and WER streamed vs as files (b);
#   2. N = 1, 2, 4, 8, 12, 16 streams at once, ~60 s of speech each: latency,
#      WER and errors per N, and the largest N with p50 <= 2 s and no errors (c);
#   3. N = 8 again with 2 clients posting the clips as files meanwhile: the
#      same, plus the files' throughput.
# Writes OUT_DIR (default bench/results/realtime-cpu-DATE): realtime.json,
# realtime.md (the table), env.txt (machine, build, load before the run),
# server.json (the config), logs/. About 20 minutes on an idle 2-core machine;
# run it on one: other load on the cores shows up as latency.
#   bench/realtime.sh [OUT_DIR]
# Environment: STREAMS (1,2,4,8,12,16), PLAYLIST_S (60), FULL (1: step 1 on),
# FILE_LOAD (2 clients; 0: no step 3), FILE_LOAD_AT (8), MODEL (tiny.en),
# REPLICAS (2), CPU_PER_REPLICA (1), NUM_CPUS (2), STEP_MS (the server's
# realtime.step_ms; default: the server's), STEP_WINDOW_S (realtime.step_window_s;
# default: the server's), EXTRA (more bench/realtime.py
# arguments, e.g. "--speech-dir DIR"). A short check:
#   STREAMS=1,2 PLAYLIST_S=20 FULL=0 FILE_LOAD=1 FILE_LOAD_AT=2 bench/realtime.sh /tmp/rt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/realtime-cpu-$(date -u +%F)}
STREAMS=${STREAMS:-1,2,4,8,12,16} PLAYLIST_S=${PLAYLIST_S:-60} FULL=${FULL:-1}
FILE_LOAD=${FILE_LOAD:-2} FILE_LOAD_AT=${FILE_LOAD_AT:-8} MODEL=${MODEL:-tiny.en}
REPLICAS=${REPLICAS:-2} CPU_PER_REPLICA=${CPU_PER_REPLICA:-1} NUM_CPUS=${NUM_CPUS:-2}
BIN=target/release/whisper-serve
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT/logs"
[ -x "$BIN" ] || cargo build --release

pid=""
stop() { # TERM, then KILL after 5 s
  [ -n "$pid" ] || return 0; kill "$pid" 2>/dev/null || true
  for _ in $(seq 10); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
}
trap stop EXIT; trap 'exit 130' INT TERM

rt=()
[ -z "${STEP_MS:-}" ] || rt+=("\"step_ms\": $STEP_MS")
[ -z "${STEP_WINDOW_S:-}" ] || rt+=("\"step_window_s\": $STEP_WINDOW_S")
step=""; [ ${#rt[@]} = 0 ] || step=", \"realtime\": {$(IFS=,; echo "${rt[*]}")}"
cat >"$OUT/server.json" <<JSON
{"server": {"host": "127.0.0.1", "port": 0, "num_cpus": $NUM_CPUS},
 "model": {"size": "$MODEL", "device": "cpu", "model_dir": "models"},
 "deployment": {"num_replicas": $REPLICAS, "cpu_per_replica": $CPU_PER_REPLICA},
 "logging": {"level": "WARNING", "file": null}$step}
JSON
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)"
  uname -srm; "$BIN" --version; git rev-parse HEAD 2>/dev/null || true
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bench: STREAMS=$STREAMS PLAYLIST_S=$PLAYLIST_S FULL=$FULL FILE_LOAD=$FILE_LOAD FILE_LOAD_AT=$FILE_LOAD_AT STEP_MS=${STEP_MS:-} STEP_WINDOW_S=${STEP_WINDOW_S:-} EXTRA=${EXTRA:-}"
} >"$OUT/env.txt"

"$BIN" serve --config "$OUT/server.json" >"$OUT/logs/server.out" 2>"$OUT/logs/server.err" & pid=$!
url=""
for _ in $(seq 600); do
  kill -0 "$pid" 2>/dev/null || { echo "whisper-serve exited; see $OUT/logs/server.err" >&2; tail -n 5 "$OUT/logs/server.err" >&2; exit 1; }
  addr=$(sed -n 's/^listening on //p' "$OUT/logs/server.out" | head -n1)
  if [ -n "$addr" ] && curl -sf -m 2 "http://$addr/health" >/dev/null; then url="http://$addr"; break; fi
  sleep 0.5
done
[ -n "$url" ] || { echo "whisper-serve not healthy after 300 s" >&2; exit 1; }

args=(--url "$url" --streams "$STREAMS" --playlist-seconds "$PLAYLIST_S" --out "$OUT/realtime.json")
[ "$FULL" = 1 ] && args+=(--full-corpus)
[ "$FILE_LOAD" -gt 0 ] && args+=(--file-load "$FILE_LOAD" --file-load-streams "$FILE_LOAD_AT")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && args+=($EXTRA)
rc=0
"$PY" bench/realtime.py "${args[@]}" 2> >(tee "$OUT/logs/bench.err" >&2) | tee "$OUT/logs/bench.out" || rc=$?
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
echo "results: $OUT/realtime.md, $OUT/realtime.json$([ "$rc" = 0 ] || echo " (realtime.py exit $rc: streams with errors or clips left out; see the table)")"
exit "$rc"
