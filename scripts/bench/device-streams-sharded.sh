#!/usr/bin/env bash
# device-streams.sh past one process's open-file limit: the GPU machine's hard limit is 20,000
# files per process (root cannot raise it there), so one client process holds at most ~19,870
# streams with the lean client (~9,900 with --hyper, whose files are halved: trace-replay's
# fd_cap) and one simulator process ~20,000 connections. Here STREAMS streams come from SHARDS
# client processes on one host (`--shard k/n`, shard 0 holding the start barrier in-process),
# against SIMS simulator processes, each on a port of its own (shard k sends to simulator
# k mod SIMS), each truth file concatenated; the shards are merged (`trace merge`) and the
# merged run is joined with the truth (`trace selfcheck --run`).
# One port per simulator, not one shared port: every connection to one address and port needs
# its own local port, and once half the local range is taken the kernel's connect() walks the
# taken ones for a free one (~1 ms of system time per connection at 50,000 here); a local port
# already used towards another port is free for this one.
#   scripts/bench/device-streams-sharded.sh OUTDIR [STREAMS] [SHARDS] [SIMS]
# REPLAY_FLAGS: extra replay flags (for example --hyper).
# TTFT_S, ITL_S, TOKENS: each stream's shape (default 1 s, 1 s, 20 tokens: a 20 s stream);
# the rate is STREAMS / stream length, so STREAMS are in flight once the first have run a
# stream's length. Slower tokens carry the same streams with fewer events per second (a small
# host's simulators keep up).
# Simulators and clients are pinned to separate halves of the CPUs on hosts of 4 or more.
set -u
out=$1; s=${2:-50000}; shards=${3:-6}; sims=${4:-4}
T=${T:-$PWD/.dev/trace}
mkdir -p "$out"
ttft=${TTFT_S:-1}; itl=${ITL_S:-1}; tokens=${TOKENS:-20}
ncpu=$(nproc); half=$(( ncpu / 2 )); per=$(( half / sims )); [ "$per" -lt 1 ] && per=1
cli_cpus="0-$(( half - 1 ))"
# Below 4 CPUs neither side gets CPUs of its own: every process may run anywhere. exec: run in
# the background, the function's subshell becomes the process, so $! is its PID.
pin() { if [ "$ncpu" -ge 4 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
sysctl -w net.ipv4.ip_local_port_range="1024 65535" > /dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
if [ "$ncpu" -ge 4 ]; then where="simulators on CPUs $half-$(( ncpu - 1 )), clients on CPUs $cli_cpus"
else where="not pinned: $ncpu CPUs"; fi
echo "host: $ncpu CPUs, open files $(ulimit -n) per process; $sims simulators x $per workers, $shards client shards; $where" | tee "$out/summary.txt"
port=18990; cport=18980
len=$(( ttft + (tokens - 1) * itl ))
rate=$(( s / len )); n=$(( rate * 40 ))
echo "== $s streams of $tokens tokens (TTFT ${ttft} s, ITL ${itl} s: $len s): $rate req/s, $n requests" | tee -a "$out/summary.txt"
rm -f /tmp/truth-*.jsonl /tmp/shard-*.parquet /tmp/merged.parquet
simpids=()
for j in $(seq 0 $(( sims - 1 ))); do
  lo=$(( (half + j * per) % ncpu )); hi=$(( lo + per - 1 ))
  pin "$lo-$hi" "$T" sim --port $(( port + j )) --workers "$per" --ttft "${ttft}s" --itl "${itl}s" \
    --truth "/tmp/truth-$j.jsonl" > "$out/sim-$j.log" 2>&1 &
  simpids+=($!)
done
sleep 1
for p in "${simpids[@]}"; do
  kill -0 "$p" 2> /dev/null && continue
  echo "a simulator did not start (see $out/sim-*.log)" | tee -a "$out/summary.txt"
  for q in "${simpids[@]}"; do kill -INT "$q" 2> /dev/null; done
  exit 1
done
clis=()
for k in $(seq 0 $(( shards - 1 ))); do
  if [ "$k" = 0 ]; then coord=self; else coord="http://127.0.0.1:$cport"; fi
  pin "$cli_cpus" /usr/bin/time -f "shard $k: %e s wall, %U s user, %S s sys, %M KiB peak RSS" \
    "$T" replay random --url "http://127.0.0.1:$(( port + k % sims ))" --input-len 16 --output-len "$tokens" \
    --rate "$rate" -n "$n" --seed 3 --no-metrics --gpu-metrics off --timeout 120s ${REPLAY_FLAGS:-} \
    --shard "$k/$shards" --coordinator "$coord" --coordinator-listen "127.0.0.1:$cport" \
    -o "/tmp/shard-$k.parquet" > "$out/replay-$k.log" 2>&1 &
  clis+=($!)
  [ "$k" = 0 ] && sleep 1
done
echo "t_s rss_kib_all_shards" > "$out/rss.txt"
t=0
while pgrep -f "^$T replay random" > /dev/null; do
  tot=0
  for p in $(pgrep -f "^$T replay random"); do
    r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null); tot=$(( tot + ${r:-0} ))
  done
  echo "$t $tot" >> "$out/rss.txt"
  sleep 1; t=$(( t + 1 ))
done
for c in "${clis[@]}"; do wait "$c"; done
sleep 1
for p in "${simpids[@]}"; do kill -INT "$p"; done
for p in "${simpids[@]}"; do wait "$p" 2>/dev/null; done
grep -h -E "shard .*RSS|rate=|ERROR" "$out"/replay-*.log | tee -a "$out/summary.txt"
cat /tmp/truth-*.jsonl > /tmp/truth-all.jsonl
"$T" merge /tmp/shard-*.parquet -o /tmp/merged.parquet | tee -a "$out/summary.txt"
"$T" selfcheck --run /tmp/merged.parquet --truth /tmp/truth-all.jsonl --ttft "${ttft}s" --itl "${itl}s" \
  --tokens "$tokens" --format json > "$out/selfcheck.json"
"$T" selfcheck --run /tmp/merged.parquet --truth /tmp/truth-all.jsonl --ttft "${ttft}s" --itl "${itl}s" \
  --tokens "$tokens" | tee -a "$out/summary.txt"
peak=$(awk 'NR>1 && $2>m {m=$2} END {print m}' "$out/rss.txt")
base=$(awk 'NR==3 {print $2}' "$out/rss.txt")
inflight=$(python3 -c "import json; print(json.load(open('$out/selfcheck.json'))['peak_concurrency'])")
echo "RSS of all shards at 1 s $base KiB, peak $peak KiB, peak in flight $inflight: $(( (peak - base) / (inflight > 0 ? inflight : 1) )) KiB per stream" | tee -a "$out/summary.txt"
