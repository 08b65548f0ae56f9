"""Chinchilla Approach 3 the Epoch way: objective, batched L-BFGS, the fit on Epoch's data, bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from transferlab.core.errors import FitError
from transferlab.data.reference import CHINCHILLA_CSV, EPOCH_CI95, EPOCH_DROPPED, EPOCH_HUBER_FIT
from transferlab.fit.bootstrap import bootstrap_chinchilla, resample_counts
from transferlab.fit.chinchilla import (
    ChinchillaLaw,
    epoch_grid,
    fit_chinchilla,
    make_objective,
    objective_numpy,
)
from transferlab.fit.lbfgs import minimize_batched


def _epoch_points(drop: int = EPOCH_DROPPED):
    df = pd.read_csv(CHINCHILLA_CSV)
    N = df["Model Size"].to_numpy()
    D = df["Training FLOP"].to_numpy() / (6 * N)
    L = df["loss"].to_numpy()
    keep = np.ones(len(L), bool)
    keep[np.argsort(-L)[:drop]] = False
    return N[keep], D[keep], L[keep]


@pytest.fixture(scope="module")
def epoch_fit():
    N, D, L = _epoch_points()
    return fit_chinchilla(N, D, L), (N, D, L)


def test_grid_is_epochs_4500_starts():
    g = epoch_grid()
    assert g.shape == (4500, 5)
    assert sorted(set(g[:, 0])) == [0, 5, 10, 15, 20, 25]  # a
    assert sorted(set(g[:, 2])) == [-1, -0.5, 0, 0.5, 1]  # e
    assert sorted(set(g[:, 3])) == [0, 0.5, 1, 1.5, 2]  # alpha
    assert len({tuple(r) for r in g}) == 4500


def test_batched_objective_matches_numpy_and_finite_differences():
    N, D, L = _epoch_points()
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    rng = np.random.default_rng(0)
    thetas = np.array([[6.0, 7.5, 0.6, 0.35, 0.37], [3.0, 9.0, -0.5, 0.2, 0.5], [20.0, 1.0, 1.0, 1.5, 0.1]])
    W = rng.integers(0, 3, size=(3, len(N))).astype(float)
    fun = make_objective(lN, lD, lL, 1e-3, W, np.arange(3), block=2)  # block < rows: exercises blocking
    f, g = fun(thetas, np.arange(3))
    for i in range(3):
        f1, g1 = objective_numpy(thetas[i], lN, lD, lL, 1e-3, W[i])
        assert f[i] == pytest.approx(f1, rel=1e-12)
        np.testing.assert_allclose(g[i], g1, rtol=1e-10, atol=1e-14)
        eps = 1e-6
        num = [
            (
                objective_numpy(thetas[i] + eps * e, lN, lD, lL, 1e-3, W[i])[0]
                - objective_numpy(thetas[i] - eps * e, lN, lD, lL, 1e-3, W[i])[0]
            )
            / (2 * eps)
            for e in np.eye(5)
        ]
        np.testing.assert_allclose(g1, num, rtol=1e-5, atol=1e-9)
    # the objective is the SUM over points (Epoch), not the mean: doubling the data doubles it
    fun2 = make_objective(np.tile(lN, 2), np.tile(lD, 2), np.tile(lL, 2))
    f_ones = make_objective(lN, lD, lL)(thetas[:1], np.arange(1))[0][0]
    assert fun2(thetas[:1], np.arange(1))[0][0] == pytest.approx(2 * f_ones, rel=1e-12)


def test_batched_lbfgs_matches_scipy_on_rosenbrock_batch():
    def rosen(x, idx):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
        return f, g

    starts = np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0], [-3.0, 5.0], [1.5, 2.25]])
    res = minimize_batched(rosen, starts, ftol=1e-15, max_iter=2000)
    assert res.converged.all()
    np.testing.assert_allclose(res.x, np.ones_like(starts), atol=1e-5)
    for s, x in zip(starts, res.x):
        ref = minimize(
            lambda v: rosen(v[None], None)[0][0],
            s,
            jac=lambda v: rosen(v[None], None)[1][0],
            method="L-BFGS-B",
        )
        np.testing.assert_allclose(x, ref.x, atol=1e-4)


def test_recovers_a_known_law_exactly_from_clean_data():
    law = ChinchillaLaw(E=1.7, A=400.0, B=1200.0, alpha=0.34, beta=0.30)
    N, D = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6)))
    fit = fit_chinchilla(N, D, law.loss(N, D))
    assert fit.objective < 1e-12
    for k in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit.law, k) == pytest.approx(getattr(law, k), rel=1e-4), k


def test_epoch_data_fit_lands_in_epochs_published_intervals(epoch_fit):
    fit, _ = epoch_fit
    law = fit.law
    for k, (lo, hi) in EPOCH_CI95.items():
        assert lo <= getattr(law, k) <= hi, (k, getattr(law, k))
    # and reproduces Epoch's point estimate of this very procedure
    for k, ref in EPOCH_HUBER_FIT.items():
        assert getattr(law, k) == pytest.approx(ref, rel=0.005), (k, getattr(law, k), ref)
    assert fit.n_starts == 4500
    assert fit.n_at_best > 500  # the optimum is found from many starts, not by luck
    assert fit.status.startswith("converged")
    # a near-zero E second basin exists and is worse
    basins = fit.basins(3)
    assert len(basins) >= 2 and np.exp(basins[1][2]) < 0.5


def test_all_245_points_give_a_different_optimum():
    """Epoch leave out the 5 highest-loss points; with them the same procedure lands elsewhere."""
    N, D, L = _epoch_points(drop=0)
    law = fit_chinchilla(N, D, L).law
    assert law.beta > EPOCH_CI95["beta"][1] and law.E > EPOCH_CI95["E"][1]


def test_bootstrap_intervals_match_epochs_and_warm_starts_match_the_full_grid(epoch_fit):
    fit, (N, D, L) = epoch_fit
    boot = bootstrap_chinchilla(fit, N, D, L, n_boot=300, seed=1)
    assert boot.n_failed == 0 and boot.n_starts == 8
    ci = boot.intervals()
    for k, (lo, hi) in EPOCH_CI95.items():  # our 95% intervals agree with Epoch's to within a few 0.01
        assert abs(ci[k][0] - lo) < 0.03 and abs(ci[k][1] - hi) < 0.03, (k, ci[k], (lo, hi))
        assert ci[k][0] < getattr(fit.law, k) < ci[k][1]
    # the shortcut (8 warm/grid starts per resample) reaches the full 4,500-start optimum
    counts = resample_counts(len(N), 1, np.random.default_rng(7))
    short = bootstrap_chinchilla(fit, N, D, L, counts=counts)
    full = fit_chinchilla(N, D, L, weights=counts[0])
    assert short.objective[0] == pytest.approx(full.objective, rel=1e-8)
    np.testing.assert_allclose(short.thetas[0][3:], full.law.theta[3:], atol=1e-4)


def test_fixed_parameters_stay_fixed_and_the_rest_fit():
    law = ChinchillaLaw(E=2.0, A=50.0, B=300.0, alpha=0.3, beta=0.35)
    N, D = (v.ravel() for v in np.meshgrid(np.geomspace(1e5, 1e8, 4), np.geomspace(1e6, 1e9, 4)))
    fit = fit_chinchilla(N, D, law.loss(N, D), fixed={"E": 2.0})
    assert fit.law.E == 2.0 and fit.free == (True, True, False, True, True)
    assert fit.n_starts == 900  # the e axis of the grid collapses
    assert fit.law.alpha == pytest.approx(0.3, rel=1e-4) and fit.law.B == pytest.approx(300.0, rel=1e-3)


def test_too_few_points_and_non_convergence_are_refused():
    law = ChinchillaLaw(E=2.0, A=50.0, B=300.0, alpha=0.3, beta=0.35)
    N = np.array([1e6, 2e6, 4e6, 8e6, 1.6e7])
    D = np.array([1e7, 3e7, 1e8, 3e8, 1e9])
    with pytest.raises(FitError, match="too few points"):
        fit_chinchilla(N, D, law.loss(N, D))
    N2, D2 = np.repeat(1e7, 8), np.geomspace(1e6, 1e9, 8)
    with pytest.raises(FitError, match="distinct model sizes"):
        fit_chinchilla(N2, D2, law.loss(N2, D2))
    Ng, Dg = (v.ravel() for v in np.meshgrid(np.geomspace(1e5, 1e8, 4), np.geomspace(1e6, 1e9, 4)))
    with pytest.raises(FitError, match="did not converge"):
        fit_chinchilla(Ng, Dg, law.loss(Ng, Dg) * 1.01, max_iter=2)


def test_a_law_whose_E_underflowed_to_zero_still_has_a_theta():
    import math

    from transferlab.fit.chinchilla import ChinchillaLaw

    law = ChinchillaLaw(A=400.0, B=410.0, E=0.0, alpha=0.34, beta=0.28)
    th = law.theta
    assert all(math.isfinite(v) for v in th) and th[2] < -700
    back = ChinchillaLaw.from_theta(th)
    assert back.E == 0.0 or back.E < 1e-300
