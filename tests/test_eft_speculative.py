"""Speculative EFT keeps the EFT distribution: exact acceptance math, greedy parity, a chi-square test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from tests.test_eft_core import PROMPTS
from tests.test_eft_tiny import make_model, make_tokenizer, one_thread  # noqa: F401
from transferlab.eft import EFT, accept_counts, residual


@pytest.fixture(scope="module")
def eft():
    tok = make_tokenizer()
    return EFT(make_model(hidden=48, layers=3, seed=0), [(make_model(seed=2), make_model(seed=1), 1.0)], tok)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_speculative_equals_plain_greedy_token_for_token(eft, k):
    plain = eft.generate(PROMPTS, max_new_tokens=14, greedy=True)
    spec = eft.generate(PROMPTS, max_new_tokens=14, greedy=True, speculative=k)
    assert spec.stats["drafted"] > 0 and spec.stats["steps"] < sum(len(g.token_ids) for g in spec.generations)
    for a, b in zip(plain.generations, spec.generations):
        assert a.token_ids == b.token_ids and a.stopped_at_eos == b.stopped_at_eos
        assert np.allclose([t.eft_logprob for t in a.tokens], [t.eft_logprob for t in b.tokens], atol=1e-4)
        assert [t.changed_argmax for t in a.tokens] == [t.changed_argmax for t in b.tokens]


def test_acceptance_math_gives_exactly_p_on_fixed_distributions():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = torch.log_softmax(torch.randn(7, generator=g) * 2, -1)
        q = torch.log_softmax(torch.randn(7, generator=g) * 2, -1)
        accept = torch.minimum(torch.ones(7), (p - q).exp())  # P(accept | draft x)
        reject = 1 - (q.exp() * accept).sum()
        out = q.exp() * accept + reject * residual(p[None], q[None])[0]
        assert torch.allclose(out, p.exp(), atol=1e-6)
    # the sampled rule: accept_counts uses u < p/q, so over many uniforms the acceptance rate is sum min(p, q)
    p = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0, 0.5]]), -1)
    q = torch.log_softmax(torch.tensor([[0.0, 2.0, 0.0, 0.0]]), -1)
    n = 200_000
    drafts = torch.multinomial(q.exp()[0], n, replacement=True, generator=g)[:, None]
    u = torch.rand(n, 1, generator=g)
    acc = accept_counts(p.expand(n, 1, 4), q.expand(n, 1, 4), drafts, u).float().mean()
    assert abs(float(acc) - float(torch.minimum(p.exp(), q.exp()).sum())) < 4e-3


def _exact_two_token(eft, prompt_ids: list[int], temperature: float) -> np.ndarray:
    v = eft.components.vocab_size
    first = torch.log_softmax(eft.next_token_logprobs([prompt_ids])[0] / temperature, -1).double().exp()
    second = eft.next_token_logprobs([prompt_ids + [y] for y in range(v)])
    second = torch.log_softmax(second / temperature, -1).double().exp()
    joint = (first[:, None] * second).numpy()  # joint[y1, y2]
    eos = eft.components.eos_ids()[0]
    joint[eos, :] = 0.0
    joint[eos, 0] = float(first[eos])  # a row that drew EOS first stops: one outcome, kept in cell (eos, 0)
    return joint


def _counts(gens, v: int) -> np.ndarray:
    c = np.zeros((v, v))
    for g in gens:
        c[g.token_ids[0], g.token_ids[1] if len(g.token_ids) > 1 else 0] += 1
    return c


def _chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    n = counts.sum()
    exp = probs.ravel() * n
    obs = counts.ravel()
    big = exp >= 5  # merge the rare cells into one
    o = np.append(obs[big], obs[~big].sum())
    e = np.append(exp[big], exp[~big].sum())
    return float(stats.chisquare(o, e * o.sum() / e.sum()).pvalue)


def test_speculative_and_plain_sample_the_same_two_token_distribution():
    tok = make_tokenizer()
    ref = make_model(seed=1, init=0.1)
    # a near-copy fine-tune and a base close to it: drafts are often, not always, accepted
    ft = make_model(seed=1, init=0.1)
    base = make_model(seed=1, init=0.1)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(5)
        for p in ft.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for p in base.parameters():
            p.add_(0.08 * torch.randn(p.shape, generator=gen))
    eft = EFT(base, [(ft, ref, 1.0)], tok, beta=1.0)
    prompt = "the cat sat on"
    ids = tok(prompt)["input_ids"]
    temperature = 1.5
    joint = _exact_two_token(eft, ids, temperature)
    v = joint.shape[0]
    spec_gens, plain_gens, acc = [], [], []
    for i in range(200):  # 200 calls x 8 rows = 1600 samples of each
        res = eft.generate(
            [prompt] * 8, max_new_tokens=3, temperature=temperature, seed=1000 + i, speculative=2
        )
        spec_gens += res.generations
        acc.append(res.stats["acceptance_rate"])
        plain_gens += eft.generate(
            [prompt] * 8, max_new_tokens=2, temperature=temperature, seed=5000 + i
        ).generations
    assert 0.3 < np.mean(acc) < 0.98, np.mean(acc)  # the accept and the reject paths both ran
    spec, plain = _counts(spec_gens, v), _counts(plain_gens, v)
    assert _chi2(spec, joint) > 1e-3
    assert _chi2(plain, joint) > 1e-3
    # the test has power: the drafter's own distribution is rejected by the same samples
    wrong = _exact_two_token(EFT(ft, [(ft, ft, 1.0)], tok), ids, temperature)
    assert np.abs(wrong - joint).sum() > 0.1
    assert _chi2(spec, wrong) < 1e-6
