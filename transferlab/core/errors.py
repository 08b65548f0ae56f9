"""One error family. Every message says what is wrong, where, and how to fix it."""

from __future__ import annotations


class TransferlabError(Exception):
    """Base of every error a user can cause. The CLI prints it on one line and exits ``exit_code`` (2)."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [self.what if self.where is None else f"{self.where}: {self.what}"]
        if self.fix:
            parts.append(self.fix)
        return " — ".join(parts).replace("\n", " ")


class ConfigError(TransferlabError):
    """A config key or value is wrong."""


class DataError(TransferlabError):
    """Input data (a CSV, a folder, a split) is wrong."""


class StoreError(TransferlabError):
    """The run store or a checkpoint is unusable."""


class TrainingDiverged(TransferlabError):
    """A loss or parameter became NaN or Inf; the last good checkpoint is kept."""


class FitError(TransferlabError):
    """A fit could not be made or did not converge."""


class SweepIncomplete(TransferlabError):
    """Some trials of a sweep failed or were left to another process; the others are recorded."""

    exit_code = 1
