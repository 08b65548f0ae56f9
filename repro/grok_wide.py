"""The delay-law-wide plan (issue 25) read from a store without training anything: which of its trials are
finished, the forms of the delay law held out on those, and the forecast's errors on the held-out runs.

    python repro/grok_wide.py --store S [--set num_threads=1] [--json]

Run `transferlab sweep grok --plan delay-law-wide --store S` to train (it resumes: finished trials are kept);
this script reads whatever is finished so far, so it reports a partial plan honestly. The forecast's constants
are calibrated on seed 0's finished runs (analysis.calibrate_forecast) and measured on the other seeds'.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.grokking import analysis as A
from transferlab.studies.grokking.config import SWEEP_PLANS
from transferlab.studies.registry import get_study
from transferlab.sweep.runner import FINAL, collect, combine, sweep_name, trial_configs


def plan_trials(store: Store, sets: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    study = get_study("grok")
    sp = SWEEP_PLANS["delay-law-wide"]
    base = study.make_config(sp.preset, [f"{k}={v}" for k, v in sp.overrides.items()] + sets)
    configs = trial_configs(study, base, combine(sp.grid, sp.variants), sp.seeds)
    name = sweep_name(study, base, sp.grid, sp.seeds, sp.variants)
    res = collect(study, store, name, configs, {}, trained=[], grid=sp.grid, samples=sp.variants)
    for t in res["trials"]:
        t["records"] = Run(store, study.name, t["run_id"]).metrics() if t["status"] in FINAL else []
    return res["trials"], {"sweep": name, "n_trials": len(configs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--set", action="append", default=[], help="the same --set as the sweep was run with")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--report", action="store_true",
                    help="also write the sweep page of the finished trials (reports/<sweep>-partial.html)")
    args = ap.parse_args(argv)
    store = Store(args.store)
    trials, info = plan_trials(store, args.set)
    done = [t for t in trials if t["status"] in FINAL]
    if args.report:
        from transferlab.studies.grokking.report import write_sweep_report

        part = {"sweep": info["sweep"] + "-partial", "trials": [dict(t) for t in done]}
        info["report"] = str(write_sweep_report(part, store)[0])
        print(info["report"], file=sys.stderr)
    law = A.delay_law(done)
    cal = A.calibrate_forecast([t for t in done if t.get("seed") == 0])
    held = [t for t in done if t.get("seed") != 0]
    fc = A.forecast_errors(held, calibration=cal)
    stops = {"own budget": [0, 0], "1.25 x T_grok": [0, 0]}  # stopped, generalized runs replayed
    for t in held:
        t_grok = t.get("steps_to_generalize")
        if t_grok is None or not t["records"]:
            continue
        own = int(t["steps"])  # the trial's own cap (the plan sets it per architecture)
        for label, budget in (("own budget", own), ("1.25 x T_grok", int(1.25 * t_grok))):
            at = A.early_stop_step(t["records"], t["lr"], t["weight_decay"], budget, t.get("model", "mlp"),
                                   calibration=cal or None)
            stops[label][0] += at is not None
            stops[label][1] += 1
    out = {**info, "finished": len(done), "counts": {s: sum(t["status"] == s for t in trials)
                                                     for s in sorted({t["status"] for t in trials})},
           "forms": law.forms, "excluded": law.excluded, "n_used": law.n_used, "n_censored": law.n_censored,
           "forecast_calibration": cal, "forecast": {k: v for k, v in fc.items() if k != "runs"},
           "forecast_runs": fc["runs"],
           "false_stops": {k: {"stopped": v[0], "of_generalized": v[1]} for k, v in stops.items()}}
    if args.json:
        json.dump(out, sys.stdout, indent=1, default=str)
        return 0
    print(f"{info['sweep']}: {len(done)} of {info['n_trials']} trials finished {out['counts']}")
    for name, f in law.forms.items():
        ci = f["mape_heldout_ci"]
        print(f"  {name:14s} held-out MAPE {f['mape_heldout']!s:.6} [{ci[0]!s:.6}, {ci[1]!s:.6}] n={f['n_heldout']} "
              f"{f.get('constant_name')}={f['constant']!s:.6} (theory {f['theory_constant']}) "
              f"by arch {({k: round(v['mape'], 3) for k, v in f['by_architecture'].items()})} "
              f"by op {({k: round(v['mape'], 3) for k, v in f['by_operation'].items()})}")
    print(f"  excluded: {len(law.excluded)}; censored: {law.n_censored}")
    print(f"  forecast (calibrated on seed 0: {cal}): {out['forecast']}")
    print(f"  early stop replayed on held-out generalized runs: {out['false_stops']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
