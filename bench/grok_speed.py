"""Grokking speed targets, measured side by side in one run (issue 2).

1. Single-run step time: the engine vs a straightforward per-step PyTorch loop of the same model
   (one-hot inputs through nn.Linear, tensors rebuilt from Python lists every step, evaluation with
   autograd on at every step, torch.optim.AdamW).
2. Ensemble: 16 members trained as one (torch.func.vmap over stacked parameters) vs 1 member, on the
   default config (whole batch, and with the gradient accumulated over 512-row chunks) and on a small
   overhead-bound config; the achieved FLOP/s during ensemble training (FLOPs of one training step as
   counted by torch's FlopCounterMode, over its time) against the machine's fp32 matmul FLOP/s measured
   in this script. The ensemble runs evaluate every 20 steps as the study does (the plasticity
   monitors are off here; they are measured in grok_monitor_overhead.py).

Usage: python bench/grok_speed.py [--steps 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferlab.data.algorithmic import make_dataset
from transferlab.studies.grokking import GrokConfig
from transferlab.studies.grokking.run import make_chain, model_factory
from transferlab.train.engine import Engine, Schedule, TrainData, evaluate_classification
from transferlab.train.ensemble import StackedForward, build_members
from transferlab.train.losses import make_loss


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 matmul FLOP/s over a few sizes (the machine's reference figure)."""
    best = 0.0
    for size in (512, 1024, n):
        a, b = torch.randn(size, size), torch.randn(size, size)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * size**3 / statistics.median(times))
    return best


def engine_seconds_per_step(cfg: GrokConfig, k: int, steps: int) -> tuple[float, float, float]:
    """(wall seconds per training step incl. its share of evaluations, FLOPs per step incl. that share,
    FLOP/s of the training steps alone).

    FLOPs are those of one training step (forward + backward) and of one evaluation (forward over both
    splits), counted by PyTorch's FlopCounterMode (matmuls), times how many of each the run did."""
    data = make_dataset(cfg.task.operation, cfg.task.p, cfg.task.train_fraction, cfg.task.split_seed)
    base, params = build_members(model_factory(cfg, data.n_tokens, data.n_classes), list(range(k)))
    lr, wd = torch.full((k,), cfg.optimizer.lr), torch.full((k,), cfg.optimizer.weight_decay)
    chain, scale = make_chain(cfg, lr, wd)
    loss = make_loss(cfg.loss.kind, cfg.loss.dtype)
    tdata = TrainData(data.x_train, data.y_train, data.x_val, data.y_val)
    fwd = StackedForward(base, cfg.ensemble_mode)
    ev = evaluate_classification(tdata, loss, scale.current_lr, wd)
    # a few untimed steps first: the allocator's heap grows to the step's working set once per process
    Engine(fwd, params, loss, chain, tdata, Schedule(steps=5, eval_every=5, checkpoint_every=10**9), ev).run()
    chain, scale = make_chain(cfg, lr, wd)
    ev = evaluate_classification(tdata, loss, scale.current_lr, wd)
    sched = Schedule(steps=steps, eval_every=cfg.schedule.eval_every, checkpoint_every=10**9)
    eng = Engine(fwd, params, loss, chain, tdata, sched, ev, runs=None)
    res = eng.run()
    p = {n: v.clone().requires_grad_(True) for n, v in res.params.items()}
    with FlopCounterMode(display=False) as fc:
        total = loss(fwd(p, data.x_train), data.y_train).mean(-1).sum()
        torch.autograd.grad(total, list(p.values()))
    step_flops = float(fc.get_total_flops())
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        ev({n: v.detach() for n, v in p.items()}, fwd, 0)
    eval_flops = float(fc.get_total_flops())
    flops = res.steps_run * step_flops + len(res.records) * eval_flops
    return res.wall_seconds / res.steps_run, flops / res.steps_run, step_flops * res.steps_run / res.train_seconds


def naive_seconds_per_step(cfg: GrokConfig, steps: int) -> float:
    """A straightforward loop: Python-list splits, one-hot Linear, eval with autograd every step."""
    p = cfg.task.p
    pairs = [(a, b, (a + b) % p) for a in range(p) for b in range(p)]
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(pairs), generator=g).tolist()
    n_train = int(round(cfg.task.train_fraction * len(pairs)))
    train = [pairs[i] for i in perm[:n_train]]
    val = [pairs[i] for i in perm[n_train:]]

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1 = torch.nn.Linear(2 * p, cfg.model.width, bias=False)
            self.l2 = torch.nn.Linear(cfg.model.width, p, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.l1(x)
            return self.l2(h * h)

    def encode(rows: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.tensor([r[0] for r in rows])
        b = torch.tensor([r[1] for r in rows])
        x = torch.cat([torch.nn.functional.one_hot(a, p), torch.nn.functional.one_hot(b, p)], 1).float()
        return x, torch.tensor([r[2] for r in rows])

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay,
                            betas=(0.9, 0.98))
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = encode(train)
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        xv, yv = encode(val)
        val_logits = net(xv)  # autograd on: a straightforward script does not think about it
        _ = (torch.nn.functional.cross_entropy(val_logits, yv).item(),
             (val_logits.argmax(1) == yv).float().mean().item(),
             (logits.argmax(1) == y).float().mean().item(), loss.item())
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    default = GrokConfig()
    small = GrokConfig(p=23, width=64, train_fraction=0.5)
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                 "torch": torch.__version__, "steps": args.steps}
    peak = matmul_peak()
    out["matmul_peak_gflops"] = peak / 1e9
    rows = []
    for _ in range(args.repeats):
        e1, _, _ = engine_seconds_per_step(default, 1, args.steps)
        nv = naive_seconds_per_step(default, max(20, args.steps // 4))
        e16, flops16, train_flops16 = engine_seconds_per_step(default, 16, max(20, args.steps))
        c16, cflops16, _ = engine_seconds_per_step(default.model_copy(update={"chunk_size": 512}), 16,
                                                max(20, args.steps // 2))
        s1, _, _ = engine_seconds_per_step(small, 1, args.steps)
        s16, _, _ = engine_seconds_per_step(small, 16, args.steps)
        # FLOP/s during ensemble training: FLOPs of the steps and evaluations over their wall time
        rows.append({"engine_ms": e1 * 1e3, "naive_ms": nv * 1e3, "speedup_vs_naive": nv / e1,
                     "ens16_over_1_default": e16 / e1, "ens16_over_1_small": s16 / s1,
                     "ens16_chunked_over_1_default": c16 / e1,
                     "ens16_gflops": flops16 / e16 / 1e9, "ens16_frac_of_peak": flops16 / e16 / peak,
                     "ens16_train_steps_frac_of_peak": train_flops16 / peak,
                     "ens16_chunked_frac_of_peak": cflops16 / c16 / peak})
        print(json.dumps(rows[-1]), flush=True)
    out["runs"] = rows
    out["median"] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(json.dumps(out["median"], indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
