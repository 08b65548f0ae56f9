"""Decisions across scale (DataDecide's decision accuracy): the pairwise agreement of mixture rankings between two
sizes, its bootstrap over items, the JSON contract on a harness folder the test writes, and bad --sizes input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.browser import render
from transferlab.studies.correlate.analysis import (
    bootstrap_decision_accuracy,
    bootstrap_indices,
    decision_accuracy,
    tied_pairs,
)

STAMP = "2024-05-01T10-00-00.000000"
MIXES = ["dclm", "c4", "fineweb", "pile"]
SIZES = ["150M", "1B"]


# ---- the statistic -------------------------------------------------------------------------------
def test_decision_accuracy_known_answers():
    assert decision_accuracy([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0  # the same ranking
    assert decision_accuracy([1, 2, 3, 4], [4, 3, 2, 1]) == 0.0  # reversed: every pair flips
    # one adjacent pair swapped among 4 mixtures: 5 of the 6 pairs agree
    assert decision_accuracy([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(5 / 6)
    # 5 mixtures, the best and worst swapped: pairs (0,4) and the 3+3 pairs through an end flip -> 3 of 10 agree
    assert decision_accuracy([1, 2, 3, 4, 5], [5, 2, 3, 4, 1]) == pytest.approx(3 / 10)
    # a tie at either size counts 1/2: 2 of 3 pairs agree, the tied one 1/2
    assert decision_accuracy([1, 1, 3], [1, 2, 3]) == pytest.approx(2.5 / 3)
    assert decision_accuracy([1, 2, 3], [1, 1, 3]) == pytest.approx(2.5 / 3)
    assert tied_pairs([1, 1, 3], [1, 2, 3]) == 1 and tied_pairs([1, 2, 3], [3, 2, 1]) == 0
    # order of the mixtures does not matter, only that both lists follow it
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=7), rng.normal(size=7)
    perm = rng.permutation(7)
    assert decision_accuracy(s[perm], t[perm]) == pytest.approx(decision_accuracy(s, t))
    assert np.isnan(decision_accuracy([1.0], [2.0]))
    with pytest.raises(ValueError):
        decision_accuracy([1, 2], [1, 2, 3])


def test_bootstrap_over_items_equals_brute_force_and_brackets():
    rng = np.random.default_rng(1)
    n_mix, n_items = 4, 30
    skill = np.array([0.2, 0.4, 0.5, 0.8])
    small = (rng.random((n_mix, n_items)) < skill[:, None]).astype(float)
    target = (rng.random((n_mix, n_items)) < skill[:, None]).astype(float)
    idx = bootstrap_indices(n_items, 300, seed=5)
    r = bootstrap_decision_accuracy(small, target, idx=idx)
    assert r["value"] == pytest.approx(decision_accuracy(small.mean(1), target.mean(1)))
    brute = [decision_accuracy(small[:, ix].mean(1), target[:, ix].mean(1)) for ix in idx]
    assert r["ci"] == pytest.approx([np.percentile(brute, 2.5), np.percentile(brute, 97.5)])
    assert r["ci"][0] <= r["value"] <= r["ci"][1] and r["n_items"] == n_items
    # well-separated mixtures with the same order at both sizes: every resample agrees on every pair
    sep = np.repeat(np.arange(n_mix, dtype=float)[:, None], n_items, axis=1) * 10 + rng.normal(size=(n_mix, n_items))
    r2 = bootstrap_decision_accuracy(sep, sep + 1, n_boot=200, seed=0)
    assert r2["value"] == 1.0 and r2["ci"] == [1.0, 1.0]
    # ... and reversed at the target: every resample disagrees on every pair
    r3 = bootstrap_decision_accuracy(sep, -sep, n_boot=200, seed=0)
    assert r3["value"] == 0.0 and r3["ci"] == [0.0, 0.0]
    # pure noise: the interval is wide and holds the coin-flip 0.5
    noise_s, noise_t = rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    r4 = bootstrap_decision_accuracy(noise_s, noise_t, n_boot=500, seed=0)
    assert r4["ci"][0] < 0.5 < r4["ci"][1] and r4["ci"][1] - r4["ci"][0] > 0.3
    with pytest.raises(ValueError):
        bootstrap_decision_accuracy(small, target[:, :5])


# ---- a harness folder with sizes -----------------------------------------------------------------
def _write(root, stage, model, rng, skill, n_docs=24):
    """One lm_eval output folder for task 'arc_easy' with --log_samples (arguments logged); returns
    (per-doc acc, per-doc gold log-likelihood per character)."""
    d = root / stage / model
    d.mkdir(parents=True)
    accs, conts, lines = [], [], []
    for doc in range(n_docs):
        gold = int(rng.integers(4))
        ll = rng.normal(-8, 1, size=4)
        ll[gold] += skill * rng.uniform(0, 2)
        texts = [f" answer {doc}-{k}" + "x" * int(rng.integers(0, 6)) for k in range(4)]
        acc = float(np.argmax(ll) == gold)
        accs.append(acc)
        conts.append(ll[gold] / len(texts[gold]))
        args = {f"gen_args_{k}": {"arg_0": f"Question {doc}?", "arg_1": texts[k]} for k in range(4)}
        lines.append(json.dumps({"doc_id": doc, "target": gold, "arguments": args, "acc": acc,
                                 "resps": [[[str(v), "False"]] for v in ll],
                                 "filtered_resps": [[str(v), "False"] for v in ll]}))
    (d / f"samples_arc_easy_{STAMP}.jsonl").write_text("\n".join(lines[::-1]) + "\n")  # out of doc order
    (d / f"results_{STAMP}.json").write_text(json.dumps({
        "results": {"arc_easy": {"alias": "arc_easy", "acc,none": float(np.mean(accs)), "acc_norm,none": 0.0}},
        "config": {"model": "hf", "model_args": f"pretrained={model}"}}))
    return np.array(accs), np.array(conts)


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    root = tmp_path_factory.mktemp("decide") / "evals"
    rng = np.random.default_rng(7)
    truth = {}
    for i, mix in enumerate(MIXES):
        for j, size in enumerate(SIZES):
            for stage in ("pretrain", "sft"):
                truth[(mix, size, stage)] = _write(root, stage, f"{mix}-{size}", rng, skill=0.5 + i * 0.7 + j)
    return root, truth


def test_harness_json_contract_with_sizes_flag(evals, cli, tmp_path):
    root, truth = evals
    sizes = ",".join(f"{m}-{s}={s}" for m in MIXES for s in SIZES)
    code, out, err = cli(["correlate", str(root), "--sizes", sizes, "--n-boot", "300", "--json",
                          "--out", str(tmp_path / "r.html")])
    assert code == 0, err
    res = json.loads(out)
    d = res["benchmarks"]["arc_easy"]["decision_accuracy"]
    assert d["sizes"] == SIZES and d["small"] == "150M" and d["target"] == "1B" and d["stage"] == "pretrain"
    assert sorted(d["mixtures"]) == sorted(MIXES) and d["n_pairs"] == 6
    for q, k in (("accuracy", 0), ("continuous", 1)):
        e = d[q]
        assert set(e) >= {"value", "ci"} and len(e["ci"]) == 2
        want = decision_accuracy([truth[(m, "150M", "pretrain")][k].mean() for m in sorted(MIXES)],
                                 [truth[(m, "1B", "pretrain")][k].mean() for m in sorted(MIXES)])
        assert e["value"] == pytest.approx(want)
        assert 0 <= e["ci"][0] <= e["value"] <= e["ci"][1] <= 1
    # the models' mixtures were read from their names; the note says so
    assert any("mixtures read from" in n for n in res["notes"])
    assert res["decision"]["sizes"] == SIZES and res["benchmarks"]["arc_easy"]["decision_accuracy_post"]
    page = render(tmp_path / "r.html")
    assert page["figures"] == page["rendered"] >= 1 and page["errors"] == ""
    assert "Decisions across scale" in (tmp_path / "r.html").read_text()


def test_sizes_from_models_csv_and_tidy_csv_without_items(evals, tmp_path, cli):
    import shutil

    root, truth = evals
    copy = tmp_path / "evals"
    shutil.copytree(root, copy)
    (copy / "models.csv").write_text("model,mixture,size\n" + "".join(
        f"{m}-{s},{m},{s}\n" for m in MIXES for s in SIZES))
    code, out, err = cli(["correlate", str(copy), "--n-boot", "200", "--json", "--out", str(tmp_path / "a.html")])
    assert code == 0, err
    d = json.loads(out)["benchmarks"]["arc_easy"]["decision_accuracy"]
    assert d["sizes"] == SIZES and d["accuracy"]["ci"] is not None
    # a tidy CSV carries no items: values without intervals
    rows = ["model,stage,mixture,scale,benchmark,accuracy,continuous"]
    for (m, s, st), (acc, cont) in truth.items():
        rows.append(f"{m}-{s},{st},{m},{s},arc_easy,{acc.mean()},{cont.mean()}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    code, out, err = cli(["correlate", str(tmp_path / "t.csv"), "--n-boot", "200", "--json",
                          "--out", str(tmp_path / "t.html")])
    assert code == 0, err
    t = json.loads(out)["benchmarks"]["arc_easy"]["decision_accuracy"]
    assert t["accuracy"]["value"] == pytest.approx(d["accuracy"]["value"]) and t["accuracy"]["ci"] is None
    assert t["continuous"]["value"] == pytest.approx(d["continuous"]["value"]) and t["continuous"]["ci"] is None


@pytest.mark.parametrize("sizes,needle", [
    ("dclm-150M", "MODEL=SIZE"),
    ("nosuch-1B=1B", "nosuch-1B"),
    ("dclm-150M=big", "big"),
    ("dclm-150M=1B,dclm-150M=2B", "twice"),
])
def test_bad_sizes_one_line_exit_2(evals, cli, tmp_path, sizes, needle):
    root, _ = evals
    code, out, err = cli(["correlate", str(root), "--sizes", sizes, "--out", str(tmp_path / "x.html")])
    assert code == 2 and err.startswith("error") and needle in err and len(err.strip().splitlines()) == 1


def test_bad_continuous_cell_in_a_tidy_csv(tmp_path, cli):
    rows = ["model,stage,scale,benchmark,accuracy,continuous"]
    for i in range(3):
        for st in ("pretrain", "sft"):
            rows.append(f"m{i},{st},1B,arc,0.5,{'abc' if (i, st) == (1, 'sft') else -1.5}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    code, out, err = cli(["correlate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "t.html")])
    assert code == 2 and "row 5" in err and "continuous" in err and len(err.strip().splitlines()) == 1
