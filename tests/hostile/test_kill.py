"""test_kill.py - what a daemon killed with SIGKILL keeps of the writes it
had answered.

One admin client uploads, replaces and deletes models, activates them,
uploads and deletes data sets and submits training jobs, one request at a
time, while the daemon is killed (kill -9) at a random moment. After each
restart on the same directories, the daemon shows every write it had
answered 2xx, and of the request in flight at the kill either all or
nothing: each listed model is the file last uploaded under its name and
serves, the default model is the last one activated, every data set
answered is there and reads, every job answered 202 is listed and none is
left running or queued forever; no temporary is left in the models,
state or data directories.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import make_dataset_archives  # noqa: E402

ROUNDS = 8
# The names the client uploads under (jobs make others).
UPLOADED = ("m2", "m3")


class Expected:
    """The state the acknowledged writes make: the uploaded models by name
    (which file), the active model, the data sets, the jobs' ids."""

    def __init__(self):
        self.models, self.active, self.datasets, self.jobs = {}, "mnist", {"mnist-mini"}, set()

    def copy(self):
        e = Expected()
        e.models, e.active, e.datasets, e.jobs = dict(self.models), self.active, set(self.datasets), set(self.jobs)
        return e

    def after(self, effect):
        """A copy with effect (of a request whose answer was lost) applied."""
        e = self.copy()
        effect(e, None)
        return e

    def writes(self):
        """What the client's requests decide (jobs' ids are checked apart)."""
        return self.models, self.active, self.datasets

    def __repr__(self):
        return "models %s active %s datasets %s" % (self.models, self.active, sorted(self.datasets))


def observed(port, files):
    """The state a restarted daemon shows, in Expected's terms (files maps
    each uploaded file's sha256 to its label), and every model's name."""
    listing = harness.request(port, "GET", "/models").json()["models"]
    e = Expected()
    e.models = {m["name"]: files.get(m["sha256"], "?") for m in listing if m["name"] in UPLOADED}
    e.active = next((m["name"] for m in listing if m.get("active")), None)
    e.datasets = {d["name"] for d in harness.request(port, "GET", "/datasets").json()["datasets"]}
    e.jobs = {j["id"] for j in harness.request(port, "GET", "/train").json()["jobs"]}
    return e, [m["name"] for m in listing]


def unfinished(port):
    jobs = harness.request(port, "GET", "/train").json()["jobs"]
    return [j["id"] for j in jobs if j["state"] in ("queued", "running")]


def test_acknowledged_writes_survive_kill(suite):
    home = os.path.join(suite.tmp, "%s-a" % suite.current)  # harness.Daemon's folder for suite.start("a")
    models, data = os.path.join(home, "models"), os.path.join(home, "data")
    os.makedirs(models)
    for name in ("mnist", "mnist-ae"):
        shutil.copy(os.path.join(suite.root, "models", name + ".safetensors"), models)
    shutil.copytree(os.path.join(suite.root, "tests", "fixtures", "mnist-mini"), os.path.join(data, "mnist-mini"))
    files = {label: open(os.path.join(suite.root, "models", name + ".safetensors"), "rb").read()
             for label, name in (("ae", "mnist-ae"), ("unet", "mnist"))}
    by_sha = {hashlib.sha256(v).hexdigest(): label for label, v in files.items()}
    archive = os.path.join(home, "set.tar.gz")
    make_dataset_archives.write_tar(archive, make_dataset_archives.images(40), "w:gz")
    dataset = open(archive, "rb").read()
    json_body = {"Content-Type": "application/json"}
    rng = random.Random(14)

    def operations():
        """Random (request args, what it does to an Expected if it lands)."""
        while True:
            kind = rng.choice(["put", "put", "delete", "activate", "dput", "ddelete", "train"])
            name, label, dname = rng.choice(UPLOADED), rng.choice(["ae", "unet"]), rng.choice(["d2", "d3"])
            if kind == "put":
                yield ("PUT", "/models/%s?replace=true" % name, files[label]), \
                    lambda e, r, n=name, l=label: e.models.__setitem__(n, l)
            elif kind == "delete":
                yield ("DELETE", "/models/%s" % name), lambda e, r, n=name: e.models.pop(n, None)
            elif kind == "activate":
                target = rng.choice(["mnist", "m2", "m3"])
                yield ("POST", "/models/%s/activate" % target), lambda e, r, t=target: setattr(e, "active", t)
            elif kind == "dput":
                yield ("PUT", "/datasets/%s?replace=true" % dname, dataset), lambda e, r, n=dname: e.datasets.add(n)
            elif kind == "ddelete":
                yield ("DELETE", "/datasets/%s" % dname), lambda e, r, n=dname: e.datasets.discard(n)
            else:
                body = json.dumps({"dataset": "mnist-mini", "epochs": 1, "train_limit": 32, "eval_limit": 16,
                                   "batch_size": 16, "model_name": "job%d" % rng.randrange(10**6)})
                # Its id is in its answer: one in flight at the kill is not followed.
                yield ("POST", "/train", body, json_body), lambda e, r: r is None or e.jobs.add(r.json()["id"])

    ops = operations()
    expected, in_flight, answered = Expected(), None, 0
    gray = harness.fixture(suite, "images", "gray8.png")
    for rnd in range(ROUNDS + 1):
        # --train-keep 0: a fast machine answers over 100 jobs in the 8
        # rounds, and past --train-keep the oldest ended ones are removed.
        d = suite.start("a", "--data-dir", data, "--workers", "1", "--train-threads", "1",
                        "--reload-interval", "0", "--train-keep", "0", model="")
        seen, names = observed(d.port, by_sha)
        if in_flight is not None and seen.writes() != expected.writes():
            expected = expected.after(in_flight)
        suite.check("restart %d shows every answered write, the one in flight all or nothing (%r; expected %r)"
                    % (rnd, seen, expected), seen.writes() == expected.writes())
        missing = expected.jobs - seen.jobs
        suite.check("restart %d lists every job answered 202 (%s missing)" % (rnd, sorted(missing)), not missing)
        # (The restarted daemon's own temporaries, of a job it resumed, are not left.)
        temps = harness.temporaries(home, but_pid=d.proc.pid)
        suite.check("restart %d: no temporary of the killed daemon left in its directories (%s)" % (rnd, temps[:3]),
                    not temps)
        for name in names:
            r = harness.request(d.port, "POST", "/denoise?model=" + name, gray)
            suite.check("restart %d: model %s serves (%r)" % (rnd, name, r), r.status == 200)
        for name in seen.datasets:
            r = harness.request(d.port, "GET", "/datasets/" + name)
            suite.check("restart %d: data set %s reads (%r)" % (rnd, name, r), r.status == 200)
        expected, in_flight = seen, None
        if rnd == ROUNDS:
            # The jobs the kills interrupted ended failed; the queued ones run.
            ended = harness.wait_until(lambda: not unfinished(d.port), 60)
            suite.check("every job ends (%s still queued or running)" % unfinished(d.port), ended)
            break
        killer = threading.Timer(rng.uniform(0.1, 1.0), d.proc.send_signal, (signal.SIGKILL,))
        killer.start()
        while True:
            args, in_flight = next(ops)
            try:
                r = harness.request(d.port, *args, timeout=10)
            except OSError:
                break  # the kill landed: the write may or may not be there
            if r.status < 300:
                in_flight(expected, r)
                answered += 1
        d.proc.wait()
        killer.join()
    suite.check("the client's writes were answered between the kills (%d)" % answered, answered >= 20)
