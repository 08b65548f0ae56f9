"""The weak-to-strong study on the common protocol (``transferlab.studies.base.Study``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.markup import escape

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Line, RunOptions, Study, StudyResult
from transferlab.studies.w2s.config import BASELINE_STUDY, FEATURES_STUDY, ICL_MODEL_STUDY, ICL_TASK, PRESETS, W2SConfig
from transferlab.studies.w2s.losses import LOSSES

CONTRACT_KEYS = ("weak_acc", "ceiling_acc", "student_acc", "pgr")


class W2SFlags(BaseModel):
    """`transferlab w2s`'s shortcuts for config keys (``--set`` takes every key)."""

    task: str | None = Field(None, description=(
        "Task name (see --list-tasks), a .csv/.jsonl path, or hf:PATH[:TEXT_COL:LABEL_COL] (a dataset saved with "
        "save_to_disk; sciq, boolq and anthropic_hh shapes are recognised; default synthetic-noisy); several "
        "comma-separated tasks add paired tests between losses pooled across tasks and seeds."))
    losses: str | None = Field(None, description="Comma-separated student losses (label methods go in "
                               "--set label_methods=...)", json_schema_extra={"choices": lambda: list(LOSSES)})
    seeds: int | None = Field(None, description="Number of seeds (splits, weak and student inits).")
    list_tasks: bool = Field(False, description="List the tasks and exit.")


class W2SStudy(Study[W2SConfig, RunOptions]):
    command = "w2s"
    name = "w2s"
    child_studies = (FEATURES_STUDY, BASELINE_STUDY, ICL_MODEL_STUDY)
    summary = "a strong student trained on a weak supervisor's labels (Burns et al. 2023); PGR per loss"
    config_cls = W2SConfig
    default_preset = None  # W2SConfig() is the default setup
    flags_cls = W2SFlags
    cli_help = """Weak-to-strong: floor (weak on gold), ceiling (strong on gold), students on weak labels.

    Text tasks embed with the bundled MiniLM (weak = its first layers) unless weak and strong models
    are named: --set weak_model=zoo:xs --set strong_model=zoo:m [--set mid_models=zoo:s] (the
    model zoo; build it with `transferlab zoo build --sizes xs,s,m`) or local causal-LM folders.

    Fine-tuning backend (--set backend=finetune): the weak and strong Hugging Face models themselves are
    fine-tuned (a mean-pooled linear head; lora=true for LoRA, lora_target_modules to name the layers;
    weak_ft_lr, weak_ft_steps, weak_lora for the weak model's own settings).
    """

    presets = PRESETS

    def make_config(self, preset: str | None = None, overrides: list[str] | None = None,
                    config_file: str | Path | None = None, values: dict[str, Any] | None = None) -> W2SConfig:
        from transferlab.core.config import resolve
        from transferlab.studies.w2s.config import refuse_gold

        def hook(v: dict[str, Any]) -> dict[str, Any]:
            refuse_gold(v)  # a gold-label leak is refused with one line before validation
            return v

        return resolve(W2SConfig, presets=PRESETS, preset=preset, config_file=config_file, overrides=overrides,
                       extra=values, hook=hook)

    def run(self, cfg: W2SConfig, store: Store, options: RunOptions | None = None) -> StudyResult:
        from transferlab.studies.w2s.run import run, run_many

        report = self.options(options).report
        if "," in cfg.task.name:  # several tasks: one run each, paired tests pooled across tasks and seeds
            out = run_many(cfg, store)
            view = {"tasks": {t: json_view(s) for t, s in out["tasks"].items()},
                    "pooled_paired_tests": out["pooled_paired_tests"], "report": out["report"]}
            return StudyResult(self.name, out, contract=view, report=out["report"])
        summary = run(cfg, store, write_report=report)
        view = json_view(summary)
        return StudyResult(self.name, summary, contract=view, run_id=summary.get("run_id"), report=view["report"])

    def answer(self, flags: BaseModel) -> tuple[Any, list[str | Line]] | None:
        if not getattr(flags, "list_tasks", False):
            return None
        from transferlab.data.classification import list_tasks

        tasks = list_tasks()
        return {"tasks": tasks}, [
            *(f"{t['name']:<24} {t['kind']:<10} {t['description']}" for t in tasks),
            f"{ICL_TASK:<24} {'miniature':<10} Somerstep et al.'s setting: boolean concepts, an in-context model "
            "pretrained on their prior, a biased weak labeller (w2s --preset icl-refine)",
            "(or a .csv/.jsonl file with a label column and text or features, or hf:PATH[:TEXT:LABEL] for a "
            "Hugging Face dataset saved on disk: sciq, boolq, anthropic_hh shapes or named columns)"]

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        if "tasks" in result.data:  # several tasks: the pooled paired tests
            return [*(Line(f"  {row['a']} vs {row['b']}: mean diff {row['mean_diff']:+.4f} over {row['n']} (task, "
                           f"seed) pairs, t-test p {row['t_p']:.3g} (Holm {row['t_p_holm']:.3g}), Wilcoxon p "
                           f"{row['wilcoxon_p']:.3g} (Holm {row['wilcoxon_p_holm']:.3g})", markup=True)
                      for row in result["pooled_paired_tests"]), f"report: {result.report}"]
        summary = result.data
        lines: list[str | Line] = [Line(f"w2s {escape(summary['task'])} · {summary['seeds']} seeds", markup=True)]
        for m, d in summary["losses"].items():
            p = d["pgr"]
            lines.append(Line(f"  {m:<11} weak {d['weak_acc']['value']:.3f}  student {d['student_acc']['value']:.3f}  "
                              f"ceiling {d['ceiling_acc']['value']:.3f}  PGR {p['value']:.3f} {_pgr_ci(p)}",
                              markup=True))
        ref = summary.get("refinement")
        if ref:
            mis = "  ".join(f"k={r['k']}: {r['misalignment']['value']:.3f}" for r in ref["per_k"])
            lines.append(f"  refinement misalignment  {mis}")
            lines.append(f"  decay rate {ref['decay_rate']:.3f} per demonstration (R² {ref['r2']:.3f}); naive "
                         f"fine-tuning misalignment {ref['naive_misalignment']['value']:.3f}")
        return [*lines, f"report: {result.report}"]

    def report_from_run(self, cfg: W2SConfig, summary: dict[str, Any], run: Run, store: Store) -> Path | None:
        """The page is made from the stored summary alone (as the run itself makes it)."""
        from transferlab.studies.w2s.report import write_report

        return write_report(summary, run.report_path) if summary.get("status") == "done" else None

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        if "tasks" in result.data:
            return {f"{t}.{k}": v for t, s in result.data["tasks"].items()
                    for k, v in _loss_metrics(s).items()}
        return _loss_metrics(result.data)


