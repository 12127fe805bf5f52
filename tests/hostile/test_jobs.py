"""test_jobs.py - findings 7, 8 and 10: training jobs and the state on disk.

A DELETE answered 202 always ends the job "cancelled" with no model and no
activation, whatever moment it lands in (training, evaluation, saving,
activating); a job never writes over an existing model (409 at submission,
a failed job if the name is taken while it trains) unless it asks to
replace one that is not active; job records on disk are checked like
requests at start (a bad one is skipped with a log line, ids never wrap, a
job that was being started is never run again); temporaries of
interrupted writes are removed at start; only the newest --train-keep
ended jobs are kept, on disk and listed; and a slow client cannot stretch
the shutdown past the drain deadline by more than a second.

Jobs train on the tiny tests/fixtures/mnist-mini data set, so each takes
well under a second.
"""

import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import zlib

import harness

# A job of a few optimiser steps and a short evaluation.
SMALL = {"dataset": "mnist-mini", "epochs": 1, "train_limit": 64, "eval_limit": 200, "batch_size": 16}


def start(suite, name, *args, env=None):
    """A daemon that trains on the fixtures, one thread per side."""
    return suite.start(name, "--data-dir", os.path.join(suite.root, "tests", "fixtures"),
                       "--train-threads", "1", "--workers", "1", "--reload-interval", "0", *args, env=env)


def daemon_dir(suite, name):
    """The folder suite.start(name) gives a daemon (harness.Daemon's naming):
    starting the same name again reuses its models and state directories."""
    return os.path.join(suite.tmp, "%s-%s" % (suite.current, name))


def submit(d, **fields):
    body = dict(SMALL)
    body.update(fields)
    return harness.request(d.port, "POST", "/train", json.dumps(body),
                           {"Content-Type": "application/json"})


def is_error(r, status, *codes):
    """True when r is the service's JSON error of status (and one of codes)."""
    try:
        e = r.json()["error"]
        return (r.is_json_error(status) if isinstance(e, dict) else False) and (not codes or e["code"] in codes)
    except (ValueError, KeyError, TypeError):
        return False


def job(d, jid):
    return harness.request(d.port, "GET", "/train/%s" % jid).json()


def wait_done(d, jid, timeout=20):
    """Polls the job until it has ended; returns its last JSON."""
    deadline = time.time() + timeout
    while True:
        j = job(d, jid)
        if j["state"] not in ("queued", "running") or time.time() > deadline:
            return j
        time.sleep(0.01)


