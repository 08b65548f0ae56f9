"""The effective-data-transferred study on the common protocol (``transferlab.studies.base.Study``)."""

from __future__ import annotations

from typing import Any

from transferlab.store import Store
from transferlab.studies.base import Line, Study, StudyResult, ZooOptions
from transferlab.studies.transfer.zoo_config import PRESETS, TransferRunConfig
from transferlab.zoo.train import LM_STUDY


class TransferStudy(Study[TransferRunConfig, ZooOptions]):
    child_studies = (LM_STUDY,)  # the zoo's models it trains
    command = "transfer"
    name = "transfer"
    summary = "effective data transferred, D_T = k D_F^alpha N^beta (Hernandez et al. 2021), on the zoo"
    config_cls = TransferRunConfig
    options_cls = ZooOptions
    default_preset = "quick"

    cli_help = "Pretrain on prose, then train from scratch and fine-tune on code over grids of D; fit D_T."

    presets = PRESETS

    def run(self, cfg: TransferRunConfig, store: Store, options: ZooOptions | None = None) -> StudyResult:
        from transferlab.studies.transfer.run import run

        o = self.options(options)
        summary = run(cfg, store, o.zoo_root, report=o.report)
        return self.result(summary)

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        s = result.to_json()
        lines: list[str | Line] = []
        if not s.get("analysis_error"):
            a, b = s["alpha"], s["beta"]
            lines.append(Line(
                f"D_T = k D_F^alpha N^beta: k={s['k']:.4g} alpha={a['value']:.3f} {_ci(a['ci'])} "
                f"beta={b['value']:.3f} {_ci(b['ci'])} (Hernandez et al.: alpha 0.18, beta 0.38); "
                f"D_T grows with N: {s['D_T_grows_with_N']} (geometric mean), "
                f"{s['D_T_grows_with_N_at_every_D_F']} (at every D_F)", note=True))
        return [*lines, Line(f"runs table: {s['runs_csv']} ({s['n_runs']} runs)", note=True), s["report"]]

    def failure(self, result: StudyResult) -> str | None:
        """The runs and the report are kept; the analysis itself could not be made."""
        err = result.data.get("analysis_error")
        return f"the transfer analysis could not run: {err}" if err else None

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        d = result.data
        out: dict[str, Any] = {"n_runs": d.get("n_runs"), "analysis_error": d.get("analysis_error")}
        for p in ("alpha", "beta"):
            if p in d:
                out[p], (out[f"{p}_lo"], out[f"{p}_hi"]) = d[p]["value"], d[p]["ci"]
        out["k"] = d.get("k")
        return out


def _ci(ci: list[float] | None) -> str:
    return "[no interval]" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
