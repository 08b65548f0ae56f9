"""The forecast of the generalization step (issue 25, part 3) and the wide delay-law plan's declaration."""

from __future__ import annotations

import json
import math

import pytest

from transferlab.studies.grokking import analysis as A


def _run(t_mem=100, t_grok=1000, rise=1.3, lr=3e-3, wd=1.0, every=10, end=None, seed_shift=0.0):
    """Rows of a synthetic run: memorizes at t_mem; the ILDR climbs linearly in log from t_mem to ``rise`` at
    t_grok; ‖θ‖² falls; validation accuracy jumps at t_grok."""
    rows = []
    for s in range(0, (end or t_grok + 300) + 1, every):
        frac = max(0.0, (s - t_mem) / (t_grok - t_mem))
        rows.append({"step": s, "train_acc": 1.0 if s >= t_mem else 0.5, "train_loss": 0.01,
                     "val_acc": 1.0 if s >= t_grok else 0.01 + 0.1 * min(frac, 1.0), "val_loss": 1.0,
                     "weight_norm_sq": 1000.0 * math.exp(-0.5 * min(frac, 1.0)),
                     "ildr": 0.2 * math.exp(rise * min(frac, 1.2) + seed_shift)})
    return {"records": rows, "lr": lr, "weight_decay": wd, "model": "mlp", "run_id": f"r{t_grok}"}


CAL = {"mlp": {"k": 2.7, "ildr_rise": 1.3}, "*": {"k": 2.7, "ildr_rise": 1.3}}


def test_forecast_uses_only_the_rows_it_is_given():
    """Each forecast is a pure function of the rows up to its step: changing or dropping every later row
    leaves it unchanged, and `forecasts` is exactly the forecast of each prefix."""
    run = _run()
    rec = run["records"]
    fcs = A.forecasts(rec, 3e-3, 1.0, "mlp", n=10, calibration=CAL)
    assert len(fcs) == 10 and [f["made_at_step"] for f in fcs] == sorted(f["made_at_step"] for f in fcs)
    for f in fcs:
        i = next(k for k, r in enumerate(rec) if r["step"] == f["made_at_step"])
        future_changed = rec[:i + 1] + [{**r, "val_acc": 1.0, "ildr": 99.0, "weight_norm_sq": 1.0} for r in rec[i + 1:]]
        again = A.forecast_generalization(future_changed[:i + 1], 3e-3, 1.0, "mlp", CAL)
        alone = A.forecast_generalization(rec[:i + 1], 3e-3, 1.0, "mlp", CAL)
        assert again == alone
        assert f["predicted_generalize_step"] == alone["predicted_generalize_step"]
    assert fcs[0]["predicted_generalize_step"] is None or fcs[0]["made_at_step"] >= 100


def test_forecast_on_a_run_that_follows_the_law_and_the_ildr():
    run = _run()  # K = 900 x 3e-3 = 2.7, the calibrated one
    rec = run["records"]
    at = {f: A.forecast_generalization([r for r in rec if r["step"] <= f * 1000], 3e-3, 1.0, "mlp", CAL)
          for f in (0.25, 0.5, 0.9)}
    for f, fc in at.items():
        assert fc["predicted_generalize_step"] == pytest.approx(1000, rel=0.05), (f, fc)
    assert at[0.25]["weight"] < at[0.5]["weight"] < at[0.9]["weight"]  # the ILDR takes over as it climbs
    # a run slower than the law: the ILDR pulls the forecast toward the truth as it climbs
    slow = _run(t_grok=1900)["records"]
    early = A.forecast_generalization([r for r in slow if r["step"] <= 475], 3e-3, 1.0, "mlp", CAL)
    late = A.forecast_generalization([r for r in slow if r["step"] <= 1500], 3e-3, 1.0, "mlp", CAL)
    assert abs(late["predicted_generalize_step"] - 1900) < abs(early["predicted_generalize_step"] - 1900)
    nearly = A.forecast_generalization([r for r in slow if r["step"] <= 1800], 3e-3, 1.0, "mlp", CAL)
    assert nearly["weight"] > 0.9 and nearly["predicted_generalize_step"] == pytest.approx(1900, rel=0.05)


