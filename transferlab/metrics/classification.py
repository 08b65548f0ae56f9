"""Classification metrics on numpy arrays: accuracy, AUROC, expected calibration error.

``probs`` are (n, K) class probabilities (rows sum to 1); ``labels`` are (n,) integer classes.
Each function validates its input and raises :class:`MetricError` with one clear line.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from transferlab.core.errors import TransferlabError


class MetricError(TransferlabError):
    """A metric was asked of inputs it is not defined on."""


def _labels(labels, n_classes: int | None = None, where: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise MetricError(
            f"{where} must be 1-D, got shape {y.shape}", fix="pass one integer class per example"
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise MetricError(f"{where} must be integer classes", fix="map class names to 0..K-1 first")
    if n_classes is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = sorted(set(y[(y < 0) | (y >= n_classes)].tolist()))[:5]
        raise MetricError(
            f"{where} hold classes {bad} outside 0..{n_classes - 1}",
            fix="every label must index a column of probs",
        )
    return y.astype(np.int64)


def _probs(probs, where: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:  # binary: probability of class 1
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise MetricError(
            f"{where} must be (n, K) with K >= 2, got shape {p.shape}",
            fix="pass one probability row per example",
        )
    if not np.all(np.isfinite(p)):
        raise MetricError(f"{where} hold NaN or Inf", fix="check the model's outputs")
    return p


def accuracy(labels, preds) -> float:
    """Fraction of matches; ``preds`` may be class ids (n,) or probabilities/logits (n, K)."""
    y = _labels(labels)
    p = np.asarray(preds)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    if p.shape != y.shape:
        raise MetricError(
            f"preds shape {p.shape} does not match labels {y.shape}", fix="pass one per example"
        )
    if y.size == 0:
        raise MetricError("accuracy of zero examples is undefined", fix="pass at least one example")
    return float(np.mean(p == y))


def agreement(preds_a, preds_b) -> float:
    """Fraction of examples where two predictors pick the same class (e.g. student vs supervisor)."""
    a = np.asarray(preds_a)
    b = np.asarray(preds_b)
    a = a.argmax(axis=1) if a.ndim == 2 else a
    b = b.argmax(axis=1) if b.ndim == 2 else b
    return accuracy(a, b)


def _binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos n_neg), ties counted one half (average ranks)."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(labels, probs) -> float:
    """Binary AUROC of P(class 1); for K > 2 the macro average of one-vs-rest AUROCs.

    Classes absent from ``labels`` are left out of the macro average; NaN if none is defined.
    """
    p = _probs(probs)
    y = _labels(labels, p.shape[1])
    if p.shape[0] != y.shape[0]:
        raise MetricError(f"probs have {p.shape[0]} rows but labels {y.shape[0]}", fix="pass one per example")
    if p.shape[1] == 2:
        return _binary_auroc((y == 1).astype(int), p[:, 1])
    vals = [_binary_auroc((y == k).astype(int), p[:, k]) for k in range(p.shape[1])]
    vals = [v for v in vals if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def ece(labels, probs, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence, equal-width bins on (0, 1].

    ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)|.
    """
    if n_bins < 1:
        raise MetricError(f"n_bins must be >= 1, got {n_bins}", fix="use e.g. 15 bins")
    p = _probs(probs)
    y = _labels(labels, p.shape[1])
    if y.size == 0:
        raise MetricError("ECE of zero examples is undefined", fix="pass at least one example")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bin b holds conf in (b/n, (b+1)/n]; conf == 0 cannot happen for a distribution with K >= 1
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def misfit(student_probs, weak_probs) -> float:
    """Charikar et al. 2024's disagreement term for squared loss: mean ||f_student - f_weak||^2.

    Their bound (convex strong class, squared loss): err(student) <= err(weak) - misfit.
    Computed on probability vectors, summed over classes and averaged over examples.
    """
    s = _probs(student_probs, "student_probs")
    w = _probs(weak_probs, "weak_probs")
    if s.shape != w.shape:
        raise MetricError(
            f"student_probs {s.shape} and weak_probs {w.shape} differ", fix="pass the same examples"
        )
    return float(np.mean(np.sum((s - w) ** 2, axis=1)))


def squared_error(labels, probs) -> float:
    """Mean ||p - onehot(y)||^2 (the Brier score summed over classes): the loss misfit's bound is in."""
    p = _probs(probs)
    y = _labels(labels, p.shape[1])
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
