"""`transferlab w2s`: weak-to-strong generalization (thin: parse -> config -> study.run -> report)."""

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
    config_or_listing,
    emit_json,
    preset_option,
    show,
    store_path,
)


def register(app: typer.Typer) -> None:
    from transferlab.studies.registry import get_study
    from transferlab.studies.w2s.losses import LABEL_METHODS, LOSSES

    study = get_study("w2s")

    @app.command(study.command)
    def w2s(
        task: str | None = typer.Option(
            None,
            "--task",
            help="Task name (see --list-tasks), a .csv/.jsonl path, or hf:PATH[:TEXT_COL:LABEL_COL] (a dataset "
            "saved with save_to_disk; sciq, boolq and anthropic_hh shapes are recognised; default "
            "synthetic-noisy); several "
            "comma-separated tasks add paired tests between losses pooled across tasks and seeds.",
        ),
        losses: str | None = typer.Option(
            None,
            "--losses",
            help=f"Comma-separated: {','.join(LOSSES)} (label methods {', '.join(LABEL_METHODS)}: "
            f"--set label_methods={','.join(LABEL_METHODS)}).",
        ),
        seeds: int | None = typer.Option(
            None, "--seeds", help="Number of seeds (splits, weak and student inits)."
        ),
        list_tasks: bool = typer.Option(False, "--list-tasks", help="List the tasks and exit."),
        preset: str | None = preset_option(study),
        config: Path | None = typer.Option(None, "--config", help="YAML config file."),
        overrides: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
        print_config: bool = PrintConfigOpt,
        list_presets: bool = ListPresetsOpt,
        explain: bool = ExplainOpt,
    ) -> None:
        """Weak-to-strong: floor (weak on gold), ceiling (strong on gold), students on weak labels.

        Text tasks embed with the bundled MiniLM (weak = its first layers) unless weak and strong models
        are named: --set weak_model=zoo:xs --set strong_model=zoo:m [--set mid_models=zoo:s] (the
        model zoo; build it with `transferlab zoo build --sizes xs,s,m`) or local causal-LM folders.

        Fine-tuning backend (--set backend=finetune): the weak and strong Hugging Face models themselves are
        fine-tuned (a mean-pooled linear head; lora=true for LoRA, lora_target_modules to name the layers;
        weak_ft_lr, weak_ft_steps, weak_lora for the weak model's own settings).
        """
        begin(json_out)
        if list_tasks:
            from transferlab.data.classification import list_tasks as _list

            tasks = _list()
            if json_out:
                emit_json({"tasks": tasks})
            else:
                for t in tasks:
                    typer.echo(f"{t['name']:<24} {t['kind']:<10} {t['description']}")
                typer.echo("(or a .csv/.jsonl file with a label column and text or features, or "
                           "hf:PATH[:TEXT:LABEL] for a Hugging Face dataset saved on disk: sciq, boolq, "
                           "anthropic_hh shapes or named columns)")
            return
        from transferlab.store import Store

        extra = {k: v for k, v in {"task": task, "losses": losses, "seeds": seeds}.items() if v is not None}
        cfg = config_or_listing(study, preset=preset, config=config, overrides=overrides, list_presets=list_presets,
                                print_config=print_config, explain=explain, json_out=json_out, extra=extra)
        if cfg is None:
            return
        result = study.run(cfg, Store(store_path(store)))
        if json_out:
            emit_json(result.to_json())
            return
        if "tasks" in result.data:  # several tasks: the pooled paired tests
            for row in result["pooled_paired_tests"]:
                show(f"  {row['a']} vs {row['b']}: mean diff {row['mean_diff']:+.4f} over {row['n']} (task, seed) "
                     f"pairs, t-test p {row['t_p']:.3g} (Holm {row['t_p_holm']:.3g}), Wilcoxon p "
                     f"{row['wilcoxon_p']:.3g} (Holm {row['wilcoxon_p_holm']:.3g})")
            typer.echo(f"report: {result.report}")
            return
        summary = result.data
        show(f"w2s {escape(summary['task'])} · {summary['seeds']} seeds")
        for m, d in summary["losses"].items():
            p = d["pgr"]
            show(
                f"  {m:<11} weak {d['weak_acc']['value']:.3f}  student {d['student_acc']['value']:.3f}  "
                f"ceiling {d['ceiling_acc']['value']:.3f}  "
                f"PGR {p['value']:.3f} {_ci(p)}"
            )
        typer.echo(f"report: {result.report}")


def _ci(p: dict) -> str:
    if p.get("lo") is None or p.get("hi") is None:
        return f"(no interval: {p.get('note', 'n/a')})"
    return f"\\[{p['lo']:.3f}, {p['hi']:.3f}]"
