#!/usr/bin/env python3
"""test_oip.py - the Open Inference Protocol (v2 REST API of KServe, Triton
and MLServer) of dae-server, against the real daemon on a free loopback port.

usage: tests/server/test_oip.py path/to/dae-server path/to/dae

Written from the protocol's text (kserve/open-inference-protocol,
inference_rest.md), Triton's binary tensor data and model repository
extensions, and the contract of dae's /v2 routes:

  - every route: GET /v2, /v2/health/live, /v2/health/ready, model
    metadata and model readiness (plain and /versions/{version}), HEAD on
    each of them;
  - inference: FP32 "input" as flat and nested JSON, "id" echoed, "outputs"
    selection, the binary extension in each direction (the request header
    Inference-Header-Content-Length, "binary_data_output", an output's
    "binary_data"), BYTES "images" as base64 JSON and as binary;
  - errors: 400 for each kind of wrong request, 404 unknown model, version
    or path, 405, 413, all with the protocol's body {"error": "..."};
  - the model repository extension: index, unload (the file stays, a
    rescan does not bring it back), load, the default model refused, the
    admin token;
  - readiness turning false while the server drains after SIGTERM;
  - equivalence: FP32 inference of 64 MNIST test digits equals `dae
    forward` of the same tensor (1e-6), BYTES inference of PNGs of several
    sizes and kinds equals as many POST /denoise answers byte for byte;
  - the v2 routes' own labels in dae_http_requests_total.

Python 3 standard library only; the HTTP helpers are tests/hostile's
harness. Every daemon it starts is killed by PID at the end, even when a
check raises. Prints FAIL lines (with the request and the answer) on
stderr, "ok NAME" for passes when SHOW_PASSES is set, and ends with
"oip: N passed, M failed"; exits 1 if any check failed.
"""

import base64
import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "hostile"))
import harness  # noqa: E402
from harness import HOST, read_response, request, wait_until  # noqa: E402

H = W = 28  # the input size of the MNIST model
TOKEN = "s3cret token"

passed = 0
failed = 0
daemons = []
last = ""  # the last request and its answer, shown when a check fails


def check(name, cond, detail=None):
    """Counts one check; a failure is printed with the last exchange (or detail)."""
    global passed, failed
    if cond:
        passed += 1
        if os.environ.get("SHOW_PASSES"):
            print("ok   %s" % name)
    else:
        failed += 1
        print("FAIL: %s" % name, file=sys.stderr)
        print("    %s" % (detail if detail is not None else last), file=sys.stderr, flush=True)
    return bool(cond)


# ------------------------------------------------------------ daemons


class Daemon(harness.Daemon):
    """harness's dae-server (free loopback port, no DAE_* variables, its logs
    in its folder) on the test's models directory, mnist the default."""

    def __init__(self, tmp, name, models_dir, args):
        super().__init__(types.SimpleNamespace(tmp=tmp, server=SERVER, root=ROOT), name, args, None,
                         models_dir=models_dir, model="mnist")
        daemons.append(self)


def kill_all():
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def sanitizer_check(d):
    err = d.stderr()
    if re.search(r"ERROR: (Address|Leak|Memory)Sanitizer|runtime error:", err):
        check("no sanitizer report in daemon %s's log" % d.name, False, err[-4000:])


# ------------------------------------------------------------ HTTP


def call(d, method, path, body=None, headers=None, timeout=60):
    """One request to daemon d on a new connection; remembers it for a failure's report."""
    global last
    r = request(d.port, method, path, body=body, headers=headers, timeout=timeout)
    shown = body if isinstance(body, (bytes, type(None))) else body.encode()
    last = "%s %s %s -> %d %s %r" % (method, path, repr(shown[:160]) if shown else "(no body)", r.status,
                                     r.headers.get("content-type", ""), r.body[:300])
    return r


def post_json(d, path, doc, headers=None):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return call(d, "POST", path, json.dumps(doc).encode(), hdrs)


def post_binary(d, path, doc, binary, headers=None):
    """POST of the binary extension: the JSON doc, then the binary bytes."""
    head = json.dumps(doc).encode()
    hdrs = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    hdrs.update(headers or {})
    return call(d, "POST", path, head + binary, hdrs)


