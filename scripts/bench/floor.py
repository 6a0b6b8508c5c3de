"""The machine's floor for `trace selfcheck`'s TTFT error: a raw-socket client.

One keep-alive connection, one request at a time, no HTTP library: the send time is read just
before sendall() and each read's time just after recv() returns, so nothing but the kernel and
the two processes' wake-ups lies between the stamps and the wire. Against `trace sim --truth`,
it reports the same errors as selfcheck: TTFT error (client TTFT minus server TTFT), split into
its request path (server arrival minus client send) and response path (client read minus server
write of the first token event).

usage: python3 floor.py PORT TRUTH_FILE SIM_PID [REQUESTS] [TOKENS]
  Start `trace sim --port PORT --truth TRUTH_FILE --ttft 50ms --itl 10ms` first; at the end this
  stops that simulator (SIGINT to SIM_PID, so that it flushes the truth file) and reads the file.
"""

import json
import os
import re
import signal
import socket
import sys
import time

TOKEN_EVENT = re.compile(rb'"text":"[^"]')


def pct(v, q):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main():
    port = int(sys.argv[1])
    truth_path = sys.argv[2]
    sim_pid = int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = {}
    first = {}
    for i in range(n):
        body = json.dumps(
            {"model": "m", "prompt": "a b c d", "max_tokens": tokens, "stream": True,
             "ignore_eos": True}
        ).encode()
        rid = f"floor-{i}"
        req = (
            f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"x-request-id: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        time.sleep(0.02)
        t = time.time_ns()
        s.sendall(req)
        sent[rid] = t
        buf = b""
        while not buf.endswith(b"0\r\n\r\n"):
            b = s.recv(65536)
            now = time.time_ns()
            if not b:
                sys.exit("the simulator closed the connection")
            # The first event carrying text (the simulator's first event has none).
            if rid not in first and TOKEN_EVENT.search(b):
                first[rid] = now
            buf += b
    s.close()
    os.kill(sim_pid, signal.SIGINT)
    for _ in range(100):
        try:
            with open(f"/proc/{sim_pid}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):
                    break  # exited; its parent has not reaped it yet
        except FileNotFoundError:
            break
        time.sleep(0.1)
    truth = {}
    with open(truth_path) as f:
        for line in f:
            d = json.loads(line)
            truth[d["request_id"]] = d
    ttft_err, req_path, resp_path = [], [], []
    for rid, t in sent.items():
        tr = truth.get(rid)
        if tr is None or rid not in first:
            continue
        ev = [e for e, k in zip(tr["event_unix_ns"], tr["event_tokens"]) if k > 0]
        if not ev:
            continue
        req_path.append((tr["arrival_unix_ns"] - t) / 1e3)
        resp_path.append((first[rid] - ev[0]) / 1e3)
        ttft_err.append(((first[rid] - t) - (ev[0] - tr["arrival_unix_ns"])) / 1e3)
    print(f"raw-socket client, {len(ttft_err)} requests, one at a time (µs):")
    for name, v in [("TTFT error", ttft_err), ("request path", req_path),
                    ("response path", resp_path)]:
        print(f"  {name:14} median {pct(v, 50):7.1f}  P99 {pct(v, 99):7.1f}")


if __name__ == "__main__":
    main()
