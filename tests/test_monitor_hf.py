"""The monitors as Hugging Face TrainerCallbacks, on tiny models the test builds (offline)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import transformers  # noqa: F401  (the callbacks need it)

from transferlab import monitor


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=40, n_positions=16, bos_token_id=0,
                     eos_token_id=0, attn_implementation="eager")
    return GPT2LMHeadModel(cfg)


def test_callbacks_log_into_a_real_trainer_run(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = tiny_gpt2()
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 40, (32, 8), generator=g)]
    probe_ids = torch.randint(0, 40, (8, 8), generator=g)
    probe = {"input_ids": probe_ids, "labels": probe_ids}
    plast = monitor.PlasticityCallback(probe, small_batch=2, every=1)
    loss_cb = monitor.LossPowerLawCallback(min_points=4)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, logging_steps=1,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to="none",
                             save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[plast, loss_cb])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 6
    for h in logs:
        assert h["monitor/fisher_trace"] > 0 and math.isfinite(h["monitor/fisher_trace"])
        assert 0 < h["monitor/coherence"] <= 1 + 1e-9
        assert h["monitor/m_coherence"] == pytest.approx(8 * h["monitor/coherence"])
        assert h["monitor/weight_norm"] > 0 and 0 <= h["monitor/dormant_fraction"] <= 1
    # The power-law monitor predicts from the 5th logged loss on (fit on the 4 before it).
    assert "monitor/loss_pred" not in logs[3] and "monitor/loss_pred" in logs[4]
    assert logs[5]["monitor/loss_pred_lo"] < logs[5]["monitor/loss_pred"] < logs[5]["monitor/loss_pred_hi"]
    # The logged value is exactly the function's, on the model as it was: recompute on the final model.
    model.eval()
    direct = monitor.per_sample_gradient_stats(model, lambda out, _: out.loss, probe, chunk_size=32)
    assert plast.compute(model)["monitor/fisher_trace"] == pytest.approx(direct.fisher_trace, rel=1e-5)
    assert model.training is False


def test_monitor_values_reach_tensorboard(tmp_path):
    """Callbacks passed the ordinary way: every monitor value reaches the tracker, not only log_history."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    model = tiny_gpt2()
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 40, (24, 8), generator=g)]
    probe_ids = torch.randint(0, 40, (12, 8), generator=g)
    plast = monitor.PlasticityCallback({"input_ids": probe_ids, "labels": probe_ids}, every=2)
    loss_cb = monitor.LossPowerLawCallback(min_points=4)
    assert plast.probe["input_ids"].shape[0] == 8  # the default probe_size

    class Late(TrainerCallback):  # added after ours with add_callback: stays after the trackers too
        pass

    logdir = tmp_path / "tb"
    import dataclasses

    where = {"logging_dir": str(logdir)} if any(f.name == "logging_dir" for f in dataclasses.fields(
        TrainingArguments)) else {}  # transformers 4.x: an argument; 5.x: the callback's attribute
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=8, logging_steps=1,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to=["tensorboard"],
                             save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, **where)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[plast, loss_cb])
    trainer.add_callback(Late())
    tb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback))
    tb.logging_dir = str(logdir)
    trainer.train()
    order = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert order.index("PlasticityCallback") < order.index("LossPowerLawCallback") < order.index(
        "TensorBoardCallback") and order[0] == "DefaultFlowCallback"
    assert sum(n == "PlasticityCallback" for n in order) == 1
    ea = EventAccumulator(str(logdir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 8
    for key in ("fisher_trace", "coherence", "noise_scale", "weight_norm", "dormant_fraction", "cost_fraction",
                "loss_pred", "loss_pred_lo", "loss_pred_hi", "loss_deviation"):
        assert f"train/monitor/{key}" in tags, (key, sorted(tags))
    fisher = {e.step: e.value for e in ea.Scalars("train/monitor/fisher_trace")}
    want = {h["step"]: h["monitor/fisher_trace"] for h in logs if "monitor/fisher_trace" in h}
    assert sorted(fisher) == sorted(want) == [1, 3, 5, 7]  # every=2 of 8 logging steps
    for step, v in want.items():
        assert fisher[step] == pytest.approx(v, rel=1e-6) and v > 0
    pred = {e.step: e.value for e in ea.Scalars("train/monitor/loss_pred")}
    assert sorted(pred) == [5, 6, 7, 8]  # from the 5th logged loss on
    assert pred[8] == pytest.approx(logs[7]["monitor/loss_pred"], rel=1e-6)


def test_move_before_trackers_replaces_the_list_and_keeps_order():
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, PrinterCallback

    a, b = monitor.LossPowerLawCallback(), monitor.LossPowerLawCallback()
    flow, printer = DefaultFlowCallback(), PrinterCallback()
    handler = CallbackHandler([flow, printer, a, b], None, None, None, None)
    old = handler.callbacks
    assert monitor.move_before_trackers(handler) is True
    assert handler.callbacks == [flow, a, b, printer] and old == [flow, printer, a, b]
    assert monitor.move_before_trackers(handler) is False
    # through the handler's own event, as the Trainer calls it
    from transformers import TrainerControl

    h2 = CallbackHandler([flow, printer, a], None, None, None, None)
    h2.on_train_begin(None, SimpleNamespace(), TrainerControl())
    assert h2.callbacks == [flow, a, printer]
    # called some other way, it says so instead of failing silently
    with pytest.warns(UserWarning, match="could not find the Trainer's callback handler"):
        monitor.LossPowerLawCallback().on_train_begin(None, SimpleNamespace(), None)


def test_time_budget_keeps_the_monitor_share_under_the_fraction():
    budget = monitor.TimeBudget(0.1)
    budget.begin(0.0)
    now, ran = 0.0, []
    for step in range(200):  # a log every 0.5 s of training; one computation costs 2 s
        now += 0.5
        if budget.due(now):
            budget.record(2.0)
            now += 2.0
            ran.append(step)
    assert ran[0] == 0 and len(ran) > 3
    train = now - budget.spent
    assert budget.used(now) == pytest.approx(budget.spent / train)
    assert budget.used(now) <= 0.1 + 1e-9  # at most 10% added to the training time
    assert budget.used(now) > 0.08  # it does use its budget, not much less
    with pytest.raises(monitor.MonitorError, match="budget must be in"):
        monitor.TimeBudget(0)


def test_plasticity_callback_restores_training_mode_and_skips_eval_logs():
    model = tiny_gpt2().train()
    ids = torch.randint(0, 40, (4, 8))
    cb = monitor.PlasticityCallback({"input_ids": ids, "labels": ids}, small_batch=0,
                                    feature_module="transformer.h.0.mlp.act", every=1)
    state = SimpleNamespace(global_step=3, log_history=[{"loss": 2.0, "step": 3}])
    logs = {"loss": 2.0}
    cb.on_log(None, state, None, logs=logs, model=model)
    assert model.training is True
    assert "monitor/noise_scale" not in logs and 1 <= logs["monitor/effective_rank"] <= 32
    assert state.log_history[-1]["monitor/fisher_trace"] == logs["monitor/fisher_trace"]
    eval_logs = {"eval_loss": 1.0}
    cb.on_log(None, state, None, logs=eval_logs, model=model)
    assert eval_logs == {"eval_loss": 1.0}


def test_moe_pathway_callback_on_tiny_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    cfg = MixtralConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=32, num_attention_heads=2,
                        num_key_value_heads=2, vocab_size=40, num_local_experts=4, num_experts_per_tok=2)
    model = MixtralForCausalLM(cfg).eval()
    ids = torch.randint(0, 40, (5, 6))
    probe = {"input_ids": ids, "attention_mask": torch.ones(5, 6, dtype=torch.long)}
    emb_fn = lambda m: [layer.mlp.gate.weight for layer in m.model.layers]  # noqa: E731
    cb = monitor.MoEPathwayCallback(probe, top_k=2, embed_fn=emb_fn)
    state = SimpleNamespace(global_step=1, log_history=[])
    logs = {"loss": 3.0}
    cb.on_log(None, state, None, logs=logs, model=model)
    with torch.no_grad():
        router = model(**probe, output_router_logits=True).router_logits
    want = monitor.moe_pathway_metrics(list(router), 2, batch_size=5, attention_mask=probe["attention_mask"],
                                       expert_embeddings=emb_fn(model))
    assert logs["monitor/pathway_distance"] == pytest.approx(want["pathway_distance"])
    assert logs["monitor/pathway_consistency"] == pytest.approx(want["pathway_consistency"])
    assert 0 <= logs["monitor/pathway_distance"] <= 1 and -1 <= logs["monitor/pathway_consistency"] <= 1
