#!/usr/bin/env python3
"""Byte-level mutation of a real trace file, read by the real binary: the long run behind
docs/benchmarks.md's fuzzing figures (the proptest targets in tests/fuzz.rs mutate inside the
test process; this one also catches what aborts a process, which no in-process guard can).

Each seed flips, inserts or deletes 1-8 bytes of traces/sample.parquet, writes the file and runs
`trace report` and `trace inspect` on it. Exit status 0 (read) or 2 (named error) is a pass;
anything else (a panic's 101, an abort's 134, a signal) stops the run and keeps the file as
crash-SEED.parquet in the working directory.

    scripts/fuzz/mutate_files.py FIRST_SEED LAST_SEED [TRACE_BINARY]
"""
import random
import subprocess
import sys
import time
from pathlib import Path

repo = Path(__file__).resolve().parents[2]
first, last = int(sys.argv[1]), int(sys.argv[2])
binary = sys.argv[3] if len(sys.argv) > 3 else str(repo / "target/release/trace")
base = (repo / "traces/sample.parquet").read_bytes()
counts = {0: 0, 2: 0}
t0 = time.time()
for seed in range(first, last):
    r = random.Random(seed)
    d = bytearray(base)
    for _ in range(1 + r.randrange(8)):
        at = r.randrange(len(d))
        op = r.randrange(3)
        if op == 0:
            d[at] = r.randrange(256)
        elif op == 1:
            d.insert(at, r.randrange(256))
        else:
            del d[at]
    Path("m.parquet").write_bytes(d)
    for verb in ("report", "inspect"):
        p = subprocess.run([binary, verb, "m.parquet"], capture_output=True)
        if p.returncode not in counts:
            print(f"seed {seed}: trace {verb} exited {p.returncode}")
            print(p.stderr[-800:].decode(errors="replace"))
            Path(f"crash-{seed}.parquet").write_bytes(d)
            sys.exit(1)
        counts[p.returncode] += 1
print(f"{last - first} files, {sum(counts.values())} runs in {time.time() - t0:.0f} s: "
      f"{counts[0]} read, {counts[2]} refused with a named error, 0 crashes")