def active_model(d):
    return harness.request(d.port, "GET", "/models").json()["active"]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def dead_pid():
    """The pid of a process that has just ended."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ------------------------------------------------------------ finding 7

def test_cancel_races(suite):
    d = start(suite, "a")
    models = os.path.join(d.dir, "models")
    # How long one job takes here: the races spread over that time.
    t0 = time.time()
    r = submit(d, model_name="warmup")
    j = wait_done(d, r.json()["id"])
    span = time.time() - t0
    suite.check("a small job succeeds", j["state"] == "succeeded", j)
    rng = random.Random(9)
    n202 = bad = 0
    refused = {}
    for i in range(30):
        name = "race%d" % i
        before = active_model(d)
        r = submit(d, model_name=name, activate=True, seed=i)
        if not suite.check("POST /train: 202", r.status == 202, r):
            continue
        jid = r.json()["id"]
        time.sleep(rng.uniform(0, span * 1.2))
        c = harness.request(d.port, "DELETE", "/train/%s" % jid)
        j = wait_done(d, jid)
        if c.status == 202:
            n202 += 1
            listed = harness.request(d.port, "GET", "/models/%s" % name).status
            leftovers = [f for f in os.listdir(models) if f.startswith(name + ".")]
            after = active_model(d)
            ok = (j["state"] == "cancelled" and not j["activated"] and listed == 404 and not leftovers
                  and after == before)
            if not ok:
                bad += 1
                suite.check("a job whose DELETE answered 202 ends cancelled, no model, no activation", False,
                            "race %d: state %s, activated %s, GET /models/%s %d, files %s, active %s -> %s"
                            % (i, j["state"], j["activated"], name, listed, leftovers, before, after))
        else:
            suite.check("a refused cancel is a JSON 409 job_finished or job_finishing",
                        is_error(c, 409, "job_finished", "job_finishing"), c)
            suite.check("... and that job ends succeeded", j["state"] == "succeeded", j)
            code = c.json().get("error", {}).get("code") if c.status == 409 else c.status
            refused[code] = refused.get(code, 0) + 1
    suite.check("some cancels landed (%d of 30 answered 202; refused: %s)" % (n202, refused), n202 >= 5)
    suite.check("every 202 cancel held (%d of %d broke)" % (bad, n202), bad == 0)


# A job is made only once its record is written: with a state directory
# that cannot be written (here a file), POST /train was answered 202 and
# the job ran unrecorded, unknown to the next start.
def test_unrecorded_job_is_refused(suite):
    home = daemon_dir(suite, "a")
    os.makedirs(home)
    with open(os.path.join(home, "state"), "w") as f:
        f.write("not a directory")
    d = start(suite, "a")
    r = submit(d, model_name="unrecorded")
    suite.check("POST /train with a state directory that cannot be written: 500 io_error saying no job was made",
                is_error(r, 500, "io_error") and "no job was made" in r.json()["error"]["message"], r)
    suite.check("... and no job is listed", harness.request(d.port, "GET", "/train").json()["jobs"] == [])
    time.sleep(0.3)
    suite.check("... and none ran", not os.path.exists(os.path.join(home, "models", "unrecorded.safetensors")))


# ------------------------------------------------------------ finding 8

def test_name_collisions(suite):
    d = start(suite, "a")
    models = os.path.join(d.dir, "models")
    default_version = harness.request(d.port, "GET", "/models/mnist").json()["version"]
    # The active model: never replaced, with or without "replace".
    for extra in ({}, {"activate": False}, {"replace": True}):
        r = submit(d, model_name="mnist", **extra)
        suite.check("a job named after the active model: 409 (%s)" % json.dumps(extra),
                    is_error(r, 409, "model_active", "model_exists"), r)
    suite.check("... and no job was queued", harness.request(d.port, "GET", "/train").json()["jobs"] == [])
    # A model the job made.
    j = wait_done(d, submit(d, model_name="other", seed=1).json()["id"])
    suite.check("a job makes model other", j["state"] == "succeeded", j)
    path = os.path.join(models, "other.safetensors")
    first = sha(path)
    r = submit(d, model_name="other", seed=2)
    suite.check("the same name again: 409 model_exists",
                is_error(r, 409, "model_exists"), r)
    suite.check("... and the file is untouched", sha(path) == first)
    # "replace": true replaces a model that is not active.
    r = submit(d, model_name="other", seed=2, replace=True)
    suite.check("replace: true of a non-active model: 202", r.status == 202, r)
    j = wait_done(d, r.json()["id"]) if r.status == 202 else {}
    suite.check("... the job succeeds and the file is new", j.get("state") == "succeeded" and sha(path) != first, j)
    suite.check("... GET /models/other shows the new version",
                harness.request(d.port, "GET", "/models/other").json()["version"] == j.get("model_version"))
    # A file put in the models directory by hand (not loaded yet) counts too.
    placed = os.path.join(models, "placed.safetensors")
    with open(placed, "wb") as f:
        f.write(open(path, "rb").read())
    r = submit(d, model_name="placed")
    suite.check("a name whose file exists in the models directory: 409 model_exists",
                is_error(r, 409, "model_exists"), r)
    # Two jobs for one name.
    r1 = submit(d, model_name="twice", epochs=3)
    r2 = submit(d, model_name="twice")
    suite.check("a second job for a name a queued or running job will write: 409",
                r1.status == 202 and is_error(r2, 409), (r1, r2))
    wait_done(d, r1.json()["id"])
    # The name taken while the job trains: the job fails, the file stays.
    r = submit(d, model_name="late", epochs=4, train_limit=256)
    jid = r.json()["id"]
    harness.wait_until(lambda: job(d, jid)["state"] != "queued", 10, 0.005)
    late = os.path.join(models, "late.safetensors")
    with open(late, "wb") as f:
        f.write(open(placed, "rb").read())
    j = wait_done(d, jid)
    suite.check("a name taken while the job runs: the job fails naming it, the file is not replaced",
                j["state"] == "failed" and "taken" in (j["error"] or "") and sha(late) == sha(placed), j)
    suite.check("the default model never changed",
                harness.request(d.port, "GET", "/models/mnist").json()["version"] == default_version
                and active_model(d) == "mnist")
    suite.check("no temporary file is left", not [f for f in os.listdir(models) if ".tmp." in f],
                os.listdir(models))


# ------------------------------------------------------------ finding 10

def record(jid, state, request, **fields):
    """A job record as the server writes it."""
    r = {"id": str(jid), "state": state, "progress": 0, "epoch": 0, "epochs": request.get("epochs", 10),
         "step": 0, "steps_per_epoch": 0, "total_steps": 0, "loss": 0, "images_per_second": 0,
         "elapsed_seconds": 0, "eta_seconds": None, "history": [], "error": None,
         "model": request.get("model_name", "x"), "activated": False, "created": "2026-01-01T00:00:00.000Z",
         "request": request}
    r.update(fields)
    return json.dumps(r)


def test_corrupt_records(suite):
    d = start(suite, "a")
    state = os.path.join(d.dir, "state")
    models = os.path.join(d.dir, "models")
    j = wait_done(d, submit(d, model_name="good1").json()["id"])
    suite.check("a first job succeeds", j["state"] == "succeeded" and j["id"] == "1", j)
    d.stop()
    good = open(os.path.join(state, "1.json")).read()
    # Canonical requests, as this server writes them, so an old server runs them.
    req = dict(json.loads(good)["request"], train_limit=32, eval_limit=16, activate=False)
    bad = {
        # The finding: a queued record whose model leaves the models directory.
        "2.json": record(2, "queued", dict(req, model_name="fine2"), model="../../evil"),
        "3.json": record(3, "queued", dict(req, model_name="../../evil3"), model="../../evil3"),
        # An id of 2^64-1: the counter must not wrap onto record 1.
        "18446744073709551615.json": record(18446744073709551615, "succeeded", dict(req, model_name="big")),
        "4.json": record(4, "exploded", dict(req, model_name="four")),
        "5.json": "{garbage",
        "6.json": record(1, "queued", dict(req, model_name="six")),      # id not its file's
        "7.json": record(7, "queued", dict(req, model_name="seven", epochs=0)),
        "8.json": record(8, "succeeded", dict(req, model_name="eight"), progress=7),
        "9.json": record(9, "queued", dict(req, model_name="nine", cheat=1)),
    }
    for name, text in bad.items():
        with open(os.path.join(state, name), "w") as f:
            f.write(text)
    # A job that was running, and one whose "running" record was being
    # written when the process died (its record still says queued).
    with open(os.path.join(state, "10.json"), "w") as f:
        f.write(record(10, "running", dict(req, model_name="ten")))
    with open(os.path.join(state, "11.json"), "w") as f:
        f.write(record(11, "queued", dict(req, model_name="eleven")))
    with open(os.path.join(state, "11.json.tmp.%d.Ab12Cd" % dead_pid()), "w") as f:
        f.write(record(11, "running", dict(req, model_name="eleven"))[:40])
    d = start(suite, "a")
    err = d.stderr()
    for name in bad:
        suite.check("a bad record is skipped with a log line naming it (%s)" % name,
                    re.search(re.escape(name) + r".*(skipped|not a valid)", err) is not None)
    jobs = {j["id"]: j for j in harness.request(d.port, "GET", "/train").json()["jobs"]}
    suite.check("only the valid records are listed", sorted(jobs, key=int) == ["1", "10", "11"], sorted(jobs))
    suite.check("the running one is failed, interrupted",
                jobs.get("10", {}).get("state") == "failed" and "interrupted" in (jobs["10"]["error"] or ""))
    suite.check("the one being started is failed, interrupted, not run again",
                jobs.get("11", {}).get("state") == "failed" and "interrupted" in (jobs["11"]["error"] or ""),
                jobs.get("11"))
    ids = []
    for i in range(2):
        r = submit(d, model_name="new%d" % i)
        if r.status == 202:
            ids.append(r.json()["id"])
            wait_done(d, ids[-1])
    suite.check("new jobs get ids above every record, without wrapping",
                len(ids) == 2 and all(i.isdigit() and int(i) > 11 for i in ids), ids)
    suite.check("record 1.json is untouched", open(os.path.join(state, "1.json")).read() == good)
    time.sleep(0.2)
    escaped = [os.path.join(dp, f) for dp, _, fs in os.walk(suite.tmp) for f in fs if "evil" in f]
    escaped += [f for f in os.listdir(os.path.dirname(suite.tmp)) if f.startswith("evil")]
    suite.check("nothing is written outside the models directory", not escaped, escaped)
    for name in ("six", "seven", "nine", "ten", "eleven", "fine2"):
        suite.check("no record that was skipped or interrupted ran (%s)" % name,
                    not os.path.exists(os.path.join(models, name + ".safetensors")))
    suite.check("the state directory holds no temporary", not [f for f in os.listdir(state) if ".tmp." in f])
    # Alone in its directory, an id of 2^64-1 is the only thing the counter sees.
    d.stop()
    home = daemon_dir(suite, "b")
    os.makedirs(os.path.join(home, "state"))
    with open(os.path.join(home, "state", "18446744073709551615.json"), "w") as f:
        f.write(record(18446744073709551615, "succeeded", dict(req, model_name="big")))
    d = start(suite, "b")
    r = submit(d, model_name="after_big")
    suite.check("after a record with id 2^64-1, the next job is 1, not a wrapped 0",
                r.status == 202 and r.json()["id"] == "1", r)


def test_stale_temps(suite):
    home = daemon_dir(suite, "a")
    models, state = os.path.join(home, "models"), os.path.join(home, "state")
    os.makedirs(models)
    os.makedirs(state)
    gone, me = dead_pid(), os.getpid()
    stale = [os.path.join(models, "x.safetensors.tmp.%d.AbCdEf" % gone),
             os.path.join(models, "ACTIVE.tmp.%d.XyZ123" % gone),
             os.path.join(models, "old.safetensors.tmp.%d.QwErTy" % me),
             os.path.join(state, "3.json.tmp.%d.ZzZzZz" % me),
             os.path.join(state, "4.json.tmp.%d.YyYyYy" % gone)]
    fresh = os.path.join(models, "y.safetensors.tmp.%d.KeEpMe" % me)
    for p in stale + [fresh]:
        with open(p, "wb") as f:
            f.write(b"partial")
    hour_ago = time.time() - 3600
    os.utime(stale[2], (hour_ago, hour_ago))
    d = start(suite, "a")
    for p in stale:
        suite.check("a temporary of an interrupted write is removed at start (%s)" % os.path.basename(p),
                    not os.path.exists(p))
    suite.check("a fresh temporary of a live process in the models directory is kept (another replica's write)",
                os.path.exists(fresh))
    suite.check("the server serves", harness.request(d.port, "GET", "/healthz").status == 200)


# ------------------------------------------------------------ records kept

def listed_ids(d):
    return sorted((j["id"] for j in harness.request(d.port, "GET", "/train").json()["jobs"]), key=int)


def record_ids(state):
    return sorted((f[:-5] for f in os.listdir(state) if f.endswith(".json")), key=int)


# Records were kept forever: every ended job stayed in memory (with up to
# 128 KiB of loss curve), on disk, and in every GET /train, which anyone
# may call. --train-keep bounds them: the newest N ended jobs stay, the
# oldest go, records first; queued and running jobs always stay, ids are
# never given twice, and an event stream of a job removed ends.
def test_old_jobs_are_removed(suite):
    d = start(suite, "a", "--train-keep", "3")
    state = os.path.join(d.dir, "state")
    # A long job holds the runner while the next ones queue.
    first = submit(d, model_name="long", epochs=10000).json()["id"]
    queued = [submit(d, model_name="q%d" % i).json()["id"] for i in range(5)]
    c = harness.request(d.port, "DELETE", "/train/%s" % queued[2])
    suite.check("a queued job cancelled: 202", c.status == 202, c)
    suite.check("while one job runs and 4 wait, all 6 are listed (1 ended, 3 kept)",
                listed_ids(d) == [first] + queued, listed_ids(d))
    harness.request(d.port, "DELETE", "/train/%s" % first)
    for jid in queued:
        wait_done(d, jid)
    harness.wait_until(lambda: len(listed_ids(d)) == 3, 5)
    newest = sorted([first] + queued, key=int)[-3:]
    suite.check("once all 6 ended, the 3 newest are listed", listed_ids(d) == newest, listed_ids(d))
    suite.check("... and only their records are on disk", record_ids(state) == newest, record_ids(state))
    gone = [first, queued[0], queued[1]]
    for jid in gone:
        for path in ("/train/%s", "/train/%s/loss.csv", "/train/%s/events"):
            r = harness.request(d.port, "GET", path % jid)
            suite.check("a removed job is gone: GET %s 404" % (path % jid), is_error(r, 404, "job_not_found"), r)
    metrics = harness.request(d.port, "GET", "/metrics").body.decode()
    suite.check("dae_train_jobs_removed_total counts them",
                re.search(r"^dae_train_jobs_removed_total 3$", metrics, re.M) is not None)
    suite.check("the models the removed jobs made stay",
                harness.request(d.port, "GET", "/models/q0").status == 200)
    suite.check("the log names each job removed",
                all(re.search(r"job %s: removed \(--train-keep 3" % jid, d.stderr()) for jid in gone))

    # A lower --train-keep takes effect at start; ids go on from the newest.
    d.stop()
    d = start(suite, "a", "--train-keep", "1")
    suite.check("restarted with --train-keep 1: the newest job is listed", listed_ids(d) == newest[-1:],
                listed_ids(d))
    suite.check("... and only its record is on disk", record_ids(state) == newest[-1:], record_ids(state))
    r = submit(d, model_name="after")
    suite.check("the next job's id follows the newest, never one given before",
                r.status == 202 and int(r.json()["id"]) == int(newest[-1]) + 1, r)
    after = r.json()["id"]
    wait_done(d, after)

    # An event stream of a job removed at its end ends too. With one ended
    # job kept, a queued job cancelled after a newer one is removed at once.
    hold = submit(d, model_name="hold", epochs=10000).json()["id"]
    older = submit(d, model_name="older").json()["id"]
    newer = submit(d, model_name="newer").json()["id"]
    harness.request(d.port, "DELETE", "/train/%s" % newer)
    sock = socket.create_connection((harness.HOST, d.port), timeout=10)
    sock.sendall(b"GET /train/%s/events HTTP/1.1\r\nHost: t\r\n\r\n" % older.encode())
    head = sock.recv(65536)
    suite.check("an event stream of a queued job opens", head.startswith(b"HTTP/1.1 200"), head[:80])
    t0 = time.time()
    c = harness.request(d.port, "DELETE", "/train/%s" % older)
    rest = b""
    try:
        while b"\r\n0\r\n\r\n" not in head + rest:  # the chunked body's end
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except socket.timeout:
        pass
    sock.close()
    suite.check("... cancelled (202) and removed at once (a newer job ended)",
                c.status == 202 and older not in listed_ids(d), (c, listed_ids(d)))
    suite.check("... its stream ends at once instead of waiting for the idle timeout (%.1f s)" % (time.time() - t0),
                time.time() - t0 < 5 and b"\r\n0\r\n\r\n" in head + rest, rest[-80:])
    harness.request(d.port, "DELETE", "/train/%s" % hold)
    harness.wait_until(lambda: hold not in listed_ids(d), 10)  # older than the newest ended: removed too

    # --train-keep 0 keeps every record.
    d.stop()
    d = start(suite, "a", "--train-keep", "0")
    for i in range(2):
        wait_done(d, submit(d, model_name="all%d" % i).json()["id"])
    suite.check("--train-keep 0: no job is removed", len(listed_ids(d)) == 3 and len(record_ids(state)) == 3,
                (listed_ids(d), record_ids(state)))


# ------------------------------------------------------------ answers held

MIB = 1 << 20


def write_long_records(state, template, n, epochs):
    """n ended jobs of epochs epochs each, ids 1..n, made from the record
    template of a real job: what a server that has run long jobs keeps."""
    for f in os.listdir(state):
        os.remove(os.path.join(state, f))
    for i in range(1, n + 1):
        r = dict(template, id=str(i), epochs=epochs, epoch=epochs, model="long%d" % i)
        r["request"] = dict(template["request"], epochs=epochs, model_name=r["model"])
        r["links"] = {"self": "/train/%d" % i, "events": "/train/%d/events" % i, "model": "/models/" + r["model"]}
        r["step"] = r["total_steps"] = template["steps_per_epoch"] * epochs
        r["history"] = [dict(template["history"][e % len(template["history"])], epoch=e + 1) for e in range(epochs)]
        with open(os.path.join(state, "%d.json" % i), "w") as f:
            json.dump(r, f, separators=(",", ":"))


def unanswered(socks):
    """The sockets of socks that have no answer to read yet, and the first
    bytes of those that have."""
    waiting, answered = [], []
    for s in socks:
        s.setblocking(False)
        try:
            answered.append((s, s.recv(65536)))
        except (BlockingIOError, InterruptedError):
            waiting.append(s)
        s.setblocking(True)
    return waiting, answered


# The job list, a job's record and its loss curve are made per request,
# and anyone may ask for them. Each of 20 connections that asked for a
# 150 MB job list and read nothing held a copy of its own (3.1 GB); now
# each made answer over 64 KiB is held against the memory budget, within
# the client's share, until it is sent or the client leaves.
def test_job_answers_are_held_within_the_budget(suite):
    d = start(suite, "a")
    jid = submit(d, epochs=2).json()["id"]
    wait_done(d, jid)
    state = os.path.join(d.dir, "state")
    template = json.load(open(os.path.join(state, "%s.json" % jid)))
    d.stop()
    write_long_records(state, template, 20, 3000)
    budget = 32 * MIB  # a client's share (75%): 24 MiB
    d = start(suite, "a", env={"DAE_MEMORY_BUDGET": str(budget), "DAE_ACCESS_LOG": "off"})
    size = len(harness.request(d.port, "GET", "/train").body)
    suite.check("20 jobs of 3,000 epochs: a job list of %.1f MB" % (size / 1e6), size > 4 * MIB)
    idle_kb = d.rss_kb()
    socks = []
    try:
        for _ in range(20):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect((harness.HOST, d.port))
            s.sendall(b"GET /train HTTP/1.1\r\nHost: t\r\n\r\n")
            socks.append(s)
        time.sleep(1)
        rss_kb = d.rss_kb()
        suite.check("20 unread job lists: RSS grew %d MiB, within the client's share of the budget"
                    % ((rss_kb - idle_kb) // 1024), (rss_kb - idle_kb) * 1024 <= budget * 3 // 4,
                    "idle %d MiB" % (idle_kb // 1024))
        waiting, answered = unanswered(socks)
        refused = [(s, first) for s, first in answered if first.startswith(b"HTTP/1.1 503")]
        suite.check("... the lists that fit are sent, the others refused (%d refused)" % len(refused),
                    len(refused) >= 20 - (budget * 3 // 4) // size - 1, [a[1][:12] for a in answered])
        if refused:
            r = harness.read_response(refused[0][0], 5, refused[0][1])
            suite.check("... with 503 memory_budget JSON and Retry-After",
                        is_error(r, 503, "memory_budget") and "retry-after" in r.headers, r)
        other = "127.0.0.2"
        r = harness.request(d.port, "GET", "/train/1", source=other)
        suite.check("another client meanwhile reads a job (200)", r.status == 200 and r.json()["epoch"] == 3000, r)
        r = harness.request(d.port, "POST", "/denoise", harness.fixture(suite, "images", "gray8.png"),
                            {"Content-Type": "image/png"}, source=other)
        suite.check("... and is served /denoise (200)", r.status == 200, r)
    finally:
        for s in socks:
            s.close()

    def given_back():
        m = harness.request(d.port, "GET", "/metrics").body.decode()
        return re.search(r"^dae_memory_reserved_bytes 0$", m, re.M) is not None
    suite.check("once those clients leave, the budget is given back", harness.wait_until(given_back, 5))
    r = harness.request(d.port, "GET", "/train")
    suite.check("... and the job list is sent whole again", r.status == 200 and len(r.body) == size, r)
    # An event stream sends the job's shared text in many pieces.
    events = harness.request(d.port, "GET", "/train/7/events")
    record = harness.request(d.port, "GET", "/train/7")
    m = re.fullmatch(rb"event: done\ndata: (.*)\n\n", events.body, re.S)
    suite.check("an ended job's %d KB record comes whole as its done event" % (len(record.body) // 1000),
                m is not None and json.loads(m.group(1)) == record.json(), events.body[:60] + events.body[-60:])
    for path, plain in (("/train/7", record.body), ("/train/7/loss.svg", None)):
        plain = plain or harness.request(d.port, "GET", path).body
        zipped = [harness.request(d.port, "GET", path, headers={"Accept-Encoding": "gzip"}) for _ in range(2)]
        suite.check("%s gzip'd, made once and sent twice, is the plain answer" % path,
                    all(z.headers.get("content-encoding") == "gzip" and zlib.decompress(z.body, 31) == plain
                        for z in zipped), zipped)
    plain = r.body
    r = harness.request(d.port, "GET", "/train", headers={"Accept-Encoding": "gzip"})
    suite.check("... gzip'd too (its jobs' texts deflated once, joined)",
                r.status == 200 and r.headers.get("content-encoding") == "gzip" and zlib.decompress(r.body, 31) == plain,
                r)

    # A list that no request may ever hold is refused, saying so.
    d.stop()
    d = start(suite, "a", env={"DAE_MEMORY_BUDGET": str(4 * MIB), "DAE_ACCESS_LOG": "off"})
    r = harness.request(d.port, "GET", "/train")
    suite.check("with a 4 MiB budget the job list is refused: 503 memory_budget",
                is_error(r, 503, "memory_budget") and "more than one request may ever hold" in r.body.decode(), r)
    r = harness.request(d.port, "GET", "/train/20/loss.svg")
    suite.check("... while a job's record and loss curve are sent",
                harness.request(d.port, "GET", "/train/20").status == 200 and r.status == 200, r)


# ------------------------------------------------------------ shutdown

def test_shutdown_slow_clients(suite):
    drain = 2
    d = start(suite, "a", "--drain-timeout", str(drain))
    r = submit(d, model_name="long", epochs=10000)
    jid = r.json()["id"]
    harness.wait_until(lambda: job(d, jid)["state"] == "running", 10, 0.01)
    socks = []
    stop = threading.Event()

    def trickle(s):
        while not stop.is_set():
            try:
                s.sendall(b"x")
            except OSError:
                return
            stop.wait(0.2)

    # A body trickling in, half a request head, an event stream nobody reads.
    s = socket.create_connection((harness.HOST, d.port))
    s.sendall(b"POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
    socks.append(s)
    threading.Thread(target=trickle, args=(s,), daemon=True).start()
    s = socket.create_connection((harness.HOST, d.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    socks.append(s)
    s = socket.create_connection((harness.HOST, d.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /train/%s/events HTTP/1.1\r\nHost: x\r\n\r\n" % jid.encode())
    socks.append(s)
    time.sleep(0.5)
    t0 = time.time()
    rc = d.stop(signal.SIGTERM, timeout=drain + 10)
    took = time.time() - t0
    stop.set()
    for s in socks:
        s.close()
    suite.check("SIGTERM with slow clients: exit 0 within the drain deadline + 1 s (%.2f s, drain %d s)"
                % (took, drain), rc == 0 and took <= drain + 1.0, "rc %s" % rc)
    d = start(suite, "a")
    j = job(d, jid)
    suite.check("the training job was recorded interrupted", j["state"] == "failed" and "interrupted" in j["error"], j)
