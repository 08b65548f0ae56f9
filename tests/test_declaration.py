"""One declaration per study (issue 24): the stored name, the CLI's help, `runs mirror --study`, `runs report` and
the sweep hooks all follow from each Study class in the registry, for every registered study."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from transferlab.store import Store
from transferlab.studies.registry import canonical, get_study, stored_name, study_names

PACKAGE = Path(__file__).resolve().parents[1] / "transferlab"
STUDIES = study_names()


def cheap_run(study, store: Store, tmp_path: Path, summary: dict | None = None):
    """A finished run of ``study`` in the store without training: its default config (a correlate config needs
    an input path, which need not exist for this)."""
    values = {"path": str(tmp_path / "evals.csv")} if "path" in study.config_cls.model_fields else None
    cfg = study.make_config(values=values)
    run = store.open_run(study.name, cfg)
    run.start()
    run.finish(summary if summary is not None else {"note": "made by the test, not by the study"})
    return run


def test_every_name_of_a_study_leads_to_its_stored_name():
    for command in STUDIES:
        study = get_study(command)
        for name in (command, study.name, *study.aliases):
            assert canonical(name) == command and stored_name(name) == study.name


@pytest.mark.parametrize("command", STUDIES)
def test_runs_mirror_study_selects_that_studys_runs(command, tmp_path, cli):
    pytest.importorskip("tensorboard")
    store = Store(tmp_path / "runs")
    runs = {c: cheap_run(get_study(c), store, tmp_path) for c in STUDIES}
    study = get_study(command)
    for name in (command, study.name):
        code, out, err = cli(["runs", "mirror", "--study", name, "--to", "tensorboard", "--json",
                              "--store", str(store.root)])
        assert code == 0, err
        assert json.loads(out)["runs"] == [runs[command].id], name
        code, out, err = cli(["runs", "ls", "--study", name, "--json", "--store", str(store.root)])
        assert code == 0 and [r["id"] for r in json.loads(out)] == [runs[command].id]


def test_runs_report_of_a_run_of_every_study(tmp_path, cli):
    """A run whose summary is too small to rebuild the page from gives back the report it wrote (exit 0); without
    one, a single line saying how to rerun it (exit 2). Rebuilding from a real summary: the tests below and
    test_grok_cli, test_eft_demo, test_correlate_zoo."""
    store = Store(tmp_path / "runs")
    for command in STUDIES:
        study = get_study(command)
        run = cheap_run(study, store, tmp_path)
        run.report_path.write_text("<html>the page the run wrote</html>")
        code, out, err = cli(["runs", "report", run.id, "--json", "--store", str(store.root)])
        assert code == 0, (command, err)
        path = Path(json.loads(out)["report"])
        assert path.is_file() and path.parent == run.path, command
        run.report_path.unlink()
        code, out, err = cli(["runs", "report", run.id, "--store", str(store.root)])
        if code == 0:  # rebuilt from the config and the (small) summary: grokking's page needs no more
            assert Path(out.strip()) == run.report_path and run.report_path.is_file(), command
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1, (command, err)
            assert f"rerun it: transferlab {' '.join(study.cli_words())} --config" in err, (command, err)


def test_runs_report_rebuilds_a_w2s_run_from_its_summary(tmp_path, cli):
    from transferlab.studies.w2s.run import make_config, run

    store = Store(tmp_path / "runs")
    s = run(make_config(task="synthetic-noisy", seeds=1, n_examples=300, steps=30), store)
    page = Path(s["run_dir"]) / "report.html"
    written = page.read_text()
    page.unlink()
    code, out, err = cli(["runs", "report", s["run_id"], "--store", str(store.root)])
    assert code == 0, err
    assert Path(out.strip()) == page and page.read_text() == written  # the same page as the run made


def test_runs_report_of_a_child_run_says_it_has_none(tmp_path, cli):
    store = Store(tmp_path / "runs")
    from transferlab.studies.w2s.run import BaselineConfig

    child = store.open_run("w2s-baseline", BaselineConfig(identity={}, sizes={}))
    code, _, err = cli(["runs", "report", child.id, "--store", str(store.root)])
    assert code == 2 and "for its own use" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", STUDIES)
def test_help_lists_every_preset_from_the_registry(command, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one option per line: names are not cut by the terminal's width
    study = get_study(command)
    for words in (study.cli_words(), ["sweep", command]):
        code, out, _ = cli([*words, "--help"])
        preset_line = " ".join(line for line in out.splitlines() if "--preset" in line)
        assert code == 0 and preset_line, words
        for name in study.presets.names():
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", preset_line), (words, name)


def _sources(*folders: str):
    for folder in folders:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text())


def test_a_stored_name_is_spelled_once_on_its_study_class():
    """No run module keeps a `STUDY = "<stored name>"` constant, and no string spells a stored name that differs
    from the CLI name outside the Study class that declares it."""
    spelled_apart = {get_study(c).name for c in STUDIES if get_study(c).name != c}
    stored = {get_study(c).name for c in STUDIES}
    for path, tree in _sources("."):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value in stored:
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                assert names in (["name"], ["command"]) and path.name == "study.py", f"{path}:{node.lineno} {names}"
            if isinstance(node, ast.Constant) and node.value in spelled_apart:
                assert path.name == "study.py", f"{path}:{node.lineno} spells '{node.value}'"


def test_cli_and_sweep_do_not_branch_on_a_study_name():
    """`if command == "grok"`: a hook of the protocol says it instead (sweep plans, the sweep page, the report)."""
    names = {n for c in STUDIES for n in (c, get_study(c).name, *get_study(c).aliases)}
    for path, tree in _sources("cli", "sweep"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                assert not set(consts) & names, f"{path}:{node.lineno} compares with {set(consts) & names}"


def test_sweep_hooks_come_from_the_study():
    from transferlab.studies.grokking import SWEEP_PLANS
    from transferlab.sweep.runner import sweep_name

    grok, w2s = get_study("grok"), get_study("w2s")
    assert dict(grok.sweep_plans) == dict(SWEEP_PLANS) and dict(w2s.sweep_plans) == {}
    # the names sweeps were stored under before the prefix was declared
    assert sweep_name(grok, grok.make_config(), {"lr": [1e-3]}, 1).startswith("sweep-")
    assert not sweep_name(grok, grok.make_config(), {"lr": [1e-3]}, 1).startswith("sweep-grok-")
    assert sweep_name(w2s, w2s.make_config(), {"lr": [1e-3]}, 1).startswith("sweep-w2s-")


def test_runs_report_rebuilds_a_correlate_run_only_from_the_input_it_read(tmp_path, cli):
    import shutil

    data = tmp_path / "evals"
    shutil.copytree(Path(__file__).parent / "data" / "lm_eval_tiny", data)
    store = tmp_path / "runs"
    code, out, err = cli(["correlate", str(data), "--n-boot", "100", "--json", "--store", str(store)])
    assert code == 0, err
    res = json.loads(out)
    page = Path(res["report"])
    page.unlink()
    code, out, err = cli(["runs", "report", res["run_id"], "--store", str(store)])
    assert code == 0 and Path(out.strip()) == page and page.is_file(), err
    page.unlink()
    for f in data.rglob("results_*.json"):  # the same path, other content: not the input this run read
        f.write_text(f.read_text().replace('"acc,none": 0.', '"acc,none": 0.0'))
    code, out, err = cli(["runs", "report", res["run_id"], "--store", str(store)])
    assert code == 2 and "rerun it" in err and not page.exists()
    code, out, err = cli(["correlate", str(data), "--n-boot", "100", "--json", "--store", str(store)])
    assert code == 0 and json.loads(out)["run_id"] != res["run_id"]  # the new content is a new run
