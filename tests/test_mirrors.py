"""Live and exported mirrors of runs into TensorBoard and MLflow: the same numbers as the store, no
duplicates on re-export, no network, and one clear line for a bad mirror name or a missing package."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from transferlab.store import Store
from transferlab.studies.grokking import GrokConfig, run_members

TINY = dict(p=23, train_fraction=0.5, width=32, steps=40, eval_every=10, checkpoint_every=20)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an internet connection fails the test."""
    real_connect = socket.socket.connect

    def guarded(self, address):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network call to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_runs(store_root):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(store_root / 'mirrors' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("transferlab/grokking")
    return client, client.search_runs([experiment.experiment_id])


def test_live_mirrors_hold_the_same_metrics_as_the_store(tmp_path, no_network):
    store = Store(tmp_path, mirrors=("tensorboard", "mlflow"))
    member = run_members([GrokConfig(**TINY)], store)[0]
    records = store.find(member.run_id).metrics()
    assert [r["step"] for r in records] == [0, 10, 20, 30, 40]

    scalars = tensorboard_scalars(tmp_path / "mirrors" / "tensorboard" / "grokking" / member.run_id)
    assert [s for s, _ in scalars["val_acc"]] == [0, 10, 20, 30, 40]
    assert [v for _, v in scalars["train_loss"]] == pytest.approx([r["train_loss"] for r in records], rel=1e-6)
    assert "norm_sq/embed" in scalars  # dotted keys become TensorBoard tag folders

    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1
    found = runs[0]
    assert found.info.status == "FINISHED"
    assert found.data.tags["transferlab.run_id"] == member.run_id
    assert found.data.params["task.p"] == "23" and found.data.params["model.width"] == "32"
    history = client.get_metric_history(found.info.run_id, "val_loss")
    assert [m.step for m in history] == [r["step"] for r in records]
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in records])
    assert found.data.metrics["summary.final_val_acc"] == pytest.approx(member.summary["final_val_acc"])


def test_runs_mirror_exports_again_without_duplicates(cli, tmp_path, no_network):
    member = run_members([GrokConfig(**TINY)], Store(tmp_path))[0]
    assert not (tmp_path / "mirrors").exists()  # nothing is mirrored unless asked
    for _ in range(2):
        code, out, err = cli(["runs", "mirror", "--to", "mlflow", "--to", "tensorboard", "--store", str(tmp_path),
                              "--json"])
        assert code == 0, err
        assert json.loads(out)["runs"] == [member.run_id]
        assert json.loads(out)["mirrors"] == {
            "mlflow": f"sqlite:///{(tmp_path / 'mirrors' / 'mlflow.db').resolve()}",
            "tensorboard": str(tmp_path / "mirrors" / "tensorboard")}
    client, runs = mlflow_runs(tmp_path)
    live = [r for r in runs if r.info.lifecycle_stage == "active"]
    assert len(live) == 1
    assert len(client.get_metric_history(live[0].info.run_id, "train_acc")) == 5
    scalars = tensorboard_scalars(tmp_path / "mirrors" / "tensorboard" / "grokking" / member.run_id)
    assert len(scalars["train_acc"]) == 5


def test_a_failing_mirror_warns_once_and_the_run_goes_on(tmp_path, capsys):
    class Broken:
        name = "broken"

        def __getattr__(self, action):  # start, log, finish all fail
            def fail(*args):
                raise OSError("disk full")
            return fail

    store = Store(tmp_path)
    store.mirrors = [Broken()]
    member = run_members([GrokConfig(**TINY)], store)[0]
    assert member.summary["status"] == "done" and len(store.find(member.run_id).metrics()) == 5
    err = capsys.readouterr().err
    assert err.count("the broken mirror failed (OSError: disk full)") == 1
    assert store.mirrors == []


def test_bad_mirror_names_and_missing_packages_get_one_line(cli, tmp_path, monkeypatch):
    code, _, err = cli(["grok", "--mirror", "wandb", "--store", str(tmp_path), "--set", "steps=5"])
    assert code == 2
    assert err.strip().splitlines() == ["error: --mirror: unknown mirror 'wandb' — use one of: tensorboard, mlflow"]
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    code, _, err = cli(["grok", "--mirror", "tensorboard", "--store", str(tmp_path), "--set", "steps=5"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'transferlab[tensorboard]'" in err
    assert not any((tmp_path / "grokking").glob("*"))  # refused before any run folder was made
    code, _, err = cli(["runs", "mirror", "--to", "wandb", "--store", str(tmp_path)])
    assert code == 2
    assert err.strip().splitlines() == ["error: --to: unknown mirror 'wandb' — use one of: tensorboard, mlflow"]
    code, _, err = cli(["runs", "mirror", "nope", "--to", "mlflow", "--store", str(tmp_path)])
    assert code == 2 and "no unique run with id 'nope'" in err
    assert not (tmp_path / "mirrors").exists()  # nothing was written for a bad id


def test_a_sweep_mirrors_every_trial(tmp_path):
    from transferlab.sweep import run_sweep

    result = run_sweep(GrokConfig(**TINY), {"weight_decay": [0.3, 1.0]}, Store(tmp_path, mirrors=("tensorboard",)))
    folders = tmp_path / "mirrors" / "tensorboard" / "grokking"
    assert sorted(p.name for p in folders.iterdir()) == sorted(t["run_id"] for t in result["trials"])
    for t in result["trials"]:
        assert len(tensorboard_scalars(folders / t["run_id"])["val_acc"]) == 5
