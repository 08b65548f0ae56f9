"""The engine: ensembles equal single runs, kill -9 resumes exactly, NaN stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transferlab.core.errors import TrainingDiverged
from transferlab.store import Store
from transferlab.studies.grokking import GrokConfig, run, run_members

TINY = dict(p=23, train_fraction=0.5, width=32, steps=40, eval_every=10, checkpoint_every=20)


def test_ensemble_members_match_individual_runs(tmp_path):
    cfgs = [GrokConfig(**TINY, seed=s, lr=lr, weight_decay=wd)
            for s, lr, wd in ((0, 1e-3, 1.0), (1, 3e-3, 0.3), (2, 1e-2, 0.0))]
    together = run_members(cfgs, Store(tmp_path / "a"))
    alone = [run_members([c], Store(tmp_path / f"b{i}"))[0] for i, c in enumerate(cfgs)]
    assert [m.summary["ensemble_size"] for m in together] == [3, 3, 3]
    for t, a in zip(together, alone):
        assert t.run_id == a.run_id  # same config, same run id
        for rt, ra in zip(t.records, a.records):
            assert rt["step"] == ra["step"]
            assert abs(rt["train_loss"] - ra["train_loss"]) < 1e-4 * max(1.0, abs(ra["train_loss"]))
            assert abs(rt["weight_norm_sq"] - ra["weight_norm_sq"]) < 1e-3


def test_finished_run_is_reused_not_retrained(tmp_path):
    st = Store(tmp_path)
    cfg = GrokConfig(**TINY)
    first = run_members([cfg], st)[0]
    mtime = (st.run_dir("grokking", first.run_id) / "metrics.jsonl").stat().st_mtime_ns
    again = run_members([cfg], st)[0]
    assert again.summary == first.summary
    assert (st.run_dir("grokking", first.run_id) / "metrics.jsonl").stat().st_mtime_ns == mtime


def _cli(store, *sets):
    args = [sys.executable, "-m", "transferlab.cli.main", "grok", "--store", str(store), "--json"]
    for s in sets:
        args += ["--set", s]
    return args


RESUME_SETS = ("p=29", "train_fraction=0.5", "width=64", "steps=3000", "eval_every=10", "checkpoint_every=25",
               "stop_after_generalized=-1")


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """The run the kill -9 tests must reproduce, trained once without interruption: (run id, metrics text)."""
    store = tmp_path_factory.mktemp("ref")
    ref = subprocess.run(_cli(store, *RESUME_SETS), capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr
    run_id = json.loads(ref.stdout)["run_id"]
    return run_id, (store / "grokking" / run_id / "metrics.jsonl").read_text()


@pytest.mark.parametrize("kill_after_checkpoints, then_logs", [(2, 1), (7, 2)])
def test_kill9_then_resume_gives_identical_metrics(tmp_path, kill_after_checkpoints, then_logs, uninterrupted_run):
    from tests.paused_cli import wait_for

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run_id, a = uninterrupted_run
    marker = tmp_path / "paused"
    # the child pauses after that many checkpoints and then a few metric records, so the kill lands between
    # two checkpoints at the same step on every machine, loaded or not (it used to race a polling loop)
    args = _cli(tmp_path / "killed", *RESUME_SETS)[3:]
    proc = subprocess.Popen([sys.executable, "-m", "tests.paused_cli", str(marker), str(kill_after_checkpoints),
                             str(then_logs), "--", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=Path(__file__).resolve().parent.parent)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = (tmp_path / "killed" / "grokking" / run_id / "metrics.jsonl").read_text()
    resumed = subprocess.run(_cli(tmp_path / "killed", *RESUME_SETS), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    b = (tmp_path / "killed" / "grokking" / run_id / "metrics.jsonl").read_text()
    assert len(partial) < len(a)  # it really was interrupted
    steps = [json.loads(line)["step"] for line in b.splitlines()]
    assert steps == sorted(set(steps))  # no duplicated or missing steps
    assert a == b  # bit-for-bit the same metrics as the uninterrupted run


def test_nan_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path):
    st = Store(tmp_path)
    cfg = GrokConfig(**{**TINY, "steps": 200, "checkpoint_every": 10}, lr=1e30, weight_decay=0.0,
                     warmup_steps=0)
    with pytest.raises(TrainingDiverged, match="NaN/Inf at step"):
        run(cfg, st)
    r = st.find(cfg.config_hash())
    s = r.summary()
    assert s["status"] == "diverged" and "last good checkpoint" in s["error"]
    steps = r.checkpoint_steps()
    assert steps and all(torch.isfinite(t).all() for t in r.load_checkpoint(steps[-1])[0].values())


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_diverged_member_does_not_stop_the_others(tmp_path, mode):
    cfgs = [GrokConfig(**TINY, seed=0, lr=1e-3, warmup_steps=0, ensemble_mode=mode),
            GrokConfig(**TINY, seed=1, lr=1e30, warmup_steps=0, ensemble_mode=mode)]
    out = run_members(cfgs, Store(tmp_path))
    assert out[0].summary["status"] == "done" and out[0].summary["last_step"] == TINY["steps"]
    assert out[1].summary["status"] == "diverged"


def test_chunked_gradient_accumulation_matches_the_full_batch(tmp_path):
    cfgs = [GrokConfig(**TINY, seed=s, lr=lr) for s, lr in ((0, 1e-3), (1, 3e-3))]
    chunked = [c.model_copy(update={"chunk_size": 37}) for c in cfgs]
    a = run_members(cfgs, Store(tmp_path / "a"))
    b = run_members(chunked, Store(tmp_path / "b"))
    for ma, mb in zip(a, b):
        assert ma.run_id != mb.run_id  # chunking is part of the config: its sums round differently
        for ra, rb in zip(ma.records, mb.records):
            assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-4 * max(1.0, ra["train_loss"])
            assert abs(ra["weight_norm_sq"] - rb["weight_norm_sq"]) < 1e-3


def test_ensemble_modes_agree_and_loop_members_equal_single_runs(tmp_path):
    from transferlab.train.ensemble import LOOP_WORK, StackedForward

    cfgs = {m: [GrokConfig(**TINY, seed=s, lr=lr, ensemble_mode=m) for s, lr in ((0, 1e-3), (1, 3e-3))]
            for m in ("vmap", "loop")}
    res = {m: run_members(c, Store(tmp_path / m)) for m, c in cfgs.items()}
    alone = run_members([cfgs["loop"][1]], Store(tmp_path / "alone"))[0]
    for rv, rl in zip(res["vmap"][1].records, res["loop"][1].records):  # loop: member-by-member step and eval
        for key in ("train_loss", "val_loss", "train_acc", "val_acc", "weight_norm_sq"):
            assert abs(rv[key] - rl[key]) < 1e-4 * max(1.0, abs(rl[key])), key
    assert [r["train_loss"] for r in res["loop"][1].records] == [r["train_loss"] for r in alone.records]
    # auto: loop on CPU for big members, vmap for small ones; a pure function of shapes
    fwd = StackedForward(torch.nn.Linear(100, 100))
    big = {"w": torch.zeros(2, 100, 100)}
    assert fwd.loops(big, torch.zeros(LOOP_WORK // 10_000, 100))
    assert not fwd.loops(big, torch.zeros(10, 100))
    with pytest.raises(ValueError, match="ensemble mode"):
        StackedForward(torch.nn.Linear(2, 2), "threads")
