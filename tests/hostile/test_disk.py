"""test_disk.py - a full disk under the models, data sets and job records.

On a 4 MiB tmpfs (mounting it needs root: skipped otherwise, saying so),
filled up: an upload of a model or a data set, an activation, a training
job and the cancel of a queued job are each answered 507
`insufficient_storage` with a message that names no file of the server,
change nothing and leave no temporary, while images are still denoised. A
POST /train (and a cancel) used to be answered 202 with no record
written, which a restart then did not know, and the other answers were
500s naming the server's paths.
A job whose model does not fit fails saying so, without the paths (its
error is shown to every client). The job records that cannot be written
meanwhile are counted in /metrics and written once there is room again:
a cancelled job's record used to say "running" until a restart made it
"failed". Once space is freed, each works. On the file system made
read-only, they are 500 `io_error` naming MODELS_DIR or STATE_DIR, not
where those are (the log has the paths), and a job running meanwhile
fails naming MODELS_DIR.
"""

import json
import os
import shutil
import subprocess
import sys

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import make_dataset_archives  # noqa: E402

MOUNT_BYTES = 4 << 20


def fill(path, leave):
    """Writes path until the file system has about leave bytes free."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                st = os.statvfs(path)
                free = st.f_bavail * st.f_frsize
                if free <= leave:
                    return
                f.write(b"\0" * min(65536, max(4096, free - leave)))
        except OSError:
            return


def is_full_disk(r, status=507):
    return r.is_json_error(status) and r.json()["error"]["code"] == "insufficient_storage"


def job_record(d, job_id):
    return harness.request(d.port, "GET", "/train/" + job_id).json()


def test_full_disk(suite):
    if os.geteuid() != 0:
        print("  skipped: mounting a small tmpfs needs root", flush=True)
        return
    disk = os.path.join(suite.tmp, "disk")
    os.makedirs(disk)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % MOUNT_BYTES, "tmpfs", disk]).returncode != 0:
        print("  skipped: cannot mount a tmpfs here", flush=True)
        return
    d = None
    try:
        models, data = os.path.join(disk, "models"), os.path.join(disk, "data")
        os.makedirs(models)
        for name in ("mnist", "m1"):
            shutil.copy(os.path.join(suite.root, "models", "mnist-ae.safetensors"),
                        os.path.join(models, name + ".safetensors"))
        shutil.copytree(os.path.join(suite.root, "tests", "fixtures", "mnist-mini"), os.path.join(data, "mnist-mini"))
        d = suite.start("a", "--data-dir", data, "--workers", "1", "--train-threads", "1", "--reload-interval", "0",
                        model="", home=disk)
        weights = open(os.path.join(suite.root, "models", "mnist-ae.safetensors"), "rb").read()
        path = os.path.join(suite.tmp, "upload.tar.gz")
        make_dataset_archives.write_tar(path, make_dataset_archives.images(40), "w:gz")
        archive = open(path, "rb").read()
        job = {"dataset": "mnist-mini", "epochs": 1, "train_limit": 32, "eval_limit": 16, "batch_size": 16}
        json_body = {"Content-Type": "application/json"}
        gray = harness.fixture(suite, "images", "gray8.png")
        filler = os.path.join(disk, "filler")

        # A job that runs until cancelled, and one queued behind it.
        running = harness.request(d.port, "POST", "/train", json.dumps(dict(job, epochs=10000, model_name="long")),
                                  json_body).json()["id"]
        queued = harness.request(d.port, "POST", "/train", json.dumps(dict(job, model_name="behind")),
                                 json_body).json()["id"]
        fill(filler, 0)
        r = harness.request(d.port, "DELETE", "/train/" + queued)
        suite.check("full disk: cancelling a queued job (its record must say so) is 507 insufficient_storage, "
                    "naming no file of the server", is_full_disk(r) and disk.encode() not in r.body, r)
        suite.check("full disk: ... and the job is still queued",
                    harness.request(d.port, "GET", "/train/" + queued).json()["state"] == "queued")
        answers = {
            "PUT /models/m9": harness.request(d.port, "PUT", "/models/m9", weights),
            "POST /models/m1/activate": harness.request(d.port, "POST", "/models/m1/activate"),
            "PUT /datasets/dd": harness.request(d.port, "PUT", "/datasets/dd", archive),
            "POST /train": harness.request(d.port, "POST", "/train", json.dumps(dict(job, model_name="j1")),
                                           json_body),
        }
        for what, r in answers.items():
            suite.check("full disk: %s is 507 insufficient_storage" % what, is_full_disk(r), r)
            suite.check("full disk: %s's message names no file of the server" % what, disk.encode() not in r.body, r)
        listing = harness.request(d.port, "GET", "/models").json()
        suite.check("full disk: no model m9 is listed, and mnist is still the active model",
                    "m9" not in [m["name"] for m in listing["models"]] and listing["active"] == "mnist", listing)
        suite.check("full disk: no data set dd is listed",
                    "dd" not in [x["name"] for x in harness.request(d.port, "GET", "/datasets").json()["datasets"]])
        suite.check("full disk: no job was made", sorted(j["id"] for j in harness.request(d.port, "GET", "/train")
                                                         .json()["jobs"]) == sorted([running, queued]))
        temps = harness.temporaries(disk)
        suite.check("full disk: no temporary is left (%s)" % temps[:3], not temps)
        suite.check("full disk: images are still denoised",
                    harness.request(d.port, "POST", "/denoise", gray).status == 200)

        suite.check("full disk: /metrics counts the running job's record as unsaved, and the failed writes",
                    harness.wait_until(lambda: harness.metric(d.port, "dae_train_records_unsaved") == 1, 10)
                    and harness.metric(d.port, "dae_train_record_write_failures_total") >= 1)
        r = harness.request(d.port, "DELETE", "/train/" + running)
        suite.check("full disk: cancelling a running job is 202 (the job's end writes its record)", r.status == 202, r)
        # Room for a job's record, not for its model.
        os.unlink(filler)
        fill(filler, 64 << 10)
        r = harness.request(d.port, "POST", "/train", json.dumps(dict(job, model_name="j2")), json_body)
        suite.check("nearly full disk: POST /train is 202", r.status == 202, r)
        if r.status == 202:
            ended = harness.wait_until(
                lambda: harness.request(d.port, "GET", "/train/" + r.json()["id"]).json()["state"] == "failed", 30)
            j = harness.request(d.port, "GET", "/train/" + r.json()["id"]).json()
            suite.check("nearly full disk: the job fails, its model not saved for want of space, naming no file of "
                        "the server", ended and "no space left" in (j["error"] or "") and disk not in j["error"], j)
        temps = harness.temporaries(disk)
        suite.check("nearly full disk: no temporary is left (%s)" % temps[:3], not temps)

        os.unlink(filler)
        r = harness.request(d.port, "PUT", "/models/m9", weights)
        suite.check("space freed: PUT /models/m9 is 201", r.status == 201, r)
        r = harness.request(d.port, "POST", "/models/m1/activate")
        suite.check("space freed: POST /models/m1/activate is 200", r.status == 200, r)
        r = harness.request(d.port, "PUT", "/datasets/dd", archive)
        suite.check("space freed: PUT /datasets/dd is 201", r.status == 201, r)
        r = harness.request(d.port, "POST", "/train", json.dumps(dict(job, model_name="j3")), json_body)
        suite.check("space freed: POST /train is 202", r.status == 202, r)
        record = os.path.join(disk, "state", running + ".json")
        suite.check("space freed: the records a full disk held back are written again, the cancelled job's too",
                    harness.wait_until(lambda: harness.metric(d.port, "dae_train_records_unsaved") == 0
                                       and json.load(open(record))["state"] == "cancelled", 15),
                    open(record).read()[:300])

        # A read-only file system: the errors are the server's (500), and
        # name its directories by their flags, not where they are.
        harness.wait_until(lambda: all(j["state"] not in ("queued", "running") for j in
                                       harness.request(d.port, "GET", "/train").json()["jobs"]), 30)
        # A job running when the disk turns read-only: its model cannot be
        # written, and it fails naming MODELS_DIR.
        r = harness.request(d.port, "POST", "/train", json.dumps(dict(job, epochs=400, model_name="j5")), json_body)
        j5 = r.json()["id"] if r.status == 202 else None
        suite.check("a job of 400 epochs is 202", j5 is not None, r)
        if j5 is not None:
            harness.wait_until(lambda: job_record(d, j5)["state"] != "queued", 10)
        if subprocess.run(["mount", "-o", "remount,ro", disk]).returncode == 0:
            if j5 is not None:
                harness.wait_until(lambda: job_record(d, j5)["state"] not in ("queued", "running"), 60)
                j = job_record(d, j5)
                suite.check("read-only disk: the job running meanwhile fails, naming MODELS_DIR/j5, not where it is",
                            j["state"] == "failed" and "MODELS_DIR/j5" in (j["error"] or "")
                            and disk not in j["error"], j.get("error") or j["state"])
            answers = {
                "PUT /models/m8": (harness.request(d.port, "PUT", "/models/m8", weights), "MODELS_DIR/m8"),
                "POST /models/m9/activate": (harness.request(d.port, "POST", "/models/m9/activate"),
                                             "MODELS_DIR/ACTIVE"),
                "DELETE /models/m9": (harness.request(d.port, "DELETE", "/models/m9"), "MODELS_DIR/m9"),
                "POST /train": (harness.request(d.port, "POST", "/train", json.dumps(dict(job, model_name="j4")),
                                                json_body), "STATE_DIR/"),
            }
            for what, (r, named) in answers.items():
                suite.check("read-only disk: %s is 500 io_error naming %s, not where it is" % (what, named),
                            r.is_json_error(500) and named in r.json()["error"]["message"]
                            and disk.encode() not in r.body, r)
            suite.check("read-only disk: the log has the paths", disk + "/models/m9.safetensors" in d.stderr())
            subprocess.run(["mount", "-o", "remount,rw", disk])
    finally:
        if d is not None:
            d.stop()
        subprocess.run(["umount", disk])
