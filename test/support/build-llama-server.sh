#!/usr/bin/env bash
# Builds llama.cpp's llama-server once, from the llama.cpp source that the npm package node-llama-cpp
# ships for offline builds (llama/gitRelease.bundle), into a cache outside the clone. The remote-engine
# suite against llama-server runs only when this binary exists (test/support/llama-server.ts).
# About 11 minutes on 2 cores; later runs find the binary and return at once.
#   test/support/build-llama-server.sh   # prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=node_modules/node-llama-cpp/llama/gitRelease.bundle
[ -f "$BUNDLE" ] || { echo "no $BUNDLE: run npm ci first" >&2; exit 1; }
# One cache entry per llama.cpp commit, so a node-llama-cpp upgrade builds the new source.
COMMIT=$(git bundle list-heads "$BUNDLE" | head -1 | cut -c1-12)
ROOT="${STREAMING_INFERENCE_CACHE:-$HOME/.cache/streaming-inference}/llama-server/$COMMIT"
BIN="$ROOT/build/bin/llama-server"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$ROOT"
[ -d "$ROOT/src/.git" ] || git clone -q "$BUNDLE" "$ROOT/src"
# Low priority: the build shares the machine with whatever else runs.
nice -n 19 cmake -S "$ROOT/src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON >&2
nice -n 19 cmake --build "$ROOT/build" -t llama-server -j "$(nproc)" >&2
echo "$BIN"
