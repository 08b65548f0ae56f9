"""Run a sweep: group trials into ensembles, execute groups locally or on Ray, record every trial.

A trial that raises is recorded as ``failed`` (with its error) and does not stop the others; a group
that raises is retried member by member so only the failing trial fails. Running the same sweep
again reuses finished runs by config hash and redoes only what is missing or failed.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from transferlab.core.errors import ConfigError, TransferlabError
from transferlab.core.memory import max_runs
from transferlab.core.progress import progress_bar
from transferlab.store import Store
from transferlab.studies.grokking.config import GrokConfig

MAX_GROUP = 16


def sweep_name(base: GrokConfig, grid: dict[str, list[Any]], seeds: int) -> str:
    blob = json.dumps({"base": base.config_hash(), "grid": grid, "seeds": seeds}, sort_keys=True, default=str)
    return "sweep-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def group_configs(configs: list[GrokConfig], max_group: int = MAX_GROUP) -> list[list[GrokConfig]]:
    by_key: dict[str, list[GrokConfig]] = defaultdict(list)
    for c in configs:
        by_key[c.ensemble_key()].append(c)
    groups = []
    for members in by_key.values():
        for i in range(0, len(members), max_group):
            groups.append(members[i:i + max_group])
    return groups


def _record_failure(store: Store, cfg: GrokConfig, sweep: str, err: BaseException) -> None:
    from transferlab.store.lock import RunLocked

    if isinstance(err, RunLocked):
        return  # another process owns (and will record) that run: nothing of it is ours to write
    run = store.open_run("grokking", cfg, sweep=sweep)
    reason = err.one_line() if isinstance(err, TransferlabError) else f"{type(err).__name__}: {err}"
    run.finish({"error": reason, "traceback": traceback.format_exc(limit=5)}, status="failed")


def execute_group(store_root: str, configs: list[dict[str, Any]], sweep: str,
                  mirrors: tuple[str, ...] = ()) -> list[str]:
    """Train one group; never raises. Returns the run ids. Runs in-process or as a Ray task."""
    from transferlab.studies.grokking.run import run_members

    store = Store(store_root, mirrors=mirrors)
    cfgs = [GrokConfig(**c) for c in configs]
    try:
        members = run_members(cfgs, store, sweep=sweep, description=f"{sweep} ({len(cfgs)} members)")
        return [m.run_id for m in members]
    except Exception:  # noqa: BLE001 - a failing trial must not stop the sweep
        ids = []
        for cfg in cfgs:
            try:
                ids += [m.run_id for m in run_members([cfg], store, sweep=sweep)]
            except Exception as err:  # noqa: BLE001
                _record_failure(store, cfg, sweep, err)
                ids.append(cfg.config_hash())
        return ids


def run_sweep(
    base: GrokConfig,
    grid: dict[str, list[Any]],
    store: Store,
    seeds: int = 1,
    backend: str = "local",
    address: str | None = None,
    name: str | None = None,
    max_group: int = MAX_GROUP,
) -> dict[str, Any]:
    from transferlab.core.config import build

    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend '{backend}'", where="--backend", fix="use --backend local or --backend ray")
    check_grid(grid, seeds)
    if name is not None:
        check_sweep_name(name)
    if backend == "ray" and address:  # before any run folder is made
        from transferlab.sweep.ray_backend import check_reachable

        check_reachable(address)
    points = _points(grid)
    n_trials = len(points) * seeds
    if n_trials > max_runs():
        raise ConfigError(f"the sweep has {n_trials} trials, more than the cap of {max_runs()} run folders",
                          where="--grid/--seeds", fix="sweep fewer values, or raise the cap with TRANSFERLAB_MAX_RUNS")
    configs = dedupe([build(GrokConfig, {**base.to_dict(), **pt, "seed": pt.get("seed", base.seed) + s})
                      for pt in points for s in range(seeds)])
    sweep = name or sweep_name(base, grid, seeds)
    before = {c.config_hash(): store.open_run("grokking", c, sweep=sweep).status for c in configs}
    pending = [c for c in configs if before[c.config_hash()] not in ("done", "diverged")]
    groups = group_configs(pending, max_group)
    payload = [[c.to_dict() for c in g] for g in groups]
    if backend == "ray":
        from transferlab.sweep.ray_backend import run_on_ray

        run_on_ray(str(store.root), payload, sweep, address, store.mirror_names)
    elif backend == "local":
        with progress_bar(f"{sweep}: groups", total=len(payload)) as bar:
            for g in payload:
                execute_group(str(store.root), g, sweep, store.mirror_names)
                bar.update(advance=1)
    else:
        raise ConfigError(f"unknown backend '{backend}'", fix="use --backend local or --backend ray")
    return collect(store, sweep, configs, trained=[c.config_hash() for c in pending], grid=grid)


def check_grid(grid: dict[str, list[Any]], seeds: int) -> None:
    """Refuse what a sweep would silently override or repeat: the seed key together with --seeds > 1 (the
    runner sets seed..seed+K-1 itself) and a value listed twice for one key."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}", fix="e.g. --seeds 3")
    if "seed" in grid and seeds > 1:
        raise ConfigError("--grid seed=... and --seeds > 1 both set the seed",
                          fix="give the seeds either as --grid seed=0,1,2 or as --seeds 3, not both")
    for key, values in grid.items():
        seen: set[str] = set()
        for v in values:
            norm = repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)
            if norm in seen:
                raise ConfigError(f"--grid {key} lists the value {v!r} twice",
                                  fix="give each value once: a trial that repeats another is the same run")
            seen.add(norm)


def check_sweep_name(name: str) -> None:
    """A sweep name labels runs and names the report file in the store: a plain name, no path."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name) or ".." in name:
        raise ConfigError(f"--name {name!r} is not a plain name",
                          fix="use letters, digits, '.', '_' and '-' (no '/' or '..'), at most 100 characters")


def dedupe(configs: list[GrokConfig]) -> list[GrokConfig]:
    """Identical trials (same config hash) run once."""
    seen: dict[str, GrokConfig] = {}
    for c in configs:
        seen.setdefault(c.config_hash(), c)
    return list(seen.values())


def _points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    from transferlab.sweep.grid import expand_grid

    return expand_grid(grid) if grid else [{}]


def collect(store: Store, sweep: str, configs: list[GrokConfig], trained: list[str],
            grid: dict[str, list[Any]]) -> dict[str, Any]:
    from transferlab.store.run import Run

    trials = []
    for c in configs:
        run = Run(store, "grokking", c.config_hash())
        s = run.summary() or {}
        trials.append({"run_id": run.id, "status": s.get("status", run.status),
                       **{k: c.to_dict()[k] for k in grid}, "seed": c.seed, "lr": c.lr,
                       "weight_decay": c.weight_decay, "steps_to_memorize": s.get("steps_to_memorize"),
                       "steps_to_generalize": s.get("steps_to_generalize"),
                       "final_val_acc": s.get("final_val_acc"), "norm_at_memorize": s.get("norm_at_memorize"),
                       "norm_at_generalize": s.get("norm_at_generalize"), "last_step": s.get("last_step"),
                       "error": s.get("error")})
    return {"sweep": sweep, "store": str(Path(store.root)), "trials": trials, "trained": trained,
            "counts": {st: sum(t["status"] == st for t in trials) for st in {t["status"] for t in trials}}}