def _pgr_ci(p: dict[str, Any]) -> str:
    if p.get("lo") is None or p.get("hi") is None:
        return f"(no interval: {p.get('note', 'n/a')})"
    return f"\\[{p['lo']:.3f}, {p['hi']:.3f}]"


def _loss_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m, d in summary["losses"].items():
        for k in ("pgr", "student_acc"):
            out[f"{k}.{m}"] = d[k]["value"]
        out["weak_acc"], out["ceiling_acc"] = d["weak_acc"]["value"], d["ceiling_acc"]["value"]
    return out


def _interval(d: dict[str, Any]) -> dict[str, Any]:
    return {"value": d["value"], "lo": d["lo"], "hi": d["hi"], "level": 0.95}


def json_view(summary: dict[str, Any]) -> dict[str, Any]:
    """`transferlab w2s --json`: for each loss, weak_acc, ceiling_acc, student_acc and pgr, each with a 95%
    interval."""
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
        **_refinement(summary),
    }


def _refinement(summary: dict[str, Any]) -> dict[str, Any]:
    """icl-concepts runs: misalignment of the refined labels at each k (95% t-interval over seeds), the fitted
    exponential decay rate with its R², and the naive student's misalignment and PGR."""
    ref = summary.get("refinement")
    if not ref:
        return {}
    rows = ref["per_k"]
    return {"refinement": {
        "k": ref["k"],
        "misalignment": [_interval(r["misalignment"]) for r in rows],
        "student_misalignment": [_interval(r["student_misalignment"]) for r in rows],
        "bayes_misalignment": [_interval(r["bayes_misalignment"]) for r in rows if "bayes_misalignment" in r],
        "student_acc": [_interval(r["student_acc"]) for r in rows],
        "pgr": [_interval(r["pgr"]) for r in rows],
        "decay_rate": ref["decay_rate"],
        "r2": ref["r2"],
        "naive_misalignment": _interval(ref["naive_misalignment"]),
        "naive_pgr": _interval(ref["naive_pgr"]) if ref.get("naive_pgr") else None,
        "weak_misalignment": _interval(ref["weak_misalignment"]),
        "read": ref.get("read"),
    }}


def _model_ladder(summary: dict[str, Any]) -> dict[str, Any]:
    """Zoo / causal-LM runs: the models used and PGR against the ratio of non-embedding parameters."""
    if not summary.get("models"):
        return {}
    return {
        "models": {
            k: {"zoo_name": m.get("zoo_name"), "path": m.get("encoder"),
                "non_embedding_params": m["non_embedding_params"]}
            for k, m in summary["models"].items()
        },
        "sweep": [
            {"weak": r["weak_view"], "strong": r["strong_view"], "param_ratio": r["param_ratio"],
             **{k: _interval(r[k]) for k in CONTRACT_KEYS}}
            for r in summary.get("sweep", [])
        ],
    }
