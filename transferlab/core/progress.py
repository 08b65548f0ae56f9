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
_outer: Progress | None = None  # a live display that progress bars join as rows (``progress_group``)


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


def _columns() -> list:
    return [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]


@contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[ProgressHandle]:
    """A progress bar with step, free-form info (losses, accuracy) and ETA. Inside ``progress_group`` it is a
    row of the group's display (rich allows one live display at a time), removed when it ends."""
    if _quiet:
        yield ProgressHandle(None, None)
        return
    if _outer is not None:
        outer = _outer
        task = outer.add_task(description, total=total, info="")
        try:
            yield ProgressHandle(outer, task)
        finally:
            outer.remove_task(task)
        return
    with Progress(*_columns(), console=console, transient=False, refresh_per_second=4) as prog:
        task = prog.add_task(description, total=total, info="")
        yield ProgressHandle(prog, task)


@contextmanager
def progress_group() -> Iterator[Progress | None]:
    """One live display for a command made of other commands' work (the tour): its own rows are added to the
    yielded Progress, and every ``progress_bar`` opened meanwhile becomes a row of it. None when quiet."""
    global _outer
    if _quiet or _outer is not None:
        yield _outer if not _quiet else None
        return
    with Progress(*_columns(), console=console, transient=False, refresh_per_second=4) as prog:
        _outer = prog
        try:
            yield prog
        finally:
            _outer = None
