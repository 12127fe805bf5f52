"""harness.py - the one harness of the hostile-client suite (make test-hostile).

Every test module tests/hostile/test_*.py defines functions named test_*
that take a Suite. A test starts its own daemon(s) with suite.start(), speaks
raw HTTP over loopback with the helpers below, and records each check with
suite.check(). Daemons are killed when the test ends, even when it raises.

Python 3 standard library only; no test here needs PyTorch or the network
beyond 127.0.0.1.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"


class Daemon:
    """A dae-server started on a free loopback port; logs in its folder."""

    def __init__(self, suite, name, args, env, models_dir=None, model=None, home=None):
        """Serves model (a path or a name; the committed mnist by default; "":
        no --model, so the default is what the daemon picks, the models
        directory's ACTIVE file or its mnist) from models_dir (home/models
        by default), with its job records in home/state; home is its own
        folder (for its logs) unless given."""
        self.name = name
        self.dir = os.path.join(suite.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.out_path = os.path.join(self.dir, "out.log")
        self.err_path = os.path.join(self.dir, "err.log")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DAE_")}
        full_env.update(env or {})
        home = home or self.dir
        if models_dir is None:
            models_dir = os.path.join(home, "models")
            os.makedirs(models_dir, exist_ok=True)
        if model is None:
            model = os.path.join(suite.root, "models", "mnist.safetensors")
        cmd = [suite.server, "--bind", HOST, "--port", "0"] + (["--model", model] if model else []) + [
               "--models-dir", models_dir,
               "--state-dir", os.path.join(home, "state")] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=open(self.out_path, "wb"),
                                     stderr=open(self.err_path, "wb"), env=full_env)
        self.port = None
        deadline = time.time() + 20
        while time.time() < deadline:
            m = re.search(rb"listening on http://[0-9.]+:(\d+)", open(self.err_path, "rb").read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("%s did not start: %s" % (name, self.stderr()[-2000:]))

    def stderr(self):
        return open(self.err_path, "rb").read().decode("utf-8", "replace")

    def stdout(self):
        return open(self.out_path, "rb").read().decode("utf-8", "replace")

    def _status_kb(self, field):
        """A "field: N kB" line of /proc/PID/status, in KiB (0 when absent)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def rss_kb(self):
        """Resident set size now, in KiB."""
        return self._status_kb("VmRSS")

    def peak_rss_kb(self):
        """The high-water mark of the resident set, in KiB."""
        return self._status_kb("VmHWM")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends sig and waits; returns the exit code (None if it hung and was killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def is_json_error(self, status=None):
        """True when the body is the service's JSON error (of status)."""
        try:
            e = self.json()["error"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return False
        return (isinstance(e, dict) and isinstance(e.get("code"), str) and isinstance(e.get("message"), str)
                and e.get("status") == self.status and (status is None or self.status == status))

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


def request(port, method, path, body=None, headers=None, timeout=30, source=None):
    """One HTTP/1.1 request on a new connection (from the loopback address
    source, or the default); returns a Response."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0) if source else None)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()


def raw(port, data, timeout=10, read=True):
    """Sends the bytes data on a new connection and returns what comes back
    until the server closes (or timeout): (status or None, headers, body)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return None
        return read_response(s, timeout)
    finally:
        s.close()


def read_response(sock, timeout=10, first=b""):
    """Reads one response from sock (until close or a complete body), after
    the bytes first already read from it; returns a Response, or None when
    the server closed without answering."""
    sock.settimeout(timeout)
    buf = first
    deadline = time.time() + timeout
    while b"\r\n\r\n" not in buf:
        if time.time() > deadline:
            return None
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return None
        if not chunk:
            break
        buf += chunk
    if b"\r\n\r\n" not in buf:
        return None
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    want = int(headers.get("content-length", "-1"))
    while (want < 0 or len(body) < want) and time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        body += chunk
    if want >= 0:
        body = body[:want]
    return Response(status, headers, body)


def metric(port, name):
    """The value of the unlabelled sample name in the daemon's /metrics, or None."""
    for line in request(port, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def v2_json_body(images, seed=0):
    """A v2 inference request of `images` 28x28 images as a JSON tensor,
    its numbers varied (0.0 to 0.7, so gzip has work to do) by seed."""
    pixels = ",".join("0.%d" % ((i * 2654435761 + seed) >> 16 & 7) for i in range(images * 784))
    return ('{"inputs":[{"name":"input","shape":[%d,1,28,28],"datatype":"FP32","data":[%s]}]}'
            % (images, pixels)).encode()


def wait_until(fn, timeout, interval=0.05):
    """Calls fn until it returns a true value or timeout seconds pass;
    returns the last value."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


def temporaries(root, but_pid=None):
    """The temporaries (".tmp." in the name) of files and directories under
    root, but those of process but_pid (a daemon that is writing them)."""
    return [os.path.join(dp, f) for dp, dn, fn in os.walk(root) for f in fn + dn
            if ".tmp." in f and (but_pid is None or ".tmp.%d." % but_pid not in f)]


def fixture(suite, *parts):
    return open(os.path.join(suite.root, "tests", "fixtures", *parts), "rb").read()


class Suite:
    def __init__(self, server, root):
        self.server = server
        self.root = root
        self.tmp = tempfile.mkdtemp(prefix="dae-hostile.")
        # An AddressSanitizer build (make SANITIZE=1) keeps freed memory in
        # its quarantine, so its RSS never falls back (check_rss_falls_back).
        with open(server, "rb") as f:
            self.sanitized = b"__asan_init" in f.read()
        self.passed = 0
        self.failed = 0
        self.daemons = []
        self.current = ""

    def start(self, name, *args, env=None, model=None, home=None, models_dir=None):
        d = Daemon(self, "%s-%s" % (self.current, name), args, env, models_dir=models_dir, model=model, home=home)
        self.daemons.append(d)
        return d

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s: %s %s" % (self.current, name, detail), file=sys.stderr, flush=True)
        return cond

    def check_rss_falls_back(self, name, cond):
        """check(), except under AddressSanitizer, where it says it skipped."""
        if self.sanitized:
            print("  skipped under AddressSanitizer (its quarantine holds freed memory): %s: %s"
                  % (self.current, name), flush=True)
            return True
        return self.check(name, cond)

    def end_test(self):
        for d in self.daemons:
            if d.alive():
                d.proc.kill()
                d.proc.wait()
            # A sanitizer report in a daemon's log fails the test.
            err = d.stderr()
            if re.search(r"ERROR: (Address|Leak|Memory)Sanitizer|runtime error:", err):
                self.check("no sanitizer report in %s's log" % d.name, False)
                sys.stderr.write(err[-4000:])
        self.daemons = []
