"""Fisher trace of a ~1M-parameter MLP over 256 samples: torch.func vmap(grad) vs a per-sample loop.

    python bench/monitor_fisher.py [--repeats 5] [--threads 2]

Prints the median wall time of each and their ratio; the target is <= 2 s for vmap on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.monitor import per_sample_gradient_stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    n_params = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(a.samples, 512), torch.randint(0, 10, (a.samples,))
    for method in ("vmap", "loop"):
        per_sample_gradient_stats(model, F.cross_entropy, x[:8], y[:8], method=method)  # warm-up
    # Interleaved, so both methods see the same load on a shared machine.
    times: dict[str, list[float]] = {"vmap": [], "loop": []}
    value: dict[str, float] = {}
    for _ in range(a.repeats):
        for method in ("vmap", "loop"):
            t0 = time.perf_counter()
            st = per_sample_gradient_stats(model, F.cross_entropy, x, y, chunk_size=a.chunk, method=method)
            times[method].append(time.perf_counter() - t0)
            value[method] = st.fisher_trace
    res = {m: (statistics.median(t), min(t), value[m], len(t)) for m, t in times.items()}
    print(f"params {n_params:,}  samples {a.samples}  threads {a.threads}  chunk {a.chunk}")
    for m, (t, best, f, k) in res.items():
        print(f"{m:>5}: median {t:.3f} s  min {best:.3f} s over {k} runs   fisher_trace {f:.6g}")
    print(f"loop / vmap time (medians): {res['loop'][0] / res['vmap'][0]:.2f}   "
          f"relative difference of the traces {abs(res['loop'][2] - res['vmap'][2]) / res['loop'][2]:.1e}")


if __name__ == "__main__":
    main()
