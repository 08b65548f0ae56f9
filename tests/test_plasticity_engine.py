"""The grokking engine logs the plasticity monitors on its schedule, per ensemble member."""

from __future__ import annotations

import math

import pytest
import torch

from transferlab.data.algorithmic import make_dataset
from transferlab.store import Store
from transferlab.studies.grokking import GrokConfig, run_members
from transferlab.studies.grokking.run import model_factory
from transferlab.train import monitors
from transferlab.train.losses import make_loss

TINY = dict(p=23, train_fraction=0.5, width=32, steps=60, eval_every=10, checkpoint_every=20, monitor_every=2)
KEYS = ("fisher_trace", "coherence", "m_coherence", "mean_grad_sq_norm", "noise_scale", "dormant_fraction",
        "effective_rank")


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_monitors_logged_every_k_evaluations_and_at_the_end(tmp_path, model):
    extra = dict(d_model=16, d_mlp=32, n_heads=2) if model == "transformer" else {}
    cfg = GrokConfig(**TINY, model=model, **extra)
    rec = run_members([cfg], Store(tmp_path))[0].records
    logged = [r["step"] for r in rec if "fisher_trace" in r]
    assert logged == [0, 20, 40, 60]
    for r in rec:
        if "fisher_trace" not in r:
            continue
        assert set(KEYS) <= set(r)
        assert r["fisher_trace"] > 0 and r["mean_grad_sq_norm"] > 0
        assert 0 <= r["coherence"] <= 1 + 1e-9
        n_probe = min(cfg.monitors.probe, round(cfg.task.train_fraction * cfg.task.p * cfg.task.p))
        assert math.isclose(r["m_coherence"], n_probe * r["coherence"], rel_tol=1e-9)
        assert 0 <= r["dormant_fraction"] <= 1
        assert 1 <= r["effective_rank"] <= (cfg.model.width if model == "mlp" else cfg.model.d_mlp)


def test_each_member_is_measured_with_its_own_parameters(tmp_path):
    cfgs = [GrokConfig(**{**TINY, "steps": 10}, seed=s, lr=lr) for s, lr in ((0, 1e-3), (1, 1e-2))]
    members = run_members(cfgs, Store(tmp_path))
    first = [m.records[0] for m in members]  # step 0: the initial parameters of each seed
    assert first[0]["fisher_trace"] != first[1]["fisher_trace"]
    task = cfgs[1].task
    data = make_dataset(task.operation, task.p, task.train_fraction, task.split_seed)
    torch.manual_seed(cfgs[1].seed)
    module = model_factory(cfgs[1], data.n_tokens, data.n_classes)()
    loss = make_loss(cfgs[1].loss.kind, cfgs[1].loss.dtype)
    x, y = data.x_train[: cfgs[1].monitors.probe], data.y_train[: cfgs[1].monitors.probe]
    ref = monitors.per_sample_gradient_stats(module, lambda o, t: loss(o, t).mean(), x, y, method="loop")
    assert first[1]["fisher_trace"] == pytest.approx(ref.fisher_trace, rel=1e-4)
    assert first[1]["coherence"] == pytest.approx(ref.coherence, rel=1e-3)
    noise = (ref.fisher_trace - ref.mean_grad_sq_norm) / ref.mean_grad_sq_norm
    assert first[1]["noise_scale"] == pytest.approx(noise, rel=1e-3)
    assert first[1]["dormant_fraction"] == monitors.dormant_units(module, data.x_train)["dormant_fraction"]
    assert first[1]["effective_rank"] == pytest.approx(
        monitors.feature_effective_rank(module, data.x_train, module.act), rel=1e-6)


@pytest.mark.parametrize("loss", ["mse", "stablemax"])
def test_monitors_work_with_every_loss_through_vmap(tmp_path, loss):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback from vmap to the per-sample loop warns
        rec = run_members([GrokConfig(**{**TINY, "steps": 10}, loss=loss)], Store(tmp_path))[0].records
    assert rec[0]["fisher_trace"] > 0 and 0 <= rec[0]["coherence"] <= 1


def test_monitors_can_be_switched_off(tmp_path):
    rec = run_members([GrokConfig(**{**TINY, "monitor_every": 0})], Store(tmp_path))[0].records
    assert not any("fisher_trace" in r for r in rec)


def test_measuring_callbacks_add_to_each_members_record_in_order():
    """The former evaluator extras are engine callbacks: each one's measurements land in every member's record
    before it is logged, in the order of the callbacks, and a callback stops the run through the control."""
    from transferlab.train.engine import Callback, Engine, Schedule, TrainData
    from transferlab.train.ensemble import StackedForward
    from transferlab.train.transforms import ScaleByLR, chain

    class A(Callback):
        def on_measure(self, ev):
            for i, r in enumerate(ev.records):
                r.update({"a": ev.step + i, "shared": "a"})

    class B(Callback):
        def on_measure(self, ev):
            for i, r in enumerate(ev.records):
                r.update({"b": i, "shared": "b"})

    class StopAt(Callback):
        def __init__(self):
            self.seen = []

        def on_eval(self, step, records, alive, control):
            self.seen.append([dict(r) for r in records])
            control.should_stop = step >= 2

    class After(Callback):
        def __init__(self):
            self.steps = []

        def on_eval(self, step, records, alive, control):
            self.steps.append(step)

    torch.manual_seed(0)
    base = torch.nn.Linear(3, 2)
    params = {k: torch.stack([v.detach().clone(), v.detach().clone() + 0.1]) for k, v in base.named_parameters()}
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    stop, after = StopAt(), After()
    res = Engine(StackedForward(base), params, lambda out, t: loss(out.transpose(1, 2), t.expand(out.shape[0], -1)),
                 chain(ScaleByLR(torch.tensor([0.1, 0.1]), lambda s: 1.0)), TrainData(x, y, x, y),
                 Schedule(steps=10, eval_every=1, checkpoint_every=100), lambda p, f, s: [{"step": s}, {"step": s}],
                 callbacks=[A(), B(), stop, after]).run()
    assert res.stopped_early and res.step == 2
    assert stop.seen[0] == [{"step": 0, "a": 0, "shared": "b", "b": 0}, {"step": 0, "a": 1, "shared": "b", "b": 1}]
    assert res.records[2][1] == {"step": 2, "a": 3, "shared": "b", "b": 1}
    assert after.steps == [0, 1]  # not told of the evaluation a callback before it stopped the run at
