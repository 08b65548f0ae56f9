"""The ``heads`` trainer: linear heads on frozen features (encoder layers or causal-LM hidden states), every
seed's heads trained together in one batched run (:mod:`~transferlab.studies.w2s.heads`).

The weak model is a head on the weak view, the ceiling and the students heads on the strong view; the label
methods (k-NN refinement, bootstrapping through the ladder's middle rungs) change the weak labels and train
with xent. The ladder sweep puts a naive student on every (weak, strong) pair of the size ladder.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch

from transferlab.data.classification import ClassificationData
from transferlab.metrics import accuracy
from transferlab.store.run import Store
from transferlab.studies.w2s.analysis import summarize_method
from transferlab.studies.w2s.config import W2SConfig
from transferlab.studies.w2s.heads import HeadJob, train_heads
from transferlab.studies.w2s.losses import make_loss
from transferlab.studies.w2s.protocol import (
    WEAK_SEED_OFFSET,
    Baseline,
    Splits,
    Trainer,
    onehot,
    select_rule,
    student_metrics,
)
from transferlab.studies.w2s.tasks import Views, build_views
from transferlab.studies.w2s.zoo_features import ModelViews, build_model_views, uses_models

BOOTSTRAP_SEED_OFFSET = 20_000


def head_kw(cfg: W2SConfig) -> dict[str, Any]:
    h = cfg.heads
    return {"steps": h.steps, "batch_size": h.batch_size, "lr": h.lr, "weight_decay": h.weight_decay,
            "eval_every": cfg.eval_every}


class HeadsTrainer(Trainer):
    def __init__(self, cfg: W2SConfig, store: Store | None, data: ClassificationData):
        self.cfg, self.store, self.data = cfg, store, data
        self.views: Views | None = None

    def prepare(self) -> None:
        self.views = (build_model_views(self.cfg, self.store, self.data) if uses_models(self.cfg)
                      else build_views(self.cfg, self.store, self.data))

    def baseline(self, splits: list[Splits]) -> Baseline:
        assert self.views is not None
        return compute_baseline(self.views, splits, self.cfg)

    def students(self, splits: list[Splits], base: Baseline, methods: list[str]) -> dict[str, list[dict[str, Any]]]:
        assert self.views is not None
        refined = icl_refined_labels(self.cfg, self.store, self.data, splits, base.weak) \
            if "icl-refine" in methods else None
        return train_students(self.views, splits, base, self.cfg, methods, refined=refined)

    def ladder(self, splits: list[Splits], base: Baseline, ceil_acc: list[float]) -> list[dict[str, Any]]:
        assert self.views is not None
        return ladder_sweep(self.views, splits, base, self.cfg)

    def summary_extra(self) -> dict[str, Any]:
        return {"models": self.views.models} if isinstance(self.views, ModelViews) else {}


# --------------------------------------------------------------------------- floor and ceiling
def ceiling_jobs(splits: list[Splits], y: torch.Tensor, k: int, cfg: W2SConfig) -> list[HeadJob]:
    """The strong ceiling: a head trained on gold labels of the transfer split, early-stopped on val."""
    return [HeadJob(sp.transfer, onehot(y[sp.transfer], k), sp.val, onehot(y[sp.val], k), make_loss("xent"),
                    seed=cfg.seed + s) for s, sp in enumerate(splits)]


def weak_jobs(splits: list[Splits], y: torch.Tensor, k: int, cfg: W2SConfig) -> list[HeadJob]:
    jobs = []
    for s, sp in enumerate(splits):
        train, hold = sp.weak_holdout()
        jobs.append(HeadJob(train, onehot(y[train], k), hold, onehot(y[hold], k), make_loss("xent"),
                            seed=cfg.seed + s + WEAK_SEED_OFFSET))
    return jobs


def compute_baseline(views: Views, splits: list[Splits], cfg: W2SConfig) -> Baseline:
    """Weak models (one per ladder rung below the strong view) and the ceiling, for every seed."""
    y = torch.as_tensor(views.data.labels)
    k = views.data.n_classes
    rungs = list(views.ladder[:-1]) or ["weak"]
    weak_probs = {}
    for rung in rungs:
        xr = views.views[rung]
        res = train_heads(xr, weak_jobs(splits, y, k, cfg), **head_kw(cfg))
        weak_probs[rung] = torch.stack([r.probs(xr) for r in res]).detach()
    if "weak" not in weak_probs:
        weak_probs["weak"] = weak_probs[views.ladder[0]].clone()
    mon = torch.stack([sp.test for sp in splits])
    ceil = train_heads(views.strong, ceiling_jobs(splits, y, k, cfg), monitor_idx=mon, monitor_labels=y[mon],
                       **head_kw(cfg))
    return Baseline(weak_probs=weak_probs, ceiling_probs=torch.stack([r.probs(views.strong) for r in ceil]).detach(),
                    ceiling_curves=[r.curve for r in ceil], ceiling_best_step=[r.best_step for r in ceil])


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


def icl_refined_labels(cfg: W2SConfig, store: Store | None, data: ClassificationData, splits: list[Splits],
                       weak_all: torch.Tensor) -> torch.Tensor:
    """(S, n, K) labels for the icl-refine students: the weak labels, with every transfer and val example
    relabelled by the strong causal LM from ``icl_k`` weakly labelled transfer examples in its prompt."""
    from transferlab.core.errors import ConfigError
    from transferlab.studies.w2s.icl_refine import load_lm, refine_texts, sample_labels
    from transferlab.studies.w2s.zoo_features import resolve_model, zoo_root

    assert data.texts is not None and cfg.strong.model is not None
    words = cfg.students.icl_label_words or list(data.classes)
    if len(words) != data.n_classes:
        raise ConfigError(f"icl_label_words has {len(words)} words but the task has {data.n_classes} classes "
                          f"({', '.join(data.classes)})", where="icl_label_words", fix="give one word per class, "
                          "in class order")
    lm = load_lm(resolve_model(cfg.strong.model, zoo_root(cfg, store), cfg.zoo_corpus, role="strong").path,
                 cfg.device)
    out = weak_all.clone()
    for s, sp in enumerate(splits):
        queries = torch.cat([sp.transfer, sp.val])
        seed = cfg.seed + s
        probs = refine_texts(lm, data.texts, weak_all[s], queries, sp.transfer, k=cfg.students.icl_k,
                             template=cfg.students.icl_template, words=words, seed=seed,
                             max_length=cfg.strong.max_length, device=cfg.device)
        if cfg.students.icl_read == "sample":
            probs = sample_labels(probs, torch.Generator().manual_seed(seed))
        out[s][queries] = probs.to(out.dtype)
    return out


def bootstrap_labels(views: Views, splits: list[Splits], weak_all: torch.Tensor, cfg: W2SConfig) -> torch.Tensor:
    """Weak -> each intermediate ladder view in turn (xent, weak-labelled selection) -> strong."""
    labels = weak_all  # (S, n, K)
    for rung in views.ladder[1:-1]:
        xr = views.views[rung]
        jobs = [HeadJob(sp.transfer, labels[s][sp.transfer], sp.val, labels[s][sp.val], make_loss("xent"),
                        seed=cfg.seed + s + BOOTSTRAP_SEED_OFFSET, select=select_rule(cfg))
                for s, sp in enumerate(splits)]
        res = train_heads(xr, jobs, **head_kw(cfg))
        labels = torch.stack([r.probs(xr) for r in res]).detach()
    return labels


def train_students(views: Views, splits: list[Splits], base: Baseline, cfg: W2SConfig, methods: list[str],
                   refined: torch.Tensor | None = None) -> dict[str, list[dict[str, Any]]]:
    """One head per (method, seed) on the strong view, all trained together (``refined``: the
    icl-refine labels, :func:`icl_refined_labels`). The same init seed for every
    method: the comparison between methods is paired by seed."""
    from transferlab.studies.w2s.losses import LABEL_METHODS

    y = torch.as_tensor(views.data.labels)
    weak_all = base.weak
    boot = bootstrap_labels(views, splits, weak_all, cfg) if "bootstrap" in methods else None
    jobs, keys = [], []
    for m in methods:
        for s, sp in enumerate(splits):
            sup = boot if m == "bootstrap" else refined if m == "icl-refine" else weak_all
            assert sup is not None
            tr, va = sup[s][sp.transfer], sup[s][sp.val]
            if m == "knn-refine":
                tr = knn_refine(views.strong, sp.transfer, tr, cfg.students.knn_k)
            loss = make_loss("xent") if m in LABEL_METHODS else make_loss(m, **cfg.students.loss_params.get(m, {}))
            jobs.append(HeadJob(sp.transfer, tr, sp.val, va, loss, seed=cfg.seed + s, select=select_rule(cfg)))
            keys.append((m, s))
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    mon = torch.stack([splits[s].test for _, s in keys])  # each head is watched on its own seed's test split
    trained = train_heads(views.strong, jobs, monitor_idx=mon, monitor_labels=y[mon], **head_kw(cfg))
    for (m, s), res in zip(keys, trained):
        sp = splits[s]
        results[m].append(student_metrics(cfg.seed + s, res.probs(views.strong[sp.test]).detach().numpy(),
                                          weak_all[s][sp.test].numpy(), y[sp.test].numpy(), res.best_step,
                                          res.curve))
    return results


# --------------------------------------------------------------------------- the ladder sweep
def ladder_sweep(views: Views, splits: list[Splits], base: Baseline, cfg: W2SConfig) -> list[dict[str, Any]]:
    """PGR of a naive (xent) student over (weak, strong) pairs of the size ladder.

    Model ladders (zoo or causal-LM folders) pair every smaller model with every larger one; each strong rung
    gets its own ceiling (heads on gold) and each weak rung its floor from the baseline; the size axis is
    ``param_ratio`` = strong / weak non-embedding parameters. Encoder-layer ladders pair every weaker layer with
    the top one (its ceiling is the baseline's); the size axis is ``layer_gap`` = strong layer - weak layer.
    """
    y = torch.as_tensor(views.data.labels)
    k = views.data.n_classes
    ladder = list(views.ladder)
    models = isinstance(views, ModelViews)
    if models:
        pairs = list(combinations(ladder, 2))
    else:
        rungs = [r for r in ladder[:-1] if r in base.weak_probs]
        pairs = [(r, ladder[-1]) for r in rungs] if len(rungs) >= 2 else []
    if not pairs:
        return []
    ceilings: dict[str, torch.Tensor] = {ladder[-1]: base.ceiling_probs}
    jobs = ceiling_jobs(splits, y, k, cfg)
    for strong in {s for _, s in pairs} - set(ceilings):
        xr = views.views[strong]
        ceilings[strong] = torch.stack([r.probs(xr) for r in train_heads(xr, jobs, **head_kw(cfg))]).detach()
    out = []
    for weak, strong in pairs:
        wp, cp = base.weak_probs[weak], ceilings[strong]
        w = [accuracy(y[sp.test].numpy(), wp[s][sp.test].numpy()) for s, sp in enumerate(splits)]
        c = [accuracy(y[sp.test].numpy(), cp[s][sp.test].numpy()) for s, sp in enumerate(splits)]
        sv = Views(views.data, {**views.views, "strong": views.views[strong]}, ladder, views.sizes)
        pair_base = Baseline({"weak": wp}, cp, [], [])
        rows = train_students(sv, splits, pair_base, cfg, ["xent"])["xent"]
        summ = summarize_method(w, c, rows, min_gap=cfg.analysis.min_gap)
        row: dict[str, Any] = {"weak_view": weak, "strong_view": strong}
        if models:
            nw, ns = views.sizes[weak], views.sizes[strong]
            row.update({"weak_params": int(nw), "strong_params": int(ns),
                        "param_ratio": ns / nw if nw > 0 else float("nan")})
        else:
            row["layer_gap"] = views.sizes.get(strong, float(len(ladder) - 1)) - views.sizes.get(weak, 0.0)
        row.update({k_: summ[k_] for k_ in ("weak_acc", "ceiling_acc", "student_acc", "pgr")})
        out.append(row)
    return out
