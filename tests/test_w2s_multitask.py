"""Several tasks in one call: paired tests between losses pooled across tasks and seeds."""

from __future__ import annotations

import json
from pathlib import Path

from scipy import stats

from tests.browser import render


def test_pooled_paired_tests_across_tasks_and_seeds(cli, tmp_path):
    code, out, err = cli(["w2s", "--task", "synthetic-noisy,synthetic-subset", "--losses", "xent,logconf",
                          "--seeds", "3", "--store", str(tmp_path), "--json"])
    assert code == 0, err
    res = json.loads(out)
    assert set(res["tasks"]) == {"synthetic-noisy", "synthetic-subset"}
    [row] = res["pooled_paired_tests"]
    assert (row["a"], row["b"], row["n"]) == ("xent", "logconf", 6)
    # the pooled test is the paired t-test over the 6 (task, seed) pairs of the per-task results
    xs = [v for t in ("synthetic-noisy", "synthetic-subset")
          for v in _summary(Path(res["tasks"][t]["run_dir"]))["losses"]["xent"]["student_acc_per_seed"]]
    ys = [v for t in ("synthetic-noisy", "synthetic-subset")
          for v in _summary(Path(res["tasks"][t]["run_dir"]))["losses"]["logconf"]["student_acc_per_seed"]]
    assert len(xs) == len(ys) == 6
    assert abs(row["mean_diff"] - (sum(xs) - sum(ys)) / 6) < 1e-12
    if len({round(a - b, 12) for a, b in zip(xs, ys)}) > 1:  # t is undefined for a constant difference
        assert abs(row["t_p"] - stats.ttest_rel(xs, ys).pvalue) < 1e-9
    page = render(Path(res["report"]))
    assert page["figures"] == 1 and page["rendered"] == 1 and page["errors"] == ""


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
