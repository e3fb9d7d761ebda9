#!/usr/bin/env bash
# Starts whisper-serve on a fresh Debian machine with the repo's config.json
# (model "base"): builds the release binary (fetching the CTranslate2
# library from PyPI), downloads the model on first start, serves on :8000.
# Extra arguments go to `whisper-serve serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# C/C++ compilers for the native parts; cmake for the bundled libopus.
if ! command -v cc >/dev/null || ! command -v c++ >/dev/null || ! command -v cmake >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential cmake ca-certificates >/dev/null
fi
command -v cargo >/dev/null || { echo "Rust is needed: https://rustup.rs (cargo not found)"; exit 1; }
cargo build --release
exec ./target/release/whisper-serve serve --config config.json "$@"
