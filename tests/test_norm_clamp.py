"""norm_clamp (issue 25, the causal test): hold ‖θ‖² fixed after every step, at a number or at its value when a
member memorizes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from transferlab.store import Store
from transferlab.studies.grokking import GrokConfig, run_members
from transferlab.train.transforms import ProjectNorm

TINY = dict(p=23, train_fraction=0.5, width=32, steps=60, eval_every=10, checkpoint_every=20, monitor_every=0,
            progress_measures=False)


def test_project_norm_lands_on_the_sphere_and_leaves_unclamped_members_alone():
    torch.manual_seed(0)
    params = {"w": torch.randn(3, 4, 5), "b": torch.randn(3, 5)}
    updates = {k: 0.1 * torch.randn_like(v) for k, v in params.items()}
    t = ProjectNorm(torch.tensor([7.0, float("nan"), 2.5]))
    state = t.init(params)
    out = t.update(updates, state, params, step=0)
    new = {k: params[k] + out[k] for k in params}
    norm_sq = sum(v.flatten(1).pow(2).sum(1) for v in new.values())
    assert norm_sq[0].item() == pytest.approx(7.0, rel=1e-5) and norm_sq[2].item() == pytest.approx(2.5, rel=1e-5)
    for k in params:  # member 1 is not clamped (NaN): its update is exactly the one given
        assert torch.equal(out[k][1], updates[k][1])


def test_a_fixed_clamp_holds_the_norm_and_is_reported(tmp_path, cli):
    rho = 300.0
    code, out, err = cli(["grok", *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), []),
                          "--set", f"norm_clamp={rho}", "--json", "--store", str(tmp_path)])
    assert code == 0, err
    s = json.loads(out)
    assert s["norm_clamp"] == {"mode": "fixed", "rho": rho}
    run = Store(tmp_path).find(s["run_id"])
    norms = [r["weight_norm_sq"] for r in run.metrics() if r["step"] > 0]
    assert norms and all(n == pytest.approx(rho, rel=1e-4) for n in norms)


def test_the_memorization_clamp_freezes_the_norm_it_had_when_it_memorized(tmp_path):
    base = dict(TINY, width=64, steps=400, lr=3e-3, weight_decay=1.0, stop_after_generalized=-1)
    free = run_members([GrokConfig(**base, seed=s) for s in (0, 1)], Store(tmp_path / "free"))
    clamped = run_members([GrokConfig(**base, seed=s, norm_clamp="memorization") for s in (0, 1)],
                          Store(tmp_path / "clamped"))
    assert clamped[0].run_id != free[0].run_id
    for f, c in zip(free, clamped):
        mem = f.summary["steps_to_memorize"]
        assert mem is not None and mem < 400, "the member must memorize within the budget for this test"
        assert c.summary["steps_to_memorize"] == mem
        before = [r for r in f.records if r["step"] <= mem]
        # until it memorizes, the clamped member trains exactly as the free one (the clamp is not yet set)
        assert [r["train_loss"] for r in c.records if r["step"] <= mem] == [r["train_loss"] for r in before]
        rho = next(r["weight_norm_sq"] for r in c.records if r["step"] == mem)
        assert c.summary["norm_clamp"]["mode"] == "memorization"
        assert c.summary["norm_clamp"]["rho"] == pytest.approx(rho, rel=1e-6)
        after = [r["weight_norm_sq"] for r in c.records if r["step"] > mem]
        assert after and all(math.isclose(n, rho, rel_tol=1e-4) for n in after)
        # while the free member's norm keeps changing under weight decay
        assert abs(f.records[-1]["weight_norm_sq"] - rho) > 1e-3 * rho


def test_the_default_keeps_its_run_ids_and_bad_clamps_are_one_line(cli, tmp_path):
    assert GrokConfig().config_hash() == GrokConfig(norm_clamp="none").config_hash()
    for bad, msg in (("-5", "norm_clamp"), ("sometimes", "norm_clamp")):
        code, _, err = cli(["grok", "--set", f"norm_clamp={bad}", "--store", str(tmp_path)])
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_clamp_law_recovers_an_exponential_and_censors():
    from transferlab.studies.grokking.analysis import clamp_law

    trials = [{"run_id": f"r{i}", "norm_clamp": rho, "seed": 0, "steps_to_memorize": 100,
               "steps_to_generalize": 100 + round(50 * math.exp(0.002 * rho)), "last_step": 9000}
              for i, rho in enumerate((500.0, 1000.0, 1500.0, 2000.0))]
    trials.append({"run_id": "c", "norm_clamp": 3000.0, "seed": 0, "steps_to_memorize": 100,
                   "steps_to_generalize": None, "last_step": 4000})
    trials += [{"run_id": f"m{i}", "norm_clamp": "memorization", "steps_to_memorize": 120,
                "steps_to_generalize": None, "last_step": 4000} for i in range(3)]
    trials.append({"run_id": "free", "norm_clamp": "none", "steps_to_memorize": 100, "steps_to_generalize": 900})
    law = clamp_law(trials)
    assert law.alpha == pytest.approx(0.002, rel=1e-2) and law.r2 == pytest.approx(1.0, abs=1e-4)
    assert (law.n_used, law.n_censored) == (4, 1)
    assert law.memorization == {"trials": 3, "generalized": 0}
    assert next(p for p in law.points if p["censored"])["delay"] == 3900  # a lower bound
    assert clamp_law([t for t in trials if t["run_id"] in ("r0", "r1", "c")]).why_not
    assert clamp_law([{"norm_clamp": "none"}]) is None


def test_a_clamp_sweep_has_its_law_on_the_page_and_in_the_json(cli, tmp_path):
    code, out, err = cli(["sweep", "grok", "--grid", "norm_clamp=200,400,memorization",
                          *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), []), "--json",
                          "--store", str(tmp_path)])
    assert code == 0, err
    res = json.loads(out)
    law = res["norm_clamp_law"]
    assert law["memorization"]["trials"] == 1 and len(law["points"]) + law["memorization"]["trials"] <= 3
    assert all(e["reason"].startswith("norm clamped") for e in res["delay_law"]["excluded"]
               if e["run_id"] in {t["run_id"] for t in res["trials"]})
    page = open(res["report"]).read()
    assert "Clamping the norm" in page
