#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the same vendored llama.cpp as the bindings (and as the
# `llama-mtmd-cli` anchor, whose compiled libraries it reuses), for benchmarks/scheduling.py.
#
# Usage: benchmarks/build_llama_server.sh [PYTHON]   (env as for build_mtmd_cli.sh)
# Prints the binary's absolute path on the last line of stdout. Never commit the binary.
set -euo pipefail
exec "$(dirname "$0")/build_mtmd_cli.sh" "${1:-python3}" llama-server
