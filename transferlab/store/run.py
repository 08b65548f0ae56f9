"""A run folder: config.yaml, append-only metrics.jsonl, atomic summary.json, checkpoints.

Checkpoints are safetensors (tensors) plus JSON (step, RNG, scalar state). Nothing is ever
pickled. A checkpoint records the byte length of metrics.jsonl when it was taken, so a resumed
run truncates what was logged after it and the log has no duplicated or missing steps. It also
records the sha256 of its tensors file and of its own state, checked on load: a damaged newest
checkpoint is skipped, with one line saying so, for the newest intact one.

A run is owned by one process at a time (``store.lock``): ``start`` takes the lock, ``finish``
releases it. A run this process opened and did not finish when an error ends it is marked
``failed`` with the reason (``abandon_open_runs``), never left ``new`` or ``running``.
"""

from __future__ import annotations

import errno
import hashlib
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
from transferlab.store import lock
from transferlab.store.atomic import write_json, write_text
from transferlab.store.index import Index, IndexBusy

WEIGHTS = "tensors.safetensors"
STATE = "state.json"
LATEST = "latest.json"
UNFINISHED = ("new", "running", "interrupted")

_OPEN: dict[str, Run] = {}  # run folder -> run this process opened and has not finished
_WARNED: set[tuple[str, int]] = set()  # (metrics file, line) already warned about in this process


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def forget_open_runs() -> None:
    """Start a fresh command: runs opened by earlier commands of this process are not its business."""
    _OPEN.clear()


def abandon_open_runs(reason: str, status: str = "failed") -> list[str]:
    """Mark every run this process opened and did not finish as ``status`` with ``reason``; runs that
    another process owns, or that are finished, are left alone. Returns the ids marked."""
    marked = []
    for run in list(_OPEN.values()):
        try:
            if run.mark_unfinished(reason, status):
                marked.append(run.id)
        except (StoreError, OSError):
            pass  # never let the bookkeeping of a failure hide the failure itself
        _OPEN.pop(str(run.path), None)
    return marked


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_error(err: BaseException, what: str, run: Run) -> StoreError | None:
    """The one-line error for a write that the disk refused (full, over quota, read-only); None for others.
    safetensors reports a full disk as a SafetensorError whose text carries the OS error."""
    code = getattr(err, "errno", None)
    text = str(err)
    if code in _NO_SPACE or "No space left on device" in text or "os error 28" in text:
        kept = run.checkpoint_steps()
        return StoreError(
            f"the disk is full: could not write {what}", where=f"run {run.id} ({run.path})",
            fix="free some space and rerun the same command: it resumes from "
                + (f"the last intact checkpoint (step {kept[-1]})" if kept else "the start (no checkpoint yet)")
                + "; finished runs and their summaries are untouched",
        )
    if code == errno.EROFS or "Read-only file system" in text or "os error 30" in text:
        return StoreError(f"the store is on a read-only file system: could not write {what}",
                          where=str(run.path), fix="pass a writable --store")
    return None


