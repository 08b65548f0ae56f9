"""Coverage of the transfer fit's 95% intervals on synthetic runs the size of `transfer --preset quick` (issue 26):
the residual bootstrap (every resample fits) against the pairs bootstrap (resampling runs; many resamples drop).

    /work/bin/heavy python bench/transfer_interval_coverage.py [--datasets 40] [--boot 100] [--noise 0.01]

Each data set: a known scratch law and D_T = 30 D_F^0.18 N^0.38 (Hernandez et al.'s exponents) at 3 sizes x 4
scratch D and 3 sizes x 2 D_F, log-normal loss noise. Prints, per method, how often the interval of beta and of
alpha covers the truth, the median width, and the mean share of resamples fitted.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=40)
    ap.add_argument("--boot", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.01)
    args = ap.parse_args()
    from transferlab.core.errors import FitError
    from transferlab.fit.chinchilla import ChinchillaLaw
    from transferlab.fit.transfer import fit_transfer

    law = ChinchillaLaw(E=1.5, A=60.0, B=300.0, alpha=0.32, beta=0.30)
    K, AL, BE = 30.0, 0.18, 0.38
    sizes = np.array([5e4, 1.5e5, 3.3e5])
    stats: dict[str, dict[str, list]] = {m: {"beta": [], "alpha": [], "wb": [], "wa": [], "ok": []}
                                         for m in ("residual", "pairs")}
    t0 = time.perf_counter()
    skipped = 0
    for seed in range(args.datasets):
        rng = np.random.default_rng(1000 + seed)
        sN, sD = (v.ravel() for v in np.meshgrid(sizes, np.array([4e3, 1.6e4, 6.4e4, 2.56e5])))
        sL = law.loss(sN, sD) * np.exp(rng.normal(0, args.noise, sN.size))
        fN, fD = (v.ravel() for v in np.meshgrid(sizes, np.array([4e3, 1.6e4])))
        fL = law.loss(fN, fD + K * fD**AL * fN**BE) * np.exp(rng.normal(0, args.noise, fN.size))
        for m, st in stats.items():
            try:
                a = fit_transfer(sN, sD, sL, fN, fD, fL, n_boot=args.boot, seed=seed, interval=m, threads=1)
            except FitError:
                skipped += 1
                continue
            (bl, bh), (al, ah) = a.ols.ci["beta"], a.ols.ci["alpha"]
            st["beta"].append(bool(bl <= BE <= bh))
            st["alpha"].append(bool(al <= AL <= ah))
            st["wb"].append(bh - bl)
            st["wa"].append(ah - al)
            st["ok"].append(a.ols.n_boot_ok / args.boot)
    out = {"datasets": args.datasets, "resamples": args.boot, "noise": args.noise, "fits_failed": skipped,
           "seconds": time.perf_counter() - t0}
    for m, st in stats.items():
        out[m] = {"beta_coverage": float(np.mean(st["beta"])), "alpha_coverage": float(np.mean(st["alpha"])),
                  "beta_median_width": float(np.median(st["wb"])), "alpha_median_width": float(np.median(st["wa"])),
                  "mean_fitted_share": float(np.mean(st["ok"])), "n": len(st["ok"])}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
