#!/usr/bin/env bash
# Regenerates the load-test table and chart for this machine: starts the
# release build on a free port (tiny.en, 2 replicas x 1 thread unless told
# otherwise), runs `whisper-serve loadtest` over the LibriSpeech clips and
# jfk.wav in ../shared/speech, stops the server.
#
#   bench/loadtest.sh                        # all levels: takes a long while
#   LEVELS=1,2 PER_LEVEL=4 bench/loadtest.sh # a quick check
#
# Settings: LEVELS, PER_LEVEL, TIMEOUT, MODEL, REPLICAS, THREADS, MODEL_DIR,
# OUT (bench/out), NAME (loadtest), and any WHISPER_SERVE__SECTION__KEY
# override, which the server reads itself (e.g. WHISPER_SERVE__LIMITS__MAX_QUEUE=1024).
# Extra arguments go to `whisper-serve loadtest` (e.g. --compare old.json).
set -euo pipefail
cd "$(dirname "$0")/.."

LEVELS=${LEVELS:-4,8,16,32,64,128,192,256,512}
PER_LEVEL=${PER_LEVEL:-32}
TIMEOUT=${TIMEOUT:-600}
MODEL=${MODEL:-tiny.en}
REPLICAS=${REPLICAS:-2}
THREADS=${THREADS:-1}
MODEL_DIR=${MODEL_DIR:-models}
OUT=${OUT:-bench/out}
NAME=${NAME:-loadtest}
BIN=target/release/whisper-serve
SPEECH=../shared/speech

[ -x "$BIN" ] || cargo build --release

shopt -s nullglob
audio=()
for f in "$SPEECH"/librispeech_*/*; do
  case "$f" in *.wav|*.flac|*.mp3|*.ogg|*.m4a) audio+=("$f") ;; esac
done
[ -f "$SPEECH/jfk_whisper_cpp/jfk.wav" ] && audio+=("$SPEECH/jfk_whisper_cpp/jfk.wav")
[ ${#audio[@]} -gt 0 ] || { echo "no audio found under $SPEECH" >&2; exit 2; }

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.json" <<EOF
{
  "server": {"host": "127.0.0.1", "port": 0},
  "model": {"size": "$MODEL", "device": "auto", "model_dir": "$MODEL_DIR"},
  "deployment": {"num_replicas": $REPLICAS, "cpu_per_replica": $THREADS},
  "engine": {"threads_per_replica": $THREADS},
  "logging": {"level": "WARNING", "file": null}
}
EOF

# Port 0: the server picks a free port and prints it.
"$BIN" serve --config "$work/config.json" >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
url=""
for _ in $(seq 600); do
  addr=$(sed -n 's/^listening on //p' "$work/stdout" | head -n1)
  if [ -n "$addr" ] && curl -sf "http://$addr/health" >/dev/null; then
    url="http://$addr"
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$url" ]; then
  echo "the server did not become healthy:" >&2
  cat "$work/stderr" >&2
  exit 1
fi

echo "server: $url ($MODEL, $REPLICAS replica(s) x $THREADS threads)" >&2
"$BIN" loadtest "$url" --audio "${audio[@]}" --levels "$LEVELS" --per-level "$PER_LEVEL" \
  --timeout "$TIMEOUT" --out "$OUT" --name "$NAME" "$@"
