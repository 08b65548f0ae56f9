"""What the side-by-side scripts share: our run of a grokking preset for a few hundred steps, read back as the
curve the reference's loop produces (run ``python repro/<paper>_side_by_side.py``; this file is imported by them)."""

from __future__ import annotations

import sys
import tempfile
import time

import torch


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


# ---- long side-by-side runs that survive a kill ---------------------------------------------------------------
# A reference loop (the official code's model, optimizer and loss, driven here) checkpoints every N steps into a
# folder outside the repository: parameters, the optimizer's state and the global RNG state (the reference draws a
# fresh permutation each step from it) in safetensors, the step and the curve so far in JSON. A rerun continues
# from the newest intact checkpoint and gives the same numbers, bit for bit, as a run never interrupted.

CURVE_KEYS = ("step", "train_acc", "val_acc", "train_loss", "val_loss", "weight_norm_sq", "collapse_frac",
              "zero_loss_frac")


def write_curve_csv(rows: list[dict], path) -> None:
    """The curve as CSV (``CURVE_KEYS`` columns), replaced atomically."""
    import csv
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_KEYS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CURVE_KEYS})
    os.replace(tmp, path)


def read_curve_csv(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]


def save_loop_checkpoint(ckpt_dir, step: int, model, optimizer, state: dict, keep: int = 2) -> None:
    """``ckpt_dir/step-NNNNNNNNN/{tensors.safetensors,state.json}``, written in a temporary folder and renamed
    (a kill leaves the previous checkpoints intact); the newest ``keep`` are kept."""
    import json
    import os
    import shutil
    from pathlib import Path

    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"param.{n}": p.detach() for n, p in model.named_parameters()}
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng"] = torch.get_rng_state()
    name = f"step-{step:09d}"
    tmp = ckpt_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(ckpt_dir / name, ignore_errors=True)
    os.replace(tmp, ckpt_dir / name)
    for old in sorted(ckpt_dir.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_loop_checkpoint(ckpt_dir, model, optimizer) -> dict | None:
    """Restore the newest readable checkpoint into ``model``, ``optimizer`` and the global RNG; its JSON state,
    or None when there is none."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    for folder in sorted(Path(ckpt_dir).glob("step-*"), reverse=True) if Path(ckpt_dir).is_dir() else []:
        try:
            tensors = load_file(str(folder / "tensors.safetensors"))
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError) as err:  # a damaged one: fall back to the one before
            print(f"warning: skipping checkpoint {folder} ({err})", file=sys.stderr)
            continue
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(tensors[f"param.{n}"])
        opt_state: dict = {}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, i, k = key.split(".", 2)
                opt_state.setdefault(int(i), {})[k] = v
        optimizer.load_state_dict({"state": opt_state, "param_groups": optimizer.state_dict()["param_groups"]})
        torch.set_rng_state(tensors["rng"])
        return state
    return None


def resumable_loop(model, optimizer, loss_fn, x, y, xv, yv, *, steps: int, every: int, ckpt_dir=None,
                   checkpoint_every: int = 1000, csv_path=None, stop_after_generalized: int = -1,
                   identity: dict | None = None) -> dict:
    """The official full-batch loop (a fresh ``torch.randperm`` of the training set each step from the global
    generator, ``zero_grad``, loss, backward, step), evaluated every ``every`` steps: train/val accuracy and
    loss, ‖θ‖², the softmax-collapse fraction and the zero-loss fraction of the training split. With
    ``ckpt_dir`` it checkpoints every ``checkpoint_every`` steps and continues from the newest checkpoint there;
    ``identity`` (the run's settings) must match the checkpoint's. ``loss_fn(logits, y, reduction="none")``
    gives per-sample losses. With ``stop_after_generalized`` >= 0 it stops that many steps after validation
    accuracy first reaches 99%."""
    from transferlab.train.losses import softmax_collapse_fraction

    if ckpt_dir is not None and checkpoint_every % every:
        raise ValueError(f"checkpoint_every ({checkpoint_every}) must be a multiple of every ({every})")
    identity = identity or {}
    rows: list[dict] = []
    start, cpu = 0, 0.0
    state = load_loop_checkpoint(ckpt_dir, model, optimizer) if ckpt_dir is not None else None
    if state is not None:
        if state.get("identity", {}) != identity:
            raise SystemExit(f"error: the checkpoints in {ckpt_dir} are of another run ({state.get('identity')}); "
                             "use another --store or delete that folder")
        start, rows, cpu = int(state["step"]), state["curve"], float(state["cpu_seconds"])
        print(f"resuming from step {start} ({ckpt_dir})", file=sys.stderr)

    def evaluate(step: int) -> dict:
        model.eval()
        out: dict = {"step": step}
        with torch.no_grad():
            for split, a, b in (("train", x, y), ("val", xv, yv)):
                logits = model(a)
                losses = loss_fn(logits, b, reduction="none").reshape(-1)
                out[f"{split}_acc"] = float((logits.argmax(1) == b).float().mean())
                out[f"{split}_loss"] = float(losses.double().mean())
                if split == "train":
                    out["zero_loss_frac"] = float((losses == 0).float().mean())
                    out["collapse_frac"] = float(softmax_collapse_fraction(logits))
        out["weight_norm_sq"] = norm_sq(model)
        return out

    generalized = first_at(rows, "val_acc", 0.99)
    for step in range(start, steps + 1):
        resumed_here = state is not None and step == start
        if (step % every == 0 or step == steps) and not resumed_here:
            rows.append(evaluate(step))
            if csv_path is not None:
                write_curve_csv(rows, csv_path)
            if generalized is None and rows[-1]["val_acc"] >= 0.99:
                generalized = step
        stop = stop_after_generalized >= 0 and generalized is not None and step >= generalized + stop_after_generalized
        if ckpt_dir is not None and not resumed_here and (step % checkpoint_every == 0 or step == steps or stop):
            save_loop_checkpoint(ckpt_dir, step, model, optimizer,
                                 {"curve": rows, "cpu_seconds": cpu, "identity": identity})
        if stop or step == steps:
            break
        t0 = time.process_time()
        perm = torch.randperm(x.size(0))
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(x[perm]), y[perm])
        loss.backward()
        optimizer.step()
        cpu += time.process_time() - t0
    last = int(rows[-1]["step"]) if rows else 0
    return {"curve": rows, "cpu_seconds": cpu, "cpu_seconds_per_step": cpu / max(1, last), "resumed_from": start,
            "last_step": last}


def ours_resumable(preset: str, steps: int, every: int, seed: int, threads: int, store_root, csv_path,
                   checkpoint_every: int = 1000, stop_after_generalized: int = -1,
                   extra: list[str] | None = None) -> dict:
    """Our ``preset`` through the study API with a persistent store at ``store_root``: the engine checkpoints
    every ``checkpoint_every`` steps and a rerun resumes from there (bit for bit, tests/test_grok_engine.py);
    the curve is exported to ``csv_path`` at every evaluation."""
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.store.run import Run
    from transferlab.studies.grokking import PRESETS, GrokConfig
    from transferlab.studies.grokking.run import run as grok_run

    cfg = resolve(GrokConfig, presets=PRESETS, preset=preset,
                  overrides=[f"seed={seed}", f"num_threads={threads}", f"steps={steps}", f"eval_every={every}",
                             f"checkpoint_every={checkpoint_every}",
                             f"stop_after_generalized={stop_after_generalized}", "monitor_every=0",
                             *(extra or [])])
    store = Store(store_root)
    run = Run(store, "grokking", cfg.config_hash())

    def export(_: dict | None = None) -> None:
        write_curve_csv(run.metrics(), csv_path)

    c0 = time.process_time()
    res = grok_run(cfg, store, seeds=1, report=False, raise_on_divergence=False, reporter=export)
    export()
    rows = [{k: r.get(k) for k in CURVE_KEYS} for r in run.metrics()]
    return {"initial_norm_sq": rows[0]["weight_norm_sq"], "curve": rows, "run_id": res["members"][0]["run_id"],
            "status": res["members"][0]["status"], "cpu_seconds_this_call": time.process_time() - c0}
