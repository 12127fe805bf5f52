#!/usr/bin/env python3
"""get_loop.py - how many answers one keep-alive client gets asking in a
loop for a training job's record and loss chart, or for /metrics, and
what that costs the event loop.

    bench/get_loop.py [SERVER ...]     (default build/dae-server; run from the checkout)

For each dae-server binary given (several: side by side, round by round),
2 rounds of: a fresh server (loop_stall.py's: the committed default model,
temporary directories), a job of 1,200 one-step epochs on the fixtures'
mnist-mini; then, for 2 s each, GET /train/1 and /train/1/loss.svg, plain
and asking for gzip, and GET /metrics (plain, and asking for gzip as
Prometheus does): the answers, and the event loop's CPU seconds.
"""

import http.client
import json
import os
import shutil
import sys
import tempfile
import time

from loop_stall import ROOT, Server

SECONDS = 2.0


def loop(server, path, gzip):
    """Answers to GET path on one keep-alive connection in SECONDS, and the event loop's CPU s meanwhile."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    n, cpu, end = 0, server.loop_cpu_s(), time.time() + SECONDS
    while time.time() < end:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit("GET %s: %d" % (path, r.status))
        n += 1
    c.close()
    return n, server.loop_cpu_s() - cpu


def one_round(binary):
    with tempfile.TemporaryDirectory() as data_dir:
        shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "mnist-mini"), os.path.join(data_dir, "mnist-mini"))
        s = Server(binary, data_dir)
        try:
            body = json.dumps({"dataset": "mnist-mini", "epochs": 1200, "train_limit": 64, "batch_size": 64,
                               "eval_limit": 0, "model_name": "loop"})
            job = json.loads(s.text("/train", body))["id"]
            while json.loads(s.text("/train/%s" % job))["state"] in ("queued", "running"):
                time.sleep(0.1)
            sizes = [len(s.text(p % job)) for p in ("/train/%s", "/train/%s/loss.svg")]
            sizes.append(len(s.text("/metrics")))
            return sizes, ([loop(s, p % job, gz) for p in ("/train/%s", "/train/%s/loss.svg") for gz in (0, 1)]
                           + [loop(s, "/metrics", gz) for gz in (0, 1)])
        finally:
            s.stop()


def main():
    servers = sys.argv[1:] or [os.path.join(ROOT, "build", "dae-server")]
    print("one keep-alive client, %.0f s each: answers (event loop CPU s)" % SECONDS)
    print("%-28s %5s %20s %20s %20s %20s %20s %20s %20s" % ("server", "round", "record / svg / metrics", "record",
                                                            "record gzip", "loss.svg", "loss.svg gzip", "metrics",
                                                            "metrics gzip"))
    for rnd in range(1, 3):
        for binary in servers:
            sizes, runs = one_round(binary)
            print("%-28s %5d %20s %s" % (binary[-28:], rnd, "%d / %d / %d KB" % tuple(n // 1000 for n in sizes),
                                         " ".join("%12d (%4.2f)" % r for r in runs)))


if __name__ == "__main__":
    main()
