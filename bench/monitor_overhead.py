"""Overhead of each monitor per logged step on a small model, against one training step.

    python bench/monitor_overhead.py [--repeats 7] [--threads 2]

Model: 2-layer MLP 64 -> 256 -> 256 -> 10 (~86k parameters), training batch 64, probe batch 64.
Prints the median time of each monitor and its ratio to a plain forward+backward+AdamW step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferlab import monitor


def timed(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    rng = np.random.default_rng(0)
    steps = np.arange(1, 201) * 10.0
    losses = (2 + 10 * steps ** -0.5) * np.exp(rng.normal(0, 0.01, 200))
    mon = monitor.LossPowerLawMonitor(min_points=10)
    for s, v in zip(steps[:100], losses[:100]):
        mon.update(s, v)
    it = iter(zip(steps[100:], losses[100:]))
    router = [torch.randn(32 * 16, 8) for _ in range(4)]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    cases = {
        "train step (reference)": step,
        "fisher trace + coherence (vmap)": lambda: monitor.per_sample_gradient_stats(
            model, F.cross_entropy, x, y),
        "gradient noise scale (B_small=8)": lambda: monitor.gradient_noise_scale(model, F.cross_entropy, x, y,
                                                                                  small_batch=8),
        "gradient norm (.grad)": lambda: monitor.gradient_norm(model),
        "weight norm": lambda: monitor.weight_norm(model),
        "dormant units": lambda: monitor.dormant_units(model, x),
        "effective rank (256 features)": lambda: monitor.feature_effective_rank(model, x, "3"),
        "loss power law (online update + refit)": lambda: mon.update(*next(it)),
        "MoE pathways (32 seqs x 16 tok, 4 layers, 8 experts)": lambda: monitor.moe_pathway_metrics(
            router, 2, batch_size=32),
    }
    base = None
    print(f"{'monitor':<56} {'median ms':>10} {'x train step':>13}")
    for name, fn in cases.items():
        t = timed(fn, a.repeats)
        base = base or t
        print(f"{name:<56} {t * 1e3:>10.2f} {t / base:>13.2f}")


if __name__ == "__main__":
    main()
