#!/usr/bin/env bash
# Runs every test of whisper-serve on a fresh Debian machine: installs the
# system tools the tests use (sox, ffmpeg, curl, espeak-ng, nats-server for
# the cluster tests; cmake for the build's bundled libopus; chromium, Node.js
# and playwright-core for the browser tests), a Python venv
# (Whisper's English normaliser + jiwer for WER, the openai SDK, faster-whisper
# for side-by-side checks), builds in release mode, fetches the test models
# (tiny.en, base) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
# cmake: the build compiles the bundled libopus (opusic-sys) with it.
for cmd in sox ffmpeg curl espeak-ng nats-server cmake chromium; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "Rust is needed: https://rustup.rs (cargo not found)"; exit 1; }

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import jiwer, whisper_normalizer, openai, faster_whisper, openapi_spec_validator, websockets, wyoming' 2>/dev/null; then
  echo "==> Python venv: WER scoring, the openai SDK, faster-whisper (side-by-side checks)"
  python3 -m venv .venv
  .venv/bin/pip install -q -r tests/support/requirements.txt
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "==> playwright-core (drives chromium in the browser tests)"
  npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

echo "==> build (release)"
cargo build --release --all-targets

echo "==> test models (tiny.en; base for languages)"
for m in tiny.en base; do
  ./target/release/whisper-serve models pull "$m" --config tests/support/models.json
done

echo "==> tests"
cargo test --release --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" "$@"
