"""test_json_errors.py - every error body is JSON a client can parse.

Every error the daemon answers, on every path that can fail (unknown
routes, wrong methods, bad query parameters, empty and oversized bodies,
invalid images of each format, bad training requests, unknown jobs and
models, a missing admin token), must be a body that decodes as strict
UTF-8, parses with json.loads, and holds {"error": {"status": the HTTP
status, "code": a string, "message": a string}}, with Content-Type
application/json. Requests carry bytes that are not UTF-8 wherever a
message might quote them: in the path, the query, JSON field names and
values, and PNG chunk names. A PNG whose IDAT chunk name was corrupted to
"IDA\\xab" once got a 400 whose message quoted the raw byte
("PNG: CRC error in IDA\\xab"), so a JSON client could not read the error.
"""

import json
import socket
import struct
import zlib

import harness

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind, data):
    """A PNG chunk of type kind (4 bytes) with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _chunks(png):
    """The (type, data) chunks of png, in order."""
    out, i = [], len(PNG_SIGNATURE)
    while i + 8 <= len(png):
        n = struct.unpack(">I", png[i:i + 4])[0]
        out.append((png[i + 4:i + 8], png[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def _bad_pngs(suite):
    """(description, bytes) of PNGs whose chunk names are not ASCII."""
    chunks = _chunks(harness.fixture(suite, "images", "gray8.png"))

    def renamed(name, fix_crc):
        """gray8.png with its IDAT chunk named name; its CRC recomputed or
        left as it was (so that it is wrong too)."""
        out = PNG_SIGNATURE
        for kind, data in chunks:
            if kind == b"IDAT":
                c = _chunk(name, data) if fix_crc else _chunk(kind, data)[:4] + name + _chunk(kind, data)[8:]
            else:
                c = _chunk(kind, data)
            out += c
        return out

    extra = PNG_SIGNATURE + b"".join(
        (_chunk(b"\xe9xYz", b"abc") if kind == b"IDAT" else b"") + _chunk(kind, data) for kind, data in chunks)
    return [
        ("a PNG whose IDAT name is IDA\\xab (CRC now wrong)", renamed(b"IDA\xab", False)),
        ("a PNG whose IDAT name is IDA\\xab (CRC fixed)", renamed(b"IDA\xab", True)),
        ("a PNG whose IDAT name is \\xff\\xfe\\xfd\\xfc (CRC fixed)", renamed(b"\xff\xfe\xfd\xfc", True)),
        ("a PNG with a critical chunk named \\xe9xYz", extra),
    ]


def _bad_images(suite):
    """(description, bytes) of invalid images of every format."""
    fx = lambda name: harness.fixture(suite, "images", name)
    return _bad_pngs(suite) + [
        ("a truncated PNG", fx("truncated.png")),
        ("a PNG with a bad CRC", fx("bad_crc.png")),
        ("a decompression bomb PNG", fx("bomb.png")),
        ("a header-only PNG", fx("gray8.png")[:33]),
        ("a JPEG cut to half", fx("rgb.jpg")[:len(fx("rgb.jpg")) // 2]),
        ("a JPEG claiming 4096x4096", fx("claims_4096.jpg")),
        ("a header-only BMP", fx("rgb.bmp")[:54]),
        ("a GIF cut to half", fx("gray.gif")[:len(fx("gray.gif")) // 2]),
        ("a header-only P6", b"P6\n100 100\n255\n"),
        ("a P5 with a bad header", b"P5\n\xff\xfe 28\n255\n"),
        ("a header-only TGA", fx("rgb.tga")[:18]),
        ("plain text", fx("text.txt")),
        ("bytes that are not UTF-8", b"\xff\xfe\xab\xcd" * 64),
    ]


def _check(suite, what, r, status=None):
    """Checks that r is the service's JSON error (of status), decoding
    its body strictly; returns True when it is."""
    why = ""
    try:
        doc = json.loads(r.body.decode("utf-8", errors="strict"))
        e = doc["error"]
        if not isinstance(e, dict):
            why = "error is not an object"
        elif e.get("status") != r.status:
            why = "error.status %r, HTTP status %d" % (e.get("status"), r.status)
        elif not isinstance(e.get("code"), str) or not e["code"]:
            why = "no error.code string"
        elif not isinstance(e.get("message"), str) or not e["message"]:
            why = "no error.message string"
        elif e.get("request_id") != r.headers.get("x-request-id"):
            # Answers of the HTTP engine carry the request's id in both
            # places; the gate's (408, 431, 503 before a request is
            # parsed) in neither.
            why = "error.request_id %r, X-Request-Id %r" % (e.get("request_id"), r.headers.get("x-request-id"))
    except UnicodeDecodeError as ex:
        why = "body is not UTF-8 (%s)" % ex
    except ValueError as ex:
        why = "body is not JSON (%s)" % ex
    except (KeyError, TypeError):
        why = "no \"error\" member"
    if not why and r.status < 400:
        why = "status %d is not an error" % r.status
    if not why and status is not None and r.status != status:
        why = "status %d, want %d" % (r.status, status)
    if not why and not r.headers.get("content-type", "").startswith("application/json"):
        why = "Content-Type %r" % r.headers.get("content-type")
    return suite.check("%s: a JSON error in UTF-8" % what, not why, "%s: %r" % (why, r))


def _raw(port, head, body=None):
    """A request sent as raw bytes (a path or header that http.client
    would refuse), with a Content-Length when there is a body; the
    Response, or a status 0 one when the server closed without answering."""
    length = b"" if body is None else b"Content-Length: %d\r\n" % len(body)
    r = harness.raw(port, head + b"Host: t\r\nConnection: close\r\n" + length + b"\r\n" + (body or b""))
    return r if r is not None else harness.Response(0, {}, b"(no answer)")


def _upload(port, route, body, headers=b""):
    """POSTs body in 64 KiB pieces, stopping when the daemon stops reading
    (it may answer 413 before the end), then reads the answer."""
    s = socket.create_connection((harness.HOST, port), timeout=10)
    try:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" % (route.encode(), len(body), headers))
        try:
            for i in range(0, len(body), 65536):
                s.sendall(body[i:i + 65536])
        except OSError:
            pass
        r = harness.read_response(s)
        return r if r is not None else harness.Response(0, {}, b"(no answer)")
    finally:
        s.close()


def test_every_error_body_is_utf8_json(suite):
    d = suite.start("json-errors", "--data-dir", suite.root + "/tests/fixtures", "--max-body", "1M")
    p = d.port
    png = harness.fixture(suite, "images", "gray8.png")
    req = lambda *a, **k: harness.request(p, *a, **k)
    ctype_json = {"Content-Type": "application/json"}

    # Routes and methods.
    _check(suite, "GET /no/such/route", req("GET", "/no/such/route"), 404)
    _check(suite, "GET /ui/nope.js", req("GET", "/ui/nope.js"), 404)
    _check(suite, "GET /ui/%ff", req("GET", "/ui/%ff"), 404)
    _check(suite, "GET /models/nope", req("GET", "/models/nope"), 404)
    _check(suite, "GET /denoise", req("GET", "/denoise"), 405)
    _check(suite, "POST /healthz", req("POST", "/healthz"), 405)
    _check(suite, "DELETE /models", req("DELETE", "/models"), 405)
    _check(suite, "PUT /train", req("PUT", "/train", b"{}"), 405)
    _check(suite, "PATCH /metrics", req("PATCH", "/metrics"), 405)
    _check(suite, "GET /%ff%fe (percent-encoded non-UTF-8 path)", req("GET", "/%ff%fe"), 404)
    _check(suite, "GET /models/%ab%cd", req("GET", "/models/%ab%cd"))
    _check(suite, "GET /\\xff\\xfe (raw non-UTF-8 path)", _raw(p, b"GET /\xff\xfe HTTP/1.1\r\n"))
    _check(suite, "GET /models/\\xab (raw)", _raw(p, b"GET /models/\xab HTTP/1.1\r\n"))
    _check(suite, "an unknown method FROB /denoise", _raw(p, b"FROB /denoise HTTP/1.1\r\n"))

    # Query parameters.
    _check(suite, "/denoise?colour=red", req("POST", "/denoise?colour=red", png), 422)
    _check(suite, "/denoise?model=nope", req("POST", "/denoise?model=nope", png), 404)
    _check(suite, "/denoise?model=%ff%fe", req("POST", "/denoise?model=%ff%fe", png))
    _check(suite, "/denoise?%ab%cd=1 (a non-UTF-8 parameter name)", req("POST", "/denoise?%ab%cd=1", png))
    _check(suite, "/denoise?model=\\xab (raw)", _raw(p, b"POST /denoise?model=\xab HTTP/1.1\r\n", png))
    _check(suite, "/noise?sigma=11", req("POST", "/noise?sigma=11", png), 422)
    _check(suite, "/noise?sigma=abc", req("POST", "/noise?sigma=abc", png), 422)
    _check(suite, "/noise?sigma=%ff", req("POST", "/noise?sigma=%ff", png))
    _check(suite, "/noise?type=blur", req("POST", "/noise?type=blur", png), 422)
    _check(suite, "/noise?type=%e9", req("POST", "/noise?type=%e9", png))
    _check(suite, "/noise?type=salt-pepper&sigma=0.2", req("POST", "/noise?type=salt-pepper&sigma=0.2", png), 422)
    _check(suite, "/noise?seed=-1", req("POST", "/noise?seed=-1", png), 422)

    # Empty and oversized bodies.
    for route in ("/denoise", "/noise"):
        _check(suite, "POST %s with an empty body" % route, req("POST", route, b""), 400)
        _check(suite, "POST %s with a 1.1 MB body (limit 1M)" % route, _upload(p, route, b"\0" * 1100000), 413)
        _check(suite, "POST %s announcing 11 MiB" % route,
               _raw(p, b"POST " + route.encode() + b" HTTP/1.1\r\nContent-Length: 11534336\r\n"), 413)
    _check(suite, "POST /train with an empty body", req("POST", "/train", b"", ctype_json))
    _check(suite, "POST /train with a 1.1 MB body",
           _upload(p, "/train", b" " * 1100000, b"Content-Type: application/json\r\n"), 413)

    # Invalid images of each format, on both image routes.
    for what, data in _bad_images(suite):
        for route in ("/denoise", "/noise?sigma=0"):
            _check(suite, "%s on POST %s" % (what, route), req("POST", route, data))

    # Multipart uploads.
    mp = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    _check(suite, "multipart without a boundary", req("POST", "/denoise", b"junk",
                                                         {"Content-Type": "multipart/form-data"}), 400)
    _check(suite, "multipart without an image field", req(
        "POST", "/denoise", b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ--\r\n",
        mp), 400)
    _check(suite, "multipart with a non-UTF-8 field name", req(
        "POST", "/denoise", b"--XyZ\r\nContent-Disposition: form-data; name=\"\xab\xcd\"\r\n\r\nx\r\n--XyZ--\r\n",
        mp))
    _check(suite, "multipart holding a corrupt-IDAT-name PNG", req(
        "POST", "/denoise", b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        + _bad_pngs(suite)[0][1] + b"\r\n--XyZ--\r\n", mp))
    _check(suite, "an unsupported Content-Type", req("POST", "/denoise", b"hello", {"Content-Type": "text/plain"}))

    # Training requests.
    train = lambda body: req("POST", "/train", body, ctype_json)
    for what, body, status in [
            ("not JSON", b"not json", 400),
            ("a JSON array", b"[1, 2]", None),
            ("a JSON string", b"\"x\"", None),
            ("truncated JSON", b"{\"dataset\": \"mnist-mini\"", 400),
            ("non-UTF-8 JSON", b"{\"dataset\": \"\xff\xfe\"}", None),
            ("a non-UTF-8 field name", b"{\"dataset\": \"mnist-mini\", \"\xab\xcd\": 1}", None),
            ("an unknown field", b"{\"dataset\": \"mnist-mini\", \"epoch\": 1}", 422),
            ("an unknown field with an escaped name", b"{\"dataset\": \"mnist-mini\", \"\\u00e9\\ud800\": 1}", None),
            ("no dataset", b"{\"epochs\": 1}", 422),
            ("a dataset outside the data directory", b"{\"dataset\": \"../etc\"}", 422),
            ("a missing dataset", b"{\"dataset\": \"nope\"}", 422),
            ("a dataset name with a control character", b"{\"dataset\": \"a\\u0001b\"}", 422),
            ("epochs 0", b"{\"dataset\": \"mnist-mini\", \"epochs\": 0}", 422),
            ("epochs 1.5", b"{\"dataset\": \"mnist-mini\", \"epochs\": 1.5}", 422),
            ("learning_rate \"x\"", b"{\"dataset\": \"mnist-mini\", \"learning_rate\": \"x\"}", 422),
            ("a bad noise spec", b"{\"dataset\": \"mnist-mini\", \"noise\": \"blur:\xe9\"}", None),
            ("a bad model_name", b"{\"dataset\": \"mnist-mini\", \"model_name\": \"../\xab\"}", None),
            ("a bad architecture", b"{\"dataset\": \"mnist-mini\", \"architecture\": {\"encoder\": "
                                   b"[{\"type\": \"conv\xe9d\"}]}}", None),
            ("activate \"yes\"", b"{\"dataset\": \"mnist-mini\", \"activate\": \"yes\"}", 422)]:
        _check(suite, "POST /train with %s" % what, train(body), status)

    # Unknown jobs and models.
    for method, path, status in [
            ("GET", "/train/999", 404), ("GET", "/train/abc", 404), ("GET", "/train/-1", 404),
            ("GET", "/train/%ff", None), ("GET", "/train/999/events", 404), ("DELETE", "/train/999", 404),
            ("DELETE", "/train/%e9", None), ("DELETE", "/models/nope", 404), ("DELETE", "/models/%ab", None),
            ("POST", "/models/nope/activate", 404), ("POST", "/models/%ab%cd/activate", None),
            ("DELETE", "/models/mnist", None)]:
        _check(suite, "%s %s" % (method, path), req(method, path), status)

    r = req("GET", "/healthz")
    suite.check("the daemon still serves /healthz afterwards", r.status == 200, r)


def test_admin_errors_are_utf8_json(suite):
    d = suite.start("json-errors-admin", "--admin-token", "s3cret")
    p = d.port
    _check(suite, "POST /train without a token", harness.request(p, "POST", "/train", b"{}"), 401)
    _check(suite, "POST /train with a wrong token", harness.request(
        p, "POST", "/train", b"{}", {"Authorization": "Bearer wrong"}), 401)
    _check(suite, "a non-UTF-8 token", _raw(p, b"POST /models/mnist/activate HTTP/1.1\r\n"
                                             b"Authorization: Bearer \xff\xfe\r\n"), 401)
    _check(suite, "a token without Bearer", harness.request(
        p, "DELETE", "/models/mnist", headers={"Authorization": "Basic \xe9"}), 401)
