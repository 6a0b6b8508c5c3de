#!/usr/bin/env bash
# Issue 20's one-host figures in one call on the GPU machine (~7 min): STREAMS concurrent streams
# from SHARDS client processes against SIMS simulators with their truth logs
# (device-streams-sharded.sh: TTFT/ITL error, peak in flight, client memory), then memory per
# in-flight stream of one process, lean client and hyper's, at LOW and HIGH streams
# (stream-memory.sh). Everything lands in OUT; OUT/summary.txt is the part to read.
#   scripts/bench/device-issue20.sh OUT [STREAMS] [SHARDS] [SIMS] [LOW] [HIGH]
#                                   (default 53000 6 4 1000 8000)
# T: the release binary (default .dev/trace, unpacked from .dev/trace.xz when only that came).
set -u
out=${1:?usage: device-issue20.sh OUT [STREAMS] [SHARDS] [SIMS] [LOW] [HIGH]}
streams=${2:-53000}; shards=${3:-6}; sims=${4:-4}; low=${5:-1000}; high=${6:-8000}
T=${T:-$PWD/.dev/trace}
if [ ! -x "$T" ] && [ -f "$T.xz" ]; then xz -dc "$T.xz" > "$T" && chmod +x "$T"; fi
mkdir -p "$out"
here=$(dirname "$0")
T="$T" bash "$here/device-streams-sharded.sh" "$out/streams" "$streams" "$shards" "$sims"
T="$T" bash "$here/stream-memory.sh" "$low" "$high" > "$out/memory.txt" 2>&1
{ cat "$out/streams/summary.txt"; echo; cat "$out/memory.txt"; } > "$out/summary.txt"
cat "$out/summary.txt"
