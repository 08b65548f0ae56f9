"""ICL refinement (Somerstep et al.): the label method on a tiny Hugging Face causal LM built here, the miniature's
concept prior and in-context model, the exponential fit, and the icl-concepts run with its JSON contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.core.config import config_keys
from transferlab.core.errors import ConfigError
from transferlab.studies.w2s.analysis import fit_exponential_decay
from transferlab.studies.w2s.icl import (
    ConceptSpec,
    bayes_label_probs,
    concept_table,
    misalignment,
    model_shape,
    pretrain,
    refine,
)
from transferlab.studies.w2s.icl_refine import (
    build_prompt,
    encode,
    label_token_ids,
    next_token_label_probs,
    pick_demos,
    refine_texts,
    sample_labels,
)
from transferlab.studies.w2s.run import make_config, run

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "label", ":", "yes", "no", "the", "cat", "dog", "is", "big",
         "small", "a", "red", "blue", "ball"]
TEMPLATE = "{text}\nLabel: {label}\n\n"


def tiny_causal_lm(path):
    """A 2-layer LlamaForCausalLM with a WordPiece tokenizer, saved with save_pretrained (nothing downloaded)."""
    from transformers import BertTokenizerFast, LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger logits than the default init, so the label words' probabilities differ
        model.lm_head.weight.mul_(40)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from transferlab.models.hf_causal import load_causal_lm, load_tokenizer

    path = tiny_causal_lm(tmp_path_factory.mktemp("lm") / "tiny")
    return path, load_causal_lm(path), load_tokenizer(path)


# --------------------------------------------------------------------------- the label method on a causal LM
def test_prompt_is_the_demonstrations_then_the_query_cut_before_its_label():
    p = build_prompt(TEMPLATE, [("the cat", "yes"), ("a dog", "no")], "the ball")
    assert p == "the cat\nLabel: yes\n\na dog\nLabel: no\n\nthe ball\nLabel:"


def test_label_words_are_read_from_the_next_token_probabilities(lm):
    _, model, tok = lm
    ids = label_token_ids(tok, TEMPLATE, ["no", "yes"])
    assert ids == tok.convert_tokens_to_ids(["no", "yes"])
    prompts = ["the cat\nLabel:", build_prompt(TEMPLATE, [("the big red ball", "yes")], "a dog"),
               build_prompt(TEMPLATE, [("the cat", "no"), ("a small dog is blue", "yes")], "the ball")]
    got = next_token_label_probs(model, tok, prompts, ids, batch_size=2)  # padded batches, sorted by length
    for row, prompt in zip(got, prompts):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([encode(tok, prompt)])).logits[0, -1]
        want = torch.softmax(logits[ids], -1)
        assert torch.allclose(row, want, atol=1e-5)
    assert torch.allclose(got.sum(1), torch.ones(3))
    assert (got[:, 0] - got[:, 1]).abs().max() > 0.01  # the reading depends on the prompt


def test_label_words_sharing_a_first_token_are_refused(lm):
    _, _, tok = lm
    with pytest.raises(ConfigError, match="start with the same token"):
        label_token_ids(tok, TEMPLATE, ["cat", "cat dog"])


def test_refine_texts_gives_one_distribution_per_query_and_samples_from_it(lm):
    path, _, _ = lm
    texts = ["the cat is big", "a dog is small", "the red ball", "a blue ball", "the dog", "a cat is red"]
    weak = torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 0, 0, 1]), 2).float()
    kw = {"k": 3, "template": TEMPLATE, "words": ["no", "yes"], "seed": 0, "max_length": 16}
    p = refine_texts(path, texts, weak, torch.arange(6), torch.arange(6), **kw)
    assert p.shape == (6, 2) and torch.allclose(p.sum(1), torch.ones(6))
    assert torch.equal(p, refine_texts(path, texts, weak, torch.arange(6), torch.arange(6), **kw))  # seeded
    draws = torch.stack([sample_labels(p, torch.Generator().manual_seed(s)) for s in range(400)])
    assert torch.allclose(draws.mean(0), p, atol=0.1)  # sampled labels follow the read probabilities


def test_demonstrations_never_include_the_query():
    demos = pick_demos(torch.arange(10), torch.arange(10), 9, torch.Generator().manual_seed(0))
    assert all(q not in row.tolist() and len(set(row.tolist())) == 9 for q, row in enumerate(demos))
    with pytest.raises(ConfigError, match="icl_k=10 demonstrations need at least 11"):
        pick_demos(torch.arange(10), torch.arange(10), 10, torch.Generator())


def test_icl_config_errors_are_one_line():
    bad = [({"icl_template": "{label}: {text}"}, "must come before"),
           ({"icl_template": "{text} only"}, "exactly one"),
           ({"icl_label_words": "yes,yes"}, "distinct"),
           ({"label_methods": ["icl-refine"]}, "needs a causal LM"),
           ({"task": "icl-concepts", "losses": ["logconf"], "label_methods": ["icl-refine"]}, "xent"),
           ({"task": "icl-concepts", "icl_ks": "1,40"}, "at most 39"),
           ({"task": "icl-concepts", "icl_label_words": "no,yes"}, "apply to text tasks"),
           ({"task": "synthetic-noisy", "icl_bits": 4}, "apply to task icl-concepts only")]
    for values, match in bad:
        with pytest.raises(ConfigError, match=match) as err:
            make_config(**values)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- the fit
def test_the_fit_recovers_a_known_exponential_rate():
    ks = np.array([1, 2, 4, 8, 16, 32])
    fit = fit_exponential_decay(ks, 0.4 * np.exp(-0.15 * ks))
    assert fit["decay_rate"] == pytest.approx(0.15, rel=1e-9) and fit["amplitude"] == pytest.approx(0.4)
    assert fit["r2"] == pytest.approx(1.0) and fit["half_k"] == pytest.approx(math.log(2) / 0.15)
    noisy = 0.4 * np.exp(-0.15 * ks) * np.exp(np.random.default_rng(0).normal(0, 0.05, ks.size))
    fit = fit_exponential_decay(ks, noisy)
    assert abs(fit["decay_rate"] - 0.15) < 0.02 and 0.95 < fit["r2"] < 1.0
    flat = fit_exponential_decay(ks, np.full(6, 0.2) + np.random.default_rng(1).normal(0, 0.01, 6))
    assert abs(flat["decay_rate"]) < 0.01 and flat["r2"] < 0.5  # no decay: a rate near 0 that explains little
    assert math.isnan(fit_exponential_decay([1, 2], [0.2, 0.1])["decay_rate"])


# --------------------------------------------------------------------------- the miniature
def biased_world(bits=4, frac=0.2, n=600, seed=0):
    table = concept_table(bits)
    g = torch.Generator().manual_seed(seed)
    target = int(torch.randint(len(table), (1,), generator=g))
    x = torch.randint(2 ** bits, (n,), generator=g)
    y = table[target, x]
    wrong = torch.zeros(2 ** bits, dtype=torch.long)
    wrong[torch.randperm(2 ** bits, generator=g)[: round(frac * 2 ** bits)]] = 1
    return table, x, y, (y + wrong[x]) % 2


def test_concept_family_is_balanced_sparse_parities():
    table = concept_table(4)
    assert table.shape == (2 * (4 + 6), 16)
    assert torch.all(table.sum(1) == 8)  # every concept labels half the inputs 1
    assert len({tuple(r.tolist()) for r in table}) == len(table)


def test_the_bayes_predictor_refines_biased_labels_towards_the_target():
    """The setting's premise: under the concept prior, more weakly labelled demonstrations move the posterior
    onto the target, so the misalignment of refined labels falls towards 0."""
    spec = ConceptSpec(bits=4, noise=0.1)
    table, x, y, weak = biased_world(frac=0.125)
    q, pool = torch.arange(300, 600), torch.arange(300)
    out = {}
    for k in (1, 4, 16, 32):
        demos = pick_demos(q, pool, k, torch.Generator().manual_seed(k))
        p1 = bayes_label_probs(table, spec, x[demos], weak[demos], x[q])
        out[k] = float(misalignment(torch.stack([1 - p1, p1], 1), y[q], spec.noise).mean())
    weak_mis = float(misalignment(torch.nn.functional.one_hot(weak[q], 2).float(), y[q], spec.noise).mean())
    assert out[1] > out[4] > out[16] > out[32] and out[16] < 0.5 * weak_mis and out[32] < 0.15 * weak_mis
    fit = fit_exponential_decay(list(out), list(out.values()))
    assert fit["decay_rate"] > 0.05 and fit["r2"] > 0.95  # an exponential in k, as the paper proves


def test_a_pretrained_in_context_model_refines_better_with_more_demonstrations():
    spec = ConceptSpec(bits=3, noise=0.1)
    model, curve = pretrain(spec, model_shape(spec, 32, 2, 20), steps=400, batch=32, lr=3e-3, seed=0, log_every=50)
    assert curve[-1][1] < curve[0][1]
    table, x, y, weak = biased_world(bits=3, frac=0.125, n=400, seed=2)  # an easy case: 1 of 8 inputs mislabelled
    q, pool = torch.arange(200, 400), torch.arange(200)
    mis, bayes = {}, {}
    for k in (1, 4, 16):
        mis[k] = float(misalignment(refine(model, spec, x, weak, q, pool, k, torch.Generator().manual_seed(k)), y[q],
                                    spec.noise).mean())
        demos = pick_demos(q, pool, k, torch.Generator().manual_seed(k))  # the same demonstrations
        p1 = bayes_label_probs(table, spec, x[demos], weak[demos], x[q])
        bayes[k] = float(misalignment(torch.stack([1 - p1, p1], 1), y[q], spec.noise).mean())
    assert mis[1] > mis[4] > mis[16] and mis[16] < 0.5 * mis[1]
    assert all(abs(mis[k] - bayes[k]) < 0.08 for k in mis)  # close to the Bayes predictor of the prior


def test_icl_concepts_run_carries_the_refinement_contract_and_reuses_its_model(store):
    from transferlab.studies.w2s.study import json_view

    base = {"task": "icl-concepts", "losses": ["xent"], "label_methods": ["icl-refine"], "seeds": 3,
            "n_examples": 300, "icl_bits": 3, "icl_d_model": 32, "icl_layers": 1, "icl_pretrain_steps": 150,
            "icl_ft_steps": 20, "icl_ks": [1, 4], "icl_k": 4, "min_gap": 0.0}
    s1 = run(make_config(**base), store, write_report=True)
    view = json_view(s1)["refinement"]
    assert view["k"] == [1, 4]
    for key in ("misalignment", "student_misalignment", "bayes_misalignment", "pgr"):
        assert len(view[key]) == 2 and all({"value", "lo", "hi"} <= set(r) for r in view[key])
    assert {"decay_rate", "r2", "naive_misalignment"} <= set(view)
    assert 0.0 <= view["naive_misalignment"]["value"] <= 1.0
    assert set(s1["losses"]) == {"xent", "icl-refine"}
    assert s1["icl_model"]["reused"] is False
    assert "Refinement by in-context learning" in (store.root / "w2s" / s1["run_id"] / "report.html").read_text()
    # another refinement sweep: the in-context model and the floor/ceiling are reused
    s2 = run(make_config(**{**base, "icl_ks": [2, 4], "icl_read": "probs"}), store, write_report=False)
    assert s2["icl_model"]["reused"] is True and s2["timing_s"]["baseline_reused"] is True
    assert len(store.index.rows(study="w2s-icl-model")) == 1


def test_the_icl_baseline_reads_no_student_field():
    """The floor and ceiling of icl-concepts are keyed without the refinement's own settings (k, template, label
    words, reading): the baseline code must not read them."""
    from tests.test_w2s_study import baseline_reads
    from transferlab.core.config import config_keys
    from transferlab.studies.w2s.config import STUDENT_PARTS, W2SConfig

    student_keys = {k for k, path in config_keys(W2SConfig).paths.items() if path[0] in STUDENT_PARTS}

    cfg = make_config(task="icl-concepts", losses=["xent"], label_methods=["icl-refine"], seeds=1, n_examples=200,
                      icl_bits=3, icl_d_model=32, icl_layers=1, icl_pretrain_steps=5, icl_ft_steps=5)
    reads = baseline_reads(cfg)
    assert {"icl_pretrain_steps", "icl_weak_error", "icl_ft_steps", "seed"} <= reads
    assert {"icl_k", "icl_template", "icl_label_words", "icl_read", "icl_ks"} <= student_keys
    assert reads & student_keys == set()


def test_icl_keys_stay_out_of_earlier_run_ids_and_key_what_they_change():
    from transferlab.studies.w2s.config import W2SConfig
    from transferlab.studies.w2s.run import baseline_config

    assert W2SConfig.HASH_WHEN_CHANGED == {k for k in config_keys(W2SConfig).paths if k.startswith("icl_")}
    default = make_config(task="icl-concepts")
    assert make_config(task="icl-concepts", icl_ks=[1, 2, 4, 8, 16, 32]).config_hash() == default.config_hash()
    assert make_config(task="icl-concepts", icl_ks=[1, 2]).config_hash() != default.config_hash()

    def keys(**values):
        cfg = make_config(**values)
        return cfg.config_hash(), baseline_config(cfg, {"transfer": 1}, []).config_hash()

    run1, base1 = keys(task="icl-concepts", icl_k=4)  # a student's setting: a new run on the same floor and ceiling
    run2, base2 = keys(task="icl-concepts", icl_bits=5)  # the miniature's world: a new floor and ceiling
    run0, base0 = keys(task="icl-concepts")
    assert run1 != run0 and base1 == base0
    assert run2 != run0 and base2 != base0
