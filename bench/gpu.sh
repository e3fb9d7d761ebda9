#!/usr/bin/env bash
# GPU measurement kit (docs/gpu.md): bench/gpu.sh OUT_DIR
# On a GPU machine with this repo copy and no network: target/release/whisper-serve
# (+ its .so files) and target/release/deps/gpu-* (cargo build --release --tests),
# models/base and models/tiny.en, .venv with faster-whisper, ../shared/{speech,peers}
# (or SHARED=...), cuBLAS 12 in ./cuda (`whisper-serve cuda pull`, run beforehand
# where PyPI is reachable) or on the system. Each phase has a hard time limit
# (about 7.5 min in all); everything goes to OUT_DIR:
#   a env.txt                 nvidia-smi, driver/CUDA, GPU; a JFK transcription on CUDA
#   b gpu-tests.txt           tests/gpu.rs (prebuilt binary, WHISPER_SERVE_GPU_TESTS=1)
#   c batch-sweep.md          base float16, 4 replicas x 0.1 GPU, c=64, gpu_max_batch_size 4 8 16 32
#   d loadtest-serve.{md,json} the original load-test table (base, 4 x 0.1 GPU), c=4..512
#   e loadtest-fw.{md,json}   faster-whisper (shared/peers/fw_server.py --device cuda), same client
#     summary.md              ours vs faster-whisper per level; the original RTX 4090 rows vs ours
# GPU_SH_DRY=1: the same phases on this CPU with tiny.en, int8 and a few requests (checks the kit).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
mkdir -p "$1"/{raw,logs,cfg}; OUT=$(cd "$1" && pwd); cd "$(dirname "$0")/.."

BIN=target/release/whisper-serve
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared}; [ -d "$SHARED/speech" ] || SHARED=shared
if [ "${GPU_SH_DRY:-0}" = 1 ]; then
  DRY=1 MODEL=tiny.en DEVICE=cpu COMPUTE=int8 BATCH_KEY=max_batch_size WARM=2
  SWEEP_C=4 SWEEP_N=4 SERVE_LEVELS=${SERVE_LEVELS:-"2:2 4:4"} FW_LEVELS=${FW_LEVELS:-"2:2 4:4"}
else
  DRY=0 MODEL=base DEVICE=cuda COMPUTE=float16 BATCH_KEY=gpu_max_batch_size WARM=16
  SWEEP_C=64 SWEEP_N=64 SERVE_LEVELS=${SERVE_LEVELS:-"4:64 8:64 16:64 32:64 64:64 128:128 256:256 512:512"}
  FW_LEVELS=${FW_LEVELS:-"16:64 64:64 256:256"}
fi
# Levels are concurrency:requests. Seconds per phase: a, b, c (each batch size), d, e.
T_ENV=${T_ENV:-40} T_TESTS=${T_TESTS:-80} T_SWEEP=${T_SWEEP:-30} T_SERVE=${T_SERVE:-120} T_FW=${T_FW:-70}
FW_PORT=${FW_PORT:-8177}
ulimit -n 8192 2>/dev/null || true # 512 clients, 512 server connections

