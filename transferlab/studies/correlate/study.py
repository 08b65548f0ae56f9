"""The cross-stage correlation studies on the common protocol: ``correlate`` (your evaluation files) and
``correlate-zoo`` (the zoo's own pretrain -> SFT pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.markup import escape

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Line, RunOptions, Study, StudyResult, ZooOptions
from transferlab.studies.correlate.config import PRESETS, CorrelateConfig
from transferlab.studies.correlate.zoo_config import PRESETS as ZOO_PRESETS
from transferlab.studies.correlate.zoo_config import ZooPairsConfig
from transferlab.zoo.train import LM_STUDY


def _benchmark_metrics(c: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b, d in c.get("benchmarks", {}).items():
        for k in ("spearman_accuracy", "mean_accuracy_pre", "mean_accuracy_post"):
            if k in d:
                out[f"{b}.{k}"] = d[k]
        for q in ("accuracy", "continuous"):  # decisions across scale, smallest -> largest size
            v = ((d.get("decision_accuracy") or {}).get(q) or {}).get("value")
            if v is not None:
                out[f"{b}.decision_accuracy_{q}"] = v
    return out


class CorrelateOptions(RunOptions):
    out: Path | None = Field(None, description="Report path (default: in the run folder).",
                             json_schema_extra={"flags": ["--report", "--out"], "output_file": True})


class CorrelateFlags(BaseModel):
    """`transferlab correlate`'s shortcuts for config keys (``--set`` takes every key)."""

    path: Path | None = Field(None, description="Tidy CSV or folder <root>/<stage>/<model>/results_*.json.",
                              json_schema_extra={"argument": True})
    pre: str | None = Field(None, description="Stage before fine-tuning (default: pretrain).")
    post: str | None = Field(None, description="Stage after fine-tuning (default: sft).")
    metric: str | None = Field(None, description="Harness metric: acc or acc_norm.")
    tasks: str | None = Field(None, description="Comma-separated benchmarks (harness task or group names) to keep; "
                              "a name in no results file is an error.")
    categories: Path | None = Field(None, description="YAML file mapping benchmark: category.")
    n_boot: int | None = Field(None, description="Bootstrap resamples (default 2000).")
    sizes: str | None = Field(None, description="Model sizes, MODEL=SIZE,... (a parameter count such as 150M or 1B); "
                              "overrides the scale column. The same mixture at two sizes gives decision accuracy.")


