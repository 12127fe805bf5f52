"""test_replicas.py - two daemons sharing one models directory.

Replicas that share a models directory learn of each other's activations
at their next rescan (--reload-interval, or SIGHUP). Before that, one
replica removed or replaced the file of the model the other had just
activated, or activated a model whose file the other had just removed:
the ACTIVE file then named no file, and the replicas served different
default models until someone activated again. An flock on the directory
now makes each check-and-change one step across the replicas: such a
removal or replacement is 409 `model_active`, such an activation 404,
and after a rescan both replicas agree.
"""

import os
import shutil
import signal
import time

import harness


def test_shared_models_directory(suite):
    shared = os.path.join(suite.tmp, "shared-models")
    os.makedirs(shared)
    for name, source in (("mnist", "mnist"), ("b", "mnist-ae"), ("c", "mnist-ae")):
        shutil.copy(os.path.join(suite.root, "models", source + ".safetensors"),
                    os.path.join(shared, name + ".safetensors"))
    one, two = (suite.start(n, "--workers", "1", "--reload-interval", "0", model="", models_dir=shared)
                for n in ("one", "two"))
    weights = open(os.path.join(suite.root, "models", "mnist.safetensors"), "rb").read()

    r = harness.request(two.port, "POST", "/models/b/activate")
    suite.check("replica two activates b", r.status == 200, r)
    r = harness.request(one.port, "DELETE", "/models/b")
    suite.check("replica one cannot remove b, the directory's active model: 409 model_active",
                r.is_json_error(409) and r.json()["error"]["code"] == "model_active", r)
    r = harness.request(one.port, "PUT", "/models/b?replace=true", weights)
    suite.check("replica one cannot replace b's file either: 409 model_active",
                r.is_json_error(409) and r.json()["error"]["code"] == "model_active", r)
    suite.check("b's file is there, as it was",
                open(os.path.join(shared, "b.safetensors"), "rb").read()
                == open(os.path.join(suite.root, "models", "mnist-ae.safetensors"), "rb").read())

    r = harness.request(one.port, "DELETE", "/models/c")
    suite.check("replica one removes c, active nowhere", r.status == 200, r)
    r = harness.request(two.port, "POST", "/models/c/activate")
    suite.check("replica two, which still lists c, cannot activate it: its file is gone (404)",
                r.is_json_error(404), r)
    suite.check("ACTIVE still names b", open(os.path.join(shared, "ACTIVE")).read().strip() == "b")

    for d in (one, two):
        d.proc.send_signal(signal.SIGHUP)

    def views():
        out = []
        for d in (one, two):
            listing = harness.request(d.port, "GET", "/models").json()
            out.append((sorted(m["name"] for m in listing["models"]), listing["active"]))
        return out

    agreed = harness.wait_until(lambda: views() == [(["b", "mnist"], "b")] * 2, 5)
    suite.check("after a rescan both replicas list b and mnist, b active (%s)" % views(), agreed)
    time.sleep(0.1)
    suite.check("both still serve", all(harness.request(d.port, "GET", "/healthz").status == 200 for d in (one, two)))
