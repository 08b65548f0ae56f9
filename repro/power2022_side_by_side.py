"""power2022 side by side with Power et al.'s public PyTorch reproduction (danielmamay/grokking).

Trains the reference's own ``Transformer`` (its model.py, AdamW and LinearLR warm-up exactly as its
training.py sets them up) and our ``power2022`` preset (through the study API) on the same task and the same
train/validation split for a few hundred steps, and compares the initial squared weight norm, the
memorization curve (train accuracy) and the CPU time per step.

    git clone https://github.com/danielmamay/grokking /somewhere/grokking   # never into this project
    pip install einops                                                       # the reference's model needs it
    python repro/power2022_side_by_side.py --reference /somewhere/grokking [--steps 700] [--json OUT]
        [--seeds 0,1,2] [--ref-drop-last] [--ref-warmup ours] [--variants]

``--ref-drop-last`` and ``--ref-warmup ours`` change the reference's loop in the two ways ours differs from
it (ours drops the last partial batch of each epoch; ours warms up as (step + 1)/10, the reference's LinearLR
as 0.1 + 0.09 step), to test whether either explains why ours memorizes sooner. ``--seeds`` runs both sides
on each seed, so the gap can be read against the seed-to-seed spread; ``--variants`` runs the reference in all
four combinations of the two changes beside one run of ours per seed.

Only the reference's model.py is imported (its training.py imports wandb). Results: docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import side_by_side  # repro/side_by_side.py (the script's own folder is on sys.path)
import torch
from side_by_side import norm_sq

from transferlab.core.config import resolve
from transferlab.data.algorithmic import make_dataset
from transferlab.studies.grokking import PRESETS, GrokConfig


def reference_curve(ref_dir: Path, cfg: GrokConfig, steps: int, every: int, seed: int,
                    drop_last: bool = False, warmup: str = "reference") -> dict:
    sys.path.insert(0, str(ref_dir / "grokking"))
    from model import Transformer  # the reference's own module

    t = cfg.task
    data = make_dataset(t.operation, t.p, t.train_fraction, t.split_seed, t.split_style)
    p = cfg.task.p

    def feed(pairs: torch.Tensor) -> torch.Tensor:  # [x, ∘, y, =] with ∘ = p, = = p + 1, as its data.py
        n = pairs.shape[0]
        return torch.stack([pairs[:, 0], torch.full((n,), p), pairs[:, 1], torch.full((n,), p + 1)], 1)

    x_tr, y_tr, x_va, y_va = feed(data.x_train), data.y_train, feed(data.x_val), data.y_val
    torch.manual_seed(seed)
    model = Transformer(num_layers=cfg.model.n_layers, dim_model=cfg.model.d_model, num_heads=cfg.model.n_heads,
                        num_tokens=p + 2, seq_len=4)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr, betas=(cfg.optimizer.beta1, cfg.optimizer.beta2),
                            weight_decay=cfg.optimizer.weight_decay)
    if warmup == "ours":  # (step + 1) / 10 for the first 10 steps, as our engine's linear warm-up
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    else:  # the reference's: 0.1 + 0.09 step
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
    crit = torch.nn.CrossEntropyLoss()
    batch = min(cfg.schedule.batch_size, len(x_tr) // 2)
    rows, n0 = [], norm_sq(model)
    perm, at = torch.randperm(len(x_tr)), 0
    cpu = 0.0

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            acc = [float((model(x)[-1].argmax(1) == y).float().mean()) for x, y in ((x_tr, y_tr), (x_va, y_va))]
        rows.append({"step": step, "train_acc": acc[0], "val_acc": acc[1], "weight_norm_sq": norm_sq(model)})

    for step in range(steps + 1):
        if step % every == 0:
            evaluate(step)
        if step == steps:
            break
        if at >= len(x_tr) or (drop_last and at + batch > len(x_tr)):
            perm, at = torch.randperm(len(x_tr)), 0
        idx = perm[at:at + batch]
        at += batch
        t0 = time.process_time()
        model.train()
        opt.zero_grad(set_to_none=True)
        crit(model(x_tr[idx])[-1], y_tr[idx]).backward()
        opt.step()
        sched.step()
        cpu += time.process_time() - t0
    return {"initial_norm_sq": n0, "curve": rows, "cpu_seconds_per_step": cpu / steps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True, type=Path, help="a checkout of danielmamay/grokking")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (overrides --seed)")
    ap.add_argument("--ref-drop-last", action="store_true", help="the reference drops its last partial batch")
    ap.add_argument("--ref-warmup", choices=["reference", "ours"], default="reference")
    ap.add_argument("--variants", action="store_true", help="the reference with and without each change")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-ours", action="store_true", help="run the reference only (runs to generalization)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not (args.reference / "grokking" / "model.py").is_file():
        sys.exit(f"error: {args.reference}/grokking/model.py not found; pass --reference a checkout of "
                 "danielmamay/grokking")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    out = []
    for seed in seeds:
        out.append(compare(args, seed))
    for kind in ("train", "val"):
        print(f"\nsteps to 95% / 99% {kind} accuracy per seed (ours | reference variants):")
        for r in out:
            refs = " | ".join(f"{v['name']}: {v[f'ref_{kind}_95']} / {v[f'ref_{kind}_99']}" for v in r["variants"])
            print(f"  seed {r['seed']}: ours {r.get(f'ours_{kind}_95')} / {r.get(f'ours_{kind}_99')} | {refs}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "threads": args.threads, "runs": out}, indent=1))


def compare(args: argparse.Namespace, seed: int) -> dict:
    cfg = resolve(GrokConfig, presets=PRESETS, preset="power2022",
                  overrides=[f"seed={seed}", f"num_threads={args.threads}"])
    combos = ([(d, w) for d in (False, True) for w in ("reference", "ours")] if args.variants
              else [(args.ref_drop_last, args.ref_warmup)])
    variants = []
    for drop_last, warmup in combos:
        r = reference_curve(args.reference, cfg, args.steps, args.every, seed, drop_last=drop_last, warmup=warmup)
        variants.append({"name": f"drop_last={drop_last},warmup={warmup}", "drop_last": drop_last,
                         "warmup": warmup, **r, **_thresholds(r["curve"], "ref")})
    ref = variants[0]
    if args.no_ours:
        print(f"seed {seed}: reference {ref['name']}, initial ||θ||² {ref['initial_norm_sq']:.1f}; "
              f"CPU s/step {ref['cpu_seconds_per_step'] * 1e3:.1f} ms")
        for b in ref["curve"]:
            print(f"{b['step']:>6} train {b['train_acc']:.3f} val {b['val_acc']:.3f}")
        return {"seed": seed, "variants": variants}
    ours = side_by_side.ours_curve("power2022", args.steps, args.every, seed, args.threads)
    print(f"seed {seed} (reference: {ref['name']})")
    print(f"initial ||θ||²: ours {ours['initial_norm_sq']:.1f}, reference {ref['initial_norm_sq']:.1f} "
          f"(ratio {ours['initial_norm_sq'] / ref['initial_norm_sq']:.3f})")
    print(f"{'step':>6} {'train acc ours':>15} {'reference':>10} {'val acc ours':>13} {'reference':>10}")
    for a, b in zip(ours["curve"], ref["curve"]):
        print(f"{a['step']:>6} {a['train_acc']:>15.3f} {b['train_acc']:>10.3f} {a['val_acc']:>13.3f} "
              f"{b['val_acc']:>10.3f}")
    print(f"CPU s/step: reference {ref['cpu_seconds_per_step'] * 1e3:.1f} ms (training only), ours "
          f"{ours['cpu_seconds_per_step_incl_eval'] * 1e3:.1f} ms (including its evaluations)")
    return {"seed": seed, "ours": ours, "variants": variants, **_thresholds(ours["curve"], "ours")}


def _thresholds(curve: list[dict], who: str) -> dict:
    """First evaluated steps at 95% and 99% train and validation accuracy: ``{who}_train_95`` etc."""
    return {f"{who}_{kind}_{lvl}": side_by_side.first_at(curve, f"{kind}_acc", lvl / 100)
            for kind in ("train", "val") for lvl in (95, 99)}


if __name__ == "__main__":
    main()
