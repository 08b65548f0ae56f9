"""gromov2023 side by side with the code of Gromov's group (d-doshi/Grokking), the setup of Gromov 2023
(arXiv 2301.02679, "Grokking modular arithmetic").

Runs the reference's own model (``utils.models.fcn``: one hidden layer of N = 500, x² activation, no bias,
both layers N(0, 0.5/(2N)^(1/3))), its dataset (``utils.datasets.noisy_dataset``: one-hot pairs, a
``random.shuffle`` split with its pair seed 420, no label noise) and its training step
(``utils.optimization.train_one_epoch_grokking``: one full-batch AdamW step on MSE against one-hot targets,
lr 1e-2, betas (0.9, 0.98), eps 1e-8), as its ``Training_scripts/phase_diagrams_wd.py`` calls them, beside our
``gromov2023`` preset (through the study API), and compares the initial squared weight norm and the
train/validation accuracy curves.

    git clone https://github.com/d-doshi/Grokking /somewhere/gromov
    python repro/gromov2023_side_by_side.py --reference /somewhere/gromov --steps 600 --every 20
    python repro/gromov2023_side_by_side.py --reference /somewhere/gromov --fraction 0.3 --weight-decay 5

The reference's script sweeps the data fraction (0.1-0.9) and the weight decay (0, 5, 15, 20) for 2,000
epochs; ``--fraction`` and ``--weight-decay`` pick one cell of that grid on both sides. Its utils import
``ml_collections`` and ``timm`` (unused by this model and dataset): stubs stand in when they are not
installed. The two sides use their own split of the same size and their own seeds, so the curves agree in
distribution, not example for example. Results: docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import side_by_side  # repro/side_by_side.py (the script's own folder is on sys.path)
import torch
from side_by_side import norm_sq


def _stub(name: str, **attrs) -> None:
    """A stand-in for a package the reference imports at the top of a module and never uses in these runs."""
    try:
        __import__(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for k, v in attrs.items():
        setattr(sys.modules[name], k, v)


def _import_reference(ref_dir: Path) -> dict:
    # utils/datasets.py and utils/models.py import ml_collections' ConfigDict and timm's
    # param_groups_weight_decay for their transformer configs; the fcn model and noisy_dataset use neither.
    _stub("ml_collections.config_dict", ConfigDict=dict)
    _stub("timm.optim.optim_factory", param_groups_weight_decay=None)
    sys.path.insert(0, str(ref_dir))
    from utils import datasets, models, optimization

    return {"datasets": datasets, "models": models, "optimization": optimization}


def reference_curve(ref_dir: Path, steps: int, every: int, seed: int, fraction: float, wd: float) -> dict:
    ref = _import_reference(ref_dir)
    p, n_hidden = 97, 500
    d = ref["datasets"].noisy_dataset(p, 420, fraction, 0.0, operation="addition", device="cpu",
                                      dtype=torch.float32, fixed_seed=True)
    torch.manual_seed(seed)
    model = ref["models"].fcn(2 * p, n_hidden, p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=wd, betas=(0.9, 0.98), eps=1e-08)
    rows, n0, cpu = [], norm_sq(model), 0.0

    def record(step: int, out: dict | None) -> None:
        if out is None:  # step 0: nothing trained yet; measure with the reference's own accuracy helper
            acc = [ref["optimization"].check_accuracy_grokking(x, y, model, torch.float32, "cpu", None)[2]
                   for x, y in ((d["X_train"], d["Y_train"]), (d["X_test"], d["Y_test"]))]
            loss = None
        else:
            acc, loss = [out["tr_acc"][-1], out["val_acc"][-1]], float(out["loss"][-1])
        rows.append({"step": step, "train_acc": float(acc[0]), "val_acc": float(acc[1]),
                     "weight_norm_sq": norm_sq(model), "train_loss": loss})

    record(0, None)
    for step in range(1, steps + 1):
        t0 = time.process_time()
        out = ref["optimization"].train_one_epoch_grokking(
            model, opt, 10**10, d["X_train"], d["Y_train"], d["X_test"], d["Y_test"], torch.float32, "cpu",
            losstype="MSE", if_data=(step % every == 0), verbose=False)
        cpu += time.process_time() - t0
        if step % every == 0:
            record(step, out)
    return {"initial_norm_sq": n0, "n_train": int(d["X_train"].shape[0]), "curve": rows,
            "cpu_seconds_per_step_incl_eval": cpu / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path, help="a checkout of d-doshi/Grokking")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--seeds", default="1", help="comma-separated; the reference script's torch seed is 1")
    ap.add_argument("--fraction", type=float, default=0.5, help="training fraction, both sides")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay, both sides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not (args.reference / "utils" / "models.py").is_file():
        sys.exit(f"error: {args.reference} has no utils/models.py; pass --reference a checkout of d-doshi/Grokking")
    torch.set_num_threads(args.threads)
    extra = [f"train_fraction={args.fraction}", f"weight_decay={args.weight_decay}"]
    summary = {"steps": args.steps, "fraction": args.fraction, "weight_decay": args.weight_decay, "seeds": {}}
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        ref = reference_curve(args.reference, args.steps, args.every, seed, args.fraction, args.weight_decay)
        ref_wall = time.perf_counter() - t0
        ours = side_by_side.ours_curve("gromov2023", args.steps, args.every, seed, args.threads, extra)
        print(f"gromov2023, seed {seed}, fraction {args.fraction}, weight decay {args.weight_decay}: initial "
              f"||θ||² ours {ours['initial_norm_sq']:.2f}, reference {ref['initial_norm_sq']:.2f}; CPU per step "
              f"(evaluations included) ours {ours['cpu_seconds_per_step_incl_eval'] * 1e3:.1f} ms, reference "
              f"{ref['cpu_seconds_per_step_incl_eval'] * 1e3:.1f} ms (reference wall {ref_wall:.0f} s)")
        print(f"{'step':>7} {'train ours':>11} {'ref':>7} {'val ours':>9} {'ref':>7} {'‖θ‖² ours':>11} {'ref':>9}")
        by_step = {r["step"]: r for r in ours["curve"]}
        for b in ref["curve"]:
            a = by_step.get(b["step"], {})
            f = lambda v, w=7, d=3: (f"{v:>{w}.{d}f}" if v is not None else f"{'-':>{w}}")  # noqa: E731
            print(f"{b['step']:>7} {f(a.get('train_acc'), 11)} {f(b['train_acc'])} {f(a.get('val_acc'), 9)} "
                  f"{f(b['val_acc'])} {f(a.get('weight_norm_sq'), 11, 1)} {f(b['weight_norm_sq'], 9, 1)}")
        summary["seeds"][seed] = {
            who: {"memorized_99": side_by_side.first_at(c["curve"], "train_acc", 0.99),
                  "val_95": side_by_side.first_at(c["curve"], "val_acc", 0.95),
                  "val_99": side_by_side.first_at(c["curve"], "val_acc", 0.99),
                  "final_val_acc": c["curve"][-1]["val_acc"], "initial_norm_sq": c["initial_norm_sq"]}
            for who, c in (("reference", ref), ("ours", ours))}
        print(json.dumps(summary["seeds"][seed]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
