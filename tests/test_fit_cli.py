"""`transferlab fit chinchilla|transfer`: the JSON contract, the reports in Chromium, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.browser import render
from transferlab.data.reference import CHINCHILLA_CSV, EPOCH_CI95
from transferlab.fit.chinchilla import ChinchillaLaw

LAW = ChinchillaLaw(E=1.9, A=300.0, B=900.0, alpha=0.33, beta=0.31)
SCRATCH = ChinchillaLaw(E=1.5, A=60.0, B=300.0, alpha=0.32, beta=0.30)


def _chinchilla_csv(path, noise=0.003, use_c=False):
    rng = np.random.default_rng(0)
    N, D = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 3e9, 5), np.geomspace(3e8, 3e11, 5)))
    loss = LAW.loss(N, D) * np.exp(rng.normal(0, noise, N.size))
    df = (
        pd.DataFrame({"N": N, "C": 6 * N * D, "loss": loss})
        if use_c
        else pd.DataFrame({"N": N, "D": D, "loss": loss})
    )
    df.to_csv(path, index=False)
    return path


def _transfer_csv(path):
    rng = np.random.default_rng(1)
    sN, sD = (v.ravel() for v in np.meshgrid([1e6, 3e6, 1e7, 3e7], np.geomspace(1e4, 1e9, 6)))
    fN, fD = (v.ravel() for v in np.meshgrid([1e6, 3e6, 1e7, 3e7], np.geomspace(1e4, 1e6, 4)))
    fL = SCRATCH.loss(fN, fD + 30 * fD**0.18 * fN**0.38)
    df = pd.concat(
        [
            pd.DataFrame(
                {
                    "kind": "scratch",
                    "N": sN,
                    "D": sD,
                    "loss": SCRATCH.loss(sN, sD) * np.exp(rng.normal(0, 1e-3, sN.size)),
                }
            ),
            pd.DataFrame(
                {"kind": "finetune", "N": fN, "D": fD, "loss": fL * np.exp(rng.normal(0, 1e-3, fN.size))}
            ),
        ]
    )
    df.to_csv(path, index=False)
    return path


def test_chinchilla_on_epochs_file_json_contract_and_report(cli, tmp_path):
    store = tmp_path / "runs"
    code, out, err = cli(
        [
            "fit",
            "chinchilla",
            str(CHINCHILLA_CSV),
            "--drop-highest-loss",
            "5",
            "--bootstrap",
            "200",
            "--json",
            "--store",
            str(store),
        ]
    )
    assert code == 0, err
    d = json.loads(out)
    for k in ("E", "A", "B", "alpha", "beta"):
        lo, hi = d[f"{k}_ci"]
        assert lo < d[k] < hi, k
    for k, (lo, hi) in EPOCH_CI95.items():
        assert lo <= d[k] <= hi
    assert d["columns"] == {"N": "Model Size", "C": "Training FLOP", "loss": "loss"} and d["D_from"] == "C"
    assert d["n_points"] == 240 and d["dropped_rows"] == [1, 2, 3, 4, 5]
    assert d["fit"]["starts"] == 4500 and d["bootstrap"]["ok"] == 200
    co = d["compute_optimal"]
    assert 0.45 < co["N_opt_exponent"] < 0.56
    b = co["budgets"][0]
    assert 15 < b["tokens_per_param"] < 25 and b["N_opt_ci"][0] < b["N_opt"] < b["N_opt_ci"][1]
    plans = d["overtrain"]["plans"]
    assert plans[0]["saving"] == pytest.approx(0, abs=1e-9) and all(p["saving"] > 0 for p in plans[1:])
    assert (store / "fit" / d["run_id"] / "summary.json").exists()
    page = render(d["report"])
    assert page["figures"] == 4 and page["rendered"] == 4, page
    assert page["errors"] == "", page


def test_chinchilla_columns_D_and_C_give_the_same_fit(cli, tmp_path):
    a = _chinchilla_csv(tmp_path / "d.csv")
    b = _chinchilla_csv(tmp_path / "c.csv", use_c=True)
    outs = []
    for f in (a, b):
        code, out, err = cli(
            ["fit", "chinchilla", str(f), "--bootstrap", "20", "--json", "--store", str(tmp_path / "runs")]
        )
        assert code == 0, err
        outs.append(json.loads(out))
    for k in ("E", "alpha", "beta"):
        assert outs[0][k] == pytest.approx(outs[1][k], rel=1e-6)
    assert outs[0]["alpha"] == pytest.approx(LAW.alpha, abs=0.05)
    assert outs[0]["E"] == pytest.approx(LAW.E, abs=0.1)


def test_transfer_json_contract_and_report(cli, tmp_path):
    f = _transfer_csv(tmp_path / "runs.csv")
    report = tmp_path / "transfer.html"
    code, out, err = cli(
        [
            "fit",
            "transfer",
            str(f),
            "--bootstrap",
            "100",
            "--json",
            "--store",
            str(tmp_path / "runs"),
            "--report",
            str(report),
            "--plan",
            "2.2@1e7",
        ]
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["alpha"] == pytest.approx(0.18, abs=0.03) and d["beta"] == pytest.approx(0.38, abs=0.03)
    for k in ("k", "alpha", "beta"):
        assert d[f"{k}_ci"][0] < d[k] < d[f"{k}_ci"][1]
    assert "textbook" in d["names"] and d["robust"]["method"] == "huber"
    assert len(d["rows"]) == 16
    row = d["rows"][0]
    assert {
        "row",
        "N",
        "D_F",
        "loss",
        "D_E",
        "D_T",
        "multiplier",
        "fraction_finetune",
        "flags",
        "used",
    } <= set(row)
    assert row["row"] == 25 and row["D_T"] == pytest.approx(row["D_E"] - row["D_F"])
    assert d["plans"][0]["N"] == 1e7 and d["plans"][0]["D_finetune"] < d["plans"][0]["D_scratch"]
    assert d["report"] == str(report)
    page = render(report)
    assert page["figures"] == 4 and page["rendered"] == 4, page
    assert page["errors"] == "", page


def _bad(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "case",
    ["missing", "nonpositive_N", "zero_D", "not_number", "too_few", "no_file", "binary", "not_converged"],
)
def test_chinchilla_bad_input_one_line_exit_2_nothing_written(cli, tmp_path, case):
    good = _chinchilla_csv(tmp_path / "good.csv")
    text = good.read_text().splitlines()
    args: list[str] = []
    if case == "missing":
        f, expect = _bad(tmp_path, "m.csv", "N,loss\n1e9,2.5\n2e9,2.4\n"), ["missing column", "D (or C)"]
    elif case == "nonpositive_N":
        rows = text[:3] + ["-5," + text[3].split(",", 1)[1]] + text[4:]
        f, expect = _bad(tmp_path, "n.csv", "\n".join(rows) + "\n"), ["row 3", "'N'", "must be > 0"]
    elif case == "zero_D":
        parts = text[5].split(",")
        rows = text[:5] + [f"{parts[0]},0,{parts[2]}"] + text[6:]
        f, expect = _bad(tmp_path, "z.csv", "\n".join(rows) + "\n"), ["row 5", "'D'"]
    elif case == "not_number":
        parts = text[2].split(",")
        rows = text[:2] + [f"{parts[0]},{parts[1]},abc"] + text[3:]
        f, expect = _bad(tmp_path, "x.csv", "\n".join(rows) + "\n"), ["row 2", "'loss'", "not a number"]
    elif case == "too_few":
        f, expect = _bad(tmp_path, "few.csv", "\n".join(text[:5]) + "\n"), ["too few points", "4 given"]
    elif case == "no_file":
        f, expect = tmp_path / "nope.csv", ["file not found"]
    elif case == "binary":
        f = tmp_path / "b.csv"
        f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        expect = ["not a CSV"]
    else:
        f, expect, args = good, ["did not converge"], ["--max-iter", "1"]
    before = f.read_bytes() if f.exists() else None
    report = tmp_path / "report.html"
    report.write_text("previous report")
    store = tmp_path / "runs"
    code, out, err = cli(
        ["fit", "chinchilla", str(f), "--json", "--store", str(store), "--report", str(report), *args]
    )
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert str(f) in err
    for e in expect:
        assert e in err, (e, err)
    assert out == ""
    assert report.read_text() == "previous report"  # nothing overwritten
    assert not (store / "fit").exists()  # no run recorded
    assert (f.read_bytes() if f.exists() else None) == before  # the input is untouched


@pytest.mark.parametrize("case", ["bad_kind", "no_scratch", "missing", "nonpositive"])
def test_transfer_bad_input(cli, tmp_path, case):
    f = _transfer_csv(tmp_path / "runs.csv")
    df = pd.read_csv(f)
    if case == "bad_kind":
        df.loc[3, "kind"] = "pretrain"
        expect = ["row 4", "'kind'", "scratch or finetune"]
    elif case == "no_scratch":
        df = df[df["kind"] == "finetune"]
        expect = ["no scratch rows"]
    elif case == "missing":
        df = df.drop(columns=["kind"])
        expect = ["missing column", "kind"]
    else:
        df.loc[30, "D"] = -1
        expect = ["row 31", "'D'"]
    df.to_csv(f, index=False)
    code, out, err = cli(["fit", "transfer", str(f), "--json", "--store", str(tmp_path / "runs")])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and str(f) in err
    for e in expect:
        assert e in err, (e, err)
    assert not (tmp_path / "runs" / "fit").exists()


def test_packaged_reference_file_is_the_shared_one():
    shared = "/work/shared/data/chinchilla_svg_extracted.csv"
    if shutil.os.path.exists(shared):
        assert CHINCHILLA_CSV.read_bytes() == open(shared, "rb").read()
    df = pd.read_csv(CHINCHILLA_CSV)
    assert len(df) == 245 and {"Model Size", "Training FLOP", "loss"} <= set(df.columns)
