"""`transferlab w2s`: weak-to-strong generalization (thin: parse -> config -> study.run -> report)."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import JsonOpt, SetOpt, StoreOpt, begin, emit_json, store_path

CONTRACT_KEYS = ("weak_acc", "ceiling_acc", "student_acc", "pgr")


def _interval(d: dict) -> dict:
    return {"value": d["value"], "lo": d["lo"], "hi": d["hi"], "level": 0.95}


def json_view(summary: dict) -> dict:
    """The contract: for each loss, weak_acc, ceiling_acc, student_acc and pgr, each with a 95% interval."""
    losses = {}
    for m, d in summary["losses"].items():
        row = {k: _interval(d[k]) for k in CONTRACT_KEYS}
        row["pgr"]["guarded"] = d["pgr"].get("guarded", False)
        if d["pgr"].get("note"):  # e.g. why there is no interval (fewer than 3 seeds, a vanishing gap)
            row["pgr"]["note"] = d["pgr"]["note"]
        for k in ("agreement", "misfit", "ece", "auroc"):
            if k in d:
                row[k] = _interval(d[k])
        losses[m] = row
    return {
        "task": summary["task"],
        "seeds": summary["seeds"],
        "losses": losses,
        "paired_tests": summary.get("paired_tests", []),
        "run_dir": summary.get("run_dir"),
        "report": str(Path(summary["run_dir"]) / "report.html") if summary.get("run_dir") else None,
        "reused": summary.get("reused", False),
        **_model_ladder(summary),
    }


def _model_ladder(summary: dict) -> dict:
    """Zoo / causal-LM runs: the models used and PGR against the ratio of non-embedding parameters."""
    if not summary.get("models"):
        return {}
    return {
        "models": {
            k: {
                "zoo_name": m.get("zoo_name"),
                "path": m.get("encoder"),
                "non_embedding_params": m["non_embedding_params"],
            }
            for k, m in summary["models"].items()
        },
        "sweep": [
            {
                "weak": r["weak_view"],
                "strong": r["strong_view"],
                "param_ratio": r["param_ratio"],
                **{k: _interval(r[k]) for k in CONTRACT_KEYS},
            }
            for r in summary.get("sweep", [])
        ],
    }


def register(app: typer.Typer) -> None:
    @app.command("w2s")
    def w2s(
        task: str | None = typer.Option(
            None,
            "--task",
            help="Task name (see --list-tasks) or a .csv/.jsonl path (default synthetic-noisy); several "
            "comma-separated tasks add paired tests between losses pooled across tasks and seeds.",
        ),
        losses: str | None = typer.Option(
            None,
            "--losses",
            help="Comma-separated: xent,confidence,logconf,product,product-ramped,window,adaptconf,knn-refine,"
            "bootstrap.",
        ),
        seeds: int | None = typer.Option(
            None, "--seeds", help="Number of seeds (splits, weak and student inits)."
        ),
        list_tasks: bool = typer.Option(False, "--list-tasks", help="List the tasks and exit."),
        preset: str | None = typer.Option(None, "--preset", help="quick | paper | refine"),
        config: Path | None = typer.Option(None, "--config", help="YAML config file."),
        overrides: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
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
                typer.echo("(or a .csv/.jsonl file with a label column and text or features)")
            return
        from transferlab.core.config import resolve
        from transferlab.store import Store
        from transferlab.studies.w2s.config import PRESETS, W2SConfig, refuse_gold
        from transferlab.studies.w2s.run import run

        def hook(values: dict) -> dict:
            refuse_gold(values)
            return values

        extra = {k: v for k, v in {"task": task, "losses": losses, "seeds": seeds}.items() if v is not None}
        cfg = resolve(
            W2SConfig,
            presets=PRESETS,
            preset=preset,
            config_file=config,
            overrides=overrides,
            extra=extra,
            hook=hook,
        )
        if "," in cfg.task:
            _many(cfg, Store(store_path(store)), json_out)
            return
        summary = run(cfg, Store(store_path(store)))
        if json_out:
            emit_json(json_view(summary))
            return
        typer.echo(f"w2s {summary['task']} · {summary['seeds']} seeds")
        for m, d in summary["losses"].items():
            p = d["pgr"]
            typer.echo(
                f"  {m:<11} weak {d['weak_acc']['value']:.3f}  student {d['student_acc']['value']:.3f}  "
                f"ceiling {d['ceiling_acc']['value']:.3f}  "
                f"PGR {p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
            )
        typer.echo(f"report: {Path(summary['run_dir']) / 'report.html'}")


def _many(cfg, store, json_out: bool) -> None:
    """Several tasks: one run each, plus paired tests between losses pooled across tasks and seeds."""
    from transferlab.studies.w2s.run import run_many

    out = run_many(cfg, store)
    if json_out:
        emit_json({"tasks": {t: json_view(s) for t, s in out["tasks"].items()},
                   "pooled_paired_tests": out["pooled_paired_tests"], "report": out["report"]})
        return
    for row in out["pooled_paired_tests"]:
        typer.echo(f"  {row['a']} vs {row['b']}: mean diff {row['mean_diff']:+.4f} over {row['n']} (task, seed) "
                   f"pairs, t-test p {row['t_p']:.3g} (Holm {row['t_p_holm']:.3g}), Wilcoxon p "
                   f"{row['wilcoxon_p']:.3g} (Holm {row['wilcoxon_p_holm']:.3g})")
    typer.echo(f"report: {out['report']}")