"""`transferlab sweep STUDY --grid key=v1,v2 --sample key=loguniform:a:b ...`: a sweep of any registered
study, on a local executor or on Ray Tune."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from transferlab.cli.common import (
    ConfigOpt,
    JsonOpt,
    MirrorOpt,
    SetOpt,
    StoreOpt,
    begin,
    emit_json,
    show,
    store_path,
)
from transferlab.store import Store

sweep_app = typer.Typer(help="Sweeps of any study over config keys: grids, random search; local or Ray Tune.",
                        no_args_is_help=True, rich_markup_mode="markdown")


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")  # a subcommand per study: add_sweep, from cli/studies.py's sync


def add_sweep(command: str) -> None:
    """`transferlab sweep <command>` for one registered study."""
    from transferlab.studies.registry import get_study

    sweep_app.command(command, help=f"Sweep the {command} study ({get_study(command).summary}).")(
        _command(command))


def _command(command: str) -> Any:
    from transferlab.cli.common import preset_help
    from transferlab.studies.registry import get_study, study_names

    study = get_study(command)
    plans = ", ".join(study.sweep_plans)
    with_metric = [c for c in study_names() if get_study(c).intermediate_metric]
    plan_help = (f"A named sweep instead of --grid: {plans}." if plans
                 else "A named sweep instead of --grid (this study has none).")
    scheduler_help = ("asha: Ray Tune stops unpromising trials early (studies with intermediate results: "
                      f"{', '.join(with_metric) or 'none'}).")

    def sweep(
        grid: Optional[List[str]] = typer.Option(None, "--grid", help="key=v1,v2,... (repeatable; dotted keys "
                                                 "for sub-configs, e.g. pretrain.lr=1e-3,3e-3)."),
        sample: Optional[List[str]] = typer.Option(None, "--sample", help="Random search: key=loguniform:LO:HI, "
                                                   "uniform:LO:HI, int:LO:HI or choice:a,b (repeatable)."),
        trials: int = typer.Option(8, "--trials", help="Random samples drawn (with --sample)."),
        sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of the random draws."),
        plan: Optional[str] = typer.Option(None, "--plan", help=plan_help),
        preset: Optional[str] = typer.Option(None, "--preset", help="The preset every trial starts from: "
                                             + preset_help(study)),
        config: Optional[Path] = ConfigOpt,
        set_: Optional[List[str]] = SetOpt,
        seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per point (default 1, or the plan's)."),
        backend: str = typer.Option("local", "--backend", help="local or ray (Ray Tune)."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local Ray)."),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", help=scheduler_help),
        name: Optional[str] = typer.Option(None, "--name", help="Sweep name (default: a hash of base and grid)."),
        store: Optional[Path] = StoreOpt,
        mirror: Optional[List[str]] = MirrorOpt,
        json_out: bool = JsonOpt,
        print_config: bool = typer.Option(False, "--print-config", help="Print the base config and every trial's "
                                          "swept values (validated), and exit without running."),
    ) -> None:
        _sweep(command, grid, sample, trials, sample_seed, plan, preset, config, set_, seeds, backend, address,
               scheduler, name, store, mirror, json_out, print_config)

    sweep.__doc__ = f"Sweep the {command} study."
    return sweep


def _sweep(command: str, grid: list[str] | None, sample: list[str] | None, trials: int, sample_seed: int,
           plan: str | None, preset: str | None, config: Path | None, set_: list[str] | None, seeds: int | None,
           backend: str, address: str | None, scheduler: str | None, name: str | None, store: Path | None,
           mirror: list[str] | None, json_out: bool, print_config: bool = False) -> None:
    from transferlab.core.config import canonical_key, parse_override
    from transferlab.core.errors import ConfigError
    from transferlab.studies.registry import get_study
    from transferlab.sweep import parse_grid, run_sweep
    from transferlab.sweep.grid import draw_samples, parse_sample
    from transferlab.sweep.runner import (
        canonical_keys,
        check_grid,
        check_scheduler,
        check_sweep_name,
        combine,
        trial_configs,
    )

    begin(json_out)
    study = get_study(command)
    plan_overrides: list[str] = []
    plan_variants: list[dict[str, Any]] | None = None  # a plan's variants of every grid point (runner's samples)
    if plan is not None:
        plans = dict(study.sweep_plans)
        if plan not in plans:
            raise ConfigError(f"unknown sweep plan '{plan}'", where="--plan",
                              fix=f"choose from {', '.join(plans)}" if plans else f"the {command} study has no plans")
        if grid or sample or preset is not None or config is not None:
            raise ConfigError("--plan brings its own grid and base preset", where="--plan",
                              fix="drop --grid/--sample/--preset/--config, or drop --plan (--set still applies)")
        sp = plans[plan]
        grid = [f"{k}={','.join(str(v) for v in vs)}" for k, vs in sp.grid.items()]
        preset = sp.preset
        plan_overrides = [f"{k}={v}" for k, v in sp.overrides.items()]
        seeds = sp.seeds if seeds is None else seeds
        plan_variants = getattr(sp, "variants", None) or None
    if not grid and not sample:
        plans = dict(study.sweep_plans)
        raise ConfigError("nothing to sweep", where="--grid",
                          fix="give --grid key=v1,v2 or --sample key=loguniform:LO:HI (repeatable)"
                              + (f", or --plan ({', '.join(plans)})" if plans else ""))
    seeds = 1 if seeds is None else seeds
    cls = study.config_cls
    grid_values = canonical_keys(cls, parse_grid(grid or []), "--grid")
    space = canonical_keys(cls, parse_sample(sample or []), "--sample")
    variants = [canonical_keys(cls, v, f"plan {plan}") for v in plan_variants] if plan_variants else None
    samples = draw_samples(space, trials, sample_seed) if space else variants
    swept = [*grid_values, *space, *(variants[0] if variants else {})]
    both = sorted({canonical_key(cls, parse_override(item)[0]) for item in set_ or []} & set(swept))
    if both:
        raise ConfigError(f"'{both[0]}' is set both by --set and by the sweep (the sweep would override it)",
                          fix=f"drop --set {both[0]}=... or its --grid/--sample")
    check_grid(grid_values, seeds)
    if name is not None:
        check_sweep_name(name)
    if scheduler is not None:
        check_scheduler(study, scheduler, backend)
    base = study.make_config(preset, plan_overrides + list(set_ or []), config_file=config)
    trials_ = trial_configs(study, base, combine(grid_values, samples), seeds)  # all validated before anything runs
    if print_config:
        import yaml

        keys = [*swept, *(["seed"] if seeds > 1 else [])]
        plan_out = {"base": base.to_dict(), "trials": [{k: t.value(k) for k in keys} for t in trials_]}
        if json_out:
            emit_json(plan_out)
        else:
            typer.echo(yaml.safe_dump(plan_out, sort_keys=False).rstrip())
        return
    # opens (so checks) the mirrors before anything runs; the workers reopen them by name
    st = Store(store_path(store), mirrors=mirror or ())
    result = run_sweep(base, grid_values, st, study=study, seeds=seeds, backend=backend, address=address, name=name,
                       samples=samples, scheduler=scheduler)
    if not study.sweep_report(result, st, swept):
        from transferlab.sweep.report import write_generic_sweep_report

        result["report"] = str(write_generic_sweep_report(result, st, swept, study.name))
    if json_out:
        emit_json(result)
    else:
        for t in result["trials"]:
            keys = " ".join(f"{k}={t.get(k)}" for k in swept)
            metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in t.items() if k not in {"run_id", "status", "error", "seed", *swept}
                               and v is not None and not isinstance(v, (dict, list)))
            show(f"{t['run_id']}  {t['status']:9s} {keys} seed={t.get('seed')} {metrics}")
        typer.echo(result["report"])
    bad = [t for t in result["trials"] if t["status"] not in ("done", "diverged", "stopped")]
    if bad:
        from transferlab.core.errors import SweepIncomplete

        listed = "; ".join(f"{t['run_id']} {t['status']}" + (f" ({t['error']})" if t.get("error") else "")
                           for t in bad[:5])
        raise SweepIncomplete(f"{len(bad)} of {len(result['trials'])} trials did not finish: {listed}"
                              + (f"; and {len(bad) - 5} more" if len(bad) > 5 else ""),
                              where=f"sweep {result['sweep']}",
                              fix="fix the cause and run the same command again: finished trials are reused")
