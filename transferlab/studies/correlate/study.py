"""The cross-stage correlation studies on the common protocol: ``correlate`` (your evaluation files) and
``correlate-zoo`` (the zoo's own pretrain -> SFT pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Study, StudyResult
from transferlab.studies.correlate.config import PRESETS, CorrelateConfig
from transferlab.studies.correlate.zoo_config import PRESETS as ZOO_PRESETS
from transferlab.studies.correlate.zoo_config import ZooPairsConfig


def _benchmark_metrics(c: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b, d in c.get("benchmarks", {}).items():
        for k in ("spearman_accuracy", "mean_accuracy_pre", "mean_accuracy_post"):
            if k in d:
                out[f"{b}.{k}"] = d[k]
    return out


class CorrelateStudy(Study):
    command = "correlate"
    name = "correlate"
    summary = "do benchmark rankings before fine-tuning survive it? (files of lm-eval-harness output or a CSV)"
    config_cls = CorrelateConfig
    default_preset = None

    presets = PRESETS

    def run(self, cfg: CorrelateConfig, store: Store, *, report: bool = True,  # type: ignore[override]
            out: str | Path | None = None) -> StudyResult:
        from transferlab.studies.correlate.run import run

        result = run(cfg, store=store, out=out)  # the analysis is the report's content: always written
        return self.result(result)

    def report_from_run(self, cfg: CorrelateConfig, summary: dict[str, Any], run: Run,  # type: ignore[override]
                        store: Store) -> Path | None:
        """The stored findings plus the benchmark-by-benchmark matrices, which are read again from the input:
        only while the input is the one the run read (its content is part of the run id)."""
        from transferlab.studies.correlate.run import write_report

        if summary.get("status") != "done" or not Path(cfg.path).exists() or cfg.config_hash() != run.id:
            return None
        return write_report(cfg, summary, run.report_path)

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        return _benchmark_metrics(result.data)


class CorrelateZooStudy(Study):
    command = "correlate-zoo"
    name = "correlate_zoo"
    summary = "the zoo's own pretrain -> SFT pairs over prose/code mixtures, scored and correlated"
    config_cls = ZooPairsConfig
    default_preset = "default"

    presets = ZOO_PRESETS

    def run(self, cfg: ZooPairsConfig, store: Store, *, report: bool = True,  # type: ignore[override]
            zoo_root: str | Path | None = None) -> StudyResult:
        from transferlab.studies.correlate.zoo_pairs import run

        summary = run(cfg, store, zoo_root, report=report)
        return self.result(summary)

    def report_from_run(self, cfg: ZooPairsConfig, summary: dict[str, Any], run: Run,  # type: ignore[override]
                        store: Store) -> Path | None:
        """The page from the config, the stored summary and the run's own pairs.csv."""
        from transferlab.studies.correlate.zoo_pairs import read_csv, write_report

        csv = run.path / "pairs.csv"
        if summary.get("status") != "done" or not csv.is_file():
            return None
        return write_report(cfg, read_csv(csv), summary["models"], summary["correlate"], run.report_path)

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        return _benchmark_metrics(result.data["correlate"])
