"""Fidelity: steps to grok for every preset, over seeds (issue 2; results in docs/RESULTS.md).

Each preset runs through the study API exactly as `transferlab grok --preset NAME --seeds K` would, in
its own store, and the members' phase statistics are printed as one JSON line per preset.

Usage: python repro/grok_presets.py [--presets nanda2023,default] [--seeds 3] [--store repro-runs]
       [--set steps=19000]   (overrides applied to every preset)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from transferlab.core.config import resolve
from transferlab.store import Store
from transferlab.studies.grokking import PRESETS, GrokConfig
from transferlab.studies.grokking.run import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default=",".join(PRESETS.names()))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--store", default="repro-runs")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.presets.split(","):
        cfg = resolve(GrokConfig, presets=PRESETS, preset=name, overrides=args.set)
        t0 = time.time()
        res = run(cfg, Store(args.store), seeds=args.seeds, raise_on_divergence=False)
        agg = res["aggregate"]
        line = {"preset": name, "seeds": args.seeds, "overrides": args.set,
                "wall_seconds": round(time.time() - t0, 1),
                **{k: {"mean": agg[k]["mean"], "ci95": agg[k]["ci"], "missing": agg[k]["missing"]}
                   for k in ("steps_to_memorize", "steps_to_generalize", "steps_to_val_loss_001",
                             "final_val_acc")},
                "members": [{k: m[k] for k in ("seed", "steps_to_memorize", "steps_to_generalize",
                                               "steps_to_val_loss_001", "final_val_acc")} for m in res["members"]],
                "report": res["report"]}
        print(json.dumps(line), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
