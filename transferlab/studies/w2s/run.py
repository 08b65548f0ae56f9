"""Drive the weak-to-strong protocol: splits, floor, ceiling, students per loss, over seeds.

Floor (the weak model on gold) and ceiling (the strong model on gold) are cached in the store
under the hash of what they depend on, and reused by every run that differs only in its losses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from transferlab.core import progress
from transferlab.core.config import StudyConfig, build
from transferlab.core.devices import torch_threads
from transferlab.core.errors import DataError
from transferlab.metrics import accuracy, agreement, auroc, check_gap, ece, misfit
from transferlab.store.run import Run, Store
from transferlab.studies.w2s.analysis import mean_curve, paired_tests, summarize_method
from transferlab.studies.w2s.config import W2SConfig, refuse_gold
from transferlab.studies.w2s.heads import HeadJob, train_heads
from transferlab.studies.w2s.losses import XentLoss, make_loss
from transferlab.studies.w2s.tasks import Views, build_data, build_views
from transferlab.studies.w2s.zoo_features import (
    ModelViews,
    build_model_views,
    pair_sweep,
    require_texts,
    uses_models,
    with_resolved_models,
)

STUDY = "w2s"
BASELINE_STUDY = "w2s-baseline"
BASELINE_FILE = "baseline.safetensors"
FRACTIONS = {"weak_train": 0.2, "transfer": 0.4, "val": 0.1, "test": 0.3}
SPLIT_CODE = {"weak_train": 0, "transfer": 1, "val": 2, "test": 3}
# fields the floor and ceiling depend on (losses and analysis settings are not among them)
BASELINE_FIELDS = (
    "task",
    "classes",
    "seeds",
    "seed",
    "task_seed",
    "n_examples",
    "weak_layer",
    "weak_noise",
    "encoder",
    "max_length",
    "steps",
    "batch_size",
    "lr",
    "weight_decay",
    "eval_every",
    "backend",
    "strong_model",
    "weak_model",
    "mid_models",
    "resolved_models",
    "lora",
    "lora_r",
    "ft_steps",
    "ft_lr",
    "ft_batch_size",
)


class BaselineConfig(StudyConfig):
    identity: dict[str, Any]
    sizes: dict[str, int]


@dataclass
class Splits:
    weak_train: torch.Tensor
    transfer: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def codes(self, n: int) -> torch.Tensor:
        c = torch.full((n,), -1, dtype=torch.long)
        for name, code in SPLIT_CODE.items():
            c[getattr(self, name)] = code
        return c

    @classmethod
    def from_codes(cls, codes: torch.Tensor) -> Splits:
        return cls(**{name: (codes == code).nonzero().flatten() for name, code in SPLIT_CODE.items()})


def make_config(**values: Any) -> W2SConfig:
    """Validated config from keyword values (refuses gold-label leaks with one clear line)."""
    refuse_gold(values)
    return build(W2SConfig, values)


def split_sizes(cfg: W2SConfig, n: int, n_classes: int) -> dict[str, int]:
    given = {"weak_train": cfg.n_weak_train, "transfer": cfg.n_transfer, "val": cfg.n_val, "test": cfg.n_test}
    sizes = {k: (v if v is not None else int(FRACTIONS[k] * n)) for k, v in given.items()}
    total = sum(sizes.values())
    if total > n:
        raise DataError(
            f"split too small: the task has {n} examples but the splits ask for {total} "
            f"({', '.join(f'{k}={v}' for k, v in sizes.items())})",
            where=cfg.task,
            fix="lower n_weak_train/n_transfer/n_val/n_test (or leave them unset for fractions of the task)",
        )
    minimum = {"weak_train": max(10, 2 * n_classes), "transfer": max(10, 2 * n_classes), "val": 5, "test": 10}
    for k, m in minimum.items():
        if sizes[k] < m:
            raise DataError(
                f"split too small: {k} has {sizes[k]} examples, at least {m} are needed",
                where=cfg.task,
                fix=f"set n_{k} >= {m} or use a larger task",
            )
    return sizes


def make_splits(n: int, sizes: dict[str, int], seed: int) -> Splits:
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    out, start = {}, 0
    for name in SPLIT_CODE:
        out[name] = perm[start : start + sizes[name]].sort().values
        start += sizes[name]
    return Splits(**out)


def _onehot(y: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, k).float()


def head_kw(cfg: W2SConfig) -> dict[str, Any]:
    return {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "eval_every": cfg.eval_every,
    }


# --------------------------------------------------------------------------- floor and ceiling
def ceiling_jobs(splits: list[Splits], y: torch.Tensor, k: int, cfg: W2SConfig) -> list[HeadJob]:
    """The strong ceiling: a head trained on gold labels of the transfer split, early-stopped on val."""
    return [
        HeadJob(sp.transfer, _onehot(y[sp.transfer], k), sp.val, _onehot(y[sp.val], k), XentLoss(), seed=cfg.seed + s)
        for s, sp in enumerate(splits)
    ]


def _weak_jobs(x_rows: int, splits: list[Splits], y: torch.Tensor, k: int, cfg: W2SConfig) -> list[HeadJob]:
    jobs = []
    for s, sp in enumerate(splits):
        wt = sp.weak_train
        n_hold = max(2, len(wt) // 5)  # the weak model's own early stopping: a gold slice of weak-train
        jobs.append(
            HeadJob(
                wt[n_hold:],
                _onehot(y[wt[n_hold:]], k),
                wt[:n_hold],
                _onehot(y[wt[:n_hold]], k),
                XentLoss(),
                seed=cfg.seed + s + 10_000,
            )
        )
    return jobs


def compute_baseline(views: Views, splits: list[Splits], cfg: W2SConfig) -> dict[str, Any]:
    """Weak models (one per ladder rung below the strong view) and the ceiling, for every seed."""
    y = torch.as_tensor(views.data.labels)
    k = views.data.n_classes
    rungs = list(views.ladder[:-1]) or ["weak"]
    weak_probs = {}
    for rung in rungs:
        xr = views.views[rung]
        res = train_heads(xr, _weak_jobs(xr.shape[0], splits, y, k, cfg), **head_kw(cfg))
        weak_probs[rung] = torch.stack([r.probs(xr) for r in res]).detach()
    if "weak" not in weak_probs:
        weak_probs["weak"] = weak_probs[views.ladder[0]].clone()
    ceil_jobs = ceiling_jobs(splits, y, k, cfg)
    mon = torch.stack([sp.test for sp in splits])
    ceil = train_heads(views.strong, ceil_jobs, monitor_idx=mon, monitor_labels=y[mon], **head_kw(cfg))
    return {
        "weak_probs": weak_probs,
        "ceiling_probs": torch.stack([r.probs(views.strong) for r in ceil]).detach(),
        "ceiling_curves": [r.curve for r in ceil],
        "ceiling_best_step": [r.best_step for r in ceil],
    }


def _baseline_config(cfg: W2SConfig, sizes: dict[str, int], ladder: list[str]) -> BaselineConfig:
    ident = {f: getattr(cfg, f) for f in BASELINE_FIELDS}
    ident["ladder"] = list(ladder)
    return BaselineConfig(identity=ident, sizes=sizes)


def load_or_compute_baseline(
    views: Views,
    splits: list[Splits],
    cfg: W2SConfig,
    sizes: dict[str, int],
    store: Store | None,
    compute: Any = None,
) -> tuple[dict[str, Any], bool]:
    """(baseline, reused): from the store when this exact floor/ceiling was computed before."""
    compute = compute or compute_baseline
    if store is None:
        return compute(views, splits, cfg), False
    run = store.open_run(BASELINE_STUDY, _baseline_config(cfg, sizes, views.ladder))
    path = Path(run.path) / BASELINE_FILE
    if run.status == "done" and path.is_file():
        t = load_file(str(path))
        summ = run.summary() or {}
        weak = {name: t[f"weak_probs.{name}"] for name in summ["rungs"]}
        return {
            "weak_probs": weak,
            "ceiling_probs": t["ceiling_probs"],
            "ceiling_curves": summ["ceiling_curves"],
            "ceiling_best_step": summ["ceiling_best_step"],
        }, True
    run.start()
    base = compute(views, splits, cfg)
    tensors = {f"weak_probs.{k}": v.contiguous() for k, v in base["weak_probs"].items()}
    tensors["ceiling_probs"] = base["ceiling_probs"].contiguous()
    tensors["split_codes"] = torch.stack([sp.codes(views.data.n) for sp in splits])
    save_file(tensors, str(path))
    run.finish(
        {
            "rungs": list(base["weak_probs"]),
            "ceiling_curves": base["ceiling_curves"],
            "ceiling_best_step": base["ceiling_best_step"],
        }
    )
    return base, False


# --------------------------------------------------------------------------- students
def knn_refine(x: torch.Tensor, idx: torch.Tensor, weak: torch.Tensor, k: int) -> torch.Tensor:
    """Somerstep et al.-style refinement by nearest-neighbour elicitation in the strong representation:
    each example's new soft label is the mean weak label of its k nearest weakly labelled neighbours
    (cosine similarity in the strong features, the example itself left out)."""
    f = torch.nn.functional.normalize(x[idx].float(), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))
    kk = min(k, len(idx) - 1)
    nb = sim.topk(kk, dim=1).indices
    return weak[nb].mean(1)


def _student_targets(
    method: str, s: int, sp: Splits, views: Views, weak: torch.Tensor, cfg: W2SConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    tr, va = weak[sp.transfer], weak[sp.val]
    if method == "knn-refine":
        tr = knn_refine(views.strong, sp.transfer, tr, cfg.knn_k)
    return tr, va


def _bootstrap_labels(
    views: Views, splits: list[Splits], weak_all: torch.Tensor, cfg: W2SConfig
) -> torch.Tensor:
    """Weak -> each intermediate ladder view in turn (xent, weak-labelled selection) -> strong."""
    labels = weak_all  # (S, n, K)
    for rung in views.ladder[1:-1]:
        xr = views.views[rung]
        jobs = [
            HeadJob(
                sp.transfer,
                labels[s][sp.transfer],
                sp.val,
                labels[s][sp.val],
                XentLoss(),
                seed=cfg.seed + s + 20_000,
                select="val" if cfg.student_early_stop == "weak_val" else "last",
            )
            for s, sp in enumerate(splits)
        ]
        res = train_heads(xr, jobs, **head_kw(cfg))
        labels = torch.stack([r.probs(xr) for r in res]).detach()
    return labels


def train_students(
    views: Views, splits: list[Splits], base: dict[str, Any], cfg: W2SConfig, methods: list[str]
) -> dict[str, list[dict[str, Any]]]:
    y = torch.as_tensor(views.data.labels)
    weak_all = base["weak_probs"]["weak"]
    select = "val" if cfg.student_early_stop == "weak_val" else "last"
    boot = _bootstrap_labels(views, splits, weak_all, cfg) if "bootstrap" in methods else None
    jobs, keys = [], []
    for m in methods:
        for s, sp in enumerate(splits):
            sup = boot if m == "bootstrap" else weak_all
            tr_t, va_t = _student_targets(m, s, sp, views, sup[s], cfg)
            loss = make_loss(m, **cfg.loss_params.get(m, {}))
            # same init seed for every loss: the comparison between losses is paired by seed
            jobs.append(HeadJob(sp.transfer, tr_t, sp.val, va_t, loss, seed=cfg.seed + s, select=select))
            keys.append((m, s))
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    mon = torch.stack([splits[s].test for _, s in keys])  # each head is watched on its own seed's test split
    trained = train_heads(views.strong, jobs, monitor_idx=mon, monitor_labels=y[mon], **head_kw(cfg))
    for (m, s), res in zip(keys, trained):
        sp = splits[s]
        p_test = res.probs(views.strong[sp.test]).detach().numpy()
        w_test = weak_all[s][sp.test].numpy()
        yt = y[sp.test].numpy()
        results[m].append(
            {
                "seed": cfg.seed + s,
                "student_acc": accuracy(yt, p_test),
                "agreement": agreement(p_test, w_test),
                "misfit": misfit(p_test, w_test),
                "ece": ece(yt, p_test),
                "auroc": auroc(yt, p_test),
                "best_step": res.best_step,
                "curve": res.curve,
            }
        )
    return results


# --------------------------------------------------------------------------- the study
def run(cfg: W2SConfig, store: Store | None = None, *, write_report: bool = True) -> dict[str, Any]:
    """Run (or reuse) the study for ``cfg``; returns the summary (also in the run's summary.json)."""
    with torch_threads(cfg.num_threads):
        return _run(cfg, store, write_report)


def _run(cfg: W2SConfig, store: Store | None, write_report: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    if cfg.backend == "finetune":
        from transferlab.studies.w2s.finetune import run_finetune
        from transferlab.studies.w2s.zoo_features import zoo_refs_to_paths

        return run_finetune(zoo_refs_to_paths(cfg, store), store, write_report=write_report)
    model_views = uses_models(cfg)
    if model_views:  # causal-LM features (zoo or local path): the run keys on the models' weights
        cfg = with_resolved_models(cfg, store)
    data = build_data(cfg)
    sizes = split_sizes(cfg, data.n, data.n_classes)  # validated before anything is written
    if model_views:
        require_texts(cfg, data)
    if store is not None:
        existing = store.open_run(STUDY, cfg) if _is_done(store, cfg) else None
        if existing is not None:
            summary = existing.summary() or {}
            if write_report and not existing.report_path.exists():
                _write_report(existing, summary)
            return {**summary, "reused": True, "run_dir": str(existing.path)}
    views = build_model_views(cfg, store, data) if model_views else build_views(cfg, store, data)
    t_feat = time.perf_counter()
    splits = [make_splits(data.n, sizes, cfg.seed + s) for s in range(cfg.seeds)]
    with progress.progress_bar("w2s floor+ceiling", total=None):
        base, reused = load_or_compute_baseline(views, splits, cfg, sizes, store)
    y = torch.as_tensor(data.labels)
    weak_acc = [
        accuracy(y[sp.test].numpy(), base["weak_probs"]["weak"][s][sp.test].numpy())
        for s, sp in enumerate(splits)
    ]
    ceil_acc = [
        accuracy(y[sp.test].numpy(), base["ceiling_probs"][s][sp.test].numpy()) for s, sp in enumerate(splits)
    ]
    check_gap(weak_acc, ceil_acc, cfg.min_gap, where=cfg.task)
    t_base = time.perf_counter()
    with progress.progress_bar("w2s students", total=None):
        students = train_students(views, splits, base, cfg, cfg.losses)
    t_students = time.perf_counter()
    summary = assemble(cfg, views, splits, base, weak_acc, ceil_acc, students)
    if isinstance(views, ModelViews):
        summary["sweep"] = pair_sweep(views, splits, base, cfg)
        summary["models"] = views.models
    else:
        summary["sweep"] = size_sweep(views, splits, base, cfg, ceil_acc)
    summary["timing_s"] = {
        "features": t_feat - t0,
        "baseline": t_base - t_feat,
        "students": t_students - t_base,
        "baseline_reused": reused,
    }
    summary["sizes"] = sizes
    return finish_run(cfg, store, summary, students, write_report)


def finish_run(
    cfg: W2SConfig,
    store: Store | None,
    summary: dict[str, Any],
    students: dict[str, list[dict[str, Any]]],
    write_report: bool,
) -> dict[str, Any]:
    """Write the run: gold-accuracy curves to metrics.jsonl, summary.json, the report."""
    if store is None:
        return summary
    run_ = store.open_run(STUDY, cfg)
    run_.start()
    run_.log_many(
        [
            {"method": m, "seed": r["seed"], "step": st, "gold_acc": a}
            for m, rows in students.items()
            for r in rows
            for st, a in r["curve"]
        ]
    )
    run_.finish(summary)
    if write_report:
        _write_report(run_, run_.summary() or summary)
    return {**summary, "reused": False, "run_dir": str(run_.path)}


def _is_done(store: Store, cfg: W2SConfig) -> bool:
    path = store.run_dir(STUDY, cfg.config_hash()) / "summary.json"
    return path.exists()


def _write_report(run_: Run, summary: dict[str, Any]) -> None:
    from transferlab.studies.w2s.report import write_report

    write_report(summary, run_.report_path)


def assemble(
    cfg: W2SConfig,
    views: Views,
    splits: list[Splits],
    base: dict[str, Any],
    weak_acc: list[float],
    ceil_acc: list[float],
    students: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    y = torch.as_tensor(views.data.labels)
    weak_extra, ceil_extra = [], []
    for s, sp in enumerate(splits):
        yt = y[sp.test].numpy()
        pw, pc = base["weak_probs"]["weak"][s][sp.test].numpy(), base["ceiling_probs"][s][sp.test].numpy()
        weak_extra.append({"auroc": auroc(yt, pw), "ece": ece(yt, pw)})
        ceil_extra.append({"auroc": auroc(yt, pc), "ece": ece(yt, pc)})
    methods = {}
    for m, rows in students.items():
        summ = summarize_method(
            weak_acc, ceil_acc, rows, min_gap=cfg.min_gap
        )
        summ["per_seed"] = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
        summ["curve"] = mean_curve([r["curve"] for r in rows])
        methods[m] = summ
    return {
        "study": STUDY,
        "task": views.data.name,
        "task_description": views.data.description,
        "classes": views.data.classes,
        "n_examples": views.data.n,
        "seeds": cfg.seeds,
        "losses": methods,
        "weak": {
            "acc_per_seed": weak_acc,
            "auroc": float(np.mean([e["auroc"] for e in weak_extra])),
            "ece": float(np.mean([e["ece"] for e in weak_extra])),
        },
        "ceiling": {
            "acc_per_seed": ceil_acc,
            "auroc": float(np.mean([e["auroc"] for e in ceil_extra])),
            "ece": float(np.mean([e["ece"] for e in ceil_extra])),
            "curve": mean_curve(base["ceiling_curves"]),
        },
        "paired_tests": paired_tests({m: [r["student_acc"] for r in rows] for m, rows in students.items()}),
        "config": cfg.to_dict(),
    }


def size_sweep(
    views: Views, splits: list[Splits], base: dict[str, Any], cfg: W2SConfig, ceil_acc: list[float]
) -> list[dict[str, Any]]:
    """PGR of a naive (xent) student against each weaker ladder rung as the supervisor."""
    rungs = [r for r in views.ladder[:-1] if r in base["weak_probs"]]
    if len(rungs) < 2:
        return []
    y = torch.as_tensor(views.data.labels)
    out = []
    strong_size = views.sizes.get(views.ladder[-1], float(len(views.ladder) - 1))
    sw_cfg = cfg.model_copy(update={"losses": ["xent"]})
    for rung in rungs:
        wp = base["weak_probs"][rung]
        rows = train_students(views, splits, {**base, "weak_probs": {"weak": wp}}, sw_cfg, ["xent"])["xent"]
        w = [accuracy(y[sp.test].numpy(), wp[s][sp.test].numpy()) for s, sp in enumerate(splits)]
        summ = summarize_method(w, ceil_acc, rows, min_gap=cfg.min_gap)
        out.append(
            {
                "weak_view": rung,
                "size_gap": strong_size - views.sizes.get(rung, 0.0),
                "weak_acc": summ["weak_acc"],
                "student_acc": summ["student_acc"],
                "pgr": summ["pgr"],
            }
        )
    return out


def run_many(cfg: W2SConfig, store: Store | None = None) -> dict[str, Any]:
    """Several tasks (``cfg.task`` comma-separated): one run each, plus the paired tests between losses pooled
    across tasks and seeds, and one report over all of them."""
    from transferlab.studies.w2s.analysis import pooled_paired_tests
    from transferlab.studies.w2s.report import write_multi_task_report

    tasks = [t.strip() for t in cfg.task.split(",") if t.strip()]
    summaries = [run(cfg.model_copy(update={"task": t}), store) for t in tasks]
    pooled = pooled_paired_tests(summaries)
    report = write_multi_task_report(summaries, pooled, store)
    return {"tasks": {s["task"]: s for s in summaries}, "pooled_paired_tests": pooled, "report": str(report)}
