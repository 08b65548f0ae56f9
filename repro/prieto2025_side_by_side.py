"""prieto2025 side by side with the official code of Prieto et al. 2025 (grokking at the edge of numerical
stability, LucasPrietoAl/grokking-at-the-edge-of-numerical-stability).

Runs the reference's own MLP, dataset, loss functions and OrthoGrad wrapper, in the loop of its
``grokking_experiments.py`` (full batch, a fresh permutation each epoch, float32 weights), for one of its
Fig. 1 runs, beside our preset of the same name (through the study API), and compares the initial squared
weight norm, the train/validation accuracy curves, and the steps to memorize and to generalize.

    git clone https://github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability /somewhere/prieto
    python repro/prieto2025_side_by_side.py --reference /somewhere/prieto --run stablemax --steps 2000
    python repro/prieto2025_side_by_side.py --reference /somewhere/prieto --run stablemax --steps 20000 --no-ours

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


def reference_curve(ref_dir: Path, run: str, steps: int, every: int, seed: int) -> dict:
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
    rows, n0, cpu = [], norm_sq(model), 0.0

    def evaluate(step: int, loss: float | None) -> None:
        with torch.no_grad():
            acc = [float((model(a).argmax(1) == b).float().mean()) for a, b in ((x, y), (xv, yv))]
        rows.append({"step": step, "train_acc": acc[0], "val_acc": acc[1], "weight_norm_sq": norm_sq(model),
                     "train_loss": loss})

    loss_v = None
    for step in range(steps + 1):
        if step % every == 0:
            evaluate(step, loss_v)
        if step == steps:
            break
        t0 = time.process_time()
        perm = torch.randperm(x.size(0))
        model.train()
        opt.zero_grad()
        loss = loss_fn(model(x[perm]), y[perm])
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        cpu += time.process_time() - t0
    return {"initial_norm_sq": n0, "n_train": n_train, "curve": rows, "cpu_seconds_per_step": cpu / steps}


def ours_curve(run: str, steps: int, every: int, seed: int, threads: int) -> dict:
    return side_by_side.ours_curve(RUNS[run], steps, every, seed, threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path, help="a checkout of the official code")
    ap.add_argument("--run", choices=sorted(RUNS), default="stablemax")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42, help="the reference's default seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-ours", action="store_true", help="run the reference only (long runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not (args.reference / "utils.py").is_file() or not (args.reference / "models.py").is_file():
        sys.exit(f"error: {args.reference} has no utils.py/models.py; pass --reference a checkout of "
                 "LucasPrietoAl/grokking-at-the-edge-of-numerical-stability")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ref = reference_curve(args.reference, args.run, args.steps, args.every, args.seed)
    ref_wall = time.perf_counter() - t0
    ours = None if args.no_ours else ours_curve(args.run, args.steps, args.every, args.seed, args.threads)
    print(f"{args.run}, seed {args.seed}, {args.steps} steps (reference wall {ref_wall:.0f} s, "
          f"{ref['cpu_seconds_per_step'] * 1e3:.1f} ms/step)")
    if ours:
        print(f"initial ||θ||²: ours {ours['initial_norm_sq']:.2f}, reference {ref['initial_norm_sq']:.2f}")
    else:
        print(f"initial ||θ||²: reference {ref['initial_norm_sq']:.2f}")
    print(f"{'step':>7} {'train ours':>11} {'ref':>7} {'val ours':>9} {'ref':>7} {'‖θ‖² ours':>11} {'ref':>9}")
    by_step = {r["step"]: r for r in (ours["curve"] if ours else [])}
    for b in ref["curve"]:
        a = by_step.get(b["step"], {})
        f = lambda v, w=7, d=3: (f"{v:>{w}.{d}f}" if v is not None else f"{'-':>{w}}")  # noqa: E731
        print(f"{b['step']:>7} {f(a.get('train_acc'), 11)} {f(b['train_acc'])} {f(a.get('val_acc'), 9)} "
              f"{f(b['val_acc'])} {f(a.get('weight_norm_sq'), 11, 1)} {f(b['weight_norm_sq'], 9, 1)}")
    summary = {"run": args.run, "seed": args.seed, "steps": args.steps, "reference_wall_s": ref_wall}
    for who, c in (("reference", ref), ("ours", ours)):
        if c:
            summary[who] = {"memorized_99": side_by_side.first_at(c["curve"], "train_acc", 0.99),
                            "val_95": side_by_side.first_at(c["curve"], "val_acc", 0.95),
                            "val_99": side_by_side.first_at(c["curve"], "val_acc", 0.99),
                            "final_val_acc": c["curve"][-1]["val_acc"], "initial_norm_sq": c["initial_norm_sq"]}
    print(json.dumps({k: v for k, v in summary.items() if k in ("reference", "ours")}))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "curves": {"reference": ref, "ours": ours}}, indent=1))


if __name__ == "__main__":
    main()
