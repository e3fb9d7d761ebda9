#!/usr/bin/env bash
# Peak memory (VmHWM) of whisper-serve with 1 and with 2 replicas, after a
# burst of concurrent requests: replicas on one device share one copy of the
# weights, so a replica costs its activations, not a model.
#   bench/memory.sh [MODEL]   (default base)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-base}
BIN=target/release/whisper-serve
[ -x "$BIN" ] || cargo build --release
clips=(../shared/speech/librispeech_*/*.wav ../shared/speech/jfk_whisper_cpp/jfk.wav)
for replicas in 1 2; do
  cfg=$(mktemp)
  cat > "$cfg" <<JSON
{"server": {"host": "127.0.0.1", "port": 8400}, "model": {"size": "$MODEL", "model_dir": "models", "device": "cpu"},
 "deployment": {"num_replicas": $replicas, "cpu_per_replica": 1}, "logging": {"level": "WARNING", "file": null}}
JSON
  "$BIN" serve --config "$cfg" >/dev/null 2>&1 & pid=$!
  for _ in $(seq 120); do curl -sf http://127.0.0.1:8400/health >/dev/null && break; sleep 0.5; done
  idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  for round in 1 2; do
    for f in "${clips[@]}" "${clips[@]}"; do curl -s -o /dev/null -F "audio_file=@$f" http://127.0.0.1:8400/transcribe & done
    wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
  done
  peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  echo "replicas=$replicas model=$MODEL rss_idle_mb=$((idle / 1024)) rss_peak_mb=$((peak / 1024))"
  kill $pid; wait $pid 2>/dev/null || true; rm -f "$cfg"
done
