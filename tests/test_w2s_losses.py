"""Each weak-to-strong loss is checked at the level of its gradient with respect to the logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transferlab.core.errors import ConfigError
from transferlab.studies.w2s.heads import single_thread
from transferlab.studies.w2s.losses import (
    AdaptConfLoss,
    ConfidenceLoss,
    LogConfLoss,
    ProductLoss,
    RampedProductLoss,
    WindowLoss,
    XentLoss,
    balanced_hard_labels,
    linear_ramp,
    make_loss,
)


def _batch(n=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    weak = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 2, -1)
    return logits.requires_grad_(True), weak


def _grad(loss, logits, weak, progress=1.0):
    return torch.autograd.grad(loss(logits, weak, progress), logits)[0]


def test_xent_gradient_is_softmax_minus_weak_over_n():
    z, w = _batch()
    g = _grad(XentLoss(), z, w)
    want = (torch.softmax(z, -1) - w) / z.shape[0]
    assert torch.allclose(g, want, atol=1e-12)


def test_confidence_objective_value_and_gradient_by_hand():
    z, w = _batch(k=4)
    c = 0.2
    loss = ConfidenceLoss(c=c)
    s = torch.softmax(z, -1)
    kl = (w * (w.log() - s.log())).sum(-1).mean()
    h = -(s * s.log()).sum(-1)
    assert loss(z, w).item() == pytest.approx((kl + c * h.mean()).item(), abs=1e-12)
    # d/dz [KL(w||s)] = s - w ; d/dz H(s) = -s * (log s + H)
    want = ((s - w) + c * (-s * (s.log() + h[:, None]))) / z.shape[0]
    assert torch.allclose(_grad(loss, z, w), want.detach(), atol=1e-12)


def test_confidence_entropy_term_is_not_detached():
    """Where weak == student the KL gradient vanishes: only a live entropy term moves the logits, and it
    moves them towards confidence (entropy goes down after a step)."""
    z, _ = _batch(k=2, seed=3)
    w = torch.softmax(z.detach(), -1)
    g = _grad(ConfidenceLoss(c=0.2), z, w)
    assert g.abs().max() > 1e-4
    h0 = -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1)
    z1 = z.detach() - 1.0 * g
    h1 = -(torch.softmax(z1, -1) * torch.log_softmax(z1, -1)).sum(-1)
    assert torch.all(h1 <= h0.detach() + 1e-12) and (h1 < h0.detach() - 1e-6).any()


def test_logconf_ramp_is_linear_without_a_jump():
    loss = LogConfLoss(a_max=0.5, warmup_frac=0.2)
    assert loss.alpha(0.0) == 0.0
    assert loss.alpha(0.05) == pytest.approx(0.125)
    assert loss.alpha(0.1) == pytest.approx(0.25)
    assert loss.alpha(0.2) == pytest.approx(0.5)
    assert loss.alpha(0.9) == pytest.approx(0.5)
    ts = [i / 500 for i in range(101)]
    steps = [loss.alpha(b) - loss.alpha(a) for a, b in zip(ts, ts[1:])]
    assert max(steps) == pytest.approx(min(steps), abs=1e-12)  # equal increments: no jump
    assert linear_ramp(0.5, 0.0, 0.75) == 0.75


def test_balanced_hardening_keeps_the_weak_class_balance_binary_and_multiclass():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(200, 2, generator=g), -1)
    hard = balanced_hard_labels(p, torch.tensor([0.7, 0.3]))
    assert hard.sum(0).tolist() == [140.0, 60.0]
    # the 60 hardened positives are exactly the 60 highest P(class 1)
    top = set(p[:, 1].argsort(descending=True)[:60].tolist())
    assert set(hard[:, 1].nonzero().flatten().tolist()) == top
    p3 = torch.softmax(torch.randn(300, 3, generator=g) * 2, -1)
    hard3 = balanced_hard_labels(p3, torch.tensor([0.5, 0.3, 0.2]))
    counts = hard3.sum(0)
    assert torch.allclose(counts, torch.tensor([150.0, 90.0, 60.0]), atol=3)


def test_logconf_gradient_matches_its_target():
    z, w = _batch(n=20, k=2, seed=2)
    loss = LogConfLoss(a_max=0.5, warmup_frac=0.2)
    a = 0.25  # progress 0.1
    s = torch.softmax(z, -1).detach()
    hard = balanced_hard_labels(s, w.mean(0))
    target = (1 - a) * w + a * hard
    want = (s - target) / z.shape[0]
    assert torch.allclose(_grad(loss, z, w, 0.1), want, atol=1e-12)
    # at progress 0 it is exactly xent
    assert torch.allclose(_grad(loss, z, w, 0.0), _grad(XentLoss(), z, w), atol=1e-12)


def test_logconf_buffer_uses_recent_examples_for_the_threshold():
    loss = LogConfLoss(buffer_size=64)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        z = torch.randn(16, 2, generator=g)
        w = torch.softmax(torch.randn(16, 2, generator=g), -1)
        h = loss.hardened(torch.softmax(z, -1), w)
        assert h.shape == (16, 2)
    assert sum(b.shape[0] for b in loss._buf_student) <= 64 + 16


def test_product_is_openais_product_of_student_and_weak():
    z, w = _batch(k=3, seed=4)
    s = torch.softmax(z, -1).detach()
    t = s * w / (s * w).sum(-1, keepdim=True)  # openai/weak-to-strong: preds^beta * labels^alpha, normalized
    want = -(t * torch.log_softmax(z, -1)).sum(-1).mean()
    assert torch.allclose(ProductLoss()(z, w), want, atol=1e-12)
    assert torch.allclose(_grad(ProductLoss(), z, w, 0.0), (s - t) / z.shape[0], atol=1e-12)  # no ramp
    t2 = s**2 * w**0.5 / (s**2 * w**0.5).sum(-1, keepdim=True)
    assert torch.allclose(_grad(ProductLoss(alpha=0.5, beta=2.0), z, w), (s - t2) / z.shape[0], atol=1e-12)


def test_ramped_product_gradient_matches_geometric_target():
    z, w = _batch(k=3, seed=4)
    loss = RampedProductLoss(a_max=0.5, warmup_frac=0.2)
    s = torch.softmax(z, -1).detach()
    t = w**0.5 * s**0.5
    t = t / t.sum(-1, keepdim=True)
    assert torch.allclose(_grad(loss, z, w, 1.0), (s - t) / z.shape[0], atol=1e-12)
    assert torch.allclose(_grad(loss, z, w, 0.0), _grad(XentLoss(), z, w), atol=1e-12)


def test_window_trains_only_where_the_student_is_unsure():
    z = torch.tensor([[4.0, -4.0], [0.1, 0.0], [-3.0, 3.0], [0.0, 0.3]], requires_grad=True)
    w = torch.tensor([[0.2, 0.8], [0.3, 0.7], [0.9, 0.1], [0.6, 0.4]])
    g = _grad(WindowLoss(width=0.5), z, w)
    assert torch.all(g[0] == 0) and torch.all(g[2] == 0)  # confident rows: no pull towards the weak label
    want = (torch.softmax(z, -1) - w).detach() / 4
    assert torch.allclose(g[[1, 3]], want[[1, 3]], atol=1e-12)


def test_adaptconf_gradient_and_beta():
    z, w = _batch(n=16, k=3, seed=6)
    tau = 0.7
    loss = AdaptConfLoss(tau=tau)
    s = torch.softmax(z, -1).detach()
    ce_self = -s.max(-1).values.log()
    ce_weak = -s.gather(-1, w.argmax(-1, keepdim=True)).squeeze(-1).log()
    beta = torch.exp(ce_self / tau) / (torch.exp(ce_self / tau) + torch.exp(ce_weak / tau))
    assert torch.allclose(loss.beta(z, w), beta, atol=1e-12)
    assert torch.all(beta <= 0.5 + 1e-12)
    agree = s.argmax(-1) == w.argmax(-1)
    assert torch.allclose(beta[agree], torch.full_like(beta[agree], 0.5))
    hard = F.one_hot(s.argmax(-1), 3).to(s.dtype)
    want = ((1 - beta)[:, None] * (s - w) + beta[:, None] * (s - hard)) / z.shape[0]
    assert torch.allclose(_grad(loss, z, w), want, atol=1e-12)


def test_each_loss_trains_a_linear_head_towards_the_weak_labels_when_they_are_clean():
    """Behaviour: on separable data with clean, confident weak labels, every loss reaches high accuracy."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    w = F.one_hot(y, 2).float() * 0.9 + 0.05
    with single_thread():  # tiny ops: threads only add synchronisation time
        _train_each(x, y, w)


