"""`transferlab correlate-zoo`: the zoo's own pretrain -> SFT pairs, scored and correlated end to end.

A separate top-level command: `transferlab correlate PATH` stays a single command (a `zoo`
subcommand would turn it into a group and break `correlate PATH`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import JsonOpt, SetOpt, StoreOpt, begin, emit_json, say, store_path


def register(app: typer.Typer) -> None:
    @app.command("correlate-zoo")
    def correlate_zoo(
        preset: str | None = typer.Option(None, "--preset", help="micro | default"),
        config: Path | None = typer.Option(None, "--config", help="YAML config file."),
        zoo: Path | None = typer.Option(None, "--zoo", help="Zoo folder (default: <store>/zoo)."),
        sets: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Pretrain zoo LMs on prose/code mixtures at 2 sizes, fine-tune them, score stdlib benchmarks,
        and ask whether the rankings survive fine-tuning (the `correlate` analysis on the result)."""
        begin(json_out)
        from transferlab.core.config import resolve
        from transferlab.studies.correlate.zoo_config import PRESETS, ZooPairsConfig
        from transferlab.studies.correlate.zoo_pairs import run

        cfg = resolve(ZooPairsConfig, presets=PRESETS, preset=preset, config_file=config, overrides=sets)
        result = run(cfg, store_path(store), zoo)
        if json_out:
            emit_json(result)
            return
        c = result["correlate"]
        say(f"[bold]{c['n_models']} models[/bold] · pretrain -> sft · csv {result['csv']}")
        for r in c["ranking_accuracy"]:
            rho = r["spearman"] if r["spearman"] is not None else float("nan")
            ci = r["ci"] or [float("nan")] * 2
            say(f"  {r['rank']:>2}. {r['benchmark']:<18} Spearman {rho:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                f"  {r['verdict']}")
        typer.echo(f"report: {result['report']}")
