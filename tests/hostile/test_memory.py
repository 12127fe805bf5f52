"""test_memory.py - finding 6: memory is bounded by one budget.

A flood of near-limit bodies, concurrent 16-megapixel images and a training
job with a huge batch must not take the server past its memory budget plus
the process's fixed overhead; requests that do not fit are refused before
their memory is taken (503 "memory_budget" with Retry-After, or 422 for
training), memory goes back to the system afterwards, and a big image in
progress does not hold up small ones.

The budgets are set through the environment (DAE_MEMORY_BUDGET, ...), so
an older server that does not know them starts all the same and fails the
checks instead of refusing the flag.
"""

import os
import socket
import struct
import threading
import time
import zlib

import harness

MIB = 1 << 20
# What the process holds besides the budget: code, libraries, the model,
# workers' tile buffers, libmicrohttpd's per-connection pools, allocator
# slack. Measured at 30-45 MiB (see README, "Memory"); this is the bound
# the checks allow.
OVERHEAD = 64 * MIB
MAX_BODY = 10 * MIB

_png_cache = {}


def png(width, height, channels, seed=0):
    """A valid 8-bit PNG (gray, gray+alpha, RGB or RGBA) whose rows are a
    cheap deterministic pattern: small on the wire, full-size once decoded."""
    key = (width, height, channels, seed)
    if key in _png_cache:
        return _png_cache[key]
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    stride = width * channels
    rows = []
    base = bytes((i * 7 + seed) & 255 for i in range(stride + 256))
    for y in range(height):
        off = (y * 3) & 255
        rows.append(b"\x00" + base[off:off + stride])
    raw = b"".join(rows)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

    out = (b"\x89PNG\r\n\x1a\n" +
           chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, ctype, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    _png_cache[key] = out
    return out


def budget_error(suite, what, resp):
    """Checks resp is the 503 memory_budget JSON error with Retry-After."""
    ok = (resp is not None and resp.status == 503 and resp.is_json_error(503)
          and resp.json()["error"]["code"] == "memory_budget" and "retry-after" in resp.headers)
    suite.check("%s: refused with 503 memory_budget JSON and Retry-After" % what, ok, repr(resp))


def settle_rss(d, above_kb, timeout=5.0):
    """Waits up to timeout for RSS to fall to above_kb or less; returns it."""
    rss = d.rss_kb()
    deadline = time.time() + timeout
    while rss > above_kb and time.time() < deadline:
        time.sleep(0.1)
        rss = d.rss_kb()
    return rss


# ------------------------------------------------------------ bodies


def test_body_flood_stays_within_budget(suite):
    budget = 128 * MIB
    # Every connection here is 127.0.0.1's, one client: it may hold the
    # whole budget (test_fairness tests the shares).
    d = suite.start("flood", env={"DAE_MEMORY_BUDGET": str(budget), "DAE_CLIENT_SHARE": "100",
                                  "DAE_MAX_CONNECTIONS": "512", "DAE_ACCESS_LOG": "off"})
    # Warm up (first-request allocations belong to the overhead).
    harness.request(d.port, "POST", "/denoise", png(28, 28, 1), {"Content-Type": "image/png"})
    idle_kb = d.rss_kb()
    n_conn, length = 100, MAX_BODY - 4096
    head = ("POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            "Content-Length: %d\r\n\r\n" % length).encode()
    socks = []
    try:
        for _ in range(n_conn):
            s = socket.create_connection((harness.HOST, d.port), timeout=10)
            s.sendall(head)
            socks.append(s)
        time.sleep(0.5)
        # Those answered at once were refused; the others hold their body.
        refused, held = [], []
        for s in socks:
            s.setblocking(False)
            try:
                first = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                first = None
            except OSError:
                first = b""
            s.setblocking(True)
            s.settimeout(10)
            if first:
                refused.append((s, first))
            else:
                held.append(s)
        body = b"\x00" * (length - 1)  # all but the last byte: the request stays open
        for s in held:
            try:
                s.sendall(body)
            except OSError:
                pass
        time.sleep(0.5)
        rss_kb = d.rss_kb()
        suite.check("100 held near-limit bodies: RSS %d MiB <= budget %d MiB + overhead %d MiB"
                    % (rss_kb // 1024, budget // MIB, OVERHEAD // MIB),
                    rss_kb * 1024 <= budget + OVERHEAD, "idle %d MiB" % (idle_kb // 1024))
        suite.check("only what fits the budget is held (%d held, %d refused)" % (len(held), len(refused)),
                    0 < len(held) <= budget // length + 1 and len(refused) >= n_conn - budget // length - 1)
        if refused:
            s, first = refused[0]
            resp = harness.read_response(s, 5, first)
            budget_error(suite, "a body over the budget", resp)
        r = harness.request(d.port, "GET", "/healthz")
        suite.check("healthz still answers 200 while the budget is full", r.status == 200, repr(r))
    finally:
        for s in socks:
            s.close()
    # Rolling waves of complete uploads, answered at once (not images):
    # after them, the allocator must not keep the bodies' memory (glibc
    # raises its mmap threshold when a large block is freed, and later
    # blocks of that size come from a heap it does not give back).
    answers = []

    zeros = b"\x00" * length

    def upload():
        for _ in range(3):
            try:
                answers.append(harness.request(d.port, "POST", "/denoise", zeros).status)
            except OSError as e:
                answers.append(str(e))
    threads = [threading.Thread(target=upload) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    suite.check("a second wave of full-size bodies is answered (415 or 503)",
                all(a in (415, 503) for a in answers), repr(answers))
    # Everything is given back: a full-size body fits again, and RSS falls.
    def fits():
        r = harness.request(d.port, "POST", "/noise?sigma=0", png(64, 64, 3), {"Content-Type": "image/png"})
        return r if r.status == 200 else None
    suite.check("after the clients leave, requests are served again", harness.wait_until(fits, 5) is not None)
    rss_kb = settle_rss(d, idle_kb + 16 * 1024)
    suite.check_rss_falls_back("after the clients leave, RSS falls back (%d MiB, idle %d MiB)"
                               % (rss_kb // 1024, idle_kb // 1024), rss_kb <= idle_kb + 16 * 1024)
    m = harness.request(d.port, "GET", "/metrics").body.decode()
    suite.check("metrics show the budget and nothing reserved",
                "dae_memory_budget_bytes %d" % budget in m and "dae_memory_reserved_bytes 0" in m, m[-400:])


def test_chunked_body_is_reserved_chunk_by_chunk(suite):
    budget = 4 * MIB
    d = suite.start("chunked", env={"DAE_MEMORY_BUDGET": str(budget), "DAE_ACCESS_LOG": "off"})
    s = socket.create_connection((harness.HOST, d.port), timeout=10)
    try:
        s.sendall(b"POST /noise HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"\x00" * (256 * 1024)
        try:
            for _ in range(24):  # 6 MiB, over the 4 MiB budget
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        resp = harness.read_response(s, 10)
    finally:
        s.close()
    budget_error(suite, "a chunked body growing past the budget", resp)
    rss_kb = d.rss_kb()
    suite.check("the dropped chunks were not kept (RSS %d MiB)" % (rss_kb // 1024),
                rss_kb * 1024 <= budget + OVERHEAD)
    r = harness.request(d.port, "POST", "/noise?sigma=0", png(64, 64, 3), {"Content-Type": "image/png"})
    suite.check("then a small image fits again (200)", r.status == 200, repr(r))


def test_concurrent_16_megapixel_images_stay_within_budget(suite):
    budget = 512 * MIB  # the default, which deploy/k8s/deployment.yaml relies on
    d = suite.start("big", env={"DAE_ACCESS_LOG": "off", "DAE_WORKERS": "2"})
    big = png(4096, 4096, 1)
    bound_kb = (budget + OVERHEAD) // 1024
    answers = []

    def one():
        try:
            r = harness.request(d.port, "POST", "/denoise", big, {"Content-Type": "image/png"}, timeout=90)
            answers.append(r)
        except OSError as e:
            answers.append(e)
    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    # Watch the peak; an old server goes far past the bound within a
    # second or two, and is stopped there rather than left to grind.
    over = False
    while any(t.is_alive() for t in threads):
        if d.alive() and d.peak_rss_kb() > bound_kb:
            over = True
            break
        time.sleep(0.05)
    peak_kb = d.peak_rss_kb() if d.alive() else 0
    if over:
        d.stop(timeout=5)
    for t in threads:
        t.join()
    suite.check("6 concurrent 4096x4096 images: peak RSS %d MiB <= budget %d MiB + overhead %d MiB"
                % (peak_kb // 1024, budget // MIB, OVERHEAD // MIB), not over and peak_kb <= bound_kb)
    statuses = [a.status if isinstance(a, harness.Response) else repr(a) for a in answers]
    suite.check("every one answered 200 or 503", not over and all(s in (200, 503) for s in statuses), repr(statuses))
    suite.check("at least one was denoised", 200 in statuses, repr(statuses))
    for a in answers:
        if isinstance(a, harness.Response) and a.status == 503:
            budget_error(suite, "a 16-megapixel image over the budget", a)
            break
    if not over:
        rss_kb = settle_rss(d, 48 * 1024)
        suite.check_rss_falls_back("afterwards RSS falls back (%d MiB)" % (rss_kb // 1024), rss_kb <= 48 * 1024)


# ------------------------------------------------------------ training


def _write_idx(path, count, rows=None, cols=None):
    """An IDX file of count zero images (or labels when rows is None),
    sparse on disk."""
    with open(path, "wb") as f:
        if rows is None:
            f.write(struct.pack(">II", 0x801, count))
            f.truncate(8 + count)
        else:
            f.write(struct.pack(">IIII", 0x803, count, rows, cols))
            f.truncate(16 + count * rows * cols)


def test_training_batch_over_budget_is_refused(suite):
    data = os.path.join(suite.tmp, "train-data")
    os.makedirs(os.path.join(data, "big"), exist_ok=True)
    _write_idx(os.path.join(data, "big", "train-images-idx3-ubyte"), 60000, 28, 28)
    _write_idx(os.path.join(data, "big", "train-labels-idx1-ubyte"), 60000)
    _write_idx(os.path.join(data, "big", "t10k-images-idx3-ubyte"), 10000, 28, 28)
    _write_idx(os.path.join(data, "big", "t10k-labels-idx1-ubyte"), 10000)
    budget = 256 * MIB
    d = suite.start("train", env={"DAE_DATA_DIR": data, "DAE_TRAIN_MEMORY_BUDGET": str(budget),
                                  "DAE_TRAIN_THREADS": "1", "DAE_ACCESS_LOG": "off"})
    r = harness.request(d.port, "POST", "/train", b'{"dataset":"big","batch_size":65536,"epochs":1}',
                        {"Content-Type": "application/json"})
    if r.status == 202:  # an old server: it would now allocate gigabytes
        d.stop(timeout=5)
    ok = r.status == 422 and r.is_json_error(422) and r.json()["error"]["code"] == "train_memory_budget"
    suite.check("POST /train with batch_size 65536 on 60000 images: 422 train_memory_budget", ok, repr(r))
    if ok:
        msg = r.json()["error"]["message"]
        suite.check("the message names the estimate and the budget",
                    str(budget) in msg and "MiB" in msg and "estimated" in msg, msg)
        peak_kb = d.peak_rss_kb()
        suite.check("nothing was allocated for it (peak RSS %d MiB)" % (peak_kb // 1024), peak_kb < 64 * 1024)
        r = harness.request(d.port, "POST", "/train",
                            b'{"dataset":"big","batch_size":64,"epochs":1,"train_limit":256,"eval_limit":0,'
                            b'"model_name":"small-batch"}', {"Content-Type": "application/json"})
        suite.check("a job with a batch that fits is accepted (202)", r.status == 202, repr(r))
        if r.status == 202:
            harness.request(d.port, "DELETE", r.headers.get("location", "/train/1"))


# ------------------------------------------------------------ fairness


def _small_clients(port, seconds, keep_going, n=2):
    """n clients sending 28x28 PNGs back to back on keep-alive connections
    for up to seconds (and while keep_going()); returns the sorted
    latencies in ms of those answered 200, and the count of others."""
    import http.client
    small = png(28, 28, 1)
    lat, bad = [], []
    end = time.time() + seconds

    def client():
        c = http.client.HTTPConnection(harness.HOST, port, timeout=30)
        try:
            while time.time() < end and keep_going():
                t = time.perf_counter()
                c.request("POST", "/denoise", small, {"Content-Type": "image/png"})
                r = c.getresponse()
                r.read()
                (lat if r.status == 200 else bad).append((time.perf_counter() - t) * 1000)
        finally:
            c.close()
    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(lat), len(bad)


def _p99(lat):
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")


def _in_background(port, path, body):
    """Posts body to path from another process (so reading its large answer
    does not compete with this interpreter's timing threads); returns the
    Popen."""
    import subprocess
    import sys
    code = ("import sys,http.client; c=http.client.HTTPConnection('127.0.0.1',%d,timeout=90); "
            "c.request('POST',%r,sys.stdin.buffer.read()); r=c.getresponse(); r.read(); print(r.status)"
            % (port, path))
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p.stdin.write(body)
    p.stdin.close()
    return p


def _p99_while(suite, d, path, body, seconds, finish):
    """The small clients' latencies while a big request on path runs (for
    up to seconds; they stop when it ends, so every latency is one measured
    during it); with finish, waits for its answer (200) afterwards."""
    p = _in_background(d.port, path, body)
    time.sleep(0.3)
    t0 = time.time()
    lat, bad = _small_clients(d.port, seconds, lambda: p.poll() is None)
    during = time.time() - t0
    try:
        p.wait(timeout=60 if finish else 0.01)
    except Exception:
        p.kill()
        p.wait()
    out = p.stdout.read()
    p.stdout.close()
    if finish:
        suite.check("the big %s request was answered 200" % path, out.strip() == b"200", repr(out))
    # A 16-megapixel /noise job takes 2.7 s on a fast core: measuring
    # stops with it, and half the window is plenty of small requests.
    suite.check("the big %s request was in progress for at least half of the %.1f s measured" % (path, seconds),
                during >= seconds / 2, "%.2f s" % during)
    suite.check("small requests all answered 200 during a big %s" % path, bad == 0 and len(lat) > 100,
                "%d bad, %d ok" % (bad, len(lat)))
    return lat


def test_big_image_does_not_starve_small_ones(suite):
    # Two workers, as on two cores. While a 16-megapixel image is being
    # denoised one core works on it, and the other serves the small
    # requests - sharing it with this client and the event loop. That
    # sharing costs the small requests the same with any big request, so
    # the yardstick is a 16-megapixel /noise request (one worker busy for
    # seconds, no tiles): the denoise may cost the small requests' p99 only
    # a few ms more. Waiting for a batch full of the big image's tiles, or
    # for its blending and encoding, would cost tens to hundreds of ms.
    d = suite.start("fair", env={"DAE_ACCESS_LOG": "off", "DAE_WORKERS": "2"})
    _small_clients(d.port, 0.5, lambda: True)  # warm up
    base, _ = _small_clients(d.port, 1.0, lambda: True)
    noise = _p99_while(suite, d, "/noise?sigma=0.1", png(4096, 4096, 4), 3.0, True)
    during = _p99_while(suite, d, "/denoise", png(4096, 4096, 1), 2.5, False)
    b99, n99, d99 = _p99(base), _p99(noise), _p99(during)
    allowance = 4.0
    suite.check("28x28 p99 during a 16-megapixel denoise %.1f ms <= during a 16-megapixel noise job %.1f ms "
                "+ %.0f ms (idle: %.1f ms)" % (d99, n99, allowance, b99), d99 <= n99 + allowance,
                "p50 idle %.2f, noise %.2f, denoise %.2f ms" % (base[len(base) // 2], noise[len(noise) // 2],
                                                                  during[len(during) // 2]))
