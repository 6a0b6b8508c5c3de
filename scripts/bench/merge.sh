#!/usr/bin/env bash
# Issue 20's merge target: `trace merge` of SHARDS shard files holding ROWS rows in all (16 chunks
# each), streamed: wall time and peak RSS, which must not grow with the rows. Needs the release
# binary and the write_many example.
#   scripts/bench/merge.sh [ROWS] [SHARDS] [DIR]
set -euo pipefail
rows=${1:-10000000}; shards=${2:-4}; dir=${3:-/tmp/trace-shards}
cargo build --release --locked 2>&1 | tail -1
cargo build --release --locked -p trace-format --example write_many 2>&1 | tail -1
mkdir -p "$dir"
per=$(( rows / shards ))
for k in $(seq 0 $(( shards - 1 ))); do
  [ -f "$dir/s$k.parquet" ] || SHARD="$k/$shards" target/release/examples/write_many "$dir/s$k.parquet" "$per"
done
ls -la "$dir"
rm -f "$dir/merged.parquet"
/usr/bin/time -f 'trace merge: %e s wall, %U s user, %S s sys, %M KiB peak RSS' \
  target/release/trace merge "$dir"/s*.parquet -o "$dir/merged.parquet"
ls -la "$dir/merged.parquet"
