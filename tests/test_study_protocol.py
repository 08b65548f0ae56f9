"""The Study protocol: every study is registered with a name, a config class and presets; ``run`` returns a
typed result whose ``to_json`` is the command's contract; the store answers "done?"; any study can be swept
(grids, random search, locally and on Ray Tune)."""

from __future__ import annotations

import json

import pytest

from transferlab.core.errors import ConfigError
from transferlab.store import Store
from transferlab.studies.base import Study, StudyResult
from transferlab.studies.registry import get_study, study_for, study_names
from transferlab.sweep import run_sweep
from transferlab.sweep.grid import draw_samples, parse_sample

W2S_FAST = ["task=synthetic-noisy", "losses=[xent]", "n_examples=600", "steps=60", "seeds=1"]


def test_every_study_speaks_the_protocol():
    assert set(study_names()) == {"grok", "w2s", "transfer", "eft-demo", "correlate", "correlate-zoo"}
    for name in study_names():
        s = get_study(name)
        assert isinstance(s, Study) and s.command == name and s.name
        assert s.presets.names(), name
        assert s.default_preset is None or s.default_preset in s.presets.names()
        cfg = s.make_config(overrides=["path=x.csv"] if name == "correlate" else None)
        assert isinstance(cfg, s.config_cls)
        assert study_for(cfg) is s
    assert get_study("grokking") is get_study("grok")  # the stored name works too


def test_every_training_study_has_a_mini_preset_between_micro_and_its_largest():
    """The mid-size preset a new user runs first has one name everywhere (correlate trains nothing)."""
    for name in study_names():
        names = get_study(name).presets.names()
        if name == "correlate":
            assert "mini" not in names
            continue
        assert "mini" in names, name


def test_an_unknown_study_gets_a_suggestion():
    with pytest.raises(ConfigError) as e:
        get_study("grk")
    assert "did you mean 'grok'" in e.value.one_line()


def test_run_returns_a_typed_result_and_the_store_answers_done(tmp_path, cli):
    st = Store(tmp_path)
    w2s = get_study("w2s")
    cfg = w2s.make_config(overrides=W2S_FAST)
    assert w2s.done(cfg, st) is None
    res = w2s.run(cfg, st, w2s.options(report=False))
    assert isinstance(res, StudyResult) and res.study == "w2s"
    assert res["losses"]["xent"]["pgr"]["value"] == res.data["losses"]["xent"]["pgr"]["value"]
    done = w2s.done(cfg, st)
    assert done is not None and done["status"] == "done" and done["task"] == "synthetic-noisy"
    # the CLI prints exactly the result's contract
    code, out, err = cli(["w2s", *[a for kv in W2S_FAST for a in ("--set", kv)], "--store", str(tmp_path), "--json"])
    assert code == 0, err
    same = json.loads(json.dumps(res.to_json()["losses"]).replace("NaN", "null"))  # NaN prints as null
    assert json.loads(out)["losses"] == same
    assert json.loads(out)["reused"] is True


def test_random_search_draws_are_seeded_and_inside_their_ranges():
    space = parse_sample(["lr=loguniform:1e-4:1e-2", "steps=int:10:20", "loss=choice:xent,logconf"])
    a, b = draw_samples(space, 20, seed=3), draw_samples(space, 20, seed=3)
    assert a == b and draw_samples(space, 20, seed=4) != a
    assert all(1e-4 <= p["lr"] <= 1e-2 and 10 <= p["steps"] <= 20 and p["loss"] in ("xent", "logconf") for p in a)
    assert len({p["steps"] for p in a}) > 3
    for bad in ["lr=loguniform:0:1", "lr=uniform:2:1", "lr=normal:0:1", "lr", "lr=choice:"]:
        with pytest.raises(ConfigError):
            parse_sample([bad])


