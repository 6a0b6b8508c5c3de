#!/usr/bin/env bash
# Issue 8, peer comparison: runs SGLang's benchmark client (its bundled Rust client
# `sglang-bench`, sglang 0.5.23, carried in .peer/whl by scripts/bench/peer_prepare.sh) and
# `trace replay` one after the other against the same fixed-time simulator (`trace sim --ttft 50ms
# --itl 10ms`, ground truth on), the simulator pinned to one CPU and each client to another, at
# two operating points, and prints both tools' timing errors in one table.
#
# usage (on the quiet machine, repo root, with .bin/trace and .peer carried; no network needed):
#   OUT=/some/dir bash scripts/bench/peer.sh        # ~2.5 min
# knobs: TRACE_BIN (./.bin/trace), PY (python3), SIM_CPU (2), CLIENT_CPU (3), PORT (18555),
#   POINTS ("heavy:50:1000:1000 light:100:100:1000" = name:rate:output_tokens:prompts),
#   INPUT_LEN (128), CLIENT_TIMEOUT (120 s), TRACE_EXTRA (more `trace replay` flags),
#   SGL_EXTRA (more sglang-bench flags), PEER_SITE (/tmp/peer-site).
#
# Writes to $OUT (6 files): sglang-NAME.jsonl.gz (sglang-bench's result line with
# --output-details: per-request ttfts and itls, in request order), trace-NAME.parquet (ours),
# truth.json.gz (the simulator's ground truth of every run, compacted: per request its id,
# arrival, server TTFT and server gaps, ns) and summary.txt (this script's log and the table).
# scripts/bench/peer_table.py recomputes the table from those files with polars.
#
# Both clients run on ONE core (taskset), so sglang-bench's Tokio runtime has 1 worker thread
# (it defaults to the available parallelism) and so does ours. Each run gets a fresh simulator.
# Request shape: /v1/completions, streaming, ignore_eos, 128-token prompts of words w0..w4095
# (sglang-bench: --backend vllm --dataset-name random-ids --random-range-ratio 1, so lengths are
# exact, not uniform in [1, len]). sglang-bench keeps its default of 1 warmup request; ours has
# none. Ours runs with --no-metrics (sglang-bench does not poll /metrics either).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the result folder}
TRACE=${TRACE_BIN:-./.bin/trace}
PY=${PY:-python3}
SIM_CPU=${SIM_CPU:-2}
CLIENT_CPU=${CLIENT_CPU:-3}
PORT=${PORT:-18555}
POINTS=${POINTS:-"heavy:50:1000:1000 light:100:100:1000"}
INPUT_LEN=${INPUT_LEN:-128}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-120}  # s per client run; heavy takes ~40 s
SITE=${PEER_SITE:-/tmp/peer-site}
RUN=$(mktemp -d /tmp/peer-run.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/summary.txt
: > "$LOG"
log() { echo "$*" | tee -a "$LOG"; }

log "# peer.sh $(date -u +%FT%TZ) on $(cat /proc/sys/kernel/hostname) ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
log "# $($TRACE --version 2>&1) | $($PY --version 2>&1) | sim CPU $SIM_CPU, clients CPU $CLIENT_CPU"

# (a) the peer: one wheel, no dependencies. Its own folder, not /tmp/site: scripts/engine/capture.sh
# installs .whl/ there only when /tmp/site does not exist yet.
pyver=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=$(ls .peer/whl/sglang_rust_bench-*-"$pyver"-"$pyver"-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || { log "no .peer/whl wheel for $pyver (scripts/bench/peer_prepare.sh $pyver)"; exit 2; }
$PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$wheel" \
  2>&1 | grep -v 'WARNING: Running pip as' >&2
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
$PY -m sglang_rust_bench --help > /dev/null || { log "sglang-bench does not load"; exit 2; }
log "# peer: $(basename "$wheel")"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

# (b) a fresh simulator per run, pinned, with ground truth; echoes its PID.
start_sim() { # $1 port, $2 truth file
  taskset -c "$SIM_CPU" "$TRACE" sim --port "$1" --ttft 50ms --itl 10ms --model fixed \
    --tokenizer .peer/tokenizer/tokenizer.json --truth "$2" > "$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    if command -v curl > /dev/null; then
      curl -sf "http://127.0.0.1:$1/v1/models" > /dev/null 2>&1 && { echo "$pid"; return 0; }
    else
      $PY -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$1/v1/models" 2> /dev/null && { echo "$pid"; return 0; }
    fi
    sleep 0.1
  done
  echo "$pid"; return 1
}
stop_sim() { # Ctrl-C closes the truth file; KILL only if it hangs
  kill -INT "$1" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null
}

port=$PORT
for point in $POINTS; do
  IFS=: read -r name rate olen n <<< "$point"
  # (c) the peer, pinned to the client CPU.
  port=$((port + 1))
  sim=$(start_sim "$port" "$RUN/truth-sglang-$name.jsonl") || log "simulator did not answer on $port"
  log ""
  log "## sglang $name: rate $rate, $n prompts, $INPUT_LEN in / $olen out (sim pid $sim, port $port)"
  t0=$(date +%s%N)
  timeout "$CLIENT_TIMEOUT" taskset -c "$CLIENT_CPU" $PY -m sglang_rust_bench --backend vllm \
    --base-url "http://127.0.0.1:$port" --dataset-name random-ids \
    --random-input-len "$INPUT_LEN" --random-output-len "$olen" --random-range-ratio 1 \
    --num-prompts "$n" --request-rate "$rate" --tokenizer .peer/tokenizer --seed 1 \
    --output-file "$RUN/sglang-$name.jsonl" --output-details --disable-tqdm --tag "$name" \
    ${SGL_EXTRA:-} > "$RUN/sglang-$name.log" 2>&1
  log "exit $? after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  grep -E 'Successful|duration|Request throughput|Peak concurrent|Median TTFT|P99 TTFT|Median ITL|P99 ITL|Max ITL|worker threads|rror' \
    "$RUN/sglang-$name.log" | tee -a "$LOG"
  stop_sim "$sim"

  # (d) ours, same settings, same CPU.
  port=$((port + 1))
  sim=$(start_sim "$port" "$RUN/truth-trace-$name.jsonl") || log "simulator did not answer on $port"
  log ""
  log "## trace $name: rate $rate, $n requests, $INPUT_LEN in / $olen out (sim pid $sim, port $port)"
  t0=$(date +%s%N)
  timeout "$CLIENT_TIMEOUT" taskset -c "$CLIENT_CPU" "$TRACE" replay random --url "http://127.0.0.1:$port" \
    --endpoint completions --model fixed --input-len "$INPUT_LEN" --output-len "$olen" \
    --rate "$rate" -n "$n" --ignore-eos --tokenizer .peer/tokenizer/tokenizer.json --seed 1 \
    --no-metrics --label "trace-$name" ${TRACE_EXTRA:-} -o "$RUN/trace-$name.parquet" \
    > "$RUN/trace-$name.log" 2>&1
  log "exit $? after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  tail -n 25 "$RUN/trace-$name.log" | tee -a "$LOG"
  stop_sim "$sim"
done

# (e) results back, and the table.
for f in "$RUN"/sglang-*.jsonl; do
  [ -f "$f" ] && $PY -c 'import gzip, shutil, sys; shutil.copyfileobj(open(sys.argv[1], "rb"), gzip.open(sys.argv[2], "wb", 6))' \
    "$f" "$OUT/$(basename "$f").gz"
done
cp "$RUN"/trace-*.parquet "$OUT"/ 2>/dev/null
log ""
$PY - "$RUN" "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
# Same definitions as scripts/bench/peer_table.py; stdlib only, plus pyarrow when present.
import glob, gzip, json, os, sys

run, out = sys.argv[1:]
TTFT_NS, ITL_NS = 50_000_000, 10_000_000


def quantile(xs, q):  # linear interpolation, as numpy's and polars' default
    if not xs:
        return float("nan")
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def truth(path, warmup):
    """Requests in server arrival order: (id, arrival_ns, ttft_ns, [gap_ns]), warmups dropped."""
    rows = []
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            # token-bearing events only (ours asks for usage on every event: the last one has none)
            ev = [e for e, k in zip(d["event_unix_ns"], d.get("event_tokens") or [1] * len(d["event_unix_ns"])) if k > 0]
            if d.get("status") != 200 or not ev:
                rows.append((d["request_id"], d["arrival_unix_ns"], None, []))
                continue
            a = d["arrival_unix_ns"]
            rows.append((d["request_id"], a, ev[0] - a, [y - x for x, y in zip(ev, ev[1:])]))
    rows.sort(key=lambda r: r[1])
    return rows[warmup:]


def sglang(path):
    d = json.loads(open(path).readline())
    ok = [e == "" for e in d["errors"]]
    ttft = [t * 1e9 for t, g in zip(d["ttfts"], ok) if g]
    gaps = [[x * 1e9 for x in itl] for itl, g in zip(d["itls"], ok) if g]
    return ttft, gaps, sum(1 for g in ok if not g), None


def ours(path):
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["request_id", "stage", "sent_ns", "chunk_ns", "chunk_tokens", "error_kind"])
    ttft, gaps, ids, failed = [], [], [], 0
    for r in t.to_pylist():
        if r["stage"] == "warmup":
            continue
        if r["error_kind"] is not None:
            failed += 1
            continue
        tok = [c for c, k in zip(r["chunk_ns"], r["chunk_tokens"]) if k > 0]
        if not tok:
            failed += 1
            continue
        ttft.append(tok[0] - r["sent_ns"])
        gaps.append([y - x for x, y in zip(tok, tok[1:])])
        ids.append(r["request_id"])
    return ttft, gaps, failed, ids


def stats(ttft, gaps, ref_ttft=None, ref_gaps=None):
    """TTFT error and ITL error (per consecutive token-event pair), ns, against the nominal
    50 ms / 10 ms or, when given, against the server's own per-request figures."""
    if ref_ttft is None:
        te = [t - TTFT_NS for t in ttft]
        ie = [g - ITL_NS for gs in gaps for g in gs]
    else:
        te = [t - r for t, r in zip(ttft, ref_ttft) if r is not None]
        ie = [g - r for gs, rs in zip(gaps, ref_gaps) for g, r in zip(gs, rs)]
    return te, ie


def row(tool, name, n, failed, te, ie, rate):
    us = lambda v: f"{v / 1e3:,.1f}"
    return (f"| {tool} | {name} | {n} | {failed} | {us(quantile(te, .5))} | {us(quantile(te, .99))} | "
            f"{us(quantile(ie, .5))} | {us(quantile([abs(x) for x in ie], .99))} | "
            f"{us(max((abs(x) for x in ie), default=float('nan')))} | {rate:.2f} |")


compact, lines = {}, []
head = ("| client | point | ok | failed | TTFT err median | TTFT err P99 | ITL err median | ITL err P99 abs | "
        "ITL err max abs | arrival rate at server |\n|---|---|---|---|---|---|---|---|---|---|")
nominal, paired, floor = [head], [head], [head]
names = sorted({os.path.basename(p)[len("truth-sglang-"):-len(".jsonl")] for p in glob.glob(f"{run}/truth-sglang-*.jsonl")})
for name in names:
    for tool in ("sglang", "trace"):
        tp = f"{run}/truth-{tool}-{name}.jsonl"
        if not os.path.exists(tp):
            continue
        tr = truth(tp, 1 if tool == "sglang" else 0)  # sglang-bench's 1 warmup request comes first
        compact[f"{tool}-{name}"] = [[i, a, t, g] for i, a, t, g in tr]
        arr = [a for _, a, t, _ in tr]
        srate = (len(arr) - 1) / ((max(arr) - min(arr)) / 1e9) if len(arr) > 1 else float("nan")
        st = [t for _, _, t, _ in tr if t is not None]
        sg = [g for _, _, t, g in tr if t is not None]
        te, ie = stats(st, sg)
        floor.append(row(f"sim ({tool} run)", name, len(st), len(tr) - len(st), te, ie, srate))
        try:
            if tool == "sglang":
                ttft, gaps, failed, extra = sglang(f"{run}/sglang-{name}.jsonl")
                ref = tr  # request order = send order = server arrival order (up to near-ties)
            else:
                ttft, gaps, failed, extra = ours(f"{run}/trace-{name}.parquet")
                by_id = {r[0]: r for r in tr}
                ref = [by_id.get(i, (i, None, None, [])) for i in extra]
        except ImportError as e:
            nominal.append(f"| {tool} | {name} | - | - | {e}: run peer_table.py | | | | | |")
            continue
        except Exception as e:  # a missing or broken result file is a finding, not a crash
            nominal.append(f"| {tool} | {name} | - | - | {type(e).__name__}: {e} | | | | | |")
            continue
        te, ie = stats(ttft, gaps)
        nominal.append(row(tool, name, len(ttft), failed, te, ie, srate))
        if len(ref) == len(ttft) or tool == "trace":
            te, ie = stats(ttft, gaps, [r[2] for r in ref], [r[3] for r in ref])
            paired.append(row(tool, name, len(te), failed, te, ie, srate))
        else:
            paired.append(f"| {tool} | {name} | {len(ttft)} vs {len(ref)} at the server: not paired | | | | | | | |")

with gzip.open(f"{out}/truth.json.gz", "wt", compresslevel=6) as f:
    json.dump(compact, f, separators=(",", ":"))
print("All errors in µs; ITL error is per consecutive token-event pair, pooled. Rate in req/s.")
print("\n### Client error against the nominal server times (reported TTFT - 50 ms, gap - 10 ms)\n")
print("\n".join(nominal))
print("\n### Client error against the simulator's ground truth, request by request")
print("(ours joined by request id; sglang-bench has no request id or send time: joined by order)\n")
print("\n".join(paired))
print("\n### The simulator's own deviation (server TTFT - 50 ms, server gap - 10 ms)\n")
print("\n".join(floor))
EOF
ls -la "$OUT" | tee -a "$LOG"
rm -rf "$RUN"
