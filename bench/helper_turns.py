#!/usr/bin/env python3
"""helper_turns.py - how long one client's big JSON bodies hold up another's.

    bench/helper_turns.py [SERVER ...]   (default build/dae-server; run from the checkout)

For each dae-server binary given (several: side by side, round by round),
2 rounds of: one client (127.0.0.3) sends 30 v2 inference requests of 8
images (24 KB of JSON) one after another, alone, then while another
client (127.0.0.2) keeps 16 requests of 200 images (612 KB) in flight.
Both bodies are parsed, and both answers printed, on the helper thread
(server/http.c's off_loop). Prints the small requests' median and
slowest time alone and under that load, and the big requests' median.
Each round starts the server afresh (tests/hostile/harness.py: the
committed default model, temporary directories, a free port).
"""

import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "hostile"))
import harness  # noqa: E402
from test_fairness import ATTACKER, OTHER  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


def small_requests(port, body, n=30):
    times = []
    for _ in range(n):
        t0 = time.time()
        r = harness.request(port, "POST", "/v2/models/mnist/infer", body, HEADERS, timeout=120, source=OTHER)
        if r.status != 200:
            raise SystemExit("helper_turns: a small request was answered %d" % r.status)
        times.append(time.time() - t0)
    return times


def one_round(suite, server):
    suite.server = os.path.abspath(server)
    suite.current = "helper-turns"
    d = suite.start("server", "--access-log", "off")
    big, small = harness.v2_json_body(200, 2), harness.v2_json_body(8, 1)
    alone = small_requests(d.port, small)
    stop, took = threading.Event(), []

    def flood():
        while not stop.is_set():
            t0 = time.time()
            harness.request(d.port, "POST", "/v2/models/mnist/infer", big, HEADERS, timeout=120, source=ATTACKER)
            took.append(time.time() - t0)
    threads = [threading.Thread(target=flood) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(2)
    loaded = small_requests(d.port, small)
    stop.set()
    for t in threads:
        t.join()
    suite.end_test()
    figures = [statistics.median(alone), max(alone), statistics.median(loaded), max(loaded), statistics.median(took)]
    print("%-36s" % server[-36:] + "".join("%12.1f" % (x * 1e3) for x in figures), flush=True)


def main():
    servers = sys.argv[1:] or ["build/dae-server"]
    suite = harness.Suite(os.path.abspath(servers[0]), os.path.dirname(HERE))
    print("%-36s" % "ms" + "".join("%12s" % x for x in ("alone p50", "alone max", "loaded p50", "loaded max", "big p50")))
    for _ in range(2):
        for server in servers:
            one_round(suite, server)


if __name__ == "__main__":
    main()