def _read_only(path: Path) -> bool:
    """Whether ``path`` lies on a file system mounted read-only (root may write anywhere else)."""
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_state(state: dict[str, Any]) -> str:
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


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
        for parent in self.root.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise StoreError(f"store path {self.root} lies under {parent}, which is a file",
                                     fix="pass --store with a folder path")
                if not self.root.exists() and not os.access(parent, os.W_OK | os.X_OK):
                    raise StoreError(f"cannot create the store folder {self.root}: {parent} is "
                                     + ("on a read-only file system" if _read_only(parent) else "not writable by you"),
                                     fix="pass a writable --store")
                break
        if self.root.is_dir() and not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            if _read_only(self.root):
                raise StoreError(f"store folder {self.root} is on a read-only file system",
                                 fix="pass a writable --store (or copy the store somewhere writable to read it)")
            raise StoreError(f"store folder {self.root} is not readable and writable by you",
                             fix="fix its permissions or pass another --store")
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
        try:
            if not (run.path / "config.yaml").exists():
                # the index row first, then config.yaml: a folder with a config.yaml always has its row, so a
                # process listing the store meanwhile never takes a run being created for a lost index
                run.path.mkdir(parents=True, exist_ok=True)
                self.index.upsert(run_id, study=study, config_hash=run_id, status="new",
                                  path=str(run.path), sweep=sweep)
                write_text(run.path / "config.yaml", config.to_yaml())
            elif sweep is not None:
                self.index.upsert(run_id, study=study, config_hash=run_id, status=run.status,
                                  path=str(run.path), sweep=sweep)
        except PermissionError as err:
            raise StoreError(f"cannot write the run folder ({err.strerror})", where=str(run.path),
                             fix="fix the store's permissions or pass another --store") from None
        if run.status in UNFINISHED:
            _OPEN[str(run.path)] = run
        return run

    def done(self, study: str, config: StudyConfig) -> dict[str, Any] | None:
        """The summary of this config's finished run (status done), or None: the one answer every study
        uses to "is this run already done?"."""
        run = Run(self, study, config.config_hash())
        if not run.summary_path.exists():
            return None
        summary = run.summary()
        return summary if summary is not None and summary.get("status", "done") == "done" else None

    def repair(self) -> dict[str, Any]:
        """Rebuild index.sqlite from the run folders (``<study>/<id>/config.yaml``); the old index, if
        unreadable, is kept beside it as ``index.sqlite.broken-<time>``. Sweep names are kept from the
        old index when it can be read."""
        old: dict[str, dict[str, Any]] = {}
        moved = None
        try:
            old = {r["id"]: r for r in self.index.rows()}
        except IndexBusy:
            raise  # busy is not damaged: the index is fine, and moving it aside would lose sweep names
        except StoreError:
            moved = self.index.path.with_name(f"index.sqlite.broken-{int(time.time())}")
            os.replace(self.index.path, moved)
            for extra in ("-wal", "-shm"):
                Path(str(self.index.path) + extra).unlink(missing_ok=True)
            self.index.forget_setup()
        found, damaged = [], []
        for cfg in sorted(self.root.glob("*/*/config.yaml")):
            folder = cfg.parent
            if folder.parent.name in ("mirrors", "zoo") or folder.name.startswith("."):
                continue
            run = Run(self, folder.parent.name, folder.name)
            try:
                run.config()  # a config.yaml that is not YAML, not a mapping or not a file: the run is damaged
                status, summary = run.status, run.summary()
            except StoreError as err:
                damaged.append(err.one_line())
                status, summary = "damaged", None
            prev = old.get(run.id, {})
            self.index.upsert(run.id, study=run.study, config_hash=run.id, status=status, path=str(folder),
                              sweep=prev.get("sweep"), summary=summary)
            found.append(run.id)
        stale = [i for i in old if i not in set(found)]
        self.index.delete(stale)
        return {"index": str(self.index.path), "runs": len(found), "removed": stale, "damaged": damaged,
                "broken_index_kept_at": None if moved is None else str(moved)}

    def find(self, run_id: str) -> Run:
        row = self.index.get(run_id)
        if row is None:
            folders = [p for p in self.root.glob(f"*/{run_id}*") if (p / "config.yaml").exists()]
            if len(folders) == 1:  # in a folder but not (or no longer) in the index
                return Run(self, folders[0].parent.name, folders[0].name)
            raise StoreError(f"no unique run with id '{run_id}' in {self.root}",
                             fix="list runs with `transferlab runs ls` (or `transferlab runs repair` "
                                 "if the index was lost)")
        return Run(self, row["study"], row["id"])

    def run_folders(self) -> list[Path]:
        return [c.parent for c in self.root.glob("*/*/config.yaml")
                if c.parent.parent.name not in ("mirrors", "zoo")]


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
        """done / diverged / failed (from summary.json); else new (nothing logged), running (a live
        process owns it) or interrupted (logged, but its process is gone: rerun to resume)."""
        s = self.summary()
        if s is None:
            if not self.metrics_path.exists():
                return "new"
            return "running" if lock.held_here(self.path) or lock.held_elsewhere(self.path) else "interrupted"
        return str(s.get("status", "done"))

    def acquire(self) -> None:
        """Own this run (re-entrant in one process); raises ``RunLocked`` naming the owner's PID."""
        lock.acquire(self.path)

    def release(self) -> None:
        lock.release(self.path)

    def mark_unfinished(self, reason: str, status: str = "failed") -> bool:
        """Record why an unfinished run stopped (for ``abandon_open_runs``); False when it is owned
        elsewhere or already finished."""
        if lock.held_elsewhere(self.path) or not (self.path / "config.yaml").exists():
            return False
        try:
            current = self.status
        except StoreError:
            return False  # a damaged summary is reported, not overwritten
        if current not in UNFINISHED:
            self.release()
            return False
        self.finish({"error": reason}, status=status)
        return True

    def _set_index(self, status: str, summary: dict[str, Any] | None = None) -> None:
        self.store.index.upsert(self.id, study=self.study, config_hash=self.id, status=status,
                                path=str(self.path), summary=summary)

    def config(self) -> dict[str, Any]:
        import yaml

        path = self.path / "config.yaml"
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise StoreError(f"{path} is damaged or unreadable ({type(err).__name__})", where=f"run {self.id}",
                             fix=f"delete {self.path} to rerun it from scratch") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path} is damaged (not a mapping)", where=f"run {self.id}",
                             fix=f"delete {self.path} to rerun it from scratch")
        return data

    # ---- metrics ------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        self.log_many([record])

    def log_many(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, default=float) + "\n" for r in records)
        size = self.metrics_bytes()
        try:
            with open(self.metrics_path, "a") as f:
                f.write(text)
                f.flush()
        except OSError as err:
            if self.metrics_path.exists() and self.metrics_bytes() > size:
                try:  # no half-written line stays behind: the file ends where the last whole record did
                    os.truncate(self.metrics_path, size)
                except OSError:
                    pass
            raise (disk_error(err, "metrics.jsonl", self) or err) from None
        self.store.mirror("log", self, records)

    def metrics_bytes(self) -> int:
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def metrics(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl. A damaged line is skipped with a warning naming its number
        (once per process); a cut last line (a kill while writing) is left out the same way, and a
        resumed run cuts it off, since the checkpoint records the log's length."""
        if not self.metrics_path.exists():
            return []
        out = []
        text = self.metrics_path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                key = (str(self.metrics_path), no)
                if key not in _WARNED:
                    _WARNED.add(key)
                    last = no == len(lines)
                    warn(f"{self.metrics_path} line {no} is {'cut short' if last else 'damaged'} "
                         f"and is skipped ({len(line)} bytes)"
                         + ("" if last else "; the records around it are kept"))
                continue
            out.append(rec)
        return out

    def truncate_metrics(self, nbytes: int) -> None:
        if self.metrics_path.exists():
            with open(self.metrics_path, "r+b") as f:
                f.truncate(nbytes)

    # ---- summary ------------------------------------------------------------
    def summary(self) -> dict[str, Any] | None:
        if not self.summary_path.exists():
            return None
        try:
            data = json.loads(self.summary_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreError(f"{self.summary_path} is damaged or unreadable ({type(err).__name__})",
                             where=f"run {self.id}", fix=self._summary_fix()) from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.summary_path} is damaged (not a JSON object)", where=f"run {self.id}",
                             fix=self._summary_fix())
        return data

    def _summary_fix(self) -> str:
        return f"delete {self.summary_path} and rerun: the run resumes from its checkpoints"

    def start(self) -> None:
        """Take ownership (refused when another live process has it), then mark the run running."""
        self.acquire()
        _OPEN[str(self.path)] = self
        self._set_index("running")
        self.store.mirror("start", self)

    def finish(self, summary: dict[str, Any], status: str = "done") -> None:
        self.acquire()  # only the owner writes the summary
        summary = {**summary, "status": status, "run_id": self.id, "finished": time.time()}
        try:
            write_json(self.summary_path, summary)  # atomic: a refused write leaves the old file as it was
        except OSError as err:
            raise (disk_error(err, "summary.json", self) or err) from None
        self._set_index(status, summary)
        self.store.mirror("finish", self, summary, status)
        _OPEN.pop(str(self.path), None)
        self.release()

    # ---- checkpoints --------------------------------------------------------
    def save_checkpoint(
        self, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int = 2
    ) -> None:
        """Write step-N/ fully, then point latest.json at it atomically; keep the newest ``keep``.

        Two are kept so that the members of an ensemble, written one after another, always share
        a step that every one of them has, even when a kill lands between two members' writes.
        """
        name = f"step-{step:09d}"
        tmp = self.ckpt_dir / f".{name}.tmp"
        try:
            self._write_checkpoint(step, name, tmp, tensors, state, keep)
        except (OSError, SafetensorError) as err:
            shutil.rmtree(tmp, ignore_errors=True)  # the partial step goes; the intact ones stay
            store_err = disk_error(err, f"checkpoint step {step}", self)
            if store_err is None:
                raise
            raise store_err from None

    def _write_checkpoint(self, step: int, name: str, tmp: Path, tensors: dict[str, torch.Tensor],
                          state: dict[str, Any], keep: int) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        contiguous = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / WEIGHTS))
        with open(tmp / WEIGHTS, "rb") as f:
            os.fsync(f.fileno())
        state = {**state, "step": step, "metrics_bytes": self.metrics_bytes(),
                 "tensors_sha256": _sha256_file(tmp / WEIGHTS)}
        state["state_sha256"] = _sha256_state(state)
        write_json(tmp / STATE, state)
        final = self.ckpt_dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_json(self.ckpt_dir / LATEST, {"name": name})
        for old in sorted(self.ckpt_dir.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk (a folder is complete once renamed)."""
        if not self.ckpt_dir.exists():
            return []
        return sorted(int(p.name.split("-")[1]) for p in self.ckpt_dir.glob("step-*") if p.is_dir())

    def load_checkpoint(self, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Tensors and JSON state of the checkpoint at ``step``, checksums verified. Without ``step``:
        the newest intact one; a damaged newer one is skipped with one warning line, and when every
        one is damaged a ``StoreError`` says so."""
        if step is not None:
            return self._load_verified(step)
        steps = self.checkpoint_steps()
        if not steps:
            return None
        return self.load_newest_intact(steps)[1]

    def load_newest_intact(self, steps: list[int]) -> tuple[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """The newest of ``steps`` whose checkpoint is intact, warning once for each damaged one."""
        errors = []
        for s in sorted(steps, reverse=True):
            try:
                loaded = self._load_verified(s)
            except StoreError as err:
                errors.append(err)
                continue
            for err in errors:
                warn(f"{err.what}; resuming from the intact checkpoint at step {s} instead")
            return s, loaded
        raise StoreError(
            f"every checkpoint is corrupt or unreadable ({'; '.join(e.what for e in errors)})",
            where=str(self.ckpt_dir), fix=f"delete {self.ckpt_dir} to restart the run from step 0",
        )

    def _load_verified(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        folder = self.ckpt_dir / f"step-{step:09d}"
        try:
            state = json.loads((folder / STATE).read_text())
            if not isinstance(state, dict):
                raise ValueError("state.json is not an object")
            if "state_sha256" in state and state["state_sha256"] != _sha256_state(state):
                raise ValueError("state.json does not match its sha256")
            if "tensors_sha256" in state and state["tensors_sha256"] != _sha256_file(folder / WEIGHTS):
                raise ValueError(f"{WEIGHTS} does not match its sha256")
            tensors = load_file(str(folder / WEIGHTS))
            if int(state["step"]) != step:
                raise ValueError(f"state.json says step {state['step']}")
        except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, KeyError, OSError, ValueError,
                TypeError) as err:
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
    from transferlab.core.paths import check_output_file

    if out is not None:
        check_output_file(out, "--out/--report")
    run = None
    if store is not None:
        st = store if isinstance(store, Store) else Store(store)
        run = st.open_run(study, config)
        run.start()
    if out is not None:
        return run, Path(out)
    return run, (run.report_path if run is not None else fallback)
