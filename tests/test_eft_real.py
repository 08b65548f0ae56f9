"""EFT with real model families' needs: per-model prompt formats (chat ft on plain bases, one BOS),
stop strings / stopping criteria / logits processors, the adaptive speculative draft, placement and
precision settings, and the current cache API (no deprecated ``past_key_values``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.test_eft_tiny import WORDS, make_model, make_tokenizer, one_thread, save  # noqa: F401
from transferlab.eft import EFT, EFTError
from transferlab.eft.prompts import PromptFormatError, render
from transferlab.models.hf_causal import ModelLoadError

CHAT_WORDS = WORDS + ["user", "assistant", "system"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)


def chat_tokenizer(template: str | None = TEMPLATE):
    tok = make_tokenizer(CHAT_WORDS)
    if template is not None:
        tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def chat_models():
    v = len(CHAT_WORDS) + 4
    return {
        "plain_tok": chat_tokenizer(None),
        "chat_tok": chat_tokenizer(),
        "base": make_model(hidden=48, layers=3, seed=0, vocab=v),
        "ft": make_model(seed=2, vocab=v),
        "ref": make_model(seed=1, vocab=v),
    }


def _lsm(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _last(model, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1].double().numpy()


def test_chat_format_has_exactly_one_bos():
    tok = chat_tokenizer()
    ids = render(tok, "the cat", "chat")
    vocab = tok.get_vocab()
    assert ids == [2, vocab["user"], vocab["the"], vocab["cat"], vocab["assistant"]]
    # the naive way (render to text, then tokenize with special tokens) doubles the BOS: the test has power
    text = tok.apply_chat_template([{"role": "user", "content": "the cat"}], add_generation_prompt=True, tokenize=False)
    assert tok(text)["input_ids"][:2] == [2, 2]
    # a template that does not write the BOS gets the one the tokenizer adds to plain text
    no_bos = chat_tokenizer(TEMPLATE.replace("{{ bos_token }}", ""))
    assert render(no_bos, "the cat", "chat") == ids
    assert render(tok, "the cat", "chat", system="one")[:4] == [2, vocab["system"], vocab["one"], vocab["user"]]
    assert render(tok, "the cat", "plain") == [2, vocab["the"], vocab["cat"]]


def test_chat_ft_on_plain_bases_equals_the_formula_on_each_models_own_context(chat_models):
    m = chat_models
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], m["plain_tok"], tokenizers={"ft": m["chat_tok"]}, chat=["ft"])
    assert eft.components.formats == ["plain", "chat", "plain"]
    prompts = ["the cat sat on", "one"]
    got = eft.next_token_logprobs(prompts).double().numpy()
    res = eft.generate(prompts, max_new_tokens=6, greedy=True)
    for i, p in enumerate(prompts):
        plain = render(m["plain_tok"], p, "plain")
        chat = render(m["chat_tok"], p, "chat")
        assert chat.count(2) == 1 and len(chat) == len(plain) + 2
        want = _lsm(_lsm(_last(m["base"], plain)) + _lsm(_last(m["ft"], chat)) - _lsm(_last(m["ref"], plain)))
        assert np.abs(got[i] - want).max() < 1e-4
        # greedy decoding by hand, every model on its own context without a cache
        gen: list[int] = []
        for _ in range(len(res.generations[i].token_ids)):
            lp = _lsm(_lsm(_last(m["base"], plain + gen)) + _lsm(_last(m["ft"], chat + gen))
                      - _lsm(_last(m["ref"], plain + gen)))
            gen.append(int(lp.argmax()))
        assert res.generations[i].token_ids == gen
    # plain formats everywhere give different tokens: the chat view matters here
    same = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], m["plain_tok"]).generate(prompts, max_new_tokens=6, greedy=True)
    assert [g.token_ids for g in same.generations] != [g.token_ids for g in res.generations]
    # speculative EFT keeps one view per model too: token for token the same
    for k in (2, 4):
        spec = eft.generate(prompts, max_new_tokens=6, greedy=True, speculative=k, adaptive=False)
        assert [g.token_ids for g in spec.generations] == [g.token_ids for g in res.generations]
    # scoring: the continuation follows each model's own view of the prompt
    s = eft.score("the cat", "sat on a mat")[0]
    plain, chat = render(m["plain_tok"], "the cat", "plain"), render(m["chat_tok"], "the cat", "chat")
    cont = m["plain_tok"]("sat on a mat", add_special_tokens=False)["input_ids"]
    for j, t in enumerate(s.tokens):
        lp = _lsm(_lsm(_last(m["base"], plain + cont[:j])) + _lsm(_last(m["ft"], chat + cont[:j]))
                  - _lsm(_last(m["ref"], plain + cont[:j])))
        assert abs(lp[t.id] - t.eft_logprob) < 1e-4


def test_prompt_format_errors_are_one_line(chat_models):
    m = chat_models
    with pytest.raises(PromptFormatError, match="has no chat template") as err:
        EFT(m["base"], [(m["ft"], m["ref"], 1.0)], m["plain_tok"], chat=["ft"])
    assert "\n" not in err.value.one_line()
    with pytest.raises(EFTError, match="unknown role 'sft'"):
        EFT(m["base"], [(m["ft"], m["ref"], 1.0)], m["chat_tok"], chat=["sft"])
    with pytest.raises(EFTError, match="roles base, ft1, ref1 with different prompt formats"):
        EFT(m["base"], [(m["base"], m["base"], 1.0)], m["chat_tok"], chat=["ft"])
    eft = EFT(m["base"], [(m["ft"], m["ref"], 1.0)], m["chat_tok"], chat=["ft"])
    with pytest.raises(EFTError, match="cannot give one of them a chat-formatted prompt"):
        eft.logits_processor()


@pytest.fixture(scope="module")
def plain_eft():
    tok = make_tokenizer()
    return EFT(make_model(hidden=48, layers=3, seed=0), [(make_model(seed=2), make_model(seed=1), 1.0)], tok)


PROMPTS = ["the cat sat on", "a big red dog ran to the", "one"]


def test_stop_strings_and_stopping_criteria(plain_eft):
    eft, tok = plain_eft, plain_eft.tokenizer
    free = eft.generate(PROMPTS, max_new_tokens=8, greedy=True).generations
    row = free[0].token_ids
    stop_word = tok.decode([row[2]])
    assert stop_word not in tok.decode(row[:2])
    for spec in (0, 3):
        got = eft.generate(PROMPTS, max_new_tokens=8, greedy=True, stop=stop_word, speculative=spec).generations
        assert got[0].token_ids == row[:3] and got[0].stop_reason == "stop" and not got[0].stopped_at_eos
        for g, f in zip(got[1:], free[1:]):  # the other rows stop at the word too, if they ever make it
            words = [tok.decode([t]) for t in f.token_ids]
            cut = words.index(stop_word) + 1 if stop_word in words else len(f.token_ids)
            assert g.token_ids == f.token_ids[:cut]
    width = tok(PROMPTS, padding=True)["input_ids"]
    n0 = max(len(x) for x in width)
    seen = []

    def two_more(input_ids, scores):  # a transformers StoppingCriteria: (ids, scores) -> bool per row
        seen.append(tuple(input_ids.shape))
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= n0 + 2)

    got = eft.generate(PROMPTS, max_new_tokens=8, greedy=True, stopping_criteria=[two_more]).generations
    assert seen[0] == (3, n0 + 1)  # the base model's view: padded prompt + the new token
    for g, f in zip(got, free):
        assert g.token_ids == f.token_ids[: len(g.token_ids)]
        assert g.stop_reason == ("eos" if f.stopped_at_eos and len(f.token_ids) <= 2 else "criteria")
    from transformers import MaxLengthCriteria

    got = eft.generate(PROMPTS[:1], max_new_tokens=8, greedy=True,
                       stopping_criteria=[MaxLengthCriteria(len(tok(PROMPTS[0])["input_ids"]) + 3)]).generations
    assert got[0].token_ids == row[:3] and got[0].stop_reason == "criteria"
    with pytest.raises(EFTError, match="stop strings must be non-empty"):
        eft.generate("one", stop=[""])


def test_logits_processors_reshape_the_eft_distribution(plain_eft):
    eft = plain_eft
    free = eft.generate(PROMPTS, max_new_tokens=6, greedy=True).generations
    banned = free[0].token_ids[0]
    calls = []

    def ban(input_ids, scores):
        calls.append(input_ids.shape[1])
        return scores.index_fill(-1, torch.tensor([banned]), float("-inf"))

    got = eft.generate(PROMPTS, max_new_tokens=6, greedy=True, logits_processors=[ban])
    for g in got.generations:
        assert banned not in g.token_ids
    first = eft.next_token_logprobs(PROMPTS[0])[0].clone()
    first[banned] = float("-inf")
    assert got.generations[0].token_ids[0] == int(first.argmax())
    # the diagnostics keep the EFT log-prob of the chosen token (before the processor)
    lp = float(eft.next_token_logprobs(PROMPTS[0])[0, first.argmax()])
    assert abs(got.generations[0].tokens[0].eft_logprob - lp) < 1e-5
    spec = eft.generate(PROMPTS, max_new_tokens=6, greedy=True, logits_processors=[ban], speculative=3, adaptive=False)
    assert [g.token_ids for g in spec.generations] == [g.token_ids for g in got.generations]
    from transformers import NoRepeatNGramLogitsProcessor

    out = eft.generate(PROMPTS[1], max_new_tokens=20, greedy=True, logits_processors=[NoRepeatNGramLogitsProcessor(2)])
    ids = eft.tokenizer(PROMPTS[1])["input_ids"] + out.generations[0].token_ids
    bigrams = list(zip(ids, ids[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_adaptive_draft_length_falls_back_to_plain_steps_when_drafts_fail():
    from transferlab.eft.speculative import DraftLength

    plan = DraftLength(8)
    seq = []
    for _ in range(20):  # every draft rejected
        k = plan.next()
        seq.append(k)
        plan.update(k, 0)
    assert seq[:9] == [8, 4, 2, 1, 0, 1, 0, 0, 1] and seq[9:14] == [0, 0, 0, 0, 1] and seq.count(0) >= 10
    plan = DraftLength(8)
    plan.update(8, 8)
    assert plan.next() == 8
    plan.update(8, 3)
    assert plan.next() == 6
    plan.update(6, 6)
    assert plan.next() == 8
    plan.update(2, 2)  # a block cut short by max_new_tokens
    assert plan.next() == 4
    fixed = DraftLength(4, adaptive=False)
    fixed.update(4, 0)
    assert fixed.next() == 4


def test_adaptive_speculative_with_failing_drafts_is_exact_and_drafts_little():
    tok = make_tokenizer()
    base, ft, ref = make_model(hidden=48, layers=3, seed=0), make_model(seed=7), make_model(seed=1)
    eft = EFT(base, [(ft, ref, 1.0)], tok)
    plain = eft.generate(PROMPTS, max_new_tokens=24, greedy=True)
    fixed = eft.generate(PROMPTS, max_new_tokens=24, greedy=True, speculative=6, adaptive=False)
    adaptive = eft.generate(PROMPTS, max_new_tokens=24, greedy=True, speculative=6)
    assert fixed.stats["acceptance_rate"] < 0.3  # the drafter is a poor guesser here
    for a, b, c in zip(plain.generations, fixed.generations, adaptive.generations):
        assert a.token_ids == b.token_ids == c.token_ids
    assert adaptive.stats["plain_steps"] > 0 and adaptive.stats["drafted"] < fixed.stats["drafted"] / 3
    # sampling stays seeded and reproducible
    a = eft.generate(PROMPTS, max_new_tokens=10, seed=3, speculative=4).generations
    b = eft.generate(PROMPTS, max_new_tokens=10, seed=3, speculative=4).generations
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_decoding_uses_the_current_cache_argument(plain_eft):
    from transferlab.eft.components import cache_argument

    assert cache_argument(plain_eft.components.models[0]) in ("cache", "past_key_values")

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None):
            return None

    assert cache_argument(Old()) == "past_key_values"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the past_key_values deprecation would fail here
        plain_eft.generate(PROMPTS, max_new_tokens=4, greedy=True)
        plain_eft.generate(PROMPTS, max_new_tokens=4, greedy=True, speculative=2)
        plain_eft.score("the cat", "sat on")
        plain_eft.next_token_logprobs(PROMPTS)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp("eft_real")
    tok = make_tokenizer()
    return {
        "base": save(make_model(hidden=48, layers=3, seed=0), tok, root / "base"),
        "ft": save(make_model(seed=2), tok, root / "ft"),
        "ref": save(make_model(seed=1), tok, root / "ref"),
    }


def test_placement_and_precision_settings(trio, monkeypatch):
    from transferlab.models import hf_causal

    want = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device="cpu").generate(
        PROMPTS, max_new_tokens=6, greedy=True)
    if not torch.cuda.is_available():
        assert str(hf_causal.resolve_device("auto")) == "cpu"
        with pytest.raises(ModelLoadError, match="sees no CUDA GPU") as err:
            EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device="cuda")
        assert "\n" not in err.value.one_line() and "--device cpu" in err.value.one_line()
    else:
        on_gpu = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device="cuda")
        assert on_gpu.components.device.type == "cuda"
        got = on_gpu.generate(PROMPTS, max_new_tokens=6, greedy=True)
        assert [g.token_ids for g in got.generations] == [g.token_ids for g in want.generations]
    for kw in ({"device": {"base": "cpu", "ft": "cpu"}}, {"device_map": "cpu"}, {"attn_implementation": "sdpa"},
               {"attn_implementation": "eager", "dtype": "auto"}):
        eft = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], **kw)
        got = eft.generate(PROMPTS, max_new_tokens=6, greedy=True)
        assert [g.token_ids for g in got.generations] == [g.token_ids for g in want.generations], kw
    bf = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device="cpu", dtype="bfloat16")
    assert bf.components.models[0].dtype == torch.bfloat16
    assert torch.isfinite(bf.next_token_logprobs(PROMPTS)).any()
    with pytest.raises(EFTError, match="unknown role 'big'"):
        EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device={"big": "cpu"})
    with pytest.raises(ModelLoadError, match="unknown attention implementation 'fast'"):
        EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], attn_implementation="fast")
    with pytest.raises(ModelLoadError, match="'gpu7' is not a torch device"):
        EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device="gpu7")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(ModelLoadError, match="8bit loading needs the 'bitsandbytes' package") as err:
        EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], quantization="8bit")
    assert "pip install bitsandbytes" in err.value.one_line()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert str(hf_causal.resolve_device("auto")) == "cuda"


def test_cli_placement_errors_prompts_file_and_switches(cli, trio, tmp_path, monkeypatch):
    import io
    import json

    args = ["eft", "generate", "--base", str(trio["base"]), "--ft", str(trio["ft"]), "--ref", str(trio["ref"])]
    if not torch.cuda.is_available():
        code, out, err = cli([*args, "--prompt", "one", "--device", "cuda"])
        assert code == 2 and err.strip().count("\n") == 0 and "sees no CUDA GPU" in err and "Traceback" not in err
    code, _, err = cli([*args, "--prompt", "one", "--model-device", "base"])
    assert code == 2 and "is not ROLE=DEVICE" in err
    pf = tmp_path / "prompts.txt"
    pf.write_text("the cat sat on\n\n" + json.dumps({"prompt": "a big red dog ran to the"}) + "\n\"one\"\n")
    code, out, err = cli([*args, "--prompts-file", str(pf), "--greedy", "--max-new-tokens", "5", "--batch-size", "2",
                          "--json", "--device", "cpu"])
    assert code == 0, err
    got = json.loads(out)
    api = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], device="cpu")
    want = api.generate(PROMPTS, max_new_tokens=5, greedy=True)
    assert [g["prompt"] for g in got["generations"]] == PROMPTS and got["stats"]["batches"] == 2
    assert [g["token_ids"] for g in got["generations"]] == [g.token_ids for g in want.generations]
    monkeypatch.setattr("sys.stdin", io.StringIO("one\n"))
    code, out, err = cli([*args, "--prompts-file", "-", "--no-greedy", "--seed", "1", "--max-new-tokens", "3",
                          "--json"])
    assert code == 0, err
    assert json.loads(out)["generations"][0]["prompt"] == "one"
    code, _, err = cli([*args])
    assert code == 2 and "no prompt given" in err


def test_cli_help_shows_switches_and_every_option_has_help(cli, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "200")
    for cmd in ("generate", "score"):
        code, out, _ = cli(["eft", cmd, "--help"])
        assert code == 0
        rows = [r for r in out.splitlines() if re.match(r"^│ [ *]  --", r)]
        assert len(rows) > 12
        for r in rows:
            name = r.split()[2] if r.split()[1] == "*" else r.split()[1]
            body = r.split("│")[1]
            assert "<bool>" not in body or name in ("--json", "--help"), r
            text = re.sub(r"\s+", " ", body).strip()
            assert len(text.split()) >= 3, r  # the option, (its value), and words of help
        if cmd == "generate":
            assert "--greedy" in out and "--no-greedy" in out and "--no-adaptive" in out