class CorrelateStudy(Study[CorrelateConfig, CorrelateOptions]):
    command = "correlate"
    name = "correlate"
    summary = "do benchmark rankings before fine-tuning survive it? (files of lm-eval-harness output or a CSV)"
    config_cls = CorrelateConfig
    options_cls = CorrelateOptions
    default_preset = None
    flags_cls = CorrelateFlags
    cli_help = """Do benchmark rankings before fine-tuning survive it? Correlations, intervals, calibration.

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

    presets = PRESETS

    def config_values(self, flags: BaseModel, *, listing: bool) -> dict[str, Any]:
        from transferlab.core.config import load_yaml
        from transferlab.core.errors import ConfigError

        f = flags if isinstance(flags, CorrelateFlags) else CorrelateFlags()
        if f.path is None and not listing:
            raise ConfigError("no evaluation files given", where="PATH",
                              fix="transferlab correlate PATH (a tidy CSV or a folder of lm-eval-harness output)")
        extra: dict[str, Any] = {"path": str(f.path)} if f.path is not None else {}
        for key, val in (("pre_stage", f.pre), ("post_stage", f.post), ("metric", f.metric), ("n_boot", f.n_boot)):
            if val is not None:
                extra[key] = val
        if f.tasks is not None:
            extra["tasks"] = [t.strip() for t in f.tasks.split(",") if t.strip()]
        if f.sizes is not None:
            extra["sizes"] = parse_sizes_flag(f.sizes)
        if f.categories is not None:
            cats = load_yaml(f.categories)
            if not all(isinstance(v, str) for v in cats.values()):
                raise ConfigError("every value must be a category name", where=str(f.categories),
                                  fix="write one 'benchmark: category' per line")
            extra["categories"] = {str(k): v for k, v in cats.items()}
        return extra

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        r = result.to_json()
        lines: list[str | Line] = [Line(f"[bold]{r['n_models']} models[/bold] · {' -> '.join(r['stages'])}",
                                        markup=True)]
        lines += [Line(f"[yellow]note:[/yellow] {escape(note)}", note=True) for note in r.get("notes", [])]
        for row in r["ranking_accuracy"]:
            ci = row["ci"] or [float("nan")] * 2
            rho = row["spearman"] if row["spearman"] is not None else float("nan")
            lines.append(Line(f"  {row['rank']:>2}. {row['benchmark']:<24} Spearman {rho:+.2f} "
                              f"[{ci[0]:+.2f}, {ci[1]:+.2f}]  {row['verdict']}", markup=True))
        dec = decision_table(r)
        return [*lines, *([dec] if dec else []), f"report: {r['report']}"]

    def run(self, cfg: CorrelateConfig, store: Store, options: CorrelateOptions | None = None) -> StudyResult:
        from transferlab.studies.correlate.run import run

        # the analysis is the report's content: always written
        result = run(cfg, store=store, out=self.options(options).out)
        return self.result(result)

    def report_from_run(self, cfg: CorrelateConfig, summary: dict[str, Any], run: Run, store: Store) -> Path | None:
        """The stored findings plus the benchmark-by-benchmark matrices, which are read again from the input:
        only while the input is the one the run read (its content is part of the run id)."""
        from transferlab.studies.correlate.run import write_report

        if summary.get("status") != "done" or not Path(cfg.path).exists() or cfg.config_hash() != run.id:
            return None
        return write_report(cfg, summary, run.report_path)

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        return _benchmark_metrics(result.data)


class CorrelateZooStudy(Study[ZooPairsConfig, ZooOptions]):
    child_studies = (LM_STUDY,)  # the zoo's models it trains
    command = "correlate-zoo"
    name = "correlate_zoo"
    summary = "the zoo's own pretrain -> SFT pairs over prose/code mixtures, scored and correlated"
    config_cls = ZooPairsConfig
    options_cls = ZooOptions
    default_preset = "default"
    cli_help = """Pretrain zoo LMs on prose/code mixtures at 2 sizes, fine-tune them, score stdlib benchmarks,
    and ask whether the rankings survive fine-tuning (the `correlate` analysis on the result)."""

    presets = ZOO_PRESETS

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        r = result.to_json()
        c = r["correlate"]
        dec = decision_table(c)
        return [Line(f"[bold]{c['n_models']} models[/bold] · pretrain -> sft · csv {r['csv']}", markup=True),
                cross_stage_table(c), *([dec] if dec else []), f"report: {r['report']}"]

    def run(self, cfg: ZooPairsConfig, store: Store, options: ZooOptions | None = None) -> StudyResult:
        from transferlab.studies.correlate.zoo_pairs import run

        o = self.options(options)
        summary = run(cfg, store, o.zoo_root, report=o.report)
        return self.result(summary)

    def report_from_run(self, cfg: ZooPairsConfig, summary: dict[str, Any], run: Run, store: Store) -> Path | None:
        """The page from the config, the stored summary and the run's own pairs.csv."""
        from transferlab.studies.correlate.zoo_pairs import read_csv, write_report

        csv = run.path / "pairs.csv"
        if summary.get("status") != "done" or not csv.is_file():
            return None
        return write_report(cfg, read_csv(csv), summary["models"], summary["correlate"], run.report_path)

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        return _benchmark_metrics(result.data["correlate"])


def parse_sizes_flag(text: str) -> dict[str, str]:
    """``--sizes m1=150M,m2=1B`` -> {"m1": "150M", "m2": "1B"}; a malformed entry is one ConfigError line."""
    from transferlab.core.errors import ConfigError

    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        model, sep, size = (x.strip() for x in part.partition("="))
        if not sep or not model or not size:
            raise ConfigError(f"'{part}' is not MODEL=SIZE", where="--sizes",
                              fix="write --sizes m1=150M,m2=1B (one MODEL=SIZE per model, comma-separated)")
        if model in out:
            raise ConfigError(f"model '{model}' is given twice", where="--sizes", fix="give each model one size")
        out[model] = size
    if not out:
        raise ConfigError("no MODEL=SIZE given", where="--sizes", fix="write --sizes m1=150M,m2=1B")
    return out


def _fmt(v: float | None, ci: list[Any] | None = None) -> str:
    import math

    if v is None or not math.isfinite(v):
        return "undefined"
    out = f"{v:+.2f}"
    if ci and None not in ci and all(math.isfinite(x) for x in ci):
        out += f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return out


def _share(x: dict[str, Any] | None) -> str:
    if not x or x.get("value") is None:
        return "undefined"
    out = f"{x['value']:.2f}"
    ci = x.get("ci")
    return out + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def decision_table(c: dict[str, Any]) -> str:
    """Decision accuracy per benchmark and comparison of sizes, for accuracy and the continuous score (stdout);
    empty when no benchmark has one."""
    rows = [(b, d) for b, r in c["benchmarks"].items() if (d := r.get("decision_accuracy"))]
    if not rows:
        return ""
    lines = [f"decision accuracy ({rows[0][1]['stage']}): pairs of mixtures ranked alike at both sizes",
             f"{'benchmark':<18} {'sizes':<14} {'accuracy [95%]':>20} {'continuous [95%]':>20}"]
    for b, d in rows:
        for cmp_ in d["by_sizes"]:
            lines.append(f"{b:<18} {cmp_['small'] + ' -> ' + cmp_['target']:<14} {_share(cmp_.get('accuracy')):>20} "
                         f"{_share(cmp_.get('continuous')):>20}")
    return "\n".join(lines)


def cross_stage_table(c: dict[str, Any]) -> str:
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
