"""`transferlab w2s`: JSON contract, --list-tasks, bad input exits 2, the report renders in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

from tests.browser import render

ARGS = ["--set", "n_examples=1200", "--set", "steps=90"]


def test_json_contract_and_report(cli, tmp_path):
    code, out, err = cli(
        [
            "w2s",
            "--task",
            "synthetic-noisy",
            "--losses",
            "xent,logconf,window",
            "--seeds",
            "3",
            "--json",
            "--store",
            str(tmp_path / "runs"),
            *ARGS,
        ]
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data["losses"]) == {"xent", "logconf", "window"}
    for m, row in data["losses"].items():
        for key in ("weak_acc", "ceiling_acc", "student_acc", "pgr"):
            iv = row[key]
            assert iv["level"] == 0.95
            assert iv["lo"] <= iv["value"] <= iv["hi"], (m, key, iv)
        assert row["weak_acc"]["value"] < row["student_acc"]["value"] < row["ceiling_acc"]["value"] + 0.02
        pgr = (row["student_acc"]["value"] - row["weak_acc"]["value"]) / (
            row["ceiling_acc"]["value"] - row["weak_acc"]["value"]
        )
        assert abs(pgr - row["pgr"]["value"]) < 1e-9
    assert len(data["paired_tests"]) == 3
    assert all(0 <= t["wilcoxon_p"] <= 1 for t in data["paired_tests"] if t["wilcoxon_p"] is not None)
    report = Path(data["report"])
    assert report.is_file()
    html = report.read_text()
    assert "Paired tests" in html and "Gold accuracy over training" in html
    got = render(report)
    assert got["errors"] == "", got
    assert got["figures"] == 5 and got["rendered"] == 5, got  # pgr, accuracy, agreement, curves, size gap


def test_list_tasks(cli):
    code, out, _ = cli(["w2s", "--list-tasks", "--json"])
    assert code == 0
    names = [t["name"] for t in json.loads(out)["tasks"]]
    assert {"synthetic-noisy", "synthetic-subset", "stdlib-kind", "stdlib-raises", "stdlib-package",
            "docs-library"} <= set(
        names
    )
    assert any(n.startswith("sklearn-") for n in names)
    code, out, _ = cli(["w2s", "--list-tasks"])
    assert code == 0 and "synthetic-subset" in out


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    store = ["--store", str(tmp_path / "runs")]
    cases = [
        (["w2s", "--task", "no-such-task"], "unknown task 'no-such-task'"),
        (["w2s", "--losses", "xent,nope"], "unknown loss 'nope'"),
        (["w2s", "--set", "student_early_stop=gold_val"], "gold labels"),
        (["w2s", "--set", "n_transfer=99999"], "split too small"),
        (["w2s", "--task", str(tmp_path / "missing.csv")], "data file not found"),
    ]
    for args, msg in cases:
        code, out, err = cli([*args, *store])
        assert code == 2, (args, err)
        lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (args, err)
    assert not (tmp_path / "runs" / "w2s").exists()