log() { printf '[%3ds] %s\n' "$SECONDS" "$*" | tee -a "$OUT/run.log" >&2; }
die() { log "FAILED: $*"; exit 1; }
[ -x "$BIN" ] || die "$BIN missing: cargo build --release --tests first"
command -v curl >/dev/null || die "curl is needed"
REPORT=$(command -v python3 || echo "$PY")
shopt -s nullglob
if [ -n "${AUDIO_DIR:-}" ]; then AUDIO=("$AUDIO_DIR"/*.wav) # e.g. the same clips as 16 kHz WAV, for bench/fw_wav_server.py
else AUDIO=("$SHARED"/speech/librispeech_*/*.wav "$SHARED"/speech/librispeech_*/*.flac "$SHARED"/speech/jfk_whisper_cpp/jfk.wav); fi
[ ${#AUDIO[@]} -ge 2 ] || die "no clips under $SHARED/speech (set SHARED=)"

SPID="" FPID="" SMI_PID="" LINKS=()
stop() { # pid: TERM, then KILL after 3 s
  [ -n "${1:-}" ] || return 0; kill "$1" 2>/dev/null || true
  for _ in 1 2 3 4 5 6; do kill -0 "$1" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}
cleanup() { stop "$SPID"; stop "$FPID"; stop "$SMI_PID"; for l in "${LINKS[@]}"; do rm -rf -- "$l"; done; }
trap cleanup EXIT; trap 'exit 130' INT TERM

cfg() { # [batch size]: the original deployment, 4 replicas x 0.1 GPU
  local batch=""; [ -z "${1:-}" ] || batch="\"$BATCH_KEY\": $1"
  cat <<EOF
{"server": {"host": "127.0.0.1", "port": 0, "num_cpus": 0, "shutdown_timeout_s": 2},
 "model": {"size": "$MODEL", "device": "$DEVICE", "model_dir": "models"},
 "deployment": {"num_replicas": 4, "cpu_per_replica": 1, "gpu_per_replica": 0.1},
 "engine": {"compute_type": "$COMPUTE"}, "batching": {$batch},
 "decoding": {"language": "en"}, "limits": {"max_queue": 1024},
 "logging": {"level": "WARNING", "file": null}}
EOF
}
healthy() { curl -sf -m 2 "$1/health" >/dev/null; }
serve() { # name config deadline: starts whisper-serve, warms it up; sets URL, SPID
  local addr=""; printf '%s\n' "$2" >"$OUT/cfg/$1.json"; URL=""; : >"$OUT/logs/$1.out"
  "$BIN" serve --config "$OUT/cfg/$1.json" >"$OUT/logs/$1.out" 2>"$OUT/logs/$1.err" & SPID=$!
  while [ "$SECONDS" -lt "$3" ] && kill -0 "$SPID" 2>/dev/null; do
    addr=$(sed -n 's/^listening on //p' "$OUT/logs/$1.out" | head -n1)
    if [ -n "$addr" ] && healthy "http://$addr"; then URL="http://$addr"; warm "$URL" "$3"; return 0; fi
    sleep 0.5
  done
  log "$1: not healthy; see $OUT/logs/$1.err:"; tail -n 5 "$OUT/logs/$1.err" >&2; return 1
}
warm() { # url deadline: a first round (CUDA context, cuBLAS handles, first kernels), not measured
  if [ $(($2 - SECONDS)) -lt 5 ] || ! timeout $(($2 - SECONDS)) "$BIN" loadtest "$1" --audio "${AUDIO[@]}" \
    --levels "$WARM" --per-level "$WARM" --out "$OUT/raw/warmup" >/dev/null 2>&1; then log "warm-up against $1 failed"; fi
}
lt() { # url name deadline c:n...: one loadtest run per level, each within the deadline
  local url=$1 name=$2 deadline=$3 spec c n left; shift 3
  for spec in "$@"; do
    c=${spec%:*} n=${spec#*:} left=$((deadline - SECONDS))
    [ "$left" -ge 5 ] || { log "$name: no time left for c=$c"; continue; }
    timeout "$left" "$BIN" loadtest "$url" --audio "${AUDIO[@]}" --levels "$c" --per-level "$n" \
      --timeout "$left" --out "$OUT/raw" --name "$name-c$c" >>"$OUT/logs/$name.txt" 2>&1 \
      || log "$name: c=$c did not finish (rc $?)"
  done
}
report() { "$REPORT" - "$OUT" "$@" <<'PY' || log "report $1 failed"
import glob, json, os, re, sys
out, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
def runs(prefix):  # raw/<prefix>-c<C>.json, by concurrency
    rows = [json.load(open(p))["levels"][0] for p in glob.glob(f"{out}/raw/{prefix}-c*.json")]
    return {r["concurrency"]: r for r in rows}
def load(name):
    try: return {l["concurrency"]: l for l in json.load(open(f"{out}/{name}.json"))["levels"]}
    except OSError: return {}
f2 = lambda x: "n/a" if x is None else f"{x:.2f}"
if mode == "merge":  # name title
    name, title = args; lv = runs(name); per = sorted(lv.values(), key=lambda r: r["concurrency"])
    json.dump({"title": title, "levels": per}, open(f"{out}/{name}.json", "w"), indent=1)
    md = [f"{title}\n", "| concurrency | requests | avg latency (s) | p50 (s) | p95 (s) | errors | req/s | audio s/s |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['concurrency']} | {r['requests']} | {r['avg_latency_s']:.2f} | {r['p50_latency_s']:.2f} | {r['p95_latency_s']:.2f} | {r['errors']} ({r['error_rate']*100:.1f}%) | {r['requests_per_s']:.2f} | {r['audio_s_per_s']:.1f} |" for r in per]
    open(f"{out}/{name}.md", "w").write("\n".join(md) + "\n")
elif mode == "sweep":  # title sizes...
    md = [args[0] + "\n", "| batch size | requests | audio s/s | p50 (s) | p95 (s) | errors | decode steps by batch size |", "|---|---|---|---|---|---|---|"]
    for bs in args[1:]:
        r = next(iter(runs(f"sweep-bs{bs}").values()), None)
        try: steps = json.load(open(f"{out}/raw/sweep-bs{bs}-stats.json")).get("batch_sizes")
        except (OSError, ValueError): steps = None
        md.append(f"| {bs} | not run |  |  |  |  |  |" if r is None else f"| {bs} | {r['requests']} | {r['audio_s_per_s']:.1f} | {r['p50_latency_s']:.2f} | {r['p95_latency_s']:.2f} | {r['errors']} | {json.dumps(steps)} |")
    open(f"{out}/batch-sweep.md", "w").write("\n".join(md) + "\n")
else:  # summary: header lines
    ours, fw = load("loadtest-serve"), load("loadtest-fw")
    md = ["# GPU run summary\n", *[a + "  " for a in args], ""]
    md += ["## whisper-serve vs faster-whisper (same device, model, client, clips)\n", "| concurrency | ours audio-s/s | faster-whisper audio-s/s | ours / theirs | ours p95 (s) | theirs p95 (s) | errors ours / theirs |", "|---|---|---|---|---|---|---|"]
    for c in sorted(set(ours) | set(fw)):
        o, t = ours.get(c, {}), fw.get(c, {}); a, b = o.get("audio_s_per_s"), t.get("audio_s_per_s")
        md.append(f"| {c} | {f2(a)} | {f2(b)} | {f2(a / b) if a and b else 'n/a'} | {f2(o.get('p95_latency_s'))} | {f2(t.get('p95_latency_s'))} | {o.get('errors', 'n/a')} / {t.get('errors', 'n/a')} |")
    md += ["", "## The original design's RTX 4090 table vs ours (base, 4 replicas x 0.1 GPU)\n", "| concurrency | 4090 avg / p95 (s) | ours avg / p95 (s) | 4090 errors | ours errors | ours audio-s/s |", "|---|---|---|---|---|---|"]
    for c, (avg, p95) in {64: (2.38, 4.20), 512: (17.63, 33.19)}.items():
        o = ours.get(c)
        md.append(f"| {c} | {avg:.2f} / {p95:.2f} | " + (f"{o['avg_latency_s']:.2f} / {o['p95_latency_s']:.2f} | 0 % | {o['error_rate']*100:.1f} % | {o['audio_s_per_s']:.1f} |" if o else "not measured | 0 % | n/a | n/a |"))
    use = [l.split(",") for l in open(f"{out}/gpu-usage.csv")] if os.path.exists(f"{out}/gpu-usage.csv") else []
    use = [(float(u[2]), float(u[3])) for u in use if len(u) >= 4 and re.fullmatch(r"\s*[\d.]+", u[2]) and re.fullmatch(r"\s*[\d.]+", u[3])]
    if use: md += ["", f"GPU during phases c-e (nvidia-smi each second, gpu-usage.csv): utilisation max {max(u for u, _ in use):.0f} %, memory max {max(m for _, m in use):.0f} MiB."]
    open(f"{out}/summary.md", "w").write("\n".join(md) + "\n")
PY
}

log "a: environment -> env.txt"
CUBLAS_DIR=$(find cuda -name 'libcublas.so.12*' -printf '%h\n' 2>/dev/null | head -n1 || true)
have_cublas() { [ -n "$CUBLAS_DIR" ] || ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.12'; }
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)  mode: $([ "$DRY" = 1 ] && echo 'DRY RUN (CPU, tiny.en)' || echo GPU)"
  uname -srm; "$BIN" --version; git rev-parse HEAD 2>/dev/null || true
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
  if command -v nvidia-smi >/dev/null; then
    timeout 10 nvidia-smi || true
    timeout 10 nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv || true
  else echo "nvidia-smi: not found (no NVIDIA driver on this machine)"; fi
  echo "cuBLAS 12: ${CUBLAS_DIR:-not in ./cuda}; system: $(ldconfig -p 2>/dev/null | grep -m1 -o '/.*libcublas\.so\.12' || echo none)"
} >"$OUT/env.txt" 2>&1
if [ "$DRY" = 0 ]; then
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: this is not a GPU machine (GPU_SH_DRY=1 checks the kit on CPU)"
  if ! have_cublas; then
    log "no cuBLAS 12 in ./cuda or on the system: trying whisper-serve cuda pull"
    timeout 60 "$BIN" cuda pull >>"$OUT/env.txt" 2>&1 || die "cuBLAS 12 missing and 'cuda pull' failed (no PyPI here?): run 'target/release/whisper-serve cuda pull' where PyPI is reachable and copy ./cuda here, or install cuBLAS 12 (see docs/gpu.md)"
    CUBLAS_DIR=$(find cuda -name 'libcublas.so.12*' -printf '%h\n' | head -n1)
  fi
  cfg "" >"$OUT/cfg/preflight.json"
  echo "--- JFK on CUDA (whisper-serve transcribe, $MODEL):" >>"$OUT/env.txt"
  timeout "$T_ENV" "$BIN" transcribe --config "$OUT/cfg/preflight.json" "$SHARED/speech/jfk_whisper_cpp/jfk.wav" >>"$OUT/env.txt" 2>&1 \
    || die "whisper-serve cannot transcribe on CUDA; see $OUT/env.txt"
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >"$OUT/gpu-usage.csv" 2>&1 & SMI_PID=$!
fi
grep -m1 -E 'NVIDIA-SMI|nvidia-smi: not found' "$OUT/env.txt" | tee -a "$OUT/run.log" >&2 || true

log "b: tests/gpu.rs -> gpu-tests.txt"
TESTBIN=$(find target/release/deps -maxdepth 1 -type f -name 'gpu-*' -executable -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n1 | cut -d' ' -f2-)
if [ -z "$TESTBIN" ]; then
  echo "no target/release/deps/gpu-* test binary: cargo build --release --tests" >"$OUT/gpu-tests.txt"; TESTS="not run (no test binary)"
else
  # The binary looks for whisper-serve and ../shared at the paths it was built in.
  ROOT=$(grep -a -o -m1 '/[A-Za-z0-9._+/-]*/target/release/whisper-serve' "$TESTBIN" | head -n1 || true); ROOT=${ROOT%/target/release/whisper-serve}
  if [ -n "$ROOT" ] && [ ! -e "$ROOT" ]; then # this copy lives elsewhere: a stand-in tree there
    mkdir -p "$ROOT"; LINKS+=("$ROOT"); for x in target tests models .venv; do ln -s "$PWD/$x" "$ROOT/$x"; done
    x="$(dirname "$ROOT")/shared"; [ -e "$x" ] || { ln -s "$(cd "$SHARED" && pwd)" "$x"; LINKS+=("$x"); }
  fi
  GATE=$([ "$DRY" = 1 ] && echo 0 || echo 1)
  echo "$TESTBIN (built in ${ROOT:-?}), WHISPER_SERVE_GPU_TESTS=$GATE" >"$OUT/gpu-tests.txt"
  if WHISPER_SERVE_GPU_TESTS=$GATE WHISPER_SERVE_TEST_MODEL_DIR="$PWD/models" WHISPER_SERVE_PYTHON="$PY" \
      timeout "$T_TESTS" "$TESTBIN" --nocapture >>"$OUT/gpu-tests.txt" 2>&1; then TESTS=passed; else TESTS="FAILED (rc $?)"; fi
  if [ "$DRY" = 1 ]; then TESTS="$TESTS (as skips: no GPU)"; fi
fi
log "   tests: $TESTS"

log "c: batch-size sweep -> batch-sweep.md"
for bs in 4 8 16 32; do
  end=$((SECONDS + T_SWEEP))
  if serve "sweep-bs$bs" "$(cfg "$bs")" "$end"; then
    lt "$URL" "sweep-bs$bs" "$end" "$SWEEP_C:$SWEEP_N"
    curl -sf -m 5 "$URL/v1/stats?recent=0" >"$OUT/raw/sweep-bs$bs-stats.json" || true
  fi
  stop "$SPID"; SPID=""
done
report sweep "$MODEL $COMPUTE on $DEVICE, 4 replicas x 0.1 GPU, c=$SWEEP_C, $SWEEP_N requests per size after a warm-up of $WARM (the batch sizes seen include it)" 4 8 16 32

log "d: the original load-test table -> loadtest-serve.{md,json}"
end=$((SECONDS + T_SERVE))
if serve serve "$(cfg "")" "$end"; then
  # shellcheck disable=SC2086 # the level list splits on purpose
  lt "$URL" loadtest-serve "$end" $SERVE_LEVELS
  curl -sf -m 5 "$URL/v1/stats?recent=0" >"$OUT/stats-serve.json" || true
fi
stop "$SPID"; SPID=""
report merge loadtest-serve "whisper-serve, $MODEL $COMPUTE on $DEVICE, 4 replicas x 0.1 GPU, default batching; requests per level (concurrency:requests): $SERVE_LEVELS"

log "e: faster-whisper (fw_server.py --device $DEVICE) -> loadtest-fw.{md,json}"
end=$((SECONDS + T_FW))
# FW_WRAP=bench/fw_wav_server.py where PyAV cannot be installed (it then needs AUDIO_DIR's WAV files)
LD_LIBRARY_PATH="${CUBLAS_DIR:+$PWD/$CUBLAS_DIR:}${LD_LIBRARY_PATH:-}" "$PY" ${FW_WRAP:+"$FW_WRAP"} "$SHARED/peers/fw_server.py" "models/$MODEL" --port "$FW_PORT" \
  --device "$DEVICE" --compute "$COMPUTE" --workers 4 --threads 1 --beam 5 >"$OUT/logs/fw.out" 2>&1 & FPID=$!
while [ "$SECONDS" -lt "$end" ] && kill -0 "$FPID" 2>/dev/null && ! healthy "http://127.0.0.1:$FW_PORT"; do sleep 0.5; done
if healthy "http://127.0.0.1:$FW_PORT"; then
  warm "http://127.0.0.1:$FW_PORT" "$end"
  # shellcheck disable=SC2086
  lt "http://127.0.0.1:$FW_PORT" loadtest-fw "$end" $FW_LEVELS
else log "fw_server did not start; see $OUT/logs/fw.out"; tail -n 5 "$OUT/logs/fw.out" >&2; fi
stop "$FPID"; FPID=""; stop "$SMI_PID"; SMI_PID=""
report merge loadtest-fw "faster-whisper (fw_server.py), $MODEL $COMPUTE on $DEVICE, 4 workers, beam 5, language en; requests per level: $FW_LEVELS"

CUT=$(grep -E 'did not finish|no time left|not healthy|failed' "$OUT/run.log" | cut -c8- | paste -sd ';' - || true)
report summary "$(head -n1 "$OUT/env.txt")" "GPU: $(grep -m1 -A1 '^index, name' "$OUT/env.txt" | tail -n1 || echo none)" \
  "tests/gpu.rs: $TESTS" "Both servers: $MODEL, $COMPUTE, beam 5, language en, 4 replicas/workers; clips: ${#AUDIO[@]} (LibriSpeech + JFK); each server warmed up with $WARM requests first." \
  "The 4090 rows are the original Ray Serve + faster-whisper design's, as quoted in the GPU brief (c=64 and 512 only)." \
  "Cut short or failed: ${CUT:-nothing}." "Total time: ${SECONDS} s."
log "done in ${SECONDS} s: $OUT"
cat "$OUT/summary.md"; echo; cat "$OUT/batch-sweep.md"
