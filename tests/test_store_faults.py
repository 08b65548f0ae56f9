"""The store keeps its promises under faults: two processes on one run, kill -9, damaged checkpoints and
files, a lost index, runs that end in an error, sweeps with failing or repeated trials, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transferlab.store import Store
from transferlab.studies.grokking.config import GrokConfig

TINY = ["--set", "p=23", "--set", "width=16", "--set", "steps=30", "--set", "eval_every=10",
        "--set", "checkpoint_every=10", "--set", "monitor_every=0"]
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("TRANSFERLAB_HOME", None)
    return env


def _grok_cmd(store: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "transferlab.cli.main", "grok", "--set", "p=23", "--set", "width=16",
            "--set", f"steps={steps}", "--set", "eval_every=10", "--set", "checkpoint_every=50",
            "--set", "stop_after_generalized=-1", "--set", "monitor_every=0", "--set", "progress_measures=false",
            "--store", str(store), "--json"]


# long enough that a kill after the first checkpoint lands mid-run on a quiet machine too (400 steps of this
# config can finish between two polls)
LONG = 6000


def _paused_grok(store: Path, marker: Path, stderr: int) -> subprocess.Popen:
    """The LONG grok command, paused after its first checkpoint and one more evaluation (tests.paused_cli):
    a signal sent then lands mid-run on every machine instead of racing the run to its end."""
    from tests.paused_cli import wait_for

    proc = subprocess.Popen([sys.executable, "-m", "tests.paused_cli", str(marker), "1", "1", "--",
                             *_grok_cmd(store, LONG)[3:]], env=_env(), stdout=subprocess.DEVNULL, stderr=stderr,
                            text=True, cwd=REPO)
    wait_for(marker, proc)
    return proc


def _steps(run) -> list[int]:
    return [r["step"] for r in run.metrics()]


def test_two_identical_commands_at_once_leave_one_consistent_run(tmp_path):
    """The second process is refused at once with one line naming the owner's PID (or, if it starts after
    the first finished, reuses the result); the run ends done with every evaluation logged once."""
    store = tmp_path / "runs"
    steps = 200
    procs = [subprocess.Popen(_grok_cmd(store, steps), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes[0] == 0, results
    for code, _out, err in results:
        assert "Traceback" not in err, err
        if code != 0:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert code == 2 and len(lines) == 1, err
            assert "is being trained by PID" in lines[0] and str(store) in lines[0], lines[0]
    st = Store(store)
    rows = st.index.rows()
    assert len(rows) == 1 and rows[0]["status"] == "done"
    run = st.find(rows[0]["id"])
    assert _steps(run) == list(range(0, steps + 1, 10))  # 21 evaluations, none twice, in order
    assert run.summary()["status"] == "done" and run.summary()["last_step"] == steps
    assert not list(run.ckpt_dir.glob(".*.tmp"))


def test_kill_9_leaves_no_stale_lock_and_the_rerun_resumes(tmp_path):
    store = tmp_path / "runs"
    proc = _paused_grok(store, tmp_path / "paused", stderr=subprocess.DEVNULL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = Store(store)
    run = st.find(st.index.rows()[0]["id"])
    assert run.status == "interrupted"  # not "running": its owner is gone
    code = subprocess.run([sys.executable, "-m", "transferlab.cli.main", "runs", "ls", "--store", str(store), "--json"],
                          env=_env(), capture_output=True, text=True)
    assert json.loads(code.stdout)[0]["status"] == "interrupted"
    again = subprocess.run(_grok_cmd(store, LONG), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert run.status == "done" and _steps(run) == list(range(0, LONG + 1, 10))


def test_sigterm_marks_the_run_interrupted_and_the_rerun_resumes(tmp_path):
    store = tmp_path / "runs"
    proc = _paused_grok(store, tmp_path / "paused", stderr=subprocess.PIPE)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "error: interrupted" in proc.stderr.read()
    st = Store(store)
    run = st.find(st.index.rows()[0]["id"])
    assert run.summary()["status"] == "interrupted" and st.index.rows()[0]["status"] == "interrupted"
    again = subprocess.run(_grok_cmd(store, LONG), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert run.status == "done" and _steps(run) == list(range(0, LONG + 1, 10))


def test_a_second_owner_is_refused_in_process_and_the_lock_follows_the_process(tmp_path):
    from transferlab.store import lock

    st = Store(tmp_path)
    run = st.open_run("grokking", GrokConfig(p=23))
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from transferlab.store import lock; from pathlib import Path;"
        "lock.acquire(Path(sys.argv[2])); print('held', flush=True); time.sleep(60)"), str(REPO), str(run.path)],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert child.stdout.readline().strip() == "held"
        assert lock.held_elsewhere(run.path)
        with pytest.raises(lock.RunLocked, match=f"PID {child.pid}"):
            run.start()
        assert run.status == "new"  # the refused process wrote nothing
    finally:
        child.kill()
        child.wait()
    assert not lock.held_elsewhere(run.path)
    run.start()  # the dead owner's lock is gone at once
    assert lock.held_here(run.path)
    run.finish({"x": 1})
    assert not lock.held_here(run.path) and run.status == "done"


def _flip_4_bytes(path: Path, from_end: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(4):
        data[-from_end + i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoints_carry_checksums_and_a_damaged_newest_one_falls_back(cli, tmp_path):
    from transferlab.core.errors import StoreError

    code, out, err = cli(["grok", *TINY, "--store", str(tmp_path), "--json"])
    assert code == 0, err
    st = Store(tmp_path)
    run = st.find(json.loads(out)["run_id"])
    before = run.metrics_path.read_text()
    assert run.checkpoint_steps() == [20, 30]
    state = json.loads((run.ckpt_dir / "step-000000030" / "state.json").read_text())
    assert len(state["tensors_sha256"]) == 64 and len(state["state_sha256"]) == 64
    # 4 flipped bytes inside the tensor data: safetensors still parses it, the checksum does not match
    _flip_4_bytes(run.ckpt_dir / "step-000000030" / "tensors.safetensors")
    with pytest.raises(StoreError, match="sha256"):
        run.load_checkpoint(30)
    run.summary_path.unlink()  # as if the run had been interrupted at its end
    code, out, err = cli(["grok", *TINY, "--store", str(tmp_path), "--json"])
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "step-000000030" in warnings[0] and "step 20" in warnings[0], err
    assert run.metrics_path.read_text() == before  # resumed at 20, re-ran 20..30 exactly
    assert run.status == "done"


def test_a_flipped_state_file_is_caught_too(tmp_path):
    st = Store(tmp_path)
    run = st.open_run("grokking", GrokConfig(p=23))
    for step in (10, 20):
        run.log({"step": step})
        run.save_checkpoint(step, {"w": torch.full((3,), float(step))}, {"member": 0})
    state_path = run.ckpt_dir / "step-000000020" / "state.json"
    state_path.write_text(state_path.read_text().replace('"metrics_bytes": ', '"metrics_bytes": 1'))
    tensors, state = run.load_checkpoint()  # the newest intact one
    assert state["step"] == 10 and tensors["w"].tolist() == [10.0] * 3


def test_every_checkpoint_damaged_is_one_clear_line(cli, tmp_path):
    code, out, _ = cli(["grok", *TINY, "--store", str(tmp_path), "--json"])
    run = Store(tmp_path).find(json.loads(out)["run_id"])
    run.summary_path.unlink()
    for f in run.ckpt_dir.glob("step-*/tensors.safetensors"):
        _flip_4_bytes(f)
    code, _, err = cli(["grok", *TINY, "--store", str(tmp_path)])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "every checkpoint" in lines[0] and "delete" in lines[0], err
    assert run.status == "failed" and "every checkpoint" in run.summary()["error"]  # not left running


def test_a_damaged_line_in_the_middle_of_metrics_is_skipped_with_its_number(tmp_path, capsys):
    st = Store(tmp_path)
    run = st.open_run("grokking", GrokConfig(p=23))
    for step in range(0, 50, 10):
        run.log({"step": step, "val_acc": step / 100})
    lines = run.metrics_path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"  # a half line in the middle
    run.metrics_path.write_text("".join(lines))
    capsys.readouterr()
    assert _steps(run) == [0, 10, 30, 40]
    err = capsys.readouterr().err
    assert "line 3" in err and "damaged" in err and str(run.metrics_path) in err
    assert _steps(run) == [0, 10, 30, 40] and capsys.readouterr().err == ""  # warned once


def test_runs_repair_rebuilds_a_lost_or_garbage_index(cli, tmp_path):
    code, out, _ = cli(["grok", *TINY, "--store", str(tmp_path), "--json"])
    run_id = json.loads(out)["run_id"]
    index = tmp_path / "index.sqlite"
    for damage in ("delete", "garbage"):
        if damage == "delete":
            index.unlink()
            for extra in ("-wal", "-shm"):
                Path(str(index) + extra).unlink(missing_ok=True)
        else:
            index.write_bytes(b"garbage" * 500)
        code, _, err = cli(["runs", "ls", "--store", str(tmp_path)])
        assert code == 2 and "runs repair" in err and len(err.strip().splitlines()) == 1, err
        code, out, err = cli(["runs", "repair", "--store", str(tmp_path), "--json"])
        assert code == 0, err
        rep = json.loads(out)
        assert rep["runs"] == 1 and (rep["broken_index_kept_at"] is not None) == (damage == "garbage")
        code, out, _ = cli(["runs", "ls", "--store", str(tmp_path), "--json"])
        rows = json.loads(out)
        assert [(r["id"], r["status"]) for r in rows] == [(run_id, "done")]
        code, out, _ = cli(["runs", "show", run_id[:6], "--store", str(tmp_path), "--json"])
        assert code == 0 and json.loads(out)["summary"]["status"] == "done"


def test_a_run_that_ends_in_an_error_is_marked_failed_with_the_reason(cli, tmp_path, monkeypatch):
    from transferlab.train import engine

    def boom(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(engine.Engine, "run", boom)
    code, _, err = cli(["grok", *TINY, "--seeds", "2", "--store", str(tmp_path)])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "internal error" in lines[0] and "disk on fire" in lines[0], err
    rows = Store(tmp_path).index.rows()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"failed"}
    assert all("disk on fire" in r["summary"]["error"] for r in rows)
    monkeypatch.undo()
    code, _, err = cli(["grok", *TINY, "--seeds", "2", "--store", str(tmp_path)])  # a rerun retries them
    assert code == 0, err
    assert {r["status"] for r in Store(tmp_path).index.rows()} == {"done"}


def test_a_sweep_with_a_failing_trial_exits_non_zero_and_names_it(cli, tmp_path, monkeypatch):
    import importlib

    grun = importlib.import_module("transferlab.studies.grokking.run")

    real = grun._train

    def flaky(cfg0, cfgs, runs, data, *args):
        if any(c.optimizer.lr == 3e-3 for c in cfgs):
            raise RuntimeError("trial exploded")
        return real(cfg0, cfgs, runs, data, *args)

    monkeypatch.setattr(grun, "_train", flaky)
    code, out, err = cli(["sweep", "grok", "--grid", "lr=1e-3,3e-3", *TINY, "--store", str(tmp_path), "--json"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "1 of 2 trials did not finish" in lines[0], err
    trials = json.loads(out)["trials"]
    bad = [t for t in trials if t["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["lr"] == 3e-3 and bad[0]["run_id"] in lines[0] and "trial exploded" in lines[0]


def test_sweep_grid_seeds_are_used_not_overridden_and_identical_trials_run_once(cli, tmp_path):
    from transferlab.sweep.runner import dedupe

    code, out, err = cli(["sweep", "grok", "--grid", "seed=3,5", *TINY, "--store", str(tmp_path), "--json"])
    assert code == 0, err
    trials = json.loads(out)["trials"]
    assert sorted(t["seed"] for t in trials) == [3, 5] and len({t["run_id"] for t in trials}) == 2
    for t in trials:
        assert len(Store(tmp_path).find(t["run_id"]).metrics()) == 4  # steps 0..30, each once
    c = GrokConfig(p=23)
    assert len(dedupe([c, c.model_copy(), c.model_copy(update={"seed": 1})])) == 2


def test_a_loss_that_explodes_stops_before_nan_with_advice_for_lr_or_weight_decay(cli, tmp_path):
    code, _, err = cli(["grok", *TINY, "--set", "lr=30", "--set", "weight_decay=0.01", "--store", str(tmp_path)])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "exploded" in lines[0] and "1000x" in lines[0], err
    assert "lower lr" in lines[0]
    code, _, err = cli(["grok", *TINY, "--set", "lr=0.01", "--set", "weight_decay=300", "--store", str(tmp_path)])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "lower weight_decay" in lines[0], err
    assert all(r["status"] == "diverged" for r in Store(tmp_path).index.rows())


def test_the_explode_bound_stays_out_of_run_ids_at_its_default():
    a = GrokConfig(p=23)
    assert a.config_hash() == GrokConfig(p=23, explode_factor=1e3).config_hash()
    assert a.config_hash() != GrokConfig(p=23, explode_factor=0).config_hash()


def test_the_memory_cap_is_overridable(monkeypatch):
    from transferlab.core.config import build
    from transferlab.core.errors import ConfigError

    big = {"p": 997, "width": 512}  # ~12 GB of logits and activations
    monkeypatch.setenv("TRANSFERLAB_MAX_MEMORY_GB", "1000")
    need = build(GrokConfig, big).memory_bytes() / 1e9
    assert 5 < need < 50
    monkeypatch.setenv("TRANSFERLAB_MAX_MEMORY_GB", "1")
    with pytest.raises(ConfigError, match=r"needs about [0-9.,]+ GB, more than the 1.0 GB"):
        build(GrokConfig, big)
    monkeypatch.setenv("TRANSFERLAB_MAX_MEMORY_GB", "1000")
    build(GrokConfig, big)
