"""`transferlab transfer`: effective data transferred (Hernandez et al. 2021) on the local zoo."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import (
    ExplainOpt,
    JsonOpt,
    ListPresetsOpt,
    PrintConfigOpt,
    SetOpt,
    StoreOpt,
    begin,
    config_or_listing,
    emit_json,
    preset_option,
    say,
    store_path,
)


def _ci(ci: list[float] | None) -> str:
    return "[no interval]" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def register(app: typer.Typer) -> None:
    from transferlab.studies.registry import get_study

    study = get_study("transfer")

    @app.command(study.command)
    def transfer(
        preset: str | None = preset_option(study),
        config: Path | None = typer.Option(None, "--config", help="YAML file of config keys."),
        set_: list[str] | None = SetOpt,
        zoo: Path | None = typer.Option(None, "--zoo", help="Zoo folder (default: <store>/zoo)."),
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
        print_config: bool = PrintConfigOpt,
        list_presets: bool = ListPresetsOpt,
        explain: bool = ExplainOpt,
    ) -> None:
        """Pretrain on prose, then train from scratch and fine-tune on code over grids of D; fit D_T."""
        begin(json_out)
        cfg = config_or_listing(study, preset=preset, config=config, overrides=set_, list_presets=list_presets,
                                print_config=print_config, explain=explain, json_out=json_out)
        if cfg is None:
            return
        from transferlab.store import Store

        summary = study.run(cfg, Store(store_path(store)), zoo_root=zoo).to_json()
        if json_out:
            emit_json(summary)
        elif not summary.get("analysis_error"):
            a, b = summary["alpha"], summary["beta"]
            say(
                f"D_T = k D_F^alpha N^beta: k={summary['k']:.4g} alpha={a['value']:.3f} {_ci(a['ci'])} "
                f"beta={b['value']:.3f} {_ci(b['ci'])} (Hernandez et al.: alpha 0.18, beta 0.38); "
                f"D_T grows with N: {summary['D_T_grows_with_N']} (geometric mean), "
                f"{summary['D_T_grows_with_N_at_every_D_F']} (at every D_F)"
            )
        if not json_out:
            say(f"runs table: {summary['runs_csv']} ({summary['n_runs']} runs)")
            typer.echo(summary["report"])
        if summary.get("analysis_error"):
            # the runs and the report are kept; the analysis itself could not be made
            typer.echo(f"error: the transfer analysis could not run: {summary['analysis_error']}", err=True)
            raise typer.Exit(1)
