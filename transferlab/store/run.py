"""A run folder: config.yaml, append-only metrics.jsonl, atomic summary.json, checkpoints.

Checkpoints are safetensors (tensors) plus JSON (step, RNG, scalar state). Nothing is ever
pickled. A checkpoint records the byte length of metrics.jsonl when it was taken, so a resumed
run truncates what was logged after it and the log has no duplicated or missing steps.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferlab.core.config import StudyConfig
from transferlab.core.errors import StoreError
from transferlab.store.atomic import write_json, write_text
from transferlab.store.index import Index

WEIGHTS = "tensors.safetensors"
STATE = "state.json"
LATEST = "latest.json"


class Store:
    """The store root (``./runs`` by default)."""

    def __init__(self, root: str | Path, mirrors: list[str] | tuple[str, ...] = ()):
        """``mirrors``: names of optional live mirrors of every run (``tensorboard``, ``mlflow``; see
        ``store.mirrors``)."""
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"store path {self.root} is a file, not a folder",
                fix="pass --store with a folder path (it is created if missing)",
            )
        self.index = Index(self.root)
        self.mirror_names = tuple(mirrors)  # what a worker process needs to open the same mirrors
        self.mirrors: list[Any] = []
        if mirrors:
            from transferlab.store.mirrors import make_mirrors

            self.mirrors = make_mirrors(mirrors, self.root)

    def mirror(self, action: str, *args: Any) -> None:
        """Pass a run event to every live mirror; a mirror that fails warns once and is dropped."""
        for m in list(self.mirrors):
            try:
                getattr(m, action)(*args)
            except Exception as err:  # noqa: BLE001 - a mirror must never stop a run
                print(f"warning: the {m.name} mirror failed ({type(err).__name__}: {err}); it is turned off "
                      "for this process, the store keeps every record", file=sys.stderr)
                self.mirrors.remove(m)

    def run_dir(self, study: str, run_id: str) -> Path:
        return self.root / study / run_id

    def open_run(self, study: str, config: StudyConfig, sweep: str | None = None) -> Run:
        """The run for this config: same hash => same folder (reused when done, resumed otherwise)."""
        run_id = config.config_hash()
        run = Run(self, study, run_id)
        if not (run.path / "config.yaml").exists():
            run.path.mkdir(parents=True, exist_ok=True)
            write_text(run.path / "config.yaml", config.to_yaml())
            self.index.upsert(run_id, study=study, config_hash=run_id, status="new",
                              path=str(run.path), sweep=sweep)
        elif sweep is not None:
            self.index.upsert(run_id, study=study, config_hash=run_id, status=run.status,
                              path=str(run.path), sweep=sweep)
        return run

    def find(self, run_id: str) -> Run:
        row = self.index.get(run_id)
        if row is None:
            raise StoreError(f"no unique run with id '{run_id}' in {self.root}",
                             fix="list runs with `transferlab runs ls`")
        return Run(self, row["study"], row["id"])


class Run:
    def __init__(self, store: Store, study: str, run_id: str):
        self.store = store
        self.study = study
        self.id = run_id
        self.path = store.run_dir(study, run_id)
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.ckpt_dir = self.path / "checkpoints"
        self.report_path = self.path / "report.html"

    # ---- status -------------------------------------------------------------
    @property
    def status(self) -> str:
        s = self.summary()
        if s is None:
            return "running" if self.metrics_path.exists() else "new"
        return s.get("status", "done")

    def _set_index(self, status: str, summary: dict[str, Any] | None = None) -> None:
        self.store.index.upsert(self.id, study=self.study, config_hash=self.id, status=status,
                                path=str(self.path), summary=summary)

    def config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load((self.path / "config.yaml").read_text())

    # ---- metrics ------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
        self.store.mirror("log", self, [record])

    def log_many(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.metrics_path, "a") as f:
            f.write("".join(json.dumps(r, default=float) + "\n" for r in records))
            f.flush()
        self.store.mirror("log", self, records)

    def metrics_bytes(self) -> int:
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is not trusted
        return out

    def truncate_metrics(self, nbytes: int) -> None:
        if self.metrics_path.exists():
            with open(self.metrics_path, "r+b") as f:
                f.truncate(nbytes)

    # ---- summary ------------------------------------------------------------
    def summary(self) -> dict[str, Any] | None:
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text())

    def start(self) -> None:
        self._set_index("running")
        self.store.mirror("start", self)

    def finish(self, summary: dict[str, Any], status: str = "done") -> None:
        summary = {**summary, "status": status, "run_id": self.id, "finished": time.time()}
        write_json(self.summary_path, summary)
        self._set_index(status, summary)
        self.store.mirror("finish", self, summary, status)

    # ---- checkpoints --------------------------------------------------------
    def save_checkpoint(
        self, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int = 2
    ) -> None:
        """Write step-N/ fully, then point latest.json at it atomically; keep the newest ``keep``.

        Two are kept so that the members of an ensemble, written one after another, always share
        a step that every one of them has, even when a kill lands between two members' writes.
        """
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:09d}"
        tmp = self.ckpt_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        contiguous = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / WEIGHTS))
        state = {**state, "step": step, "metrics_bytes": self.metrics_bytes()}
        write_json(tmp / STATE, state)
        final = self.ckpt_dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_json(self.ckpt_dir / LATEST, {"name": name})
        for old in sorted(self.ckpt_dir.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def has_checkpoint(self) -> bool:
        return (self.ckpt_dir / LATEST).exists()

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk (a folder is complete once renamed)."""
        if not self.ckpt_dir.exists():
            return []
        return sorted(int(p.name.split("-")[1]) for p in self.ckpt_dir.glob("step-*") if p.is_dir())

    def load_checkpoint(self, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Tensors and JSON state of the checkpoint at ``step`` (default: the newest)."""
        if step is None:
            steps = self.checkpoint_steps()
            if not steps:
                return None
            step = steps[-1]
        folder = self.ckpt_dir / f"step-{step:09d}"
        try:
            tensors = load_file(str(folder / WEIGHTS))
            state = json.loads((folder / STATE).read_text())
            if int(state["step"]) != step:
                raise ValueError(f"state.json says step {state['step']}")
        except (SafetensorError, json.JSONDecodeError, KeyError, OSError, ValueError) as err:
            raise StoreError(
                f"checkpoint {folder.name} is corrupt or unreadable ({type(err).__name__}: {err})",
                where=str(self.ckpt_dir),
                fix=f"delete {self.ckpt_dir} to restart the run from step 0",
            ) from None
        return tensors, state


def report_target(
    store: Store | str | Path | None, study: str, config: StudyConfig, out: str | Path | None, fallback: Path
) -> tuple[Run | None, Path]:
    """Where a one-shot analysis writes its report: ``out`` if given, else the run folder when a store
    is given (the run is opened and started), else ``fallback``."""
    run = None
    if store is not None:
        st = store if isinstance(store, Store) else Store(store)
        run = st.open_run(study, config)
        run.start()
    if out is not None:
        return run, Path(out)
    return run, (run.report_path if run is not None else fallback)
