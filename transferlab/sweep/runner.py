"""Run a sweep of any study: expand a grid and/or random samples into trials, run them locally or on Ray
Tune, record every trial.

The runner speaks only the Study protocol (``transferlab.studies.base``): ``make_config``/``config_cls`` to
build trials, ``run`` (or the optional ``run_group`` hook: grokking trains trials that differ only in seed,
lr and weight decay as one vmapped ensemble) and ``trial_metrics`` to tabulate them. A trial that raises is
recorded as ``failed`` (with its error) and does not stop the others; a group that raises is retried member by
member so only the failing trial fails. Running the same sweep again reuses finished runs by config hash and
redoes only what is missing or failed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from transferlab.core.config import StudyConfig, build, canonical_key, nest
from transferlab.core.errors import ConfigError, TransferlabError
from transferlab.core.memory import max_runs
from transferlab.core.progress import progress_bar
from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Study, StudyResult
from transferlab.studies.registry import get_study, study_for

MAX_GROUP = 16
FINAL = ("done", "diverged", "stopped")  # statuses a rerun of the sweep does not redo


def sweep_name(study: Study, base: StudyConfig, grid: dict[str, list[Any]], seeds: int,
               samples: list[dict[str, Any]] | None = None) -> str:
    blob = json.dumps({"base": base.config_hash(), "grid": grid, "seeds": seeds,
                       **({"samples": samples} if samples else {})}, sort_keys=True, default=str)
    return study.sweep_name_prefix() + hashlib.sha256(blob.encode()).hexdigest()[:10]


def trial_configs(study: Study, base: StudyConfig, points: list[dict[str, Any]], seeds: int) -> list[StudyConfig]:
    """One validated config per (point, seed); identical trials (same hash) once."""
    cls = type(base)
    if seeds > 1 and not cls.knows("seed"):
        raise ConfigError(f"the {study.command} config has no seed to vary", where="--seeds",
                          fix="drop --seeds")
    configs = []
    for pt in points:
        for s in range(seeds):
            values = nest(cls, pt, into=copy.deepcopy(base.to_dict()))
            if seeds > 1:
                values = nest(cls, {"seed": pt.get("seed", base.value("seed")) + s}, into=values)
            configs.append(build(cls, values))
    return dedupe(configs)


def group_configs(study: Study, configs: list[StudyConfig], max_group: int = MAX_GROUP) -> list[list[StudyConfig]]:
    """Trials that may train together (the study's ``group_key``), at most ``max_group`` at a time; every
    other trial alone."""
    by_key: dict[str, list[StudyConfig]] = defaultdict(list)
    groups: list[list[StudyConfig]] = []
    for c in configs:
        key = study.group_key(c) if max_group > 1 else None
        if key is None:
            groups.append([c])
        else:
            by_key[key].append(c)
    for members in by_key.values():
        for i in range(0, len(members), max_group):
            groups.append(members[i:i + max_group])
    return groups


def _record_failure(store: Store, study: Study, cfg: StudyConfig, sweep: str, err: BaseException) -> None:
    from transferlab.store.lock import RunLocked

    if isinstance(err, RunLocked):
        return  # another process owns (and will record) that run: nothing of it is ours to write
    run = store.open_run(study.name, cfg, sweep=sweep)
    if run.status in FINAL:
        return
    reason = err.one_line() if isinstance(err, TransferlabError) else f"{type(err).__name__}: {err}"
    run.finish({"error": reason, "traceback": traceback.format_exc(limit=5)}, status="failed")


def _row(study: Study, cfg: StudyConfig, result: StudyResult | None, error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": cfg.config_hash()}
    if result is not None:
        row.update(study.trial_metrics(result))
    if error is not None:
        row.update({"status": "failed", "error": error})
    return row


def execute_group(command: str, store_root: str, configs: list[dict[str, Any]], sweep: str,
                  mirrors: tuple[str, ...] = (), reporter: Any = None) -> list[dict[str, Any]]:
    """Train one group; never raises. Returns one row of trial metrics per config. Runs in-process or in a
    Ray Tune trial."""
    study = get_study(command)
    store = Store(store_root, mirrors=mirrors)
    cfgs = [study.config_cls(**c) for c in configs]
    opts = study.options(report=False, reporter=reporter)
    try:
        if reporter is None and study.group_key(cfgs[0]) is not None:
            results = study.run_group(cfgs, store, sweep=sweep)
        else:
            results = [study.run(cfgs[0], store, opts)]
        return [_row(study, c, r) for c, r in zip(cfgs, results)]
    except Exception:  # noqa: BLE001 - a failing trial must not stop the sweep
        rows = []
        for cfg in cfgs:
            try:
                rows.append(_row(study, cfg, study.run(cfg, store, opts)))
            except Exception as err:  # noqa: BLE001
                _record_failure(store, study, cfg, sweep, err)
                rows.append(_row(study, cfg, None, err.one_line() if isinstance(err, TransferlabError)
                                 else f"{type(err).__name__}: {err}"))
        return rows


def run_sweep(
    base: StudyConfig,
    grid: dict[str, list[Any]],
    store: Store,
    seeds: int = 1,
    backend: str = "local",
    address: str | None = None,
    name: str | None = None,
    max_group: int = MAX_GROUP,
    samples: list[dict[str, Any]] | None = None,
    scheduler: str | None = None,
    study: Study | str | None = None,
) -> dict[str, Any]:
    """Every (grid point x random sample) x seed of the study of ``base`` (its config class names it, or
    ``study`` does). ``scheduler`` (Ray Tune's ``asha``; Ray backend only) stops unpromising trials early from
    the study's intermediate results."""
    study = study_for(base) if study is None else get_study(study) if isinstance(study, str) else study
    grid = canonical_keys(type(base), grid, "--grid")
    samples = [canonical_keys(type(base), s, "--sample") for s in samples] if samples else samples
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend '{backend}'", where="--backend", fix="use --backend local or --backend ray")
    check_grid(grid, seeds)
    if name is not None:
        check_sweep_name(name)
    if scheduler is not None:
        check_scheduler(study, scheduler, backend)
        max_group = 1  # a scheduler stops trials one by one
    if backend == "ray" and address:  # before any run folder is made
        from transferlab.sweep.ray_backend import check_reachable

        check_reachable(address)
    points = combine(grid, samples)
    n_trials = len(points) * seeds
    if n_trials > max_runs():
        raise ConfigError(f"the sweep has {n_trials} trials, more than the cap of {max_runs()} run folders",
                          where="--grid/--seeds", fix="sweep fewer values, or raise the cap with TRANSFERLAB_MAX_RUNS")
    configs = trial_configs(study, base, points, seeds)
    sweep = name or sweep_name(study, base, grid, seeds, samples)
    before = {c.config_hash(): store.open_run(study.name, c, sweep=sweep).status for c in configs}
    pending = [c for c in configs if before[c.config_hash()] not in FINAL]
    groups = group_configs(study, pending, max_group)
    payload = [[c.to_dict() for c in g] for g in groups]
    rows: dict[str, dict[str, Any]] = {}
    if backend == "ray":
        from transferlab.sweep.ray_backend import run_on_tune

        got = run_on_tune(study.command, str(store.root), payload, sweep, address, store.mirror_names, scheduler)
    else:
        got = []
        with progress_bar(f"{sweep}: trials", total=len(payload)) as bar:
            for g in payload:
                got += execute_group(study.command, str(store.root), g, sweep, store.mirror_names)
                bar.update(advance=1)
    for r in got:
        rows[r["run_id"]] = r
    return collect(study, store, sweep, configs, rows, trained=[c.config_hash() for c in pending], grid=grid,
                   samples=samples)


def combine(grid: dict[str, list[Any]], samples: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Every grid point with every random sample (either may be absent)."""
    from transferlab.sweep.grid import expand_grid

    points = expand_grid(grid) if grid else [{}]
    if samples:
        clash = sorted(set(grid) & set(samples[0]))
        if clash:
            raise ConfigError(f"'{clash[0]}' is both in --grid and in --sample", fix="give each key once")
        points = [{**p, **s} for p in points for s in samples]
    return points


def check_scheduler(study: Study, scheduler: str, backend: str) -> None:
    if scheduler != "asha":
        raise ConfigError(f"unknown scheduler '{scheduler}'", where="--scheduler", fix="use --scheduler asha")
    if backend != "ray":
        raise ConfigError("--scheduler needs --backend ray (the scheduler is Ray Tune's)", where="--scheduler",
                          fix="add --backend ray, or drop --scheduler")
    if study.intermediate_metric is None:
        raise ConfigError(f"the {study.command} study reports no intermediate results for a scheduler to act on",
                          where="--scheduler", fix="drop --scheduler (every trial then runs to its end)")


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


def dedupe(configs: list[StudyConfig]) -> list[StudyConfig]:
    """Identical trials (same config hash) run once."""
    seen: dict[str, StudyConfig] = {}
    for c in configs:
        seen.setdefault(c.config_hash(), c)
    return list(seen.values())


def canonical_keys(cls: type[StudyConfig], points: dict[str, Any], where: str) -> dict[str, Any]:
    """A grid, space or point with each key in its one spelling (``optimizer.lr`` and ``lr`` are both ``lr``), so
    rows, sweep names and the study's sweep page read the keys people have always typed."""
    out: dict[str, Any] = {}
    for key, v in points.items():
        name = canonical_key(cls, key)
        if name in out:
            raise ConfigError(f"{where} names '{name}' twice (as '{key}' too)", fix="give each key once")
        out[name] = v
    return out


def collect(study: Study, store: Store, sweep: str, configs: list[StudyConfig], rows: dict[str, dict[str, Any]],
            trained: list[str], grid: dict[str, list[Any]], samples: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """One row per trial: its swept keys, its status and the study's trial metrics (from this sweep's own
    results, else from the stored summary of a run finished before)."""
    keys = [*grid, *(samples[0] if samples else {})]
    trials = []
    for c in configs:
        run = Run(store, study.name, c.config_hash())
        status = run.status
        summary = run.summary() or {}
        row = study.trial_metrics(StudyResult(study.name, summary)) if status in FINAL else {}
        row.update({k: v for k, v in (rows.get(run.id) or {}).items() if v is not None})
        if status not in FINAL and run.id in rows and "error" not in rows[run.id]:
            status = "done"  # the study ran it under a resolved config of its own (e.g. w2s zoo references)
        trial = {"run_id": run.id, **{k: c.value(k) for k in keys}, **row,
                 **{k: c.value(k) for k in study.trial_config_keys},
                 "status": "failed" if "error" in (rows.get(run.id) or {}) else status,
                 "error": row.get("error") or summary.get("error")}
        if c.knows("seed"):
            trial.setdefault("seed", c.value("seed"))
        trials.append(trial)
    return {"study": study.command, "sweep": sweep, "store": str(Path(store.root)), "trials": trials,
            "trained": trained,
            "counts": {st: sum(t["status"] == st for t in trials) for st in {t["status"] for t in trials}}}
