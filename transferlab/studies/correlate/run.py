"""Drive the correlate study: read -> analyse -> report, recorded as a run in the store.

Everything is recomputed on every call (the analysis takes seconds); the run folder keyed by the
config hash holds the latest summary.json and report.html for that input path and settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.store import Store
from transferlab.store.run import report_target
from transferlab.studies.correlate import analysis, harness, report
from transferlab.studies.correlate.config import CorrelateConfig
from transferlab.studies.correlate.study import CorrelateStudy


def write_report(cfg: CorrelateConfig, result: dict[str, Any], path: str | Path,
                 data: harness.CrossStageData | None = None) -> Path:
    """The page of ``result`` (the findings), with each stage's benchmark correlation matrix from ``data`` (read
    again from ``cfg.path`` when not given)."""
    data = data if data is not None else load(cfg)
    matrices = {s: analysis.benchmark_correlation_matrix(data.table, s) for s in cfg.stages()}
    return report.write(result, path, source=data.source, matrices=matrices)


def load(cfg: CorrelateConfig) -> harness.CrossStageData:
    return harness.load(cfg.path, stages=cfg.stages(), metric=cfg.metric, tasks=cfg.tasks,
                        min_models=cfg.min_models, sizes=cfg.sizes)


def analyze(cfg: CorrelateConfig, data: harness.CrossStageData) -> dict[str, Any]:
    result = analysis.analyze(data.table, cfg.stages(), data.samples, categories=cfg.categories,
                              n_boot=cfg.n_boot, ci=cfg.ci, seed=cfg.seed, threshold=cfg.reliable_threshold,
                              min_models=cfg.min_models, ece_bins=cfg.ece_bins)
    result["notes"] = data.notes + result["notes"]
    result["source"] = data.source
    return result


def run(cfg: CorrelateConfig, store: Store | str | Path | None = None, out: str | Path | None = None,
        data: harness.CrossStageData | None = None) -> dict[str, Any]:
    """Validate and read ``cfg.path`` (or take ``data``, already read and validated, e.g. with per-item scores
    a CSV cannot carry), analyse, write the report; returns the findings with ``report``.

    The report goes to ``out`` when given, else into the store's run folder (when a store is given),
    else next to the input as ``<input>.correlate.html``. Bad input raises DataError before anything
    is written.
    """
    data = load(cfg) if data is None else data
    result = analyze(cfg, data)
    src = Path(cfg.path)
    fallback = (src / "correlate_report.html") if src.is_dir() else src.with_suffix(".correlate.html")
    run_, path = report_target(store, CorrelateStudy.name, cfg, out, fallback)
    write_report(cfg, result, path, data)
    result["report"] = str(path)
    if run_ is not None:
        result["run_id"] = run_.id
        run_.finish(result)
    return result
