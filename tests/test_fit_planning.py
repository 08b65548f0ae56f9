"""Planning compute with a Chinchilla fit: answers beyond the data, sensitivity to influential points,
intervals on the over-training plans."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from transferlab.data.reference import CHINCHILLA_CSV
from transferlab.fit.bootstrap import bootstrap_chinchilla, percentile_interval
from transferlab.fit.chinchilla import ChinchillaLaw, fit_chinchilla
from transferlab.fit.extrapolation import beyond, fmt
from transferlab.fit.sensitivity import cooks_distance, default_k, sensitivity
from transferlab.fit.sizing import compute_optimal, overtrain, overtrain_samples

LAW = ChinchillaLaw(E=1.9, A=300.0, B=900.0, alpha=0.33, beta=0.31)


def _grid(noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    N, D = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 3e9, 5), np.geomspace(3e8, 3e11, 5)))
    L = LAW.loss(N, D) * np.exp(rng.normal(0, noise, N.size))
    return N, D, L


def _tpp(law, C):
    n, d = compute_optimal(law, C)
    return float(d / n)


# ------------------------------------------------------------------ extrapolation
def test_beyond_gives_the_exact_factor_and_one_sentence():
    C_data = np.array([1.4e18, 3e20, 1.3e22])
    b = beyond("C", 1e25, C_data)
    assert b.side == "above" and b.factor == 1e25 / 1.3e22
    assert b.note() == "1e25 FLOPs is 769x past the largest budget in the data (1.3e22)"
    below = beyond("N", 1e6, np.array([5e7, 1e9]), "N")
    assert below.side == "below" and below.factor == pytest.approx(50.0)
    assert below.note() == "N 1e6 parameters is 50x below the smallest model in the data (5e7)"
    inside = beyond("C", 1.3e22, C_data)  # the data's own largest budget is inside
    assert not inside.outside and inside.factor == 1.0 and inside.note() == ""
    low = beyond("loss", 1.9, np.array([2.08, 5.0]), "target loss")
    assert low.note() == "target loss 1.9 is 0.18 below the lowest loss in the data (2.08)"
    assert fmt(4.4e-05) == "4.4e-5" and fmt(123.0) == "123"


# ------------------------------------------------------------------ sensitivity
def test_influence_and_residual_pick_a_planted_outlier_that_rank_of_loss_misses():
    N, D, L = _grid()
    i_out = int(np.flatnonzero((N == N.max()) & (D == np.median(D)))[0])  # a big model: low loss
    L[i_out] *= 1.06
    assert i_out not in np.argsort(-L)[:5]  # "drop the highest losses" would never leave it out
    fit = fit_chinchilla(N, D, L)
    for by in ("influence", "residual"):
        s = sensitivity(fit, N, D, L, 3, by=by)
        assert s.order[0] == i_out, (by, s.order, s.score[s.order])
        assert s.k == 3 and np.isfinite(s.thetas).all()
    s = sensitivity(fit, N, D, L, 2, by="influence")
    # the k = 1 refit is the fit without the outlier (same objective as a full 4,500-start refit)
    keep = np.arange(len(N)) != i_out
    clean = fit_chinchilla(N[keep], D[keep], L[keep])
    assert s.objective[0] == pytest.approx(clean.objective, rel=1e-8)
    np.testing.assert_allclose(s.thetas[0][3:], clean.law.theta[3:], atol=1e-5)
    # and is closer to the true law than the fit with it
    assert abs(s.law(1).alpha - LAW.alpha) < abs(fit.law.alpha - LAW.alpha)
    # leave-one-out refits give Cook's distance: recomputed by hand for one point
    j = 7
    loo = fit_chinchilla(np.delete(N, j), np.delete(D, j), np.delete(L, j))
    p, r = 5, fit.residuals
    want = ((np.log(fit.law.loss(N, D)) - np.log(loo.law.loss(N, D))) ** 2).sum() / (
        p * (r**2).sum() / (len(N) - p)
    )
    assert s.score[j] == pytest.approx(want, rel=1e-4)
    assert cooks_distance(fit, N, D, s.loo_thetas)[j] == s.score[j]


def test_default_k_is_two_percent_between_1_and_5():
    assert [default_k(n) for n in (10, 25, 100, 150, 245, 10_000)] == [1, 1, 2, 3, 5, 5]


def _epoch_all():
    df = pd.read_csv(CHINCHILLA_CSV)
    N = df["Model Size"].to_numpy()
    return N, df["Training FLOP"].to_numpy() / (6 * N), df["loss"].to_numpy()


def test_warm_started_refits_reach_the_full_grid_optimum_on_epochs_data():
    """The documented shortcut: refits start from the all-points optimum, its basins and 4 grid starts.
    On Epoch's 245 points, leaving out the 5 most influential (and the 5 highest-loss, which moves the
    optimum to another basin: E 1.89 -> 1.82, beta 0.45 -> 0.37) gives the full grid's optimum."""
    N, D, L = _epoch_all()
    fit = fit_chinchilla(N, D, L)
    s = sensitivity(fit, N, D, L, 5)
    assert [int(i) + 1 for i in s.order] == [1, 13, 2, 3, 14]  # data rows; rank of loss would be 1,2,4,3,5
    w = np.ones(len(N))
    w[s.order] = 0
    full = fit_chinchilla(N, D, L, weights=w)
    assert s.objective[-1] == pytest.approx(full.objective, rel=1e-8)
    np.testing.assert_allclose(s.thetas[-1], full.law.theta, atol=1e-4)
    # tokens per parameter at 1e23 FLOPs: 8.5 on all points; 16.5 without those 5
    assert _tpp(fit.law, 1e23) == pytest.approx(8.55, abs=0.01)
    assert _tpp(s.law(5), 1e23) == pytest.approx(16.5, abs=0.05)
    # the highest-loss five through the same warm starts (the 8.5 -> 18.8)
    counts = np.ones((1, len(N)))
    counts[0, np.argsort(-L)[:5]] = 0
    warm = bootstrap_chinchilla(fit, N, D, L, counts=counts)
    full5 = fit_chinchilla(N, D, L, weights=counts[0])
    assert warm.objective[0] == pytest.approx(full5.objective, rel=1e-8)
    assert _tpp(ChinchillaLaw.from_theta(warm.thetas[0]), 1e23) == pytest.approx(18.8, abs=0.05)


