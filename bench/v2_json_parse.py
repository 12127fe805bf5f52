#!/usr/bin/env python3
"""v2_json_parse.py - what a big JSON tensor costs the server: time and
peak memory of one POST /v2/models/mnist/infer whose input is JSON
numbers, for one or more dae-server builds side by side.

usage: bench/v2_json_parse.py SERVER [SERVER ...] [--rounds N]

Two bodies: 3,000 images written as "0.d" (9.4 MB, as bench/loop_stall.py
sends), and 6,600 images of "0" (10.3 MB, the most numbers a body under
the default --max-body of 10 MiB holds). For each body, round and server
(taking turns), a fresh server with its defaults answers the request once;
prints the answer's status, the request's time, the server's peak
resident memory (VmHWM) and what /metrics says was reserved at the peak.
"""

import argparse
import http.client
import re
import statistics
import tempfile
import time

from loop_stall import Server


def body(n, number):
    data = ",".join(number(i) for i in range(n * 784))
    return ('{"inputs":[{"name":"input","shape":[%d,1,28,28],"datatype":"FP32","data":[%s]}]}'
            % (n, data)).encode()


def one(binary, payload):
    with tempfile.TemporaryDirectory(prefix="dae-v2json.") as tmp:
        server = Server(binary, tmp)
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        t = time.time()
        c.request("POST", "/v2/models/mnist/infer", payload, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        took = time.time() - t
        c.close()
        metrics = server.text("/metrics")
        peak = int(float(re.search(r"^dae_memory_reserved_peak_bytes (\S+)", metrics, re.M).group(1)))
        hwm = server.peak_rss_mib()
        server.stop()
    return r.status, took, hwm, peak // (1 << 20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("servers", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bodies = [("3000 images of 0.d", body(3000, lambda i: "0.%d" % (i * 2654435761 >> 16 & 7))),
              ("6600 images of 0", body(6600, lambda i: "0"))]
    print("%-20s %-36s %6s %22s %16s %20s" % ("body", "server", "status", "time (median, range)",
                                              "peak RSS MiB", "peak reserved MiB"))
    for name, payload in bodies:
        runs = {s: [] for s in args.servers}
        for _ in range(args.rounds):
            for s in args.servers:
                runs[s].append(one(s, payload))
        for s in args.servers:
            rs = runs[s]
            times = [r[1] for r in rs]
            print("%-20s %-36s %6s %8.3f s (%.3f-%.3f) %16s %20s" % (
                "%s (%.1f MB)" % (name, len(payload) / 1e6), s[-36:], ",".join(sorted({str(r[0]) for r in rs})),
                statistics.median(times), min(times), max(times),
                "-".join(sorted({str(r[2]) for r in rs}, key=int)), "-".join(sorted({str(r[3]) for r in rs}, key=int))))


if __name__ == "__main__":
    main()
