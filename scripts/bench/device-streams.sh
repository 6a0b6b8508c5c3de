#!/usr/bin/env bash
# Issue 20, "one host as strong as it can be": `trace replay` driving the simulator with tens of
# thousands of concurrent streams on the GPU machine's 16 CPU cores, the simulator on its own
# cores (`trace sim --workers`, one pinned server per core on one port), the client on the rest.
# Streams are 20 tokens, the first at 1 s and the rest 1 s apart (20 s each), so STREAMS
# concurrent streams need STREAMS/20 req/s; 40 s of arrivals. Measured: TTFT and ITL error against the simulator's truth
# (`trace selfcheck --run`), peak in flight (from the rows), the client's RSS every second
# (memory per stream = (peak RSS - RSS before the first response) / peak in flight), its CPU.
#   scripts/bench/device-streams.sh OUTDIR [STREAMS...]       (default: 5000 50000)
# Needs .dev/trace (a release build). Raises the ephemeral port range and the open-file limit
# where the host allows: each stream is one loopback connection, two sockets.
# REPLAY_FLAGS: extra replay flags (for example --hyper).
set -u
out=$1; shift
levels=${*:-5000 50000}
T=${T:-$PWD/.dev/trace}
mkdir -p "$out"
ncpu=$(nproc)
sim_n=$(( ncpu / 4 )); [ "$sim_n" -lt 1 ] && sim_n=1
sim_cpus="$(( ncpu - sim_n ))-$(( ncpu - 1 ))"
cli_cpus="0-$(( ncpu - sim_n - 1 ))"
{
  echo "host: $(nproc) CPUs, $(awk '/MemTotal/ {print $2}' /proc/meminfo) KiB, kernel $(uname -r)"
  echo "simulator on CPUs $sim_cpus ($sim_n workers), client on CPUs $cli_cpus"
  sysctl -w net.ipv4.ip_local_port_range="1024 65535" 2>&1
  cat /proc/sys/net/ipv4/ip_local_port_range 2>&1
  # Root may raise the hard limit (each stream holds a socket on each side).
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"; echo "open files: $(ulimit -n)"
} | tee "$out/host.txt"
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
port=18900
for s in $levels; do
  rate=$(( s / 20 )); n=$(( rate * 40 ))
  echo "== $s streams: $rate req/s, $n requests" | tee -a "$out/summary.txt"
  truth=/tmp/truth-$s.jsonl; run=/tmp/streams-$s.parquet
  rm -f "$truth" "$run"
  taskset -c "$sim_cpus" "$T" sim --port $port --workers "$sim_n" --ttft 1s --itl 1s \
    --truth "$truth" > "$out/sim-$s.log" 2>&1 &
  sim=$!
  sleep 1
  taskset -c "$cli_cpus" /usr/bin/time -f "client: %e s wall, %U s user, %S s sys, %M KiB peak RSS" \
    "$T" replay random --url "http://127.0.0.1:$port" --input-len 16 --output-len 20 \
    --rate "$rate" -n "$n" --seed 3 --no-metrics --gpu-metrics off --timeout 120s ${REPLAY_FLAGS:-} \
    -o "$run" > "$out/replay-$s.log" 2>&1 &
  cli=$!
  sleep 0.5
  # The client is the child of /usr/bin/time (taskset execs it, keeping the pid).
  pid=$(pgrep -P "$cli" | head -1)
  [ -z "$pid" ] && pid=$(pgrep -f "^$T replay random" | head -1)
  echo "t_s rss_kib" > "$out/rss-$s.txt"
  t=0
  while kill -0 "$cli" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    [ -n "$rss" ] && echo "$t $rss" >> "$out/rss-$s.txt"
    sleep 1; t=$((t + 1))
  done
  wait "$cli"; echo "replay exit $?" | tee -a "$out/summary.txt"
  sleep 1
  kill -INT "$sim"; wait "$sim" 2>/dev/null
  grep -E "client:|wrote|ERROR|rate=" "$out/replay-$s.log" | tee -a "$out/summary.txt"
  "$T" selfcheck --run "$run" --truth "$truth" --ttft 1s --itl 1s --tokens 20 \
    --format json > "$out/selfcheck-$s.json" 2>> "$out/summary.txt"
  "$T" selfcheck --run "$run" --truth "$truth" --ttft 1s --itl 1s --tokens 20 \
    | tee -a "$out/summary.txt"
  base=$(awk 'NR==3 {print $2}' "$out/rss-$s.txt")
  peak=$(awk 'NR>1 && $2>m {m=$2} END {print m}' "$out/rss-$s.txt")
  inflight=$(python3 -c "import json,sys; print(json.load(open('$out/selfcheck-$s.json'))['peak_concurrency'])")
  echo "RSS at 1 s $base KiB, peak $peak KiB, peak in flight $inflight: $(( (peak - base) / (inflight > 0 ? inflight : 1) )) KiB per stream" \
    | tee -a "$out/summary.txt"
  rm -f "$truth" "$run"
  port=$(( port + 1 ))
done
