"""Sweeps: local and a real local Ray instance; failures are recorded; reruns redo only what is missing."""

from __future__ import annotations

import json

from transferlab.store import Store
from transferlab.studies.grokking import GrokConfig
from transferlab.sweep import run_sweep

BASE = dict(p=23, width=16, steps=30, eval_every=10, train_fraction=0.5)


def test_local_sweep_reuses_and_redoes_only_missing(tmp_path):
    st = Store(tmp_path)
    base = GrokConfig(**BASE)
    grid = {"lr": [1e-3, 3e-3], "weight_decay": [0.3, 1.0]}
    first = run_sweep(base, grid, st)
    assert len(first["trials"]) == 4 and len(first["trained"]) == 4
    assert all(t["status"] == "done" for t in first["trials"])
    # every trial of this grid differs only in lr/wd, so they trained as one ensemble of 4
    assert {Store(tmp_path).find(t["run_id"]).summary()["ensemble_size"] for t in first["trials"]} == {4}
    again = run_sweep(base, grid, st)
    assert again["trained"] == []
    victim = first["trials"][2]["run_id"]
    st.find(victim).summary_path.unlink()
    third = run_sweep(base, grid, st)
    assert third["trained"] == [victim]
    assert {r["id"] for r in st.index.rows(sweep=first["sweep"])} == {t["run_id"] for t in first["trials"]}


def test_a_failing_trial_is_recorded_and_does_not_stop_the_others(tmp_path, monkeypatch):
    import importlib

    grok_run = importlib.import_module("transferlab.studies.grokking.run")

    real = grok_run._train

    def flaky(cfg0, cfgs, runs, data, *args):
        if any(c.optimizer.lr == 3e-3 for c in cfgs):
            raise RuntimeError("simulated worker crash")
        return real(cfg0, cfgs, runs, data, *args)

    monkeypatch.setattr(grok_run, "_train", flaky)
    out = run_sweep(GrokConfig(**BASE), {"lr": [1e-3, 3e-3]}, Store(tmp_path))
    status = {t["lr"]: t["status"] for t in out["trials"]}
    assert status == {1e-3: "done", 3e-3: "failed"}
    failed = [t for t in out["trials"] if t["status"] == "failed"][0]
    assert "simulated worker crash" in failed["error"]
    monkeypatch.setattr(grok_run, "_train", real)
    redo = run_sweep(GrokConfig(**BASE), {"lr": [1e-3, 3e-3]}, Store(tmp_path))
    assert redo["trained"] == [failed["run_id"]]
    assert all(t["status"] == "done" for t in redo["trials"])


def test_real_two_trial_sweep_on_local_ray(cli, tmp_path, monkeypatch):
    """Two concurrent Tune trials write one store while another process lists it (issue 23): every command
    exits 0, `runs ls` shows every run once with its final status, and `runs repair` rebuilds the same index."""
    from tests.test_store_stress import _spawn

    monkeypatch.setenv("TRANSFERLAB_RAY_CPUS", "2")
    stop = tmp_path / "stop-listing"
    lister = _spawn("lister", str(tmp_path), str(stop))
    code, out, err = cli(["sweep", "grok", "--grid", "p=23,29", "--set", "width=16", "--set", "steps=30",
                          "--set", "eval_every=10", "--backend", "ray", "--store", str(tmp_path), "--json",
                          "--mirror", "tensorboard"])
    stop.touch()
    lister_out, lister_err = lister.communicate(timeout=120)
    assert lister.returncode == 0, lister_err
    assert code == 0, err
    code, listed, lerr = cli(["runs", "ls", "--all", "--json", "--store", str(tmp_path)])
    assert code == 0, lerr
    rows = json.loads(listed)
    assert len({r["id"] for r in rows}) == len(rows) == 2 and {r["status"] for r in rows} == {"done"}
    code, rep, rerr = cli(["runs", "repair", "--json", "--store", str(tmp_path)])
    assert code == 0 and json.loads(rep)["runs"] == 2, rerr
    code, again, lerr = cli(["runs", "ls", "--all", "--json", "--store", str(tmp_path)])
    key = lambda rs: sorted((r["id"], r["status"], r["sweep"]) for r in rs)  # noqa: E731
    assert code == 0 and key(json.loads(again)) == key(rows)
    res = json.loads(out)
    assert sorted(t["p"] for t in res["trials"]) == [23, 29]
    assert all(t["status"] == "done" for t in res["trials"])
    for t in res["trials"]:  # each trial really trained: its metrics are on disk
        run = Store(tmp_path).find(t["run_id"])
        assert run.metrics()[-1]["step"] == 30
        # the Ray workers mirrored it live: one TensorBoard event file per trial
        assert list((tmp_path / "mirrors" / "tensorboard" / "grokking" / t["run_id"]).glob("events.out.tfevents.*"))


def test_delay_law_plan_accounts_for_every_trial(cli, tmp_path):
    """`sweep grok --plan delay-law` (shrunk with --set): the JSON's delay_law puts every trial somewhere:
    used, censored or excluded with its reason; the report draws every trial's curves."""
    code, out, err = cli(["sweep", "grok", "--plan", "delay-law", "--set", "p=23", "--set", "width=48",
                          "--set", "steps=400", "--set", "train_fraction=0.6", "--store", str(tmp_path), "--json"])
    assert code == 0, err
    res = json.loads(out)
    law = res["delay_law"]
    assert len(res["trials"]) == 20  # 5 weight decays x 2 learning rates x 2 seeds
    assert set(law) >= {"constant", "constant_ci", "r2", "mape_loo", "mape_heldout", "n_used", "excluded"}
    assert law["n_used"] + law["n_censored"] + len(law["excluded"]) == 20
    assert all(e["reason"] for e in law["excluded"])
    if law["constant"] is None:
        assert law["why_not"]
    else:
        lo, hi = law["constant_ci"]
        assert lo <= law["constant"] <= hi
    page = open(res["report"]).read()
    assert "Every trial" in page and "Delay law" in page


def test_sweep_plan_bad_input(cli, tmp_path):
    code, _, err = cli(["sweep", "grok", "--plan", "nope", "--store", str(tmp_path)])
    assert code == 2 and "unknown sweep plan 'nope'" in err
    code, _, err = cli(["sweep", "grok", "--plan", "delay-law", "--grid", "lr=1e-3", "--store", str(tmp_path)])
    assert code == 2 and "--plan brings its own grid" in err
    code, _, err = cli(["sweep", "grok", "--store", str(tmp_path)])
    assert code == 2 and "nothing to sweep" in err and "--sample" in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_sweep_print_config_lists_every_trial_without_running(cli, tmp_path):
    code, out, err = cli(["sweep", "grok", "--plan", "delay-law", "--print-config", "--json",
                          "--store", str(tmp_path)])
    assert code == 0, err
    plan = json.loads(out)
    assert plan["base"]["schedule"]["steps"] == 8000 and len(plan["trials"]) == 20  # 5 weight decays x 2 lrs x 2 seeds
    assert {(t["weight_decay"], t["lr"], t["seed"]) for t in plan["trials"]} == {
        (wd, lr, s) for wd in (0.3, 0.5, 1.0, 2.0, 4.0) for lr in (2e-3, 4e-3) for s in (0, 1)}
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written
    code, _, err = cli(["sweep", "grok", "--grid", "lr=-1", "--print-config", "--store", str(tmp_path)])
    assert code == 2 and err.startswith("error:")  # every trial is validated first
