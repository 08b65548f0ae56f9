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
from transferlab.store import Store
from transferlab.train.engine import Callback
from transferlab.zoo import FAMILY, Zoo, parse_sizes
from transferlab.zoo.build import ZooConfig, build_zoo
from transferlab.zoo.model import count_non_embedding, to_hf
from transferlab.zoo.train import new_lm, shape_of

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
    expect_val = [n for n in names if in_val(f"stdlib/{n}", 30)]
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


def test_part_of_a_builtin_corpus_by_source(tmp_path):
    """code[sympy] / code[^sympy]: a built-in corpus cut by the source of each file, keeping its split."""
    from transferlab.data.corpora import Corpus, builtin_corpora, builtin_part, select_sources

    assert builtin_part("code[^SymPy, stdlib]") == ("code", True, ["stdlib", "sympy"])
    assert builtin_part("code") is None and builtin_part("files:x[1].txt") is None
    whole = Corpus("code", ["a1", "s1", "b1", "s2"], ["s3", "a2"], "f0",
                   keys=(["alpha/x.py", "sympy/a.py", "stdlib/b.py", "sympy/c.py"], ["sympy/d.py", "alpha/y.py"]))
    only = select_sources(whole, "code[sympy]")
    rest = select_sources(whole, "code[^sympy]")
    assert (only.train, only.val) == (["s1", "s2"], ["s3"])
    assert (rest.train, rest.val) == (["a1", "b1"], ["a2"])
    assert len({only.fingerprint, rest.fingerprint, whole.fingerprint}) == 3
    with pytest.raises(DataError, match="unknown source.*sympi.*choose among: alpha, stdlib, sympy"):
        select_sources(whole, "code[sympi]")
    with pytest.raises(DataError, match="no validation documents"):
        select_sources(whole, "code[stdlib]")
    # on real extraction (a fake stdlib: every key is stdlib/...), through the cache and load_corpus
    _fake_stdlib(tmp_path)
    builtin_corpora(root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    cached = builtin_corpora(root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")["code"]
    assert cached.keys is not None and all(k.startswith("stdlib/") for k in cached.keys[0] + cached.keys[1])
    part = load_corpus("code[stdlib]", root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    assert part.train == cached.train and part.val == cached.val
    mix = load_corpus("prose+code[stdlib]", root=tmp_path, val_percent=30)
    assert mix.name == "prose+code[stdlib]"
    with pytest.raises(DataError, match="leaves no document"):
        load_corpus("code[^stdlib]", root=tmp_path, val_percent=30)


def test_source_corpus_is_the_files_as_they_are(tmp_path):
    """source: the same deduplicated files as prose/code, unmodified, with their keys and split; cached."""
    _fake_stdlib(tmp_path)
    (tmp_path / "copy_of_alpha.py").write_text((tmp_path / "alpha.py").read_text())  # a duplicate: once
    src = load_corpus("source", root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    code = load_corpus("code", root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    assert src.keys[0] == code.keys[0] and src.keys[1] == code.keys[1]
    for k, text in zip(src.keys[0], src.train):
        assert text == (tmp_path / k.removeprefix("stdlib/")).read_text()
    assert any('"""' in t for t in src.train) and not any('"""' in t for t in code.train)
    again = load_corpus("source", root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    assert (again.train, again.val, again.fingerprint) == (src.train, src.val, src.fingerprint)
    assert load_corpus("source[stdlib]", root=tmp_path, val_percent=30).train == src.train


def test_real_stdlib_corpus_is_deterministic():
    a = stdlib_corpus("prose", max_files=15)
    b = stdlib_corpus("prose", max_files=15)
    assert a.train == b.train and a.val == b.val and a.fingerprint == b.fingerprint
    assert sum(a.chars()) > 1000


def test_files_corpus_and_bad_globs(tmp_path, monkeypatch):
    for i in range(12):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document number {i}\n")
    c = files_corpus(str(tmp_path / "*.txt"), val_percent=25)
    assert len(c.train) + len(c.val) == 12
    assert [t for t in c.val] == [
        f"document number {i}\n" for i in range(12) if in_val(f"doc{i:02d}.txt", 25)
    ]
    with pytest.raises(DataError, match="matches no files"):
        files_corpus(str(tmp_path / "*.nothing"))
    with pytest.raises(DataError, match="Dataset.save_to_disk"):  # a folder that is not a saved dataset
        hf_corpus(str(tmp_path))
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the optional package were not installed
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


def test_family_spans_100x_and_counts_match_hf():
    sizes = parse_sizes("xxs,xs,s,m,l,xl")
    n = [FAMILY[s].non_embedding_params() for s in sizes]
    assert len(n) >= 6 and n == sorted(n) and n[-1] / n[0] >= 100 and n[-1] >= 1_500_000
    for s in ("xxs", "m"):
        model = to_hf(new_lm(shape_of(s, 512, 32), seed=0), 0)
        assert count_non_embedding(model) == FAMILY[s].non_embedding_params()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    with pytest.raises(ConfigError, match="unknown model size 'huge'"):
        parse_sizes("xxs,huge")


TINY = dict(
    sizes=["xxs", "xs"],
    tokens_per_param=None,
    tokens=24 * 4 * 16,
    vocab_size=400,
    max_files=25,
    train={"seq_len": 16, "batch_size": 4, "min_steps": 1, "evals": 12, "eval_tokens": 256, "dtype": "float32"},
)


class Interrupt(Exception):
    pass


class KillAt(Callback):
    """Raises in the middle of the ``size`` model's training, like a kill."""

    def __init__(self, step: int):
        self.step = step

    def on_eval(self, step, records, alive, control):
        if step == self.step:
            raise Interrupt(f"killed at step {step}")


def _val_loss(model, tok_data, cfg: ZooConfig) -> float:
    from transferlab.train.lm import windows

    t = cfg.train
    w = windows(tok_data.val, t.seq_len)[: t.eval_tokens // (t.seq_len + 1)]
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
        assert e["tokens_seen"] == 24 * 4 * 16 and e["tokens_per_param"] == pytest.approx(
            24 * 64 / e["non_embedding_params"])
        assert e["steps"] == 24 and e["non_embedding_params"] == FAMILY[e["size"]].non_embedding_params()
        assert e["dtype"] == "float32" and e["epochs"] > 0 and set(e["heldout_loss"]) == {"prose", "code"}
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
        assert [r["step"] for r in recs] == list(range(0, 25, 2))
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
    assert resumed["resumed_from"] == 10 and resumed["steps_run"] == 14  # the checkpoint before the kill
    a = load_file(str(tmp_path / "ref" / "zoo" / ref["path"] / "model.safetensors"))
    b = load_file(str(zoo.root / resumed["path"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert resumed["val_loss"] == ref["val_loss"]
    recs = [
        json.loads(x)
        for x in (store.run_dir("lm", resumed["run_id"]) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in recs] == list(range(0, 25, 2))  # no duplicated or missing steps


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


# ---- zoo v2 ---------------------------------------------------------------------------------------
def test_zoo_model_computes_what_llama_computes():
    """The zoo trains its own Llama; saved as LlamaForCausalLM it gives the same logits (and back again)."""
    from transferlab.zoo.model import LMShape, from_hf

    m = new_lm(LMShape(300, 48, 2, 3, 128, 24), seed=3)
    hf = to_hf(m, 0)
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        a, b = m(x), hf(input_ids=x).logits
        assert (a - b).abs().max() < 1e-5
        assert torch.equal(from_hf(hf)(x), a)
        # causal: changing the last token changes no earlier logit
        y = x.clone()
        y[:, -1] = (y[:, -1] + 1) % 300
        assert torch.equal(m(y)[:, :-1], a[:, :-1])


def test_bf16_run_ends_within_2_percent_of_fp32(tmp_path):
    """A short bf16-autocast run ends within 2% of the same run in float32 (the master copy is float32)."""
    base = {**TINY, "sizes": ["xs"], "tokens": 60 * 8 * 16,
            "train": {**TINY["train"], "batch_size": 8, "evals": 6}}
    losses = {}
    for dt in ("float32", "bfloat16"):
        cfg = ZooConfig(**{**base, "train": {**base["train"], "dtype": dt}})
        e = build_zoo(cfg, Store(tmp_path / dt), report=False).entries[0]
        assert e["dtype"] == dt
        losses[dt] = e["val_loss"]
    assert losses["float32"] < math.log(400) - 0.3  # it learned
    assert abs(losses["bfloat16"] - losses["float32"]) / losses["float32"] < 0.02


def test_large_corpus_selection_rules(tmp_path):
    """Vendored copies and test suites are skipped, identical files count once, and the corpus key names the
    distributions and versions that feed it."""
    from transferlab.data.corpora import (
        builtin_corpora,
        corpus_distributions,
        distribution_files,
        source_manifest,
    )

    dists = dict(corpus_distributions())
    for name in ("torch", "numpy", "scipy", "pandas", "transformers"):
        assert name in dists  # the project's own dependencies feed the corpus
    assert "pytest" not in dists and "transferlab" not in dists  # dev tools and the project itself do not
    files = [k for k, _ in distribution_files("pandas")]
    assert files == sorted(files) and files
    assert not any("/tests/" in k or "/_vendor/" in k for k in files)
    assert f"numpy=={dists['numpy']}" in source_manifest()["distributions"]
    # dedup: two identical files in the fake stdlib count once
    _fake_stdlib(tmp_path)
    (tmp_path / "copy_of_alpha.py").write_text((tmp_path / "alpha.py").read_text())
    (tmp_path / "_vendor").mkdir()
    (tmp_path / "_vendor" / "vend.py").write_text(SRC.format(name="vendored"))
    c = builtin_corpora(root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    assert c["prose"].info["duplicates_skipped"] == 1
    assert not any("vendored" in t for t in c["prose"].train + c["prose"].val)
    # the cache gives back the same corpus
    again = builtin_corpora(root=tmp_path, val_percent=30, cache_dir=tmp_path / "cache")
    assert again["code"].train == c["code"].train and again["prose"].fingerprint == c["prose"].fingerprint


def test_comment_scanner_matches_tokenize_on_the_project():
    import io
    import tokenize
    from pathlib import Path

    import transferlab
    from transferlab.data.corpora import comments_of

    for p in sorted(Path(transferlab.__file__).parent.rglob("*.py"))[:60]:
        src = p.read_text()
        want = [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(src).readline)
                if t.type == tokenize.COMMENT]
        assert comments_of(src) == want, p


def test_loss_vs_n_fit_and_flag():
    from transferlab.zoo.analysis import loss_vs_n

    ns = [10_000, 30_000, 100_000, 300_000]
    good = [{"size": f"s{i}", "non_embedding_params": n, "heldout_loss": {"prose": 9.0 * n ** -0.1}}
            for i, n in enumerate(ns)]
    fit = loss_vs_n(good, "prose")["corpora"]["prose"]
    assert not fit["flagged"] and fit["fit"]["a"] == pytest.approx(0.1, abs=1e-9) and fit["fit"]["r2"] > 0.999
    bad = [dict(e) for e in good]
    bad[2] = {**bad[2], "heldout_loss": {"prose": 5.0}}  # larger model, worse loss
    res = loss_vs_n(bad, "prose")
    assert res["flagged"] and res["corpora"]["prose"]["rises"][0] == "s1 -> s2"
    assert loss_vs_n(good[:2], "prose")["corpora"]["prose"]["fit"] is None


def test_memory_and_device_are_checked_before_anything_is_built(tmp_path, cli):
    code, _, err = cli(["zoo", "build", "--preset", "micro", "--set", "vocab_size=900000",
                        "--set", "sizes=xl", "--set", "train.batch_size=512", "--set", "train.seq_len=2048",
                        "--store", str(tmp_path)])
    assert code == 2 and "GB" in err and "needs about" in err and len(err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        code, _, err = cli(["zoo", "build", "--preset", "micro", "--set", "train.device=cuda",
                            "--store", str(tmp_path)])
        assert code == 2 and "no CUDA GPU" in err and "train.device" in err
    code, _, err = cli(["zoo", "build", "--preset", "micro", "--set", "train.device=tpu", "--store", str(tmp_path)])
    assert code == 2 and "train.device" in err
    assert not (tmp_path / "zoo" / "models").exists()


def test_zoo_corpus_json_contract(tmp_path, cli):
    code, out, _ = cli(["zoo", "corpus", "code", "--max-files", "20", "--json", "--store", str(tmp_path)])
    assert code == 0
    res = json.loads(out)
    assert set(res["documents"]) == {"train", "validation"} and res["characters"]["train"] > 1000
    assert len(res["fingerprint"]) == 16 and res["tokens"] is None
    code, out, _ = cli(["zoo", "corpus", "code", "--max-files", "20", "--json", "--store", str(tmp_path)])
    assert json.loads(out)["fingerprint"] == res["fingerprint"]  # deterministic (and now from the cache)
