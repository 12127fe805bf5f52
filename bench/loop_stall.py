#!/usr/bin/env python3
"""loop_stall.py - how long a slow request holds up other clients.

    bench/loop_stall.py [--epochs N] [SERVER ...]   (default build/dae-server; run from the checkout)

For each dae-server binary given (several: side by side, round by round),
3 rounds of:
- a v2 inference request of 3,000 varied images as a 9.4 MB JSON tensor,
  sent plain, then asking for gzip, while another client asks /healthz
  every 10 ms: the slowest /healthz;
- CPU time of the event-loop thread (libmicrohttpd's, "MHD-single", from
  /proc) for that request with a wrong shape (parse only, 400), plain and
  gzip'd;
- PUT /datasets/NAME of a tar of 19,000 28x28 PNGs (19.5 MB), /healthz every
  5 ms: the slowest /healthz;
- a training job of 3,000 one-step epochs (--epochs; the fixtures'
  mnist-mini, 64 images), followed by 24 event streams (one client's share
  of --max-streams), /healthz every 10 ms: the slowest /healthz and its
  99th percentile, the event loop's CPU time, the job's own time, and the
  megabytes of events the streams read.
Each round starts the server afresh with the committed default model on a
free port, its data, models and state directories temporary ones. About
30 s a server.
"""

import glob
import http.client
import io
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IMAGES = 3000
STREAMS = 24
EPOCHS = 3000


def json_request(n, shape_n):
    pixels = ",".join("0.%d" % (i * 2654435761 >> 16 & 7) for i in range(n * 784))
    return ('{"inputs":[{"name":"input","shape":[%d,1,28,28],"datatype":"FP32","data":[%s]}]}'
            % (shape_n, pixels)).encode()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def dataset_tar(count):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(count):
            raw = b"".join(b"\0" + bytes((x * 31 + y * 17 + i) & 255 for x in range(28)) for y in range(28))
            png = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
                   + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
            info = tarfile.TarInfo("imgs/%05d.png" % i)
            info.size = len(png)
            tar.addfile(info, io.BytesIO(png))
    return out.getvalue()


