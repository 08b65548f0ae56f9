"""`transferlab transfer`: effective data transferred (Hernandez et al. 2021) on the local zoo."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import JsonOpt, SetOpt, StoreOpt, begin, emit_json, say, store_path


def register(app: typer.Typer) -> None:
    @app.command("transfer")
    def transfer(
        preset: str | None = typer.Option(
            None, "--preset", help="quick | full | micro (see --list-presets)."
        ),
        config: Path | None = typer.Option(None, "--config", help="YAML file of config keys."),
        set_: list[str] | None = SetOpt,
        zoo: Path | None = typer.Option(None, "--zoo", help="Zoo folder (default: <store>/zoo)."),
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
        print_config: bool = typer.Option(
            False, "--print-config", help="Print the resolved config and exit."
        ),
        list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
    ) -> None:
        """Pretrain on prose, then train from scratch and fine-tune on code over grids of D; fit D_T."""
        from transferlab.core.config import resolve
        from transferlab.studies.transfer.zoo_config import PRESETS, TransferRunConfig

        begin(json_out)
        if list_presets:
            docs = {n: PRESETS.doc(n) for n in PRESETS.names()}
            if json_out:
                emit_json(docs)
            else:
                for n, d in docs.items():
                    typer.echo(f"{n:8s} {d}")
            return
        name = preset if preset is not None or config is not None or set_ else "quick"
        cfg = resolve(TransferRunConfig, presets=PRESETS, preset=name, config_file=config, overrides=set_)
        if print_config:
            typer.echo(cfg.to_yaml())
            return
        from transferlab.store import Store
        from transferlab.studies.transfer.run import run

        summary = run(cfg, Store(store_path(store)), zoo)
        if json_out:
            emit_json(summary)
            return
        if summary.get("analysis_error"):
            say(f"analysis: {summary['analysis_error']}")
        else:
            say(
                f"D_T = k D_F^alpha N^beta: k={summary['k']:.4g} alpha={summary['alpha']:.3f} "
                f"beta={summary['beta']:.3f}; D_T grows with N: {summary['D_T_grows_with_N']}"
            )
        say(f"runs table: {summary['runs_csv']} ({summary['n_runs']} runs)")
        typer.echo(summary["report"])