def test_forecast_says_never_and_cannot_tell_before_memorization():
    rows = [{"step": s, "train_acc": 1.0 if s >= 100 else 0.5, "val_acc": 0.01, "val_loss": 1.0,
             "weight_norm_sq": 1000.0, "ildr": 0.2} for s in range(0, 3001, 10)]
    fc = A.forecast_generalization(rows, 3e-3, 1.0, "mlp", CAL)  # 2,900 steps since memorization > 2 x 900
    assert fc["never"] and fc["predicted_generalize_step"] is None
    fc = A.forecast_generalization(rows[:80], 3e-3, 1.0, "mlp", CAL)  # not yet twice the law's delay
    assert not fc["never"] and fc["predicted_generalize_step"] is not None
    assert A.forecast_generalization(rows[:5], 3e-3, 1.0, "mlp", CAL)["basis"] == "not memorized yet"
    assert A.forecast_generalization(rows[:50], 3e-3, 0.0, "mlp", CAL)["never"]  # no weight decay


def test_calibration_and_errors_recover_the_constants():
    runs = [_run(t_grok=100 + int(2.7 / (lr * wd)), lr=lr, wd=wd) for lr in (1e-3, 3e-3) for wd in (1.0, 2.0)]
    cal = A.calibrate_forecast(runs)
    assert cal["mlp"]["k"] == pytest.approx(2.7, rel=0.03) and cal["mlp"]["ildr_rise"] == pytest.approx(1.3, rel=0.02)
    err = A.forecast_errors(runs, calibration=cal)
    assert err["n_runs"] == 4 and err["median_abs_rel_error_at_0.5"] < 0.05
    assert err["n_forecast_at_0.25"] == 4


def test_wide_plan_declares_two_architectures_three_operations_and_20x(cli, tmp_path):
    code, out, err = cli(["sweep", "grok", "--plan", "delay-law-wide", "--print-config", "--json",
                          "--store", str(tmp_path)])
    assert code == 0, err
    trials = json.loads(out)["trials"]
    assert len(trials) >= 60 and {t["model"] for t in trials} == {"mlp", "transformer"}
    assert {t["operation"] for t in trials} >= {"x+y", "x-y", "x/y"} and {t["seed"] for t in trials} == {0, 1}
    for arch in ("mlp", "transformer"):
        g = [t["lr"] * t["weight_decay"] for t in trials if t["model"] == arch]
        assert max(g) / min(g) >= 20 - 1e-9
    # 99% validation accuracy must rest on enough pairs to mean something (the p = 31, 80%-train transformer it
    # replaced had 192: its last two pairs set T_grok)
    for t in trials:
        assert t["p"] ** 2 * (1 - t["train_fraction"]) >= 2000, t
    assert not any(tmp_path.iterdir())


def test_early_stop_and_forecasts_in_the_json(cli, tmp_path):
    """A tiny run without weight decay: the forecast says it will never generalize, so forecast_early_stop ends
    it early (and says so); its JSON carries the forecasts, each made from the rows up to its step."""
    args = ["grok", "--set", "p=23", "--set", "width=48", "--set", "train_fraction=0.6", "--set", "weight_decay=0",
            "--set", "steps=600", "--set", "eval_every=10", "--set", "monitor_every=0",
            "--set", "progress_measures=false", "--store", str(tmp_path), "--json"]
    code, out, err = cli([*args, "--set", "forecast_early_stop=true"])
    assert code == 0, err
    res = json.loads(out)
    assert res["steps_to_memorize"] is not None and res["steps_to_generalize"] is None
    assert res["forecast_stopped"]["at_step"] < 600 and res["forecast_stopped"]["budget"] == 600
    fcs = res["forecasts"]
    assert fcs and all(f["made_at_step"] <= res["forecast_stopped"]["at_step"] for f in fcs)
    assert fcs[-1]["never"] and fcs[-1]["predicted_generalize_step"] is None


