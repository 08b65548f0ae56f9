"""Measure the forecast of the generalization step on finished grokking runs of a store: the median absolute
relative error of the forecast made at 25% and 50% of each run's own T_grok (from its rows up to then only), and
the false-stop rate of ``forecast_early_stop`` replayed on the runs that did generalize, at their own budget and
at a tight one (1.25 x T_grok).

    python repro/grok_forecast.py --store S [--json]

The forecast's constants are analysis.FORECAST_CALIBRATION unless --calibrate-on-seed is given (then they are
calibrated on that seed's runs and measured on the others').
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.grokking import analysis as A


def runs_of(store: Store) -> list[dict[str, Any]]:
    out = []
    for folder in sorted(store.run_folders()):
        if folder.parent.name != "grokking":
            continue
        run = Run(store, "grokking", folder.name)
        if run.status != "done":
            continue
        cfg = run.config()
        out.append({"run_id": run.id, "records": run.metrics(), "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
                    "model": cfg.get("model", "mlp"), "operation": cfg.get("operation"), "seed": cfg.get("seed"),
                    "steps": cfg["steps"]})
    return out


def measure(runs: list[dict[str, Any]], calibration: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    err = A.forecast_errors(runs, calibration=calibration)
    stops: dict[str, list[bool]] = {"own budget": [], "1.25 x T_grok": []}
    for r in runs:
        ph = A.detect_phases(r["records"])
        if ph.steps_to_generalize is None:
            continue
        for label, budget in (("own budget", r["steps"]), ("1.25 x T_grok", int(1.25 * ph.steps_to_generalize))):
            at = A.early_stop_step(r["records"], r["lr"], r["weight_decay"], budget, r["model"],
                                   calibration=calibration)
            stops[label].append(at is not None)
    return {**{k: v for k, v in err.items() if k != "runs"}, "runs": err["runs"],
            "false_stops": {k: {"stopped": sum(v), "of_generalized": len(v)} for k, v in stops.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--calibrate-on-seed", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    runs = runs_of(Store(args.store))
    cal = None
    if args.calibrate_on_seed is not None:
        cal = A.calibrate_forecast([r for r in runs if r["seed"] == args.calibrate_on_seed])
        runs = [r for r in runs if r["seed"] != args.calibrate_on_seed]
    out = {"calibration": cal or A.FORECAST_CALIBRATION, **measure(runs, cal)}
    if args.json:
        json.dump(out, sys.stdout, indent=1, default=str)
    else:
        print({k: v for k, v in out.items() if k != "runs"})
        for r in out["runs"]:
            print(" ", r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
