"""The cross-stage correlation studies on the common protocol: ``correlate`` (your evaluation files) and
``correlate-zoo`` (the zoo's own pretrain -> SFT pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.store import Store
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

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        return _benchmark_metrics(result.data["correlate"])
