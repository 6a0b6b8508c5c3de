#!/usr/bin/env bash
# Issue 18's benchmark: 10,000 concurrent sessions with live history from one machine. Each
# session has 4 turns (64 new tokens, 32 out, 20 s think): they arrive at 1,000/s, so all
# 10,000 are open together from 10 s to about 40 s (about 330 requests/s meanwhile). Measures the replay's peak RSS with live history, with
# recorded history, and for the same 40,000 requests without sessions (--no-sessions), so the
# memory a live session holds is the difference over 10,000; and the send lag of later turns.
# Needs the release binary.
#   scripts/bench/sessions.sh [SESSIONS] [DIR]
set -eu
n=${1:-10000}; dir=${2:-/tmp/trace-sessions}; rate=${RATE:-1000}; think=${THINK:-20s}
cargo build --release --locked 2>&1 | tail -1
bin=target/release/trace
mkdir -p "$dir"
$bin synth --rate "$rate" -n "$n" --turns 4 --think-time "$think" --input-dist fixed:64 \
  --output-dist fixed:32 --prefix-len 256 --prefix-groups 8 --force -o "$dir/w.parquet"
# A fixed-timing simulator (no batching queue): the client is what is measured.
$bin sim --port 0 --ttft 20ms --itl 2ms --model m > "$dir/sim.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null' EXIT
for _ in $(seq 50); do grep -q "serving" "$dir/sim.log" && break; sleep 0.2; done
url=$(grep -o 'http://127.0.0.1:[0-9]*' "$dir/sim.log" | head -1)
uptime
for mode in "--history live" "--history recorded" "--no-sessions"; do
  name=$(echo "$mode" | tr -d ' -')
  /usr/bin/time -f "$mode: %e s wall, %U s user, %M KiB peak RSS" \
    $bin replay "$dir/w.parquet" --url "$url" --model m --endpoint completions $mode \
      --force -o "$dir/$name.parquet" > "$dir/$name.out" 2> "$dir/$name.err" || true
  tail -1 "$dir/$name.err"
  grep -E "^recorded|wrote" "$dir/$name.out" "$dir/$name.err" | head -3
done
python3 - "$dir/historylive.parquet" <<'PY'
import sys
import polars as pl
df = pl.read_parquet(sys.argv[1], columns=["turn", "scheduled_ns", "sent_ns", "error_kind"])
ok = df.filter(pl.col("error_kind").is_null())
lag = ok.with_columns(((pl.col("sent_ns") - pl.col("scheduled_ns")) / 1e3).alias("lag_us"))
for name, part in [("first turns", lag.filter(pl.col("turn") == 0)),
                   ("later turns", lag.filter(pl.col("turn") > 0))]:
    q = part["lag_us"].quantile
    print(f"{name}: {part.height} rows, send lag p50 {q(0.5):.0f} us, p99 {q(0.99):.0f} us")
print(f"failed rows: {df.height - ok.height}")
PY
uptime
