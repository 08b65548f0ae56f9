"""`transferlab grok`: the grokking study."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from transferlab.cli.common import (
    EXPLAIN_HELP,
    JsonOpt,
    MirrorOpt,
    SetOpt,
    StoreOpt,
    begin,
    config_or_listing,
    emit_json,
    store_path,
)
from transferlab.store import Store


def register(app: typer.Typer) -> None:
    @app.command("grok")
    def grok(
        preset: Optional[str] = typer.Option(None, "--preset", help="Named preset (see --list-presets)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML file of config keys."),
        set_: Optional[List[str]] = SetOpt,
        seeds: int = typer.Option(1, "--seeds", help="Train K members (seeds seed..seed+K-1) as one ensemble."),
        store: Optional[Path] = StoreOpt,
        mirror: Optional[List[str]] = MirrorOpt,
        json_out: bool = JsonOpt,
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
        list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
        explain: bool = typer.Option(False, "--explain", help=EXPLAIN_HELP),
    ) -> None:
        """Train a grokking setup: memorization first, generalization much later."""
        from transferlab.studies.grokking import PRESETS, GrokConfig
        from transferlab.studies.grokking.run import run

        begin(json_out)
        cfg = config_or_listing(GrokConfig, PRESETS, preset=preset, config=config, overrides=set_,
                                default_preset="default", list_presets=list_presets, print_config=print_config,
                                explain=explain,
                                json_out=json_out)
        if cfg is None:
            return
        result = run(cfg, Store(store_path(store), mirrors=mirror or ()), seeds=seeds)
        if json_out:
            emit_json(_contract(result, seeds))
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


def _contract(result: dict, seeds: int) -> dict:
    members = result["members"]
    if seeds == 1:
        m = members[0]
        return {"steps_to_memorize": m["steps_to_memorize"], "steps_to_generalize": m["steps_to_generalize"],
                "final_val_acc": m["final_val_acc"], "wall_seconds": result["wall_seconds"],
                "report": result["report"], "run_id": m["run_id"], "steps_to_95": m["steps_to_95"],
                "grok_onset": m["grok_onset"], "steps_to_val_loss_001": m["steps_to_val_loss_001"],
                "threads": m["threads"], **({"diagnosis": m["diagnosis"]} if "diagnosis" in m else {})}
    agg = result["aggregate"]
    return {"members": members,
            "mean": {k: agg[k]["mean"] for k in ("steps_to_memorize", "steps_to_generalize", "final_val_acc")},
            "ci95": {k: agg[k]["ci"] for k in ("steps_to_memorize", "steps_to_generalize", "final_val_acc")},
            "missing": {k: agg[k]["missing"] for k in ("steps_to_memorize", "steps_to_generalize")},
            "wall_seconds": result["wall_seconds"], "report": result["report"]}
