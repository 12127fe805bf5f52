#!/usr/bin/env python3
"""soak.py - a mixed soak of dae-server: valid and hostile requests together.

usage: tests/hostile/soak.py path/to/dae-server [SECONDS] [CONCURRENCY]

Starts the daemon on a loopback port with its default limits, then runs
CONCURRENCY client threads (default 64) for SECONDS (default 600). Each
thread loops over a weighted mix: valid /denoise and /noise uploads of
28x28 and 300x200 images, v2 inference (a tensor, images), /healthz,
/metrics, the model list, the web page and the API description, a
training job's list, record, loss chart (plain and gzip'd) and event
stream (read a little, then dropped), and hostile requests (header-only
and truncated images, aborted uploads, half-sent heads, oversized bodies,
duplicate Content-Length, bad URLs, bad v2 JSON). Every answer is
checked: valid requests must get 200 or 503 + Retry-After, hostile ones a
4xx/503 JSON error or a closed connection, never a 200 with pixels and never
a 5xx other than 503. Samples the daemon's RSS every second.

Prints requests by kind, answers by status, unexpected answers, and RSS at
start, peak and end; exits 1 on any unexpected answer, if the daemon died,
or on a sanitizer report in its log (a build with SANITIZE=1).
"""

import base64
import collections
import json
import os
import random
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