def _train_each(x, y, w):
    for name in ["xent", "confidence", "logconf", "product", "window", "adaptconf"]:
        head = torch.nn.Linear(5, 2)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        loss = make_loss(name)
        for step in range(150):
            opt.zero_grad()
            loss(head(x), w, step / 150).backward()
            opt.step()
        acc = (head(x).argmax(-1) == y).float().mean().item()
        assert acc > 0.95, (name, acc)


def test_unknown_loss_and_bad_shapes_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown loss 'nope'.*choose from"):
        make_loss("nope")
    with pytest.raises(ConfigError, match=r"\(N, K\)"):
        XentLoss()(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ConfigError, match="tau"):
        AdaptConfLoss(tau=0)


def test_a_loss_is_one_class_in_one_place(cli, tmp_path):
    """Defining a W2SLoss subclass with a name is the whole of adding a loss: config validation, its
    parameters, the command's help and --explain list it, and a study run trains a student with it."""
    import json

    import torch.nn.functional as F

    from transferlab.studies.w2s.config import W2SConfig
    from transferlab.studies.w2s.losses import LOSSES, W2SLoss, unregister_loss

    class HalfXent(W2SLoss):
        """Half the cross-entropy on the weak soft labels (a test loss)."""

        name = "half-xent-test"

        def __init__(self, scale: float = 0.5):
            super().__init__()
            self.scale = scale

        def forward(self, logits, weak_probs, progress=1.0):
            return -self.scale * (weak_probs * F.log_softmax(logits, -1)).sum(-1).mean()

    try:
        assert LOSSES["half-xent-test"] is HalfXent
        W2SConfig(losses=["xent", "half-xent-test"], loss_params={"half-xent-test": {"scale": 0.25}})
        code, out, _ = cli(["w2s", "--help"])
        assert code == 0 and "half-xent-test" in "".join(out.replace("│", "").split())  # rich wraps in a box
        code, out, _ = cli(["w2s", "--explain"])
        assert code == 0 and "half-xent-test" in out
        code, out, err = cli(["w2s", "--task", "synthetic-noisy", "--losses", "xent,half-xent-test", "--seeds", "1",
                              "--set", "n_examples=600", "--set", "steps=40", "--json",
                              "--store", str(tmp_path / "runs")])
        assert code == 0, err
        assert set(json.loads(out)["losses"]) == {"xent", "half-xent-test"}
        with pytest.raises(Exception, match="already exists"):
            type("Again", (W2SLoss,), {"name": "half-xent-test"})
    finally:
        unregister_loss("half-xent-test")
    assert "half-xent-test" not in LOSSES
    code, _, err = cli(["w2s", "--losses", "half-xent-test", "--store", str(tmp_path / "runs")])
    assert code == 2 and "unknown loss 'half-xent-test'" in err
