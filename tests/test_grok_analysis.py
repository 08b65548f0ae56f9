"""Phase detection, seed statistics, the delay law and the Fourier progress measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.studies.grokking import analysis as A


def _records(val, train, step=10):
    return [{"step": i * step, "val_acc": v, "train_acc": t, "val_loss": 1 - v + 1e-3,
             "weight_norm_sq": 100.0 / (1 + i)} for i, (v, t) in enumerate(zip(val, train))]


def test_phases_on_a_grokking_curve_with_a_slingshot_spike():
    train = [0.1, 0.5] + [1.0] * 21
    val = [0.0, 0.0, 0.01, 0.01, 0.02, 0.99, 0.02, 0.02, 0.01, 0.02, 0.02, 0.05, 0.3, 0.6, 0.9, 0.96, 0.995,
           0.3, 0.999, 1, 1, 1, 1]
    ph = A.detect_phases(_records(val, train))
    assert ph.steps_to_memorize == 20
    assert ph.steps_to_95 == 150  # the single spike at step 50 does not count
    assert ph.steps_to_generalize == 160  # and the later dip at 170 does not block it
    assert ph.grok_onset == 120
    assert [s[0] for s in A.phase_spans(ph, 220)] == ["memorizing", "circuit formation", "generalized"]


def test_phases_when_it_never_generalizes():
    ph = A.detect_phases(_records([0.0] * 10, [1.0] * 10))
    assert ph.steps_to_memorize == 0 and ph.steps_to_generalize is None


def test_mean_ci_matches_scipy_t_interval_and_counts_missing():
    from scipy import stats

    xs = [100.0, 120.0, 90.0, 110.0]
    out = A.mean_ci(xs + [None])
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(xs), scale=stats.sem(xs))
    assert out["missing"] == 1 and out["n"] == 4
    assert out["ci"] == pytest.approx([lo, hi])


def test_delay_law_fit_recovers_the_constant_and_predicts_held_out_runs():
    rng = np.random.default_rng(0)
    lr, wd = rng.uniform(1e-3, 1e-2, 20), rng.uniform(0.1, 3, 20)
    ratio = rng.uniform(1.5, 4, 20)
    x = np.log(ratio) / (lr * wd)
    delay = 0.5 * x * rng.normal(1, 0.03, 20)  # c = 0.5 -> kappa = 1
    fit = A.fit_delay_law(x, delay)
    assert fit.c == pytest.approx(0.5, rel=0.03) and fit.kappa == pytest.approx(1.0, rel=0.03)
    assert fit.r2 > 0.97 and fit.heldout_mape < 0.06


def test_predict_grok_step_from_norm_decay():
    t_mem, rate, log_ratio = 200, 1e-3, math.log(3.0)
    steps = list(range(t_mem, 600, 20))
    norms = [500 * math.exp(-rate * (s - t_mem)) for s in steps]
    assert A.predict_grok_step(steps, norms, t_mem, log_ratio) == pytest.approx(t_mem + log_ratio / rate, rel=1e-6)


def test_fourier_measures_on_a_pure_key_frequency_solution():
    p, w = 13, 3
    a = torch.arange(p, dtype=torch.float64).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64).repeat(p)
    c = torch.arange(p, dtype=torch.float64)
    logits = 8 * torch.cos(2 * math.pi * w * ((a + b)[:, None] - c[None, :]) / p)
    restricted, excluded = A.restricted_and_excluded_logits(logits, p, [w])
    assert torch.allclose(restricted, logits, atol=1e-9)  # everything lives on frequency w
    assert excluded.abs().max() < 1e-9
    emb = torch.stack([torch.cos(2 * math.pi * w * torch.arange(p) / p),
                       torch.sin(2 * math.pi * w * torch.arange(p) / p)], 1)
    assert A.key_frequencies(emb, 1) == [w]


def test_early_predictions_leave_one_out():
    runs = []
    for i, rate in enumerate((1e-3, 2e-3, 4e-3)):
        t_mem, drop = 100, math.log(2.0)
        t_grok = int(t_mem + drop / rate)
        recs = [{"step": s, "weight_norm_sq": 400 * math.exp(-rate * max(0, s - t_mem))}
                for s in range(0, t_grok + 1, 10)]
        runs.append({"run_id": str(i), "steps_to_memorize": t_mem, "steps_to_generalize": t_grok,
                     "norm_at_memorize": 400.0, "norm_at_generalize": 400 * math.exp(-drop), "records": recs})
    preds = A.early_predictions(runs)
    assert len(preds) == 3
    for p in preds:
        assert p["seen_until"] < p["actual"] and p["abs_pct_error"] < 0.02
