#!/usr/bin/env bash
# Issue 19's GPU check: `trace replay` against llama.cpp's llama-server (CUDA) on the GPU
# machine, with GPU telemetry from NVML (the default: the target is on this host), and
# nvidia-smi sampling every second beside it, so the report's per-stage peak memory and mean
# utilisation can be checked against a reading trace did not make. The model is the tiny
# random-weight GGUF the CI builds (scripts/engine/random_gguf.py), so the figures are the
# engine's context and KV cache, not a real model's weights.
#   scripts/engine/gpu-nvml.sh           (from the repository root; results in $OUT)
# Needs, carried: .dev/lcpp.tar.xz (llama.cpp's pinned source without docs and models),
# .dev/model.gguf and .dev/trace (a release build).
set -euo pipefail
W=/tmp/nvml
OUT=${OUT:-/tmp/nvml-out}
mkdir -p "$W" "$OUT"
T=$PWD/.dev/trace
if [ ! -x "$W/build/bin/llama-server" ]; then
  tar xJf .dev/lcpp.tar.xz -C "$W"
  start=$(date +%s)
  cmake -S "$W/llama.cpp" -B "$W/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF > "$OUT/build.log" 2>&1
  cmake --build "$W/build" --target llama-server -j "$(nproc)" >> "$OUT/build.log" 2>&1
  echo "built llama-server in $(( $(date +%s) - start )) s" | tee -a "$OUT/nvml.log"
fi
"$W/build/bin/llama-server" -m .dev/model.gguf -ngl 99 --parallel 16 -c 131072 --metrics \
  --host 127.0.0.1 --port 8080 > "$OUT/llama-server.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do
  curl -sf -o /dev/null http://127.0.0.1:8080/health && break
  sleep 0.5
done
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,power.draw,clocks.sm \
  --format=csv,nounits -l 1 > "$OUT/nvidia-smi.csv" 2>/dev/null &
mon=$!
"$T" replay random --url http://127.0.0.1:8080 --label llamacpp-nvml --endpoint chat \
  --input-len 256 --output-len 128 --ignore-eos --rate 4,32 --stage-duration 15s --seed 7 \
  --metrics-interval 1s -o "$OUT/llamacpp-nvml-h200.parquet" 2>&1 | tee -a "$OUT/nvml.log"
kill "$mon" "$server"
"$T" inspect "$OUT/llamacpp-nvml-h200.parquet" | grep -i gpu | tee -a "$OUT/nvml.log" || true
