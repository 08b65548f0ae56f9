"""The EFT zoo demo (a 2x2 of pretraining scale x fine-tuning scale) on the common protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Study, StudyResult
from transferlab.studies.eft.demo import PRESETS, EFTDemoConfig


class EFTDemoStudy(Study):
    command = "eft-demo"
    name = "eft_demo"
    cli = "eft demo"  # a subcommand of `transferlab eft` (beside generate and score)
    aliases = ("eft",)
    summary = "emulated fine-tuning on the zoo: a large base plus a small fine-tune's delta (Mitchell et al. 2023)"
    config_cls = EFTDemoConfig
    default_preset = "default"

    presets = PRESETS

    def run(self, cfg: EFTDemoConfig, store: Store, *, report: bool = True,  # type: ignore[override]
            zoo_root: str | Path | None = None) -> StudyResult:
        from transferlab.studies.eft.demo import run_zoo_demo

        summary = run_zoo_demo(cfg, store, zoo_root, report=report)
        return self.result(summary)

    def report_from_run(self, cfg: EFTDemoConfig, summary: dict[str, Any], run: Run,  # type: ignore[override]
                        store: Store) -> Path | None:
        """The page is made from the config and the stored summary (the 2x2, the gap, the beta sweep)."""
        from transferlab.studies.eft.demo_report import write_demo_report

        return write_demo_report(cfg, summary, run.report_path) if summary.get("status") == "done" else None

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        g = result.data["gap"]["target"]
        return {"up_fraction_closed": g["up_fraction_closed"], "down_fraction_closed": g["down_fraction_closed"],
                "target_met": result.data.get("target_met")}
