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
    plast = monitor.PlasticityCallback(probe, small_batch=2)
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


def test_plasticity_callback_restores_training_mode_and_skips_eval_logs():
    model = tiny_gpt2().train()
    ids = torch.randint(0, 40, (4, 8))
    cb = monitor.PlasticityCallback({"input_ids": ids, "labels": ids}, small_batch=0,
                                    feature_module="transformer.h.0.mlp.act")
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
