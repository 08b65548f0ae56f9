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


def test_pgr_interval_covers_at_5_seeds_by_simulation():
    """At the covariance of a real 5-seed run (weak, ceiling and student accuracies correlated within a
    seed), the 95% interval must cover the true PGR about 95% of the time (the percentile bootstrap it
    replaced covered 83%)."""
    rng = np.random.default_rng(0)
    mu = np.array([0.75, 0.95, 0.88])  # weak, ceiling, student: true PGR = 0.13 / 0.20 = 0.65
    sd = np.array([0.02, 0.01, 0.015])
    corr = np.array([[1.0, 0.3, 0.6], [0.3, 1.0, 0.4], [0.6, 0.4, 1.0]])
    cov = corr * np.outer(sd, sd)
    true = (mu[2] - mu[0]) / (mu[1] - mu[0])
    hits, widths, n_sim = 0, [], 4000
    for _ in range(n_sim):
        w, c, s = rng.multivariate_normal(mu, cov, size=5).T
        r = pgr(s, w, c)
        hits += r.lo <= true <= r.hi
        widths.append(r.hi - r.lo)
    assert 0.93 <= hits / n_sim <= 0.97, hits / n_sim
    big = [pgr(*rng.multivariate_normal(mu, cov, size=60).T[[2, 0, 1]]) for _ in range(50)]
    assert np.median([b.hi - b.lo for b in big]) < 0.4 * np.median(widths)  # shrinks like 1/sqrt(n)


def test_pgr_needs_three_seeds_for_an_interval():
    r = pgr([0.8, 0.9], [0.6, 0.6], [1.0, 1.0])
    assert r.value == pytest.approx(0.625) and math.isnan(r.lo) and "at least 3" in r.note
    r3 = pgr([0.8, 0.9, 0.85], [0.6, 0.61, 0.6], [1.0, 0.99, 1.0])
    assert r3.lo <= r3.value <= r3.hi


def test_mean_ci_matches_t_interval():
    from scipy import stats

    a = np.array([0.1, 0.3, 0.2, 0.25])
    ci = mean_ci(a)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert ci.value == pytest.approx(a.mean()) and ci.lo == pytest.approx(lo) and ci.hi == pytest.approx(hi)
    one = mean_ci([0.5])
    assert one.value == 0.5 and math.isnan(one.lo)


def test_holm_adjustment_matches_the_step_down_rule():
    from transferlab.studies.w2s.analysis import holm, paired_tests

    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.5, float("nan")])[1])
    rows = paired_tests({"a": [0.70, 0.72, 0.71, 0.73], "b": [0.60, 0.61, 0.62, 0.60], "c": [0.69, 0.72, 0.70, 0.74]})
    for r in rows:
        assert r["t_p_holm"] >= r["t_p"] and r["t_p_holm"] <= 1
