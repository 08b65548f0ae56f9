"""w2s with weak/strong models from the model zoo (or a local causal LM) as the frozen-feature backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab.store import Store
from transferlab.studies.w2s import zoo_features as zf
from transferlab.studies.w2s.run import make_config
from transferlab.zoo import FAMILY
from transferlab.zoo.build import ZooConfig, build_zoo

MICRO = dict(
    sizes=["xxs", "xs", "s"],
    tokens_per_param=None,
    tokens=16 * 4 * 16,
    vocab_size=400,
    max_files=25,
    train={"seq_len": 16, "batch_size": 4, "min_steps": 1, "evals": 4, "eval_tokens": 128, "monitor": False},
)
TEXTS = [
    "Return the sum of two numbers.",
    "A class that holds a value",
    "x",
    "Raise ValueError when the argument is negative or larger than the limit of the buffer.",
    "open a file and read it",
    "",
    "def f(x): return x + 1  # comment",
]
FAST = ["--set", "max_length=32", "--set", "steps=60", "--set", "eval_every=10"]


@pytest.fixture(scope="module")
def zoo_store(tmp_path_factory) -> Store:
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("w2szoo") / "runs")
    build_zoo(ZooConfig(**MICRO), store, report=False)
    return store


def _ref(store: Store, size: str) -> zf.ModelRef:
    return zf.resolve_model(f"zoo:{size}", store.root / "zoo")


def test_resolve_zoo_sizes_and_paths(zoo_store):
    for size in MICRO["sizes"]:
        r = _ref(zoo_store, size)
        assert r.label == size and r.non_embedding_params == FAMILY[size].non_embedding_params()
        assert (r.path / "config.json").is_file() and r.zoo_name and f"-{size}-" in r.zoo_name
        # the same model as a local path: parameters counted from its config (meta device) agree
        p = zf.resolve_model(str(r.path), zoo_store.root / "zoo")
        assert p.non_embedding_params == r.non_embedding_params and p.zoo_name is None
    cfg = make_config(task="stdlib-kind", backend="finetune", weak_model="zoo:xxs", strong_model="zoo:xs")
    assert zf.zoo_refs_to_paths(cfg, zoo_store).weak.model == str(_ref(zoo_store, "xxs").path)


def test_features_shape_and_padding_is_ignored(zoo_store):
    path = _ref(zoo_store, "xs").path
    feats = zf.causal_features(TEXTS, path, max_length=32, batch_size=4)
    assert feats.shape == (len(TEXTS), FAMILY["xs"].d_model) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    # each text alone (no padding at all) gives the vector it got padded inside a batch
    for i, t in enumerate(TEXTS):
        alone = zf.causal_features([t], path, max_length=32, batch_size=1)[0]
        torch.testing.assert_close(alone, feats[i], atol=1e-5, rtol=1e-4)
    # the batch really was padded: token counts differ within a batch of 4
    from transferlab.models.hf_causal import load_causal_lm, load_tokenizer

    tok = load_tokenizer(path)
    lens = [len(tok(t)["input_ids"]) for t in TEXTS]
    assert max(lens) > 3 * max(1, sorted(lens)[1])
    # the pooled mean equals a hand-written mean over the unpadded hidden states
    model = load_causal_lm(path)
    ctx = model.config.max_position_embeddings  # = the zoo's seq_len (16): the features truncate there
    assert ctx == MICRO["train"]["seq_len"]
    ids = tok(TEXTS[3], return_tensors="pt")["input_ids"][:, :ctx]
    assert ids.shape[1] == ctx  # this text is longer than the context
    with torch.no_grad():
        h = model.get_decoder()(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(feats[3], h.mean(0), atol=1e-5, rtol=1e-4)
    # pooling is by the attention mask, not by token id: an end-of-text token (= the pad id) in the
    # text counts as a real position
    eot = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    with_eot = zf.causal_features([TEXTS[4] + eot, TEXTS[4]], path, max_length=32)
    assert len(tok(TEXTS[4] + eot)["input_ids"]) == len(tok(TEXTS[4])["input_ids"]) + 1 <= 16
    assert not torch.allclose(with_eot[0], with_eot[1], atol=1e-4)


def test_feature_cache_is_reused(zoo_store, tmp_path, monkeypatch):
    from transferlab.data.classification import ClassificationData

    store = Store(tmp_path / "runs")
    data = ClassificationData("t", ["a", "b"], torch.tensor([0, 1, 0, 1, 0, 1, 0]).numpy(), texts=TEXTS)
    cfg = make_config(task="stdlib-kind", max_length=32)
    r = _ref(zoo_store, "xxs")
    first = zf.cached_features(data, r, cfg, store)
    files = list((store.root / "w2s-features").glob("*/features.safetensors"))
    assert len(files) == 1
    assert load_file(str(files[0]))["layers"].shape == (len(TEXTS), 1, FAMILY["xxs"].d_model)

    def boom(*a, **k):
        raise AssertionError("features recomputed instead of read from the store")

    monkeypatch.setattr(zf, "causal_features", boom)
    again = zf.cached_features(data, r, cfg, store)
    assert torch.equal(first, again)
    with pytest.raises(AssertionError, match="recomputed"):  # another model is a different cache entry
        zf.cached_features(data, _ref(zoo_store, "xs"), cfg, store)


def test_missing_zoo_or_size_is_one_line_exit_2(zoo_store, tmp_path, cli):
    base = ["w2s", "--task", "stdlib-kind", "--json", *FAST]
    code, out, err = cli(
        [*base, "--set", "weak_model=zoo:xs", "--set", "strong_model=zoo:l", "--store", str(zoo_store.root)]
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "no size 'l'" in err and "transferlab zoo build --sizes l" in err
    code, _, err = cli(
        [
            *base,
            "--set",
            "weak_model=zoo:xs",
            "--set",
            "strong_model=zoo:m",
            "--store",
            str(tmp_path / "empty"),
        ]
    )
    assert code == 2 and err.count("\n") == 1 and "no model zoo at" in err and "zoo build --sizes" in err
    code, _, err = cli(
        [*base, "--set", "weak_model=zoo:s", "--set", "strong_model=zoo:xxs", "--store", str(zoo_store.root)]
    )
    assert code == 2 and "larger than the strong model" in err
    code, _, err = cli(
        [
            "w2s",
            "--task",
            "synthetic-noisy",
            "--set",
            "weak_model=zoo:xxs",
            "--set",
            "strong_model=zoo:xs",
            "--store",
            str(zoo_store.root),
        ]
    )
    assert code == 2 and "has no texts" in err
    code, _, err = cli(
        [
            *base,
            "--set",
            f"weak_model={tmp_path / 'nowhere'}",
            "--set",
            "strong_model=zoo:xs",
            "--store",
            str(zoo_store.root),
        ]
    )
    assert code == 2 and "does not exist" in err
    assert not (zoo_store.root / "w2s").exists()  # nothing was run


def test_w2s_run_with_zoo_models_json_contract_and_sweep(zoo_store, cli):
    args = [
        "w2s",
        "--task",
        "stdlib-kind",
        "--losses",
        "xent,logconf",
        "--seeds",
        "2",
        "--json",
        *FAST,
        "--set",
        "weak_model=zoo:xxs",
        "--set",
        "strong_model=zoo:s",
        "--set",
        "mid_models=zoo:xs",
        "--set",
        "min_gap=0",
        "--store",
        str(zoo_store.root),
    ]
    code, out, err = cli(args)
    assert code == 0, err
    data = json.loads(out)
    assert set(data["losses"]) == {"xent", "logconf"} and data["seeds"] == 2 and data["reused"] is False
    for m, row in data["losses"].items():
        for key in ("weak_acc", "ceiling_acc", "student_acc", "pgr"):
            iv = row[key]
            if key == "pgr":  # 2 seeds: PGR has no interval (it needs at least 3), and says so
                assert iv["lo"] is None and "at least 3" in iv["note"], (m, key)
                continue
            assert iv["level"] == 0.95 and iv["lo"] is not None, (m, key)
            assert iv["lo"] <= iv["value"] <= iv["hi"], (m, key, iv)
        pgr = (row["student_acc"]["value"] - row["weak_acc"]["value"]) / (
            row["ceiling_acc"]["value"] - row["weak_acc"]["value"]
        )
        assert abs(pgr - row["pgr"]["value"]) < 1e-9
    assert [(r["weak"], r["strong"]) for r in data["sweep"]] == [("xxs", "xs"), ("xxs", "s"), ("xs", "s")]
    assert data["models"]["s"]["non_embedding_params"] == FAMILY["s"].non_embedding_params()
    summary = json.loads((Path(data["run_dir"]) / "summary.json").read_text())
    assert set(summary["models"]) == {"xxs", "xs", "s"}
    assert summary["config"]["resolved_models"]["s"]["zoo_name"] == _ref(zoo_store, "s").zoo_name
    # every (smaller weak, larger strong) pair, x = the ratio of non-embedding parameters
    sweep = summary["sweep"]
    assert [(r["weak_view"], r["strong_view"]) for r in sweep] == [("xxs", "xs"), ("xxs", "s"), ("xs", "s")]
    for r in sweep:
        ratio = (
            FAMILY[r["strong_view"]].non_embedding_params() / FAMILY[r["weak_view"]].non_embedding_params()
        )
        assert r["param_ratio"] == pytest.approx(ratio) and r["param_ratio"] > 1
    # the pair with the run's own weak and strong models reproduces the run's floor and ceiling
    top = sweep[1]
    assert top["weak_acc"]["value"] == pytest.approx(data["losses"]["xent"]["weak_acc"]["value"])
    assert top["ceiling_acc"]["value"] == pytest.approx(data["losses"]["xent"]["ceiling_acc"]["value"])
    html = (Path(data["run_dir"]) / "report.html").read_text()
    assert "non-embedding parameters" in html and "PGR against the size gap" in html
    assert html.count("params ratio") == 1  # the sweep table
    # feature passes are cached: one per model; a second run with another loss reuses them and the baseline
    assert len(list((zoo_store.root / "w2s-features").glob("*/features.safetensors"))) == 3
    code, out, err = cli([*[a if a != "xent,logconf" else "window" for a in args]])
    assert code == 0, err
    again = json.loads((Path(json.loads(out)["run_dir"]) / "summary.json").read_text())
    assert again["timing_s"]["baseline_reused"] is True
    assert len(list((zoo_store.root / "w2s-features").glob("*/features.safetensors"))) == 3
    assert again["losses"]["window"]["weak_acc"] == summary["losses"]["xent"]["weak_acc"]


def test_w2s_device_is_used_or_refused(cli, tmp_path):
    """The device field does something: auto resolves, cuda on a CPU-only machine is one line before training."""
    from transferlab.core.devices import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        code, _, err = cli(["w2s", "--set", "device=cuda", "--store", str(tmp_path)])
        assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "w2s").exists()


def test_icl_refine_on_zoo_models_relabels_from_the_strong_lm(zoo_store, cli, monkeypatch):
    """icl-refine on a zoo causal LM: every transfer/val example is relabelled from its prompt; a second run
    that changes only the refinement reuses the floor and ceiling."""
    from transferlab.studies.w2s import icl_refine

    seen = []
    real = icl_refine.next_token_label_probs

    def spy(model, tok, prompts, label_ids, **kw):
        seen.append((len(prompts), prompts[0], label_ids))
        return real(model, tok, prompts, label_ids, **kw)

    monkeypatch.setattr(icl_refine, "next_token_label_probs", spy)
    args = ["w2s", "--task", "stdlib-kind", "--losses", "xent", "--seeds", "2", "--json", *FAST,
            "--set", "weak_model=zoo:xxs", "--set", "strong_model=zoo:xs",
            "--set", "label_methods=icl-refine", "--set", "icl_k=2", "--set", "min_gap=0",
            "--store", str(zoo_store.root)]
    code, out, err = cli(args)
    assert code == 0, err
    data = json.loads(out)
    assert set(data["losses"]) == {"xent", "icl-refine"}
    summary = json.loads((Path(data["run_dir"]) / "summary.json").read_text())
    n_queries = summary["sizes"]["transfer"] + summary["sizes"]["val"]
    assert [n for n, _, _ in seen] == [n_queries, n_queries]  # one prompt per transfer/val example, per seed
    prompt = seen[0][1]
    assert prompt.count("Label: ") == 2 and prompt.endswith("Label:")  # k = 2 demonstrations, then the query
    assert len(set(seen[0][2])) == 2  # the two class names' first tokens
    code, out, err = cli([*args[:-2], "--set", "icl_read=probs", "--store", str(zoo_store.root)])
    assert code == 0, err
    again = json.loads((Path(json.loads(out)["run_dir"]) / "summary.json").read_text())
    assert again["timing_s"]["baseline_reused"] is True
