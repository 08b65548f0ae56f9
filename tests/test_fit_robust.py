"""Fits never crash on data that is merely unlucky: an overflow, a non-finite value or a degenerate law
gives the project's own error (or a law with a warning), never a Python exception or a numpy warning on
the user's terminal."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transferlab.core.errors import FitError, TransferlabError
from transferlab.fit.bootstrap import bootstrap_chinchilla
from transferlab.fit.chinchilla import ChinchillaLaw, fit_chinchilla, representable
from transferlab.fit.powerlaw import fit_power_law
from transferlab.fit.sizing import compute_optimal, overtrain
from transferlab.fit.transfer import fit_transfer

# A scratch grid like the transfer presets' (3 sizes x 4 budgets) whose loss barely falls with N: before
# the fix, the best of Epoch's 4,500 starts wandered to log B ~ 800 and ChinchillaLaw.from_theta died in
# math.exp with OverflowError (the crash of `transfer --preset quick` on a fresh clone).
WANDER_N = [13000.0, 50000.0, 200000.0] * 4
WANDER_D = [16000.0] * 3 + [32000.0] * 3 + [64000.0] * 3 + [128000.0] * 3
WANDER_L = [2.1462097162558305, 1.8205954943791929, 1.6377012170757463, 2.0875038351584223,
            1.680276012124079, 1.6248566416741603, 2.032434906415263, 1.5756872607358285,
            1.688087303385449, 1.8965555862722712, 1.7551095133571437, 1.6318261412794899]


def test_a_fit_whose_best_start_wanders_past_float_range_keeps_the_best_finite_law():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_chinchilla(np.array(WANDER_N), np.array(WANDER_D), np.array(WANDER_L), threads=1)
    assert representable(fit.law.theta)
    assert all(np.isfinite(v) for v in fit.law.as_dict().values())
    assert any("wandered to a degenerate law" in w for w in fit.warnings), fit.warnings
    # the kept law is an optimum of the objective among finite laws: its objective is the smallest finite one
    finite = np.isfinite(fit.endpoint_f) & representable(fit.endpoints)
    assert fit.objective == pytest.approx(fit.endpoint_f[finite].min())
    assert np.abs(fit.residuals).max() < 0.1


def test_from_theta_refuses_a_degenerate_law_with_the_projects_error():
    with pytest.raises(FitError, match="degenerate law"):
        ChinchillaLaw.from_theta([800.0, 1.0, 0.5, 0.3, 0.3])
    with pytest.raises(FitError, match="degenerate law"):
        ChinchillaLaw.from_theta([1.0, 1.0, 0.5, np.nan, 0.3])
    law = ChinchillaLaw.from_theta([5.0, 6.0, 0.5, 0.3, 0.3])
    assert law.A == pytest.approx(np.exp(5.0))


def _inputs(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = {"tiny": 3}.get(kind, int(rng.integers(5, 13)))
    N = np.exp(rng.uniform(np.log(1e4), np.log(2e6), n)).round()
    D = np.exp(rng.uniform(np.log(1e4), np.log(1e6), n)).round()
    if kind == "random":
        L = rng.uniform(1.5, 6.0, n)
    elif kind == "flat":
        L = np.full(n, 3.0) + rng.normal(0, 1e-6, n)
    elif kind == "noisy":
        L = (1.8 + 60 / N**0.3 + 300 / D**0.3) * np.exp(rng.normal(0, 0.1, n))
    elif kind == "rising":  # bigger models worse (undertrained): alpha wants to be negative
        L = 1.5 + 1e-3 * N**0.4 + 200 / D**0.3
    else:  # tiny
        L = rng.uniform(2.0, 4.0, n)
    return N, D, L


@pytest.mark.parametrize("kind", ["random", "flat", "noisy", "rising", "tiny"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fits_on_unlucky_data_raise_only_the_projects_errors(kind, seed):
    rng = np.random.default_rng(100 * seed + len(kind))
    N, D, L = _inputs(rng, kind)
    starts = None if seed == 0 else rng.uniform([0, 0, -1, 0, 0], [25, 25, 1, 2, 2], size=(300, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning reaches the user either
        try:
            fit = fit_chinchilla(N, D, L, starts=starts, threads=1)
        except TransferlabError:
            return
        assert representable(fit.law.theta)
        boot = bootstrap_chinchilla(fit, N, D, L, n_boot=8, seed=seed, threads=1)
        assert boot.thetas.shape == (8, 5)
        assert representable(boot.thetas[boot.ok]).all()
        for call in (lambda: compute_optimal(fit.law, 1e18),
                     lambda: overtrain(fit.law, float(np.median(L)), 1e9)):
            try:
                call()
            except TransferlabError:
                pass
        fN = np.repeat(np.unique(N)[:3], 2)
        fD = np.tile([2e3, 8e3], len(fN) // 2)
        fL = np.interp(fN, np.sort(N), np.sort(L)[::-1]) * rng.uniform(0.95, 1.05, len(fN))
        try:
            fit_transfer(N, D, L, fN, fD, fL, n_boot=4, seed=seed, threads=1)
        except TransferlabError:
            pass


@pytest.mark.parametrize("y", [[1.0, 1.0, 1.0, 1.0, 1.0], [1e-300, 1e300, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0],
                               [np.nan, 1.0, 2.0, 3.0, 4.0], [1.0, 2.0]])
def test_power_law_fits_on_degenerate_data_raise_only_the_projects_errors(y):
    x = {"D_F": np.array([1e3, 2e3, 4e3, 8e3, 1.6e4])[: len(y)], "N": np.full(len(y), 5e4)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("ols", "huber"):
            try:
                fit = fit_power_law(np.array(y), x, method=method, fixed={"N": 0.3})
            except TransferlabError:
                continue
            assert np.isfinite(fit.k) and all(np.isfinite(v) for v in fit.exponents.values())
