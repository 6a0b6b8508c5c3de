#!/usr/bin/env bash
# Issue 8: the client's memory stays flat over a run of 1,000,000 requests. The simulator (fixed
# model: 5 ms TTFT, 1 ms between 4 tokens) on one CPU, `trace replay` on another at 3000 req/s;
# the client's RSS is sampled every 10 s from /proc. A stop at LIMIT seconds (SIGINT: drain,
# then a valid file) bounds the run if the client cannot keep the rate.
#   scripts/bench/device-million.sh OUTDIR [N] [RATE] [LIMIT_S]
set -u
out=$1; n=${2:-1000000}; rate=${3:-3000}; limit=${4:-420}
T=$PWD/.bin/trace
mkdir -p "$out"
port=18741
taskset -c 2 "$T" sim --port $port --ttft 5ms --itl 1ms > "$out/sim-million.log" 2>&1 &
sim=$!
sleep 1
taskset -c 3 timeout -s INT "$limit" "$T" replay random --url http://127.0.0.1:$port \
  --input-len 32 --output-len 4 --rate "$rate" -n "$n" --seed 4 --no-metrics \
  -o /tmp/million.parquet > "$out/replay-million.log" 2>&1 &
cli=$!
sleep 1
pid=$(pgrep -f "^$T replay random" | head -1)
echo "t_s rss_kib" > "$out/rss.txt"
t=0
while kill -0 "$cli" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  [ -n "$rss" ] && echo "$t $rss" >> "$out/rss.txt"
  sleep 10; t=$((t + 10))
done
wait "$cli"; echo "replay exit $?"
kill "$sim"; wait "$sim" 2>/dev/null
tail -6 "$out/replay-million.log"
ls -la /tmp/million.parquet
cat "$out/rss.txt"
