"""Real-text stdlib tasks, the embedding cache, the bundled MiniLM (hash-checked), model-path errors."""

from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pytest
import torch

from transferlab.data.classification import (
    _clean_doc,
    _raises,
    stdlib_docstrings,
    stdlib_kind,
    stdlib_package,
)
from transferlab.models import hf_classifier as hfc
from transferlab.models.hf_classifier import ModelError, mean_pool, resolve_model_path
from transferlab.studies.w2s.run import make_config, run

WORDS = (
    "the a of to and is in for return returns class object function value list string file name "
    "if this that with not be by an or from as raise error it are on new default data set get"
).split()


def tiny_bert(path, layers=3):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_stdlib_labels_are_programmatic_and_right():
    rows = stdlib_docstrings()
    assert len(rows) > 1000
    by_text = {r["text"]: r for r in rows}
    import json as json_mod

    cls_doc = _clean_doc(inspect.getdoc(json_mod.JSONDecoder))
    assert by_text[cls_doc]["kind"] == "class" and by_text[cls_doc]["package"] == "json"
    fn_doc = _clean_doc(inspect.getdoc(json_mod.dumps))
    assert by_text[fn_doc]["kind"] == "function"
    tree = ast.parse(
        "def f(x):\n    if x:\n        raise ValueError\n\ndef g():\n    def h():\n        raise X\n"
    )
    f, g = tree.body
    assert _raises(f) and not _raises(g)  # a raise in a nested def does not count
    kind = stdlib_kind(n_per_class=50)
    assert kind.n == 100 and kind.labels.sum() == 50
    pkg = stdlib_package(n_per_class=40)
    assert pkg.n_classes >= 4 and len(set(pkg.labels.tolist())) == pkg.n_classes


def test_docs_library_labels_each_docstring_with_its_library():
    import torch

    from transferlab.data.classification import docs_library

    lib = docs_library(n_per_class=30, seed=1)
    assert lib.classes == ["matplotlib", "networkx", "pandas", "scipy", "sympy", "torch"]  # all installed here
    assert lib.n == 180 and np.bincount(lib.labels).tolist() == [30] * 6
    assert len(set(lib.texts)) == lib.n  # distinct, none in two libraries
    # a docstring of torch itself is labelled torch when drawn
    truth = {_clean_doc(inspect.getdoc(torch.nn.Linear)), _clean_doc(inspect.getdoc(torch.nn.Module))}
    for t, y in zip(lib.texts, lib.labels):
        if t in truth:
            assert lib.classes[y] == "torch"
    again = docs_library(n_per_class=30, seed=1)
    assert again.texts == lib.texts and (again.labels == lib.labels).all()


def test_text_task_with_a_tiny_encoder_caches_its_features(store, tmp_path, monkeypatch):
    enc = tiny_bert(tmp_path / "bert")
    common = {
        "task": "stdlib-kind",
        "encoder": str(enc),
        "seeds": 2,
        "max_length": 32,
        "steps": 60,
        "weak_layer": 1,
    }
    s = run(make_config(losses=["xent"], **common), store, write_report=False)
    assert s["timing_s"]["baseline_reused"] is False
    feats = store.index.rows(study="w2s-features")
    assert len(feats) == 1 and feats[0]["summary"]["shape"] == [1200, 4, 32]  # embeddings + 3 layers
    # a second run (other losses) must reuse the cached embedding pass and the floor/ceiling
    monkeypatch.setattr(
        hfc, "encode_layers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-embedded"))
    )
    s2 = run(make_config(losses=["logconf"], label_methods=["bootstrap"], **common), store, write_report=False)
    assert s2["timing_s"]["baseline_reused"] is True
    assert [r["weak_view"] for r in s2["sweep"]] == ["layer1", "layer2"]
    assert [r["layer_gap"] for r in s2["sweep"]] == [2.0, 1.0]  # a difference in layers (not a ratio)
    assert all("param_ratio" not in r for r in s2["sweep"])


def test_mean_pool_ignores_padding_on_either_side():
    h = torch.arange(24, dtype=torch.float32).view(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.allclose(mean_pool(h, right)[0], h[0, :2].mean(0))
    assert torch.allclose(mean_pool(h, left)[0], h[0, 2:].mean(0))
    assert torch.allclose(mean_pool(h, right)[1], h[1].mean(0))


def test_bundled_minilm_is_hash_checked_and_encodes_meaning(monkeypatch):
    folder = hfc.minilm_path()
    assert hfc._sha256(folder / "model.safetensors") == hfc.MINILM_SHA256
    x = hfc.encode_layers(
        ["a cat sits on the mat", "a kitten is sitting on a rug", "the stock market fell sharply"],
        "minilm",
        max_length=32,
    )
    assert x.shape == (3, 7, 384)
    e = torch.nn.functional.normalize(x[:, -1], dim=1)
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.2
    hfc._VERIFIED.clear()
    monkeypatch.setattr(hfc, "MINILM_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="SHA-256"):
        hfc.minilm_path()
    hfc._VERIFIED.clear()


def test_model_path_errors(tmp_path, cli):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path / "notamodel"))
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "config.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(ModelError, match="not a transformers model"):
        resolve_model_path(str(tmp_path / "tok"))
    code, _, err = cli(
        [
            "w2s",
            "--task",
            "stdlib-kind",
            "--set",
            f"encoder={tmp_path / 'nope'}",
            "--store",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2 and "does not exist" in err
