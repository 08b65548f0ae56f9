"""prieto2025 side by side with the official code of Prieto et al. 2025 (grokking at the edge of numerical
stability, LucasPrietoAl/grokking-at-the-edge-of-numerical-stability).

Runs the reference's own MLP, dataset, loss functions and OrthoGrad wrapper, in the loop of its
``grokking_experiments.py`` (full batch, a fresh permutation each epoch, float32 weights), for one of its
Fig. 1 runs, beside our preset of the same name (through the study API), and compares the initial squared
weight norm, the train/validation accuracy curves, and the steps to memorize and to generalize.

    git clone https://github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability /somewhere/prieto
    python repro/prieto2025_side_by_side.py --reference /somewhere/prieto --run stablemax --steps 2000
    python repro/prieto2025_side_by_side.py --reference /somewhere/prieto --run stablemax --steps 20000 --no-ours

The Fig. 1 budget (80,000 full-batch steps, about 85 CPU-minutes a side) outlasts a session, so with ``--store
DIR`` (a folder outside the repository) both sides checkpoint every ``--checkpoint-every`` steps and rerunning the
same command continues where the last one stopped (kill it at any time); one process per side:

    for side in reference ours; do python repro/prieto2025_side_by_side.py --reference /somewhere/prieto \
        --run stablemax --steps 80000 --every 200 --checkpoint-every 1000 --stop-after-generalized 500 \
        --store /somewhere/stablemax --side $side & done
    python repro/prieto2025_side_by_side.py --store /somewhere/stablemax --plot stablemax.html  # curves so far

The Fig. 1 commands (its run_main_experiments.sh): StableMax ``--lr 0.01 --num_epochs 80000 --train_fraction
0.4 --loss_function stablemax --beta2 0.999``; ⊥Grad ``--lr 0.01 --num_epochs 300 --train_fraction 0.4 --beta2
0.99 --orthogonal_gradients`` (float32 softmax cross-entropy). Defaults of its utils.py: MLP 226 -> 200 -> 200
-> 113 without bias, AdamW, weight decay 0, eps 1e-25, seed 42, p = 113, x + y. Its datasets.py imports
torchvision (unused for these runs): a stub module stands in when torchvision is not installed. The two sides
use their own split of the same size (the reference: ``random_split`` on the global generator; ours: a seeded
randperm), so the curves agree in distribution, not example for example. Results: docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
import types
from pathlib import Path

import side_by_side  # repro/side_by_side.py (the script's own folder is on sys.path)
import torch
from side_by_side import norm_sq

RUNS = {"stablemax": "prieto2025-stablemax", "orthograd": "prieto2025-orthograd"}
# The paper's Fig. 1(b) (this StableMax run; its script logs every 5,000 epochs): test accuracy at each logged
# epoch, read by eye off the published figure (teaser.png in the official repository), so good to about 1-2 points.
PAPER_FIG1B_TEST_ACC = {0: 0.005, 5000: 0.0, 10000: 0.0, 15000: 0.003, 20000: 0.008, 25000: 0.02, 30000: 0.055,
                        35000: 0.13, 40000: 0.27, 45000: 0.46, 50000: 0.64, 55000: 0.78, 60000: 0.88,
                        65000: 0.93, 70000: 0.955, 75000: 0.97}


def _import_reference(ref_dir: Path) -> dict:
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:  # datasets.py imports it and never uses it for these runs
            tv = types.ModuleType("torchvision")
            tv.datasets = types.ModuleType("torchvision.datasets")
            sys.modules["torchvision"], sys.modules["torchvision.datasets"] = tv, tv.datasets
    sys.path.insert(0, str(ref_dir))
    import binary_operations
    import datasets
    import models
    import orthograd
    import utils

    return {"ops": binary_operations, "datasets": datasets, "models": models, "orthograd": orthograd,
            "utils": utils}


def reference_curve(ref_dir: Path, run: str, steps: int, every: int, seed: int, store: Path | None = None,
                    checkpoint_every: int = 1000, stop_after_generalized: int = -1) -> dict:
    """The reference's Fig. 1 run, set up as its grokking_experiments.py does (seeds, dataset, random_split,
    model, optimizer, in that order, so the split and init are the same on every rerun), then driven by
    ``side_by_side.resumable_loop``; with ``store`` it checkpoints into ``store/reference`` and resumes there."""
    ref = _import_reference(ref_dir)
    random.seed(seed)
    torch.manual_seed(seed)
    dataset = ref["datasets"].AlgorithmicDataset(ref["ops"].add_mod, p=113, input_size=113, output_size=113)
    n_train = int(0.4 * len(dataset))
    train, test = torch.utils.data.random_split(dataset, [n_train, len(dataset) - n_train])
    model = ref["models"].MLP(input_size=226, output_size=113, hidden_sizes=[200, 200], bias=False)
    beta2 = 0.999 if run == "stablemax" else 0.99
    base = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0, eps=1e-25, betas=(0.9, beta2))
    if run == "orthograd":  # as grokking_experiments.py builds it (its inner AdamW keeps its own defaults)
        opt = ref["orthograd"].OrthoGrad(model.parameters(), type(base), lr=0.01, weight_decay=0.0)
        opt.load_state_dict(base.state_dict())
        loss_fn = ref["utils"].cross_entropy_float32
    else:
        opt = base
        loss_fn = ref["utils"].stablemax_cross_entropy
    x = dataset.data[train.indices]
    y = dataset.targets[train.indices].long()
    xv = dataset.data[test.indices]
    yv = dataset.targets[test.indices].long()
    n0 = norm_sq(model)
    split_sha = hashlib.sha256(torch.tensor(train.indices).numpy().tobytes()).hexdigest()[:16]
    identity = {"run": run, "seed": seed, "every": every, "train_indices_sha256": split_sha}
    out = side_by_side.resumable_loop(
        model, opt, loss_fn, x, y, xv, yv, steps=steps, every=every,
        ckpt_dir=None if store is None else store / "reference" / "checkpoints", checkpoint_every=checkpoint_every,
        csv_path=None if store is None else store / "reference.csv", stop_after_generalized=stop_after_generalized,
        identity=identity)
    return {**out, "initial_norm_sq": n0, "n_train": n_train}


def ours_curve(run: str, steps: int, every: int, seed: int, threads: int, store: Path | None = None,
               checkpoint_every: int = 1000, stop_after_generalized: int = -1) -> dict:
    if store is None:
        return side_by_side.ours_curve(RUNS[run], steps, every, seed, threads)
    return side_by_side.ours_resumable(RUNS[run], steps, every, seed, threads, store / "ours", store / "ours.csv",
                                       checkpoint_every=checkpoint_every,
                                       stop_after_generalized=stop_after_generalized)


def plot(store: Path, out: Path, title: str, budget: int = 80_000) -> None:
    """The two sides' curves so far (``store/{reference,ours}.csv``) as one offline HTML page, on the run's whole
    budget of steps: accuracy, validation accuracy on a log scale (chance 1/113), ‖θ‖², training and validation
    loss, and the softmax-collapse and zero-loss fractions of the training split."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from transferlab.report.html import Page

    curves = {who: side_by_side.read_curve_csv(store / f"{who}.csv") for who in ("reference", "ours")
              if (store / f"{who}.csv").is_file()}
    panels = [("train accuracy (dashed), validation accuracy (solid)", ("train_acc", "val_acc"), "linear"),
              ("validation accuracy, log scale (dotted: chance 1/113)", ("val_acc",), "log"),
              ("‖θ‖², the squared weight norm", ("weight_norm_sq",), "log"),
              ("training loss (dashed), validation loss (solid)", ("train_loss", "val_loss"), "log"),
              ("training split: softmax collapse (solid, float32)", ("collapse_frac",), "linear"),
              ("training split: fraction of samples with loss exactly 0", ("zero_loss_frac",), "linear")]
    fig = make_subplots(rows=3, cols=2, subplot_titles=[t for t, _, _ in panels], vertical_spacing=0.09)
    colour = {"reference": "#d62728", "ours": "#1f77b4"}
    name = {"reference": "official code", "ours": "ours (prieto2025-stablemax)"}
    for who, rows in curves.items():
        steps = [r["step"] for r in rows]
        for i, (_, keys, scale) in enumerate(panels):
            for key in keys:
                dash = "dash" if key.startswith("train_") else None
                ys = [r[key] if scale != "log" or (r[key] or 0) > 0 else None for r in rows]  # no 0 on a log axis
                fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines", name=name[who],
                                         line={"color": colour[who], "dash": dash}, legendgroup=who,
                                         showlegend=(i == 0 and key == "val_acc")),
                              row=i // 2 + 1, col=i % 2 + 1)
    fig.add_hline(y=1 / 113, line={"color": "#888", "dash": "dot"}, row=1, col=2)
    for col in (1, 2):
        paper = {k: v for k, v in PAPER_FIG1B_TEST_ACC.items() if col == 1 or v > 0}
        fig.add_trace(go.Scatter(x=list(paper), y=list(paper.values()),
                                 mode="lines+markers", name="paper, Fig. 1(b) test accuracy (read by eye)",
                                 line={"color": "#999", "dash": "dot"}, marker={"size": 5}, showlegend=col == 1),
                      row=1, col=col)
    for i, (_, _, scale) in enumerate(panels):
        fig.update_xaxes(range=[0, budget], title_text="step", row=i // 2 + 1, col=i % 2 + 1)
        fig.update_yaxes(type=scale, row=i // 2 + 1, col=i % 2 + 1,
                         **({"range": [-0.02, 1.02]} if scale == "linear" else {}))
    fig.update_layout(height=1000, legend={"orientation": "h", "y": 1.06}, margin={"t": 60})
    reached = ", ".join(f"{name[w]} to step {int(c[-1]['step']):,}" for w, c in curves.items() if c)
    page = Page(title, f"Curves so far, of a budget of {budget:,} steps: {reached}.")
    page.figure(fig, "Full batch, seed 42, x+y mod 113, 40% train, StableMax cross-entropy in float64 (model in "
                     "float32), AdamW lr 0.01, betas (0.9, 0.999), eps 1e-25, no weight decay; each side with its "
                     "own split of the same size. Grey: the paper's Fig. 1(b), this run's test accuracy at its "
                     "logged epochs (every 5,000), read by eye off the published figure.")
    page.write(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="a checkout of the official code")
    ap.add_argument("--run", choices=sorted(RUNS), default="stablemax")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42, help="the reference's default seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--side", choices=("both", "reference", "ours"), default="both",
                    help="which side to run (two long runs: one process each)")
    ap.add_argument("--no-ours", action="store_true", help="the same as --side reference")
    ap.add_argument("--store", type=Path, default=None,
                    help="a folder outside the repository: both sides checkpoint there and a rerun resumes "
                         "(reference/checkpoints, ours/ a transferlab store) and write their curves as CSV "
                         "(reference.csv, ours.csv) at every evaluation")
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    ap.add_argument("--stop-after-generalized", type=int, default=-1,
                    help="stop this many steps after 99%% validation accuracy (-1: run the whole budget)")
    ap.add_argument("--plot", type=Path, default=None,
                    help="write the curves in --store so far to this HTML page, and train nothing")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.plot is not None:
        if args.store is None:
            sys.exit("error: --plot needs --store, the folder the runs write their curves to")
        plot(args.store, args.plot, f"Prieto et al. 2025, Fig. 1 {args.run}: the official code beside ours")
        print(f"wrote {args.plot}")
        return
    side = "reference" if args.no_ours else args.side
    if side != "ours" and (args.reference is None or not (args.reference / "utils.py").is_file()
                           or not (args.reference / "models.py").is_file()):
        sys.exit(f"error: --reference {args.reference} has no utils.py/models.py; pass a checkout of "
                 "LucasPrietoAl/grokking-at-the-edge-of-numerical-stability")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ref = None
    if side != "ours":
        ref = reference_curve(args.reference, args.run, args.steps, args.every, args.seed, args.store,
                              args.checkpoint_every, args.stop_after_generalized)
    ref_wall = time.perf_counter() - t0
    ours = None
    if side != "reference":
        ours = ours_curve(args.run, args.steps, args.every, args.seed, args.threads, args.store,
                          args.checkpoint_every, args.stop_after_generalized)
    if ref:
        print(f"{args.run}, seed {args.seed}, {args.steps} steps (reference wall {ref_wall:.0f} s this call, "
              f"{ref['cpu_seconds_per_step'] * 1e3:.1f} ms/step)")
    print("initial ||θ||²: " + ", ".join(f"{who} {c['initial_norm_sq']:.2f}" for who, c in
                                         (("ours", ours), ("reference", ref)) if c))
    print(f"{'step':>7} {'train ours':>11} {'ref':>7} {'val ours':>9} {'ref':>7} {'‖θ‖² ours':>11} {'ref':>9}")
    a_by = {r["step"]: r for r in (ours["curve"] if ours else [])}
    b_by = {r["step"]: r for r in (ref["curve"] if ref else [])}
    f = lambda v, w=7, d=3: (f"{v:>{w}.{d}f}" if v is not None else f"{'-':>{w}}")  # noqa: E731
    for step in sorted(set(a_by) | set(b_by)):
        a, b = a_by.get(step, {}), b_by.get(step, {})
        print(f"{step:>7} {f(a.get('train_acc'), 11)} {f(b.get('train_acc'))} {f(a.get('val_acc'), 9)} "
              f"{f(b.get('val_acc'))} {f(a.get('weight_norm_sq'), 11, 1)} {f(b.get('weight_norm_sq'), 9, 1)}")
    summary = {"run": args.run, "seed": args.seed, "steps": args.steps, "reference_wall_s": ref_wall}
    for who, c in (("reference", ref), ("ours", ours)):
        if c:
            summary[who] = {"memorized_99": side_by_side.first_at(c["curve"], "train_acc", 0.99),
                            "val_95": side_by_side.first_at(c["curve"], "val_acc", 0.95),
                            "val_99": side_by_side.first_at(c["curve"], "val_acc", 0.99),
                            "final_val_acc": c["curve"][-1]["val_acc"], "last_step": c["curve"][-1]["step"],
                            "initial_norm_sq": c["initial_norm_sq"]}
    print(json.dumps({k: v for k, v in summary.items() if k in ("reference", "ours")}))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "curves": {"reference": ref, "ours": ours}}, indent=1))


if __name__ == "__main__":
    main()
