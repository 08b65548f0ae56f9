"""Cross-stage correlations: statistics against scipy, known synthetic correlations, the CLI contract,
bad inputs, and the report in headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.browser import render
from transferlab.studies.correlate import CorrelateConfig, run
from transferlab.studies.correlate.analysis import (
    bootstrap_correlations,
    category_of,
    correlations_rows,
    ece,
    intra_category_coherence,
)

BENCH = ["hellaswag", "piqa", "arc_easy", "gsm8k"]


def tidy_frame(n_mix: int = 12, scales=("240M", "1B"), seed: int = 0) -> pd.DataFrame:
    """hellaswag: sft = pretrain + small noise (rho ~ 1); piqa: sft independent of pretrain (rho ~ 0);
    arc_easy: sft = -pretrain (rho ~ -1); gsm8k: strong at 1B, independent at 240M."""
    rng = np.random.default_rng(seed)
    rows = []
    for scale in scales:
        for i in range(n_mix):
            model = f"mix{i}-{scale}"
            pre = {b: rng.uniform(0.3, 0.8) for b in BENCH}
            post = {
                "hellaswag": pre["hellaswag"] + rng.normal(0, 0.005),
                "piqa": rng.uniform(0.3, 0.8),
                "arc_easy": 1.1 - pre["arc_easy"] + rng.normal(0, 0.005),
                "gsm8k": pre["gsm8k"] + rng.normal(0, 0.005) if scale == "1B" else rng.uniform(0.3, 0.8),
            }
            for stage, acc in (("pretrain", pre), ("sft", post)):
                for b in BENCH:
                    rows.append({"model": model, "stage": stage, "mixture": f"mix{i}", "scale": scale,
                                 "benchmark": b, "accuracy": acc[b],
                                 "confidence": acc[b] * 0.8 + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


def test_vectorized_bootstrap_statistics_equal_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(40, 9)).astype(float)  # many ties, like resampled models
    y = x + rng.integers(0, 3, size=(40, 9))
    r = correlations_rows(x, y)
    for i in range(40):
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            continue
        assert r["spearman"][i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)
        assert r["kendall"][i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic, abs=1e-12)
        assert r["pearson"][i] == pytest.approx(stats.pearsonr(x[i], y[i]).statistic, abs=1e-12)


def test_bootstrap_intervals_known_correlations():
    rng = np.random.default_rng(2)
    a = rng.normal(size=30)
    near = bootstrap_correlations(a, a + 0.05 * rng.normal(size=30), n_boot=1000, seed=0)
    assert near["spearman"] > 0.97 and near["spearman_ci"][0] > 0.9
    assert near["spearman_ci"][0] <= near["spearman"] <= near["spearman_ci"][1]
    indep = bootstrap_correlations(a, rng.normal(size=30), n_boot=1000, seed=0)
    assert abs(indep["spearman"]) < 0.4
    assert indep["spearman_ci"][0] < 0 < indep["spearman_ci"][1]
    assert indep["kendall_ci"][0] < 0 < indep["kendall_ci"][1]
    # The interval narrows with more models (same relationship).
    b = rng.normal(size=200)
    wide = bootstrap_correlations(a, a + rng.normal(size=30), n_boot=1000, seed=0)
    narrow = bootstrap_correlations(b, b + rng.normal(size=200), n_boot=1000, seed=0)
    assert np.diff(narrow["pearson_ci"])[0] < np.diff(wide["pearson_ci"])[0]


def test_ece_by_hand_and_categories():
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1, 1, 0])
    # bin 9: acc .5 conf .95 -> 2/6 * .45; bin 5: acc .75 conf .55 -> 4/6 * .2
    assert ece(conf, correct, 10) == pytest.approx(2 / 6 * 0.45 + 4 / 6 * 0.2)
    assert category_of("hellaswag") == "commonsense"
    assert category_of("mmlu_abstract_algebra") == "knowledge"
    assert category_of("my_task") == "other"
    assert category_of("hellaswag", {"hellaswag": "mine"}) == "mine"


def test_tidy_csv_end_to_end_numbers(tmp_path):
    df = tidy_frame()
    csv = tmp_path / "evals.csv"
    df.to_csv(csv, index=False)
    res = run(CorrelateConfig(path=str(csv), n_boot=400), out=tmp_path / "r.html")
    b = res["benchmarks"]
    assert res["n_models"] == 24
    for bench in BENCH:  # point estimates are scipy's, computed over all 24 models
        pre = df[(df.stage == "pretrain") & (df.benchmark == bench)].sort_values("model")
        post = df[(df.stage == "sft") & (df.benchmark == bench)].sort_values("model")
        assert b[bench]["spearman_accuracy"] == pytest.approx(
            stats.spearmanr(pre.accuracy, post.accuracy).statistic, abs=1e-12)
        assert b[bench]["kendall_confidence"] == pytest.approx(
            stats.kendalltau(pre.confidence, post.confidence).statistic, abs=1e-12)
    assert b["hellaswag"]["spearman_accuracy"] > 0.95
    assert b["hellaswag"]["reliability_accuracy"] == "reliable"
    assert abs(b["piqa"]["spearman_accuracy"]) < 0.45
    assert b["piqa"]["reliability_accuracy"] == "unreliable"
    assert b["arc_easy"]["spearman_accuracy"] < -0.95
    assert b["arc_easy"]["reliability_accuracy"] == "unreliable"
    assert [r["benchmark"] for r in res["ranking_accuracy"]][0] == "hellaswag"
    assert [r["benchmark"] for r in res["ranking_accuracy"]][-1] == "arc_easy"
    # Split by scale: gsm8k transfers at 1B, not at 240M.
    assert set(res["by_scale"]) == {"240M", "1B"}
    assert res["by_scale"]["1B"]["benchmarks"]["gsm8k"]["spearman_accuracy"] > 0.9
    assert abs(res["by_scale"]["240M"]["benchmarks"]["gsm8k"]["spearman_accuracy"]) < 0.7
    assert res["by_scale"]["1B"]["n_models"] == 12
    # Categories: commonsense = mean of hellaswag and piqa per model.
    cs = res["categories"]["commonsense"]
    assert cs["benchmarks"] == ["hellaswag", "piqa"]
    cs_rows = df[df.benchmark.isin(["hellaswag", "piqa"])]
    pre = cs_rows[cs_rows.stage == "pretrain"].groupby("model").accuracy.mean()
    post = cs_rows[cs_rows.stage == "sft"].groupby("model").accuracy.mean()
    assert cs["pearson_accuracy"] == pytest.approx(stats.pearsonr(pre, post).statistic, abs=1e-12)
    # Calibration from a tidy CSV: gap and alignment exist, ECE does not (no samples).
    row = res["calibration"]["per_model"][0]
    assert row["ece"] is None and row["gap"] == pytest.approx(
        (df[(df.model == row["model"]) & (df.stage == row["stage"])].eval("confidence - accuracy")).mean())


def test_intra_category_coherence_detects_agreeing_benchmarks():
    rng = np.random.default_rng(3)
    skill = rng.uniform(size=15)
    rows = []
    for i in range(15):
        for stage in ("pretrain", "sft"):
            vals = {"hellaswag": skill[i] + rng.normal(0, 0.01), "piqa": skill[i] + rng.normal(0, 0.01),
                    "arc_easy": rng.uniform(), "sciq": rng.uniform()}
            rows += [{"model": f"m{i}", "stage": stage, "mixture": "x", "scale": "all", "benchmark": b,
                      "accuracy": v, "confidence": np.nan} for b, v in vals.items()]
    coh = intra_category_coherence(pd.DataFrame(rows), ("pretrain", "sft"))
    assert coh["commonsense"]["pretrain"] > 0.9
    assert abs(coh["science"]["sft"]) < 0.6


def test_cli_json_contract_and_report_renders(tmp_path, cli):
    csv = tmp_path / "evals.csv"
    tidy_frame(n_mix=6).to_csv(csv, index=False)
    code, out, err = cli(["correlate", str(csv), "--json", "--n-boot", "200",
                          "--store", str(tmp_path / "runs")])
    assert code == 0, err
    res = json.loads(out)
    for bench in BENCH:
        entry = res["benchmarks"][bench]
        for q in ("accuracy", "confidence"):
            for m in ("spearman", "kendall", "pearson"):
                v, ci = entry[f"{m}_{q}"], entry[f"{m}_{q}_ci"]
                assert -1 <= v <= 1 and len(ci) == 2 and ci[0] <= ci[1]
    page = render(res["report"])
    assert page["errors"] == "", page
    assert page["figures"] >= 6 and page["rendered"] == page["figures"], page
    html = open(res["report"]).read()
    assert "hellaswag" in html and "Calibration" in html


def test_cli_human_output(tmp_path, cli):
    csv = tmp_path / "evals.csv"
    tidy_frame(n_mix=4, scales=("1B",)).to_csv(csv, index=False)
    code, out, err = cli(["correlate", str(csv), "--n-boot", "100", "--out", str(tmp_path / "x.html")])
    assert code == 0, err
    assert f"report: {tmp_path / 'x.html'}" in out
    assert (tmp_path / "x.html").exists()


@pytest.mark.parametrize("case, needle", [
    ("single", "1 model(s)"),
    ("nan", "accuracy is NaN"),
    ("mismatch", "model names do not match"),
    ("missing", "missing benchmark(s) piqa"),
    ("nostage", "no stage value 'sft'"),
])
def test_bad_tidy_csv_gets_one_line_naming_the_file(tmp_path, cli, case, needle):
    df = tidy_frame(n_mix=3, scales=("1B",))
    if case == "single":
        df = df[df.model == "mix0-1B"]
    elif case == "nan":
        df.loc[df.index[5], "accuracy"] = np.nan
    elif case == "mismatch":
        df.loc[(df.stage == "sft") & (df.model == "mix1-1B"), "model"] = "mix1-1b-typo"
    elif case == "missing":
        df = df.drop(df[(df.stage == "sft") & (df.model == "mix2-1B") & (df.benchmark == "piqa")].index)
    elif case == "nostage":
        df = df[df.stage == "pretrain"]
    csv = tmp_path / "bad.csv"
    df.to_csv(csv, index=False)
    out_html = tmp_path / "never.html"
    code, out, err = cli(["correlate", str(csv), "--json", "--out", str(out_html)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(csv) in lines[0] and needle in lines[0], lines[0]
    assert out == "" and not out_html.exists()
