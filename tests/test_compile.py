"""The training step through torch.compile: the same losses as eager, chosen only where it can run."""

from __future__ import annotations

import shutil

import pytest
import torch

from transferlab.core import devices
from transferlab.core.errors import ConfigError
from transferlab.train import transforms as T
from transferlab.train.engine import Engine, Schedule, TrainData
from transferlab.train.ensemble import StackedForward
from transferlab.train.lm import CausalLMLogits, LMCrossEntropy
from transferlab.zoo.model import new_lm
from transferlab.zoo.train import shape_of


def _train(compile: bool, dtype: torch.dtype, steps: int = 12) -> list[float]:
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 300, (32, 17), generator=g)
    wrapper = CausalLMLogits(new_lm(shape_of("xxs", 300, 16), 0), dtype)
    params = {n: p.detach().clone().unsqueeze(0) for n, p in wrapper.named_parameters()}
    chain = T.chain(T.ScaleByAdam(0.9, 0.95), T.ScaleByLR(torch.tensor([3e-3]), T.make_schedule("constant", 0, steps)))
    losses: list[float] = []

    def evaluate(p, f, s):
        losses.append(float(LMCrossEntropy()(f(p, w), w).mean()))
        return [{"step": s}]

    Engine(StackedForward(wrapper), params, LMCrossEntropy(), chain, TrainData(w, w, w[:4], w[:4]),
           Schedule(steps=steps, batch_size=8, eval_every=4, checkpoint_every=10**6), evaluate,
           compile=compile).run()
    return losses


@pytest.mark.skipif(not devices.compile_available(torch.device("cpu"))[0], reason="no C++ compiler for Inductor")
def test_compiled_step_trains_like_eager():
    eager, compiled = _train(False, torch.float32), _train(True, torch.float32)
    assert eager[-1] < eager[0] - 0.05  # it learns
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert _train(True, torch.bfloat16) == pytest.approx(_train(False, torch.bfloat16), rel=2e-3)


def test_compile_setting_is_resolved_where_it_can_run(monkeypatch):
    cpu = torch.device("cpu")
    assert devices.resolve_compile(False, cpu, 10**6) is False
    if devices.compile_available(cpu)[0]:
        assert devices.resolve_compile("auto", cpu, devices.COMPILE_MIN_STEPS) is True
        assert devices.resolve_compile("auto", cpu, devices.COMPILE_MIN_STEPS - 1) is False  # too short to pay
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C++ compiler on PATH
    assert devices.resolve_compile("auto", cpu, 10**6) is False
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        devices.resolve_compile(True, cpu, 10**6, where="train.compile")
    with pytest.raises(ConfigError, match="unknown compile setting"):
        devices.resolve_compile("yes", cpu, 10**6)


def test_compile_is_not_part_of_a_runs_identity():
    from transferlab.zoo.build import ZooConfig
    from transferlab.zoo.settings import TrainSettings

    a = ZooConfig(train=TrainSettings(compile=True))
    b = ZooConfig(train=TrainSettings(compile=False))
    assert a.config_hash() == b.config_hash()


@pytest.mark.skipif(not devices.compile_available(torch.device("cpu"))[0], reason="no C++ compiler for Inductor")
def test_every_engine_compiles_its_own_step_without_resetting_others(monkeypatch):
    """Engine after engine in one process (a zoo build, a sweep) each compile their own step: none falls back to
    eager at Dynamo's recompile limit, and a function the user compiled is not reset."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    user = torch.compile(lambda t: t * 2 + 1)
    user(torch.ones(3))
    frames_user = counters["frames"]["ok"]
    for _ in range(3):  # more engines than the recompile limit allows for one code object
        before = counters["frames"]["ok"]
        _train(True, torch.float32, steps=2)
        assert counters["frames"]["ok"] > before  # this engine's step was compiled, not run eagerly
    before = counters["frames"]["ok"]
    user(torch.ones(3))  # still compiled: calling it again compiles nothing
    assert counters["frames"]["ok"] == before and frames_user > 0
