"""`transferlab correlate-zoo`: the zoo's own pretrain -> SFT pairs, scored and correlated end to end.

A separate top-level command: `transferlab correlate PATH` stays a single command (a `zoo`
subcommand would turn it into a group and break `correlate PATH`).
"""

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
    show,
    store_path,
)


def _fmt(v: float | None, ci: list | None = None) -> str:
    import math

    if v is None or not math.isfinite(v):
        return "undefined"
    out = f"{v:+.2f}"
    if ci and None not in ci and all(math.isfinite(x) for x in ci):
        out += f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return out


def cross_stage_table(c: dict) -> str:
    """Every defined cross-stage statistic per benchmark, for accuracy and for confidence (stdout)."""
    lines = [f"{'benchmark':<18} {'quantity':<10} {'mean pre':>11} {'Spearman [95% CI]':>22} "
             f"{'Kendall':>8} {'Pearson':>8}  verdict"]
    for b, r in c["benchmarks"].items():
        for q in ("accuracy", "confidence"):
            if r.get(f"reliability_{q}") is None:
                continue
            pre = r.get(f"mean_{q}_pre")
            lines.append(
                f"{b:<18} {q:<10} {('' if pre is None else f'{pre:.3f}'):>11} "
                f"{_fmt(r.get(f'spearman_{q}'), r.get(f'spearman_{q}_ci')):>22} "
                f"{_fmt(r.get(f'kendall_{q}')):>8} {_fmt(r.get(f'pearson_{q}')):>8}  {r.get(f'reliability_{q}')}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    from transferlab.studies.registry import get_study

    study = get_study("correlate-zoo")

    @app.command(study.command)
    def correlate_zoo(
        preset: str | None = preset_option(study),
        config: Path | None = typer.Option(None, "--config", help="YAML config file."),
        zoo: Path | None = typer.Option(None, "--zoo", help="Zoo folder (default: <store>/zoo)."),
        sets: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
        print_config: bool = PrintConfigOpt,
        list_presets: bool = ListPresetsOpt,
        explain: bool = ExplainOpt,
    ) -> None:
        """Pretrain zoo LMs on prose/code mixtures at 2 sizes, fine-tune them, score stdlib benchmarks,
        and ask whether the rankings survive fine-tuning (the `correlate` analysis on the result)."""
        begin(json_out)
        from transferlab.store import Store

        cfg = config_or_listing(study, preset=preset, config=config, overrides=sets, list_presets=list_presets,
                                print_config=print_config, explain=explain, json_out=json_out)
        if cfg is None:
            return
        result = study.run(cfg, Store(store_path(store)), zoo_root=zoo).to_json()
        if json_out:
            emit_json(result)
            return
        c = result["correlate"]
        show(f"[bold]{c['n_models']} models[/bold] · pretrain -> sft · csv {result['csv']}")
        typer.echo(cross_stage_table(c))
        typer.echo(f"report: {result['report']}")
