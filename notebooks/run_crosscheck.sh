#!/usr/bin/env bash
# Executes notebooks/crosscheck.ipynb (installs nothing: CI provides polars, matplotlib and
# nbconvert). The notebook fails when its independent numbers differ from `trace report`.
# Env: TRACE_BIN (default target/debug/trace), TRACE_FIXTURE (default traces/analyze_fixture.parquet).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export TRACE_ROOT="$root"
export TRACE_BIN="${TRACE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/trace}"
out="$(mktemp -d)"
jupyter nbconvert --to notebook --execute "$root/notebooks/crosscheck.ipynb" \
    --output-dir "$out" --ExecutePreprocessor.timeout=300
echo "crosscheck: executed notebook in $out/crosscheck.ipynb"
