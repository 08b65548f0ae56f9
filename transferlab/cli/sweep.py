"""`transferlab sweep grok --grid key=v1,v2 ...`: sweeps on a local executor or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from transferlab.cli.common import JsonOpt, MirrorOpt, SetOpt, StoreOpt, begin, emit_json, store_path
from transferlab.core.config import resolve
from transferlab.store import Store

sweep_app = typer.Typer(help="Sweeps over config keys (local executor or Ray).", no_args_is_help=True,
                        rich_markup_mode="markdown")


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")


@sweep_app.command("grok")
def sweep_grok(
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="key=v1,v2,... (repeatable)."),
    plan: Optional[str] = typer.Option(None, "--plan", help="A named sweep instead of --grid: delay-law."),
    preset: Optional[str] = typer.Option(None, "--preset", help="The grok preset every trial starts from."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of config keys."),
    set_: Optional[List[str]] = SetOpt,
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per grid point (default 1, or the plan's)."),
    backend: str = typer.Option("local", "--backend", help="local or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local Ray)."),
    name: Optional[str] = typer.Option(None, "--name", help="Sweep name (default: a hash of base and grid)."),
    store: Optional[Path] = StoreOpt,
    mirror: Optional[List[str]] = MirrorOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Sweep the grokking study over a grid; trials that differ only in seed/lr/wd train as one ensemble."""
    from transferlab.studies.grokking import PRESETS, SWEEP_PLANS, GrokConfig
    from transferlab.studies.grokking.report import write_sweep_report
    from transferlab.sweep import parse_grid, run_sweep

    begin(json_out)
    from transferlab.core.config import parse_override
    from transferlab.core.errors import ConfigError
    from transferlab.sweep.runner import check_grid, check_sweep_name

    plan_overrides: list[str] = []
    if plan is not None:
        if plan not in SWEEP_PLANS:
            raise ConfigError(f"unknown sweep plan '{plan}'", where="--plan",
                              fix=f"choose from {', '.join(SWEEP_PLANS)}")
        if grid or preset is not None or config is not None:
            raise ConfigError("--plan brings its own grid and base preset", where="--plan",
                              fix="drop --grid/--preset/--config, or drop --plan (--set still applies on top)")
        sp = SWEEP_PLANS[plan]
        grid = [f"{k}={','.join(str(v) for v in vs)}" for k, vs in sp.grid.items()]
        preset = sp.preset
        plan_overrides = [f"{k}={v}" for k, v in sp.overrides.items()]
        seeds = sp.seeds if seeds is None else seeds
    if not grid:
        raise ConfigError("no grid to sweep", where="--grid",
                          fix=f"give --grid key=v1,v2 (repeatable) or --plan ({', '.join(SWEEP_PLANS)})")
    seeds = 1 if seeds is None else seeds
    grid_values = parse_grid(grid)

    both = sorted({parse_override(item)[0] for item in set_ or []} & set(grid_values))
    if both:
        raise ConfigError(f"'{both[0]}' is set both by --set and by --grid (the grid would override it)",
                          fix=f"drop --set {both[0]}=... or its --grid")
    check_grid(grid_values, seeds)
    if name is not None:
        check_sweep_name(name)
    name_ = preset if preset is not None or config is not None or set_ else "default"
    base = resolve(GrokConfig, presets=PRESETS, preset=name_, config_file=config,
                   overrides=plan_overrides + list(set_ or []))
    # validate every point before anything runs
    from transferlab.core.config import build
    from transferlab.sweep.grid import expand_grid

    for pt in expand_grid(grid_values):
        build(GrokConfig, {**base.to_dict(), **pt})
    # opens (so checks) the mirrors before anything runs; the workers reopen them by name
    st = Store(store_path(store), mirrors=mirror or ())
    result = run_sweep(base, grid_values, st, seeds=seeds, backend=backend, address=address, name=name)
    path, law = write_sweep_report(result, st)
    result["report"] = str(path)
    result["delay_law"] = {k: getattr(law, k) for k in (
        "constant", "constant_ci", "r2", "mape_loo", "mape_heldout", "heldout_rule", "n_used", "n_censored",
        "excluded", "theory_constant", "why_not")}
    result["delay_law"]["points"] = [{k: p[k] for k in ("run_id", "x", "delay", "censored", "predicted")
                                      if k in p} for p in law.points]
    if json_out:
        emit_json(result)
    else:
        for t in result["trials"]:
            typer.echo(f"{t['run_id']}  {t['status']:9s} lr={t['lr']:g} wd={t['weight_decay']:g} "
                       f"seed={t['seed']} mem={t['steps_to_memorize']} gen={t['steps_to_generalize']}")
        typer.echo(result["report"])
    bad = [t for t in result["trials"] if t["status"] not in ("done", "diverged")]
    if bad:
        from transferlab.core.errors import SweepIncomplete

        listed = "; ".join(f"{t['run_id']} {t['status']}" + (f" ({t['error']})" if t.get("error") else "")
                           for t in bad[:5])
        raise SweepIncomplete(f"{len(bad)} of {len(result['trials'])} trials did not finish: {listed}"
                              + (f"; and {len(bad) - 5} more" if len(bad) > 5 else ""),
                              where=f"sweep {result['sweep']}",
                              fix="fix the cause and run the same command again: finished trials are reused")
