"""Losses and gradient transforms, checked against PyTorch and the papers' formulas."""

from __future__ import annotations

import torch

from transferlab.train import transforms as T
from transferlab.train.losses import CrossEntropy, MSEOneHot, StableMaxCrossEntropy, softmax_collapse_fraction


def test_float64_cross_entropy_is_really_float64():
    logits = torch.tensor([[[30.0, 0.0, 0.0]]])  # true-class probability 1 - 2e-13
    y = torch.tensor([0])
    l64 = CrossEntropy("float64")(logits, y)
    l32 = CrossEntropy("float32")(logits, y)
    assert l64.dtype == torch.float64
    assert l32.item() == 0.0  # float32 rounds the loss to exactly 0
    expected = 2 * torch.exp(torch.tensor(-30.0, dtype=torch.float64)).item()  # log(1 + 2e-30) ≈ 2e-30
    assert abs(l64.item() - expected) / expected < 1e-2  # float64 resolves it; float32 cannot


def test_stablemax_matches_the_paper_formula():
    x = torch.tensor([[[2.0, -1.0, 0.0, -3.0]]], dtype=torch.float64)
    s = torch.tensor([3.0, 0.5, 1.0, 0.25], dtype=torch.float64)
    for y in range(4):
        loss = StableMaxCrossEntropy()(x, torch.tensor([y]))
        assert torch.allclose(loss, -torch.log(s[y] / s.sum()))


def test_mse_against_onehot_and_collapse_fraction():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    mse = MSEOneHot()(logits, torch.tensor([0, 1]))
    assert torch.allclose(mse, torch.tensor([[0.0, 0.5]]))
    collapsed = torch.tensor([[[200.0, 0.0], [1.0, 0.0]]])
    assert softmax_collapse_fraction(collapsed).tolist() == [0.5]


def _adamw_chain(lr, wd, steps):
    return T.chain(T.ScaleByAdam(0.9, 0.98, 1e-8), T.AddDecayedWeights(wd),
                   T.ScaleByLR(lr, T.make_schedule("constant", 0, steps)))


def test_adamw_chain_matches_torch_adamw_per_member():
    torch.manual_seed(0)
    K = 3
    lrs, wds = torch.tensor([1e-2, 3e-3, 1e-3]), torch.tensor([1.0, 0.1, 0.0])
    w0 = torch.randn(K, 5, 4)
    params = {"w": w0.clone()}
    chain = _adamw_chain(lrs, wds, 20)
    state = chain.init(params)
    refs = [torch.nn.Parameter(w0[k].clone()) for k in range(K)]
    opts = [torch.optim.AdamW([refs[k]], lr=float(lrs[k]), weight_decay=float(wds[k]), betas=(0.9, 0.98))
            for k in range(K)]
    for step in range(20):
        g = torch.randn(K, 5, 4)
        u = chain.update({"w": g}, state, params, step)
        params["w"] += u["w"]
        for k in range(K):
            refs[k].grad = g[k].clone()
            opts[k].step()
    for k in range(K):
        assert torch.allclose(params["w"][k], refs[k].detach(), atol=1e-6)


def test_orthograd_is_orthogonal_to_weights_and_keeps_the_norm():
    torch.manual_seed(1)
    w, g = torch.randn(2, 7, 3), torch.randn(2, 7, 3)
    out = T.OrthoGrad().update({"w": g}, {}, {"w": w}, 0)["w"]
    for k in range(2):
        assert abs(float((out[k] * w[k]).sum())) < 1e-4
        assert abs(float(out[k].norm() - g[k].norm())) < 1e-4


def test_grokfast_ema_and_ma_follow_their_definitions():
    p = {"w": torch.zeros(1, 3)}
    ema = T.GrokfastEMA(alpha=0.5, lamb=2.0)
    st = ema.init(p)
    g1, g2 = torch.ones(1, 3), 3 * torch.ones(1, 3)
    assert torch.allclose(ema.update({"w": g1}, st, p, 0)["w"], g1 + 2 * g1)  # ema starts at g
    assert torch.allclose(ema.update({"w": g2}, st, p, 1)["w"], g2 + 2 * (0.5 * g1 + 0.5 * g2))
    ma = T.GrokfastMA(window=2, lamb=1.0)
    st = ma.init(p)
    assert torch.allclose(ma.update({"w": g1}, st, p, 0)["w"], g1)  # window not yet full
    assert torch.allclose(ma.update({"w": g2}, st, p, 1)["w"], g2 + (g1 + g2) / 2)


def test_coupled_l2_feeds_decay_through_adam():
    p = {"w": torch.full((1, 2), 2.0)}
    out = T.AddL2(torch.tensor([0.5])).update({"w": torch.zeros(1, 2)}, {}, p, 0)["w"]
    assert torch.allclose(out, torch.full((1, 2), 1.0))


def test_warmup_then_cosine_schedule():
    f = T.make_schedule("cosine", 10, 110)
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(60) - 0.5) < 1e-9 and abs(f(110)) < 1e-9


def test_warmup_from_zero_is_lambdalr_min_step_over_w():
    f = T.make_schedule("constant", 10, 100, warmup_from_zero=True)
    assert [f(s) for s in (0, 1, 9, 10, 50)] == [0.0, 0.1, 0.9, 1.0, 1.0]
