#!/usr/bin/env python3
"""Issue 8's peer table: both clients' timing errors from what scripts/bench/peer.sh wrote to $OUT.

usage: python3 scripts/bench/peer_table.py OUT_DIR [--ttft-ms 50] [--itl-ms 10]
needs: polars (notebooks/requirements.txt)

Reads OUT_DIR/sglang-NAME.jsonl.gz (sglang-bench's result line with --output-details),
OUT_DIR/trace-NAME.parquet (ours) and OUT_DIR/truth.json.gz (the simulator's ground truth per run:
[request_id, arrival_unix_ns, server_ttft_ns, [server_gap_ns, ...]] in arrival order, warmups
dropped), and prints three markdown tables with the same definitions for both tools (the ones
peer.sh prints on the machine):

- TTFT error = the client's TTFT (first token event - send) - 50 ms; per request.
- ITL error = the client's gap between consecutive token events - 10 ms; pooled over requests.
- Against the truth: - the server's TTFT (first token written - request arrival) and - the
  server's gap of the same pair, request by request. Ours joins by request id (it sends
  X-Request-Id); sglang-bench stores no id and no send time, so its requests join the server's
  in order (request order = send order = arrival order, up to near-simultaneous sends).
- Arrival rate: (n - 1) / (last - first arrival) at the server, warmups excluded.
- The simulator's own deviation (server TTFT - 50 ms, server gap - 10 ms) bounds what any
  client can be credited with.
All in µs; P99 of ITL error is of |error|.
"""

import argparse
import gzip
import json
import sys
from pathlib import Path

import polars as pl

