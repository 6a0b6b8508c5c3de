#!/usr/bin/env bash
# Repeats the client-fidelity and recording-proxy figures within one lease, to state their
# spread, and measures the machine's floor with a raw-socket client (scripts/bench/floor.py):
#   1. `trace selfcheck` at ~500 streams, three times;
#   2. the raw-socket client and `trace selfcheck` at low load, on the same two CPUs;
#   3. the recording proxy's overhead (`trace selfcheck --proxy`), three times, simulator, proxy and
#      client on three CPUs.
# usage (repo root, .bin/trace = `cargo build --release --bin trace --no-default-features`):
#   scripts/bench/device-repeat.sh [CPU_SIM CPU_CLIENT CPU_PROXY]
set -u
sim_cpu=${1:-2}; cli_cpu=${2:-3}; proxy_cpu=${3:-4}
T=$PWD/.bin/trace
echo "== host"; nproc; uptime; grep -m1 'model name' /proc/cpuinfo; date -u

for i in 1 2 3; do
  echo "== 1.$i selfcheck, 500 streams (Poisson 50/s, 1000 tokens at 10 ms, TTFT 50 ms)"
  taskset -c "$sim_cpu,$cli_cpu" "$T" selfcheck --concurrency 500 --rate 50 --tokens 1000 \
    --ttft 50ms --itl 10ms --duration 20s 2>&1 | tail -6
done

echo "== 2a raw-socket client, one request at a time (TTFT 50 ms, 4 tokens)"
truth=$(mktemp)
taskset -c "$sim_cpu" "$T" sim --port 18732 --ttft 50ms --itl 10ms --truth "$truth" >/dev/null 2>&1 &
sim=$!
sleep 1
taskset -c "$cli_cpu" python3 scripts/bench/floor.py 18732 "$truth" "$sim" 300 4
wait "$sim" 2>/dev/null
rm -f "$truth"
echo "== 2b trace selfcheck at low load (5 streams)"
taskset -c "$sim_cpu,$cli_cpu" "$T" selfcheck --concurrency 5 --tokens 100 --ttft 50ms \
  --itl 10ms --duration 20s 2>&1 | tail -6

for i in 1 2 3; do
  echo "== 3.$i recording proxy overhead"
  taskset -c "$sim_cpu,$proxy_cpu,$cli_cpu" "$T" selfcheck --proxy 2>&1 | grep -E '^\||cpus'
done
echo "== done"; uptime; date -u
