"""test_models.py - the model registry's admin routes racing each other.

Uploads, deletions, v2 unloads and loads and activations of one model name
land in any order from several clients at once. Every answer is one the
API documents (never a 5xx; on /v2 the protocol's error object), and a PUT answered 200 or 201 describes the
model it installed, even when another client deleted it a moment later:
the body used to be looked up by name after the install, and a DELETE in
between turned a successful upload into 500 "out of memory".
"""

import hashlib
import json
import os
import threading
import time

import harness

SECONDS = 3.0


def test_admin_races(suite):
    d = suite.start("a", "--workers", "1", "--reload-interval", "0")
    weights = open(os.path.join(suite.root, "models", "mnist-ae.safetensors"), "rb").read()
    digest = hashlib.sha256(weights).hexdigest()
    first = harness.request(d.port, "PUT", "/models/m2", weights)
    suite.check("PUT /models/m2: 201", first.status == 201, first)
    stop = time.time() + SECONDS
    lock = threading.Lock()
    answers = {}
    wrong = []

    def documented_error(path, r):
        """The API's JSON error, or on /v2 the protocol's {"error": "..."}."""
        if not path.startswith("/v2/"):
            return r.is_json_error(r.status)
        try:
            return isinstance(r.json()["error"], str)
        except (ValueError, KeyError, TypeError):
            return False

    def call(method, path, body=None):
        r = harness.request(d.port, method, path, body)
        key = "%s %s %d" % (method, path.split("?")[0], r.status)
        with lock:
            answers[key] = answers.get(key, 0) + 1
            if r.status >= 500 or not (r.status < 300 or documented_error(path, r)):
                wrong.append((method, path, r))
        return r

    def uploads():
        while time.time() < stop:
            r = call("PUT", "/models/m2?replace=true", weights)
            if r.status in (200, 201):
                try:
                    m = r.json()
                    ok = m["name"] == "m2" and m["sha256"] == digest
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    with lock:
                        wrong.append(("PUT", "/models/m2?replace=true", r))

    def deletions():
        while time.time() < stop:
            call("DELETE", "/models/m2")

    def repository():
        while time.time() < stop:
            call("POST", "/v2/repository/models/m2/unload")
            r = call("POST", "/v2/repository/models/m2/load")
            if r.status not in (200, 404):
                with lock:
                    wrong.append(("POST", "/v2/repository/models/m2/load", r))

    def activate(name):
        r = call("POST", "/models/%s/activate" % name)
        try:
            ok = r.status != 200 or r.json()["active"] == name
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            with lock:
                wrong.append(("POST", "/models/%s/activate" % name, r))

    def activations():
        while time.time() < stop:
            activate("m2")
            activate("mnist")

    def activations_other_way():
        while time.time() < stop:
            activate("mnist")
            activate("m2")

    threads = [threading.Thread(target=f)
               for f in (uploads, uploads, deletions, repository, repository, activations, activations_other_way)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    puts = sum(n for k, n in answers.items() if k.startswith("PUT") and k.split()[-1] in ("200", "201"))
    suite.check("uploads succeeded while the others raced (%s)" % json.dumps(answers, sort_keys=True), puts >= 10)
    suite.check("every answer is 2xx or the API's JSON error under 500, and every 2xx PUT names the model it "
                "installed (%d wrong)" % len(wrong), not wrong, wrong[:5])
    suite.check("the daemon still serves", harness.request(d.port, "GET", "/healthz").status == 200)
