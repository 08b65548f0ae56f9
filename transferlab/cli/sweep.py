"""`transferlab sweep grok --grid key=v1,v2 ...`: sweeps on a local executor or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from transferlab.cli.common import JsonOpt, MirrorOpt, SetOpt, StoreOpt, begin, emit_json, store_path
from transferlab.core.config import resolve
from transferlab.store import Store

sweep_app = typer.Typer(help="Sweeps over config keys (local executor or Ray).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")


@sweep_app.command("grok")
def sweep_grok(
    grid: List[str] = typer.Option(..., "--grid", help="key=v1,v2,... (repeatable)."),
    preset: Optional[str] = typer.Option(None, "--preset"),
    config: Optional[Path] = typer.Option(None, "--config"),
    set_: Optional[List[str]] = SetOpt,
    seeds: int = typer.Option(1, "--seeds"),
    backend: str = typer.Option("local", "--backend", help="local or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local Ray)."),
    name: Optional[str] = typer.Option(None, "--name", help="Sweep name (default: a hash of base and grid)."),
    store: Optional[Path] = StoreOpt,
    mirror: Optional[List[str]] = MirrorOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Sweep the grokking study over a grid; trials that differ only in seed/lr/wd train as one ensemble."""
    from transferlab.studies.grokking import PRESETS, GrokConfig
    from transferlab.studies.grokking.report import write_sweep_report
    from transferlab.sweep import parse_grid, run_sweep

    begin(json_out)
    grid_values = parse_grid(grid)
    from transferlab.core.config import parse_override
    from transferlab.core.errors import ConfigError
    from transferlab.sweep.runner import check_grid, check_sweep_name

    both = sorted({parse_override(item)[0] for item in set_ or []} & set(grid_values))
    if both:
        raise ConfigError(f"'{both[0]}' is set both by --set and by --grid (the grid would override it)",
                          fix=f"drop --set {both[0]}=... or its --grid")
    check_grid(grid_values, seeds)
    if name is not None:
        check_sweep_name(name)
    name_ = preset if preset is not None or config is not None or set_ else "default"
    base = resolve(GrokConfig, presets=PRESETS, preset=name_, config_file=config, overrides=set_)
    # validate every point before anything runs
    from transferlab.core.config import build
    from transferlab.sweep.grid import expand_grid

    for pt in expand_grid(grid_values):
        build(GrokConfig, {**base.to_dict(), **pt})
    # opens (so checks) the mirrors before anything runs; the workers reopen them by name
    st = Store(store_path(store), mirrors=mirror or ())
    result = run_sweep(base, grid_values, st, seeds=seeds, backend=backend, address=address, name=name)
    path, fit = write_sweep_report(result, st)
    result["report"] = str(path)
    result["delay_law"] = None if fit is None else {"c": fit.c, "r2": fit.r2, "kappa": fit.kappa,
                                                    "heldout_mape": fit.heldout_mape, "n": fit.n}
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
