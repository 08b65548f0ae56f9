"""The zoo's own pretrain -> SFT pairs (`transferlab correlate-zoo --preset micro`): CSV, scoring, analysis."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.browser import render
from transferlab.studies.correlate import zoo_benchmarks as zb
from transferlab.studies.correlate.zoo_config import PRESETS, ZooPairsConfig
from transferlab.studies.correlate.zoo_pairs import CSV_COLUMNS, mixture_data

MICRO = ZooPairsConfig(**PRESETS.values("micro"))


def _cli(args: list[str]) -> tuple[int, str, str]:
    from transferlab.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    store = tmp_path_factory.mktemp("czoo") / "runs"
    torch.set_num_threads(1)
    code, out, err = _cli(["correlate-zoo", "--preset", "micro", "--json", "--store", str(store)])
    assert code == 0, err
    return store, json.loads(out)


def test_micro_csv_rows_columns_and_ranges(micro):
    store, res = micro
    df = pd.read_csv(res["csv"])
    assert list(df.columns) == CSV_COLUMNS
    n_models = len(MICRO.mixtures) * len(MICRO.sizes)
    assert len(MICRO.mixtures) >= 4 and len(MICRO.sizes) == 2
    assert len(df) == n_models * 2 * len(zb.BENCHMARK_CATEGORIES) == res["n_rows"]
    assert set(df["stage"]) == {"pretrain", "sft"} and set(df["benchmark"]) == set(zb.BENCHMARK_CATEGORIES)
    assert set(df["scale"]) == set(MICRO.sizes)
    assert set(df["mixture"]) == {f"prose{p}-code{100 - p}" for p in MICRO.mixtures}
    assert not df.duplicated(["model", "stage", "benchmark"]).any()
    assert df.groupby("model")["mixture"].nunique().eq(1).all()
    assert df["accuracy"].between(0, 1).all()
    # accuracy is a count of correct items over n_items
    k = df["accuracy"].to_numpy() * MICRO.n_items
    assert np.allclose(k, np.round(k))
    assert df["confidence"].between(0, 1).all() and (df["confidence"] > 0).all()
    # the two stages differ (SFT changed the weights)
    wide = df.pivot_table(index=["model", "benchmark"], columns="stage", values="confidence")
    assert (wide["pretrain"] != wide["sft"]).all()
    # the correlate analysis ran on it: every benchmark and the contract's keys
    c = res["correlate"]
    assert c["n_models"] == n_models and c["stages"] == ["pretrain", "sft"]
    for b in zb.BENCHMARK_CATEGORIES:
        r = c["benchmarks"][b]
        assert r["category"] == zb.BENCHMARK_CATEGORIES[b]
        for q in ("accuracy", "confidence"):
            for m in ("spearman", "kendall", "pearson"):
                assert f"{m}_{q}" in r and f"{m}_{q}_ci" in r
    assert set(c["categories"]) == {"code", "docs"}
    assert set(c["by_scale"]) == set(MICRO.sizes)
    # confidence correlations are defined (confidences vary across models) and in [-1, 1]
    assert all(-1 <= c["benchmarks"][b]["spearman_confidence"] <= 1 for b in zb.BENCHMARK_CATEGORIES)
    # decisions across scale: the mixtures' ranking at the small size against the large one, from the CSV's means,
    # with an interval over the items (the per-item scores reach the analysis beside the CSV)
    from transferlab.studies.correlate.analysis import decision_accuracy

    assert (df["continuous"] < 0).all()  # a log-probability per character
    pre = df[df["stage"] == "pretrain"]
    for b in zb.BENCHMARK_CATEGORIES:
        d = c["benchmarks"][b]["decision_accuracy"]
        assert d["sizes"] == list(MICRO.sizes) and d["stage"] == "pretrain" and len(d["mixtures"]) == 4
        for q in ("accuracy", "continuous"):
            by = pre[pre["benchmark"] == b].set_index(["mixture", "scale"])[q]
            want = decision_accuracy([by[(m, MICRO.sizes[0])] for m in d["mixtures"]],
                                     [by[(m, MICRO.sizes[1])] for m in d["mixtures"]])
            assert d[q]["value"] == pytest.approx(want)
            assert d[q]["ci"][0] <= d[q]["value"] <= d[q]["ci"][1]
    page = render(res["report"])
    assert page["figures"] == page["rendered"] >= 1 and page["errors"] == ""


def test_scoring_equals_hand_computation_from_logits(micro):
    from transferlab.zoo import Zoo

    store, res = micro
    zoo = Zoo(store / "zoo")
    name = res["models"][0]["pretrain"]
    model, tok = zoo.load(name), zoo.load_tokenizer(name)
    items = zb.build_benchmarks(tok, n_items=MICRO.n_items, max_cont_tokens=MICRO.seq_len // 2)
    item = items["next_line"][0]
    hand = []
    for choice in item.choices:
        # harness split: trailing whitespace of the context goes to the continuation
        ctx, cont = item.context.rstrip(), item.context[len(item.context.rstrip()):] + choice
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
        ids = whole[-(MICRO.seq_len + 1):]
        n_cont = len(whole) - n_ctx
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0].double()
        lp = 0.0
        for pos in range(len(ids) - 1 - n_cont, len(ids) - 1):
            row = logits[pos]
            lp += float(row[ids[pos + 1]] - torch.logsumexp(row, 0))
        hand.append(lp)
    hand = np.array(hand)
    pairs = [zb.encode_pair(tok, item.context, c) for c in item.choices]
    batched = zb.loglikelihoods(model, pairs, MICRO.seq_len, tok.eos_token_id)  # padded batch of 4
    np.testing.assert_allclose(batched, hand, rtol=1e-5, atol=1e-4)
    p_gold = np.exp(hand[item.gold]) / np.exp(hand).sum()
    s = zb.score_benchmark(model, tok, [item], MICRO.seq_len)
    assert s["confidence"] == pytest.approx(p_gold, rel=1e-4)
    assert s["accuracy"] == float(np.argmax(hand) == item.gold)
    assert zb.choice_stats(np.array([-1.0, -2.0, -3.0, -4.0]), 1) == (
        False, pytest.approx(np.exp(-2) / np.exp([-1, -2, -3, -4]).sum()))


def test_benchmarks_are_deterministic_with_gold_answers(micro):
    from transferlab.zoo import Zoo

    store, res = micro
    tok = Zoo(store / "zoo").load_tokenizer(res["models"][0]["pretrain"])
    a = zb.build_benchmarks(tok, n_items=6, max_cont_tokens=32, seed=3, names=list(zb.ALL_BENCHMARKS))
    b = zb.build_benchmarks(tok, n_items=6, max_cont_tokens=32, seed=3, names=list(zb.ALL_BENCHMARKS))
    assert a == b and len(a) == 5 and len(set(zb.BENCHMARK_CATEGORIES.values())) >= 2
    assert list(zb.build_benchmarks(tok, n_items=6, max_cont_tokens=32, seed=3)) == list(zb.BENCHMARK_CATEGORIES)
    funcs = zb.collect_functions("bench")
    by_summary = {f'"""{f.summary}"""\ndef': f.name for f in funcs}
    for items in a.values():
        for it in items:
            assert len(it.choices) == 4 and len(set(it.choices)) == 4 and 0 <= it.gold < 4
    for it in a["doc_to_name"]:
        assert it.choices[it.gold] == f" {by_summary[it.context]}("
    for it in a["doc_word_order"]:  # the distractors are the gold's own words, shuffled
        assert all(sorted(c.split()) == sorted(it.choices[it.gold].split()) for c in it.choices)
        assert any(it.context + it.choices[it.gold] in " ".join(f.words) for f in funcs)  # the docstring's order
    lines = {ln for f in funcs for ln in f.lines}
    for it in a["next_line"]:
        assert it.choices[it.gold] in lines
    for it in a["keyword"]:
        ind = it.context.split("\n")[-1]
        assert ind + it.choices[it.gold] in lines
    # the SFT documents and the benchmarks come from different files
    sft = {rel for rel, _ in zb.heldout_files("sft")}
    assert sft and not sft & {rel for rel, _ in zb.heldout_files("bench")}


def test_mixture_streams_and_cli_reuse(micro):
    from transferlab.zoo import Zoo

    store, res = micro
    zoo = Zoo(store / "zoo")
    tok_dir = next((store / "zoo" / "tokenizers").iterdir())
    prose = zoo.ensure_tokens("prose", tok_dir, MICRO.val_percent, MICRO.max_files)
    code = zoo.ensure_tokens("code", tok_dir, MICRO.val_percent, MICRO.max_files)
    pool = min(len(prose.train), len(code.train))
    for p in (100, 75, 0):
        m = mixture_data(prose, code, p)
        n = round(p * pool / 100)
        assert len(m.train) == pool
        assert torch.equal(m.train[:n], prose.train[:n]) and torch.equal(m.train[n:], code.train[: pool - n])
    assert mixture_data(prose, code, 75).corpus_key != mixture_data(prose, code, 50).corpus_key
    # a second call retrains nothing: same models, same scores
    code_, out, err = _cli(["correlate-zoo", "--preset", "micro", "--json", "--store", str(store)])
    assert code_ == 0, err
    again = json.loads(out)
    assert [m["sft"] for m in again["models"]] == [m["sft"] for m in res["models"]]
    assert pd.read_csv(again["csv"]).equals(pd.read_csv(res["csv"]))
    # `transferlab correlate PATH` keeps working on the CSV
    code_, out, err = _cli(["correlate", again["csv"], "--json", "--n-boot", "200",
                            "--out", str(store / "c.html")])
    assert code_ == 0, err
    assert set(json.loads(out)["benchmarks"]) == set(zb.BENCHMARK_CATEGORIES)
    # bad input: one clear line, exit code 2
    code_, out, err = _cli(["correlate-zoo", "--preset", "micro", "--set", "n_items=1", "--store", str(store)])
    assert code_ == 2 and err.startswith("error") and "n_items" in err and len(err.strip().splitlines()) == 1


def test_terminal_prints_every_defined_statistic():
    from transferlab.studies.correlate.study import cross_stage_table

    c = {"benchmarks": {"b1": {"reliability_accuracy": "reliable", "mean_accuracy_pre": 0.4, "spearman_accuracy": 0.8,
                               "spearman_accuracy_ci": [0.5, 0.9], "kendall_accuracy": 0.6,
                               "pearson_accuracy": 0.7, "reliability_confidence": "undefined",
                               "spearman_confidence": float("nan")}}}
    lines = cross_stage_table(c).splitlines()
    assert "Kendall" in lines[0] and "Pearson" in lines[0]
    assert "+0.80 [+0.50, +0.90]" in lines[1] and "+0.60" in lines[1] and "+0.70" in lines[1]
    assert lines[2].split()[:3] == ["b1", "confidence", "undefined"] or "undefined" in lines[2]
