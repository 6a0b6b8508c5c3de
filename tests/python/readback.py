#!/usr/bin/env python3
"""Reads a trace the way pandas, pyarrow and DuckDB users do and prints what they see as JSON:
the rows, the `trace.*` keys in pyarrow's schema.metadata and in the Parquet footer (DuckDB),
and the sum of every row's chunk_tokens. tests/format.rs compares it with the trace's own view.

  python3 readback.py TRACE.parquet
"""
import json
import sys

import duckdb
import polars as pl
import pyarrow.parquet as pq


def main():
    path = sys.argv[1]
    table = pq.read_table(path)
    arrow_keys = sorted(k.decode() for k in (table.schema.metadata or {}) if k.startswith(b"trace."))
    version = (table.schema.metadata or {}).get(b"trace.schema_version", b"").decode()
    con = duckdb.connect()
    footer = con.execute(
        "select decode(key), decode(value) from parquet_kv_metadata(?) "
        "where decode(key) like 'trace.%' order by 1",
        [path],
    ).fetchall()
    duck_rows, duck_tokens = con.execute(
        "select count(*), coalesce(sum(list_sum(chunk_tokens)), 0) from read_parquet(?)", [path]
    ).fetchone()
    df = pl.read_parquet(path)
    print(json.dumps({
        "pyarrow_rows": table.num_rows,
        "pyarrow_keys": arrow_keys,
        "pyarrow_schema_version": version,
        "duckdb_keys": [k for k, _ in footer],
        "duckdb_rows": duck_rows,
        "duckdb_tokens": int(duck_tokens),
        "polars_rows": df.height,
        "polars_tokens": int(df["chunk_tokens"].list.sum().sum()),
    }))


if __name__ == "__main__":
    main()
