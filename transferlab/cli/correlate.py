"""`transferlab correlate PATH [--json]`: cross-stage (pretrain -> SFT) correlations of benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from transferlab.cli.common import (
    ExplainOpt,
    JsonOpt,
    ListPresetsOpt,
    PrintConfigOpt,
    SetOpt,
    StoreOpt,
    begin,
    check_paths,
    config_or_listing,
    emit_json,
    preset_option,
    say,
    show,
    store_path,
)
from transferlab.core.config import load_yaml
from transferlab.core.errors import ConfigError


def register(app: typer.Typer) -> None:
    from transferlab.studies.registry import get_study

    study = get_study("correlate")

    @app.command(study.command)
    def correlate(
        path: Path | None = typer.Argument(None, help="Tidy CSV or folder <root>/<stage>/<model>/results_*.json."),
        pre: str | None = typer.Option(None, "--pre", help="Stage before fine-tuning (default: pretrain)."),
        post: str | None = typer.Option(None, "--post", help="Stage after fine-tuning (default: sft)."),
        metric: str | None = typer.Option(None, "--metric", help="Harness metric: acc or acc_norm."),
        tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated benchmarks (harness task or "
                                         "group names) to keep; a name in no results file is an error."),
        categories: Path | None = typer.Option(None, "--categories",
                                                  help="YAML file mapping benchmark: category."),
        n_boot: int | None = typer.Option(None, "--n-boot", help="Bootstrap resamples (default 2000)."),
        preset: str | None = preset_option(study),
        config: Path | None = typer.Option(None, "--config", help="YAML config file."),
        out: Path | None = typer.Option(None, "--report", "--out", help="Report path (default: in the run folder)."),
        sets: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
        print_config: bool = PrintConfigOpt,
        list_presets: bool = ListPresetsOpt,
        explain: bool = ExplainOpt,
    ) -> None:
        """Do benchmark rankings before fine-tuning survive it? Correlations, intervals, calibration.

        PATH is a tidy CSV or a folder of lm-evaluation-harness outputs, one per stage and model. Make
        them with the harness's Hugging Face extra (plain lm_eval lacks accelerate, which its hf model
        needs):

            pip install 'lm_eval\\[hf]'

            lm_eval --model hf --model_args pretrained=PATH_OR_ID --tasks hellaswag,arc_easy
            --log_samples --output_path ROOT/<stage>/<model>

        once per model and stage, with the same <model> in both stages. --log_samples gives the
        per-doc confidence (p of the gold choice; text and letter targets are resolved from the
        document's choices). With --output_path ROOT/<stage>, the harness's own layout, each model's
        name is the last part of its path (model_name in the results file).
        """
        begin(json_out)
        from transferlab.store import Store

        if path is None and not (list_presets or explain):
            raise ConfigError("no evaluation files given", where="PATH",
                              fix="transferlab correlate PATH (a tidy CSV or a folder of lm-eval-harness output)")
        extra: dict = {"path": str(path)} if path is not None else {}
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
        cfg = config_or_listing(study, preset=preset, config=config, overrides=sets, list_presets=list_presets,
                                print_config=print_config, explain=explain, json_out=json_out, extra=extra)
        if cfg is None:
            return
        check_paths(store, out, "--report")
        result = study.run(cfg, Store(store_path(store)), out=out).to_json()
        if json_out:
            emit_json(result)
            return
        show(f"[bold]{result['n_models']} models[/bold] · {' -> '.join(result['stages'])}")
        for note in result.get("notes", []):
            say(f"[yellow]note:[/yellow] {escape(note)}")
        for r in result["ranking_accuracy"]:
            ci = r["ci"] or [float("nan")] * 2
            rho = r["spearman"] if r["spearman"] is not None else float("nan")
            show(f"  {r['rank']:>2}. {r['benchmark']:<24} Spearman {rho:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                f"  {r['verdict']}")
        typer.echo(f"report: {result['report']}")
