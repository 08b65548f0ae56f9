"""Corpora, tokenizer and the model zoo: determinism, hash split, round trips, build/load/reuse/resume."""

from __future__ import annotations

import ast
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from transferlab.core.errors import ConfigError, DataError
from transferlab.data.corpora import (
    code_of,
    files_corpus,
    hf_corpus,
    in_val,
    load_corpus,
    prose_of,
    stdlib_corpus,
    stdlib_files,
)
from transferlab.data.tokenizer import encode_documents, load_tokenizer, save_tokenizer, train_tokenizer
from transferlab.models.zoo import FAMILY, Zoo, count_non_embedding, new_model, parse_sizes
from transferlab.store import Store
from transferlab.studies.transfer.zoo_build import build_zoo
from transferlab.studies.transfer.zoo_config import ZooConfig

SRC = '''#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Module docstring about {name}."""
import os  # the os module

# A comment explaining the class.
class C:
    """Class docstring of C."""

    def f(self, x):
        """Return x plus one."""
        return x + 1  # add one
'''


def _fake_stdlib(root):
    names = [
        "alpha.py",
        "beta.py",
        "gamma.py",
        "delta.py",
        "pkg/eps.py",
        "pkg/zeta.py",
        "omega.py",
        "kappa.py",
    ]
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(SRC.format(name=n))
    for skipped in ("test/test_alpha.py", "pkg/tests/t.py", "site-packages/x.py", "test_top.py"):
        p = root / skipped
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(SRC.format(name="skip"))
    return sorted(n for n in names)


def test_prose_and_code_extraction():
    prose = prose_of(SRC.format(name="m"))
    assert [ln for ln in prose.splitlines() if ln] == [
        "Module docstring about m.",
        "the os module",
        "A comment explaining the class.",
        "Class docstring of C.",
        "Return x plus one.",
        "add one",
    ]
    code = code_of(SRC.format(name="m"))
    assert "docstring" not in code and "#" not in code and "comment" not in code
    tree = ast.parse(code)  # still valid Python, same structure
    assert [type(n).__name__ for n in tree.body] == ["Import", "ClassDef"]
    assert "return x + 1" in code


def test_corpora_deterministic_sorted_and_split_by_hash(tmp_path):
    names = _fake_stdlib(tmp_path)
    files = stdlib_files(tmp_path)
    assert [rel for rel, _ in files] == names  # sorted, test suites and site-packages skipped
    a = stdlib_corpus("prose", root=tmp_path, val_percent=30)
    b = stdlib_corpus("prose", root=tmp_path, val_percent=30)
    assert a.train == b.train and a.val == b.val and a.fingerprint == b.fingerprint
    expect_val = [n for n in names if in_val(n, 30)]
    assert len(a.val) == len(expect_val) and len(a.train) == len(names) - len(expect_val)
    assert 0 < len(expect_val) < len(names)
    assert [t.splitlines()[0] for t in a.val] == [f"Module docstring about {n}." for n in expect_val]
    code = stdlib_corpus("code", root=tmp_path, val_percent=30)
    assert len(code.val) == len(expect_val) and code.fingerprint != a.fingerprint
    # the split is by path hash: adding a file moves no other file between splits
    (tmp_path / "aaa_new.py").write_text(SRC.format(name="new"))
    c = stdlib_corpus("prose", root=tmp_path, val_percent=30)
    assert [t for t in c.val if "new" not in t] == a.val


def test_mixture_keeps_each_parts_split_and_has_its_own_identity(tmp_path):
    _fake_stdlib(tmp_path)
    prose = load_corpus("prose", root=tmp_path, val_percent=30)
    code = load_corpus("code", root=tmp_path, val_percent=30)
    mix = load_corpus("prose+code", root=tmp_path, val_percent=30)
    assert mix.train == prose.train + code.train and mix.val == prose.val + code.val
    assert mix.fingerprint not in (prose.fingerprint, code.fingerprint)
    assert load_corpus("code+prose", root=tmp_path, val_percent=30).fingerprint != mix.fingerprint
    for bad in ("prose+prose", "prose+", "prose+nope"):
        with pytest.raises(DataError):
            load_corpus(bad, root=tmp_path)


