"""Optional mirrors of the store's runs into TensorBoard and MLflow.

The store (run folders, ``metrics.jsonl``, ``summary.json``) stays the record; a mirror is a copy for
the tools people already watch. A mirror gets each run's config when it starts, every metrics record
as it is logged, and the summary when it finishes, either live (``Store(root, mirrors=...)``, the
CLI's ``--mirror``) or after the fact (``export_run``, ``transferlab runs mirror``).

Both write inside the store folder and make no network calls:

- ``tensorboard``: one event-file folder per run, ``<store>/mirrors/tensorboard/<study>/<run id>``;
  numeric metrics as scalars (``norm_sq.embed`` becomes the tag ``norm_sq/embed``), the config and the
  summary as text. Open it with ``tensorboard --logdir <store>/mirrors/tensorboard``.
- ``mlflow``: one experiment per study (``transferlab/<study>``) in the SQLite tracking store
  ``<store>/mirrors/mlflow.db`` (MLflow 3 no longer writes its old file store); the config as params,
  metrics with their steps, the summary's numbers as ``summary.*`` metrics, tags ``transferlab.run_id``
  and ``transferlab.study``. Open it with ``mlflow ui --backend-store-uri sqlite:///<store>/mirrors/mlflow.db``.
  MLflow's usage telemetry is switched off before it is imported.

A mirror that fails (a full disk, a locked database) prints one warning and is dropped; the run goes on.
A run resumed after a kill logs again the steps after its last checkpoint, so a live mirror can show
those steps twice; ``export_run`` rewrites the run's mirror from the store and has no duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from transferlab.core.errors import ConfigError

if TYPE_CHECKING:
    from transferlab.store.run import Run

MIRRORS = ("tensorboard", "mlflow")
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MLFLOW_PARAM_CHARS = 6000  # MLflow's limit on a param value


class Mirror(Protocol):
    name: str
    location: str  # where to point the tool: a folder or a tracking URI

    def start(self, run: Run) -> None: ...
    def log(self, run: Run, records: list[dict[str, Any]]) -> None: ...
    def finish(self, run: Run, summary: dict[str, Any], status: str) -> None: ...
    def clear(self, run: Run) -> None: ...


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record, ``step`` left out."""
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:MLFLOW_PARAM_CHARS]
    return out


class TensorBoardMirror:
    name = "tensorboard"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)
        self._writers: dict[str, Any] = {}

    def folder(self, run: Run) -> Path:
        return self.root / run.study / run.id

    def _writer(self, run: Run) -> Any:
        if run.id not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[run.id] = SummaryWriter(log_dir=str(self.folder(run)))
        return self._writers[run.id]

    def start(self, run: Run) -> None:
        self._writer(run).add_text("config", "```\n" + json.dumps(run.config(), indent=2, default=str) + "\n```")

    def log(self, run: Run, records: list[dict[str, Any]]) -> None:
        writer = self._writer(run)
        for i, record in enumerate(records):
            step = int(record.get("step", i))
            for key, value in numeric_metrics(record).items():
                writer.add_scalar(key.replace(".", "/"), value, step)
        writer.flush()

    def finish(self, run: Run, summary: dict[str, Any], status: str) -> None:
        writer = self._writer(run)
        writer.add_text("summary", "```\n" + json.dumps({**summary, "status": status}, indent=2, default=str)
                        + "\n```")
        writer.close()
        del self._writers[run.id]

    def clear(self, run: Run) -> None:
        self._writers.pop(run.id, None)
        shutil.rmtree(self.folder(run), ignore_errors=True)


