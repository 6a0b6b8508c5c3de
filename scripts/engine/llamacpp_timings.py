#!/usr/bin/env python3
"""Extracts llama-server's own per-request timings from its log, as CSV on stdout: the server's
side of a capture, computed by the engine and not by trace, so the client's figures can be
checked against it (tests/engine_traces.rs).

  python3 llamacpp_timings.py llama-server.log > llamacpp-server-timings.csv

Columns: task, prompt_ms, prompt_tokens (evaluated, after the prompt cache), eval_ms,
eval_tokens (generated).
"""
import csv
import re
import sys

PROMPT = re.compile(r"task (\d+) \| prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
EVAL = re.compile(r"task (\d+) \|\s+eval time =\s+([\d.]+) ms /\s+(\d+) tokens")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tasks = {}
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for line in f:
            for pattern, key in ((PROMPT, "prompt"), (EVAL, "eval")):
                m = pattern.search(line)
                if m:
                    tasks.setdefault(int(m[1]), {})[key] = (m[2], m[3])
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["task", "prompt_ms", "prompt_tokens", "eval_ms", "eval_tokens"])
    for task in sorted(tasks):
        t = tasks[task]
        if "prompt" in t and "eval" in t:
            out.writerow([task, *t["prompt"], *t["eval"]])


if __name__ == "__main__":
    main()
