"""Weak-to-strong benchmark: PGR per loss per task (with CIs) and the cached-feature speed target.

    python bench/w2s_bench.py --tasks synthetic-noisy,synthetic-subset --seeds 5 --repeats 3

For every task: one full run (floor, ceiling, 6 losses x seeds) into a fresh store, then the
student phase re-timed ``--repeats`` times on the cached features and baseline (median reported).
Prints a markdown table for docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from transferlab.core import progress
from transferlab.store import Store
from transferlab.studies.w2s.run import make_config, run

LOSSES = ["xent", "confidence", "logconf", "product", "window", "adaptconf"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="synthetic-noisy,synthetic-subset")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="key=value config overrides (numbers only)")
    args = ap.parse_args()
    progress.set_quiet(True)
    extra = {}
    for item in args.set:
        k, v = item.split("=", 1)
        extra[k] = float(v) if "." in v or "e" in v else int(v) if v.isdigit() else v
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        for task in args.tasks.split(","):
            losses = args.losses.split(",")
            t0 = time.perf_counter()
            s = run(
                make_config(task=task, losses=losses, seeds=args.seeds, **extra), store, write_report=False
            )
            first = time.perf_counter() - t0
            student_times = []
            for r in range(args.repeats):
                # a different knn_k changes the config hash (so the students retrain) but not the baseline
                cfg = make_config(task=task, losses=losses, seeds=args.seeds, knn_k=11 + r, **extra)
                t1 = time.perf_counter()
                s2 = run(cfg, store, write_report=False)
                student_times.append(time.perf_counter() - t1)
                assert s2["timing_s"]["baseline_reused"]
            print(
                f"## {task}: first run {first:.1f} s (features {s['timing_s']['features']:.1f} s, "
                f"floor+ceiling {s['timing_s']['baseline']:.1f} s, "
                f"students {s['timing_s']['students']:.1f} s); "
                f"{len(losses)} losses x {args.seeds} seeds on cached features+baseline: median "
                f"{statistics.median(student_times):.2f} s over {args.repeats} (all: "
                f"{', '.join(f'{t:.2f}' for t in student_times)})",
                flush=True,
            )
            for m, d in s["losses"].items():
                p = d["pgr"]
                rows.append(
                    f"| {task} | {m} | {d['weak_acc']['value']:.3f} | {d['student_acc']['value']:.3f} "
                    f"| {d['ceiling_acc']['value']:.3f} | {p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}] "
                    f"| {d['agreement']['value']:.3f} |"
                )
            for t in s["paired_tests"]:
                if t["a"] == "xent":
                    print(
                        f"   xent vs {t['b']}: mean diff {t['mean_diff']:+.4f}, t-test p {t['t_p']:.3g}, "
                        f"Wilcoxon p {t['wilcoxon_p']:.3g}"
                    )
            for r in s.get("sweep", []):
                p = r["pgr"]
                print(
                    f"   size sweep: weak={r['weak_view']} layer gap={r['layer_gap']:g} "
                    f"weak_acc={r['weak_acc']['value']:.3f} "
                    f"PGR {p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
                )
    print("\n| task | loss | weak | student | ceiling | PGR [95% CI] | agreement |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