def test_real_stdlib_corpus_is_deterministic():
    a = stdlib_corpus("prose", max_files=15)
    b = stdlib_corpus("prose", max_files=15)
    assert a.train == b.train and a.val == b.val and a.fingerprint == b.fingerprint
    assert sum(a.chars()) > 1000


def test_files_corpus_and_bad_globs(tmp_path):
    for i in range(12):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document number {i}\n")
    c = files_corpus(str(tmp_path / "*.txt"), val_percent=25)
    assert len(c.train) + len(c.val) == 12
    assert [t for t in c.val] == [
        f"document number {i}\n" for i in range(12) if in_val(f"doc{i:02d}.txt", 25)
    ]
    with pytest.raises(DataError, match="matches no files"):
        files_corpus(str(tmp_path / "*.nothing"))
    with pytest.raises(DataError, match="pip install datasets"):
        hf_corpus(str(tmp_path))


def test_tokenizer_round_trips_and_is_deterministic(tmp_path):
    texts = [SRC.format(name=f"n{i}") for i in range(30)] + ["Ünïcödé text — with dashes, tabs\tand emoji 🙂"]
    tok = train_tokenizer(texts, vocab_size=400)
    tok2 = train_tokenizer(texts, vocab_size=400)
    assert tok.backend_tokenizer.to_str() == tok2.backend_tokenizer.to_str()
    assert 257 < len(tok) <= 400  # 256 bytes + <|endoftext|> + merges (a small corpus may stop early)
    path = save_tokenizer(tok, tmp_path / "tok")
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    for s in ["def f(x):\n    return x  # ok", "Zürich 🙂 naïve\r\n\tend", ""]:
        ids = loaded(s, add_special_tokens=False)["input_ids"]
        assert loaded.decode(ids) == s
        assert ids == tok(s, add_special_tokens=False)["input_ids"]
    stream = encode_documents(load_tokenizer(path), ["a b", "c"])
    eot = loaded.eos_token_id
    assert stream.dtype == torch.int32 and int(stream[-1]) == eot and int((stream == eot).sum()) == 2


def test_family_spans_30x_and_counts_match_hf():
    sizes = parse_sizes("xxs,xs,s,m,l")
    n = [FAMILY[s].non_embedding_params() for s in sizes]
    assert n == sorted(n) and n[-1] / n[0] >= 30
    for s in ("xxs", "m"):
        model = new_model(FAMILY[s], 512, 32, 0, seed=0)
        assert count_non_embedding(model) == FAMILY[s].non_embedding_params()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    with pytest.raises(ConfigError, match="unknown model size 'huge'"):
        parse_sizes("xxs,huge")


TINY = dict(
    sizes=["xxs", "xs"],
    tokens=24 * 4 * 16,
    vocab_size=400,
    max_files=25,
    seq_len=16,
    batch_size=4,
    eval_every=4,
    checkpoint_every=8,
    eval_tokens=256,
)


class Interrupt(Exception):
    pass


class KillAt:
    """Raises in the middle of the ``size`` model's training, like a kill."""

    def __init__(self, step: int):
        self.step = step

    def on_eval(self, step, records, alive):
        if step == self.step:
            raise Interrupt(f"killed at step {step}")
        return False


