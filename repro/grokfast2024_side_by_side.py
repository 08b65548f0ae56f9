"""grokfast2024 side by side with the Grokfast paper's code (ironjr/grokfast, Lee et al. 2024).

Builds the reference's own ``Decoder`` and data from its main.py, filters the gradients with its own
``gradfilter_ema`` / ``gradfilter_ma`` (grokfast.py), and trains in the loop of its ``main()`` (Adam with
coupled L2, warm-up update/10, batch 512 with the last partial batch of each epoch, a fresh permutation per
epoch), beside our preset of the same name through the study API, for a few hundred steps; then compares the
initial squared weight norm and the train/validation accuracy curves.

    git clone https://github.com/ironjr/grokfast /somewhere/grokfast     # never into this project
    python repro/grokfast2024_side_by_side.py --reference /somewhere/grokfast --filter ema --steps 600

``--filter ema`` is its README's ``--filter ema --alpha 0.98 --lamb 2.0 --weight_decay 0.005`` (our
``grokfast2024``), ``ma`` is ``--filter ma --window_size 100 --lamb 5.0 --weight_decay 0.01``
(``grokfast2024-ma``), ``none`` its baseline ``python main.py`` (``grokfast2024-baseline``). The reference is
evaluated every ``--every`` steps on its whole train and validation halves (its own loop evaluates once an
epoch, ~10 steps). Its main.py imports matplotlib and tqdm at the top; both are installed with transferlab.
Results: docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import side_by_side  # repro/side_by_side.py (the script's own folder is on sys.path)
import torch
import torch.nn.functional as F
from side_by_side import norm_sq

PRESET = {"ema": "grokfast2024", "ma": "grokfast2024-ma", "none": "grokfast2024-baseline"}
README = {"ema": {"alpha": 0.98, "lamb": 2.0, "weight_decay": 0.005},
          "ma": {"window_size": 100, "lamb": 5.0, "weight_decay": 0.01},
          "none": {"weight_decay": 0.0}}


def reference_curve(ref_dir: Path, filt: str, steps: int, every: int, seed: int, p: int = 97,
                    drop_last: bool = False, keep_y0: bool = False) -> dict:
    sys.path.insert(0, str(ref_dir))
    import grokfast as gf  # the reference's modules
    import main as ref

    hp = README[filt]
    torch.manual_seed(seed)
    model = ref.Decoder(dim=128, num_layers=2, num_heads=4, num_tokens=p + 2, seq_len=5)
    n0 = norm_sq(model)
    data = ref.multiplication_mod_p_data(p, p, p + 1)
    if keep_y0:  # our x*y keeps the 97 equations with y = 0, which the reference's data function leaves out
        x = torch.arange(p)
        zeros = torch.stack([x, torch.full_like(x, p + 1), torch.zeros_like(x), torch.full_like(x, p), 0 * x])
        data = torch.cat([data, zeros], 1)
    perm = torch.randperm(data.shape[1])  # the reference's split(n // 2), for an odd n too (y = 0 kept: 9,409)
    train_idx, valid_idx = perm[: data.shape[1] // 2], perm[data.shape[1] // 2:]
    train, valid = data[:, train_idx], data[:, valid_idx]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=hp["weight_decay"], betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda update: 1 if update > 10 else update / 10)
    rows, grads, i, cpu = [], None, 0, 0.0

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            acc = [float((model(d[:-1])[-1].argmax(-1) == d[-1]).float().mean()) for d in (train, valid)]
        rows.append({"step": i, "train_acc": acc[0], "val_acc": acc[1], "weight_norm_sq": norm_sq(model)})

    evaluate()
    while i < steps:
        train = train[:, torch.randperm(train.shape[1])]
        for batch in torch.split(train, 512, dim=1):
            if drop_last and batch.shape[1] < 512:
                continue
            t0 = time.process_time()
            model.train()
            loss = F.cross_entropy(model(batch[:-1])[-1], batch[-1])
            model.zero_grad()
            loss.backward()
            if filt == "ma":
                grads = gf.gradfilter_ma(model, grads=grads, window_size=hp["window_size"], lamb=hp["lamb"])
            elif filt == "ema":
                grads = gf.gradfilter_ema(model, grads=grads, alpha=hp["alpha"], lamb=hp["lamb"])
            opt.step()
            sched.step()
            i += 1
            cpu += time.process_time() - t0
            if i % every == 0:
                evaluate()
            if i >= steps:
                break
    return {"initial_norm_sq": n0, "n_train": int(train.shape[1]), "curve": rows, "cpu_seconds_per_step": cpu / steps}


def ours_curve(filt: str, steps: int, every: int, seed: int, threads: int) -> dict:
    return side_by_side.ours_curve(PRESET[filt], steps, every, seed, threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path, help="a checkout of ironjr/grokfast")
    ap.add_argument("--filter", choices=sorted(PRESET), default="ema")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", action="store_true",
                    help="also run the reference dropping its last partial batch, and with y = 0 kept (ours)")
    args = ap.parse_args()
    if not (args.reference / "main.py").is_file() or not (args.reference / "grokfast.py").is_file():
        sys.exit(f"error: {args.reference} has no main.py/grokfast.py; pass --reference a checkout of ironjr/grokfast")
    torch.set_num_threads(args.threads)
    out = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        ref = reference_curve(args.reference, args.filter, args.steps, args.every, seed)
        ours = ours_curve(args.filter, args.steps, args.every, seed, args.threads)
        variants = []
        if args.variants:
            for drop_last, keep_y0 in ((True, False), (False, True), (True, True)):
                v = reference_curve(args.reference, args.filter, args.steps, args.every, seed, drop_last=drop_last,
                                    keep_y0=keep_y0)
                variants.append({"drop_last": drop_last, "keep_y0": keep_y0,
                                 "train_acc_99": side_by_side.first_at(v["curve"], "train_acc", 0.99),
                                 "val_acc_95": side_by_side.first_at(v["curve"], "val_acc", 0.95), "curve": v["curve"]})
        print(f"{PRESET[args.filter]}, seed {seed}: initial ||θ||² ours {ours['initial_norm_sq']:.1f}, reference "
              f"{ref['initial_norm_sq']:.1f}; CPU per step: reference {ref['cpu_seconds_per_step'] * 1e3:.1f} ms "
              f"(training only), ours {ours['cpu_seconds_per_step_incl_eval'] * 1e3:.1f} ms (with evaluations)")
        print(f"{'step':>6} {'train ours':>11} {'ref':>7} {'val ours':>9} {'ref':>7}")
        by_step = {r["step"]: r for r in ours["curve"]}
        for b in ref["curve"]:
            a = by_step.get(b["step"])
            if a:
                print(f"{b['step']:>6} {a['train_acc']:>11.3f} {b['train_acc']:>7.3f} {a['val_acc']:>9.3f} "
                      f"{b['val_acc']:>7.3f}")
        row = {"seed": seed, "ours": ours, "reference": ref, "variants": variants}
        for who, c in (("ours", ours), ("ref", ref)):
            for key, lvl in (("train_acc", 0.99), ("val_acc", 0.95)):
                row[f"{who}_{key}_{int(lvl * 100)}"] = side_by_side.first_at(c["curve"], key, lvl)
        out.append(row)
    print("\nsteps to 99% train / 95% val accuracy per seed (ours | reference):")
    for r in out:
        print(f"  seed {r['seed']}: {r['ours_train_acc_99']} / {r['ours_val_acc_95']} | "
              f"{r['ref_train_acc_99']} / {r['ref_val_acc_95']}"
              + "".join(f" | reference drop_last={v['drop_last']} keep_y0={v['keep_y0']}: {v['train_acc_99']} / "
                        f"{v['val_acc_95']}" for v in r["variants"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"filter": args.filter, "steps": args.steps, "runs": out}, indent=1))


if __name__ == "__main__":
    main()