def jdoc(r):
    try:
        return json.loads(r.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def v2_error(r, status):
    """The answer is status with the protocol's error body: exactly {"error": "<sentence>"}."""
    doc = jdoc(r)
    return (r.status == status and r.headers.get("content-type", "").startswith("application/json")
            and isinstance(doc, dict) and list(doc) == ["error"] and isinstance(doc["error"], str)
            and doc["error"] != "")


def split_binary(r):
    """A binary answer: (its JSON document, the bytes after it), or (None, b"")."""
    n = r.headers.get("inference-header-content-length")
    if n is None or not n.isdigit() or int(n) > len(r.body):
        return None, b""
    try:
        return json.loads(r.body[:int(n)].decode("utf-8")), r.body[int(n):]
    except (ValueError, UnicodeDecodeError):
        return None, b""


def output_of(doc, name):
    for o in (doc or {}).get("outputs", []) if isinstance(doc, dict) else []:
        if isinstance(o, dict) and o.get("name") == name:
            return o
    return None


def flatten(x):
    if isinstance(x, list):
        out = []
        for e in x:
            out.extend(flatten(e))
        return out
    return [x]


def bytes_elements(blob):
    """The elements of a BYTES tensor in binary form (4-byte little-endian length, bytes)."""
    out, pos = [], 0
    while pos + 4 <= len(blob):
        (n,) = struct.unpack_from("<I", blob, pos)
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out if pos == len(blob) else None


def bytes_blob(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def metric(d, prefix):
    """The value of the first series of GET /metrics that starts with prefix, or None."""
    text = call(d, "GET", "/metrics").body.decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


# ------------------------------------------------------------ data


def mnist_digits(n):
    """The first n test digits of tests/fixtures/mnist-mini as rows of 784 bytes."""
    raw = gzip.open(os.path.join(ROOT, "tests", "fixtures", "mnist-mini", "t10k-images-idx3-ubyte.gz")).read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    assert magic == 2051 and count >= n and (rows, cols) == (H, W)
    return [raw[16 + i * H * W:16 + (i + 1) * H * W] for i in range(n)]


def png(width, height, pixels, channels=1):
    """An 8-bit gray (channels 1) or RGB (3) PNG of the given samples, row by row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    stride = width * channels
    rows = b"".join(b"\0" + bytes(pixels[y * stride:(y + 1) * stride]) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def safetensors_write(path, name, shape, floats):
    head = json.dumps({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * len(floats)]}}).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + struct.pack("<%df" % len(floats), *floats))


def safetensors_read(path, name):
    blob = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", blob)
    t = json.loads(blob[8:8 + n])[name]
    start, end = t["data_offsets"]
    assert t["dtype"] == "F32"
    return t["shape"], list(struct.unpack_from("<%df" % ((end - start) // 4), blob, 8 + n + start))


# ------------------------------------------------------------ the checks


def test_routes(a, version):
    r = call(a, "GET", "/v2")
    doc = jdoc(r)
    want_version = subprocess.run([SERVER, "--version"], capture_output=True, text=True).stdout.split()[-1]
    check("GET /v2: 200 with the server's name, version and extensions",
          r.status == 200 and isinstance(doc, dict) and doc.get("name") == "dae"
          and doc.get("version") == want_version
          and sorted(doc.get("extensions", [])) == ["binary_tensor_data", "model_repository"])
    r = call(a, "GET", "/v2/health/live")
    check("GET /v2/health/live: 200 {\"live\": true}", r.status == 200 and jdoc(r) == {"live": True})
    r = call(a, "GET", "/v2/health/ready")
    check("GET /v2/health/ready: 200 {\"ready\": true} with the default model loaded",
          r.status == 200 and jdoc(r) == {"ready": True})

    for path in ("/v2/models/mnist", "/v2/models/mnist/versions/" + version):
        r = call(a, "GET", path)
        doc = jdoc(r)
        check("GET %s: 200 with the model's name, its one version and platform" % path,
              r.status == 200 and isinstance(doc, dict) and doc.get("name") == "mnist"
              and doc.get("versions") == [version] and isinstance(doc.get("platform"), str) and doc["platform"] != "")
        ins = {t.get("name"): t for t in doc.get("inputs", [])} if isinstance(doc, dict) else {}
        outs = {t.get("name"): t for t in doc.get("outputs", [])} if isinstance(doc, dict) else {}
        check("GET %s: inputs \"input\" FP32 [-1,1,28,28] and \"images\" BYTES [-1]" % path,
              sorted(ins) == ["images", "input"]
              and ins["input"].get("datatype") == "FP32" and ins["input"].get("shape") == [-1, 1, H, W]
              and ins["images"].get("datatype") == "BYTES" and ins["images"].get("shape") == [-1])
        check("GET %s: outputs \"output\" FP32 [-1,1,28,28] and \"denoised\" BYTES [-1]" % path,
              sorted(outs) == ["denoised", "output"]
              and outs["output"].get("datatype") == "FP32" and outs["output"].get("shape") == [-1, 1, H, W]
              and outs["denoised"].get("datatype") == "BYTES" and outs["denoised"].get("shape") == [-1])
    for path in ("/v2/models/mnist/ready", "/v2/models/mnist/versions/%s/ready" % version):
        r = call(a, "GET", path)
        check("GET %s: 200 {\"name\": \"mnist\", \"ready\": true}" % path,
              r.status == 200 and jdoc(r) == {"name": "mnist", "ready": True})

    # HEAD: the GET's status and headers, no body.
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/mnist",
                 "/v2/models/mnist/versions/" + version, "/v2/models/mnist/ready",
                 "/v2/models/mnist/versions/%s/ready" % version, "/v2/models/nope"):
        g = call(a, "GET", path)
        h = call(a, "HEAD", path)
        check("HEAD %s: GET's status (%d) and Content-Length, no body" % (path, g.status),
              h.status == g.status and h.body == b""
              and h.headers.get("content-length") == str(len(g.body)),
              "GET -> %d %d bytes; HEAD -> %d Content-Length %s body %r"
              % (g.status, len(g.body), h.status, h.headers.get("content-length"), h.body[:100]))


def tensor_request(rows, nested=False, **extra):
    """The JSON inference request of the FP32 input for the digit rows."""
    values = [p / 255.0 for row in rows for p in row]
    data = values
    if nested:
        data = [[[values[(i * H + y) * W:(i * H + y) * W + W] for y in range(H)]] for i in range(len(rows))]
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 1, H, W], "data": data}]}
    doc.update(extra)
    return doc, values


def test_infer_tensor(a, version, digits):
    global last
    rows = digits[:3]
    doc, values = tensor_request(rows, id="42")
    r = post_json(a, "/v2/models/mnist/infer", doc)
    ans = jdoc(r)
    out = output_of(ans, "output")
    check("infer FP32 flat JSON: 200 with model_name, model_version and the id echoed",
          r.status == 200 and isinstance(ans, dict) and ans.get("model_name") == "mnist"
          and ans.get("model_version") == version and ans.get("id") == "42")
    ok = (out is not None and out.get("datatype") == "FP32" and out.get("shape") == [3, 1, H, W]
          and len(flatten(out.get("data", []))) == 3 * H * W
          and all(isinstance(v, (int, float)) for v in flatten(out.get("data", []))))
    check("infer FP32 flat JSON: one output \"output\" FP32 [3,1,28,28] with 2352 numbers",
          ok and len(ans.get("outputs", [])) == 1)
    flat_out = flatten(out.get("data", [])) if ok else None

    r = post_json(a, "/v2/models/mnist/infer", tensor_request(rows, nested=True)[0])
    out = output_of(jdoc(r), "output")
    check("infer FP32 nested JSON ([N][1][28][28]): the same output as flat data",
          r.status == 200 and out is not None and flat_out is not None
          and max(abs(x - y) for x, y in zip(flatten(out.get("data", [])), flat_out)) <= 1e-6
          and len(flatten(out.get("data", []))) == len(flat_out))

    r = post_json(a, "/v2/models/mnist/versions/%s/infer" % version, tensor_request(rows[:1])[0])
    ans = jdoc(r)
    check("infer on /versions/{version}: 200, model_version that version",
          r.status == 200 and isinstance(ans, dict) and ans.get("model_version") == version
          and output_of(ans, "output") is not None)

    r = post_json(a, "/v2/models/mnist/infer", tensor_request(rows[:1], outputs=[{"name": "output"}])[0])
    ans = jdoc(r)
    check("infer with \"outputs\": [{\"name\": \"output\"}]: 200 with that one output",
          r.status == 200 and isinstance(ans, dict) and [o.get("name") for o in ans.get("outputs", [])] == ["output"])

    # The binary extension, each way.
    binary_in = struct.pack("<%df" % len(values), *values)
    bdoc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 1, H, W],
                        "parameters": {"binary_data_size": len(binary_in)}}]}
    r = post_binary(a, "/v2/models/mnist/infer", bdoc, binary_in)
    out = output_of(jdoc(r), "output")
    check("binary FP32 input, JSON output: 200 application/json, the same output as JSON input",
          r.status == 200 and r.headers.get("content-type", "").startswith("application/json")
          and out is not None and flat_out is not None and len(flatten(out.get("data", []))) == len(flat_out)
          and max(abs(x - y) for x, y in zip(flatten(out.get("data", [])), flat_out)) <= 1e-6)

    def binary_answer(r, what):
        head, blob = split_binary(r)
        out = output_of(head, "output")
        size = (out or {}).get("parameters", {}).get("binary_data_size")
        good = (r.status == 200 and r.headers.get("content-type") == "application/octet-stream"
                and out is not None and "data" not in out and out.get("shape") == [3, 1, H, W]
                and out.get("datatype") == "FP32" and size == 3 * H * W * 4 and len(blob) == size)
        check("%s: 200 application/octet-stream, Inference-Header-Content-Length, binary_data_size 9408 and "
              "no \"data\"" % what, good)
        if not good:
            return
        got = struct.unpack("<%df" % (3 * H * W), blob)
        # The JSON numbers are printed so that a float32 round-trips: rounded
        # to float32 they are the binary answer's floats exactly.
        as_f32 = struct.unpack("<%df" % len(flat_out), struct.pack("<%df" % len(flat_out), *flat_out))
        check("%s: the little-endian floats are the JSON answer's numbers as float32, exactly" % what,
              list(got) == list(as_f32),
              "max difference %g" % max(abs(x - y) for x, y in zip(got, as_f32)))

    doc, _ = tensor_request(rows, parameters={"binary_data_output": True})
    binary_answer(post_json(a, "/v2/models/mnist/infer", doc), "JSON input, \"binary_data_output\": true")
    doc, _ = tensor_request(rows, outputs=[{"name": "output", "parameters": {"binary_data": True}}])
    binary_answer(post_json(a, "/v2/models/mnist/infer", doc), "JSON input, the output's \"binary_data\": true")
    bdoc["parameters"] = {"binary_data_output": True}
    binary_answer(post_binary(a, "/v2/models/mnist/infer", bdoc, binary_in), "binary input and output")

    head = json.dumps(tensor_request(rows[:1])[0]).encode()
    r = call(a, "POST", "/v2/models/mnist/infer", head, {"Inference-Header-Content-Length": str(len(head))})
    check("Inference-Header-Content-Length equal to the whole body (no binary part): 200",
          r.status == 200 and output_of(jdoc(r), "output") is not None)
    doc = tensor_request(rows[:1])[0]
    doc["inputs"][0]["data"] = [values[:H * W]]
    r = post_json(a, "/v2/models/mnist/infer", doc)
    check("FP32 data nested as [[784 numbers]] for shape [1,1,28,28]: 200 (any nesting of the right length)",
          r.status == 200 and output_of(jdoc(r), "output") is not None)

    # A chunked request (no Content-Length) of the binary extension.
    c = http.client.HTTPConnection(HOST, a.port, timeout=60)
    head = json.dumps({"inputs": bdoc["inputs"]}).encode()
    c.request("POST", "/v2/models/mnist/infer", body=iter([head, binary_in[:1000], binary_in[1000:]]),
              headers={"Inference-Header-Content-Length": str(len(head))}, encode_chunked=True)
    resp = c.getresponse()
    body = resp.read()
    c.close()
    last = "chunked binary request -> %d %r" % (resp.status, body[:300])
    out = output_of(json.loads(body) if resp.status == 200 else None, "output")
    check("binary FP32 input sent chunked (Transfer-Encoding: chunked): 200 with the same output",
          out is not None and flat_out is not None
          and max(abs(x - y) for x, y in zip(flatten(out.get("data", [])), flat_out)) <= 1e-6)

    # gzip: an answer in Content-Encoding gzip decodes to the same answer.
    for what, doc in (("JSON", tensor_request(rows)[0]),
                      ("binary", tensor_request(rows, parameters={"binary_data_output": True})[0])):
        r = post_json(a, "/v2/models/mnist/infer", doc, {"Accept-Encoding": "gzip"})
        plain = post_json(a, "/v2/models/mnist/infer", doc)
        body = r.body
        if r.headers.get("content-encoding") == "gzip":
            try:
                body = gzip.decompress(body)
            except OSError:
                body = None
        check("Accept-Encoding: gzip, %s answer: 200, decoded it is the answer without gzip" % what,
              r.status == 200 and plain.status == 200 and body == plain.body
              and r.headers.get("inference-header-content-length") == plain.headers.get(
                  "inference-header-content-length"),
              "%s answer: %s, Content-Encoding %s, Inference-Header-Content-Length %s (without gzip: %s)"
              % (what, r, r.headers.get("content-encoding"), r.headers.get("inference-header-content-length"),
                 plain.headers.get("inference-header-content-length")))

    doc, _ = tensor_request(rows[:1], parameters={"binary_data_output": False})
    r = post_json(a, "/v2/models/mnist/infer", doc)
    check("\"binary_data_output\": false: a plain JSON answer without Inference-Header-Content-Length",
          r.status == 200 and r.headers.get("content-type", "").startswith("application/json")
          and "inference-header-content-length" not in r.headers and output_of(jdoc(r), "output") is not None)


def images_request(images, binary=False, **extra):
    inp = {"name": "images", "datatype": "BYTES", "shape": [len(images)]}
    if binary:
        inp["parameters"] = {"binary_data_size": len(bytes_blob(images))}
    else:
        inp["data"] = [base64.b64encode(i).decode() for i in images]
    doc = {"inputs": [inp]}
    doc.update(extra)
    return doc


def test_infer_images(a):
    img = open(os.path.join(ROOT, "samples", "digit-noisy.png"), "rb").read()
    ref = call(a, "POST", "/denoise", img)
    check("POST /denoise of samples/digit-noisy.png: 200 PNG (the reference)",
          ref.status == 200 and ref.body[:8] == b"\x89PNG\r\n\x1a\n")
    r = post_json(a, "/v2/models/mnist/infer", images_request([img, img], id="img-1"))
    ans = jdoc(r)
    out = output_of(ans, "denoised")
    data = out.get("data", []) if out else []
    pngs = []
    for e in data:
        try:
            pngs.append(base64.b64decode(e, validate=True))
        except (ValueError, TypeError):
            pngs.append(None)
    check("infer BYTES base64 JSON: 200, output \"denoised\" BYTES [2] of base64 strings, the id echoed",
          r.status == 200 and out is not None and out.get("datatype") == "BYTES" and out.get("shape") == [2]
          and len(data) == 2 and ans.get("id") == "img-1")
    check("infer BYTES base64 JSON: each element is the PNG POST /denoise answers",
          len(pngs) == 2 and pngs[0] == ref.body and pngs[1] == ref.body)

    doc = images_request([img, img], binary=True, parameters={"binary_data_output": True})
    r = post_binary(a, "/v2/models/mnist/infer", doc, bytes_blob([img, img]))
    head, blob = split_binary(r)
    out = output_of(head, "denoised")
    size = (out or {}).get("parameters", {}).get("binary_data_size")
    check("infer BYTES binary in and out: 200 application/octet-stream, binary_data_size the length of the data",
          r.status == 200 and r.headers.get("content-type") == "application/octet-stream" and out is not None
          and "data" not in out and out.get("shape") == [2] and size == len(blob))
    check("infer BYTES binary in and out: elements are 4-byte lengths and the /denoise PNGs",
          bytes_elements(blob) == [ref.body, ref.body])

    doc = images_request([img], binary=True)
    r = post_binary(a, "/v2/models/mnist/infer", doc, bytes_blob([img]))
    out = output_of(jdoc(r), "denoised")
    check("infer BYTES binary in, JSON out: the base64 of the /denoise PNG",
          r.status == 200 and out is not None and out.get("data") == [base64.b64encode(ref.body).decode()])


def test_errors(a, version, digits):
    path = "/v2/models/mnist/infer"
    good, values = tensor_request(digits[:1])

    def bad(name, doc, status=400, path=path):
        r = post_json(a, path, doc) if not isinstance(doc, bytes) else call(
            a, "POST", path, doc, {"Content-Type": "application/json"})
        return check(name, v2_error(r, status))

    def tweak(**fields):
        doc = json.loads(json.dumps(good))
        doc["inputs"][0].update(fields)
        return doc

    bad("infer with a wrong shape ([1,1,27,28] of 756 values): 400 {\"error\"}",
        tweak(shape=[1, 1, 27, 28], data=values[:27 * 28]))
    bad("infer with shape [1,28,28] (no channel): 400 {\"error\"}", tweak(shape=[1, H, W]))
    bad("infer with a batch of 0: 400 {\"error\"}", tweak(shape=[0, 1, H, W], data=[]))
    bad("infer with a batch of -1: 400 {\"error\"}", tweak(shape=[-1, 1, H, W]))
    bad("infer with datatype INT32 for \"input\": 400 {\"error\"}", tweak(datatype="INT32"))
    bad("infer with datatype FP32 for \"images\": 400 {\"error\"}", tweak(name="images"))
    bad("infer with an unknown input name: 400 {\"error\"}", tweak(name="pixels"))
    bad("infer with 783 values for a [1,1,28,28] shape: 400 {\"error\"}", tweak(data=values[:-1]))
    bad("infer with 785 values for a [1,1,28,28] shape: 400 {\"error\"}", tweak(data=values + [0.5]))
    bad("infer with a string among the FP32 data: 400 {\"error\"}", tweak(data=["x"] + values[1:]))
    bad("infer with malformed JSON: 400 {\"error\"}", b'{"inputs": [{"name": "input",')
    bad("infer with an empty body: 400 {\"error\"}", b"")
    bad("infer with bytes after the JSON document (no Inference-Header-Content-Length): 400 {\"error\"}",
        json.dumps(good).encode() + b"garbage")
    bad("infer without \"inputs\": 400 {\"error\"}", {"id": "1"})
    bad("infer with an empty \"inputs\": 400 {\"error\"}", {"inputs": []})
    # A key given twice in one object: which one would count? (It read the first.)
    twice = json.dumps(good).replace('"shape": [1, 1, 28, 28]', '"shape": [1, 1, 28, 28], "shape": [2, 1, 28, 28]')
    twice = twice.encode()
    r = call(a, "POST", path, twice, {"Content-Type": "application/json"})
    check("infer with \"shape\" given twice in the input: 400 {\"error\"} naming it",
          v2_error(r, 400) and b'\\"shape\\" is given more than once' in r.body, r.body[:200])
    both = json.loads(json.dumps(good))
    both["inputs"].append(images_request([b"x"])["inputs"][0])
    bad("infer with both inputs at once: 400 {\"error\"}", both)
    doc = json.loads(json.dumps(good))
    doc["outputs"] = [{"name": "denoised"}]
    bad("infer of \"input\" asking for the output \"denoised\": 400 {\"error\"}", doc)
    doc["outputs"] = [{"name": "nope"}]
    bad("infer asking for an unknown output: 400 {\"error\"}", doc)

    binary = struct.pack("<%df" % len(values), *values)
    bdoc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, H, W],
                        "parameters": {"binary_data_size": len(binary)}}]}
    r = post_binary(a, path, bdoc, binary[:-4])
    check("binary input shorter than its binary_data_size: 400 {\"error\"}", v2_error(r, 400))
    r = post_binary(a, path, bdoc, binary + b"\0\0\0\0")
    check("binary data longer than the inputs' binary_data_size: 400 {\"error\"}", v2_error(r, 400))
    bdoc["inputs"][0]["parameters"]["binary_data_size"] = len(binary) - 4
    r = post_binary(a, path, bdoc, binary[:-4])
    check("binary_data_size not 4 x 784 for FP32 [1,1,28,28]: 400 {\"error\"}", v2_error(r, 400))
    head = json.dumps(good).encode()
    r = call(a, "POST", path, head, {"Inference-Header-Content-Length": str(len(head) + 10)})
    check("Inference-Header-Content-Length over the body's length: 400 {\"error\"}", v2_error(r, 400))
    r = call(a, "POST", path, head, {"Inference-Header-Content-Length": "x"})
    check("Inference-Header-Content-Length not a number: 400 {\"error\"}", v2_error(r, 400))
    idoc = images_request([b"x", b"y"], binary=True)
    idoc["inputs"][0]["parameters"]["binary_data_size"] = 5 + 4  # one element's worth, two announced
    r = post_binary(a, path, idoc, bytes_blob([b"x"]) + struct.pack("<I", 1))
    check("BYTES binary elements that do not fill the shape: 400 {\"error\"}", v2_error(r, 400))

    img = open(os.path.join(ROOT, "samples", "digit.png"), "rb").read()
    r = post_json(a, path, images_request([img, b"this is not an image", img]))
    check("infer BYTES with an undecodable element: 400 {\"error\"} naming element 1",
          v2_error(r, 400) and re.search(r"\b1\b", jdoc(r)["error"]) is not None)
    r = post_json(a, path, images_request([img, open(os.path.join(ROOT, "tests", "fixtures", "images",
                                                                   "truncated.png"), "rb").read()]))
    check("infer BYTES with a truncated PNG: 400 {\"error\"} naming element 1",
          v2_error(r, 400) and re.search(r"\b1\b", jdoc(r)["error"]) is not None)
    doc = images_request([img])
    doc["inputs"][0]["data"] = ["not base64 !!!"]
    bad("infer BYTES whose element is not base64: 400 {\"error\"}", doc)
    r = post_json(a, path, images_request([png(400, 300, [128] * 120000)]))
    check("infer BYTES of an image over --max-pixels: 413 {\"error\"}", v2_error(r, 413))

    # Unknown model, version, path; wrong method; too large a body.
    for method, p in (("GET", "/v2/models/nope"), ("GET", "/v2/models/nope/ready"),
                      ("POST", "/v2/models/nope/infer")):
        r = call(a, method, p, json.dumps(good).encode() if method == "POST" else None)
        check("%s %s: 404 {\"error\"}" % (method, p), v2_error(r, 404))
    for method, p in (("GET", "/v2/models/mnist/versions/sha256:000000000000"),
                      ("GET", "/v2/models/mnist/versions/sha256:000000000000/ready"),
                      ("POST", "/v2/models/mnist/versions/sha256:000000000000/infer"),
                      ("POST", "/v2/models/nope/versions/%s/infer" % version)):
        r = call(a, method, p, json.dumps(good).encode() if method == "POST" else None)
        check("%s %s: 404 {\"error\"}" % (method, p), v2_error(r, 404))
    for p in ("/v2/nope", "/v2/models/mnist/explain", "/v2/health", "/v2/repository/models/mnist"):
        r = call(a, "GET", p)
        check("GET %s (no such route): 404 {\"error\"}" % p, v2_error(r, 404))
    for method, p, allow in (("POST", "/v2/health/live", "GET, HEAD"), ("DELETE", "/v2", "GET, HEAD"),
                             ("GET", "/v2/models/mnist/infer", "POST"), ("PUT", "/v2/models/mnist", "GET, HEAD"),
                             ("GET", "/v2/repository/index", "POST")):
        r = call(a, method, p, b"{}" if method in ("POST", "PUT") else None)
        check("%s %s: 405 {\"error\"} with Allow: %s" % (method, p, allow),
              v2_error(r, 405) and r.headers.get("allow") == allow)

    big = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,28,28],"data":[' + b"0.5," * 800000
    status = post_too_large(a, path, big)
    check("infer with a body over --max-body: 413 {\"error\"}", status is not None and v2_error(status, 413))


def test_json_memory(tmp, models_dir, digits):
    """A JSON tensor whose parse tree could never fit the memory budget is a
    413 that says to send binary data; the same tensor as binary data is
    served."""
    d = Daemon(tmp, "budget", models_dir, ["--memory-budget", "4M"])
    try:
        rows = digits * 3  # 150,528 numbers: some 14 MB of parse tree
        doc, values = tensor_request(rows)
        r = post_json(d, "/v2/models/mnist/infer", doc)
        check("a JSON tensor whose parse would exceed the 4 MB memory budget: 413 {\"error\"} naming binary data",
              v2_error(r, 413) and "binary" in jdoc(r)["error"])
        head = dict(doc)
        head["inputs"] = [dict(doc["inputs"][0], parameters={"binary_data_size": len(values) * 4})]
        del head["inputs"][0]["data"]
        head["parameters"] = {"binary_data_output": True}
        r = post_binary(d, "/v2/models/mnist/infer", head, struct.pack("<%df" % len(values), *values))
        ans, data = split_binary(r)
        check("the same tensor as binary data under that budget: 200 with its outputs",
              r.status == 200 and ans is not None and len(data) == len(values) * 4)
    finally:
        d.stop()
    sanitizer_check(d)


def post_too_large(d, path, body):
    """POSTs body with its Content-Length, tolerating a server that answers and
    closes before it is all sent; returns the answer (or None)."""
    global last
    s = socket.create_connection((HOST, d.port), timeout=30)
    try:
        s.sendall(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                   % (path, HOST, len(body))).encode())
        try:
            s.sendall(body)
        except OSError:
            pass
        r = read_response(s, 30)
    finally:
        s.close()
    last = "POST %s (%d bytes) -> %r" % (path, len(body), r)
    return r


def test_repository(a, models_dir, version_of):
    r = call(a, "POST", "/v2/repository/index", b"{}", {"Content-Type": "application/json"})
    doc = jdoc(r)
    entries = {e.get("name"): e for e in doc if isinstance(e, dict)} if isinstance(doc, list) else {}
    check("POST /v2/repository/index (loopback, no token set): 200, mnist and other READY with their versions",
          r.status == 200 and entries.get("mnist", {}).get("state") == "READY"
          and entries.get("other", {}).get("state") == "READY"
          and entries["mnist"].get("version") == version_of("mnist")
          and entries["other"].get("version") == version_of("other"))

    r = call(a, "POST", "/v2/repository/models/other/unload")
    check("unload of the non-default model other: 200 {}", r.status == 200 and jdoc(r) == {})
    r = call(a, "POST", "/v2/repository/index", b"{}")
    entries = {e.get("name"): e for e in jdoc(r) if isinstance(e, dict)} if isinstance(jdoc(r), list) else {}
    check("after unload, the index lists other as UNAVAILABLE with a reason",
          r.status == 200 and entries.get("other", {}).get("state") == "UNAVAILABLE"
          and isinstance(entries["other"].get("reason"), str) and entries["other"]["reason"] != ""
          and entries.get("mnist", {}).get("state") == "READY")
    good, _ = tensor_request(DIGITS[:1])
    r = post_json(a, "/v2/models/other/infer", good)
    check("after unload, infer on other: 404 {\"error\"}", v2_error(r, 404))
    r = call(a, "GET", "/models")
    check("after unload, GET /models does not list other",
          r.status == 200 and '"name":"other"' not in r.body.decode("utf-8", "replace").replace(" ", ""))
    check("after unload, other's file is still in the models directory",
          os.path.exists(os.path.join(models_dir, "other.safetensors")), "other.safetensors is gone")
    # A rescan of the models directory (SIGHUP) passes over the unloaded model.
    a.proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    r = call(a, "POST", "/v2/repository/index", b"{}")
    entries = {e.get("name"): e for e in jdoc(r) if isinstance(e, dict)} if isinstance(jdoc(r), list) else {}
    check("a rescan (SIGHUP) does not bring an unloaded model back",
          entries.get("other", {}).get("state") == "UNAVAILABLE"
          and call(a, "GET", "/v2/models/other/ready").status == 404)

    r = call(a, "POST", "/v2/repository/models/other/load", b"{}", {"Content-Type": "application/json"})
    check("load of other: 200 {}", r.status == 200 and jdoc(r) == {})
    r = call(a, "POST", "/v2/repository/index", b"{}")
    entries = {e.get("name"): e for e in jdoc(r) if isinstance(e, dict)} if isinstance(jdoc(r), list) else {}
    check("after load, the index lists other as READY again", entries.get("other", {}).get("state") == "READY")
    r = post_json(a, "/v2/models/other/infer", good)
    check("after load, infer on other: 200 from model other",
          r.status == 200 and (jdoc(r) or {}).get("model_name") == "other")

    r = call(a, "POST", "/v2/repository/models/other/load")
    check("load of a model that is loaded: 200 {}, still READY", r.status == 200 and jdoc(r) == {}
          and call(a, "GET", "/v2/models/other/ready").status == 200)
    r = call(a, "POST", "/v2/repository/models/broken/load")
    check("load of a file that is no model: 4xx {\"error\"}, the server carries on",
          400 <= r.status < 500 and v2_error(r, r.status) and call(a, "GET", "/v2/health/live").status == 200)
    r = call(a, "POST", "/v2/repository/models/mnist/unload")
    check("unload of the default model: 409 {\"error\"}", v2_error(r, 409))
    check("... and the default model still answers",
          call(a, "GET", "/v2/models/mnist/ready").status == 200 and os.path.exists(
              os.path.join(models_dir, "mnist.safetensors")))
    r = call(a, "POST", "/v2/repository/models/ghost/load")
    check("load of a name with no file in the models directory: 404 {\"error\"}", v2_error(r, 404))
    r = call(a, "POST", "/v2/repository/models/ghost/unload")
    check("unload of an unknown model: 404 {\"error\"}", v2_error(r, 404))


def test_admin_token(t):
    for path in ("/v2/repository/index", "/v2/repository/models/other/unload", "/v2/repository/models/other/load"):
        r = call(t, "POST", path, b"{}")
        check("with --admin-token, POST %s without the token: 401 {\"error\"} with WWW-Authenticate: Bearer" % path,
              v2_error(r, 401) and r.headers.get("www-authenticate", "").startswith("Bearer"))
        r = call(t, "POST", path, b"{}", {"Authorization": "Bearer wrong"})
        check("with --admin-token, POST %s with a wrong token: 401 {\"error\"}" % path, v2_error(r, 401))
    r = call(t, "POST", "/v2/repository/index", b"{}", {"Authorization": "Bearer " + TOKEN})
    check("with --admin-token, the index with the token: 200", r.status == 200 and isinstance(jdoc(r), list))
    r = call(t, "POST", "/v2/repository/models/other/unload", b"{}", {"Authorization": "Bearer " + TOKEN})
    check("with --admin-token, unload with the token: 200", r.status == 200)
    r = call(t, "POST", "/v2/repository/models/other/load", b"{}", {"Authorization": "Bearer " + TOKEN})
    check("with --admin-token, load with the token: 200", r.status == 200)
    r = post_json(t, "/v2/models/mnist/infer", tensor_request(DIGITS[:1])[0])
    check("with --admin-token, infer and metadata need no token",
          r.status == 200 and call(t, "GET", "/v2/models/mnist").status == 200)


def test_equivalence(a, dae, tmp, digits):
    # FP32: 64 digits through the server and through `dae forward`.
    doc, values = tensor_request(digits)
    r = post_json(a, "/v2/models/mnist/infer", doc)
    out = output_of(jdoc(r), "output")
    served = flatten(out.get("data", [])) if out else []
    check("infer of 64 digits: 200 with 64 x 784 numbers",
          r.status == 200 and out is not None and out.get("shape") == [64, 1, H, W] and len(served) == 64 * H * W)
    safetensors_write(os.path.join(tmp, "in.safetensors"), "input", [64, 1, H, W], values)
    p = subprocess.run([dae, "forward", "--model", os.path.join(tmp, "models", "mnist.safetensors"),
                        os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")],
                       capture_output=True, text=True)
    if not check("dae forward of the same 64 digits runs", p.returncode == 0, p.stderr[-1000:]):
        return
    shape, engine = safetensors_read(os.path.join(tmp, "out.safetensors"), "output")
    diff = max(abs(x - y) for x, y in zip(served, engine)) if len(served) == len(engine) else float("inf")
    check("infer FP32 of 64 digits equals dae forward within 1e-6 (max difference %.3g)" % diff,
          shape == [64, 1, H, W] and diff <= 1e-6, "max difference %g, shapes %s" % (diff, shape))
    binary = struct.pack("<%df" % len(values), *values)
    bdoc = {"parameters": {"binary_data_output": True},
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [64, 1, H, W],
                        "parameters": {"binary_data_size": len(binary)}}]}
    head, blob = split_binary(post_binary(a, "/v2/models/mnist/infer", bdoc, binary))
    got = struct.unpack("<%df" % (len(blob) // 4), blob) if len(blob) == len(binary) else ()
    diff = max(abs(x - y) for x, y in zip(got, engine)) if got else float("inf")
    check("binary infer FP32 of 64 digits equals dae forward within 1e-6 (max difference %.3g)" % diff,
          diff <= 1e-6, last)

    # BYTES: 64 digit PNGs, then images of other sizes and kinds, against POST /denoise one by one.
    pngs = [png(W, H, row) for row in digits]
    r = post_json(a, "/v2/models/mnist/infer", images_request(pngs))
    out = output_of(jdoc(r), "denoised")
    got = [base64.b64decode(e) for e in out.get("data", [])] if out else []
    refs = [call(a, "POST", "/denoise", p).body for p in pngs]
    same = sum(1 for x, y in zip(got, refs) if x == y)
    check("infer BYTES of 64 digit PNGs equals 64 POST /denoise answers byte for byte (%d of 64 equal)" % same,
          r.status == 200 and len(got) == 64 and same == 64, last)
    fixtures = os.path.join(ROOT, "tests", "fixtures", "images")
    others = [png(40, 30, [(x * 7 + y * 3) % 256 for y in range(30) for x in range(40)]),
              png(33, 21, [(i * 37) % 256 for i in range(33 * 21 * 3)], channels=3),
              open(os.path.join(fixtures, "gray_27x29.png"), "rb").read(),
              open(os.path.join(fixtures, "rgb_300x200_adam7.png"), "rb").read(),
              open(os.path.join(fixtures, "gray.jpg"), "rb").read(),
              open(os.path.join(ROOT, "samples", "shirt-noisy.png"), "rb").read()]
    doc = images_request(others, binary=True, parameters={"binary_data_output": True})
    r = post_binary(a, "/v2/models/mnist/infer", doc, bytes_blob(others))
    head, blob = split_binary(r)
    got = bytes_elements(blob) or []
    refs = [call(a, "POST", "/denoise", p) for p in others]
    same = sum(1 for x, y in zip(got, refs) if y.status == 200 and x == y.body)
    check("binary infer BYTES of 40x30 gray, 33x21 RGB, 27x29, 300x200 RGB, JPEG and a sample equals "
          "POST /denoise byte for byte (%d of %d equal)" % (same, len(others)),
          r.status == 200 and len(got) == len(others) and same == len(others), last)


def test_metrics(a):
    line = 'dae_http_requests_total{route="v2_infer",status="200"} '
    before = metric(a, line)
    for _ in range(3):
        post_json(a, "/v2/models/mnist/infer", tensor_request(DIGITS[:1])[0])
    after = metric(a, line)
    check("three infers add 3 to dae_http_requests_total{route=\"v2_infer\",status=\"200\"}",
          before is not None and after is not None and after - before == 3, "before %s, after %s" % (before, after))
    text = call(a, "GET", "/metrics").body.decode("utf-8", "replace")
    for label in ("v2", "v2_live", "v2_ready", "v2_model", "v2_model_version", "v2_model_ready",
                  "v2_model_version_ready", "v2_infer", "v2_model_version_infer", "v2_repository_index",
                  "v2_repository_load", "v2_repository_unload"):
        check("/metrics counts route=\"%s\" in dae_http_requests_total" % label,
              ('dae_http_requests_total{route="%s",' % label) in text, "no such series in GET /metrics")
    check("/metrics counts the v2 400 answers of v2_infer",
          'dae_http_requests_total{route="v2_infer",status="400"}' in text, "no such series in GET /metrics")
    # Every answer and refusal above gave back what it held of the memory
    # budget (a refused batch of images must not give back what it never took).
    held = wait_until(lambda: metric(a, "dae_memory_reserved_bytes ") == 0, 5)
    check("after every v2 answer and refusal, the memory budget holds nothing (dae_memory_reserved_bytes 0)", held,
          "dae_memory_reserved_bytes %s" % metric(a, "dae_memory_reserved_bytes "))


def test_mixed_batching(tmp, models_dir, digits):
    """/denoise and both kinds of /v2 inference, sent together to one worker
    that waits for company (--max-queue-delay-us), share one forward pass,
    and each answer is what it is alone."""
    d = Daemon(tmp, "mixed", models_dir, ["--workers", "1", "--max-queue-delay-us", "1000000"])
    try:
        img = open(os.path.join(ROOT, "samples", "digit-noisy.png"), "rb").read()
        doc, values = tensor_request(digits[:2])
        calls = [("/denoise", img, {"Content-Type": "image/png"}),
                 ("/v2/models/mnist/infer", json.dumps(doc).encode(), {"Content-Type": "application/json"}),
                 ("/v2/models/mnist/infer", json.dumps(images_request([img])).encode(),
                  {"Content-Type": "application/json"})]
        answers = [None] * len(calls)

        def send(i):
            answers[i] = request(d.port, "POST", calls[i][0], body=calls[i][1], headers=calls[i][2], timeout=60)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check("/denoise and two /v2 inferences sent together: all 200",
              all(r is not None and r.status == 200 for r in answers), repr([r and r.status for r in answers]))
        batches = metric(d, "dae_inference_batch_requests_count")
        shared = metric(d, "dae_inference_batch_requests_sum")
        check("they went through one forward pass together (%s requests in %s batches)" % (shared, batches),
              batches == 1 and shared == 3)
        alone = [call(d, "POST", c[0], c[1], c[2]) for c in calls]
        check("each answer is the bytes of the same request sent alone",
              all(a is not None and b.status == 200 and a.body == b.body for a, b in zip(answers, alone)))
    finally:
        d.stop()
    sanitizer_check(d)


def test_drain(tmp, models_dir):
    """Readiness turns false while the server drains: a slow inference is in
    flight when SIGTERM comes; a kept-alive connection keeps asking. The
    drain deadline is far past the image's time (15-20 s in the sanitizer
    build on 2 cores)."""
    d = Daemon(tmp, "drain", models_dir, ["--workers", "1", "--queue-size", "1", "--drain-timeout", "120"])
    # Two kept-alive probes: a probe answered while SIGTERM is being handled
    # may get its 200 with Connection: close (the drain closes connections
    # after their answer), and new connections are refused from then on; the
    # spare one, asked after that answer, must see the drain.
    probes = [http.client.HTTPConnection(HOST, d.port, timeout=10) for _ in range(2)]
    ready = []
    for probe in probes:
        probe.request("GET", "/v2/health/ready")
        r = probe.getresponse()
        ready.append(r.status == 200 and json.loads(r.read() or b"null") == {"ready": True} and not r.will_close)
    check("draining server: /v2/health/ready 200 before SIGTERM (two kept-alive connections)", all(ready))
    ring = open(os.path.join(ROOT, "tests", "fixtures", "images", "ring_2000x2000.png"), "rb").read()
    result = {}

    def slow():
        result["r"] = request(d.port, "POST", "/v2/models/mnist/infer",
                              json.dumps(images_request([ring])).encode(), timeout=120)

    th = threading.Thread(target=slow)
    th.start()
    check("draining server: the slow inference is queued",
          wait_until(lambda: metric(d, "dae_queue_pending ") == 1, 10), "dae_queue_pending never 1")
    r = post_json(d, "/v2/models/mnist/infer", tensor_request(DIGITS[:1])[0])
    check("with the queue full (--queue-size 1), infer: 503 {\"error\"} with Retry-After",
          v2_error(r, 503) and r.headers.get("retry-after", "").isdigit())
    d.proc.send_signal(signal.SIGTERM)
    seen = None
    deadline = time.time() + 5
    while time.time() < deadline:
        probe = probes[0]
        try:
            probe.request("GET", "/v2/health/ready")
            r = probe.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException) as e:
            seen = ("closed", repr(e))
            break
        if r.status != 200:
            seen = (r.status, body)
            break
        if r.will_close and len(probes) > 1:
            print("note: /v2/health/ready answered 200 with Connection: close as the drain began; asking the spare")
            probes.pop(0).close()
            continue
        time.sleep(0.1)
    if seen and seen[0] == 503:
        # While the connection stays open, new inference is refused.
        try:
            probe.request("POST", "/v2/models/mnist/infer", json.dumps(tensor_request(DIGITS[:1])[0]))
            r = probe.getresponse()
            r = type("R", (), {"status": r.status, "body": r.read(),
                               "headers": {k.lower(): v for k, v in r.getheaders()}})()
            check("draining server: infer on a kept-alive connection: 503 {\"error\"} with Retry-After",
                  v2_error(r, 503) and r.headers.get("retry-after", "").isdigit(),
                  "%d %r" % (r.status, r.body[:300]))
        except (OSError, http.client.HTTPException):
            print("note: while draining, the server closed the kept-alive connection after the 503")
    for probe in probes:
        probe.close()
    body_ok = False
    if seen and seen[0] == 503:
        try:
            doc = json.loads(seen[1])
            body_ok = doc == {"ready": False} or (list(doc) == ["error"] and isinstance(doc["error"], str))
        except ValueError:
            pass
        print("note: while draining, /v2/health/ready answers 503 %s" % seen[1].decode("utf-8", "replace").strip())
    check("draining server: /v2/health/ready turns 503 with {\"ready\": false} or {\"error\"}", body_ok,
          "after SIGTERM the probe saw %r" % (seen,))
    th.join(130)
    r = result.get("r")
    out = output_of(jdoc(r), "denoised") if r is not None else None
    check("draining server: the inference in flight at SIGTERM is finished (200, one PNG)",
          r is not None and r.status == 200 and out is not None and len(out.get("data", [])) == 1,
          "answer %r" % (r,))
    rc = d.stop()
    check("draining server: exit 0 after the drain (exit %s)" % rc, rc == 0, d.stderr()[-1000:])
    sanitizer_check(d)


def main():
    global SERVER, DIGITS
    if len(sys.argv) != 3 or not all(os.access(p, os.X_OK) for p in sys.argv[1:]):
        print("usage: %s path/to/dae-server path/to/dae" % sys.argv[0], file=sys.stderr)
        return 2
    SERVER, dae = (os.path.abspath(p) for p in sys.argv[1:])
    tmp = tempfile.mkdtemp(prefix="dae-oip-test.")
    try:
        models_dir = os.path.join(tmp, "models")
        os.makedirs(models_dir)
        shutil.copy(os.path.join(ROOT, "models", "mnist.safetensors"), os.path.join(models_dir, "mnist.safetensors"))
        other = os.path.join(ROOT, "models", "fashion-mnist.safetensors")
        if not os.path.exists(other):
            other = os.path.join(ROOT, "models", "mnist.safetensors")
        shutil.copy(other, os.path.join(models_dir, "other.safetensors"))
        with open(os.path.join(models_dir, "broken.safetensors"), "w") as f:
            f.write("not a safetensors file\n")
        DIGITS = mnist_digits(64)

        a = Daemon(tmp, "a", models_dir, ["--max-body", "2M", "--max-pixels", "100000"])

        def version_of(name):
            doc = jdoc(call(a, "GET", "/models/" + name))
            return doc.get("version") if isinstance(doc, dict) else None

        version = version_of("mnist")
        if not check("GET /models/mnist names the model's version", isinstance(version, str) and version != ""):
            return 1
        steps = [("routes", lambda: test_routes(a, version)),
                 ("infer tensor", lambda: test_infer_tensor(a, version, DIGITS)),
                 ("infer images", lambda: test_infer_images(a)),
                 ("errors", lambda: test_errors(a, version, DIGITS)),
                 ("repository", lambda: test_repository(a, models_dir, version_of)),
                 ("equivalence", lambda: test_equivalence(a, dae, tmp, DIGITS)),
                 ("metrics", lambda: test_metrics(a))]
        for name, step in steps:
            try:
                step()
            except Exception:  # a step that raises is one failed check; the others still run
                check("%s: runs to the end" % name, False, traceback.format_exc())
        rc = a.stop()
        check("dae-server exits 0 on SIGTERM (exit %s)" % rc, rc == 0, a.stderr()[-1000:])
        sanitizer_check(a)

        t = Daemon(tmp, "token", models_dir, ["--admin-token", TOKEN])
        try:
            test_admin_token(t)
        except Exception:
            check("admin token: runs to the end", False, traceback.format_exc())
        t.stop()
        sanitizer_check(t)

        try:
            test_mixed_batching(tmp, models_dir, DIGITS)
        except Exception:
            check("mixed batching: runs to the end", False, traceback.format_exc())

        try:
            test_json_memory(tmp, models_dir, DIGITS)
        except Exception:
            check("JSON memory: runs to the end", False, traceback.format_exc())

        try:
            test_drain(tmp, models_dir)
        except Exception:
            check("drain: runs to the end", False, traceback.format_exc())
    except RuntimeError as e:  # a daemon that does not start
        check("the daemon starts", False, str(e))
    finally:
        kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print("oip: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
