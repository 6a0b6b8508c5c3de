#!/usr/bin/env bash
# Memory per in-flight stream of `trace replay` (issue 20's target: at most 16 KiB). Streams as
# in device-streams.sh: 20 tokens, the first at 1 s and the rest 1 s apart (20 s each), N/20
# req/s for 40 s, so N streams are in flight from 20 s to 40 s. The client's RSS, sampled every
# second, is taken as the median over 25-35 s; LOW and HIGH streams give
# (RSS_HIGH - RSS_LOW) / (HIGH - LOW): what one more stream in flight costs, tokens flowing,
# rows of finished requests included. Once with the lean HTTP/1.1 client (the default for
# http://) and once with --hyper, in one call so both figures come from the same machine.
#   scripts/bench/stream-memory.sh [LOW] [HIGH]        (default 200 2000)
# Needs a release build: T=path/to/trace (default target/release/trace).
set -eu
T=${T:-target/release/trace}
low=${1:-200}
high=${2:-2000}
port=${PORT:-18950}
ulimit -n "$(ulimit -Hn)"
tmp=$(mktemp -d)
"$T" sim --port "$port" --ttft 1s --itl 1s > "$tmp/sim.log" 2>&1 &
sim=$!
trap 'kill -INT $sim 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1

# Median RSS (KiB) over 25-35 s of a replay holding N streams; then the run finishes.
rss_of() {
  local n=$1; shift
  local rate=$(( n / 20 ))
  "$T" replay random --url "http://127.0.0.1:$port" --input-len 16 --output-len 20 \
    --rate "$rate" -n $(( rate * 40 )) --seed 1 --no-metrics --gpu-metrics off \
    --timeout 120s --force -o "$tmp/run.parquet" "$@" > "$tmp/replay.log" 2>&1 &
  local pid=$!
  : > "$tmp/rss"
  for t in $(seq 1 35); do
    sleep 1
    [ "$t" -ge 25 ] && awk '/VmRSS/ {print $2}' "/proc/$pid/status" >> "$tmp/rss"
  done
  wait "$pid" || { cat "$tmp/replay.log" >&2; return 1; }
  sort -n "$tmp/rss" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {print $2}' /proc/meminfo) KiB, kernel $(uname -r)"
for client in lean hyper; do
  extra=()
  [ "$client" = hyper ] && extra=(--hyper)
  a=$(rss_of "$low" "${extra[@]}")
  b=$(rss_of "$high" "${extra[@]}")
  per=$(awk -v a="$a" -v b="$b" -v l="$low" -v h="$high" 'BEGIN {printf "%.1f", (b - a) / (h - l)}')
  echo "$client: RSS $a KiB at $low streams, $b KiB at $high streams: $per KiB per stream"
done
