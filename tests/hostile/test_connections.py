"""test_connections.py - connection floods and HTTP protocol abuse (issue 9,
findings 3, 4, 5 and 9): aborted uploads, slowloris, stalled event-stream
readers, conflicting message framing, oversized heads, bad versions, and
JSON bodies that must stay valid UTF-8 whatever bytes a request carries.
"""

import gzip
import json
import os
import resource
import socket
import threading
import time

import harness
from harness import HOST, request, read_response, wait_until, fixture


def _raise_fd_limit(need):
    """Lets this process open `need` sockets (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _healthz_status(port, timeout=2):
    try:
        return request(port, "GET", "/healthz", timeout=timeout).status
    except OSError:
        return None


def _healthz_waits_during(port, work):
    """Runs work() on a thread while asking /healthz every 10 ms; returns
    the seconds each /healthz took (inf for one not answered 200)."""
    done = threading.Event()

    def run():
        try:
            work()
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    waits = []
    while not done.is_set():
        t0 = time.time()
        ok = _healthz_status(port, timeout=10) == 200
        waits.append(time.time() - t0 if ok else float("inf"))
        time.sleep(0.01)
    t.join()
    return waits


def _ok_within(port, seconds, path="/healthz"):
    """Seconds until GET path answers 200 (None if it never did in time)."""
    t0 = time.time()

    def ok():
        try:
            return request(port, "GET", path, timeout=1).status == 200
        except OSError:
            return False
    return time.time() - t0 if wait_until(ok, seconds, 0.05) else None


def _connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((HOST, port))
    return s


def _closed_after_answer(sock, timeout=3):
    """True when the server closes sock after its answer (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# ------------------------------------------------------------ finding 3

def _flood_aborts(port, payloads, count):
    """Opens `count` connections and aborts each: the payload parts go out
    (with a pause between parts, so later ones reach the server after it
    took the head), and the socket is closed right after its last part,
    so the FIN travels with the last bytes. Returns the count opened."""
    socks = []
    for i in range(count):
        try:
            s = _connect(port)
        except OSError:
            break
        s.sendall(payloads[0])
        if len(payloads) == 1:
            s.close()
        else:
            socks.append(s)
    opened = i + 1 if len(payloads) == 1 else len(socks)
    if socks:
        time.sleep(0.3)
        for s in socks:
            try:
                for part in payloads[1:]:
                    s.sendall(part)
            except OSError:
                pass
            s.close()
    return opened


def test_aborted_uploads(suite):
    _raise_fd_limit(4096)
    d = suite.start("aborts", "--access-log", "off")
    head = b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n"
    cases = [
        ("headers + 100 body bytes, then close", [head + b"x" * 100]),
        ("headers, then 100 body bytes and close once the server holds the request", [head, b"x" * 100]),
        ("half a request line, then close", [b"POST /deno"]),
        ("half the headers, then close", [b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Le"]),
    ]
    for what, parts in cases:
        n = _flood_aborts(d.port, parts, 800)
        took = _ok_within(d.port, 3)
        suite.check("800 aborted uploads (%s): /healthz is 200 within 3 s" % what,
                    n == 800 and took is not None, "opened %d, took %s" % (n, took))
        took = _ok_within(d.port, 3, "/models")
        suite.check("... and so is an ordinary request (the slots were freed)", took is not None, "took %s" % took)
    gone = wait_until(lambda: (harness.metric(d.port, "dae_http_connections") or 99) <= 2, 3)
    suite.check("the aborted connections are all closed (dae_http_connections back to ~1)", gone,
                "gauge %s" % harness.metric(d.port, "dae_http_connections"))
    suite.check("the daemon is still up", d.alive())


# ------------------------------------------------------------ finding 4

def test_slowloris(suite):
    _raise_fd_limit(4096)
    d = suite.start("slowloris", "--header-timeout", "4", "--access-log", "off")
    png = fixture(suite, "images", "gray8.png")
    socks = []
    for i in range(600):
        try:
            s = _connect(d.port)
            s.sendall(b"POST /denoise HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            socks.append(s)
        except OSError:
            break
    suite.check("600 slowloris connections opened", len(socks) == 600, "opened %d" % len(socks))
    served, tried, slow = 0, 0, []
    t_end = time.time() + 7
    last_drip = 0
    while time.time() < t_end:
        if time.time() - last_drip > 2:  # one more header byte on each, every 2 s
            last_drip = time.time()
            for s in socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass
        t0 = time.time()
        try:
            h = request(d.port, "GET", "/healthz", timeout=3)
            r = request(d.port, "POST", "/denoise", png, {"Content-Type": "image/png"}, timeout=3)
            ok = h.status == 200 and r.status == 200 and r.body[:8] == b"\x89PNG\r\n\x1a\n"
        except OSError:
            ok = False
        tried += 1
        served += ok
        slow.append(time.time() - t0)
        time.sleep(0.2)
    suite.check("while 600 slowloris connections drip their heads, new clients are served "
                "(/healthz 200 and POST /denoise 200)", tried > 0 and served == tried,
                "%d of %d rounds served" % (served, tried))
    suite.check("... promptly (slowest round under 1 s)", slow and max(slow) < 1.0, "slowest %.2f s" % max(slow or [0]))
    # Past --header-timeout the slow heads are answered 408 (or were shed
    # earlier to make room) and closed.
    closed = 0
    for s in socks:
        r = read_response(s, timeout=0.5)
        if r is not None and r.status in (408, 503) and r.is_json_error():
            closed += 1
        s.close()
    suite.check("the slow heads were answered 408/503 JSON and closed", closed >= 550, "%d of 600" % closed)


def _write_idx_dataset(directory, train, test):
    """A valid data set of train and test blank 28x28 images, as raw IDX."""
    os.makedirs(directory)
    for prefix, n in (("train", train), ("t10k", test)):
        with open(os.path.join(directory, prefix + "-images-idx3-ubyte"), "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(n * 784))
        with open(os.path.join(directory, prefix + "-labels-idx1-ubyte"), "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n))


def test_many_datasets_do_not_stall_others(suite):
    """GET /datasets, which anyone may ask for, gives each data set's
    SHA-256, which reads all of its files. It ran on the event loop, and
    the digests were remembered for 32 data sets, forgotten in turn: with
    34 copies of MNIST every listing took 3.2 s, /healthz as long. Now
    the listing runs on the helper thread, and every data set's digest is
    remembered until its files change."""
    data = os.path.join(suite.tmp, "many-datasets")
    count = 40
    for i in range(count):
        _write_idx_dataset(os.path.join(data, "set%02d" % i), 3000, 100)  # 2.4 MB of files each
    d = suite.start("many-datasets", "--access-log", "off", "--data-dir", data)
    times, listed = [], []

    def list_datasets():
        for _ in range(4):
            t0 = time.time()
            r = request(d.port, "GET", "/datasets", timeout=60)
            times.append(time.time() - t0)
            listed.append(r.status == 200 and sum(1 for x in r.json()["datasets"] if len(x["sha256"]) == 64))

    waits = _healthz_waits_during(d.port, list_datasets)
    suite.check("GET /datasets lists all %d data sets with their SHA-256, 4 times" % count,
                listed == [count] * 4, listed)
    suite.check("meanwhile every /healthz was answered within 250 ms (%d asked)" % len(waits),
                waits and max(waits) < 0.25, "slowest %.3f s" % max(waits or [0]))
    suite.check("the digests are remembered: the listings after the first take under a quarter of its time",
                len(times) == 4 and max(times[1:]) < times[0] / 4, ["%.3f s" % x for x in times])
    # A data set whose files change is hashed again.
    path = os.path.join(data, "set00", "t10k-labels-idx1-ubyte")
    before = request(d.port, "GET", "/datasets/set00").json()["sha256"]
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\x07")
    after = request(d.port, "GET", "/datasets/set00").json()["sha256"]
    suite.check("a data set whose file changed gets its new digest", before != after, (before, after))


def test_big_json_does_not_stall_others(suite):
    """A v2 inference request of 3,000 images as a 9.4 MB JSON tensor: its
    parse, its 14.6 MB answer's printing and that answer's gzip ran on the
    one event-loop thread, about a second, during which no other client
    got an answer, not even /healthz."""
    d = suite.start("big-json", "--access-log", "off")
    n = 3000
    big = harness.v2_json_body(n)
    results = []

    def send_big():
        for headers in ({}, {"Accept-Encoding": "gzip"}):
            headers["Content-Type"] = "application/json"
            results.append(request(d.port, "POST", "/v2/models/mnist/infer", big, headers, timeout=60))

    waits = _healthz_waits_during(d.port, send_big)
    # Checked after the polling: json.loads of the answers would hold the GIL.
    whole = []
    for r in results:
        body = gzip.decompress(r.body) if r.headers.get("content-encoding") == "gzip" else r.body
        whole.append(r.status == 200 and len(json.loads(body)["outputs"][0]["data"]) == n * 784)
    suite.check("a 9.4 MB JSON request of %d images answered 200 with every output, plain and gzip'd" % n,
                whole == [True, True] and results[1].headers.get("content-encoding") == "gzip", whole)
    suite.check("meanwhile every /healthz was answered within 250 ms (%d asked)" % len(waits),
                waits and max(waits) < 0.25, "slowest %.3f s" % max(waits or [0]))
    # SIGTERM while such a request is on the helper thread: it is answered
    # (200, or 503 if it had not reached the workers) and the daemon exits.
    last = []
    t = threading.Thread(target=lambda: last.append(
        request(d.port, "POST", "/v2/models/mnist/infer", big, {"Content-Type": "application/json"}, timeout=30)))
    t.start()
    time.sleep(0.3)
    code = d.stop(timeout=15)
    t.join()
    suite.check("SIGTERM during its parse: the daemon exits 0", code == 0, code)
    suite.check("... and the request is answered 200, or 503 with the protocol's {\"error\": ...}",
                last and (last[0].status == 200
                          or (last[0].status == 503 and isinstance(last[0].json().get("error"), str))), last)


# ------------------------------------------------------------ finding 5

def test_stalled_event_streams(suite):
    _raise_fd_limit(4096)
    # One client (127.0.0.1) asks for them all: it may hold every stream
    # (test_fairness tests the shares).
    d = suite.start("streams", "--max-connections", "64", "--timeout", "2", "--train-threads", "1",
                    "--data-dir", os.path.join(suite.root, "tests", "fixtures"), "--access-log", "off",
                    "--client-share", "100")
    r = request(d.port, "POST", "/train",
                json.dumps({"dataset": "mnist-mini", "epochs": 200, "model_name": "slowjob"}).encode(),
                {"Content-Type": "application/json"})
    suite.check("a training job to watch is accepted", r.status == 202, repr(r))
    if r.status != 202:
        return
    job = r.json()["id"]
    socks, answers = [], []
    for i in range(80):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # fills quickly: a reader that never reads
        s.settimeout(5)
        s.connect((HOST, d.port))
        s.sendall(("GET /train/%s/events HTTP/1.1\r\nHost: t\r\n\r\n" % job).encode())
        socks.append(s)
    time.sleep(0.5)
    streaming = 0
    for s in socks:
        s.settimeout(0.2)
        try:
            head = s.recv(200, socket.MSG_PEEK)
        except (socket.timeout, OSError):
            head = b""
        if head.startswith(b"HTTP/1.1 200"):
            streaming += 1
    suite.check("80 event streams asked for: only --max-streams (32) are served, the rest refused",
                streaming == 32, "%d streaming" % streaming)
    codes = [_healthz_status(d.port) for _ in range(5)]
    suite.check("with 80 stalled event-stream readers, /healthz is still 200", codes == [200] * 5, repr(codes))
    m = request(d.port, "GET", "/models", timeout=3)
    suite.check("... and so is an ordinary request", m.status == 200, repr(m))
    # The readers never read: once their windows fill, the server stops
    # waiting for them after --timeout (2 s) and closes the streams.
    drop = wait_until(lambda: (harness.metric(d.port, "dae_http_connections") or 99) <= 40, 15, 0.5)
    suite.check("stalled readers are cut after the write timeout (connections drop from 80)", drop,
                "gauge %s" % harness.metric(d.port, "dae_http_connections"))
    for s in socks:
        s.close()
    request(d.port, "DELETE", "/train/%s" % job)


# ------------------------------------------------------------ finding 9

def _raw_exchange(port, data, timeout=5):
    """Sends data on a new connection; returns (response, closed_after)."""
    s = _connect(port)
    try:
        s.sendall(data)
        r = read_response(s, timeout)
        return r, _closed_after_answer(s)
    finally:
        s.close()


def test_protocol(suite):
    d = suite.start("protocol", "--access-log", "off")
    smuggle = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    cases = [
        ("two different Content-Length headers",
         b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: %d\r\n\r\nabcd" % (4 + len(smuggle))
         + smuggle, 400),
        ("two equal Content-Length headers",
         b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", 400),
        ("Content-Length with Transfer-Encoding: chunked",
         b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"4\r\nabcd\r\n0\r\n\r\n", 400),
        ("a URL of 20000 bytes", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        ("headers of 40000 bytes", b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"p" * 100 + b"\r\n" * 1
         + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(400)) + b"\r\n", 431),
        ("HTTP/2.0 in the request line", b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/0.9 in the request line", b"GET /healthz HTTP/0.9\r\nHost: t\r\n\r\n", 505),
        ("a garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        ("an HTTP/1.1 request without Host", b"GET /healthz HTTP/1.1\r\n\r\n", 400),
        ("a header line without a colon", b"GET /healthz HTTP/1.1\r\nHost: t\r\nbroken header\r\n\r\n", 400),
    ]
    for what, data, status in cases:
        r, closed = _raw_exchange(d.port, data)
        suite.check("%s: answered %d with the JSON error" % (what, status),
                    r is not None and r.status == status and r.is_json_error(status), repr(r))
        suite.check("%s: the connection is closed after the answer" % what, closed)
    # On a kept-alive connection the second head is parsed by
    # libmicrohttpd itself; the handler applies the gate's checks to what
    # it parsed, so a request is refused the same way first or later.
    later = [
        ("two Content-Length headers",
         b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
         400, "duplicate_content_length"),
        ("Content-Length with Transfer-Encoding: chunked",
         b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"4\r\nabcd\r\n0\r\n\r\n", 400, "content_length_with_chunked"),
        ("Transfer-Encoding: gzip", b"POST /denoise HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
         501, "unsupported_transfer_encoding"),
        ("Transfer-Encoding in HTTP/1.0",
         b"POST /denoise HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "malformed_request"),
        ("an HTTP/1.1 request without Host", b"GET /healthz HTTP/1.1\r\n\r\n", 400, "missing_host"),
        ("two Host headers", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate_host"),
        ("%00 in the path (it read as /models/mnist)", b"DELETE /models/mnist%00x HTTP/1.1\r\nHost: t\r\n\r\n",
         400, "malformed_request"),
        ("a head of 9 KB", b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
         + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(90)) + b"\r\n", 431, "header_too_large"),
    ]
    for what, data, status, code in later:
        first_time, _ = _raw_exchange(d.port, data)
        s = _connect(d.port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        first = read_response(s)
        s.sendall(data)
        second = read_response(s)
        closed = _closed_after_answer(s)
        s.close()
        same = (first_time is not None and second is not None and first_time.is_json_error(status)
                and second.is_json_error(status)
                and first_time.json()["error"]["code"] == second.json()["error"]["code"] == code)
        suite.check("kept-alive: a second request with %s is %d %s, as a first one, and closes" % (what, status, code),
                    first is not None and first.status == 200 and same and closed,
                    "first request %r, kept-alive %r closed=%s" % (first_time, second, closed))
    # The absolute form of a request target, which a server must accept
    # (RFC 9112 3.2.2), first and on a kept-alive connection.
    s = _connect(d.port)
    s.sendall(b"GET http://t/healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    first = read_response(s)
    s.sendall(b"GET HTTP://t:8080/models?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    second = read_response(s)
    s.close()
    suite.check("GET http://t/healthz, then HTTP://t:8080/models on the same connection: both 200",
                first is not None and first.status == 200 and second is not None and second.status == 200
                and b'"models"' in second.body, "%r %r" % (first, second))
    suite.check("the daemon still serves", _healthz_status(d.port) == 200)


def _server_fds(d):
    return len(os.listdir("/proc/%d/fd" % d.proc.pid))


def test_refused_uploads_are_answered_not_reset(suite):
    """A request refused before its body is read (an announced body over the
    limit, an unknown route) is answered at once, and libmicrohttpd closes
    the connection without reading the body. A client that writes its whole
    body before it reads (Python's http.client here, Node's fetch) used to
    get a broken pipe or a reset instead of the answer: the gate now reads
    and drops the rest while the client still sends, within bounds."""
    d = suite.start("refused-uploads", "--access-log", "off", "--max-body", "1MiB")
    body = os.urandom(3 << 20)
    cases = [
        ("POST /denoise of 3 MiB (limit 1 MiB)", "/denoise", 413, '"code":"body_too_large"'),
        ("POST /v2/models/mnist/infer of 3 MiB", "/v2/models/mnist/infer", 413, "over the limit"),
        ("POST of 3 MiB to an unknown route", "/no-such-route", 404, '"code":"not_found"'),
    ]
    for what, path, status, code in cases:
        got = []
        for _ in range(5):
            try:
                r = request(d.port, "POST", path, body=body, headers={"Content-Type": "image/png"}, timeout=10)
                got.append((r.status, code in r.body.decode("utf-8", "replace")))
            except OSError as e:
                got.append(type(e).__name__)
        suite.check("%s, 5 times with http.client: each answered %d with its error" % (what, status),
                    got == [(status, True)] * 5, repr(got))
    base = _server_fds(d)
    socks = []
    for _ in range(20):
        s = _connect(d.port)
        s.sendall(b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:65536])
        socks.append(s)
    answered = [read_response(s, 5) for s in socks]
    suite.check("20 refused uploads that stop sending: each answered 413",
                all(r is not None and r.status == 413 for r in answered), repr(answered[:2]))
    closing = wait_until(lambda: harness.metric(d.port, "dae_http_closing_connections") == 20, 2)
    suite.check("... /metrics counts them in dae_http_closing_connections",
                closing, repr(harness.metric(d.port, "dae_http_closing_connections")))
    released = wait_until(lambda: _server_fds(d) <= base, 6)
    suite.check("... and the server lets go of them a moment after they stop sending (not at the body timeout)",
                released and harness.metric(d.port, "dae_http_closing_connections") == 0,
                "%d descriptors, %d before; %r closing" % (_server_fds(d), base,
                                                          harness.metric(d.port, "dae_http_closing_connections")))
    for s in socks:
        s.close()
    # A client that keeps sending past what the gate drops is cut.
    s = _connect(d.port)
    s.sendall(b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (200 << 20))
    chunk, sent, t0 = bytes(1 << 20), 0, time.time()
    try:
        while sent < (200 << 20) and time.time() - t0 < 20:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    s.close()
    suite.check("a refused upload that goes on sending is cut after the most the server drops (64 MiB)",
                sent < (100 << 20), "sent %d MiB" % (sent >> 20))
    suite.check("the daemon still serves", _healthz_status(d.port) == 200)


def test_json_is_utf8(suite):
    d = suite.start("utf8", "--access-log", "off")

    def valid_json_error(r, status):
        try:
            r.body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return r.is_json_error(status)
    r = request(d.port, "GET", "/models/%ff%fe")
    suite.check("GET /models/%ff%fe: 404 whose body is valid UTF-8 JSON", valid_json_error(r, 404), repr(r))
    r = request(d.port, "POST", "/denoise?model=%c3%28%80", fixture(suite, "images", "gray8.png"))
    suite.check("POST /denoise?model=<bad UTF-8>: 404 whose body is valid UTF-8 JSON", valid_json_error(r, 404),
                repr(r))
    png = fixture(suite, "images", "gray8.png")
    bad = png[:37] + b"\xff\xfeZ\xfc" + png[41:]  # the chunk after IHDR gets a name of raw bytes
    r = request(d.port, "POST", "/denoise", bad, {"Content-Type": "image/png"})
    suite.check("a PNG with a corrupted chunk name: 400 whose body is valid UTF-8 JSON", valid_json_error(r, 400),
                repr(r))
