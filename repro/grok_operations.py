"""Every Power et al. operation under one recipe: memorized, generalized, steps, over seeds (issue 16).

Each operation runs through the study API as `transferlab grok --preset PRESET --set operation=OP --seeds K`
would, in one store; a run that does not generalize is reported with its diagnosis. Prints a Markdown table
and, with --out, one JSON line per operation.

    python repro/grok_operations.py [--preset default] [--seeds 2] [--store repro-runs/ops]
        [--set train_fraction=0.5 --set steps=20000] [--operations x+y,x-y] [--out ops.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time

from transferlab.core.config import resolve
from transferlab.data.algorithmic import OPERATIONS
from transferlab.store import Store
from transferlab.studies.grokking import PRESETS, GrokConfig
from transferlab.studies.grokking.run import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--operations", default=",".join(OPERATIONS))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--store", default="repro-runs/ops")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for op in args.operations.split(","):
        cfg = resolve(GrokConfig, presets=PRESETS, preset=args.preset, overrides=[f"operation={op}", *args.set])
        t0 = time.time()
        res = run(cfg, Store(args.store), seeds=args.seeds, report=True, raise_on_divergence=False)
        members = res["members"]
        line = {"operation": op, "preset": args.preset, "overrides": args.set, "seeds": args.seeds,
                "wall_seconds": round(time.time() - t0, 1),
                "members": [{k: m.get(k) for k in ("seed", "status", "steps_to_memorize", "steps_to_generalize",
                                                   "final_val_acc", "diagnosis")} for m in members]}
        rows.append(line)
        print(json.dumps(line), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(line) + "\n")
    print("\n| operation | memorized (seeds) | generalized (seeds) | steps to memorize | steps to 99% val | "
          "final val acc | diagnosis |\n|---|---|---|---|---|---|---|")
    for r in rows:
        ms = r["members"]
        mem = [m["steps_to_memorize"] for m in ms if m["steps_to_memorize"] is not None]
        gen = [m["steps_to_generalize"] for m in ms if m["steps_to_generalize"] is not None]
        diag = "; ".join(sorted({m["diagnosis"]["code"] for m in ms if m.get("diagnosis")})) or "-"
        accs = " · ".join(f"{m['final_val_acc']:.3f}" for m in ms)
        print(f"| {r['operation']} | {len(mem)}/{len(ms)} | {len(gen)}/{len(ms)} | "
              f"{' · '.join(str(x) for x in mem) or '-'} | {' · '.join(str(x) for x in gen) or '-'} | "
              f"{accs} | {diag} |")


if __name__ == "__main__":
    main()