def test_sensitivity_refuses_bad_k_and_method():
    N, D, L = _grid()
    fit = fit_chinchilla(N, D, L)
    from transferlab.core.errors import FitError

    with pytest.raises(FitError, match="unknown sensitivity method"):
        sensitivity(fit, N, D, L, 1, by="rank")
    with pytest.raises(FitError, match="cannot leave out 25 of 25"):
        sensitivity(fit, N, D, L, 25)


# ------------------------------------------------------------------ intervals on plans
def test_percentile_interval_counts_unreachable_as_infinite():
    v = np.r_[np.arange(1.0, 98.0), [np.inf] * 3]  # 3% infinite: the 97.5th percentile is among them
    lo, hi = percentile_interval(v, keep_inf=True)
    assert hi == math.inf and lo == pytest.approx(np.percentile(np.arange(1.0, 101.0), 2.5))
    v2 = np.r_[np.arange(1.0, 100.0), [np.inf]]  # 1%: a finite upper bound
    assert math.isfinite(percentile_interval(v2, keep_inf=True)[1])
    assert percentile_interval(v2) == percentile_interval(np.arange(1.0, 100.0))  # default drops inf


def test_overtrain_samples_match_overtrain_and_mark_out_of_reach_laws():
    laws = [LAW, ChinchillaLaw(E=1.95, A=300.0, B=900.0, alpha=0.33, beta=0.31)]
    target = 1.93  # reachable under LAW, below the second law's E
    smp = overtrain_samples(laws, target, 1e12)
    p = overtrain(LAW, target, 1e12)
    assert smp["N"][0] == p.N and smp["D"][0] == p.D and smp["saving"][0] == p.saving
    assert list(smp["reachable"]) == [True, False]
    assert smp["N"][1] == math.inf and math.isnan(smp["saving"][1])


# ------------------------------------------------------------------ the CLI
def test_cli_flags_extrapolation_sensitivity_and_plan_intervals(cli, tmp_path):
    import json

    N, D, L = _grid(noise=0.003)
    f = tmp_path / "runs.csv"
    pd.DataFrame({"N": N, "D": D, "loss": L}).to_csv(f, index=False)
    args = ["fit", "chinchilla", str(f), "--bootstrap", "40", "--budget", "1e25", "--store", str(tmp_path / "s")]
    code, out, err = cli([*args, "--json", "--sensitivity", "2"])
    assert code == 0, err
    d = json.loads(out)
    C_max = float((6 * N * D).max())
    b = d["compute_optimal"]["budgets"][0]
    assert b["extrapolation"]["C"] == {"side": "above", "factor": pytest.approx(1e25 / C_max, rel=1e-12)}
    assert f"{1e25 / C_max:,.0f}x past the largest budget in the data ({fmt(C_max)})" in b["extrapolation"]["note"]
    assert b["tokens_per_param_ci"][0] < b["tokens_per_param"] < b["tokens_per_param_ci"][1]
    assert d["extrapolation"]["data_range"]["C"][1] == pytest.approx(C_max)
    assert any("sizing answers lie beyond the data" in w for w in d["warnings"])
    plans = d["overtrain"]["plans"]
    assert len(plans) == 4
    for p in plans:
        assert p["N_ci"][0] <= p["N"] and (p["N_ci"][1] is None or p["N"] <= p["N_ci"][1])
        assert p["D_ci"][0] <= p["D"] and "unreachable_resamples" in p
    sens = d["sensitivity"]
    assert sens["by"] == "influence" and sens["k"] == 2 and len(sens["refits"]) == 2
    assert sens["refits"][1]["dropped_rows"][0] == sens["points"][0]["row"]
    assert len(sens["refits"][0]["budgets"]) == 1
    m = sens["tokens_per_param"][0]
    tpps = [e["budgets"][0]["tokens_per_param"] for e in sens["refits"]]
    assert (m["min"], m["max"]) == (min(tpps), max(tpps))
    lo, hi = b["tokens_per_param_ci"]
    assert m["outside_ci"] == (m["min"] < lo or m["max"] > hi)
    assert any(w.startswith("sensitivity:") for w in d["warnings"]) == m["outside_ci"]
    # the terminal says it too
    code, out, err = cli([*args, "--sensitivity-by", "residual", "--sensitivity", "2"])
    assert code == 0, err
    results, notes = " ".join(out.split()), " ".join(err.split())  # results on stdout, warnings on stderr
    assert "beyond the data: C" in results and "most influential points by residual" in results
    assert "past the data's largest budget" in results + notes
