"""EFT arithmetic and plain decoding: the formula by hand, beta = 0 == base alone, HF generate parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_eft_tiny import make_model, make_tokenizer, one_thread  # noqa: F401
from transferlab.eft import EFT, EFTError, warp

PROMPTS = ["the cat sat on", "a big red dog ran to the", "one"]


@pytest.fixture(scope="module")
def models():
    tok = make_tokenizer()
    return {
        "tok": tok,
        "base": make_model(hidden=48, layers=3, seed=0),
        "ft": make_model(seed=2),
        "ref": make_model(seed=1),
        "ft2": make_model(seed=4),
    }


def _lsm(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _last_logits(model, tok, text: str) -> np.ndarray:
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.inference_mode():
        return model(ids).logits[0, -1].double().numpy()


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_next_token_distribution_equals_the_formula_by_hand(models, beta):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=beta)
    got = eft.next_token_logprobs(PROMPTS).double().numpy()  # batched, left padded
    for i, text in enumerate(PROMPTS):
        b, f, r = (_last_logits(m[k], tok, text) for k in ("base", "ft", "ref"))
        want = _lsm(_lsm(b) + beta * (_lsm(f) - _lsm(r)))
        assert np.abs(np.exp(got[i]) - np.exp(want)).max() < 1e-5  # the distribution
        assert np.abs(got[i] - want).max() < 1e-4  # float32 log-probs down to about -30
        assert np.abs(np.exp(got[i]).sum() - 1) < 1e-5
    # the first generated token's diagnostics carry the same numbers
    res = eft.generate(PROMPTS[0], max_new_tokens=1, greedy=True)
    t = res.generations[0].tokens[0]
    assert t.id == int(np.argmax(got[0])) and abs(t.eft_logprob - got[0].max()) < 1e-5


def test_interpolation_of_two_pairs_by_hand(models):
    m, tok = models, models["tok"]
    lam = 0.3
    eft = EFT(m["base"], [(m["ft"], m["ref"], lam), (m["ft2"], m["ref"], 1 - lam)], tok, beta=1.5)
    assert len(eft.components.models) == 4  # the shared ref is loaded and run once
    got = eft.next_token_logprobs(PROMPTS[1]).double().numpy()[0]
    b, f1, f2, r = (_last_logits(m[k], tok, PROMPTS[1]) for k in ("base", "ft", "ft2", "ref"))
    r1, r2 = _lsm(f1) - _lsm(r), _lsm(f2) - _lsm(r)
    want = _lsm(_lsm(b) + 1.5 * (lam * r1 + (1 - lam) * r2))
    assert np.abs(got - want).max() < 1e-5


def test_beta_zero_greedy_equals_base_alone(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=0.0)
    res = eft.generate(PROMPTS, max_new_tokens=12, greedy=True)
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    ref = m["base"].generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=3)
    ref_new = ref[:, enc["input_ids"].shape[1] :].tolist()
    for g, want in zip(res.generations, ref_new):
        assert g.token_ids == want[: len(g.token_ids)]
        assert all(t.eft_argmax == t.base_argmax and not t.changed_argmax for t in g.tokens)
        assert all(abs(t.eft_logprob - t.base_logprob) < 1e-5 for t in g.tokens)


def test_beta_zero_sampling_with_the_same_seed_equals_base_alone(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=0.0)
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    for seed in (0, 1, 2):
        torch.manual_seed(seed)  # seed=None draws from torch's global generator, as HF generate does
        res = eft.generate(PROMPTS, max_new_tokens=10, temperature=1.3)
        torch.manual_seed(seed)
        ref = m["base"].generate(
            **enc,
            max_new_tokens=10,
            do_sample=True,
            temperature=1.3,
            top_k=0,
            top_p=1.0,
            pad_token_id=0,
            eos_token_id=3,
        )
        for g, want in zip(res.generations, ref[:, enc["input_ids"].shape[1] :].tolist()):
            assert g.token_ids == want[: len(g.token_ids)]
    # with its own torch.Generator seed, beta = 0 EFT samples what the base model alone would
    a = eft.generate(PROMPTS, max_new_tokens=10, seed=7).generations
    alone = EFT(m["base"], [(m["base"], m["base"], 1.0)], tok, beta=1.0).generate(
        PROMPTS, max_new_tokens=10, seed=7
    )
    assert [g.token_ids for g in a] == [g.token_ids for g in alone.generations]
    other = eft.generate(PROMPTS, max_new_tokens=10, seed=8).generations
    assert [g.token_ids for g in a] != [g.token_ids for g in other]


def test_logits_processor_with_hf_generate_equals_our_generator(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=1.0)
    ours = eft.generate(PROMPTS, max_new_tokens=12, greedy=True)
    assert sum(t.changed_argmax for g in ours.generations for t in g.tokens) > 0  # the delta matters here
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    proc = eft.logits_processor(enc["attention_mask"])
    out = m["base"].generate(
        **enc, max_new_tokens=12, do_sample=False, logits_processor=[proc], pad_token_id=0, eos_token_id=3
    )
    hf = out[:, enc["input_ids"].shape[1] :].tolist()
    for g, want in zip(ours.generations, hf):
        assert g.token_ids == want[: len(g.token_ids)]
    # a second generate call restarts the processor's caches (mask inferred from leading pads)
    proc.reset(attention_mask=None)
    again = m["base"].generate(
        **enc, max_new_tokens=12, do_sample=False, logits_processor=[proc], pad_token_id=0, eos_token_id=3
    )
    assert torch.equal(again, out)


def test_batched_left_padding_equals_one_prompt_at_a_time(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=1.0)
    batched = eft.generate(PROMPTS, max_new_tokens=10, greedy=True).generations
    for p, g in zip(PROMPTS, batched):
        alone = eft.generate(p, max_new_tokens=10, greedy=True).generations[0]
        assert alone.token_ids == g.token_ids
        assert np.allclose(
            [t.eft_logprob for t in alone.tokens], [t.eft_logprob for t in g.tokens], atol=1e-4
        )


def test_each_row_stops_at_its_own_eos(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=1.0)
    free = eft.generate(PROMPTS, max_new_tokens=8, greedy=True).generations
    lengths = [len(g.token_ids) for g in free]
    assert free[1].stopped_at_eos and lengths[1] < 8 and lengths[0] == 8  # rows already stop on their own
    stop = free[0].token_ids[2]  # row 0 makes this token at step 3: call it EOS
    assert stop not in free[0].token_ids[:2]
    others_hit = [stop in g.token_ids for g in free[1:]]
    m["base"].generation_config.eos_token_id = [3, stop]
    try:
        for spec in (0, 3):
            got = eft.generate(PROMPTS, max_new_tokens=8, greedy=True, speculative=spec).generations
            assert got[0].token_ids == free[0].token_ids[:3] and got[0].stopped_at_eos
            for g, f, hit in zip(got[1:], free[1:], others_hit):
                cut = f.token_ids.index(stop) + 1 if hit else len(f.token_ids)
                assert g.token_ids == f.token_ids[:cut] and g.stopped_at_eos == (hit or f.stopped_at_eos)
    finally:
        m["base"].generation_config.eos_token_id = 3


def test_scoring_equals_step_by_step_next_token_logprobs(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=1.0)
    prompt, conts = "the cat", ["sat on a mat", "ran to the big dog"]
    scores = eft.score(prompt, conts)
    for s, c in zip(scores, conts):
        words = c.split()
        assert [t.id for t in s.tokens] == tok(c, add_special_tokens=False)["input_ids"]
        for j, t in enumerate(s.tokens):
            ctx = " ".join([prompt, *words[:j]])
            lp = eft.next_token_logprobs(ctx)[0]
            assert abs(float(lp[t.id]) - t.eft_logprob) < 1e-4
            assert t.eft_argmax == int(lp.argmax())
        assert abs(s.eft_logprob - sum(t.eft_logprob for t in s.tokens)) < 1e-9
    assert scores[0].eft_logprob != pytest.approx(scores[0].base_logprob)


def test_negative_beta_needs_an_explicit_flag(models):
    m, tok = models, models["tok"]
    with pytest.raises(EFTError, match="negative beta .*--allow-negative-beta"):
        EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=-0.5)
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=-0.5, allow_negative_beta=True)
    got = eft.next_token_logprobs(PROMPTS[0]).double().numpy()[0]
    b, f, r = (_last_logits(m[k], tok, PROMPTS[0]) for k in ("base", "ft", "ref"))
    assert np.abs(got - _lsm(_lsm(b) - 0.5 * (_lsm(f) - _lsm(r)))).max() < 1e-5


def test_prompts_longer_than_the_context_are_refused(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok, beta=1.0)
    long = " ".join(["the cat"] * 40)  # 81 tokens > 64
    with pytest.raises(EFTError, match="prompt 2: is 81 tokens, longer than the models' context of 64"):
        eft.generate(["one", long], max_new_tokens=2)
    with pytest.raises(EFTError, match="lower --max-new-tokens to at most 60"):
        eft.generate("the cat sat", max_new_tokens=100)
    with pytest.raises(EFTError, match="context of 64"):
        eft.score("the", long)


def test_bad_settings_are_refused(models):
    m, tok = models, models["tok"]
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], tok)
    for kw, word in [
        ({"temperature": 0}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ]:
        with pytest.raises(EFTError, match=word):
            eft.generate("one", **kw)


def test_warp_temperature_top_k_top_p():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(4, 50) * 2, -1)
    t2 = warp(lp, temperature=2.0)
    assert torch.allclose(t2, torch.log_softmax(lp / 2, -1), atol=1e-6)
    k5 = warp(lp, top_k=5)
    assert (torch.isfinite(k5).sum(-1) == 5).all()
    assert torch.equal(torch.isfinite(k5), lp >= lp.topk(5).values[:, -1:])
    p9 = warp(lp, top_p=0.9).exp()
    kept = p9 > 0
    probs = lp.exp()
    for i in range(4):
        mass = probs[i][kept[i]].sum()
        smallest_kept = probs[i][kept[i]].min()
        assert mass >= 0.9 - 1e-6 and mass - smallest_kept < 0.9  # the smallest head reaching 0.9
    assert torch.allclose(p9.sum(-1), torch.ones(4))
