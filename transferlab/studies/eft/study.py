"""The EFT zoo demo (a 2x2 of pretraining scale x fine-tuning scale) on the common protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Line, Study, StudyResult, ZooOptions
from transferlab.studies.eft.demo import PRESETS, EFTDemoConfig
from transferlab.zoo.train import LM_STUDY


class EFTDemoStudy(Study[EFTDemoConfig, ZooOptions]):
    child_studies = (LM_STUDY,)  # the zoo's models it trains
    command = "eft-demo"
    name = "eft_demo"
    cli = "eft demo"  # a subcommand of `transferlab eft` (beside generate and score)
    aliases = ("eft",)
    summary = "emulated fine-tuning on the zoo: a large base plus a small fine-tune's delta (Mitchell et al. 2023)"
    config_cls = EFTDemoConfig
    options_cls = ZooOptions
    default_preset = "default"

    cli_help = "The zoo demo: small-ft, large-ft, up- and down-scaled EFT on target and source held-out loss."

    presets = PRESETS

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        s = result.to_json()
        width = max(len(r["label"]) for r in s["table"])
        lines: list[str | Line] = [
            Line(f"{'model':{width}s}  target ({s['target_corpus']})  source ({s['source_corpus']})", markup=True),
            *(Line(f"{r['label']:{width}s}  {r['target_loss']:>14.4f}  {r['source_loss']:>14.4f}", markup=True)
              for r in s["table"])]
        g = s["gap"]["target"]
        frac = g["up_fraction_closed"]
        if frac is None:
            lines.append(Line("large-ft is not better than small-ft on the target: no gap for up-scaling to close",
                              markup=True))
        else:
            ci = g["up_fraction_ci95"]
            ci_txt = "" if ci is None else f" (95% interval {ci[0]:.3f} to {ci[1]:.3f})"
            verdict = "met" if s["target_met"] else "missed"
            lines.append(Line(f"up-scaling closes {frac:.3f}{ci_txt} of the small-ft -> large-ft gap on the target "
                              f"(target >= {s['target_fraction']:g}: {verdict})", markup=True))
        return [*lines, s["report"]]

    def run(self, cfg: EFTDemoConfig, store: Store, options: ZooOptions | None = None) -> StudyResult:
        from transferlab.studies.eft.demo import run_zoo_demo

        o = self.options(options)
        summary = run_zoo_demo(cfg, store, o.zoo_root, report=o.report)
        return self.result(summary)

    def report_from_run(self, cfg: EFTDemoConfig, summary: dict[str, Any], run: Run, store: Store) -> Path | None:
        """The page is made from the config and the stored summary (the 2x2, the gap, the beta sweep)."""
        from transferlab.studies.eft.demo_report import write_demo_report

        return write_demo_report(cfg, summary, run.report_path) if summary.get("status") == "done" else None

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        g = result.data["gap"]["target"]
        return {"up_fraction_closed": g["up_fraction_closed"], "down_fraction_closed": g["down_fraction_closed"],
                "target_met": result.data.get("target_met")}
