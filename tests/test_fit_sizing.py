"""Compute-optimal sizing and over-training: closed forms against brute-force minimization."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.core.errors import FitError
from transferlab.fit.chinchilla import ChinchillaLaw
from transferlab.fit.sizing import (
    compute_for_loss,
    compute_multiplier,
    compute_optimal,
    loss_at_compute,
    min_params_for_loss,
    optimal_exponents,
    optimal_loss,
    overtrain,
    size_penalty,
    tokens_for_loss,
)

LAW = ChinchillaLaw(E=1.817, A=477.8, B=2143.9, alpha=0.3473, beta=0.3672)  # Epoch's fit
ODD = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)  # Hoffmann et al.'s


def _brute_force_N(law, C):
    n = np.geomspace(1e6, 1e14, 400_001)
    return n[np.argmin(loss_at_compute(law, C, n))]


@pytest.mark.parametrize("law", [LAW, ODD])
@pytest.mark.parametrize("C", [1e20, 5.76e23, 1e26])
def test_compute_optimal_closed_form_matches_brute_force(law, C):
    n_opt, d_opt = compute_optimal(law, C)
    assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-12)
    assert n_opt == pytest.approx(_brute_force_N(law, C), rel=2e-4)
    # first-order condition alpha A N^-alpha = beta B D^-beta
    assert law.alpha * law.A * n_opt**-law.alpha == pytest.approx(
        law.beta * law.B * d_opt**-law.beta, rel=1e-10
    )
    a, b = optimal_exponents(law)
    n2, _ = compute_optimal(law, 10 * C)
    assert n2 / n_opt == pytest.approx(10**a, rel=1e-10) and a + b == pytest.approx(1.0)


def test_epoch_law_gives_about_20_tokens_per_parameter_at_chinchilla_compute():
    n_opt, d_opt = compute_optimal(LAW, 5.76e23)  # Chinchilla's training compute
    assert 15 < d_opt / n_opt < 30
    assert 3e10 < n_opt < 1e11


def test_compute_for_loss_inverts_the_optimal_loss():
    C = np.array([1e19, 1e22, 1e25])
    L = optimal_loss(LAW, C)
    np.testing.assert_allclose(compute_for_loss(LAW, L), C, rtol=1e-9)
    assert np.isinf(compute_for_loss(LAW, LAW.E)) and np.isinf(compute_for_loss(LAW, LAW.E - 0.1))


def test_tokens_for_loss_and_min_params():
    N = 1e9
    D = tokens_for_loss(LAW, N, 2.3)
    assert float(LAW.loss(N, D)) == pytest.approx(2.3, rel=1e-12)
    n_min = min_params_for_loss(LAW, 2.3)
    assert float(LAW.loss_infinite_data(n_min)) == pytest.approx(2.3, rel=1e-12)
    assert np.isinf(tokens_for_loss(LAW, n_min * 0.99, 2.3))


def test_size_penalty_and_compute_multiplier():
    C = 1e22
    n_opt = float(compute_optimal(LAW, C)[0])
    N = n_opt * np.array([0.1, 0.3, 1.0, 3.0, 10.0])
    pen = size_penalty(LAW, C, N)
    assert pen[2] == pytest.approx(0.0, abs=1e-12) and (pen[[0, 1, 3, 4]] > 0).all()
    assert pen[0] > pen[1] and pen[4] > pen[3]  # further from N_opt costs more
    mult = compute_multiplier(LAW, C, N)
    assert mult[2] == pytest.approx(1.0, rel=1e-9) and (mult[[0, 1, 3, 4]] > 1).all()
    # brute force: the compute multiplier is the compute at which size N first matches the optimal loss
    c_grid = np.geomspace(C, 100 * C, 200_001)
    target = float(optimal_loss(LAW, C))
    for n, m in zip(N[[1, 3]], mult[[1, 3]]):
        c_hit = c_grid[np.argmax(loss_at_compute(LAW, c_grid, n) <= target)]
        assert c_hit / C == pytest.approx(m, rel=1e-4)


def test_overtrain_without_inference_is_compute_optimal():
    target = float(optimal_loss(LAW, 1e23))
    p = overtrain(LAW, target, 0.0)
    n_opt, d_opt = compute_optimal(LAW, 1e23)
    assert p.N == pytest.approx(float(n_opt), rel=1e-9) and p.D == pytest.approx(float(d_opt), rel=1e-9)
    assert p.saving == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("law", [LAW, ODD])
@pytest.mark.parametrize("inference_mult", [0.5, 10.0, 1000.0])
def test_overtrain_matches_brute_force(law, inference_mult):
    target = float(optimal_loss(law, 1e22))
    d_chin = float(compute_optimal(law, 1e22)[1])
    d_inf = inference_mult * d_chin
    p = overtrain(law, target, d_inf)
    n_min = min_params_for_loss(law, target)
    n = np.geomspace(n_min * (1 + 1e-9), n_min * 1e4, 2_000_001)
    total = 6 * n * tokens_for_loss(law, n, target) + 2 * n * d_inf
    n_best = n[np.argmin(total)]
    assert p.N == pytest.approx(n_best, rel=1e-4)
    assert p.total_flops == pytest.approx(total.min(), rel=1e-9)
    assert float(law.loss(p.N, p.D)) == pytest.approx(target, rel=1e-10)
    assert p.N < p.chinchilla_N and p.tokens_per_param > p.chinchilla_D / p.chinchilla_N  # smaller, longer
    assert 0 < p.saving < 1


def test_more_inference_means_smaller_models():
    target = float(optimal_loss(LAW, 1e22))
    ns = [overtrain(LAW, target, t).N for t in (0, 1e11, 1e12, 1e13, 1e14)]
    assert all(a > b for a, b in zip(ns, ns[1:]))


def test_bad_targets_are_refused():
    with pytest.raises(FitError, match="irreducible"):
        overtrain(LAW, LAW.E, 1e12)
    with pytest.raises(FitError, match="alpha > 0"):
        compute_optimal(ChinchillaLaw(E=1.0, A=1.0, B=1.0, alpha=-0.1, beta=0.3), 1e20)
