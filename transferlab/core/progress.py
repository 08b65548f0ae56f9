"""Rich progress bars that stay quiet when output is machine-read (--json) or not a terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_quiet = False
console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def say(text: str) -> None:
    """A status line on the console, unless output is quiet (``--json``)."""
    if not _quiet:
        console.print(text)


class ProgressHandle:
    def __init__(self, progress: Progress | None, task_id):
        self._progress = progress
        self._task = task_id

    def update(self, advance: float | None = None, completed: float | None = None, **fields) -> None:
        if self._progress is None:
            return
        kw = {}
        if advance is not None:
            kw["advance"] = advance
        if completed is not None:
            kw["completed"] = completed
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._progress.update(self._task, info=info, **kw)


@contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[ProgressHandle]:
    """A progress bar with step, free-form info (losses, accuracy) and ETA."""
    if _quiet:
        yield ProgressHandle(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False, refresh_per_second=4) as prog:
        task = prog.add_task(description, total=total, info="")
        yield ProgressHandle(prog, task)
