"""Benchmark: Epoch's 4,500-start Chinchilla fit + 1,000 bootstrap refits, batched vs a per-start scipy loop.

    python bench/chinchilla_fit.py [--repeats 3] [--scipy-starts 150] [--check-resamples 20] [--threads 2]

Data: Epoch AI's 245 points (packaged copy), the 5 highest-loss points left out as Epoch did.

1. Batched (ours): all 4,500 grid starts as one numpy L-BFGS batch, then 1,000 bootstrap refits
   (8 starts each: the fit, 3 other local optima, 4 grid starts) as one batch. Median of
   ``--repeats`` runs, side by side with (2) in the same process.
2. scipy: ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` per start with the same
   analytic objective and gradient (numpy), on ``--scipy-starts`` starts spread evenly over the
   grid; the time per start is **extrapolated** to 4,500 starts, to the same bootstrap work
   (1,000 x 8 starts), and to a full grid per resample (1,000 x 4,500).
3. Check of the bootstrap shortcut: on ``--check-resamples`` resamples, the 8-start fit against
   the full 4,500-start grid on that resample (objective gap and parameter differences).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from transferlab.data.reference import CHINCHILLA_CSV, EPOCH_CI95, EPOCH_DROPPED, EPOCH_HUBER_FIT
from transferlab.fit.bootstrap import bootstrap_chinchilla
from transferlab.fit.chinchilla import epoch_grid, fit_chinchilla, objective_numpy


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(CHINCHILLA_CSV)
    N = df["Model Size"].to_numpy()
    D = df["Training FLOP"].to_numpy() / (6 * N)
    L = df["loss"].to_numpy()
    keep = np.ones(len(L), bool)
    keep[np.argsort(-L)[:EPOCH_DROPPED]] = False
    return N[keep], D[keep], L[keep]


def batched(N, D, L, threads: int) -> dict:
    t0 = time.perf_counter()
    fit = fit_chinchilla(N, D, L, threads=threads)
    t1 = time.perf_counter()
    boot = bootstrap_chinchilla(fit, N, D, L, n_boot=1000, seed=0, threads=threads)
    t2 = time.perf_counter()
    return {"grid_s": t1 - t0, "bootstrap_s": t2 - t1, "total_s": t2 - t0, "fit": fit, "boot": boot}


def scipy_loop(N, D, L, n_starts: int) -> dict:
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    grid = epoch_grid()
    pick = np.linspace(0, len(grid) - 1, n_starts).round().astype(int)
    best, best_x, iters = np.inf, None, []
    t0 = time.perf_counter()
    for x0 in grid[pick]:
        res = minimize(objective_numpy, x0, args=(lN, lD, lL), jac=True, method="L-BFGS-B")
        iters.append(res.nit)
        if res.fun < best:
            best, best_x = res.fun, res.x
    dt = time.perf_counter() - t0
    return {
        "starts": n_starts,
        "seconds": dt,
        "per_start_s": dt / n_starts,
        "best": best,
        "best_x": best_x,
        "median_iters": float(np.median(iters)),
    }


def check_shortcut(fit, boot, N, D, L, k: int, threads: int) -> dict:
    gaps, dparams = [], []
    for i in range(k):
        full = fit_chinchilla(N, D, L, weights=boot.counts[i], threads=threads)
        gaps.append((boot.objective[i] - full.objective) / full.objective)
        dparams.append(np.abs(boot.thetas[i][3:] - full.law.theta[3:]).max())
    return {
        "resamples": k,
        "max_rel_objective_gap": float(max(gaps)),
        "min_rel_objective_gap": float(min(gaps)),
        "max_abs_exponent_diff": float(max(dparams)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-starts", type=int, default=150)
    ap.add_argument("--check-resamples", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args()
    N, D, L = load()
    runs, scipy_runs = [], []
    for _ in range(a.repeats):  # interleaved, so both see the same machine load
        runs.append(batched(N, D, L, a.threads))
        scipy_runs.append(scipy_loop(N, D, L, a.scipy_starts))
    med = {k: statistics.median(r[k] for r in runs) for k in ("grid_s", "bootstrap_s", "total_s")}
    per_start = statistics.median(r["per_start_s"] for r in scipy_runs)
    fit, boot = runs[0]["fit"], runs[0]["boot"]
    ci = boot.intervals()
    sc = scipy_runs[0]
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads={a.threads}",
        "points": int(len(N)),
        "batched": {
            **med,
            "repeats": a.repeats,
            "grid_starts": fit.n_starts,
            "bootstrap_starts_per_resample": boot.n_starts,
            "starts_at_best": fit.n_at_best,
            "objective": fit.objective,
        },
        "scipy": {
            "per_start_s": per_start,
            "starts_timed": a.scipy_starts,
            "median_iters": sc["median_iters"],
            "best_objective_of_subset": sc["best"],
            "extrapolated_grid_s": per_start * 4500,
            "extrapolated_grid_plus_same_bootstrap_s": per_start * (4500 + 1000 * boot.n_starts),
            "extrapolated_full_grid_per_resample_s": per_start * 4500 * 1001,
        },
        "speedup_grid": per_start * 4500 / med["grid_s"],
        "speedup_grid_plus_bootstrap": per_start * (4500 + 1000 * boot.n_starts) / med["total_s"],
        "fit": fit.law.as_dict(),
        "epoch_point": EPOCH_HUBER_FIT,
        "ci95": {k: list(v) for k, v in ci.items()},
        "epoch_ci95": {k: list(v) for k, v in EPOCH_CI95.items()},
        "in_epoch_intervals": {k: lo <= getattr(fit.law, k) <= hi for k, (lo, hi) in EPOCH_CI95.items()},
    }
    if a.check_resamples > 0:
        out["shortcut_check"] = check_shortcut(fit, boot, N, D, L, a.check_resamples, a.threads)
    print(json.dumps(out, indent=2, default=float))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