def load(root, name):
    return open(os.path.join(root, "tests", "fixtures", "images", name), "rb").read()


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 600
    conc = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    root = os.path.dirname(os.path.dirname(HERE))
    suite = harness.Suite(os.path.abspath(sys.argv[1]), root)
    suite.current = "soak"
    # A job of many short epochs runs through the soak, for the training routes.
    d = suite.start("daemon", "--access-log", "off", "--train-threads", "1",
                    "--data-dir", os.path.join(root, "tests", "fixtures"))
    port = d.port
    job = harness.request(port, "POST", "/train", json.dumps(
        {"dataset": "mnist-mini", "epochs": 10000, "train_limit": 64, "eval_limit": 16, "model_name": "soaked"}),
        {"Content-Type": "application/json"}).json()["id"]
    small = load(root, "gray_27x29.png")
    medium = load(root, "gray_300x200.png")
    jpeg = load(root, "rgb.jpg")

    def upload(path, body, ctype="image/png"):
        return harness.request(port, "POST", path, body, {"Content-Type": ctype}, timeout=30)

    tensor = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                     "data": [0.5] * 784}]})
    images = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                     "data": [base64.b64encode(small).decode()]}]})

    def v2(body):
        return harness.request(port, "POST", "/v2/models/mnist/infer", body, {"Content-Type": "application/json"})

    def events():
        s = socket.create_connection((harness.HOST, port), timeout=5)
        try:
            s.sendall(("GET /train/%s/events HTTP/1.1\r\nHost: x\r\n\r\n" % job).encode())
            head = s.recv(4096)
        finally:
            s.close()
        if b"\r\n\r\n" not in head:
            return None
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
        return harness.Response(int(lines[0].split()[1]), headers, head)

    def raw_close(data):
        s = socket.create_connection((harness.HOST, port), timeout=5)
        s.sendall(data)
        s.close()
        return None

    # kind -> (weight, function returning a Response or None, judge)
    valid = lambda r: r is not None and (r.status == 200 or (r.status == 503 and "retry-after" in r.headers))
    refused = lambda r: r is None or (400 <= r.status < 500 and r.is_json_error()) or \
        (r.status == 503 and r.is_json_error())
    closed = lambda r: r is None
    v2_refused = lambda r: r is None or (400 <= r.status < 500 and isinstance(r.json().get("error"), str))
    gzip_ = {"Accept-Encoding": "gzip"}
    head = "POST /noise?sigma=0 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    mix = [
        ("denoise_28", 30, lambda: upload("/denoise", small), valid),
        ("denoise_300x200", 6, lambda: upload("/denoise", medium), valid),
        ("noise_jpeg", 4, lambda: upload("/noise?sigma=0.3&seed=1", jpeg, "image/jpeg"), valid),
        ("healthz", 8, lambda: harness.request(port, "GET", "/healthz"), valid),
        ("metrics", 2, lambda: harness.request(port, "GET", "/metrics"), valid),
        ("header_only_pnm", 6, lambda: upload("/noise?sigma=0", b"P6\n100 100\n255\n"), refused),
        ("truncated_png", 6, lambda: upload("/denoise", small[:len(small) // 2]), refused),
        ("truncated_jpeg", 4, lambda: upload("/denoise", jpeg[:len(jpeg) // 2], "image/jpeg"), refused),
        ("aborted_upload", 8, lambda: raw_close((head % 5000).encode() + b"x" * 100), closed),
        ("half_head", 6, lambda: raw_close(b"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Le"), closed),
        ("oversized_body", 2, lambda: harness.raw(port, (head % (1 << 30)).encode()), refused),
        ("duplicate_cl", 4, lambda: harness.raw(
            port, b"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
            refused),
        ("bad_url", 4, lambda: harness.request(port, "GET", "/models/%ff%fe"), refused),
        ("v2_tensor", 4, lambda: v2(tensor), valid),
        ("v2_images", 4, lambda: v2(images), valid),
        ("v2_bad_json", 2, lambda: v2(tensor[:-9]), v2_refused),
        ("models", 2, lambda: harness.request(port, "GET", "/models"), valid),
        ("page", 1, lambda: harness.request(port, "GET", "/", None, gzip_), valid),
        ("openapi", 1, lambda: harness.request(port, "GET", "/openapi.json"), valid),
        ("train_list", 2, lambda: harness.request(port, "GET", "/train", None, gzip_), valid),
        ("train_record", 2, lambda: harness.request(port, "GET", "/train/" + job), valid),
        ("loss_svg", 2, lambda: harness.request(port, "GET", "/train/%s/loss.svg" % job, None,
                                                 random.choice([gzip_, {}])), valid),
        ("events", 2, events, valid),
    ]
    kinds = [m for m in mix for _ in range(m[1])]
    counts = collections.Counter()
    statuses = collections.Counter()
    unexpected = collections.Counter()
    examples = {}
    lock = threading.Lock()
    stop_at = time.time() + seconds
    rss = {"start": d.rss_kb(), "peak": 0}

    def client(seed):
        rnd = random.Random(seed)
        while time.time() < stop_at:
            name, _, fn, judge = rnd.choice(kinds)
            try:
                r = fn()
            except (OSError, ConnectionError) as e:  # reset or refused
                r = None if judge is not valid else e
            ok = judge(r) if not isinstance(r, Exception) else False
            with lock:
                counts[name] += 1
                statuses["closed" if r is None or isinstance(r, Exception) else r.status] += 1
                if not ok:
                    unexpected[name] += 1
                    examples.setdefault(name, repr(r))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    while time.time() < stop_at and d.alive():
        rss["peak"] = max(rss["peak"], d.rss_kb())
        time.sleep(1)
    for t in threads:
        t.join(60)
    time.sleep(2)
    alive = d.alive()
    rss["end"] = d.rss_kb() if alive else 0
    rss["hwm"] = d.peak_rss_kb() if alive else 0
    total = sum(counts.values())
    print("soak: %d requests in %.0f s at c=%d (%.0f/s)" % (total, seconds, conc, total / seconds))
    for name, _, _, _ in mix:
        print("  %-18s %7d  unexpected %d" % (name, counts[name], unexpected[name]))
    print("  answers: " + ", ".join("%s: %d" % (k, v) for k, v in sorted(statuses.items(), key=str)))
    print("  RSS: start %.0f MiB, peak %.0f MiB (high-water mark %.0f MiB), end %.0f MiB" % (
        rss["start"] / 1024, rss["peak"] / 1024, rss["hwm"] / 1024, rss["end"] / 1024))
    for name, ex in examples.items():
        print("  unexpected %s: %s" % (name, ex[:300]))
    if not alive:
        print("soak: the daemon died:\n" + d.stderr()[-3000:])
    suite.end_test()  # a sanitizer report in the daemon's log counts as a failure
    return 0 if alive and not unexpected and not suite.failed else 1


if __name__ == "__main__":
    sys.exit(main())