class Server:
    def __init__(self, binary, data_dir):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "--port", "0", "--access-log", "off", "--data-dir", data_dir,
                                      "--models-dir", os.path.join(data_dir, "models"),
                                      "--state-dir", os.path.join(data_dir, "state"),
                                      "--model", os.path.join(ROOT, "models", "mnist.safetensors")],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.err)
        self.port = None
        for _ in range(400):
            self.err.seek(0)
            m = re.search(rb"listening on http://[0-9.]+:(\d+)", self.err.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            raise SystemExit("%s did not start" % binary)
        comms = glob.glob("/proc/%d/task/*/comm" % self.proc.pid)
        self.loop_stat = [c[:-4] + "stat" for c in comms if open(c).read().strip() == "MHD-single"][0]

    def loop_cpu_s(self):
        f = open(self.loop_stat).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def request(self, method, path, body=None, headers=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def text(self, path, json_body=None):
        """The body of GET path (POST of json_body when given), as text."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            if json_body is None:
                c.request("GET", path)
            else:
                c.request("POST", path, body=json_body, headers={"Content-Type": "application/json"})
            return c.getresponse().read().decode()
        finally:
            c.close()

    def peak_rss_mib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) // 1024

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def healthz_waits(server, work, every):
    """Runs work() on a thread; returns (its results, the /healthz waits meanwhile in s, sorted)."""
    results, waits = [], []
    t = threading.Thread(target=lambda: results.append(work()))
    t.start()
    while t.is_alive():
        t0 = time.time()
        server.request("GET", "/healthz")
        waits.append(time.time() - t0)
        time.sleep(every)
    t.join()
    return results[0], sorted(waits)


def slowest_healthz(server, work, every):
    """Runs work() on a thread; returns (its results, the slowest /healthz meanwhile in s)."""
    result, waits = healthz_waits(server, work, every)
    return result, waits[-1]


def follow_job(server, job, n):
    """Follows the job with n event streams until each has its done event
    and the end of its body; returns the bytes they read."""
    socks, got = [], {}
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall(b"GET /train/%s/events HTTP/1.1\r\nHost: bench\r\n\r\n" % job.encode())
        sock.setblocking(False)
        socks.append(sock)
        got[sock] = b""
    total, deadline = 0, time.time() + 600
    while socks and time.time() < deadline:
        ready, _, _ = select.select(socks, [], [], 1.0)
        for sock in ready:
            chunk = sock.recv(1 << 20)
            total += len(chunk)
            got[sock] = (got[sock] + chunk)[-16:]
            if not chunk or got[sock].endswith(b"\r\n0\r\n\r\n"):
                socks.remove(sock)
                sock.close()
    return total


def stream_round(s, epochs):
    """The training job followed by STREAMS streams: (slowest /healthz in s,
    its 99th percentile, the event loop's CPU s, the job's elapsed seconds,
    MB of events read)."""
    body = json.dumps({"dataset": "mnist-mini", "epochs": epochs, "train_limit": 64, "batch_size": 64,
                       "eval_limit": 0, "model_name": "stall"})
    job = json.loads(s.text("/train", body))["id"]
    cpu = s.loop_cpu_s()
    read, waits = healthz_waits(s, lambda: follow_job(s, job, STREAMS), 0.01)
    cpu = s.loop_cpu_s() - cpu
    return (waits[-1], waits[len(waits) * 99 // 100], cpu, json.loads(s.text("/train/%s" % job))["elapsed_seconds"],
            read / 1e6)


def one_round(binary, big, bad, tar, epochs):
    with tempfile.TemporaryDirectory() as data_dir:
        shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "mnist-mini"), os.path.join(data_dir, "mnist-mini"))
        s = Server(binary, data_dir)
        try:
            infer = "/v2/models/mnist/infer"
            ctype = {"Content-Type": "application/json"}
            gz = dict(ctype, **{"Accept-Encoding": "gzip"})
            statuses, json_wait = slowest_healthz(
                s, lambda: [s.request("POST", infer, big, ctype), s.request("POST", infer, big, gz)], 0.01)
            cpu = []
            for body, headers in ((bad, ctype), (big, ctype), (big, gz)):
                t0 = s.loop_cpu_s()
                statuses.append(s.request("POST", infer, body, headers))
                cpu.append(s.loop_cpu_s() - t0)
            put, tar_wait = slowest_healthz(s, lambda: s.request("PUT", "/datasets/stall", tar), 0.005)
            statuses.append(put)
            streams = stream_round(s, epochs)
        finally:
            s.stop()
    if statuses != [200, 200, 400, 200, 200, 201]:
        raise SystemExit("%s: unexpected statuses %s" % (binary, statuses))
    return json_wait, cpu, tar_wait, streams


def main():
    args = sys.argv[1:]
    epochs = EPOCHS
    if args[:1] == ["--epochs"] and len(args) > 1:
        epochs, args = int(args[1]), args[2:]
    servers = args or [os.path.join(ROOT, "build", "dae-server")]
    big, bad = json_request(N_IMAGES, N_IMAGES), json_request(N_IMAGES, N_IMAGES - 1)
    tar = dataset_tar(19000)
    print("v2 JSON request: %d images, %.1f MB; data set: 19,000 PNGs, %.1f MB" % (N_IMAGES, len(big) / 1e6,
                                                                                 len(tar) / 1e6))
    print("training: %d one-step epochs followed by %d event streams" % (epochs, STREAMS))
    print("%-28s %5s %22s %34s %22s %58s" % ("server", "round", "slowest /healthz, JSON",
                                            "loop CPU s: parse / plain / gzip", "slowest /healthz, tar",
                                            "streams: /healthz slowest, p99; loop CPU; job; events"))
    for rnd in range(1, 4):
        for binary in servers:
            json_wait, cpu, tar_wait, (stream_wait, stream_p99, stream_cpu, job_s, mb) = one_round(
                binary, big, bad, tar, epochs)
            print("%-28s %5d %20.3f s %34s %20.3f s %16.3f s, %6.3f s; %5.1f s; %6.1f s; %6.0f MB"
                  % (binary[-28:], rnd, json_wait, " / ".join("%.2f" % c for c in cpu), tar_wait, stream_wait,
                     stream_p99, stream_cpu, job_s, mb))


if __name__ == "__main__":
    main()
