"""The effective-data-transferred study on the common protocol (``transferlab.studies.base.Study``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.store import Store
from transferlab.studies.base import Study, StudyResult
from transferlab.studies.transfer.zoo_config import PRESETS, TransferRunConfig


class TransferStudy(Study):
    command = "transfer"
    name = "transfer"
    summary = "effective data transferred, D_T = k D_F^alpha N^beta (Hernandez et al. 2021), on the zoo"
    config_cls = TransferRunConfig
    default_preset = "quick"

    presets = PRESETS

    def run(self, cfg: TransferRunConfig, store: Store, *, report: bool = True,  # type: ignore[override]
            zoo_root: str | Path | None = None) -> StudyResult:
        from transferlab.studies.transfer.run import run

        summary = run(cfg, store, zoo_root, report=report)
        return self.result(summary)

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        d = result.data
        out: dict[str, Any] = {"n_runs": d.get("n_runs"), "analysis_error": d.get("analysis_error")}
        for p in ("alpha", "beta"):
            if p in d:
                out[p], (out[f"{p}_lo"], out[f"{p}_hi"]) = d[p]["value"], d[p]["ci"]
        out["k"] = d.get("k")
        return out
