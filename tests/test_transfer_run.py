"""`transferlab transfer`: the sweep's runs table, reuse, the analysis wiring and the report."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.browser import render
from transferlab.core.config import resolve
from transferlab.store import Store
from transferlab.studies.transfer import run as trun
from transferlab.studies.transfer.zoo_config import PRESETS, TransferRunConfig
from transferlab.zoo import FAMILY

ONE_THREAD = ("--set", "pretrain.num_threads=1", "--set", "target.num_threads=1")


@pytest.fixture(scope="module")
def micro_one_process(tmp_path_factory):
    """`transfer --preset micro` in one process, one thread (the sweep two tests read): (store, code, out, err)."""
    from transferlab.cli.main import main

    store = tmp_path_factory.mktemp("micro")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["transfer", "--preset", "micro", "--json", "--store", str(store), *ONE_THREAD])
    return store, code, out.getvalue(), err.getvalue()


def test_micro_sweep_writes_runs_table_report_and_reuses(micro_one_process, cli):
    store, code, out, err = micro_one_process
    s = json.loads(out)
    # exit 1 exactly when the analysis could not run (the runs table and the report are still written)
    assert code == (1 if s["analysis_error"] else 0), err
    assert (code == 1) == ("the transfer analysis could not run" in err)
    df = pd.read_csv(s["runs_csv"])
    assert list(df.columns[:4]) == ["kind", "N", "D", "loss"]
    assert (df.kind == "scratch").sum() == 2 * 3 and (df.kind == "finetune").sum() == 2 * 2
    assert set(df.N) == {FAMILY["xxs"].non_embedding_params(), FAMILY["xs"].non_embedding_params()}
    w = 16 + 1  # micro seq_len + 1: D counts whole windows
    assert sorted(set(df.D)) == [170, 510, 1_530] and all(d % w == 0 for d in df.D)
    assert df.loss.between(0, math.log(400) + 1).all()
    assert (df.loss <= df.final_loss + 1e-12).all()  # best (early-stopping) val loss
    ft = df[df.kind == "finetune"]
    assert all(init.startswith("prose-") for init in ft.init)
    # observed ossification compares each fine-tuning run with the scratch run at the same (size, D)
    pairs = trun.observed_ossification(df.to_dict("records"))
    assert len(pairs) == 4 and len(s["ossified_observed"]) == sum(p["ossified"] for p in pairs)
    assert (s["analysis_error"] is None) == ("k" in s)
    page = render(s["report"])
    assert page["errors"] == "" and page["figures"] >= 3 and page["rendered"] == page["figures"]
    # run again: every run is reused (no training run's metrics are touched), the table is the same
    trained = {p: p.stat().st_mtime_ns for p in Path(store).rglob("metrics.jsonl")
               if "transfer" not in p.relative_to(store).parts}
    assert len(trained) >= 10
    code2, out2, err = cli(["transfer", "--preset", "micro", "--json", "--store", str(store), *ONE_THREAD])
    assert code2 == code, err
    s2 = json.loads(out2)
    assert all(m["reused"] for m in s2["zoo_models"])
    pd.testing.assert_frame_equal(pd.read_csv(s2["runs_csv"]), df)
    assert {p: p.stat().st_mtime_ns for p in trained} == trained
    # the CSV is what `transferlab fit transfer` reads: its reader accepts it as is
    from transferlab.studies.transfer.inputs import read_transfer

    data = read_transfer(s["runs_csv"])
    assert len(data.scratch_N) == 6 and list(data.D_F) == list(ft.D)


def test_two_worker_processes_give_the_same_runs_table(tmp_path, cli, micro_one_process):
    """workers=2: the sizes pretrain and the target runs train in two processes; the table is the one of a
    single process (the same store runs, one thread each), and the zoo's manifest lost no entry."""
    _, code, out, err = micro_one_process
    two = tmp_path / "two"
    assert code in (0, 1), err
    code2, out2, err2 = cli(["transfer", "--preset", "micro", "--json", "--store", str(two), "--set", "workers=2"])
    assert code2 == code, err2
    a, b = (pd.read_csv(json.loads(o)["runs_csv"]) for o in (out, out2))
    assert list(a.kind) == list(b.kind) and list(a.N) == list(b.N) and list(a.D) == list(b.D)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-5)
    manifest = json.loads((two / "zoo" / "manifest.json").read_text())["models"]
    assert sorted(e["size"] for e in manifest.values()) == ["xs", "xxs"]
    # the run ids are the same store runs as one process's: workers is not part of a run's identity
    assert list(a.run_id) == list(b.run_id)


