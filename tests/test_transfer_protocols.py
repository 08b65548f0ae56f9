"""Issue 26, part 2: transfer at a fixed pretraining budget (Hernandez et al. 2021's protocol), the pretraining
budget as a third axis (against Barnett 2024's transfer-gap form), and intervals that keep every resample."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.browser import render
from transferlab.core.config import resolve
from transferlab.fit.chinchilla import ChinchillaLaw
from transferlab.fit.pretrain_budget import BarnettLaw, fit_pretrain_budget
from transferlab.fit.transfer import fit_transfer
from transferlab.store import Store
from transferlab.studies.transfer import run as trun
from transferlab.studies.transfer.zoo_config import PRESETS, TransferRunConfig
from transferlab.zoo import FAMILY

LAW = ChinchillaLaw(E=1.5, A=60.0, B=300.0, alpha=0.32, beta=0.30)
BUDGETS = np.array([0.375e6, 0.75e6, 1.5e6, 3e6])
D_FS = np.array([4e3, 16e3])


def test_fixed_pretrain_preset_gives_every_size_the_same_budget():
    fixed = resolve(TransferRunConfig, presets=PRESETS, preset="fixed-pretrain")
    quick = resolve(TransferRunConfig, presets=PRESETS, preset="quick")
    fz, qz = fixed.zoo(), quick.zoo()
    assert fixed.protocol == "fixed-budget" and quick.protocol == "tokens-per-param"
    assert len({fz.tokens_for(s) for s in fixed.sizes}) == 1  # a budget that does not grow with N
    assert [qz.tokens_for(s) for s in quick.sizes] == sorted({qz.tokens_for(s) for s in quick.sizes})
    # the same runs otherwise, so quick's scratch runs and its s model (20 tokens/param) are shared
    assert fixed.sizes == quick.sizes and fixed.scratch_D == quick.scratch_D and fixed.target == quick.target
    assert fz.tokens_for("s") == qz.tokens_for("s") and fz.train == qz.train and fz.vocab_size == qz.vocab_size
    # the budget axis: s at 2.5, 5, 10 and 20 tokens per parameter, the last the protocol's own budget
    assert fixed.budget_size == "s" and len(fixed.budget_tokens) >= 3
    assert [t / FAMILY["s"].non_embedding_params() for t in fixed.budget_tokens] == [2.5, 5.0, 10.0, 20.0]
    assert trun.budget_plan(fixed) == fixed.budget_tokens[:-1]
    summary = trun.protocol_summary(fixed)
    assert summary["name"] == "fixed-budget" and len(set(summary["pretrain_tokens"].values())) == 1
    assert "fixed-pretrain" in PRESETS.names() and "Hernandez" in PRESETS.doc("fixed-pretrain")


def test_micro_fixed_budget_run_pretrains_every_size_on_the_same_tokens(tmp_path, cli):
    """A test-sized sweep at a fixed budget with a budget axis: every size sees the same pretraining tokens, and
    the budget axis's models see their own budgets (the analysis may fail on so few tokens; that is reported)."""
    args = ["transfer", "--preset", "micro", "--json", "--store", str(tmp_path), "--set", "pretrain.num_threads=1",
            "--set", "target.num_threads=1", "--set", "workers=1", "--set", "budget_size=xs",
            "--set", "budget_tokens=[400,800,1600]", "--set", "bootstrap=20"]
    code, out, err = cli(args)
    s = json.loads(out)
    assert code == (1 if s["analysis_error"] else 0), err
    assert s["protocol"]["name"] == "fixed-budget" and set(s["protocol"]["pretrain_tokens"].values()) == {1_600}
    seen = {m["size"]: m["tokens_seen"] for m in s["zoo_models"]}
    assert set(seen) == {"xxs", "xs"} and len(set(seen.values())) == 1 and seen["xs"] > 0
    b = s["budget_axis"]
    assert b["size"] == "xs" and b["budgets"] == [400, 800, 1600]
    table = pd.read_csv(b["runs_csv"])
    assert sorted(table.pretrain_tokens.unique()) == [400, 800, 1600] and len(table) == 3 * 2
    assert (table.kind == "finetune").all() and set(table.D) == {170, 510}
    # the 1,600-token rows are the main sweep's xs fine-tuning runs, reused, not trained again
    main = pd.read_csv(s["runs_csv"])
    mine = main[(main["size"] == "xs") & (main.kind == "finetune")]
    assert set(mine.run_id) == set(table[table.pretrain_tokens == 1600].run_id)
    assert len(set(table.run_id)) == 6