def test_a_second_study_sweeps_locally_with_grid_and_random_search(tmp_path, cli):
    args = ["sweep", "w2s", "--grid", "weak_noise=0.2,0.35", "--sample", "lr=loguniform:3e-3:3e-2", "--trials", "2",
            *[a for kv in W2S_FAST for a in ("--set", kv)], "--store", str(tmp_path), "--json"]
    code, out, err = cli(args)
    assert code == 0, err
    res = json.loads(out)
    assert res["study"] == "w2s" and len(res["trials"]) == 4
    assert all(t["status"] == "done" for t in res["trials"])
    assert {t["weak_noise"] for t in res["trials"]} == {0.2, 0.35}
    assert all(3e-3 <= t["lr"] <= 3e-2 and isinstance(t["pgr.xent"], float) for t in res["trials"])
    # noisier weak labels: a weaker supervisor on average
    by = {w: [t["weak_acc"] for t in res["trials"] if t["weak_noise"] == w] for w in (0.2, 0.35)}
    assert sum(by[0.2]) > sum(by[0.35])
    page = (tmp_path / "w2s" / "reports" / f"{res['sweep']}.html").read_text()
    assert "pgr.xent against weak_noise" in page and res["trials"][0]["run_id"] in page
    code, out, err = cli(args)  # the same sweep again reuses every trial
    assert code == 0 and json.loads(out)["trained"] == []


def test_a_second_study_sweeps_on_local_ray_tune(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_RAY_CPUS", "2")
    sets = [a for kv in W2S_FAST for a in ("--set", kv)]
    code, out, err = cli(["sweep", "w2s", "--grid", "weak_noise=0.2,0.35", *sets, "--backend", "ray",
                          "--store", str(tmp_path), "--json"])
    assert code == 0, err
    res = json.loads(out)
    assert sorted(t["weak_noise"] for t in res["trials"]) == [0.2, 0.35]
    assert all(t["status"] == "done" and isinstance(t["pgr.xent"], float) for t in res["trials"])
    for t in res["trials"]:  # each trial really ran in a Tune worker: its run is in the store
        assert Store(tmp_path).find(t["run_id"]).summary()["task"] == "synthetic-noisy"
    assert (tmp_path / "mirrors" / "ray" / res["sweep"]).is_dir()  # Tune's own experiment state


def test_asha_is_refused_where_it_cannot_act(tmp_path, cli):
    code, _, err = cli(["sweep", "w2s", "--grid", "lr=1e-2,3e-2", "--scheduler", "asha", "--backend", "ray",
                        "--store", str(tmp_path)])
    assert code == 2 and "reports no intermediate results" in err
    code, _, err = cli(["sweep", "grok", "--grid", "lr=1e-3,3e-3", "--scheduler", "asha", "--store", str(tmp_path)])
    assert code == 2 and "needs --backend ray" in err
    code, _, err = cli(["sweep", "grok", "--grid", "lr=1e-3", "--sample", "lr=uniform:1e-3:2e-3",
                        "--store", str(tmp_path)])
    assert code == 2 and "'lr' is both in --grid and in --sample" in err


@pytest.mark.slow
def test_asha_stops_or_finishes_every_grok_trial_on_ray_tune(tmp_path):
    """In its own process, as a user runs it (a Ray instance of its own, not the test process's)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRANSFERLAB_RAY_CPUS": "2", "TRANSFERLAB_ASHA_GRACE": "20", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "transferlab.cli.main", "sweep", "grok", "--grid", "lr=1e-4,1e-3,3e-3",
                           "--set", "p=23", "--set", "width=32", "--set", "steps=120", "--set", "eval_every=20",
                           "--set", "stop_after_generalized=0", "--backend", "ray", "--scheduler", "asha",
                           "--store", str(tmp_path), "--json"], capture_output=True, text=True, env=env, timeout=420)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert len(res["trials"]) == 3
    assert all(t["status"] in ("done", "stopped") for t in res["trials"]), res["trials"]
    for t in res["trials"]:
        run = Store(tmp_path).find(t["run_id"])
        if t["status"] == "stopped":
            assert "stopped early by the ASHA scheduler" in run.summary()["error"]
            assert t["last_step"] < 120
        else:
            assert run.metrics()[-1]["step"] == 120


def test_run_sweep_takes_the_study_from_the_config(tmp_path):
    w2s = get_study("w2s")
    base = w2s.make_config(overrides=W2S_FAST)
    res = run_sweep(base, {"weak_noise": [0.2]}, Store(tmp_path))
    assert res["study"] == "w2s" and res["trials"][0]["status"] == "done"
