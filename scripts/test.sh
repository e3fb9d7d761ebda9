#!/usr/bin/env bash
# Runs every test of whisper-serve on a fresh Debian machine: installs the
# system tools the tests use, a Python venv for WER scoring (Whisper's
# English normaliser + jiwer), builds in release mode, fetches the test model
# (tiny.en) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for cmd in sox ffmpeg curl; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "Rust is needed: https://rustup.rs (cargo not found)"; exit 1; }

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import jiwer, whisper_normalizer' 2>/dev/null; then
  echo "==> Python venv for WER scoring"
  python3 -m venv .venv
  .venv/bin/pip install -q -r tests/support/requirements.txt
fi

echo "==> build (release)"
cargo build --release --all-targets

echo "==> test model"
WHISPER_SERVE__LOGGING__FILE=null ./target/release/whisper-serve models pull tiny.en --config tests/support/models.json

echo "==> tests"
cargo test --release -- --test-threads="${TEST_THREADS:-2}" "$@"
