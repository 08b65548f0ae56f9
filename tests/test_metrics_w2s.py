"""Metrics against sklearn and hand computations: accuracy, AUROC, ECE, agreement, misfit, PGR."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from transferlab.core.errors import TransferlabError
from transferlab.metrics import (
    MetricError,
    accuracy,
    agreement,
    auroc,
    check_gap,
    ece,
    mean_ci,
    misfit,
    pgr,
    pgr_point,
    squared_error,
)


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def test_accuracy_matches_sklearn_from_ids_and_probs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = _softmax(rng.normal(size=(200, 4)))
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert accuracy(y, p.argmax(1)) == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75


def test_auroc_binary_and_multiclass_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: many ties
    p = np.stack([1 - s / 2, s / 2], 1)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc(y, s / 2) == pytest.approx(roc_auc_score(y, s), abs=1e-12)  # 1-D = P(class 1)
    y3 = rng.integers(0, 3, 300)
    p3 = _softmax(rng.normal(size=(300, 3)) + np.eye(3)[y3])
    assert auroc(y3, p3) == pytest.approx(
        roc_auc_score(y3, p3, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert auroc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert math.isnan(auroc([1, 1, 1], [0.9, 0.8, 0.1]))  # one class only: undefined


def test_ece_by_hand():
    # 4 examples, 2 bins: conf 0.6, 0.7 in bin (0.5,1] ... with 2 bins: (0,.5], (.5,1]
    p = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1])
    # all confidences > .5 -> one bin; acc = (1 + 0 + 1 + 1)/4 = .75, conf = (.6+.7+.9+.55)/4 = .6875
    assert ece(y, p, n_bins=2) == pytest.approx(abs(0.75 - 0.6875))
    # 10 bins: (.5,.6] holds .6 and .55 -> acc 1, conf .575 ; (.6,.7]: .7 acc 0 ; (.8,.9]: .9 acc 1
    want = 0.5 * abs(1 - 0.575) + 0.25 * abs(0 - 0.7) + 0.25 * abs(1 - 0.9)
    assert ece(y, p, n_bins=10) == pytest.approx(want)
    # perfectly calibrated in expectation: sampled labels from the probs give a small ECE
    rng = np.random.default_rng(2)
    q = rng.random(20000)
    lab = (rng.random(20000) < q).astype(int)
    assert ece(lab, q) < 0.02
    assert ece(1 - lab, q) > 0.2


def test_agreement_misfit_and_squared_error():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    b = np.array([[0.7, 0.3], [0.6, 0.4], [0.5, 0.5]])  # argmax of last row: 0 (first max)
    assert agreement(a, b) == pytest.approx(2 / 3)
    assert misfit(a, b) == pytest.approx(np.mean([2 * 0.2**2, 2 * 0.4**2, 2 * 0.1**2]))
    assert misfit(a, a) == 0.0
    assert squared_error([0, 1, 1], a) == pytest.approx(np.mean([2 * 0.1**2, 2 * 0.2**2, 2 * 0.6**2]))


def test_charikar_inequality_holds_for_a_projection():
    """For squared loss and a convex class (here: a linear span), projecting the weak predictor onto the
    class of the truth gives err(student) <= err(weak) - misfit (Pythagoras). Checked numerically."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 5))
    truth = X @ rng.normal(size=5)
    weak = truth + rng.normal(size=500) * 0.7 + X[:, 0] * 0.3
    coef, *_ = np.linalg.lstsq(X, weak, rcond=None)
    student = X @ coef
    err = lambda f: np.mean((f - truth) ** 2)  # noqa: E731
    mis = np.mean((student - weak) ** 2)
    assert err(student) <= err(weak) - mis + 1e-9


def test_metric_errors_are_one_clear_line():
    with pytest.raises(MetricError, match="outside 0..1"):
        auroc([0, 2], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(MetricError, match="does not match"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(TransferlabError):
        ece([0], [[float("nan"), 1.0]])


def test_pgr_point_and_ratio_of_means():
    assert pgr_point(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert math.isnan(pgr_point(0.8, 0.6, 0.605))
    r = pgr([0.8, 0.9], [0.6, 0.6], [1.0, 1.0])
    assert r.value == pytest.approx((0.85 - 0.6) / 0.4)
    assert not r.guarded and r.n_seeds == 2


def test_pgr_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(4)

    def draw(n):
        w = 0.6 + rng.normal(0, 0.01, n)
        c = 0.9 + rng.normal(0, 0.01, n)
        s = w + 0.5 * (c - w) + rng.normal(0, 0.01, n)
        return s, w, c

    small = pgr(*draw(5), n_boot=4000)
    big = pgr(*draw(60), n_boot=4000)
    assert small.lo <= small.value <= small.hi
    assert big.lo < 0.5 < big.hi
    assert (big.hi - big.lo) < (small.hi - small.lo)
    # deterministic given the seed
    s, w, c = draw(5)
    assert pgr(s, w, c, seed=7).lo == pgr(s, w, c, seed=7).lo


def test_pgr_guard_for_tiny_gap():
    r = pgr([0.70, 0.71], [0.70, 0.70], [0.705, 0.704])
    assert r.guarded and math.isnan(r.value) and "gap" in r.note
    # a gap that exists on average but vanishes in many resamples: no made-up interval
    r2 = pgr([0.7, 0.7, 0.7], [0.6, 0.7, 0.7], [0.75, 0.7, 0.7], min_gap=0.01)
    assert r2.guarded and math.isnan(r2.lo) and r2.dropped > 0.025
    with pytest.raises(MetricError, match="PGR .* is undefined"):
        check_gap([0.9, 0.91], [0.85, 0.86])
    assert check_gap([0.6], [0.9]) == pytest.approx(0.3)


def test_mean_ci_matches_t_interval():
    from scipy import stats

    a = np.array([0.1, 0.3, 0.2, 0.25])
    ci = mean_ci(a)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert ci.value == pytest.approx(a.mean()) and ci.lo == pytest.approx(lo) and ci.hi == pytest.approx(hi)
    one = mean_ci([0.5])
    assert one.value == 0.5 and math.isnan(one.lo)
