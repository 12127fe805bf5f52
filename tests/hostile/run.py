#!/usr/bin/env python3
"""run.py - the hostile-client suite: each finding of an attack pass against
dae-server, as a test against the real daemon on a loopback port.

usage: tests/hostile/run.py path/to/dae-server [NAME_SUBSTRING ...]

Runs every test_* function of every tests/hostile/test_*.py module (or only
those whose module:function name contains one of the given substrings) and
ends with "hostile: N passed, M failed"; exits 1 if any check failed.
"""

import glob
import importlib.util
import os
import shutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


def main():
    if len(sys.argv) < 2 or not os.access(sys.argv[1], os.X_OK):
        print("usage: %s path/to/dae-server [NAME ...]" % sys.argv[0], file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(HERE))
    suite = harness.Suite(os.path.abspath(sys.argv[1]), root)
    only = sys.argv[2:]
    t0 = time.time()
    try:
        for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
            mod_name = os.path.basename(path)[:-3]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            for name in sorted(n for n in dir(mod) if n.startswith("test_")):
                full = "%s:%s" % (mod_name, name)
                if only and not any(o in full for o in only):
                    continue
                suite.current = full
                t = time.time()
                try:
                    getattr(mod, name)(suite)
                except Exception:  # a test that raises is one failed check
                    suite.check("raised", False, traceback.format_exc())
                finally:
                    suite.end_test()
                print("  %-60s %5.1f s" % (full, time.time() - t), flush=True)
    finally:
        shutil.rmtree(suite.tmp, ignore_errors=True)
    print("hostile: %d passed, %d failed (%.0f s)" % (suite.passed, suite.failed, time.time() - t0))
    print("%d passed, %d failed" % (suite.passed, suite.failed))
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
