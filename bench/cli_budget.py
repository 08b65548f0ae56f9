"""Time one transferlab command from an empty store against its wall-clock budget, the way the issues state
their targets ("at most 60 minutes on 2 cores from an empty store").

    python bench/cli_budget.py --budget-min 60 -- sweep grok --plan delay-law-wide --json
    python bench/cli_budget.py --budget-min 15 -- tour --json
    python bench/cli_budget.py --budget-min 15 -- w2s --preset icl-refine --json

The command runs as `transferlab ARGS --store TMP` in a fresh temporary store (removed afterwards unless
--keep). The load average is sampled every 30 s while it runs (a timing is only worth recording below ~2 on
the 2-core machine). Prints one JSON line: wall seconds, the children's user and system CPU seconds, their peak
RSS, the load before / min / max / after, the exit code, and whether the wall time is within the budget.
Exits with the command's exit code, or 1 when it ran past the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def load1() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, required=True, help="the target, in minutes of wall time")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store (its path is printed)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the transferlab arguments")
    a = ap.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        ap.error("give the transferlab command after --, e.g. -- tour --json")
    store = tempfile.mkdtemp(prefix="tl-budget-")
    # the entry point beside this interpreter (a venv's bin/), else the one on PATH
    here = os.path.join(os.path.dirname(sys.executable), "transferlab")
    exe = here if os.path.exists(here) else shutil.which("transferlab")
    if exe is None:
        print("error: no transferlab command beside this python or on PATH: install the project (make install) "
              "or run this with the venv's python", file=sys.stderr)
        return 2
    samples = [load1()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(30):
            samples.append(load1())

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args, "--store", store], stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    done.set()
    after = load1()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"command": "transferlab " + " ".join(args), "wall_s": round(wall, 1),
           "user_s": round(ru.ru_utime, 1), "sys_s": round(ru.ru_stime, 1), "peak_rss_mb": round(ru.ru_maxrss / 1024),
           "load_before": round(samples[0], 2), "load_min": round(min(samples + [after]), 2),
           "load_max": round(max(samples + [after]), 2), "load_after": round(after, 2), "cpus": os.cpu_count(),
           "exit_code": proc.returncode, "budget_min": a.budget_min, "within_budget": wall <= 60 * a.budget_min,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if a.keep:
        out["store"] = store
    else:
        shutil.rmtree(store, ignore_errors=True)
    print(json.dumps(out))
    return proc.returncode or (0 if out["within_budget"] else 1)


if __name__ == "__main__":
    sys.exit(main())