HEAD = (
    "| client | point | ok | failed | TTFT err median | TTFT err P99 | ITL err median | "
    "ITL err P99 abs | ITL err max abs | arrival rate at server |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def q(s: pl.Series, p: float) -> float:
    return float("nan") if s.len() == 0 else float(s.quantile(p, interpolation="linear"))


def row(tool: str, name: str, ok: int, failed: int, ttft_err: pl.Series, itl_err: pl.Series, rate: float) -> str:
    def us(v: float) -> str:
        return f"{v / 1e3:,.1f}"

    abs_itl = itl_err.abs()
    mx = float("nan") if abs_itl.len() == 0 else float(abs_itl.max())
    return (
        f"| {tool} | {name} | {ok} | {failed} | {us(q(ttft_err, .5))} | {us(q(ttft_err, .99))} | "
        f"{us(q(itl_err, .5))} | {us(q(abs_itl, .99))} | {us(mx)} | {rate:.2f} |"
    )


def frames(ids: list, ttft: list, gaps: list) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-request TTFT and per-pair gaps (ns, float), keyed by (key, k)."""
    req = pl.DataFrame({"key": ids, "ttft": ttft}, schema={"key": pl.Utf8, "ttft": pl.Float64})
    gap = (
        pl.DataFrame({"key": ids, "gap": gaps}, schema={"key": pl.Utf8, "gap": pl.List(pl.Float64)})
        .with_columns(pl.int_ranges(pl.col("gap").list.len()).alias("k"))
        .explode("gap", "k")
        .drop_nulls("gap")
    )
    return req, gap


def load_sglang(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    with gzip.open(path, "rt") as f:
        d = json.loads(f.readline())
    ok = [e == "" for e in d["errors"]]
    keep = [i for i, g in enumerate(ok) if g]
    # key: position among successful requests, to join the server's truth in arrival order
    req, gap = frames(
        [str(j) for j in range(len(keep))],
        [d["ttfts"][i] * 1e9 for i in keep],
        [[x * 1e9 for x in d["itls"][i]] for i in keep],
    )
    return req, gap, len(ok) - len(keep)


def load_ours(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    df = pl.read_parquet(path, columns=["request_id", "stage", "sent_ns", "chunk_ns", "chunk_tokens", "error_kind"])
    df = df.filter(pl.col("stage") != "warmup")
    ev = (
        df.filter(pl.col("error_kind").is_null())
        .select("request_id", "sent_ns", "chunk_ns", "chunk_tokens")
        .explode("chunk_ns", "chunk_tokens")
        .filter(pl.col("chunk_tokens") > 0)
        .sort("request_id", "chunk_ns")
    )
    req = ev.group_by("request_id", maintain_order=True).agg(
        (pl.col("chunk_ns").first() - pl.col("sent_ns").first()).cast(pl.Float64).alias("ttft")
    )
    gap = (
        ev.with_columns(
            pl.col("chunk_ns").diff().over("request_id").cast(pl.Float64).alias("gap"),
            (pl.int_range(pl.len()).over("request_id") - 1).alias("k"),
        )
        .drop_nulls("gap")
        .select(pl.col("request_id").alias("key"), "gap", "k")
    )
    failed = df.height - req.height
    return req.rename({"request_id": "key"}), gap, failed


def load_truth(rows: list, by_order: bool) -> tuple[pl.DataFrame, pl.DataFrame, float, int]:
    ok = [r for r in rows if r[2] is not None]
    ids = [str(j) for j in range(len(ok))] if by_order else [r[0] for r in ok]
    req, gap = frames(ids, [float(r[2]) for r in ok], [[float(g) for g in r[3]] for r in ok])
    arr = pl.Series([r[1] for r in rows], dtype=pl.Int64)
    rate = (arr.len() - 1) / ((arr.max() - arr.min()) / 1e9) if arr.len() > 1 else float("nan")
    return req, gap, rate, len(rows) - len(ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--itl-ms", type=float, default=10.0)
    a = ap.parse_args()
    ttft_ns, itl_ns = a.ttft_ms * 1e6, a.itl_ms * 1e6
    truth = json.load(gzip.open(a.out / "truth.json.gz", "rt"))
    names = sorted({k.split("-", 1)[1] for k in truth})
    nominal, paired, floor = [HEAD], [HEAD], [HEAD]
    for name in names:
        for tool in ("sglang", "trace"):
            if f"{tool}-{name}" not in truth:
                continue
            by_order = tool == "sglang"
            treq, tgap, rate, tfail = load_truth(truth[f"{tool}-{name}"], by_order)
            floor.append(row(f"sim ({tool} run)", name, treq.height, tfail,
                             treq["ttft"] - ttft_ns, tgap["gap"] - itl_ns, rate))
            path = a.out / (f"sglang-{name}.jsonl.gz" if by_order else f"trace-{name}.parquet")
            if not path.exists():
                nominal.append(f"| {tool} | {name} | missing {path.name} | | | | | | | |")
                continue
            creq, cgap, failed = (load_sglang if by_order else load_ours)(path)
            nominal.append(row(tool, name, creq.height, failed,
                               creq["ttft"] - ttft_ns, cgap["gap"] - itl_ns, rate))
            if by_order and creq.height != treq.height:
                paired.append(f"| {tool} | {name} | {creq.height} vs {treq.height} at the server: not paired | | | | | | | |")
                continue
            jr = creq.join(treq, on="key", suffix="_srv")
            jg = cgap.join(tgap, on=["key", "k"], suffix="_srv")
            paired.append(row(tool, name, jr.height, failed,
                              jr["ttft"] - jr["ttft_srv"], jg["gap"] - jg["gap_srv"], rate))
    print("All errors in µs; ITL error is per consecutive token-event pair, pooled. Rate in req/s.")
    print(f"\n### Client error against the nominal server times (reported TTFT - {a.ttft_ms:g} ms, gap - {a.itl_ms:g} ms)\n")
    print("\n".join(nominal))
    print("\n### Client error against the simulator's ground truth, request by request")
    print("(ours joined by request id; sglang-bench has no request id or send time: joined by order)\n")
    print("\n".join(paired))
    print(f"\n### The simulator's own deviation (server TTFT - {a.ttft_ms:g} ms, server gap - {a.itl_ms:g} ms)\n")
    print("\n".join(floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
