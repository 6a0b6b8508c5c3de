#!/usr/bin/env bash
# Issue 8's client-fidelity figures on a quiet x86-64 host, restricted to two CPUs (simulator on
# one, client on the other, as the peer figures were taken), in one command:
#   1. `trace selfcheck` at the target point (~500 streams) and its sweep (event-rate ceiling);
#   2. send lag, achieved rate and inter-arrival CV at 1000 req/s (Poisson);
#   3. client CPU at 100 req/s x 128 tokens;
#   4. memory per in-flight stream (500 vs ~5000 concurrent streams);
#   5. the recording proxy's added latency (`trace selfcheck --proxy`).
# usage (repo root, with .bin/trace = `cargo build --release --no-default-features`):
#   scripts/bench/device-fidelity.sh OUTDIR [CPU_SIM CPU_CLIENT]
# Each step prints its figures; parquet files for step 2 land in OUTDIR.
set -u
out=$1; sim_cpu=${2:-2}; cli_cpu=${3:-3}
T=$PWD/.bin/trace
mkdir -p "$out"
echo "== host"; nproc; uptime; grep -m1 'model name' /proc/cpuinfo

echo "== 1a selfcheck, 500 streams (Poisson 50/s, 1000 tokens at 10 ms, TTFT 50 ms)"
taskset -c "$sim_cpu,$cli_cpu" "$T" selfcheck --concurrency 500 --rate 50 --tokens 1000 \
  --ttft 50ms --itl 10ms --duration 20s
echo "== 1b selfcheck sweep (100 tokens, up to 1000 streams), bound ITL P99 1 ms"
taskset -c "$sim_cpu,$cli_cpu" "$T" selfcheck --sweep --concurrency 1000 --tokens 100 \
  --duration 10s --max-itl-error 1ms

# One simulator for steps 2-4, fixed time model, pinned to its own CPU.
port=18731
taskset -c "$sim_cpu" "$T" sim --port $port --ttft 50ms --itl 10ms > "$out/sim.log" 2>&1 &
sim=$!
sleep 1
url=http://127.0.0.1:$port

echo "== 2 send lag at 1000 req/s (20,000 requests, 16 tokens)"
taskset -c "$cli_cpu" "$T" replay random --url "$url" --input-len 64 --output-len 16 \
  --rate 1000 -n 20000 --seed 1 --no-metrics -o "$out/lag1000.parquet" 2>&1 | grep -E 'wrote|rate='

echo "== 3 client CPU at 100 req/s x 128 tokens (6,000 requests, 60 s)"
/usr/bin/time -f 'client: %e s wall, %U s user, %S s sys, %M KiB peak RSS' \
  taskset -c "$cli_cpu" "$T" replay random --url "$url" --input-len 128 --output-len 128 \
  --rate 100 -n 6000 --seed 2 --no-metrics -o /tmp/cpu100.parquet 2>&1 | tail -3

kill "$sim"; wait "$sim" 2>/dev/null
# Long, slow streams for memory: 100 tokens at 100 ms (10 s each), so the simulator's one CPU
# serves thousands of streams (10 events/s each).
taskset -c "$sim_cpu" "$T" sim --port $port --ttft 50ms --itl 100ms > "$out/sim2.log" 2>&1 &
sim=$!
sleep 1
echo "== 4 memory per in-flight stream: ~500 then ~5000 concurrent (10 s streams)"
for rate in 50 500; do
  /usr/bin/time -f "rate $rate: %e s wall, %M KiB peak RSS" \
    taskset -c "$cli_cpu" "$T" replay random --url "$url" --input-len 128 --output-len 100 \
    --rate $rate -n $((rate * 20)) --seed 3 --no-metrics -o /tmp/mem$rate.parquet 2>&1 \
    | grep -E 'wrote|rate=|RSS'
done
kill "$sim"; wait "$sim" 2>/dev/null

echo "== 5 recording proxy overhead"
taskset -c "$sim_cpu,$cli_cpu" "$T" selfcheck --proxy 2>&1 | tail -20
echo "== done"; uptime
