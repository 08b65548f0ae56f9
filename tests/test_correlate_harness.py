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


# ---- real lm-evaluation-harness 0.4.13 output (tests/data/lm_eval_tiny, see its README) -------------
REAL = __import__("pathlib").Path(__file__).parent / "data" / "lm_eval_tiny"
REAL_TASKS = ["tiny_index", "tiny_letters", "tiny_text", "tiny_wino"]


def _gold_from_task_definition(task, doc):
    """The gold index as each recipe task's YAML defines it (independent of the loader's resolution)."""
    if task == "tiny_letters":
        return ["A", "B", "C"].index(doc["answerKey"])
    if task == "tiny_text":
        return doc["options"].index(doc["answer"])
    if task == "tiny_index":
        return doc["label"]
    return int(doc["answer"]) - 1  # tiny_wino: 1-based answer


def test_real_harness_output_every_target_shape_gets_confidence(tmp_path):
    from transferlab.studies.correlate.harness import resolve_gold

    data = load(REAL)
    assert data.models == ["tiny-a", "tiny-b", "tiny-c"]  # from model_name, not the sanitized folders
    assert data.benchmarks == REAL_TASKS
    assert not [n for n in data.notes if n.startswith("no confidence")], data.notes
    t = data.table.set_index(["model", "stage", "benchmark"])
    assert np.isfinite(t["confidence"]).all()
    n_docs = 0
    for f in sorted(REAL.rglob("samples_*.jsonl")):
        task = f.name.split("_2026")[0].removeprefix("samples_")
        stage, folder = f.parts[-3], f.parts[-2]
        model = folder.rsplit("__", 1)[-1]
        recs = [json.loads(line) for line in f.read_text().splitlines()]
        pg = []
        for rec in recs:
            ll = np.array([float(r[0]) for r in rec["filtered_resps"]])
            gold = _gold_from_task_definition(task, rec["doc"])
            assert resolve_gold(rec, ll) == (gold, "")
            assert float(np.argmax(ll) == gold) == rec["acc"]  # the harness scored the same gold
            pg.append(softmax(ll)[gold])
            n_docs += 1
        assert t.loc[(model, stage, task), "confidence"] == pytest.approx(np.mean(pg), abs=1e-12)
        results = json.loads(next(f.parent.glob("results_*.json")).read_text())["results"][task]
        assert t.loc[(model, stage, task), "accuracy"] == results["acc,none"]
        assert results["acc,none"] == pytest.approx(np.mean([r["acc"] for r in recs]))
    assert n_docs == 6 * (5 + 5 + 5 + 4)
    # tiny_index holds tiny_text's questions with the options permuted: the same p(gold)
    for m in data.models:
        for s in ("pretrain", "sft"):
            assert t.loc[(m, s, "tiny_text"), "confidence"] == pytest.approx(
                t.loc[(m, s, "tiny_index"), "confidence"], abs=1e-4)


def test_real_output_end_to_end_and_in_the_per_model_layout(tmp_path, cli):
    import shutil

    code, out, err = cli(["correlate", str(REAL), "--json", "--n-boot", "200", "--out", str(tmp_path / "a.html")])
    assert code == 0, err
    res = json.loads(out)
    assert res["n_models"] == 3
    for row in res["calibration"]["per_model"]:
        assert row["gap"] is not None and row["ece"] is not None and row["n_benchmarks_confidence"] == 4
    assert res["benchmarks"]["tiny_text"]["spearman_confidence"] is not None
    from tests.browser import render

    page = render(res["report"])
    assert page["figures"] == page["rendered"] >= 1 and page["errors"] == "", page
    # lm_eval --output_path ROOT/<stage>/<model> adds the sanitized folder below <model>: same table
    root = tmp_path / "per_model"
    for d in REAL.glob("*/models__*"):
        stage, short = d.parent.name, d.name.rsplit("__", 1)[-1]
        shutil.copytree(d, root / stage / f"run-{short}" / d.name)
    a, b = load(REAL).table, load(root).table
    assert sorted(b["model"].unique()) == ["run-tiny-a", "run-tiny-b", "run-tiny-c"]
    np.testing.assert_array_equal(a["confidence"].to_numpy(), b["confidence"].to_numpy())


def test_typos_in_tasks_and_metric_name_the_cause(tmp_path, cli):
    def err_of(*extra):
        code, out, err = cli(["correlate", str(REAL), "--json", "--out", str(tmp_path / "x.html"), *extra])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    line = err_of("--tasks", "tiny_letters,tiny_txt")
    assert "task 'tiny_txt' is in no results file (did you mean 'tiny_text'?)" in line
    assert "tiny_index, tiny_letters, tiny_text, tiny_wino" in line and "found 0 model" not in line
    line = err_of("--metric", "acc_nrm")
    assert "metric 'acc_nrm' is not reported for any task (did you mean 'acc_norm'?)" in line
    line = err_of("--metric", "acc_norm", "--tasks", "tiny_letters,tiny_text")
    assert "task(s) tiny_letters do not report metric 'acc_norm'" in line
    data = load(REAL, metric="acc_norm")
    assert data.benchmarks == ["tiny_index", "tiny_text"]
    assert "left out task(s) without metric 'acc_norm': tiny_letters, tiny_wino" in data.notes


def _write_default_layout(root, stage, model_path, rng, **kw):
    """A run as lm_eval --output_path ROOT/<stage> lays it out: the folder is the sanitized model path."""
    sanitized = model_path.replace("/", "__")
    d = root / stage / sanitized
    write_run(root, stage, "tmp", rng, skill=1.0, **kw)
    (root / stage / "tmp" / "org__tmp").rename(d)
    (root / stage / "tmp").rmdir()
    f = next(d.glob("results_*.json"))
    obj = json.loads(f.read_text())
    obj.update(model_name=model_path, model_name_sanitized=sanitized)
    obj["config"]["model_args"] = {"pretrained": model_path}
    f.write_text(json.dumps(obj))


