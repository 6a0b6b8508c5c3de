#!/usr/bin/env bash
# The two-engine GPU capture behind traces/engine/{llamacpp,transformers}-h200.parquet: one
# random-weight model with Qwen2.5-0.5B's shape and Qwen2's real vocabulary, served by
# llama.cpp's llama-server (CUDA) and by `transformers serve --continuous-batching` (the same
# weights, converted from the GGUF), driven by the same `trace replay` workload: identical
# prompts of exact lengths (256 tokens to both tokenizers), 128 output tokens, Poisson stages
# of 20 s at 1, 2, 4, 8 and 16 req/s, `/metrics` sampled every 500 ms where the engine has it,
# and nvidia-smi every second.
#
# Run on the GPU machine from the repository root, in two calls (each under 10 minutes):
#   scripts/engine/gpu-capture.sh llamacpp       # builds llama-server, writes the GGUF, sweeps
#   scripts/engine/gpu-capture.sh transformers   # converts the GGUF to a HF folder, sweeps
# Needs, carried: .cap/lcpp-min.tar.xz (llama.cpp's source without docs and models, plus
# models/ggml-vocab-qwen2.gguf), .cap/trace (a `--no-default-features` release build), and
# .whl/ (fastapi, uvicorn, pydantic... and gguf, for transformers serve and the conversion).
# Everything it makes lives in /tmp/cap (kept while the machine stays warm; rebuilt
# deterministically when not: the model's weights come from a fixed seed). Results go to $OUT.
set -euo pipefail
phase=${1:?llamacpp or transformers}
W=/tmp/cap
OUT=${OUT:-/tmp/cap-out}
mkdir -p "$W" "$OUT"
T=$PWD/.cap/trace
RATES=1,2,4,8,16
WORKLOAD=(random --input-len 256 --output-len 128 --rate "$RATES" --stage-duration 20s --seed 7
  --timeout 60s --drain-timeout 60s --no-continuous-usage --metrics-interval 500ms)

if [ ! -d "$W/site" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" .whl/*.whl
fi
export PYTHONPATH=$W/site

if [ ! -d "$W/llama.cpp" ]; then tar xJf .cap/lcpp-min.tar.xz -C "$W"; fi
if [ ! -f "$W/model.gguf" ]; then
  python3 scripts/engine/random_gguf.py --gguf-py "$W/llama.cpp/gguf-py" \
    --vocab "$W/llama.cpp/models/ggml-vocab-qwen2.gguf" --shape qwen2.5-0.5b --seed 0 \
    -o "$W/model.gguf" 2>&1 | tee -a "$OUT/$phase.log"
fi

gpu_monitor() {
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,power.draw,clocks.sm \
    --format=csv,nounits -l 1 > "$OUT/$1-gpu.csv" 2>/dev/null &
  echo $!
}

wait_healthy() {
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null "$1"; then return 0; fi
    sleep 0.5
  done
  echo "not healthy: $1" >&2
  return 1
}

case "$phase" in
llamacpp)
  if [ ! -x "$W/build/bin/llama-server" ]; then
    start=$(date +%s)
    cmake -S "$W/llama.cpp" -B "$W/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF > "$OUT/build.log" 2>&1
    cmake --build "$W/build" --target llama-server -j "$(nproc)" >> "$OUT/build.log" 2>&1
    echo "built llama-server in $(( $(date +%s) - start )) s" | tee -a "$OUT/$phase.log"
  fi
  "$W/build/bin/llama-server" -m "$W/model.gguf" -ngl 99 --parallel 16 -c 65536 --metrics \
    --host 127.0.0.1 --port 8080 > "$OUT/llama-server.log" 2>&1 &
  server=$!
  wait_healthy http://127.0.0.1:8080/health
  mon=$(gpu_monitor llamacpp)
  "$T" replay "${WORKLOAD[@]}" --url http://127.0.0.1:8080 --label llamacpp \
    --endpoint chat -o "$OUT/llamacpp-h200.parquet" 2>&1 | tee -a "$OUT/$phase.log"
  kill "$mon" "$server"
  # The server's own per-request timings, to check the client's figures against.
  python3 scripts/engine/llamacpp_timings.py "$OUT/llama-server.log" > "$OUT/llamacpp-server-timings.csv"
  ;;
transformers)
  if [ ! -f "$W/hf/config.json" ]; then
    python3 scripts/engine/gguf_to_hf.py "$W/model.gguf" "$W/hf" 2>&1 | tee -a "$OUT/$phase.log"
  fi
  HF_HUB_OFFLINE=1 transformers serve "$W/hf" --continuous-batching \
    --host 127.0.0.1 --port 8000 > "$OUT/transformers-serve.log" 2>&1 &
  server=$!
  # Up once the port answers anything (its /v1/models answers 500 for a local folder).
  for _ in $(seq 1 240); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/models)" != 000 ] && break
    sleep 0.5
  done
  mon=$(gpu_monitor transformers)
  "$T" replay "${WORKLOAD[@]}" --url http://127.0.0.1:8000 --label transformers \
    --endpoint chat --tokenizer "$W/hf/tokenizer.json" --model "$W/hf" \
    -o "$OUT/transformers-h200.parquet" 2>&1 | tee -a "$OUT/$phase.log"
  kill "$mon" "$server"
  ;;
*) echo "unknown phase $phase" >&2; exit 2 ;;
esac