def test_early_stop_replay_stops_the_stalled_run_and_not_the_grokking_one():
    grokking = _run()["records"]
    assert A.early_stop_step(grokking, 3e-3, 1.0, budget=3000, calibration=CAL) is None
    assert A.early_stop_step(grokking, 3e-3, 1.0, budget=1250, calibration=CAL) is None  # 1.25 x T_grok
    # the law says 2.7 / 5e-5 = 54,000 steps after memorization: past a budget of 3,000 at the first check
    at = A.early_stop_step(grokking, 1e-3, 0.05, budget=3000, calibration=CAL)
    assert at is not None and at <= 150
    stalled = [{"step": s, "train_acc": 1.0 if s >= 100 else 0.5, "val_acc": 0.01, "val_loss": 1.0,
                "weight_norm_sq": 1000.0, "ildr": 0.2} for s in range(0, 5001, 10)]
    at = A.early_stop_step(stalled, 3e-3, 1.0, budget=5000, calibration=CAL)
    assert at is not None and 1900 <= at <= 2100  # the 'never' rule: twice the law's 900 steps after memorization
    # the norm still falls (as x²+xy+y² on the MLP does) but the ILDR does not climb: never, at the same point
    drifting = [{**r, "weight_norm_sq": 1000.0 * math.exp(-1e-4 * r["step"]), "ildr": 0.2 + 1e-7 * r["step"]}
                for r in stalled]
    fc = A.forecast_generalization(drifting[:200], 3e-3, 1.0, "mlp", CAL)
    assert fc["never"] and "quarter" in fc["basis"]
    assert not A.forecast_generalization(drifting[:150], 3e-3, 1.0, "mlp", CAL)["never"]


def test_an_ildr_at_its_level_is_never_never():
    """A run whose ILDR has climbed its full rise and then sits there (the last few validation pairs take long,
    as on the small transformer) is forecast to generalize at any step now, and is not stopped."""
    rows = [{"step": s, "train_acc": 1.0 if s >= 100 else 0.5, "val_acc": 0.98 if s >= 300 else 0.1,
             "val_loss": 0.1, "weight_norm_sq": 1000.0, "ildr": 0.2 * math.exp(1.5 if s >= 300 else 0.0)}
            for s in range(0, 3001, 10)]
    fc = A.forecast_generalization(rows, 3e-3, 1.0, "mlp", CAL)
    assert not fc["never"] and fc["predicted_generalize_step"] == 3000 and "any step now" in fc["basis"]
    assert A.early_stop_step(rows, 3e-3, 1.0, budget=4000, calibration=CAL) is None


def test_calibration_measures_how_far_the_law_spreads():
    runs = [_run(t_grok=100 + int(k / (lr * 1.0)), lr=lr) for k, lr in ((2.0, 1e-3), (3.0, 2e-3), (4.5, 4e-3))]
    cal = A.calibrate_forecast(runs)["mlp"]
    assert cal["k"] == pytest.approx(3.0, rel=0.02)
    assert cal["early"] == pytest.approx(2.0 / 3.0, rel=0.03) and cal["late"] == pytest.approx(1.5, rel=0.03)


def test_early_stop_allows_for_the_spread_of_the_law():
    """A run the law puts at 1,000 (K 2.7 at lr 3e-3) under a budget of 900: stopped when every calibration run
    came at the law's K (early = 1), kept when the earliest came at 0.8 of it (its earliest step 820 is within
    the budget); and the "never" rule waits ``late`` times longer."""
    rows = _run()["records"]
    tight = {"mlp": {"k": 2.7, "ildr_rise": 1.3}}
    spread = {"mlp": {"k": 2.7, "ildr_rise": 1.3, "early": 0.8, "late": 2.0}}
    assert A.early_stop_step(rows, 3e-3, 1.0, budget=900, calibration=tight) is not None
    assert A.early_stop_step(rows, 3e-3, 1.0, budget=900, calibration=spread) is None
    fc = A.forecast_generalization([r for r in rows if r["step"] <= 150], 3e-3, 1.0, "mlp", spread)
    assert fc["earliest_generalize_step"] < fc["predicted_generalize_step"]
    stalled = [{"step": s, "train_acc": 1.0 if s >= 100 else 0.5, "val_acc": 0.01, "val_loss": 1.0,
                "weight_norm_sq": 1000.0, "ildr": 0.2} for s in range(0, 5001, 10)]
    assert A.early_stop_step(stalled, 3e-3, 1.0, budget=5000, calibration=tight) <= 2100  # 2 x 900
    at = A.early_stop_step(stalled, 3e-3, 1.0, budget=5000, calibration=spread)
    assert 3700 <= at <= 3900  # 2 x 2 x 900 after memorization at 100
