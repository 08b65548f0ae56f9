"""Run `transferlab correlate-zoo --preset default` once and print the per-benchmark findings.

    nice -n 10 python repro/correlate_zoo.py [--preset default] [--store runs]

Results are recorded in docs/RESULTS.md (section "Zoo pretrain -> SFT pairs").
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--store", default="runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from transferlab.core.config import resolve
    from transferlab.studies.correlate.zoo_config import PRESETS, ZooPairsConfig
    from transferlab.studies.correlate.zoo_pairs import run

    cfg = resolve(ZooPairsConfig, presets=PRESETS, preset=args.preset)
    t0 = time.perf_counter()
    res = run(cfg, args.store)
    wall = time.perf_counter() - t0
    c = res["correlate"]
    out = {
        "wall_seconds": wall,
        "csv": res["csv"],
        "report": res["report"],
        "models": [{k: m[k] for k in ("model", "non_embedding_params", "pretrain_val_loss")} for m in res["models"]],
        "benchmarks": {b: {k: v.get(k) for k in ("category", "spearman_accuracy", "spearman_accuracy_ci",
                                                   "kendall_accuracy", "pearson_accuracy", "spearman_confidence",
                                                   "spearman_confidence_ci", "mean_accuracy_pre",
                                                   "mean_accuracy_post", "mean_confidence_pre",
                                                   "mean_confidence_post", "reliability_accuracy")}
                       for b, v in c["benchmarks"].items()},
        "categories": {k: {"spearman_accuracy": v.get("spearman_accuracy"),
                           "spearman_accuracy_ci": v.get("spearman_accuracy_ci"),
                           "spearman_confidence": v.get("spearman_confidence")}
                       for k, v in c["categories"].items()},
        "by_scale": {s: {b: v["benchmarks"][b].get("spearman_accuracy") for b in v["benchmarks"]}
                     for s, v in c["by_scale"].items()},
        "calibration_transfer": c["calibration"]["transfer"],
    }
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
