"""A full disk and a read-only store (issue 23): one line, exit 2, and nothing already written is lost or
half-written. Tested on a real tmpfs where this process may mount one (root with CAP_SYS_ADMIN, as here and
in CI), and always with ENOSPC simulated in the checkpoint writer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from transferlab.store import Store

SMALL = ["--set", "p=23", "--set", "width=64", "--set", "eval_every=10", "--set", "checkpoint_every=20"]


def _run_id(store: Path, steps: int) -> str:
    from transferlab.core.config import build
    from transferlab.studies.grokking.config import GrokConfig

    return build(GrokConfig, {"p": 23, "width": 64, "eval_every": 10, "checkpoint_every": 20,
                              "steps": steps}).config_hash()


def _check_left_intact(store: Path, run_id: str, finished_summary: tuple[Path, bytes]) -> int:
    """The failed run: its newest checkpoint loads with checksums verified, no partial step or tmp file is
    left, metrics.jsonl holds whole records only; the finished run's summary is byte for byte as it was."""
    from transferlab.store.run import Run

    run = Run(Store(store), "grokking", run_id)  # the folder itself: on a full disk even reading SQLite can fail
    steps = run.checkpoint_steps()
    assert steps, "the first checkpoints fitted"
    tensors, state = run.load_checkpoint()
    assert state["step"] == steps[-1] and tensors
    assert not list(run.ckpt_dir.glob(".*tmp*")) and not list(run.path.glob(".*.tmp"))
    text = run.metrics_path.read_text()
    assert text.endswith("\n")
    assert all(json.loads(line) for line in text.splitlines())
    path, before = finished_summary
    assert path.read_bytes() == before
    return steps[-1]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_simulated_in_the_checkpoint_writer(tmp_path, cli, monkeypatch):
    from safetensors import SafetensorError

    import transferlab.store.run as store_run

    store = tmp_path / "runs"
    code, out, err = cli(["grok", *SMALL, "--set", "steps=20", "--json", "--store", str(store)])
    assert code == 0, err
    done = Store(store).find(_run_id(store, 20)).summary_path
    finished = (done, done.read_bytes())

    real, calls = store_run.save_file, []

    def full_after_two(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:
            Path(path).write_bytes(b"partial")  # the device filled mid-write
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(store_run, "save_file", full_after_two)
    code, out, err = cli(["grok", *SMALL, "--set", "steps=200", "--json", "--store", str(store)])
    assert code == 2
    line = _one_error_line(err)
    assert "disk is full" in line and "checkpoint step 40" in line and "step 20" in line
    assert _check_left_intact(store, _run_id(store, 200), finished) == 20

    monkeypatch.setattr(store_run, "save_file", real)  # space freed: the same command resumes and finishes
    code, out, err = cli(["grok", *SMALL, "--set", "steps=200", "--json", "--store", str(store)])
    assert code == 0, err
    steps = [r["step"] for r in Store(store).find(_run_id(store, 200)).metrics() if "step" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 200  # no duplicated or missing evaluation


@pytest.fixture
def tmpfs(tmp_path):
    """A 16 MiB tmpfs (a report inlines plotly.js, ~4.6 MB) mounted at tmp_path/fs, unmounted afterwards."""
    where = tmp_path / "fs"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"this process may not mount a tmpfs ({res.stderr.strip()}); the simulated test covers "
                    "the writer")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_disk_stops_the_run_with_one_line(tmpfs, cli):
    store = tmpfs / "runs"
    code, out, err = cli(["grok", *SMALL, "--set", "steps=20", "--json", "--store", str(store)])
    assert code == 0, err
    done = Store(store).find(_run_id(store, 20)).summary_path
    finished = (done, done.read_bytes())
    # leave room for about two of the next run's checkpoints (58 KB each) and its metrics, not a third
    import os

    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * max(0, free - 150_000))
    code, out, err = cli(["grok", *SMALL, "--set", "steps=400", "--json", "--store", str(store)])
    assert code == 2
    line = _one_error_line(err)
    assert "disk is full" in line, line
    last = _check_left_intact(store, _run_id(store, 400), finished)
    assert 0 <= last < 400
    filler.unlink()
    code, out, err = cli(["grok", *SMALL, "--set", "steps=400", "--json", "--store", str(store)])
    assert code == 0, err  # space freed: it resumes from the last intact checkpoint and finishes


def test_a_read_only_store_gives_one_line_before_any_work(tmpfs, cli):
    store = tmpfs / "runs"
    code, out, err = cli(["grok", *SMALL, "--set", "steps=20", "--json", "--store", str(store)])
    assert code == 0, err
    before = sorted(str(p) for p in tmpfs.rglob("*"))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for target in (store, tmpfs / "new-store"):
        code, out, err = cli(["grok", *SMALL, "--set", "steps=40", "--json", "--store", str(target)])
        assert code == 2
        line = _one_error_line(err)
        assert "writable" in line or "read-only" in line, line
    code, out, err = cli(["runs", "ls", "--json", "--store", str(store)])
    assert code == 2 and "read-only file system" in _one_error_line(err)  # SQLite's WAL needs to write
    assert sorted(str(p) for p in tmpfs.rglob("*")) == before
