"""`transferlab grok`: the grokking study."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from transferlab.cli.common import (
    ExplainOpt,
    JsonOpt,
    ListPresetsOpt,
    MirrorOpt,
    PrintConfigOpt,
    SetOpt,
    StoreOpt,
    begin,
    config_or_listing,
    emit_json,
    preset_option,
    store_path,
)
from transferlab.store import Store


def register(app: typer.Typer) -> None:
    from transferlab.studies.registry import get_study

    study = get_study("grok")

    @app.command(study.command)
    def grok(
        preset: Optional[str] = preset_option(study),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML file of config keys."),
        set_: Optional[List[str]] = SetOpt,
        seeds: int = typer.Option(1, "--seeds", help="Train K members (seeds seed..seed+K-1) as one ensemble."),
        store: Optional[Path] = StoreOpt,
        mirror: Optional[List[str]] = MirrorOpt,
        json_out: bool = JsonOpt,
        print_config: bool = PrintConfigOpt,
        list_presets: bool = ListPresetsOpt,
        explain: bool = ExplainOpt,
    ) -> None:
        """Train a grokking setup: memorization first, generalization much later."""
        begin(json_out)
        cfg = config_or_listing(study, preset=preset, config=config, overrides=set_, list_presets=list_presets,
                                print_config=print_config, explain=explain, json_out=json_out)
        if cfg is None:
            return
        result = study.run(cfg, Store(store_path(store), mirrors=mirror or ()), seeds=seeds)
        if json_out:
            emit_json(result.to_json())
        else:
            agg = result["aggregate"]
            def fmt(key: str) -> str:
                v = agg[key]["mean"]
                return "never" if v is None else f"{v:g}"

            typer.echo(f"memorized at step {fmt('steps_to_memorize')}, generalized (99% val) at step "
                f"{fmt('steps_to_generalize')}, final val acc {fmt('final_val_acc')} "
                f"({result['members'][0].get('threads')} thread(s))")
            for m in result["members"]:
                if "diagnosis" in m:
                    typer.echo(f"seed {m['seed']}: {m['diagnosis']['message']}")
            typer.echo(result["report"])

