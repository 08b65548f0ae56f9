"""The zoo demo of emulated fine-tuning (issue 5; results in docs/RESULTS.md).

Runs ``transferlab eft demo`` through the API in its own store: pretrain a small and a large zoo
model on prose, fine-tune both on code, and score small-ft, large-ft, up-scaled and down-scaled
EFT on held-out code (target) and prose (source). Prints the 2x2 tables, the fraction of the
small-ft -> large-ft gap that up-scaling closes on the target, and one JSON line of the summary.

Usage: nice -n 10 python repro/eft_zoo_demo.py [--preset default] [--store repro-runs/eft]
       [--set key=value ...] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from transferlab.core.config import resolve
from transferlab.store import Store
from transferlab.studies.eft.demo import PRESETS, EFTDemoConfig, run_zoo_demo


def _frac(g: dict, key: str) -> str:
    x, ci = g[f"{key}_fraction_closed"], g[f"{key}_fraction_ci95"]
    if x is None:
        return "undefined (large-ft not better than small-ft)"
    return f"{x:.3f}" + ("" if ci is None else f" [95% {ci[0]:.3f}, {ci[1]:.3f}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default", choices=PRESETS.names())
    ap.add_argument("--store", default="repro-runs/eft")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=None, help="append the JSON line here")
    args = ap.parse_args()
    cfg = resolve(EFTDemoConfig, presets=PRESETS, preset=args.preset, overrides=args.set)
    t0 = time.time()
    s = run_zoo_demo(cfg, Store(args.store))
    wall = time.time() - t0
    m = s["models"]
    print(
        f"small = {m['small']['size']} ({m['small']['non_embedding_params']:,} non-emb params), "
        f"large = {m['large']['size']} ({m['large']['non_embedding_params']:,}); "
        f"{m['small']['pretrain_tokens']:,} / {m['large']['pretrain_tokens']:,} {cfg.source_corpus} tokens, "
        f"fine-tuned on {cfg.finetune_tokens:,} "
        f"{cfg.target_corpus} tokens ({m['small-ft']['steps']} / {m['large-ft']['steps']} steps); beta = {cfg.beta:g}"
    )
    print(f"scored {s['scored']['target_tokens']:,} target and {s['scored']['source_tokens']:,} source tokens")
    for split in ("target", "source"):
        g = s["grid"][f"{split}_loss"]
        print(f"\n{split} held-out loss ({s[f'{split}_corpus']}), rows = fine-tuning scale, cols = knowledge scale")
        print(f"  {'':12s} {'small':>10s} {'large':>10s}")
        print(f"  {'ft small':12s} {g['ft_small']['pretrain_small']:10.4f} {g['ft_small']['pretrain_large']:10.4f}")
        print(f"  {'ft large':12s} {g['ft_large']['pretrain_small']:10.4f} {g['ft_large']['pretrain_large']:10.4f}")
    rows = {r["model"]: r for r in s["table"]}
    print(
        f"\npretrained bases: small {rows['small']['target_loss']:.4f} / {rows['small']['source_loss']:.4f}, "
        f"large {rows['large']['target_loss']:.4f} / {rows['large']['source_loss']:.4f} (target / source)"
    )
    for split in ("target", "source"):
        g = s["gap"][split]
        print(
            f"{split}: gap small-ft - large-ft = {g['gap']:.4f}; up-scaling closes {_frac(g, 'up')}; "
            f"down-scaling closes {_frac(g, 'down')}"
        )
    up_sweep = [(p["beta"], round(p["target_loss"], 4)) for p in s["beta_sweep"]["eft-up"]]
    print("beta sweep (up-scaled, target):", up_sweep)
    print(f"target (up-scaling closes >= 0.5 of the target gap): {'met' if s['target_met'] else 'missed'}")
    print(f"checks: {s['checks']}")
    print(f"report: {s['report']}  (wall {wall:.0f} s)")
    line = {
        "preset": args.preset,
        "overrides": args.set,
        "wall_seconds": round(wall, 1),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        **{k: s[k] for k in ("grid", "gap", "up_fraction_closed", "target_met", "beta_sweep", "checks", "scored")},
        "table": s["table"],
        "report": s["report"],
    }
    print(json.dumps(line))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
