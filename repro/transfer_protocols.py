"""beta under both pretraining protocols, side by side (issue 26): `transfer --preset quick` (each size pretrained
to 20 tokens per parameter) and `transfer --preset fixed-pretrain` (every size on the same 3.0M tokens, Hernandez
et al.'s protocol, with the budget axis), in one store so the second reuses the first's scratch runs and s model.

    /work/bin/heavy python repro/transfer_protocols.py --store /work/stores/fixed [--interval residual|pairs]

Prints one JSON object: per protocol beta, alpha, their intervals, the resamples fitted and D_T per (N, D_F); and
the budget axis of fixed-pretrain. Results are recorded in docs/RESULTS.md (section "Transfer at a fixed
pretraining budget").
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="runs")
    ap.add_argument("--interval", default="residual", choices=["residual", "pairs"])
    ap.add_argument("--workers", type=int, default=1, help="processes (0: one per core)")
    args = ap.parse_args()
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.studies.transfer.run import run
    from transferlab.studies.transfer.zoo_config import PRESETS, TransferRunConfig

    out: dict = {}
    for preset in ("quick", "fixed-pretrain"):
        cfg = resolve(TransferRunConfig, presets=PRESETS, preset=preset,
                      overrides=[f"interval={args.interval}", f"workers={args.workers}", "pretrain.num_threads=1",
                                 "target.num_threads=1"])
        t0 = time.perf_counter()
        s = run(cfg, Store(args.store), report=True)
        keep = ("protocol", "beta", "alpha", "k", "bootstrap", "robust", "D_T", "D_T_grows_with_N_at_every_D_F",
                "ossified_observed", "analysis_error", "report", "budget_axis", "zoo_models")
        out[preset] = {k: s.get(k) for k in keep if k in s} | {"wall_seconds": time.perf_counter() - t0}
        if "robust" in s:
            out[preset]["robust"] = {k: s["robust"][k] for k in ("beta", "beta_ci", "alpha", "alpha_ci",
                                                                  "n_bootstrap_ok")}
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