class MLflowMirror:
    name = "mlflow"

    def __init__(self, root: Path):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls, ever
        os.environ.setdefault("DO_NOT_TRACK", "true")
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # their INFO lines (creating tables...) are not ours to print
            logging.getLogger(name).setLevel(logging.WARNING)

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = f"sqlite:///{(self.root / 'mlflow.db').resolve()}"
        try:
            self.client = MlflowClient(tracking_uri=self.location)
            self.client.search_experiments(max_results=1)  # opens (or creates) the database now
        except Exception as err:  # noqa: BLE001 - sqlalchemy's and MLflow's errors have many types
            from transferlab.core.errors import StoreError

            db = self.root / "mlflow.db"
            msg = " ".join(str(getattr(err, "orig", None) or err).split())[:160]  # sqlalchemy wraps sqlite3's
            raise StoreError(f"{db} is not a usable MLflow tracking database ({type(err).__name__}: {msg})",
                             where="mlflow mirror", fix=f"move {db} away; `transferlab runs mirror --to mlflow` "
                             "rewrites the mirror from the store") from None
        self._runs: dict[str, str] = {}  # our run id -> MLflow run id

    def _experiment(self, study: str) -> str:
        name = f"transferlab/{study}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment(name, artifact_location=str((self.root / "artifacts").resolve())))

    def _existing(self, run: Run) -> list[Any]:
        return self.client.search_runs([self._experiment(run.study)],
                                       filter_string=f"tags.`transferlab.run_id` = '{run.id}'")

    def _mlflow_id(self, run: Run) -> str:
        if run.id not in self._runs:
            self.start(run)
        return self._runs[run.id]

    def start(self, run: Run) -> None:
        from mlflow.entities import Param

        running = [r for r in self._existing(run) if r.info.status == "RUNNING"]
        if running:  # a resumed run continues its MLflow run
            self._runs[run.id] = running[0].info.run_id
            return
        created = self.client.create_run(self._experiment(run.study), run_name=run.id,
                                         tags={"transferlab.run_id": run.id, "transferlab.study": run.study})
        self._runs[run.id] = created.info.run_id
        params = [Param(k, v) for k, v in flat_config(run.config()).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(created.info.run_id, params=params[i:i + 100])

    def log(self, run: Run, records: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, int(record.get("step", i)))
                   for i, record in enumerate(records) for key, value in numeric_metrics(record).items()]
        mlflow_id = self._mlflow_id(run)
        for i in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(mlflow_id, metrics=metrics[i:i + MLFLOW_BATCH])

    def finish(self, run: Run, summary: dict[str, Any], status: str) -> None:
        from mlflow.entities import Metric

        mlflow_id = self._mlflow_id(run)
        numbers = [Metric(f"summary.{k}", v, int(time.time() * 1000), 0) for k, v in numeric_metrics(summary).items()]
        for i in range(0, len(numbers), MLFLOW_BATCH):
            self.client.log_batch(mlflow_id, metrics=numbers[i:i + MLFLOW_BATCH])
        self.client.set_tag(mlflow_id, "transferlab.status", status)
        self.client.set_terminated(mlflow_id, "FINISHED" if status == "done" else "FAILED")
        del self._runs[run.id]

    def clear(self, run: Run) -> None:
        self._runs.pop(run.id, None)
        for found in self._existing(run):
            self.client.delete_run(found.info.run_id)


def check_folder(folder: Path, option: str) -> None:
    """A mirror's folder (or the nearest of its parents that exists) must be a folder one may write in."""
    from transferlab.core.errors import StoreError

    for p in (folder, *folder.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            raise StoreError(f"{p} is a file, so the mirror cannot write {folder}", where=option,
                             fix=f"move {p} away (mirrors are copies; `transferlab runs mirror` rewrites them)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise StoreError(f"cannot write in {p}", where=option, fix="give yourself write permission there")
        return


def make_mirrors(names: list[str] | tuple[str, ...], store_root: Path, option: str = "--mirror") -> list[Mirror]:
    """The mirrors asked for by name (with the CLI ``option``); one clear error for an unknown name or a
    missing package."""
    mirrors: list[Mirror] = []
    for name in dict.fromkeys(names):
        if name not in MIRRORS:
            raise ConfigError(f"unknown mirror '{name}'", where=option, fix=f"use one of: {', '.join(MIRRORS)}")
        root = Path(store_root) / "mirrors"
        check_folder(root / "tensorboard" if name == "tensorboard" else root, option)
        try:
            if name == "tensorboard":
                import tensorboard  # noqa: F401 - torch's SummaryWriter needs it

                mirrors.append(TensorBoardMirror(root / "tensorboard"))
            else:
                mirrors.append(MLflowMirror(root))
        except ImportError as err:
            raise ConfigError(f"the {name} mirror needs a package that is not installed ({err.name})",
                              where=option, fix=f"pip install 'transferlab[{name}]'") from None
    return mirrors


def export_run(run: Run, mirror: Mirror) -> None:
    """Rewrite ``run``'s mirror from the store: its config, every metrics record, its summary if finished."""
    mirror.clear(run)
    mirror.start(run)
    mirror.log(run, run.metrics())
    summary = run.summary()
    if summary is not None:
        mirror.finish(run, summary, summary.get("status", "done"))
