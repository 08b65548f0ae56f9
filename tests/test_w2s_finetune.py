"""HF classifier (attention-mask pooling, LoRA) and the fine-tuning backend, on tiny models built here."""

from __future__ import annotations

import pytest
import torch

from tests.test_w2s_text import WORDS, tiny_bert
from transferlab.core.errors import ConfigError
from transferlab.models.hf_classifier import HFClassifier
from transferlab.studies.w2s.run import make_config, run


def tiny_llama(path):
    from transformers import BertTokenizerFast, LlamaConfig, LlamaModel

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, padding_side="left")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    LlamaModel(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_classifier_output_does_not_depend_on_padding(tmp_path, kind):
    path = tiny_bert(tmp_path / "m") if kind == "bert" else tiny_llama(tmp_path / "m")
    model, tok = HFClassifier.from_pretrained(str(path), num_labels=3)
    model.eval()
    texts = ["return the value", "a class of object with a very long name and data for the file list"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # the short text is padded
    with torch.no_grad():
        together = model(batch["input_ids"], batch["attention_mask"])
        alone = model(
            **{
                k: v
                for k, v in tok(texts[:1], return_tensors="pt").items()
                if k in ("input_ids", "attention_mask")
            }
        )
    assert torch.allclose(together[0], alone[0], atol=1e-5)


def test_lora_trains_only_adapters_and_the_head(tmp_path):
    path = tiny_bert(tmp_path / "m")
    model, _ = HFClassifier.from_pretrained(str(path), num_labels=2, lora_r=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("head.") for n in names)
    full, _ = HFClassifier.from_pretrained(str(path), num_labels=2)
    assert sum(p.numel() for p in model.trainable_parameters()) < 0.5 * sum(
        p.numel() for p in full.parameters()
    )


def raise_task(tmp_path):
    """(weak, strong, data): a near-chance weak BERT, a 2-layer strong one, and 400 texts labelled 1 iff they
    contain "raise"."""
    strong = tiny_bert(tmp_path / "strong", layers=2)
    # the weak model's vocabulary has no informative word: it is close to chance, so there is a gap
    from transformers import BertConfig, BertModel, BertTokenizerFast

    weak = tmp_path / "weak"
    weak.mkdir()
    weak_vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(weak_vocab)}).save_pretrained(str(weak))
    BertModel(
        BertConfig(
            vocab_size=6,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(str(weak))
    # a text task the strong model can learn fast: label 1 iff the text contains "raise"
    import json
    import random

    rnd = random.Random(0)
    rows = []
    for i in range(400):
        words = rnd.sample([w for w in WORDS if w != "raise"], 5)
        if i % 2:
            words[rnd.randrange(5)] = "raise"
        rows.append(json.dumps({"text": " ".join(words), "label": i % 2}))
    data = tmp_path / "raise.jsonl"
    data.write_text("\n".join(rows) + "\n")
    return weak, strong, data


def test_finetune_backend_runs_the_protocol(tmp_path, store):
    weak, strong, data = raise_task(tmp_path)
    cfg = make_config(
        task=str(data),
        backend="finetune",
        weak_model=str(weak),
        strong_model=str(strong),
        losses=["xent", "logconf"],
        seeds=2,
        n_weak_train=100,
        n_transfer=120,
        n_val=40,
        n_test=100,
        max_length=16,
        ft_steps=40,
        ft_lr=1e-2,
        eval_every=10,
        num_threads=1,
    )
    s = run(cfg, store, write_report=False)
    d = s["losses"]["xent"]
    assert d["ceiling_acc"]["value"] > d["weak_acc"]["value"] + 0.05
    assert set(s["losses"]) == {"xent", "logconf"}
    assert len(d["curve"]["step"]) == 4  # gold accuracy recorded every 10 of 40 steps
    assert all(r["best_step"] in (10, 20, 30, 40) for r in d["per_seed"])
    assert store.index.rows(study="w2s-baseline")[0]["status"] == "done"


def test_finetune_backend_refuses_missing_models_and_feature_methods(tmp_path):
    with pytest.raises(ConfigError, match="needs a weak and a strong model"):
        run(make_config(task="stdlib-kind", backend="finetune"))
    with pytest.raises(ConfigError, match="need cached features"):
        run(
            make_config(
                task="stdlib-kind",
                backend="finetune",
                weak_model="x",
                strong_model="y",
                label_methods=["knn-refine"],
            )
        )


def tiny_gpt2(path):
    from transformers import GPT2Config, GPT2Model

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(str(path))
    return path


def test_lora_finds_gpt2s_conv1d_and_refuses_before_training(tmp_path):
    from transformers import GPT2Model

    from transferlab.models.hf_classifier import ModelError, check_lora, lora_targets_of

    gpt2 = tiny_gpt2(tmp_path / "gpt2")
    assert check_lora(str(gpt2)) == ["c_attn"]  # a Conv1D, not an nn.Linear
    wrapped = HFClassifier(GPT2Model.from_pretrained(str(gpt2)), num_labels=2, lora_r=4)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("c_attn" in n and "lora_" in n for n in names)
    ids = torch.randint(0, 64, (3, 7))
    wrapped(ids, torch.ones_like(ids)).sum().backward()  # the adapters get gradients
    assert check_lora(str(tiny_llama(tmp_path / "llama"))) == ["q_proj", "v_proj"]
    with pytest.raises(ModelError, match="not linear layers of this model"):
        check_lora(str(gpt2), ["q_proj"])
    bare = torch.nn.Sequential(torch.nn.Embedding(4, 4))
    with pytest.raises(ModelError, match="no attention projections"):
        lora_targets_of(bare)


def test_finetune_with_lora_on_an_unadaptable_model_fails_before_any_training(tmp_path, store, monkeypatch):
    from transferlab.models.hf_classifier import ModelError
    from transferlab.studies.w2s import run as R

    gpt2 = tiny_gpt2(tmp_path / "gpt2")
    trained = []
    monkeypatch.setattr(R, "build_data", lambda cfg: trained.append(cfg) or (_ for _ in ()).throw(AssertionError))
    cfg = make_config(task="stdlib-kind", backend="finetune", weak_model=str(gpt2), strong_model=str(gpt2),
                      lora=True, lora_target_modules=["q_proj"])
    with pytest.raises(ModelError, match="strong_model .*not linear layers"):
        run(cfg, store)
    assert trained == []


def test_the_weak_model_gets_its_own_settings():
    cfg = make_config(task="stdlib-kind", backend="finetune", weak_model="w", strong_model="s", ft_lr=5e-4,
                      ft_steps=60, lora=True, weak_ft_lr=1e-3, weak_ft_steps=30, weak_lora=False)
    weak = cfg.for_weak()
    assert (weak.finetune.lr, weak.finetune.steps, weak.finetune.lora) == (1e-3, 30, False)
    assert (cfg.finetune.lr, cfg.finetune.steps, cfg.finetune.lora) == (5e-4, 60, True)
    same = make_config(task="stdlib-kind", backend="finetune", weak_model="w", strong_model="s").for_weak()
    assert (same.finetune.lr, same.finetune.steps, same.finetune.lora) == (5e-4, 60, False)


def test_the_finetune_baseline_reads_no_student_field(tmp_path):
    from tests.test_w2s_study import baseline_reads, student_fields

    weak, strong, data = raise_task(tmp_path)
    cfg = make_config(task=str(data), backend="finetune", weak_model=str(weak), strong_model=str(strong),
                      losses=["xent", "logconf"], seeds=1, n_weak_train=40, n_transfer=40, n_val=20, n_test=40,
                      max_length=16, ft_steps=2, eval_every=1, weak_ft_steps=3, num_threads=1)
    reads = baseline_reads(cfg)
    assert {"weak_ft_steps", "weak_ft_lr", "weak_lora", "lora_target_modules", "ft_steps"} <= reads
    assert reads & student_fields() == set()


def test_the_weak_models_own_settings_train_a_new_weak_model(tmp_path, store, monkeypatch):
    """weak_ft_steps and weak_ft_lr change the weak model, so they key the cached floor and ceiling."""
    weak, strong, data = raise_task(tmp_path)
    base = {"task": str(data), "backend": "finetune", "weak_model": str(weak), "strong_model": str(strong),
            "seeds": 1, "n_weak_train": 100, "n_transfer": 120, "n_val": 40, "n_test": 100, "max_length": 16,
            "ft_steps": 40, "ft_lr": 1e-2, "eval_every": 10, "num_threads": 1}  # the protocol test's: a gap
    from transferlab.studies.w2s import finetune

    weak_steps = []
    real = finetune.finetune_one

    def counting(path, *args, **kw):
        if path == str(weak):
            weak_steps.append(args[8].finetune.steps)  # the config the weak model trains under
        return real(path, *args, **kw)

    monkeypatch.setattr(finetune, "finetune_one", counting)
    first = run(make_config(**base), store, write_report=False)
    steps = run(make_config(**base, weak_ft_steps=3), store, write_report=False)
    lr = run(make_config(**base, weak_ft_steps=3, weak_ft_lr=1e-3), store, write_report=False)
    again = run(make_config(**base, weak_ft_steps=3, weak_ft_lr=1e-3, losses=["logconf"]), store,
                write_report=False)
    assert [s["timing_s"]["baseline_reused"] for s in (first, steps, lr, again)] == [False, False, False, True]
    assert weak_steps == [40, 3, 3]  # one weak model per new setting; the last run reuses the floor
    assert len(store.index.rows(study="w2s-baseline")) == 3