def test_default_layout_with_names_that_differ_explains_the_per_model_layout(tmp_path, cli):
    root = tmp_path / "evals"
    rng = np.random.default_rng(0)
    for i in range(3):
        _write_default_layout(root, "pretrain", f"org/base-{i}", rng)
        _write_default_layout(root, "sft", f"org/chat-{i}", rng)
    line = _error_line(cli, root, tmp_path)
    assert "only in stage 'pretrain': base-0, base-1, base-2" in line and "org__base-0" in line
    assert "--output_path <root>/<stage>/<model>" in line and "found 0" not in line
    # the same checkpoints' names from paths that end alike match across stages
    root2 = tmp_path / "ok"
    for i in range(3):
        _write_default_layout(root2, "pretrain", f"/ckpt/pretrain/m{i}", rng)
        _write_default_layout(root2, "sft", f"/ckpt/sft/m{i}", rng)
    assert load(root2).models == ["m0", "m1", "m2"]


def _rewrite_samples(path, fn):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("\n".join(json.dumps(fn(i, r)) for i, r in enumerate(lines)) + "\n")


def test_text_targets_resolve_and_unresolvable_ones_are_noted_on_the_page(tmp_path):
    root = tmp_path / "evals"
    truth = build(root, n_models=3)
    choices = ["alpha", "beta", "gamma", "delta"]
    for f in root.rglob("samples_hellaswag_*.jsonl"):  # a text target with the docs' choices logged
        def text(i, r):
            r["doc"] = {"ctx": "q", "endings": choices}
            r["arguments"] = {f"gen_args_{j}": {"arg_0": "q", "arg_1": f" {c}"} for j, c in enumerate(choices)}
            r["target"] = choices[int(r["target"])]
            return r
        _rewrite_samples(f, text)
    for f in root.rglob("samples_piqa_*.jsonl"):  # a target the choices cannot explain
        _rewrite_samples(f, lambda i, r: {**r, "target": "no such choice"})
    data = load(root)
    t = data.table.set_index(["model", "stage", "benchmark"])
    for (model, stage), tasks in truth.items():
        assert t.loc[(model, stage, "hellaswag"), "confidence"] == pytest.approx(tasks["hellaswag"][1], abs=1e-12)
        assert np.isnan(t.loc[(model, stage, "piqa"), "confidence"])
    note = next(n for n in data.notes if n.startswith("no confidence for task 'piqa'"))
    assert "line 1: target 'no such choice' is neither a choice index (0..1) nor the text" in note
    res = run(CorrelateConfig(path=str(root), n_boot=200), out=tmp_path / "r.html")
    assert note in res["notes"]
    # gap and alignment come from the benchmarks that have a confidence, not emptied by piqa
    row = next(r for r in res["calibration"]["per_model"] if r["model"] == "m1" and r["stage"] == "sft")
    acc, pg = truth[("m1", "sft")]["hellaswag"][:2]
    assert row["n_benchmarks_confidence"] == 1 and row["gap"] == pytest.approx(pg - acc, abs=1e-12)
    html = (tmp_path / "r.html").read_text()
    assert "no confidence for task &#x27;piqa&#x27;" in html or "no confidence for task 'piqa'" in html


def test_ambiguous_targets_follow_the_harness_acc():
    from transferlab.studies.correlate.harness import resolve_gold

    args = {"gen_args_0": {"arg_0": "q", "arg_1": " 1"}, "gen_args_1": {"arg_0": "q", "arg_1": " 0"}}
    ll = np.array([-1.0, -2.0])  # argmax is choice 0, whose text is "1"
    # target "1": index 1 or the text of choice 0; the logged acc says which the harness scored
    assert resolve_gold({"target": "1", "arguments": args, "acc": 1.0}, ll) == (0, "")
    assert resolve_gold({"target": "1", "arguments": args, "acc": 0.0}, ll) == (1, "")
    assert resolve_gold({"target": "1", "arguments": args}, ll) == (1, "")  # no acc: the index first
    # a letter against the document's labelled choices (CommonsenseQA's answerKey)
    doc = {"choices": {"label": ["A", "B"], "text": ["x", "y"]}}
    assert resolve_gold({"target": "B", "doc": doc}, ll) == (1, "")
    # winogrande's shape: one shared continuation, a 1-based answer in the doc
    wino = {"gen_args_0": {"arg_0": "he", "arg_1": " ran"}, "gen_args_1": {"arg_0": "she", "arg_1": " ran"}}
    assert resolve_gold({"target": "ran", "arguments": wino, "doc": {"answer": "2"}, "acc": 0.0}, ll) == (1, "")
    gold, why = resolve_gold({"target": "[0, 1]"}, ll)
    assert gold is None and "several gold answers" in why


def test_tidy_csv_tasks_typo_is_named(tmp_path, cli):
    f = tmp_path / "t.csv"
    f.write_text("model,stage,benchmark,accuracy\n" + "".join(
        f"m{i},{s},{b},0.{i + 1}\n" for i in range(3) for s in ("pretrain", "sft") for b in ("arc_easy", "piqa")))
    code, out, err = cli(["correlate", str(f), "--tasks", "arc_esy", "--json", "--out", str(tmp_path / "x.html")])
    assert code == 2 and "benchmark 'arc_esy' is in no row (did you mean 'arc_easy'?)" in err, err
