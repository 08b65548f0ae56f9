"""Where things live on disk."""

from __future__ import annotations

import os
from pathlib import Path


def default_store() -> Path:
    """The store root: TRANSFERLAB_HOME, else ./runs."""
    return Path(os.environ.get("TRANSFERLAB_HOME", "runs"))
