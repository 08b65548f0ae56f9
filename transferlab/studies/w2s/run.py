"""The weak-to-strong pipeline: splits, floor, ceiling, students per method, over seeds; one pipeline for
both trainers (``heads`` on frozen features, ``finetune`` of whole models; :mod:`.protocol`).

Floor (the weak model on gold) and ceiling (the strong model on gold) are cached in the store under the hash
of what they depend on, and reused by every run that differs only in its losses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from transferlab.core import progress
from transferlab.core.config import StudyConfig, build
from transferlab.core.devices import torch_threads
from transferlab.metrics import auroc, check_gap, ece
from transferlab.store.run import Run, Store
from transferlab.studies.w2s.analysis import mean_curve, paired_tests, summarize_method
from transferlab.studies.w2s.config import BASELINE_STUDY, ICL_TASK, STUDENT_PARTS, W2SConfig, refuse_gold
from transferlab.studies.w2s.protocol import Baseline, Splits, Trainer, make_splits, split_sizes
from transferlab.studies.w2s.study import W2SStudy
from transferlab.studies.w2s.tasks import build_data
from transferlab.studies.w2s.zoo_features import require_texts, uses_models, with_resolved_models, zoo_refs_to_paths

BASELINE_FILE = "baseline.safetensors"


class BaselineConfig(StudyConfig):
    identity: dict[str, Any]
    sizes: dict[str, int]


def make_config(**values: Any) -> W2SConfig:
    """Validated config from keyword values (refuses gold-label leaks with one clear line)."""
    refuse_gold(values)
    return build(W2SConfig, values)


def make_trainer(cfg: W2SConfig, store: Store | None) -> tuple[W2SConfig, Trainer]:
    """The trainer strategy of ``cfg.backend``, with the config it runs under (model references resolved to
    the weights they name, so a run keys on them). Everything a trainer refuses is refused here."""
    if cfg.task.name == ICL_TASK:  # the miniature of Somerstep et al.: its own in-context model and data
        from transferlab.studies.w2s.icl_trainer import ICLConceptTrainer

        return cfg, ICLConceptTrainer(cfg, store)
    if cfg.backend == "finetune":
        from transferlab.studies.w2s.finetune import FinetuneTrainer, check_finetune

        cfg = zoo_refs_to_paths(cfg, store)
        check_finetune(cfg)  # before the data is read or any model trains
        return cfg, FinetuneTrainer(cfg, build_data(cfg))
    data = build_data(cfg)
    from transferlab.studies.w2s.heads_trainer import HeadsTrainer

    if uses_models(cfg):  # causal-LM features (zoo or local path): the run keys on the models' weights
        cfg = with_resolved_models(cfg, store)
        require_texts(cfg, data)
    return cfg, HeadsTrainer(cfg, store, data)


# --------------------------------------------------------------------------- floor and ceiling, cached
def baseline_config(cfg: W2SConfig, sizes: dict[str, int], ladder: list[str]) -> BaselineConfig:
    """The key of the floor and ceiling: the hash of every part of the run's config but the students' own
    (``STUDENT_PARTS``: a part added later keys the baseline unless it is declared student-only, so a wrong guess
    recomputes a baseline and never reuses a stale one; speed-only fields drop out of every hash), the content of
    its input files, the split sizes and the ladder of views. tests/test_w2s_study.py and tests/test_w2s_finetune.py
    run the baseline code of both trainers and check that it reads nothing of the student parts."""
    ident = {k: v for k, v in cfg.flat(without=STUDENT_PARTS).items()
             if not (k in cfg.HASH_WHEN_CHANGED and cfg.at_default(k))}  # keys added later, at their defaults
    ident["inputs"] = cfg.inputs()
    ident["ladder"] = list(ladder)
    return BaselineConfig(identity=ident, sizes=sizes)


def load_or_compute_baseline(trainer: Trainer, splits: list[Splits], cfg: W2SConfig, sizes: dict[str, int],
                             store: Store | None) -> tuple[Baseline, bool]:
    """(baseline, reused): from the store when this exact floor/ceiling was computed before."""
    if store is None:
        return trainer.baseline(splits), False
    ladder = list(getattr(getattr(trainer, "views", None), "ladder", None) or [])
    run = store.open_run(BASELINE_STUDY, baseline_config(cfg, sizes, ladder))
    path = Path(run.path) / BASELINE_FILE
    if run.status == "done" and path.is_file():
        t = load_file(str(path))
        summ = run.summary() or {}
        return Baseline(weak_probs={name: t[f"weak_probs.{name}"] for name in summ["rungs"]},
                        ceiling_probs=t["ceiling_probs"], ceiling_curves=summ["ceiling_curves"],
                        ceiling_best_step=summ["ceiling_best_step"]), True
    run.start()
    base = trainer.baseline(splits)
    tensors = {f"weak_probs.{k}": v.contiguous() for k, v in base.weak_probs.items()}
    tensors["ceiling_probs"] = base.ceiling_probs.contiguous()
    tensors["split_codes"] = torch.stack([sp.codes(trainer.data.n) for sp in splits])
    save_file(tensors, str(path))
    run.finish({"rungs": list(base.weak_probs), "ceiling_curves": base.ceiling_curves,
                "ceiling_best_step": base.ceiling_best_step})
    return base, False


# --------------------------------------------------------------------------- the study
def run(cfg: W2SConfig, store: Store | None = None, *, write_report: bool = True) -> dict[str, Any]:
    """Run (or reuse) the study for ``cfg``; returns the summary (also in the run's summary.json)."""
    with torch_threads(cfg.num_threads):
        return _run(cfg, store, write_report)


def _run(cfg: W2SConfig, store: Store | None, write_report: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg, trainer = make_trainer(cfg, store)
    data = trainer.data
    sizes = split_sizes(cfg, data.n, data.n_classes)  # validated before anything is written
    if store is not None:
        done = store.done(W2SStudy.name, cfg)
        if done is not None:
            existing = store.open_run(W2SStudy.name, cfg)
            if write_report and not existing.report_path.exists():
                _write_report(existing, done)
            return {**done, "reused": True, "run_dir": str(existing.path)}
    trainer.prepare()
    t_feat = time.perf_counter()
    splits = [make_splits(data.n, sizes, cfg.seed + s) for s in range(cfg.seeds)]
    with progress.progress_bar("w2s floor+ceiling", total=None):
        base, reused = load_or_compute_baseline(trainer, splits, cfg, sizes, store)
    y = torch.as_tensor(data.labels)
    weak_acc, ceil_acc = base.accuracies(y, splits)
    check_gap(weak_acc, ceil_acc, cfg.analysis.min_gap, where=cfg.task.name)
    t_base = time.perf_counter()
    with progress.progress_bar("w2s students", total=None):
        students = trainer.students(splits, base, cfg.methods)
    t_students = time.perf_counter()
    summary = assemble(cfg, data, splits, base, weak_acc, ceil_acc, students)
    summary["sweep"] = trainer.ladder(splits, base, ceil_acc)
    summary.update(trainer.summary_extra())
    summary["timing_s"] = {"features": t_feat - t0, "baseline": t_base - t_feat, "students": t_students - t_base,
                           "baseline_reused": reused}
    summary["sizes"] = sizes
    return finish_run(cfg, store, summary, students, write_report)


def finish_run(cfg: W2SConfig, store: Store | None, summary: dict[str, Any],
               students: dict[str, list[dict[str, Any]]], write_report: bool) -> dict[str, Any]:
    """Write the run: gold-accuracy curves to metrics.jsonl, summary.json, the report."""
    if store is None:
        return summary
    run_ = store.open_run(W2SStudy.name, cfg)
    run_.start()
    run_.log_many([{"method": m, "seed": r["seed"], "step": st, "gold_acc": a}
                   for m, rows in students.items() for r in rows for st, a in r["curve"]])
    run_.finish(summary)
    if write_report:
        _write_report(run_, run_.summary() or summary)
    return {**summary, "reused": False, "run_dir": str(run_.path), "run_id": run_.id}


def _write_report(run_: Run, summary: dict[str, Any]) -> None:
    from transferlab.studies.w2s.report import write_report

    write_report(summary, run_.report_path)


def assemble(cfg: W2SConfig, data: Any, splits: list[Splits], base: Baseline, weak_acc: list[float],
             ceil_acc: list[float], students: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    y = torch.as_tensor(data.labels)
    weak_extra, ceil_extra = [], []
    for s, sp in enumerate(splits):
        yt = y[sp.test].numpy()
        pw, pc = base.weak[s][sp.test].numpy(), base.ceiling_probs[s][sp.test].numpy()
        weak_extra.append({"auroc": auroc(yt, pw), "ece": ece(yt, pw)})
        ceil_extra.append({"auroc": auroc(yt, pc), "ece": ece(yt, pc)})
    methods = {}
    for m, rows in students.items():
        summ = summarize_method(weak_acc, ceil_acc, rows, min_gap=cfg.analysis.min_gap)
        summ["per_seed"] = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
        summ["curve"] = mean_curve([r["curve"] for r in rows])
        methods[m] = summ
    return {
        "study": W2SStudy.name,
        "task": data.name,
        "task_description": data.description,
        "classes": data.classes,
        "n_examples": data.n,
        "seeds": cfg.seeds,
        "losses": methods,
        "weak": {"acc_per_seed": weak_acc, "auroc": float(np.mean([e["auroc"] for e in weak_extra])),
                 "ece": float(np.mean([e["ece"] for e in weak_extra]))},
        "ceiling": {"acc_per_seed": ceil_acc, "auroc": float(np.mean([e["auroc"] for e in ceil_extra])),
                    "ece": float(np.mean([e["ece"] for e in ceil_extra])), "curve": mean_curve(base.ceiling_curves)},
        "paired_tests": paired_tests({m: [r["student_acc"] for r in rows] for m, rows in students.items()}),
        "config": cfg.to_dict(),
    }


def run_many(cfg: W2SConfig, store: Store | None = None) -> dict[str, Any]:
    """Several tasks (``cfg.task.name`` comma-separated): one run each, plus the paired tests between losses pooled
    across tasks and seeds, and one report over all of them."""
    from transferlab.studies.w2s.analysis import pooled_paired_tests
    from transferlab.studies.w2s.report import write_multi_task_report

    tasks = [t.strip() for t in cfg.task.name.split(",") if t.strip()]
    summaries = [run(cfg.updated(task=t), store) for t in tasks]
    pooled = pooled_paired_tests(summaries)
    report = write_multi_task_report(summaries, pooled, store)
    return {"tasks": {s["task"]: s for s in summaries}, "pooled_paired_tests": pooled, "report": str(report)}
