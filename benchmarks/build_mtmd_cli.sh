#!/usr/bin/env bash
# Build a llama.cpp tool (`llama-mtmd-cli` by default, or `llama-server`) from the llama.cpp source vendored
# in the llama-cpp-python sdist that matches the installed bindings, so the anchor runs the same llama.cpp
# commit as llava-edge. Both tools share one build directory, so the second reuses the compiled libraries.
#
# Usage: benchmarks/build_mtmd_cli.sh [PYTHON] [TARGET]   (PYTHON defaults to `python3`, TARGET to llama-mtmd-cli)
# Env:   MTMD_CLI_DIR   work directory (default ~/.cache/llava-edge/mtmd-cli); nothing lands in the repo
#        MTMD_CLI_JOBS  parallel build jobs (default 2)
#        CMAKE_ARGS     extra cmake flags, as for llama-cpp-python (e.g. "-DGGML_NATIVE=off")
# Prints the binary's absolute path on the last line of stdout. Never commit the binary.
set -euo pipefail

PYTHON="${1:-python3}"
TARGET="${2:-llama-mtmd-cli}"
WORK="${MTMD_CLI_DIR:-$HOME/.cache/llava-edge/mtmd-cli}"
JOBS="${MTMD_CLI_JOBS:-2}"

case "$TARGET" in
    llama-mtmd-cli) SERVER=OFF ;;
    llama-server) SERVER=ON ;;  # the server without its web UI: no npm build, no download of prebuilt assets
    *) echo "unknown target $TARGET: use llama-mtmd-cli or llama-server" >&2; exit 2 ;;
esac

VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
SRC="$WORK/llama_cpp_python-$VERSION"
BUILD="$SRC/vendor/llama.cpp/build-mtmd-cli"
BIN="$BUILD/bin/$TARGET"

mkdir -p "$WORK"
if [[ ! -d "$SRC" ]]; then
    echo "fetching the llama-cpp-python $VERSION sdist" >&2
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --dest "$WORK" "llama-cpp-python==$VERSION" >&2
    tar -xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
fi

if [[ ! -x "$BIN" ]]; then
    # llama-cpp-python's own build: Release, GGML_NATIVE on (the cmake default), CPU backend, no curl.
    # shellcheck disable=SC2086  # CMAKE_ARGS is a flag list on purpose
    cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER="$SERVER" -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF \
        ${CMAKE_ARGS:-} >&2
    cmake --build "$BUILD" --config Release --target "$TARGET" -j "$JOBS" >&2
fi

echo "$BIN"
