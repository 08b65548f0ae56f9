"""Reading lm-evaluation-harness folders written by the test: accuracy, p(gold) confidence from
samples, groups, models.csv, calibration numbers, and the bad inputs named by file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import spearmanr

from transferlab.studies.correlate import CorrelateConfig, run
from transferlab.studies.correlate.harness import load

STAMP = "2024-05-01T10-00-00.000000"
TASKS = ["hellaswag", "piqa"]


def write_run(root, stage, model, rng, *, skill, tasks=TASKS, n_docs=20, nan_task=None, group=False):
    """One harness output folder; returns {task: (acc, mean p_gold, per-doc probs, golds)}."""
    d = root / stage / model / f"org__{model}"
    d.mkdir(parents=True)
    truth, results = {}, {}
    for task in tasks:
        lls, golds, accs = [], [], []
        lines = []
        for doc in range(n_docs):
            k = 4 if task != "piqa" else 2
            gold = int(rng.integers(k))
            ll = rng.normal(-5, 1, size=k)
            ll[gold] += skill * rng.uniform(0, 2)
            acc = float(np.argmax(ll) == gold)
            lls.append(ll)
            golds.append(gold)
            accs.append(acc)
            lines.append(json.dumps({
                "doc_id": doc, "target": gold,
                "resps": [[[str(v), "False"]] for v in ll],
                "filtered_resps": [[str(v), "False"] for v in ll], "acc": acc}))
        (d / f"samples_{task}_{STAMP}.jsonl").write_text("\n".join(lines) + "\n")
        probs = [softmax(ll) for ll in lls]
        pg = float(np.mean([p[g] for p, g in zip(probs, golds)]))
        acc = float(np.mean(accs))
        truth[task] = (acc, pg, probs, golds)
        results[task] = {"alias": task, "acc,none": float("nan") if task == nan_task else acc,
                         "acc_stderr,none": 0.01, "acc_norm,none": acc}
    payload = {"results": results, "configs": {}, "versions": {}, "n-shot": {},
               "config": {"model": "hf", "model_args": f"pretrained={model}"}}
    if group:
        payload["results"]["mygroup"] = {"alias": "mygroup", "acc,none": 0.5}
        payload["group_subtasks"] = {"mygroup": list(tasks)}
    (d / f"results_{STAMP}.json").write_text(json.dumps(payload))
    return truth


def build(root, n_models=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n_models):
        skill = 0.5 + i
        for stage in ("pretrain", "sft"):
            bump = 0.3 if stage == "sft" else 0.0
            truth[(f"m{i}", stage)] = write_run(root, stage, f"m{i}", rng, skill=skill + bump, **kw)
    return truth


def test_harness_folder_accuracy_confidence_and_calibration(tmp_path):
    root = tmp_path / "evals"
    truth = build(root)
    (root / "models.csv").write_text("model,mixture,scale\n" + "".join(
        f"m{i},mix{i % 3},{'1B' if i < 3 else '240M'}\n" for i in range(5)))
    data = load(root)
    t = data.table.set_index(["model", "stage", "benchmark"])
    for (model, stage), tasks in truth.items():
        for task, (acc, pg, _, _) in tasks.items():
            assert t.loc[(model, stage, task), "accuracy"] == pytest.approx(acc)
            assert t.loc[(model, stage, task), "confidence"] == pytest.approx(pg, abs=1e-12)
    assert t.loc[("m4", "sft", "piqa"), "scale"] == "240M"
    assert t.loc[("m4", "sft", "piqa"), "mixture"] == "mix1"
    res = run(CorrelateConfig(path=str(root), n_boot=200), out=tmp_path / "r.html")
    # Skill grows with the model index in both stages: rankings transfer; the number is scipy's.
    x = [truth[(f"m{i}", "pretrain")]["hellaswag"][1] for i in range(5)]
    y = [truth[(f"m{i}", "sft")]["hellaswag"][1] for i in range(5)]
    assert res["benchmarks"]["hellaswag"]["spearman_confidence"] == pytest.approx(spearmanr(x, y).statistic)
    assert res["benchmarks"]["hellaswag"]["spearman_confidence"] > 0.5
    assert set(res["by_scale"]) == {"1B"}  # 240M has only 2 models: noted, not split out
    assert any("scale 240M" in n for n in res["notes"])
    # ECE and Brier pooled over both tasks' docs, by hand.
    row = next(r for r in res["calibration"]["per_model"] if r["model"] == "m2" and r["stage"] == "sft")
    probs = [p for task in TASKS for p in truth[("m2", "sft")][task][2]]
    golds = [g for task in TASKS for g in truth[("m2", "sft")][task][3]]
    pmax = np.array([p.max() for p in probs])
    correct = np.array([float(np.argmax(p) == g) for p, g in zip(probs, golds)])
    bins = np.minimum((pmax * 10).astype(int), 9)
    want = sum(abs(correct[bins == b].sum() - pmax[bins == b].sum()) for b in range(10)) / len(pmax)
    assert row["ece"] == pytest.approx(want, abs=1e-12)
    brier = np.mean([((p - np.eye(len(p))[g]) ** 2).sum() for p, g in zip(probs, golds)])
    assert row["brier"] == pytest.approx(brier, abs=1e-12)
    assert "ece" in res["calibration"]["transfer"]


def test_group_task_stands_for_its_subtasks(tmp_path):
    root = tmp_path / "evals"
    truth = build(root, n_models=3, group=True)
    data = load(root)
    assert data.benchmarks == ["mygroup"]
    conf = data.table.set_index(["model", "stage"]).loc[("m0", "pretrain"), "confidence"]
    pooled = np.mean([p[g] for task in TASKS for p, g in zip(truth[("m0", "pretrain")][task][2],
                                                             truth[("m0", "pretrain")][task][3])])
    assert conf == pytest.approx(pooled, abs=1e-12)
    assert load(root, tasks=TASKS).benchmarks == TASKS


def _error_line(cli, root, tmp_path):
    code, out, err = cli(["correlate", str(root), "--json", "--out", str(tmp_path / "never.html")])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (tmp_path / "never.html").exists()
    return lines[0]


def test_missing_tasks_in_one_stage_names_the_results_file(tmp_path, cli):
    root = tmp_path / "evals"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_run(root, "pretrain", f"m{i}", rng, skill=1.0)
        write_run(root, "sft", f"m{i}", rng, skill=1.0, tasks=TASKS if i != 1 else ["hellaswag"])
    line = _error_line(cli, root, tmp_path)
    assert f"{root}/sft/m1/org__m1/results_{STAMP}.json" in line and "missing task(s) piqa" in line


def test_model_names_that_do_not_match(tmp_path, cli):
    root = tmp_path / "evals"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_run(root, "pretrain", f"m{i}", rng, skill=1.0)
        write_run(root, "sft", f"m{i}" if i else "m0-sft", rng, skill=1.0)
    line = _error_line(cli, root, tmp_path)
    assert str(root) in line and "only in stage 'pretrain': m0" in line
    assert "only in stage 'sft': m0-sft" in line


def test_single_model_and_nan_accuracy(tmp_path, cli):
    root = tmp_path / "one"
    build(root, n_models=1)
    line = _error_line(cli, root, tmp_path)
    assert str(root) in line and "found 1 model(s)" in line
    root2 = tmp_path / "nan"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_run(root2, "pretrain", f"m{i}", rng, skill=1.0, nan_task="piqa" if i == 2 else None)
        write_run(root2, "sft", f"m{i}", rng, skill=1.0)
    line = _error_line(cli, root2, tmp_path)
    assert f"{root2}/pretrain/m2/org__m2/results_{STAMP}.json" in line and "'piqa' is NaN" in line


def test_stage_folder_names_are_checked(tmp_path, cli):
    root = tmp_path / "evals"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_run(root, "base", f"m{i}", rng, skill=1.0)
        write_run(root, "chat", f"m{i}", rng, skill=1.0)
    line = _error_line(cli, root, tmp_path)
    assert "no stage folder 'pretrain' (found: base, chat)" in line and "--pre" in line
    code, out, err = cli(["correlate", str(root), "--pre", "base", "--post", "chat", "--json",
                          "--n-boot", "100", "--out", str(tmp_path / "ok.html")])
    assert code == 0, err
    assert json.loads(out)["stages"] == ["base", "chat"]
