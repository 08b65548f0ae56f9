"""Old stores keep working (issue 24): a small store written by main at d4cf43a, before the one-declaration
redesign, is kept in tests/data/old_store_d4cf43a (reports left out: they are rebuilt). Its runs still list,
show, report and mirror, and the same commands reuse what still means the same run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "data" / "old_store_d4cf43a"
# what d4cf43a wrote (its index and folders): grok alone, a 2-trial grok sweep, w2s with its cached baseline,
# correlate on a tidy CSV
RUNS = {"9588727a3daf012e": "grokking", "f5ed95b86cd9d5d2": "grokking", "93a37c00983eda0f": "grokking",
        "0729aa317bd397c9": "w2s", "c09342a8f6120187": "w2s-baseline", "20d5657eed3d1d2a": "correlate"}
GROK = ["grok", "--set", "p=23", "--set", "width=16", "--set", "steps=40", "--set", "eval_every=10"]


@pytest.fixture
def old_store(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE, tmp_path / "old")
    monkeypatch.chdir(tmp_path / "old")  # it was written with --store store and correlate evals.csv (relative)
    return Path("store")


def test_old_runs_list_and_show(old_store, cli):
    code, out, err = cli(["runs", "ls", "--all", "--json", "--store", str(old_store)])
    assert code == 0, err
    rows = json.loads(out)
    assert {r["id"]: r["study"] for r in rows} == RUNS
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(r["id"] for r in rows if r["sweep"]) == ["93a37c00983eda0f", "f5ed95b86cd9d5d2"]
    for run_id, study in RUNS.items():
        code, out, err = cli(["runs", "show", run_id[:8], "--json", "--store", str(old_store)])
        assert code == 0, err
        shown = json.loads(out)
        assert shown["study"] == study and shown["status"] == "done" and shown["summary"]


@pytest.mark.parametrize("run_id", [i for i, s in RUNS.items() if s not in ("w2s-baseline", "correlate")])
def test_old_runs_report(old_store, cli, run_id):
    code, out, err = cli(["runs", "report", run_id, "--json", "--store", str(old_store)])
    assert code == 0, err
    page = Path(json.loads(out)["report"])
    assert page.is_file() and page.stat().st_size > 10_000
    assert "<html" in page.read_text()[:2000].lower()


def test_an_old_correlate_run_gives_the_page_it_wrote(old_store, cli):
    """correlate rebuilds a page only from the input the run read; d4cf43a keyed runs on the input's path, not
    its content, so an old run cannot prove its input is unchanged: `runs report` gives the page the run wrote
    (as every old store has: the fixture leaves them out for size), and says how to rerun when there is none."""
    run = old_store / "correlate" / "20d5657eed3d1d2a"
    code, out, err = cli(["runs", "report", "20d5657e", "--json", "--store", str(old_store)])
    assert code == 2 and err.count("\n") == 1 and "rerun it: transferlab correlate --config" in err, err
    (run / "report.html").write_text("<html><body>the page this run wrote</body></html>")
    code, out, err = cli(["runs", "report", "20d5657e", "--json", "--store", str(old_store)])
    assert code == 0, err
    assert Path(json.loads(out)["report"]).resolve() == (run / "report.html").resolve()
    assert "the page this run wrote" in (run / "report.html").read_text()  # returned, not overwritten


@pytest.mark.parametrize("study, n", [("grok", 3), ("w2s", 1), ("correlate", 1)])
def test_old_runs_mirror_by_cli_name(old_store, cli, study, n):
    code, out, err = cli(["runs", "mirror", "--study", study, "--to", "tensorboard", "--json",
                          "--store", str(old_store)])
    assert code == 0, err
    assert sorted(json.loads(out)["runs"]) == sorted(i for i, s in RUNS.items()
                                                     if s == {"grok": "grokking"}.get(study, study))
    assert len(json.loads(out)["runs"]) == n


def test_the_same_grok_command_reuses_the_old_run(old_store, cli):
    metrics = old_store / "grokking" / "9588727a3daf012e" / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    code, out, err = cli([*GROK, "--json", "--store", str(old_store)])
    assert code == 0, err
    assert json.loads(out)["run_id"] == "9588727a3daf012e"  # the same id: reused, not retrained
    assert metrics.stat().st_mtime_ns == before


def test_runs_a_study_makes_for_itself_are_hidden_unless_all(old_store, cli):
    """`runs ls` hides the child runs each Study declares (w2s's cached baseline here), `--all` shows them."""
    code, out, err = cli(["runs", "ls", "--json", "--store", str(old_store)])
    assert code == 0, err
    assert {r["study"] for r in json.loads(out)} == {"grokking", "w2s", "correlate"}
    code, out, err = cli(["runs", "ls", "--all", "--json", "--store", str(old_store)])
    assert code == 0 and "w2s-baseline" in {r["study"] for r in json.loads(out)}