def _synthetic_rows(alpha=0.2, beta=0.4, k=30.0):
    """Runs from a known scratch law and a known transfer law D_T = k D_F^alpha N^beta."""
    E, A, a, B, b = 1.5, 60.0, 0.35, 400.0, 0.3
    law = lambda N, D: E + A / N**a + B / D**b  # noqa: E731
    rng = np.random.default_rng(0)
    rows = []
    for size in ("xxs", "s", "m", "l"):
        N = FAMILY[size].non_embedding_params()
        for D in (2e3, 8e3, 3.2e4, 1.28e5, 5.12e5):
            rows.append(
                {"kind": "scratch", "N": N, "D": D, "loss": law(N, D), "size": size, "run_id": "none"}
            )
        for DF in (2e3, 8e3, 3.2e4):
            DE = DF + k * DF**alpha * N**beta * math.exp(rng.normal(0, 0.02))
            rows.append(
                {"kind": "finetune", "N": N, "D": DF, "loss": law(N, DE), "size": size, "run_id": "none"}
            )
    return rows


def test_analysis_wiring_recovers_a_known_law(tmp_path, monkeypatch):
    """The sweep's table goes through the fit helper's analysis: a known law comes back out."""

    class FakeZoo:
        class zoo:
            root = tmp_path / "zoo"

        entries: list = []

    rows = _synthetic_rows()
    monkeypatch.setattr(trun, "sweep_rows", lambda cfg, store, zoo_root=None: (rows, FakeZoo, []))
    cfg = resolve(TransferRunConfig, presets=PRESETS, preset="quick", overrides=["bootstrap=50"])
    s = trun.run(cfg, Store(tmp_path / "runs"))
    assert s["analysis_error"] is None
    a, b = s["alpha"], s["beta"]
    assert a["value"] == pytest.approx(0.2, abs=0.05) and b["value"] == pytest.approx(0.4, abs=0.05)
    assert a["ci"][0] < a["value"] < a["ci"][1] and b["ci"][0] < b["value"] < b["ci"][1]
    assert {(r["N"], r["D_F"]) for r in s["D_T"]} and all(r["D_T"] > 0 for r in s["D_T"])
    assert s["D_T_grows_with_N"] is True and s["D_T_grows_with_N_at_every_D_F"] is True
    per_df = s["D_T_by_D_F"]
    assert [p["D_F"] for p in per_df] == [2000, 8000, 32000] and all(len(p["D_T"]) == 4 for p in per_df)
    assert all(p["D_T"] == sorted(p["D_T"]) and p["undefined_for_N"] == [] for p in per_df)
    dts = [g["geomean_D_T"] for g in s["D_T_by_size"]]
    assert len(dts) == 4 and dts == sorted(dts)
    assert s["ossified_observed"] == [] and s["n_runs"] == len(rows)
    # the intervals say how many bootstrap resamples they rest on, in the JSON and on the page
    boot = s["bootstrap"]
    assert boot["resamples"] == cfg.bootstrap and 0.9 * boot["resamples"] <= boot["fitted"] <= boot["resamples"]
    assert boot["method"] == "residual" == cfg.interval
    assert f"{boot['fitted']} of {boot['resamples']} residual bootstrap resamples" in open(s["report"]).read()
    assert s["protocol"]["name"] == "tokens-per-param" and "budget_axis" not in s
    table = pd.read_csv(s["runs_csv"])
    assert len(table) == len(rows) and set(table.kind) == {"scratch", "finetune"}
    page = render(s["report"])
    assert page["errors"] == "" and page["rendered"] == page["figures"] >= 5


def test_observed_ossification_flags_worse_finetuning():
    rows = [
        {"kind": "scratch", "size": "s", "N": 10, "D": 100, "loss": 3.0},
        {"kind": "finetune", "size": "s", "N": 10, "D": 100, "loss": 3.2},
        {"kind": "scratch", "size": "s", "N": 10, "D": 200, "loss": 2.8},
        {"kind": "finetune", "size": "s", "N": 10, "D": 200, "loss": 2.5},
        {"kind": "finetune", "size": "s", "N": 10, "D": 400, "loss": 2.0},
    ]  # no scratch twin: not compared
    out = trun.observed_ossification(rows)
    assert [(o["D_F"], o["ossified"], round(o["gain"], 6)) for o in out] == [
        (100, True, -0.2),
        (200, False, 0.3),
    ]


def test_steps_and_bad_transfer_inputs(cli, tmp_path):
    cfg = resolve(TransferRunConfig, presets=PRESETS, preset="quick")
    assert cfg.steps_for(1_000) == cfg.min_steps and cfg.steps_for(10**9) == cfg.max_steps
    assert cfg.steps_for(16_000) == -(-30 * 16_000 // (cfg.target.batch_size * cfg.target.seq_len))
    code, out, _ = cli(["transfer", "--list-presets", "--json"])
    assert code == 0 and {"quick", "full", "micro"} <= set(json.loads(out))
    code, _, err = cli(["transfer", "--preset", "nope", "--store", str(tmp_path)])
    assert code == 2 and "unknown preset 'nope'" in err
    code, _, err = cli(["transfer", "--set", "sizes=[xxs,giant]", "--store", str(tmp_path)])
    assert code == 2 and "unknown model size 'giant'" in err
    code, _, err = cli(["transfer", "--set", "scratch_D=[0,100]", "--store", str(tmp_path)])
    assert code == 2 and "scratch_D" in err
    assert not (tmp_path / "transfer").exists()
