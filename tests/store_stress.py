"""Processes that share one store, for tests/test_store_stress.py (run as ``python -m tests.store_stress``).

``worker STORE ID RUNS``: open, start, log, checkpoint and finish RUNS runs of its own, as a study does.
``lister STORE STOP``: ``transferlab runs ls --json`` (through the CLI's entry point) until the file STOP
appears; exits non-zero if any listing failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from io import StringIO
from pathlib import Path

from pydantic import Field

from transferlab.core.config import StudyConfig


class StressConfig(StudyConfig):
    worker: int = Field(0, description="which worker process made the run")
    index: int = Field(0, description="the run's number within its worker")


def worker(store_root: str, wid: int, runs: int) -> int:
    import torch

    from transferlab.store import Store

    store = Store(store_root)
    for i in range(runs):
        run = store.open_run("stress", StressConfig(worker=wid, index=i), sweep="stress")
        run.start()
        for step in range(0, 50, 10):
            run.log({"step": step, "loss": 1.0 / (1 + step + wid)})
            if step % 20 == 0:
                run.save_checkpoint(step, {"w": torch.full((4,), float(step))}, {"worker": wid})
        run.finish({"final_loss": 1.0 / (41 + wid), "worker": wid, "index": i})
    return 0


def lister(store_root: str, stop: str) -> int:
    from transferlab.cli.main import main

    failures, listings = 0, 0
    ready = Path(f"{stop}.ready-{os.getpid()}")
    while not Path(stop).exists():
        out, err = StringIO(), StringIO()
        sys.stdout, sys.stderr = out, err
        try:
            code = main(["runs", "ls", "--all", "--json", "--store", store_root])
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        listings += 1
        if code != 0:
            failures += 1
            print(f"runs ls exited {code}: {err.getvalue().strip()}", file=sys.stderr)
        elif out.getvalue().strip():
            json.loads(out.getvalue())  # a listing is always whole JSON
        ready.touch()  # the test starts its writers once every lister lists
        time.sleep(0.05)
    print(json.dumps({"listings": listings, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    if what == "worker":
        sys.exit(worker(args[0], int(args[1]), int(args[2])))
    sys.exit(lister(args[0], args[1]))
