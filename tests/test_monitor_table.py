"""A monitor is one function and one row of the table: added at run time, the engine logs it, a Hugging Face
Trainer logs it, and the grokking report plots it, with nothing else changed."""

from __future__ import annotations

import math

import pytest
import torch

from transferlab.store import Store
from transferlab.studies.grokking import GrokConfig
from transferlab.studies.grokking.run import run as grok
from transferlab.studies.grokking.run import run_members
from transferlab.train import monitors
from transferlab.train.monitors import Monitor, Probe, register_monitor, unregister_monitor


def probe_loss(p: Probe) -> float:
    """The model's mean loss on the probe batch (the function of the new monitor)."""
    with torch.no_grad():
        out = p.model(**p.inputs) if isinstance(p.inputs, dict) else p.model(p.inputs)
        return float(p.loss_fn(out, p.targets))


ROW = Monitor("probe_loss", "loss on the probe (test)", "log", "mean loss on the probe batch", probe_loss)


@pytest.fixture
def added():
    before = list(monitors.MONITORS)
    register_monitor(ROW)
    try:
        yield ROW
    finally:
        unregister_monitor(ROW.key)
    assert monitors.MONITORS == before and ROW.key not in monitors.MONITOR


def test_register_refuses_a_key_twice_and_unregister_restores_the_table(added):
    with pytest.raises(monitors.MonitorError, match="already in the table"):
        register_monitor(ROW)
    assert [m.key for m in monitors.MONITORS][-1] == "probe_loss"
    with pytest.raises(monitors.MonitorError, match="no monitor"):
        unregister_monitor("no_such_monitor")


def test_a_monitor_added_at_run_time_is_logged_by_the_engine_and_plotted(tmp_path, added):
    # the probe is the whole training set (264 rows), so the new monitor is the logged training loss
    cfg = GrokConfig(p=23, train_fraction=0.5, width=16, steps=20, eval_every=10, checkpoint_every=20,
                     monitor_every=1, monitor_probe=10_000)
    out = grok(cfg, Store(tmp_path), seeds=1, report=True)
    rec = run_members([cfg], Store(tmp_path))[0].records  # reused: the stored metrics
    assert [r["step"] for r in rec if "probe_loss" in r] == [0, 10, 20]
    for r in rec:
        assert math.isfinite(r["probe_loss"]) and r["probe_loss"] == pytest.approx(r["train_loss"], rel=1e-5)
        assert "fisher_trace" in r and "weight_norm" not in r  # the table's other rows are still there
    page = open(out["report"], encoding="utf-8").read()
    assert "loss on the probe (test)" in page and "Fisher trace" in page


def test_a_monitor_added_at_run_time_is_logged_by_a_hugging_face_trainer(tmp_path, added):
    transformers = pytest.importorskip("transformers")
    from transferlab import monitor

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=40, n_positions=16, bos_token_id=0, eos_token_id=0,
        attn_implementation="eager"))
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 40, (16, 8), generator=g)]
    probe_ids = torch.randint(0, 40, (8, 8), generator=g)
    probe = {"input_ids": probe_ids, "labels": probe_ids}
    cb = monitor.PlasticityCallback(probe, small_batch=2, every=1)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=3, logging_steps=1,
                                          per_device_train_batch_size=4, learning_rate=1e-3, report_to="none",
                                          save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for h in logs:
        assert math.isfinite(h["monitor/probe_loss"]) and h["monitor/probe_loss"] > 0
        assert "monitor/fisher_trace" in h
    # the logged value is the function's, on the model as it was: recompute on the final model
    model.eval()
    with torch.no_grad():
        want = float(model(**probe).loss)
    assert cb.compute(model)["monitor/probe_loss"] == pytest.approx(want, rel=1e-6)
    assert logs[-1]["monitor/probe_loss"] == pytest.approx(want, rel=1e-6)
