"""What the side-by-side scripts share: our run of a grokking preset for a few hundred steps, read back as the
curve the reference's loop produces (run ``python repro/<paper>_side_by_side.py``; this file is imported by them)."""

from __future__ import annotations

import tempfile
import time


def ours_curve(preset: str, steps: int, every: int, seed: int, threads: int,
               extra: list[str] | None = None) -> dict:
    """Our ``preset`` through the study API for ``steps`` steps, evaluated every ``every``: the initial squared
    weight norm, the curve (step, train/val accuracy, ‖θ‖², train loss) and CPU seconds per step (evaluations
    included)."""
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.store.run import Run
    from transferlab.studies.grokking import PRESETS, GrokConfig
    from transferlab.studies.grokking.run import run as grok_run

    cfg = resolve(GrokConfig, presets=PRESETS, preset=preset,
                  overrides=[f"seed={seed}", f"num_threads={threads}", f"steps={steps}", f"eval_every={every}",
                             f"checkpoint_every={every * 10}", "stop_after_generalized=-1", "monitor_every=0",
                             *(extra or [])])
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        res = grok_run(cfg, Store(tmp), seeds=1, report=False, raise_on_divergence=False)
        cpu = time.process_time() - c0
        recs = Run(Store(tmp), "grokking", res["members"][0]["run_id"]).metrics()
    rows = [{k: r.get(k) for k in ("step", "train_acc", "val_acc", "weight_norm_sq", "train_loss")} for r in recs]
    return {"initial_norm_sq": rows[0]["weight_norm_sq"], "curve": rows, "cpu_seconds_per_step_incl_eval": cpu / steps}


def norm_sq(model) -> float:
    """A reference model's squared weight norm ‖θ‖², summed in float64 over every parameter."""
    return float(sum((p.detach().double() ** 2).sum() for p in model.parameters()))


def first_at(curve: list[dict], key: str, level: float) -> int | None:
    """The first evaluated step where ``key`` reaches ``level``."""
    return next((r["step"] for r in curve if r.get(key) is not None and r[key] >= level), None)
