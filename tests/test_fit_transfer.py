"""Effective data transferred (Hernandez et al. 2021): recovery on synthetic runs, flags, planner."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.core.errors import FitError
from transferlab.fit.chinchilla import ChinchillaLaw
from transferlab.fit.powerlaw import fit_power_law
from transferlab.fit.transfer import (
    BELOW_LIMIT,
    OSSIFIED,
    OSSIFIED_OBSERVED,
    effective_data,
    fit_transfer,
)

SCRATCH = ChinchillaLaw(E=1.5, A=60.0, B=300.0, alpha=0.32, beta=0.30)
K, ALPHA, BETA = 30.0, 0.18, 0.38  # Hernandez's names: alpha = D_F exponent, beta = N exponent
SIZES = np.array([1e6, 3e6, 1e7, 3e7, 1e8])


def synthetic(noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    sN, sD = (v.ravel() for v in np.meshgrid(SIZES, np.geomspace(1e4, 1e9, 8)))
    sL = SCRATCH.loss(sN, sD) * np.exp(rng.normal(0, noise, sN.size))
    fN, fD = (v.ravel() for v in np.meshgrid(SIZES, np.geomspace(1e4, 3e6, 6)))
    d_t = K * fD**ALPHA * fN**BETA
    fL = SCRATCH.loss(fN, fD + d_t) * np.exp(rng.normal(0, noise, fN.size))
    return (sN, sD, sL), (fN, fD, fL)


@pytest.fixture(scope="module")
def clean():
    s, f = synthetic(noise=0.0)
    return fit_transfer(*s, *f, n_boot=0), f


@pytest.fixture(scope="module")
def noisy():
    s, f = synthetic(noise=0.002, seed=1)
    return fit_transfer(*s, *f, n_boot=200, seed=0)


def test_recovers_k_alpha_beta_from_noisy_runs_with_intervals_covering_truth(noisy):
    for law in (noisy.ols, noisy.robust):
        assert law.alpha == pytest.approx(ALPHA, abs=0.02), law
        assert law.beta == pytest.approx(BETA, abs=0.02), law
        assert K / 1.3 < law.k < K * 1.3, law
        assert law.n_boot_ok == 200
        for name, truth in (("k", K), ("alpha", ALPHA), ("beta", BETA)):
            lo, hi = law.ci[name]
            assert lo < truth < hi, (law.method, name, lo, hi)
            assert lo < getattr(law, name) < hi
    assert noisy.scratch.law.beta == pytest.approx(SCRATCH.beta, abs=0.02)
    assert not any(OSSIFIED in r.flags for r in noisy.rows)


def test_exact_recovery_and_row_quantities_on_clean_runs(clean):
    a, f = clean
    assert a.ols.alpha == pytest.approx(ALPHA, abs=2e-3) and a.ols.beta == pytest.approx(BETA, abs=2e-3)
    assert a.ols.k == pytest.approx(K, rel=0.03)
    fN, fD, fL = f
    d_t_true = K * fD**ALPHA * fN**BETA
    got = np.array([r.D_T for r in a.rows])
    np.testing.assert_allclose(got, d_t_true, rtol=0.01)
    for r in a.rows:
        assert (
            r.used
            and r.multiplier == pytest.approx(r.D_E / r.D_F)
            and r.fraction_finetune == pytest.approx(1 / r.multiplier)
        )
        assert r.loss < r.scratch_loss  # fine-tuning beats scratch at the same data
    # D_T grows with N at fixed D_F, as beta > 0 says
    rows = [r for r in a.rows if r.D_F == fD[0]]
    assert all(x.D_T < y.D_T for x, y in zip(rows, rows[1:]))


def test_planner_inverts_the_fitted_laws(clean):
    a, _ = clean
    row = a.rows[7]
    plan = a.plan(row.loss, row.N)
    assert plan.D_scratch == pytest.approx(row.D_E, rel=1e-9)
    assert plan.D_finetune == pytest.approx(row.D_F, rel=0.03)
    assert plan.D_finetune + K * plan.D_finetune**ALPHA * row.N**BETA == pytest.approx(
        plan.D_scratch, rel=0.03
    )
    assert plan.data_saving > 1 and plan.flags == ()
    unreachable = a.plan(SCRATCH.E * 0.99, 1e7)
    assert "unreachable" in unreachable.flags and np.isinf(unreachable.D_scratch)


def test_ossification_and_below_limit_rows_are_flagged_and_left_out():
    (sN, sD, sL), (fN, fD, fL) = synthetic(noise=0.0)
    n, d = sN[3], sD[3]
    oss_loss = float(SCRATCH.loss(n, d)) * 1.02  # worse than from scratch with the same N and D
    limit = float(SCRATCH.loss_infinite_data(1e6))
    fN2 = np.r_[fN, n, 1e6]
    fD2 = np.r_[fD, d, 1e5]
    fL2 = np.r_[fL, oss_loss, limit - 0.05]
    a = fit_transfer(sN, sD, sL, fN2, fD2, fL2, n_boot=0)
    oss, below = a.rows[-2], a.rows[-1]
    assert OSSIFIED in oss.flags and OSSIFIED_OBSERVED in oss.flags and not oss.used and oss.D_T < 0
    assert BELOW_LIMIT in below.flags and np.isinf(below.D_E) and not below.used
    assert any("ossification" in w for w in a.warnings)
    assert a.ols.n == len(fN)  # the two flagged rows are not in the fit
    assert a.ols.alpha == pytest.approx(ALPHA, abs=5e-3)


def test_effective_data_inverts_the_scratch_law():
    N = np.array([1e6, 1e7])
    D = np.array([3e5, 2e8])
    np.testing.assert_allclose(effective_data(SCRATCH, N, SCRATCH.loss(N, D)), D, rtol=1e-9)


def test_robust_fit_resists_an_outlier_row():
    rng = np.random.default_rng(3)
    dF = np.tile(np.geomspace(1e3, 1e6, 8), 3)
    n = np.repeat([1e6, 1e7, 1e8], 8)
    d_t = K * dF**ALPHA * n**BETA * np.exp(rng.normal(0, 0.02, dF.size))
    d_t[5] *= 30  # one corrupted run
    ols = fit_power_law(d_t, {"D_F": dF, "N": n})
    hub = fit_power_law(d_t, {"D_F": dF, "N": n}, method="huber")
    assert abs(hub.exponents["D_F"] - ALPHA) < 0.02
    assert abs(hub.exponents["D_F"] - ALPHA) < abs(ols.exponents["D_F"] - ALPHA)
    assert abs(hub.exponents["N"] - BETA) < abs(ols.exponents["N"] - BETA)


def test_few_scratch_runs_need_fixed_parameters_and_one_size_needs_fixed_beta():
    (sN, sD, sL), (fN, fD, fL) = synthetic(noise=0.0)
    pick = np.flatnonzero(np.isin(sN, [1e6, 1e8]))[:5]
    with pytest.raises(FitError, match="too few"):
        fit_transfer(sN[pick], sD[pick], sL[pick], fN, fD, fL, n_boot=0)
    # with E, A and alpha held at their values, B and beta are fitted from 5 runs
    fixed = {"E": SCRATCH.E, "A": SCRATCH.A, "alpha": SCRATCH.alpha}
    a = fit_transfer(sN[pick], sD[pick], sL[pick], fN, fD, fL, fixed=fixed, n_boot=0)
    assert a.law.B == pytest.approx(SCRATCH.B, rel=1e-3) and a.law.E == SCRATCH.E
    one = fN == 1e7
    with pytest.raises(FitError, match="not identifiable"):
        fit_transfer(sN, sD, sL, fN[one], fD[one], fL[one], n_boot=0)
    b = fit_transfer(sN, sD, sL, fN[one], fD[one], fL[one], n_boot=0, fix_beta=BETA)
    assert b.ols.beta == BETA and b.ols.alpha == pytest.approx(ALPHA, abs=5e-3)
    assert b.ols.fixed == {"beta": BETA}
