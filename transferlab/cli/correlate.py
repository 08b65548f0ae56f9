"""`transferlab correlate PATH [--json]`: cross-stage (pretrain -> SFT) correlations of benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import JsonOpt, SetOpt, StoreOpt, begin, check_paths, emit_json, say, store_path
from transferlab.core.config import load_yaml, resolve
from transferlab.core.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("correlate")
    def correlate(
        path: Path = typer.Argument(..., help="Tidy CSV or folder <root>/<stage>/<model>/results_*.json."),
        pre: str | None = typer.Option(None, "--pre", help="Stage before fine-tuning [pretrain]."),
        post: str | None = typer.Option(None, "--post", help="Stage after fine-tuning (default: sft)."),
        metric: str | None = typer.Option(None, "--metric", help="Harness metric: acc or acc_norm."),
        tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated benchmarks to keep."),
        categories: Path | None = typer.Option(None, "--categories",
                                                  help="YAML file mapping benchmark: category."),
        n_boot: int | None = typer.Option(None, "--n-boot", help="Bootstrap resamples (default 2000)."),
        preset: str | None = typer.Option(None, "--preset", help="quick | paper"),
        config: Path | None = typer.Option(None, "--config", help="YAML config file."),
        out: Path | None = typer.Option(None, "--out", help="Report path (default: in the run folder)."),
        sets: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Do benchmark rankings before fine-tuning survive it? Correlations, intervals, calibration."""
        begin(json_out)
        from transferlab.studies.correlate import PRESETS, CorrelateConfig, run

        extra: dict = {"path": str(path)}
        for key, val in (("pre_stage", pre), ("post_stage", post), ("metric", metric), ("n_boot", n_boot)):
            if val is not None:
                extra[key] = val
        if tasks is not None:
            extra["tasks"] = [t.strip() for t in tasks.split(",") if t.strip()]
        if categories is not None:
            cats = load_yaml(categories)
            if not all(isinstance(v, str) for v in cats.values()):
                raise ConfigError("every value must be a category name", where=str(categories),
                                  fix="write one 'benchmark: category' per line")
            extra["categories"] = {str(k): v for k, v in cats.items()}
        cfg = resolve(CorrelateConfig, presets=PRESETS, preset=preset, config_file=config, overrides=sets,
                      extra=extra)
        check_paths(store, out, "--out")
        result = run(cfg, store=store_path(store), out=out)
        if json_out:
            emit_json(result)
            return
        say(f"[bold]{result['n_models']} models[/bold] · {' -> '.join(result['stages'])}")
        for r in result["ranking_accuracy"]:
            ci = r["ci"] or [float("nan")] * 2
            rho = r["spearman"] if r["spearman"] is not None else float("nan")
            say(f"  {r['rank']:>2}. {r['benchmark']:<24} Spearman {rho:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                f"  {r['verdict']}")
        typer.echo(f"report: {result['report']}")
