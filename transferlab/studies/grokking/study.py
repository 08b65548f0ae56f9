"""The grokking study on the common protocol (``transferlab.studies.base.Study``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from transferlab.store import Store
from transferlab.store.run import Run
from transferlab.studies.base import Line, RunOptions, Study, StudyResult
from transferlab.studies.grokking.analysis import PHASE_KEYS
from transferlab.studies.grokking.config import PRESETS, SWEEP_PLANS, GrokConfig

AGG_KEYS = ("steps_to_memorize", "steps_to_generalize", "final_val_acc")
TRIAL_KEYS = (*PHASE_KEYS, "norm_at_memorize", "norm_at_generalize", "last_step")


class GrokOptions(RunOptions):
    seeds: int = Field(1, description="Train K members (seeds seed..seed+K-1) as one ensemble.")
    raise_on_divergence: bool = Field(True, description="Raise when a member diverges (else it is recorded).",
                                      json_schema_extra={"cli": False})


class GrokStudy(Study[GrokConfig, GrokOptions]):
    command = "grok"
    name = "grokking"
    summary = "memorization first, generalization much later (Power et al. 2022)"
    config_cls = GrokConfig
    options_cls = GrokOptions
    default_preset = "default"
    intermediate_metric = "val_acc"
    trial_config_keys = ("seed", "lr", "weight_decay")  # the delay law reads them for every trial
    sweep_plans = SWEEP_PLANS
    sweep_prefix = "sweep-"  # grokking swept before any other study could: its sweeps keep their names

    live_mirrors = True
    cli_help = "Train a grokking setup: memorization first, generalization much later."

    presets = PRESETS

    def run(self, cfg: GrokConfig, store: Store, options: GrokOptions | None = None) -> StudyResult:
        from transferlab.studies.grokking.run import run

        o = self.options(options)
        seeds = o.seeds
        out = run(cfg, store, seeds=seeds, report=o.report, raise_on_divergence=o.raise_on_divergence,
                  reporter=o.reporter)
        members = out["members"]
        return StudyResult(self.name, out, contract=contract(out, seeds),
                           run_id=members[0]["run_id"] if seeds == 1 else None, report=out.get("report"))

    def result_lines(self, result: StudyResult) -> list[str | Line]:
        agg = result["aggregate"]

        def fmt(key: str) -> str:
            v = agg[key]["mean"]
            return "never" if v is None else f"{v:g}"

        lines: list[str | Line] = [
            f"memorized at step {fmt('steps_to_memorize')}, generalized (99% val) at step "
            f"{fmt('steps_to_generalize')}, final val acc {fmt('final_val_acc')} "
            f"({result['members'][0].get('threads')} thread(s))"]
        lines += [f"seed {m['seed']}: {m['diagnosis']['message']}" for m in result["members"] if "diagnosis" in m]
        return [*lines, result["report"]]

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        """The phases of one trial, from a member's stored summary (or a run's first member)."""
        s = result.data["members"][0] if "members" in result.data else result.data
        return {k: s.get(k) for k in TRIAL_KEYS}

    def group_key(self, cfg: GrokConfig) -> str | None:
        return cfg.ensemble_key()  # seed, lr and weight decay vary inside one vmapped ensemble

    def run_group(self, cfgs: list[GrokConfig], store: Store, *, sweep: str | None = None) -> list[StudyResult]:
        from transferlab.studies.grokking.run import run_members

        members = run_members(cfgs, store, sweep=sweep, description=f"{sweep or 'grok'} ({len(cfgs)} members)")
        return [StudyResult(self.name, m.summary, run_id=m.run_id) for m in members]

    def sweep_report(self, result: dict[str, Any], store: Store, swept: list[str]) -> bool:
        """Every trial's curves and the delay law fitted across the trials."""
        from transferlab.studies.grokking.report import write_sweep_report

        path, law = write_sweep_report(result, store)
        result["report"] = str(path)
        result["delay_law"] = {k: getattr(law, k) for k in (
            "constant", "constant_ci", "r2", "mape_loo", "mape_heldout", "heldout_rule", "n_used", "n_censored",
            "excluded", "theory_constant", "why_not", "forms", "seed_floor")}
        result["delay_law"]["points"] = [{k: p[k] for k in ("run_id", "x", "delay", "censored", "predicted")
                                          if k in p} for p in law.points]
        return True

    def report_from_run(self, cfg: GrokConfig, summary: dict[str, Any], run: Run, store: Store) -> Path:
        """One member's page from its config, summary and logged metrics."""
        from transferlab.studies.grokking.report import write_group_report
        from transferlab.studies.grokking.run import MemberResult

        return write_group_report(cfg, [MemberResult(run.id, cfg.flat(), summary, run.metrics())], store)


def contract(result: dict[str, Any], seeds: int) -> dict[str, Any]:
    """`transferlab grok --json`: one member's phases, or the members with means and 95% intervals."""
    members = result["members"]
    if seeds == 1:
        m = members[0]
        return {**{k: m[k] for k in PHASE_KEYS}, "wall_seconds": result["wall_seconds"],
                "report": result.get("report"), "run_id": m["run_id"], "threads": m["threads"],
                "forecasts": m.get("forecasts", []),
                **({"forecast_stopped": m["forecast_stopped"]} if "forecast_stopped" in m else {}),
                **({"norm_clamp": m["norm_clamp"]} if "norm_clamp" in m else {}),
                **({"diagnosis": m["diagnosis"]} if "diagnosis" in m else {})}
    agg = result["aggregate"]
    return {"members": members,
            "mean": {k: agg[k]["mean"] for k in AGG_KEYS},
            "ci95": {k: agg[k]["ci"] for k in AGG_KEYS},
            "missing": {k: agg[k]["missing"] for k in ("steps_to_memorize", "steps_to_generalize")},
            "wall_seconds": result["wall_seconds"], "report": result.get("report")}