def test_budget_axis_recovers_a_known_power_law_and_a_known_transfer_gap():
    N = 1.5e5
    P, F = (v.ravel() for v in np.meshgrid(BUDGETS, D_FS))
    rng = np.random.default_rng(0)
    # D_T = c P^gamma D_F^alpha_F
    L = LAW.loss(N, F + 0.5 * P**0.6 * F**0.2) * np.exp(rng.normal(0, 0.002, P.size))
    a = fit_pretrain_budget(LAW, N, P, F, L, n_boot=100, seed=0)
    pw = a.power
    assert pw["gamma"] == pytest.approx(0.6, abs=0.03) and pw["alpha_F"] == pytest.approx(0.2, abs=0.05)
    assert pw["gamma_ci"][0] < 0.6 < pw["gamma_ci"][1]
    assert pw["bootstrap"] == {"method": "residual", "resamples": 100, "fitted": 100}
    assert a.comparison["closer"] == "power_law"
    # Barnett's form with a transfer gap G: recovered, and it describes D_T better than a power law
    E = float(LAW.loss_infinite_data(N))
    truth = BarnettLaw(E=E, A=0.8, a=0.5, G=0.3, b=0.3, P0=BUDGETS.max(), F0=D_FS.max())
    L2 = truth.loss(P, F) * np.exp(rng.normal(0, 0.002, P.size))
    b = fit_pretrain_budget(LAW, N, P, F, L2, n_boot=100, seed=0)
    bn = b.barnett
    assert bn["G"] == pytest.approx(0.3, rel=0.15) and bn["a"] == pytest.approx(0.5, abs=0.05)
    assert bn["b"] == pytest.approx(0.3, abs=0.02) and bn["E"] == pytest.approx(E)
    assert bn["G_ci"][0] < 0.3 < bn["G_ci"][1] and bn["bootstrap"]["fitted"] >= 90
    assert bn["gap_share"] == pytest.approx(0.3 / 1.1, abs=0.05)
    # with a gap, D_T saturates in P: the limit is finite and above the largest measured D_T at that D_F
    for f in D_FS:
        lim = bn["D_T_limit"][str(int(f))]
        assert math.isfinite(lim) and lim > max(r["D_T"] for r in b.rows if r["D_F"] == f)
    assert b.comparison["closer"] == "barnett"


def _quick_like(seed: int, noise: float = 0.01):
    """A grid the size of `transfer --preset quick`: 3 sizes, 4 scratch D, 2 D_F (Hernandez's exponents)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([5e4, 1.5e5, 3.3e5])
    sN, sD = (v.ravel() for v in np.meshgrid(sizes, np.array([4e3, 1.6e4, 6.4e4, 2.56e5])))
    sL = LAW.loss(sN, sD) * np.exp(rng.normal(0, noise, sN.size))
    fN, fD = (v.ravel() for v in np.meshgrid(sizes, D_FS))
    fL = LAW.loss(fN, fD + 30.0 * fD**0.18 * fN**0.38) * np.exp(rng.normal(0, noise, fN.size))
    return sN, sD, sL, fN, fD, fL


def test_residual_bootstrap_fits_every_resample_where_resampling_runs_drops_many():
    data = _quick_like(0)
    pairs = fit_transfer(*data, n_boot=100, seed=0, interval="pairs", threads=1)
    resid = fit_transfer(*data, n_boot=100, seed=0, interval="residual", threads=1)
    assert pairs.ols.n_boot_ok < 90  # resampled runs lose a size or a D: the old intervals dropped these
    assert any("bootstrap resamples could be fitted" in w for w in pairs.warnings)
    assert resid.ols.n_boot_ok >= 90 and resid.robust.n_boot_ok >= 90 and resid.interval == "residual"
    assert not any("bootstrap resamples could be fitted" in w for w in resid.warnings)
    assert resid.ols.beta == pairs.ols.beta  # the point estimate does not depend on the interval method
    lo, hi = resid.ols.ci["beta"]
    assert lo < resid.ols.beta < hi and lo < 0.38 < hi


def test_budget_axis_wiring_and_report(tmp_path, monkeypatch):
    """The study hands the budget axis's runs to the fit with its scratch law: a known gamma comes back in the
    JSON, and the page shows the budget section with its figure."""
    from tests.test_transfer_run import _synthetic_rows

    class FakeZoo:
        class zoo:
            root = tmp_path / "zoo"

        entries: list = []

    E, A, a, B, b = 1.5, 60.0, 0.35, 400.0, 0.3
    N = FAMILY["s"].non_embedding_params()
    budgets = [377_440, 754_880, 1_509_760, 3_019_520]
    brows = []
    for t in budgets:
        for DF in (2e3, 8e3):
            DE = DF + 30.0 * DF**0.2 * N**0.4 * (t / budgets[-1]) ** 0.5
            brows.append({"kind": "finetune", "N": N, "D": DF, "loss": E + A / N**a + B / DE**b, "size": "s",
                          "run_id": "none", "pretrain_tokens": t})
    rows = _synthetic_rows()
    monkeypatch.setattr(trun, "sweep_rows", lambda cfg, store, zoo_root=None: (rows, FakeZoo, brows))
    cfg = resolve(TransferRunConfig, presets=PRESETS, preset="fixed-pretrain", overrides=["bootstrap=40"])
    s = trun.run(cfg, Store(tmp_path / "runs"))
    assert s["analysis_error"] is None and s["protocol"]["name"] == "fixed-budget"
    ax = s["budget_axis"]
    assert ax["power_law"]["gamma"] == pytest.approx(0.5, abs=0.05)
    assert ax["power_law"]["bootstrap"]["fitted"] >= 36 and "G" in ax["barnett"]
    assert len(pd.read_csv(ax["runs_csv"])) == len(brows)
    html = open(s["report"]).read()
    assert "The pretraining budget at fixed N" in html and "Protocol: fixed-budget" in html
    page = render(s["report"])
    assert page["errors"] == "" and page["rendered"] == page["figures"] >= 6


def test_budget_axis_config_is_refused_when_incomplete(cli, tmp_path):
    for sets, words in ((["budget_tokens=[1000,2000,4000]"], "together"),
                        (["budget_size=xl", "budget_tokens=[1000,2000,4000]"], "must be one of sizes"),
                        (["budget_size=xs", "budget_tokens=[1000,2000]"], "at least 3")):
        code, _, err = cli(["transfer", "--preset", "micro", "--store", str(tmp_path),
                            *[x for v in sets for x in ("--set", v)]])
        assert code == 2 and words in err, err
    assert not (tmp_path / "transfer").exists()
