"""Training monitors: exact values on models where the answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab import monitor
from transferlab.train.monitors import MonitorError


def mse(out, y):
    return F.mse_loss(out.squeeze(-1), y)


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def test_fisher_trace_linear_regression_by_hand_and_against_loop():
    torch.manual_seed(0)
    model = nn.Linear(5, 1, bias=False)
    x, y = torch.randn(37, 5), torch.randn(37)
    r = (x @ model.weight.detach().T).squeeze(-1) - y
    want = (4 * r ** 2 * (x ** 2).sum(1)).mean()  # per-sample grad of (w.x - y)^2 is 2 r x
    for chunk in (1, 8, 64):
        got = monitor.fisher_trace(model, mse, x, y, chunk_size=chunk)
        assert got == pytest.approx(float(want), rel=1e-5)
    mlp = small_mlp()
    xs, ys = torch.randn(20, 6), torch.randint(0, 3, (20,))
    a = monitor.per_sample_gradient_stats(mlp, F.cross_entropy, xs, ys, chunk_size=7)
    b = monitor.per_sample_gradient_stats(mlp, F.cross_entropy, xs, ys, method="loop")
    assert a.fisher_trace == pytest.approx(b.fisher_trace, rel=1e-5)
    assert a.coherence == pytest.approx(b.coherence, rel=1e-4)
    assert all(p.grad is None for p in mlp.parameters())  # monitors leave .grad alone


def test_fisher_trace_with_dict_inputs_and_frozen_params():
    class KW(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, features, scale):
            return self.b(torch.relu(self.a(features))) * scale[:, None]

    torch.manual_seed(1)
    m = KW()
    m.a.weight.requires_grad_(False)
    batch = {"features": torch.randn(9, 4), "scale": torch.rand(9) + 0.5}
    y = torch.randint(0, 2, (9,))
    a = monitor.fisher_trace(m, F.cross_entropy, batch, y, chunk_size=4)
    b = monitor.fisher_trace(m, F.cross_entropy, batch, y, method="loop")
    assert a == pytest.approx(b, rel=1e-5) and a > 0


def test_gradient_coherence_extremes():
    model = nn.Linear(8, 1, bias=False)
    nn.init.zeros_(model.weight)
    eye = torch.eye(8)
    ones = torch.ones(8)
    # Orthogonal equal-norm per-sample gradients (x_i = e_i, residual -1): alpha = 1/m, m-coherence 1.
    c = monitor.gradient_coherence(model, mse, eye, ones)
    assert c["coherence"] == pytest.approx(1 / 8) and c["m_coherence"] == pytest.approx(1.0)
    # Identical samples: every gradient is the same, alpha = 1, m-coherence = m.
    same = monitor.gradient_coherence(model, mse, eye[:1].repeat(8, 1), ones)
    assert same["coherence"] == pytest.approx(1.0) and same["m_coherence"] == pytest.approx(8.0)


def test_noise_scale_formula_and_exact_identity_at_small_batch_one():
    # Formula: E|g_B|^2 = |G|^2 + tr(S)/B; plug exact expectations in, get G and S back.
    g2, tr = 0.7, 12.0
    out = monitor.noise_scale_from_norms(g2 + tr / 4, g2 + tr / 64, 4, 64)
    assert out["grad_sq_true"] == pytest.approx(g2) and out["trace_sigma"] == pytest.approx(tr)
    assert out["noise_scale"] == pytest.approx(tr / g2)
    # With B_small = 1 tiling the batch, the estimator equals the per-sample unbiased estimates.
    mlp = small_mlp(2)
    x, y = torch.randn(24, 6), torch.randint(0, 3, (24,))
    grads = []
    for i in range(24):
        gs = torch.autograd.grad(F.cross_entropy(mlp(x[i:i + 1]), y[i:i + 1]), list(mlp.parameters()))
        grads.append(torch.cat([g.flatten() for g in gs]).double())
    g = torch.stack(grads)
    gbar = g.mean(0)
    tr_unbiased = float(((g - gbar) ** 2).sum() / 23)
    ns = monitor.gradient_noise_scale(mlp, F.cross_entropy, x, y, small_batch=1)
    assert ns["trace_sigma"] == pytest.approx(tr_unbiased, rel=1e-6)
    assert ns["grad_sq_true"] == pytest.approx(float(gbar @ gbar) - tr_unbiased / 24, rel=1e-5)
    with pytest.raises(MonitorError, match="B_small < B_big"):
        monitor.noise_scale_from_norms(1.0, 1.0, 8, 8)


def test_weight_norm_dormant_units_and_effective_rank():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    assert monitor.weight_norm(model) == pytest.approx(
        math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters())), rel=1e-12)
    with torch.no_grad():  # units 0..2 dead (never positive); unit 3 tiny
        model[0].weight[:3] = 0
        model[0].bias[:3] = -1
        model[0].weight[3] = 0
        model[0].bias[3] = 1e-4
        model[0].weight[4:] = torch.randn(6, 4)
        model[0].bias[4:] = 3.0
    x = torch.randn(64, 4)
    d0 = monitor.dormant_units(model, x, tau=0.0)
    assert d0["units"] == 10 and d0["dormant_units"] == 3 and d0["dormant_fraction"] == pytest.approx(0.3)
    d1 = monitor.dormant_units(model, x, tau=0.1)
    assert d1["dormant_units"] == 4 and d1["per_layer"] == {"1": 0.4}
    # the same units read as the input of the layer after them (a gated MLP's hidden units: no activation module)
    d2 = monitor.dormant_units(model, x, tau=0.1, modules={"2": model[2]}, inputs_of=True)
    assert d2["dormant_units"] == 4 and d2["units"] == 10 and d2["per_layer"] == {"2": 0.4}
    # Effective rank: k equal singular values -> k; rank one -> 1.
    q, _ = torch.linalg.qr(torch.randn(50, 50))
    feats = q[:, :5] * 3.0
    assert monitor.effective_rank(feats) == pytest.approx(5.0, rel=1e-9)
    rank_one = torch.outer(torch.randn(30), torch.randn(8))
    assert monitor.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)
    assert 1 < monitor.feature_effective_rank(model, x, "1") <= 7  # 3 dead units and a constant one


def test_power_law_fit_prediction_and_deviation_flags():
    rng = np.random.default_rng(0)
    t = np.arange(1, 201, dtype=float) * 10
    clean = 2.0 + 10.0 * t ** -0.5
    noisy = clean * np.exp(rng.normal(0, 0.01, size=len(t)))
    fit = monitor.fit_power_law(t[:100], noisy[:100])
    assert fit.alpha == pytest.approx(0.5, abs=0.12) and fit.E == pytest.approx(2.0, rel=0.1)
    pred, lo, hi = fit.interval(t[150:], z=3.0)
    assert np.all((noisy[150:] > lo) & (noisy[150:] < hi))  # extrapolation holds on the law
    mon = monitor.LossPowerLawMonitor(min_points=10, refit_every=5)
    flags = [mon.update(s, v).get("loss_deviation", 0.0) for s, v in zip(t[:120], noisy[:120])]
    assert sum(f != 0 for f in flags) <= 2  # few false alarms at 3 sigma
    spike = mon.update(t[120], noisy[120] * 1.5)
    assert spike["loss_deviation"] == 1.0
    assert spike["loss_pred_lo"] < spike["loss_pred"] < spike["loss_pred_hi"]
    assert mon.update(t[121], noisy[121] * 0.6)["loss_deviation"] == -1.0
    assert mon.update(0, 5.0) == {}  # step 0 has no t^-alpha
    with pytest.raises(MonitorError, match="at least 4 points"):
        monitor.fit_power_law([1, 2, 3], [3, 2, 1])


def _lev(a, b):
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_edit_distance_matches_reference_dp():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 4, size=rng.integers(0, 12)).tolist()
        b = rng.integers(0, 4, size=rng.integers(0, 12)).tolist()
        assert monitor.edit_distance(a, b) == _lev(a, b)


def test_moe_pathways_shared_vs_instance_specific():
    n, t, e, layers = 6, 5, 8, 4
    # Shared, smooth pathways: every sample and layer routes to expert 2.
    shared = [torch.full((n, t, e), -5.0).index_fill_(2, torch.tensor([2]), 5.0) for _ in range(layers)]
    m = monitor.moe_pathway_metrics(shared, top_k=1)
    assert m["pathway_distance"] == 0.0 and m["pathway_consistency"] == pytest.approx(1.0)
    # Instance-specific pathways that jump between experts every layer.
    torch.manual_seed(0)
    jumpy = []
    for l in range(layers):
        logits = torch.full((n, t, e), -5.0)
        for i in range(n):
            logits[i, :, (i + 3 * l) % e] = 5.0
        jumpy.append(logits)
    j = monitor.moe_pathway_metrics(jumpy, top_k=1)
    paths = [[(i + 3 * l) % e for l in range(layers)] for i in range(n)]
    want = np.mean([_lev(paths[a], paths[b]) / layers for a in range(n) for b in range(a + 1, n)])
    assert j["pathway_distance"] == pytest.approx(want) and want > 0.8
    assert j["pathway_consistency"] == pytest.approx(0.0, abs=1e-3)
    # HF layout (batch*seq, E) with batch_size, per-token paths, and a padding mask.
    flat = [x.reshape(n * t, e) for x in jumpy]
    mask = torch.ones(n, t)
    mask[0, 3:] = 0
    paths, w = monitor.routing_paths(flat, 2, batch_size=n, attention_mask=mask, per_token=True)
    assert len(paths[0]) == layers * 3 * 2 and len(paths[1]) == layers * t * 2
    assert w.shape == (n, layers, e) and torch.allclose(w.sum(-1), torch.ones(n, layers, dtype=w.dtype))
    # Expert embeddings: consecutive layers' experts that map to the same vector are consistent.
    emb = [torch.eye(e)[[(k - 3 * l) % e for k in range(e)]] for l in range(layers)]
    c = monitor.pathway_consistency(monitor.routing_paths(jumpy, 1)[1], emb)
    assert c["pathway_consistency"] == pytest.approx(1.0, abs=1e-6)
