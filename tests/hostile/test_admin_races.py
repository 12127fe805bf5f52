"""test_admin_races.py - admin requests on one name racing each other.

Uploads, deletions, v2 unloads and loads and activations of one model,
and uploads, deletions, reads and training jobs of one data set, land in
any order from several clients at once. Every answer is one the API
documents (never a 5xx; on /v2 the protocol's error object), and an
upload answered 200 or 201 describes what it installed, even when another
client deleted it a moment later: both bodies used to be read by name
after the install, and a DELETE in between turned a successful upload
into a 500 ("out of memory" for a model, "cannot read the files" for a
data set), or for a data set a 404 "no data set named" or a 422. A v2
load answers 200 or 404, never "does not load" for a file another client
had just unloaded or deleted.
"""

import hashlib
import json
import os
import sys
import threading
import time

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import make_dataset_archives  # noqa: E402

SECONDS = 3.0


class Race:
    """Counts every answer of a race and keeps the wrong ones."""

    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.answers = {}
        self.wrong = []
        self.stop = time.time() + SECONDS

    def running(self):
        return time.time() < self.stop

    def wrong_one(self, method, path, r):
        with self.lock:
            self.wrong.append((method, path, r))

    def call(self, method, path, body=None, headers=None, allowed=None, fields=None, busy=None):
        """The request; an answer that is neither 2xx nor the API's error
        under 500 (on /v2 the protocol's {"error": "..."}) is wrong, but for
        a 503 whose error code is busy (when given), and so is one whose
        status is not in allowed (when given), or a 2xx whose JSON body
        lacks these fields' values (when given)."""
        r = harness.request(self.port, method, path, body, headers)
        if r.status < 300:
            documented = True
        elif path.startswith("/v2/"):
            try:
                documented = isinstance(r.json()["error"], str)
            except (ValueError, KeyError, TypeError):
                documented = False
        else:
            documented = r.is_json_error(r.status)
        key = "%s %s %d" % (method, path.split("?")[0], r.status)
        with self.lock:
            self.answers[key] = self.answers.get(key, 0) + 1
        busy_now = busy and r.status == 503 and r.is_json_error() and r.json()["error"]["code"] == busy
        if ((r.status >= 500 and not busy_now) or not (r.status < 300 or documented)
                or (allowed and r.status not in allowed) or (fields and r.status < 300 and not has_fields(r, fields))):
            self.wrong_one(method, path, r)
        return r

    def run(self, *loops):
        """Runs each function in a loop on its own thread until the race ends."""
        def forever(fn):
            while self.running():
                try:
                    fn()
                except Exception as e:  # a loop that raised is a wrong answer, not a silent thread
                    self.wrong_one("-", fn.__name__, repr(e))
                    return
        threads = [threading.Thread(target=forever, args=(fn,)) for fn in loops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def succeeded(self, prefix):
        return sum(n for k, n in self.answers.items() if k.startswith(prefix) and k.split()[-1] in ("200", "201"))

    def summary(self):
        return json.dumps(self.answers, sort_keys=True)


def has_fields(r, fields):
    """Whether r's JSON body has these fields' values."""
    try:
        body = r.json()
        return all(body[k] == v for k, v in fields.items())
    except (ValueError, KeyError, TypeError):
        return False


def test_models(suite):
    d = suite.start("a", "--workers", "1", "--reload-interval", "0")
    weights = open(os.path.join(suite.root, "models", "mnist-ae.safetensors"), "rb").read()
    digest = hashlib.sha256(weights).hexdigest()
    first = harness.request(d.port, "PUT", "/models/m2", weights)
    suite.check("PUT /models/m2: 201", first.status == 201, first)
    race = Race(d.port)

    def upload():
        # A good file: installed, or 409 while m2 is the active model.
        race.call("PUT", "/models/m2?replace=true", weights, allowed=(200, 201, 409),
                  fields={"name": "m2", "sha256": digest})

    def repository():
        race.call("POST", "/v2/repository/models/m2/unload")
        race.call("POST", "/v2/repository/models/m2/load", allowed=(200, 404))

    versions = {"m2": "sha256:" + digest[:12], "mnist": harness.request(d.port, "GET", "/models/mnist").json()["version"]}

    def activate(name):
        # The answer is this activation's own: its model and that model's version.
        race.call("POST", "/models/%s/activate" % name, fields={"active": name, "version": versions[name]})

    race.run(upload, upload, lambda: race.call("DELETE", "/models/m2"), repository, repository,
             lambda: (activate("m2"), activate("mnist")), lambda: (activate("mnist"), activate("m2")))
    suite.check("uploads succeeded while the others raced (%s)" % race.summary(), race.succeeded("PUT") >= 10)
    suite.check("every answer is 2xx or the API's JSON error under 500, every 2xx PUT describes its upload, every "
                "load is 200 or 404 (%d wrong)" % len(race.wrong), not race.wrong, race.wrong[:5])
    suite.check("the daemon still serves", harness.request(d.port, "GET", "/healthz").status == 200)


def test_datasets(suite):
    data = os.path.join(suite.tmp, "race-data")
    os.makedirs(data, exist_ok=True)
    archive = os.path.join(data, "upload.tar.gz")
    make_dataset_archives.write_tar(archive, make_dataset_archives.images(40), "w:gz")
    upload_bytes = open(archive, "rb").read()
    d = suite.start("a", "--workers", "1", "--reload-interval", "0", "--train-threads", "1",
                    "--data-dir", os.path.join(data, "sets"))
    race = Race(d.port)

    def upload():
        # A good archive: installed, or 409 (in use by a job, or changed
        # meanwhile) or 503 (another upload being imported); never 404 or 422.
        race.call("PUT", "/datasets/d1?replace=true", upload_bytes, allowed=(200, 201, 409, 503),
                  fields={"name": "d1", "train_count": 36, "test_count": 4})

    def train():
        # The queue fills where training runs slower (the sanitizer build).
        race.call("POST", "/train", json.dumps({"dataset": "d1", "epochs": 1, "train_limit": 16, "eval_limit": 4,
                                                 "batch_size": 16}), {"Content-Type": "application/json"},
                  busy="train_queue_full")
        time.sleep(0.05)

    race.run(upload, upload, lambda: race.call("DELETE", "/datasets/d1"),
             lambda: (race.call("GET", "/datasets/d1"), race.call("GET", "/datasets")), train)
    suite.check("uploads succeeded while the others raced (%s)" % race.summary(), race.succeeded("PUT") >= 5)
    suite.check("every answer is 2xx or the API's JSON error under 500, and every 2xx PUT describes its upload "
                "(%d wrong)" % len(race.wrong), not race.wrong, race.wrong[:5])
    suite.check("the daemon still serves", harness.request(d.port, "GET", "/healthz").status == 200)


def test_weights(suite):
    d = suite.start("a", "--workers", "1", "--reload-interval", "0")
    files = [open(os.path.join(suite.root, "models", name + ".safetensors"), "rb").read()
             for name in ("mnist-ae", "fashion-mnist-ae")]
    digests = {hashlib.sha256(f).hexdigest() for f in files}
    first = harness.request(d.port, "PUT", "/models/m2", files[0])
    suite.check("PUT /models/m2: 201", first.status == 201, first)
    race = Race(d.port)
    turn = [0]

    def upload():
        turn[0] += 1
        race.call("PUT", "/models/m2?replace=true", files[turn[0] % 2], allowed=(200, 201))

    def download():
        # The file of the model it names, or 404 while m2 is deleted.
        r = race.call("GET", "/models/m2/weights", allowed=(200, 404))
        digest = hashlib.sha256(r.body).hexdigest()
        if r.status == 200 and (digest not in digests or r.headers.get("etag") != '"sha256:%s"' % digest):
            race.wrong_one("GET", "/models/m2/weights", "a body of sha256 %s under ETag %s" % (digest, r.headers))

    def delete():
        race.call("DELETE", "/models/m2", allowed=(200, 404))
        time.sleep(0.2)

    race.run(upload, upload, download, download, download, delete)
    suite.check("downloads succeeded while the others raced (%s)" % race.summary(), race.succeeded("GET") >= 10)
    suite.check("every download is the whole file of a model of that name, under its ETag, or 404 (%d wrong)"
                % len(race.wrong), not race.wrong, race.wrong[:5])