def _val_loss(model, tok_data, cfg: ZooConfig) -> float:
    from transferlab.train.lm import windows

    w = windows(tok_data.val, cfg.seq_len)[: cfg.eval_tokens // (cfg.seq_len + 1)]
    with torch.no_grad():
        logits = model(input_ids=w[:, :-1]).logits
    return float(
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
    )


def test_tiny_zoo_builds_loads_and_reuses(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = ZooConfig(**TINY)
    store = Store(tmp_path / "runs")
    zb = build_zoo(cfg, store)
    assert zb.zoo.root == tmp_path / "runs" / "zoo"
    manifest = json.loads((zb.zoo.root / "manifest.json").read_text())["models"]
    assert sorted(e["size"] for e in manifest.values()) == ["xs", "xxs"]
    for e in zb.entries:
        assert e["reused"] is False and e["corpus"] == "prose"
        assert e["tokens_seen"] == cfg.steps * cfg.batch_size * cfg.seq_len == 24 * 64
        assert e["steps"] == 24 and e["non_embedding_params"] == FAMILY[e["size"]].non_embedding_params()
        assert e["tokens_per_second"] > 0 and e["wall_seconds"] > 0
        path = zb.zoo.root / e["path"]
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        assert type(model).__name__ == "LlamaForCausalLM"
        assert count_non_embedding(model) == e["non_embedding_params"]
        assert len(AutoTokenizer.from_pretrained(str(path), local_files_only=True)) == e["vocab_size"] <= 400
        # the saved weights are the trained ones: they reproduce the logged validation loss
        assert _val_loss(model, zb.data, cfg) == pytest.approx(e["val_loss"], rel=1e-4)
        assert e["val_loss"] < math.log(e["vocab_size"])  # learned something beyond uniform
        run_metrics = store.run_dir("lm", e["run_id"]) / "metrics.jsonl"
        recs = [json.loads(x) for x in run_metrics.read_text().splitlines()]
        assert [r["step"] for r in recs] == list(range(0, 25, 4))
    assert (zb.zoo.root / "report.html").is_file()
    loaded = zb.zoo.load(zb.entries[0]["name"])
    assert not loaded.training
    # a second build reuses every model: nothing is retrained
    before = {
        e["name"]: (zb.zoo.root / e["path"] / "model.safetensors").stat().st_mtime_ns for e in zb.entries
    }
    again = build_zoo(cfg, store, report=False)
    assert all(e["reused"] for e in again.entries)
    assert {
        e["name"]: (zb.zoo.root / e["path"] / "model.safetensors").stat().st_mtime_ns for e in again.entries
    } == before


def test_interrupted_build_resumes_exactly(tmp_path):
    cfg = ZooConfig(**{**TINY, "sizes": ["xxs"]})
    ref = build_zoo(cfg, Store(tmp_path / "ref"), report=False).entries[0]
    store = Store(tmp_path / "runs")
    with pytest.raises(Interrupt):
        build_zoo(cfg, store, callbacks=[KillAt(12)], report=False)
    zoo = Zoo(tmp_path / "runs" / "zoo")
    assert zoo.manifest() == {}  # nothing half-done is published
    resumed = build_zoo(cfg, store, report=False).entries[0]
    assert resumed["resumed_from"] == 8 and resumed["steps_run"] == 16  # the checkpoint before the kill
    a = load_file(str(tmp_path / "ref" / "zoo" / ref["path"] / "model.safetensors"))
    b = load_file(str(zoo.root / resumed["path"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert resumed["val_loss"] == ref["val_loss"]
    recs = [
        json.loads(x)
        for x in (store.run_dir("lm", resumed["run_id"]) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in recs] == list(range(0, 25, 4))  # no duplicated or missing steps


def test_live_monitor_flags_a_loss_spike():
    from transferlab.train.lm import LiveLossMonitor

    mon = LiveLossMonitor(tokens_per_step=100, min_points=6)
    flags = []
    for step in range(1, 40):
        loss = 2.0 + 3.0 * (step * 100) ** -0.5
        if step == 30:
            loss *= 1.5  # a spike
        flags.append(mon.annotate(step, loss, live=False).get("loss_deviation", 0.0))
    assert flags[29] == 1.0 and sum(abs(f) for f in flags) == 1.0
    assert mon.deviations[0][0] == 3000.0


def test_bad_zoo_inputs(tmp_path, cli):
    code, _, err = cli(["zoo", "build", "--sizes", "xxs,huge", "--store", str(tmp_path)])
    assert code == 2 and "unknown model size 'huge'" in err
    code, _, err = cli(
        [
            "zoo",
            "build",
            "--sizes",
            "xxs",
            "--corpus",
            f"files:{tmp_path}/none/*.txt",
            "--store",
            str(tmp_path),
        ]
    )
    assert code == 2 and "matches no files" in err
    code, _, err = cli(["zoo", "build", "--tokens", "10", "--store", str(tmp_path)])
    assert code == 2 and "tokens" in err
    assert not (tmp_path / "zoo" / "manifest.json").exists()
    code, out, _ = cli(["zoo", "ls", "--json", "--store", str(tmp_path)])
    assert code == 0 and json.loads(out)["models"] == []
