"""Weak-to-strong with weak and strong models from the model zoo, on stdlib text tasks.

Builds (or reuses) the zoo at ``<store>/zoo``, then for each task runs the frozen-feature w2s study
with weak = the smallest size, strong = the largest, the sizes between as mid rungs (bootstrapping
and the size sweep), and prints a Markdown table of PGR per loss with 95% intervals plus the
size-gap sweep (every smaller-weak / larger-strong pair against the ratio of non-embedding params).

    nice -n 10 python repro/w2s_zoo.py --store runs --sizes xs,s,m --tokens 300000 \\
        --tasks stdlib-kind,stdlib-raises --seeds 5

Run on 1 torch thread (tiny models; more threads are slower on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from transferlab.core.errors import TransferlabError
from transferlab.store import Store
from transferlab.studies.w2s.run import make_config, run
from transferlab.zoo import Zoo, parse_sizes
from transferlab.zoo.build import ZooConfig, build_zoo

LOSSES = "xent,confidence,logconf,product,window,adaptconf"


def _fmt(d: dict) -> str:
    v, lo, hi = d["value"], d["lo"], d["hi"]
    if v != v:
        return "undefined"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo == lo else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="runs")
    ap.add_argument("--sizes", default="xs,s,m")
    ap.add_argument("--tokens", type=int, default=300_000, help="zoo training tokens per model (if built)")
    ap.add_argument("--tasks", default="stdlib-kind,stdlib-raises")
    ap.add_argument("--losses", default=LOSSES)
    ap.add_argument("--label-methods", default="bootstrap", help="knn-refine,bootstrap or '' for none")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", default=None, help="write all summaries as JSON here")
    ap.add_argument("--zoo-corpus", default="prose", help="zoo:<size> picks among this corpus's models")
    args = ap.parse_args()
    torch.set_num_threads(1)
    store = Store(args.store)
    sizes = parse_sizes(args.sizes)
    have = {e["size"] for e in Zoo(store.root / "zoo").entries(corpus=args.zoo_corpus or None)}
    t0 = time.perf_counter()
    if not set(sizes) <= have:
        build_zoo(ZooConfig(sizes=sizes, tokens=args.tokens, tokens_per_param=None), store)
    print(f"zoo ready in {time.perf_counter() - t0:.0f} s: {store.root / 'zoo'}")
    results = {}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        cfg = make_config(
            task=task,
            losses=args.losses,
            label_methods=args.label_methods,
            seeds=args.seeds,
            weak_model=f"zoo:{sizes[0]}",
            strong_model=f"zoo:{sizes[-1]}",
            mid_models=[f"zoo:{s}" for s in sizes[1:-1]],
            max_length=args.max_length,
            zoo_corpus=args.zoo_corpus or None,
            num_threads=1,
        )
        t1 = time.perf_counter()
        try:
            summary = run(cfg, store)
        except TransferlabError as err:  # e.g. PGR undefined: the weak model is as good as the ceiling
            print(f"\n### {task}: not measurable: {err.one_line()}")
            continue
        wall = time.perf_counter() - t1
        results[task] = summary
        print(f"\n### {task} ({summary['n_examples']} texts, {args.seeds} seeds, {wall:.0f} s wall)")
        print(f"report: {Path(summary['run_dir']) / 'report.html'}")
        print("timing_s:", json.dumps(summary.get("timing_s", {})))
        print("\n| loss | weak | student | ceiling | PGR [95% CI] | agreement |\n|---|---|---|---|---|---|")
        for m, d in summary["losses"].items():
            agree = _fmt(d["agreement"]) if "agreement" in d else "-"
            print(
                f"| {m} | {d['weak_acc']['value']:.3f} | {d['student_acc']['value']:.3f} | "
                f"{d['ceiling_acc']['value']:.3f} | {_fmt(d['pgr'])} | {agree} |"
            )
        print("\nsize sweep (xent student):\n")
        print("| weak -> strong | params ratio | weak | student | ceiling | PGR [95% CI] |")
        print("|---|---|---|---|---|---|")
        for r in summary.get("sweep", []):
            print(
                f"| {r['weak_view']} -> {r['strong_view']} | {r['param_ratio']:.2f} | "
                f"{r['weak_acc']['value']:.3f} | {r['student_acc']['value']:.3f} | "
                f"{r['ceiling_acc']['value']:.3f} | {_fmt(r['pgr'])} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
