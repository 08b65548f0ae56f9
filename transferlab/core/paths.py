"""Where things live on disk."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_file(path: str | Path, flag: str) -> Path:
    """A file we are about to write for the user: not a folder, and its folder exists (or can be made) and
    is writable. Checked before any work, so a long analysis does not fail at its last step."""
    from transferlab.core.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a folder", fix="name a file inside it, e.g. " + str(p / "report.html"))
    parent = p.absolute().parent
    existing = next((q for q in (parent, *parent.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{flag} {p} lies under {existing}, which is a file", fix="pass a path in a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {p}: you may not write in {existing}", fix="pass a path in a folder you own")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {p} is not writable", fix="fix its permissions or pass another path")
    return p


def default_store() -> Path:
    """The store root: TRANSFERLAB_HOME, else ./runs."""
    return Path(os.environ.get("TRANSFERLAB_HOME", "runs"))
