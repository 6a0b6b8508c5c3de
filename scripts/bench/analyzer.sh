#!/usr/bin/env bash
# Issue 4's analyzer benchmark: `trace report` on a synthetic run of 1,000,000 requests x 200
# chunks and `trace diff` on two of them, against polars (Python) merely reading the same ten
# columns; wall time and peak RSS of each. Needs the release binary, the write_many example and
# Python polars (notebooks/requirements.txt).
#   scripts/bench/analyzer.sh [ROWS] [CHUNKS] [DIR]
set -eu
rows=${1:-1000000}; chunks=${2:-200}; dir=${3:-/tmp/trace-big}
cargo build --release --locked 2>&1 | tail -1
cargo build --release --locked -p trace-format --example write_many 2>&1 | tail -1
mkdir -p "$dir"
for f in a:0 b:3; do
  [ -f "$dir/${f%%:*}.parquet" ] || target/release/examples/write_many "$dir/${f%%:*}.parquet" "$rows" "$chunks" "${f##*:}"
done
ls -la "$dir"
read_only() {
  python3 - "$1" <<'PY'
import resource, sys, time
import polars as pl
cols = ["stage", "target_rate", "scheduled_ns", "sent_ns", "end_ns", "chunk_ns", "chunk_tokens",
        "prompt_tokens", "output_tokens", "error_kind"]
t = time.time()
df = pl.scan_parquet(sys.argv[1]).select(cols).collect()
print(f"polars {pl.__version__} read-only: {df.height} rows, {time.time() - t:.2f} s, "
      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
PY
}
uptime
read_only "$dir/a.parquet"
/usr/bin/time -f 'trace report: %e s wall, %U s user, %M KiB peak RSS' \
  target/release/trace report "$dir/a.parquet" > /dev/null
read_only "$dir/b.parquet"
/usr/bin/time -f 'trace diff: %e s wall, %U s user, %M KiB peak RSS' \
  target/release/trace diff "$dir/a.parquet" "$dir/b.parquet" > /dev/null
uptime
