#!/usr/bin/env python3
"""Check that exported .ts models load and run in nn~ 1.6.0's libtorch (2.5.1).

    python scripts/check_libtorch_compat.py MODEL.ts [DIR ...]   # each file, or every *.ts in DIR
    python scripts/check_libtorch_compat.py --self-test          # prove the check can fail

Fetches libtorch 2.5.1 once into .cache/libtorch-2.5.1/ (pinned PyPI wheels, ~906 MB
download, ~480 MB kept), builds tools/nn_client against it into .cache/nn_client/2.5.1/
(about a minute), then runs ``nn_client MODEL --strict --threads 1`` on each model and
prints one ``PASS``/``FAIL`` line per file. With ``--also-current`` each model is also run
against this Python's torch, which tells "does not load in 2.5.1" apart from "breaks the
nn~ contract everywhere". Timing warnings (a buffer slower than realtime on this shared
machine) do not fail a model unless ``--strict-timing`` is given.

``--self-test`` writes three tiny models with the running torch and checks the verdicts
that prove the check is real: a valid model passes, a broken one fails, and a model using
``torch.stft`` (whose saved wrapper calls an ``aten::stft`` overload 2.5.1 lacks) passes
with the current torch but fails with libtorch 2.5.1.

``--record FILE`` writes the results as JSON (torch versions, per-model verdicts).
Exit status: 0 when every model got its expected verdict, 1 otherwise, 2 on setup errors.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools" / "nn_client")]  # the nn_client driver is a tool, not installed

from rave_ddsp.files import write_json  # noqa: E402
from nn_client import (NnClientError, build_nn_client, check_models,  # noqa: E402
                       ensure_libtorch, libtorch_version, python_torch_dir, write_example_models)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help=".ts files, or folders holding them")
    ap.add_argument("--libtorch", default="2.5.1", help="libtorch version to check against (default 2.5.1)")
    ap.add_argument("--torch-dir", help="use this libtorch folder instead of fetching one")
    ap.add_argument("--also-current", action="store_true", help="also run each model with this Python's torch")
    ap.add_argument("--args", default="--strict --threads 1",
                    help="nn_client options (default: '--strict --threads 1')")
    ap.add_argument("--strict-timing", action="store_true", help="timing warnings fail a model too")
    ap.add_argument("--self-test", action="store_true", help="check the checker on tiny example models")
    ap.add_argument("--record", help="write the results as JSON to this file")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per nn_client run")
    a = ap.parse_args()

    models = []
    for m in a.models:
        p = Path(m)
        models += sorted(p.glob("*.ts")) if p.is_dir() else [p]
    # expected verdict per (model, libtorch): True = must pass, False = must fail
    expect = {}
    tmp = None
    if a.self_test:
        tmp = tempfile.TemporaryDirectory(prefix="nn_client_selftest-")
        ex = write_example_models(tmp.name)
        models += [ex["valid"], ex["broken"], ex["uses_torch_stft"]]
        expect = {(ex["valid"], "old"): True, (ex["valid"], "current"): True,
                  (ex["broken"], "old"): False, (ex["broken"], "current"): False,
                  (ex["uses_torch_stft"], "old"): False, (ex["uses_torch_stft"], "current"): True}
        a.also_current = True
    if not models:
        ap.error("no models given (or use --self-test)")
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        print("no such file: " + ", ".join(missing), file=sys.stderr)
        return 2

    try:
        t0 = time.monotonic()
        old_dir = Path(a.torch_dir) if a.torch_dir else ensure_libtorch(a.libtorch, quiet=False)
        t1 = time.monotonic()
        runtimes = [("old", old_dir)]
        if a.also_current:
            runtimes.append(("current", python_torch_dir()))
        for _, d in runtimes:
            build_nn_client(d, quiet=False)
        t2 = time.monotonic()
    except NnClientError as e:
        print(f"setup failed: {e}", file=sys.stderr)
        return 2
    print(f"setup: libtorch {t1 - t0:.0f} s, nn_client build(s) {t2 - t1:.0f} s")

    import torch
    record = {"host": platform.platform(), "exported_with_torch": torch.__version__,
              "nn_client_args": a.args, "results": []}
    all_ok = True
    for kind, d in runtimes:
        ver = libtorch_version(d)
        for path, passed, rep, res in check_models(models, d, shlex.split(a.args),
                                                   strict_timing=a.strict_timing, timeout=a.timeout):
            want = expect.get((path, kind), True)
            ok = passed == want
            all_ok &= ok
            why = ""
            if rep.failures:
                why = rep.failures[0]
            elif rep.warnings and not passed:
                why = rep.warnings[0]
            elif res.returncode not in (0, 1, 3):
                why = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else f"exit {res.returncode}"
            note = "" if want else " (expected to fail)"
            timing = " (timing warning ignored)" if passed and res.returncode == 3 else ""
            print(f"{'PASS' if passed else 'FAIL'}  libtorch {ver:7s} {path}{timing}{note}"
                  + (f": {why}" if why and not passed else "")
                  + ("" if ok else "   <-- UNEXPECTED"))
            record["results"].append({"model": str(path), "libtorch": ver, "passed": passed,
                                      "expected": want, "exit_code": res.returncode,
                                      "failures": rep.failures, "warnings": rep.warnings})
    if a.record:
        write_json(a.record, record)
    n = len(record["results"])
    bad = sum(1 for r in record["results"] if r["passed"] != r["expected"])
    print(f"libtorch compatibility check: {'OK' if all_ok else 'NOT OK'} "
          f"({n - bad} of {n} runs as expected)")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
