#!/usr/bin/env bash
# Captures a real-engine rate sweep for traces/ on the GPU machine (issue 9), in one command:
# installs the carried wheels, builds a random-weight model with Qwen3-0.6B's dimensions, serves it
# with `transformers serve`, and runs `trace replay` against it.
#
# usage (on the GPU machine, from the repo root, with .whl/ and the release binary carried):
#   scripts/engine/capture.sh CONFIG OUTDIR
# CONFIG: cb (--continuous-batching) or nocb (plain). The sweep settings below are shared so that
# the two runs replay the same workload and `trace diff` pairs them request by request.
set -u
config=$1; out=$2
mkdir -p "$out"
trace=${TRACE_BIN:-./.bin/trace}
RATES=${RATES:-1,2,4,8}
N=${N:-40}
OUTPUT_LEN=${OUTPUT_LEN:-64}
# DRAIN: how long a stopped replay waits for in-flight requests; EXTRA: more replay flags.
INPUT_LEN=${INPUT_LEN:-128}

if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site
[ -f /tmp/model/config.json ] || python3 scripts/engine/make_random_model.py /tmp/model qwen3-0.6b \
  > "$out/model-$config.log" 2>&1 || { cat "$out/model-$config.log"; exit 1; }

flags=""
[ "$config" = cb ] && flags="--continuous-batching"
transformers serve /tmp/model $flags --host 127.0.0.1 --port 8000 > "$out/server-$config.log" 2>&1 &
server=$!
# Up once the port answers anything (this engine's /v1/models answers 500 for a local folder).
for _ in $(seq 1 120); do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/models)
  [ "$code" != 000 ] && break
  sleep 1
done
# One raw stream, kept as evidence of the engine's exact SSE framing.
curl -sN http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"model":"/tmp/model","messages":[{"role":"user","content":"w1 w2 w3 w4"}],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}' \
  > "$out/raw-$config.txt"

# Chat route, exact prompt lengths (the model's vocabulary is the words w0..wN), no ignore_eos
# (this engine refuses unknown fields with HTTP 422).
$trace replay random --url http://127.0.0.1:8000 --model /tmp/model --endpoint chat \
  --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" --rate "$RATES" -n "$N" --seed 42 \
  --label "transformers-$config" --timeout 5m --drain-timeout "${DRAIN:-120s}" --no-continuous-usage ${EXTRA:-} \
  -o "$out/transformers-$config.parquet" 2>&1 | tail -20
kill "$server"; wait "$server" 2>/dev/null
tail -5 "$out/server-$config.log"
